"""sigmoid, forward, delta_out and cost against plain-NumPy references."""

import numpy as np
import pytest

import fastbp

from reference import (
    FLOAT_DTYPES,
    cost_reference,
    forward_reference,
    gamma,
    make_network,
    sigmoid_reference,
    unit_roundoff,
)

dtypes = pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)


@dtypes
def test_sigmoid_matches_reference_to_a_few_ulps(dtype, rng):
    Z = np.concatenate(
        [
            rng.normal(0, 5, 5000),
            [0.0, -0.0, 1e-30, -1e-30, 20.0, -20.0, 40.0, -40.0, 700.0, -700.0],
        ]
    ).astype(dtype)
    result = fastbp.sigmoid(Z)
    assert result.dtype == dtype and result.shape == Z.shape
    expected = sigmoid_reference(Z)
    # exp, one add and one divide each round once: a few ulps of the result,
    # plus half a subnormal step where the true value underflows
    bound = 4 * unit_roundoff(dtype) * expected + np.finfo(dtype).smallest_subnormal
    assert np.all(np.abs(result - expected) <= bound)


@dtypes
def test_sigmoid_never_overflows_or_warns(dtype):
    Z = np.array([-1e4, -1e3, -100.0, 100.0, 1e3, 1e4], dtype=dtype)
    if dtype == np.float64:
        Z = np.append(Z, [-1e308, 1e308])
    with np.errstate(all="raise"):  # the reference would raise; fastbp must not warn at all
        result = fastbp.sigmoid(Z)
    assert np.all(np.isfinite(result))
    assert np.all(result[Z < 0] >= 0) and np.all(result[Z < 0] < 1e-30)
    assert np.all(result[Z > 0] == 1)


def test_sigmoid_special_values_and_shapes():
    result = fastbp.sigmoid(np.array([[np.nan, np.inf], [-np.inf, 0.0]]))
    assert np.isnan(result[0, 0]) and result[0, 1] == 1 and result[1, 0] == 0
    assert result[1, 1] == 0.5
    assert fastbp.sigmoid(np.float32(0)).dtype == np.float32
    assert fastbp.sigmoid(np.zeros((0, 3))).shape == (0, 3)
    assert fastbp.sigmoid(np.zeros((2, 3, 4), order="F")[:, ::2]).shape == (2, 2, 4)


@dtypes
def test_sigmoid_symmetry(dtype, rng):
    Z = rng.normal(0, 3, 1000).astype(dtype)
    assert np.allclose(
        fastbp.sigmoid(-Z), 1 - fastbp.sigmoid(Z), rtol=0, atol=2 * np.finfo(dtype).eps
    )


@dtypes
@pytest.mark.parametrize(
    "n, m, d, t", [(0, 4, 3, 2), (1, 1, 1, 1), (37, 13, 11, 7), (500, 64, 30, 10)]
)
def test_forward_within_rounding_bound(n, m, d, t, dtype, rng):
    net = make_network(n, m, d, t, dtype, rng)
    A_h, A_out = fastbp.forward(net["X"], net["W_h"], net["b_h"], net["W_out"], net["b_out"])
    assert A_h.shape == (n, d) and A_out.shape == (n, t)
    assert A_h.dtype == dtype and A_out.dtype == dtype
    ref_h, _ = forward_reference(net["X"], net["W_h"], net["b_h"], net["W_out"], net["b_out"])
    u = unit_roundoff(dtype)
    # |φ'| ≤ 1/4: an error in z of γ_{m+1}(|X||W_h| + |b_h|) moves φ by a quarter
    # of that, and φ itself rounds within 4u.
    z_bound = gamma(m + 1, u) * (
        np.abs(net["X"]).astype(np.float64) @ np.abs(net["W_h"]) + np.abs(net["b_h"])
    )
    assert np.all(np.abs(A_h - ref_h) <= 0.25 * z_bound + 4 * u)
    # Second layer from fastbp's own A_h, so only this layer's rounding counts.
    L = np.longdouble
    z_out = A_h.astype(L) @ net["W_out"].astype(L) + net["b_out"].astype(L)
    out_bound = gamma(d + 1, u) * (
        np.abs(A_h).astype(np.float64) @ np.abs(net["W_out"]) + np.abs(net["b_out"])
    )
    assert np.all(np.abs(A_out - sigmoid_reference(z_out)) <= 0.25 * out_bound + 4 * u)


