"""Private compiled kernels.

No checks happen here: every kernel trusts that its caller (the public
functions in :mod:`fastbp._core`) has already validated shapes, made every
array C-contiguous and given all float arrays one dtype (float32 or float64).
Kernels never write to their inputs.

Naming follows the seed (see README): ``A_h`` (n, d), ``delta_out`` (n, t),
gradients of shape (d, t) or (t,).
"""

import math

import numpy as np
from numba import prange, types
from numba.core import config as numba_config
from numba.extending import intrinsic

from ._arrays import empty, vector_view, zeros
from ._jit import kernel, parallel_kernel, serial_and_parallel
from ._simd import (
    VECTOR_BYTES,
    bits_from_float,
    bits_from_float32,
    float32_from_bits,
    float_from_bits,
    fused_multiply_add,
    smaller,
)
from ._tiles import accumulate, accumulate_columns, scratch_size
from ._tuning import COST_TERMS_BLOCK

# --------------------------------------------------------------------------
# Activations and the forward pass
# --------------------------------------------------------------------------


# exp for the sigmoid: Cody–Waite reduction x = k·ln2 + r, |r| ≤ ln2/2, and
# the Taylor polynomial of e^r, then 2^k put into the exponent bits.  Plain
# arithmetic, selects and bit casts only, so loops over it vectorise at the
# full vector width of the dtype.  The reduction and Horner's steps are fused
# multiply-adds (llvm.fma, one rounding each, the same bits on every
# machine): half the operations and half the dependency chain of a multiply
# and an add.  Float64: degree 13 (truncation below 1e-17 relative),
# measured within 0.973 ulp of the correctly rounded exp.  Float32: its own
# float32 arithmetic (twice the lanes of float64), degree 7 (truncation 5e-9
# relative, a tenth of float32's u), within 1.034 ulp (measured on every
# float32 in [−104, 0]: docs/equality.md).  tests/test_forward.py checks
# both against long-double exp.
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2 to 32 bits: k·_LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10  # ln 2 − _LN2_HI
_ROUNDER = 6755399441055744.0  # 1.5·2^52: x + _ROUNDER − _ROUNDER rounds x to an integer
_ROUNDER_BITS = 0x4338000000000000  # its bits: bits(x + _ROUNDER) − _ROUNDER_BITS = that integer
_EXP_TAYLOR = tuple(1.0 / math.factorial(i) for i in range(14))


@kernel(linked=True)
def _exp_nonpositive(x):
    """e^x in float64 for x ≤ 0 (NaN propagates), without a library call.

    Arguments below −746 give 0 (e^−746 is under half the smallest
    subnormal); results in the subnormal range are rounded once.
    """
    c = _EXP_TAYLOR
    fma = fused_multiply_add
    xc = -746.0 if x < -746.0 else x
    shifted = fma(xc, _LOG2E, _ROUNDER)
    k_float = shifted - _ROUNDER
    k = bits_from_float(shifted) - _ROUNDER_BITS  # the same integer, as int64
    r = fma(-k_float, _LN2_LO, fma(-k_float, _LN2_HI, xc))
    q = c[13]
    for i in range(12, 1, -1):  # Horner's steps, unrolled by LLVM
        q = fma(q, r, c[i])
    p = 1.0 + (r + (r * r) * q)  # e^r in [0.70, 1.42]
    # 2^k in two factors: 2^k_main goes straight into p's exponent (exact,
    # p stays normal), 2^(k − k_main) ≥ 2^−77 is a normal number and the
    # product rounds once when the result is subnormal.
    k_main = k if k > -1000 else -1000
    k_main = k_main if k_main < 0 else 0
    result = float_from_bits(bits_from_float(p) + (k_main << 52)) * float_from_bits(
        (k - k_main + 1023) << 52
    )
    return result if x == x else x


# The float32 exp's constants, float32 globals so that its arithmetic stays in float32.
_LOG2E_F32 = np.float32(_LOG2E)
_LN2_HI_F32 = np.float32(0.693359375)  # ln 2 to 9 bits: k·_LN2_HI_F32 is exact for |k| ≤ 2^15
_LN2_LO_F32 = np.float32(math.log(2.0) - 0.693359375)
_ROUNDER_F32 = np.float32(12582912.0)  # 1.5·2^23, as _ROUNDER
_ROUNDER_BITS_F32 = np.int32(0x4B400000)
_EXP_TAYLOR_F32 = tuple(np.float32(c) for c in _EXP_TAYLOR[:8])
_FLOOR_F32 = np.float32(-104.0)  # e^−104 is under half float32's smallest subnormal
_ONE_F32 = np.float32(1.0)


