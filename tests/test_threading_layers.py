"""Python threads calling the threaded kernels at once, under every threading layer.

Numba's workqueue layer aborts the whole process ("Concurrent access has
been detected") when two Python threads launch parallel kernels at the same
time; fastbp serialises its launches until it knows the layer in use is
thread-safe.  Each layer runs in a child process (a process picks its layer
once), where four Python threads call the threaded kernels together and
compare every result with the one-thread result, bit for bit.
"""

import importlib
import os
import subprocess
import sys
import textwrap

import pytest

_POOL_MODULES = {
    "workqueue": "numba.np.ufunc.workqueue",
    "omp": "numba.np.ufunc.omppool",
    "tbb": "numba.np.ufunc.tbbpool",
}

_CHILD = textwrap.dedent(
    """
    import threading

    import numba
    import numpy as np

    import fastbp
    from fastbp import _threads

    rng = np.random.default_rng(0)
    A_h = rng.random((600, 40))
    delta = rng.random((600, 10)) - 0.5
    X = rng.random((300, 30))
    Y = (rng.random((300, 10)) > 0.5).astype(np.float64)
    W_h = rng.normal(0, 0.1, (30, 40))
    b_h = rng.normal(0, 0.1, 40)
    W_out = rng.normal(0, 0.1, (40, 10))
    b_out = rng.normal(0, 0.1, 10)

    # One-thread results first: the serial kernels, the same bits.
    expected_grad = fastbp.grad_W_out_blocked(A_h, delta, n_chunks=3, n_threads=1)
    expected_step = fastbp.backprop(X, Y, W_h, b_h, W_out, b_out, n_chunks=2, n_threads=1)

    start = threading.Barrier(4)
    mismatches = []

    def work():
        start.wait()
        for _ in range(25):
            grad = fastbp.grad_W_out_blocked(A_h, delta, n_chunks=3, n_threads=2)
            step = fastbp.backprop(X, Y, W_h, b_h, W_out, b_out, n_chunks=2, n_threads=2)
            if not np.array_equal(grad, expected_grad):
                mismatches.append("grad_W_out_blocked")
            if any(not np.array_equal(a, b) for a, b in zip(step, expected_step)):
                mismatches.append("backprop")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print("layer", numba.threading_layer())
    print("mismatches", len(mismatches))
    print("lock_released", _threads._launches_are_threadsafe)
    """
)


def _available(layer):
    try:
        importlib.import_module(_POOL_MODULES[layer])
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("layer", sorted(_POOL_MODULES))
def test_python_threads_launch_threaded_kernels_at_once(layer, tmp_path):
    if not _available(layer):
        pytest.skip(f"Numba's {layer} threading layer cannot be loaded here")
    env = dict(os.environ, NUMBA_THREADING_LAYER=layer, NUMBA_NUM_THREADS="2")
    child = subprocess.run(
        [sys.executable, "-c", _CHILD],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in child.stdout.splitlines())
    assert lines["layer"] == layer
    assert lines["mismatches"] == "0"
    # Launches stay serialised under the one layer that is not thread-safe.
    assert lines["lock_released"] == str(layer != "workqueue")
