"""The benchmark code runs: ``fastbp bench`` in a tiny configuration, and the asv suite's classes.

No timing is asserted anywhere: the machine is shared and figures move.
"""

import argparse
import os
import re
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
    for row in (
        "grad_W_out   outer",
        "grad_W_out   blocked",
        "grad_W_out   matmul",
        "grad_W_out   numpy",
        "forward      fastbp",
        "delta_out    fastbp",
        "cost         fastbp",
    ):
        assert row in out
    assert "FAIL" not in out


TINY_WORKLOADS = (
    ("digits", None, 64, 100, 10, 32, 200, None, 2),
    ("synthetic", 90, 12, 7, 3, 16, 1, 50, 2),
)


@pytest.mark.parametrize("quick", [False, True])
def test_bench_training_times_three_loops_and_checks_sgd_epoch_bitwise(monkeypatch, capsys, quick):
    from fastbp import _bench_training

    monkeypatch.setattr(
        _bench_training, "WORKLOADS", TINY_WORKLOADS if quick else TINY_WORKLOADS[1:]
    )
    arguments = TINY + ("--training", "--dtypes", "float32") + (("--quick",) if quick else ())
    status = _bench.run(parse(*arguments))
    out = capsys.readouterr().out
    assert status == 0
    training = out.split("\nTraining:")[1]
    if quick:
        assert "digits: 1797x64x100x10, minibatch 32, 2 epoch(s), 112 steps, float32" in training
        assert "synthetic: 50x12x7x3, minibatch 16, 2 epoch(s), 6 steps, float32" in training
    else:
        assert "synthetic: 90x12x7x3, minibatch 16, 1 epoch(s), 5 steps, float32" in training
    rows = re.findall(
        r"^(sgd_epoch|backprop loop|numpy loop) +\S+ \S+ +\S+ \S+ +([\d.]+)  (.*)$", training, re.M
    )
    assert [r[0] for r in rows][:3] == ["sgd_epoch", "backprop loop", "numpy loop"]
    assert rows[0][2] == "bitwise" and rows[1][2] == "reference" and rows[2][2].endswith("apart")
    assert float(rows[2][1]) == 1.0  # NumPy against itself


def test_bench_training_flags_an_epoch_that_differs_from_the_loop(monkeypatch, capsys):
    from fastbp import _bench_training

    monkeypatch.setattr(_bench_training, "WORKLOADS", TINY_WORKLOADS[1:])
    real = fastbp.sgd_epoch

    def off_by_one_step(X, Y, W_h, b_h, W_out, b_out, order, eta, size, l2):
        return real(X, Y, W_h, b_h, W_out, b_out, order[size:], eta, size, l2)

    monkeypatch.setattr(fastbp, "sgd_epoch", off_by_one_step)
    status = _bench.run(parse(*TINY, "--training", "--dtypes", "float64"))
    captured = capsys.readouterr()
    assert status == 1
    assert re.search(r"^sgd_epoch .* FAIL$", captured.out, re.M)
    assert "training sgd_epoch" in captured.err


def test_bench_two_thread_counts_leave_serial_kernels_out_of_the_second_table(capsys):
    status = _bench.run(
        parse(
            "--shapes",
            "9x4x2",
            "--step-shapes",
            "6x4x5x3",
            "--dtypes",
            "float64",
            "--repeats",
            "1",
            "--threads",
            "1,2",
        )
    )
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
    for part in (
        "fastbp step ",
        "numpy step ",
        "fastbp X W_h",
        "numpy X @ W_h",
        "fastbp Xᵀ δ_h",
        "numpy X.T @ δ_h",
        "fastbp rest of the step",
        "numpy rest of the step",
        "numpy 1024³ product ",
    ):
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
    medians = _breakdown.breakdown_section(
        "30x20x17x3", "float64", 1, _bench._network, _bench._numpy_step
    )
    assert threading.active_count() == before
    for side, products in (
        ("fastbp", ("fastbp X W_h", "fastbp Xᵀ δ_h")),
        ("numpy", ("numpy X @ W_h", "numpy X.T @ δ_h")),
    ):
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
    costs = _breakdown._two_serial_steps(
        arrays[0],
        arrays[1],
        float(np.finfo(np.float64).tiny),
        1,
        _backprop.BLOCK_ROWS,
        _backprop.BLOCK_COLS,
    )
    for cost, network in zip(costs, arrays):
        assert cost == float(fastbp.backprop(*network, n_chunks=1, n_threads=1).cost)


