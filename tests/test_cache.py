"""The on-disk cache of compiled kernels (fastbp._cache): keyed so that it cannot go stale.

Every behaviour that depends on a fresh process runs in a child Python with
its own FASTBP_CACHE_DIR under tmp_path, so these tests neither read nor
write the user's cache.
"""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numba
import numpy as np
import pytest

import fastbp
from fastbp import _cache

PACKAGE = Path(fastbp.__file__).resolve().parent

# A child process computes (300, 7)ᵀ (300, 2) with one public function and
# reports what the cache did.  By default the per-example outer-product loop,
# one small kernel that compiles in about a second; for the test of a change
# in another module, grad_W_h: Xᵀ δ_h with δ_h two columns wide, where the
# fused-step module's _grad_W_h calls the tile engine of fastbp._tiles,
# whose element-by-element tile (tile_scalar) runs when the width is under
# one vector.
CHILD_TEMPLATE = """
import json, sys
import numpy as np
import fastbp
from fastbp import _cache, _jit
dtype = sys.argv[1]
rng = np.random.default_rng(0)
X = rng.random((300, 7)).astype(dtype)
delta_h = (rng.random((300, 2)) - 0.5).astype(dtype)
grad = fastbp.FUNCTION(X, delta_h)
hits, misses = _jit.cache_counts()
print(json.dumps({
    "file": fastbp.__file__,
    "folder": None if _cache.cache_dir() is None else str(_cache.cache_dir()),
    "hits": hits,
    "misses": misses,
    "result": grad.tobytes().hex(),
}))
"""
CHILD = CHILD_TEMPLATE.replace("FUNCTION", "grad_W_out_outer")
TILES_CHILD = CHILD_TEMPLATE.replace("FUNCTION", "grad_W_h")


def run_child(env_changes, dtype="float64", code=CHILD, drop=(), cwd=None):
    """Run ``code`` in a fresh interpreter with the environment changed; return its JSON."""
    completed = start_child(env_changes, dtype, code, drop, cwd)
    out, err = completed.communicate(timeout=600)
    assert completed.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1]), err


def start_child(env_changes, dtype="float64", code=CHILD, drop=(), cwd=None):
    env = dict(os.environ)
    for name in ("FASTBP_CACHE", "FASTBP_CACHE_DIR", "NUMBA_DISABLE_JIT", *drop):
        env.pop(name, None)
    env.update({name: str(value) for name, value in env_changes.items()})
    return subprocess.Popen(
        [sys.executable, "-W", "default", "-c", code, dtype],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,  # `python -c` puts the working folder first on sys.path
    )


def expected_result(dtype="float64", function=fastbp.grad_W_out_outer):
    rng = np.random.default_rng(0)
    X = rng.random((300, 7)).astype(dtype)
    delta_h = (rng.random((300, 2)) - 0.5).astype(dtype)
    return function(X, delta_h)


def as_array(hex_bytes, dtype="float64"):
    return np.frombuffer(bytes.fromhex(hex_bytes), dtype=dtype)


def test_a_second_process_loads_every_kernel_from_the_cache(tmp_path):
    first, _ = run_child({"FASTBP_CACHE_DIR": tmp_path})
    assert first["hits"] == 0 and first["misses"] > 0
    folder = Path(first["folder"])
    assert folder.parent == tmp_path and (folder / "fastbp-cache.json").is_file()
    assert any(folder.glob("*.nbc")) and any(folder.glob("*.nbi"))

    second, _ = run_child({"FASTBP_CACHE_DIR": tmp_path})
    assert second["folder"] == first["folder"]
    assert second["misses"] == 0 and second["hits"] > 0
    assert second["result"] == first["result"]
    np.testing.assert_array_equal(as_array(first["result"]), expected_result().ravel())


