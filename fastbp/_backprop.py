"""Public functions for the hidden layer and the fused training step.

Shapes follow the seed, examples as rows: ``X`` (n, m), ``W_h`` (m, d),
``b_h`` (d,), ``W_out`` (d, t), ``b_out`` (t,), ``Y`` (n, t),
``A_h`` and ``delta_h`` (n, d), ``delta_out`` (n, t).

Input rules are those of :mod:`fastbp._core`: float32 or float64 only,
mixed precisions promoted as NumPy does, any memory layout accepted, inputs
never modified, n = 0 allowed.

L2 penalty
----------
With ``l2 = λ > 0`` the cost is

    J_λ = J + (λ/2) (Σ W_h² + Σ W_out²)        (biases are not penalised)

and its gradient adds λ W_h and λ W_out to the weight gradients, so cost and
gradient agree (a finite-difference check of J_λ confirms it).  Raschka's
``NeuralNetMLP`` adds the same λ W to the gradient but reports the cost with
λ Σ W² (no ½), which is twice the penalty whose gradient it uses; its
weight updates are therefore identical to fastbp's, and only the recorded
cost differs, by (λ/2) Σ W².
"""

import functools
import math
from collections import namedtuple

import numba
import numpy as np

from . import _kernels_hidden, _kernels_step
from ._core import _converted_network_arrays, _ready
from ._scratch import _kept_workspace, _workspace
from ._threads import _chunk_limit, _numba_threads, _parallel_launch
from ._tuning import (
    DELTA_H_BLOCK_HIDDEN,
    SHARED_STEP_MIN_MULTIPLY_ADDS,
    SHARED_STEP_PACK_COPY_BYTES,
    STEP_BLOCK_EXAMPLES,
    STEP_MAX_CHUNKS,
    STEP_MAX_PARTIAL_BYTES,
    STEP_MIN_CHUNK_EXAMPLES,
)
from ._validate import (
    as_float_array,
    check_itemsize,
    check_l2,
    check_n_threads,
    common_dtype,
    contiguous,
    non_negative_int,
    positive_int,
    require_equal,
    require_fits,
    require_targets_in_unit_interval,
)

__all__ = [
    "BackpropResult",
    "backprop",
    "default_backprop_chunks",
    "delta_h",
    "grad_W_h",
    "grad_b_h",
    "l2_penalty",
]

# The plain step's "no per-example norms" (see _kernels_step._backprop_chunk).
_NO_NORMS = np.empty(0, dtype=np.float64)
# The plain step's "count no correct classifications".
_NO_COUNTS = np.empty(0, dtype=np.int64)

_FLOAT32 = np.dtype(np.float32)
_FLOAT32_MAX = _kernels_step._FLOAT32_MAX

# The smallest normal number per dtype, the floor of the cost's logarithms.
_TINY = {np.dtype(t): float(np.finfo(t).tiny) for t in (np.float32, np.float64)}

BackpropResult = namedtuple(
    "BackpropResult", ["cost", "grad_W_h", "grad_b_h", "grad_W_out", "grad_b_out"]
)
_new_tuple = tuple.__new__
BackpropResult.__doc__ = """Cost and gradients of one fused training step.

Attributes
----------
cost : numpy.float32 or numpy.float64
    J (+ the L2 penalty) at the given weights, accumulated in float64.
grad_W_h : numpy.ndarray, shape (m, d)
grad_b_h : numpy.ndarray, shape (d,)
grad_W_out : numpy.ndarray, shape (d, t)
grad_b_out : numpy.ndarray, shape (t,)
"""


