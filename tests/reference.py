"""Plain-NumPy references and data makers for the tests (never shipped).

Everything here is written independently of the package, so a bug in
fastbp cannot hide in a shared helper.
"""

import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)

# Sizes the bitwise tests sweep: edge cases, primes, and numbers that are not
# multiples of any block size or unroll factor.
N_VALUES = (0, 1, 2, 3, 7, 64, 65, 1000, 4099)
DT_VALUES = ((1, 1), (1, 7), (13, 1), (5, 3), (37, 11), (100, 10), (131, 17))


def exact_pair(n, d, t, dtype, rng):
    """A_h and δ_out whose every product and partial sum is exact in ``dtype``.

    A_h = i/8 with i in 0..15 and δ = k/4 with k in −8..8: each product is a
    multiple of 2^-5 below 2^2 in magnitude, so any sum of up to 2^17 of
    them is a multiple of 2^-5 below 2^19 and needs at most 24 significant
    bits: exact in float32 and float64, in any summation order.
    """
    assert n <= 2**17
    A_h = (rng.integers(0, 16, size=(n, d)) / 8).astype(dtype)
    delta = (rng.integers(-8, 9, size=(n, t)) / 4).astype(dtype)
    return A_h, delta


def random_pair(n, d, t, dtype, rng):
    """Sigmoid-like activations in (0, 1) and errors in (−1, 1)."""
    A_h = rng.random((n, d)).astype(dtype)
    delta = (rng.random((n, t)) * 2 - 1).astype(dtype)
    return A_h, delta


def unit_roundoff(dtype):
    """u: 2^-24 for float32, 2^-53 for float64, 2^-64 for x87 long double."""
    return float(np.finfo(dtype).eps) / 2


def gamma(n, u):
    """γ_n = n u / (1 − n u)."""
    return n * u / (1 - n * u)


def wide(dtype):
    """The reference precision for ``dtype``."""
    return np.float64 if np.dtype(dtype) == np.float32 else np.longdouble


def outer_sum_reference(A_h, delta):
    """Σ_i a^{[i]} ⊗ δ^{[i]} in the wide precision (the seed's §7 sum)."""
    w = wide(A_h.dtype)
    return np.einsum("ij,ik->jk", A_h.astype(w), delta.astype(w))


def rounding_bound(A_h, delta):
    """γ_n(u) · |A_h|ᵀ|δ| plus the wide reference's own γ_n(u_ref) share."""
    n = A_h.shape[0]
    w = wide(A_h.dtype)
    magnitude = np.abs(A_h.astype(w)).T @ np.abs(delta.astype(w))
    return (gamma(n, unit_roundoff(A_h.dtype)) + gamma(n, unit_roundoff(w))) * magnitude


def assert_within_bound(result, A_h, delta):
    """Assert every element of ``result`` lies within the rounding bound of the exact sum."""
    reference = outer_sum_reference(A_h, delta)
    bound = rounding_bound(A_h, delta)
    error = np.abs(result.astype(reference.dtype) - reference)
    worst = np.unravel_index(np.argmax(error - bound), error.shape) if error.size else None
    assert np.all(error <= bound), (
        f"element {worst}: error {error[worst]:.3e} exceeds bound {bound[worst]:.3e}"
    )


def sigmoid_reference(Z):
    """φ(Z) in long double, stable for either sign."""
    Z = np.asarray(Z, dtype=np.longdouble)
    out = np.empty_like(Z)
    positive = Z >= 0
    out[positive] = 1 / (1 + np.exp(-Z[positive]))
    e = np.exp(Z[~positive])
    out[~positive] = e / (1 + e)
    return out


def forward_reference(X, W_h, b_h, W_out, b_out):
    """The seed's forward pass in long double."""
    L = np.longdouble
    A_h = sigmoid_reference(X.astype(L) @ W_h.astype(L) + b_h.astype(L))
    A_out = sigmoid_reference(A_h @ W_out.astype(L) + b_out.astype(L))
    return A_h, A_out


def cost_reference(A_out, Y):
    """J = −Σ y log a + (1 − y) log(1 − a), with fastbp's documented clamping."""
    a = A_out.astype(np.float64)
    y = Y.astype(np.float64)
    tiny = np.finfo(A_out.dtype).tiny
    log_a = np.log(np.where((a >= 0) & (a < tiny), tiny, a))
    log_1ma = np.log(np.where((1 - a >= 0) & (1 - a < tiny), tiny, 1 - a))
    term = np.where(y != 0, y * log_a, 0.0) + np.where(y != 1, (1 - y) * log_1ma, 0.0)
    return -term.sum()


def make_network(n, m, d, t, dtype, rng):
    """Random inputs, weights, biases and [0, 1] targets of a small network."""
    return dict(
        X=rng.random((n, m)).astype(dtype),
        W_h=rng.normal(0, 0.5, (m, d)).astype(dtype),
        b_h=rng.normal(0, 0.5, d).astype(dtype),
        W_out=rng.normal(0, 0.5, (d, t)).astype(dtype),
        b_out=rng.normal(0, 0.5, t).astype(dtype),
        Y=rng.random((n, t)).astype(dtype),
    )
