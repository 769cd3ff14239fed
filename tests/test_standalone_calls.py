"""Kernels called through their symbols: each compiles once, and no cache state crashes.

A compiled caller declares a standalone callee's fixed symbol instead of
linking a copy of its code, and keeps a load hook in its cache entry that
compiles or loads the callee first.  These tests leave the cache in every
state the issue names (a caller without its callee, a callee saved by
another process, half the files gone, two processes compiling different
levels at once) and check that a fresh process still gives the same bits.
Each child process has its own FASTBP_CACHE_DIR under tmp_path.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest

import fastbp
from fastbp import _cache, _jit, _kernels

# A child computes one public function and reports what compiled.  grad_W_h
# is the short chain (_grad_W_h → the tile engine's accumulate →
# accumulate_columns → tiles_for_panel, pack_panels, pack_block); backprop
# is the long one (the step's driver → chunk → per-block work → engine).
CHILD = """
import json, sys
import numpy as np
import fastbp
from fastbp import _cache, _jit
rng = np.random.default_rng(0)
if sys.argv[1] == "grad_W_h":
    X = rng.random((300, 70))
    delta_h = rng.random((300, 20)) - 0.5
    results = [fastbp.grad_W_h(X, delta_h)]
else:
    X = rng.random((40, 30))
    Y = np.eye(4)[rng.integers(0, 4, 40)]
    W_h = rng.standard_normal((30, 20)) / 5
    W_out = rng.standard_normal((20, 4)) / 5
    results = fastbp.backprop(X, Y, W_h, np.zeros(20), W_out, np.zeros(4), l2=0.1, n_threads=1)
