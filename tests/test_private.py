"""Private training: per-example norms and gradients, the clipped noisy step, sample weights."""

import math

import numpy as np
import pytest

import fastbp
from fastbp import _private

from reference import (
    FLOAT_DTYPES,
    backprop_rounding_bound,
    exact_pair,
    gamma,
    one_example_grads,
    outer_sum_reference,
    random_network,
    rounding_bound,
    unit_roundoff,
    wide,
)

# --------------------------------------------------------------------------
# References: one-example backprop calls, clipped and summed in Python
# --------------------------------------------------------------------------


def reference_norms(grads):
    """‖g_i‖ from the materialised gradients, squares summed in the wide precision."""
    w = np.longdouble
    squares = sum(
        (g.astype(w) ** 2).reshape(g.shape[0], int(np.prod(g.shape[1:]))).sum(axis=1) for g in grads
    )
    return np.sqrt(squares)


def clipped_sum(grads, max_grad_norm):
    """Σ_i min(1, C/‖g_i‖) g_i in the wide precision, with the factors and |terms|."""
    norms = reference_norms(grads)
    with np.errstate(divide="ignore"):
        factors = np.where(norms > max_grad_norm, max_grad_norm / norms, 1.0)
    sums = [np.einsum("i...,i->...", g.astype(np.longdouble), factors) for g in grads]
    magnitudes = [np.einsum("i...,i->...", np.abs(g.astype(np.longdouble)), factors) for g in grads]
    return sums, magnitudes, factors


def saturated_network(n, m, d, t, dtype, seed):
    """A network whose every activation is exactly 0, 1/2 or 1, so all of its arithmetic is exact.

    Inputs in {−1, 0, 1} and weights in {0, ±1000}: each z is 0 or a multiple of 1000, where
    φ is exactly 1/2, 0 or 1 in either dtype.  W_out in {0, ±2000} keeps the output layer's z
    on the same grid (A_h · W_out is a multiple of 1000).  Then δ_out ∈ {0, ±1/2, ±1} and
    δ_h ∈ {0, ±500 k}: every product and sum is a small multiple of a power of two.
    """
    rng = np.random.default_rng(seed)
    X = rng.integers(-1, 2, (n, m)).astype(dtype)
    W_h = (1000 * rng.integers(-1, 2, (m, d)) * (rng.random((m, d)) < 0.3)).astype(dtype)
    b_h = np.zeros(d, dtype)
    W_out = (2000 * rng.integers(-1, 2, (d, t))).astype(dtype)
    b_out = (1000 * rng.integers(-1, 2, t)).astype(dtype)
    Y = np.eye(t, dtype=dtype)[rng.integers(0, t, n)]
    return X, Y, W_h, b_h, W_out, b_out


# --------------------------------------------------------------------------
# Per-example norms and gradients
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_saturated_network_is_exact_and_not_trivial(dtype):
    network = saturated_network(40, 9, 12, 4, dtype, seed=1)
    A_h, A_out = fastbp.forward(network[0], *network[2:])
    assert set(np.unique(A_h)) == {0.0, 0.5, 1.0} and 0.5 in np.unique(A_out)
    grads = fastbp.per_example_grads(*network)
    assert np.count_nonzero(grads.grad_b_h) > 40  # hidden errors flow back for many examples


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_per_example_grads_equal_one_example_backprop_bitwise_on_exact_data(dtype):
    network = saturated_network(40, 9, 12, 4, dtype, seed=2)
    grads = fastbp.per_example_grads(*network)
    for got, expected in zip(grads, one_example_grads(*network)):
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, expected)
    # and their sum is backprop's gradient, every sum exact
    for got, expected in zip(grads, fastbp.backprop(*network)[1:]):
        np.testing.assert_array_equal(got.sum(axis=0), expected)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("n", [0, 1, 7, 200, 600])
