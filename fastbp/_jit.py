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
calls between kernels (``linked``)
    Numba links a copy of each callee's optimised module into its caller,
    and LLVM optimises and emits the whole linked module again, so a kernel
    five calls down compiles five times over.  Here a kernel is
    *standalone* unless it says ``linked=True``: it is exported under a
    fixed symbol (``<module>.<name>.<hash of its argument types>``,
    the same in every process, registered with ``llvmlite.binding.add_symbol``)
    and its callers declare that symbol instead of linking its code, so
    it compiles once per specialisation.  A caller keeps a load hook in
    its cache entry (Numba's ``reload_init``) that compiles or loads each
    standalone callee before the caller's code is loaded, and cached code
    is loaded only once every kernel symbol it calls is defined
    (:func:`check_symbols_defined`; otherwise it is a miss), so no cache
    state leaves a symbol undefined.  ``linked=True`` is for small leaves called
    per element, row or register tile, which LLVM must inline, and for thin
    per-block helpers, which are cheaper to compile into their few callers
    than to load on their own.  Where Numba
    has no load hooks on libraries (before 0.63), or ``FASTBP_LINK_ALL=1``
    is set, every callee is linked as in plain Numba (own cache folder).
machine code of linked kernels (:class:`_DeferredLibrary`)
    A linked kernel's own machine code never runs (its callers run their
    copies; Python calls run its twin), so it is emitted only if something
    asks for a function's address in it, and the cache keeps its linkable
    module (Numba's ``bitcode`` kind) instead of object code.  LLVM's code
    generation is a tenth to a third of a small kernel's compile time.
kernels inlined before typing (``inlined=True``)
    Numba's ``inline="always"``: the kernel's body is put into each
    caller's own code before typing, and it compiles nothing of its own.
    For the register tiles' per-tile dispatch (each a switch over six
    unrolled tiles), which LLVM would not inline for their size: a call
    per tile passed three arrays' fields, and the tile's setup could not
    be hoisted out of its caller's loop.  Their one caller holds the copy.
reference counts (``refcounted=False``)
    Numba counts references to every array view a kernel makes, with an
    atomic (locked) increment and decrement per view: in the register-tile
    loops, one pair per tile.  Kernels that allocate nothing and return no
    array, and whose callees, however deep, do neither, compile without
    Numba's runtime (``_nrt=False``): their views of their arguments are
    plain pointers, which the arguments outlive.  A callee first typed
    while such a kernel compiles is compiled without the runtime too, so
    the rule is for the whole call tree: an allocation there fails to
    compile, and an array returned there would be released by a counted
    caller that never counted it (or the reverse).  tests/test_jit.py
    checks these call trees, and that a step, an epoch and a private
    epoch leave the runtime's counts balanced.
the garbage collector (:func:`_collector_paused`)
    Off while kernels compile, and back on after, as it was: its full passes
    over Numba's long-lived objects took about a tenth of a cold compilation.
Python entries (``no_cpython_wrapper``, ``no_cfunc_wrapper``)
    Kernels compile without Numba's C-callable wrapper (fastbp takes no
    function values) and without the CPython wrapper that unboxes Python
    arguments: most are only ever called from compiled code.  A Python call
    to a kernel compiles a *twin* with that wrapper (cache variant
    ``python``) and registers the twin's entry in the kernel's own dispatch
    table, so later Python calls go straight to it.
