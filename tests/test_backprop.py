"""Hidden-layer functions and the fused training step against plain NumPy."""

import math
import warnings

import numba
import numpy as np
import pytest

from fastbp import (
    _backprop,
    _kernels_packed,
    _kernels_step,
    _scratch,
    _tuning,
    backprop,
    cost,
    default_backprop_chunks,
    delta_h,
    delta_out,
    forward,
    grad_b_h,
    grad_b_out,
    grad_W_h,
    grad_W_out,
    l2_penalty,
)

from reference import (
    backprop_rounding_bound,
    delta_h_reference,
    forward_reference,
    gamma,
    grad_b_h_reference,
    grad_W_h_reference,
    network_cost,
    random_network,
    unit_roundoff,
)

DTYPES = [np.float32, np.float64]
# (n, m, d, t): n not a multiple of the block (192) nor of the tile (6);
# d, t, m odd or 1; one shape large enough to be cut into several chunks;
# one with m over the forward product's 800-input pass and the gradient's
# 128-input blocks.
SHAPES = [
    (1, 1, 1, 1),
    (7, 5, 3, 2),
    (37, 9, 6, 3),
    (70, 13, 130, 5),
    (300, 11, 7, 4),
    (401, 803, 19, 3),
]


def composed(X, Y, W_h, b_h, W_out, b_out, l2=0.0):
    """The fused step built from the unfused public functions."""
    A_h, A_out = forward(X, W_h, b_h, W_out, b_out)
    d_out = delta_out(A_out, Y)
    d_h = delta_h(d_out, W_out, A_h)
    dtype = A_out.dtype.type
    return {
        "cost": dtype(float(cost(A_out, Y)) + l2_penalty(W_h, W_out, l2)),
        "grad_W_h": grad_W_h(X, d_h) + dtype(l2) * W_h,
        "grad_b_h": grad_b_h(d_h),
        "grad_W_out": grad_W_out(A_h, d_out) + dtype(l2) * W_out,
        "grad_b_out": grad_b_out(d_out),
    }


# --------------------------------------------------------------------------
# Exactly representable data: every product and partial sum is exact, so
# any summation order gives the same bits.
# --------------------------------------------------------------------------


def exact_hidden_data(rng, n, d, t, dtype):
    """δ_out, W_out small integers; A_h in {0, 1/4, 1/2, 3/4, 1} so a(1−a) is exact."""
    d_out = rng.integers(-8, 9, (n, t)).astype(dtype)
    W_out = rng.integers(-8, 9, (d, t)).astype(dtype)
    A_h = (rng.integers(0, 5, (n, d)) / 4).astype(dtype)
    return d_out, W_out, A_h


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, d, t", [(1, 1, 1), (9, 5, 3), (33, 130, 7), (0, 4, 2)])
def test_delta_h_bitwise_on_exact_data(dtype, n, d, t):
    rng = np.random.default_rng(1)
    d_out, W_out, A_h = exact_hidden_data(rng, n, d, t, dtype)
    result = delta_h(d_out, W_out, A_h)
    assert result.dtype == dtype and result.shape == (n, d)
    assert np.array_equal(result, delta_h_reference(d_out, W_out, A_h))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, m, d", [(1, 1, 1), (9, 5, 3), (70, 13, 130), (0, 3, 2)])
def test_grad_W_h_and_grad_b_h_bitwise_on_exact_data(dtype, n, m, d):
    rng = np.random.default_rng(2)
    X = rng.integers(-16, 17, (n, m)).astype(dtype)
    d_h = (rng.integers(-64, 65, (n, d)) / 16).astype(dtype)
    G = grad_W_h(X, d_h)
    b = grad_b_h(d_h)
    assert G.dtype == dtype and G.shape == (m, d) and G.flags.c_contiguous
    assert b.dtype == dtype and b.shape == (d,)
    assert np.array_equal(G, (X.astype(np.float64).T @ d_h.astype(np.float64)).astype(dtype))
    assert np.array_equal(b, d_h.astype(np.float64).sum(axis=0).astype(dtype))


# --------------------------------------------------------------------------
# Random data: within the proven rounding bound of a wide reference
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_hidden_functions_within_rounding_bound(dtype):
    rng = np.random.default_rng(3)
    n, m, d, t = 301, 17, 45, 6
    X = rng.normal(size=(n, m)).astype(dtype)
    d_out = rng.normal(size=(n, t)).astype(dtype)
    W_out = rng.normal(size=(d, t)).astype(dtype)
    A_h = rng.random((n, d)).astype(dtype)
    u = unit_roundoff(dtype)

    result = delta_h(d_out, W_out, A_h)
    wide = [a.astype(np.longdouble) for a in (d_out, W_out, A_h)]
    exact = delta_h_reference(*wide)
    # A t-term sum, then two products and 1 − a, each one rounding.
    sig_d = wide[2] * (1 - wide[2])
    bound = gamma(t, u) * (np.abs(wide[0]) @ np.abs(wide[1]).T) * sig_d + 4 * u * np.abs(exact)
    assert np.all(np.abs(result - exact) <= bound)

    d_h = result
    G = grad_W_h(X, d_h)
    bound_G = gamma(n, u) * (np.abs(X).astype(np.longdouble).T @ np.abs(d_h).astype(np.longdouble))
    assert np.all(np.abs(G - grad_W_h_reference(X, d_h)) <= bound_G)
    b = grad_b_h(d_h)
    bound_b = gamma(n, u) * np.abs(d_h).astype(np.longdouble).sum(axis=0)
    assert np.all(np.abs(b - grad_b_h_reference(d_h)) <= bound_b)


# --------------------------------------------------------------------------
# The fused step
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    # and no inputs (m = 0): the products write their zeros without running a tile
    "shape",
    SHAPES + [(6, 0, 3, 2), (6, 0, 40, 20)],
    ids=lambda s: "x".join(map(str, s)),
)
@pytest.mark.parametrize("l2", [0.0, 0.7])
def test_backprop_equals_composition_within_bound(dtype, shape, l2):
    rng = np.random.default_rng(4)
    network = random_network(rng, *shape, dtype)
    fused = backprop(*network, l2=l2, n_threads=1)
    unfused = composed(*network, l2=l2)
    bound = backprop_rounding_bound(*network, l2, dtype)
    for key, expected in unfused.items():
        value = getattr(fused, key)
        assert np.asarray(value).dtype == dtype, key
        assert np.shape(value) == np.shape(expected), key
        difference = np.abs(np.asarray(value, np.float64) - np.asarray(expected, np.float64))
        assert np.all(difference <= bound[key]), (key, np.max(difference / bound[key]))


