"""Public functions: validate and normalise, then call a compiled kernel.

Shapes follow the seed, examples as rows: ``X`` (n, m), ``W_h`` (m, d),
``b_h`` (d,), ``W_out`` (d, t), ``b_out`` (t,), ``Y`` (n, t),
``A_h`` (n, d), ``A_out`` (n, t), ``delta_out`` (n, t).

Input rules for every function here (see :mod:`fastbp._validate`): float32
or float64 only, mixed precisions promoted as NumPy does, any memory layout
accepted, inputs never modified, n = 0 allowed.
"""

import numpy as np

from . import _kernels
from ._threads import _chunk_limit, _numba_threads, _parallel_launch
from ._tuning import (
    ENGINE_BLOCK_I,
    ENGINE_BLOCK_J,
    ENGINE_BLOCK_K,
    GRAD_W_OUT_MAX_CHUNKS,
    GRAD_W_OUT_MAX_PARTIAL_BYTES,
    GRAD_W_OUT_MIN_CHUNK_EXAMPLES,
    GRAD_W_OUT_MIN_SHARED_MULTIPLY_ADDS,
)
from ._validate import (
    _FLOAT_DTYPES,
    as_float_array,
    check_itemsize,
    check_n_threads,
    common_dtype,
    contiguous,
    non_negative_int,
    one_of,
    positive_int,
    require_equal,
    require_fits,
    require_same_shape,
    require_targets_in_unit_interval,
)

__all__ = [
    "GRAD_W_OUT_METHODS",
    "cost",
    "default_n_chunks",
    "delta_out",
    "forward",
    "grad_W_out",
    "grad_W_out_blocked",
    "grad_W_out_matmul",
    "grad_W_out_outer",
    "grad_b_out",
    "sigmoid",
]

#: Names accepted by ``grad_W_out(..., method=...)``.
GRAD_W_OUT_METHODS = ("outer", "blocked", "matmul")

# The defaults of grad_W_out_blocked's block_n, block_d and block_t are the tile engine's
# blocks, and the chunking of its examples (:func:`default_n_chunks`) the smallest of three
# limits; all in fastbp._tuning.


def sigmoid(Z):
    """Logistic sigmoid φ(z) = 1 / (1 + e^{−z}), elementwise.

    Parameters
    ----------
    Z : array_like of float32 or float64, any shape

    Returns
    -------
    numpy.ndarray
        φ(Z), same shape and dtype as ``Z``.  Computed without overflow and
        without floating-point warnings for every finite z (±1e4 included):
        for z < 0 it uses e^{z} / (1 + e^{z}).  NaN gives NaN, ±inf gives 1
        and 0.
    """
    Z = as_float_array(Z, "Z", None)
    require_fits("sigmoid's result", Z.shape, Z.dtype)
    flat = contiguous(Z, Z.dtype, "Z").reshape(-1)
    out = np.empty_like(flat)
    _kernels._sigmoid_flat(flat, out)
    return out.reshape(Z.shape)


def forward(X, W_h, b_h, W_out, b_out):
    """Forward pass of the m-d-t sigmoid network, examples as rows.

    A_h = φ(X W_h + b_h) and A_out = φ(A_h W_out + b_out).

    Parameters
    ----------
    X : array_like, shape (n, m)
        Inputs, one example per row.
    W_h : array_like, shape (m, d)
        Hidden-layer weights (the seed's w_{i,j}^{(h)}, i ≥ 1).
    b_h : array_like, shape (d,)
        Hidden-layer biases (w_{0,j}^{(h)}).
    W_out : array_like, shape (d, t)
        Output-layer weights (w_{i,j}^{(out)}, i ≥ 1).
    b_out : array_like, shape (t,)
        Output-layer biases (w_{0,j}^{(out)}).

    Returns
    -------
    A_h : numpy.ndarray, shape (n, d)
        Hidden activations.
    A_out : numpy.ndarray, shape (n, t)
        Output activations.

    Notes
    -----
    Any of n, m, d, t may be 0: empty sums are 0, as in NumPy (m = 0 gives
    A_h = φ(b_h) on every row).
    """
    X, W_h, b_h, W_out, b_out = network_arrays(X, W_h, b_h, W_out, b_out)
    n, d, t = X.shape[0], W_h.shape[1], W_out.shape[1]
    require_fits("forward's result A_h", (n, d), X.dtype)
    require_fits("forward's result A_out", (n, t), X.dtype)
    return _kernels._forward(X, W_h, b_h, W_out, b_out)


