"""Time to first result: ``import fastbp`` and a first call in a fresh process.

Numba compiles lazily, so a new process pays for compilation on its first
call unless fastbp's on-disk cache already holds the kernel.  ``cold`` is a
process with an empty cache folder (it compiles, then saves); ``cached`` is
a second process on a folder that a first process filled in ``setup``.
The calls: each ``grad_W_out`` method on 1000 x 100 x 10, and the fused
step ``backprop`` on the digits' 32 x 64 x 100 x 10 minibatch.  The child
uses the public API only, so the benchmark runs on any commit.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

FIRST_CALL_METHODS = ("outer", "blocked", "matmul", "backprop")

# The child process: prints seconds for ``import fastbp`` and for the first
# call (which compiles, or loads from the cache).
_CHILD = """
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


def first_call_seconds(method, dtype, cache_dir):
    """``{"import": seconds, "first_call": seconds}`` of a fresh interpreter using ``cache_dir``.

    An empty ``cache_dir`` measures a cold start (compile, then save), a
    filled one a warm start.  Interpreter and NumPy start-up, and making
    the data, are not included.
    """
    if method not in FIRST_CALL_METHODS:
        raise ValueError(f"method must be one of {FIRST_CALL_METHODS}, got {method!r}")
    environment = dict(os.environ, FASTBP_CACHE="1", FASTBP_CACHE_DIR=str(cache_dir))
    completed = subprocess.run(
        [sys.executable, "-c", _CHILD, method, dtype],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


class FirstCall:
    """Fresh interpreter, ``import fastbp``, first call (float64 and float32).

    ``track_*`` is import + first call as the child measures it
    (interpreter and NumPy start-up excluded).
    """

    params = [list(FIRST_CALL_METHODS), ["float64", "float32"], ["cold", "cached"]]
    param_names = ["method", "dtype", "cache"]
    number = 1
    rounds = 1
    repeat = 1
    warmup_time = 0
    timeout = 600

    def setup(self, method, dtype, cache):
        self.cache_dir = tempfile.mkdtemp(prefix="fastbp-asv-first-call-")
        if cache == "cached":
            first_call_seconds(method, dtype, self.cache_dir)  # fills the cache

    def teardown(self, method, dtype, cache):
        shutil.rmtree(self.cache_dir, ignore_errors=True)

    def track_import_and_first_call(self, method, dtype, cache):
        if cache == "cold":  # a fresh, empty folder for each measurement
            shutil.rmtree(self.cache_dir, ignore_errors=True)
            self.cache_dir = tempfile.mkdtemp(prefix="fastbp-asv-first-call-")
        seconds = first_call_seconds(method, dtype, self.cache_dir)
        return seconds["import"] + seconds["first_call"]

    track_import_and_first_call.unit = "seconds"