def test_backprop_fields_are_named():
    rng = np.random.default_rng(5)
    result = backprop(*random_network(rng, 4, 3, 2, 2, np.float64))
    assert result._fields == ("cost", "grad_W_h", "grad_b_h", "grad_W_out", "grad_b_out")
    assert result.grad_W_h.shape == (3, 2) and result.grad_W_out.shape == (2, 2)


@pytest.mark.parametrize("l2", [0.0, 0.3])
def test_every_gradient_is_the_derivative_of_the_cost(l2):
    """Central differences of J_λ for every weight and bias (float64).

    The central difference D(h) = g + c h² + O(h⁴), so D(2h) − D(h) ≈ 3 c h²
    and 2 |D(h) − D(2h)| covers the truncation error c h² of D(h) six times
    over.  J itself is evaluated with a relative error of at most a few tens
    of u (a sum of 2 n t = 42 logarithms), so rounding adds at most
    2 · 50 u |J| / (2h) = 50 u |J| / h to each difference; we allow 100.
    A wrong gradient is off by O(|g|) ≈ 0.1 to 1, far above these ≈ 1e-8.
    """
    rng = np.random.default_rng(6)
    n, m, d, t = 7, 4, 3, 3
    network = list(random_network(rng, n, m, d, t, np.float64, scale=1.0))
    X, Y = network[:2]
    result = backprop(*network, l2=l2)
    gradients = [result.grad_W_h, result.grad_b_h, result.grad_W_out, result.grad_b_out]
    J = network_cost(*network, l2)
    assert math.isclose(float(result.cost), J, rel_tol=1e-13)
    u = unit_roundoff(np.float64)
    h = 1e-5

    def central(params, k, index, step):
        plus = [p.copy() for p in params]
        minus = [p.copy() for p in params]
        plus[k][index] += step
        minus[k][index] -= step
        return (network_cost(X, Y, *plus, l2) - network_cost(X, Y, *minus, l2)) / (2 * step)

    params = network[2:]
    checked = 0
    for k, gradient in enumerate(gradients):
        for index in np.ndindex(params[k].shape):
            fd_h = central(params, k, index, h)
            fd_2h = central(params, k, index, 2 * h)
            tolerance = 2 * abs(fd_h - fd_2h) + 100 * u * abs(J) / h
            assert abs(gradient[index] - fd_h) <= tolerance, (k, index, gradient[index], fd_h)
            checked += 1
    assert checked == m * d + d + d * t + t


needs_two_threads = pytest.mark.skipif(
    numba.config.NUMBA_NUM_THREADS < 2, reason="needs NUMBA_NUM_THREADS >= 2"
)


@needs_two_threads
@pytest.mark.parametrize("n_chunks", [None, 3])
def test_one_and_two_threads_give_identical_bits(n_chunks):
    rng = np.random.default_rng(7)
    network = random_network(rng, 600, 19, 37, 5, np.float64)
    if n_chunks is None:
        assert default_backprop_chunks(600, 19, 37, 5, 8) == 4
    one = backprop(*network, l2=0.1, n_chunks=n_chunks, n_threads=1)
    two = backprop(*network, l2=0.1, n_chunks=n_chunks, n_threads=2)
    for a, b in zip(one, two):
        assert np.array_equal(a, b)


def _same_bits(first, second):
    return all(
        np.asarray(a).dtype == np.asarray(b).dtype
        and np.asarray(a).tobytes() == np.asarray(b).tobytes()
        for a, b in zip(first, second)
    )


