"""Timing for every tool: interleaved medians, thread limits, one seconds formatter.

Every figure fastbp prints comes from :func:`interleaved_medians`: the
candidates are called in turn, round after round, so that drift of a shared
machine hits them all alike, and each is summarised by its median.  Threads
are set with :func:`thread_limits` alone, and times are printed with
:func:`format_seconds`.  The first-call timers run a fresh interpreter.
"""

import contextlib
import os
import platform
import time

import numba
import numpy as np

from .._threads import _numba_threads
from .blas import load_blas_libraries


def schedulable_cpus():
    """How many CPUs this process may run on (its affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity call here (macOS, Windows)
        return os.cpu_count() or 1


def interleaved_medians(functions, repeats, min_time=0.0, settle=0.0, warmup=0.0):
    """Median wall time of each function, timed in interleaved rounds.

    Parameters
    ----------
    functions : dict of str to callable
        The candidates, each called with no arguments.  Each is called once
        first, untimed, so compilation and first-touch stay out.
    repeats : int
        Rounds; each round times every candidate once.
    min_time : float, default 0.0
        A candidate faster than this (seconds) is called in a loop of k
        calls per timing and its time divided by k, so short calls are not
        lost in timer resolution.
    settle : float, default 0.0
        Seconds of idle (untimed) before each candidate's timing.  On a
        machine with few cores, threads that one candidate leaves spinning
        (OpenBLAS's wait for work lasts about 0.1 s) take cores from the
        next; a pause longer than that lets every candidate start from idle
        threads, as it would when run on its own.
    warmup : float, default 0.0
        After the settle, the candidate is called (untimed) until this
        many seconds have passed, at least once when positive, so each
        timing sees its own threads awake and its data in cache, as in a
        loop that calls it again and again (a training loop), rather than
        the first call after an idle pause.

    Returns
    -------
    dict of str to float
        Median seconds per call.
    """
    loops = {}
    for name, function in functions.items():
        function()
        start = time.perf_counter()
        function()
        once = time.perf_counter() - start
        loops[name] = max(1, int(min_time / once)) if once > 0 else 1
    samples = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            k = loops[name]
            if settle > 0:
                time.sleep(settle)
            if warmup > 0:
                until = time.perf_counter() + warmup
                function()
                while time.perf_counter() < until:
                    function()
            start = time.perf_counter()
            for _ in range(k):
                function()
            samples[name].append((time.perf_counter() - start) / k)
    return {name: float(np.median(values)) for name, values in samples.items()}


@contextlib.contextmanager
def thread_limits(n_threads, *, blas=True):
    """Run the body with ``n_threads`` Numba threads and, with ``blas``, as many BLAS threads.

    BLAS threads are limited through threadpoolctl (the optional ``bench``
    extra); without it only Numba's threads are controlled and
    :func:`.blas.baseline_description` says so.  ``blas=False`` leaves BLAS
    as it is.  Every BLAS is loaded first (:func:`.blas.load_blas_libraries`):
    a library loaded after the limits are set would keep its own thread count.
    """
    load_blas_libraries()
    with _numba_threads(n_threads):
        if not blas:
            yield
            return
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            yield
        else:
            with threadpool_limits(limits=n_threads, user_api="blas"):
                yield


def machine_description():
    """A line naming the processor, core count, library versions and fastbp's vector width."""
    from .._simd import VECTOR_BYTES

    processor = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    processor = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{processor}, {os.cpu_count()} logical CPUs; Python {platform.python_version()}, "
        f"NumPy {np.__version__}, Numba {numba.__version__}; "
        f"fastbp's register tiles: {VECTOR_BYTES}-byte vectors"
    )


def format_seconds(seconds):
    """Seconds with three significant digits in s, ms, µs or ns; "n/a" when not finite."""
    if not np.isfinite(seconds):
        return "n/a"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def gflops(flops, seconds):
    """GFLOP/s, or nan for a zero time."""
    return flops / seconds / 1e9 if seconds > 0 else float("nan")


def thread_counts():
    """Threads in force now: (Numba threads, list of BLAS thread counts as threadpoolctl sees them).

    The BLAS list is empty without threadpoolctl.
    """
    load_blas_libraries()
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return numba.get_num_threads(), []
    blas = [info.get("num_threads") for info in threadpool_info() if info.get("user_api") == "blas"]
    return numba.get_num_threads(), blas


# The child process of first_calls_seconds: every public function's first
# call in one dtype, in the order of ``fastbp compile``.
_FIRST_CALLS_CHILD = """
import json, sys, time
start = time.perf_counter()
import fastbp
imported = time.perf_counter()
from fastbp._tools.compile import compile_all
calls = [[name, seconds] for _, name, seconds in compile_all([sys.argv[1]])]
print(json.dumps({"import": imported - start, "calls": calls}))
"""


def _child_environment(cache_dir):
    """The current environment, with ``cache_dir``, for a child importing the same fastbp."""
    env = dict(os.environ)
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(
        [package_parent] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env["FASTBP_CACHE"] = "1"
    env["FASTBP_CACHE_DIR"] = str(cache_dir)
    return env


def _run_child(code, arguments, cache_dir):
    import json
    import subprocess
    import sys

    completed = subprocess.run(
        [sys.executable, "-c", code, *arguments],
        env=_child_environment(cache_dir),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def first_calls_seconds(dtype, cache_dir):
    """Every public function's first call in a fresh process, as ``fastbp compile`` makes them.

    Returns
    -------
    dict
        ``{"import": seconds, "calls": [[name, seconds], ...]}``.  Each call
        is timed alone, in order, so a kernel shared by two functions is
        compiled (or loaded) in the first one that uses it.
    """
    return _run_child(_FIRST_CALLS_CHILD, [dtype], cache_dir)