compiled = sorted(
    d.py_func.__qualname__ for d in _jit._DISPATCHERS if sum(d._cache_misses.values())
)
hits, misses = _jit.cache_counts()
from numba.core.registry import cpu_target
deferred = sorted(
    d.py_func.__qualname__ for d in _jit._DISPATCHERS
    if any(getattr(c.library, "_deferred", False) for c in d.overloads.values())
)
print(json.dumps({
    "deferred": deferred,
    "codegen_patched": "unserialize_library" in vars(cpu_target.target_context.codegen()),
    "folder": str(_cache.cache_dir()),
    "standalone": _jit.STANDALONE_CALLS,
    "hits": hits,
    "misses": misses,
    "compiled": compiled,
    "result": [np.asarray(r, dtype=np.float64).tobytes().hex() for r in results],
}))
"""


def start_child(cache, function, env_changes=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FASTBP_", "NUMBA_"))}
    env["FASTBP_CACHE_DIR"] = str(cache)
    env.update(env_changes or {})
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, function],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(child):
    out, err = child.communicate(timeout=900)
    assert child.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def run_child(cache, function="grad_W_h", env_changes=None):
    return finish(start_child(cache, function, env_changes))


def kernel_files(folder, name):
    """The cache files of the kernel ``name`` (module.qualname) in ``folder``."""
    files = [p for p in Path(folder).iterdir() if p.name.startswith(name + "-")]
    assert files, f"no cache files for {name} in {folder}"
    return files


def test_a_caller_whose_callee_left_the_cache_compiles_the_callee_alone(tmp_path):
    first = run_child(tmp_path)
    assert first["standalone"] and first["hits"] == 0
    assert {"accumulate", "accumulate_columns", "tiles_for_panel"} <= set(first["compiled"])
    for path in kernel_files(first["folder"], "_tiles.accumulate_columns"):
        path.unlink()

    second = run_child(tmp_path)
    assert second["result"] == first["result"]
    # The callers came from the cache; only the missing callee compiled.
    assert second["compiled"] == ["accumulate_columns"]
    assert second["hits"] > 0


def test_a_callee_saved_by_another_process_serves_the_callers_saved_before_it(tmp_path):
    first = run_child(tmp_path)
    for path in kernel_files(first["folder"], "_tiles.tiles_for_panel"):
        path.unlink()
    second = run_child(tmp_path)  # compiles and saves tiles_for_panel anew
    assert second["compiled"] == ["tiles_for_panel"]

    # Its callers were saved by the first process, the callee by the second.
    third = run_child(tmp_path)
    assert third["misses"] == 0 and third["compiled"] == []
    assert third["result"] == first["result"]


def test_a_half_deleted_cache_folder_is_filled_again(tmp_path):
    first = run_child(tmp_path, "backprop")
    files = sorted(p for p in Path(first["folder"]).iterdir() if p.suffix in (".nbi", ".nbc"))
    rng = np.random.default_rng(0)
    # Half the files at random: indexes without their code, code without its index.
    for index in rng.choice(len(files), size=len(files) // 2, replace=False):
        files[index].unlink()
    assert {p.suffix for p in files if not p.exists()} == {".nbi", ".nbc"}

    second = run_child(tmp_path, "backprop")
    assert second["result"] == first["result"]
    assert 0 < second["misses"] < first["misses"]
    third = run_child(tmp_path, "backprop")
    assert third["misses"] == 0 and third["result"] == first["result"]


def test_two_processes_compiling_different_levels_at_once(tmp_path):
    # One compiles the tile engine as the top of its tree, the other as a
    # callee five levels down; both save it, and each one's callers load.
    low, high = start_child(tmp_path, "grad_W_h"), start_child(tmp_path, "backprop")
    low, high = finish(low), finish(high)
    assert not list(tmp_path.rglob("*.tmp.*"))
    again_low, again_high = run_child(tmp_path, "grad_W_h"), run_child(tmp_path, "backprop")
    assert again_low["misses"] == 0 and again_low["result"] == low["result"]
    assert again_high["misses"] == 0 and again_high["result"] == high["result"]


def test_a_fresh_single_chunk_step_compiles_neither_chunk_sums_nor_the_private_branch(tmp_path):
    # What a fresh process waits for: a minibatch step's tree holds the
    # step itself, not the kernels that only several chunks or DP-SGD run.
    child = run_child(tmp_path, "backprop")
    assert "_plain_step" in child["compiled"] and "_backprop_chunk" in child["compiled"]
    never = {"_backprop_chunks", "_sum_chunks", "_sum_transposed_partials", "_sum_rows_in_order"}
    never |= {"_example_norms", "_clip_rows"}
    assert never.isdisjoint(child["compiled"])


def test_a_caller_over_a_linked_callee_loaded_from_the_cache_keeps_its_load_hooks(tmp_path):
    # The tile engine's accumulate is linked into its callers and calls
    # accumulate_columns through its symbol.  The first process saves
    # accumulate; the second loads it and compiles the step's callers over
    # it; the third loads those callers alone, and must find a hook that
    # loads accumulate_columns before their code (without it, LLVM aborts).
    first = run_child(tmp_path, "grad_W_h")
    second = run_child(tmp_path, "backprop")
    assert "accumulate" not in second["compiled"] and "_backprop_chunk" in second["compiled"]
    # Compiled or loaded (its linkable module, fastbp._jit._DeferredLibrary), the linked
    # kernel's own machine code is never emitted; the load leaves Numba's code generator as is.
    assert "accumulate" in first["deferred"] and "accumulate" in second["deferred"]
    assert not second["codegen_patched"]
    third = run_child(tmp_path, "backprop")
    assert third["misses"] == 0 and third["result"] == second["result"]
    assert run_child(tmp_path, "grad_W_h")["result"] == first["result"]


@pytest.mark.skipif(
    numba.config.DISABLE_JIT or not _jit.STANDALONE_CALLS, reason="no JIT, or callees linked"
)
def test_cached_code_calling_an_undefined_symbol_is_refused_before_it_loads():
    undefined = b"fastbp._tiles.no_such_kernel.0123456789abcdef"
    code = b"\x7fELF..." + undefined + b"\x00..."
    with pytest.raises(RuntimeError, match="no_such_kernel"):
        _jit.check_symbols_defined(("caller", "object", (code, b"")), [])
    ran = []
    _jit.check_symbols_defined(("caller", "object", (b"no symbols", b"")), [lambda: ran.append(1)])
    assert ran == [1]  # the entry's own hooks run first


def test_linking_every_callee_gives_the_same_bits_in_a_folder_of_its_own(tmp_path):
    called = run_child(tmp_path, "backprop")
    linked = run_child(tmp_path, "backprop", {"FASTBP_LINK_ALL": "1"})
    assert called["standalone"] and not linked["standalone"]
    assert linked["folder"] != called["folder"]
    assert linked["result"] == called["result"]
    # And from the linked folder's cache, too.
    again = run_child(tmp_path, "backprop", {"FASTBP_LINK_ALL": "1"})
    assert again["misses"] == 0 and again["result"] == called["result"]


def test_standalone_calls_follow_numba_and_the_setting():
    supported = _cache.standalone_calls_supported()
    assert _cache.standalone_calls({}) is supported
    for word in ("1", "yes", "on"):
        assert _cache.standalone_calls({"FASTBP_LINK_ALL": word}) is False
    for word in ("0", "off", ""):
        assert _cache.standalone_calls({"FASTBP_LINK_ALL": word}) is supported
    assert _cache.key_parts()["standalone_calls"] is _jit.STANDALONE_CALLS


@pytest.mark.skipif(
    numba.config.DISABLE_JIT or not _jit.STANDALONE_CALLS, reason="no JIT, or callees linked"
)
def test_symbols_are_fixed_names_of_kernel_and_types():
    key = _jit._kernel_key(_kernels._delta_out)
    assert key == ("fastbp._kernels", "_delta_out", "")
    from numba.core import types

    f64 = types.Array(types.float64, 2, "C")
    f32 = types.Array(types.float32, 2, "C")
    symbol = _jit._symbol(key, (f64, f64))
    assert symbol.startswith("fastbp._kernels._delta_out.")
    assert symbol == _jit._symbol(key, (f64, f64))
    assert symbol != _jit._symbol(key, (f32, f32))
    hook = _jit._CompileCallee(key, (f64, f64))
    assert hook == _jit._CompileCallee(key, (f64, f64)) and len({hook, hook}) == 1


@pytest.mark.skipif(
    numba.config.DISABLE_JIT or not _jit.STANDALONE_CALLS, reason="no JIT, or callees linked"
)
def test_a_kernel_called_from_python_runs_its_twin_with_a_python_entry():
    rng = np.random.default_rng(3)
    A_out, Y = rng.random((5, 3)), rng.random((5, 3))
    kernel = _kernels._delta_out
    expected = A_out - Y
    np.testing.assert_array_equal(kernel(A_out, Y), expected)
    twin = kernel._python_twin
    assert twin is not None and twin in _jit._DISPATCHERS
    assert kernel.targetoptions["no_cpython_wrapper"]
    assert not twin.targetoptions.get("no_cpython_wrapper")
    # The twin's entry now sits in the kernel's own table: the next call
    # goes straight to it, without Python-level dispatch.
    calls = []
    original = type(kernel)._compile_for_args

    def counting(self, *args, **kws):
        calls.append(args)
        return original(self, *args, **kws)

    type(kernel)._compile_for_args = counting
    try:
        np.testing.assert_array_equal(kernel(A_out, Y), expected)
    finally:
        type(kernel)._compile_for_args = original
    assert calls == []
    np.testing.assert_array_equal(fastbp.delta_out(A_out, Y), expected)
