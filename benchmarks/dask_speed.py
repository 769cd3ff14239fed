"""fastbp.dask.backprop on a local cluster against fastbp.backprop in memory.

Medians of interleaved rounds, and where each call's CPU time went:

    python benchmarks/dask_speed.py             # 60000x784x100x10, float64, 6 blocks, 9 rounds
    python benchmarks/dask_speed.py --n 6000    # a quick smoke run

One distributed.LocalCluster of 2 worker processes x 1 thread, each worker
on one Numba thread (NUMBA_NUM_THREADS=1, checked), stays up for the whole
run, and every round times, in an order that rotates from round to round,
each after 0.25 s idle:

* "in-memory": fastbp.backprop(X, Y, ..., n_threads=1) in this process;
* "dask 1x1": fastbp.dask.backprop with every block held by one worker and
  the call's tasks restricted to it;
* "dask 2x1": the same on blocks spread over both workers (half each).

The three share one time window and one set of processes, so a slow drift
of a shared machine, or Dask's own background work (its idle second worker,
scheduler and nannies), weighs on all three alike; the figures are medians
of each round's own ratios: overhead = dask 1x1 / in-memory and scaling =
dask 1x1 / dask 2x1.  The blocks are scattered to the workers once, before
timing, each block of Y next to its block of X, and copied once on their
worker (aligned, as data a worker reads itself: see benchmarks/bench_dask.py's
scattered); --as-sent adds "dask 1x1 as sent", the blocks as they arrived,
which fastbp.dask copies on every call when they are not aligned.

Each call's CPU time is read from every thread of the cluster's processes
and this one: the workers' executor threads (fastbp's kernels), the
workers' other threads (event loops, Dask's profiler and monitors) and this
process's (client, scheduler, nannies).  On c usable cores no call can
take less than its CPU time / c, which bounds the scaling that CPU time
allows here.  Needs fastbp[dask]; not an asv benchmark
(benchmarks/bench_dask.py is)."""

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

#: Where a thread's CPU time is counted, by process and thread.
CPU_PARTS = ("executor threads", "workers' other threads", "this process")


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


def executor_thread_ids():
    """Native ids of this Dask worker's task threads (run in each worker)."""
    import threading

    return [t.native_id for t in threading.enumerate() if "Dask-Default-Threads" in t.name]


def thread_cpu(processes):
    """{(process label, native thread id): CPU seconds} of the threads of ``processes``.

    Read from Linux's per-thread schedstat (nanoseconds); elsewhere from
    psutil, whose thread times count in clock ticks (10 ms on Linux).
    """
    seconds = {}
    for label, process in processes.items():
        try:
            thread_ids = os.listdir(f"/proc/{process.pid}/task")
        except OSError:  # no /proc
            for thread in process.threads():
                seconds[label, thread.id] = thread.user_time + thread.system_time
            continue
        for thread_id in thread_ids:
            try:
                with open(f"/proc/{process.pid}/task/{thread_id}/schedstat") as f:
                    seconds[label, int(thread_id)] = int(f.read().split()[0]) * 1e-9
            except OSError:  # the thread ended in between
                continue
    return seconds


def cpu_by_part(before, after, executor_ids):
    """CPU seconds between two :func:`thread_cpu` readings, by :data:`CPU_PARTS`."""
    parts = dict.fromkeys(CPU_PARTS, 0.0)
    for key, seconds in after.items():
        label, thread_id = key
        spent = seconds - before.get(key, 0.0)
        if label == "this process":
            parts["this process"] += spent
        elif thread_id in executor_ids:
            parts["executor threads"] += spent
        else:
            parts["workers' other threads"] += spent
    return parts


