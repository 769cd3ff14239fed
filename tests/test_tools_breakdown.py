"""``fastbp bench --breakdown`` (fastbp/_tools/breakdown.py): the step's own products, timed alone.

No timing is asserted anywhere: the machine is shared and figures move.
"""

import numba
import numpy as np
import pytest

import fastbp
from fastbp._tools import bench, breakdown
from fastbp._tools.cli import build_parser
from fastbp._tools.problems import make_problem

TINY = ("--shapes", "7x5x3", "--step-shapes", "6x4x5x3", "--repeats", "1", "--threads", "1")


def parse(*arguments):
    """``fastbp bench`` options, parsed (and validated) by the command line's parser."""
    return build_parser().parse_args(["bench", *arguments])


# (n, m, d, t): one chunk ((m, d) Xᵀ δ_h) and several ((d, m), transposed at
# the end); d under a float32 vector (the unpacked forward product) and over.
BREAKDOWN_SHAPES = ["30x20x17x3", "300x13x9x2", "260x40x33x5"]


def test_bench_breakdown_prints_the_parts_and_checks_the_products(capsys):
    status = bench.run(parse(*TINY, "--dtypes", "float32", "--breakdown"))
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
        "OpenBLAS X @ W_h, compiled loop",
        "OpenBLAS X.T @ δ_h, compiled loop",
        "fastbp rest of the step",
        "numpy rest of the step",
        "numpy 1024³ product ",
    ):
        assert part in section
    if numba.config.NUMBA_NUM_THREADS >= 2:
        assert "fastbp step kernel, two at once" in section and "× one alone" in section
    assert "check of fastbp's two products: ok" in section


def test_bench_breakdown_flags_a_wrong_product(monkeypatch, capsys):
    right = breakdown._forward_product

    def off_by_one_row(X, W_h, block_rows, repeats):
        Z = right(X, W_h, block_rows, repeats)
        return np.roll(Z, 1, axis=0)  # row i holds example i − 1's products

    monkeypatch.setattr(breakdown, "_forward_product", off_by_one_row)
    status = bench.run(parse(*TINY, "--dtypes", "float64", "--breakdown"))
    captured = capsys.readouterr()
    assert status == 1
    assert "check of fastbp's two products: FAILED" in captured.out
    assert "breakdown fastbp 6x4x5x3 float64" in captured.err