@dtypes
@pytest.mark.parametrize("m, d", [(0, 3), (4, 0), (0, 0)])
def test_forward_with_an_empty_inner_dimension_is_the_bias_alone(m, d, dtype, rng):
    # An empty sum is 0, never what the output's memory held before: run a
    # product of the same output shape first, so that memory is likely reused.
    n, t = 7, 3
    full = make_network(n, 5, max(d, 1), t, dtype, rng)
    fastbp.forward(full["X"], full["W_h"], full["b_h"], full["W_out"], full["b_out"])
    net = make_network(n, m, d, t, dtype, rng)
    A_h, A_out = fastbp.forward(net["X"], net["W_h"], net["b_h"], net["W_out"], net["b_out"])
    np.testing.assert_array_equal(A_h, np.broadcast_to(fastbp.sigmoid(net["b_h"]), (n, d)))
    if d == 0:
        np.testing.assert_array_equal(A_out, np.broadcast_to(fastbp.sigmoid(net["b_out"]), (n, t)))
    assert (
        fastbp.grad_W_out_matmul(np.ones((0, d), dtype), np.ones((0, t), dtype)).tolist()
        == [[0.0] * t] * d
    )


def test_forward_seed_network_by_hand():
    # m = 2, d = 2, t = 1 with z values chosen as 0 so every φ is exactly 1/2.
    X = np.array([[1.0, -1.0]])
    W_h = np.array([[2.0, 3.0], [2.0, 3.0]])  # z_h = 1·w1 − 1·w2 = 0
    b_h = np.zeros(2)
    W_out = np.array([[4.0], [-4.0]])  # z_out = 0.5·4 − 0.5·4 = 0
    b_out = np.zeros(1)
    A_h, A_out = fastbp.forward(X, W_h, b_h, W_out, b_out)
    assert np.array_equal(A_h, [[0.5, 0.5]]) and np.array_equal(A_out, [[0.5]])
    A_h, A_out = fastbp.forward(X, W_h, np.array([0.0, 1e4]), W_out, np.array([-1e4]))
    assert np.array_equal(A_h, [[0.5, 1.0]]) and A_out[0, 0] == 0.0


@dtypes
def test_delta_out_is_difference(dtype, rng):
    A_out = rng.random((37, 5)).astype(dtype)
    Y = rng.random((37, 5)).astype(dtype)
    result = fastbp.delta_out(A_out, Y)
    assert result.dtype == dtype
    assert np.array_equal(result, A_out - Y)


@dtypes
def test_cost_matches_reference(dtype, rng):
    A_out = rng.random((300, 10)).astype(dtype)
    Y = (rng.random((300, 10)) < 0.2).astype(dtype)
    result = fastbp.cost(A_out, Y)
    assert isinstance(result, dtype)
    expected = cost_reference(A_out, Y)
    # float64 accumulation of 3000 terms, then one rounding to dtype
    assert abs(float(result) - expected) <= (3000 * 2**-52 + 2 * unit_roundoff(dtype)) * abs(
        expected
    )


def test_cost_by_hand():
    # J = −[1·log 0.5] − [(1 − 0)·log(1 − 0.25)] = log 2 − log 0.75
    J = fastbp.cost(np.array([[0.5, 0.25]]), np.array([[1.0, 0.0]]))
    assert J == pytest.approx(np.log(2) - np.log(0.75), rel=1e-15)


@dtypes
def test_cost_is_finite_at_saturated_outputs(dtype):
    tiny = np.finfo(dtype).tiny
    A_out = np.array([[0.0, 1.0, 0.0, 1.0]], dtype=dtype)
    Y = np.array([[0.0, 1.0, 1.0, 0.0]], dtype=dtype)
    J = fastbp.cost(A_out, Y)
    # right and certain: 0; wrong and certain: −log(tiny) each
    assert J == pytest.approx(-2 * np.log(tiny), rel=1e-6)
    assert fastbp.cost(A_out[:, :2], Y[:, :2]) == 0


