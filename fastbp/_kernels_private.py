"""Private compiled kernels for private training: per-example gradient norms and clipping.

No checks happen here: :mod:`fastbp._private` validates and normalises first.

Each example's gradient is four outer products plus biases,
g_i = (x_i ⊗ δ_h^{[i]}, δ_h^{[i]}, a_h^{[i]} ⊗ δ_out^{[i]}, δ_out^{[i]}),
so its squared norm needs no per-example gradient at all:

    ‖g_i‖² = (‖x_i‖² + 1) · ‖δ_h^{[i]}‖² + (‖a_h^{[i]}‖² + 1) · ‖δ_out^{[i]}‖²

(‖u ⊗ v‖ = ‖u‖ ‖v‖).  The fused step (:func:`fastbp._kernels_step._backprop_chunk`)
calls :func:`_example_norms` on each block right after its deltas, and
:func:`_clip_rows` scales row i of δ_out and δ_h by c_i before the block's
gradients are added: the block's products then sum c_i g_i.
"""

import math

import numpy as np

from ._jit import kernel


@kernel(linked=True)
def _sum_of_squares_row(row):
    """Σ row[j]², each term and the sum in float64, in order."""
    total = 0.0
    for j in range(row.shape[0]):
        value = np.float64(row[j])
        total += value * value
    return total


@kernel(linked=True)
def _scaled_norm_row(row):
    """‖row‖ without overflow or underflow: the largest |value| M times ‖row / M‖."""
    largest = 0.0
    for j in range(row.shape[0]):
        # max(largest, |value|) as Numba's max computes it (NaN never replaces),
        # without compiling that overload for float64.
        magnitude = abs(np.float64(row[j]))
        largest = magnitude if magnitude > largest else largest
    if largest == 0.0 or not largest < np.inf:
        return largest
    total = 0.0
    for j in range(row.shape[0]):
        value = np.float64(row[j]) / largest
        total += value * value
    return largest * math.sqrt(total)


@kernel(refcounted=False)
def _example_norms(X, i0, rows, A_h_block, delta_out_block, delta_h_block, norms):
    """norms[i0 + r] = ‖g_{i0+r}‖ for the block's rows, from its activations and deltas.

    Everything in float64 (each square, each sum in order, then one square
    root), whatever the arrays' dtype: float32 steps get norms as accurate
    as float64 ones.  A part whose delta is exactly 0 counts 0 (not
    ∞ · 0); where the sum of squares overflows (float64 inputs beyond about
    1e154), the row is done again with scaled norms and ``math.hypot``, so a
    finite gradient never gets an infinite or NaN norm.  NaN inputs give NaN.
    """
    for r in range(rows):
        x = X[i0 + r]
        x2 = _sum_of_squares_row(x)
        a2 = _sum_of_squares_row(A_h_block[r])
        h2 = _sum_of_squares_row(delta_h_block[r])
        o2 = _sum_of_squares_row(delta_out_block[r])
        hidden = (x2 + 1.0) * h2 if h2 != 0.0 else 0.0
        output = (a2 + 1.0) * o2 if o2 != 0.0 else 0.0
        squares = hidden + output
        if squares < np.inf or squares != squares:  # finite, or NaN from NaN inputs
            norms[i0 + r] = math.sqrt(squares)
            continue
        nh = _scaled_norm_row(delta_h_block[r])
        no = _scaled_norm_row(delta_out_block[r])
        hidden_norm = math.hypot(_scaled_norm_row(x), 1.0) * nh if nh != 0.0 else 0.0
        output_norm = math.hypot(_scaled_norm_row(A_h_block[r]), 1.0) * no if no != 0.0 else 0.0
        norms[i0 + r] = math.hypot(hidden_norm, output_norm)


@kernel(refcounted=False)
def _clip_rows(i0, rows, delta_out_block, delta_h_block, norms, max_grad_norm):
    """Scale row r of δ_out and δ_h by c = C / ‖g‖ where ‖g‖ > C (C = ``max_grad_norm``).

    c is computed in float64 and rounded once to the deltas' dtype; rows
    whose norm is at most C, zero or NaN are left exactly as they are.  A
    norm beyond the float64 range (a gradient too large to represent) gives
    c = 0: that example contributes nothing, within C as clipping requires.
    """
    one = delta_out_block.dtype.type(1.0)
    for r in range(rows):
        norm = norms[i0 + r]
        if norm > max_grad_norm:
            c = one * (max_grad_norm / norm)
            out_row = delta_out_block[r]
            for k in range(out_row.shape[0]):
                out_row[k] = out_row[k] * c
            hidden_row = delta_h_block[r]
            for j in range(hidden_row.shape[0]):
                hidden_row[j] = hidden_row[j] * c