def spread(values):
    """``median (quartiles q1–q3)`` of ``values``, or the value alone for one round."""
    if len(values) < 2:
        return f"{values[0]:.3f}"
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return f"{q2:.3f} (quartiles {q1:.3f}–{q3:.3f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=60000, help="examples (default 60000)")
    parser.add_argument("--m", type=int, default=784)
    parser.add_argument("--d", type=int, default=100)
    parser.add_argument("--t", type=int, default=10)
    parser.add_argument("--blocks", type=int, default=6, help="blocks of rows (default 6)")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (default 9)")
    parser.add_argument(
        "--as-sent",
        action="store_true",
        help="also time one worker on the blocks as they arrived (not copied once on the worker)",
    )
    args = parser.parse_args()

    import dask
    import distributed
    import numba
    import numpy as np
    import psutil  # a dependency of distributed

    import fastbp
    from fastbp import dask as fastbp_dask
    from fastbp._tools.timing import schedulable_cpus

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

    with one_numba_thread_per_worker():
        cluster = distributed.LocalCluster(
            processes=True,
            n_workers=2,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
        )
    with cluster, distributed.Client(cluster, set_as_default=False) as client:
        worker_threads = numba_threads_of_workers(client)
        if worker_threads != [1]:
            sys.exit(f"dask_speed: the workers run {worker_threads} Numba threads, not 1")
        first, _ = sorted(client.scheduler_info()["workers"])
        on_one = scattered(client, X, Y, args.blocks, workers=[first])
        on_both = scattered(client, X, Y, args.blocks)

        def dask_call(data, workers):
            def call(weights):
                delayed = fastbp_dask.backprop(*data, *weights, compute=False)
                future = client.compute(delayed, workers=workers, allow_other_workers=False)
                return future.result()

            return call

        calls = {
            "in-memory": lambda weights: fastbp.backprop(X, Y, *weights, n_threads=1),
            "dask 1x1": dask_call(on_one, [first]),
            "dask 2x1": dask_call(on_both, None),
        }
        if args.as_sent:
            as_sent = scattered(client, X, Y, args.blocks, workers=[first], realigned=False)
            calls["dask 1x1 as sent"] = dask_call(as_sent, [first])
        # Warm up (kernels loaded in both workers); these results are compared below.
        results = {name: call(weights) for name, call in calls.items()}

        processes = {"this process": psutil.Process()}
        for address, pid in client.run(os.getpid).items():
            processes[address] = psutil.Process(pid)
        executor_ids = {
            thread for ids in client.run(executor_thread_ids).values() for thread in ids
        }
        # Dask names a call's tasks by its inputs: consecutive calls of one
        # kind take different weights, so none finds its predecessor's result.
        turns = {name: alternating_weights(weights) for name in calls}
        times = {name: [] for name in calls}
        cpu = {name: [] for name in calls}
        names = list(calls)
        for k in range(args.rounds):
            for name in names[k % len(names) :] + names[: k % len(names)]:
                call_weights = next(turns[name])
                time.sleep(0.25)
                before = thread_cpu(processes)
                start = time.perf_counter()
                calls[name](call_weights)
                times[name].append(time.perf_counter() - start)
                cpu[name].append(cpu_by_part(before, thread_cpu(processes), executor_ids))

    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "none started in this process (every timed fastbp call ran on one thread)"
    cores = schedulable_cpus()
    print(
        f"shape n x m x d x t: {n} x {m} x {d} x {t}, float64, "
        f"{args.blocks} blocks, {args.rounds} rounds"
    )
    print(f"CPU: {cpu_model()}")
    print(f"cores usable: {cores} (os.cpu_count() = {os.cpu_count()})")
    print(
        f"Numba {numba.__version__}: threading layer {layer}; NUMBA_NUM_THREADS here "
        f"{numba.config.NUMBA_NUM_THREADS}, in the workers {worker_threads}"
    )
    print(
        f"Python {platform.python_version()}, NumPy {np.__version__}, Dask {dask.__version__}, "
        f"distributed {distributed.__version__}, fastbp {fastbp.__version__}"
    )
    print(
        "one LocalCluster of 2 worker processes x 1 thread; dask 1x1 runs on one of them "
        "(all its blocks there), dask 2x1 on both"
    )
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        rounds = ", ".join(f"{v * 1e3:.1f}" for v in values)
        print(f"{name:18s} median {medians[name] * 1e3:8.1f} ms   rounds: {rounds}")
    for name in calls:
        if name != "in-memory":
            ratios = [a / b for a, b in zip(times[name], times["in-memory"])]
            print(f"overhead {name} / in-memory = {spread(ratios)}, rounds' own ratios")
    scaling = [a / b for a, b in zip(times["dask 1x1"], times["dask 2x1"])]
    print(f"scaling  dask 1x1 / dask 2x1  = {spread(scaling)}, rounds' own ratios")

    print("CPU per call, means over the rounds, ms:")
    print(f"  {'':18s}" + "".join(f"{part:>24s}" for part in CPU_PARTS) + f"{'all':>8s}")
    total = {}
    for name in calls:
        row = [statistics.fmean(c[part] for c in cpu[name]) for part in CPU_PARTS]
        total[name] = sum(row)
        print(
            f"  {name:18s}" + "".join(f"{v * 1e3:24.1f}" for v in row) + f"{total[name] * 1e3:8.1f}"
        )
    # A round's 2-worker call cannot take less than its CPU time / cores, so
    # that round's scaling cannot exceed its 1-worker time over that floor.
    bounds = [
        one / (sum(spent.values()) / cores)
        for one, spent in zip(times["dask 1x1"], cpu["dask 2x1"])
    ]
    print(
        f"dask 2x1 used {total['dask 2x1'] * 1e3:.0f} ms of CPU a call: on {cores} cores no call "
        f"takes less than {total['dask 2x1'] / cores * 1e3:.0f} ms; the highest scaling this "
        f"CPU time allows here = {spread(bounds)}, rounds' own bounds"
    )

    dask_names = [name for name in calls if name != "in-memory"]
    same = all(
        np.asarray(a).tobytes() == np.asarray(b).tobytes()
        for name in dask_names[1:]
        for a, b in zip(results["dask 1x1"], results[name])
    )
    print(f"every dask call bitwise equal to dask 1x1: {same}")
    for field, a, b in zip(results["in-memory"]._fields, results["in-memory"], results["dask 1x1"]):
        a, b = np.asarray(a), np.asarray(b)
        scale = np.max(np.abs(a)) or 1.0
        print(
            f"  {field:11s} max |dask - in-memory| / max |in-memory| = "
            f"{np.max(np.abs(a - b)) / scale:.2e}"
        )


if __name__ == "__main__":
    main()
