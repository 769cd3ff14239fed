"""Timing helpers shared by the command line's main job and ``fastbp bench``.

Every figure fastbp prints comes from :func:`interleaved_medians`: the
candidates are called in turn, round after round, so that drift of a shared
machine hits them all alike, and each is summarised by its median.
"""

import contextlib
import platform
import time

import numba
import numpy as np


def interleaved_medians(functions, repeats, min_time=0.0):
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
            start = time.perf_counter()
            for _ in range(k):
                function()
            samples[name].append((time.perf_counter() - start) / k)
    return {name: float(np.median(values)) for name, values in samples.items()}


def _load_blas_libraries():
    """Load the BLAS that NumPy and SciPy (Numba's ``@``) use, so limits reach both."""
    with contextlib.suppress(ImportError):
        import scipy.linalg.cython_blas  # noqa: F401


@contextlib.contextmanager
def thread_limits(n_threads):
    """Run the body with ``n_threads`` BLAS threads and ``n_threads`` Numba threads.

    BLAS threads are limited through threadpoolctl (the optional ``bench``
    extra); without it only Numba's threads are controlled and
    :func:`blas_description` says so.
    """
    _load_blas_libraries()
    previous = numba.get_num_threads()
    numba.set_num_threads(n_threads)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            yield
        else:
            with threadpool_limits(limits=n_threads, user_api="blas"):
                yield
    finally:
        numba.set_num_threads(previous)


def blas_description():
    """One line per BLAS library loaded: who uses it, which library, version, threads."""
    _load_blas_libraries()
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return ["BLAS: not described (install threadpoolctl: pip install 'fastbp[bench]')"]
    lines = []
    for info in threadpool_info():
        if info.get("user_api") != "blas":
            continue
        path = info.get("filepath", "")
        owner = "numpy" if "numpy" in path else "scipy (Numba's @)" if "scipy" in path else path
        lines.append(
            f"BLAS for {owner}: {info.get('internal_api')} {info.get('version')} "
            f"({info.get('architecture')}), {info.get('num_threads')} threads"
        )
    return lines


def machine_description():
    """A line naming the processor, core count and library versions."""
    import os

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
        f"NumPy {np.__version__}, Numba {numba.__version__}"
    )


def gflops(flops, seconds):
    """GFLOP/s, or nan for a zero time."""
    return flops / seconds / 1e9 if seconds > 0 else float("nan")