# A child process runs the fused step on two threads and the matmul way (BLAS
# through Numba's `@`), and reports whether Numba's lowering registries were
# loaded: refreshing the target context imports numba.np.arraymath.
LOADED_CHILD = """
import json, sys
import numpy as np
import fastbp
from fastbp import _jit
from fastbp._tools.problems import make_problem, step_arrays
X, Y, W_h, b_h, W_out, b_out = step_arrays(make_problem(40, 9, 6, 3, sys.argv[1]))
step = fastbp.backprop(X, Y, W_h, b_h, W_out, b_out, l2=0.01, n_threads=2)
A_h, A_out = fastbp.forward(X, W_h, b_h, W_out, b_out)
by_matmul = fastbp.grad_W_out_matmul(A_h, fastbp.delta_out(A_out, Y))
hits, misses = _jit.cache_counts()
print(json.dumps({
    "hits": hits,
    "misses": misses,
    "registries": "numba.np.arraymath" in sys.modules,
    "result": np.concatenate([np.ravel(a) for a in (*step, by_matmul)]).tobytes().hex(),
}))
"""


def test_a_cached_process_runs_without_numbas_lowering_registries(tmp_path):
    # Loading machine code needs Numba's runtime, not its lowering registries:
    # the loaded step allocates, runs threads and calls BLAS with them never
    # loaded, with the same bits.
    first, _ = run_child({"FASTBP_CACHE_DIR": tmp_path}, code=LOADED_CHILD)
    assert first["misses"] > 0 and first["registries"]
    second, _ = run_child({"FASTBP_CACHE_DIR": tmp_path}, code=LOADED_CHILD)
    assert second["misses"] == 0 and second["hits"] > 0
    assert not second["registries"]
    assert second["result"] == first["result"]


def test_a_kernel_changed_in_another_module_gets_a_new_folder_and_new_results(tmp_path):
    # _grad_W_h lives in _kernels_hidden; the tile it ends in lives in
    # _tiles.  A cache keyed on the caller's file alone would load the old
    # code after the callee changed.
    copy = tmp_path / "site" / "fastbp"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    env = {"FASTBP_CACHE_DIR": tmp_path / "cache", "PYTHONPATH": tmp_path / "site"}
    before, _ = run_child(env, code=TILES_CHILD, cwd=tmp_path)
    assert Path(before["file"]).resolve().parent == copy.resolve()
    np.testing.assert_array_equal(
        as_array(before["result"]), expected_result(function=fastbp.grad_W_h).ravel()
    )

    tiles = copy / "_tiles.py"
    source = tiles.read_text()
    old_line = "s += D[i, q] * A[i, jj]"
    assert source.count(old_line) == 1
    tiles.write_text(source.replace(old_line, "s += (2 * D[i, q]) * A[i, jj]"))

    after, _ = run_child(env, code=TILES_CHILD, cwd=tmp_path)
    assert after["folder"] != before["folder"]
    assert after["hits"] == 0 and after["misses"] > 0
    # Doubling one factor doubles every product and every partial sum exactly.
    np.testing.assert_array_equal(as_array(after["result"]), 2 * as_array(before["result"]))
    assert len(_cache.key_folders(tmp_path / "cache")) == 2


@pytest.mark.parametrize("where", ["FASTBP_CACHE_DIR", "HOME"])
def test_an_unwritable_folder_compiles_in_memory_with_one_notice(tmp_path, where):
    # A path under a regular file can be created by nobody, root included.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    if where == "FASTBP_CACHE_DIR":
        env = {"FASTBP_CACHE_DIR": blocker / "cache"}
        drop = ()
    else:
        env = {"HOME": blocker}
        drop = ("XDG_CACHE_HOME",)
    result, err = run_child(env, drop=drop)
    assert result["folder"].startswith(str(blocker))
    assert err.count("CacheWarning") == 1, err
    assert "cannot write compiled code" in err
    np.testing.assert_array_equal(as_array(result["result"]), expected_result().ravel())


