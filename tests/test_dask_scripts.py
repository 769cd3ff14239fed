"""The Dask measurement scripts in benchmarks/ run end to end (tiny sizes; no timing is checked)."""

import os
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("distributed")

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"


def run(script, *arguments):
    child = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *arguments],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
    )
    assert child.returncode == 0, child.stderr[-3000:]
    return child.stdout


def test_dask_speed_runs_and_finds_the_same_bits():
    out = run("dask_speed.py", "--n", "1200", "--m", "20", "--d", "8", "--t", "3", "--rounds", "1")
    assert "every dask phase bitwise equal to dask 1x1: True" in out
    assert "scaling  = dask 1x1 / dask 2x1" in out


def test_lbfgs_digits_runs():
    out = run("dask_lbfgs_digits.py", "--smoke")
    assert "L-BFGS, Dask" in out and "SGD" in out