def delta_h(delta_out, W_out, A_h):
    """Hidden-layer error δ_h = (δ_out W_outᵀ) ⊙ A_h ⊙ (1 − A_h).

    For sigmoid hidden units this is ∂J/∂z^{(h)}: the output error carried
    back through W_out, times the sigmoid's derivative φ'(z) = a (1 − a).

    Parameters
    ----------
    delta_out : array_like, shape (n, t)
        Output errors δ_out = A_out − Y.
    W_out : array_like, shape (d, t)
        Output-layer weights.
    A_h : array_like, shape (n, d)
        Hidden activations.

    Returns
    -------
    numpy.ndarray, shape (n, d)
        A new C-contiguous array in the (promoted) dtype of the inputs.  Each
        element is Σ_k δ_out[i, k] W_out[j, k] (k in order), then
        multiplied by a and by (1 − a), left to right.
    """
    delta_out = as_float_array(delta_out, "delta_out", 2)
    W_out = as_float_array(W_out, "W_out", 2)
    A_h = as_float_array(A_h, "A_h", 2)
    require_equal(
        "delta_out", delta_out.shape[1], "W_out", W_out.shape[1], "columns (t)", "columns (t)"
    )
    require_equal("A_h", A_h.shape[1], "W_out", W_out.shape[0], "columns (d)", "rows (d)")
    require_equal("delta_out", delta_out.shape[0], "A_h", A_h.shape[0], "rows (n)", "rows (n)")
    dtype = common_dtype(delta_out, W_out, A_h)
    require_fits("delta_h's result", A_h.shape, dtype)
    return _kernels_hidden._delta_h(
        contiguous(delta_out, dtype, "delta_out"),
        contiguous(W_out.T, dtype, "W_out"),
        contiguous(A_h, dtype, "A_h"),
        DELTA_H_BLOCK_HIDDEN,
    )


def grad_W_h(X, delta_h):
    """∂J/∂W_h = Xᵀ δ_h = Σ_i x^{[i]} ⊗ δ_h^{[i]}.

    Parameters
    ----------
    X : array_like, shape (n, m)
        Inputs, one example per row.
    delta_h : array_like, shape (n, d)
        Hidden-layer errors (see :func:`delta_h`).

    Returns
    -------
    numpy.ndarray, shape (m, d)
        C-contiguous, in the (promoted) dtype of the inputs; zeros for n = 0.
        Every element is summed over the examples in order, one fused
        multiply-add each, by the register-tiled kernel of
        :func:`fastbp.grad_W_out_blocked`.
    """
    X = as_float_array(X, "X", 2)
    delta_h = as_float_array(delta_h, "delta_h", 2)
    require_equal("X", X.shape[0], "delta_h", delta_h.shape[0], "rows (n)", "rows (n)")
    dtype = common_dtype(X, delta_h)
    require_fits("grad_W_h's result", (X.shape[1], delta_h.shape[1]), dtype)
    return _kernels_hidden._grad_W_h(
        contiguous(X, dtype, "X"), contiguous(delta_h, dtype, "delta_h")
    )


def grad_b_h(delta_h):
    """∂J/∂b_h = Σ_i δ_h^{[i]}, the hidden biases' gradient.

    Parameters
    ----------
    delta_h : array_like, shape (n, d)
        Hidden-layer errors.

    Returns
    -------
    numpy.ndarray, shape (d,)
        Column sums, in example order; zeros for n = 0.
    """
    delta_h = as_float_array(delta_h, "delta_h", 2)
    return _kernels_hidden._grad_b_h(contiguous(delta_h, delta_h.dtype, "delta_h"))


def l2_penalty(W_h, W_out, l2):
    """The L2 penalty (λ/2)(Σ W_h² + Σ W_out²) that ``backprop(..., l2=λ)`` adds to J.

    Parameters
    ----------
    W_h : array_like, shape (m, d)
    W_out : array_like, shape (d, t)
    l2 : float
        λ ≥ 0.

    Returns
    -------
    float
        The penalty, summed in float64 (Python float).  Its gradient is
        λ W_h and λ W_out; biases are not penalised.
    """
    W_h = as_float_array(W_h, "W_h", 2)
    W_out = as_float_array(W_out, "W_out", 2)
    l2 = check_l2(l2)
    if l2 == 0.0:
        return 0.0
    squares = _kernels_step._sum_of_squares(
        contiguous(W_h, W_h.dtype, "W_h")
    ) + _kernels_step._sum_of_squares(contiguous(W_out, W_out.dtype, "W_out"))
    return 0.5 * l2 * squares


def default_backprop_chunks(n, m, d, t, itemsize):
    """How many chunks of examples :func:`backprop` cuts n examples into.

    Depends only on the shape and dtype, never on the number of threads, so
    the result of :func:`backprop` does not either.

    Parameters
    ----------
    n, m, d, t : int
        Examples, inputs, hidden units, outputs.
    itemsize : int
        Bytes per element (4 or 8).

    Returns
    -------
    int
        The largest power of two ≤ n / 128, at most 16, at least 1, and
        fewer where the per-chunk partial gradients would exceed 64 MiB.

    Raises
    ------
    TypeError
        A size or ``itemsize`` that is not an integer.
    ValueError
        A negative size, or ``itemsize`` other than 4 or 8.

    Notes
    -----
    The chunk count fixes the order of the sums, so it is part of a
    result's bits: ``backprop(..., n_chunks=default_backprop_chunks(...))``
    of the shape of another call repeats that call's summation order
    (:func:`fastbp.dask.backprop` reduces each block this way).
    """
    n, m, d, t = (non_negative_int(v, name) for v, name in ((n, "n"), (m, "m"), (d, "d"), (t, "t")))
    return _default_backprop_chunks(n, m, d, t, check_itemsize(itemsize))


