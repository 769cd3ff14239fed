"""Private compiled kernels for the hidden layer and the fused training step.

No checks happen here: the public functions in :mod:`fastbp._backprop`
validate shapes, make every array C-contiguous and give all float arrays one
dtype (float32 or float64) before calling in.  Kernels never write to their
inputs.

The large products, X_block W_h (forward) and the gradients Xᵀ δ_h and
δ_outᵀ A_h, all run on the register tiles of the blocked output gradient
(:mod:`fastbp._tiles`), which compute
G[k, j] += Σ_i D[i, k] · A[i, j] with one fused multiply-add per term in
order of i: each product below is that formula with the operands named to
fit.  In the fused step, W_h and W_out (zero-padded to one vector when
narrower) are copied into panels once per call and each block's inputs are
read in place, six rows at a time (:func:`_hidden_forward_packed`, which
also computes A_h W_out).  Xᵀ δ_h is accumulated
as (m, d), each block's δ_h packed and its X read in place
(:func:`_add_grad_W_h`), or with several chunks as (d, m), X packed and
δ_h read in place (:func:`_add_grad_W_h_T`).  The small product with W_out
that is left, δ_out W_outᵀ, uses :func:`_matmul_accumulate`, a loop nest
whose innermost loop runs with unit stride over the output's columns, four
chained terms in each update.

The block sizes are tuning constants (here and in :mod:`fastbp._backprop`);
docs/tuning.md lists them with the measurements behind them.

The activations and the cost reuse the scalar helpers of
:mod:`fastbp._kernels` (``_add_bias_sigmoid_inplace``, ``_cost_term``), so the fused step follows
exactly the conventions of :func:`fastbp.sigmoid` and :func:`fastbp.cost`.
"""

import numpy as np
from numba import prange

from . import _tiles as tiles
from ._jit import CONTRACT, kernel, parallel_kernel, serial_and_parallel
from ._kernels import _add_bias_sigmoid_inplace, _chunk_bounds, _cost_terms
from ._kernels_private import _clip_rows, _example_norms
from ._simd import VECTOR_BYTES

