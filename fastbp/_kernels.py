"""Private compiled kernels.

No checks happen here: every kernel trusts that its caller (the public
functions in :mod:`fastbp._core`) has already validated shapes, made every
array C-contiguous and given all float arrays one dtype (float32 or float64).
Kernels never write to their inputs.

Naming follows the seed (see README): ``A_h`` (n, d), ``delta_out`` (n, t),
gradients of shape (d, t) or (t,).
"""

import numpy as np
from numba import prange

from ._jit import CONTRACT, kernel, parallel_kernel

# --------------------------------------------------------------------------
# Activations and the forward pass
# --------------------------------------------------------------------------


@kernel
def _phi(z, one):
    """Logistic sigmoid of one scalar, in the scalar's own precision.

    Branching on the sign keeps the argument of ``exp`` non-positive, so it
    never overflows and never warns; NaN falls through to the second branch
    and propagates.  ``one`` is 1 in z's dtype, so float32 stays float32.
    """
    if z >= 0:
        return one / (one + np.exp(-z))
    e = np.exp(z)
    return e / (one + e)


@kernel
def _sigmoid_flat(z, out):
    """out[i] = φ(z[i]) for 1-D arrays (out may be z)."""
    one = z.dtype.type(1.0)
    for i in range(z.shape[0]):
        out[i] = _phi(z[i], one)


@kernel
def _add_bias_sigmoid_inplace(Z, b):
    """Z[i, j] = φ(Z[i, j] + b[j]), in place on a freshly computed Z."""
    one = Z.dtype.type(1.0)
    n, width = Z.shape
    for i in range(n):
        for j in range(width):
            Z[i, j] = _phi(Z[i, j] + b[j], one)


@kernel
def _forward(X, W_h, b_h, W_out, b_out):
    """A_h = φ(X W_h + b_h), A_out = φ(A_h W_out + b_out)."""
    A_h = X @ W_h
    _add_bias_sigmoid_inplace(A_h, b_h)
    A_out = A_h @ W_out
    _add_bias_sigmoid_inplace(A_out, b_out)
    return A_h, A_out


# --------------------------------------------------------------------------
# Output error and cost
# --------------------------------------------------------------------------


@kernel
def _delta_out(A_out, Y):
    """δ_out = A_out − Y, a new array."""
    n, t = A_out.shape
    out = np.empty((n, t), dtype=A_out.dtype)
    for i in range(n):
        for k in range(t):
            out[i, k] = A_out[i, k] - Y[i, k]
    return out


@kernel
def _clamped_log(x, tiny):
    """log(x), with x in [0, tiny) read as tiny so that log(0) is finite.

    Negative x and NaN are left alone and give NaN, as ``np.log`` would.
    """
    if 0.0 <= x < tiny:
        return np.log(tiny)
    return np.log(x)


@kernel
def _cost(A_out, Y, tiny):
    """J = −Σ_i Σ_k [y log a + (1 − y) log(1 − a)], accumulated in float64.

    A term whose weight (y or 1 − y) is exactly zero contributes exactly
    zero, so a confident correct output (a = y = 1) costs 0, not 0·(−∞).
    """
    n, t = A_out.shape
    total = 0.0
    for i in range(n):
        for k in range(t):
            a = np.float64(A_out[i, k])
            y = np.float64(Y[i, k])
            term = 0.0
            if y != 0.0:
                term += y * _clamped_log(a, tiny)
            if y != 1.0:
                term += (1.0 - y) * _clamped_log(1.0 - a, tiny)
            total -= term
    return total


# --------------------------------------------------------------------------
# Gradients of the output layer
# --------------------------------------------------------------------------


@kernel
def _grad_b_out(delta_out):
    """Σ_i δ_out[i, :], summed in example order."""
    n, t = delta_out.shape
    out = np.zeros(t, dtype=delta_out.dtype)
    for i in range(n):
        for k in range(t):
            out[k] += delta_out[i, k]
    return out


@kernel
def _grad_W_out_outer(A_h, delta_out):
    """Σ_i a^{[i]} ⊗ δ^{[i]}: the seed's §6–7 sum, one outer product per example."""
    n, d = A_h.shape
    t = delta_out.shape[1]
    grad = np.zeros((d, t), dtype=A_h.dtype)
    for i in range(n):
        for j in range(d):
            a = A_h[i, j]
            for k in range(t):
                grad[j, k] += a * delta_out[i, k]
    return grad


@kernel
def _grad_W_out_matmul(A_h, delta_out):
    """(A_h)ᵀ δ_out as one BLAS call."""
    return A_h.T @ delta_out