def test_cost_nan_propagates_and_out_of_range_is_nan():
    assert np.isnan(fastbp.cost(np.array([[np.nan]]), np.array([[1.0]])))
    assert np.isnan(fastbp.cost(np.array([[1.5]]), np.array([[0.5]])))
    assert np.isnan(fastbp.cost(np.array([[-0.5]]), np.array([[0.5]])))


def test_cost_of_no_examples_is_zero():
    assert fastbp.cost(np.zeros((0, 3)), np.zeros((0, 3))) == 0


def test_exp_of_the_sigmoid_within_one_ulp():
    # φ's exp is fastbp's own (a polynomial, vectorisable); check it against
    # long-double exp over the whole non-positive range, subnormals included.
    import numba

    from fastbp._kernels import _exp_nonpositive, _exp_nonpositive_float32

    @numba.njit
    def exp_all(x, out):
        for i in range(x.shape[0]):
            out[i] = _exp_nonpositive(x[i])

    @numba.njit
    def exp_all_float32(x, out):  # float32 arithmetic throughout
        for i in range(x.shape[0]):
            out[i] = _exp_nonpositive_float32(x[i])

    rng = np.random.default_rng(12)
    x = -np.concatenate(
        [
            rng.random(200_000) * 746,
            rng.random(200_000) * 2,
            rng.random(1000) * 1e-12,
            [
                0.0,
                1e-300,
                0.34657359,
                708.39,
                708.4,
                709.0,
                744.4,
                745.1,
                745.2,
                746,
                800,
                1e308,
                np.inf,
            ],
        ]
    )
    result = np.empty_like(x)
    exp_all(x, result)
    expected = np.exp(x.astype(np.longdouble))
    ulp = np.spacing(expected.astype(np.float64)).astype(
        np.longdouble
    )  # subnormal spacing at the bottom
    assert np.all(np.abs(result - expected) <= ulp)
    assert np.isnan(exp_all_single(exp_all, np.nan))

    # float32: its own arguments (x rounded to float32, down to −104, where e^x is under half the
    # smallest subnormal), within 1.04 ulp: the largest error over every float32 in [−104, 0] is
    # 1.034 ulp (docs/equality.md), so a wrong constant or a lost polynomial term shows here.
    x32 = np.concatenate([x[x >= -110], -rng.random(200_000) * 104]).astype(np.float32)
    result32 = np.empty(x32.shape, np.float32)
    exp_all_float32(x32, result32)
    expected32 = np.exp(x32.astype(np.longdouble))
    ulp32 = np.spacing(expected32.astype(np.float32)).astype(np.longdouble)
    assert np.all(np.abs(result32 - expected32) <= 1.04 * ulp32)
    assert np.all(result32[x32 < -103.973] == 0)  # below half the smallest subnormal
    assert np.isnan(exp_all_single(exp_all_float32, np.float32(np.nan)))


def test_log_of_the_cost_within_one_ulp():
    # The cost's log is fastbp's own too (vectorisable): check it against
    # long-double log from the smallest normal float64 to the largest, with
    # the arguments the cost gives it (a and 1 − a near 0 and near 1).
    import numba

    from fastbp._kernels import _clamped_log

    @numba.njit
    def log_all(x, tiny, out):
        for i in range(x.shape[0]):
            out[i] = _clamped_log(x[i], tiny)

    rng = np.random.default_rng(13)
    tiny = float(np.finfo(np.float64).tiny)
    x = np.concatenate(
        [
            rng.random(200_000),
            1.0 - rng.random(200_000) * 1e-6,
            np.exp(rng.uniform(-708, 709, 200_000)),
            1.0 + rng.uniform(-0.3, 0.42, 200_000),
            np.sqrt(2.0) + rng.uniform(-1e-6, 1e-6, 1000),
            [
                tiny,
                2 * tiny,
                0.5,
                1.0,
                2.0,
                np.nextafter(1.0, 0),
                np.nextafter(1.0, 2),
                1e308,
                np.finfo(np.float64).max,
                float(np.finfo(np.float32).tiny),
            ],
        ]
    )
    result = np.empty_like(x)
    log_all(x, tiny, result)
    expected = np.log(x.astype(np.longdouble))
    ulp = np.spacing(np.abs(expected.astype(np.float64))).astype(np.longdouble)
    assert np.all(np.abs(result - expected) <= ulp)
    assert result[x == 1.0][0] == 0.0

    special = np.array([0.0, tiny / 4, -0.0, -1.0, -np.inf, np.nan, np.inf])
    out = np.empty_like(special)
    log_all(special, tiny, out)
    assert out[0] == out[1] == out[2] == np.log(tiny)  # [0, tiny) reads as tiny
    assert np.isnan(out[3]) and np.isnan(out[4]) and np.isnan(out[5])
    assert out[6] == np.inf
    # With float32's tiny, as the float32 cost uses it.
    tiny32 = float(np.finfo(np.float32).tiny)
    log_all(np.array([0.0, tiny32 / 2]), tiny32, out[:2])
    assert out[0] == out[1] == np.float64(np.log(np.longdouble(tiny32)))


