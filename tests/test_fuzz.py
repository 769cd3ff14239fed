"""Fuzzing the public API with Hypothesis: shapes, dtypes, layouts and values.

Every function either returns what the NumPy reference gives, within the
documented bound (NaN and ±inf exactly where NumPy has them), or raises a
``TypeError``/``ValueError`` naming an argument; it never modifies an input.

Profiles (``FASTBP_FUZZ_PROFILE``):

* ``ci`` (the default): 300 examples per test, derandomised, so CI sees the
  same examples every run (about 25 s here, compiled code cached);
* ``release``: 5000 random examples per test, for release checks, once
  with ``NUMBA_BOUNDSCHECK=1`` (every array access of the kernels checked;
  that compiles every kernel again, into its own cache folder)::

      FASTBP_FUZZ_PROFILE=release python -m pytest -q tests/test_fuzz.py
      NUMBA_BOUNDSCHECK=1 FASTBP_FUZZ_PROFILE=release python -m pytest -q tests/test_fuzz.py
"""

import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import fastbp

from reference import (
    SIGMOID_ULPS,
    backprop_rounding_bound,
    gamma,
    network_cost,
    outer_sum_reference,
    rounding_bound,
    sigmoid_reference,
    unit_roundoff,
)

settings.register_profile(
    "ci",
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "release",
    max_examples=5000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = settings.get_profile(os.environ.get("FASTBP_FUZZ_PROFILE", "ci"))

DTYPES = [np.float32, np.float64]
BAD_DTYPES = [np.int64, np.int8, np.bool_, np.float16, np.complex128, object]
LAYOUTS = ["C", "F", "strided", "reversed", "read-only"]


def values(dtype, kind):
    """Elements of one kind: exact small multiples of 1/8, moderate floats, or anything special."""
    info = np.finfo(dtype)
    if kind == "exact":
        return st.integers(-16, 16).map(lambda k: k / 8)
    moderate = st.floats(-4, 4, width=32 if dtype == np.float32 else 64)
    if kind == "moderate":
        return moderate
    special = st.sampled_from(
        [np.nan, np.inf, -np.inf, 0.0, -0.0, float(info.smallest_subnormal),
         -float(info.smallest_subnormal), float(info.tiny), 2.0**60, -(2.0**60), 3.0, -1.0]
    )  # fmt: skip
    return st.one_of(moderate, special)


@st.composite
def arrays(draw, shape, dtype, kind, layout=None):
    """An array of ``shape`` in one of the layouts (a view where it is not C-contiguous)."""
    data = draw(st.lists(values(dtype, kind), min_size=int(np.prod(shape)),
                         max_size=int(np.prod(shape))))  # fmt: skip
    array = np.array(data, dtype=np.float64).astype(dtype).reshape(shape)
    layout = draw(st.sampled_from(LAYOUTS)) if layout is None else layout
    return lay_out(array, layout)


def lay_out(array, layout):
    """The same values in another memory layout."""
    if layout == "F":
        return np.asfortranarray(array)
    if layout == "strided":
        big = np.zeros(tuple(2 * s + 1 for s in array.shape), array.dtype)
        view = big[tuple(slice(1, None, 2) for _ in array.shape)]
        view[...] = array
        return view
    if layout == "reversed":
        flipped = np.ascontiguousarray(array[tuple(slice(None, None, -1) for _ in array.shape)])
        return flipped[tuple(slice(None, None, -1) for _ in array.shape)]
    if layout == "read-only":
        array = array.copy()
        array.flags.writeable = False
        return array
    return np.ascontiguousarray(array)


def snapshot(*inputs):
    return [np.array(a, copy=True) for a in inputs]


def assert_unchanged(inputs, copies):
    for array, copy in zip(inputs, copies):
        assert np.array_equal(array, copy, equal_nan=True), "an input was modified"


def assert_special_values_as_numpy(result, reference):
    """NaN exactly where the reference has NaN, ±inf exactly where it has ±inf."""
    reference = np.asarray(reference)
    assert np.array_equal(np.isnan(result), np.isnan(reference))
    infinite = np.isinf(reference)
    assert np.array_equal(result[infinite], reference[infinite])
    assert np.all(np.isfinite(result[np.isfinite(reference)]))


def assert_sum_within_bound(result, A, B):
    """Σ_i A[i, j] B[i, k] within γ_n |A|ᵀ|B| (plus n subnormals for underflow) of the exact sum."""
    with np.errstate(all="ignore"):
        reference = outer_sum_reference(A, B)
        bound = rounding_bound(A, B) + A.shape[0] * float(np.finfo(A.dtype).smallest_subnormal)
    assert result.shape == reference.shape and result.dtype == A.dtype
    assert_special_values_as_numpy(result, reference)
    finite = np.isfinite(reference)
    error = np.abs(result[finite].astype(reference.dtype) - reference[finite])
    assert np.all(error <= bound[finite])


@st.composite
def operand_pair(draw, second_columns_name="t"):
    dtype = draw(st.sampled_from(DTYPES))
    kind = draw(st.sampled_from(["exact", "moderate", "special"]))
    n, d, t = draw(st.integers(0, 9)), draw(st.integers(0, 7)), draw(st.integers(0, 7))
    return dtype, kind, draw(arrays((n, d), dtype, kind)), draw(arrays((n, t), dtype, kind))


@PROFILE
@given(operand_pair(), st.sampled_from(["outer", "blocked", "matmul", "grad_W_h"]))
def test_products_equal_numpy_within_the_bound(pair, method):
    dtype, kind, A, B = pair
    copies = snapshot(A, B)
    if method == "grad_W_h":
        result = fastbp.grad_W_h(A, B)
    else:
        result = fastbp.grad_W_out(A, B, method=method)
    assert_unchanged((A, B), copies)
    if kind == "exact":  # every product and partial sum exact: the same bits as NumPy
        assert np.array_equal(result, (A.astype(np.float64).T @ B).astype(dtype))
    else:
        assert_sum_within_bound(result, A, B)


@PROFILE
@given(operand_pair())
def test_column_sums_equal_numpy_within_the_bound(pair):
    dtype, kind, A, B = pair
    copies = snapshot(A, B)
    for function, array in ((fastbp.grad_b_out, B), (fastbp.grad_b_h, A)):
        result = function(array)
        ones = np.ones((array.shape[0], 1), dtype)
        assert_sum_within_bound(result[None, :], ones, array)
    assert_unchanged((A, B), copies)


@PROFILE
@given(st.data())
def test_sigmoid_within_its_ulps_and_delta_out_exact(data):
    dtype = data.draw(st.sampled_from(DTYPES))
    shape = data.draw(st.sampled_from([(0,), (5,), (3, 4), (2, 0, 3), (2, 3, 2)]))
    Z = data.draw(arrays(shape, dtype, "special"))
    copies = snapshot(Z)
    result = fastbp.sigmoid(Z)
    assert_unchanged((Z,), copies)
    with np.errstate(all="ignore"):
        reference = sigmoid_reference(Z)
    assert result.shape == Z.shape and result.dtype == dtype
    assert np.array_equal(np.isnan(result), np.isnan(reference))
    finite = ~np.isnan(reference)
    error = np.abs(result[finite].astype(np.longdouble) - reference[finite])
    u = unit_roundoff(dtype)
    tiny = float(np.finfo(dtype).smallest_subnormal)
    assert np.all(error <= SIGMOID_ULPS * u * reference[finite] + tiny)
    if len(shape) == 2:
        Y = data.draw(arrays(shape, dtype, "special"))
        with np.errstate(all="ignore"):
            expected = result - Y
        assert np.array_equal(fastbp.delta_out(result, Y), expected, equal_nan=True)


@PROFILE
@given(st.data())
def test_cost_within_its_bound_or_a_named_refusal(data):
    dtype = data.draw(st.sampled_from(DTYPES))
    n, t = data.draw(st.integers(0, 8)), data.draw(st.integers(0, 5))
    A_out = fastbp.sigmoid(data.draw(arrays((n, t), dtype, "special")))
    Y = data.draw(arrays((n, t), dtype, data.draw(st.sampled_from(["exact", "special"]))))
    if data.draw(st.booleans()):  # mostly targets in [0, 1], some with NaN
        Y = np.where(np.isnan(Y), Y, np.abs(np.nan_to_num(Y)) % 1).astype(dtype)
    copies = snapshot(A_out, Y)
    outside = ~np.isnan(Y) & ((Y < 0) | (Y > 1))
    if outside.any():
        with pytest.raises(ValueError, match=r"^Y must hold targets in \[0, 1\]"):
            fastbp.cost(A_out, Y)
        assert_unchanged((A_out, Y), copies)
        return
    J = fastbp.cost(A_out, Y)
    assert_unchanged((A_out, Y), copies)
    a, y = A_out.astype(np.float64), Y.astype(np.float64)
    tiny = np.finfo(dtype).tiny
    with np.errstate(all="ignore"):
        log_a = np.log(np.maximum(a, tiny))
        log_not_a = np.log(np.maximum(1 - a, tiny))
        terms = np.where(y != 0, y * log_a, 0.0) + np.where(y != 1, (1 - y) * log_not_a, 0.0)
    reference = -terms.sum()
    if np.isnan(reference):
        assert np.isnan(J)
        return
    u64 = unit_roundoff(np.float64)
    bound = (2 * u64 + gamma(2 * n * t + 2, u64)) * np.abs(terms).sum()
    assert abs(float(J) - reference) <= bound + unit_roundoff(dtype) * abs(reference)


@st.composite
def networks(draw):
    dtype = draw(st.sampled_from(DTYPES))
    n, m, d, t = (draw(st.integers(lo, hi)) for lo, hi in ((0, 12), (0, 6), (0, 6), (0, 4)))
    layout = draw(st.sampled_from(LAYOUTS))
    X = draw(arrays((n, m), dtype, "moderate", layout))
    Y = draw(arrays((n, t), dtype, "exact", layout))
    Y = lay_out(np.abs(Y) / 2, layout)  # exact values in [0, 1]
    weights = [draw(arrays(shape, dtype, "moderate", layout))
               for shape in ((m, d), (d,), (d, t), (t,))]  # fmt: skip
    return dtype, X, Y, weights


def network_reference(X, Y, W_h, b_h, W_out, b_out, l2):
    """Cost and gradients by the formulas, NumPy float64."""
    X, Y, W_h, b_h, W_out, b_out = (a.astype(np.float64) for a in (X, Y, W_h, b_h, W_out, b_out))
    with np.errstate(all="ignore"):
        A_h = 1 / (1 + np.exp(-(X @ W_h + b_h)))
        A_out = 1 / (1 + np.exp(-(A_h @ W_out + b_out)))
    delta_out = A_out - Y
    delta_h = (delta_out @ W_out.T) * A_h * (1 - A_h)
    return (
        X.T @ delta_h + l2 * W_h, delta_h.sum(axis=0), A_h.T @ delta_out + l2 * W_out,
        delta_out.sum(axis=0), A_h, A_out,
    )  # fmt: skip


# Found by the release profile: λW underflowing to a float32 subnormal rounds absolutely.
SUBNORMAL_PENALTY = (
    np.float32,
    np.zeros((0, 1), np.float32),
    np.zeros((0, 0), np.float32),
    [np.array([[29 * 2.0**-149]], np.float32), np.zeros(1, np.float32),
     np.zeros((1, 0), np.float32), np.zeros(0, np.float32)],
)  # fmt: skip


@PROFILE
@given(networks(), st.sampled_from([0.0, 0.25]))
@example(SUBNORMAL_PENALTY, 0.25)
def test_forward_and_backprop_within_the_bound(network, l2):
    dtype, X, Y, weights = network
    copies = snapshot(X, Y, *weights)
    A_h, A_out = fastbp.forward(X, *weights)
    result = fastbp.backprop(X, Y, *weights, l2=l2)
    assert_unchanged((X, Y, *weights), copies)
    *gradients, ref_A_h, ref_A_out = network_reference(X, Y, *weights, l2)
    u = unit_roundoff(dtype)
    m = X.shape[1]
    for got, want in ((A_h, ref_A_h), (A_out, ref_A_out)):
        assert got.dtype == dtype and got.shape == want.shape
    # φ is 1/4-Lipschitz: the sum's error over 4, plus φ's own relative error.
    W_h, b_h = (np.abs(w.astype(np.float64)) for w in weights[:2])
    Z_bound = gamma(m + 1, u) * (np.abs(X.astype(np.float64)) @ W_h + b_h)
    assert np.all(np.abs(A_h - ref_A_h) <= Z_bound / 4 + 2 * SIGMOID_ULPS * u * ref_A_h)
    with np.errstate(all="ignore"):
        bound = backprop_rounding_bound(X, Y, *weights, l2, dtype)
        reference_cost = network_cost(X, Y, *weights, l2)
    names = ("grad_W_h", "grad_b_h", "grad_W_out", "grad_b_out")
    # The bound is relative; a result in the subnormal range also errs by up to half a
    # subnormal per rounding (n + 2 of them: the sum, λW and its addition), absolutely.
    underflow = (X.shape[0] + 2) * float(np.finfo(dtype).smallest_subnormal)
    for name, got, want in zip(names, result[1:], gradients):
        assert got.dtype == dtype and got.shape == want.shape
        # bound is 2E, for two computations that each err by E: fastbp against float64 NumPy
        assert np.all(np.abs(got - want) <= bound[name] + underflow), name
    if np.isfinite(reference_cost):
        assert abs(float(result.cost) - reference_cost) <= bound["cost"]


@PROFILE
@given(networks(), st.sampled_from([0.0, 0.25]))
def test_dp_backprop_without_clipping_or_noise_is_backprop(network, l2):
    # Private training's step and norms on every layout and kind of value: with C = inf and
    # no noise, backprop's bits; the norms are the same kernel's whatever the call.
    dtype, X, Y, weights = network
    copies = snapshot(X, Y, *weights)
    result = fastbp.dp_backprop(X, Y, *weights, max_grad_norm=math.inf, l2=l2)
    expected = fastbp.backprop(X, Y, *weights, l2=l2)
    assert_unchanged((X, Y, *weights), copies)
    for got, want in zip(result[:5], expected):
        assert np.array_equal(got, want, equal_nan=True)
    norms = fastbp.per_example_grad_norms(X, Y, *weights)
    assert norms.dtype == dtype and norms.shape == (X.shape[0],)
    assert np.array_equal(norms, result.norms, equal_nan=True)
    assert np.all((norms >= 0) | np.isnan(norms))


@PROFILE
@given(networks(), st.data())
def test_sgd_epoch_equals_the_per_step_loop(network, data):
    dtype, X, Y, weights = network
    n = X.shape[0]
    assume(n >= 1)
    order = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=2 * n)))
    size = data.draw(st.integers(1, len(order)))
    eta = data.draw(st.sampled_from([0.5, 0.125, 1e-3]))
    updated = [np.array(w, copy=True) for w in weights]  # writeable copies: updated in place
    copies = snapshot(X, Y, order)
    fastbp.sgd_epoch(X, Y, *updated, order, eta, size)
    assert_unchanged((X, Y, order), copies)
    expected = [np.array(w, copy=True) for w in weights]
    for start in range(0, len(order) - size + 1, size):
        rows = order[start : start + size]
        result = fastbp.backprop(X[rows], Y[rows], *expected)
        for weight, gradient in zip(expected, result[1:]):
            weight -= dtype(eta) * gradient
    for got, want in zip(updated, expected):
        assert np.array_equal(got, want, equal_nan=True)


