"""Private compiled kernels for the hidden layer and the fused training step.

No checks happen here: the public functions in :mod:`fastbp._backprop`
validate shapes, make every array C-contiguous and give all float arrays one
dtype (float32 or float64) before calling in.  Kernels never write to their
inputs.

The large products, X_block W_h (forward) and the gradients Xᵀ δ_h and
δ_outᵀ A_h, all run on the register tiles of the blocked output gradient
(:func:`fastbp._kernels._tiles_for_panel`), which compute
G[k, j] += Σ_i D[i, k] · A[i, j] with one fused multiply-add per term in
order of i: each product below is that formula with the operands named to
fit.  In the fused step, W_h (and W_out when t spans a vector) is copied
into panels once per call and each block's inputs are read in place, six
rows at a time (:func:`_hidden_forward_packed`); Xᵀ δ_h is computed as
δ_hᵀ X (:func:`fastbp._kernels._accumulate_gradT_rows`), vectors along the
rows of X.  The remaining small products with W_out use
:func:`_matmul_accumulate`, a loop nest whose innermost loop runs with unit
stride over the output's columns, four chained terms in each update.

The activations and the cost reuse the scalar helpers of
:mod:`fastbp._kernels` (``_add_bias_sigmoid_inplace``, ``_cost``), so the fused step follows
exactly the conventions of :func:`fastbp.sigmoid` and :func:`fastbp.cost`.
"""

import numpy as np
from numba import prange

from ._jit import CONTRACT, kernel, parallel_kernel
from ._kernels import (
    _accumulate_gradT_rows,
    _add_bias_sigmoid_inplace,
    _chunk_bounds,
    _cost,
    _pack_A_block,
    _panel_count,
    _panel_layout,
    _tiles_for_panel,
)
from ._simd import VECTOR_BYTES

# Block sizes handed to the register-tiled gradient kernel (as grad_W_out's).
_GRAD_BLOCK_N = 256
_GRAD_BLOCK_D = 256
_GRAD_BLOCK_T = 48

# --------------------------------------------------------------------------
# The two vectorised loop nests
# --------------------------------------------------------------------------