@functools.lru_cache(maxsize=256)
def _default_backprop_chunks(n, m, d, t, itemsize):
    """:func:`default_backprop_chunks` without the checks (the training loops' hot path).

    Cached: a training loop asks for the same few shapes at every step.
    """
    partial_bytes = (m * d + d * t + d + t) * itemsize
    limit = _chunk_limit(
        n, partial_bytes, STEP_MIN_CHUNK_EXAMPLES, STEP_MAX_CHUNKS, STEP_MAX_PARTIAL_BYTES
    )
    return 1 << (limit.bit_length() - 1)  # a power of two: equal shares for 2 or 4 threads


def _shares_threads(n, m, d, n_chunks, threads):
    """Whether :func:`backprop` runs a threaded kernel: several chunks, or enough work in one."""
    if threads <= 1:
        return False
    return n_chunks > 1 or n * m * d >= SHARED_STEP_MIN_MULTIPLY_ADDS


def _data_terms(X, Y, W_h, b_h, W_out, b_out, n_chunks, n_threads, correct=None):
    """The data's cost (a float64 Python float) and four gradients, without the L2 terms.

    Takes validated, C-contiguous, same-dtype arrays.  The partial results
    of :mod:`fastbp.dask` are these, one per block of rows.  With
    ``correct`` (int64, a slot for every chunk and for every thread Numba
    may run: at least max(n_chunks, NUMBA_NUM_THREADS) slots; empty counts
    nothing), its slots get the counts of correctly classified examples
    (summed, they are the step's); a shorter array is refused, since the
    kernels write their slots unchecked.
    """
    if correct is None:
        correct = _NO_COUNTS
    elif 0 < correct.shape[0] < max(n_chunks, numba.config.NUMBA_NUM_THREADS):
        # The kernels write slot c or slot p unchecked: refuse what they would write past.
        raise ValueError(
            f"correct has {correct.shape[0]} slots; this step needs one for each of its "
            f"{n_chunks} chunks and {numba.config.NUMBA_NUM_THREADS} possible threads"
        )
    dtype = X.dtype
    n, m = X.shape
    d, t = W_out.shape
    # Asking Numba for the thread count only where two threads could share the work.
    if n_threads != 1 and _shares_threads(n, m, d, n_chunks, 2):
        with _numba_threads(n_threads) as threads:
            if _shares_threads(n, m, d, n_chunks, threads):
                with _parallel_launch():
                    if n_chunks == 1:
                        return _kernels_step._backprop_blocks_parallel(
                            X, Y, W_h, b_h, W_out, b_out, _TINY[dtype], threads,
                            STEP_BLOCK_EXAMPLES, DELTA_H_BLOCK_HIDDEN,
                            SHARED_STEP_PACK_COPY_BYTES, _workspace(dtype, m, d, t, threads),
                            correct,
                        )  # fmt: skip
                    return _kernels_step._backprop_parallel(
                        X, Y, W_h, b_h, W_out, b_out, _TINY[dtype], n_chunks,
                        STEP_BLOCK_EXAMPLES, DELTA_H_BLOCK_HIDDEN,
                        _workspace(dtype, m, d, t, 1, n_chunks), _NO_NORMS, math.inf, correct,
                    )  # fmt: skip
    # One thread, or too little work to share: the serial kernel, the same bits.
    # (backprop's own minibatch step runs the same kernel, _plain_step, with its L2
    # terms; this branch serves the solvers, fastbp.dask and counted steps.)
    if n_chunks == 1:
        g_W_h, g_b_h, g_W_out, g_b_out = _empty_gradients(m, d, t, dtype)
        _, cost = _kernels_step._plain_step(
            X, Y, W_h, b_h, W_out, b_out, 0.0, _TINY[dtype], _workspace(dtype, m, d, t, 1),
            correct, g_W_h, g_b_h, g_W_out, g_b_out, True,
        )  # fmt: skip
        return cost, g_W_h, g_b_h, g_W_out, g_b_out
    return _kernels_step._backprop_serial(
        X, Y, W_h, b_h, W_out, b_out, _TINY[dtype], n_chunks, STEP_BLOCK_EXAMPLES,
        DELTA_H_BLOCK_HIDDEN, _workspace(dtype, m, d, t, 1, n_chunks), _NO_NORMS, math.inf,
        correct,
    )  # fmt: skip


