"""Shared pieces of the asv suite: parameters, seeded data, thread control, NumPy baselines.

The suite runs against older commits of fastbp too (``asv run`` over the
history), so it uses only the public API of :mod:`fastbp` and keeps its own
NumPy baselines here instead of importing them from the package.
"""

import contextlib
import functools
import time

import numba
import numpy as np

#: Shapes (n, d, t) of the gradient sweep: examples, hidden units, outputs,
#: written as readable parameter ids.  The first three are the seed's MNIST
#: network (784-100-10) on a mini-batch, a larger batch and the whole
#: training set; then a wide layer and a square one where BLAS shines.
GRAD_SHAPES = [
    "100x100x10",
    "1000x100x10",
    "60000x100x10",
    "10000x512x64",
    "4096x1024x1024",
]

#: Shapes (n, m, d, t) of the full forward-and-backward step: the digits'
#: minibatch and an MNIST minibatch first, where people train.
STEP_SHAPES = [
    "32x64x100x10",
    "128x784x100x10",
    "100x784x100x10",
    "1000x784x100x10",
    "60000x784x100x10",
    "10000x64x512x64",
]

DTYPES = ["float32", "float64"]

#: BLAS threads and Numba threads, always set alike (2-core machines: more
#: would only oversubscribe).
THREADS = [1, 2]

#: The one shape on which the per-example ``outer`` loop takes about a second
#: a call; it is skipped there so a full ``asv run`` stays short.
HUGE_SHAPE = "4096x1024x1024"


def parse_shape(shape):
    """``"1000x100x10"`` -> ``(1000, 100, 10)``."""
    return tuple(int(size) for size in shape.split("x"))


def input_width(d):
    """Inputs m of the forward pass for a (n, d, t) gradient shape.

    m = 784 (MNIST's 28 x 28 pixels) for the seed's d = 100 network, and
    m = d otherwise (a square hidden layer).
    """
    return 784 if d == 100 else d


@functools.lru_cache(maxsize=4)
def dataset(n, d, t, dtype, m=None):
    """Seeded data for one parameter set, made once per process.

    Parameters
    ----------
    n, d, t : int
        Examples, hidden units, outputs.
    dtype : str
        ``"float32"`` or ``"float64"``.
    m : int, optional
        Inputs.  Without it only what the output layer needs is made
        (``A_h`` uniform in (0, 1), ``A_out`` and ``Y``), which keeps setup
        cheap for the gradient benchmarks; with it the network's inputs and
        weights too (``X``, ``W_h``, ``b_h``, ``W_out``, ``b_out``).

    Returns
    -------
    dict of str to numpy.ndarray
        ``A_h`` (n, d), ``A_out``, ``Y``, ``delta_out`` (n, t), and with
        ``m`` also ``X`` (n, m), ``W_h`` (m, d), ``b_h`` (d,), ``W_out``
        (d, t), ``b_out`` (t,).  C-contiguous, in ``dtype``.  Treat as
        read-only: the cache hands the same arrays to every caller.
    """
    rng = np.random.default_rng([n, d, t, m or 0])
    data = {}
    if m is not None:
        # Weights scaled by 1/sqrt(fan-in) so activations are not saturated.
        data["X"] = rng.random((n, m))
        data["W_h"] = rng.standard_normal((m, d)) / np.sqrt(m)
        data["b_h"] = 0.1 * rng.standard_normal(d)
        data["W_out"] = rng.standard_normal((d, t)) / np.sqrt(d)
        data["b_out"] = 0.1 * rng.standard_normal(t)
    data["A_h"] = rng.random((n, d))
    data["A_out"] = rng.uniform(0.01, 0.99, (n, t))
    data["Y"] = np.zeros((n, t))
    data["Y"][np.arange(n), rng.integers(0, t, n)] = 1.0  # one-hot targets
    data = {name: np.ascontiguousarray(value, dtype=dtype) for name, value in data.items()}
    data["delta_out"] = data["A_out"] - data["Y"]
    for value in data.values():
        value.setflags(write=False)
    return data


