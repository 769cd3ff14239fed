"""The benchmark code runs: ``fastbp bench`` in a tiny configuration, and the asv suite's classes.

No timing is asserted anywhere: the machine is shared and figures move.
"""

import argparse
import os
import sys

import numba
import numpy as np
import pytest

import fastbp
from fastbp import _bench, _checks, _timing

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse(*arguments):
    parser = argparse.ArgumentParser(prog="fastbp bench")
    _bench.add_arguments(parser)
    return parser.parse_args(list(arguments))


TINY = ("--shapes", "7x5x3", "--step-shapes", "6x4x5x3", "--repeats", "1", "--threads", "1")


def test_bench_tiny_prints_tables_and_exits_0(capsys):
    status = _bench.run(parse(*TINY))
    out = capsys.readouterr().out
    assert status == 0
    assert "BLAS" in out
    assert "n=7 d=5 t=3 float32" in out and "n=7 d=5 t=3 float64" in out
    for row in ("grad_W_out   outer", "grad_W_out   blocked", "grad_W_out   matmul",
                "grad_W_out   numpy", "forward      fastbp", "delta_out    fastbp", "cost         fastbp"):
        assert row in out
    assert "FAIL" not in out


def test_bench_two_thread_counts_leave_serial_kernels_out_of_the_second_table(capsys):
    status = _bench.run(parse("--shapes", "9x4x2", "--dtypes", "float64", "--repeats", "1",
                              "--threads", "1,2"))
    out = capsys.readouterr().out
    assert status == 0
    second = out.split("[threads=2")[1]
    assert "grad_W_out   blocked" in second and "grad_W_out   outer" not in second


def test_bench_plot_writes_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "bench.png"
    assert _bench.run(parse(*TINY, "--dtypes", "float64", "--plot", str(path))) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_plot_without_matplotlib_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    # A None entry in sys.modules makes ``import matplotlib`` raise ImportError.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    status = _bench.run(parse(*TINY, "--plot", str(tmp_path / "bench.png")))
    err = capsys.readouterr().err
    assert status == 2
    assert "matplotlib" in err and "pip install 'fastbp[plot]'" in err
    assert not (tmp_path / "bench.png").exists()


def test_bench_breakdown_prints_the_parts_and_checks_the_products(capsys):
    status = _bench.run(parse(*TINY, "--dtypes", "float32", "--breakdown"))
    out = capsys.readouterr().out
    assert status == 0
    section = out.split("where the step's time goes: n=6 m=4 d=5 t=3 float32")[1]
    for part in ("fastbp step ", "numpy step ", "fastbp X W_h", "numpy X @ W_h", "fastbp Xᵀ δ_h",
                 "numpy X.T @ δ_h", "fastbp rest of the step", "numpy rest of the step",
                 "numpy 1024³ product "):
        assert part in section
    if numba.config.NUMBA_NUM_THREADS >= 2:
        assert "fastbp step kernel, two at once" in section and "× one alone" in section
    assert "check of fastbp's two products: ok" in section


def test_bench_breakdown_flags_a_wrong_product(monkeypatch, capsys):
    from fastbp import _breakdown

    right = _breakdown._forward_product

    def off_by_one_row(X, W_h, block_rows):
        Z = right(X, W_h, block_rows)
        return np.roll(Z, 1, axis=0)  # row i holds example i − 1's products

    monkeypatch.setattr(_breakdown, "_forward_product", off_by_one_row)
    status = _bench.run(parse(*TINY, "--dtypes", "float64", "--breakdown"))
    captured = capsys.readouterr()
    assert status == 1
    assert "check of fastbp's two products: FAILED" in captured.out
    assert "breakdown fastbp 6x4x5x3 float64" in captured.err


# (n, m, d, t): one chunk ((m, d) Xᵀ δ_h) and several ((d, m), transposed at
# the end); d under a float32 vector (the unpacked forward product) and over.
BREAKDOWN_SHAPES = ["30x20x17x3", "300x13x9x2", "260x40x33x5"]


