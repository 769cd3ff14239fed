"""Which BLAS kernels the baselines run, against the widest vector ISA of the CPU.

A ratio to NumPy is only as honest as NumPy's BLAS: OpenBLAS picks its
kernels for the CPU at load time, unless the environment pins them
(``OPENBLAS_CORETYPE=Haswell`` on an AVX-512 machine runs AVX2 kernels at
about half the speed).  :func:`baseline_description` gives the header lines
that ``fastbp bench`` and the main job print: each loaded BLAS library, who
uses it and the kernels it runs (threadpoolctl's ``architecture``), PyTorch's
where it is loaded, the CPU's widest vector ISA, and a warning line wherever
a library runs kernels narrower than the CPU supports.  Nothing here changes
the environment: the fix (unsetting ``OPENBLAS_CORETYPE``) belongs to the
benchmark's command line.
"""

import contextlib
import os
import re
import sys

__all__ = [
    "ISA_ORDER",
    "baseline_description",
    "blas_libraries",
    "cpu_flags",
    "kernels_isa",
    "load_blas_libraries",
    "widest_isa",
]

#: Vector ISAs from the narrowest to the widest, as the header names them.
ISA_ORDER = ("older (no AVX)", "AVX", "AVX2", "AVX-512")

# OpenBLAS's (and BLIS's) names of their x86 kernel sets, lower-cased, by the
# widest ISA each uses.  A name not listed (ARM, POWER, "Generic") is shown
# as it is, with no warning: its width is not known here.
_KERNEL_ISAS = {
    "AVX-512": ("skylakex", "cooperlake", "sapphirerapids", "skx", "knl", "zen4", "zen5"),
    "AVX2": ("haswell", "zen", "zen2", "zen3", "excavator"),
    "AVX": ("sandybridge", "bulldozer", "piledriver", "steamroller"),
    "older (no AVX)": (
        "nehalem", "core2", "penryn", "dunnington", "prescott", "atom", "barcelona",
        "opteron", "opteron_sse3", "nano", "katmai", "coppermine", "northwood", "banias",
        "athlon", "bobcat",
    ),
}  # fmt: skip

# PyTorch's CPU capability (torch.backends.cpu.get_cpu_capability()) as an ISA.
_TORCH_ISAS = {"AVX512": "AVX-512", "AVX2": "AVX2", "DEFAULT": "older (no AVX)"}


def load_blas_libraries(torch=False):
    """Load every BLAS the benchmarks can call, so that thread limits reach each of them.

    NumPy's OpenBLAS is loaded with NumPy; SciPy's own copy, the one
    Numba's ``@`` calls, only when ``scipy.linalg.cython_blas`` is imported
    (by the first compilation of a kernel using ``@``).  threadpoolctl
    limits only the libraries loaded when the limits are set: one loaded
    later keeps its default thread count.  ``torch=True`` imports PyTorch
    too (where installed), for benchmarks that time it.
    """
    import numpy  # noqa: F401 - NumPy's BLAS

    with contextlib.suppress(ImportError):
        import scipy.linalg.cython_blas  # noqa: F401 - SciPy's BLAS, Numba's @
    if torch:
        with contextlib.suppress(ImportError):
            import torch as _torch  # noqa: F401


def cpu_flags():
    """The CPU's feature flags: /proc/cpuinfo's ``flags``, else LLVM's host features.

    Returns
    -------
    set of str
        Lower-case flag names as Linux spells them (``avx512f``, ``avx2``,
        ``fma``, ...).  LLVM's host features (``+avx512f``) are the
        fallback where there is no /proc/cpuinfo.
    """
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features().flatten().split(",")
    return {name[1:].lower() for name in features if name.startswith("+")}


def widest_isa(flags):
    """The widest vector ISA among ``flags``: one of :data:`ISA_ORDER` on x86, else SVE or NEON.

    Only x86 widths are compared with the kernels' (:func:`baseline_description`).
    """
    if "avx512f" in flags:
        return "AVX-512"
    if "avx2" in flags:
        return "AVX2"
    if "avx" in flags:
        return "AVX"
    if "sve" in flags:
        return "SVE"
    if "asimd" in flags:
        return "NEON"
    return ISA_ORDER[0]


def _narrower(isa, cpu):
    """Whether kernels of ``isa`` are narrower than the ``cpu``'s widest ISA (x86 only)."""
    return isa in ISA_ORDER and cpu in ISA_ORDER and ISA_ORDER.index(isa) < ISA_ORDER.index(cpu)


def kernels_isa(architecture):
    """The widest ISA of the BLAS kernels named ``architecture`` (threadpoolctl's), or None."""
    name = str(architecture or "").lower()
    for isa, names in _KERNEL_ISAS.items():
        if name in names:
            return isa
    return None


def _owner(path):
    """The package that ships a library: the folder after site-packages (``numpy.libs`` → numpy)."""
    parts = re.split(r"[\\/]", path)
    for marker in ("site-packages", "dist-packages"):
        if marker in parts and parts.index(marker) + 1 < len(parts):
            return parts[parts.index(marker) + 1].split(".")[0].lower()
    return None


