"""The fused training step on Dask arrays: data bigger than memory, or spread over a cluster.

``fastbp.dask.backprop`` takes ``X`` (n, m) and ``Y`` (n, t) as dask arrays
cut into blocks of rows, runs the fused step of :func:`fastbp.backprop` on
each block (in whatever Dask scheduler is active: threads, processes, a
``distributed`` cluster) and adds the blocks' partial costs and gradients
in a tree whose shape depends on the number of blocks and ``split_every``
alone.  Every task is a pure function of its inputs, so the result has the
same bits on any scheduler, any number of workers and threads, and when
tasks are stolen by other workers, retried, or recomputed after a worker
died.

Importing :mod:`fastbp` does not import Dask; this module needs it
(``pip install 'fastbp[dask]'``).
"""

import math

try:
    import dask
    import dask.array as da
    from dask.base import tokenize
except ImportError as error:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "fastbp.dask needs Dask (dask.array); install it with: pip install 'fastbp[dask]'"
    ) from error

import numpy as np

from ._backprop import _data_terms, _with_penalty, default_backprop_chunks
from ._core import network_arrays
from ._validate import (
    as_float_array,
    boolean,
    check_l2,
    contiguous,
    positive_int,
    require_equal,
    require_targets_in_unit_interval,
)

__all__ = ["DEFAULT_SPLIT_EVERY", "backprop"]

#: Partial results added together by one task of the reduction tree, by
#: default.  With k blocks the tree has ⌈log_s k⌉ levels; each of its tasks
#: adds up to s partials, left to right in block order.
DEFAULT_SPLIT_EVERY = 8

# How many chunk sizes an error message lists before it abbreviates.
_SHOWN_CHUNKS = 6


def _chunk_list(sizes):
    """``(100, 100, 50)``, abbreviated when long: ``(100, 100, 100, …, 50; 40 blocks)``."""
    sizes = tuple(int(s) if not math.isnan(s) else s for s in sizes)
    if len(sizes) <= _SHOWN_CHUNKS:
        return repr(sizes)
    head = ", ".join(map(repr, sizes[: _SHOWN_CHUNKS - 1]))
    return f"({head}, …, {sizes[-1]!r}; {len(sizes)} blocks)"


def _dask_operand(array, name):
    """Check ``array``: a 2-D float dask array cut by rows only; return a (0, columns) stand-in.

    The stand-in, an empty NumPy array of ``array``'s dtype and column
    count, lets :func:`fastbp._core.network_arrays` check the columns and
    promote the dtype exactly as :func:`fastbp.backprop` does.
    """
    if not isinstance(array, da.Array):
        kind = f"{type(array).__module__}.{type(array).__qualname__}"
        raise TypeError(
            f"{name} is a {kind}, not a dask array: for arrays in memory call "
            f"fastbp.backprop, or wrap it with dask.array.from_array({name}, "
            "chunks=(rows_per_block, -1))"
        )
    as_float_array(np.empty(0, array.dtype), name, None)  # TypeError naming the argument
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D, got a {array.ndim}-D dask array of shape {array.shape}"
        )
    row_chunks, column_chunks = array.chunks
    if any(math.isnan(size) for size in row_chunks + column_chunks):
        raise ValueError(
            f"{name} has unknown chunk sizes (NaN), as a dask DataFrame's to_dask_array() "
            f"gives; compute them first with {name} = {name}.compute_chunk_sizes(), or "
            "make the array with to_dask_array(lengths=True)"
        )
    if len(column_chunks) > 1:
        raise ValueError(
            f"{name} has {len(column_chunks)} chunks across its {array.shape[1]} columns "
            f"{_chunk_list(column_chunks)}; each block must hold whole rows: "
            f"{name} = {name}.rechunk({{1: -1}})"
        )
    return np.empty((0, array.shape[1]), array.dtype)


def _check_split_every(split_every):
    if split_every is None:
        return DEFAULT_SPLIT_EVERY
    return positive_int(split_every, "split_every", at_least=2, or_none=True)


def _element_aligned(block):
    """``block``, or an aligned copy where its data does not start on a multiple of its itemsize.

    A block received from another process can start at any byte of the
    message it came in; Numba compiles misaligned arrays as a type of their
    own, and the step runs markedly slower on them.
    """
    if block.ctypes.data % block.dtype.itemsize:
        return block.copy()
    return block


