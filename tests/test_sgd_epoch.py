"""fastbp.sgd_epoch: the per-step loop over fastbp.backprop, bit for bit, in one call."""

import numba
import numpy as np
import pytest

import fastbp
from fastbp import MLP, _kernels_step, backprop, sgd_epoch

from reference import book_step, step_rounding_bound


def problem(n, m, d, t, dtype, seed=0):
    rng = np.random.default_rng([seed, n, m, d, t])
    X = rng.random((n, m)).astype(dtype)
    Y = np.zeros((n, t), dtype)
    Y[np.arange(n), rng.integers(0, t, n)] = 1
    weights = (
        (0.3 * rng.standard_normal((m, d))).astype(dtype),
        (0.1 * rng.standard_normal(d)).astype(dtype),
        (0.3 * rng.standard_normal((d, t))).astype(dtype),
        (0.1 * rng.standard_normal(t)).astype(dtype),
    )
    return X, Y, weights, rng


def per_step_loop(X, Y, weights, order, eta, size, l2):
    """The loop sgd_epoch stands for: backprop on each full minibatch, then W -= η g."""
    weights = [w.copy() for w in weights]
    eta = weights[0].dtype.type(eta)
    costs = []
    for start in range(0, len(order) - size + 1, size):
        rows = order[start : start + size]
        result = backprop(X[rows], Y[rows], *weights, l2)
        costs.append(result.cost)
        for w, g in zip(weights, result[1:]):
            w -= eta * g
    return weights, costs


