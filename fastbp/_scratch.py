"""The layout of the fused step's scratch: block buffers, tile scratch and chunk partials.

One definition of where each buffer lives in a chunk's scratch and in a
step's workspace, used by the kernels (:mod:`fastbp._kernels_step`,
:mod:`fastbp._kernels_epoch`) and by the Python side that allocates the
workspace (:func:`_workspace`, kept per Python thread), so the two cannot
disagree on a size.
No checks happen here.
"""

import functools
import threading

import numpy as np

from . import _tiles as tiles
from ._arrays import empty, float64_matrix_view, matrix_view, zeros
from ._jit import kernel
from ._simd import VECTOR_BYTES, larger, smaller
from ._tuning import (
    ENGINE_BLOCK_I,
    ENGINE_BLOCK_J,
    ENGINE_BLOCK_K,
    GRAD_W_H_T_BLOCK_HIDDEN,
    GRAD_W_H_T_BLOCK_INPUTS,
    STEP_BLOCK_EXAMPLES,
    WORKSPACE_MAX_KEPT_BYTES,
)


@kernel(linked=True, arithmetic=True)
def _tile_scratch_size(rows, m, d, t, w):
    """Elements of the tile engine's scratch for the step's products on ``rows`` examples.

    The largest of (A_hᵀ δ_out)ᵀ (:func:`_add_small_gradients`), Xᵀ δ_h as
    (d, m) (:func:`_add_grad_W_h_T`) and as (m, d) (:func:`_add_grad_W_h`).
    """
    return larger(
        larger(
            tiles.scratch_size(rows, d, t, ENGINE_BLOCK_I, ENGINE_BLOCK_J, ENGINE_BLOCK_K, w),
            tiles.scratch_size(
                rows, m, d, ENGINE_BLOCK_I, GRAD_W_H_T_BLOCK_INPUTS, GRAD_W_H_T_BLOCK_HIDDEN, w
            ),
        ),
        tiles.scratch_size(rows, d, m, ENGINE_BLOCK_I, ENGINE_BLOCK_J, m, w),
    )


@kernel(linked=True, arithmetic=True)
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
    rows = larger(1, smaller(block_rows, n))
    sizes = (
        rows * d,
        rows * t,
        rows * d,
        rows * w if smaller(d, t) < w else 0,
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


@kernel(linked=True, arithmetic=True)
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
        matrix_view(scratch, 0, rows, d),
        matrix_view(scratch, e0, rows, t),
        matrix_view(scratch, e1, rows, d),
        matrix_view(scratch, e2, rows if smaller(d, t) < w else 0, w),
        float64_matrix_view(scratch, e3, rows, t),
        scratch[e4:e5],
    )


@kernel(linked=True)
def _chunk_scratches(workspace, start, n_scratches, n, m, d, t, block_rows):
    """``n_scratches`` chunk scratches (rows of the result) in ``workspace`` from ``start`` on.

    The first starts at the first 64-byte line at or after ``start``, so a
    workspace needs :func:`_chunk_scratch_size` · n_scratches + 64 bytes'
    worth of elements beyond ``start``.
    """
    line = 64 // workspace.itemsize
    first = (start + line - 1) // line * line
    stride = _chunk_scratch_size(n, m, d, t, block_rows, workspace.itemsize)
    return matrix_view(workspace, first, n_scratches, stride)


@kernel
def _partials(workspace, n_chunks, m, d, t, transposed):
    """Per-chunk partials (as :func:`_allocate_partials`), in ``workspace`` when there are several.

    One chunk's partials are the result the caller gets, so they are
    allocated; several chunks' are summed into new arrays and then dead, so
    they live in the front of ``workspace`` (kept between calls by the
    caller), which must then hold n_chunks · (m·d + d + t·d + t) elements.
    """
    if n_chunks == 1:
        return _allocate_partials(1, m, d, t, workspace.dtype, transposed)
    sizes = (n_chunks * m * d, n_chunks * d, n_chunks * t * d, n_chunks * t)
    a = sizes[0]
    b = a + sizes[1]
    c = b + sizes[2]
    grad_W_h = workspace[:a]
    return (
        zeros((n_chunks,), np.float64),
        grad_W_h.reshape((n_chunks, d, m)) if transposed else grad_W_h.reshape((n_chunks, m, d)),
        matrix_view(workspace, a, n_chunks, d),
        workspace[b:c].reshape((n_chunks, t, d)),
        matrix_view(workspace, c, n_chunks, t),
    )