# --------------------------------------------------------------------------
# The loop nest of the small products with W_out
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
def _copy_columns(source, target):
    """target[i, j] = source[i, j] for the columns both have (the narrower's width).

    A loop rather than a slice assignment: Numba compiles a slice
    assignment's shape-mismatch message (string formatting) into every
    caller, several seconds of compilation for a check that cannot fail here.
    """
    width = min(source.shape[1], target.shape[1])
    for i in range(source.shape[0]):
        for j in range(width):
            target[i, j] = source[i, j]


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

    :func:`fastbp._tiles.accumulate` computes
    G[k, j] += Σ_i D[i, k] · A[i, j]; with A = δ_h and D = X that is Xᵀ δ_h
    itself, (m, d), one fused multiply-add per example in example order.
    """
    n, m = X.shape
    d = delta_h.shape[1]
    w = VECTOR_BYTES // X.itemsize
    size = tiles.scratch_size(n, d, m, tiles.BLOCK_N, tiles.BLOCK_D, tiles.BLOCK_T, w)
    tiles.accumulate(
        delta_h, X[:, 0:m], 0, n, grad, tiles.BLOCK_N, tiles.BLOCK_D, tiles.BLOCK_T,
        np.empty(size, dtype=X.dtype),
    )


@kernel
def _hidden_product(X_block, W_h, Z):
    """Z[i, j] += Σ_p X_block[i, p] · W_h[p, j], the hidden layer's big product.

    Also the register-tiled kernel: with A = W_h (m, d) and D = X_blockᵀ
    (m, rows), G[k, j] += Σ_p D[p, k] · A[p, j] is Z = X_block W_h, summed
    over the m inputs in order, one fused multiply-add each.  The block of
    examples is transposed once (rows × m copies against rows × m × d
    multiply-adds).  The plain form of the product: the fused step runs
    :func:`_hidden_forward_packed` on packed weights instead, and the tests
    hold the two to the same bits.
    """
    X_T = np.ascontiguousarray(X_block.T)
    m, d = W_h.shape
    rows = X_T.shape[1]
    w = VECTOR_BYTES // X_block.itemsize
    size = tiles.scratch_size(m, d, rows, tiles.BLOCK_N, tiles.BLOCK_D, tiles.BLOCK_T, w)
    tiles.accumulate(
        W_h, X_T[:, 0:rows], 0, m, Z, tiles.BLOCK_N, tiles.BLOCK_D, tiles.BLOCK_T,
        np.empty(size, dtype=X_block.dtype),
    )


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
# Block sizes of the fused step's large products; the forward product on
# packed weights
# --------------------------------------------------------------------------

#: Most inputs per pass of the forward product (m cut into equal passes; a six-row group's inputs
#: are read by every W_h panel in turn): m = 784 in one pass matched or beat shallower passes
#: when measured, see docs/tuning.md.
_FORWARD_DEPTH = 800

# Xᵀ δ_h has two orientations, with the same bits: one chunk accumulates (m, d), δ_h packed and
# X read in place (:func:`_add_grad_W_h`), with no transposition at the end; several chunks
# accumulate (d, m), X packed and δ_h read in place (:func:`_add_grad_W_h_T`), summed and
# transposed once per call.  Both choices were measured, see docs/tuning.md.
#: Inputs per packed block of X in the (d, m) orientation.  No measurement recorded.
_GRAD_W_H_BLOCK_INPUTS = 128
#: Hidden units per block of δ_h in the (d, m) orientation: δ_h is read in place, not copied,
#: for d ≤ 128.  No measurement recorded.
_GRAD_W_H_BLOCK_HIDDEN = 128


@kernel
def _hidden_forward_packed(X, i0, rows, wpack, m, d, Z):
    """Z[r, j] += Σ_p X[i0 + r, p] · W_h[p, j] for r < rows, W_h (m, d) given as panels.

    ``wpack`` holds W_h (m, d) in the panels of :func:`_packed_weights`, packed
    once per call.  The m inputs go in equal passes of at most
    ``_FORWARD_DEPTH``; in a pass, each group of six rows of X is read in
    place (the tiles take it as the strided D = X[rows].T, see
    :func:`fastbp._simd.tile_fma`) and stays in L1 while every W_h panel
    runs over it, the accumulators in registers; the rows are not copied
    transposed first (measured slower, see docs/tuning.md).
    Each element of Z gets one fused multiply-add per input in order of p,
    whatever the pass depth: the bits of :func:`_hidden_product`.  The
    output layer's A_h W_out runs on it too (X = A_h, W_h = W_out).
    """
    w = VECTOR_BYTES // X.itemsize
    n_groups = (rows + tiles.TILE_ROWS - 1) // tiles.TILE_ROWS
    n_panels = tiles.panel_count(d, w)
    n_passes = (m + _FORWARD_DEPTH - 1) // _FORWARD_DEPTH
    for s in range(n_passes):
        p0 = (m * s) // n_passes
        p1 = (m * (s + 1)) // n_passes
        depth = p1 - p0
        for g in range(n_groups):
            r0 = g * tiles.TILE_ROWS
            kt = min(tiles.TILE_ROWS, rows - r0)
            D = X[i0 + r0 : i0 + r0 + kt, p0:p1].T  # read in place, by rows
            offset = 0
            for panel in range(n_panels):
                nvec, first_column, skip = tiles.panel_layout(d, w, panel)
                pw = nvec * w
                P = wpack[offset + p0 * pw : offset + p1 * pw].reshape((depth, pw))
                tiles.tiles_for_panel(P, D, depth, nvec, first_column, skip, r0, kt, Z)
                offset += m * pw


# --------------------------------------------------------------------------
# The fused step: blocks, chunks, packed weights, chunk sums
# --------------------------------------------------------------------------


@kernel
def _forward_and_deltas(
    X, Y, i0, r0, r1, b_h, b_out, W_out_T, wpack, wpack_out, tiny, block_cols,
    A_h_block, delta_out_block, delta_h_block, Z_pad_block, cost_terms,
):
    """Forward pass, cost terms, δ_out and δ_h for rows r0 ≤ r < r1 of the block at example i0.

    Writes rows [r0, r1) of the block buffers: A_h (rows, d), δ_out (rows,
    t; it holds A_out until the cost terms are taken), δ_h (rows, d), and
    the float64 cost terms (rows, t) of :func:`fastbp._kernels._cost_term`.
    Every row's values depend on that row alone (the products run on
    six-row groups counted from the block's first row, and each element is
    one chain of fused multiply-adds whatever rows stand beside it), so
    disjoint row ranges can go to different threads without changing a
    bit.  ``r0`` must be a multiple of six.
    """
    m = X.shape[1]
    d = A_h_block.shape[1]
    t = delta_out_block.shape[1]
    w = VECTOR_BYTES // X.itemsize
    rows = r1 - r0
    A_h = A_h_block[r0:r1]
    A_out = delta_out_block[r0:r1]
    delta_h = delta_h_block[r0:r1]
    Y_rows = Y[i0 + r0 : i0 + r1]

    # Forward: as fastbp.forward, product first, then bias, then φ.  A layer
    # narrower than one vector runs on weights padded with zero columns
    # (:func:`_packed_padded_weights`) into Z_pad and keeps its real columns.
    if d < w:
        Z_h = Z_pad_block[r0:r1]
        Z_h[:] = 0
        _hidden_forward_packed(X, i0 + r0, rows, wpack, m, w, Z_h)
        _copy_columns(Z_h, A_h)
    else:
        A_h[:] = 0
        _hidden_forward_packed(X, i0 + r0, rows, wpack, m, d, A_h)
    _add_bias_sigmoid_inplace(A_h, b_h)
    if t < w:
        Z_out = Z_pad_block[r0:r1]
        Z_out[:] = 0
        _hidden_forward_packed(A_h, 0, rows, wpack_out, d, w, Z_out)
        _copy_columns(Z_out, A_out)
    else:
        A_out[:] = 0
        _hidden_forward_packed(A_h, 0, rows, wpack_out, d, t, A_out)
    _add_bias_sigmoid_inplace(A_out, b_out)

    # One loop over the rows' rows·t terms (all three arrays are C-contiguous
    # row blocks), so it vectorises across rows as well as outputs.
    a_flat = delta_out_block.reshape(-1)[r0 * t : r1 * t]
    y_flat = Y.reshape(-1)[(i0 + r0) * t : (i0 + r1) * t]
    terms = cost_terms.reshape(-1)[r0 * t : r1 * t]
    _cost_terms(a_flat, y_flat, tiny, terms)

    # Backward: A_out becomes δ_out in place (it is not needed again).
    _subtract_inplace(A_out, Y_rows)
    delta_h[:] = 0
    _matmul_accumulate(A_out, W_out_T, delta_h, block_cols)
    _times_sigmoid_derivative(delta_h, A_h)


@kernel
def _add_small_gradients(
    rows, A_h_block, delta_out_block, delta_h_block, cost_terms, grad_b_h, grad_W_out_T, grad_b_out,
    scratch,
):
    """Add a block's Σ δ_out, (A_hᵀ δ_out)ᵀ and Σ δ_h to the sums; return its cost.

    Examples in order; the cost is −Σ of the block's terms in row-major
    order from 0, the bits of :func:`fastbp._kernels._cost` on the block.
    ``scratch`` is the tile engine's (:func:`_chunk_buffers`).
    """
    A_h = A_h_block[:rows]
    delta_out = delta_out_block[:rows]
    delta_h = delta_h_block[:rows]
    block_cost = 0.0
    for r in range(rows):
        for k in range(cost_terms.shape[1]):
            block_cost -= cost_terms[r, k]
    _add_column_sums(delta_out, grad_b_out)
    tiles.accumulate(
        A_h, delta_out[:, 0 : delta_out.shape[1]], 0, rows, grad_W_out_T,
        tiles.BLOCK_N, tiles.BLOCK_D, tiles.BLOCK_T, scratch,
    )
    _add_column_sums(delta_h, grad_b_h)
    return block_cost


@kernel
def _tile_scratch_size(rows, m, d, t, w):
    """Elements of the tile engine's scratch for the step's products on ``rows`` examples.

    The largest of (A_hᵀ δ_out)ᵀ (:func:`_add_small_gradients`), Xᵀ δ_h as
    (d, m) (:func:`_add_grad_W_h_T`) and as (m, d) (:func:`_add_grad_W_h`).
    """
    return max(
        tiles.scratch_size(rows, d, t, tiles.BLOCK_N, tiles.BLOCK_D, tiles.BLOCK_T, w),
        tiles.scratch_size(
            rows, m, d, tiles.BLOCK_N, _GRAD_W_H_BLOCK_INPUTS, _GRAD_W_H_BLOCK_HIDDEN, w
        ),
        tiles.scratch_size(rows, d, m, tiles.BLOCK_N, tiles.BLOCK_D, m, w),
    )


@kernel
def _chunk_offsets(n, m, d, t, block_rows, itemsize):
    """The layout of one chunk's scratch (:func:`_chunk_buffers`), in elements of the dtype.

    Returns (rows, ends): the blocks' height, min(block_rows, n) and at
    least 1, and where A_h, δ_out, δ_h, Z_pad, the cost terms and the tile
    scratch end.  Each part starts on a 64-byte line (from the chunk's
    start), so the float64 cost terms are aligned in a float32 scratch and
    the chunks of a workspace, one after another, share no cache line.
    """
    line = 64 // itemsize
    w = VECTOR_BYTES // itemsize
    rows = max(1, min(block_rows, n))
    sizes = (
        rows * d,
        rows * t,
        rows * d,
        rows * w if min(d, t) < w else 0,
        rows * t * (8 // itemsize),
        _tile_scratch_size(rows, m, d, t, w),
    )
    e0 = (sizes[0] + line - 1) // line * line
    e1 = e0 + (sizes[1] + line - 1) // line * line
    e2 = e1 + (sizes[2] + line - 1) // line * line
    e3 = e2 + (sizes[3] + line - 1) // line * line
    e4 = e3 + (sizes[4] + line - 1) // line * line
    e5 = e4 + (sizes[5] + line - 1) // line * line
    return rows, (e0, e1, e2, e3, e4, e5)


@kernel
def _chunk_scratch_size(n, m, d, t, block_rows, itemsize):
    """Elements of one chunk's scratch for a step on n examples in blocks of block_rows."""
    return _chunk_offsets(n, m, d, t, block_rows, itemsize)[1][5]


