"""Whole epochs in one compiled call: minibatch SGD and DP-SGD on weights kept packed.

The weights are packed once per epoch (:func:`_epoch_weights`), updated in
their panels after every step (:func:`_take_step`) and written back once at
the end (:func:`_store_epoch_weights`); each step is the fused step's chunk
loop (:mod:`fastbp._kernels_step`) on the gathered minibatch, with the bits
of :func:`fastbp.backprop`.  No checks happen here: :mod:`fastbp._sgd` and
:mod:`fastbp._private` validate first.
"""

import numpy as np

from . import _tiles as tiles
from ._arrays import empty, transposed, zeros
from ._jit import kernel
from ._kernels import _chunk_bounds
from ._kernels_packed import _packed_padded_weights
from ._kernels_step import _backprop_chunk, _sum_chunks
from ._scratch import _allocate_partials, _chunk_scratch_size, _chunk_scratches
from ._simd import VECTOR_BYTES, larger, smaller


@kernel(refcounted=False)
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
        stop = np.uint64(larger(smaller(pw, cols - first), 0))
        for p in range(np.uint64(rows)):
            # Unsigned indices into the arrays themselves: no per-row views
            # to count references to, no negative-index fix-up, and the loops vectorise.
            base = np.uint64(offset) + p * np.uint64(pw)
            column = np.uint64(first)
            if with_l2:
                for c in range(stop):
                    v = wpack[base + c]
                    wpack[base + c] = v - eta * (grad[p, column + c] + l2 * v)
            else:
                for c in range(stop):
                    wpack[base + c] = wpack[base + c] - eta * grad[p, column + c]
        offset += rows * pw


@kernel(refcounted=False)
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
        stop = smaller(pw, cols - first)
        if stop > skip:
            count = np.uint64(stop - skip)
            column = np.uint64(first + skip)
            row_length = np.uint64(pw)
            p = np.uint64(0)
            # Four rows per pass: each column's sum is loaded and stored once
            # per four squares, which are still added in row order.
            while p + np.uint64(4) <= np.uint64(rows):
                base = np.uint64(offset + skip) + p * row_length
                for c in range(count):
                    v0 = np.float64(wpack[base + c])
                    v1 = np.float64(wpack[base + row_length + c])
                    v2 = np.float64(wpack[base + np.uint64(2) * row_length + c])
                    v3 = np.float64(wpack[base + np.uint64(3) * row_length + c])
                    column_sums[column + c] = (
                        ((column_sums[column + c] + v0 * v0) + v1 * v1) + v2 * v2
                    ) + v3 * v3
                p += np.uint64(4)
            while p < np.uint64(rows):
                base = np.uint64(offset + skip) + p * row_length
                for c in range(count):
                    v = np.float64(wpack[base + c])
                    column_sums[column + c] += v * v
                p += np.uint64(1)
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
        stop = smaller(pw, cols - first)
        if stop > skip:
            for p in range(rows):
                values = wpack[offset + p * pw + skip : offset + p * pw + stop]
                target = W[p, first + skip : first + stop]
                for c in range(stop - skip):
                    target[c] = values[c]
        offset += rows * pw


@kernel
def _pack_transposed(W_T, wpack, width):
    """W's real columns into its panels (:func:`fastbp._tiles.panel_layout`), from W_T = Wᵀ.

    W (rows, cols) is given as its transpose W_T (cols, rows); ``wpack``
    holds W in the panels of a ``width``-column block (width ≥ cols, the
    columns past cols being padding, left as they are).  Each panel's
    columns are written for every row, an overlapping last panel's too, as
    :func:`fastbp._tiles.pack_panels` writes them.
    """
    w = VECTOR_BYTES // wpack.itemsize
    cols, rows = W_T.shape
    offset = 0
    for panel in range(tiles.panel_count(width, w)):
        nvec, first, skip = tiles.panel_layout(width, w, panel)
        pw = nvec * w
        stop = smaller(pw, cols - first)
        for c in range(stop):
            for p in range(rows):
                wpack[offset + p * pw + c] = W_T[first + c, p]
        offset += rows * pw


@kernel
def _epoch_weights(W_h, W_out):
    """An epoch's working copies: W_h's and W_out's panels, W_outᵀ, and a column-sum buffer."""
    d, t = W_out.shape
    return (
        _packed_padded_weights(W_h),
        _packed_padded_weights(W_out),
        transposed(W_out),
        empty((larger(d, t),), np.float64),
    )