def _block_terms(X_block, Y_block, weights, rows):
    """One block's data terms: (cost as a float64 Python float, ∂W_h, ∂b_h, ∂W_out, ∂b_out).

    The block is made C-contiguous in the weights' dtype here, on the
    worker; its number of chunks comes from its own shape, so the result
    depends on the block and the weights alone.
    """
    W_h, b_h, W_out, b_out = weights
    dtype = W_h.dtype
    X_block = _element_aligned(contiguous(X_block, dtype))
    Y_block = _element_aligned(contiguous(Y_block, dtype))
    m, d = W_h.shape
    t = W_out.shape[1]
    if X_block.shape != (rows, m) or Y_block.shape != (rows, t):
        raise ValueError(
            f"a block of X has shape {X_block.shape} and its block of Y {Y_block.shape}, "
            f"but the arrays' chunks promise ({rows}, {m}) and ({rows}, {t})"
        )
    require_targets_in_unit_interval(Y_block, "Y (a block of it)")
    n_chunks = default_backprop_chunks(rows, m, d, t, dtype.itemsize)
    return _data_terms(X_block, Y_block, W_h, b_h, W_out, b_out, n_chunks, None)


def _add_partials(*partials):
    """Σ of consecutive blocks' partials, left to right: ((p₀ + p₁) + p₂) + ….

    New arrays: the inputs, which Dask may hold for other tasks or for a
    retry, are never written to.
    """
    total = [a + b for a, b in zip(partials[0], partials[1])]
    for partial in partials[2:]:
        total[0] = total[0] + partial[0]
        for k in range(1, 5):
            total[k] += partial[k]
    return tuple(total)


def _finish(weights, l2, *partials):
    """The :class:`fastbp.BackpropResult` from the tree's last level of partials.

    The root task: the last level added as :func:`_add_partials` adds (one
    task fewer per call than a sum task and a finishing task), then λW and
    the penalty added once, in place: to that sum's new arrays, or to
    copies of a single partial (which Dask may hold for a retry).
    """
    W_h, _, W_out, _ = weights
    if len(partials) == 1:
        cost, *gradients = partials[0]
        gradients = [g.copy() for g in gradients]
    else:
        cost, *gradients = _add_partials(*partials)
    return _with_penalty(cost, *gradients, W_h, W_out, l2)