def test_an_unreadable_cache_file_is_compiled_again_and_replaced(tmp_path):
    first, _ = run_child({"FASTBP_CACHE_DIR": tmp_path})
    data_files = sorted(Path(first["folder"]).glob("*.nbc"))
    for path in data_files:
        path.write_bytes(b"not a pickle")
    second, err = run_child({"FASTBP_CACHE_DIR": tmp_path})
    assert err.count("CacheWarning") == 1 and "could not read" in err, err
    assert second["result"] == first["result"] and second["misses"] > 0
    third, err = run_child({"FASTBP_CACHE_DIR": tmp_path})  # the second one rewrote them
    assert "CacheWarning" not in err and third["misses"] == 0
    assert third["result"] == first["result"]


def test_a_save_from_a_stale_index_never_overwrites_another_signatures_code(tmp_path):
    # Two processes each read the index, then save: the second one's view
    # lacks the first one's entry.  With data files numbered from the index
    # (Numba's own scheme) both would write file 1, and the first process's
    # index entry would then name the second one's code.
    data_file_class = _cache._numba_cache_class().data_file_class

    def data_file():
        return data_file_class(cache_path=str(tmp_path), filename_base="k", source_stamp="s")

    first, second = data_file(), data_file()
    first.save(("float64",), "code for float64")
    entry_of_first = first._load_index()[("float64",)]
    second._load_index = lambda: {}  # read before the first one saved
    second.save(("float32",), "code for float32")
    assert first._load_data(entry_of_first) == "code for float64"
    assert data_file().load(("float32",)) == "code for float32"


def test_saves_at_once_keep_every_index_entry(tmp_path):
    # Each saver reads the index, then (slowly) writes it back with its own
    # entry: without the lock around the two, every saver reads the empty
    # index and the last one's write drops the others' entries.
    data_file_class = _cache._numba_cache_class().data_file_class

    def slow_data_file():
        data_file = data_file_class(cache_path=str(tmp_path), filename_base="k", source_stamp="s")
        load_index = data_file._load_index

        def slow_load_index():
            overloads = load_index()
            time.sleep(0.05)
            return overloads

        data_file._load_index = slow_load_index
        return data_file

    keys = [(f"signature {i}",) for i in range(6)]
    savers = [
        threading.Thread(target=slow_data_file().save, args=(key, f"code for {key}"))
        for key in keys
    ]
    for saver in savers:
        saver.start()
    for saver in savers:
        saver.join()
    reader = data_file_class(cache_path=str(tmp_path), filename_base="k", source_stamp="s")
    assert {key: reader.load(key) for key in keys} == {key: f"code for {key}" for key in keys}