def test_norms_bitwise_on_exact_data(dtype, n):
    network = saturated_network(n, 9, 12, 4, dtype, seed=n)
    norms = fastbp.per_example_grad_norms(*network)
    assert norms.shape == (n,) and norms.dtype == dtype
    expected = reference_norms(fastbp.per_example_grads(*network)).astype(dtype)
    np.testing.assert_array_equal(norms, expected)
    dp = fastbp.dp_backprop(*network, max_grad_norm=math.inf)
    np.testing.assert_array_equal(dp.norms, expected)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", [(5, 3, 2, 1), (37, 11, 17, 3), (300, 20, 16, 10)])
def test_norms_within_rounding_on_random_data(dtype, shape):
    n, m, d, t = shape
    network = random_network(np.random.default_rng(n), n, m, d, t, dtype)
    norms = fastbp.per_example_grad_norms(*network)
    expected = reference_norms(one_example_grads(*network))
    # The step's activations and deltas are the one-example calls' to the bit (a row's values
    # depend on that row alone); the materialised products are each rounded once to the
    # dtype (u), the kernel's float64 sums of squares lose γ_{m+d+t+4}(2^-53), and the
    # result is rounded once more (u).
    u = unit_roundoff(dtype)
    bound = (2 * u + gamma(m + d + t + 4, unit_roundoff(np.float64))) * expected
    assert np.all(np.abs(norms.astype(np.longdouble) - expected) <= bound)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_per_example_grads_within_rounding_of_one_example_backprop(dtype):
    network = random_network(np.random.default_rng(3), 9, 7, 11, 3, dtype)
    grads = fastbp.per_example_grads(*network)
    expected = one_example_grads(*network)
    names = ("grad_W_h", "grad_b_h", "grad_W_out", "grad_b_out")
    for i in range(9):
        # One example: the composed (forward, delta_h) and fused paths, the backprop bound.
        one = [a[i : i + 1] for a in network[:2]] + list(network[2:])
        bound = backprop_rounding_bound(*one, 0.0, dtype)
        for k, name in enumerate(names):
            error = np.abs(grads[k][i].astype(np.float64) - expected[k][i])
            assert np.all(error <= bound[name]), (i, name)


def test_per_example_grads_refuses_past_its_size(monkeypatch):
    network = random_network(np.random.default_rng(0), 10, 4, 3, 2, np.float64)
    # 10 examples × (12 + 3 + 6 + 2) parameters = 230 elements
    monkeypatch.setattr(_private, "PER_EXAMPLE_GRADS_MAX_ELEMENTS", 229)
    with pytest.raises(ValueError, match=r"230 elements .*per_example_grad_norms"):
        fastbp.per_example_grads(*network)
    monkeypatch.setattr(_private, "PER_EXAMPLE_GRADS_MAX_ELEMENTS", 230)
    assert fastbp.per_example_grads(*network).grad_W_h.shape == (10, 4, 3)


def test_norms_of_nan_example_are_nan_and_others_unaffected():
    network = list(random_network(np.random.default_rng(4), 6, 5, 4, 3, np.float64))
    clean = fastbp.per_example_grad_norms(*network)
    network[0] = network[0].copy()
    network[0][2, 1] = np.nan
    norms = fastbp.per_example_grad_norms(*network)
    assert np.isnan(norms[2])
    np.testing.assert_array_equal(np.delete(norms, 2), np.delete(clean, 2))


