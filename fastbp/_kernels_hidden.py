"""Private compiled kernels of the hidden layer, unfused, and the elementwise pieces they share.

No checks happen here: the public functions in :mod:`fastbp._backprop`
validate shapes, make every array C-contiguous and give all float arrays one
dtype (float32 or float64) before calling in.  Kernels never write to their
inputs.

:func:`fastbp.delta_h`, :func:`fastbp.grad_W_h` and :func:`fastbp.grad_b_h`
run here.  Their large product Xᵀ δ_h runs on the register tiles of
:mod:`fastbp._tiles`, which compute G[k, j] += Σ_i D[i, k] · A[i, j] with one
fused multiply-add per term in order of i.  The small product δ_out W_outᵀ
uses :func:`_matmul_accumulate`, a loop nest whose innermost loop runs with
unit stride over the output's columns, four chained terms in each update
(the fused step runs it on the register tiles where d is at least one
vector: the same chains, so the same bits).
The fused step (:mod:`fastbp._kernels_step`) uses the same elementwise
functions, so both follow the same roundings.
"""

import numpy as np

from . import _tiles as tiles
from ._arrays import empty, transposed, zeros
from ._jit import CONTRACT, kernel
from ._simd import VECTOR_BYTES, smaller
from ._tuning import ENGINE_BLOCK_I, ENGINE_BLOCK_J, ENGINE_BLOCK_K


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
    # Unsigned indices into the arrays themselves: no per-row views to count
    # references to, and no negative-index fix-up in the loops.
    one = np.uint64(1)
    two = np.uint64(2)
    three = np.uint64(3)
    rows = np.uint64(n_rows)
    for c0 in range(0, n_cols, block_cols):
        c1 = smaller(c0 + block_cols, n_cols)
        first = np.uint64(c0)
        width = np.uint64(c1 - c0)
        p = np.uint64(0)
        while p + np.uint64(4) <= np.uint64(inner):
            r = np.uint64(0)
            while r + two <= rows:
                x0 = lhs[r, p]
                x1 = lhs[r, p + one]
                x2 = lhs[r, p + two]
                x3 = lhs[r, p + three]
                y0 = lhs[r + one, p]
                y1 = lhs[r + one, p + one]
                y2 = lhs[r + one, p + two]
                y3 = lhs[r + one, p + three]
                for j in range(width):
                    c = first + j
                    v0 = rhs[p, c]
                    v1 = rhs[p + one, c]
                    v2 = rhs[p + two, c]
                    v3 = rhs[p + three, c]
                    out[r, c] = out[r, c] + x0 * v0 + x1 * v1 + x2 * v2 + x3 * v3
                    out[r + one, c] = out[r + one, c] + y0 * v0 + y1 * v1 + y2 * v2 + y3 * v3
                r += two
            while r < rows:
                x0 = lhs[r, p]
                x1 = lhs[r, p + one]
                x2 = lhs[r, p + two]
                x3 = lhs[r, p + three]
                for j in range(width):
                    c = first + j
                    out[r, c] = (
                        out[r, c]
                        + x0 * rhs[p, c]
                        + x1 * rhs[p + one, c]
                        + x2 * rhs[p + two, c]
                        + x3 * rhs[p + three, c]
                    )
                r += one
            p += np.uint64(4)
        while p < np.uint64(inner):
            for r in range(rows):
                x0 = lhs[r, p]
                for j in range(width):
                    c = first + j
                    out[r, c] += x0 * rhs[p, c]
            p += one


@kernel(linked=True)
def _times_sigmoid_derivative(S, A_h):
    """S[i, j] = S[i, j] · A_h[i, j] · (1 − A_h[i, j]) in place.

    The product is taken left to right, (s · a) · (1 − a), in fused and
    unfused code alike, so both give the same bits from the same s and a.
    """
    one = S.dtype.type(1.0)
    n, width = S.shape
    for i in range(np.uint64(n)):
        for j in range(np.uint64(width)):
            a = A_h[i, j]
            S[i, j] = S[i, j] * a * (one - a)


@kernel(linked=True)
def _add_column_sums(M, out):
    """out[j] += Σ_i M[i, j], examples in order."""
    n, width = M.shape
    for i in range(np.uint64(n)):
        for j in range(np.uint64(width)):
            out[j] += M[i, j]


@kernel(linked=True)
def _copy_columns(source, target):
    """target[i, j] = source[i, j] for the columns both have (the narrower's width).

    A loop rather than a slice assignment: Numba compiles a slice
    assignment's shape-mismatch message (string formatting) into every
    caller, several seconds of compilation for a check that cannot fail here.
    """
    width = smaller(source.shape[1], target.shape[1])
    for i in range(source.shape[0]):
        for j in range(width):
            target[i, j] = source[i, j]


@kernel(linked=True)
def _subtract_inplace(A, B):
    """A -= B (same shape), turning output activations into δ_out."""
    n, width = A.shape
    for i in range(np.uint64(n)):
        for j in range(np.uint64(width)):
            A[i, j] -= B[i, j]


@kernel
def _delta_h(delta_out, W_out_T, A_h, block_cols):
    """δ_h = (δ_out W_outᵀ) ⊙ A_h ⊙ (1 − A_h); ``W_out_T`` is W_outᵀ, (t, d)."""
    n, d = A_h.shape
    out = zeros((n, d), A_h.dtype)
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
    size = tiles.scratch_size(n, d, m, ENGINE_BLOCK_I, ENGINE_BLOCK_J, ENGINE_BLOCK_K, w)
    tiles.accumulate(
        delta_h,
        X[:, 0:m],
        0,
        n,
        grad,
        ENGINE_BLOCK_I,
        ENGINE_BLOCK_J,
        ENGINE_BLOCK_K,
        empty((size,), X.dtype),
        False,
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
    X_T = transposed(X_block)
    m, d = W_h.shape
    rows = X_T.shape[1]
    w = VECTOR_BYTES // X_block.itemsize
    size = tiles.scratch_size(m, d, rows, ENGINE_BLOCK_I, ENGINE_BLOCK_J, ENGINE_BLOCK_K, w)
    tiles.accumulate(
        W_h,
        X_T[:, 0:rows],
        0,
        m,
        Z,
        ENGINE_BLOCK_I,
        ENGINE_BLOCK_J,
        ENGINE_BLOCK_K,
        empty((size,), X_block.dtype),
        False,
    )


@kernel
def _grad_W_h(X, delta_h):
    """Xᵀ δ_h, (m, d), summed over the examples in order."""
    grad = zeros((X.shape[1], delta_h.shape[1]), X.dtype)
    _grad_W_h_accumulate(X, delta_h, grad)
    return grad


@kernel
def _grad_b_h(delta_h):
    """Σ_i δ_h[i, :], examples in order."""
    out = zeros((delta_h.shape[1],), delta_h.dtype)
    _add_column_sums(delta_h, out)
    return out