@needs_two_threads
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "n, m, d, t",
    [(100, 784, 100, 10), (1, 5, 3, 2), (7, 40, 33, 17), (400, 13, 70, 3), (250, 64, 131, 40)],
)
def test_one_chunk_shared_among_threads_gives_the_serial_bits(dtype, n, m, d, t):
    # One chunk on several threads: rows of each block for the forward pass
    # and deltas, inputs for Xᵀ δ_h.  Every element must keep the serial
    # bits, -0 included, for any number of parts and whether W_h's panels
    # are packed once or once per part.

    rng = np.random.default_rng([n, m, d, t])
    network = random_network(rng, n, m, d, t, dtype)
    serial = backprop(*network, n_chunks=1, n_threads=1)
    # (the public function shares the block only from SHARED_STEP_MIN_MULTIPLY_ADDS up)
    assert _same_bits(backprop(*network, n_chunks=1, n_threads=2), serial)
    X, Y, W_h, b_h, W_out, b_out = network
    tiny = float(np.finfo(dtype).tiny)
    # The count of correct classifications: one chunk on this thread, against the reference
    # (rows whose two largest outputs are too close to call may go either way).
    serial_correct = np.zeros(1, dtype=np.int64)
    _kernels_step._backprop_serial(
        *network, tiny, 1, _tuning.STEP_BLOCK_EXAMPLES, _tuning.DELTA_H_BLOCK_HIDDEN,
        _scratch._workspace(np.dtype(dtype), m, d, t, 1), np.empty(0), np.inf, serial_correct,
    )  # fmt: skip
    expected_correct = int(serial_correct[0])
    A_out = np.asarray(forward_reference(X, W_h, b_h, W_out, b_out)[1], dtype=np.float64)
    top_two = np.sort(A_out, axis=1)[:, -2:] if t > 1 else np.zeros((n, 2))
    close = top_two[:, 1] - top_two[:, 0] < 1e-4
    clearly_right = (np.argmax(A_out, axis=1) == np.argmax(Y, axis=1)) & ~close
    assert clearly_right.sum() <= expected_correct <= clearly_right.sum() + close.sum()
    for n_parts in (2, 3):
        for replicate_bytes in (0, 2**30):
            correct = np.zeros(n_parts, dtype=np.int64)
            parallel = _kernels_step._backprop_blocks_parallel(
                X,
                Y,
                W_h,
                b_h,
                W_out,
                b_out,
                tiny,
                n_parts,
                _tuning.STEP_BLOCK_EXAMPLES,
                _tuning.DELTA_H_BLOCK_HIDDEN,
                replicate_bytes,
                _scratch._workspace(np.dtype(dtype), m, d, t, n_parts),
                correct,
            )
            assert _same_bits((dtype(parallel[0]),) + tuple(parallel[1:]), serial)
            # Each part counts its own rows' correct classifications: the same total.
            assert correct.sum() == expected_correct


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, m, d, t", SHAPES + [(0, 5, 3, 2), (200, 64, 100, 10)])
def test_the_one_chunk_kernel_gives_the_bits_of_the_chunk_driver(dtype, n, m, d, t):
    # backprop's single-chunk path (no chunk sums, no private branch compiled)
    # against the driver every other path runs, with one chunk: the same bits
    # and the same count of correct classifications.
    rng = np.random.default_rng([n, m, d, t, 1])
    network = random_network(rng, n, m, d, t, dtype)
    tiny = float(np.finfo(dtype).tiny)
    blocks = (_tuning.STEP_BLOCK_EXAMPLES, _tuning.DELTA_H_BLOCK_HIDDEN)
    driver_count, one_chunk_count = np.zeros(1, np.int64), np.zeros(1, np.int64)

    def workspace():  # NaN-filled: nothing may be read before it is written
        return np.full(_scratch._workspace_size(np.dtype(dtype), m, d, t, 1), np.nan, dtype)

    driver = _kernels_step._backprop_serial(
        *network, tiny, 1, *blocks, workspace(), np.empty(0), np.inf, driver_count
    )
    gradients = _backprop._empty_gradients(m, d, t, np.dtype(dtype))
    answer, cost = _kernels_step._plain_step(
        *network, 0.0, tiny, workspace(), one_chunk_count, *gradients, True
    )
    assert answer == _kernels_step.PLAIN_STEP_DONE
    assert _same_bits((cost, *gradients), driver)
    assert one_chunk_count[0] == driver_count[0]
    public = backprop(*network, n_chunks=1, n_threads=1)
    assert _same_bits(public, (dtype(driver[0]),) + tuple(driver[1:]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "n, m, d, t", SHAPES + [(0, 5, 3, 2), (6, 4, 0, 3), (6, 4, 3, 0), (200, 64, 100, 10)]
)
@pytest.mark.parametrize("l2", [0.25, 0.1, 0.0, 1e-50])
def test_the_one_chunk_step_adds_the_l2_terms_with_the_bits_of_the_other_paths(
    dtype, n, m, d, t, l2
):
    # backprop's minibatch path adds λW inside its one compiled call; every
    # other path adds it afterwards (_with_penalty).  The same bits, including
    # a λ that float32 cannot hold exactly (0.1: rounded once, to X's dtype),
    # and one that rounds to 0 in float32 (the product λW is then 0, the
    # cost's penalty is not).
    rng = np.random.default_rng([n, m, d, t, 2])
    X, Y, W_h, b_h, W_out, b_out = random_network(rng, n, m, d, max(t, 1), dtype)
    # t = 0: no outputs (random_network draws one-hot targets, so it needs one).
    network = (X, Y[:, :t].copy(), W_h, b_h, W_out[:, :t].copy(), b_out[:t].copy())
    terms = _backprop._data_terms(*network, 1, 1)
    expected = _backprop._with_penalty(*(np.copy(term) for term in terms), *network[2:5:2], l2)
    for n_threads in (1, None):
        fused = backprop(*network, l2=l2, n_chunks=1, n_threads=n_threads)
        assert _same_bits(fused, expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, d, t", [(1, 1, 1), (3, 17, 2), (7, 33, 5), (64, 100, 10), (5, 0, 3)])
def test_the_l2_terms_are_numpys_sum_and_the_squares_in_row_order(dtype, m, d, t):
    # _add_l2_gradients (every path's λW and Σ W²): each gradient element is
    # NumPy's g + l2 * W (the product rounded, then the sum: no fused
    # multiply-add), and Σ W² adds each column's squares in float64 in row
    # order, then the columns in order, W_h's total first.  Data with many
    # digits, where a fused multiply-add or another order rounds differently.
    from fastbp import _kernels_step

    rng = np.random.default_rng([m, d, t, 3])
    W_h, W_out = (rng.standard_normal(shape).astype(dtype) for shape in ((m, d), (d, t)))
    g_W_h, g_W_out = (rng.standard_normal(shape).astype(dtype) for shape in ((m, d), (d, t)))
    l2 = dtype(0.1)
    expected_W_h, expected_W_out = g_W_h + l2 * W_h, g_W_out + l2 * W_out

    def squares(W):
        column_sums = [0.0] * W.shape[1]
        for row in W:
            for j, value in enumerate(row):
                column_sums[j] += float(value) * float(value)
        total = 0.0
        for column_sum in column_sums:
            total += column_sum
        return total

    total = _kernels_step._add_l2_gradients(g_W_h, g_W_out, W_h, W_out, l2)
    assert g_W_h.tobytes() == expected_W_h.tobytes()
    assert g_W_out.tobytes() == expected_W_out.tobytes()
    assert total == squares(W_h) + squares(W_out)
    assert total == _kernels_step._sum_of_squares(W_h) + _kernels_step._sum_of_squares(W_out)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_chunks", [1, 2, 3, 5])
@pytest.mark.parametrize("d, m", [(1, 1), (7, 5), (16, 16), (17, 33), (100, 784), (40, 3)])
def test_the_transposed_partials_are_summed_in_chunk_order(dtype, n_chunks, d, m):
    # Several chunks' Xᵀ δ_h partials are (d, m); their total is summed in
    # chunk order and transposed to (m, d), vector blocks in registers and the
    # edges element by element (_sum_transposed_partials).  The bits of NumPy's
    # ((p0 + p1) + p2) + …, transposed, on data whose sums all round; one
    # partial (the breakdown's timing of the product) is transposed unchanged.
    from fastbp import _kernels_step

    partials = np.random.default_rng([d, m, n_chunks]).standard_normal((n_chunks, d, m))
    partials = partials.astype(dtype)
    expected = partials[0].copy()
    for c in range(1, n_chunks):
        expected = expected + partials[c]
    total = _kernels_step._sum_transposed_partials(partials.copy())
    assert total.shape == (m, d) and total.flags.c_contiguous
    assert total.tobytes() == np.ascontiguousarray(expected.T).tobytes()


@pytest.mark.parametrize("n_chunks", [1, 2])
def test_an_l2_float32_cannot_hold_warns_on_every_path(n_chunks):
    # λ = 1e39 overflows float32: NumPy's overflow warning on the minibatch path
    # (its λ is rounded inside the compiled call) as on the chunked one.  Zero
    # weights, so the cost (λ/2)·ΣW² = 0 stays finite and only λ's rounding warns.
    X, Y, W_h, b_h, W_out, b_out = random_network(np.random.default_rng(3), 8, 3, 4, 2, np.float32)
    with warnings.catch_warnings(record=True) as caught:
        # Not pytest.warns: with the JIT off, the kernels' Python arithmetic
        # also warns about λ·0 = NaN, which compiled code does silently.
        warnings.simplefilter("always")
        result = backprop(
            X, Y, 0 * W_h, b_h, 0 * W_out, b_out, l2=1e39, n_chunks=n_chunks, n_threads=1
        )
    assert any("overflow" in str(warning.message) for warning in caught)
    assert np.isfinite(result.cost)


def test_default_chunks_depend_on_shape_only():
    assert default_backprop_chunks(0, 5, 5, 5, 8) == 1
    assert default_backprop_chunks(255, 5, 5, 5, 8) == 1
    assert default_backprop_chunks(1000, 5, 5, 5, 8) == 4  # 7 → power of two below
    assert default_backprop_chunks(60000, 784, 100, 10, 8) == 16
    # 16 partial gradients of a 4000 × 4000 W_h would take 2 GiB: fewer chunks.
    assert default_backprop_chunks(60000, 4000, 4000, 10, 8) == 1


def test_cost_follows_fastbp_cost_convention_on_saturated_outputs():
    """Outputs exactly 0 and 1: zero-weight terms give 0, log(0) reads as log(tiny)."""
    X = np.array([[1.0], [1.0], [-1.0]])
    W_h = np.array([[1.0]])
    b_h = np.zeros(1)
    W_out = np.array([[3000.0, -3000.0]])
    b_out = np.zeros(2)
    Y = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    A_out = forward(X, W_h, b_h, W_out, b_out)[1]
    assert set(np.unique(A_out)) == {0.0, 1.0}
    expected = cost(A_out, Y)
    result = backprop(X, Y, W_h, b_h, W_out, b_out)
    assert result.cost == expected
    assert expected == pytest.approx(-2 * np.log(np.finfo(np.float64).tiny))


def test_l2_penalty_value_and_consistency():
    W_h = np.array([[1.0, -2.0]])
    W_out = np.array([[3.0], [0.5]])
    assert l2_penalty(W_h, W_out, 0.5) == 0.25 * (1 + 4 + 9 + 0.25)
    assert l2_penalty(W_h, W_out, 0.0) == 0.0
    with pytest.raises(ValueError, match="l2"):
        l2_penalty(W_h, W_out, -1.0)


# --------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_examples(dtype):
    rng = np.random.default_rng(8)
    X, Y, W_h, b_h, W_out, b_out = random_network(rng, 0, 3, 4, 2, dtype)
    assert delta_h(np.zeros((0, 2), dtype), W_out, np.zeros((0, 4), dtype)).shape == (0, 4)
    assert np.array_equal(grad_W_h(X, np.zeros((0, 4), dtype)), np.zeros((3, 4), dtype))
    assert np.array_equal(grad_b_h(np.zeros((0, 4), dtype)), np.zeros(4, dtype))
    result = backprop(X, Y, W_h, b_h, W_out, b_out, l2=2.0)
    assert result.cost == dtype(l2_penalty(W_h, W_out, 2.0))
    assert np.array_equal(result.grad_W_h, dtype(2.0) * W_h)
    assert np.array_equal(result.grad_b_h, np.zeros(4, dtype))
    assert np.array_equal(result.grad_b_out, np.zeros(2, dtype))


def test_float32_stays_float32_and_mixed_promotes():
    rng = np.random.default_rng(9)
    network = random_network(rng, 5, 3, 4, 2, np.float32)
    result = backprop(*network)
    assert isinstance(result.cost, np.float32)
    assert all(g.dtype == np.float32 for g in result[1:])
    mixed = list(network)
    mixed[2] = mixed[2].astype(np.float64)
    assert all(np.asarray(v).dtype == np.float64 for v in backprop(*mixed))
    assert delta_h(network[1], network[4], np.zeros((5, 4))).dtype == np.float64
    assert grad_W_h(network[0], np.zeros((5, 4), np.float32)).dtype == np.float32
    assert grad_b_h(np.zeros((5, 4), np.float32)).dtype == np.float32


def test_any_layout_accepted_and_inputs_not_modified():
    rng = np.random.default_rng(10)
    network = random_network(rng, 41, 6, 5, 3, np.float64)
    expected = backprop(*network, l2=0.2)
    # Fortran order, strided views, read-only arrays.
    odd = []
    for a in network:
        if a.ndim == 2:
            b = np.asfortranarray(a)
        else:
            b = np.repeat(a, 2)[::2]
        b.flags.writeable = False
        odd.append(b)
    copies = [a.copy() for a in odd]
    result = backprop(*odd, l2=0.2)
    for a, b in zip(result, expected):
        assert np.array_equal(a, b)
    X, Y, W_h, b_h, W_out, b_out = odd
    A_h = np.asfortranarray(rng.random((41, 5)))
    A_h.flags.writeable = False
    d_out = odd[1]
    d_h = delta_h(d_out, W_out, A_h)
    assert np.array_equal(
        d_h,
        delta_h(
            np.ascontiguousarray(d_out), np.ascontiguousarray(W_out), np.ascontiguousarray(A_h)
        ),
    )
    grad_W_h(X, np.asfortranarray(d_h))
    grad_b_h(np.asfortranarray(d_h))
    for a, b in zip(odd, copies):
        assert np.array_equal(a, b)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda a: delta_h(a["d_out"].astype(int), a["W_out"], a["A_h"]), "delta_out"),
        (lambda a: delta_h(a["d_out"], a["W_out"].astype(np.float16), a["A_h"]), "W_out"),
        (lambda a: delta_h(a["d_out"], a["W_out"], a["A_h"].astype(bool)), "A_h"),
        (lambda a: grad_W_h(a["X"].astype(np.int32), a["d_h"]), "X"),
        (lambda a: grad_W_h(a["X"], a["d_h"].astype(complex)), "delta_h"),
        (lambda a: grad_b_h(a["d_h"].astype(np.int64)), "delta_h"),
        (lambda a: backprop(a["X"], a["Y"].astype(int), *a["net"]), "Y"),
        (lambda a: backprop(a["X"], a["Y"], a["net"][0].astype(int), *a["net"][1:]), "W_h"),
        (lambda a: backprop(a["X"], a["Y"], *a["net"][:3], a["net"][3].astype(int)), "b_out"),
    ],
)
def test_bad_dtype_names_the_argument(call, name):
    with pytest.raises(TypeError, match=rf"^{name} has dtype"):
        call(bad_input_arrays())


