"""The command line (fastbp/_tools/cli.py) and the main job (fastbp/_tools/main_job.py).

The main job's table, its checks and its exit status; every command's
options validated by the parser, ``python -m fastbp``, and ``fastbp train``.
"""

import io
import subprocess
import sys

import numba
import numpy as np
import pytest

import fastbp
from fastbp import _core
from fastbp._tools import main_job
from fastbp._tools.cli import build_parser, main

SMALL = ["-n", "1001", "-m", "20", "-d", "13", "-t", "3", "--repeats", "1"]


def run(argv):
    out = io.StringIO()
    status = main_job.run(build_parser().parse_args(argv), out=out)
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

    with pytest.raises(SystemExit) as exit_info:
        main(SMALL + ["--threads", str(numba.config.NUMBA_NUM_THREADS + 1)])
    assert exit_info.value.code == 2
    assert "exceeds NUMBA_NUM_THREADS" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [["-n", "-1"], ["--repeats", "0"], ["--dtype", "float16"]])
def test_bad_options_are_refused(bad, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(bad)
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


@pytest.mark.parametrize(
    "argv, option",
    [
        (["bench", "--threads", "1,0"], "--threads"),
        (["bench", "--step-shapes", "3x4x5"], "--step-shapes"),
        (["train", "--epochs", "0"], "--epochs"),
        (["train", "--minibatch-size", "x"], "--minibatch-size"),
        (["compile", "--dtypes", "float16"], "--dtypes"),
        (["compile", "--jobs", "0"], "--jobs"),
    ],
)
def test_every_commands_options_are_validated_by_the_parser(argv, option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"fastbp {argv[0]}: error: argument {option}" in err


def test_parsed_options_have_their_types():
    args = build_parser().parse_args(
        ["bench", "--shapes", "7X5x3,1x2x3", "--dtypes", "float64,float64", "--threads", "1"]
    )
    assert args.shapes == ["7x5x3", "1x2x3"] and args.dtypes == ["float64"] and args.threads == [1]
    assert build_parser().parse_args(["compile"]).dtypes == ["float32", "float64"]
    assert build_parser().parse_args(["compile"]).jobs is None  # one per dtype, as cores allow
    assert build_parser().parse_args(["compile", "--jobs", "3"]).jobs == 3


def test_compile_runs_one_process_per_dtype_as_cores_allow(monkeypatch):
    from fastbp._tools import compile as compile_command

    monkeypatch.setattr(compile_command, "schedulable_cpus", lambda: 1)
    assert compile_command.default_jobs(["float32", "float64"]) == 1
    monkeypatch.setattr(compile_command, "schedulable_cpus", lambda: 4)
    assert compile_command.default_jobs(["float32", "float64"]) == 2
    assert compile_command.default_jobs(["float64"]) == 1


def test_train_learns_the_digits_and_reports_the_held_out_accuracy(capsys):
    status = main(["train", "--epochs", "3", "--hidden", "20", "--threads", "1"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "digits: 1438 training, 359 held-out examples; network 64-20-10, epochs 3" in out
    held_out = float(out.split("held-out accuracy: ")[1].split("%")[0])
    assert 50.0 < held_out <= 100.0  # three epochs already learn most digits


def test_train_refuses_what_the_model_refuses(capsys):
    # Refused by the option's type, before the model is built (tests/test_bad_inputs.py has
    # every option's refusals).
    with pytest.raises(SystemExit) as caught:
        main(["train", "--epochs", "1", "--eta", "-1"])
    assert caught.value.code == 2
    assert "fastbp train: error: argument --eta: must be a positive finite number, got -1" in (
        capsys.readouterr().err
    )


def test_train_plot_without_matplotlib_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["train", "--epochs", "1", "--plot", str(tmp_path / "curves.png")]) == 2
    assert "pip install 'fastbp[plot]'" in capsys.readouterr().err
    assert not (tmp_path / "curves.png").exists()


def test_cache_command_prints_the_folder(capsys):
    assert main(["cache"]) == 0
    assert "root:" in capsys.readouterr().out


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="nothing compiles with the JIT off")
def test_the_command_line_freezes_what_is_left_for_the_exit_and_a_python_call_does_not(
    tmp_path, capsys
):
    import gc
    import os

    # From Python (a list of arguments): the caller's garbage collector is left alone.
    frozen = gc.get_freeze_count()
    assert main(["cache"]) == 0
    assert gc.get_freeze_count() == frozen
    # As the command (sys.argv): the objects left are frozen before the process exits,
    # and the command's output and exit status are as before.
    child = (
        "import gc, sys\n"
        "from fastbp._tools.cli import main\n"
        "sys.argv = ['fastbp', 'cache']\n"
        "status = main()\n"
        "print('frozen', gc.get_freeze_count() > 0)\n"
        "sys.exit(status)\n"
    )
    env = dict(os.environ, FASTBP_CACHE_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert f"root: {tmp_path}" in done.stdout and "frozen True" in done.stdout


def test_compile_profile_prints_each_kernels_time_alone_and_with_its_callees(monkeypatch, capsys):
    from fastbp import _jit
    from fastbp._tools import compile as compile_command

    monkeypatch.setattr(_jit, "enable_cache", lambda dispatcher, variant="": dispatcher)

    def profiled_callee(x):
        return x * 2.0

    callee = _jit.kernel(profiled_callee)

    def profiled_caller(x):
        total = 0.0
        for i in range(x.shape[0]):
            total += callee(x[i])
        return total

    caller = _jit.kernel(profiled_caller)
    monkeypatch.setattr(
        compile_command, "compile_all", lambda dtypes: [caller(np.ones(3, dtype=dtypes[0]))]
    )
    assert main(["compile", "--profile", "--dtypes", "float32"]) == 0
    out = capsys.readouterr().out
    rows = {
        line.split()[0].rpartition(".")[2]: line for line in out.splitlines() if "profiled_" in line
    }
    assert set(rows) == {"profiled_callee", "profiled_caller"}
    assert "(Python entry)" not in out  # only fastbp's own kernels are marked
    caller_row = rows["profiled_caller"].split()
    with_callees, alone = float(caller_row[-4]), float(caller_row[-2])
    assert 0 < alone < with_callees
    assert "float32" in rows["profiled_callee"]
    assert "compilations:" in out and "in LLVM" in out


def test_a_compile_recorder_that_saw_nothing_reports_nothing():
    from fastbp._tools.compile import CompileRecorder

    recorder = CompileRecorder()
    assert recorder.rows() == [] and recorder.llvm_seconds() == 0.0