# --------------------------------------------------------------------------
# The clipped, noised step
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("n", [1, 50, 600])
def test_clipped_sum_against_python_loop(dtype, n):
    m, d, t = 13, 9, 4
    network = random_network(np.random.default_rng(n + 10), n, m, d, t, dtype, scale=1.5)
    grads = one_example_grads(*network)
    C = float(np.median(reference_norms(grads)))  # about half the examples clipped
    sums, magnitudes, factors = clipped_sum(grads, C)
    assert 0 < np.count_nonzero(factors < 1) < n or n == 1
    result = fastbp.dp_backprop(*network, max_grad_norm=C)
    u = unit_roundoff(dtype)
    # Per term: c_i off by 2u + γ(2^-53) (its norm, then rounding), c_i δ rounded (u), the
    # product and the n-term sum γ_{n+1}(u); the reference's own longdouble sum.
    relative = gamma(n + 4, u) + gamma(m + d + t + 8, unit_roundoff(np.float64))
    relative += gamma(n, unit_roundoff(np.longdouble))
    for got, expected, magnitude in zip(result[1:5], sums, magnitudes):
        assert got.dtype == dtype
        error = np.abs(got.astype(np.longdouble) - expected)
        assert np.all(error <= relative * magnitude)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("n", [0, 3, 600])
def test_infinite_norm_and_no_noise_give_backprop_bits(dtype, n):
    network = random_network(np.random.default_rng(n), n, 30, 20, 5, dtype)
    expected = fastbp.backprop(*network, l2=0.05)
    for threads in (1, 2):
        result = fastbp.dp_backprop(*network, max_grad_norm=math.inf, l2=0.05, n_threads=threads)
        for got, want in zip(result[:5], expected):
            np.testing.assert_array_equal(got, want)
        assert result.cost.dtype == dtype


def test_cost_is_the_datas_not_clipped():
    network = random_network(np.random.default_rng(5), 40, 6, 5, 3, np.float64)
    expected = fastbp.backprop(*network, l2=0.1).cost
    assert fastbp.dp_backprop(*network, max_grad_norm=1e-3, l2=0.1).cost == expected


def test_zero_gradient_examples_are_not_scaled():
    # Y equal to the outputs: δ_out = 0, so every g_i = 0 and c_i = 1 (no 0/0).  The
    # saturated network's outputs (0, 1/2 or 1) are exact, so every path computes them alike.
    X, _, W_h, b_h, W_out, b_out = saturated_network(8, 4, 3, 2, np.float64, seed=6)
    Y = fastbp.forward(X, W_h, b_h, W_out, b_out)[1]
    result = fastbp.dp_backprop(X, Y, W_h, b_h, W_out, b_out, max_grad_norm=0.5)
    assert np.all(result.norms == 0)
    for g in result[1:5]:
        assert np.all(g == 0)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_clipped_norms_are_at_most_C(dtype):
    network = random_network(np.random.default_rng(7), 30, 8, 6, 3, dtype, scale=2.0)
    C = 0.25
    norms = fastbp.per_example_grad_norms(*network)
    assert np.all(norms > C)  # every example clipped
    # With c_i applied, each example's clipped contribution has norm C to rounding: a
    # one-example dp_backprop call returns exactly that example's clipped gradient.
    for i in range(0, 30, 7):
        one = fastbp.dp_backprop(
            network[0][i : i + 1], network[1][i : i + 1], *network[2:], max_grad_norm=C
        )
        norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in one[1:5]))
        assert abs(norm - C) <= 8 * unit_roundoff(dtype) * C


