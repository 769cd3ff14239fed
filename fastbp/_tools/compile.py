"""``fastbp compile`` and ``fastbp cache``: fill, show and empty the compiled-code cache.

``compile_all`` calls every public function once per dtype on small inputs,
once more on two threads where a threaded kernel exists (chunks spread over
threads, and one chunk shared by threads), which compiles every kernel into
the cache (:mod:`fastbp._cache`) ahead of use: for an image build, a cluster's
workers, or CI.
"""

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from .. import _backprop, _cache, _core, _private, _sgd
from .problems import make_problem, step_arrays
from .timing import schedulable_cpus

__all__ = ["CompileRecorder", "compile_all", "run_cache", "run_compile"]

_DTYPES = ("float32", "float64")


def _network(n, m, d, t, dtype):
    """(X, Y, W_h, b_h, W_out, b_out): ``backprop``'s arguments, seeded."""
    return step_arrays(make_problem(n, m, d, t, dtype))


def _calls(dtype, threads):
    """(name, call) for every kernel path of the public API in ``dtype``.

    Kernels specialise on types, not shapes, so one call per dispatched
    kernel is enough; the shapes only have to select it.
    """
    rng = np.random.default_rng(0)
    X, Y, W_h, b_h, W_out, b_out = _network(8, 5, 3, 2, dtype)
    # Operands made with NumPy, so that only the timed calls compile.
    A_h = rng.random((8, 3)).astype(dtype)
    A_out = rng.random((8, 2)).astype(dtype)
    delta = A_out - Y
    # The threaded step: 256 rows make 2 chunks; one chunk is shared among
    # threads from n·m·d ≥ 2**18 multiply-adds on.
    step = _network(32, 8, 3, 2, dtype)
    chunked = _network(256, 8, 40, 20, dtype)
    shared = _network(64, 64, 64, 10, dtype)
    A_wide = rng.random((9000, 20)).astype(dtype)  # 2 chunks of the blocked gradient
    # One chunk's column blocks shared among threads: d > block_d, n·d·t ≥ 2**24.
    A_square = rng.random((4096, 64)).astype(dtype) if threads > 1 else None
    d_wide = rng.random((9000, 3)).astype(dtype)
    calls = [
        ("sigmoid", lambda: _core.sigmoid(X)),
        ("forward", lambda: _core.forward(X, W_h, b_h, W_out, b_out)),
        ("delta_out", lambda: _core.delta_out(A_out, Y)),
        ("cost", lambda: _core.cost(A_out, Y)),
        ("grad_b_out", lambda: _core.grad_b_out(delta)),
        ("grad_W_out_outer", lambda: _core.grad_W_out_outer(A_h, delta)),
        ("grad_W_out_matmul", lambda: _core.grad_W_out_matmul(A_h, delta)),
        ("grad_W_out_blocked", lambda: _core.grad_W_out_blocked(A_wide, d_wide, n_threads=1)),
        ("delta_h", lambda: _backprop.delta_h(delta, W_out, A_h)),
        ("grad_W_h", lambda: _backprop.grad_W_h(X, A_h)),
        ("grad_b_h", lambda: _backprop.grad_b_h(A_h)),
        ("l2_penalty", lambda: _backprop.l2_penalty(W_h, W_out, 0.5)),
        ("backprop", lambda: _backprop.backprop(*step, l2=0.1, n_threads=1)),
        (
            "sgd_epoch",
            lambda: _sgd.sgd_epoch(
                *step[:2], *[w.copy() for w in step[2:]], np.arange(32), 0.1, 8, l2=0.1
            ),
        ),
        (
            "sgd_epoch (chunks)",
            lambda: _sgd.sgd_epoch(
                *chunked[:2], *[w.copy() for w in chunked[2:]], np.arange(256), 0.1, 256
            ),
        ),
        ("per_example_grad_norms", lambda: _private.per_example_grad_norms(*step, n_threads=1)),
        (
            "dp_backprop",
            lambda: _private.dp_backprop(*step, max_grad_norm=1.0, l2=0.1, n_threads=1),
        ),
        (
            "dp_sgd_epoch",
            lambda: _private.dp_sgd_epoch(
                *step[:2],
                *[w.copy() for w in step[2:]],
                sample_rate=0.25,
                eta=0.1,
                max_grad_norm=1.0,
                noise_multiplier=1.0,
                rng=np.random.default_rng(0),
                steps=2,
                l2=0.1,
            ),
        ),
    ]
    if threads > 1:
        calls += [
            (
                "grad_W_out_blocked (threads)",
                lambda: _core.grad_W_out_blocked(A_wide, d_wide, n_threads=threads),
            ),
            (
                "grad_W_out_blocked (one chunk's columns, threads)",
                lambda: _core.grad_W_out_blocked(
                    A_square, A_square, n_chunks=1, block_d=32, n_threads=threads
                ),
            ),
            ("backprop (chunks, threads)", lambda: _backprop.backprop(*chunked, n_threads=threads)),
            (
                "backprop (one chunk, threads)",
                lambda: _backprop.backprop(*shared, n_threads=threads),
            ),
            (
                "per_example_grad_norms (chunks, threads)",
                lambda: _private.per_example_grad_norms(*chunked, n_threads=threads),
            ),
        ]
    return calls