def exp_all_single(exp_all, value):
    out = np.empty(1, dtype=np.asarray(value).dtype)
    exp_all(np.array([value]), out)
    return out[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_loops_cost_terms_are_the_scalar_definitions(dtype):
    # _cost_term is the documented definition of one term; _cost_terms computes the same terms
    # in two vectorisable passes: the same bits, zero-weight terms and clamped logs included.
    from fastbp import _kernels

    a = np.array([0.0, 1.0, 0.5, 1e-30, 1 - 2**-20, 0.25, 1.0, 0.0, np.nan, 0.75], dtype)
    y = np.array([0.0, 1.0, 1.0, 1.0, 0.0, 0.5, 0.0, 1.0, 1.0, np.nan], dtype)
    tiny = float(np.finfo(dtype).tiny)
    terms = np.empty(a.shape[0])
    _kernels._cost_terms(a, y, tiny, terms)
    expected = np.array([_kernels._cost_term(a[e], y[e], tiny) for e in range(a.shape[0])])
    assert np.array_equal(terms, expected, equal_nan=True)
    assert terms[0] == 0.0 and terms[1] == 0.0  # a = y: no 0·log(0)
    assert np.isnan(terms[8]) and np.isnan(terms[9])
    # Targets all 0 or 1 (-0 included) take one logarithm per term: the same bits.
    rng = np.random.default_rng(5)
    a = np.concatenate([a, rng.random(300)]).astype(dtype)
    y = np.concatenate([[0.0, 1.0, 1.0, 1.0, -0.0, 0.0, 0.0, 1.0, 1.0, 0.0], rng.random(300) < 0.3])
    y = y.astype(dtype)
    terms = np.empty(a.shape[0])
    _kernels._cost_terms(a, y, tiny, terms)
    expected = np.array([_kernels._cost_term(a[e], y[e], tiny) for e in range(a.shape[0])])
    assert np.array_equal(terms, expected, equal_nan=True)
    assert np.array_equal(np.signbit(terms), np.signbit(expected))


def test_the_steps_count_of_correct_rows_breaks_ties_and_nan_as_numpy_argmax():
    # _count_correct is how the fused step counts correct classifications for MLP's history;
    # its argmax must be numpy.argmax's: the first of equal values, the first NaN.
    from fastbp._kernels import _count_correct, _first_argmax

    rng = np.random.default_rng(3)
    rows = rng.integers(0, 3, size=(400, 5)).astype(np.float64)  # many ties
    rows[rng.random(rows.shape) < 0.05] = np.nan
    rows[0] = [np.nan, 1, np.nan, 2, 0]
    rows[1] = [1, np.nan, 3, 3, np.nan]
    for row in rows:
        assert _first_argmax(row) == np.argmax(row)
    targets = np.eye(5)[rng.integers(0, 5, 400)]
    for dtype in (np.float32, np.float64):
        A = rows.astype(dtype)
        expected = int(np.sum(np.argmax(A, axis=1) == np.argmax(targets, axis=1)))
        assert _count_correct(A, targets.astype(dtype)) == expected
    assert _count_correct(np.zeros((4, 0)), np.zeros((4, 0))) == 0  # no outputs, nothing right