def test_bits_do_not_depend_on_threads_or_chunk_sharing():
    network = random_network(np.random.default_rng(8), 1000, 30, 20, 5, np.float64)
    rng_seed = 11
    results = [
        fastbp.dp_backprop(
            *network,
            max_grad_norm=0.3,
            noise_multiplier=1.1,
            rng=np.random.default_rng(rng_seed),
            n_threads=threads,
        )
        for threads in (1, 2)
    ]
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    norms = [fastbp.per_example_grad_norms(*network, n_threads=k) for k in (1, 2)]
    np.testing.assert_array_equal(*norms)
    np.testing.assert_array_equal(norms[0], results[0].norms)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_noise_is_seeded_and_has_the_right_law(dtype):
    network = random_network(np.random.default_rng(9), 64, 40, 30, 10, dtype)
    C, sigma = 0.5, 2.0
    clean = fastbp.dp_backprop(*network, max_grad_norm=C)
    noisy = fastbp.dp_backprop(
        *network, max_grad_norm=C, noise_multiplier=sigma, rng=np.random.default_rng(3)
    )
    again = fastbp.dp_backprop(
        *network, max_grad_norm=C, noise_multiplier=sigma, rng=np.random.default_rng(3)
    )
    for a, b in zip(noisy, again):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(noisy.norms, clean.norms)
    assert noisy.cost == clean.cost
    # The noise, coordinate by coordinate: the draws of a generator seeded alike, in the
    # documented order, each added in float64 and rounded once.
    draws = np.random.default_rng(3)
    for got, base in zip(noisy[1:5], clean[1:5]):
        expected = (base.astype(np.float64) + draws.normal(0.0, sigma * C, base.shape)).astype(
            dtype
        )
        np.testing.assert_array_equal(got, expected)
    # and its law: 1200 + 30 + 300 + 10 draws of N(0, 1²), fixed seed (not flaky); the
    # sample mean within 4 standard errors, the variance within 4 of its standard errors.
    noise = np.concatenate(
        [(a.astype(np.float64) - b).ravel() for a, b in zip(noisy[1:5], clean[1:5])]
    )
    k = noise.size
    assert abs(noise.mean()) <= 4 * sigma * C / math.sqrt(k)
    assert abs(noise.var() / (sigma * C) ** 2 - 1) <= 4 * math.sqrt(2 / k)


def test_no_noise_is_the_clipped_sum_alone():
    network = random_network(np.random.default_rng(10), 20, 5, 4, 3, np.float64)
    plain = fastbp.dp_backprop(*network, max_grad_norm=0.1)
    with_rng = fastbp.dp_backprop(
        *network, max_grad_norm=0.1, noise_multiplier=0.0, rng=np.random.default_rng(0)
    )
    for a, b in zip(plain, with_rng):
        np.testing.assert_array_equal(a, b)