@kernel
def _store_epoch_weights(wpack, wpack_out, W_h, W_out):
    """Write an epoch's panels back into W_h and W_out."""
    w = VECTOR_BYTES // wpack.itemsize
    d, t = W_out.shape
    _unpack_weights(wpack, W_h.shape[0], larger(d, w), W_h)
    _unpack_weights(wpack_out, d, larger(t, w), W_out)


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


@kernel(refcounted=False)
def _take_step(
    wpack,
    wpack_out,
    W_out_T,
    b_h,
    b_out,
    step_cost,
    grad_W_h,
    grad_b_h,
    grad_W_out_T,
    grad_b_out,
    eta,
    l2,
    with_l2,
    l2_float64,
    with_penalty,
    column_sums,
):
    """One update W ← W − η (∇ + λW), b ← b − η ∇b on the packed weights; returns the step's cost.

    The cost is ``step_cost`` (the data's, float64) plus, with ``with_penalty``,
    (λ/2) Σ W² at the weights before the update, as :func:`fastbp.backprop`
    adds it (two passes over the weights: left out where only the data's
    cost is wanted).  W_h is updated in its panels; W_out as W_outᵀ (t, d),
    from the step's gradient in that layout (``grad_W_out_T``, C-contiguous),
    and then copied into its panels; the biases in place.  Every update is
    NumPy's ``W -= eta * (grad + l2 * W)`` to the bit (no fused operations).
    """
    m, d = grad_W_h.shape
    t = grad_W_out_T.shape[0]
    w = VECTOR_BYTES // wpack.itemsize
    width_h = larger(d, w)
    width_out = larger(t, w)
    if with_penalty:
        step_cost += (
            0.5
            * l2_float64
            * (
                _sum_of_squares_packed(wpack, m, width_h, d, column_sums)
                + _sum_of_squares_packed(wpack_out, d, width_out, t, column_sums)
            )
        )
    _sgd_update_packed(wpack, m, width_h, d, grad_W_h, eta, l2, with_l2)
    # W_out through W_outᵀ: its rows and the step's (t, d) gradient are read in order
    # (the loop vectorises), and W_out's panels are a copy of the result.  Updating
    # the panels from the gradient transposed took longer (docs/tuning.md).
    for k in range(np.uint64(t)):
        for j in range(np.uint64(d)):
            v = W_out_T[k, j]
            if with_l2:
                W_out_T[k, j] = v - eta * (grad_W_out_T[k, j] + l2 * v)
            else:
                W_out_T[k, j] = v - eta * grad_W_out_T[k, j]
    _pack_transposed(W_out_T, wpack_out, width_out)
    for j in range(d):
        b_h[j] = b_h[j] - eta * grad_b_h[j]
    for k in range(t):
        b_out[k] = b_out[k] - eta * grad_b_out[k]
    return step_cost


