"""Packed weights: their panel layout, the packing, and the forward product on them.

The fused step copies W_h and W_out (zero-padded to one vector when
narrower) into the register tiles' panels (:func:`fastbp._tiles.panel_layout`)
once per call, or once per epoch in :mod:`fastbp._kernels_epoch`, and runs
both layers' products on them: :func:`_hidden_forward_packed` reads each
block's inputs in place, every panel's tiles over all its rows in one
call.  No checks happen here.
"""

from . import _tiles as tiles
from ._arrays import empty, matrix_view, vector_view, zeros
from ._jit import kernel
from ._kernels_hidden import _copy_columns
from ._simd import VECTOR_BYTES, larger
from ._tuning import FORWARD_PASS_MAX_INPUTS


@kernel(refcounted=False)
def _hidden_forward_packed(X, i0, rows, wpack, m, d, Z, fresh, in_place):
    """Z[r, j] += Σ_p X[i0 + r, p] · W_h[p, j] for r < rows, W_h (m, d) given as panels.

    With ``fresh``, Z[r, j] = Σ …: the first pass writes its tiles whatever Z
    holds (:func:`fastbp._simd.tile_fma`), the bits of adding to zeros.
    With ``in_place``, ``wpack`` is W_h's own elements in order (m·d, d of
    at least one vector) and the tiles read its rows in place: no packing.

    ``wpack`` holds W_h (m, d) in the panels of :func:`_packed_weights`, packed
    once per call.  The m inputs go in equal passes of at most
    ``FORWARD_PASS_MAX_INPUTS``; in a pass, each W_h panel runs over all
    the rows in one call of :func:`fastbp._tiles.tiles_for_panel` (tiles of
    at most six rows, the accumulators in registers), which reads the rows
    of X in place as the strided D = X[rows].T (see
    :func:`fastbp._simd.tile_fma`); the rows are not copied transposed first
    (measured slower, see docs/tuning.md).  One call per panel, not one
    per six-row group and panel: at a minibatch's size the calls weigh on
    the product (docs/tuning.md).
    Each element of Z gets one fused multiply-add per input in order of p,
    whatever the pass depth or the tiles' heights: the bits of
    :func:`_hidden_product`.  The output layer's A_h W_out runs on it too
    (X = A_h, W_h = W_out).
    """
    w = VECTOR_BYTES // X.itemsize
    n_panels = tiles.panel_count(d, w)
    n_passes = (m + FORWARD_PASS_MAX_INPUTS - 1) // FORWARD_PASS_MAX_INPUTS
    if fresh and n_passes == 0:  # no inputs: the empty sums are zero
        for r in range(rows):
            for j in range(d):
                Z[r, j] = 0
    for s in range(n_passes):
        p0 = (m * s) // n_passes
        p1 = (m * (s + 1)) // n_passes
        depth = p1 - p0
        D = X[i0 : i0 + rows, p0:p1].T  # read in place, by rows
        offset = 0
        for panel in range(n_panels):
            nvec, first_column, skip = tiles.panel_layout(d, w, panel)
            pw = nvec * w
            # Selects, not a branch: one copy of the loop for both layouts.
            P = matrix_view(
                wpack,
                p0 * d if in_place else offset + p0 * pw,
                depth,
                d if in_place else pw,
            )
            a_col = first_column if in_place else 0
            tiles.tiles_for_panel(
                P, D, depth, nvec, first_column, skip, 0, rows, Z, fresh and s == 0, a_col
            )
            offset += m * pw


@kernel
def _packed_weights(W):
    """W (K, N) in panels for :func:`_hidden_forward_packed`, or an empty array when N < W."""
    rows, cols = W.shape
    w = VECTOR_BYTES // W.itemsize
    if cols < w:
        return empty((0,), W.dtype)
    wpack = empty((rows * (cols + w),), W.dtype)
    tiles.pack_panels(W, 0, rows, 0, cols, w, wpack)
    return wpack


@kernel
def _padded_to_one_vector(W):
    """W itself, or a copy with zero columns added up to one vector when it is narrower."""
    rows, cols = W.shape
    w = VECTOR_BYTES // W.itemsize
    if cols >= w:
        return W
    padded = zeros((rows, w), W.dtype)
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


@kernel(linked=True, arithmetic=True)
def _padded_pack_size(rows, cols, w):
    """Elements of :func:`_packed_padded_weights` for (rows, cols) W: rows · (max(cols, w) + w)."""
    return rows * (larger(cols, w) + w)


@kernel
def _weights_for_tiles(W, out, in_place):
    """W (K, N) as :func:`_hidden_forward_packed` reads it: in place, or padded into ``out``.

    With ``in_place`` and W at least one vector wide, W's own elements in
    order (a view, nothing copied): the tiles read W's rows where they are,
    faster than packing them first for a small step (docs/tuning.md).
    Otherwise W is packed into the front of ``out``, padded with zero
    columns to one vector when narrower (:func:`_pack_padded_into`).
    """
    if in_place and W.shape[1] >= VECTOR_BYTES // W.itemsize:
        return vector_view(W)
    return _pack_padded_into(W, out)


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