def compile_all(dtypes=_DTYPES, threads=None):
    """Compile every kernel for each dtype (into the cache when it is on).

    Parameters
    ----------
    dtypes : sequence of str
        ``"float32"`` and/or ``"float64"``.
    threads : int, optional
        Threads for the threaded paths; by default ``min(2,
        numba.config.NUMBA_NUM_THREADS)``.  With 1, the threaded kernels are
        not compiled (they never run on one thread).

    Returns
    -------
    list of (str, str, float)
        (dtype, call, seconds) for each call, in order.
    """
    threads = min(2, numba.config.NUMBA_NUM_THREADS) if threads is None else threads
    timings = []
    for dtype in dtypes:
        for name, call in _calls(np.dtype(dtype), threads):
            start = time.perf_counter()
            call()
            timings.append((dtype, name, time.perf_counter() - start))
    return timings


class CompileRecorder:
    """Each kernel's compile time in a ``with`` block, from Numba's event API.

    Numba announces every compilation (``numba:compile``, nested when a
    kernel compiles its callees while it is typed) and every stretch spent
    in LLVM (``numba:llvm_lock``).  ``rows()`` gives, for each compiled
    specialisation, its time with its callees' compilations included and
    excluded; the excluded times add up to the whole.
    """

    def __init__(self):
        from numba.core import event

        self._event = event
        self._compiles = event.RecordingListener()
        self._llvm = event.RecordingListener()

    def __enter__(self):
        self._event.register("numba:compile", self._compiles)
        self._event.register("numba:llvm_lock", self._llvm)
        return self

    def __exit__(self, *exc):
        self._event.unregister("numba:compile", self._compiles)
        self._event.unregister("numba:llvm_lock", self._llvm)

    def rows(self):
        """(kernel, types, seconds with callees, seconds without), in the order compiled."""
        rows, stack = [], []
        for stamp, event in self._compiles.buffer:
            if event.is_start:
                stack.append([stamp, 0.0])
                continue
            start, callees = stack.pop()
            seconds = stamp - start
            if stack:
                stack[-1][1] += seconds
            dispatcher = event.data["dispatcher"]
            name = f"{dispatcher.py_func.__module__}.{dispatcher.py_func.__qualname__}"
            options = dispatcher.targetoptions
            if options.get("parallel"):
                name += " (threaded)"
            if "no_cpython_wrapper" not in options and name.startswith("fastbp."):
                name += " (Python entry)"
            dtypes = sorted({str(getattr(a, "dtype", a)) for a in event.data["args"]})
            rows.append((name, ",".join(dtypes), seconds, seconds - callees))
        return rows

    def llvm_seconds(self):
        """Seconds spent holding Numba's LLVM lock (optimising and emitting code)."""
        total, start = 0.0, None
        for stamp, event in self._llvm.buffer:
            if event.is_start:
                start = stamp
            elif start is not None:
                total += stamp - start
        return total


