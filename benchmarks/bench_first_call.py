"""Time to first result: ``import fastbp`` and the first ``grad_W_out`` call in a fresh process.

Numba compiles lazily, so a new process pays for compilation on its first
call.  ``cold`` is a process with no on-disk cache (``FASTBP_CACHE=0``);
``cached`` is a second process with ``FASTBP_CACHE=1`` and a temporary
``NUMBA_CACHE_DIR`` that a first process has filled in ``setup``.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import fastbp

# Runs in the child; prints seconds for the import and for the first call.
CHILD = """
import sys, time
import numpy as np
start = time.perf_counter()
import fastbp
imported = time.perf_counter()
rng = np.random.default_rng(0)
A_h = rng.random((1000, 100)).astype(sys.argv[2])
delta_out = (rng.random((1000, 10)) - 0.5).astype(sys.argv[2])
fastbp.grad_W_out(A_h, delta_out, method=sys.argv[1])
done = time.perf_counter()
print('{"import": %r, "first_call": %r}' % (imported - start, done - imported))
"""


class FirstCall:
    """Fresh interpreter, ``import fastbp``, first ``grad_W_out`` (float64, 1000x100x10).

    ``time_*`` is the child's whole wall time (interpreter and NumPy start-up
    included, about 0.1 s); ``track_*`` is import + first call as the child
    measures it.
    """

    params = [["outer", "blocked", "matmul"], ["cold", "cached"]]
    param_names = ["method", "cache"]
    number = 1
    rounds = 1
    repeat = (1, 3, 60.0)
    warmup_time = 0
    timeout = 300

    def setup(self, method, cache):
        self.cache_dir = tempfile.mkdtemp(prefix="fastbp-asv-numba-cache-")
        self.env = dict(os.environ, NUMBA_CACHE_DIR=self.cache_dir)
        # The child imports the same fastbp as this process.
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(fastbp.__file__)))
        self.env["PYTHONPATH"] = os.pathsep.join(
            [package_parent] + [p for p in [os.environ.get("PYTHONPATH")] if p]
        )
        self.env["FASTBP_CACHE"] = "1" if cache == "cached" else "0"
        if cache == "cached":
            self.run_child(method)  # fills the cache

    def teardown(self, method, cache):
        shutil.rmtree(self.cache_dir, ignore_errors=True)

    def run_child(self, method):
        completed = subprocess.run(
            [sys.executable, "-c", CHILD, method, "float64"],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(completed.stdout.strip().splitlines()[-1])

    def time_import_and_first_grad(self, method, cache):
        self.run_child(method)

    def track_import_and_first_grad(self, method, cache):
        seconds = self.run_child(method)
        return seconds["import"] + seconds["first_call"]

    track_import_and_first_grad.unit = "seconds"