_FLOAT32, _FLOAT64 = _FLOAT_DTYPES
_NDARRAY = np.ndarray


def _ready(arrays):
    """True when a network's arrays already are what the kernels take, and their shapes agree.

    ``arrays`` is (X, W_h, b_h, W_out, b_out) or (X, W_h, b_h, W_out,
    b_out, Y).  C-contiguous ndarrays of one float dtype, with the right
    dimensions and sizes: then :func:`network_arrays` has nothing to
    convert and returns them as they are.  A minibatch step's Python
    overhead is mostly this, so it is written out array by array, without
    a loop.
    """
    X, W_h, b_h, W_out, b_out = arrays[:5]
    with_targets = len(arrays) == 6
    Y = arrays[5] if with_targets else X  # X: every check below already holds for it
    if (
        type(X) is not _NDARRAY
        or type(W_h) is not _NDARRAY
        or type(b_h) is not _NDARRAY
        or type(W_out) is not _NDARRAY
        or type(b_out) is not _NDARRAY
        or type(Y) is not _NDARRAY
    ):
        return False
    dtype = X.dtype
    # Identity, not equality: NumPy's native float dtypes are singletons, and
    # anything else (a byte-swapped dtype) takes the full path.
    if (
        (dtype is not _FLOAT32 and dtype is not _FLOAT64)
        or W_h.dtype is not dtype
        or b_h.dtype is not dtype
        or W_out.dtype is not dtype
        or b_out.dtype is not dtype
        or Y.dtype is not dtype
    ):
        return False
    if not (
        X.flags.c_contiguous
        and W_h.flags.c_contiguous
        and b_h.flags.c_contiguous
        and W_out.flags.c_contiguous
        and b_out.flags.c_contiguous
        and Y.flags.c_contiguous
    ):
        return False
    try:  # a shape of another length is another number of dimensions
        (n, m), (m_h, d), (d_b,), (d_out, t), (t_b,) = (
            X.shape,
            W_h.shape,
            b_h.shape,
            W_out.shape,
            b_out.shape,
        )
        n_y, t_y = Y.shape if with_targets else (n, t)
    except ValueError:
        return False
    return m == m_h and d == d_b and d == d_out and t == t_b and n == n_y and t == t_y


def network_arrays(X, W_h, b_h, W_out, b_out, Y=None):
    """Validate a network's arrays and return them C-contiguous in one dtype.

    Checks dtypes, dimensions and that every pair of sizes that must agree
    does; promotes mixed precision as NumPy does.  With ``Y``, also checks
    it against ``X`` (rows) and ``W_out`` (columns) and returns it last.
    Any of n, m, d, t may be 0.
    """
    arrays = (X, W_h, b_h, W_out, b_out) if Y is None else (X, W_h, b_h, W_out, b_out, Y)
    if _ready(arrays):
        return arrays
    return _converted_network_arrays(X, W_h, b_h, W_out, b_out, Y)


def _converted_network_arrays(X, W_h, b_h, W_out, b_out, Y=None):
    """:func:`network_arrays` for arrays :func:`_ready` has said no to."""
    X = as_float_array(X, "X", 2)
    W_h = as_float_array(W_h, "W_h", 2)
    b_h = as_float_array(b_h, "b_h", 1)
    W_out = as_float_array(W_out, "W_out", 2)
    b_out = as_float_array(b_out, "b_out", 1)
    arrays = [X, W_h, b_h, W_out, b_out]
    require_equal("X", X.shape[1], "W_h", W_h.shape[0], "columns (m)", "rows (m)")
    require_equal("W_h", W_h.shape[1], "b_h", b_h.shape[0], "columns (d)", "length (d)")
    require_equal("W_h", W_h.shape[1], "W_out", W_out.shape[0], "columns (d)", "rows (d)")
    require_equal("W_out", W_out.shape[1], "b_out", b_out.shape[0], "columns (t)", "length (t)")
    if Y is not None:
        Y = as_float_array(Y, "Y", 2)
        require_equal("X", X.shape[0], "Y", Y.shape[0], "rows (n)", "rows (n)")
        require_equal("Y", Y.shape[1], "W_out", W_out.shape[1], "columns (t)", "columns (t)")
        arrays.append(Y)
    dtype = common_dtype(*arrays)
    names = ("X", "W_h", "b_h", "W_out", "b_out", "Y")
    return tuple(contiguous(array, dtype, name) for array, name in zip(arrays, names))