@kernel
def _chunk_buffers(scratch, n, m, d, t, block_rows):
    """A chunk's block buffers, views of its ``scratch``; uninitialised.

    A_h (rows, d), δ_out (rows, t), δ_h (rows, d), Z_pad (rows, W, or
    empty when both layers are at least one vector wide: for the product
    of a layer narrower than that), the float64 cost terms (rows, t), and
    the tile engine's scratch; rows from :func:`_chunk_offsets`.  Kept in a
    workspace between calls, not allocated per chunk: see
    :func:`fastbp._tiles.accumulate`.
    """
    w = VECTOR_BYTES // scratch.itemsize
    rows, ends = _chunk_offsets(n, m, d, t, block_rows, scratch.itemsize)
    e0, e1, e2, e3, e4, e5 = ends
    return (
        scratch[:e0][: rows * d].reshape((rows, d)),
        scratch[e0:e1][: rows * t].reshape((rows, t)),
        scratch[e1:e2][: rows * d].reshape((rows, d)),
        scratch[e2:e3][: (rows * w if min(d, t) < w else 0)].reshape(
            (rows if min(d, t) < w else 0, w)
        ),
        scratch[e3:e4].view(np.float64)[: rows * t].reshape((rows, t)),
        scratch[e4:e5],
    )


@kernel
def _chunk_scratches(workspace, start, n_scratches, n, m, d, t, block_rows):
    """``n_scratches`` chunk scratches (rows of the result) in ``workspace`` from ``start`` on.

    The first starts at the first 64-byte line at or after ``start``, so a
    workspace needs :func:`_chunk_scratch_size` · n_scratches + 64 bytes'
    worth of elements beyond ``start``.
    """
    line = 64 // workspace.itemsize
    first = (start + line - 1) // line * line
    stride = _chunk_scratch_size(n, m, d, t, block_rows, workspace.itemsize)
    return workspace[first : first + n_scratches * stride].reshape((n_scratches, stride))


@kernel
def _backprop_chunk(
    X, Y, b_h, b_out, W_out_T, wpack, wpack_out, i_start, i_stop, tiny,
    grad_W_h, grad_b_h, grad_W_out_T, grad_b_out, block_rows, block_cols, transposed, scratch,
    norms, max_grad_norm,
):
    """Forward and backward pass over examples [i_start, i_stop), in blocks.

    Sets the four ``grad_*`` buffers to this chunk's gradient sums (they are
    zeroed first, in the thread that runs the chunk) and returns the chunk's
    cost (float64, the sum of its blocks' costs).  ``grad_W_out_T`` is held
    transposed, (t, d), so that the register tiles' vectors run along rows
    of A_h; ``grad_W_h`` is (m, d), its vectors along rows of δ_h, or with
    ``transposed`` (d, m), its vectors along rows of X (see
    :func:`_add_grad_W_h_T`).  Only
    block-sized activations exist at any time: (block_rows, d) and
    (block_rows, t).  ``wpack`` and ``wpack_out`` are W_h and W_out in
    panels, each padded with zero columns to one vector when narrower
    (:func:`_packed_padded_weights`), so both products always run on the
    register tiles, any extra columns computed and dropped.

    Each block is :func:`_forward_and_deltas` on all its rows,
    :func:`_add_small_gradients`, then :func:`_add_grad_W_h` on all m inputs: the same
    three steps that :func:`_backprop_blocks_parallel` shares out between
    threads.  The blocks' buffers are views of ``scratch``, this chunk's
    own (:func:`_chunk_buffers` for X's n examples).

    Private training: with a non-empty ``norms`` (float64, one per example
    of X), each block's per-example gradient norms are written there right
    after its deltas (:func:`fastbp._kernels_private._example_norms`), and
    with a finite ``max_grad_norm`` its rows of δ_out and δ_h are scaled to
    clip each example's gradient to that norm
    (:func:`fastbp._kernels_private._clip_rows`) before they are added: the
    chunk then sums the clipped gradients.  An empty ``norms`` is the plain step.
    """
    m = X.shape[1]
    d = b_h.shape[0]
    t = W_out_T.shape[0]
    grad_W_h[:] = 0
    grad_b_h[:] = 0
    grad_W_out_T[:] = 0
    grad_b_out[:] = 0
    A_h_block, delta_out_block, delta_h_block, Z_pad_block, cost_terms, tile_scratch = (
        _chunk_buffers(scratch, X.shape[0], m, d, t, block_rows)
    )
    chunk_cost = 0.0
    for i0 in range(i_start, i_stop, block_rows):
        rows = min(i0 + block_rows, i_stop) - i0
        _forward_and_deltas(
            X, Y, i0, 0, rows, b_h, b_out, W_out_T, wpack, wpack_out, tiny, block_cols,
            A_h_block, delta_out_block, delta_h_block, Z_pad_block, cost_terms,
        )
        if norms.shape[0] > 0:
            _example_norms(X, i0, rows, A_h_block, delta_out_block, delta_h_block, norms)
            if max_grad_norm < np.inf:
                _clip_rows(i0, rows, delta_out_block, delta_h_block, norms, max_grad_norm)
        chunk_cost += _add_small_gradients(
            rows, A_h_block, delta_out_block, delta_h_block, cost_terms,
            grad_b_h, grad_W_out_T, grad_b_out, tile_scratch,
        )
        if transposed:
            _add_grad_W_h_T(X, i0, rows, delta_h_block, grad_W_h, tile_scratch)
        else:
            _add_grad_W_h(X, i0, rows, delta_h_block, grad_W_h, 0, m, tile_scratch)
    return chunk_cost


@kernel
def _add_grad_W_h(X, i0, rows, delta_h_block, grad_W_h, p0, p1, scratch):
    """grad_W_h[p, j] += Σ_r X[i0 + r, p] · δ_h[r, j] for the inputs p0 ≤ p < p1.

    The register-tiled kernel with A = δ_h (its rows packed into panels of
    hidden units, the vectors) and D = the block's X, read in place
    through its strides (inputs broadcast, six at a time): rows p0 … p1−1
    of the (m, d) gradient, each element one fused multiply-add per
    example in example order.  Disjoint input ranges are disjoint
    elements, so they can go to different threads, each with its own
    ``scratch`` (:func:`_tile_scratch_size`).
    """
    if p1 <= p0:
        return
    tiles.accumulate(
        delta_h_block[:rows], X[i0 : i0 + rows, p0:p1], 0, rows, grad_W_h[p0:p1],
        tiles.BLOCK_N, tiles.BLOCK_D, p1 - p0, scratch,
    )


@kernel
def _add_grad_W_h_T(X, i0, rows, delta_h_block, grad_W_h_T, scratch):
    """(Xᵀ δ_h)ᵀ[j, p] += Σ_r δ_h[r, j] · X[i0 + r, p], the (d, m) orientation.

    The register-tiled kernel with A = the block's X (packed, its inputs
    the vectors) and D = δ_h read in place.  Each element gets the same
    chain of fused multiply-adds as in :func:`_add_grad_W_h`.  For d = 100,
    a row of the (m, d) orientation takes 7 float32 vectors (112 columns)
    while m = 784 inputs fill 49 exactly; the chunked step uses this
    orientation for that reason (measured, see docs/tuning.md) and pays
    one transposition per call.
    """
    tiles.accumulate(
        X[i0 : i0 + rows], delta_h_block[:rows, 0 : delta_h_block.shape[1]], 0, rows, grad_W_h_T,
        tiles.BLOCK_N, _GRAD_W_H_BLOCK_INPUTS, _GRAD_W_H_BLOCK_HIDDEN, scratch,
    )