@kernel(fastmath=CONTRACT)
def _accumulate_gradT_rows(A_h, delta_out, i_start, i_stop, gradT, block_n, block_d, block_t):
    """gradT[k, j] += Σ_{i_start ≤ i < i_stop} δ[i, k] · A_h[i, j].

    The gradient is held transposed, (t, d), so the innermost loop runs over
    hidden units j: unit stride in both a row of A_h and a row of gradT, and
    long (d) rather than short (t), which is what vectorises.

    Tiles: examples in blocks of ``block_n`` (the A_h tile stays in L2),
    hidden units in blocks of ``block_d`` and outputs in blocks of
    ``block_t`` (the gradT tile, block_t × block_d, stays in L1).  Inside a
    tile four examples are folded into each update of gradT, so one load
    and one store of gradT serve four fused multiply-adds; a tail loop
    takes the last (n mod 4) examples of each block one at a time.
    """
    d = A_h.shape[1]
    t = delta_out.shape[1]
    for i_block in range(i_start, i_stop, block_n):
        i_block_end = min(i_block + block_n, i_stop)
        for j_block in range(0, d, block_d):
            j_block_end = min(j_block + block_d, d)
            width = j_block_end - j_block
            for k_block in range(0, t, block_t):
                k_block_end = min(k_block + block_t, t)
                i = i_block
                while i + 4 <= i_block_end:
                    # Slices starting at 0 let LLVM prove the index is never
                    # negative, which is what allows the j loop to vectorise.
                    a0 = A_h[i, j_block:j_block_end]
                    a1 = A_h[i + 1, j_block:j_block_end]
                    a2 = A_h[i + 2, j_block:j_block_end]
                    a3 = A_h[i + 3, j_block:j_block_end]
                    for k in range(k_block, k_block_end):
                        c0 = delta_out[i, k]
                        c1 = delta_out[i + 1, k]
                        c2 = delta_out[i + 2, k]
                        c3 = delta_out[i + 3, k]
                        g = gradT[k, j_block:j_block_end]
                        for j in range(width):
                            g[j] += c0 * a0[j] + c1 * a1[j] + c2 * a2[j] + c3 * a3[j]
                    i += 4
                while i < i_block_end:
                    a0 = A_h[i, j_block:j_block_end]
                    for k in range(k_block, k_block_end):
                        c0 = delta_out[i, k]
                        g = gradT[k, j_block:j_block_end]
                        for j in range(width):
                            g[j] += c0 * a0[j]
                    i += 1


@kernel
def _chunk_bounds(n, n_chunks, chunk):
    """Examples [start, stop) of chunk ``chunk`` when n are cut into n_chunks."""
    return (chunk * n) // n_chunks, ((chunk + 1) * n) // n_chunks


@kernel
def _sum_partials_transposed(partials):
    """Σ_c partials[c] (fixed order c = 0, 1, …), returned transposed to (d, t)."""
    n_chunks, t, d = partials.shape
    grad = np.zeros((d, t), dtype=partials.dtype)
    for c in range(n_chunks):
        for j in range(d):
            for k in range(t):
                grad[j, k] += partials[c, k, j]
    return grad


@kernel
def _grad_W_out_blocked_serial(A_h, delta_out, n_chunks, block_n, block_d, block_t):
    """Blocked gradient, chunks taken one after another in this thread."""
    n, d = A_h.shape
    t = delta_out.shape[1]
    partials = np.zeros((n_chunks, t, d), dtype=A_h.dtype)
    for c in range(n_chunks):
        i_start, i_stop = _chunk_bounds(n, n_chunks, c)
        _accumulate_gradT_rows(
            A_h, delta_out, i_start, i_stop, partials[c], block_n, block_d, block_t
        )
    return _sum_partials_transposed(partials)


@parallel_kernel
def _grad_W_out_blocked_parallel(A_h, delta_out, n_chunks, block_n, block_d, block_t):
    """Blocked gradient, chunks spread over Numba's threads.

    Each chunk writes only its own partial buffer and the partials are summed
    in chunk order afterwards, so the result is bitwise identical to
    :func:`_grad_W_out_blocked_serial` for any number of threads.
    """
    n, d = A_h.shape
    t = delta_out.shape[1]
    partials = np.zeros((n_chunks, t, d), dtype=A_h.dtype)
    for c in prange(n_chunks):
        i_start, i_stop = _chunk_bounds(n, n_chunks, c)
        _accumulate_gradT_rows(
            A_h, delta_out, i_start, i_stop, partials[c], block_n, block_d, block_t
        )
    return _sum_partials_transposed(partials)
