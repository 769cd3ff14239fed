"""fastbp._jit: the dispatcher every kernel is compiled through."""

import ctypes
import gc

import numba
import numpy as np
import pytest
from numba.core import errors, event, types
from numba.core.caching import NullCache

from fastbp import _jit


def without_disk_cache(dispatcher):
    dispatcher._cache = NullCache()  # test kernels stay out of fastbp's cache folder
    return dispatcher


def test_constant_arguments_compile_no_extra_specialisation():
    @without_disk_cache
    @_jit.kernel
    def callee(x, k):
        return x + k

    @without_disk_cache
    @_jit.kernel
    def caller(x):
        total = 0.0
        k = 0  # a loop variable's first value: typed as the literal 0 at first
        for _ in range(3):
            total += callee(x, k) + callee(x, 5)
            k += 1
        return total

    assert caller(1.0) == (1 + 0 + 1 + 5) + (1 + 1 + 1 + 5) + (1 + 2 + 1 + 5)
    assert callee.signatures == [(types.float64, types.int64)]


def test_fastmath_other_than_contract_is_refused():
    with pytest.raises(ValueError, match="fastmath must be False or CONTRACT"):
        _jit.kernel(fastmath=True)
    with pytest.raises(ValueError, match="fastmath must be False or CONTRACT"):
        _jit.parallel_kernel(fastmath={"nnan"})


# In a fresh process with the disk cache off, so that every kernel compiles
# (a kernel loaded from the cache never compiles its callees at all).
TILES_CHILD = """
import numpy as np
import fastbp
from fastbp import _tiles
rng = np.random.default_rng(0)
X = rng.random((40, 30))
Y = np.eye(20)[rng.integers(0, 20, 40)]
W_h, W_out = rng.random((30, 40)), rng.random((40, 20))
fastbp.backprop(X, Y, W_h, np.zeros(40), W_out, np.zeros(20), n_threads=1)
fastbp.grad_W_out_blocked(X, Y, n_threads=1)
for kernel in (_tiles.accumulate, _tiles.tiles_for_panel,
               _tiles.tile_one_vector, _tiles.tile_two_vectors, _tiles.pack_block):
    print(kernel.__name__, len(kernel.signatures))
"""