@parallel_kernel
def _backprop_blocks_parallel(
    X, Y, W_h, b_h, W_out, b_out, tiny, n_parts, block_rows, block_cols, replicate_bytes,
    workspace,
):
    """Fused step as one chunk, each block's work shared out among ``n_parts`` threads.

    For few examples (one chunk), the threads split every block instead of
    the examples: rows of the block (in six-row groups) for the forward
    pass and the deltas, then inputs (in six-row groups) for Xᵀ δ_h.  The
    block's small sums (costs, bias gradients, A_hᵀ δ_out) are added in
    this thread in example order between the two.  Each element is
    computed by exactly the operations of :func:`_backprop_serial` with one
    chunk, so the result has its bits for any ``n_parts``.

    Where the data goes: every part packs its own copy of W_h's panels
    when a copy takes at most ``replicate_bytes`` (else one copy is
    shared), so no thread reads panels another core has just written;
    part p zeroes and accumulates the same rows p0 … p1−1 (inputs) of
    Xᵀ δ_h in every block, so they stay in its core's cache.  ``workspace``
    holds W_out's panels, the copies of W_h's, then ``n_parts`` chunk
    scratches (:func:`_chunk_scratch_size`): the first one's block buffers
    are shared, each part runs the tile engine in its own.
    """
    n, m = X.shape
    d = W_h.shape[1]
    t = W_out.shape[1]
    w = VECTOR_BYTES // X.itemsize
    W_out_T = np.ascontiguousarray(W_out.T)
    wpack_out = _pack_padded_into(W_out, workspace)
    W_h_cols = _padded_to_one_vector(W_h)
    width = W_h_cols.shape[1]
    pack_size = m * (width + w)  # as _packed_weights lays it out
    n_copies = n_parts if pack_size * X.itemsize <= replicate_bytes else 1
    start = wpack_out.shape[0]
    wpacks = workspace[start : start + n_copies * pack_size].reshape((n_copies, pack_size))
    scratch = _chunk_scratches(
        workspace, start + n_copies * pack_size, n_parts, n, m, d, t, block_rows
    )
    costs, g_W_h, g_b_h, g_W_out_T, g_b_out = _allocate_partials(1, m, d, t, X, False)
    grad_W_h = g_W_h[0]
    g_b_h[:] = 0
    g_W_out_T[:] = 0
    g_b_out[:] = 0
    A_h_block, delta_out_block, delta_h_block, Z_pad_block, cost_terms, tile_scratch = (
        _chunk_buffers(scratch[0], n, m, d, t, block_rows)
    )
    n_input_groups = (m + tiles.TILE_ROWS - 1) // tiles.TILE_ROWS
    for part in prange(n_parts):
        if part < n_copies:
            tiles.pack_panels(W_h_cols, 0, m, 0, width, w, wpacks[part])
        q0, q1 = _chunk_bounds(n_input_groups, n_parts, part)
        grad_W_h[q0 * tiles.TILE_ROWS : min(q1 * tiles.TILE_ROWS, m)] = 0
    total = 0.0
    for i0 in range(0, n, block_rows):
        rows = min(i0 + block_rows, n) - i0
        n_groups = (rows + tiles.TILE_ROWS - 1) // tiles.TILE_ROWS
        for part in prange(n_parts):
            g0, g1 = _chunk_bounds(n_groups, n_parts, part)
            r0 = g0 * tiles.TILE_ROWS
            r1 = min(g1 * tiles.TILE_ROWS, rows)
            if r1 > r0:
                _forward_and_deltas(
                    X, Y, i0, r0, r1, b_h, b_out, W_out_T, wpacks[part % n_copies],
                    wpack_out, tiny, block_cols, A_h_block, delta_out_block, delta_h_block,
                    Z_pad_block, cost_terms,
                )
        total += _add_small_gradients(
            rows, A_h_block, delta_out_block, delta_h_block, cost_terms,
            g_b_h[0], g_W_out_T[0], g_b_out[0], tile_scratch,
        )
        for part in prange(n_parts):
            q0, q1 = _chunk_bounds(n_input_groups, n_parts, part)
            p0 = q0 * tiles.TILE_ROWS
            p1 = min(q1 * tiles.TILE_ROWS, m)
            if p1 > p0:
                _add_grad_W_h(
                    X, i0, rows, delta_h_block, grad_W_h, p0, p1,
                    _chunk_buffers(scratch[part], n, m, d, t, block_rows)[5],
                )
    costs[0] = total
    return _sum_chunks(costs, g_W_h, g_b_h, g_W_out_T, g_b_out, False)


@kernel
def _packed_weights(W):
    """W (K, N) in panels for :func:`_hidden_forward_packed`, or an empty array when N < W."""
    rows, cols = W.shape
    w = VECTOR_BYTES // W.itemsize
    if cols < w:
        return np.empty(0, dtype=W.dtype)
    wpack = np.empty(rows * (cols + w), dtype=W.dtype)
    tiles.pack_panels(W, 0, rows, 0, cols, w, wpack)
    return wpack


@kernel
def _padded_to_one_vector(W):
    """W itself, or a copy with zero columns added up to one vector when it is narrower."""
    rows, cols = W.shape
    w = VECTOR_BYTES // W.itemsize
    if cols >= w:
        return W
    padded = np.zeros((rows, w), dtype=W.dtype)
    _copy_columns(W, padded)
    return padded


@kernel
def _packed_padded_weights(W):
    """W (K, N) in panels, with zero columns added up to one vector when N < W.

    A column's products and sums are the same whatever columns stand
    beside it, so the real columns of the padded product have the bits of
    the unpadded one (and of :func:`_matmul_accumulate` and
    :func:`_hidden_product`).  So both layers of the fused step always run
    on the register tiles, and the step compiles one product kernel.
    """
    return _packed_weights(_padded_to_one_vector(W))


@kernel
def _padded_pack_size(rows, cols, w):
    """Elements of :func:`_packed_padded_weights` for (rows, cols) W: rows · (max(cols, w) + w)."""
    return rows * (max(cols, w) + w)


