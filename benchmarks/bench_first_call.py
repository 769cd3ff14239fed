"""Time to first result: ``import fastbp`` and a first call in a fresh process.

Numba compiles lazily, so a new process pays for compilation on its first
call unless fastbp's on-disk cache already holds the kernel.  ``cold`` is a
process with an empty cache folder (it compiles, then saves); ``cached`` is
a second process on a folder that a first process filled in ``setup``.
The calls: each ``grad_W_out`` method on 1000 x 100 x 10, and the fused
step ``backprop`` on the digits' 32 x 64 x 100 x 10 minibatch.
"""

import shutil
import tempfile

from fastbp._timing import FIRST_CALL_METHODS, first_call_seconds


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