# --------------------------------------------------------------------------
# Step tables: "% ref" against a square BLAS product, default shapes, JAX rows
# --------------------------------------------------------------------------


def step_tables(out):
    """{title line: [row tokens]} of each fused-step table in ``out``."""
    tables = {}
    lines = out.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("fused step "):
            rows = []
            for row in lines[index + 3 :]:  # title, column header, rule
                if not row.startswith("step "):
                    break
                rows.append(row.split())
            tables[line] = rows
    return tables


def test_step_tables_give_the_reference_and_each_rows_percentage_of_it(capsys):
    assert _bench.run(parse(*TINY, "--dtypes", "float64")) == 0
    out = capsys.readouterr().out
    tables = step_tables(out)
    assert len(tables) == 1
    ((title, rows),) = tables.items()
    match = re.search(r"reference: square (\S+) product 512³, ([0-9.e+]+) GFLOP/s$", title)
    assert match, title
    reference = float(match.group(2))
    assert reference > 0
    header = out.splitlines()[out.splitlines().index(title) + 1].split()
    assert header[header.index("GFLOP/s") + 1 : header.index("GFLOP/s") + 3] == ["%", "ref"]
    assert {row[1] for row in rows} >= {"fastbp", "numpy"}
    for row in rows:
        # kernel, implementation, median and its unit, GFLOP/s, % ref, x NumPy, check
        rate, percent = float(row[4]), float(row[5])
        assert percent == pytest.approx(100 * rate / reference, rel=0.01)  # 3 digits each
    # The gradient tables have no reference.
    gradient_titles = [line for line in out.splitlines() if line.startswith("n=7 d=5 t=3")]
    assert gradient_titles and not any("reference:" in line for line in gradient_titles)


def test_the_reference_is_timed_once_per_dtype_and_thread_count(monkeypatch, capsys):
    from fastbp import _breakdown

    made = []
    real = _breakdown.reference_product

    def counted(dtype, side=_breakdown.REFERENCE_SIDE, operands=None):
        made.append((dtype, side))
        return real(dtype, side, operands)

    monkeypatch.setattr(_breakdown, "reference_product", counted)
    threads = "1,2" if numba.config.NUMBA_NUM_THREADS >= 2 else "1"
    arguments = (
        "--shapes",
        "7x5x3",
        "--step-shapes",
        "6x4x5x3,9x4x5x3",
        "--repeats",
        "1",
        "--threads",
        threads,
    )
    assert _bench.run(parse(*arguments)) == 0
    tables = step_tables(capsys.readouterr().out)
    n_threads = len(threads.split(","))
    assert len(tables) == 2 * 2 * n_threads  # shapes × dtypes × thread counts
    assert sorted(made) == sorted(
        (dtype, _bench.STEP_REFERENCE_SIDE)
        for dtype in ("float32", "float64")
        for _ in range(n_threads)
    )
    # Each (dtype, threads) pair shows one figure in all its tables.
    figures = {}
    for title in tables:
        key = (title.split()[6], title.split("[threads=")[1].split(":")[0])
        figures.setdefault(key, set()).add(title.split("reference: ")[1])
    assert len(figures) == 2 * n_threads and all(len(f) == 1 for f in figures.values())


