"""Private compiled kernels for the hidden layer and the fused training step.

No checks happen here: the public functions in :mod:`fastbp._backprop`
validate shapes, make every array C-contiguous and give all float arrays one
dtype (float32 or float64) before calling in.  Kernels never write to their
inputs.

Two loop nests do all the matrix work, both written so that the innermost
loop runs with unit stride over the last (C-contiguous) axis of its operands
and of the output, which is what LLVM vectorises:

* :func:`_matmul_accumulate` — ``out += lhs @ rhs``
  (forward products and δ_out W_outᵀ);
* :func:`_matmul_tn_accumulate` — ``out += lhsᵀ @ rhs``
  (the gradients Xᵀ δ_h and δ_outᵀ A_h, one term per example).

Both fold four terms of the sum into each update of ``out`` (one load and
one store of ``out`` serve four fused multiply-adds) and tile the output's
columns so that the tile being updated stays in L1.  Slices that start at 0
(``row[j0:j1]`` indexed from 0) let LLVM prove indices are non-negative,
which it needs to vectorise.

The activations and the cost reuse the scalar helpers of
:mod:`fastbp._kernels` (``_add_bias_sigmoid_inplace``, ``_cost``), so the fused step follows
exactly the conventions of :func:`fastbp.sigmoid` and :func:`fastbp.cost`.
"""

import numpy as np
from numba import prange

from ._jit import CONTRACT, kernel, parallel_kernel
from ._kernels import _add_bias_sigmoid_inplace, _chunk_bounds, _cost

# --------------------------------------------------------------------------
# The two vectorised loop nests
# --------------------------------------------------------------------------


@kernel(fastmath=CONTRACT)
def _matmul_accumulate(lhs, rhs, out, block_cols):
    """out[r, :] += Σ_p lhs[r, p] · rhs[p, :], for (B, K) @ (K, N) into (B, N).

    Loop order: column tile of ``out`` → four rows of ``rhs`` → rows of
    ``out`` two at a time.  Each load of the four ``rhs`` rows serves two
    rows of ``out`` (eight multiply-adds per five loads instead of four),
    and the (B, block_cols) tile of ``out`` stays in L1.  Every row of
    ``out`` is computed by the same expression whether it is paired or not,
    so a row's bits do not depend on where it falls in the block.
    """
    n_rows, inner = lhs.shape
    n_cols = rhs.shape[1]
    for c0 in range(0, n_cols, block_cols):
        c1 = min(c0 + block_cols, n_cols)
        width = c1 - c0
        p = 0
        while p + 4 <= inner:
            w0 = rhs[p, c0:c1]
            w1 = rhs[p + 1, c0:c1]
            w2 = rhs[p + 2, c0:c1]
            w3 = rhs[p + 3, c0:c1]
            r = 0
            while r + 2 <= n_rows:
                x0 = lhs[r, p]
                x1 = lhs[r, p + 1]
                x2 = lhs[r, p + 2]
                x3 = lhs[r, p + 3]
                y0 = lhs[r + 1, p]
                y1 = lhs[r + 1, p + 1]
                y2 = lhs[r + 1, p + 2]
                y3 = lhs[r + 1, p + 3]
                o = out[r, c0:c1]
                q = out[r + 1, c0:c1]
                for j in range(width):
                    v0 = w0[j]
                    v1 = w1[j]
                    v2 = w2[j]
                    v3 = w3[j]
                    o[j] += x0 * v0 + x1 * v1 + x2 * v2 + x3 * v3
                    q[j] += y0 * v0 + y1 * v1 + y2 * v2 + y3 * v3
                r += 2
            while r < n_rows:
                x0 = lhs[r, p]
                x1 = lhs[r, p + 1]
                x2 = lhs[r, p + 2]
                x3 = lhs[r, p + 3]
                o = out[r, c0:c1]
                for j in range(width):
                    o[j] += x0 * w0[j] + x1 * w1[j] + x2 * w2[j] + x3 * w3[j]
                r += 1
            p += 4
        while p < inner:
            w0 = rhs[p, c0:c1]
            for r in range(n_rows):
                x0 = lhs[r, p]
                o = out[r, c0:c1]
                for j in range(width):
                    o[j] += x0 * w0[j]
            p += 1