def test_the_register_tiles_compile_once_per_dtype():
    # The fused step reads X in place (strided) and δ contiguous; the
    # blocked gradient reads δ contiguous: every caller passes D typed as
    # any layout, so each tile kernel compiles once (float64 here).
    import os
    import subprocess
    import sys

    env = dict(os.environ, FASTBP_CACHE="0")
    out = subprocess.run(
        [sys.executable, "-c", TILES_CHILD], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    counts = dict(zip(out[::2], map(int, out[1::2])))
    # One specialisation per dtype: none per layout of D, none per constant.  The
    # per-tile dispatch is inlined into tiles_for_panel and compiles nothing of its own.
    assert counts == {
        "accumulate": 1,
        "tiles_for_panel": 1,
        "tile_one_vector": 0,
        "tile_two_vectors": 0,
        "pack_block": 1,
    }


def test_serial_and_parallel_share_one_body_and_give_the_same_bits():
    import numba

    def chunk_sums(values, n_chunks):
        sums = np.zeros(n_chunks)
        for c in numba.prange(n_chunks):
            for i in range(c * values.size // n_chunks, (c + 1) * values.size // n_chunks):
                sums[c] += values[i]
        total = 0.0
        for c in range(n_chunks):  # the partials in chunk order
            total += sums[c]
        return total

    serial, threaded = _jit.serial_and_parallel(chunk_sums)
    serial, threaded = without_disk_cache(serial), without_disk_cache(threaded)
    assert serial.py_func is threaded.py_func is chunk_sums
    assert not serial.targetoptions.get("parallel") and threaded.targetoptions["parallel"]
    values = np.random.default_rng(0).standard_normal(10_001)
    assert serial(values, 7) == threaded(values, 7)
    with pytest.raises(ValueError, match="fastmath must be False or CONTRACT"):
        _jit.serial_and_parallel(chunk_sums, fastmath=True)


def test_the_threaded_twin_has_cache_files_of_its_own():
    from fastbp import _cache, _kernels, _kernels_step

    if not _cache.CACHE_ENABLED:
        pytest.skip("the disk cache is off in this process (FASTBP_CACHE=0)")
    for serial, threaded in (
        (_kernels._grad_W_out_blocked_serial, _kernels._grad_W_out_blocked_parallel),
        (_kernels_step._backprop_serial, _kernels_step._backprop_parallel),
    ):
        assert serial.py_func is threaded.py_func
        serial_name = serial._cache._cache_file._index_name
        threaded_name = threaded._cache._cache_file._index_name
        assert serial_name != threaded_name and ".parallel-" in threaded_name


def test_an_arithmetic_kernel_runs_python_for_python_callers_and_compiles_for_kernels():
    import numba

    @without_disk_cache
    @_jit.kernel(linked=True, arithmetic=True)
    def padded(n, w):
        return (n + w - 1) // w * w

    @numba.njit(cache=False)  # a plain caller: no twin of it in fastbp's cache
    def caller(n):
        return padded(n, 16) + padded(n, 8)

    # From Python: plain Python, so nothing is compiled (no twin with a Python
    # entry either), a float stays a float and an int beyond int64 is exact.
    assert padded(17, 16) == 32
    assert isinstance(padded(2.5, 1), float) and padded(2.5, 1) == 2.0
    assert padded(2**70 + 1, 16) == 2**70 + 16
    assert padded.signatures == [] and padded._python_twin is None
    # From compiled code: compiled (once, for its integer types), the same results.
    sizes = (0, 1, 17, 100)
    assert [caller(n) for n in sizes] == [padded(n, 16) + padded(n, 8) for n in sizes]
    assert padded.signatures == [(types.int64, types.int64)]


def test_the_step_s_size_arithmetic_is_the_same_in_python_and_compiled():
    # The workspace is sized in Python, the kernels lay out their buffers compiled:
    # both run _chunk_offsets, so they must agree.
    import numba

    from fastbp import _scratch

    @numba.njit(cache=False)
    def compiled_offsets(n, m, d, t, block_rows, itemsize):
        return _scratch._chunk_offsets(n, m, d, t, block_rows, itemsize)

    for shape in ((32, 64, 100, 10), (1, 1, 1, 1), (300, 784, 3, 20), (5, 0, 7, 0)):
        for block_rows in (1, 6, 192):
            for itemsize in (4, 8):
                args = (*shape, block_rows, itemsize)
                assert compiled_offsets(*args) == _scratch._chunk_offsets(*args), args
    assert _scratch._chunk_offsets.signatures  # compiled for the kernel, not for Python


class _CollectorStates(event.Listener):
    """gc.isenabled() at the start and end of every compilation (Numba's compile events)."""

    def __init__(self):
        self.states = []

    def on_start(self, ev):
        self.states.append(gc.isenabled())

    def on_end(self, ev):
        self.states.append(gc.isenabled())


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="no JIT")
def test_the_collector_is_off_while_kernels_compile_and_as_it_was_afterwards():
    @without_disk_cache
    @_jit.kernel(linked=True)
    def callee(x):
        return x + 1.0

    @without_disk_cache
    @_jit.kernel
    def caller(x):
        return callee(x) * 2.0

    assert gc.isenabled()
    listener = _CollectorStates()
    with event.install_listener("numba:compile", listener):
        assert caller(1.0) == 4.0
    # The caller's twin (its Python entry) and the callee compiled, each with the collector off.
    assert len(listener.states) == 4 and not any(listener.states)
    assert gc.isenabled()

    @without_disk_cache
    @_jit.kernel
    def untypable(x):
        return x + "text"

    with pytest.raises(errors.TypingError):
        untypable(1.0)
    assert gc.isenabled()  # on again after a failed compilation

    @without_disk_cache
    @_jit.kernel
    def another(x):
        return x - 1.0

    gc.disable()  # a program that keeps the collector off keeps it off
    try:
        assert another(1.0) == 0.0
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_the_collector_pause_nests_and_restores_the_outer_state():
    assert gc.isenabled()
    with _jit._collector_paused():
        with _jit._collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # only the outermost turns it back on
    assert gc.isenabled()
    gc.disable()
    try:
        with _jit._collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="no JIT")