def test_output_layer_is_a_weighted_grad_W_out():
    network = random_network(np.random.default_rng(12), 50, 6, 8, 3, np.float64)
    X, Y, W_h, b_h, W_out, b_out = network
    result = fastbp.dp_backprop(*network, max_grad_norm=0.2)
    A_h, A_out = fastbp.forward(X, W_h, b_h, W_out, b_out)
    factors = np.minimum(1.0, 0.2 / result.norms)
    for method in fastbp.GRAD_W_OUT_METHODS:
        weighted = fastbp.grad_W_out(A_h, A_out - Y, method=method, sample_weight=factors)
        np.testing.assert_allclose(weighted, result.grad_W_out, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"max_grad_norm": -1.0}, ValueError, "max_grad_norm must be a positive number"),
        ({"max_grad_norm": 0.0}, ValueError, "max_grad_norm must be a positive number"),
        ({"max_grad_norm": float("nan")}, ValueError, "max_grad_norm must be a positive"),
        ({"max_grad_norm": "1"}, TypeError, "max_grad_norm must be a positive real number"),
        ({"max_grad_norm": True}, TypeError, "max_grad_norm must be a positive real number"),
        ({"max_grad_norm": 1.0, "noise_multiplier": -0.5}, ValueError, "noise_multiplier must"),
        ({"max_grad_norm": 1.0, "noise_multiplier": np.nan}, ValueError, "noise_multiplier must"),
        ({"max_grad_norm": 1.0, "noise_multiplier": np.inf}, ValueError, "noise_multiplier must"),
        (
            {"max_grad_norm": 1.0, "noise_multiplier": "1"},
            TypeError,
            "noise_multiplier must be a non-negative real",
        ),
        ({"max_grad_norm": np.inf, "noise_multiplier": 1.0}, ValueError, "finite max_grad_norm"),
        (
            {"max_grad_norm": 1.0, "noise_multiplier": 1.0, "rng": 3},
            TypeError,
            "rng must be a numpy.random.Generator",
        ),
        ({"max_grad_norm": 1.0, "l2": -1.0}, ValueError, "l2 must be"),
        ({"max_grad_norm": 1.0, "n_chunks": 0}, ValueError, "n_chunks must be a positive"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    network = random_network(np.random.default_rng(0), 5, 3, 2, 2, np.float64)
    before = [a.copy() for a in network]
    with pytest.raises(error, match=message):
        fastbp.dp_backprop(*network, **kwargs)
    for a, b in zip(network, before):
        np.testing.assert_array_equal(a, b)


def test_bad_arrays_are_named():
    network = list(random_network(np.random.default_rng(0), 5, 3, 2, 2, np.float64))
    network[1] = network[1][:4]
    for function in (fastbp.per_example_grad_norms, fastbp.per_example_grads):
        with pytest.raises(ValueError, match=r"rows \(n\) of X \(5\) must equal rows \(n\) of Y"):
            function(*network)
    with pytest.raises(ValueError, match=r"rows \(n\) of X \(5\) must equal rows \(n\) of Y"):
        fastbp.dp_backprop(*network, max_grad_norm=1.0)


def test_inputs_are_not_modified():
    network = random_network(np.random.default_rng(1), 30, 4, 3, 2, np.float32)
    before = [a.copy() for a in network]
    fastbp.dp_backprop(
        *network, max_grad_norm=0.1, noise_multiplier=1.0, rng=np.random.default_rng(0)
    )
    fastbp.per_example_grad_norms(*network)
    fastbp.per_example_grads(*network)
    for a, b in zip(network, before):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------
# Sample weights on the three ways of grad_W_out
# --------------------------------------------------------------------------

METHODS = {
    "outer": fastbp.grad_W_out_outer,
    "blocked": fastbp.grad_W_out_blocked,
    "matmul": fastbp.grad_W_out_matmul,
}


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("n", [0, 1, 65, 1000])
def test_sample_weights_bitwise_on_exact_data(dtype, n):
    rng = np.random.default_rng(n)
    A_h, delta = exact_pair(n, 7, 3, dtype, rng)
    weights = rng.integers(0, 3, n) / 2  # 0, 1/2, 1: every weighted product still exact
    expected = outer_sum_reference(A_h, delta * weights[:, None]).astype(dtype)
    for method, function in METHODS.items():
        got = function(A_h, delta, sample_weight=weights)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, expected, err_msg=method)
        np.testing.assert_array_equal(
            fastbp.grad_W_out(A_h, delta, method=method, sample_weight=weights), expected
        )


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_sample_weights_within_bound_on_random_data(dtype):
    rng = np.random.default_rng(1)
    n, d, t = 777, 19, 5
    A_h = rng.random((n, d)).astype(dtype)
    delta = (2 * rng.random((n, t)) - 1).astype(dtype)
    weights = rng.random(n)
    weighted = (delta * weights.astype(dtype)[:, None]).astype(dtype)  # the rounded rows
    exact = outer_sum_reference(
        A_h, delta.astype(wide(dtype)) * weights.astype(wide(dtype))[:, None]
    )
    # The weighted rows' one rounding (u), then the sum's bound on those rows.
    bound = rounding_bound(A_h, weighted) + 2 * unit_roundoff(dtype) * np.abs(exact)
    for method, function in METHODS.items():
        got = function(A_h, delta, sample_weight=weights)
        assert np.all(np.abs(got.astype(exact.dtype) - exact) <= bound), method


@pytest.mark.parametrize("method", list(METHODS))
def test_sample_weights_bad_input(method):
    A_h = np.ones((4, 3))
    delta = np.ones((4, 2))
    with pytest.raises(
        ValueError,
        match=r"sample_weight must be 1-D with one weight per example \(n = 4\), got shape \(3,\)",
    ):
        METHODS[method](A_h, delta, sample_weight=np.ones(3))
    with pytest.raises(TypeError, match="sample_weight has dtype complex128"):
        METHODS[method](A_h, delta, sample_weight=np.ones(4, complex))
    before = delta.copy()
    METHODS[method](A_h, delta, sample_weight=np.full(4, 2.0))
    np.testing.assert_array_equal(delta, before)