@pytest.mark.parametrize("shape", BREAKDOWN_SHAPES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_breakdown_products_are_the_steps_products(shape, dtype):
    from fastbp import _backprop, _breakdown

    n, m, d, t = map(int, shape.split("x"))
    assert _breakdown.products_within_bound(shape, dtype, _bench._network)
    # Bit for bit what the step's own kernels give: X W_h as the unfused
    # hidden product, Xᵀ δ_h as the unfused gradient (one order of sums).
    net = _bench._network(n, m, d, t, dtype)
    delta_h = _breakdown._delta_h_sample(n, m, d, dtype)
    from fastbp import _kernels_hidden

    expected_Z = np.zeros((n, d), dtype)
    _kernels_hidden._hidden_product(net["X"], net["W_h"], expected_Z)
    Z = _breakdown._forward_product(net["X"], net["W_h"], _backprop.BLOCK_ROWS)
    np.testing.assert_array_equal(Z, expected_Z)
    for transposed in (False, True):
        G = _breakdown._input_gradient(net["X"], delta_h, _backprop.BLOCK_ROWS, transposed)
        np.testing.assert_array_equal(G, _kernels_hidden._grad_W_h(net["X"], delta_h))


def test_breakdown_products_check_fails_on_a_missing_block(monkeypatch):
    from fastbp import _breakdown

    right = _breakdown._input_gradient

    def first_block_only(X, delta_h, block_rows, transposed):
        return right(X[:block_rows], delta_h[:block_rows], block_rows, transposed)

    monkeypatch.setattr(_breakdown, "_input_gradient", first_block_only)
    assert not _breakdown.products_within_bound("300x13x9x2", "float64", _bench._network)


def test_breakdown_section_rest_is_step_less_products_and_threads_are_closed(capsys):
    import threading

    from fastbp import _breakdown

    before = threading.active_count()
    medians = _breakdown.breakdown_section("30x20x17x3", "float64", 1, _bench._network,
                                           _bench._numpy_step)
    assert threading.active_count() == before
    for side, products in (("fastbp", ("fastbp X W_h", "fastbp Xᵀ δ_h")),
                           ("numpy", ("numpy X @ W_h", "numpy X.T @ δ_h"))):
        expected = medians[f"{side} step"] - medians[products[0]] - medians[products[1]]
        assert medians[f"{side} rest"] == pytest.approx(expected)
    assert all(value > 0 for key, value in medians.items() if not key.endswith("rest"))


def test_two_at_once_runs_both_calls_and_raises_the_second_threads_error():
    import threading

    from fastbp import _breakdown

    seen = []

    def fail():
        seen.append(("second", threading.get_ident()))
        raise ZeroDivisionError("in the second thread")

    pair = _breakdown._TwoAtOnce(lambda: seen.append(("first", threading.get_ident())), fail)
    try:
        for _ in range(2):  # the waiting thread survives an error and serves again
            with pytest.raises(ZeroDivisionError, match="second thread"):
                pair()
    finally:
        pair.close()
    assert not pair._worker.is_alive()
    assert sorted(name for name, _ in seen) == ["first", "first", "second", "second"]
    first = {ident for name, ident in seen if name == "first"}
    second = {ident for name, ident in seen if name == "second"}
    assert first == {threading.get_ident()} and len(second) == 1 and not first & second


def test_two_serial_steps_gives_each_networks_cost():
    from fastbp import _backprop, _breakdown

    nets = [_bench._network(40, 12, 17, 3, "float64", seed) for seed in (0, 1)]
    arrays = [tuple(net[k] for k in ("X", "Y", "W_h", "b_h", "W_out", "b_out")) for net in nets]
    costs = _breakdown._two_serial_steps(arrays[0], arrays[1], float(np.finfo(np.float64).tiny),
                                         1, _backprop.BLOCK_ROWS, _backprop.BLOCK_COLS)
    for cost, network in zip(costs, arrays):
        assert cost == float(fastbp.backprop(*network, n_chunks=1, n_threads=1).cost)


@pytest.mark.parametrize(
    "arguments",
    [("--shapes", "7x5"), ("--dtypes", "float16"), ("--threads", "0"), ("--repeats", "0")],
)
def test_bench_bad_arguments_exit_2(arguments, capsys):
    assert _bench.run(parse(*arguments)) == 2
    assert "fastbp bench:" in capsys.readouterr().err


def test_grad_check_flags_a_wrong_result():
    rng = np.random.default_rng(1)
    A_h, delta_out = rng.random((50, 4)), rng.random((50, 3)) - 0.5
    exact = A_h.T @ delta_out
    u = _checks.unit_roundoff(np.float64)
    assert _bench._grad_check_ratio(exact, A_h, delta_out, exact, u) <= 1.0
    wrong = exact.copy()
    wrong[1, 2] += 1e-6
    assert _bench._grad_check_ratio(wrong, A_h, delta_out, exact, u) > 1.0


def test_gamma_and_unit_roundoff():
    assert _checks.unit_roundoff(np.float64) == 2.0**-53
    assert _checks.unit_roundoff(np.float32) == 2.0**-24
    assert _checks.gamma(10, 2.0**-24) == pytest.approx(10 * 2.0**-24, rel=1e-6)
    assert _checks.gamma(2**24, 2.0**-24) == float("inf")


# --------------------------------------------------------------------------
# The asv suite: import each class, run setup and one timed call on a small set
# --------------------------------------------------------------------------


@pytest.fixture
def suite(monkeypatch):
    monkeypatch.syspath_prepend(REPOSITORY)
    import benchmarks.bench_backprop
    import benchmarks.bench_first_call
    import benchmarks.bench_forward
    import benchmarks.bench_grad

    return benchmarks


def run_benchmark(cls, params, names):
    """What asv does for one parameter set: setup, the named methods, teardown."""
    benchmark = cls()
    benchmark.setup(*params)
    try:
        results = [getattr(benchmark, name)(*params) for name in names]
    finally:
        if hasattr(benchmark, "teardown"):
            benchmark.teardown(*params)
    return results


@pytest.mark.parametrize("method", ["outer", "blocked", "matmul", "numpy"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_asv_grad(suite, method, dtype):
    _, gflops = run_benchmark(
        suite.bench_grad.GradWOut, ("100x100x10", dtype, method, 1), ["time_grad_W_out", "track_gflops"]
    )
    assert gflops > 0
    assert suite.bench_grad.GradWOut.track_gflops.unit == "GFLOP/s"


def test_asv_grad_two_threads_and_skips(suite):
    run_benchmark(suite.bench_grad.GradWOut, ("100x100x10", "float64", "blocked", 2), ["time_grad_W_out"])
    for params in [("100x100x10", "float64", "outer", 2), ("4096x1024x1024", "float64", "outer", 1)]:
        with pytest.raises(NotImplementedError):
            suite.bench_grad.GradWOut().setup(*params)


def test_asv_grad_b_out(suite):
    for implementation in ("fastbp", "numpy"):
        run_benchmark(suite.bench_grad.GradBOut, ("100x100x10", "float32", implementation), ["time_grad_b_out"])


@pytest.mark.parametrize("implementation", ["fastbp", "numpy"])
def test_asv_forward_and_output_layer(suite, implementation):
    _, gflops = run_benchmark(
        suite.bench_forward.Forward, ("100x100x10", "float32", implementation, 1), ["time_forward", "track_gflops"]
    )
    assert gflops > 0
    results = run_benchmark(
        suite.bench_forward.OutputLayer,
        ("100x100x10", "float64", implementation),
        ["time_delta_out", "time_cost", "track_delta_out_gflops", "track_cost_gflops"],
    )
    assert min(results[2:]) > 0


def test_asv_backprop_step(suite):
    _, gflops = run_benchmark(
        suite.bench_backprop.BackpropStep, ("100x784x100x10", "float32", "numpy", 1), ["time_step", "track_gflops"]
    )
    assert gflops > 0
    import fastbp

    if hasattr(fastbp, "backprop"):
        run_benchmark(suite.bench_backprop.BackpropStep, ("100x784x100x10", "float32", "fastbp", 1), ["time_step"])
    else:
        with pytest.raises(NotImplementedError):
            suite.bench_backprop.BackpropStep().setup("100x784x100x10", "float32", "fastbp", 1)


def test_asv_numpy_step_matches_finite_structure(suite):
    """The NumPy baseline step returns the cost and four gradients of the right shapes."""
    common = suite.common
    data = common.dataset(5, 4, 3, "float64", m=6)
    cost, grad_W_h, grad_b_h, grad_W_out, grad_b_out = common.numpy_backprop_step(
        *[data[k] for k in ("X", "Y", "W_h", "b_h", "W_out", "b_out")]
    )
    assert np.ndim(cost) == 0
    assert grad_W_h.shape == (6, 4) and grad_b_h.shape == (4,)
    assert grad_W_out.shape == (4, 3) and grad_b_out.shape == (3,)


@pytest.mark.parametrize("cache", ["cold", "cached"])
def test_asv_first_call(suite, cache):
    (seconds,) = run_benchmark(
        suite.bench_first_call.FirstCall,
        ("matmul", "float32", cache),
        ["track_import_and_first_call"],
    )
    assert seconds > 0


def test_first_call_seconds_cold_then_cached(tmp_path):
    cold = _timing.first_call_seconds("matmul", "float32", cache_dir=tmp_path)
    assert any(tmp_path.iterdir())  # the cold process saved what it compiled
    cached = _timing.first_call_seconds("matmul", "float32", cache_dir=tmp_path)
    assert set(cold) == set(cached) == {"import", "first_call"}
    with pytest.raises(ValueError, match="method must be one of"):
        _timing.first_call_seconds("nope")


def test_first_calls_seconds_times_every_call_of_fastbp_compile():
    # On the test process's own cache root (warm after `fastbp compile`, as
    # in CI; else the child compiles what is missing and saves it there).
    from fastbp import _cache
    from fastbp._compile import _calls

    result = _timing.first_calls_seconds("float32", _cache.cache_root())
    names = [name for name, _ in _calls(np.dtype("float32"), min(2, numba.config.NUMBA_NUM_THREADS))]
    assert [name for name, _ in result["calls"]] == names
    assert result["import"] > 0 and all(seconds >= 0 for _, seconds in result["calls"])


def test_first_call_section_prints_cold_and_cached_per_call(monkeypatch, capsys):
    def fake(dtype, cache_dir):
        fake.folders.append(cache_dir)
        cached = len(fake.folders) % 2 == 0
        return {"import": 0.25, "calls": [["forward", 0.001 if cached else 1.5],
                                          ["backprop", 0.002 if cached else 12.0]]}

    fake.folders = []
    monkeypatch.setattr(_bench, "first_calls_seconds", fake)
    _bench._first_call_section(["float64"])
    out = capsys.readouterr().out
    assert fake.folders[0] == fake.folders[1]  # the cached run reads what the cold one wrote
    assert "float64: import fastbp" in out
    assert any(line.split()[:1] == ["backprop"] and "12" in line for line in out.splitlines())
    assert any(line.split()[:1] == ["all"] for line in out.splitlines())


def test_interleaved_medians_settles_before_each_timing_untimed():
    import time

    from fastbp._timing import interleaved_medians

    calls = []
    start = time.perf_counter()
    medians = interleaved_medians({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 2, settle=0.05)
    elapsed = time.perf_counter() - start
    assert elapsed >= 4 * 0.05  # two rounds of two candidates, each after a pause
    assert all(value < 0.05 for value in medians.values())  # the pause is not timed
    assert calls.count("a") == calls.count("b") == 4  # 2 untimed first calls + 2 rounds


def test_interleaved_medians_warms_up_untimed_after_the_settle():
    import time

    from fastbp._timing import interleaved_medians

    calls = []

    def slow_after_pause():
        # The first call after a pause (or ever) is slow; the rest are fast.
        slow = not calls or calls[-1] == "pause"
        calls.append("call")
        if slow:
            time.sleep(0.02)

    def pause_marker():
        calls.append("pause")

    medians = interleaved_medians(
        {"marker": pause_marker, "slow": slow_after_pause}, 3, settle=0.001, warmup=0.005
    )
    assert medians["slow"] < 0.01  # the slow first call after each pause is untimed
    # 2 untimed first calls, then per round ≥ 1 warm-up call and 1 timed call.
    assert calls.count("call") >= 2 + 3 * 2
