"""fastbp.dask.backprop on local clusters against fastbp.backprop in memory.

Medians of interleaved rounds:


    python benchmarks/dask_speed.py             # 60000x784x100x10, float64, 6 blocks, 5 rounds
    python benchmarks/dask_speed.py --n 6000    # a quick smoke run

One cluster at a time (a LocalCluster of 1 worker process x 1 thread, then
one of 2 worker processes x 1 thread); in each round its call and the
in-memory call, fastbp.backprop(X, Y, ..., n_threads=1), run one after the
other, each after 0.25 s idle.  Each worker runs on one Numba thread
(NUMBA_NUM_THREADS=1, checked); the blocks are scattered to the workers
once, before timing, each block of Y next to its block of X, and copied
once on the worker (aligned, as data a worker reads itself).  One more
phase, "dask 1x1 as sent", times the blocks as they arrived, which
fastbp.dask copies on every call (see benchmarks/bench_dask.py's
scattered).  Prints each cluster's time over the in-memory time of its own
phase (the overhead; also the median of the rounds' own ratios) and
scaling = dask 1x1 / dask 2x1.  Needs
fastbp[dask]; not an asv benchmark (benchmarks/bench_dask.py is)."""

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

# Run as a script: the repository root on the path, for the asv suite's helpers.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.bench_dask import (  # noqa: E402
    alternating_weights,
    numba_threads_of_workers,
    one_numba_thread_per_worker,
    scattered,
)


def cpu_model():
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if ":" in line:
                    key, value = (part.strip() for part in line.split(":", 1))
                    fields.setdefault(key, value)
    except OSError:
        return platform.processor() or "unknown"
    name = fields.get("model name", "unknown")
    return f"{name} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=60000, help="examples (default 60000)")
    parser.add_argument("--m", type=int, default=784)
    parser.add_argument("--d", type=int, default=100)
    parser.add_argument("--t", type=int, default=10)
    parser.add_argument("--blocks", type=int, default=6, help="blocks of rows (default 6)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    args = parser.parse_args()

    import dask
    import distributed
    import numba
    import numpy as np

    import fastbp
    from fastbp import dask as fastbp_dask

    n, m, d, t = args.n, args.m, args.d, args.t
    rng = np.random.default_rng([n, m, d, t])
    X = rng.random((n, m))
    W_h = rng.standard_normal((m, d)) / np.sqrt(m)
    b_h = 0.1 * rng.standard_normal(d)
    W_out = rng.standard_normal((d, t)) / np.sqrt(d)
    b_out = 0.1 * rng.standard_normal(t)
    Y = np.zeros((n, t))
    Y[np.arange(n), rng.integers(0, t, n)] = 1.0
    weights = (W_h, b_h, W_out, b_out)

    # One cluster at a time (idle workers of another cluster would share the
    # cores), the in-memory step interleaved with the cluster's rounds.
    in_memory = lambda: fastbp.backprop(X, Y, *weights, n_threads=1)  # noqa: E731
    results = {"in-memory": in_memory()}
    times = {}
    worker_threads = {}
    phases = (("dask 1x1", 1, True), ("dask 2x1", 2, True), ("dask 1x1 as sent", 1, False))
    for name, n_workers, realigned in phases:
        with one_numba_thread_per_worker():
            cluster = distributed.LocalCluster(
                processes=True,
                n_workers=n_workers,
                threads_per_worker=1,
                host="127.0.0.1",
                dashboard_address=None,
            )
        with cluster, distributed.Client(cluster, set_as_default=False) as client:
            X_dask, Y_dask = scattered(client, X, Y, args.blocks, realigned=realigned)

            def call(client=client, X_dask=X_dask, Y_dask=Y_dask, weights=weights):
                delayed = fastbp_dask.backprop(X_dask, Y_dask, *weights, compute=False)
                return client.compute(delayed).result()

            results[name] = call()  # warm up: kernels loaded in every worker
            turns = alternating_weights(weights)
            timed = lambda call=call, turns=turns: call(weights=next(turns))  # noqa: E731
            worker_threads[name] = numba_threads_of_workers(client)
            if worker_threads[name] != [1]:
                sys.exit(f"dask_speed: the workers run {worker_threads[name]} Numba threads, not 1")
            phase = {name: timed, f"in-memory ({name} phase)": in_memory}
            for label in phase:
                times[label] = []
            for _ in range(args.rounds):
                for label, function in phase.items():
                    time.sleep(0.25)
                    start = time.perf_counter()
                    function()
                    times[label].append(time.perf_counter() - start)

    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "none started in this process (every timed fastbp call ran on one thread)"
    print(
        f"shape n x m x d x t: {n} x {m} x {d} x {t}, float64, "
        f"{args.blocks} blocks, {args.rounds} rounds"
    )
    print(f"CPU: {cpu_model()}")
    print(f"cores usable: {len(os.sched_getaffinity(0))} (os.cpu_count() = {os.cpu_count()})")
    print(
        f"Numba {numba.__version__}: threading layer {layer}; NUMBA_NUM_THREADS here "
        f"{numba.config.NUMBA_NUM_THREADS}, in the workers {worker_threads}"
    )
    print(
        f"Python {platform.python_version()}, NumPy {np.__version__}, Dask {dask.__version__}, "
        f"distributed {distributed.__version__}, fastbp {fastbp.__version__}"
    )
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        rounds = ", ".join(f"{v * 1e3:.1f}" for v in values)
        print(f"{name:35s} median {medians[name] * 1e3:9.1f} ms   rounds: {rounds}")
    for name, _, _ in phases:
        # Also the median of each round's own ratio: the two calls of a round
        # run back to back, so slow drifts of a shared machine cancel.
        paired = statistics.median(
            a / b for a, b in zip(times[name], times[f"in-memory ({name} phase)"])
        )
        print(
            f"{name} / in-memory (same phase) = "
            f"{medians[name] / medians[f'in-memory ({name} phase)']:.3f} "
            f"(median of the rounds' ratios {paired:.3f})"
        )
    print(f"scaling  = dask 1x1 / dask 2x1  = {medians['dask 1x1'] / medians['dask 2x1']:.3f}")

    same = all(
        np.asarray(a).tobytes() == np.asarray(b).tobytes()
        for name, _, _ in phases[1:]
        for a, b in zip(results["dask 1x1"], results[name])
    )
    print(f"every dask phase bitwise equal to dask 1x1: {same}")
    for field, a, b in zip(results["in-memory"]._fields, results["in-memory"], results["dask 1x1"]):
        a, b = np.asarray(a), np.asarray(b)
        scale = np.max(np.abs(a)) or 1.0
        print(
            f"  {field:11s} max |dask - in-memory| / max |in-memory| = "
            f"{np.max(np.abs(a - b)) / scale:.2e}"
        )


if __name__ == "__main__":
    main()