@kernel
def _pack_padded_into(W, out):
    """:func:`_packed_padded_weights` (W) written into the front of ``out``; returns that part.

    For a workspace the caller keeps between calls: the panels of a large
    W_h are hundreds of kilobytes, and a fresh allocation per call can cost
    more in page faults than the product itself where the C allocator hands
    the memory back to the system after each call.
    """
    rows = W.shape[0]
    w = VECTOR_BYTES // W.itemsize
    padded = _padded_to_one_vector(W)
    size = _padded_pack_size(rows, W.shape[1], w)
    wpack = out[:size]
    tiles.pack_panels(padded, 0, rows, 0, padded.shape[1], w, wpack)
    return wpack


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
    """Cost, Σ δ_h, A_hᵀ δ_out (back to (d, t)) and Σ δ_out over the chunks, in chunk order."""
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
def _sum_chunks(costs, grad_W_h, grad_b_h, grad_W_out_T, grad_b_out, transposed):
    """Add the per-chunk partials in chunk order 0, 1, …; transpose the transposed ones back.

    The sums run along the partials' contiguous rows (one vectorised pass
    per chunk).  ``grad_W_h`` holds (m, d) partials, or (d, m) ones with
    ``transposed``; an (m, d) single chunk is returned as it is.

    Returns (cost, grad_W_h (m, d), grad_b_h, grad_W_out (d, t), grad_b_out).
    """
    n_chunks, rows, cols = grad_W_h.shape
    if transposed:
        total_W_h = _sum_transposed_partials(grad_W_h)
    elif n_chunks == 1:
        total_W_h = grad_W_h[0]
    else:
        total_W_h = np.empty((rows, cols), dtype=grad_W_h.dtype)
        _sum_rows_in_order(grad_W_h, total_W_h, 0, rows)
    cost, total_b_h, total_W_out, total_b_out = _sum_small_partials(
        costs, grad_b_h, grad_W_out_T, grad_b_out
    )
    return cost, total_W_h, total_b_h, total_W_out, total_b_out


@kernel
def _sum_transposed_partials(partials):
    """(m, d) total of (d, m) partials: out[p, j] = Σ_c partials[c, j, p], chunks in order.

    Each sum starts from chunk 0's value and adds the others in order, the
    bits of :func:`_sum_rows_in_order`.  The sums run in place in chunk 0's
    partial, along its contiguous rows (vectorised; the partials are
    scratch: every caller's live in a workspace or were allocated for the
    call), then the total is transposed in 8 × 8 tiles with constant trip
    counts, which LLVM turns into vector shuffles.
    """
    n_chunks, d, m = partials.shape
    total = partials[0]
    for c in range(1, n_chunks):
        for j in range(d):
            row = partials[c, j]
            dst = total[j]
            for p in range(m):
                dst[p] += row[p]
    out = np.empty((m, d), dtype=partials.dtype)
    d8 = d - d % 8
    m8 = m - m % 8
    for j0 in range(0, d8, 8):
        for p0 in range(0, m8, 8):
            for a in range(8):
                for b in range(8):
                    out[p0 + a, j0 + b] = total[j0 + b, p0 + a]
        for p in range(m8, m):
            for b in range(8):
                out[p, j0 + b] = total[j0 + b, p]
    for j in range(d8, d):
        for p in range(m):
            out[p, j] = total[j, p]
    return out


@kernel
def _partials(workspace, n_chunks, m, d, t, transposed):
    """Per-chunk partials (as :func:`_allocate_partials`), in ``workspace`` when there are several.

    One chunk's partials are the result the caller gets, so they are
    allocated; several chunks' are summed into new arrays and then dead, so
    they live in the front of ``workspace`` (kept between calls by the
    caller), which must then hold n_chunks · (m·d + d + t·d + t) elements.
    """
    if n_chunks == 1:
        return _allocate_partials(1, m, d, t, workspace, transposed)
    sizes = (n_chunks * m * d, n_chunks * d, n_chunks * t * d, n_chunks * t)
    a = sizes[0]
    b = a + sizes[1]
    c = b + sizes[2]
    e = c + sizes[3]
    grad_W_h = workspace[:a]
    return (
        np.zeros(n_chunks, dtype=np.float64),
        grad_W_h.reshape((n_chunks, d, m)) if transposed else grad_W_h.reshape((n_chunks, m, d)),
        workspace[a:b].reshape((n_chunks, d)),
        workspace[b:c].reshape((n_chunks, t, d)),
        workspace[c:e].reshape((n_chunks, t)),
    )


@kernel
def _allocate_partials(n_chunks, m, d, t, dtype_sample, transposed):
    """Per-chunk partials, uninitialised: costs, Xᵀ δ_h, Σ δ_h, (A_hᵀ δ_out)ᵀ (t, d), Σ δ_out.

    Xᵀ δ_h is (m, d), or (d, m) with ``transposed``.

    :func:`_backprop_chunk` zeroes its own, in the thread that fills them.
    """
    dtype = dtype_sample.dtype
    return (
        np.zeros(n_chunks, dtype=np.float64),
        np.empty((n_chunks, d, m) if transposed else (n_chunks, m, d), dtype=dtype),
        np.empty((n_chunks, d), dtype=dtype),
        np.empty((n_chunks, t, d), dtype=dtype),
        np.empty((n_chunks, t), dtype=dtype),
    )


@kernel
def _grad_W_h_transposed(n_chunks):
    """Whether the step accumulates Xᵀ δ_h as (d, m): with several chunks.

    One chunk's (m, d) needs no transposition; several chunks' (d, m)
    partials are summed and transposed once (:func:`_sum_chunks`), and
    faster to accumulate (docs/tuning.md).
    """
    return n_chunks > 1


def _backprop_chunks(
    X, Y, W_h, b_h, W_out, b_out, tiny, n_chunks, block_rows, block_cols, workspace,
    norms, max_grad_norm,
):
    """Fused step over ``n_chunks`` chunks of examples: the cost and the four gradients.

    Compiled twice (:func:`fastbp._jit.serial_and_parallel`):
    :data:`_backprop_serial` takes the chunks one after another in this
    thread, :data:`_backprop_parallel` spreads them over Numba's threads.
    Each chunk writes only its own partial buffers, and the partials are
    added in chunk order afterwards, so both give the same bits for any
    number of threads.  No BLAS is called.

    With one chunk, Xᵀ δ_h is accumulated as (m, d) (:func:`_add_grad_W_h`),
    as in :func:`_backprop_blocks_parallel`; with more, as (d, m)
    (:func:`_add_grad_W_h_T`) and transposed once after the chunk sums.
    ``workspace`` (1-D, in the dtype, see :func:`fastbp._backprop._workspace`)
    holds several chunks' partials (:func:`_partials`), W_h's and W_out's
    panels (:func:`_padded_pack_size` each), then each chunk's scratch
    (:func:`_chunk_scratches`).  ``norms`` and ``max_grad_norm``: see
    :func:`_backprop_chunk` (empty and inf for the plain step).
    """
    n, m = X.shape
    d = W_h.shape[1]
    t = W_out.shape[1]
    W_out_T = np.ascontiguousarray(W_out.T)
    transposed = _grad_W_h_transposed(n_chunks)
    # The workspace: the partials of several chunks, then W_h's and W_out's panels.
    partials_size = n_chunks * (m * d + d + t * d + t) if n_chunks > 1 else 0
    costs, g_W_h, g_b_h, g_W_out_T, g_b_out = _partials(workspace, n_chunks, m, d, t, transposed)
    wpack = _pack_padded_into(W_h, workspace[partials_size:])
    wpack_out = _pack_padded_into(W_out, workspace[partials_size + wpack.shape[0] :])
    scratch = _chunk_scratches(
        workspace, partials_size + wpack.shape[0] + wpack_out.shape[0], n_chunks,
        n, m, d, t, block_rows,
    )
    for c in prange(n_chunks):
        i_start, i_stop = _chunk_bounds(n, n_chunks, c)
        costs[c] = _backprop_chunk(
            X, Y, b_h, b_out, W_out_T, wpack, wpack_out, i_start, i_stop, tiny,
            g_W_h[c], g_b_h[c], g_W_out_T[c], g_b_out[c], block_rows, block_cols, transposed,
            scratch[c], norms, max_grad_norm,
        )
    return _sum_chunks(costs, g_W_h, g_b_h, g_W_out_T, g_b_out, transposed)