"""

import contextlib
import copy
import gc
import hashlib
import importlib
import re

import llvmlite.binding as llvm_binding
import numba
from numba.core import sigutils, types
from numba.core.codegen import JITCodeLibrary
from numba.core.compiler import Compiler
from numba.core.compiler_lock import global_compiler_lock
from numba.core.registry import CPUDispatcher

from ._cache import CACHE_ENABLED, STANDALONE_CALLS, enable_cache

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
    "no_cfunc_wrapper": True,  # fastbp takes no function values
}


def _plain_type(numba_type):
    """A call argument's type as a kernel is compiled for: no literal, no unsigned integer.

    A ``prange`` index is uint64 in a threaded kernel and int64 in its
    serial twin; as int64 both call one specialisation (fastbp's integer
    arguments are sizes and indices, far below 2**63).
    """
    plain = types.unliteral(numba_type)
    if isinstance(plain, types.Integer) and not plain.signed:
        return types.int64
    return plain


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

    Unsigned integers (a threaded loop's index) are typed as int64, too.

    Array layouts stay as the caller's: a kernel called with contiguous and
    with strided arrays compiles once for each, because its contiguous
    specialisation runs faster.
    """

    #: Whether compiled callers call this kernel by its symbol (see :func:`kernel`).
    standalone = False
    #: The same kernel with a Python entry, made at its first Python call.
    _python_twin = None
    #: The cache files' variant ("parallel" or "").
    _variant = ""

    def get_call_template(self, args, kws):
        return super().get_call_template(
            tuple(_plain_type(a) for a in args),
            {name: _plain_type(a) for name, a in kws.items()},
        )

    def add_overload(self, cres):
        if self.targetoptions.get("no_cpython_wrapper"):
            # No Python entry to register: Python calls reach _compile_for_args.
            self.overloads[tuple(cres.signature.args)] = cres
            return
        super().add_overload(cres)

    def _compile_for_args(self, *args, **kws):
        """A Python call: run the twin that has a Python entry (see :func:`_compile_lazily`)."""
        if not self.targetoptions.get("no_cpython_wrapper"):
            return super()._compile_for_args(*args, **kws)
        with global_compiler_lock:  # one twin, and one table entry per signature
            if self._python_twin is None:
                options = dict(self.targetoptions)
                del options["no_cpython_wrapper"]
                twin = _KernelDispatcher(py_func=self.py_func, locals={}, targetoptions=options)
                _DISPATCHERS.append(twin)
                self._python_twin = enable_cache(twin, variant=self._variant + "python")
            entry_point = self._python_twin._compile_for_args(*args, **kws)
            entries = self.__dict__.setdefault("_python_entries", set())
            for cres in self._python_twin.overloads.values():
                codes = tuple(a._code for a in cres.signature.args)
                if cres.entry_point is entry_point and codes not in entries:
                    # Later Python calls with these types go straight to the twin's code.
                    self._insert(list(codes), entry_point, False)
                    entries.add(codes)
        return entry_point

    def compile(self, sig):
        with _collector_paused():
            if not self.standalone:
                return super().compile(sig)
            # Under the lock Numba compiles under (the pause holds it), so that no
            # caller is typed between this compilation and the export of its symbol.
            entry_point = super().compile(sig)
            args, _ = sigutils.normalize_signature(sig)
            cres = self.overloads[tuple(args)]
            if not getattr(cres.library, "_fastbp_exported", False):
                _export(self, cres)
            return entry_point


# How many compilations _collector_paused is inside, and whether it turned the collector off.
_PAUSE = {"depth": 0, "paused": False}


@contextlib.contextmanager
def _collector_paused():
    """Python's cyclic garbage collector off while kernels compile (loads included).

    Numba's compilations allocate hundreds of thousands of objects, most
    of them long-lived (types, IR, libraries), so the collector's full
    passes keep walking them: about a tenth of a cold compilation's time.
    With it off, one pass afterwards frees the garbage of the whole tree.
    Under Numba's compiler lock (a process compiles one kernel at a time),
    the outermost compilation turns the collector off and back on, and
    only if it was on: a program that keeps it off keeps it off.
    """
    with global_compiler_lock:
        if _PAUSE["depth"] == 0:
            _PAUSE["paused"] = gc.isenabled()
            gc.disable()
        _PAUSE["depth"] += 1
        try:
            yield
        finally:
            _PAUSE["depth"] -= 1
            if _PAUSE["depth"] == 0 and _PAUSE["paused"]:
                _PAUSE["paused"] = False
                gc.enable()


class _DeferredLibrary(JITCodeLibrary):
    """A linked kernel's code library: machine code emitted when first needed, not at once.

    Numba finalises every compiled function into machine code, but a linked
    kernel's own code never runs: callers link a copy of its optimised
    module into theirs, and Python calls run its twin.  So its emission
    (LLVM's code generation, a tenth to a third of a small kernel's compile
    time) waits until something asks for the address of a function it
    defines, which nothing in fastbp does.  The cache keeps the module for
    linking (Numba's ``bitcode`` kind) instead of object code, and a load
    defers as a compilation does.  Until emitted, the execution engine does
    not know the library's symbols, so the environment pointers Numba sets
    for its functions wait too (:class:`_EnvironmentGuard`) and are set
    once it is emitted.
    """

    #: Finalised (optimised, linkable) but not yet emitted.
    _deferred = False
    #: (name, environment) pairs to set once emitted.
    _pending_environments = ()

    def _finalize_final_module(self):
        self._finalize_dynamic_globals()
        self._verify_declare_only_symbols()
        self._finalized = True
        self._deferred = True

    def _emit(self):
        with global_compiler_lock:
            if self._deferred:
                self._deferred = False
                super()._finalize_final_module()
                for env_name, env in self._pending_environments:
                    self._codegen.set_env(env_name, env)
                self._pending_environments = ()

    def _defines(self, name):
        try:
            return not self._final_module.get_function(name).is_declaration
        except NameError:
            return False

    def get_pointer_to_function(self, name):
        self._ensure_finalized()
        if self._deferred:
            if not self._defines(name):
                return 0
            self._emit()
        return super().get_pointer_to_function(name)

    def serialize_using_object_code(self):
        self._ensure_finalized()
        if self._deferred:
            return (self.name, "bitcode", self._get_module_for_linking().as_bitcode())
        return super().serialize_using_object_code()

    @property
    def codegen(self):
        return _EnvironmentGuard(self) if self._deferred else self._codegen