@contextlib.contextmanager
def _limited_threads(n_threads):
    previous = numba.get_num_threads()
    numba.set_num_threads(n_threads)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # without the bench extra: Numba's threads only
            yield
        else:
            with threadpool_limits(limits=n_threads, user_api="blas"):
                yield
    finally:
        numba.set_num_threads(previous)


def thread_limits(n_threads):
    """Context manager: ``n_threads`` Numba threads and, with threadpoolctl, BLAS threads.

    asv runs install the ``bench`` extra (threadpoolctl), so BLAS is limited
    there; the test suite runs the classes without it.  Raises
    NotImplementedError (asv then skips the parameter set) where the
    machine has fewer threads than asked for.
    """
    if n_threads > numba.config.NUMBA_NUM_THREADS:
        raise NotImplementedError(f"only {numba.config.NUMBA_NUM_THREADS} Numba threads here")
    return _limited_threads(n_threads)


def measured_seconds(function, min_total=0.05, max_calls=50):
    """Median seconds of ``function()``, called until ``min_total`` seconds have passed.

    For ``track_*`` benchmarks, which asv calls once and which must time
    themselves.
    """
    samples = []
    start = time.perf_counter()
    while len(samples) < max_calls and (
        len(samples) < 3 or time.perf_counter() - start < min_total
    ):
        begin = time.perf_counter()
        function()
        samples.append(time.perf_counter() - begin)
    return float(np.median(samples))


class ThreadedBenchmark:
    """Base for benchmarks whose last parameter is the thread count.

    ``setup`` subclasses call :meth:`enter_threads`; asv calls ``teardown``
    after the timings, which restores the previous thread counts.
    """

    _threads = None

    def enter_threads(self, n_threads):
        self._threads = contextlib.ExitStack()
        self._threads.enter_context(thread_limits(n_threads))

    def teardown(self, *params):
        if self._threads is not None:
            self._threads.close()
            self._threads = None


def sigmoid(Z):
    """The book's sigmoid, clipped so np.exp never overflows (NumPy baseline)."""
    return 1.0 / (1.0 + np.exp(-np.clip(Z, -250, 250)))


def numpy_forward(X, W_h, b_h, W_out, b_out):
    """The book's NeuralNetMLP forward pass in NumPy: (A_h, A_out)."""
    A_h = sigmoid(X @ W_h + b_h)
    A_out = sigmoid(A_h @ W_out + b_out)
    return A_h, A_out


def numpy_backprop_step(X, Y, W_h, b_h, W_out, b_out):
    """The book's NumPy training step: cost and the four gradients.

    Returns
    -------
    tuple
        ``(cost, grad_W_h, grad_b_h, grad_W_out, grad_b_out)``, the cost
        summed as in the seed (no 1/n), like ``fastbp.backprop``.
    """
    A_h, A_out = numpy_forward(X, W_h, b_h, W_out, b_out)
    cost = -np.sum(Y * np.log(A_out) + (1.0 - Y) * np.log(1.0 - A_out))
    delta_out = A_out - Y
    delta_h = (delta_out @ W_out.T) * A_h * (1.0 - A_h)
    return cost, X.T @ delta_h, delta_h.sum(axis=0), A_h.T @ delta_out, delta_out.sum(axis=0)


# Floating-point operations counted for GFLOP/s: multiply-adds of the matrix
# products as 2 each; elementwise work (sigmoid, logs) is not counted, so
# GFLOP/s of memory-bound kernels is low by construction and meant for
# comparison between implementations only.


def grad_flops(n, d, t):
    """(A_h)ᵀ δ_out: n·d·t multiply-adds."""
    return 2 * n * d * t


def forward_flops(n, m, d, t):
    """X W_h and A_h W_out."""
    return 2 * n * (m * d + d * t)


def step_flops(n, m, d, t):
    """Forward (2nmd + 2ndt), δ_out W_outᵀ (2ndt), Xᵀ δ_h (2nmd), A_hᵀ δ_out (2ndt)."""
    return 4 * n * m * d + 6 * n * d * t