SHAPES = [
    # n, m, d, t, minibatch: the digits minibatch; layers narrower than one
    # vector; odd widths and a last overlapping panel; two and four chunks
    # per minibatch (256 and 512 examples); one example per step.
    (200, 64, 100, 10, 32),
    (90, 5, 3, 2, 7),
    (120, 33, 37, 17, 16),
    (600, 19, 40, 12, 256),
    (1100, 11, 9, 5, 512),
    (40, 7, 18, 3, 1),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("l2", [0.0, 0.05])
@pytest.mark.parametrize("n, m, d, t, size", SHAPES)
def test_equals_the_per_step_loop_bitwise(n, m, d, t, size, l2, dtype):
    X, Y, weights, rng = problem(n, m, d, t, dtype)
    order = rng.permutation(n)
    expected, costs = per_step_loop(X, Y, weights, order, 0.02, size, l2)
    ours = [w.copy() for w in weights]
    epoch_cost = sgd_epoch(X, Y, *ours, order, 0.02, size, l2)
    for a, b in zip(ours, expected):
        assert a.dtype == dtype
        assert np.array_equal(a, b)
    assert any(not np.array_equal(a, w) for a, w in zip(ours, weights))
    assert isinstance(epoch_cost, float)
    if dtype == np.float64:
        # backprop's float64 costs are the step costs themselves: the same sum.
        assert epoch_cost == sum(float(c) for c in costs)
    else:
        # backprop rounds each step's cost to float32 once; sgd_epoch sums the
        # unrounded float64 costs.
        u = np.finfo(np.float32).eps / 2
        assert abs(epoch_cost - sum(float(c) for c in costs)) <= u * sum(
            abs(float(c)) for c in costs
        )


@pytest.mark.parametrize("n, m, d, t, size", [(200, 64, 100, 10, 32), (600, 19, 40, 12, 256)])
def test_an_epoch_without_step_penalties_keeps_the_weights_and_the_data_cost(n, m, d, t, size):
    # MLP.fit wants the data's cost alone: leaving out each step's (λ/2) Σ W²
    # changes neither the weights nor that cost, on one chunk a step or several.
    from fastbp._sgd import _run_epoch

    X, Y, weights, rng = problem(n, m, d, t, np.float64)
    order = rng.permutation(n).astype(np.int64)
    runs = {}
    for step_penalties in (True, False):
        work = [w.copy() for w in weights]
        costs = _run_epoch(
            X, Y, order, size, work, 0.02, 0.05, np.empty(0, np.int64), step_penalties
        )
        runs[step_penalties] = (costs, work)
    (with_costs, with_weights), (without_costs, without_weights) = runs[True], runs[False]
    assert without_costs[1] == with_costs[1] == without_costs[0] < with_costs[0]
    for a, b in zip(with_weights, without_weights):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, m, d, t, size", [s for s in SHAPES if s[4] < 256])
def test_the_one_chunk_epoch_kernel_gives_the_general_kernels_bits(n, m, d, t, size, dtype):
    # sgd_epoch's kernel for one chunk a step against the kernel for any
    # number of chunks, run with one: weights, both cost sums, correct counts.
    from fastbp import _kernels_epoch, _tuning

    X, Y, weights, rng = problem(n, m, d, t, dtype)
    order = rng.permutation(n).astype(np.int64)
    common = (dtype(0.02), dtype(0.05), True, 0.05, True, float(np.finfo(dtype).tiny))
    blocks = (_tuning.STEP_BLOCK_EXAMPLES, _tuning.DELTA_H_BLOCK_HIDDEN)
    general, one_chunk = [w.copy() for w in weights], [w.copy() for w in weights]
    general_count, one_chunk_count = np.zeros(1, np.int64), np.zeros(1, np.int64)
    general_costs = _kernels_epoch._sgd_epoch(
        X, Y, order, size, *general, *common, 1, *blocks, general_count
    )
    one_chunk_costs = _kernels_epoch._sgd_epoch_one_chunk(
        X, Y, order, size, *one_chunk, *common, *blocks, one_chunk_count
    )
    assert one_chunk_costs == general_costs
    assert one_chunk_count[0] == general_count[0] > 0
    for a, b in zip(one_chunk, general):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows, cols", [(1, 3), (3, 17), (4, 33), (7, 100), (9, 5), (64, 100)])
def test_the_packed_sum_of_squares_adds_each_columns_squares_in_row_order(rows, cols, dtype):
    # The L2 penalty of sgd_epoch's steps, from the weights' panels: each column's
    # squares added one at a time in row order (as backprop's _sum_of_squares),
    # then the columns in order.  Checked column by column on data with many
    # digits, where another order or grouping rounds differently in most columns.
    from fastbp._kernels_epoch import _epoch_weights, _sum_of_squares_packed
    from fastbp._simd import VECTOR_BYTES

    W = np.random.default_rng([rows, cols]).standard_normal((rows, cols)).astype(dtype)
    wpack = _epoch_weights(W, np.zeros((cols, 1), dtype))[0]
    width = max(cols, VECTOR_BYTES // np.dtype(dtype).itemsize)
    column_sums = np.full(cols, np.nan)  # scratch: zeroed by the kernel
    total = _sum_of_squares_packed(wpack, rows, width, cols, column_sums)
    expected_columns = np.zeros(cols)
    for j in range(cols):
        for i in range(rows):
            expected_columns[j] += float(W[i, j]) * float(W[i, j])
    np.testing.assert_array_equal(column_sums, expected_columns)
    expected = 0.0
    for j in range(cols):
        expected += expected_columns[j]
    assert total == expected
    assert total == _kernels_step._sum_of_squares(W)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows, cols", [(1, 1), (5, 3), (100, 10), (7, 16), (3, 17), (6, 40)])
def test_the_output_weights_panels_are_written_from_their_transpose(rows, cols, dtype):
    # sgd_epoch updates W_out as W_outᵀ and copies it into W_out's panels after each
    # step: the copy must lay every column where pack_panels puts it (an overlapping
    # last panel's columns included), and leave the padding columns as they are.
    from fastbp._kernels_epoch import _pack_transposed
    from fastbp._kernels_packed import _packed_padded_weights
    from fastbp._simd import VECTOR_BYTES
    from fastbp._tiles import panel_count, panel_layout

    w = VECTOR_BYTES // np.dtype(dtype).itemsize
    W = np.random.default_rng([rows, cols]).standard_normal((rows, cols)).astype(dtype)
    width = max(cols, w)
    used = rows * sum(panel_layout(width, w, k)[0] * w for k in range(panel_count(width, w)))
    expected = _packed_padded_weights(W)[:used]
    assert np.count_nonzero(expected == 0) == rows * (width - cols)  # the padding
    wpack = np.where(expected == 0, 0, np.nan).astype(dtype)  # NaN wherever a value goes
    _pack_transposed(np.ascontiguousarray(W.T), wpack, width)
    assert wpack.tobytes() == expected.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_order_may_repeat_and_leave_out_examples(dtype):
    X, Y, weights, rng = problem(50, 8, 20, 4, dtype)
    order = np.concatenate([rng.integers(0, 50, 37), [3, 3, 3]]).astype(np.int32)
    expected, _ = per_step_loop(X, Y, weights, order, 0.1, 6, 0.01)
    ours = [w.copy() for w in weights]
    sgd_epoch(X, Y, *ours, order, 0.1, 6, 0.01)
    for a, b in zip(ours, expected):
        assert np.array_equal(a, b)


def test_each_step_is_the_books_within_rounding():
    """Step by step (one minibatch per call), each update is the book's NumPy update."""
    X, Y, weights, rng = problem(60, 9, 13, 4, np.float64)
    eta, l2, size = 0.05, 0.1, 12
    current = tuple(weights)
    for start in range(0, 60, size):
        batch = np.arange(start, start + size)
        new = tuple(w.copy() for w in current)
        sgd_epoch(X, Y, *new, batch, eta, size, l2)
        expected = book_step(X[batch], Y[batch], *current, eta, l2)
        bounds = step_rounding_bound(X[batch], Y[batch], *current, eta, l2, np.float64)
        for ours, theirs, bound in zip(new, expected, bounds):
            assert np.all(np.abs(ours - theirs) <= bound)
        current = new


def test_inputs_other_than_the_weights_are_not_modified():
    X, Y, weights, rng = problem(64, 10, 20, 3, np.float64)
    order = rng.permutation(64)
    copies = [a.copy() for a in (X, Y, order)]
    sgd_epoch(X, Y, *[w.copy() for w in weights], order, 0.1, 8)
    for a, b in zip((X, Y, order), copies):
        assert np.array_equal(a, b)


def test_weights_in_any_layout_are_updated_in_place():
    X, Y, weights, rng = problem(64, 10, 20, 3, np.float64)
    order = rng.permutation(64)
    X32 = X.astype(np.float32)  # promoted exactly to the weights' float64
    expected, _ = per_step_loop(X32.astype(np.float64), Y, weights, order, 0.1, 8, 0.01)
    W_h = np.asfortranarray(weights[0])
    b_h_storage = np.zeros(40)
    b_h = b_h_storage[::2]
    b_h[:] = weights[1]
    W_out = np.ascontiguousarray(weights[2].T).T  # a transposed view
    b_out = weights[3].copy()
    sgd_epoch(X32, Y, W_h, b_h, W_out, b_out, order, 0.1, 8, 0.01)
    for a, b in zip((W_h, b_h, W_out, b_out), expected):
        assert np.array_equal(a, b)
    assert np.array_equal(b_h_storage[::2], expected[1]) and not b_h_storage[1::2].any()


def test_mlp_fit_equals_the_per_step_loop_after_every_epoch():
    X, Y, _, _ = problem(150, 12, 16, 4, np.float64)
    y = np.argmax(Y, axis=1)
    y[:4] = np.arange(4)
    Y = np.eye(4)[y]
    seed, size, eta, l2, epochs = 5, 16, 0.05, 0.02, 3
    snapshots = []
    model = MLP(n_hidden=16, epochs=epochs, eta=eta, minibatch_size=size, l2=l2, seed=seed)
    model.fit(
        X,
        y,
        callback=lambda epoch, m: snapshots.append(
            [w.copy() for w in (m.W_h, m.b_h, m.W_out, m.b_out)]
        ),
    )
    rng = np.random.default_rng(seed)
    weights = [
        rng.normal(0.0, 0.1, (12, 16)),
        np.zeros(16),
        rng.normal(0.0, 0.1, (16, 4)),
        np.zeros(4),
    ]
    for snapshot in snapshots:
        order = np.arange(150)
        rng.shuffle(order)
        weights, _ = per_step_loop(X, Y, weights, order, eta, size, l2)
        for a, b in zip(snapshot, weights):
            assert np.array_equal(a, b)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two Numba threads")
def test_mlp_threaded_steps_have_the_same_bits():
    """With n_threads=2 and big minibatches, fit steps through the threaded backprop instead."""
    X, Y, _, _ = problem(1200, 30, 20, 3, np.float32)
    y = np.argmax(Y, axis=1)
    models = [
        MLP(
            n_hidden=20,
            epochs=2,
            eta=0.01,
            minibatch_size=512,
            seed=1,
            n_threads=threads,
            dtype=np.float32,
        ).fit(X, y)
        for threads in (1, 2)
    ]
    for name in ("W_h", "b_h", "W_out", "b_out"):
        assert np.array_equal(getattr(models[0], name), getattr(models[1], name))


def bad_calls():
    X, Y, weights, _ = problem(20, 4, 5, 3, np.float64)
    W_h, b_h, W_out, b_out = weights
    order = np.arange(20)
    ok = dict(
        X=X, Y=Y, W_h=W_h, b_h=b_h, W_out=W_out, b_out=b_out, order=order, eta=0.1, minibatch_size=4
    )
    read_only = W_h.copy()
    read_only.flags.writeable = False
    return [
        (dict(W_h=W_h.tolist()), TypeError, "W_h must be a numpy.ndarray .*updated in place.*list"),
        (dict(b_out=b_out.astype(np.float32)), TypeError, r"share one dtype.*b_out float32"),
        (dict(W_h=W_h.astype(np.int64)), TypeError, "W_h has dtype int64"),
        (
            dict(b_h=b_h[:4]),
            ValueError,
            r"columns \(d\) of W_h \(5\) must equal length \(d\) of b_h \(4\)",
        ),
        (dict(W_out=W_out[:, :2]), ValueError, r"columns \(t\) of W_out \(2\) must equal length"),
        (dict(W_h=read_only), ValueError, "W_h is read-only"),
        (dict(b_h=W_h[0]), ValueError, "W_h and b_h share memory"),
        (
            dict(
                X=X.astype(np.float32),
                W_h=W_h.astype(np.float32),
                b_h=b_h.astype(np.float32),
                W_out=W_out.astype(np.float32),
                b_out=b_out.astype(np.float32),
            ),
            TypeError,
            r"Y has dtype float64 but the weights are float32.*astype\(np.float32\)",
        ),
        (
            dict(X=X[:, :3]),
            ValueError,
            r"columns \(m\) of X \(3\) must equal rows \(m\) of W_h \(4\)",
        ),
        (dict(Y=Y[:10]), ValueError, r"rows \(n\) of X \(20\) must equal rows \(n\) of Y \(10\)"),
        (dict(Y=Y[:, :2]), ValueError, r"columns \(t\) of Y \(2\)"),
        (dict(X=X.astype(int)), TypeError, "X has dtype int64"),
        (dict(order=order.reshape(4, 5)), ValueError, r"order must be 1-D.*\(4, 5\)"),
        (dict(order=order.astype(float)), TypeError, "order must hold integer.*float64"),
        (dict(order=np.array([0, 20])), ValueError, r"order holds index 20, outside the 20 rows"),
        (dict(order=np.array([-1, 2])), ValueError, "order holds index -1"),
        (dict(eta=0.0), ValueError, "eta must be a positive finite"),
        (dict(eta=np.nan), ValueError, "eta must be a positive finite"),
        (dict(eta="0.1"), TypeError, "eta must be a positive real"),
        (dict(minibatch_size=0), ValueError, "minibatch_size must be a positive integer"),
        (dict(minibatch_size=2.0), TypeError, "minibatch_size must be a positive integer"),
        (dict(minibatch_size=21), ValueError, r"minibatch_size \(21\) is larger than order \(20"),
        (dict(order=order[:0], minibatch_size=1), ValueError, r"larger than order \(0 examples"),
        (dict(l2=-0.1), ValueError, "l2 must be a non-negative"),
    ], ok


@pytest.mark.parametrize("case", range(len(bad_calls()[0])))
def test_bad_input_is_refused_by_name_and_changes_nothing(case):
    cases, ok = bad_calls()
    change, error, pattern = cases[case]
    arguments = {**ok, **change}
    before = {k: np.array(v, copy=True) for k, v in arguments.items() if isinstance(v, np.ndarray)}
    with pytest.raises(error, match=pattern):
        sgd_epoch(**arguments)
    for name, value in before.items():
        assert np.array_equal(arguments[name], value), name


def test_is_public():
    assert "sgd_epoch" in fastbp.__all__ and fastbp.sgd_epoch is sgd_epoch