def test_a_file_system_without_locks_still_saves(tmp_path, monkeypatch):
    fcntl = pytest.importorskip("fcntl")

    def no_locks(descriptor, operation):
        raise OSError(37, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    data_file_class = _cache._numba_cache_class().data_file_class

    def data_file():
        return data_file_class(cache_path=str(tmp_path), filename_base="k", source_stamp="s")

    data_file().save(("float64",), "code for float64")
    assert data_file().load(("float64",)) == "code for float64"


def test_processes_racing_on_one_folder_never_load_each_others_code(tmp_path):
    env = {"FASTBP_CACHE_DIR": tmp_path}
    racers = [start_child(env, dtype) for dtype in ("float64", "float32", "float64", "float32")]
    for racer in racers:
        _, err = racer.communicate(timeout=600)
        assert racer.returncode == 0, err
    assert not list(tmp_path.rglob("*.tmp.*"))  # no partly written file left behind
    for dtype in ("float64", "float32"):
        result, _ = run_child(env, dtype)
        np.testing.assert_array_equal(
            as_array(result["result"], dtype), expected_result(dtype).ravel()
        )


def test_fastbp_cache_0_writes_nothing(tmp_path):
    result, _ = run_child({"FASTBP_CACHE": "0", "FASTBP_CACHE_DIR": tmp_path / "cache"})
    assert result["folder"] is None and result["hits"] == 0
    assert not (tmp_path / "cache").exists()
    np.testing.assert_array_equal(as_array(result["result"]), expected_result().ravel())


def test_numba_disable_jit_runs_plain_python_and_writes_nothing(tmp_path):
    code = """
import json
import numpy as np
import fastbp
A_out = np.array([[0.25, 0.75], [0.5, 1.0]])
Y = np.array([[0.0, 1.0], [1.0, 1.0]])
delta = fastbp.delta_out(A_out, Y)
print(json.dumps({"delta": delta.tolist(),
                  "outer": fastbp.grad_W_out_outer(A_out, delta).tolist(),
                  "jit": type(fastbp._kernels._delta_out).__name__}))
"""
    result, _ = run_child(
        {"NUMBA_DISABLE_JIT": "1", "FASTBP_CACHE_DIR": tmp_path / "cache"}, code=code
    )
    assert result["jit"] == "function"  # plain Python: no dispatcher, no cache
    assert result["delta"] == [[0.25, -0.25], [-0.5, 0.0]]
    A_out = np.array([[0.25, 0.75], [0.5, 1.0]])
    np.testing.assert_array_equal(result["outer"], A_out.T @ np.array(result["delta"]))
    assert not (tmp_path / "cache").exists()


def test_the_cache_is_on_by_default_in_the_users_cache_folder(tmp_path):
    code = "from fastbp import _cache; print(_cache.CACHE_ENABLED, _cache.cache_dir())"
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    for name in ("FASTBP_CACHE", "FASTBP_CACHE_DIR"):
        env.pop(name, None)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0] == "True"
    assert Path(out[1]).parent == tmp_path / "xdg" / "fastbp"
    assert not (tmp_path / "xdg").exists()  # nothing is written at import


def test_cache_root_follows_the_settings_in_order():
    assert _cache.cache_root({"FASTBP_CACHE_DIR": "/x/y", "XDG_CACHE_HOME": "/z"}) == Path("/x/y")
    assert _cache.cache_root({"XDG_CACHE_HOME": "/z"}) == Path("/z/fastbp")
    home = Path(os.path.expanduser("~")).absolute()
    assert _cache.cache_root({"XDG_CACHE_HOME": "relative"}) == home / ".cache" / "fastbp"
    assert _cache.cache_root({}) == home / ".cache" / "fastbp"
    for off in ("0", "false", "No", " off "):
        assert not _cache.cache_enabled({"FASTBP_CACHE": off})
    for on in ("", "1", "yes"):
        assert _cache.cache_enabled({"FASTBP_CACHE": on})
    assert _cache.cache_enabled({})


def test_every_part_of_the_key_changes_the_folder():
    parts = _cache._KEY_PARTS  # what this process's folder was named from, at import
    assert parts == _cache.key_parts() or parts["sources"] != _cache.key_parts()["sources"]
    assert set(parts) >= {
        "package",
        "sources",
        "numba",
        "llvmlite",
        "numpy",
        "cpu_name",
        "cpu_features",
        "vector_bytes",
        "python",
    }
    key = _cache.cache_key(parts)
    assert key == _cache.cache_dir().name and len(key) == 16
    for name, value in parts.items():
        changed = dict(parts, **{name: f"{value}-changed"})
        assert _cache.cache_key(changed) != key, name


def test_the_source_digest_covers_every_module(tmp_path):
    copy = tmp_path / "fastbp"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    digest = _cache._source_digest(copy)
    assert digest == _cache._source_digest(PACKAGE)
    for module in sorted(copy.rglob("*.py")):
        original = module.read_bytes()
        module.write_bytes(original + b"\n")
        assert _cache._source_digest(copy) != digest, module.name
        module.write_bytes(original)