def _output_pair(A_out, Y):
    A_out = as_float_array(A_out, "A_out", 2)
    Y = as_float_array(Y, "Y", 2)
    require_same_shape("A_out", A_out, "Y", Y)
    dtype = common_dtype(A_out, Y)
    return contiguous(A_out, dtype, "A_out"), contiguous(Y, dtype, "Y")


def delta_out(A_out, Y):
    """Output error δ_out = A_out − Y (the seed's δ^{(out)}).

    For sigmoid outputs and the logistic cost this is ∂J/∂z^{(out)}.

    Parameters
    ----------
    A_out : array_like, shape (n, t)
        Output activations.
    Y : array_like, shape (n, t)
        Targets, one-hot or any values in [0, 1].

    Returns
    -------
    numpy.ndarray, shape (n, t)
        A new array; neither input is modified.
    """
    A_out, Y = _output_pair(A_out, Y)
    require_fits("delta_out's result", A_out.shape, A_out.dtype)
    return _kernels._delta_out(A_out, Y)


def cost(A_out, Y):
    """The seed's logistic cost J, summed over examples and outputs.

    J = −Σ_i Σ_k [ y log(a) + (1 − y) log(1 − a) ].

    Parameters
    ----------
    A_out : array_like, shape (n, t)
        Output activations, in [0, 1].
    Y : array_like, shape (n, t)
        Targets in [0, 1] (NaN allowed: it propagates).  Any other value
        outside [0, 1], ±inf included, raises ``ValueError``: the logistic
        cost of such a target is not a cost.

    Returns
    -------
    numpy.float32 or numpy.float64
        J in the dtype of the inputs (0 for n = 0).  The sum is accumulated
        in float64 in a fixed order, then rounded once.

    Notes
    -----
    J stays finite when an output is exactly 0 or 1:

    * a term whose weight (y or 1 − y) is exactly 0 contributes exactly 0,
      so a = y = 1 costs 0 rather than 0·log(0) = NaN;
    * inside a logarithm, an argument in [0, tiny) is read as ``tiny``, the
      smallest normal number of the dtype (``np.finfo(dtype).tiny``), so a
      confidently wrong output costs at most −log(tiny) (about 708.4 in
      float64, 87.3 in float32) instead of infinity.

    Outputs outside [0, 1] and NaN (in ``A_out`` or ``Y``) give NaN, as the
    plain formula would.
    """
    A_out, Y = _output_pair(A_out, Y)
    require_targets_in_unit_interval(Y)
    tiny = float(np.finfo(A_out.dtype).tiny)
    return A_out.dtype.type(_kernels._cost(A_out, Y, tiny))


def _weighted_rows(delta_out, sample_weight):
    """δ_out with row i multiplied by ``sample_weight[i]`` (a new array), or δ_out itself.

    The weights are converted to δ_out's dtype and each product is rounded
    once, so every way of summing sees the same weighted rows.
    """
    if sample_weight is None:
        return delta_out
    weights = np.asarray(sample_weight)
    if weights.dtype.kind not in "iuf" or weights.dtype.itemsize > 8:
        raise TypeError(
            f"sample_weight has dtype {weights.dtype}; expected real numbers "
            "(float32, float64 or integers)"
        )
    if weights.ndim != 1 or weights.shape[0] != delta_out.shape[0]:
        raise ValueError(
            f"sample_weight must be 1-D with one weight per example (n = "
            f"{delta_out.shape[0]}), got shape {weights.shape}"
        )
    return delta_out * weights.astype(delta_out.dtype)[:, None]


