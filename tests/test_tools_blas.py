"""The baselines' kernels in the header of ``fastbp bench`` and the main job (_tools/blas.py).

threadpoolctl's report and the CPU's flags are faked, so every case runs on any machine.
"""

import io
import types

import pytest

from fastbp._tools import blas, main_job
from fastbp._tools.cli import build_parser

AVX512_FLAGS = {"fpu", "sse4_2", "avx", "fma", "avx2", "avx512f", "avx512bw"}
AVX2_FLAGS = {"fpu", "sse4_2", "avx", "fma", "avx2"}


def openblas(package, architecture, version="0.3.30", threads=2):
    """One entry of threadpoolctl's threadpool_info() for an OpenBLAS shipped with ``package``."""
    return {
        "user_api": "blas",
        "internal_api": "openblas",
        "prefix": "libscipy_openblas",
        "filepath": f"/venv/lib/python3.11/site-packages/{package}.libs/libscipy_openblas.so",
        "version": version,
        "threading_layer": "pthreads",
        "architecture": architecture,
        "num_threads": threads,
    }


OPENMP = {"user_api": "openmp", "internal_api": "openmp", "filepath": "/x/libgomp.so.1"}


def header(info, flags=AVX512_FLAGS, torch=False, environ=None):
    return blas.baseline_description(info=info, flags=flags, torch=torch, environ=environ or {})


def warnings(lines):
    return [line for line in lines if line.startswith("WARNING:")]


def test_each_blas_is_named_with_its_owner_kernels_isa_and_threads():
    lines = header(
        [openblas("numpy", "SkylakeX", threads=1), openblas("scipy", "SkylakeX"), OPENMP]
    )
    assert lines[0] == "BLAS for NumPy: openblas 0.3.30, SkylakeX kernels, AVX-512, 1 thread(s)"
    assert lines[1] == (
        "BLAS for SciPy (Numba's @): openblas 0.3.30, SkylakeX kernels, AVX-512, 2 thread(s)"
    )
    assert "CPU: widest vector ISA AVX-512" in lines
    assert len(lines) == 3 and not warnings(lines)  # the OpenMP entry is not a BLAS


@pytest.mark.parametrize("narrow", ["Haswell", "Zen", "Sandybridge", "Nehalem"])
def test_narrow_numpy_kernels_on_an_avx512_cpu_warn_that_numpy_is_handicapped(narrow):
    lines = header(
        [openblas("numpy", narrow), openblas("scipy", "SkylakeX")],
        environ={"OPENBLAS_CORETYPE": narrow},
    )
    (warning,) = warnings(lines)
    assert f"NumPy's openblas runs {narrow} kernels" in warning and "AVX-512 CPU" in warning
    assert f"(OPENBLAS_CORETYPE={narrow} is set)" in warning
    assert "the NumPy rows and the x NumPy column" in warning and "handicapped" in warning
    # The warning comes after the lines that name the kernels, before anything else.
    assert lines.index(warning) == len(lines) - 1


def test_native_kernels_and_unknown_kernels_give_no_warning():
    assert not warnings(header([openblas("numpy", "SkylakeX"), openblas("scipy", "Cooperlake")]))
    assert not warnings(header([openblas("numpy", "Haswell")], flags=AVX2_FLAGS))
    # A kernel set whose width is not known here (ARM) is named, never judged.
    lines = header([openblas("numpy", "NeoverseN1")])
    assert "NeoverseN1 kernels, 1" not in lines[0] and "NeoverseN1 kernels" in lines[0]
    assert not warnings(lines)


def test_scipys_narrow_kernels_handicap_fastbps_matmul_not_numpy():
    (warning,) = warnings(header([openblas("numpy", "SkylakeX"), openblas("scipy", "Haswell")]))
    assert "SciPy (Numba's @)" in warning and "fastbp's matmul rows" in warning
    assert "NumPy rows" not in warning
    assert "is set" not in warning  # OPENBLAS_CORETYPE not in this environment


def fake_torch(capability, blas_info="mkl"):
    return types.SimpleNamespace(
        __version__="9.9",
        __config__=types.SimpleNamespace(
            show=lambda: f"  - Build settings: BLAS_INFO={blas_info}, "
        ),
        backends=types.SimpleNamespace(
            cpu=types.SimpleNamespace(get_cpu_capability=lambda: capability)
        ),
        get_num_threads=lambda: 1,
    )


def test_pytorch_is_named_and_warned_about_where_its_code_is_narrower():
    lines = header([openblas("numpy", "SkylakeX")], torch=fake_torch("AVX512"))
    assert (
        "BLAS for PyTorch 9.9: mkl (built in), CPU capability AVX512 (AVX-512), 1 thread(s)"
        in lines
    )
    assert not warnings(lines)
    (warning,) = warnings(header([openblas("numpy", "SkylakeX")], torch=fake_torch("AVX2")))
    assert "PyTorch runs AVX2 code" in warning and "the PyTorch rows" in warning


def test_without_threadpoolctl_the_header_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "threadpoolctl", None)
    lines = blas.baseline_description(flags=AVX512_FLAGS, environ={})
    assert "pip install 'fastbp[bench]'" in lines[0]


@pytest.mark.parametrize(
    ("flags", "isa"),
    [
        (AVX512_FLAGS, "AVX-512"),
        (AVX2_FLAGS, "AVX2"),
        ({"avx"}, "AVX"),
        ({"sse2"}, "older (no AVX)"),
    ],
)
def test_widest_isa(flags, isa):
    assert blas.widest_isa(flags) == isa


def test_this_machines_header_names_numpys_and_scipys_blas():
    pytest.importorskip("threadpoolctl")
    lines = blas.baseline_description()
    assert any(line.startswith("BLAS for NumPy:") for line in lines)
    assert any(line.startswith("BLAS for SciPy (Numba's @):") for line in lines)
    assert any(line.startswith("CPU: widest vector ISA ") for line in lines)


def test_the_main_job_prints_the_same_header_above_its_table(monkeypatch):
    lines = ["BLAS for NumPy: openblas 0.3.30, Haswell kernels, AVX2, 1 thread(s)", "WARNING: x"]
    monkeypatch.setattr(main_job, "baseline_description", lambda: lines)
    out = io.StringIO()
    args = build_parser().parse_args(
        ["-n", "50", "-m", "6", "-d", "5", "-t", "3", "--repeats", "1"]
    )
    assert main_job.run(args, out) == 0
    printed = out.getvalue().splitlines()
    assert printed.index("WARNING: x") < next(
        index for index, line in enumerate(printed) if line.startswith("method")
    )
