"""The fused training step: per-block work, the chunk drivers, the chunk sums and L2.

No checks happen here: the public functions in :mod:`fastbp._backprop` and
:mod:`fastbp._private` validate shapes, make every array C-contiguous and
give all float arrays one dtype before calling in.  Kernels never write to
their inputs.  One exception, :func:`_plain_step`, tests whether a call
with default options is a plain minibatch step, so that such a call is one
compiled call; it never raises: it declines, and the validated path raises.

A step runs blocks of examples through forward and backward pass
(:func:`_forward_and_deltas`) and adds each block's contributions to the
gradients at once (:func:`_add_small_gradients`, :func:`_add_grad_W_h`).
Blocks form chunks (:func:`_backprop_chunk`), chunks run in this thread or
on Numba's threads (:func:`_backprop_chunks`), and their partial results are
added in chunk order (:func:`_sum_chunks`), so the bits never depend on the
thread count.  One chunk can also be shared block by block between threads
(:func:`_backprop_blocks_parallel`).  All large products run on the register
tiles of :mod:`fastbp._tiles` (weights packed by :mod:`fastbp._kernels_packed`);
the activations and the cost reuse the scalar helpers of
:mod:`fastbp._kernels`, so the fused step follows exactly the conventions of
:func:`fastbp.sigmoid` and :func:`fastbp.cost`.
"""

import numpy as np
from numba import prange

from . import _tiles as tiles
from ._arrays import empty, matrix_view, transposed, vector_view, zeros
from ._jit import kernel, parallel_kernel, serial_and_parallel
from ._kernels import (
    _add_bias_sigmoid_inplace,
    _all_in_unit_interval,
    _chunk_bounds,
    _cost_terms,
    _count_correct,
)
from ._kernels_hidden import (
    _add_column_sums,
    _copy_columns,
    _matmul_accumulate,
    _subtract_inplace,
    _times_sigmoid_derivative,
)
from ._kernels_packed import (
    _hidden_forward_packed,
    _pack_padded_into,
    _padded_pack_size,
    _padded_to_one_vector,
    _weights_for_tiles,
)
from ._kernels_private import _clip_rows, _example_norms
from ._scratch import (
    _allocate_partials,
    _chunk_buffers,
    _chunk_scratch_size,
    _chunk_scratches,
    _partials,
)
from ._simd import VECTOR_BYTES, smaller, transposed_sum_block
from ._tuning import (
    DELTA_H_BLOCK_HIDDEN,
    ENGINE_BLOCK_I,
    ENGINE_BLOCK_J,
    ENGINE_BLOCK_K,
    GRAD_W_H_T_BLOCK_HIDDEN,
    GRAD_W_H_T_BLOCK_INPUTS,
    STEP_BLOCK_EXAMPLES,
    STEP_MIN_CHUNK_EXAMPLES,
    TILE_ROWS,
    WEIGHTS_IN_PLACE_MAX_EXAMPLES,
)