@kernel(fastmath=CONTRACT)
def _matmul_tn_accumulate(lhs, rhs, out, block_cols):
    """out[p, :] += Σ_r lhs[r, p] · rhs[r, :], for (B, K)ᵀ @ (B, N) into (K, N).

    One term per example r: this is how a gradient accumulates over a block
    of examples (Xᵀ δ_h, or δ_outᵀ A_h held transposed).  Loop order: column
    tile → rows of ``out`` two at a time → examples four at a time, so each
    load of four ``rhs`` rows serves two rows of ``out``, and the
    (B, block_cols) tile of ``rhs`` stays in L1.  Paired or not, a row of
    ``out`` gets the same expression.
    """
    n_rows, inner = lhs.shape
    n_cols = rhs.shape[1]
    for c0 in range(0, n_cols, block_cols):
        c1 = min(c0 + block_cols, n_cols)
        width = c1 - c0
        p = 0
        while p + 2 <= inner:
            o = out[p, c0:c1]
            q = out[p + 1, c0:c1]
            r = 0
            while r + 4 <= n_rows:
                x0 = lhs[r, p]
                x1 = lhs[r + 1, p]
                x2 = lhs[r + 2, p]
                x3 = lhs[r + 3, p]
                y0 = lhs[r, p + 1]
                y1 = lhs[r + 1, p + 1]
                y2 = lhs[r + 2, p + 1]
                y3 = lhs[r + 3, p + 1]
                d0 = rhs[r, c0:c1]
                d1 = rhs[r + 1, c0:c1]
                d2 = rhs[r + 2, c0:c1]
                d3 = rhs[r + 3, c0:c1]
                for j in range(width):
                    v0 = d0[j]
                    v1 = d1[j]
                    v2 = d2[j]
                    v3 = d3[j]
                    o[j] += x0 * v0 + x1 * v1 + x2 * v2 + x3 * v3
                    q[j] += y0 * v0 + y1 * v1 + y2 * v2 + y3 * v3
                r += 4
            while r < n_rows:
                x0 = lhs[r, p]
                y0 = lhs[r, p + 1]
                d0 = rhs[r, c0:c1]
                for j in range(width):
                    o[j] += x0 * d0[j]
                    q[j] += y0 * d0[j]
                r += 1
            p += 2
        if p < inner:
            o = out[p, c0:c1]
            r = 0
            while r + 4 <= n_rows:
                x0 = lhs[r, p]
                x1 = lhs[r + 1, p]
                x2 = lhs[r + 2, p]
                x3 = lhs[r + 3, p]
                d0 = rhs[r, c0:c1]
                d1 = rhs[r + 1, c0:c1]
                d2 = rhs[r + 2, c0:c1]
                d3 = rhs[r + 3, c0:c1]
                for j in range(width):
                    o[j] += x0 * d0[j] + x1 * d1[j] + x2 * d2[j] + x3 * d3[j]
                r += 4
            while r < n_rows:
                x0 = lhs[r, p]
                d0 = rhs[r, c0:c1]
                for j in range(width):
                    o[j] += x0 * d0[j]
                r += 1


# --------------------------------------------------------------------------
# Elementwise pieces
# --------------------------------------------------------------------------


@kernel
def _times_sigmoid_derivative(S, A_h):
    """S[i, j] = S[i, j] · A_h[i, j] · (1 − A_h[i, j]) in place.

    The product is taken left to right, (s · a) · (1 − a), in fused and
    unfused code alike, so both give the same bits from the same s and a.
    """
    one = S.dtype.type(1.0)
    n, width = S.shape
    for i in range(n):
        s = S[i]
        a = A_h[i]
        for j in range(width):
            s[j] = s[j] * a[j] * (one - a[j])


@kernel
def _add_column_sums(M, out):
    """out[j] += Σ_i M[i, j], examples in order."""
    n, width = M.shape
    for i in range(n):
        row = M[i]
        for j in range(width):
            out[j] += row[j]