NETWORK = ("X", "Y", "W_h", "b_h", "W_out", "b_out")

PUBLIC_CALLS = {
    "sigmoid": (lambda a: fastbp.sigmoid(a["Z"]), ["Z"]),
    "delta_out": (lambda a: fastbp.delta_out(a["A_out"], a["Y"]), ["A_out", "Y"]),
    "cost": (lambda a: fastbp.cost(a["A_out"], a["Y"]), ["A_out", "Y"]),
    "grad_W_out": (lambda a: fastbp.grad_W_out(a["A_h"], a["delta_out"]), ["A_h", "delta_out"]),
    "grad_b_out": (lambda a: fastbp.grad_b_out(a["delta_out"]), ["delta_out"]),
    "delta_h": (lambda a: fastbp.delta_h(a["delta_out"], a["W_out"], a["A_h"]),
                ["delta_out", "W_out", "A_h"]),
    "grad_W_h": (lambda a: fastbp.grad_W_h(a["X"], a["delta_h"]), ["X", "delta_h"]),
    "forward": (lambda a: fastbp.forward(a["X"], a["W_h"], a["b_h"], a["W_out"], a["b_out"]),
                ["X", "W_h", "b_h", "W_out", "b_out"]),
    "backprop": (lambda a: fastbp.backprop(a["X"], a["Y"], a["W_h"], a["b_h"], a["W_out"],
                                           a["b_out"]), ["X", "Y", "W_h", "b_h", "W_out", "b_out"]),
    "sgd_epoch": (lambda a: fastbp.sgd_epoch(a["X"], a["Y"], a["W_h"], a["b_h"], a["W_out"],
                                             a["b_out"], np.arange(3), 0.1, 1),
                  ["X", "Y", "W_h", "b_h", "W_out", "b_out"]),
    "per_example_grad_norms": (
        lambda a: fastbp.per_example_grad_norms(*(a[k] for k in NETWORK)), list(NETWORK)),
    "per_example_grads": (
        lambda a: fastbp.per_example_grads(*(a[k] for k in NETWORK)), list(NETWORK)),
    "dp_backprop": (
        lambda a: fastbp.dp_backprop(*(a[k] for k in NETWORK), max_grad_norm=1.0,
                                     noise_multiplier=1.0, rng=np.random.default_rng(0)),
        list(NETWORK)),
    "dp_sgd_epoch": (
        lambda a: fastbp.dp_sgd_epoch(*(a[k] for k in NETWORK), sample_rate=0.5, eta=0.1,
                                      max_grad_norm=1.0, noise_multiplier=1.0,
                                      rng=np.random.default_rng(0)),
        list(NETWORK)),
}  # fmt: skip