def test_a_linked_kernel_emits_no_machine_code_until_its_code_is_asked_for():
    @without_disk_cache
    @_jit.kernel(linked=True)
    def leaf(x):
        return x * 3.0

    @without_disk_cache
    @_jit.kernel
    def caller(x):
        return leaf(x) + 1.0

    @without_disk_cache
    @_jit.kernel
    def top(x):
        return caller(x)

    assert top(2.0) == 7.0  # caller runs its linked copy of leaf
    (compiled,) = leaf.overloads.values()
    library = compiled.library
    assert isinstance(library, _jit._DeferredLibrary) and library._deferred
    name = compiled.fndesc.llvm_func_name
    assert not library._codegen._engine.is_symbol_defined(name)
    # The cache keeps the module callers link (Numba's bitcode kind), not object code.
    assert library.serialize_using_object_code()[1] == "bitcode"
    # No Python entry: asking for one emits nothing.
    assert library.get_pointer_to_function(compiled.fndesc.llvm_cpython_wrapper_name) == 0
    assert library._deferred
    # Numba set no environment pointer when it compiled leaf: the engine had no global
    # of that name to hold it then (the caller's linked copy has one now).
    ((env_name, env),) = library._pending_environments
    assert env_name == compiled.fndesc.env_name and env is compiled.environment
    # Asking for a function it defines emits the library, which then serialises as usual,
    # and sets the environment pointer that waited.
    assert library.get_pointer_to_function(name) != 0 and not library._deferred
    assert library._codegen._engine.is_symbol_defined(name)
    assert library._pending_environments == ()
    address = library._codegen._engine.get_global_value_address(env_name)
    assert ctypes.c_void_p.from_address(address).value == id(env)
    assert library.serialize_using_object_code()[1] == "object"
    # Kernels whose code runs are emitted at once: a Python entry, and a kernel called
    # through its symbol (linked into its caller where callees are linked).
    for dispatcher in (top._python_twin, caller):
        (compiled,) = dispatcher.overloads.values()
        deferred = getattr(compiled.library, "_deferred", False)
        assert deferred is (dispatcher is caller and not _jit.STANDALONE_CALLS)


def test_a_kernel_without_reference_counts_can_neither_allocate_nor_return_a_new_view():
    # Numba's runtime is what allocates and counts: without it, both fail to compile
    # (the Python stand-ins of the JIT-off run have no such limits).
    @without_disk_cache
    @_jit.kernel(refcounted=False)
    def allocates(n):
        return np.empty(n).sum()

    @without_disk_cache
    @_jit.kernel(refcounted=False)
    def returns_a_view(a):
        return a[1:]

    @without_disk_cache
    @_jit.kernel(refcounted=False)
    def sums_a_view(a):
        return a[1:].sum()

    if numba.config.DISABLE_JIT:
        pytest.skip("no JIT")
    with pytest.raises(errors.TypingError):
        allocates(3)
    with pytest.raises(errors.TypingError):
        returns_a_view(np.arange(3.0))
    assert sums_a_view(np.arange(4.0)) == 6.0