@kernel(linked=True)
def _exp_nonpositive_float32(x):
    """e^x in float32 arithmetic for a float32 x ≤ 0 (NaN propagates), without a library call.

    Float64's method (:func:`_exp_nonpositive`) with float32 constants:
    arguments below −104 give 0, results in the subnormal range are
    rounded once (2^k applied in two factors).  Within 1 ulp of the
    correctly rounded e^x.
    """
    c = _EXP_TAYLOR_F32
    fma = fused_multiply_add
    xc = _FLOOR_F32 if x < _FLOOR_F32 else x
    shifted = fma(xc, _LOG2E_F32, _ROUNDER_F32)
    k_float = shifted - _ROUNDER_F32
    k = np.int32(bits_from_float32(shifted) - _ROUNDER_BITS_F32)  # the same integer
    r = fma(-k_float, _LN2_LO_F32, fma(-k_float, _LN2_HI_F32, xc))
    q = c[7]
    for i in range(6, 1, -1):  # Horner's steps, unrolled by LLVM
        q = fma(q, r, c[i])
    p = _ONE_F32 + (r + (r * r) * q)  # e^r in [0.70, 1.42]
    # p · 2^k_main stays normal (k_main ≥ −100); 2^(k − k_main) ≥ 2^−50 is normal.
    k_main = k if k > -100 else np.int32(-100)
    result = float32_from_bits(np.int32(bits_from_float32(p) + (k_main << 23))) * float32_from_bits(
        np.int32((k - k_main + 127) << 23)
    )
    return result if x == x else x


def _exp_nonpositive_like_typing(typingctx, x, like):
    """Typing of :func:`_exp_nonpositive_like`: the one exponential ``like`` needs, typed."""
    if not isinstance(x, types.Float) or not isinstance(like, types.Float):
        return None
    exponential = _exp_nonpositive_float32 if like == types.float32 else _exp_nonpositive
    function = types.Dispatcher(exponential)
    call = typingctx.resolve_function_type(function, (like,), {})

    def codegen(context, builder, signature, args):
        argument = context.cast(builder, args[0], signature.args[0], like)
        return context.get_function(function, call)(builder, [argument])

    return like(x, like), codegen


def _exp_nonpositive_like_python(x, like):
    """:func:`_exp_nonpositive_like` in Python."""
    if isinstance(like, np.float32):
        return _exp_nonpositive_float32(np.float32(x))
    return _exp_nonpositive(np.float64(x))


# e^x (x ≤ 0) in like's precision: x cast to like's type, then _exp_nonpositive_float32
# or _exp_nonpositive.  An intrinsic, so that a caller's tree types (and compiles) only
# the exponential of its dtype: a branch on the dtype would type both.
if numba_config.DISABLE_JIT:
    _exp_nonpositive_like = _exp_nonpositive_like_python
else:
    _exp_nonpositive_like = intrinsic(_exp_nonpositive_like_typing)


@kernel(linked=True)
def _phi(z, one):
    """Logistic sigmoid of one scalar, in the scalar's own precision.

    With e = exp(−|z|) ≤ 1 (never overflows, never warns), φ(z) is
    1 / (1 + e) for z ≥ 0 and e / (1 + e) for z < 0, chosen by a select so
    loops over it vectorise.  e, the addition and the division run in z's
    dtype (``one`` is 1 in that dtype; :func:`_exp_nonpositive_float32`
    for float32).  NaN propagates.
    """
    minus_abs = z if z < 0 else -z
    e = _exp_nonpositive_like(minus_abs, one)
    numerator = one if z >= 0 else e
    return numerator / (one + e)


@kernel
def _sigmoid_flat(z, out):
    """out[i] = φ(z[i]) for 1-D arrays (out may be z, but see :func:`_sigmoid_inplace`)."""
    one = z.dtype.type(1.0)
    for i in range(z.shape[0]):
        out[i] = _phi(z[i], one)


@kernel(linked=True)
def _sigmoid_inplace(z):
    """z[i] = φ(z[i]) for a 1-D array.

    One array, not :func:`_sigmoid_flat` (z, z): with two arguments LLVM
    guards the vectorised loop with an overlap check, which an in-place
    call fails, and runs the scalar loop.
    """
    one = z.dtype.type(1.0)
    for i in range(z.shape[0]):
        z[i] = _phi(z[i], one)


