"""Rounding-error bounds, shared by the command line and the benchmarks.

For a sum of n products computed in floating point with unit roundoff u, in
any order and with or without fused multiply-adds, every element satisfies

    |Ĝ − G| ≤ γ_n · (|A_h|ᵀ |δ_out|),   γ_n = n·u / (1 − n·u)

(Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1).  The
reference G is computed in a wider type whose own error is added to the
allowance, so the check never blames a method for the reference's rounding.
"""

import numpy as np


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
    A_wide = A_h.astype(wide)
    delta_wide = delta_out.astype(wide)
    reference = A_wide.T @ delta_wide
    magnitude = (np.abs(A_wide).T @ np.abs(delta_wide)).astype(np.float64)
    allowance = gamma(n, unit_roundoff(A_h.dtype)) + gamma(n, unit_roundoff(wide))
    return reference, allowance * magnitude


def worst_excess(result, reference, bound):
    """Largest |result − reference| and the largest ratio of it to ``bound``.

    Returns
    -------
    max_difference : float
    max_ratio : float
        ≤ 1 means every element is within its bound (0/0 counts as 0).
        NaN anywhere in ``result`` gives inf.
    """
    difference = np.abs(result.astype(reference.dtype) - reference).astype(np.float64)
    if difference.size == 0:
        return 0.0, 0.0
    if not np.all(np.isfinite(difference)):
        return float("inf"), float("inf")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(difference == 0, 0.0, difference / bound)
    return float(difference.max()), float(ratio.max())