_backprop_serial, _backprop_parallel = serial_and_parallel(_backprop_chunks)


def _example_norms_chunks(
    X, Y, W_h, b_h, W_out, b_out, tiny, n_chunks, block_rows, block_cols, workspace, norms
):
    """Each example's whole-gradient norm into ``norms`` (float64, n), no gradient summed.

    The fused step's forward pass and deltas on each block
    (:func:`_forward_and_deltas`, the bits of :func:`_backprop_chunk`'s),
    then :func:`fastbp._kernels_private._example_norms`; neither product of
    the gradients runs.  Chunks as in :func:`_backprop_chunks` (each
    example's norm depends on its row alone, so on no chunk or thread
    count), in the same workspace layout less the partials.
    """
    n, m = X.shape
    d = W_h.shape[1]
    t = W_out.shape[1]
    W_out_T = np.ascontiguousarray(W_out.T)
    wpack = _pack_padded_into(W_h, workspace)
    wpack_out = _pack_padded_into(W_out, workspace[wpack.shape[0] :])
    scratch = _chunk_scratches(
        workspace, wpack.shape[0] + wpack_out.shape[0], n_chunks, n, m, d, t, block_rows
    )
    for c in prange(n_chunks):
        i_start, i_stop = _chunk_bounds(n, n_chunks, c)
        A_h_block, delta_out_block, delta_h_block, Z_pad_block, cost_terms, _ = _chunk_buffers(
            scratch[c], n, m, d, t, block_rows
        )
        for i0 in range(i_start, i_stop, block_rows):
            rows = min(i0 + block_rows, i_stop) - i0
            _forward_and_deltas(
                X, Y, i0, 0, rows, b_h, b_out, W_out_T, wpack, wpack_out, tiny, block_cols,
                A_h_block, delta_out_block, delta_h_block, Z_pad_block, cost_terms,
            )
            _example_norms(X, i0, rows, A_h_block, delta_out_block, delta_h_block, norms)


_example_norms_serial, _example_norms_parallel = serial_and_parallel(_example_norms_chunks)


# --------------------------------------------------------------------------
# The step's two large products alone, for ``fastbp bench --breakdown``
# --------------------------------------------------------------------------