@kernel
def _add_bias_sigmoid_inplace(Z, b):
    """Z[i, j] = φ(Z[i, j] + b[j]), in place on a freshly computed, C-contiguous Z.

    The bias first, row by row, then φ in one loop over all n·width
    elements: a row of d elements is rarely a multiple of the vectorised
    loop's step, and a loop per row would leave each row's remainder to
    scalar code.  The same bits as one pass.
    """
    n, width = Z.shape
    for i in range(np.uint64(n)):
        for j in range(np.uint64(width)):
            Z[i, j] += b[j]
    _sigmoid_inplace(vector_view(Z))


@kernel
def _matmul(A, B):
    """A @ B for 2-D arrays, one BLAS call through Numba's ``np.dot``.

    The call is gemm, or gemv where A is one row or B one column, as Numba
    chooses for ``@`` too.

    Numba's ``A @ B`` is exactly this: ``np.dot(A, B, out)`` into a new
    array (zeros where the inner dimension is 0, which ``np.dot`` writes
    too), so the bits are the same.  Allocating with :func:`empty` spares
    the compilation of Numba's ``@`` wrapper and the ``np.empty`` and
    ``np.zeros`` overloads behind it.
    """
    out = empty((A.shape[0], B.shape[1]), A.dtype)
    np.dot(A, B, out)
    return out


@kernel
def _forward(X, W_h, b_h, W_out, b_out):
    """A_h = φ(X W_h + b_h), A_out = φ(A_h W_out + b_out)."""
    A_h = _matmul(X, W_h)
    _add_bias_sigmoid_inplace(A_h, b_h)
    A_out = _matmul(A_h, W_out)
    _add_bias_sigmoid_inplace(A_out, b_out)
    return A_h, A_out


# --------------------------------------------------------------------------
# Output error and cost
# --------------------------------------------------------------------------


@kernel
def _delta_out(A_out, Y):
    """δ_out = A_out − Y, a new array."""
    n, t = A_out.shape
    out = empty((n, t), A_out.dtype)
    for i in range(n):
        for k in range(t):
            out[i, k] = A_out[i, k] - Y[i, k]
    return out


# log for the cost: x = 2^k · m with m in [√2/2, √2), f = m − 1 (exact),
# s = f / (2 + f), and log(1 + f) = f − (f²/2 − s (f²/2 + R(s²))) with R
# the Taylor series of 2·atanh(s)/s − 2 to s²⁴ (|s| ≤ 0.172, truncation
# below 1e-19, Horner's steps fused as in exp), as in fdlibm's log.  Plain
# arithmetic, selects and bit casts, so loops over it vectorise; measured
# within 0.86 ulp of long-double log (tests/test_forward.py checks it).
_LOG_SERIES = tuple(2.0 / (2 * i + 1) for i in range(1, 13))
_SQRT2 = 1.4142135623730951
_MANTISSA_BITS = 0x000FFFFFFFFFFFFF
_ONE_BITS = 0x3FF0000000000000


@kernel(linked=True)
def _clamped_log(x, tiny):
    """log(x) in float64, with x in [0, tiny) read as tiny so that log(0) is finite.

    ``tiny`` is a normal float64 (the dtype's smallest normal number), so
    every positive argument the reduction sees is normal.  Negative x give
    NaN and NaN propagates, as ``np.log``; +inf gives +inf.
    """
    c = _LOG_SERIES
    xc = tiny if (x >= 0.0 and x < tiny) else x
    bits = bits_from_float(xc)
    k = (bits >> 52) - 1023
    m = float_from_bits((bits & _MANTISSA_BITS) | _ONE_BITS)
    big = m > _SQRT2
    m = m * 0.5 if big else m
    k = k + 1 if big else k
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    fma = fused_multiply_add
    q = c[11]
    for i in range(10, -1, -1):  # Horner's steps, unrolled by LLVM
        q = fma(q, z, c[i])
    r = z * q
    half_f2 = 0.5 * f * f
    k_float = np.float64(k)
    result = k_float * _LN2_HI - ((half_f2 - (s * (half_f2 + r) + k_float * _LN2_LO)) - f)
    result = result if xc < np.inf else xc  # +inf, and NaN, pass through
    return result if xc >= 0.0 else np.nan