def test_unit_sample_weights_give_the_unweighted_bits():
    rng = np.random.default_rng(2)
    A_h = rng.random((300, 10))
    delta = rng.random((300, 4)) - 0.5
    for method, function in METHODS.items():
        np.testing.assert_array_equal(
            function(A_h, delta, sample_weight=np.ones(300, dtype=np.int64)), function(A_h, delta)
        )


# --------------------------------------------------------------------------
# DP-SGD epochs
# --------------------------------------------------------------------------


def dp_loop(X, Y, weights, q, eta, C, sigma, l2, rng, steps):
    """dp_sgd_epoch's documented procedure, step by step in Python over dp_backprop."""
    n = X.shape[0]
    dtype = X.dtype.type
    eta_, l2_, scale = dtype(eta), dtype(l2), dtype(1 / (q * n))
    sizes = []
    for _ in range(steps):
        batch = np.flatnonzero(rng.random(n) < q)
        sizes.append(batch.size)
        result = fastbp.dp_backprop(
            X[batch], Y[batch], *weights, max_grad_norm=C, noise_multiplier=sigma, rng=rng
        )
        for w, g, penalised in zip(weights, result[1:5], (True, False, True, False)):
            step = g * scale
            if penalised and l2:
                w -= eta_ * (step + l2_ * w)
            else:
                w -= eta_ * step
    return sizes


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(
    "q, C, sigma, l2",
    [
        (0.05, 0.5, 1.2, 0.01),
        (0.01, 0.5, 1.2, 0.0),
        (0.2, math.inf, 0.0, 0.0),
        (0.3, 0.1, 0.0, 0.1),
        (0.5, 0.5, 0.8, 0.01),  # with n = 1500 below: batches of about 750, several chunks
    ],
)
def test_dp_sgd_epoch_is_a_loop_over_dp_backprop_bit_for_bit(dtype, q, C, sigma, l2):
    n, m, d, t = 1500 if q == 0.5 else 120, 9, 7, 3
    X, Y, *weights = random_network(np.random.default_rng(1), n, m, d, t, dtype)
    ours = [w.copy() for w in weights]
    theirs = [w.copy() for w in weights]
    result = fastbp.dp_sgd_epoch(
        X, Y, *ours, sample_rate=q, eta=0.3, max_grad_norm=C, noise_multiplier=sigma,
        rng=np.random.default_rng(4), l2=l2,
    )  # fmt: skip
    steps = round(1 / q)
    sizes = dp_loop(X, Y, theirs, q, 0.3, C, sigma, l2, np.random.default_rng(4), steps)
    assert result.batch_sizes.tolist() == sizes and len(sizes) == steps
    if q == 0.01:
        assert 0 in sizes  # empty batches happen, and take a step of noise alone
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)
    assert not any(np.array_equal(a, b) for a, b in zip(ours, weights))


def test_dp_sgd_epoch_same_bits_in_groups_of_steps(monkeypatch):
    X, Y, *weights = random_network(np.random.default_rng(2), 80, 6, 5, 3, np.float64)
    whole = [w.copy() for w in weights]
    grouped = [w.copy() for w in weights]
    arguments = dict(sample_rate=0.1, eta=0.2, max_grad_norm=0.3, noise_multiplier=1.0, steps=9)
    a = fastbp.dp_sgd_epoch(X, Y, *whole, rng=np.random.default_rng(5), **arguments)
    # 6·5 + 5 + 5·3 + 3 = 53 noise values a step: groups of 2 steps.
    monkeypatch.setattr(_private, "NOISE_BUFFER_ELEMENTS", 120)
    b = fastbp.dp_sgd_epoch(X, Y, *grouped, rng=np.random.default_rng(5), **arguments)
    assert a.cost == b.cost
    np.testing.assert_array_equal(a.batch_sizes, b.batch_sizes)
    for x, y in zip(whole, grouped):
        np.testing.assert_array_equal(x, y)