@pytest.mark.parametrize("shape", BREAKDOWN_SHAPES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_breakdown_products_are_the_steps_products(shape, dtype):
    from fastbp import _tuning
    from fastbp._tools import step_parts

    n, m, d, t = map(int, shape.split("x"))
    assert breakdown.products_within_bound(shape, dtype)
    # Bit for bit what the step's own kernels give: X W_h as the unfused
    # hidden product, Xᵀ δ_h as the unfused gradient (one order of sums).
    net = make_problem(n, m, d, t, dtype)
    delta_h = breakdown._delta_h_sample(n, m, d, dtype)
    from fastbp import _kernels_hidden

    assert breakdown._forward_product is step_parts._step_hidden_product  # not a rebuild
    assert breakdown._input_gradient is step_parts._step_input_gradient
    expected_Z = np.zeros((n, d), dtype)
    _kernels_hidden._hidden_product(net["X"], net["W_h"], expected_Z)
    # Repeated in one call (as the breakdown times them), each repetition the same.
    for repeats in (1, 3):
        Z = breakdown._forward_product(net["X"], net["W_h"], _tuning.STEP_BLOCK_EXAMPLES, repeats)
        np.testing.assert_array_equal(Z, expected_Z)
        for n_chunks in (1, 2):  # (m, d) and (d, m) accumulation
            G = breakdown._input_gradient(
                net["X"], delta_h, _tuning.STEP_BLOCK_EXAMPLES, n_chunks, repeats
            )
            np.testing.assert_array_equal(G, _kernels_hidden._grad_W_h(net["X"], delta_h))


def test_breakdown_products_check_fails_on_a_missing_block(monkeypatch):
    right = breakdown._input_gradient

    def first_block_only(X, delta_h, block_rows, n_chunks, repeats):
        return right(X[:block_rows], delta_h[:block_rows], block_rows, n_chunks, repeats)

    monkeypatch.setattr(breakdown, "_input_gradient", first_block_only)
    assert not breakdown.products_within_bound("300x13x9x2", "float64")


def test_breakdown_section_rest_is_step_less_products_and_threads_are_closed(capsys):
    import threading

    before = threading.active_count()
    medians = breakdown.breakdown_section("30x20x17x3", "float64", 1)
    assert threading.active_count() == before
    for side, products in (
        ("fastbp", ("fastbp X W_h", "fastbp Xᵀ δ_h")),
        ("numpy", ("numpy X @ W_h", "numpy X.T @ δ_h")),
    ):
        expected = medians[f"{side} step"] - medians[products[0]] - medians[products[1]]
        assert medians[f"{side} rest"] == pytest.approx(expected)
    assert all(value > 0 for key, value in medians.items() if not key.endswith("rest"))


def test_product_repeats_keep_a_call_around_a_fixed_amount_of_work():
    assert breakdown.product_repeats(2 * 32 * 64 * 100) == 48  # the digits' X W_h
    assert breakdown.product_repeats(breakdown.PRODUCT_BATCH_FLOPS) == 1
    assert breakdown.product_repeats(2 * 1000 * 784 * 100) == 1
    assert breakdown.product_repeats(1) == 1000  # at most a thousand
    assert breakdown.product_repeats(0) == 1000


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_compiled_blas_loop_is_the_product(dtype):
    from fastbp._tools import step_parts

    rng = np.random.default_rng(4)
    X = rng.random((9, 5)).astype(dtype)
    W = rng.random((5, 7)).astype(dtype)
    D = rng.random((9, 7)).astype(dtype)
    out = np.full((9, 7), np.nan, dtype)
    np.testing.assert_allclose(step_parts._blas_products(X, W, out, 3), X @ W, rtol=1e-5)
    out_T = np.full((5, 7), np.nan, dtype)
    np.testing.assert_allclose(step_parts._blas_products(X.T, D, out_T, 2), X.T @ D, rtol=1e-5)


def test_the_breakdown_times_one_product_per_row(monkeypatch):
    # Rows that repeat their product in one call are divided by the repeats:
    # with calls that take the same time per product, the rows agree.
    candidates = breakdown.breakdown_candidates("32x64x100x10", "float64")
    try:
        repeats = breakdown.product_repeats(2 * 32 * 64 * 100)
        counts = {label: count for label, (_, _, count) in candidates.items()}
        assert counts["fastbp X W_h"] == counts["fastbp Xᵀ δ_h"] == repeats > 1
        assert counts["OpenBLAS X @ W_h, compiled loop"] == repeats
        assert counts["numpy X @ W_h"] == counts["fastbp step"] == 1
    finally:
        for call, _, _ in candidates.values():
            if isinstance(call, breakdown._TwoAtOnce):
                call.close()

    def fake_candidates(shape, dtype):
        labels = (
            "fastbp step", "numpy step", "fastbp X W_h", "numpy X @ W_h",
            "OpenBLAS X @ W_h, compiled loop", "fastbp Xᵀ δ_h", "numpy X.T @ δ_h",
            "OpenBLAS X.T @ δ_h, compiled loop",
        )  # fmt: skip
        return {
            label: (lambda: None, 1.0, 10 if label.startswith(("fastbp X", "OpenBLAS")) else 1)
            for label in labels
        }

    def fake_medians(calls, repeats, min_time):
        return {label: 1.0 for label in calls}  # every call a second

    monkeypatch.setattr(breakdown, "breakdown_candidates", fake_candidates)
    monkeypatch.setattr(breakdown, "interleaved_medians", fake_medians)
    medians = breakdown.breakdown_section("2x2x2x2", "float64", 1)
    assert medians["fastbp X W_h"] == medians["OpenBLAS X.T @ δ_h, compiled loop"] == 0.1
    assert medians["numpy X @ W_h"] == medians["fastbp step"] == 1.0
    assert medians["fastbp rest"] == pytest.approx(0.8)
    assert medians["numpy rest"] == pytest.approx(-1.0)


def test_two_at_once_runs_both_calls_and_raises_the_second_threads_error():
    import threading

    seen = []

    def fail():
        seen.append(("second", threading.get_ident()))
        raise ZeroDivisionError("in the second thread")

    pair = breakdown._TwoAtOnce(lambda: seen.append(("first", threading.get_ident())), fail)
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


@pytest.mark.parametrize("n_chunks", [1, 2])  # the one-chunk kernel, then the chunk driver
def test_two_serial_steps_gives_each_networks_cost(n_chunks):
    from fastbp import _tuning

    nets = [make_problem(40, 12, 17, 3, "float64", seed) for seed in (0, 1)]
    arrays = [tuple(net[k] for k in ("X", "Y", "W_h", "b_h", "W_out", "b_out")) for net in nets]
    costs = breakdown._two_serial_steps(
        arrays[0],
        arrays[1],
        breakdown._new_workspaces("float64", 12, 17, 3, n_chunks),
        float(np.finfo(np.float64).tiny),
        n_chunks,
        _tuning.STEP_BLOCK_EXAMPLES,
        _tuning.DELTA_H_BLOCK_HIDDEN,
    )
    for cost, network in zip(costs, arrays):
        assert cost == float(fastbp.backprop(*network, n_chunks=n_chunks, n_threads=1).cost)