@kernel(linked=True)
def _cost_term(a, y, tiny):
    """Y log a + (1 − y) log(1 − a) in float64, a term of zero weight exactly zero.

    So a confident correct output (a = y = 1) costs 0, not 0·(−∞).  The
    sum is (0 + y log a) + (1 − y) log(1 − a), each part only where its
    weight is not zero.  The scalar definition; loops take the same terms,
    with the same bits, from :func:`_cost_terms`.
    """
    a = np.float64(a)
    y = np.float64(y)
    log_a = _clamped_log(a, tiny)
    log_not_a = _clamped_log(1.0 - a, tiny)
    term = 0.0 + y * log_a if y != 0.0 else 0.0
    return term + (1.0 - y) * log_not_a if y != 1.0 else term


@kernel
def _cost_terms(A, Y, tiny, terms):
    """terms[e] = :func:`_cost_term` (A[e], Y[e], tiny) for 1-D arrays.

    Targets that are all 0 or 1 (one-hot rows) need one logarithm per
    term, log a where y = 1 and log(1 − a) where y = 0, each 0 + that
    logarithm: :func:`_cost_term`'s bits, in half the work.  Other targets
    take two passes.  Each pass has one logarithm and selects only, so LLVM
    inlines it and vectorises the loop (one pass with both logarithms is too
    large to inline and stays a scalar call per term).
    """
    binary = True
    for e in range(Y.shape[0]):
        y = Y[e]
        binary &= (y == 0) | (y == 1)
    if binary:
        for e in range(A.shape[0]):
            a = np.float64(A[e])
            x = a if Y[e] == 1 else 1.0 - a
            terms[e] = 0.0 + _clamped_log(x, tiny)
        return
    for e in range(A.shape[0]):
        terms[e] = _clamped_log(np.float64(A[e]), tiny)
    for e in range(A.shape[0]):
        a = np.float64(A[e])
        y = np.float64(Y[e])
        log_not_a = _clamped_log(1.0 - a, tiny)
        term = 0.0 + y * terms[e] if y != 0.0 else 0.0
        terms[e] = term + (1.0 - y) * log_not_a if y != 1.0 else term


@kernel
def _cost(A_out, Y, tiny):
    """J = −Σ_i Σ_k [y log a + (1 − y) log(1 − a)], accumulated in float64.

    The terms are :func:`_cost_term`'s (taken a block at a time by
    :func:`_cost_terms`), subtracted from 0 in row-major order.  A_out
    and Y are C-contiguous.
    """
    a_flat = vector_view(A_out)
    y_flat = vector_view(Y)
    size = a_flat.shape[0]
    terms = empty((smaller(size, COST_TERMS_BLOCK),), np.float64)
    total = 0.0
    for e0 in range(0, size, COST_TERMS_BLOCK):
        e1 = smaller(e0 + COST_TERMS_BLOCK, size)
        _cost_terms(a_flat[e0:e1], y_flat[e0:e1], tiny, terms)
        for e in range(e1 - e0):
            total -= terms[e]
    return total


@kernel
def _all_in_unit_interval(values):
    """Whether every value of a 1-D array other than NaN lies in [0, 1].

    One pass without an early exit, so the loop vectorises (NaN compares
    false both ways and passes); the check behind the targets' input rule,
    whose error message the caller builds when this says no.
    """
    outside = False
    for i in range(values.shape[0]):
        v = values[i]
        outside |= (v < 0) | (v > 1)
    return not outside


@kernel(linked=True)
def _first_argmax(row):
    """Index of the largest value of a 1-D array, the first of equals, as :func:`numpy.argmax`.

    A NaN counts as the largest value (its first occurrence wins), as in
    NumPy.  ``row`` has at least one element.
    """
    best = 0
    best_value = row[0]
    if best_value != best_value:
        return 0
    for k in range(1, row.shape[0]):
        value = row[k]
        if value != value:
            return k
        if value > best_value:
            best = k
            best_value = value
    return best


@kernel(linked=True)
def _count_correct(A_out, Y):
    """How many rows of A_out have their largest value where their row of Y has its largest.

    With one-hot targets Y, the number of examples the network classifies
    correctly (ties and NaN as :func:`numpy.argmax` breaks them).  0 when
    the rows are empty (t = 0).
    """
    if A_out.shape[1] == 0:
        return 0
    correct = 0
    for i in range(A_out.shape[0]):
        if _first_argmax(A_out[i]) == _first_argmax(Y[i]):
            correct += 1
    return correct


# --------------------------------------------------------------------------
# Gradients of the output layer
# --------------------------------------------------------------------------