def _empty_gradients(m, d, t, dtype):
    """Four new arrays for :func:`fastbp._kernels_step._plain_step` to write the gradients into.

    Allocated here rather than in the kernel: a compiled function's new
    arrays are boxed one by one on return, which costs more than NumPy's
    allocations.
    """
    return np.empty((m, d), dtype), np.empty(d, dtype), np.empty((d, t), dtype), np.empty(t, dtype)


def _with_penalty(cost, g_W_h, g_b_h, g_W_out, g_b_out, W_h, W_out, l2):
    """A :class:`BackpropResult` from the data terms.

    λW is added to the weight gradients in place, (λ/2) Σ W² to the float64
    cost, and the cost is rounded once.
    """
    dtype = g_W_h.dtype
    if l2 != 0.0:
        # λW added once, after the chunk sums, in one compiled call: the
        # same roundings as the book's ``grad_w_h + l2 * w_h``.
        squares = _kernels_step._add_l2_gradients(g_W_h, g_W_out, W_h, W_out, dtype.type(l2))
        cost += 0.5 * l2 * squares
    return BackpropResult(dtype.type(cost), g_W_h, g_b_h, g_W_out, g_b_out)


def _backprop_prepared(X, Y, W_h, b_h, W_out, b_out, l2, n_chunks, n_threads, correct=None):
    """:func:`backprop` on validated, C-contiguous, same-dtype arrays.

    One chunk on one thread without ``correct`` (every minibatch step) is
    one compiled call that adds the L2 terms itself; everything else goes
    through :func:`_data_terms` and :func:`_with_penalty`, with the same bits.
    ``correct``: see :func:`_data_terms`.
    """
    n, m = X.shape
    d, t = W_out.shape
    one_thread = (
        n_threads == 1
        or not _shares_threads(n, m, d, 1, 2)
        or (n_threads is None and numba.get_num_threads() == 1)
    )
    if n_chunks == 1 and one_thread and correct is None:
        # Every minibatch step's path: one compiled call that adds the L2 terms
        # itself (the bits of _with_penalty), and no other Python in between.
        dtype = X.dtype
        if l2 > _FLOAT32_MAX and dtype is _FLOAT32:
            dtype.type(l2)  # NumPy's overflow warning, as _with_penalty's cast gives it
        g_W_h, g_b_h, g_W_out, g_b_out = _empty_gradients(m, d, t, dtype)
        _, cost = _kernels_step._plain_step(
            X, Y, W_h, b_h, W_out, b_out, l2, _TINY[dtype], _workspace(dtype, m, d, t, 1),
            _NO_COUNTS, g_W_h, g_b_h, g_W_out, g_b_out, True,
        )  # fmt: skip
        return BackpropResult(dtype.type(cost), g_W_h, g_b_h, g_W_out, g_b_out)
    terms = _data_terms(X, Y, W_h, b_h, W_out, b_out, n_chunks, n_threads, correct)
    return _with_penalty(*terms, W_h, W_out, l2)