@kernel
def _subtract_inplace(A, B):
    """A -= B (same shape), turning output activations into δ_out."""
    n, width = A.shape
    for i in range(n):
        a = A[i]
        b = B[i]
        for j in range(width):
            a[j] -= b[j]


# --------------------------------------------------------------------------
# Hidden layer, unfused
# --------------------------------------------------------------------------


@kernel
def _delta_h(delta_out, W_out_T, A_h, block_cols):
    """δ_h = (δ_out W_outᵀ) ⊙ A_h ⊙ (1 − A_h); ``W_out_T`` is W_outᵀ, (t, d)."""
    n, d = A_h.shape
    out = np.zeros((n, d), dtype=A_h.dtype)
    _matmul_accumulate(delta_out, W_out_T, out, block_cols)
    _times_sigmoid_derivative(out, A_h)
    return out


@kernel
def _grad_W_h(X, delta_h, block_rows, block_cols):
    """Xᵀ δ_h, (m, d), accumulated over examples in blocks of ``block_rows``."""
    n, m = X.shape
    d = delta_h.shape[1]
    grad = np.zeros((m, d), dtype=X.dtype)
    for i0 in range(0, n, block_rows):
        i1 = min(i0 + block_rows, n)
        _matmul_tn_accumulate(X[i0:i1], delta_h[i0:i1], grad, block_cols)
    return grad


@kernel
def _grad_b_h(delta_h):
    """Σ_i δ_h[i, :], examples in order."""
    out = np.zeros(delta_h.shape[1], dtype=delta_h.dtype)
    _add_column_sums(delta_h, out)
    return out


# --------------------------------------------------------------------------
# The fused step
# --------------------------------------------------------------------------


@kernel
def _backprop_chunk(
    X, Y, W_h, b_h, W_out, b_out, W_out_T, i_start, i_stop, tiny,
    grad_W_h, grad_b_h, grad_W_out_T, grad_b_out, block_rows, block_cols,
):
    """Forward and backward pass over examples [i_start, i_stop), in blocks.

    Adds this chunk's gradient sums into the four ``grad_*`` buffers
    (``grad_W_out_T`` is held transposed, (t, d), so its innermost loop runs
    over the d hidden units) and returns the chunk's cost (float64).  Only
    block-sized activations exist at any time: (block_rows, d) and
    (block_rows, t).
    """
    d = W_h.shape[1]
    t = W_out.shape[1]
    A_h_block = np.empty((block_rows, d), dtype=X.dtype)
    delta_h_block = np.empty((block_rows, d), dtype=X.dtype)
    A_out_block = np.empty((block_rows, t), dtype=X.dtype)
    chunk_cost = 0.0
    for i0 in range(i_start, i_stop, block_rows):
        i1 = min(i0 + block_rows, i_stop)
        rows = i1 - i0
        X_block = X[i0:i1]
        Y_block = Y[i0:i1]
        A_h = A_h_block[:rows]
        A_out = A_out_block[:rows]
        delta_h = delta_h_block[:rows]

        # Forward: as fastbp.forward, product first, then bias, then φ.
        A_h[:] = 0
        _matmul_accumulate(X_block, W_h, A_h, block_cols)
        _add_bias_sigmoid_inplace(A_h, b_h)
        A_out[:] = 0
        _matmul_accumulate(A_h, W_out, A_out, block_cols)
        _add_bias_sigmoid_inplace(A_out, b_out)

        chunk_cost += _cost(A_out, Y_block, tiny)

        # Backward: A_out becomes δ_out in place (it is not needed again).
        delta_out = A_out
        _subtract_inplace(delta_out, Y_block)
        _add_column_sums(delta_out, grad_b_out)
        _matmul_tn_accumulate(delta_out, A_h, grad_W_out_T, block_cols)

        delta_h[:] = 0
        _matmul_accumulate(delta_out, W_out_T, delta_h, block_cols)
        _times_sigmoid_derivative(delta_h, A_h)
        _add_column_sums(delta_h, grad_b_h)
        _matmul_tn_accumulate(X_block, delta_h, grad_W_h, block_cols)
    return chunk_cost


