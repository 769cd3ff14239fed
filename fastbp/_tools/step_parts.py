"""Kernels only the benchmarks use: the fused step's two large products, alone.

``fastbp bench --breakdown`` times them against OpenBLAS to show where the
step's time goes; they make the same calls as the step, so the time and
the bits are the step's.
"""

import numpy as np

from .._jit import kernel
from .._kernels_packed import _hidden_forward_packed, _packed_padded_weights
from .._kernels_step import _add_grad_W_h, _add_grad_W_h_T, _grad_W_h_transposed
from .._scratch import _tile_scratch_size
from .._simd import VECTOR_BYTES


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