def _gradient_pair(A_h, delta_out, sample_weight=None):
    A_h = as_float_array(A_h, "A_h", 2)
    delta_out = as_float_array(delta_out, "delta_out", 2)
    require_equal("A_h", A_h.shape[0], "delta_out", delta_out.shape[0], "rows (n)", "rows (n)")
    dtype = common_dtype(A_h, delta_out)
    require_fits("grad_W_out's result", (A_h.shape[1], delta_out.shape[1]), dtype)
    delta_out = contiguous(delta_out, dtype, "delta_out")
    return contiguous(A_h, dtype, "A_h"), _weighted_rows(delta_out, sample_weight)


def grad_W_out_outer(A_h, delta_out, *, sample_weight=None):
    """∂J/∂W_out as the seed writes it: one outer product per example, summed.

    For each example i in order, G[j, k] += A_h[i, j] · delta_out[i, k]
    (seed §6–7, literally): every element is a plain left-to-right sum of n
    rounded products.

    Parameters
    ----------
    A_h : array_like, shape (n, d)
        Hidden activations, one example per row.
    delta_out : array_like, shape (n, t)
        Output errors δ_out = A_out − Y.
    sample_weight : array_like, shape (n,), optional
        Per-example weights w_i: the sum becomes Σ_i w_i a^{[i]} ⊗ δ^{[i]}
        = (A_h)ᵀ diag(w) δ_out.  Each row of δ_out is multiplied by its
        weight first (one rounding, in the dtype), so the three ways sum the
        same weighted rows (:func:`fastbp.dp_backprop` clips this way).

    Returns
    -------
    numpy.ndarray, shape (d, t)
        ∂J/∂W_out = Σ_i a^{[i]} ⊗ δ^{[i]} = (A_h)ᵀ δ_out, C-contiguous, in the
        (promoted) dtype of the inputs; zeros when n = 0.
    """
    A_h, delta_out = _gradient_pair(A_h, delta_out, sample_weight)
    return _kernels._grad_W_out_outer(A_h, delta_out)


def grad_W_out_matmul(A_h, delta_out, *, sample_weight=None):
    """∂J/∂W_out as one matrix product, (A_h)ᵀ δ_out, inside compiled code.

    The product is the BLAS ``gemm`` that Numba reaches through SciPy; its
    summation order (and so its last bits) is the BLAS library's.

    Parameters
    ----------
    A_h : array_like, shape (n, d)
        Hidden activations, one example per row.
    delta_out : array_like, shape (n, t)
        Output errors δ_out = A_out − Y.
    sample_weight : array_like, shape (n,), optional
        Per-example weights w_i: the sum becomes Σ_i w_i a^{[i]} ⊗ δ^{[i]}
        = (A_h)ᵀ diag(w) δ_out.  Each row of δ_out is multiplied by its
        weight first (one rounding, in the dtype), so the three ways sum the
        same weighted rows (:func:`fastbp.dp_backprop` clips this way).

    Returns
    -------
    numpy.ndarray, shape (d, t)
        ∂J/∂W_out = Σ_i a^{[i]} ⊗ δ^{[i]} = (A_h)ᵀ δ_out, C-contiguous, in the
        (promoted) dtype of the inputs; zeros when n = 0.
    """
    A_h, delta_out = _gradient_pair(A_h, delta_out, sample_weight)
    return _kernels._grad_W_out_matmul(A_h, delta_out)


def default_n_chunks(n, d, t, itemsize):
    """How many chunks of examples the blocked gradient cuts n examples into.

    Depends only on the shape and dtype, never on the number of threads, so
    the result of :func:`grad_W_out_blocked` does not either.

    Parameters
    ----------
    n, d, t : int
        Examples, hidden units, outputs.
    itemsize : int
        Bytes per element (4 or 8).

    Returns
    -------
    int
        ``min(16, n // 4096)``, at least 1, and fewer where 16 partial
        (d, t) gradients would take more than 64 MiB.

    Raises
    ------
    TypeError
        A size or ``itemsize`` that is not an integer.
    ValueError
        A negative size, or ``itemsize`` other than 4 or 8.

    Notes
    -----
    The chunk count fixes the order of the sums, so it is part of the
    result's bits: :func:`grad_W_out_blocked` with ``n_chunks`` given
    explicitly repeats another call's summation order.
    """
    n, d, t = (non_negative_int(v, name) for v, name in ((n, "n"), (d, "d"), (t, "t")))
    itemsize = check_itemsize(itemsize)
    return _default_n_chunks(n, d, t, itemsize)