@kernel
def _allocate_partials(n_chunks, m, d, t, dtype, transposed):
    """Per-chunk partials, uninitialised: costs, Xᵀ δ_h, Σ δ_h, (A_hᵀ δ_out)ᵀ (t, d), Σ δ_out.

    Xᵀ δ_h is (m, d), or (d, m) with ``transposed``.

    :func:`_backprop_chunk` zeroes its own, in the thread that fills them.
    ``dtype`` is an array's ``.dtype``, so every caller shares one specialisation.
    """
    return (
        zeros((n_chunks,), np.float64),
        empty((n_chunks, d, m) if transposed else (n_chunks, m, d), dtype),
        empty((n_chunks, d), dtype),
        empty((n_chunks, t, d), dtype),
        empty((n_chunks, t), dtype),
    )


# --------------------------------------------------------------------------
# The Python side: a step's workspace
# --------------------------------------------------------------------------

# Workspaces for the weights' panels, chunk partials and block buffers, one per Python thread
# and dtype, are kept between calls: a fresh one each call can cost more in page faults than
# the step itself, where the C allocator hands it back to the system each time (as in Dask's
# workers; docs/tuning.md).
_workspaces = threading.local()


@functools.lru_cache(maxsize=64)
def _workspace_size(dtype, m, d, t, copies, n_chunks=1):
    """Elements of a step's workspace: chunk partials, W_out's panels, ``copies`` of W_h's, scratch.

    The partials of ``n_chunks`` > 1 chunks take n_chunks · (m·d + d + t·d + t)
    elements (see :func:`_partials`).  Then one
    chunk scratch (block buffers and the tile engine's, for blocks of
    :data:`STEP_BLOCK_EXAMPLES` examples) per chunk or per copy, whichever are more,
    from the first 64-byte line on (:func:`_chunk_scratches`).
    """
    w = VECTOR_BYTES // dtype.itemsize
    size = copies * m * (max(d, w) + w) + d * (max(t, w) + w)
    if n_chunks > 1:
        size += n_chunks * (m * d + d + t * d + t)
    scratch = _chunk_scratch_size(STEP_BLOCK_EXAMPLES, m, d, t, STEP_BLOCK_EXAMPLES, dtype.itemsize)
    return size + max(copies, n_chunks) * scratch + 64 // dtype.itemsize


def _workspace(dtype, m, d, t, copies, n_chunks=1):
    """A 1-D scratch array of :func:`_workspace_size` elements for this thread.

    Reused by later calls in the same thread (kernels release the GIL, so
    each Python thread has its own); a larger one replaces it when needed.
    Above :data:`WORKSPACE_MAX_KEPT_BYTES` a fresh array each call.
    """
    size = _workspace_size(dtype, m, d, t, copies, n_chunks)
    if size * dtype.itemsize > WORKSPACE_MAX_KEPT_BYTES:
        return np.empty(size, dtype)
    cache = getattr(_workspaces, "arrays", None)
    if cache is None:
        cache = _workspaces.arrays = {}
    array = cache.get(dtype)
    if array is None or array.shape[0] < size:
        array = cache[dtype] = np.empty(size, dtype)
    return array


# An empty workspace per dtype: what a thread that has kept none yet passes.
_NO_WORKSPACE = {np.dtype(t): np.empty(0, t) for t in (np.float32, np.float64)}


def _kept_workspace(dtype):
    """The calling thread's kept workspace for ``dtype`` as it is (any size), or an empty array.

    For a kernel that checks the size itself (see
    :func:`fastbp._kernels_step._plain_step`); :func:`_workspace` makes
    or grows it.
    """
    cache = getattr(_workspaces, "arrays", None)
    array = None if cache is None else cache.get(dtype)
    return _NO_WORKSPACE[dtype] if array is None else array