def test_poisson_batch_sizes_have_the_right_mean():
    n, q, steps = 2000, 0.05, 400
    X, Y, *weights = random_network(np.random.default_rng(3), n, 3, 2, 2, np.float64)
    result = fastbp.dp_sgd_epoch(
        X, Y, *weights, sample_rate=q, eta=0.01, max_grad_norm=1.0, noise_multiplier=1.0,
        rng=np.random.default_rng(6), steps=steps,
    )  # fmt: skip
    sizes = result.batch_sizes
    # Binomial(n, q): mean nq = 100, variance nq(1 − q) = 95; a fixed seed (not flaky).
    assert abs(sizes.mean() - n * q) <= 4 * math.sqrt(n * q * (1 - q) / steps)
    assert abs(sizes.var() / (n * q * (1 - q)) - 1) <= 4 * math.sqrt(2 / steps)
    assert fastbp.dp_sgd_epoch(
        X, Y, *weights, sample_rate=0.25, eta=0.01, max_grad_norm=1.0, noise_multiplier=0.0
    ).batch_sizes.shape == (4,)  # round(1 / q) steps by default


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            {"sample_rate": 0.0},
            ValueError,
            r"sample_rate must be a finite number in \(0, 1\], got 0.0",
        ),
        ({"sample_rate": 1.5}, ValueError, r"sample_rate must be a finite number in \(0, 1\]"),
        ({"sample_rate": float("nan")}, ValueError, "sample_rate must be a finite number"),
        ({"sample_rate": "0.1"}, TypeError, "sample_rate must be a real number"),
        ({"eta": 0.0}, ValueError, "eta must be a positive"),
        ({"max_grad_norm": -1.0}, ValueError, "max_grad_norm must be a positive"),
        ({"noise_multiplier": -1.0}, ValueError, "noise_multiplier must be"),
        ({"steps": 0}, ValueError, "steps must be a positive integer"),
        ({"rng": 1}, TypeError, "rng must be a numpy.random.Generator"),
        ({"l2": float("inf")}, ValueError, "l2 must be"),
    ],
)
def test_dp_sgd_epoch_bad_arguments(kwargs, error, message):
    X, Y, *weights = random_network(np.random.default_rng(0), 10, 3, 2, 2, np.float64)
    before = [w.copy() for w in weights]
    arguments = dict(sample_rate=0.5, eta=0.1, max_grad_norm=1.0, noise_multiplier=1.0)
    arguments.update(kwargs)
    with pytest.raises(error, match=message):
        fastbp.dp_sgd_epoch(X, Y, *weights, **arguments)
    for w, b in zip(weights, before):
        np.testing.assert_array_equal(w, b)


def test_dp_sgd_epoch_refuses_read_only_weights():
    X, Y, *weights = random_network(np.random.default_rng(0), 10, 3, 2, 2, np.float64)
    weights[0].flags.writeable = False
    with pytest.raises(ValueError, match="W_h is read-only"):
        fastbp.dp_sgd_epoch(
            X, Y, *weights, sample_rate=0.5, eta=0.1, max_grad_norm=1.0, noise_multiplier=1.0
        )


def test_privacy_docs_examples_run(capsys):
    pytest.importorskip("dp_accounting")
    import os
    import re

    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs", "privacy.md")
    with open(path, encoding="utf-8") as handle:
        blocks = re.findall(r"```python\n(.*?)```", handle.read(), re.S)
    assert len(blocks) == 3
    namespace = {}  # each block follows on from the ones before it, as the page reads
    for block in blocks:
        exec(compile(block, "docs/privacy.md", "exec"), namespace)
    assert namespace["model"].target_epsilon == 4.0
    spent = float(capsys.readouterr().out.split()[0])
    assert 3.9 < spent <= 4.0