def test_default_step_shapes_hold_the_minibatches_and_the_earlier_shapes():
    minibatches = {f"{n}x{m}x100x10" for n in (32, 128, 256) for m in (64, 784)}
    earlier = {"100x784x100x10", "1000x784x100x10", "60000x784x100x10", "10000x64x512x64"}
    assert set(_bench.STEP_SHAPES) == minibatches | earlier
    assert len(_bench.STEP_SHAPES) == len(set(_bench.STEP_SHAPES))
    assert set(_bench.QUICK_STEP_SHAPES) < set(_bench.STEP_SHAPES)
    assert _bench._shape_list(",".join(_bench.STEP_SHAPES), 4) == list(_bench.STEP_SHAPES)


@pytest.mark.parametrize("quick", [False, True])
def test_run_times_the_default_step_shapes_or_the_quick_ones(monkeypatch, capsys, quick):
    titles = []
    monkeypatch.setattr(_bench, "_grad_rows", lambda *args: [])
    monkeypatch.setattr(_bench, "_step_rows", lambda *args: [])
    monkeypatch.setattr(
        _bench, "_time_table", lambda title, *args, **kwargs: titles.append(title) or []
    )
    arguments = ("--dtypes", "float64", "--threads", "1") + (("--quick",) if quick else ())
    assert _bench.run(parse(*arguments)) == 0
    step_titles = [title for title in titles if title.startswith("fused step")]
    expected = _bench.QUICK_STEP_SHAPES if quick else _bench.STEP_SHAPES
    shapes = ["x".join(part.split("=")[1] for part in title.split()[2:6]) for title in step_titles]
    assert shapes == list(expected)


def fixed_cpus_rows(cpus):
    """A NumPy row that follows the thread settings and a row that runs on ``cpus`` CPUs."""
    return [
        _bench._Row("step", "numpy", lambda: None, 1e6),
        _bench._Row("step", "jax", lambda: None, 1e6, cpus=cpus),
    ]


def test_a_row_on_more_cpus_than_the_one_thread_table_is_left_out_with_a_note(capsys):
    _bench._time_table("fused step demo", fixed_cpus_rows(2), [1], 1)
    out = capsys.readouterr().out
    assert "step         numpy" in out and "step         jax" not in out
    note = [line for line in out.splitlines() if line.startswith("jax: left out")]
    assert len(note) == 1 and "taskset -c 0" in note[0] and "2 CPU(s)" in note[0]


def test_a_row_pinned_to_one_cpu_is_in_the_one_thread_table_only(capsys):
    threads = [1, 2] if numba.config.NUMBA_NUM_THREADS >= 2 else [1]
    records = _bench._time_table("fused step demo", fixed_cpus_rows(1), threads, 1)
    out = capsys.readouterr().out
    jax_tables = [r["threads"] for r in records if r["implementation"] == "jax"]
    assert jax_tables == [1]
    assert "taskset" not in out
    if len(threads) == 2:
        assert "jax: left out of this table" in out.split("[threads=2")[1]


def fake_jax():
    """A stand-in for JAX with NumPy underneath: ``loss`` is run for the value, the
    gradients come from the NumPy step, so the bench's plumbing is tested without JAX."""
    import types

    def value_and_grad(loss):
        def both(weights, X, Y):
            _, *gradients = _bench._numpy_step(X, Y, *weights)
            return loss(weights, X, Y), tuple(gradients)

        return both

    return types.SimpleNamespace(
        __version__="fake",
        numpy=np,
        nn=types.SimpleNamespace(sigmoid=_bench._sigmoid),
        jit=lambda function: function,
        value_and_grad=value_and_grad,
        device_put=np.asarray,
        block_until_ready=lambda tree: tree,
    )