@kernel
def _sgd_epoch(
    X,
    Y,
    order,
    minibatch_size,
    W_h,
    b_h,
    W_out,
    b_out,
    eta,
    l2,
    with_l2,
    l2_float64,
    step_penalties,
    tiny,
    n_chunks,
    block_rows,
    block_cols,
    correct,
):
    """One epoch of minibatch steps, the weights updated in place; returns two sums of costs.

    Step s takes the examples ``order[s·B : (s+1)·B]`` (B =
    ``minibatch_size``, full minibatches only), gathers their rows of X and
    Y into one buffer, and runs the chunk loop of :func:`_backprop_serial`
    on it with ``n_chunks`` chunks: the cost and the four gradients with
    the bits of :func:`fastbp.backprop`.  Then W ← W − η (∇ + λW) and
    b ← b − η ∇b, as :meth:`fastbp.MLP` does after each call.  ``eta`` and
    ``l2`` are in the weights' dtype, for the updates; ``l2_float64`` is λ
    for the penalty, which is added to each step's float64 cost as
    :func:`fastbp.backprop` adds it when ``step_penalties`` (a caller that
    only wants the data's cost leaves out two passes over the weights a step).

    W_h and W_out stay in the products' panel layout for the whole epoch
    (W_out also as W_outᵀ for δ_h): packed once, updated in place there,
    written back to ``W_h`` and ``W_out`` once at the end.  The biases are
    updated in place at every step.

    Returns (Σ of the step costs, each with the penalty at the step's
    weights when ``with_l2`` and ``step_penalties``; Σ of the steps' data
    costs alone), both summed in step order in float64.  A non-empty ``correct`` (int64, one
    slot per chunk) gets the count of examples each chunk's steps
    classified correctly, at the weights of their step
    (:func:`fastbp._kernels_step._forward_and_deltas`).
    """
    m = X.shape[1]
    d = W_h.shape[1]
    t = W_out.shape[1]
    wpack, wpack_out, W_out_T, column_sums = _epoch_weights(W_h, W_out)
    X_batch = empty((minibatch_size, m), X.dtype)
    Y_batch = empty((minibatch_size, t), Y.dtype)
    h_transposed = n_chunks > 1
    costs, g_W_h, g_b_h, g_W_out_T, g_b_out = _allocate_partials(
        n_chunks, m, d, t, X.dtype, h_transposed
    )
    scratch_size = _chunk_scratch_size(minibatch_size, m, d, t, block_rows, X.itemsize)
    scratch = empty((n_chunks * scratch_size + 64 // X.itemsize,), X.dtype)
    scratch = _chunk_scratches(scratch, 0, n_chunks, minibatch_size, m, d, t, block_rows)
    epoch_cost = 0.0
    data_cost = 0.0
    for s in range(order.shape[0] // minibatch_size):
        _gather_rows(X, Y, order, s * minibatch_size, minibatch_size, X_batch, Y_batch)
        for c in range(n_chunks):
            i_start, i_stop = _chunk_bounds(minibatch_size, n_chunks, c)
            costs[c] = _backprop_chunk(
                X_batch,
                Y_batch,
                b_h,
                b_out,
                W_out_T,
                wpack,
                wpack_out,
                False,  # the epoch's own panels
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
                None,
                np.inf,
                correct,
                c,
            )
        step_cost, grad_W_h, grad_b_h, grad_W_out, grad_b_out = _sum_chunks(
            costs, g_W_h, g_b_h, g_W_out_T, g_b_out, h_transposed
        )
        data_cost += step_cost
        epoch_cost += _take_step(
            wpack,
            wpack_out,
            W_out_T,
            b_h,
            b_out,
            step_cost,
            grad_W_h,
            grad_b_h,
            transposed(grad_W_out),  # the chunk sums give (d, t); a large step's small part
            grad_b_out,
            eta,
            l2,
            with_l2,
            l2_float64,
            with_l2 and step_penalties,
            column_sums,
        )
    _store_epoch_weights(wpack, wpack_out, W_h, W_out)
    return epoch_cost, data_cost


@kernel
def _sgd_epoch_one_chunk(
    X,
    Y,
    order,
    minibatch_size,
    W_h,
    b_h,
    W_out,
    b_out,
    eta,
    l2,
    with_l2,
    l2_float64,
    step_penalties,
    tiny,
    block_rows,
    block_cols,
    correct,
):
    """:func:`_sgd_epoch` with one chunk per step: its bits, and less to compile.

    The epoch of every minibatch under 256 examples (one chunk in
    :func:`fastbp.default_backprop_chunks`).  Its tree holds no chunk sums
    and no private branch: each step is :func:`_backprop_chunk` on the
    gathered minibatch, whose gradients are the step's, (A_hᵀ δ_out)ᵀ kept
    in the (t, d) layout :func:`_take_step` reads.  ``correct`` needs one
    slot.  Arguments and results as :func:`_sgd_epoch`'s.
    """
    m = X.shape[1]
    d = W_h.shape[1]
    t = W_out.shape[1]
    wpack, wpack_out, W_out_T, column_sums = _epoch_weights(W_h, W_out)
    X_batch = empty((minibatch_size, m), X.dtype)
    Y_batch = empty((minibatch_size, t), Y.dtype)
    grad_W_h = empty((m, d), X.dtype)
    grad_b_h = empty((d,), X.dtype)
    grad_W_out_T = empty((t, d), X.dtype)
    grad_b_out = empty((t,), X.dtype)
    scratch_size = _chunk_scratch_size(minibatch_size, m, d, t, block_rows, X.itemsize)
    workspace = empty((scratch_size + 64 // X.itemsize,), X.dtype)
    scratch = _chunk_scratches(workspace, 0, 1, minibatch_size, m, d, t, block_rows)[0]
    epoch_cost = 0.0
    data_cost = 0.0
    for s in range(order.shape[0] // minibatch_size):
        _gather_rows(X, Y, order, s * minibatch_size, minibatch_size, X_batch, Y_batch)
        step_cost = _backprop_chunk(
            X_batch,
            Y_batch,
            b_h,
            b_out,
            W_out_T,
            wpack,
            wpack_out,
            False,  # the epoch's own panels
            0,
            minibatch_size,
            tiny,
            grad_W_h,
            grad_b_h,
            grad_W_out_T,
            grad_b_out,
            block_rows,
            block_cols,
            False,
            scratch,
            None,
            np.inf,
            correct,
            0,
        )
        data_cost += step_cost
        epoch_cost += _take_step(
            wpack,
            wpack_out,
            W_out_T,
            b_h,
            b_out,
            step_cost,
            grad_W_h,
            grad_b_h,
            grad_W_out_T,
            grad_b_out,
            eta,
            l2,
            with_l2,
            l2_float64,
            with_l2 and step_penalties,
            column_sums,
        )
    _store_epoch_weights(wpack, wpack_out, W_h, W_out)
    return epoch_cost, data_cost


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
    X,
    Y,
    indices,
    starts,
    chunk_counts,
    noise,
    W_h,
    b_h,
    W_out,
    b_out,
    eta,
    l2,
    with_l2,
    l2_float64,
    tiny,
    max_grad_norm,
    scale,
    max_batch,
    max_chunks,
    block_rows,
    block_cols,
    batch_sizes,
    correct,
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
    of :func:`_take_step`.  ``batch_sizes[s]`` gets each step's size.  A
    non-empty ``correct`` (int64, at least ``max_chunks`` slots) gets the
    count of examples the steps classified correctly, as in :func:`_sgd_epoch`.
    """
    m = X.shape[1]
    d = W_h.shape[1]
    t = W_out.shape[1]
    wpack, wpack_out, W_out_T, column_sums = _epoch_weights(W_h, W_out)
    rows = larger(1, max_batch)
    X_batch = empty((rows, m), X.dtype)
    Y_batch = empty((rows, t), Y.dtype)
    norms = empty((rows,), np.float64)
    one = _allocate_partials(1, m, d, t, X.dtype, False)
    several = _allocate_partials(larger(2, max_chunks), m, d, t, X.dtype, True)
    scratch_size = _chunk_scratch_size(rows, m, d, t, block_rows, X.itemsize)
    scratch = empty((larger(1, max_chunks) * scratch_size + 64 // X.itemsize,), X.dtype)
    scratch = _chunk_scratches(scratch, 0, larger(1, max_chunks), rows, m, d, t, block_rows)
    scale = X.dtype.type(scale)
    zero_noise = zeros((1,), np.float64)
    epoch_cost = 0.0
    for s in range(starts.shape[0] - 1):
        batch = starts[s + 1] - starts[s]
        batch_sizes[s] = batch
        _gather_rows(X, Y, indices, starts[s], batch, X_batch, Y_batch)
        n_chunks = chunk_counts[s]
        h_transposed = n_chunks > 1
        costs, g_W_h, g_b_h, g_W_out_T, g_b_out = several if h_transposed else one
        for c in range(n_chunks):
            i_start, i_stop = _chunk_bounds(batch, n_chunks, c)
            costs[c] = _backprop_chunk(
                X_batch[:batch],
                Y_batch[:batch],
                b_h,
                b_out,
                W_out_T,
                wpack,
                wpack_out,
                False,  # the epoch's own panels
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
                norms[:batch],
                max_grad_norm,
                correct,
                c,
            )
        step_cost, grad_W_h, grad_b_h, grad_W_out, grad_b_out = _sum_chunks(
            costs[:n_chunks],
            g_W_h[:n_chunks],
            g_b_h[:n_chunks],
            g_W_out_T[:n_chunks],
            g_b_out[:n_chunks],
            h_transposed,
        )
        with_noise = noise.shape[1] > 0
        step_noise = noise[s] if with_noise else zero_noise
        offset = _add_noise_and_scale_2d(grad_W_h, step_noise, 0, with_noise, scale)
        offset = _add_noise_and_scale_1d(grad_b_h, step_noise, offset, with_noise, scale)
        offset = _add_noise_and_scale_2d(grad_W_out, step_noise, offset, with_noise, scale)
        _add_noise_and_scale_1d(grad_b_out, step_noise, offset, with_noise, scale)
        epoch_cost += _take_step(
            wpack,
            wpack_out,
            W_out_T,
            b_h,
            b_out,
            step_cost,
            grad_W_h,
            grad_b_h,
            transposed(grad_W_out),
            grad_b_out,
            eta,
            l2,
            with_l2,
            l2_float64,
            with_l2,
            column_sums,
        )
    _store_epoch_weights(wpack, wpack_out, W_h, W_out)
    return epoch_cost