#: How the header names each owner's BLAS, and the figures that stand on it.
_OWNERS = {
    "numpy": ("NumPy", "the NumPy rows and the x NumPy column, and the BLAS peak reference"),
    "scipy": ("SciPy (Numba's @)", "fastbp's matmul rows (Numba's @)"),
    "torch": ("PyTorch", "the PyTorch rows and the x PyTorch column"),
}


def blas_libraries(info=None):
    """The loaded BLAS libraries as threadpoolctl sees them, with who uses each.

    Parameters
    ----------
    info : list of dict, optional
        threadpoolctl's ``threadpool_info()`` (read here by default, after
        :func:`load_blas_libraries`); entries other than BLAS are skipped.

    Returns
    -------
    list of dict or None
        One dict per BLAS library: ``owner`` (``"numpy"``, ``"scipy"``,
        ``"torch"`` or None), ``label`` (how the header names it), ``api``,
        ``version``, ``architecture``, ``isa`` (:func:`kernels_isa`) and
        ``threads``.  None where threadpoolctl is not installed.
    """
    if info is None:
        load_blas_libraries()
        try:
            from threadpoolctl import threadpool_info
        except ImportError:
            return None
        info = threadpool_info()
    libraries = []
    for entry in info:
        if entry.get("user_api") != "blas":
            continue
        path = entry.get("filepath", "") or ""
        owner = _owner(path)
        label = _OWNERS[owner][0] if owner in _OWNERS else (owner or path)
        libraries.append(
            {
                "owner": owner,
                "label": label,
                "api": entry.get("internal_api"),
                "version": entry.get("version"),
                "architecture": entry.get("architecture"),
                "isa": kernels_isa(entry.get("architecture")),
                "threads": entry.get("num_threads"),
            }
        )
    return libraries


def _torch_line(torch):
    """``(line, isa)`` for a loaded PyTorch: its BLAS (as built) and its CPU capability."""
    match = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
    blas = match.group(1) if match else "its own BLAS"
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # PyTorch before 2.0
        capability = None
    isa = _TORCH_ISAS.get(str(capability).upper())
    line = (
        f"BLAS for PyTorch {torch.__version__}: {blas} (built in), CPU capability "
        f"{capability or 'not reported'}"
        f"{f' ({isa})' if isa else ''}, {torch.get_num_threads()} thread(s)"
    )
    return line, isa


def baseline_description(info=None, flags=None, torch=None, environ=None):
    """The header lines that name every baseline's kernels, and a warning where they are narrow.

    Parameters
    ----------
    info : list of dict, optional
        threadpoolctl's ``threadpool_info()``; read now by default.
    flags : set of str, optional
        The CPU's flags (:func:`cpu_flags` by default).
    torch : module or False, optional
        PyTorch, to describe it, or False to leave it out; by default the
        one already imported, if any (this function never imports it).
    environ : mapping, optional
        Where ``OPENBLAS_CORETYPE`` is read from, to name it in the
        warning (``os.environ`` by default; never changed).

    Returns
    -------
    list of str
        One line per BLAS library (who uses it, library, version, kernels
        and their ISA, threads), one for PyTorch where loaded, one naming
        the CPU's widest ISA, then one ``WARNING:`` line per library that
        runs kernels narrower than the CPU supports.
    """
    environ = os.environ if environ is None else environ
    flags = cpu_flags() if flags is None else flags
    torch = sys.modules.get("torch") if torch is None else torch or None
    cpu = widest_isa(flags)
    libraries = blas_libraries(info)
    lines = []
    narrow = []  # (figures, what runs, the setting behind it) where kernels are narrower
    if libraries is None:
        lines.append("BLAS: not described (install threadpoolctl: pip install 'fastbp[bench]')")
        libraries = []
    for library in libraries:
        kernels = library["architecture"] or "unknown"
        isa = f", {library['isa']}" if library["isa"] else ""
        lines.append(
            f"BLAS for {library['label']}: {library['api']} {library['version']}, "
            f"{kernels} kernels{isa}, {library['threads']} thread(s)"
        )
        if _narrower(library["isa"], cpu):
            figures = _OWNERS.get(library["owner"], (None, f"the rows on {library['label']}"))[1]
            what = f"{library['label']}'s {library['api']} runs {kernels} kernels"
            what += f" ({library['isa']})"
            setting = "OPENBLAS_CORETYPE" if library["api"] == "openblas" else None
            narrow.append((figures, what, setting))
    if torch is not None:
        line, isa = _torch_line(torch)
        lines.append(line)
        if _narrower(isa, cpu):
            narrow.append((_OWNERS["torch"][1], f"PyTorch runs {isa} code", "ATEN_CPU_CAPABILITY"))
    lines.append(f"CPU: widest vector ISA {cpu}")
    for figures, what, setting in narrow:
        value = environ.get(setting) if setting else None
        cause = f" ({setting}={value} is set)" if value else ""
        fix = f"; unset {setting} in the benchmark's command" if setting else ""
        lines.append(f"WARNING: {what} on this {cpu} CPU{cause}: {figures} are handicapped{fix}")
    return lines