def backprop(X, Y, W_h, b_h, W_out, b_out, l2=0.0, *, n_chunks=None, n_threads=None):
    """Cost and all four gradients in one compiled pass over the examples.

    Equivalent to ``A_h, A_out = forward(...)``, ``cost(A_out, Y)``,
    ``delta_out``, :func:`delta_h`, :func:`grad_W_h`, :func:`grad_b_h`,
    ``grad_W_out``, ``grad_b_out`` (plus the L2 terms), up to rounding, but
    without building the (n, d) hidden activations or the (n, t) outputs:
    examples go through forward and backward pass 192 at a time, and each
    block's contributions are added to the gradients at once.

    Parameters
    ----------
    X : array_like, shape (n, m)
        Inputs, one example per row.
    Y : array_like, shape (n, t)
        Targets, one-hot or any values in [0, 1].  NaN propagates to the
        cost and gradients; any other value outside [0, 1] (±inf included)
        raises ``ValueError``.
    W_h : array_like, shape (m, d)
    b_h : array_like, shape (d,)
    W_out : array_like, shape (d, t)
    b_out : array_like, shape (t,)
        Weights and biases of the m-d-t sigmoid network (any of m, d, t
        may be 0: empty sums are 0).
    l2 : float, default 0.0
        λ ≥ 0 of the L2 penalty (λ/2)(Σ W_h² + Σ W_out²), added to the cost,
        with λ W_h and λ W_out added to the weight gradients.
    n_chunks : int, optional
        How many chunks the examples are cut into; by default
        :func:`default_backprop_chunks` (from the shape only).  Each chunk
        accumulates its own partial cost and gradients; the partials are
        added in chunk order, so the result depends on the inputs and
        ``n_chunks`` but never on the number of threads.
    n_threads : int, optional
        Numba threads for this call.  By default, what
        :func:`numba.get_num_threads` says in the calling thread.  Several
        chunks are spread over the threads; a single chunk (fewer than 256
        examples by default) is shared out block by block instead: rows of
        the block for the forward pass and the deltas, inputs for
        Xᵀ δ_h, with each element computed exactly as on one thread.  A
        chunk with fewer than 2**18 multiply-adds in X W_h (n·m·d) runs on
        one thread: too little work to share.  No BLAS is called: all
        products are vectorised loops.

    Returns
    -------
    BackpropResult
        Named tuple ``(cost, grad_W_h, grad_b_h, grad_W_out, grad_b_out)``
        with shapes (), (m, d), (d,), (d, t), (t,), all in the (promoted)
        dtype of the inputs.  The cost follows :func:`fastbp.cost`
        (tiny-clamped logarithms, zero-weight terms exactly zero, summed in
        float64, rounded once at the end); for n = 0 the cost is the
        penalty alone and the data gradients are zero.
    """
    ready = _ready((X, W_h, b_h, W_out, b_out, Y))
    if ready and n_chunks is None and n_threads is None and type(l2) is float:
        m, d = W_h.shape
        # A minibatch step with default options, on one thread (too little work to
        # share, or one thread to share it with; only then is the thread count asked,
        # for it costs a microsecond): one compiled call checks what the validated
        # path below would check, and runs the step or declines.
        if X.shape[0] * m * d < SHARED_STEP_MIN_MULTIPLY_ADDS or numba.get_num_threads() == 1:
            dtype = X.dtype
            t = b_out.shape[0]
            g_W_h, g_b_h, g_W_out, g_b_out = _empty_gradients(m, d, t, dtype)
            answer, cost = _kernels_step._plain_step(
                X, Y, W_h, b_h, W_out, b_out, l2, _TINY[dtype], _kept_workspace(dtype),
                _NO_COUNTS, g_W_h, g_b_h, g_W_out, g_b_out, False,
            )  # fmt: skip
            if answer == _kernels_step.PLAIN_STEP_NEEDS_WORKSPACE:
                answer, cost = _kernels_step._plain_step(
                    X, Y, W_h, b_h, W_out, b_out, l2, _TINY[dtype],
                    _workspace(dtype, m, d, t, 1), _NO_COUNTS, g_W_h, g_b_h, g_W_out, g_b_out,
                    False,
                )  # fmt: skip
            if answer == _kernels_step.PLAIN_STEP_DONE:
                # tuple.__new__ skips the named tuple's Python-level __new__ (0.2 µs a step).
                fields = (dtype.type(cost), g_W_h, g_b_h, g_W_out, g_b_out)
                return _new_tuple(BackpropResult, fields)
    if not ready:  # network_arrays, without asking _ready again
        X, W_h, b_h, W_out, b_out, Y = _converted_network_arrays(X, W_h, b_h, W_out, b_out, Y)
    require_targets_in_unit_interval(Y)
    l2 = check_l2(l2)
    n_threads = check_n_threads(n_threads)
    n, m = X.shape
    d, t = W_out.shape
    if n_chunks is None:
        n_chunks = _default_backprop_chunks(n, m, d, t, X.dtype.itemsize)
    else:
        n_chunks = positive_int(n_chunks, "n_chunks", or_none=True)
        if n_chunks > 1:
            require_fits(
                f"the partial gradients of n_chunks={n_chunks}",
                (n_chunks, m * d + d + t * d + t),
                X.dtype,
            )
    return _backprop_prepared(X, Y, W_h, b_h, W_out, b_out, l2, n_chunks, n_threads)
