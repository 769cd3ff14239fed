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
            f"({info.get('architecture')}), {info.get('num_threads')} thread(s)"
        )
    return lines


def machine_description():
    """A line naming the processor, core count, library versions and fastbp's vector width."""
    import os

    from ._simd import VECTOR_BYTES

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


def gflops(flops, seconds):
    """GFLOP/s, or nan for a zero time."""
    return flops / seconds / 1e9 if seconds > 0 else float("nan")


def thread_counts():
    """Threads in force now: (Numba threads, list of BLAS thread counts as threadpoolctl sees them).

    The BLAS list is empty without threadpoolctl.
    """
    _load_blas_libraries()
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return numba.get_num_threads(), []
    blas = [info.get("num_threads") for info in threadpool_info() if info.get("user_api") == "blas"]
    return numba.get_num_threads(), blas


# The child process of first_call_seconds: prints seconds for ``import fastbp``
# and for the first call (which compiles, or loads from the cache): a
# grad_W_out method on 1000 x 100 x 10, or the fused step on the digits'
# 32 x 64 x 100 x 10 minibatch.
_FIRST_CALL_CHILD = """
import sys, time
import numpy as np
start = time.perf_counter()
import fastbp
imported = time.perf_counter()
rng = np.random.default_rng(0)
method, dtype = sys.argv[1], sys.argv[2]
if method == "backprop":
    X = rng.random((32, 64)).astype(dtype)
    Y = np.eye(10, dtype=dtype)[rng.integers(0, 10, 32)]
    W_h = rng.normal(0, 0.1, (64, 100)).astype(dtype)
    W_out = rng.normal(0, 0.1, (100, 10)).astype(dtype)
    ready = time.perf_counter()
    fastbp.backprop(X, Y, W_h, np.zeros(100, dtype), W_out, np.zeros(10, dtype), l2=0.01)
else:
    A_h = rng.random((1000, 100)).astype(dtype)
    delta_out = (rng.random((1000, 10)) - 0.5).astype(dtype)
    ready = time.perf_counter()
    fastbp.grad_W_out(A_h, delta_out, method=method)
done = time.perf_counter()
print('{"import": %r, "first_call": %r}' % (imported - start, done - ready))
"""

# The child process of first_calls_seconds: every public function's first
# call in one dtype, in the order of ``fastbp compile``.
_FIRST_CALLS_CHILD = """
import json, sys, time
start = time.perf_counter()
import fastbp
imported = time.perf_counter()
from fastbp._compile import compile_all
calls = [[name, seconds] for _, name, seconds in compile_all([sys.argv[1]])]
print(json.dumps({"import": imported - start, "calls": calls}))
"""

FIRST_CALL_METHODS = ("outer", "blocked", "matmul", "backprop")


def _child_environment(cache_dir):
    """The current environment, with ``cache_dir``, for a child importing the same fastbp."""
    import os

    env = dict(os.environ)
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def first_call_seconds(method="matmul", dtype="float64", cache_dir=None):
    """Seconds for ``import fastbp`` and a first call, in a fresh process.

    Parameters
    ----------
    method : str
        One of :data:`FIRST_CALL_METHODS`: a ``grad_W_out`` method (on
        1000 x 100 x 10 data) or ``"backprop"`` (32 x 64 x 100 x 10).
    dtype : str
        ``"float32"`` or ``"float64"``.
    cache_dir : str or path, optional
        The child's ``FASTBP_CACHE_DIR``: an empty folder measures a cold
        start (compile, then save), a filled one a warm start.  By default a
        temporary empty folder, removed afterwards.

    Returns
    -------
    dict
        ``{"import": seconds, "first_call": seconds}`` as the child measured
        them (interpreter and NumPy start-up, and making the data, not
        included).
    """
    if method not in FIRST_CALL_METHODS:
        raise ValueError(f"method must be one of {FIRST_CALL_METHODS}, got {method!r}")
    if cache_dir is None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="fastbp-first-call-") as empty:
            return _run_child(_FIRST_CALL_CHILD, [method, dtype], empty)
    return _run_child(_FIRST_CALL_CHILD, [method, dtype], cache_dir)


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
