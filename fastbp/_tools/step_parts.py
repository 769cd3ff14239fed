"""Kernels only the benchmarks use: the fused step's two large products, alone.

``fastbp bench --breakdown`` times them against OpenBLAS to show where the
step's time goes; they make the same calls as the step, so the time and
the bits are the step's.  Each runs its product a given number of times in
one compiled call, as does :func:`_blas_products` for OpenBLAS's, so that
a minibatch's products are timed without the Python call around them.
"""

import numpy as np

from .._jit import kernel
from .._kernels_packed import _hidden_forward_packed, _padded_pack_size, _weights_for_tiles
from .._kernels_step import (
    _add_grad_W_h,
    _add_grad_W_h_T,
    _grad_W_h_transposed,
    _sum_transposed_partials,
)
from .._scratch import _tile_scratch_size
from .._simd import VECTOR_BYTES
from .._tuning import WEIGHTS_IN_PLACE_MAX_EXAMPLES


@kernel
def _step_hidden_product(X, W_h, block_rows, repeats):
    """X W_h (n, d) as the fused step computes it, with none of the step's other work.

    W_h read in place for a small step, else packed (padded to one vector
    where narrower; :func:`_weights_for_tiles`), then :func:`_hidden_forward_packed` on
    blocks of ``block_rows`` examples read in place: the calls of
    :func:`_forward_and_deltas`, so the time and the bits are the step's.
    All of it runs ``repeats`` (≥ 1) times in this one call, any packing
    included (the step packs a narrow W_h once per call), into buffers allocated
    once: a timing divided by ``repeats`` holds neither a Python call nor
    an allocation, which at a minibatch's size weigh as much as the
    product.  Returns the last repetition's product.
    """
    n, m = X.shape
    d = W_h.shape[1]
    w = VECTOR_BYTES // X.itemsize
    width = max(d, w)
    Z = np.empty((n, width), dtype=X.dtype)
    wpack_buffer = np.empty(_padded_pack_size(m, d, w), dtype=X.dtype)
    for _ in range(repeats):
        in_place = n < WEIGHTS_IN_PLACE_MAX_EXAMPLES  # as the step decides
        wpack = _weights_for_tiles(W_h, wpack_buffer, in_place)
        for i0 in range(0, n, block_rows):
            rows = min(block_rows, n - i0)
            Z_rows = Z[i0 : i0 + rows]
            _hidden_forward_packed(X, i0, rows, wpack, m, width, Z_rows, True, in_place and d >= w)
    return np.ascontiguousarray(Z[:, :d])


@kernel
def _step_input_gradient(X, delta_h, block_rows, n_chunks, repeats):
    """Xᵀ δ_h (m, d) as the fused step with ``n_chunks`` chunks accumulates it, in one chunk.

    The orientation is the step's (:func:`_grad_W_h_transposed`): (m, d) by
    :func:`_add_grad_W_h`, or (d, m) by :func:`_add_grad_W_h_T` and
    transposed at the end by the step's own :func:`_sum_transposed_partials`,
    block by block as :func:`_backprop_chunk` adds them.  ``repeats`` (≥ 1)
    times in this one call, as :func:`_step_hidden_product`; returns the
    last repetition's gradient.
    """
    n, m = X.shape
    d = delta_h.shape[1]
    w = VECTOR_BYTES // X.itemsize
    scratch = np.empty(_tile_scratch_size(max(1, min(block_rows, n)), m, d, 0, w), X.dtype)
    if _grad_W_h_transposed(n_chunks):
        partials = np.empty((1, d, m), dtype=X.dtype)
        G = np.empty((m, d), dtype=X.dtype)
        for _ in range(repeats):
            if n == 0:
                partials[:] = 0
            for i0 in range(0, n, block_rows):
                rows = min(block_rows, n - i0)
                _add_grad_W_h_T(X, i0, rows, delta_h[i0 : i0 + rows], partials[0], scratch, i0 == 0)
            G = _sum_transposed_partials(partials)
        return G
    G = np.empty((m, d), dtype=X.dtype)
    for _ in range(repeats):
        if n == 0:
            G[:] = 0
        for i0 in range(0, n, block_rows):
            rows = min(block_rows, n - i0)
            _add_grad_W_h(X, i0, rows, delta_h[i0 : i0 + rows], G, 0, m, scratch, i0 == 0)
    return G


@kernel
def _blas_products(A, B, out, repeats):
    """``repeats`` (≥ 1) times A @ B into ``out`` through BLAS (Numba's ``np.dot``), in one call.

    The library's product without a Python call or an allocation around
    it: SciPy's OpenBLAS, which Numba's ``np.dot`` calls.  A transposed
    operand is passed as BLAS's transpose flag.
    """
    for _ in range(repeats):
        np.dot(A, B, out)
    return out
