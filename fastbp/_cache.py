"""The on-disk cache of compiled kernels: where it lives and why it cannot go stale.

Numba's own cache keys each function on its own source file, so a kernel
whose callee changed in another module would load stale machine code.
fastbp keeps its compiled code in a folder of its own whose name is a hash
of everything the code depends on (:func:`cache_key`): the source of every
module of the installed package and the name it is imported under, the
versions of Python, Numba, llvmlite and
NumPy, the CPU name and features Numba compiles for, the register-tile width,
the Numba settings that change generated code and whether callees are
linked (``FASTBP_LINK_ALL``).  Change any of them and
the folder is a new, empty one; stale code cannot be found, let alone
loaded.

Settings (read once, when :mod:`fastbp` is imported)
----------------------------------------------------
``FASTBP_CACHE``
    ``0``, ``false``, ``no`` or ``off`` turn the cache off; anything else,
    or nothing, leaves it on.
``FASTBP_CACHE_DIR``
    The root folder; by default ``$XDG_CACHE_HOME/fastbp``, else
    ``~/.cache/fastbp``.  Each key gets a subfolder of the root.
``FASTBP_LINK_ALL``
    ``1`` (or any word but ``0``, ``false``, ``no``, ``off``) links every
    callee into its callers as plain Numba does, instead of calling
    standalone kernels through their symbols (:mod:`fastbp._jit`); part of
    the key.  Numba before 0.63 always links.

Safety
------
* Nothing touches the disk at import: the key's folder is made when the first
  compiled kernel is saved.
* Where the folder cannot be made or written (read-only package or home,
  no home at all), kernels compile in memory as without a cache; one
  :class:`CacheWarning` says so, once per process.  A cache file that cannot
  be read is treated as absent.
* Files are written under a temporary name and renamed into place (Numba's
  ``_open_for_write``), so no process reads a partly written file.  Each
  compiled specialisation is stored under a name derived from its own
  index key, not from a counter, so no index entry can point one signature
  at another's code.  The index is read and rewritten under an exclusive
  lock on a file beside it (``fcntl.flock``, where the system has it), so
  processes that save different specialisations at once (``fastbp compile``
  one process per dtype, pytest-xdist, Dask workers) keep each other's
  entries; without the lock one of them would be compiled again next time.
* The user's own Numba code and settings are untouched: only fastbp's
  dispatchers get this cache (``NUMBA_CACHE_DIR`` is neither read nor set).

Numba internals used
--------------------
``numba.core.caching.FunctionCache`` (its ``_impl_class``, ``_cache_file``
and ``load_overload``/``save_overload``), ``CompileResultCacheImpl``,
``IndexDataCacheFile`` and ``_CacheLocator``, and ``Dispatcher._cache``.
They were tested with the Numba range pinned in ``pyproject.toml``;
``tests/test_cache.py`` checks the mechanism itself.
"""

import contextlib
import functools
import hashlib
import json
import os
import shutil
import sys
import warnings
from pathlib import Path

__all__ = [
    "CACHE_ENABLED",
    "CacheWarning",
    "cache_description",
    "cache_dir",
    "cache_enabled",
    "cache_key",
    "cache_root",
    "clear_cache",
    "enable_cache",
    "folder_size",
    "key_folders",
    "key_parts",
]

_OFF_WORDS = {"0", "false", "no", "off"}
_PACKAGE_DIR = Path(__file__).resolve().parent
# The file that marks a folder as a fastbp cache folder (and says what its
# key was made of); only folders that hold it are ever deleted.
_MARKER = "fastbp-cache.json"
_KEY_HEX_DIGITS = 16


class CacheWarning(RuntimeWarning):
    """The compiled-code cache could not be used; kernels compile in memory instead."""


def cache_enabled(environ=None):
    """Whether ``FASTBP_CACHE`` in ``environ`` leaves the cache on (the default)."""
    environ = os.environ if environ is None else environ
    return environ.get("FASTBP_CACHE", "1").strip().lower() not in _OFF_WORDS


