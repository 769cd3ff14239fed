"""Rounding-error bounds: the one checker behind every result the tools print.

For a sum of n products computed in floating point with unit roundoff u, in
any order and with or without fused multiply-adds, every element satisfies

    |Ĝ − G| ≤ γ_n · (|A_h|ᵀ |δ_out|),   γ_n = n·u / (1 − n·u)

(Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1).  The
reference G is computed in a wider type (float64 for float32, long double
for float64) whose own error is added to the allowance, so a check never
blames a result for the reference's rounding.  Every check comes down to
:func:`excess_ratio`: the largest error over its bound, at most 1 to pass.
"""

import numpy as np

__all__ = [
    "excess_ratio",
    "forward_bounds",
    "gamma",
    "grad_W_out_reference",
    "normwise_ratio",
    "reference_dtype",
    "unit_roundoff",
    "worst_excess",
]


def unit_roundoff(dtype):
    """U = 2^-p for a dtype with p significand bits (2^-24 float32, 2^-53 float64)."""
    return float(np.finfo(dtype).eps) / 2


def gamma(n, u):
    """γ_n = n·u / (1 − n·u); infinite when n·u ≥ 1 (no bound can be given)."""
    nu = n * u
    return nu / (1.0 - nu) if nu < 1.0 else float("inf")


def reference_dtype(dtype):
    """The wider dtype a reference for ``dtype`` is computed in."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float32 else np.dtype(np.longdouble)


def grad_W_out_reference(A_h, delta_out):
    """(A_h)ᵀ δ_out in the reference dtype, and the elementwise rounding bound.

    Parameters
    ----------
    A_h : numpy.ndarray, shape (n, d), float32 or float64
    delta_out : numpy.ndarray, shape (n, t), same dtype

    Returns
    -------
    reference : numpy.ndarray, shape (d, t), in :func:`reference_dtype`
    bound : numpy.ndarray, shape (d, t), float64
        γ_n(u) + γ_n(u_ref), times |A_h|ᵀ |δ_out|: how far any correct
        working-precision result may lie from ``reference``.
    """
    n = A_h.shape[0]
    wide = reference_dtype(A_h.dtype)
    reference = A_h.astype(wide).T @ delta_out.astype(wide)
    # |A_h|ᵀ |δ_out| in float64 with BLAS (long double has none, and runs
    # many times slower): its computed value is at least (1 − γ_n) times the
    # exact one, so dividing by that keeps the bound an upper bound.
    magnitude = np.abs(A_h).astype(np.float64).T @ np.abs(delta_out).astype(np.float64)
    magnitude /= 1.0 - gamma(n, unit_roundoff(np.float64))
    allowance = gamma(n, unit_roundoff(A_h.dtype)) + gamma(n, unit_roundoff(wide))
    return reference, allowance * magnitude


def excess_ratio(error, bound):
    """The largest ``error / bound``, elementwise: at most 1 when every error is within its bound.

    An error where the bound is 0 must be 0 (else the ratio is inf); a
    non-finite error gives inf; no elements give 0.
    """
    error = np.asarray(error, dtype=np.float64)
    if error.size == 0:
        return 0.0
    if not np.all(np.isfinite(error)):
        return float("inf")
    bound = np.broadcast_to(np.asarray(bound, dtype=np.float64), error.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(
            bound > 0, error / np.where(bound > 0, bound, 1.0), np.where(error > 0, np.inf, 0.0)
        )
    return float(ratios.max())


def worst_excess(result, reference, bound):
    """Largest |result − reference| and the largest ratio of it to ``bound``.

    Returns
    -------
    max_difference : float
    max_ratio : float
        :func:`excess_ratio` of the differences: ≤ 1 means every element is
        within its bound.  NaN anywhere in ``result`` gives inf for both.
    """
    difference = np.abs(result.astype(reference.dtype) - reference).astype(np.float64)
    if difference.size == 0:
        return 0.0, 0.0
    if not np.all(np.isfinite(difference)):
        return float("inf"), float("inf")
    return float(difference.max()), excess_ratio(difference, bound)


def forward_bounds(problem64, A_h64, u):
    """First-order rounding bound of the forward pass, elementwise: (error of A_h, of A_out).

    z = x·w + b is a sum of m + 1 products (|Δz| ≤ γ_{m+1}(|X||W_h| + |b_h|));
    φ' ≤ 1/4; each sigmoid evaluation is taken to add at most 4u (exp,
    add, divide).  The output layer adds the hidden error carried through
    |W_out|.  Not a proof for every libm, hence "first order".
    """
    m = problem64["X"].shape[1]
    d = problem64["W_h"].shape[1]
    error_h = (
        0.25
        * gamma(m + 1, u)
        * (np.abs(problem64["X"]) @ np.abs(problem64["W_h"]) + np.abs(problem64["b_h"]))
        + 4 * u
    )
    W_out = np.abs(problem64["W_out"])
    error_out = (
        0.25 * (gamma(d + 1, u) * (A_h64 @ W_out + np.abs(problem64["b_out"])) + error_h @ W_out)
        + 4 * u
    )
    return error_h, error_out


def normwise_ratio(results, references, n_terms, u):
    """Heuristic check of a whole step: max|Δ| ≤ 16·n_terms·u·max|reference| for each output."""
    worst = 0.0
    for result, reference in zip(results, references):
        reference = np.asarray(reference, dtype=np.float64)
        scale = float(np.max(np.abs(reference))) if reference.size else 0.0
        bound = 16 * n_terms * (u + unit_roundoff(np.float64)) * scale
        error = np.abs(np.asarray(result, dtype=np.float64) - reference)
        worst = max(worst, excess_ratio(error, bound))
    return worst