@PROFILE
@given(
    st.sampled_from(sorted(PUBLIC_CALLS)),
    st.data(),
    st.sampled_from(BAD_DTYPES),
    st.sampled_from([(0,), (3,), (3, 2, 2)]),
)
def test_bad_dtypes_and_dimensions_are_refused_by_name(call, data, bad_dtype, wrong_shape):
    rng = np.random.default_rng(0)
    n, m, d, t = 3, 4, 3, 2
    good = {
        "X": rng.random((n, m)), "Y": rng.random((n, t)), "W_h": rng.random((m, d)),
        "b_h": rng.random(d), "W_out": rng.random((d, t)), "b_out": rng.random(t),
        "A_h": rng.random((n, d)), "A_out": rng.random((n, t)), "delta_out": rng.random((n, t)),
        "delta_h": rng.random((n, d)), "Z": rng.random((n, t)),
    }  # fmt: skip
    function, names = PUBLIC_CALLS[call]
    name = data.draw(st.sampled_from(names))
    bad = dict(good)
    if data.draw(st.booleans()):
        bad[name] = good[name].astype(bad_dtype)
        expected = TypeError
    else:
        if call == "sigmoid":  # any number of dimensions is legal
            return
        bad[name] = np.zeros(wrong_shape)
        assume(bad[name].ndim != good[name].ndim)
        expected = ValueError
    copies = {k: np.array(v, copy=True) for k, v in bad.items()}
    with pytest.raises((TypeError, ValueError)) as caught:
        function(bad)
    assert caught.type is expected
    assert str(caught.value).startswith(name), str(caught.value)
    for k, v in bad.items():
        assert np.array_equal(v, copies[k]), k