class _EnvironmentGuard:
    """Numba's code generator for a library not yet emitted: environments wait for the emission.

    Numba sets a function's environment pointer by its global's address in
    the execution engine, which has none for code not yet emitted.
    """

    def __init__(self, library):
        self._library = library
        self._codegen = library._codegen

    def set_env(self, env_name, env):
        if self._codegen._engine.is_symbol_defined(env_name):
            self._codegen.set_env(env_name, env)
        else:
            self._library._pending_environments += ((env_name, env),)

    def __getattr__(self, name):
        return getattr(self._codegen, name)


class _DeferringCompiler(Compiler):
    """Numba's compiler pipeline, with the code library a :class:`_DeferredLibrary`."""

    def compile_extra(self, func):
        if self.state.library is None:
            library = self.state.targetctx.codegen().create_library(func.__qualname__)
            library.__class__ = _DeferredLibrary
            library.enable_object_caching()  # as Numba's lowering does for the library it makes
            self.state.library = library
        return super().compile_extra(func)


def unserialize_deferred(codegen, libdata):
    """A cached linked kernel's library (``bitcode`` kind), its emission deferred."""
    name, kind, data = libdata
    library = codegen.create_library(name)
    library.__class__ = _DeferredLibrary
    library._final_module = llvm_binding.parse_bitcode(data)
    library._finalize_final_module()
    return library


class _ArithmeticDispatcher(_KernelDispatcher):
    """A kernel of integer arithmetic that Python calls as plain Python (see :func:`kernel`)."""

    def __call__(self, *args, **kws):
        return self.py_func(*args, **kws)


def _kernel_key(dispatcher):
    """(module, qualified name, variant): a kernel's name, the same in every process."""
    return (dispatcher.py_func.__module__, dispatcher.py_func.__qualname__, dispatcher._variant)


def _symbol(key, args):
    """The fixed symbol a standalone kernel's specialisation ``args`` is exported under."""
    digest = hashlib.sha256(repr(tuple(args)).encode()).hexdigest()[:16]
    return ".".join(part for part in key if part) + "." + digest


class _CompileCallee:
    """A caller's load hook: compile (or load) one standalone callee before the caller.

    Kept in the caller's cache entry (Numba's ``reload_init``), so a caller
    loaded from disk finds its callee's symbol defined, whatever the cache
    holds: a callee missing from the cache, or saved by another process, is
    compiled or loaded first.
    """

    def __init__(self, key, args):
        self.key = key
        self.args = tuple(args)

    def __call__(self):
        module = self.key[0]
        if self.key not in _STANDALONE:
            importlib.import_module(module)
        dispatcher = _STANDALONE[self.key]
        if self.args not in dispatcher.overloads:  # loaded already by another caller's hook
            dispatcher.compile(self.args)

    def __eq__(self, other):
        if not isinstance(other, _CompileCallee):
            return NotImplemented
        return (self.key, self.args) == (other.key, other.args)

    def __hash__(self):
        return hash((self.key, self.args))


def _export(dispatcher, cres):
    """Define ``cres``'s fixed symbol and make compiled callers call it there.

    Numba's own call links a copy of the callee's module into the caller,
    which LLVM then optimises and emits once more, at every level above it;
    a call through the symbol compiles the callee once.
    """
    import llvmlite.binding as llvm
    from numba.core.base import OverloadSelector
    from numba.core.imputils import user_function

    cres.library._fastbp_exported = True
    address = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
    if not address:  # nothing to call through: callers link the code, as in plain Numba
        return
    key = _kernel_key(dispatcher)
    symbol = _symbol(key, cres.signature.args)
    llvm.add_symbol(symbol, address)
    _EXPORTED.add(symbol)
    declared = copy.copy(cres.fndesc)
    declared.mangled_name = symbol
    call = user_function(declared, ())
    hook = _CompileCallee(key, cres.signature.args)

    def call_by_symbol(context, builder, sig, args):
        context.active_code_library._reload_init.add(hook)
        return call(context, builder, sig, args)

    call_by_symbol.signature = call.signature
    call_by_symbol.libs = ()
    selector = OverloadSelector()
    selector.append(call_by_symbol, call_by_symbol.signature)
    dispatcher.targetctx._defns[cres.entry_point] = selector