@kernel
def _grad_b_out(delta_out):
    """Σ_i δ_out[i, :], summed in example order."""
    n, t = delta_out.shape
    out = zeros((t,), delta_out.dtype)
    for i in range(n):
        for k in range(t):
            out[k] += delta_out[i, k]
    return out


@kernel
def _grad_W_out_outer(A_h, delta_out):
    """Σ_i a^{[i]} ⊗ δ^{[i]}: the seed's §6–7 sum, one outer product per example."""
    n, d = A_h.shape
    t = delta_out.shape[1]
    grad = zeros((d, t), A_h.dtype)
    for i in range(n):
        for j in range(d):
            a = A_h[i, j]
            for k in range(t):
                grad[j, k] += a * delta_out[i, k]
    return grad


@kernel
def _grad_W_out_matmul(A_h, delta_out):
    """(A_h)ᵀ δ_out as one BLAS call (``A_h.T @ delta_out``)."""
    return _matmul(A_h.T, delta_out)


@kernel(linked=True, arithmetic=True)
def _chunk_bounds(n, n_chunks, chunk):
    """Units [start, stop) of part ``chunk`` when n units are cut into n_chunks contiguous parts.

    Parts differ in size by at most one.  Used for chunks of examples and
    for a block's row groups and input groups shared among threads.
    """
    return (chunk * n) // n_chunks, ((chunk + 1) * n) // n_chunks


@kernel
def _sum_partials_transposed(partials):
    """Σ_c partials[c] (fixed order c = 0, 1, …), returned transposed to (d, t)."""
    n_chunks, t, d = partials.shape
    grad = zeros((d, t), partials.dtype)
    for c in range(n_chunks):
        for j in range(d):
            for k in range(t):
                grad[j, k] += partials[c, k, j]
    return grad


def _grad_W_out_blocked_chunks(A_h, delta_out, n_chunks, block_n, block_d, block_t):
    """Blocked gradient over ``n_chunks`` chunks of examples, one partial (t, d) each.

    Each chunk writes only its own partial buffer and the partials are
    summed in chunk order afterwards, so the serial kernel and the threaded
    one (chunks spread over Numba's threads) give the same bits for any
    number of threads.
    """
    n, d = A_h.shape
    t = delta_out.shape[1]
    partials = zeros((n_chunks, t, d), A_h.dtype)
    size = scratch_size(n, d, t, block_n, block_d, block_t, VECTOR_BYTES // A_h.itemsize)
    scratch = empty((n_chunks, size), A_h.dtype)
    for c in prange(n_chunks):
        i_start, i_stop = _chunk_bounds(n, n_chunks, c)
        accumulate(
            A_h,
            delta_out[:, 0:t],
            i_start,
            i_stop,
            partials[c],
            block_n,
            block_d,
            block_t,
            scratch[c],
            False,
        )
    return _sum_partials_transposed(partials)


_grad_W_out_blocked_serial, _grad_W_out_blocked_parallel = serial_and_parallel(
    _grad_W_out_blocked_chunks
)


@parallel_kernel
def _grad_W_out_blocked_columns_parallel(A_h, delta_out, n_parts, block_n, block_d, block_t):
    """One chunk's blocked gradient, its hidden units (columns of A_h) shared among threads.

    Part p takes an equal share of the column blocks of ``block_d`` hidden
    units and runs the tile engine over all examples on them, with a scratch
    of its own (:func:`fastbp._tiles.accumulate_columns`).  Every element
    is the same chain of fused multiply-adds over the examples in order as
    in :func:`_grad_W_out_blocked_serial` with one chunk: the same bits,
    for any number of parts.  For one chunk with too much work for one
    thread, where chunks of examples would change the bits.
    """
    n, d = A_h.shape
    t = delta_out.shape[1]
    partial = zeros((1, t, d), A_h.dtype)
    size = scratch_size(n, d, t, block_n, block_d, block_t, VECTOR_BYTES // A_h.itemsize)
    scratch = empty((n_parts, size), A_h.dtype)
    n_blocks = (d + block_d - 1) // block_d
    for p in prange(n_parts):
        b0, b1 = _chunk_bounds(n_blocks, n_parts, p)
        j0 = b0 * block_d
        j1 = smaller(b1 * block_d, d)
        if j1 > j0:
            accumulate_columns(
                A_h,
                delta_out[:, 0:t],
                0,
                n,
                partial[0],
                j0,
                j1,
                block_n,
                block_d,
                block_t,
                scratch[p],
                False,
            )
    return _sum_partials_transposed(partial)