def backprop(X, Y, W_h, b_h, W_out, b_out, l2=0.0, *, split_every=None, compute=True):
    """Cost and all four gradients of the fused step over dask arrays of examples.

    The same step as :func:`fastbp.backprop`, computed block by block: each
    block of rows gives a partial cost and partial gradients (the fused
    step without the penalty), the partials are added in a tree fixed by
    the chunks and ``split_every``, then λW and the penalty are added once.

    Parameters
    ----------
    X : dask.array.Array, shape (n, m)
        Inputs, one example per row, cut into blocks of rows only (one
        chunk across the columns).  float32 or float64.
    Y : dask.array.Array, shape (n, t)
        Targets, cut into the same blocks of rows as ``X``, in [0, 1] (NaN
        propagates).  Each block's values are checked in its task, so a
        target outside [0, 1] raises ``ValueError`` when the result is
        computed.
    W_h : array_like, shape (m, d)
    b_h : array_like, shape (d,)
    W_out : array_like, shape (d, t)
    b_out : array_like, shape (t,)
        Weights and biases, in memory (NumPy).  Validated and promoted as
        :func:`fastbp.backprop` does: float32 or float64 only, mixed
        precisions promoted as NumPy promotes them, and each block is
        converted to the common dtype in its task.  They travel to the
        workers once per call: one key of the task graph holds them and
        every block's task refers to it.
    l2 : float, default 0.0
        λ ≥ 0 of the L2 penalty (λ/2)(Σ W_h² + Σ W_out²), added to the cost
        once, after the reduction, with λ W_h and λ W_out added to the
        weight gradients.
    split_every : int, optional
        How many partials one task of the reduction tree adds (at least 2;
        :data:`DEFAULT_SPLIT_EVERY` by default).  Each task adds
        consecutive partials left to right in block order, and each level of
        the tree does the same with the tasks below it.  The bits of the
        result depend on the chunks and ``split_every``, never on the
        scheduler, the workers or their threads.
    compute : bool, default True
        Compute now, with :func:`dask.compute` (the active scheduler: a
        ``distributed.Client``, or Dask's configured default), or return a
        ``dask.delayed`` object whose ``compute()`` gives the result.

    Returns
    -------
    BackpropResult or dask.delayed.Delayed
        ``(cost, grad_W_h, grad_b_h, grad_W_out, grad_b_out)`` with shapes
        (), (m, d), (d,), (d, t), (t,), NumPy values in the (promoted) dtype;
        the cost is summed in float64 and rounded once.  For n = 0 the cost
        is the penalty alone and the data gradients are zero, as in
        :func:`fastbp.backprop`.

    Raises
    ------
    TypeError
        ``X`` or ``Y`` not a dask array; a dtype other than float32 or
        float64 (naming the argument).
    ValueError
        Shapes that do not agree; ``X`` and ``Y`` cut into different blocks
        of rows; more than one chunk across the columns; unknown (NaN)
        chunk sizes; ``l2`` < 0; ``split_every`` < 2.

    Notes
    -----
    Block i's partials are ``fastbp.backprop``'s data terms for that block
    alone, with ``default_backprop_chunks`` of the block's shape.  A single
    block therefore gives exactly the bits of ``fastbp.backprop`` on the
    whole array; blocks that are the in-memory call's own chunks give its
    bits too when ``split_every`` is at least the number of blocks (one
    task adds them all, in order, as the in-memory call does).
    """
    X_stub = _dask_operand(X, "X")
    Y_stub = _dask_operand(Y, "Y")
    _, W_h, b_h, W_out, b_out, _ = network_arrays(X_stub, W_h, b_h, W_out, b_out, Y_stub)
    require_equal("X", X.shape[0], "Y", Y.shape[0], "rows (n)", "rows (n)")
    if X.chunks[0] != Y.chunks[0]:
        raise ValueError(
            f"X and Y must be cut into the same blocks of rows: X has row chunks "
            f"{_chunk_list(X.chunks[0])} but Y has {_chunk_list(Y.chunks[0])}; "
            "rechunk one like the other, e.g. Y = Y.rechunk({0: X.chunks[0]}) "
            "or X = X.rechunk({0: Y.chunks[0]})"
        )
    l2 = check_l2(l2)
    split_every = _check_split_every(split_every)
    compute = boolean(compute, "compute")
    dtype = W_h.dtype
    m, t = X.shape[1], Y.shape[1]

    weights = (W_h, b_h, W_out, b_out)
    weights = dask.delayed(
        weights, name=f"fastbp-backprop-weights-{tokenize(*weights)}", traverse=False
    )
    token = tokenize(X.name, Y.name, weights.key, l2, split_every)
    rows = [int(size) for size in X.chunks[0]]
    if rows:
        # Optimised together, so that work X and Y share runs once.
        X, Y = dask.optimize(X, Y)
        X_blocks = X.to_delayed(optimize_graph=False)[:, 0]
        Y_blocks = Y.to_delayed(optimize_graph=False)[:, 0]
    else:  # no blocks at all: one empty block stands for them
        rows = [0]
        X_blocks = [np.empty((0, m), dtype)]
        Y_blocks = [np.empty((0, t), dtype)]
    level = [
        dask.delayed(_block_terms, pure=True)(
            x, y, weights, size, dask_key_name=(f"fastbp-backprop-block-{token}", i)
        )
        for i, (x, y, size) in enumerate(zip(X_blocks, Y_blocks, rows))
    ]
    depth = 0
    while len(level) > split_every:  # the last level is added in the root task
        depth += 1
        groups = [level[i : i + split_every] for i in range(0, len(level), split_every)]
        level = [
            group[0]
            if len(group) == 1
            else dask.delayed(_add_partials, pure=True)(
                *group, dask_key_name=(f"fastbp-backprop-sum-{token}", depth, j)
            )
            for j, group in enumerate(groups)
        ]
    result = dask.delayed(_finish, pure=True)(
        weights, l2, *level, dask_key_name=f"fastbp-backprop-{token}"
    )
    if not compute:
        return result
    (value,) = dask.compute(result)
    return value