# Every kernel compiled without reference counts, and every kernel they call, however
# deep, after a step (1 and 2 threads, one chunk and several), an epoch and a private
# epoch in each dtype, with the disk cache off so that each has its LLVM IR.  A callee
# typed while such a kernel compiles is compiled without the runtime too, and one typed
# before is counted: either way none of them may allocate or return an array, or a
# counted caller would release what was never counted (or the reverse).
UNCOUNTED_CHILD = """
import ast, inspect, re, textwrap
import numpy as np
import fastbp
from fastbp import _jit
from numba.core import types
rng = np.random.default_rng(0)
for dtype in (np.float32, np.float64):
    for n in (40, 700):
        X = rng.random((n, 30)).astype(dtype)
        Y = np.eye(20, dtype=dtype)[rng.integers(0, 20, n)]
        W_h = rng.random((30, 40)).astype(dtype) * 0.1
        W_out = rng.random((40, 20)).astype(dtype) * 0.1
        b_h, b_out = np.zeros(40, dtype), np.zeros(20, dtype)
        for threads in (1, 2):
            fastbp.backprop(X, Y, W_h, b_h, W_out, b_out, l2=0.01, n_threads=threads)
    fastbp.sgd_epoch(X, Y, W_h, b_h, W_out, b_out, np.arange(n), 0.1, 32, l2=0.01)
    fastbp.dp_sgd_epoch(X, Y, W_h, b_h, W_out, b_out, sample_rate=0.05, eta=0.1,
                        max_grad_norm=1.0, noise_multiplier=1.0, rng=np.random.default_rng(1))

kernels = {id(d): d for d in _jit._DISPATCHERS}

def called(dispatcher):
    # What a kernel's source calls, by name or module attribute, as its module resolves it.
    names = dispatcher.py_func.__globals__
    tree = ast.parse(textwrap.dedent(inspect.getsource(dispatcher.py_func)))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name):
            yield f.id, names.get(f.id)
        elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
            yield f.attr, getattr(names.get(f.value.id), f.attr, None)

def has_array(ty):
    if isinstance(ty, types.Array):
        return True
    return isinstance(ty, types.BaseTuple) and any(has_array(t) for t in ty.types)

todo = [d for d in _jit._DISPATCHERS if not d.targetoptions.get("_nrt", True)]
seen = {}
while todo:
    d = todo.pop()
    if id(d) in seen:
        continue
    seen[id(d)] = d
    for name, target in called(d):
        if name in ("empty", "zeros", "transposed"):  # fastbp._arrays's allocations
            print("ALLOCATES", d.py_func.__name__, name)
        if id(target) in kernels:
            todo.append(target)

for d in seen.values():
    uncounted = not d.targetoptions.get("_nrt", True)
    for cres in list(d.overloads.values()):
        ir = cres.library.get_llvm_str()
        name = re.escape(cres.fndesc.mangled_name)
        body = re.search(r'define [^\\n]*@"?' + name + r'"?\\(.*?\\n}\\n', ir, re.S).group(0)
        allocates = len(re.findall("@NRT_MemInfo_alloc|@NRT_Allocate|@NRT_MemInfo_new", body))
        print(d.py_func.__name__, uncounted, has_array(cres.signature.return_type),
              allocates, body.count("@NRT_incref") + body.count("@NRT_decref") if uncounted else 0)
"""


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="no JIT")
def test_kernels_without_reference_counts_and_their_callees_neither_allocate_nor_return_arrays():
    import os
    import subprocess
    import sys

    env = dict(os.environ, FASTBP_CACHE="0")
    lines = subprocess.run(
        [sys.executable, "-c", UNCOUNTED_CHILD], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert [line for line in lines if line.startswith("ALLOCATES")] == []
    rows = [line.split() for line in lines]
    assert [r[0] for r in rows if r[2] != "False"] == []  # returns an array
    assert [r[0] for r in rows if r[3] != "0"] == []  # allocates
    assert [r[0] for r in rows if r[4] != "0"] == []  # uncounted, yet calls the runtime
    uncounted = {r[0] for r in rows if r[1] == "True"}
    # The kernels of the register tiles, the step, the epoch and private training are
    # among them (the option is not dropped on the way to Numba), and so are callees.
    assert uncounted >= {
        "tiles_for_panel",
        "accumulate_columns",
        "_hidden_forward_packed",
        "_forward_and_deltas",
        "_add_small_gradients",
        "_take_step",
        "_example_norms",
        "_clip_rows",
    }
    assert {"_cost_terms", "_matmul_accumulate", "pack_panels"} <= {r[0] for r in rows}


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="no JIT")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_step_an_epoch_and_a_private_epoch_leave_the_runtime_s_counts_balanced(dtype):
    # A kernel without reference counts that kept a counted view would leave its
    # source's memory-info block unreleased (or release it early): each call here
    # must release every block it makes, whatever the thread count.
    from numba.core.runtime import _nrt_python, rtsys

    import fastbp

    rng = np.random.default_rng(3)
    X = rng.random((300, 40)).astype(dtype)
    Y = np.eye(20, dtype=dtype)[rng.integers(0, 20, 300)]
    weights = [
        rng.random((40, 40)).astype(dtype) * 0.1,
        np.zeros(40, dtype),
        rng.random((40, 20)).astype(dtype) * 0.1,
        np.zeros(20, dtype),
    ]

    def run():
        # First one chunk shared by 2 threads (200·40·40 multiply-adds), which compiles
        # the chunk's block buffers counted, then the single-block step, then the
        # chunked step (300 examples), whose per-chunk kernel takes those buffers.
        fastbp.backprop(X[:200], Y[:200], *weights, l2=0.01, n_threads=2)
        for threads in (1, 2):
            fastbp.backprop(X[:40], Y[:40], *weights, l2=0.01, n_threads=threads)
            fastbp.backprop(X, Y, *weights, l2=0.01, n_threads=threads)
        fastbp.sgd_epoch(X, Y, *weights, np.arange(300), 0.1, 32, l2=0.01)
        fastbp.dp_sgd_epoch(
            X,
            Y,
            *weights,
            sample_rate=0.1,
            eta=0.1,
            max_grad_norm=1.0,
            noise_multiplier=1.0,
            rng=np.random.default_rng(1),
        )

    run()  # compiled, and the workspaces kept between calls made, before counting
    was_enabled = _nrt_python.memsys_stats_enabled()
    _nrt_python.memsys_enable_stats()
    try:
        before = rtsys.get_allocation_stats()
        run()
        after = rtsys.get_allocation_stats()
    finally:
        if not was_enabled:
            _nrt_python.memsys_disable_stats()
    assert after.alloc - before.alloc > 0  # the calls did go through the runtime
    assert after.alloc - after.free == before.alloc - before.free
    assert after.mi_alloc - after.mi_free == before.mi_alloc - before.mi_free