def cache_root(environ=None):
    """The root folder of fastbp's caches, as an absolute :class:`pathlib.Path`.

    ``FASTBP_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/fastbp``, else
    ``~/.cache/fastbp``.  Nothing is created.
    """
    environ = os.environ if environ is None else environ
    chosen = environ.get("FASTBP_CACHE_DIR", "").strip()
    if chosen:
        return Path(chosen).expanduser().absolute()
    xdg = environ.get("XDG_CACHE_HOME", "").strip()
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "fastbp"
    return Path(os.path.expanduser("~")).absolute() / ".cache" / "fastbp"


def _source_digest(package_dir=_PACKAGE_DIR):
    """SHA-256 over the relative path and bytes of every ``.py`` file of the package."""
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        digest.update(path.relative_to(package_dir).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def key_parts(package_dir=_PACKAGE_DIR):
    """Everything the compiled code depends on, as a JSON-able dict (see the module docstring)."""
    import llvmlite
    import llvmlite.binding as llvm
    import numba
    import numpy
    from numba.core import config

    from ._simd import VECTOR_BYTES, _target_features

    cpu_name = config.CPU_NAME or llvm.get_host_cpu_name()
    return {
        # The import name: compiled code refers to its modules by name, so a copy of the
        # same sources under another name (vendored, renamed) needs a folder of its own.
        "package": __name__.rpartition(".")[0],
        "sources": _source_digest(package_dir),
        "python": f"{sys.implementation.name}-{sys.version_info[0]}.{sys.version_info[1]}",
        "numba": numba.__version__,
        "llvmlite": llvmlite.__version__,
        "numpy": numpy.__version__,
        "cpu_name": cpu_name,
        "cpu_features": _target_features(),
        "vector_bytes": VECTOR_BYTES,
        "numba_opt": str(config.OPT),
        "numba_boundscheck": str(config.BOUNDSCHECK),
        "numba_debuginfo": bool(config.DEBUGINFO_DEFAULT),
        "standalone_calls": STANDALONE_CALLS,
    }


def cache_key(parts=None):
    """The folder name for ``parts`` (by default :func:`key_parts`): 16 hex digits of SHA-256."""
    parts = key_parts() if parts is None else parts
    text = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:_KEY_HEX_DIGITS]


def standalone_calls_supported():
    """Whether Numba keeps load hooks on a compiled library (``_reload_init``, Numba ≥ 0.63)."""
    from numba.core.codegen import CodeLibrary

    return "_reload_init" in CodeLibrary.__init__.__code__.co_names


def standalone_calls(environ=None):
    """Whether standalone kernels are called by symbol: supported, ``FASTBP_LINK_ALL`` unset."""
    environ = os.environ if environ is None else environ
    forced = environ.get("FASTBP_LINK_ALL", "").strip().lower() not in {"", *_OFF_WORDS}
    return not forced and standalone_calls_supported()


#: Whether standalone kernels are called through their symbols (read at import).
STANDALONE_CALLS = standalone_calls()
#: Whether compiled code is cached (``FASTBP_CACHE``, read at import).
CACHE_ENABLED = cache_enabled()
_KEY_PARTS = key_parts() if CACHE_ENABLED else None
_CACHE_DIR = cache_root() / cache_key(_KEY_PARTS) if CACHE_ENABLED else None
_warned = False
_saving = True  # cleared after the first failure to write: one notice, no retries


def cache_dir():
    """The folder this process's compiled code goes to, or None with the cache off."""
    return _CACHE_DIR


def _notice(message):
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(message, CacheWarning, stacklevel=3)


def _write_marker(folder, parts):
    """Mark ``folder`` as fastbp's and record its key's parts (atomically)."""
    marker = folder / _MARKER
    if marker.exists():
        return
    temporary = folder / f"{_MARKER}.tmp.{os.getpid()}"
    temporary.write_text(json.dumps(parts, indent=1, sort_keys=True) + "\n")
    os.replace(temporary, marker)


