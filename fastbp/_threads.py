"""Thread-launch control: how many Numba threads a call uses, and when it may launch them.

Every public function with ``n_threads`` checks it with
:func:`fastbp._validate.check_n_threads`, sets it for the call's duration with
:func:`_numba_threads`, and launches its threaded kernel inside
:func:`_parallel_launch`.  Serial kernels need none
of this: they run on the calling thread.
"""

import contextlib
import threading

import numba


@contextlib.contextmanager
def _numba_threads(n_threads):
    """Use ``n_threads`` Numba threads in this thread for the duration."""
    if n_threads is None:
        yield numba.get_num_threads()
        return
    previous = numba.get_num_threads()
    numba.set_num_threads(n_threads)
    try:
        yield n_threads
    finally:
        numba.set_num_threads(previous)


# Numba's workqueue threading layer aborts the process when two Python
# threads launch parallel kernels at once; tbb and omp are thread-safe.
# Until a launch shows which layer this process runs, fastbp's launches take
# this lock one at a time.
_THREADSAFE_LAYERS = frozenset({"tbb", "omp"})
_launch_lock = threading.Lock()
_launches_are_threadsafe = False


def _layer_is_threadsafe():
    try:
        return numba.threading_layer() in _THREADSAFE_LAYERS
    except ValueError:  # no parallel region has run yet (or the JIT is off)
        return False


@contextlib.contextmanager
def _parallel_launch():
    """Hold around every call of a ``parallel_kernel``.

    One launch at a time, unless the threading layer in use is thread-safe.
    """
    global _launches_are_threadsafe
    if _launches_are_threadsafe:
        yield
        return
    with _launch_lock:
        yield
        _launches_are_threadsafe = _layer_is_threadsafe()


def _chunk_limit(n, partial_bytes, min_examples, max_chunks, max_partial_bytes):
    """The most chunks n examples may be cut into for threads, at least 1.

    At most ``n // min_examples`` (each chunk has at least that many
    examples) and ``max_chunks``, and few enough that the chunks' partial
    results (``partial_bytes`` each) take at most ``max_partial_bytes``.
    """
    by_examples = n // min_examples
    by_memory = max_partial_bytes // max(1, partial_bytes)
    return max(1, min(max_chunks, by_examples, by_memory))
