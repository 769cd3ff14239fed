"""asv benchmarks for fastbp (see asv.conf.json at the repository root).

asv runs every parameter combination in a fresh process, and each process
would otherwise compile fastbp's kernels again (seconds per kernel) before
timing anything.  Compilation is kept out of the timings either way (every
``setup`` calls the kernel once), so the suite turns on fastbp's opt-in disk
cache to make the runs themselves shorter.  The cache folder is named by a
hash of the installed package's source files: a commit that changes any
kernel gets a fresh folder, so no process ever loads code compiled from
another commit.  This must happen before Numba is imported, hence here.
"""

import hashlib
import importlib.util
import os
import pathlib
import tempfile


def _use_per_source_cache():
    if "FASTBP_CACHE" in os.environ:  # the caller decided
        return
    spec = importlib.util.find_spec("fastbp")
    if spec is None or not spec.submodule_search_locations:
        return
    digest = hashlib.sha256()
    for location in spec.submodule_search_locations:
        for path in sorted(pathlib.Path(location).rglob("*.py")):
            digest.update(path.read_bytes())
    folder = pathlib.Path(tempfile.gettempdir()) / "fastbp-asv-cache" / digest.hexdigest()[:16]
    os.environ["FASTBP_CACHE"] = "1"
    os.environ.setdefault("NUMBA_CACHE_DIR", str(folder))


_use_per_source_cache()
