"""The one place that decides how fastbp compiles its kernels.

Every compiled function in fastbp is decorated with :func:`kernel` or
:func:`parallel_kernel` from this module, so that the options below hold for
all of them and can be changed in one place.

Options and why
---------------
nogil=True
    Kernels release the GIL, so Python threads (and Dask workers) can run
    them side by side.
error_model="numpy"
    Division by zero gives inf/nan as NumPy would instead of raising, and
    the compiled loops carry no hidden checks.
fastmath
    Never ``True``: that implies ``nnan``/``ninf`` and lets LLVM delete NaN
    handling.  A kernel may ask for :data:`CONTRACT` (fused multiply-add),
    which only removes an intermediate rounding and keeps every summation
    order exactly as written, so results stay deterministic and within the
    rounding bound the tests check.
cache
    Off unless the environment variable ``FASTBP_CACHE=1`` is set before
    :mod:`fastbp` is imported.  Numba then stores compiled code beside the
    source, or, when the package folder is read-only, in its user-wide cache
    folder (``NUMBA_CACHE_DIR`` overrides both).  Off by default because a
    cache keyed on one module's source can go stale when a kernel it calls
    changes in another module.  Also off whenever ``FASTBP_VECTOR_BYTES``
    is set: the register tiles' width is compiled into the kernels, and
    Numba's cache knows the CPU's features (from which fastbp derives the
    width by default) but not this override, so a cache written at one
    width would be loaded, kernel by kernel, at the other.
compilation
    Lazy: nothing is compiled at import.  The public functions normalise
    their inputs so each kernel sees at most two specialisations
    (float32 and float64, C-contiguous).
"""

import os

import numba

__all__ = ["CACHE", "CONTRACT", "kernel", "parallel_kernel"]

#: Whether compiled code is cached on disk (``FASTBP_CACHE=1``, and no
#: ``FASTBP_VECTOR_BYTES`` override).
CACHE = os.environ.get("FASTBP_CACHE", "0").strip().lower() in {"1", "true", "yes", "on"} and not (
    os.environ.get("FASTBP_VECTOR_BYTES", "").strip()
)

#: The only fast-math flag fastbp uses: allow fused multiply-add.
CONTRACT = frozenset({"contract"})

_BASE_OPTIONS = {
    "nogil": True,
    "error_model": "numpy",
    "cache": CACHE,
    "boundscheck": False,
}


def kernel(func=None, *, fastmath=False):
    """Compile ``func`` with fastbp's options (serial kernel).

    Parameters
    ----------
    func : callable, optional
        The Python function to compile.  When omitted, a decorator is
        returned, so both ``@kernel`` and ``@kernel(fastmath=CONTRACT)``
        work.
    fastmath : bool or frozenset of str, default False
        ``False`` or :data:`CONTRACT`; anything else is refused.
    """
    if fastmath not in (False, CONTRACT):
        raise ValueError(f"fastmath must be False or CONTRACT, got {fastmath!r}")

    def wrap(f):
        return numba.njit(fastmath=set(fastmath) if fastmath else False, **_BASE_OPTIONS)(f)

    return wrap if func is None else wrap(func)


def parallel_kernel(func=None, *, fastmath=False):
    """Compile ``func`` as a threaded kernel (``prange`` loops run in parallel).

    Same options as :func:`kernel`, plus ``parallel=True``.  The number of
    threads follows :func:`numba.set_num_threads` in the calling thread.
    """
    if fastmath not in (False, CONTRACT):
        raise ValueError(f"fastmath must be False or CONTRACT, got {fastmath!r}")

    def wrap(f):
        return numba.njit(
            fastmath=set(fastmath) if fastmath else False, parallel=True, **_BASE_OPTIONS
        )(f)

    return wrap if func is None else wrap(func)