@kernel
def _sum_chunks(costs, grad_W_h, grad_b_h, grad_W_out_T, grad_b_out):
    """Add the per-chunk partials in chunk order 0, 1, …; W_out's back to (d, t)."""
    n_chunks, m, d = grad_W_h.shape
    t = grad_b_out.shape[1]
    total_cost = 0.0
    total_W_h = np.zeros((m, d), dtype=grad_W_h.dtype)
    total_b_h = np.zeros(d, dtype=grad_W_h.dtype)
    total_W_out = np.zeros((d, t), dtype=grad_W_h.dtype)
    total_b_out = np.zeros(t, dtype=grad_W_h.dtype)
    for c in range(n_chunks):
        total_cost += costs[c]
        partial = grad_W_h[c]
        for p in range(m):
            row = total_W_h[p]
            partial_row = partial[p]
            for j in range(d):
                row[j] += partial_row[j]
        for j in range(d):
            total_b_h[j] += grad_b_h[c, j]
        partial_T = grad_W_out_T[c]
        for j in range(d):
            for k in range(t):
                total_W_out[j, k] += partial_T[k, j]
        for k in range(t):
            total_b_out[k] += grad_b_out[c, k]
    return total_cost, total_W_h, total_b_h, total_W_out, total_b_out


@kernel
def _allocate_partials(n_chunks, m, d, t, dtype_sample):
    dtype = dtype_sample.dtype
    return (
        np.zeros(n_chunks, dtype=np.float64),
        np.zeros((n_chunks, m, d), dtype=dtype),
        np.zeros((n_chunks, d), dtype=dtype),
        np.zeros((n_chunks, t, d), dtype=dtype),
        np.zeros((n_chunks, t), dtype=dtype),
    )


@kernel
def _backprop_serial(X, Y, W_h, b_h, W_out, b_out, tiny, n_chunks, block_rows, block_cols):
    """Fused step, chunks taken one after another in this thread."""
    n, m = X.shape
    d = W_h.shape[1]
    t = W_out.shape[1]
    W_out_T = np.ascontiguousarray(W_out.T)
    costs, g_W_h, g_b_h, g_W_out_T, g_b_out = _allocate_partials(n_chunks, m, d, t, X)
    for c in range(n_chunks):
        i_start, i_stop = _chunk_bounds(n, n_chunks, c)
        costs[c] = _backprop_chunk(
            X, Y, W_h, b_h, W_out, b_out, W_out_T, i_start, i_stop, tiny,
            g_W_h[c], g_b_h[c], g_W_out_T[c], g_b_out[c], block_rows, block_cols,
        )
    return _sum_chunks(costs, g_W_h, g_b_h, g_W_out_T, g_b_out)


@parallel_kernel
def _backprop_parallel(X, Y, W_h, b_h, W_out, b_out, tiny, n_chunks, block_rows, block_cols):
    """Fused step, chunks spread over Numba's threads.

    Each chunk writes only its own partial buffers, and the partials are
    added in chunk order afterwards, so the result is bitwise identical to
    :func:`_backprop_serial` for any number of threads.  No BLAS is called.
    """
    n, m = X.shape
    d = W_h.shape[1]
    t = W_out.shape[1]
    W_out_T = np.ascontiguousarray(W_out.T)
    costs, g_W_h, g_b_h, g_W_out_T, g_b_out = _allocate_partials(n_chunks, m, d, t, X)
    for c in prange(n_chunks):
        i_start, i_stop = _chunk_bounds(n, n_chunks, c)
        costs[c] = _backprop_chunk(
            X, Y, W_h, b_h, W_out, b_out, W_out_T, i_start, i_stop, tiny,
            g_W_h[c], g_b_h[c], g_W_out_T[c], g_b_out[c], block_rows, block_cols,
        )
    return _sum_chunks(costs, g_W_h, g_b_h, g_W_out_T, g_b_out)


@kernel
def _sum_of_squares(W):
    """Σ W², accumulated in float64 in row-major order."""
    total = 0.0
    rows, cols = W.shape
    for i in range(rows):
        for j in range(cols):
            w = np.float64(W[i, j])
            total += w * w
    return total