def test_clear_removes_only_fastbp_folders(tmp_path):
    ours = tmp_path / "0123456789abcdef"
    ours.mkdir()
    _cache._write_marker(ours, {"sources": "x"})
    (ours / "k.nbc").write_bytes(b"12345")
    theirs = tmp_path / "someone-elses"
    theirs.mkdir()
    (theirs / "keep.txt").write_text("keep")
    (tmp_path / "loose-file").write_text("keep")
    assert _cache.key_folders(tmp_path) == [ours]
    size = _cache.folder_size(ours)
    assert size > 5
    assert _cache.clear_cache(tmp_path) == size
    assert not ours.exists() and (theirs / "keep.txt").exists()
    assert (tmp_path / "loose-file").exists()
    assert _cache.clear_cache(tmp_path / "missing") == 0


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="no kernels to compile with the JIT off")
def test_fastbp_compile_reaches_every_kernel():
    # `fastbp compile` promises every kernel: a fresh process that makes its calls
    # leaves no kernel uncompiled but the scalar references the tests compare the
    # loops with.  The cache is off, so that linked kernels compile too (loaded
    # callers carry their code, and they would not).
    check = """
import numba
from fastbp import _jit
from fastbp._tools.compile import compile_all
compile_all(["float64"])
for d in _jit._DISPATCHERS:
    twin = d._python_twin
    if d.targetoptions.get("inline") == "always":
        continue  # compiled inside its callers, never on its own
    if not d.overloads and not (twin is not None and twin.overloads):
        if numba.config.NUMBA_NUM_THREADS > 1 or not d.targetoptions.get("parallel"):
            print(d.py_func.__module__ + "." + d.py_func.__qualname__)
"""
    env = dict(os.environ, FASTBP_CACHE="0")
    child = subprocess.run(
        [sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=900
    )
    assert child.returncode == 0, child.stderr
    references = {"fastbp._kernels._cost_term", "fastbp._kernels_hidden._hidden_product"}
    # And float32's exponential, which float64 trees do not type (_exp_nonpositive_like).
    assert set(child.stdout.split()) == references | {"fastbp._kernels._exp_nonpositive_float32"}


def test_cache_and_compile_commands(tmp_path):
    env = dict(os.environ, FASTBP_CACHE_DIR=str(tmp_path), NUMBA_NUM_THREADS="1")
    env.pop("FASTBP_CACHE", None)

    def fastbp_command(*args):
        return subprocess.run(
            [sys.executable, "-m", "fastbp", *args], env=env, capture_output=True, text=True
        )

    # Two processes, one per dtype, saving into one folder at once.
    compiled = fastbp_command("compile", "--dtypes", "float32,float64", "--jobs", "2")
    assert compiled.returncode == 0, compiled.stderr
    assert str(tmp_path) in compiled.stdout and "2 processes side by side" in compiled.stdout
    for dtype in ("float32", "float64"):
        assert f"  {dtype} " in compiled.stdout and "backprop" in compiled.stdout

    # Every call `fastbp compile` makes now loads from the cache: neither
    # process dropped the other's index entries.
    check = """
from fastbp import _jit
from fastbp._tools.compile import compile_all
compile_all(["float32", "float64"])
print(*_jit.cache_counts())
"""
    loaded = subprocess.run(
        [sys.executable, "-c", check], env=env, capture_output=True, text=True, check=True
    )
    hits, misses = map(int, loaded.stdout.split())
    assert misses == 0 and hits > 0

    shown = fastbp_command("cache")
    assert shown.returncode == 0
    assert "this installation" in shown.stdout and "1 folder(s)" in shown.stdout

    (tmp_path / "unrelated.txt").write_text("keep")
    cleared = fastbp_command("cache", "--clear")
    assert cleared.returncode == 0 and "removed" in cleared.stdout
    assert _cache.key_folders(tmp_path) == [] and (tmp_path / "unrelated.txt").exists()

    bad = fastbp_command("compile", "--dtypes", "float16")
    assert bad.returncode == 2 and "float32, float64" in bad.stderr
