"""Shared pieces of the asv suite: parameters, seeded data, thread control, the kernels behind BLAS.

Shapes, seeded problems, operation counts and the NumPy, PyTorch and JAX
reference steps are not defined here: they are fastbp's own
(:mod:`fastbp._tools.problems`), the ones ``fastbp bench`` times, so the
suite and the command cannot drift apart.  asv runs the suite against the
installed fastbp, so a commit without ``fastbp._tools.problems`` cannot be
benchmarked with this suite (run an older suite from that commit).
"""

import contextlib
import functools
import time

import numba
import numpy as np

from fastbp._tools import problems
from fastbp._tools.blas import blas_libraries
from fastbp._tools.problems import (
    OUTER_MAX_MULTIPLY_ADDS,
    STEP_ARGUMENTS,
    STEP_L2,
    forward_flops,
    grad_flops,
    input_width,
    jax_or_none,
    jax_step,
    numpy_cost,
    numpy_forward,
    numpy_step,
    parse_shape,
    step_flops,
    torch_or_none,
    torch_step,
    torch_threads,
)
from fastbp._tools.timing import thread_limits as _tool_thread_limits

__all__ = [
    "BLAS_KERNELS",
    "DTYPES",
    "GRAD_SHAPES",
    "OUTER_MAX_MULTIPLY_ADDS",
    "STEP_ARGUMENTS",
    "STEP_L2",
    "STEP_SHAPES",
    "THREADS",
    "ThreadedBenchmark",
    "blas_kernels",
    "dataset",
    "forward_flops",
    "grad_flops",
    "input_width",
    "jax_or_none",
    "jax_step",
    "measured_seconds",
    "numpy_cost",
    "numpy_forward",
    "numpy_step",
    "parse_shape",
    "require_blas_kernels",
    "step_flops",
    "thread_limits",
    "torch_or_none",
    "torch_step",
]

#: Shapes (n, d, t) of the gradient sweep, as readable parameter ids (asv wants lists).
GRAD_SHAPES = list(problems.GRAD_SHAPES)

#: Shapes (n, m, d, t) of the full forward-and-backward step.
STEP_SHAPES = list(problems.STEP_SHAPES)

DTYPES = ["float32", "float64"]

#: BLAS threads and Numba threads, always set alike (2-core machines: more
#: would only oversubscribe).
THREADS = [1, 2]


def blas_kernels(libraries=None):
    """The BLAS libraries NumPy and SciPy (Numba's ``@``) load and the kernels they run, as an id.

    For example ``"numpy=openblas-0.3.31-SkylakeX,scipy=openblas-0.3.30-SkylakeX"``
    (threadpoolctl's ``internal_api``, ``version`` and ``architecture``),
    or ``"unknown"`` without threadpoolctl.  ``libraries`` is
    :func:`fastbp._tools.blas.blas_libraries`'s list (read now by default).
    """
    libraries = blas_libraries() if libraries is None else libraries
    if not libraries:
        return "unknown"
    return ",".join(
        f"{library['owner'] or library['label']}={library['api']}-{library['version']}-"
        f"{library['architecture'] or 'unknown'}"
        for library in sorted(libraries, key=lambda library: str(library["owner"]))
        if library["owner"] != "torch"
    )


#: The ``blas`` parameter of every benchmark with a BLAS baseline: one value, the
#: kernels NumPy's and SciPy's BLAS run in this environment.  asv records a
#: result under its parameters (in the results file, beside the figure), and
#: ``track_*`` values can only be numbers and ``pretty_name`` is one per
#: benchmark, not per run: so the kernels are a parameter, and a run on other
#: kernels (``OPENBLAS_CORETYPE=Haswell``) is a separate series in asv, never a
#: point on the same line.
BLAS_KERNELS = [blas_kernels()]


def require_blas_kernels(expected):
    """Raise NotImplementedError (asv skips) where the BLAS kernels are not ``expected``.

    asv reads parameters when it discovers the suite, in another process:
    a benchmark run with other kernels would be recorded under a wrong label.
    """
    actual = blas_kernels()
    if actual != expected:
        raise NotImplementedError(f"BLAS kernels are {actual}, not {expected}")


@functools.lru_cache(maxsize=4)
def dataset(n, d, t, dtype, m=None):
    """Seeded data for one parameter set, made once per process (fastbp's problems).

    Parameters
    ----------
    n, d, t : int
        Examples, hidden units, outputs.
    dtype : str
        ``"float32"`` or ``"float64"``.
    m : int, optional
        Inputs.  Without it only the output layer is made
        (:func:`fastbp._tools.problems.output_layer_problem`), which keeps
        setup cheap for the gradient benchmarks; with it the whole network
        (:func:`fastbp._tools.problems.make_problem`), the same data as
        ``fastbp bench``'s.

    Returns
    -------
    dict of str to numpy.ndarray
        Without ``m``: ``A_h`` (n, d), ``A_out``, ``Y``, ``delta_out``
        (n, t).  With ``m``: ``X`` (n, m), ``Y`` (n, t), ``W_h`` (m, d),
        ``b_h`` (d,), ``W_out`` (d, t), ``b_out`` (t,).  C-contiguous, in
        ``dtype``.  Read-only: the cache hands the same arrays to every caller.
    """
    if m is None:
        data = problems.output_layer_problem(n, d, t, dtype)
    else:
        data = problems.make_problem(n, m, d, t, dtype)
    for value in data.values():
        value.setflags(write=False)
    return data


@contextlib.contextmanager
def _limited_threads(n_threads, torch):
    # fastbp's own limits (Numba's and every BLAS's threads), which load every BLAS
    # before limiting it: threadpoolctl reaches only the libraries loaded by then.
    with (
        _tool_thread_limits(n_threads),
        torch_threads(torch, n_threads) if torch is not None else contextlib.nullcontext(),
    ):
        yield


def thread_limits(n_threads, torch=None):
    """Context manager: ``n_threads`` Numba threads, BLAS threads and, with ``torch``, PyTorch's.

    BLAS threads are limited through threadpoolctl (asv runs install it), in
    every BLAS library, SciPy's (Numba's ``@``) included even where no
    kernel has loaded it yet (:func:`fastbp._tools.timing.thread_limits`).
    ``torch`` is the PyTorch module, for benchmarks that time it.  Raises
    NotImplementedError (asv then skips the parameter set) where the
    machine has fewer threads than asked for.
    """
    if n_threads > numba.config.NUMBA_NUM_THREADS:
        raise NotImplementedError(f"only {numba.config.NUMBA_NUM_THREADS} Numba threads here")
    return _limited_threads(n_threads, torch)


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
    """Base for benchmarks that set thread counts in ``setup``.

    ``setup`` subclasses call :meth:`enter_threads`; asv calls ``teardown``
    after the timings, which restores the previous thread counts.
    """

    _threads = None

    def enter_threads(self, n_threads, torch=None):
        """Limit Numba, every BLAS and (given its module) PyTorch to ``n_threads``, to teardown."""
        self._threads = contextlib.ExitStack()
        self._threads.enter_context(thread_limits(n_threads, torch))

    def teardown(self, *params):
        if self._threads is not None:
            self._threads.close()
            self._threads = None
