"""L-BFGS on the digits, in memory and on a 2-worker LocalCluster; SGD for comparison.

The split is ``fastbp train``'s (seed-1 permutation, 20 % held out).  The
network is its 64-100-10 with l2 = 0.01; L-BFGS runs at most --iterations
iterations, SGD uses ``fastbp train``'s defaults (200 epochs, eta 0.02,
minibatches of 32).  The Dask run puts the training inputs in 4 blocks of
rows, persisted on a LocalCluster of 2 worker processes with 1 thread each.

    python benchmarks/dask_lbfgs_digits.py            # the measurement
    python benchmarks/dask_lbfgs_digits.py --smoke    # a few iterations and epochs: it runs

Run it under ``taskset`` to pin it (workers inherit the affinity).  Needs
fastbp[dask]; not an asv benchmark.
"""

import argparse
import math
import time

import numpy as np

from fastbp._tools import train as fastbp_train
from fastbp.datasets import load_digits
from fastbp.mlp import MLP

#: The settings of `fastbp train`, which the SGD side of this comparison repeats.
TRAIN = fastbp_train.DEFAULTS


def accuracy(model, X, y):
    return float(np.mean(model.predict(X) == y))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100, help="L-BFGS maxiter (default 100)")
    parser.add_argument("--blocks", type=int, default=4, help="Dask blocks of rows (default 4)")
    parser.add_argument(
        "--workers", type=int, default=2, help="LocalCluster worker processes (default 2)"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="5 iterations, 3 SGD epochs: check it runs"
    )
    args = parser.parse_args()
    iterations = 5 if args.smoke else args.iterations
    sgd_epochs = 3 if args.smoke else TRAIN["epochs"]

    X, y = load_digits()
    train, test = fastbp_train._split(len(y), TRAIN["seed"])
    X_train, y_train, X_test, y_test = X[train], y[train], X[test], y[test]
    lbfgs = dict(
        n_hidden=TRAIN["hidden"],
        epochs=iterations,
        l2=TRAIN["l2"],
        seed=TRAIN["seed"],
        solver="lbfgs",
    )
    print(
        f"digits: {len(train)} training, {len(test)} held out; 64-{TRAIN['hidden']}-10, "
        f"l2 {TRAIN['l2']}, seed {TRAIN['seed']}"
    )
    rows = []

    # Warm the kernels (compiled or loaded from the cache) outside the timings.
    MLP(**{**lbfgs, "epochs": 1}).fit(X_train[:64], y_train[:64])
    MLP(
        n_hidden=TRAIN["hidden"],
        epochs=1,
        eta=TRAIN["eta"],
        minibatch_size=TRAIN["minibatch_size"],
        seed=0,
    ).fit(X_train[:64], y_train[:64])

    start = time.perf_counter()
    in_memory = MLP(**lbfgs).fit(X_train, y_train)
    rows.append(
        (
            "L-BFGS, NumPy",
            accuracy(in_memory, X_test, y_test),
            f"{len(in_memory.history_['cost'])} iterations",
            time.perf_counter() - start,
        )
    )

    import dask.array as da
    from distributed import Client, LocalCluster

    import fastbp.dask

    with (
        LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        block = math.ceil(len(train) / args.blocks)
        Xd = client.persist(da.from_array(X_train, chunks=(block, -1)))
        yd = client.persist(da.from_array(y_train, chunks=block))
        # Each worker loads the kernels once: one evaluation before the timing.
        start = time.perf_counter()
        W = [a.copy() for a in (in_memory.W_h, in_memory.b_h, in_memory.W_out, in_memory.b_out)]
        Y = da.from_array(np.eye(10)[y_train], chunks=(block, -1))
        fastbp.dask.backprop(Xd, Y, *W, l2=TRAIN["l2"])
        warm = time.perf_counter() - start
        start = time.perf_counter()
        on_dask = MLP(**lbfgs).fit(Xd, yd)
        seconds = time.perf_counter() - start
        predicted = on_dask.predict(da.from_array(X_test, chunks=(math.ceil(len(test) / 2), -1)))
        dask_accuracy = float(np.mean(predicted.compute() == y_test))
        difference = max(
            float(np.max(np.abs(a - b)))
            for a, b in zip(
                (on_dask.W_h, on_dask.b_h, on_dask.W_out, on_dask.b_out),
                (in_memory.W_h, in_memory.b_h, in_memory.W_out, in_memory.b_out),
            )
        )
        rows.append(
            (
                f"L-BFGS, Dask ({len(Xd.chunks[0])} blocks, {args.workers} workers)",
                dask_accuracy,
                f"{len(on_dask.history_['cost'])} iterations",
                seconds,
            )
        )

    start = time.perf_counter()
    sgd = MLP(
        n_hidden=TRAIN["hidden"],
        epochs=sgd_epochs,
        eta=TRAIN["eta"],
        minibatch_size=TRAIN["minibatch_size"],
        l2=TRAIN["l2"],
        seed=TRAIN["seed"],
    ).fit(X_train, y_train)
    rows.append(
        (
            "SGD (fastbp train's defaults)",
            accuracy(sgd, X_test, y_test),
            f"{sgd_epochs} epochs",
            time.perf_counter() - start,
        )
    )

    print(f"{'solver':<40} {'held-out':>9} {'steps':>16} {'wall s':>8}")
    for name, acc, steps, seconds in rows:
        print(f"{name:<40} {acc:>9.4f} {steps:>16} {seconds:>8.2f}")
    print(f"Dask workers' first evaluation (kernels loaded): {warm:.2f} s, not in the Dask row")
    print(f"largest |weight difference|, Dask against NumPy L-BFGS: {difference:.3g}")


if __name__ == "__main__":
    main()