def _print_profile(recorder, wall):
    rows = sorted(recorder.rows(), key=lambda row: -row[3])
    width = max([len(row[0]) for row in rows] + [6])
    print(f"  {'kernel':<{width}}  {'types':<24} {'with callees':>12} {'alone':>8}")
    for name, dtypes, inclusive, exclusive in rows:
        print(f"  {name:<{width}}  {dtypes[:24]:<24} {inclusive:10.2f} s {exclusive:6.2f} s")
    alone = sum(row[3] for row in rows)
    print(
        f"{len(rows)} compilations: {alone:.1f} s of {wall:.1f} s wall, "
        f"{recorder.llvm_seconds():.1f} s of it in LLVM"
    )


def default_jobs(dtypes):
    """Processes ``fastbp compile`` runs by default: one per dtype, at most one per usable core."""
    return max(1, min(len(dtypes), schedulable_cpus()))


def _compile_in_children(dtypes, jobs):
    """``fastbp compile --dtypes D --jobs 1`` for each dtype D, ``jobs`` processes at a time.

    LLVM compiles on one core, so on several cores the dtypes compile side
    by side; each process saves its own specialisations into the shared
    cache folder (:mod:`fastbp._cache` keeps concurrent saves' index
    entries).  Returns the completed processes, in the order of ``dtypes``.
    """

    def child(dtype):
        command = [sys.executable, "-m", "fastbp", "compile", "--dtypes", dtype, "--jobs", "1"]
        return subprocess.run(command, capture_output=True, text=True)

    with ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(child, dtypes))


def run_compile(args):
    """``fastbp compile``: compile every kernel into the cache; print each call's time.

    With ``--profile``, everything compiles in this process and the table
    is per kernel (:class:`CompileRecorder`).  Otherwise, with more than
    one job (by default one per dtype, as cores allow) and the cache on,
    each dtype compiles in a process of its own; the rows
    are then each process's, and the total is the wall time.
    """
    if not _cache.CACHE_ENABLED:
        print("fastbp compile: the cache is off (FASTBP_CACHE=0); compiling in memory only")
    else:
        print(f"fastbp compile: into {_cache.cache_dir()}")
    jobs = default_jobs(args.dtypes) if args.jobs is None else min(args.jobs, len(args.dtypes))
    if getattr(args, "profile", False):
        start = time.perf_counter()
        with CompileRecorder() as recorder:
            compile_all(args.dtypes)
        _print_profile(recorder, time.perf_counter() - start)
        return 0
    if jobs > 1 and _cache.CACHE_ENABLED:
        start = time.perf_counter()
        children = _compile_in_children(args.dtypes, jobs)
        for dtype, child in zip(args.dtypes, children):
            if child.returncode != 0:
                sys.stderr.write(child.stderr)
                print(f"fastbp compile: compiling {dtype} failed", file=sys.stderr)
                return 1
            rows = [line for line in child.stdout.splitlines() if line.startswith("  ")]
            print("\n".join(rows))
        wall = time.perf_counter() - start
        print(f"compiled in {wall:.1f} s ({jobs} processes side by side)")
        return 0
    total = 0.0
    for dtype, name, seconds in compile_all(args.dtypes):
        total += seconds
        print(f"  {dtype:<8} {name:<32} {seconds:7.2f} s")
    print(f"compiled in {total:.1f} s")
    return 0


def run_cache(args):
    """``fastbp cache``: print the cache's folder and size; ``--clear`` empties it."""
    if args.clear:
        freed = _cache.clear_cache()
        print(f"fastbp cache: removed {freed / 2**20:.1f} MiB from {_cache.cache_root()}")
        return 0
    for line in _cache.cache_description():
        print(line)
    return 0
