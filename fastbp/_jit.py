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
    On by default: compiled code is kept on disk in a folder keyed on a hash
    of every fastbp source file, the Numba, llvmlite and NumPy versions, the
    CPU and the register-tile width, so stale code cannot be loaded
    (:mod:`fastbp._cache`; ``FASTBP_CACHE=0`` turns it off,
    ``FASTBP_CACHE_DIR`` moves it).  Numba's own ``cache=True`` is not used:
    it keys each function on its own file only.
dispatcher
    :class:`_KernelDispatcher`, Numba's CPU dispatcher with constant
    arguments typed as their plain types, so that no kernel compiles a
    specialisation per constant value.
compilation
    Lazy: nothing is compiled at import.  The public functions normalise
    their inputs so each kernel sees at most two specialisations
    (float32 and float64, C-contiguous).
serial and threaded twins
    :func:`serial_and_parallel` compiles one body as both, so a kernel's
    serial and threaded versions cannot drift apart; the threaded one has
    cache files of its own.
"""

import numba
from numba.core import types
from numba.core.registry import CPUDispatcher

from ._cache import CACHE_ENABLED, enable_cache

__all__ = ["CACHE", "CONTRACT", "cache_counts", "kernel", "parallel_kernel", "serial_and_parallel"]

#: Whether compiled code is cached on disk (``FASTBP_CACHE``, on by default).
CACHE = CACHE_ENABLED

# Every dispatcher made here, for cache_counts.
_DISPATCHERS = []

#: The only fast-math flag fastbp uses: allow fused multiply-add.
CONTRACT = frozenset({"contract"})

_BASE_OPTIONS = {
    "nogil": True,
    "error_model": "numpy",
    "boundscheck": False,
}


class _KernelDispatcher(CPUDispatcher):
    """Numba's CPU dispatcher, compiling one specialisation per argument *type*.

    Called from compiled code with a constant (``f(x, 0)``, a module-level
    block size), Numba's own dispatcher compiles a specialisation for that
    literal value, and type inference often compiles a loop variable's first
    value (``k = 0``) as a literal before settling on int64: each a full
    compilation of the callee and its callees, run for nothing.  Here every
    argument type is made non-literal first, so each kernel compiles once
    per dtype and layout.  (The intrinsics of :mod:`fastbp._simd` still see
    their compile-time constants: they are not dispatchers.)

    Array layouts stay as the caller's: a kernel called with contiguous and
    with strided arrays compiles once for each, because its contiguous
    specialisation runs faster.
    """

    def get_call_template(self, args, kws):
        return super().get_call_template(
            tuple(types.unliteral(a) for a in args),
            {name: types.unliteral(a) for name, a in kws.items()},
        )


def _compile_lazily(func, options):
    """A dispatcher for ``func`` with fastbp's options (the plain function with the JIT off)."""
    if numba.config.DISABLE_JIT:
        return func
    dispatcher = _KernelDispatcher(
        py_func=func, locals={}, targetoptions={"nopython": True, **_BASE_OPTIONS, **options}
    )
    _DISPATCHERS.append(dispatcher)
    # A threaded kernel may share its Python function with a serial one: its cache files
    # carry the variant in their name, so neither can load the other's code.
    return enable_cache(dispatcher, variant="parallel" if options.get("parallel") else "")


def cache_counts():
    """(loads from the disk cache, compilations) of fastbp's kernels so far in this process.

    Counted per specialisation, over every kernel, callees included (Numba's
    ``_cache_hits`` and ``_cache_misses``); (0, 0) with the JIT off.
    """
    hits = misses = 0
    for dispatcher in _DISPATCHERS:
        hits += sum(getattr(dispatcher, "_cache_hits", {}).values())
        misses += sum(getattr(dispatcher, "_cache_misses", {}).values())
    return hits, misses


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
        return _compile_lazily(f, {"fastmath": set(fastmath) if fastmath else False})

    return wrap if func is None else wrap(func)


def parallel_kernel(func=None, *, fastmath=False):
    """Compile ``func`` as a threaded kernel (``prange`` loops run in parallel).

    Same options as :func:`kernel`, plus ``parallel=True``.  The number of
    threads follows :func:`numba.set_num_threads` in the calling thread.
    """
    if fastmath not in (False, CONTRACT):
        raise ValueError(f"fastmath must be False or CONTRACT, got {fastmath!r}")

    def wrap(f):
        return _compile_lazily(
            f, {"fastmath": set(fastmath) if fastmath else False, "parallel": True}
        )

    return wrap if func is None else wrap(func)


def serial_and_parallel(func=None, *, fastmath=False):
    """Compile ``func`` twice: ``(serial, threaded)`` kernels from one body.

    In the serial kernel each ``prange`` loop runs in order in the calling
    thread; in the threaded one (:func:`parallel_kernel`) on Numba's
    threads.  One body for both, so the two cannot drift apart: where each
    iteration writes only its own outputs, they give the same bits.  Each
    compiles on first use, and has cache files of its own.
    """
    if fastmath not in (False, CONTRACT):
        raise ValueError(f"fastmath must be False or CONTRACT, got {fastmath!r}")

    def wrap(f):
        return kernel(f, fastmath=fastmath), parallel_kernel(f, fastmath=fastmath)

    return wrap if func is None else wrap(func)