@pytest.mark.parametrize("cpus", [1, 2])
def test_jax_rows_from_a_fake_jax_follow_the_cpus_of_the_process(monkeypatch, capsys, cpus):
    monkeypatch.setattr(_bench, "_jax", fake_jax)
    monkeypatch.setattr(_bench, "_schedulable_cpus", lambda: cpus)
    assert _bench.run(parse(*TINY, "--dtypes", "float64")) == 0
    out = capsys.readouterr().out
    assert "JAX fake found" in out
    ((_, rows),) = step_tables(out).items()
    jax_rows = [row for row in rows if row[1] == "jax"]
    if cpus == 1:
        assert len(jax_rows) == 1 and jax_rows[0][7] == "ok"  # the loss is the NumPy step's cost
        assert "left out" not in out
    else:
        assert not jax_rows and "jax: left out of this table" in out and "taskset -c 0" in out


def test_a_wrong_jax_loss_fails_its_check(monkeypatch):
    def wrong_loss_jax():
        jax = fake_jax()
        right = jax.value_and_grad
        jax.value_and_grad = lambda loss: right(lambda *args: 1.01 * loss(*args))
        return jax

    monkeypatch.setattr(_bench, "_jax", wrong_loss_jax)
    rows = {row.implementation: row for row in _bench._step_rows("6x4x5x3", "float64")}
    assert rows["jax"].check > 1 and rows["numpy"].check <= 1


def test_jax_step_with_real_jax_passes_its_check_on_the_processs_cpus():
    pytest.importorskip("jax")
    for dtype in ("float32", "float64"):
        rows = {row.implementation: row for row in _bench._step_rows("40x12x17x3", dtype)}
        assert rows["jax"].check <= 1
        assert rows["jax"].cpus == _bench._schedulable_cpus()
        assert rows["numpy"].cpus is None
    # float64 rows are computed in float64 (JAX's x64 switched on by _jax).
    import jax

    assert jax.config.jax_enable_x64


def test_without_jax_no_row_and_no_note(monkeypatch, capsys):
    # A None entry in sys.modules makes ``import jax`` raise ImportError.
    monkeypatch.setitem(sys.modules, "jax", None)
    assert _bench._jax() is None
    assert _bench.run(parse(*TINY, "--dtypes", "float32")) == 0
    out = capsys.readouterr().out
    assert "jax" not in out.lower()


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
    import benchmarks.bench_sgd_epoch

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
        suite.bench_grad.GradWOut,
        ("100x100x10", dtype, method, 1),
        ["time_grad_W_out", "track_gflops"],
    )
    assert gflops > 0
    assert suite.bench_grad.GradWOut.track_gflops.unit == "GFLOP/s"


def test_asv_grad_two_threads_and_skips(suite):
    run_benchmark(
        suite.bench_grad.GradWOut, ("100x100x10", "float64", "blocked", 2), ["time_grad_W_out"]
    )
    for params in [
        ("100x100x10", "float64", "outer", 2),
        ("4096x1024x1024", "float64", "outer", 1),
    ]:
        with pytest.raises(NotImplementedError):
            suite.bench_grad.GradWOut().setup(*params)


def test_asv_grad_b_out(suite):
    for implementation in ("fastbp", "numpy"):
        run_benchmark(
            suite.bench_grad.GradBOut,
            ("100x100x10", "float32", implementation),
            ["time_grad_b_out"],
        )


@pytest.mark.parametrize("implementation", ["fastbp", "numpy"])
def test_asv_forward_and_output_layer(suite, implementation):
    _, gflops = run_benchmark(
        suite.bench_forward.Forward,
        ("100x100x10", "float32", implementation, 1),
        ["time_forward", "track_gflops"],
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
        suite.bench_backprop.BackpropStep,
        ("100x784x100x10", "float32", "numpy", 1),
        ["time_step", "track_gflops"],
    )
    assert gflops > 0
    import fastbp

    if hasattr(fastbp, "backprop"):
        run_benchmark(
            suite.bench_backprop.BackpropStep,
            ("100x784x100x10", "float32", "fastbp", 1),
            ["time_step"],
        )
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


