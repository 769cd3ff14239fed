"""A whole epoch of minibatch gradient descent in one compiled call.

:func:`sgd_epoch` is the loop of :meth:`fastbp.MLP.fit` over one epoch:
for each full minibatch, :func:`fastbp.backprop` and the update
W ← W − η (∇J + λW), b ← b − η ∇b.  It runs in compiled code from the
first step to the last, so a step pays neither a Python call, nor the
validation, nor the packing of the weights, nor the allocation of its
results.  Its result has the bits of that per-step loop.
"""

import numpy as np

from . import _kernels_epoch
from ._backprop import _NO_COUNTS, default_backprop_chunks
from ._tuning import DELTA_H_BLOCK_HIDDEN, STEP_BLOCK_EXAMPLES
from ._validate import (
    as_float_array,
    check_eta,
    check_l2,
    positive_int,
    require_equal,
    require_fits,
    require_targets_in_unit_interval,
)

__all__ = ["sgd_epoch"]

_WEIGHT_NDIMS = (("W_h", 2), ("b_h", 1), ("W_out", 2), ("b_out", 1))


def _check_weights(arrays):
    """The four weight arrays: writeable ndarrays of one float dtype, shapes that agree."""
    for (name, ndim), array in zip(_WEIGHT_NDIMS, arrays):
        if not isinstance(array, np.ndarray):
            raise TypeError(
                f"{name} must be a numpy.ndarray (it is updated in place), "
                f"got {type(array).__name__}"
            )
        as_float_array(array, name, ndim)
        if not array.flags.writeable:
            raise ValueError(f"{name} is read-only; sgd_epoch updates the weights in place")
    dtypes = {array.dtype for array in arrays}
    if len(dtypes) > 1:
        listed = ", ".join(f"{name} {a.dtype}" for (name, _), a in zip(_WEIGHT_NDIMS, arrays))
        raise TypeError(
            f"the weights must share one dtype (they are updated in place), got {listed}"
        )
    W_h, b_h, W_out, b_out = arrays
    require_equal("W_h", W_h.shape[1], "b_h", b_h.shape[0], "columns (d)", "length (d)")
    require_equal("W_h", W_h.shape[1], "W_out", W_out.shape[0], "columns (d)", "rows (d)")
    require_equal("W_out", W_out.shape[1], "b_out", b_out.shape[0], "columns (t)", "length (t)")
    for a in range(4):
        for b in range(a + 1, 4):
            if np.may_share_memory(arrays[a], arrays[b]):
                raise ValueError(
                    f"{_WEIGHT_NDIMS[a][0]} and {_WEIGHT_NDIMS[b][0]} share memory; "
                    "each weight array must be separate"
                )


def _check_data(array, name, dtype):
    """X or Y in the weights' dtype, C-contiguous; never a lossy conversion."""
    array = as_float_array(array, name, 2)
    if array.dtype.itemsize > dtype.itemsize:
        raise TypeError(
            f"{name} has dtype {array.dtype} but the weights are {dtype}; the step runs in the "
            f"weights' dtype: convert {name} first, e.g. {name}.astype(np.{dtype})"
        )
    if not (array.flags.c_contiguous and array.dtype == dtype):
        require_fits(f"a C-contiguous {dtype} copy of {name}", array.shape, dtype)
    return np.ascontiguousarray(array, dtype=dtype)


def _check_no_aliasing(weights, others, function="sgd_epoch"):
    """Raise ``ValueError`` if a weight shares memory with X, Y or order (as passed).

    The weights are written while X, Y and order are read: a weight laid over
    one of them would change the data under the epoch.
    """
    for (name, _), weight in zip(_WEIGHT_NDIMS, weights):
        for other_name, other in others:
            if isinstance(other, np.ndarray) and np.may_share_memory(weight, other):
                raise ValueError(
                    f"{name} shares memory with {other_name}; {function} updates the weights in "
                    f"place while it reads {other_name}: pass a copy, e.g. {name}.copy()"
                )


