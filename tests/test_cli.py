"""The command line: the main job's table, its checks and its exit status."""

import io
import subprocess
import sys

import numpy as np
import pytest

import fastbp
from fastbp import _core, cli

SMALL = ["-n", "1001", "-m", "20", "-d", "13", "-t", "3", "--repeats", "1"]


def run(argv):
    parser = cli.build_parser()
    out = io.StringIO()
    status = cli.run_main_job(parser.parse_args(argv), out=out)
    return status, out.getvalue()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_main_job_prints_table_and_passes(dtype):
    status, text = run(SMALL + ["--dtype", dtype, "--threads", "1"])
    assert status == 0, text
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("method"))
    rows = {line.split()[0]: line.split() for line in lines[header + 2 : header + 6]}
    assert set(rows) == {"numpy", "outer", "blocked", "matmul"}
    for row in rows.values():
        assert len(row) == 8, row  # method, ms, GFLOP/s, ratio, diff, bound, diff/bound, equal
        assert row[-1] == "pass"
        assert float(row[2]) > 0  # GFLOP/s
        assert row[3].endswith("x")
        assert 0 <= float(row[6]) <= 1  # every element within its rounding bound
    assert rows["numpy"][3] == "1.00x"
    assert "all checks passed" in text
    assert f"n=1001 m=20 d=13 t=3 {dtype}" in text
    assert "threads: 1 Numba, 1 BLAS" in text


def test_main_job_fails_when_a_way_is_wrong(monkeypatch):
    def off_by_one_example(A_h, delta_out, **options):
        return A_h[:-1].T @ delta_out[:-1]  # drops the last example

    monkeypatch.setattr(_core, "grad_W_out_blocked", off_by_one_example)
    status, text = run(SMALL)
    assert status == 1
    assert "threads: 1 Numba, 1 BLAS" in text  # the default
    assert any(line.startswith("blocked") and line.endswith("FAIL") for line in text.splitlines())
    assert "1 check(s) FAILED" in text


def test_main_job_fails_when_bias_gradient_is_wrong(monkeypatch):
    monkeypatch.setattr(_core, "grad_b_out", lambda delta: np.zeros(delta.shape[1], delta.dtype))
    status, text = run(SMALL)
    assert status == 1
    assert "grad_b_out within its bound: FAIL" in text


def test_too_many_threads_is_a_usage_error(capsys):
    import numba

    status = cli.main(SMALL + ["--threads", str(numba.config.NUMBA_NUM_THREADS + 1)])
    assert status == 2
    assert "exceeds NUMBA_NUM_THREADS" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [["-n", "-1"], ["--repeats", "0"], ["--dtype", "float16"]])
def test_bad_options_are_refused(bad, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(bad)
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_python_dash_m_and_help():
    result = subprocess.run(
        [sys.executable, "-m", "fastbp", "--help"], capture_output=True, text=True, check=True
    )
    assert "usage: fastbp" in result.stdout
    for word in ("bench", "train", "--dtype", "--threads", "--repeats"):
        assert word in result.stdout
    version = subprocess.run(
        [sys.executable, "-m", "fastbp", "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.strip() == f"fastbp {fastbp.__version__}"


def test_python_dash_m_runs_main_job():
    result = subprocess.run(
        [sys.executable, "-m", "fastbp", *SMALL, "--threads", "1"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all checks passed" in result.stdout


def test_import_compiles_nothing():
    code = (
        "import fastbp, fastbp._kernels as k\n"
        "compiled = [name for name in dir(k) if getattr(getattr(k, name), 'signatures', None)]\n"
        "print(compiled)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