def _default_n_chunks(n, d, t, itemsize):
    """:func:`default_n_chunks` without the checks."""
    return _chunk_limit(
        n,
        d * t * itemsize,
        GRAD_W_OUT_MIN_CHUNK_EXAMPLES,
        GRAD_W_OUT_MAX_CHUNKS,
        GRAD_W_OUT_MAX_PARTIAL_BYTES,
    )


def grad_W_out_blocked(
    A_h,
    delta_out,
    *,
    block_n=ENGINE_BLOCK_I,
    block_d=ENGINE_BLOCK_J,
    block_t=ENGINE_BLOCK_K,
    n_chunks=None,
    n_threads=None,
    sample_weight=None,
):
    """∂J/∂W_out by a cache-blocked, vectorised loop, optionally threaded.

    The examples are cut into ``n_chunks`` chunks.  Within a chunk the sum is
    tiled: ``block_n`` examples × ``block_d`` hidden units × ``block_t``
    outputs at a time; each block of A_h is packed into contiguous panels
    and register tiles (2 vectors of hidden units × up to 6 outputs) keep
    their accumulators in vector registers across the block's examples
    (:mod:`fastbp._simd`).  Every element is a chain of one fused
    multiply-add per example in example order, so within a chunk the
    result does not depend on the block sizes; each chunk accumulates into
    its own partial gradient and the partials are added in chunk order.
    The result therefore depends on the inputs and ``n_chunks`` only, never
    on the block sizes or the number of threads: 1 and 2 threads give the
    same bits.

    Parameters
    ----------
    A_h : array_like, shape (n, d)
        Hidden activations, one example per row.
    delta_out : array_like, shape (n, t)
        Output errors δ_out = A_out − Y.
    block_n, block_d, block_t : int, default 256, 256, 48
        Block sizes over examples, hidden units and outputs (cache
        blocking: they change the speed, not the result).
    n_chunks : int, optional
        Chunks of examples; by default :func:`default_n_chunks`.
    n_threads : int, optional
        Numba threads to spread the chunks over for this call.  By default,
        what :func:`numba.get_num_threads` says in the calling thread (set it
        with :func:`numba.set_num_threads` or ``NUMBA_NUM_THREADS``).  A
        single chunk with at least 2**24 multiply-adds (n·d·t) and more than
        ``block_d`` hidden units shares its blocks of hidden units among the
        threads instead, with the same bits.  No BLAS is called inside the
        threads.
    sample_weight : array_like, shape (n,), optional
        Per-example weights w_i: the sum becomes Σ_i w_i a^{[i]} ⊗ δ^{[i]}
        = (A_h)ᵀ diag(w) δ_out.  Each row of δ_out is multiplied by its
        weight first (one rounding, in the dtype), so the three ways sum the
        same weighted rows (:func:`fastbp.dp_backprop` clips this way).

    Returns
    -------
    numpy.ndarray, shape (d, t)
        ∂J/∂W_out = Σ_i a^{[i]} ⊗ δ^{[i]} = (A_h)ᵀ δ_out, C-contiguous, in the
        (promoted) dtype of the inputs; zeros when n = 0.
    """
    A_h, delta_out = _gradient_pair(A_h, delta_out, sample_weight)
    block_n = positive_int(block_n, "block_n")
    block_d = positive_int(block_d, "block_d")
    block_t = positive_int(block_t, "block_t")
    n_threads = check_n_threads(n_threads)
    n, d = A_h.shape
    t = delta_out.shape[1]
    if n_chunks is None:
        n_chunks = _default_n_chunks(n, d, t, A_h.dtype.itemsize)
    else:
        n_chunks = positive_int(n_chunks, "n_chunks", or_none=True)
        if n_chunks > 1:
            require_fits(
                f"the partial gradients of n_chunks={n_chunks}", (n_chunks, d, t), A_h.dtype
            )
    # Same bits either way; the serial kernel skips the thread pool's start-up
    # (and the thread-count lookup) on small problems.
    if n_threads == 1 or (n_chunks == 1 and not _shares_columns(n, d, t, block_d)):
        return _kernels._grad_W_out_blocked_serial(
            A_h, delta_out, n_chunks, block_n, block_d, block_t
        )
    with _numba_threads(n_threads) as threads:
        if threads == 1:
            return _kernels._grad_W_out_blocked_serial(
                A_h, delta_out, n_chunks, block_n, block_d, block_t
            )
        with _parallel_launch():
            if n_chunks == 1:  # one chunk: its column blocks shared out, the same bits
                return _kernels._grad_W_out_blocked_columns_parallel(
                    A_h, delta_out, min(threads, -(-d // block_d)), block_n, block_d, block_t
                )
            return _kernels._grad_W_out_blocked_parallel(
                A_h, delta_out, n_chunks, block_n, block_d, block_t
            )


def _shares_columns(n, d, t, block_d):
    """Whether one chunk of grad_W_out_blocked shares its column blocks among threads.

    At least two blocks of ``block_d`` hidden units, and enough work (n·d·t
    multiply-adds) that threads pay for their start-up.
    """
    return d > block_d and n * d * t >= GRAD_W_OUT_MIN_SHARED_MULTIPLY_ADDS


_GRAD_W_OUT_FUNCTIONS = {
    "outer": grad_W_out_outer,
    "blocked": grad_W_out_blocked,
    "matmul": grad_W_out_matmul,
}


def grad_W_out(A_h, delta_out, method="matmul", *, sample_weight=None, **options):
    """∂J/∂W_out = (A_h)ᵀ δ_out, computed one of three ways.

    Parameters
    ----------
    A_h : array_like, shape (n, d)
        Hidden activations, one example per row.
    delta_out : array_like, shape (n, t)
        Output errors δ_out = A_out − Y.
    method : {"matmul", "outer", "blocked"}, default "matmul"
        ``"outer"``: :func:`grad_W_out_outer`; ``"blocked"``:
        :func:`grad_W_out_blocked`; ``"matmul"``: :func:`grad_W_out_matmul`.
    sample_weight : array_like, shape (n,), optional
        Per-example weights w_i: the sum becomes Σ_i w_i a^{[i]} ⊗ δ^{[i]}
        = (A_h)ᵀ diag(w) δ_out.  Each row of δ_out is multiplied by its
        weight first (one rounding, in the dtype), so the three ways sum the
        same weighted rows (:func:`fastbp.dp_backprop` clips this way).
    **options
        Keyword options of :func:`grad_W_out_blocked` (``method="blocked"`` only).

    Returns
    -------
    numpy.ndarray, shape (d, t)
        ∂J/∂W_out = Σ_i a^{[i]} ⊗ δ^{[i]} = (A_h)ᵀ δ_out, C-contiguous, in the
        (promoted) dtype of the inputs; zeros when n = 0.
    """
    function = _GRAD_W_OUT_FUNCTIONS[one_of(method, "method", GRAD_W_OUT_METHODS)]
    if options and method != "blocked":
        raise TypeError(f"method={method!r} takes no options, got {', '.join(sorted(options))}")
    return function(A_h, delta_out, sample_weight=sample_weight, **options)


def grad_b_out(delta_out):
    """∂J/∂b_out = Σ_i δ^{[i]}, the bias gradient (the seed's w_{0,j}).

    Since z_j = w_{0,j} · 1 + Σ_i a_i w_{i,j}, the bias sees a constant input
    of 1, so its gradient is the weight gradient's formula with a_0 = 1.

    Parameters
    ----------
    delta_out : array_like, shape (n, t)
        Output errors.

    Returns
    -------
    numpy.ndarray, shape (t,)
        Column sums of ``delta_out``, summed in example order; zeros for n = 0.
    """
    delta_out = as_float_array(delta_out, "delta_out", 2)
    return _kernels._grad_b_out(contiguous(delta_out, delta_out.dtype, "delta_out"))