def _check_order(order, n):
    order = np.asarray(order)
    if order.dtype.kind not in "iu":
        raise TypeError(f"order must hold integer example indices, got dtype {order.dtype}")
    if order.ndim != 1:
        raise ValueError(f"order must be 1-D (example indices), got shape {order.shape}")
    if order.size and (order.min() < 0 or order.max() >= n):
        bad = order.min() if order.min() < 0 else order.max()
        raise ValueError(f"order holds index {bad}, outside the {n} rows of X (0..{n - 1})")
    return np.ascontiguousarray(order, dtype=np.int64)


def sgd_epoch(X, Y, W_h, b_h, W_out, b_out, order, eta, minibatch_size, l2=0.0):
    """One epoch of minibatch gradient descent, the weights updated **in place**.

    For s = 0, 1, …, ``len(order) // minibatch_size − 1``, with B =
    ``minibatch_size`` and rows ``order[s·B : (s+1)·B]`` of X and Y::

        cost, gW_h, gb_h, gW_out, gb_out = fastbp.backprop(X[rows], Y[rows], W_h, b_h,
                                                           W_out, b_out, l2)
        W_h -= eta * gW_h;  b_h -= eta * gb_h;  W_out -= eta * gW_out;  b_out -= eta * gb_out

    (the gradients of ``backprop`` already hold λW), all in one compiled
    call.  The weights stay in the kernels' packed layout from the first
    step to the last and are written back once at the end.  The weights
    after the call have the bits of that loop in Python (with ``eta`` and
    ``l2`` rounded to the weights' dtype, as NumPy rounds them there),
    whatever the number of threads; the examples left over after the last full
    minibatch take no step, as in :class:`fastbp.MLP`.

    Parameters
    ----------
    X : array_like, shape (n, m)
        Inputs, one example per row.
    Y : array_like, shape (n, t)
        Targets (one-hot rows, or any values in [0, 1]).  NaN propagates;
        any other value outside [0, 1] (±inf included) raises ``ValueError``.
    W_h : numpy.ndarray, shape (m, d)
    b_h : numpy.ndarray, shape (d,)
    W_out : numpy.ndarray, shape (d, t)
    b_out : numpy.ndarray, shape (t,)
        The weights, updated in place: writeable arrays, all float32 or
        all float64, none sharing memory with another or with X, Y or
        ``order``.  Any memory layout.
        The step runs in their dtype: float32 X or Y is promoted for
        float64 weights; float64 X or Y with float32 weights is refused
        (convert it first) rather than rounded silently.
    order : array_like of int, shape (k,)
        The examples' order: indices into the rows of X (a permutation of
        ``range(n)`` for an epoch, but repeats and subsets are allowed, in
        any length from ``minibatch_size`` on).  Negative indices are
        refused (not read from the end, as NumPy would).
    eta : float
        Learning rate η > 0.  Gradients are sums over the minibatch.
    minibatch_size : int
        Examples per step, B ≥ 1, at most ``len(order)``.
    l2 : float, default 0.0
        λ ≥ 0 of the L2 penalty on W_h and W_out (not the biases), as in
        :func:`fastbp.backprop`.

    Returns
    -------
    float
        The sum of the steps' costs (each J + (λ/2) Σ W² of its minibatch
        at the weights before its update, in float64, as
        :func:`fastbp.backprop` computes it before rounding to the
        weights' dtype), summed in step order.

    Raises
    ------
    TypeError
        A weight that is not an ndarray, dtypes that are not float32 or
        float64 or differ between the weights, float64 data with float32
        weights, or a non-integer ``order``.
    ValueError
        Shapes that disagree, read-only weights, weights that overlap each
        other or X, Y or ``order``, indices outside X, targets outside
        [0, 1], NaN, ±inf or values out of range for ``eta`` or ``l2``, or
        ``minibatch_size`` larger than ``len(order)``.

    Notes
    -----
    The step runs on the calling thread (one Numba thread), the kernel
    releases the GIL, and Python threads may train separate models side
    by side.  Threads sharing one minibatch belong to
    :func:`fastbp.backprop`; :meth:`fastbp.MLP.fit` uses it in place of
    this function when its ``n_threads`` would share the step.
    """
    weights = (W_h, b_h, W_out, b_out)
    _check_weights(weights)
    _check_no_aliasing(weights, (("X", X), ("Y", Y), ("order", order)))
    dtype = W_h.dtype
    m, d = W_h.shape
    t = W_out.shape[1]
    X = _check_data(X, "X", dtype)
    Y = _check_data(Y, "Y", dtype)
    require_equal("X", X.shape[1], "W_h", W_h.shape[0], "columns (m)", "rows (m)")
    require_equal("X", X.shape[0], "Y", Y.shape[0], "rows (n)", "rows (n)")
    require_equal("Y", Y.shape[1], "W_out", t, "columns (t)", "columns (t)")
    require_targets_in_unit_interval(Y)
    order = _check_order(order, X.shape[0])
    eta = check_eta(eta)
    minibatch_size = positive_int(minibatch_size, "minibatch_size")
    if minibatch_size > order.shape[0]:
        raise ValueError(
            f"minibatch_size ({minibatch_size}) is larger than order ({order.shape[0]} "
            "examples): the epoch would take no step"
        )
    l2 = check_l2(l2)
    # The kernel writes to C-contiguous arrays; others are updated through a copy.
    work = [np.ascontiguousarray(a) for a in weights]
    epoch_cost, _ = _run_epoch(X, Y, order, minibatch_size, work, eta, l2, _NO_COUNTS)
    for original, updated in zip(weights, work):
        if updated is not original:
            np.copyto(original, updated)
    return float(epoch_cost)