@kernel
def _step_hidden_product(X, W_h, block_rows):
    """X W_h (n, d) as the fused step computes it, with none of the step's other work.

    W_h packed once and padded to one vector where narrower
    (:func:`_packed_padded_weights`), then :func:`_hidden_forward_packed` on
    blocks of ``block_rows`` examples read in place: the calls of
    :func:`_forward_and_deltas`, so the time and the bits are the step's.
    """
    n, m = X.shape
    d = W_h.shape[1]
    width = max(d, VECTOR_BYTES // X.itemsize)
    Z = np.zeros((n, width), dtype=X.dtype)
    wpack = _packed_padded_weights(W_h)
    for i0 in range(0, n, block_rows):
        rows = min(block_rows, n - i0)
        _hidden_forward_packed(X, i0, rows, wpack, m, width, Z[i0 : i0 + rows])
    return np.ascontiguousarray(Z[:, :d])


@kernel
def _step_input_gradient(X, delta_h, block_rows, n_chunks):
    """Xᵀ δ_h (m, d) as the fused step with ``n_chunks`` chunks accumulates it, in one chunk.

    The orientation is the step's (:func:`_grad_W_h_transposed`): (m, d) by
    :func:`_add_grad_W_h`, or (d, m) by :func:`_add_grad_W_h_T` and
    transposed at the end, block by block as :func:`_backprop_chunk` adds them.
    """
    n, m = X.shape
    d = delta_h.shape[1]
    w = VECTOR_BYTES // X.itemsize
    scratch = np.empty(_tile_scratch_size(max(1, min(block_rows, n)), m, d, 0, w), X.dtype)
    if _grad_W_h_transposed(n_chunks):
        G_T = np.zeros((d, m), dtype=X.dtype)
        for i0 in range(0, n, block_rows):
            rows = min(block_rows, n - i0)
            _add_grad_W_h_T(X, i0, rows, delta_h[i0 : i0 + rows], G_T, scratch)
        return np.ascontiguousarray(G_T.T)
    G = np.zeros((m, d), dtype=X.dtype)
    for i0 in range(0, n, block_rows):
        rows = min(block_rows, n - i0)
        _add_grad_W_h(X, i0, rows, delta_h[i0 : i0 + rows], G, 0, m, scratch)
    return G


# --------------------------------------------------------------------------
# The L2 penalty's sums and gradient terms
# --------------------------------------------------------------------------


@kernel
def _sum_of_squares(W):
    """Σ W² in float64: each column's squares summed down the rows, then the columns in order.

    Column by column, so the row loop runs on a vector of column sums (a
    fixed order, the same on every machine) and the epoch kernel can take
    the same sum from the packed panels (:func:`_sum_of_squares_packed`).
    """
    rows, cols = W.shape
    column_sums = np.zeros(cols, dtype=np.float64)
    for i in range(rows):
        for j in range(cols):
            v = np.float64(W[i, j])
            column_sums[j] += v * v
    total = 0.0
    for j in range(cols):
        total += column_sums[j]
    return total


@kernel
def _add_l2_gradients(grad_W_h, grad_W_out, W_h, W_out, l2):
    """Grad += λ W for both weight matrices, in place; returns Σ W_h² + Σ W_out².

    Each element is g + (λ·w), the product rounded and then the sum, as
    NumPy's ``grad += l2 * W`` (no fused multiply-add: this kernel is
    compiled without ``contract``).  The sums of squares are
    :func:`_sum_of_squares`'s, added W_h first.
    """
    for i in range(W_h.shape[0]):
        g = grad_W_h[i]
        w = W_h[i]
        for j in range(W_h.shape[1]):
            g[j] = g[j] + l2 * w[j]
    for i in range(W_out.shape[0]):
        g = grad_W_out[i]
        w = W_out[i]
        for j in range(W_out.shape[1]):
            g[j] = g[j] + l2 * w[j]
    return _sum_of_squares(W_h) + _sum_of_squares(W_out)


# --------------------------------------------------------------------------
# A whole epoch of minibatch steps
# --------------------------------------------------------------------------


@kernel
def _sgd_update_packed(wpack, rows, width, cols, grad, eta, l2, with_l2):
    """W ← W − η (grad + λ W), elementwise, on W (rows, cols) held as panels in ``wpack``.

    The update of :meth:`fastbp.MLP` and of NumPy's ``W -= eta * (grad +
    l2 * W)``: the product λW rounded, then the sum, then η times it, then
    the difference, each in the weights' dtype and never fused (this kernel
    is compiled without ``contract``).  Without ``with_l2`` the λW term is
    left out altogether, as the per-step loop leaves it out for λ = 0.
    A column that two panels hold (the last panel overlaps its neighbour)
    gets the same update from the same value in both, so the copies stay
    equal; padding columns stay zero.
    """
    w = VECTOR_BYTES // wpack.itemsize
    offset = 0
    for panel in range(tiles.panel_count(width, w)):
        nvec, first, skip = tiles.panel_layout(width, w, panel)
        pw = nvec * w
        stop = min(pw, cols - first)
        for p in range(rows):
            # Slices, so every index is a loop counter from 0 and the loops vectorise.
            target = wpack[offset + p * pw : offset + p * pw + stop]
            g = grad[p, first : first + stop]
            if with_l2:
                for c in range(stop):
                    v = target[c]
                    target[c] = v - eta * (g[c] + l2 * v)
            else:
                for c in range(stop):
                    target[c] = target[c] - eta * g[c]
        offset += rows * pw


@kernel
def _sum_of_squares_packed(wpack, rows, width, cols, column_sums):
    """Σ W² of W (rows, cols) held in panels: the order and bits of :func:`_sum_of_squares`.

    ``column_sums`` (cols,) float64 is scratch.  A column that two panels
    hold is counted in the first; padding columns are not counted.
    """
    w = VECTOR_BYTES // wpack.itemsize
    column_sums[:] = 0.0
    offset = 0
    for panel in range(tiles.panel_count(width, w)):
        nvec, first, skip = tiles.panel_layout(width, w, panel)
        pw = nvec * w
        stop = min(pw, cols - first)
        if stop > skip:
            sums = column_sums[first + skip : first + stop]
            for p in range(rows):
                values = wpack[offset + p * pw + skip : offset + p * pw + stop]
                for c in range(stop - skip):
                    v = np.float64(values[c])
                    sums[c] += v * v
        offset += rows * pw
    total = 0.0
    for j in range(cols):
        total += column_sums[j]
    return total


@kernel
def _unpack_weights(wpack, rows, width, W):
    """W[p, j] = its value in the panels, for the real columns of W (rows, cols)."""
    w = VECTOR_BYTES // wpack.itemsize
    cols = W.shape[1]
    offset = 0
    for panel in range(tiles.panel_count(width, w)):
        nvec, first, skip = tiles.panel_layout(width, w, panel)
        pw = nvec * w
        stop = min(pw, cols - first)
        if stop > skip:
            for p in range(rows):
                values = wpack[offset + p * pw + skip : offset + p * pw + stop]
                target = W[p, first + skip : first + stop]
                for c in range(stop - skip):
                    target[c] = values[c]
        offset += rows * pw


@kernel
def _epoch_weights(W_h, W_out):
    """An epoch's working copies: W_h's and W_out's panels, W_outᵀ, and a column-sum buffer."""
    d, t = W_out.shape
    return (
        _packed_padded_weights(W_h),
        _packed_padded_weights(W_out),
        np.ascontiguousarray(W_out.T),
        np.empty(max(d, t), dtype=np.float64),
    )


@kernel
def _store_epoch_weights(wpack, wpack_out, W_h, W_out):
    """Write an epoch's panels back into W_h and W_out."""
    w = VECTOR_BYTES // wpack.itemsize
    d, t = W_out.shape
    _unpack_weights(wpack, W_h.shape[0], max(d, w), W_h)
    _unpack_weights(wpack_out, d, max(t, w), W_out)


@kernel
def _gather_rows(X, Y, indices, first, count, X_batch, Y_batch):
    """Rows ``indices[first : first + count]`` of X and Y into the front of the batch buffers."""
    m = X.shape[1]
    t = Y.shape[1]
    for r in range(count):
        i = indices[first + r]
        for p in range(m):
            X_batch[r, p] = X[i, p]
        for k in range(t):
            Y_batch[r, k] = Y[i, k]


@kernel
def _take_step(
    wpack, wpack_out, W_out_T, b_h, b_out, step_cost, grad_W_h, grad_b_h, grad_W_out, grad_b_out,
    eta, l2, with_l2, l2_float64, column_sums,
):
    """One update W ← W − η (∇ + λW), b ← b − η ∇b on the packed weights; returns the step's cost.

    The cost is ``step_cost`` (the data's, float64) plus, with ``with_l2``,
    (λ/2) Σ W² at the weights before the update, as :func:`fastbp.backprop`
    adds it.  W_h and W_out are updated in their panels, W_out also as
    W_outᵀ (for δ_h), the biases in place; every update is NumPy's
    ``W -= eta * (grad + l2 * W)`` to the bit (no fused operations).
    """
    m, d = grad_W_h.shape
    t = grad_W_out.shape[1]
    w = VECTOR_BYTES // wpack.itemsize
    width_h = max(d, w)
    width_out = max(t, w)
    if with_l2:
        step_cost += 0.5 * l2_float64 * (
            _sum_of_squares_packed(wpack, m, width_h, d, column_sums)
            + _sum_of_squares_packed(wpack_out, d, width_out, t, column_sums)
        )
    _sgd_update_packed(wpack, m, width_h, d, grad_W_h, eta, l2, with_l2)
    _sgd_update_packed(wpack_out, d, width_out, t, grad_W_out, eta, l2, with_l2)
    for j in range(d):
        g = grad_W_out[j]
        for k in range(t):
            v = W_out_T[k, j]
            if with_l2:
                W_out_T[k, j] = v - eta * (g[k] + l2 * v)
            else:
                W_out_T[k, j] = v - eta * g[k]
    for j in range(d):
        b_h[j] = b_h[j] - eta * grad_b_h[j]
    for k in range(t):
        b_out[k] = b_out[k] - eta * grad_b_out[k]
    return step_cost


@kernel
def _sgd_epoch(
    X, Y, order, minibatch_size, W_h, b_h, W_out, b_out, eta, l2, with_l2, l2_float64, tiny,
    n_chunks, block_rows, block_cols,
):
    """One epoch of minibatch steps, the weights updated in place; returns Σ of the step costs.

    Step s takes the examples ``order[s·B : (s+1)·B]`` (B =
    ``minibatch_size``, full minibatches only), gathers their rows of X and
    Y into one buffer, and runs the chunk loop of :func:`_backprop_serial`
    on it with ``n_chunks`` chunks: the cost and the four gradients with
    the bits of :func:`fastbp.backprop`.  Then W ← W − η (∇ + λW) and
    b ← b − η ∇b, as :meth:`fastbp.MLP` does after each call.  ``eta`` and
    ``l2`` are in the weights' dtype, for the updates; ``l2_float64`` is λ
    for the penalty, which is added to each step's float64 cost as
    :func:`fastbp.backprop` adds it.

    W_h and W_out stay in the products' panel layout for the whole epoch
    (W_out also as W_outᵀ for δ_h): packed once, updated in place there,
    written back to ``W_h`` and ``W_out`` once at the end.  The biases are
    updated in place at every step.  Step costs (with the penalty at the
    step's weights when ``with_l2``) are summed in step order.
    """
    m = X.shape[1]
    d = W_h.shape[1]
    t = W_out.shape[1]
    wpack, wpack_out, W_out_T, column_sums = _epoch_weights(W_h, W_out)
    X_batch = np.empty((minibatch_size, m), dtype=X.dtype)
    Y_batch = np.empty((minibatch_size, t), dtype=Y.dtype)
    transposed = n_chunks > 1
    costs, g_W_h, g_b_h, g_W_out_T, g_b_out = _allocate_partials(
        n_chunks, m, d, t, X, transposed
    )
    scratch_size = _chunk_scratch_size(minibatch_size, m, d, t, block_rows, X.itemsize)
    scratch = np.empty(n_chunks * scratch_size + 64 // X.itemsize, dtype=X.dtype)
    scratch = _chunk_scratches(scratch, 0, n_chunks, minibatch_size, m, d, t, block_rows)
    no_norms = np.empty(0, dtype=np.float64)
    epoch_cost = 0.0
    for s in range(order.shape[0] // minibatch_size):
        _gather_rows(X, Y, order, s * minibatch_size, minibatch_size, X_batch, Y_batch)
        for c in range(n_chunks):
            i_start, i_stop = _chunk_bounds(minibatch_size, n_chunks, c)
            costs[c] = _backprop_chunk(
                X_batch, Y_batch, b_h, b_out, W_out_T, wpack, wpack_out, i_start, i_stop,
                tiny, g_W_h[c], g_b_h[c], g_W_out_T[c], g_b_out[c], block_rows, block_cols,
                transposed, scratch[c], no_norms, np.inf,
            )
        step_cost, grad_W_h, grad_b_h, grad_W_out, grad_b_out = _sum_chunks(
            costs, g_W_h, g_b_h, g_W_out_T, g_b_out, transposed
        )
        epoch_cost += _take_step(
            wpack, wpack_out, W_out_T, b_h, b_out, step_cost, grad_W_h, grad_b_h, grad_W_out,
            grad_b_out, eta, l2, with_l2, l2_float64, column_sums,
        )
    _store_epoch_weights(wpack, wpack_out, W_h, W_out)
    return epoch_cost


@kernel
def _add_noise_and_scale_2d(gradient, noise, offset, with_noise, scale):
    """In place, gradient ← (gradient + noise) · scale, the noise read in C order from ``offset``.

    The sum in float64, rounded once to the gradient's dtype (as
    :func:`fastbp.dp_backprop` adds its noise), then the product rounded
    once; without ``with_noise``, the product alone.  Returns the offset after it.
    """
    rows, cols = gradient.shape
    for p in range(rows):
        for j in range(cols):
            value = gradient[p, j]
            if with_noise:
                value = gradient.dtype.type(np.float64(value) + noise[offset + p * cols + j])
            gradient[p, j] = value * scale
    return offset + rows * cols


@kernel
def _add_noise_and_scale_1d(gradient, noise, offset, with_noise, scale):
    """:func:`_add_noise_and_scale_2d` for a 1-D gradient."""
    for j in range(gradient.shape[0]):
        value = gradient[j]
        if with_noise:
            value = gradient.dtype.type(np.float64(value) + noise[offset + j])
        gradient[j] = value * scale
    return offset + gradient.shape[0]


@kernel
def _dp_sgd_steps(
    X, Y, indices, starts, chunk_counts, noise, W_h, b_h, W_out, b_out, eta, l2, with_l2,
    l2_float64, tiny, max_grad_norm, scale, max_batch, max_chunks, block_rows, block_cols,
    batch_sizes,
):
    """DP-SGD steps, the weights updated in place; returns Σ of the steps' (data) costs.

    Step s takes the examples ``indices[starts[s] : starts[s+1]]`` (drawn by
    the caller, possibly none) and runs the fused step's chunk loop on them
    with ``chunk_counts[s]`` chunks, each example's gradient clipped to
    ``max_grad_norm`` (:func:`_backprop_chunk`): the bits of
    :func:`fastbp.dp_backprop` without noise.  Its noise is ``noise[s]``
    (float64, the four gradients' coordinates in order W_h, b_h, W_out,
    b_out, each C order; empty without noise), added as
    :func:`fastbp.dp_backprop` adds it; then the gradients are multiplied
    by ``scale`` (1 / the expected batch size) and the weights take the step
    of :func:`_take_step`.  ``batch_sizes[s]`` gets each step's size.
    """
    m = X.shape[1]
    d = W_h.shape[1]
    t = W_out.shape[1]
    wpack, wpack_out, W_out_T, column_sums = _epoch_weights(W_h, W_out)
    rows = max(1, max_batch)
    X_batch = np.empty((rows, m), dtype=X.dtype)
    Y_batch = np.empty((rows, t), dtype=Y.dtype)
    norms = np.empty(rows, dtype=np.float64)
    one = _allocate_partials(1, m, d, t, X, False)
    several = _allocate_partials(max(2, max_chunks), m, d, t, X, True)
    scratch_size = _chunk_scratch_size(rows, m, d, t, block_rows, X.itemsize)
    scratch = np.empty(max(1, max_chunks) * scratch_size + 64 // X.itemsize, dtype=X.dtype)
    scratch = _chunk_scratches(scratch, 0, max(1, max_chunks), rows, m, d, t, block_rows)
    scale = X.dtype.type(scale)
    zero_noise = np.zeros(1, dtype=np.float64)
    epoch_cost = 0.0
    for s in range(starts.shape[0] - 1):
        batch = starts[s + 1] - starts[s]
        batch_sizes[s] = batch
        _gather_rows(X, Y, indices, starts[s], batch, X_batch, Y_batch)
        n_chunks = chunk_counts[s]
        transposed = n_chunks > 1
        costs, g_W_h, g_b_h, g_W_out_T, g_b_out = several if transposed else one
        for c in range(n_chunks):
            i_start, i_stop = _chunk_bounds(batch, n_chunks, c)
            costs[c] = _backprop_chunk(
                X_batch[:batch], Y_batch[:batch], b_h, b_out, W_out_T, wpack, wpack_out,
                i_start, i_stop, tiny, g_W_h[c], g_b_h[c], g_W_out_T[c], g_b_out[c],
                block_rows, block_cols, transposed, scratch[c], norms[:batch], max_grad_norm,
            )
        step_cost, grad_W_h, grad_b_h, grad_W_out, grad_b_out = _sum_chunks(
            costs[:n_chunks], g_W_h[:n_chunks], g_b_h[:n_chunks], g_W_out_T[:n_chunks],
            g_b_out[:n_chunks], transposed,
        )
        with_noise = noise.shape[1] > 0
        step_noise = noise[s] if with_noise else zero_noise
        offset = _add_noise_and_scale_2d(grad_W_h, step_noise, 0, with_noise, scale)
        offset = _add_noise_and_scale_1d(grad_b_h, step_noise, offset, with_noise, scale)
        offset = _add_noise_and_scale_2d(grad_W_out, step_noise, offset, with_noise, scale)
        _add_noise_and_scale_1d(grad_b_out, step_noise, offset, with_noise, scale)
        epoch_cost += _take_step(
            wpack, wpack_out, W_out_T, b_h, b_out, step_cost, grad_W_h, grad_b_h, grad_W_out,
            grad_b_out, eta, l2, with_l2, l2_float64, column_sums,
        )
    _store_epoch_weights(wpack, wpack_out, W_h, W_out)
    return epoch_cost