@kernel(fastmath=CONTRACT)
def _matmul_accumulate(lhs, rhs, out, block_cols):
    """out[r, :] += Σ_p lhs[r, p] · rhs[p, :], for (B, K) @ (K, N) into (B, N).

    Loop order: column tile of ``out`` → four rows of ``rhs`` → rows of
    ``out`` two at a time.  Each load of the four ``rhs`` rows serves two
    rows of ``out`` (eight multiply-adds per five loads instead of four),
    and the (B, block_cols) tile of ``out`` stays in L1.

    Each update is written ((((o + x0·v0) + x1·v1) + x2·v2) + x3·v3), which
    the ``contract`` flag turns into four chained fused multiply-adds: every
    element of ``out`` gets one fused multiply-add per term, in order of p,
    starting from its value on entry, exactly as in the register tiles
    (:func:`fastbp._simd.tile_fma`).  So this kernel and the packed
    forward product give the same bits, and a row's bits depend neither on
    where it falls in the block nor on the vector width that decides which
    of the two the fused step uses.
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
                    o[j] = o[j] + x0 * v0 + x1 * v1 + x2 * v2 + x3 * v3
                    q[j] = q[j] + y0 * v0 + y1 * v1 + y2 * v2 + y3 * v3
                r += 2
            while r < n_rows:
                x0 = lhs[r, p]
                x1 = lhs[r, p + 1]
                x2 = lhs[r, p + 2]
                x3 = lhs[r, p + 3]
                o = out[r, c0:c1]
                for j in range(width):
                    o[j] = o[j] + x0 * w0[j] + x1 * w1[j] + x2 * w2[j] + x3 * w3[j]
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
def _grad_W_h_accumulate(X, delta_h, grad):
    """grad[p, j] += Σ_i X[i, p] · δ_h[i, j]: the register-tiled kernel of grad_W_out.

    :func:`fastbp._kernels._accumulate_gradT_rows` computes
    G[k, j] += Σ_i D[i, k] · A[i, j]; with A = δ_h and D = X that is Xᵀ δ_h
    itself, (m, d), one fused multiply-add per example in example order.
    """
    _accumulate_gradT_rows(delta_h, X, 0, X.shape[0], grad, _GRAD_BLOCK_N, _GRAD_BLOCK_D, _GRAD_BLOCK_T)


@kernel
def _hidden_product(X_block, W_h, Z):
    """Z[i, j] += Σ_p X_block[i, p] · W_h[p, j], the hidden layer's big product.

    Also the register-tiled kernel: with A = W_h (m, d) and D = X_blockᵀ
    (m, rows), G[k, j] += Σ_p D[p, k] · A[p, j] is Z = X_block W_h, summed
    over the m inputs in order, one fused multiply-add each.  The block of
    examples is transposed once (rows × m copies against rows × m × d
    multiply-adds).
    """
    X_T = np.ascontiguousarray(X_block.T)
    _accumulate_gradT_rows(W_h, X_T, 0, W_h.shape[0], Z, _GRAD_BLOCK_N, _GRAD_BLOCK_D, _GRAD_BLOCK_T)


@kernel
def _grad_W_h(X, delta_h):
    """Xᵀ δ_h, (m, d), summed over the examples in order."""
    grad = np.zeros((X.shape[1], delta_h.shape[1]), dtype=X.dtype)
    _grad_W_h_accumulate(X, delta_h, grad)
    return grad


@kernel
def _grad_b_h(delta_h):
    """Σ_i δ_h[i, :], examples in order."""
    out = np.zeros(delta_h.shape[1], dtype=delta_h.dtype)
    _add_column_sums(delta_h, out)
    return out


# --------------------------------------------------------------------------
# The hidden layer's forward product on packed operands; block sizes
# --------------------------------------------------------------------------

# Register tiles are _TILE_ROWS rows of the product tall (see _tiles_for_panel).
_TILE_ROWS = 6
# Inputs per pass of the forward product (m is cut into equal passes of at
# most this many): a row group's inputs, 6 × _FORWARD_DEPTH values, are
# read by every W_h panel in turn.  Measured at 1000×784×100, one thread:
# one pass of 784 matched or beat two of 392 (float32 by up to 7 %) and
# beat 128 or 256 by 5–15 %.
_FORWARD_DEPTH = 800
# Block sizes for (Xᵀ δ_h)ᵀ = δ_hᵀ X on the register-tiled gradient kernel:
# the block's X is packed 128 inputs at a time, and up to 128 hidden units
# of δ_h are read in place (no copy of δ_h for d ≤ 128).  Measured at
# 1000×784×100 on one thread, 1.1–1.2× faster than the (m, d) orientation.
_GRAD_W_H_BLOCK_INPUTS = 128
_GRAD_W_H_BLOCK_HIDDEN = 128


@kernel
def _hidden_forward_packed(X, i0, rows, wpack, m, d, Z):
    """Z[r, j] += Σ_p X[i0 + r, p] · W_h[p, j] for r < rows, W_h (m, d) given as panels.

    ``wpack`` holds W_h (m, d) in the panels of :func:`_packed_weights`, packed
    once per call.  The m inputs go in equal passes of at most
    ``_FORWARD_DEPTH``; in a pass, each group of six rows of X is read in
    place (the tiles take it as the strided D = X[rows].T, see
    :func:`fastbp._simd.tile_fma`) and stays in L1 while every W_h panel
    runs over it, the accumulators in registers.  (Copying the rows
    transposed first cost 8–11 % of the product at 1000×784×100.)
    Each element of Z gets one fused multiply-add per input in order of p,
    whatever the pass depth: the bits of :func:`_hidden_product`.  The
    output layer's A_h W_out runs on it too (X = A_h, W_h = W_out).
    """
    w = VECTOR_BYTES // X.itemsize
    n_groups = (rows + _TILE_ROWS - 1) // _TILE_ROWS
    n_panels = _panel_count(d, w)
    n_passes = (m + _FORWARD_DEPTH - 1) // _FORWARD_DEPTH
    for s in range(n_passes):
        p0 = (m * s) // n_passes
        p1 = (m * (s + 1)) // n_passes
        depth = p1 - p0
        for g in range(n_groups):
            r0 = g * _TILE_ROWS
            kt = min(_TILE_ROWS, rows - r0)
            D = X[i0 + r0 : i0 + r0 + kt, p0:p1].T  # read in place, by rows
            offset = 0
            for panel in range(n_panels):
                nvec, first_column, skip = _panel_layout(d, w, panel)
                pw = nvec * w
                P = wpack[offset + p0 * pw : offset + p1 * pw].reshape((depth, pw))
                _tiles_for_panel(P, D, depth, nvec, first_column, skip, r0, kt, Z)
                offset += m * pw


# --------------------------------------------------------------------------
# The fused step
# --------------------------------------------------------------------------


@kernel
def _backprop_chunk(
    X, Y, W_h, b_h, W_out, b_out, W_out_T, wpack, wpack_out, i_start, i_stop, tiny,
    grad_W_h_T, grad_b_h, grad_W_out_T, grad_b_out, block_rows, block_cols,
):
    """Forward and backward pass over examples [i_start, i_stop), in blocks.

    Sets the four ``grad_*`` buffers to this chunk's gradient sums (they are
    zeroed first, in the thread that runs the chunk) and returns the chunk's
    cost (float64).  The weight gradients are held
    transposed, ``grad_W_h_T`` (d, m) and ``grad_W_out_T`` (t, d), so that
    the register tiles' vectors run along rows of X and of A_h.  Only
    block-sized activations exist at any time: (block_rows, d) and
    (block_rows, t).  ``wpack`` is W_h in panels (:func:`_packed_weights`)
    when d is at least one vector wide, else empty (the hidden product then
    runs on the unpacked kernel); ``wpack_out`` is W_out in panels, padded
    with zero columns to one vector when t is narrower
    (:func:`_packed_output_weights`), so A_h W_out always runs on the
    register tiles, its extra columns computed and dropped.
    """
    m = X.shape[1]
    d = W_h.shape[1]
    t = W_out.shape[1]
    packed = wpack.shape[0] > 0
    w = VECTOR_BYTES // X.itemsize
    padded_out = t < w
    grad_W_h_T[:] = 0
    grad_b_h[:] = 0
    grad_W_out_T[:] = 0
    grad_b_out[:] = 0
    A_h_block = np.empty((block_rows, d), dtype=X.dtype)
    delta_h_block = np.empty((block_rows, d), dtype=X.dtype)
    A_out_block = np.empty((block_rows, t), dtype=X.dtype)
    Z_out_block = np.empty((block_rows if padded_out else 0, w), dtype=X.dtype)
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
        if packed:
            _hidden_forward_packed(X, i0, rows, wpack, m, d, A_h)
        else:
            _hidden_product(X_block, W_h, A_h)
        _add_bias_sigmoid_inplace(A_h, b_h)
        if padded_out:
            Z_out = Z_out_block[:rows]
            Z_out[:] = 0
            _hidden_forward_packed(A_h, 0, rows, wpack_out, d, w, Z_out)
            A_out[:] = Z_out[:, :t]
        else:
            A_out[:] = 0
            _hidden_forward_packed(A_h, 0, rows, wpack_out, d, t, A_out)
        _add_bias_sigmoid_inplace(A_out, b_out)

        chunk_cost += _cost(A_out, Y_block, tiny)

        # Backward: A_out becomes δ_out in place (it is not needed again).
        delta_out = A_out
        _subtract_inplace(delta_out, Y_block)
        _add_column_sums(delta_out, grad_b_out)
        _accumulate_gradT_rows(
            A_h, delta_out, 0, rows, grad_W_out_T, _GRAD_BLOCK_N, _GRAD_BLOCK_D, _GRAD_BLOCK_T
        )

        delta_h[:] = 0
        _matmul_accumulate(delta_out, W_out_T, delta_h, block_cols)
        _times_sigmoid_derivative(delta_h, A_h)
        _add_column_sums(delta_h, grad_b_h)
        # (Xᵀ δ_h)ᵀ[j, p] += Σ_r δ_h[r, j] · X[r, p]: vectors run over the
        # inputs p, the (d, m) partial is transposed when chunks are summed.
        _accumulate_gradT_rows(
            X_block, delta_h, 0, rows, grad_W_h_T,
            _GRAD_BLOCK_N, _GRAD_W_H_BLOCK_INPUTS, _GRAD_W_H_BLOCK_HIDDEN,
        )
    return chunk_cost


@kernel
def _packed_weights(W):
    """W (K, N) in panels for :func:`_hidden_forward_packed`, or an empty array when N < W."""
    rows, cols = W.shape
    w = VECTOR_BYTES // W.itemsize
    if cols < w:
        return np.empty(0, dtype=W.dtype)
    wpack = np.empty(rows * (cols + w), dtype=W.dtype)
    _pack_A_block(W, 0, rows, 0, cols, w, wpack)
    return wpack


@kernel
def _packed_output_weights(W_out):
    """W_out (d, t) in panels, with zero columns added up to one vector when t < W.

    A column's products and sums are the same whatever columns stand
    beside it, so the real columns of the padded product have the bits of
    the unpadded one (and of :func:`_matmul_accumulate`).
    """
    rows, cols = W_out.shape
    w = VECTOR_BYTES // W_out.itemsize
    if cols >= w:
        return _packed_weights(W_out)
    padded = np.zeros((rows, w), dtype=W_out.dtype)
    padded[:, :cols] = W_out
    return _packed_weights(padded)


@kernel
def _sum_rows_in_order(partials, total, r0, r1):
    """total[r, :] = Σ_c partials[c, r, :] for r0 ≤ r < r1, chunks in order c = 0, 1, ….

    Starts from chunk 0's row itself, not from zeros: the same values,
    except that a −0 (from products that all underflowed) stays −0, as it
    does in the unfused :func:`_grad_W_h` and in a single chunk.
    """
    n_chunks = partials.shape[0]
    for r in range(r0, r1):
        out = total[r]
        first = partials[0, r]
        for p in range(out.shape[0]):
            out[p] = first[p]
        for c in range(1, n_chunks):
            row = partials[c, r]
            for p in range(out.shape[0]):
                out[p] += row[p]


@kernel
def _sum_small_partials(costs, grad_b_h, grad_W_out_T, grad_b_out):
    """Cost, Σ δ_h, A_hᵀ δ_out (transposed back to (d, t)) and Σ δ_out over the chunks, in chunk order."""
    n_chunks, t, d = grad_W_out_T.shape
    dtype = grad_W_out_T.dtype
    total_cost = 0.0
    total_b_h = np.zeros(d, dtype=dtype)
    total_b_out = np.zeros(t, dtype=dtype)
    for c in range(n_chunks):
        total_cost += costs[c]
        for j in range(d):
            total_b_h[j] += grad_b_h[c, j]
        for k in range(t):
            total_b_out[k] += grad_b_out[c, k]
    total_W_out_T = np.empty((t, d), dtype=dtype)
    _sum_rows_in_order(grad_W_out_T, total_W_out_T, 0, t)
    return total_cost, total_b_h, np.ascontiguousarray(total_W_out_T.T), total_b_out


@kernel
def _sum_chunks(costs, grad_W_h_T, grad_b_h, grad_W_out_T, grad_b_out):
    """Add the per-chunk partials in chunk order 0, 1, …, then transpose the weight gradients.

    The sums run along the partials' contiguous rows (one vectorised pass
    per chunk); the transposition is one copy at the end.

    Returns (cost, grad_W_h (m, d), grad_b_h, grad_W_out (d, t), grad_b_out).
    """
    n_chunks, d, m = grad_W_h_T.shape
    if n_chunks == 1:
        total_W_h_T = grad_W_h_T[0]
    else:
        total_W_h_T = np.empty((d, m), dtype=grad_W_h_T.dtype)
        _sum_rows_in_order(grad_W_h_T, total_W_h_T, 0, d)
    total_W_h = np.ascontiguousarray(total_W_h_T.T)
    cost, total_b_h, total_W_out, total_b_out = _sum_small_partials(
        costs, grad_b_h, grad_W_out_T, grad_b_out
    )
    return cost, total_W_h, total_b_h, total_W_out, total_b_out


@kernel
def _allocate_partials(n_chunks, m, d, t, dtype_sample):
    """Per-chunk partials, uninitialised: costs, (Xᵀ δ_h)ᵀ (d, m), Σ δ_h, (A_hᵀ δ_out)ᵀ (t, d), Σ δ_out.

    :func:`_backprop_chunk` zeroes its own, in the thread that fills them.
    """
    dtype = dtype_sample.dtype
    return (
        np.zeros(n_chunks, dtype=np.float64),
        np.empty((n_chunks, d, m), dtype=dtype),
        np.empty((n_chunks, d), dtype=dtype),
        np.empty((n_chunks, t, d), dtype=dtype),
        np.empty((n_chunks, t), dtype=dtype),
    )


@kernel
def _backprop_serial(X, Y, W_h, b_h, W_out, b_out, tiny, n_chunks, block_rows, block_cols):
    """Fused step, chunks taken one after another in this thread."""
    n, m = X.shape
    d = W_h.shape[1]
    t = W_out.shape[1]
    W_out_T = np.ascontiguousarray(W_out.T)
    wpack = _packed_weights(W_h)
    wpack_out = _packed_output_weights(W_out)
    costs, g_W_h_T, g_b_h, g_W_out_T, g_b_out = _allocate_partials(n_chunks, m, d, t, X)
    for c in range(n_chunks):
        i_start, i_stop = _chunk_bounds(n, n_chunks, c)
        costs[c] = _backprop_chunk(
            X, Y, W_h, b_h, W_out, b_out, W_out_T, wpack, wpack_out, i_start, i_stop, tiny,
            g_W_h_T[c], g_b_h[c], g_W_out_T[c], g_b_out[c], block_rows, block_cols,
        )
    return _sum_chunks(costs, g_W_h_T, g_b_h, g_W_out_T, g_b_out)


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
    wpack = _packed_weights(W_h)
    wpack_out = _packed_output_weights(W_out)
    costs, g_W_h_T, g_b_h, g_W_out_T, g_b_out = _allocate_partials(n_chunks, m, d, t, X)
    for c in prange(n_chunks):
        i_start, i_stop = _chunk_bounds(n, n_chunks, c)
        costs[c] = _backprop_chunk(
            X, Y, W_h, b_h, W_out, b_out, W_out_T, wpack, wpack_out, i_start, i_stop, tiny,
            g_W_h_T[c], g_b_h[c], g_W_out_T[c], g_b_out[c], block_rows, block_cols,
        )
    return _sum_chunks(costs, g_W_h_T, g_b_h, g_W_out_T, g_b_out)


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
