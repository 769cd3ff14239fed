""":class:`fastbp.MLP` on Dask arrays: L-BFGS through :func:`fastbp.dask.backprop`, lazy prediction.

Dask is imported here only inside the functions that are given Dask
arrays (``import fastbp`` never imports Dask).  The checks are
:meth:`fastbp.MLP.fit`'s own (:mod:`fastbp._validate`), applied to what a
Dask array shows without computing it (dtype, shape, chunks); its values
(NaN, negative labels, the number of classes) are checked in one pass by
:func:`check_values`.
"""

import sys

import numpy as np

from ._core import forward
from ._solvers import argmax_rows, one_hot
from ._validate import (
    as_float_array,
    as_labels,
    check_label_array,
    finite_float_array,
    require_equal,
    require_labels_non_negative,
)


def is_dask_array(value):
    """Whether ``value`` is a Dask array, decided without importing Dask."""
    return (
        "dask" in sys.modules
        and type(value).__module__.startswith("dask.")
        and hasattr(value, "dask")
        and hasattr(value, "chunks")
    )


def dask_inputs(X, name):
    """Check a Dask array of inputs as a NumPy one is checked, without computing it.

    Returns it with its columns in one chunk (each block holds whole rows).
    NaN and infinity are not looked for here: that needs the values
    (:func:`check_values`).
    """
    as_float_array(np.empty(0, dtype=X.dtype), name, None)  # the dtype, with the usual message
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got a {X.ndim}-D array of shape {X.shape}")
    if any(np.isnan(size) for size in X.chunks[0]):
        raise ValueError(
            f"{name} has row chunks of unknown size; call {name}.compute_chunk_sizes() first"
        )
    if X.numblocks[1] > 1:
        X = X.rechunk({1: -1})
    return X


def dask_labels(y, n, row_chunks):
    """Training labels as a Dask int64 array cut like X's rows (a NumPy ``y`` checked whole)."""
    import dask.array as da

    if is_dask_array(y):
        check_label_array(y, "y", n)
        return y.astype(np.int64).rechunk((row_chunks,))
    return da.from_array(as_labels(y, "y", n), chunks=(row_chunks,))


def check_values(X, y):
    """One pass over the data for what NumPy inputs have checked directly; return max(y).

    ``ValueError`` for NaN or infinity in X or a negative label; the
    largest label is None when there are no rows.
    """
    import dask
    import dask.array as da

    if not X.shape[0]:
        return None
    finite, smallest, largest = dask.compute(da.isfinite(X).all(), y.min(), y.max())
    if not finite:
        raise ValueError("X contains NaN or infinity")
    require_labels_non_negative(smallest, "y")
    return int(largest)


def _one_hot_block(labels, n_classes, dtype):
    """:func:`fastbp._solvers.one_hot` of one block of a Dask array of labels."""
    return one_hot(np.asarray(labels, dtype=np.int64), n_classes, dtype)


def evaluator(X, y, n_classes, l2, dtype):
    """``evaluate(W_h, b_h, W_out, b_out)`` for L-BFGS: :func:`fastbp.dask.backprop` on X.

    The one-hot targets are built block by block, chunked like X's rows.
    Every evaluation computes the graph of X again.
    """
    from . import dask as fastbp_dask

    X = X.astype(dtype)
    Y = y.map_blocks(
        _one_hot_block,
        n_classes,
        dtype,
        new_axis=1,
        chunks=(y.chunks[0], (n_classes,)),
        dtype=dtype,
        meta=np.empty((0, 0), dtype),
    )

    def evaluate(W_h, b_h, W_out, b_out):
        return fastbp_dask.backprop(
            X, Y, W_h, b_h, W_out, b_out, l2=l2, split_every=None, compute=True
        )

    return evaluate


def _proba_block(X, W_h, b_h, W_out, b_out, dtype):
    """:meth:`MLP.predict_proba` of one block of rows, exactly as for a NumPy array."""
    X = finite_float_array(X, "X", 2)
    return forward(X.astype(dtype, copy=False), W_h, b_h, W_out, b_out)[1]


def predict_proba(X, weights, dtype):
    """Lazy :meth:`MLP.predict_proba` of a Dask ``X``, with copies of ``weights`` as they are."""
    W_h, _, W_out, _ = weights
    X = dask_inputs(X, "X")
    require_equal("X", X.shape[1], "W_h", W_h.shape[0], "columns (m)", "rows (m)")
    return X.map_blocks(
        _proba_block,
        *(a.copy() for a in weights),
        dtype,
        chunks=(X.chunks[0], (W_out.shape[1],)),
        dtype=dtype,
        meta=np.empty((0, 0), dtype),
    )


def predict(proba):
    """Lazy :meth:`MLP.predict` from the lazy :func:`predict_proba`."""
    return proba.map_blocks(argmax_rows, drop_axis=1, dtype=np.int64, meta=np.empty((0,), np.int64))