def key_folders(root=None):
    """The fastbp cache folders under ``root`` (default :func:`cache_root`), sorted."""
    root = cache_root() if root is None else Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / _MARKER).is_file())


def folder_size(folder):
    """Bytes in the files under ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def clear_cache(root=None):
    """Delete every fastbp cache folder under ``root``; return how many bytes were freed.

    Only folders that carry fastbp's marker file are removed, so a root
    shared with other files (``FASTBP_CACHE_DIR=/tmp``, say) loses nothing
    else.
    """
    freed = 0
    for folder in key_folders(root):
        freed += folder_size(folder)
        shutil.rmtree(folder)
    return freed


def cache_description():
    """Lines for ``fastbp cache``: the settings, this process's folder, every folder's size."""
    root = cache_root()
    lines = [f"cache: {'on' if CACHE_ENABLED else 'off (FASTBP_CACHE)'}", f"root: {root}"]
    if CACHE_ENABLED:
        exists = "" if _CACHE_DIR.is_dir() else " (not written yet)"
        lines.append(f"this installation's folder: {_CACHE_DIR}{exists}")
    folders = key_folders(root)
    total = 0
    for folder in folders:
        size = folder_size(folder)
        total += size
        current = "  <- this installation" if folder == _CACHE_DIR else ""
        lines.append(f"  {folder.name}  {size / 2**20:8.1f} MiB{current}")
    lines.append(f"{len(folders)} folder(s), {total / 2**20:.1f} MiB in all")
    return lines


# --------------------------------------------------------------------------
# The Numba side: a FunctionCache that stores into _CACHE_DIR
# --------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(path):
    """Hold an exclusive advisory lock on the file ``path`` (made if missing).

    Where the system has no ``fcntl`` (Windows), or the file cannot be
    opened or locked (a file system without locks), nothing is locked:
    saves then work as Numba's own do.
    """
    try:
        import fcntl
    except ImportError:
        fcntl = None
    try:
        descriptor = None if fcntl is None else os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        descriptor = None
    if descriptor is not None:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        except OSError:
            os.close(descriptor)
            descriptor = None
    try:
        yield
    finally:
        if descriptor is not None:
            os.close(descriptor)  # releases the lock


def _numba_cache_class():
    """Build the cache class on first use (Numba's caching module is imported lazily)."""
    from numba.core import caching

    class PackageLocator(caching._CacheLocator):
        """Every fastbp kernel goes to the key's folder; the key is its source stamp."""

        def __init__(self, py_func):
            self._py_file = py_func.__code__.co_filename
            self._lineno = py_func.__code__.co_firstlineno

        def ensure_cache_path(self):
            super().ensure_cache_path()
            _write_marker(_CACHE_DIR, _KEY_PARTS)

        def get_cache_path(self):
            return str(_CACHE_DIR)

        def get_source_stamp(self):
            return _CACHE_DIR.name

        def get_disambiguator(self):
            return str(self._lineno)

        @classmethod
        def from_function(cls, py_func, py_file):
            return cls(py_func)

    class PackageCacheImpl(caching.CompileResultCacheImpl):
        def __init__(self, py_func, variant=""):  # no locator search: always PackageLocator
            self._lineno = py_func.__code__.co_firstlineno
            self._locator = PackageLocator(py_func)
            module = os.path.splitext(os.path.basename(py_func.__code__.co_filename))[0]
            fullname = f"{module}.{py_func.__qualname__}" + (f".{variant}" if variant else "")
            self._filename_base = self.get_filename_base(fullname, getattr(sys, "abiflags", ""))

        def rebuild(self, target_context, payload):
            # Before Numba loads the code: run its load hooks and check that every
            # kernel symbol it calls is then defined (fastbp._jit), so that a cache
            # entry without a hook it needs is a miss instead of an LLVM abort.
            from ._jit import check_symbols_defined

            libdata, reload_init = payload[0], payload[7]
            check_symbols_defined(libdata, reload_init)
            if libdata[1] != "bitcode":
                return super().rebuild(target_context, payload)
            # A linked kernel's module, kept for linking (fastbp._jit._DeferredLibrary):
            # loaded without emitting its machine code, as it was compiled.
            from ._jit import unserialize_deferred

            # Numba's rebuild makes the library through the code generator's
            # unserialize_library; this instance's answers with it for this call alone
            # (under the compiler lock, which every load holds).
            codegen = target_context.codegen()
            library = unserialize_deferred(codegen, libdata)
            codegen.unserialize_library = lambda serialized: library
            try:
                return super().rebuild(target_context, payload)
            finally:
                del codegen.unserialize_library

    class KeyNamedDataFile(caching.IndexDataCacheFile):
        """Data files named from their index key, so concurrent saves never swap them."""

        def save(self, key, data):
            name = self._data_name_pattern.replace(
                "{number:d}", hashlib.sha256(repr(key).encode()).hexdigest()[:16]
            )
            self._save_data(name, data)  # the data first: an index entry never dangles
            with _locked(self._index_path + ".lock"):
                overloads = self._load_index()  # read under the lock: no entry is lost
                if overloads.get(key) != name:
                    overloads[key] = name
                    self._save_index(overloads)

    class PackageCache(caching.FunctionCache):
        _impl_class = PackageCacheImpl
        data_file_class = KeyNamedDataFile

        def __init__(self, py_func, variant=""):
            # Numba's __init__ builds self._impl from self._impl_class(py_func).
            self._impl_class = functools.partial(PackageCacheImpl, variant=variant)
            super().__init__(py_func)
            self._cache_file = self.data_file_class(
                cache_path=self._cache_path,
                filename_base=self._impl.filename_base,
                source_stamp=self._impl.locator.get_source_stamp(),
            )

        def load_overload(self, sig, target_context):
            try:
                # Not Numba's load_overload: it refreshes the target context first,
                # importing and installing every lowering registry, which only
                # compilation needs (and every compilation refreshes it before it
                # types). Loaded machine code needs only the runtime's symbols.
                from numba.core.runtime import nrt

                nrt.rtsys.initialize(target_context)
                with self._guard_against_spurious_io_errors():
                    cres = self._load_overload(sig, target_context)
                # Numba keeps a loaded entry's load hooks on the compile result but not on
                # its library; put them back, so that a caller compiled here which links
                # this library inherits them in its own cache entry, as it would had the
                # library been compiled here.
                hooks = getattr(getattr(cres, "library", None), "_reload_init", None)
                if hooks is not None and cres.reload_init:
                    hooks.update(cres.reload_init)
                return cres
            except (FileNotFoundError, NotADirectoryError):
                return None  # no folder (yet, or ever): a plain miss
            except Exception as error:  # an unreadable file is a miss, never a failure
                _notice(
                    f"fastbp: could not read compiled code from {_CACHE_DIR} ({error}); "
                    "compiling instead"
                )
                return None

        def save_overload(self, sig, data):
            global _saving
            if not _saving:
                return
            try:
                super().save_overload(sig, data)
            except OSError as error:
                _saving = False
                _notice(
                    f"fastbp: cannot write compiled code to {_CACHE_DIR} ({error}); "
                    "kernels are compiled in memory in this process. Set FASTBP_CACHE_DIR "
                    "to a writable folder, or FASTBP_CACHE=0 to silence this."
                )

    return PackageCache


_cache_class = None


def enable_cache(dispatcher, variant=""):
    """Give a Numba dispatcher fastbp's cache; a no-op with the cache off (FASTBP_CACHE=0).

    ``variant`` (e.g. "parallel") goes into the cache files' names, for two
    dispatchers compiled from one Python function with different options.
    """
    global _cache_class
    if not CACHE_ENABLED:
        return dispatcher
    if _cache_class is None:
        _cache_class = _numba_cache_class()
    dispatcher._cache = _cache_class(dispatcher.py_func, variant)
    return dispatcher