# Standalone kernels by _kernel_key, for _CompileCallee.
_STANDALONE = {}
# The symbols this process has defined (_export).
_EXPORTED = set()


def check_symbols_defined(libdata, reload_init):
    """Run a cached entry's load hooks, then raise unless every kernel symbol it calls is defined.

    ``libdata`` is Numba's serialised library, ``(name, kind, data)``.  The
    symbols a caller calls are undefined references in its object code,
    found there by name (``<package>.<module>.<kernel>.<16 hex digits>``).
    Loading code with a reference left undefined aborts the process inside
    LLVM; raising here instead makes the entry a cache miss, compiled anew.
    """
    if not STANDALONE_CALLS:
        return
    for hook in reload_init or ():
        hook()
    name, kind, data = libdata
    code = data[0] if kind == "object" else data
    package = __name__.rpartition(".")[0].encode()
    pattern = re.escape(package) + rb"\.[A-Za-z0-9_.]+\.[0-9a-f]{16}"
    for symbol in set(re.findall(pattern, bytes(code))):
        if symbol.decode() not in _EXPORTED:
            raise RuntimeError(
                f"cached code for {name} calls {symbol.decode()}, which nothing defines"
            )


def _compile_lazily(func, options, linked=False, arithmetic=False):
    """A dispatcher for ``func`` with fastbp's options (the plain function with the JIT off)."""
    if numba.config.DISABLE_JIT:
        return func
    standalone = not linked and STANDALONE_CALLS
    dispatcher = (_ArithmeticDispatcher if arithmetic else _KernelDispatcher)(
        py_func=func,
        locals={},
        targetoptions={"nopython": True, **_BASE_OPTIONS, **options, "no_cpython_wrapper": True},
        # A linked kernel's own machine code never runs: emitted only if asked for.
        pipeline_class=Compiler if standalone else _DeferringCompiler,
    )
    dispatcher._variant = "parallel" if options.get("parallel") else ""
    _DISPATCHERS.append(dispatcher)
    if standalone:
        dispatcher.standalone = True
        _STANDALONE[_kernel_key(dispatcher)] = dispatcher
    # A threaded kernel may share its Python function with a serial one: its cache files
    # carry the variant in their name, so neither can load the other's code.
    return enable_cache(dispatcher, variant=dispatcher._variant)


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


def kernel(
    func=None, *, fastmath=False, linked=False, arithmetic=False, refcounted=True, inlined=False
):
    """Compile ``func`` with fastbp's options (serial kernel).

    Parameters
    ----------
    func : callable, optional
        The Python function to compile.  When omitted, a decorator is
        returned, so both ``@kernel`` and ``@kernel(fastmath=CONTRACT)``
        work.
    fastmath : bool or frozenset of str, default False
        ``False`` or :data:`CONTRACT`; anything else is refused.
    linked : bool, default False
        Whether compiled callers link a copy of this kernel's code into
        theirs (Numba's way), so that LLVM can inline it into their loops:
        for small leaves called once per element, row or register tile, and
        thin per-block helpers with few callers.
        Otherwise callers call it through its symbol, and it compiles once
        however many kernels call it (see the module docstring).
    arithmetic : bool, default False
        Whether ``func`` is arithmetic on a few integers (sizes, offsets)
        that Python callers run as plain Python: no compilation of a Python
        entry, and no compiled call, for what Python computes as fast.
        Compiled callers compile it as usual.  It must give the same results
        in both worlds (sizes far below 2**63).
    refcounted : bool, default True
        ``False`` compiles without Numba's reference counting (see the
        module docstring): only for kernels that allocate nothing and
        return no array, and whose callees, however deep, do neither.
    inlined : bool, default False
        Whether the kernel's body is inlined into each compiled caller
        before typing (Numba's ``inline="always"``; see the module
        docstring): for a kernel with one or two callers whose call costs
        more than its copies' compile time.  Python calls run it as usual.
    """
    if fastmath not in (False, CONTRACT):
        raise ValueError(f"fastmath must be False or CONTRACT, got {fastmath!r}")

    options = {"fastmath": set(fastmath) if fastmath else False}
    if not refcounted:
        options["_nrt"] = False
    if inlined:
        options["inline"] = "always"

    def wrap(f):
        return _compile_lazily(f, options, linked=linked, arithmetic=arithmetic)

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