def bad_input_arrays():
    rng = np.random.default_rng(11)
    X, Y, W_h, b_h, W_out, b_out = random_network(rng, 4, 3, 5, 2, np.float64)
    return {
        "X": X,
        "Y": Y,
        "net": (W_h, b_h, W_out, b_out),
        "W_out": W_out,
        "d_out": np.zeros((4, 2)),
        "A_h": np.zeros((4, 5)),
        "d_h": np.zeros((4, 5)),
    }


@pytest.mark.parametrize(
    "call, pattern",
    [
        (lambda a: delta_h(a["d_out"][:, :1], a["W_out"], a["A_h"]), "delta_out.*W_out"),
        (lambda a: delta_h(a["d_out"], a["W_out"], a["A_h"][:, :4]), "A_h.*W_out"),
        (lambda a: delta_h(a["d_out"][:3], a["W_out"], a["A_h"]), "delta_out.*A_h"),
        (lambda a: delta_h(a["d_out"][0], a["W_out"], a["A_h"]), "delta_out must be 2-D"),
        (lambda a: grad_W_h(a["X"][:3], a["d_h"]), "X.*delta_h"),
        (lambda a: grad_W_h(a["X"], a["d_h"][0]), "delta_h must be 2-D"),
        (lambda a: grad_b_h(a["d_h"][0]), "delta_h must be 2-D"),
        (lambda a: backprop(a["X"][:, :2], a["Y"], *a["net"]), "X.*W_h"),
        (lambda a: backprop(a["X"][:3], a["Y"], *a["net"]), "X.*Y"),
        (lambda a: backprop(a["X"], a["Y"][:, :1], *a["net"]), "Y.*W_out"),
        (
            lambda a: backprop(a["X"], a["Y"], a["net"][0], a["net"][1][:4], *a["net"][2:]),
            "W_h.*b_h",
        ),
        (
            lambda a: backprop(a["X"], a["Y"], *a["net"][:2], a["net"][2][:4], a["net"][3]),
            "W_h.*W_out",
        ),
        (lambda a: backprop(a["X"], a["Y"], *a["net"][:3], a["net"][3][:1]), "W_out.*b_out"),
        (lambda a: backprop(a["X"], a["Y"], *a["net"], l2=-0.1), "l2"),
        (lambda a: backprop(a["X"], a["Y"], *a["net"], l2=float("nan")), "l2"),
        (lambda a: backprop(a["X"], a["Y"], *a["net"], n_chunks=0), "n_chunks"),
        (lambda a: backprop(a["X"], a["Y"], *a["net"], n_threads=10**6), "n_threads"),
    ],
)
def test_bad_shapes_and_options_name_the_arguments(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call(bad_input_arrays())


def test_bad_option_types():
    a = bad_input_arrays()
    with pytest.raises(TypeError, match="l2"):
        backprop(a["X"], a["Y"], *a["net"], l2="big")
    with pytest.raises(TypeError, match="n_threads"):
        backprop(a["X"], a["Y"], *a["net"], n_threads=1.5)


# The products of the fused step promise the bits of the plain kernels
# (the same fused multiply-adds in the same order); shapes cross every
# edge: rows not a multiple of the 6-row tile, m over the forward's
# 800-input pass (two passes) and the gradient's 128-input blocks, d not a multiple of
# a vector (an overlapping last panel), over 128 (δ_h copied in blocks) or
# exactly one or two vectors (of 32 or of 64 bytes).
PACKED_SHAPES = [
    (1, 1, 8),
    (5, 7, 16),
    (4, 20, 24),
    (7, 1601, 19),
    (13, 97, 33),
    (11, 50, 48),
    (192, 803, 100),
    (6, 400, 9),
    (9, 130, 131),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows, m, d", PACKED_SHAPES)
def test_packed_products_give_the_bits_of_the_unpacked_kernels(dtype, rows, m, d, rng):
    from fastbp import _kernels_hidden as kh
    from fastbp._simd import VECTOR_BYTES

    X = rng.normal(size=(rows + 3, m)).astype(dtype)  # the block starts at row 2
    W_h = rng.normal(size=(m, d)).astype(dtype)
    D = rng.normal(size=(rows, d)).astype(dtype)
    w = VECTOR_BYTES // np.dtype(dtype).itemsize
    if d < w:
        pytest.skip("the packed kernels need d of at least one vector")
    Z0 = rng.normal(size=(rows, d)).astype(dtype)  # both accumulate onto Z0
    Z_packed, Z_plain = Z0.copy(), Z0.copy()
    wpack = _kernels_packed._packed_weights(W_h)
    _kernels_packed._hidden_forward_packed(X, 2, rows, wpack, m, d, Z_packed, False, False)
    kh._hidden_product(X[2 : 2 + rows], W_h, Z_plain)
    assert np.array_equal(Z_packed, Z_plain)
    # ``fresh`` writes Z instead of adding to it (the step's buffers are
    # never zeroed): Z's NaN on entry are never read, and the result has
    # the bits of adding to zeros, over one pass of inputs or two.
    Z_fresh = np.full((rows, d), np.nan, dtype)
    _kernels_packed._hidden_forward_packed(X, 2, rows, wpack, m, d, Z_fresh, True, False)
    Z_zeros = np.zeros((rows, d), dtype)
    kh._hidden_product(X[2 : 2 + rows], W_h, Z_zeros)
    assert np.array_equal(Z_fresh, Z_zeros)
    # W_h read in place (a small step's forward product): W_h's own
    # elements, nothing packed, the same bits.
    in_place = _kernels_packed._weights_for_tiles(W_h, np.empty(0, dtype), True)
    assert np.shares_memory(in_place, W_h) and in_place.shape == (m * d,)
    # and packed where the step is large (in_place False)
    buffer = np.full(wpack.size, np.nan, dtype)
    packed = _kernels_packed._weights_for_tiles(W_h, buffer, False)
    assert np.shares_memory(packed, buffer) and np.array_equal(packed[: m * d], wpack[: m * d])
    Z_in_place = np.full((rows, d), np.nan, dtype)
    _kernels_packed._hidden_forward_packed(X, 2, rows, in_place, m, d, Z_in_place, True, True)
    assert np.array_equal(Z_in_place, Z_zeros)
    # and the loop nest the fused step uses when the columns are narrower
    # than a vector: the same chain of fused multiply-adds, whatever the
    # column tile
    for block_cols in (_tuning.DELTA_H_BLOCK_HIDDEN, 5):
        Z_loop = Z0.copy()
        kh._matmul_accumulate(X[2 : 2 + rows], W_h, Z_loop, block_cols)
        assert np.array_equal(Z_loop, Z_plain)

    # Xᵀ δ_h as the fused step computes it: X read in place from row 2,
    # all inputs at once and split into two input ranges as two threads
    # would take them
    G0 = rng.normal(size=(m, d)).astype(dtype)
    G_plain = G0.copy()
    kh._grad_W_h_accumulate(X[2 : 2 + rows], D, G_plain)
    # The tile engine's scratch holds garbage on entry, as a reused workspace does.
    w = kh.VECTOR_BYTES // X.itemsize
    scratch = np.full(_scratch._tile_scratch_size(rows, m, d, 0, w), np.nan, dtype=dtype)
    for cut in (m, (m // 2) // _tuning.TILE_ROWS * _tuning.TILE_ROWS, 1):
        G_fused = G0.copy()
        _kernels_step._add_grad_W_h(X, 2, rows, D, G_fused, 0, cut, scratch, False)
        _kernels_step._add_grad_W_h(X, 2, rows, D, G_fused, cut, m, scratch, False)
        assert np.array_equal(G_fused, G_plain)
    # and in the transposed (d, m) orientation the chunked step uses
    G_T = np.ascontiguousarray(G0.T)
    _kernels_step._add_grad_W_h_T(X, 2, rows, D, G_T, scratch, False)
    assert np.array_equal(G_T.T, G_plain)
    # A chunk's first block writes the gradient (``fresh``) and the next
    # blocks add to it: NaN on entry never read, the bits of a sum from zeros.
    G_zeros = np.zeros((m, d), dtype)
    kh._grad_W_h_accumulate(X[2 : 2 + rows], D, G_zeros)
    first = rows // 2
    blocks = [(2, 0, first, True), (2 + first, first, rows, first == 0)]
    G_fresh = np.full((m, d), np.nan, dtype)
    G_T = np.full((d, m), np.nan, dtype)
    for i0, r0, r1, fresh in blocks:
        _kernels_step._add_grad_W_h(X, i0, r1 - r0, D[r0:r1], G_fresh, 0, m, scratch, fresh)
        _kernels_step._add_grad_W_h_T(X, i0, r1 - r0, D[r0:r1], G_T, scratch, fresh)
    assert np.array_equal(G_fresh, G_zeros)
    assert np.array_equal(G_T.T, G_zeros)


ENGINE_CASES = [
    (23, 37, 9, 5, 256, 48),  # several blocks of examples, one of columns
    (23, 37, 9, 256, 16, 4),  # one block of examples, blocks of columns and of G's rows
    (17, 5, 7, 4, 256, 3),  # N under one vector: element by element
    (0, 37, 9, 5, 16, 4),  # no examples
    # A's blocks packed into panels (large blocks, many rows of G), and
    # read in place (a large block but few rows of G; packed in float64)
    (300, 40, 20, 256, 256, 48),
    (300, 100, 10, 256, 256, 48),
]


def _engine_reads_A_in_place(n, N, K, block_n, block_d, block_t, dtype):
    """Whether the tile engine read A in place for these sizes: it left its panels unwritten."""
    from fastbp import _tiles
    from fastbp._simd import VECTOR_BYTES

    w = VECTOR_BYTES // np.dtype(dtype).itemsize
    rng = np.random.default_rng(0)
    A = rng.normal(size=(n, N)).astype(dtype)
    D = rng.normal(size=(n, K)).astype(dtype)
    scratch = np.full(_tiles.scratch_size(n, N, K, block_n, block_d, block_t, w), np.nan, dtype)
    G = np.zeros((K, N), dtype)
    _tiles.accumulate(A, D[:, 0:K], 0, n, G, block_n, block_d, block_t, scratch, False)
    panels = min(block_n, n) * (min(block_d, N) + w)  # then D's copied block, if any
    return bool(np.isnan(scratch[:panels]).all())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, N, K, block_n, block_d, block_t", ENGINE_CASES)
def test_the_tile_engine_writes_instead_of_adding_with_fresh(
    dtype, n, N, K, block_n, block_d, block_t, rng
):
    """accumulate / accumulate_columns: G += Dᵀ A, and with ``fresh`` G = Dᵀ A.

    Exact data (small integers: every product and sum is exact), so the
    result is Dᵀ A itself, whichever way A is read (in place or packed).
    With ``fresh`` only the first block of examples starts from zero: the
    later ones add to it.  The columns asked for hold NaN on entry, which a
    read would keep; the result has the bits of adding to zeros.  Other
    columns of G are left alone, and no examples give zeros.
    """
    from fastbp import _tiles
    from fastbp._simd import VECTOR_BYTES

    w = VECTOR_BYTES // np.dtype(dtype).itemsize
    A = rng.integers(-8, 9, size=(n, N)).astype(dtype)
    D = rng.integers(-8, 9, size=(n, K)).astype(dtype)
    scratch = np.full(_tiles.scratch_size(n, N, K, block_n, block_d, block_t, w), np.nan, dtype)
    expected = np.zeros((K, N), dtype)
    _tiles.accumulate(A, D[:, 0:K], 0, n, expected, block_n, block_d, block_t, scratch, False)
    assert np.array_equal(expected, (D.T.astype(np.float64) @ A.astype(np.float64)).astype(dtype))
    G = np.full((K, N), np.nan, dtype)
    _tiles.accumulate(A, D[:, 0:K], 0, n, G, block_n, block_d, block_t, scratch, True)
    assert np.array_equal(G, expected)
    if n == 0:
        assert not G.any()
    j0, j1 = 1, N - 1  # some columns only
    G = np.full((K, N), 7.0, dtype)
    G[:, j0:j1] = np.nan
    _tiles.accumulate_columns(
        A, D[:, 0:K], 0, n, G, j0, j1, block_n, block_d, block_t, scratch, True
    )
    assert np.array_equal(G[:, j0:j1], expected[:, j0:j1])
    assert np.all(G[:, :j0] == 7.0) and np.all(G[:, j1:] == 7.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_tile_engine_cases_read_A_both_ways(dtype):
    """The cases of the test above run both ways of reading A: in place and packed.

    Observed, not recomputed from the rule: a packed block of A is written
    into the engine's scratch, a block read in place leaves it as it was.
    """
    ways = {
        _engine_reads_A_in_place(n, N, K, bn, bd, bt, dtype)
        for n, N, K, bn, bd, bt in ENGINE_CASES
        if n > 0 and N >= 16  # some rows, and a block at least one vector wide
    }
    assert ways == {True, False}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("t", [1, 3, 7, 15])
def test_padded_output_weights_give_the_bits_of_the_loop_nest(dtype, t, rng):
    # Outputs narrower than a vector run on zero-padded panels; the real
    # columns must not notice the padding.
    from fastbp import _kernels_hidden as kh
    from fastbp._simd import VECTOR_BYTES

    w = VECTOR_BYTES // np.dtype(dtype).itemsize
    rows, d = 13, 37
    A_h = rng.random((rows, d)).astype(dtype)
    W_out = rng.normal(size=(d, t)).astype(dtype)
    wpack = _kernels_packed._packed_padded_weights(W_out)
    width = max(t, w)
    # _weights_for_tiles: read in place when at least one vector wide, else
    # padded and packed (one panel of one vector)
    weights = _kernels_packed._weights_for_tiles(W_out, np.full(wpack.size, np.nan, dtype), True)
    if t >= w:
        assert np.shares_memory(weights, W_out) and weights.shape == (d * t,)
    else:
        assert np.array_equal(weights[: d * w], wpack[: d * w])
    Z = np.full((rows, width), np.nan, dtype)  # written, never read (``fresh``)
    _kernels_packed._hidden_forward_packed(A_h, 0, rows, wpack, d, width, Z, True, False)
    expected = np.zeros((rows, t), dtype)
    kh._matmul_accumulate(A_h, W_out, expected, _tuning.DELTA_H_BLOCK_HIDDEN)
    assert np.array_equal(Z[:, :t], expected)
    assert not Z[:, t:].any()


def test_block_constants_are_sane():
    # The bound derivations above assume nothing about block sizes, but the
    # kernels need positive ones.
    assert _tuning.STEP_BLOCK_EXAMPLES > 0 and _tuning.DELTA_H_BLOCK_HIDDEN > 0


def _in_a_new_thread(function):
    import threading

    out = []
    worker = threading.Thread(target=lambda: out.append(function()))
    worker.start()
    worker.join()
    return out[0]


def test_workspace_is_kept_per_thread_and_grows_when_needed(monkeypatch):
    def checks():  # a new thread starts with no workspace
        f64 = np.dtype(np.float64)
        first = _scratch._workspace(f64, 50, 30, 4, 1)
        assert _scratch._workspace(f64, 50, 30, 4, 1) is first
        assert _scratch._workspace(f64, 10, 5, 2, 1) is first  # smaller fits
        bigger = _scratch._workspace(f64, 500, 30, 4, 1)
        assert bigger is not first and bigger.shape[0] > first.shape[0]
        with_partials = _scratch._workspace(f64, 500, 30, 4, 1, n_chunks=4)
        assert with_partials.shape[0] >= bigger.shape[0] + 4 * (500 * 30 + 30 + 4 * 30 + 4)
        assert _scratch._workspace(np.dtype(np.float32), 50, 30, 4, 1).dtype == np.float32
        return with_partials

    mine = _scratch._workspace(np.dtype(np.float64), 50, 30, 4, 1)
    theirs = _in_a_new_thread(checks)
    assert theirs is not mine
    monkeypatch.setattr(_scratch, "WORKSPACE_MAX_KEPT_BYTES", 1000)  # above it: fresh each call
    assert _scratch._workspace(np.dtype(np.float64), 50, 30, 4, 1) is not (
        _scratch._workspace(np.dtype(np.float64), 50, 30, 4, 1)
    )


def test_python_threads_stepping_at_once_get_their_own_bits():
    """Each Python thread has its own workspace: concurrent steps do not mix their panels."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(5)
    networks = [random_network(rng, 40 + 3 * k, 30, 24 + k, 5, np.float64) for k in range(6)]
    expected = [backprop(*network, n_threads=1) for network in networks]

    def steps(k):
        return [backprop(*networks[k], n_threads=1) for _ in range(20)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(steps, range(6)))
    for k, repeated in enumerate(results):
        for result in repeated:
            assert _same_bits(result, expected[k])


def test_a_count_array_too_small_for_the_threads_is_refused():
    # The kernels count correct classifications into a slot per chunk or thread, unchecked:
    # _data_terms refuses an array that a thread could write past.
    import numba

    network = random_network(np.random.default_rng(0), 40, 6, 5, 3, np.float64)
    slots = max(_tuning.STEP_MAX_CHUNKS, numba.config.NUMBA_NUM_THREADS)
    correct = np.zeros(slots, dtype=np.int64)
    _backprop._data_terms(*network, 1, None, correct)
    # The minibatch path's single compiled call is no way round the check.
    for n_threads in (1, None):
        with pytest.raises(ValueError, match="slots"):
            _backprop._backprop_prepared(*network, 0.0, 1, n_threads, correct[:1])
    A_out = forward(*network[:1], *network[2:])[1]
    top_two = np.sort(A_out, axis=1)[:, -2:]
    assert np.all(top_two[:, 1] - top_two[:, 0] > 1e-9)  # no near-tie to call differently
    assert correct.sum() == np.sum(np.argmax(A_out, axis=1) == np.argmax(network[1], axis=1))
    needed = max(1, numba.config.NUMBA_NUM_THREADS)  # one chunk here
    if needed > 1:
        with pytest.raises(ValueError, match="slots"):
            _backprop._data_terms(*network, 1, None, np.zeros(needed - 1, dtype=np.int64))
    with pytest.raises(ValueError, match="slots"):  # 4 chunks need 4 slots whatever the threads
        _backprop._data_terms(*network, 4, None, np.zeros(3, dtype=np.int64))


def _record_plain_steps(monkeypatch):
    """backprop's calls of the compiled plain step that decide for themselves: their answers."""
    answers = []
    plain_step = _kernels_step._plain_step

    def recording(*args):
        result = plain_step(*args)
        if not args[-1]:  # not ``decided`` by the validated path
            answers.append(int(result[0]))
        return result

    monkeypatch.setattr(_kernels_step, "_plain_step", recording)
    return answers


DONE = _kernels_step.PLAIN_STEP_DONE
NEEDS_WORKSPACE = _kernels_step.PLAIN_STEP_NEEDS_WORKSPACE
DECLINED = _kernels_step.PLAIN_STEP_DECLINED


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "n, m, d, t",
    [(0, 3, 4, 2), (1, 1, 1, 1), (32, 64, 100, 10), (37, 9, 6, 3), (255, 11, 7, 4), (5, 0, 4, 2)],
)
@pytest.mark.parametrize("l2", [0.0, 0.01, 0.1])
def test_the_plain_step_gives_the_bits_of_the_validated_path(monkeypatch, dtype, n, m, d, t, l2):
    # With default options, backprop runs a minibatch step in one compiled call
    # (_plain_step), which checks what validation would; n_chunks=1 takes the
    # validated path to the same step.  The same bits and types.
    network = random_network(np.random.default_rng([n, m, d, t, 9]), n, m, d, t, dtype)
    expected = backprop(*network, l2=l2, n_chunks=1)
    answers = _record_plain_steps(monkeypatch)

    def two_steps():  # a new thread: no workspace kept for the first call
        return backprop(*network, l2=l2), backprop(*network, l2=l2)

    first, second = _in_a_new_thread(two_steps)
    assert answers == [NEEDS_WORKSPACE, DONE, DONE]  # the first call sized one and ran
    for result in (first, second):
        assert _same_bits(result, expected)
        assert type(result.cost) is dtype
    assert all(a.flags.c_contiguous and a.flags.writeable for a in second[1:])
    # Every call returns arrays of its own.
    assert not any(np.shares_memory(a, b) for a, b in zip(first[1:], second[1:]))


def test_the_plain_step_declines_what_the_validated_path_must_handle(monkeypatch):
    rng = np.random.default_rng(10)
    network = random_network(rng, 8, 3, 4, 2, np.float64)
    X, Y, W_h, b_h, W_out, b_out = network
    backprop(*network)  # this thread now keeps a workspace
    answers = _record_plain_steps(monkeypatch)
    outside = Y.copy()
    outside[1, 0] = 2.0
    with pytest.raises(ValueError, match=r"Y must hold targets in \[0, 1\].*index \(1, 0\)"):
        backprop(X, outside, W_h, b_h, W_out, b_out)
    for l2 in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="l2"):
            backprop(*network, l2=l2)
    assert answers == [DECLINED] * 4
    # NaN targets pass (they propagate to the cost), as on the validated path.
    with_nan = Y.copy()
    with_nan[0, 0] = np.nan
    assert math.isnan(backprop(X, with_nan, W_h, b_h, W_out, b_out).cost)
    assert answers[-1] == DONE
    # Two chunks' worth of examples: the validated path decides chunks and
    # threads, with its bits.
    big = random_network(rng, 256, 3, 4, 2, np.float64)
    expected = _backprop._backprop_prepared(*big, 0.0, default_backprop_chunks(256, 3, 4, 2, 8), 1)
    assert _same_bits(backprop(*big), expected)
    assert answers[-1] == DECLINED
    # Enough work in one chunk to share between threads: with two Numba threads
    # the kernel is not asked (the validated path shares the chunk); with one it
    # runs the step.  The same bits either way.
    shared = random_network(rng, 8, 200, 200, 2, np.float64)
    assert 8 * 200 * 200 >= _tuning.SHARED_STEP_MIN_MULTIPLY_ADDS
    expected = _backprop._backprop_prepared(*shared, 0.0, 1, 1)
    previous = numba.get_num_threads()
    try:
        for threads in (2, 1):
            if threads > numba.config.NUMBA_NUM_THREADS:
                continue
            numba.set_num_threads(threads)
            asked = len(answers)
            assert _same_bits(backprop(*shared), expected)
            assert answers[asked:] == ([] if threads == 2 else [DONE])
            assert _same_bits(backprop(*shared, n_chunks=1), expected)
    finally:
        numba.set_num_threads(previous)
    # λ that float32 cannot hold: the validated path's overflow warning.
    single = tuple(a.astype(np.float32) for a in network)
    backprop(*single)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backprop(single[0], single[1], 0 * single[2], single[3], 0 * single[4], single[5], l2=1e39)
    assert any("overflow" in str(warning.message) for warning in caught)
    assert answers[-1] == DECLINED
    # Options, an int λ, another layout or mixed dtypes: not asked at all.
    asked = len(answers)
    backprop(*network, n_threads=1)
    backprop(*network, n_chunks=1)
    backprop(*network, l2=1)
    backprop(np.asfortranarray(X), Y, W_h, b_h, W_out, b_out)
    backprop(X.astype(np.float32), Y, W_h, b_h, W_out, b_out)
    assert len(answers) == asked


def test_python_threads_on_the_plain_step_get_their_own_bits(monkeypatch):
    """Concurrent minibatch steps, each in its thread's workspace: no panels mixed."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(11)
    networks = [random_network(rng, 40 + 3 * k, 30, 24 + k, 5, np.float64) for k in range(6)]
    expected = [backprop(*network, n_chunks=1) for network in networks]
    answers = _record_plain_steps(monkeypatch)

    def steps(k):
        return [backprop(*networks[k]) for _ in range(20)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(steps, range(6)))
    # Each network's steps run in one worker: only its first may find the
    # worker's workspace missing or too small (then it is grown, and asked again).
    assert answers.count(NEEDS_WORKSPACE) <= 6
    assert answers.count(DONE) == 6 * 20 and DECLINED not in answers
    for k, repeated in enumerate(results):
        for result in repeated:
            assert _same_bits(result, expected[k])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "n, m, d, t", [(1, 1, 1, 1), (32, 64, 100, 10), (9, 5, 17, 33), (255, 3, 4, 2)]
)
def test_the_plain_step_needs_exactly_the_workspace_python_sizes(dtype, n, m, d, t):
    # _plain_step checks the workspace against its own sum of the layout; it must be
    # _workspace_size's (which the validated path allocates), to the element.
    network = random_network(np.random.default_rng([n, m, d, t, 12]), n, m, d, t, dtype)
    size = _scratch._workspace_size(np.dtype(dtype), m, d, t, 1)
    tiny = float(np.finfo(dtype).tiny)
    no_counts = np.zeros(0, np.int64)
    gradients = _backprop._empty_gradients(m, d, t, np.dtype(dtype))
    # Gradient arrays that a declined or short call must leave as they were.
    untouched = tuple(np.full_like(g, np.nan) for g in gradients)
    short = _kernels_step._plain_step(
        *network, 0.0, tiny, np.zeros(size - 1, dtype), no_counts, *untouched, False
    )
    enough = _kernels_step._plain_step(
        *network, 0.0, tiny, np.zeros(size, dtype), no_counts, *gradients, False
    )
    assert (enough[0], short[0]) == (DONE, NEEDS_WORKSPACE)
    assert all(np.isnan(g).all() for g in untouched)
    # Its cost is float64 (backprop rounds it once, to the dtype).
    assert _same_bits((dtype(enough[1]), *gradients), backprop(*network, n_chunks=1))