@kernel(refcounted=False)
def _forward_and_deltas(
    X,
    Y,
    i0,
    r0,
    r1,
    b_h,
    b_out,
    W_out_T,
    wpack,
    wpack_out,
    weights_in_place,
    tiny,
    block_cols,
    A_h_block,
    delta_out_block,
    delta_h_block,
    Z_pad_block,
    cost_terms,
    correct,
    slot,
):
    """Forward pass, cost terms, δ_out and δ_h for rows r0 ≤ r < r1 of the block at example i0.

    Writes rows [r0, r1) of the block buffers: A_h (rows, d), δ_out (rows,
    t; it holds A_out until the cost terms are taken), δ_h (rows, d), and
    the float64 cost terms (rows, t) of :func:`fastbp._kernels._cost_term`.
    Every row's values depend on that row alone (each element of the
    products is one chain of fused multiply-adds, whatever rows stand
    beside it and however the rows are cut into tiles), so disjoint row
    ranges can go to different threads without changing a bit.

    With a non-empty ``correct`` (int64), the rows whose output is largest
    where their target is (:func:`fastbp._kernels._count_correct`) are
    added to ``correct[slot]``: each thread counts into a slot of its own.
    ``wpack``, ``wpack_out`` and ``weights_in_place``: see :func:`_backprop_chunk`.
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
    # The products write their buffers (``fresh``): nothing zeroes them first.
    if d < w:
        Z_h = Z_pad_block[r0:r1]
        _hidden_forward_packed(X, i0 + r0, rows, wpack, m, w, Z_h, True, False)
        _copy_columns(Z_h, A_h)
    else:
        _hidden_forward_packed(X, i0 + r0, rows, wpack, m, d, A_h, True, weights_in_place)
    _add_bias_sigmoid_inplace(A_h, b_h)
    if t < w:
        Z_out = Z_pad_block[r0:r1]
        _hidden_forward_packed(A_h, 0, rows, wpack_out, d, w, Z_out, True, False)
        _copy_columns(Z_out, A_out)
    else:
        _hidden_forward_packed(A_h, 0, rows, wpack_out, d, t, A_out, True, weights_in_place)
    _add_bias_sigmoid_inplace(A_out, b_out)

    # One loop over the rows' rows·t terms (all three arrays are C-contiguous
    # row blocks), so it vectorises across rows as well as outputs.
    a_flat = vector_view(delta_out_block)[r0 * t : r1 * t]
    y_flat = vector_view(Y)[(i0 + r0) * t : (i0 + r1) * t]
    terms = vector_view(cost_terms)[r0 * t : r1 * t]
    _cost_terms(a_flat, y_flat, tiny, terms)
    if correct.shape[0] > 0:
        correct[slot] += _count_correct(A_out, Y_rows)

    # Backward: A_out becomes δ_out in place (it is not needed again).
    _subtract_inplace(A_out, Y_rows)
    if d < w:
        delta_h[:] = 0
        _matmul_accumulate(A_out, W_out_T, delta_h, block_cols)
    else:
        # δ_out W_outᵀ on the forward product's register tiles, W_outᵀ's rows read
        # in place: the same chains of fused multiply-adds as the loop nest, whose
        # short rows pay a loop set-up per row pair and term group (docs/tuning.md).
        _hidden_forward_packed(A_out, 0, rows, vector_view(W_out_T), t, d, delta_h, True, True)
    _times_sigmoid_derivative(delta_h, A_h)


@kernel(refcounted=False)
def _add_small_gradients(
    rows,
    A_h_block,
    delta_out_block,
    delta_h_block,
    cost_terms,
    grad_b_h,
    grad_W_out_T,
    grad_b_out,
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
        A_h,
        delta_out[:, 0 : delta_out.shape[1]],
        0,
        rows,
        grad_W_out_T,
        ENGINE_BLOCK_I,
        ENGINE_BLOCK_J,
        ENGINE_BLOCK_K,
        scratch,
        False,
    )
    _add_column_sums(delta_h, grad_b_h)
    return block_cost


@kernel
def _backprop_chunk(
    X,
    Y,
    b_h,
    b_out,
    W_out_T,
    wpack,
    wpack_out,
    weights_in_place,
    i_start,
    i_stop,
    tiny,
    grad_W_h,
    grad_b_h,
    grad_W_out_T,
    grad_b_out,
    block_rows,
    block_cols,
    transposed,
    scratch,
    norms,
    max_grad_norm,
    correct,
    slot,
):
    """Forward and backward pass over examples [i_start, i_stop), in blocks.

    Sets the four ``grad_*`` buffers to this chunk's gradient sums (written
    in the thread that runs the chunk: the bias and output-layer sums are
    zeroed first, ``grad_W_h`` is written by the first block's tiles) and returns the chunk's
    cost (float64, the sum of its blocks' costs).  ``grad_W_out_T`` is held
    transposed, (t, d), so that the register tiles' vectors run along rows
    of A_h; ``grad_W_h`` is (m, d), its vectors along rows of δ_h, or with
    ``transposed`` (d, m), its vectors along rows of X (see
    :func:`_add_grad_W_h_T`).  Only
    block-sized activations exist at any time: (block_rows, d) and
    (block_rows, t).  ``wpack`` and ``wpack_out`` are W_h and W_out in
    panels, each padded with zero columns to one vector when narrower
    (:func:`_packed_padded_weights`), so both products always run on the
    register tiles, any extra columns computed and dropped; with
    ``weights_in_place``, a layer at least one vector wide is given as its
    weights' own elements instead, read in place (:func:`_weights_for_tiles`).

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
    chunk then sums the clipped gradients.  An empty ``norms`` is the plain
    step; ``None`` is the plain step compiled without the private branch.

    ``correct`` and ``slot``: the chunk's correctly classified examples are
    counted into ``correct[slot]`` (see :func:`_forward_and_deltas`); an
    empty ``correct`` counts nothing.
    """
    m = X.shape[1]
    d = b_h.shape[0]
    t = W_out_T.shape[0]
    if i_stop <= i_start:  # else the first block writes grad_W_h (``fresh``)
        grad_W_h[:] = 0
    grad_b_h[:] = 0
    grad_W_out_T[:] = 0
    grad_b_out[:] = 0
    A_h_block, delta_out_block, delta_h_block, Z_pad_block, cost_terms, tile_scratch = (
        _chunk_buffers(scratch, X.shape[0], m, d, t, block_rows)
    )
    chunk_cost = 0.0
    for i0 in range(i_start, i_stop, block_rows):
        rows = smaller(i0 + block_rows, i_stop) - i0
        _forward_and_deltas(
            X,
            Y,
            i0,
            0,
            rows,
            b_h,
            b_out,
            W_out_T,
            wpack,
            wpack_out,
            weights_in_place,
            tiny,
            block_cols,
            A_h_block,
            delta_out_block,
            delta_h_block,
            Z_pad_block,
            cost_terms,
            correct,
            slot,
        )
        # None is pruned while typing, so the plain step's code holds no private branch.
        if norms is not None:
            if norms.shape[0] > 0:
                _example_norms(X, i0, rows, A_h_block, delta_out_block, delta_h_block, norms)
                if max_grad_norm < np.inf:
                    _clip_rows(i0, rows, delta_out_block, delta_h_block, norms, max_grad_norm)
        chunk_cost += _add_small_gradients(
            rows,
            A_h_block,
            delta_out_block,
            delta_h_block,
            cost_terms,
            grad_b_h,
            grad_W_out_T,
            grad_b_out,
            tile_scratch,
        )
        first = i0 == i_start
        if transposed:
            _add_grad_W_h_T(X, i0, rows, delta_h_block, grad_W_h, tile_scratch, first)
        else:
            _add_grad_W_h(X, i0, rows, delta_h_block, grad_W_h, 0, m, tile_scratch, first)
    return chunk_cost


@kernel(linked=True, refcounted=False)
def _add_grad_W_h(X, i0, rows, delta_h_block, grad_W_h, p0, p1, scratch, fresh):
    """grad_W_h[p, j] += Σ_r X[i0 + r, p] · δ_h[r, j] for the inputs p0 ≤ p < p1.

    With ``fresh``, ``=`` instead of ``+=`` (the chunk's first block).

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
        delta_h_block[:rows],
        X[i0 : i0 + rows, p0:p1],
        0,
        rows,
        grad_W_h[p0:p1],
        ENGINE_BLOCK_I,
        ENGINE_BLOCK_J,
        p1 - p0,
        scratch,
        fresh,
    )


@kernel(linked=True, refcounted=False)
def _add_grad_W_h_T(X, i0, rows, delta_h_block, grad_W_h_T, scratch, fresh):
    """(Xᵀ δ_h)ᵀ[j, p] += Σ_r δ_h[r, j] · X[i0 + r, p], the (d, m) orientation.

    With ``fresh``, ``=`` instead of ``+=`` (the chunk's first block).

    The register-tiled kernel with A = the block's X (packed, its inputs
    the vectors) and D = δ_h read in place.  Each element gets the same
    chain of fused multiply-adds as in :func:`_add_grad_W_h`.  For d = 100,
    a row of the (m, d) orientation takes 7 float32 vectors (112 columns)
    while m = 784 inputs fill 49 exactly; the chunked step uses this
    orientation for that reason (measured, see docs/tuning.md) and pays
    one transposition per call.
    """
    tiles.accumulate(
        X[i0 : i0 + rows],
        delta_h_block[:rows, 0 : delta_h_block.shape[1]],
        0,
        rows,
        grad_W_h_T,
        ENGINE_BLOCK_I,
        GRAD_W_H_T_BLOCK_INPUTS,
        GRAD_W_H_T_BLOCK_HIDDEN,
        scratch,
        fresh,
    )


@parallel_kernel
def _backprop_blocks_parallel(
    X,
    Y,
    W_h,
    b_h,
    W_out,
    b_out,
    tiny,
    n_parts,
    block_rows,
    block_cols,
    replicate_bytes,
    workspace,
    correct,
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
    are shared, each part runs the tile engine in its own.  A non-empty
    ``correct`` (int64, one slot per part) gets each part's count of
    correctly classified examples.
    """
    n, m = X.shape
    d = W_h.shape[1]
    t = W_out.shape[1]
    w = VECTOR_BYTES // X.itemsize
    W_out_T = transposed(W_out)
    wpack_out = _pack_padded_into(W_out, workspace)
    W_h_cols = _padded_to_one_vector(W_h)
    width = W_h_cols.shape[1]
    pack_size = m * (width + w)  # as _packed_weights lays it out
    n_copies = n_parts if pack_size * X.itemsize <= replicate_bytes else 1
    start = wpack_out.shape[0]
    wpacks = matrix_view(workspace, start, n_copies, pack_size)
    scratch = _chunk_scratches(
        workspace, start + n_copies * pack_size, n_parts, n, m, d, t, block_rows
    )
    costs, g_W_h, g_b_h, g_W_out_T, g_b_out = _allocate_partials(1, m, d, t, X.dtype, False)
    grad_W_h = g_W_h[0]
    g_b_h[:] = 0
    g_W_out_T[:] = 0
    g_b_out[:] = 0
    A_h_block, delta_out_block, delta_h_block, Z_pad_block, cost_terms, tile_scratch = (
        _chunk_buffers(scratch[0], n, m, d, t, block_rows)
    )
    n_input_groups = (m + TILE_ROWS - 1) // TILE_ROWS
    for part in prange(n_parts):
        if part < n_copies:
            tiles.pack_panels(W_h_cols, 0, m, 0, width, w, wpacks[part])
        q0, q1 = _chunk_bounds(n_input_groups, n_parts, part)
        grad_W_h[q0 * TILE_ROWS : smaller(q1 * TILE_ROWS, m)] = 0
    total = 0.0
    for i0 in range(0, n, block_rows):
        rows = smaller(i0 + block_rows, n) - i0
        n_groups = (rows + TILE_ROWS - 1) // TILE_ROWS
        for part in prange(n_parts):
            g0, g1 = _chunk_bounds(n_groups, n_parts, part)
            r0 = g0 * TILE_ROWS
            r1 = smaller(g1 * TILE_ROWS, rows)
            if r1 > r0:
                _forward_and_deltas(
                    X,
                    Y,
                    i0,
                    r0,
                    r1,
                    b_h,
                    b_out,
                    W_out_T,
                    wpacks[part % n_copies],
                    wpack_out,
                    False,
                    tiny,
                    block_cols,
                    A_h_block,
                    delta_out_block,
                    delta_h_block,
                    Z_pad_block,
                    cost_terms,
                    correct,
                    part,
                )
        total += _add_small_gradients(
            rows,
            A_h_block,
            delta_out_block,
            delta_h_block,
            cost_terms,
            g_b_h[0],
            g_W_out_T[0],
            g_b_out[0],
            tile_scratch,
        )
        for part in prange(n_parts):
            q0, q1 = _chunk_bounds(n_input_groups, n_parts, part)
            p0 = q0 * TILE_ROWS
            p1 = smaller(q1 * TILE_ROWS, m)
            if p1 > p0:
                _add_grad_W_h(
                    X,
                    i0,
                    rows,
                    delta_h_block,
                    grad_W_h,
                    p0,
                    p1,
                    _chunk_buffers(scratch[part], n, m, d, t, block_rows)[5],
                    False,
                )
    costs[0] = total
    return _sum_chunks(costs, g_W_h, g_b_h, g_W_out_T, g_b_out, False)


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
    """Cost, Σ δ_h, A_hᵀ δ_out (back to (d, t)) and Σ δ_out over the chunks, in chunk order.

    One chunk's partials are returned as they are (A_hᵀ δ_out transposed):
    the sums below would add each to a zero, which changes no bit, since a
    partial that starts from +0 never holds −0.
    """
    n_chunks, t, d = grad_W_out_T.shape
    if n_chunks == 1:
        return costs[0], grad_b_h[0], transposed(grad_W_out_T[0]), grad_b_out[0]
    dtype = grad_W_out_T.dtype
    total_cost = 0.0
    total_b_h = zeros((d,), dtype)
    total_b_out = zeros((t,), dtype)
    for c in range(n_chunks):
        total_cost += costs[c]
        for j in range(d):
            total_b_h[j] += grad_b_h[c, j]
        for k in range(t):
            total_b_out[k] += grad_b_out[c, k]
    total_W_out_T = empty((t, d), dtype)
    _sum_rows_in_order(grad_W_out_T, total_W_out_T, 0, t)
    return total_cost, total_b_h, transposed(total_W_out_T), total_b_out


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
        total_W_h = empty((rows, cols), grad_W_h.dtype)
        _sum_rows_in_order(grad_W_h, total_W_h, 0, rows)
    cost, total_b_h, total_W_out, total_b_out = _sum_small_partials(
        costs, grad_b_h, grad_W_out_T, grad_b_out
    )
    return cost, total_W_h, total_b_h, total_W_out, total_b_out


@kernel
def _sum_transposed_partials(partials):
    """(m, d) total of (d, m) partials: out[p, j] = Σ_c partials[c, j, p], chunks in order.

    Each sum starts from chunk 0's value and adds the others in order, the
    bits of :func:`_sum_rows_in_order`.  All chunks but the last are added
    in place into chunk 0's partial, along its contiguous rows (vectorised;
    the partials are scratch: every caller's live in a workspace or were
    allocated for the call).  The last is added as the total is transposed,
    W × W blocks at a time in vector registers
    (:func:`fastbp._simd.transposed_sum_block`), the edges narrower than a
    block element by element.  One partial (only the breakdown's timing of
    the product passes one) is transposed as it is.
    """
    n_chunks, d, m = partials.shape
    total = partials[0]
    if n_chunks == 1:
        return transposed(total)
    for c in range(1, n_chunks - 1):
        for j in range(d):
            row = partials[c, j]
            dst = total[j]
            for p in range(m):
                dst[p] += row[p]
    last = partials[n_chunks - 1]
    out = empty((m, d), partials.dtype)
    w = VECTOR_BYTES // partials.itemsize
    d_blocks = d - d % w
    m_blocks = m - m % w
    for j0 in range(0, d_blocks, w):
        for p0 in range(0, m_blocks, w):
            transposed_sum_block(total, last, j0, p0, out, p0, j0)
        for p in range(m_blocks, m):
            for b in range(w):
                out[p, j0 + b] = total[j0 + b, p] + last[j0 + b, p]
    for j in range(d_blocks, d):
        for p in range(m):
            out[p, j] = total[j, p] + last[j, p]
    return out


@kernel(linked=True, arithmetic=True)
def _grad_W_h_transposed(n_chunks):
    """Whether the step accumulates Xᵀ δ_h as (d, m): with several chunks.

    One chunk's (m, d) needs no transposition; several chunks' (d, m)
    partials are summed and transposed once (:func:`_sum_chunks`), and
    faster to accumulate (docs/tuning.md).
    """
    return n_chunks > 1


def _backprop_chunks(
    X,
    Y,
    W_h,
    b_h,
    W_out,
    b_out,
    tiny,
    n_chunks,
    block_rows,
    block_cols,
    workspace,
    norms,
    max_grad_norm,
    correct,
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
    ``workspace`` (1-D, in the dtype, see :func:`fastbp._scratch._workspace`)
    holds several chunks' partials (:func:`_partials`), W_h's and W_out's
    panels (:func:`_padded_pack_size` each), then each chunk's scratch
    (:func:`_chunk_scratches`).  ``norms`` and ``max_grad_norm``: see
    :func:`_backprop_chunk` (empty and inf for the plain step).  A non-empty
    ``correct`` (int64, one slot per chunk) gets each chunk's count of
    correctly classified examples (empty: none counted).
    """
    n, m = X.shape
    d = W_h.shape[1]
    t = W_out.shape[1]
    W_out_T = transposed(W_out)
    h_transposed = _grad_W_h_transposed(n_chunks)
    # The workspace: the partials of several chunks, then W_h's and W_out's panels.
    partials_size = n_chunks * (m * d + d + t * d + t) if n_chunks > 1 else 0
    costs, g_W_h, g_b_h, g_W_out_T, g_b_out = _partials(workspace, n_chunks, m, d, t, h_transposed)
    w = VECTOR_BYTES // X.itemsize
    pack_h = _padded_pack_size(m, d, w)
    pack_out = _padded_pack_size(d, t, w)
    weights_in_place = n < WEIGHTS_IN_PLACE_MAX_EXAMPLES
    wpack = _weights_for_tiles(W_h, workspace[partials_size:], weights_in_place)
    wpack_out = _weights_for_tiles(W_out, workspace[partials_size + pack_h :], weights_in_place)
    scratch = _chunk_scratches(
        workspace,
        partials_size + pack_h + pack_out,
        n_chunks,
        n,
        m,
        d,
        t,
        block_rows,
    )
    for c in prange(n_chunks):
        i_start, i_stop = _chunk_bounds(n, n_chunks, c)
        costs[c] = _backprop_chunk(
            X,
            Y,
            b_h,
            b_out,
            W_out_T,
            wpack,
            wpack_out,
            weights_in_place,
            i_start,
            i_stop,
            tiny,
            g_W_h[c],
            g_b_h[c],
            g_W_out_T[c],
            g_b_out[c],
            block_rows,
            block_cols,
            h_transposed,
            scratch[c],
            norms,
            max_grad_norm,
            correct,
            c,
        )
    return _sum_chunks(costs, g_W_h, g_b_h, g_W_out_T, g_b_out, h_transposed)


_backprop_serial, _backprop_parallel = serial_and_parallel(_backprop_chunks)


# The largest float32, above which λ rounds to inf in float32 (with NumPy's warning).
_FLOAT32_MAX = float(np.finfo(np.float32).max)

#: :func:`_plain_step`'s answers: the step is done; it would be, given a
#: larger workspace; it is not the plain step (the caller's validated path decides).
PLAIN_STEP_DONE, PLAIN_STEP_NEEDS_WORKSPACE, PLAIN_STEP_DECLINED = 0, 1, 2


@kernel
def _plain_step(
    X, Y, W_h, b_h, W_out, b_out, l2, tiny, workspace, correct, grad_W_h, grad_b_h, grad_W_out,
    grad_b_out, decided,
):  # fmt: skip
    """:func:`fastbp.backprop`'s minibatch step in one call: (answer, cost); gradients written.

    The four gradients go into ``grad_W_h`` (m, d), ``grad_b_h`` (d,),
    ``grad_W_out`` (d, t) and ``grad_b_out`` (t,), C-contiguous arrays of
    X's dtype that the caller allocates (NumPy allocates them for less
    than it costs to return new arrays from compiled code); the float64
    cost is returned.  The step is :func:`_backprop_serial` with one chunk,
    the same bits, but with less to compile before a fresh process's first
    answer: no chunk sums and no private branch (``norms`` is None in
    :func:`_backprop_chunk`), and the chunk's partials are the result.
    With λ ≠ 0, λW is added to the weight gradients here
    (:func:`_add_l2_gradients`, λ rounded to X's dtype) and (λ/2)·Σ W² to
    the float64 cost, as :func:`fastbp._backprop._with_penalty` adds them,
    so the bits of every other path.  ``workspace`` holds W_h's and W_out's
    panels, then the chunk's scratch, as :func:`_backprop_chunks` lays out
    one chunk's.

    With ``decided``, the caller has validated the call and chosen one
    chunk on the calling thread, and sized ``workspace``
    (:func:`fastbp._scratch._workspace`); a non-empty ``correct`` then gets
    the count of correctly classified examples (see :func:`_backprop_chunk`;
    with λ = 0 this is the data terms of :func:`fastbp._backprop._data_terms`).
    Every call of the one-chunk step comes here, so it compiles once.  Otherwise
    (``correct`` empty) the caller has checked only the arrays' types, dimensions
    and sizes (:func:`fastbp._core._ready`) and that λ is a Python float,
    and this kernel runs the step only where :func:`fastbp.backprop` with
    default options would run it without an error or a warning: λ finite
    and ≥ 0 (and below float32's largest value for float32 data), every
    target in [0, 1] or NaN, and fewer examples than two chunks' minimum
    (one chunk).  The caller has also decided that the step runs on one
    thread: fewer multiply-adds in X W_h than
    :data:`fastbp._tuning.SHARED_STEP_MIN_MULTIPLY_ADDS`, or one Numba
    thread (:func:`numba.get_num_threads`, asked in Python: in a kernel it
    would keep the kernel out of the cache).  Then ``workspace`` (the
    thread's kept one, or empty) must be large enough, or the answer is
    :data:`PLAIN_STEP_NEEDS_WORKSPACE`.  Any other call gets
    :data:`PLAIN_STEP_DECLINED`, and the caller's validated path raises the
    errors and warnings.  Declined calls leave the gradient
    arrays as they were.
    """
    n, m = X.shape
    d, t = W_out.shape
    answer = PLAIN_STEP_DONE
    if not decided:
        if not (
            0.0 <= l2 < np.inf
            and not (X.itemsize == 4 and l2 > _FLOAT32_MAX)
            and n < 2 * STEP_MIN_CHUNK_EXAMPLES
            and _all_in_unit_interval(vector_view(Y))
        ):
            answer = PLAIN_STEP_DECLINED
        else:
            # What the step below lays out: both layers' panels, then one chunk's
            # scratch from a 64-byte line on (fastbp._scratch._workspace_size with
            # copies=1; tests/test_backprop.py holds the two equal).
            w = VECTOR_BYTES // X.itemsize
            needed = (
                _padded_pack_size(m, d, w)
                + _padded_pack_size(d, t, w)
                + _chunk_scratch_size(STEP_BLOCK_EXAMPLES, m, d, t, STEP_BLOCK_EXAMPLES, X.itemsize)
                + 64 // X.itemsize
            )
            if workspace.shape[0] < needed:
                answer = PLAIN_STEP_NEEDS_WORKSPACE
    if answer != PLAIN_STEP_DONE:
        return answer, 0.0
    # _backprop_chunks' one-chunk case without the chunk sums: the chunk's partials are
    # the result.  The workspace holds W_h's and W_out's panels, then the chunk's scratch.
    W_out_T = transposed(W_out)
    grad_W_out_T = empty((t, d), X.dtype)
    w = VECTOR_BYTES // X.itemsize
    pack_h = _padded_pack_size(m, d, w)
    weights_in_place = n < WEIGHTS_IN_PLACE_MAX_EXAMPLES
    wpack = _weights_for_tiles(W_h, workspace, weights_in_place)
    wpack_out = _weights_for_tiles(W_out, workspace[pack_h:], weights_in_place)
    scratch = _chunk_scratches(
        workspace, pack_h + _padded_pack_size(d, t, w), 1, n, m, d, t, STEP_BLOCK_EXAMPLES
    )
    cost = _backprop_chunk(
        X, Y, b_h, b_out, W_out_T, wpack, wpack_out, weights_in_place, 0, n, tiny, grad_W_h,
        grad_b_h, grad_W_out_T, grad_b_out, STEP_BLOCK_EXAMPLES, DELTA_H_BLOCK_HIDDEN, False,
        scratch[0], None, np.inf, correct, 0,
    )  # fmt: skip
    for j in range(d):
        for k in range(t):
            grad_W_out[j, k] = grad_W_out_T[k, j]
    if l2 != 0.0:
        # λ rounded to X's dtype, as _with_penalty's grad += l2 * W rounds it.
        squares = _add_l2_gradients(grad_W_h, grad_W_out, W_h, W_out, X.dtype.type(l2))
        cost += 0.5 * l2 * squares
    return answer, cost


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
    W_out_T = transposed(W_out)
    w = VECTOR_BYTES // X.itemsize
    pack_h = _padded_pack_size(m, d, w)
    weights_in_place = n < WEIGHTS_IN_PLACE_MAX_EXAMPLES
    wpack = _weights_for_tiles(W_h, workspace, weights_in_place)
    wpack_out = _weights_for_tiles(W_out, workspace[pack_h:], weights_in_place)
    scratch = _chunk_scratches(
        workspace, pack_h + _padded_pack_size(d, t, w), n_chunks, n, m, d, t, block_rows
    )
    no_counts = empty((0,), np.int64)  # allocated, not a global: globals compile read-only
    for c in prange(n_chunks):
        i_start, i_stop = _chunk_bounds(n, n_chunks, c)
        A_h_block, delta_out_block, delta_h_block, Z_pad_block, cost_terms, _ = _chunk_buffers(
            scratch[c], n, m, d, t, block_rows
        )
        for i0 in range(i_start, i_stop, block_rows):
            rows = smaller(i0 + block_rows, i_stop) - i0
            _forward_and_deltas(
                X,
                Y,
                i0,
                0,
                rows,
                b_h,
                b_out,
                W_out_T,
                wpack,
                wpack_out,
                weights_in_place,
                tiny,
                block_cols,
                A_h_block,
                delta_out_block,
                delta_h_block,
                Z_pad_block,
                cost_terms,
                no_counts,
                0,
            )
            _example_norms(X, i0, rows, A_h_block, delta_out_block, delta_h_block, norms)


_example_norms_serial, _example_norms_parallel = serial_and_parallel(_example_norms_chunks)


@kernel
def _sum_of_squares(W):
    """Σ W² in float64: each column's squares summed down the rows, then the columns in order.

    Column by column, so the row loop runs on a vector of column sums (a
    fixed order, the same on every machine) and the epoch kernel can take
    the same sum from the packed panels (:func:`_sum_of_squares_packed`).
    :func:`_add_l2_gradient` without a gradient.
    """
    return _add_l2_gradient(None, W, W.dtype.type(0.0))


@kernel
def _add_l2_gradient(grad, W, l2):
    """Grad += λ W in place (unless ``grad`` is None), in the pass that takes Σ W²; returns Σ W².

    Each element is g + (λ·w), the product rounded and then the sum, as
    NumPy's ``grad += l2 * W`` (no fused multiply-add: this kernel is
    compiled without ``contract``).  The squares go into float64 column
    sums row by row, then the columns are added in order: the sum of
    :func:`_sum_of_squares`.  Both arrays are C-contiguous; ``grad`` None
    is pruned while typing.
    """
    # One pass for both, so W is read once (docs/tuning.md).
    rows, cols = W.shape
    column_sums = zeros((cols,), np.float64)
    for i in range(rows):
        for j in range(cols):
            v = W[i, j]
            if grad is not None:
                grad[i, j] = grad[i, j] + l2 * v
            square = np.float64(v)
            column_sums[j] += square * square
    total = 0.0
    for j in range(cols):
        total += column_sums[j]
    return total


@kernel
def _add_l2_gradients(grad_W_h, grad_W_out, W_h, W_out, l2):
    """Grad += λ W for both weight matrices, in place; returns Σ W_h² + Σ W_out².

    :func:`_add_l2_gradient` on each, W_h first: the bits of NumPy's
    ``grad += l2 * W`` and of :func:`_sum_of_squares` (W_h) +
    :func:`_sum_of_squares` (W_out).  All four arrays are C-contiguous.
    """
    return _add_l2_gradient(grad_W_h, W_h, l2) + _add_l2_gradient(grad_W_out, W_out, l2)
