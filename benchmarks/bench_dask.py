"""The fused step over dask arrays on local clusters, against ``fastbp.backprop`` in memory.

Skipped (NotImplementedError in setup) where Dask and distributed are not
installed (``pip install '.[dask]'``) or the commit has no ``fastbp.dask``.
"""

import contextlib
import itertools
import os

import numpy as np

import fastbp

from .common import ThreadedBenchmark, dataset, measured_seconds, parse_shape, step_flops

#: The seed's MNIST network on the whole training set, float64.
SHAPE = "60000x784x100x10"
#: Blocks of rows the dask arrays are cut into (10000 examples each).
N_BLOCKS = 6
#: (worker processes, threads per worker) of each local cluster.
CLUSTERS = {"dask-1x1": (1, 1), "dask-2x1": (2, 1)}


def scattered(client, X, Y, n_blocks, *, realigned=True, workers=None):
    """X and Y as dask arrays of ``n_blocks`` blocks of rows, already in the workers' memory.

    The blocks are sent to the workers once, round robin over ``workers``
    (addresses; all of the client's workers by default), each block of Y
    to the worker holding the same block of X, so that a timed call moves
    only the weights and the partial results.  A block that arrives from
    another process can start at any byte of its message, and
    ``fastbp.dask.backprop`` copies a block whose data is not aligned to its
    itemsize on every call; with ``realigned`` (the default) each block is
    copied once on its worker, as data a worker reads or computes itself
    is aligned.  Both arrays are returned persisted.
    """
    import dask.array as da

    bounds = np.linspace(0, X.shape[0], n_blocks + 1).astype(int)
    X_blocks = [X[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    Y_blocks = [Y[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    # Keys of their own (hash=False): the same rows scattered twice are two copies.
    X_futures = client.scatter(X_blocks, workers=workers, hash=False)
    where = client.who_has(X_futures)
    holders = [list(where[future.key]) for future in X_futures]
    Y_futures = [
        client.scatter(block, workers=holder, hash=False)
        for block, holder in zip(Y_blocks, holders)
    ]
    if realigned:
        X_futures, Y_futures = (
            [
                client.submit(np.copy, future, workers=holder, pure=False)
                for future, holder in zip(futures, holders)
            ]
            for futures in (X_futures, Y_futures)
        )

    def concatenated(futures, blocks):
        return da.concatenate(
            [da.from_delayed(f, block.shape, block.dtype) for f, block in zip(futures, blocks)]
        )

    # Persisted, as data kept in the cluster's memory is: each block one key,
    # not a task that forwards a future on every call.
    X_dask, Y_dask = client.persist(
        [concatenated(X_futures, X_blocks), concatenated(Y_futures, Y_blocks)]
    )
    return X_dask, Y_dask


def alternating_weights(weights):
    """An endless iterator over ``weights`` and a copy one ulp away, in turn.

    Dask names a call's tasks by its inputs, so a call identical to the
    one just before can find that call's result still in the cluster's
    memory and return it without computing; consecutive timed calls
    therefore never share their inputs.
    """
    twin = tuple(np.nextafter(w, np.inf) for w in weights)
    return itertools.cycle([weights, twin])


@contextlib.contextmanager
def one_numba_thread_per_worker():
    """Worker processes started inside this context run ``NUMBA_NUM_THREADS=1``.

    Set before each worker process starts, through Dask's
    ``distributed.nanny.pre-spawn-environ`` (LocalCluster's ``env`` is
    applied after the worker has imported the parent's main module, and with
    it Numba, whose thread count is then already fixed).  The nanny writes
    those variables into this process's environment as well; this process's
    own setting is put back on the way out, because Numba re-reads it at
    every compilation and refuses a change once its threads have started.
    """
    import dask

    saved = os.environ.get("NUMBA_NUM_THREADS")
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ.NUMBA_NUM_THREADS": "1"}):
            yield
    finally:
        if saved is None:
            os.environ.pop("NUMBA_NUM_THREADS", None)
        else:
            os.environ["NUMBA_NUM_THREADS"] = saved


def numba_threads_of_workers(client):
    """Sorted set of ``numba.config.NUMBA_NUM_THREADS`` over the client's workers."""
    return sorted(set(client.run(lambda: __import__("numba").config.NUMBA_NUM_THREADS).values()))


class DaskStep(ThreadedBenchmark):
    """Cost and four gradients at 60000 × 784 × 100 × 10, float64.

    ``in-memory`` is ``fastbp.backprop`` on one Numba thread; ``dask-WxT``
    is ``fastbp.dask.backprop`` with the data in 6 blocks of 10000 rows
    already held by a ``distributed.LocalCluster`` of W worker processes of
    T threads (each block copied once in its worker: see :func:`scattered`),
    each worker on one Numba thread (``NUMBA_NUM_THREADS=1``).
    A timed call ships the weights, runs the blocks, sums the partials and
    returns the result.  ``dask-1x1`` / ``in-memory`` is Dask's overhead;
    ``dask-1x1`` / ``dask-2x1`` its scaling over two processes.
    """

    params = [["in-memory", *CLUSTERS]]
    param_names = ["implementation"]
    timeout = 600

    cluster = None
    client = None

    def setup(self, implementation):
        n, m, d, t = parse_shape(SHAPE)
        data = dataset(n, d, t, "float64", m=m)
        X, Y, *weights = (data[name] for name in ("X", "Y", "W_h", "b_h", "W_out", "b_out"))
        self.flops = step_flops(n, m, d, t)
        if implementation == "in-memory":
            backprop = getattr(fastbp, "backprop", None)
            if backprop is None:
                raise NotImplementedError("this commit has no fastbp.backprop")
            self.enter_threads(1)
            self.call = lambda: backprop(X, Y, *weights)
        else:
            try:
                import distributed

                from fastbp import dask as fastbp_dask
            except ImportError as error:
                raise NotImplementedError(f"needs Dask (pip install '.[dask]'): {error}") from None
            n_workers, threads = CLUSTERS[implementation]
            with one_numba_thread_per_worker():
                self.cluster = distributed.LocalCluster(
                    processes=True,
                    n_workers=n_workers,
                    threads_per_worker=threads,
                    host="127.0.0.1",
                    dashboard_address=":0",
                )
            self.client = distributed.Client(self.cluster)
            if numba_threads_of_workers(self.client) != [1]:
                raise RuntimeError("the workers did not start on one Numba thread each")
            X_dask, Y_dask = scattered(self.client, X, Y, N_BLOCKS)
            turns = alternating_weights(weights)
            self.call = lambda: fastbp_dask.backprop(X_dask, Y_dask, *next(turns))
        self.call()  # compiled kernels loaded (in every worker: each holds blocks)

    def teardown(self, implementation):
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None
        super().teardown(implementation)

    def time_step(self, implementation):
        self.call()

    def track_gflops(self, implementation):
        return self.flops / measured_seconds(self.call) / 1e9

    track_gflops.unit = "GFLOP/s"