@pytest.mark.parametrize(
    "call",
    [
        lambda net: fastbp.per_example_grad_norms(*net),
        lambda net: fastbp.per_example_grads(*net),
        lambda net: fastbp.dp_backprop(*net, max_grad_norm=1.0),
        lambda net: fastbp.dp_sgd_epoch(
            *net, sample_rate=0.5, eta=0.1, max_grad_norm=1.0, noise_multiplier=1.0
        ),
    ],
)
def test_targets_outside_the_unit_interval_are_refused(call):
    network = list(random_network(np.random.default_rng(0), 6, 3, 2, 2, np.float64))
    network[1] = network[1].copy()
    network[1][4, 1] = 1.5
    before = [a.copy() for a in network]
    with pytest.raises(ValueError, match=r"Y must hold targets in \[0, 1\].*1.5 at index \(4, 1\)"):
        call(network)
    for a, b in zip(network, before):
        np.testing.assert_array_equal(a, b)


# The overflow below is the case under test; with the JIT off (NUMBA_DISABLE_JIT=1) the
# kernels' float64 scalars are NumPy's, which warn about it.
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_norms_of_huge_finite_inputs_stay_finite_and_clip():
    # ‖x‖² overflows float64 here, and the hidden units saturate (δ_h = 0): ∞ · 0 must not
    # make the norm NaN, which would leave the example unclipped.
    X = np.array([[1e160, 1e160]])
    Y = np.array([[0.0]])
    W_h, b_h = np.ones((2, 2)), np.zeros(2)
    W_out, b_out = np.full((2, 1), 5.0), np.zeros(1)
    grads = fastbp.per_example_grads(X, Y, W_h, b_h, W_out, b_out)
    expected = math.sqrt(sum(float(np.sum(g**2)) for g in grads))  # W_out's and b_out's parts
    norms = fastbp.per_example_grad_norms(X, Y, W_h, b_h, W_out, b_out)
    assert math.isfinite(expected) and norms[0] == pytest.approx(expected, rel=1e-15)
    result = fastbp.dp_backprop(X, Y, W_h, b_h, W_out, b_out, max_grad_norm=0.1)
    clipped = math.sqrt(sum(float(np.sum(g**2)) for g in result[1:5]))
    assert clipped == pytest.approx(0.1, rel=1e-12)
    # A hidden part whose ‖x‖ overflows but whose δ_h is not zero: scaled norms, no overflow.
    X = np.array([[1e200, -1e200]])
    W_h = np.array([[1e-200, 0.0], [1e-200, 0.0]])  # z_h = 0: δ_h ≠ 0
    norms = fastbp.per_example_grad_norms(X, Y, W_h, b_h, W_out, b_out)
    assert math.isfinite(norms[0]) and norms[0] > 1e199


def test_dp_sgd_epoch_refuses_aliasing_and_empty_data():
    X, Y, *weights = random_network(np.random.default_rng(0), 10, 3, 2, 2, np.float64)
    arguments = dict(sample_rate=0.5, eta=0.1, max_grad_norm=1.0, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="b_h shares memory with X; dp_sgd_epoch updates"):
        fastbp.dp_sgd_epoch(X, Y, weights[0], X[0, :2], *weights[2:], **arguments)
    with pytest.raises(ValueError, match="X has no rows"):
        fastbp.dp_sgd_epoch(X[:0], Y[:0], *weights, **arguments)


def test_dp_backprop_checks_rng_even_without_noise():
    network = random_network(np.random.default_rng(0), 5, 3, 2, 2, np.float64)
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        fastbp.dp_backprop(*network, max_grad_norm=1.0, rng="seed")