def _run_epoch(X, Y, order, minibatch_size, weights, eta, l2, correct, step_penalties=True):
    """:func:`sgd_epoch`'s compiled call on checked arguments; returns (Σ costs, Σ data costs).

    Without ``step_penalties``, Σ costs leaves out each step's L2 penalty
    and is Σ data costs: the weights and the data's costs are the same.

    ``weights`` are C-contiguous and updated in place; X and Y are
    C-contiguous in their dtype; ``order`` is int64; ``eta`` and ``l2`` are
    checked floats.  ``correct`` is empty, or an int64 array of at least
    :func:`fastbp.default_backprop_chunks` (B, m, d, t) slots, which then
    get the counts of correctly classified examples (see
    :func:`fastbp._kernels_epoch._sgd_epoch`).
    """
    W_h, b_h, W_out, b_out = weights
    dtype = W_h.dtype
    m, d = W_h.shape
    t = W_out.shape[1]
    n_chunks = default_backprop_chunks(minibatch_size, m, d, t, dtype.itemsize)
    if n_chunks == 1:  # every minibatch under 256 examples: the kernel without chunk sums
        return _kernels_epoch._sgd_epoch_one_chunk(
            X, Y, order, minibatch_size, W_h, b_h, W_out, b_out, dtype.type(eta),
            dtype.type(l2), l2 != 0.0, l2, step_penalties, float(np.finfo(dtype).tiny),
            STEP_BLOCK_EXAMPLES, DELTA_H_BLOCK_HIDDEN, correct,
        )  # fmt: skip
    return _kernels_epoch._sgd_epoch(
        X,
        Y,
        order,
        minibatch_size,
        W_h,
        b_h,
        W_out,
        b_out,
        dtype.type(eta),
        dtype.type(l2),
        l2 != 0.0,
        l2,
        step_penalties,
        float(np.finfo(dtype).tiny),
        n_chunks,
        STEP_BLOCK_EXAMPLES,
        DELTA_H_BLOCK_HIDDEN,
        correct,
    )