DIGITS_EPOCH = "1797x64x100x10"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_asv_sgd_epoch_numpy_times_the_same_epoch_every_call(suite, dtype):
    benchmark = suite.bench_sgd_epoch.SgdEpoch()
    benchmark.setup(DIGITS_EPOCH, dtype, "numpy")
    try:
        costs = [benchmark.call() for _ in range(2)]
        assert benchmark.track_gflops(DIGITS_EPOCH, dtype, "numpy") > 0
    finally:
        benchmark.teardown(DIGITS_EPOCH, dtype, "numpy")
    # The weights are restored before each call: no drift from one call to the next.
    assert costs[0] == costs[1] and np.isfinite(costs[0])
    assert set(suite.bench_sgd_epoch.EPOCHS) == {"1797x64x100x10", "6000x784x100x10"}


def test_asv_sgd_epoch_numpy_baseline_is_the_per_step_loop(suite):
    epochs = suite.bench_sgd_epoch
    X, Y, start, order, minibatch_size, eta = epochs.epoch_data(DIGITS_EPOCH, "float64")
    order = order[:100]  # three minibatches of 32, four examples left over
    weights = [np.array(w) for w in start]
    cost = epochs.numpy_sgd_epoch(X, Y, *weights, order, eta, minibatch_size, l2=0.5)
    expected = [np.array(w) for w in start]
    expected_cost = 0.0
    for step in range(3):
        rows = order[step * 32 : (step + 1) * 32]
        J, *gradients = _bench._numpy_step(X[rows], Y[rows], *expected)
        expected_cost += J + 0.25 * (np.sum(expected[0] ** 2) + np.sum(expected[2] ** 2))
        gradients[0] = gradients[0] + 0.5 * expected[0]
        gradients[2] = gradients[2] + 0.5 * expected[2]
        for weight, gradient in zip(expected, gradients):
            weight -= eta * gradient
    assert cost == pytest.approx(expected_cost, rel=1e-12)
    for weight, wanted in zip(weights, expected):
        np.testing.assert_allclose(weight, wanted, rtol=1e-12, atol=1e-15)


def test_asv_sgd_epoch_fastbp_or_skipped(suite, monkeypatch):
    SgdEpoch = suite.bench_sgd_epoch.SgdEpoch
    if hasattr(fastbp, "sgd_epoch"):
        costs = {}
        for implementation in ("fastbp", "numpy"):
            benchmark = SgdEpoch()
            benchmark.setup(DIGITS_EPOCH, "float64", implementation)
            try:
                benchmark.time_epoch(DIGITS_EPOCH, "float64", implementation)
                costs[implementation] = benchmark.call()
            finally:
                benchmark.teardown(DIGITS_EPOCH, "float64", implementation)
        # Both sides train the same epoch: the costs agree to rounding.
        assert costs["fastbp"] == pytest.approx(costs["numpy"], rel=1e-9)
    monkeypatch.delattr(fastbp, "sgd_epoch", raising=False)  # as on an older commit
    with pytest.raises(NotImplementedError, match="sgd_epoch"):
        SgdEpoch().setup(DIGITS_EPOCH, "float64", "fastbp")
    monkeypatch.setitem(sys.modules, "fastbp.datasets", None)  # a commit without the digits
    with pytest.raises(NotImplementedError, match="digits"):
        SgdEpoch().setup(DIGITS_EPOCH, "float64", "numpy")


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
    names = [
        name for name, _ in _calls(np.dtype("float32"), min(2, numba.config.NUMBA_NUM_THREADS))
    ]
    assert [name for name, _ in result["calls"]] == names
    assert result["import"] > 0 and all(seconds >= 0 for _, seconds in result["calls"])


def test_first_call_section_prints_cold_and_cached_per_call(monkeypatch, capsys):
    def fake(dtype, cache_dir):
        fake.folders.append(cache_dir)
        cached = len(fake.folders) % 2 == 0
        return {
            "import": 0.25,
            "calls": [
                ["forward", 0.001 if cached else 1.5],
                ["backprop", 0.002 if cached else 12.0],
            ],
        }

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
    medians = interleaved_medians(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 2, settle=0.05
    )
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
