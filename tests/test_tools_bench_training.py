"""``fastbp bench --training`` (fastbp/_tools/bench_training.py): whole epochs, three ways."""

import re
import sys

import pytest

import fastbp
from fastbp._tools import bench, bench_training
from fastbp._tools.cli import build_parser

TINY = ("--shapes", "7x5x3", "--step-shapes", "6x4x5x3", "--repeats", "1", "--threads", "1")


def parse(*arguments):
    """``fastbp bench`` options, parsed (and validated) by the command line's parser."""
    return build_parser().parse_args(["bench", *arguments])


TINY_WORKLOADS = (
    ("digits", None, 64, 100, 10, 32, 200, None, 2),
    ("synthetic", 90, 12, 7, 3, 16, 1, 50, 2),
)


@pytest.fixture(autouse=True)
def no_estimator_comparison(monkeypatch):
    """The scikit-learn comparison (200 epochs of the digits) is tested on its own below."""
    monkeypatch.setattr(bench_training, "estimator_section", lambda *args: [])


@pytest.mark.parametrize("quick", [False, True])
def test_bench_training_times_three_loops_and_checks_sgd_epoch_bitwise(monkeypatch, capsys, quick):
    monkeypatch.setattr(
        bench_training, "WORKLOADS", TINY_WORKLOADS if quick else TINY_WORKLOADS[1:]
    )
    arguments = TINY + ("--training", "--dtypes", "float32") + (("--quick",) if quick else ())
    status = bench.run(parse(*arguments))
    out = capsys.readouterr().out
    assert status == 0
    training = out.split("\nTraining:")[1]
    if quick:
        assert "digits: 1797x64x100x10, minibatch 32, 2 epoch(s), 112 steps, float32" in training
        assert "synthetic: 50x12x7x3, minibatch 16, 2 epoch(s), 6 steps, float32" in training
    else:
        assert "synthetic: 90x12x7x3, minibatch 16, 1 epoch(s), 5 steps, float32" in training
    rows = re.findall(
        r"^(sgd_epoch|backprop loop|numpy loop) +\S+ \S+ +\S+ \S+ +([\d.]+)  (.*)$", training, re.M
    )
    assert [r[0] for r in rows][:3] == ["sgd_epoch", "backprop loop", "numpy loop"]
    assert rows[0][2] == "bitwise" and rows[1][2] == "reference" and rows[2][2].endswith("apart")
    assert float(rows[2][1]) == 1.0  # NumPy against itself


def test_bench_training_flags_an_epoch_that_differs_from_the_loop(monkeypatch, capsys):
    monkeypatch.setattr(bench_training, "WORKLOADS", TINY_WORKLOADS[1:])
    real = fastbp.sgd_epoch

    def off_by_one_step(X, Y, W_h, b_h, W_out, b_out, order, eta, size, l2):
        return real(X, Y, W_h, b_h, W_out, b_out, order[size:], eta, size, l2)

    monkeypatch.setattr(fastbp, "sgd_epoch", off_by_one_step)
    status = bench.run(parse(*TINY, "--training", "--dtypes", "float64"))
    captured = capsys.readouterr()
    assert status == 1
    assert re.search(r"^sgd_epoch .* FAIL$", captured.out, re.M)
    assert "training sgd_epoch" in captured.err


REAL_ESTIMATOR_SECTION = bench_training.estimator_section
TINY_ESTIMATOR = dict(
    bench_training.ESTIMATOR_SETTINGS, hidden=6, epochs=3, quick_epochs=2, batch_size=100
)


@pytest.fixture
def tiny_estimator(monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.setattr(bench_training, "WORKLOADS", TINY_WORKLOADS[1:])
    monkeypatch.setattr(bench_training, "ESTIMATOR_SETTINGS", TINY_ESTIMATOR)
    monkeypatch.setattr(bench_training, "estimator_section", REAL_ESTIMATOR_SECTION)


def _estimator_rows(out):
    table = out.split("\nscikit-learn ")[1]
    return re.findall(
        r"^(sklearn MLPClassifier|fastbp\.sklearn|sgd_epoch loop|fastbp\.MLP\.fit"
        r"|numpy loop \(10 lines\)) +\S+ \S+ +"
        r"([\d.]+) +(\S+)  (\S+)$",
        table,
        re.M,
    )


def test_bench_training_compares_the_estimator_with_sklearn(tiny_estimator, capsys):
    status = bench.run(parse(*TINY, "--training", "--dtypes", "float32"))
    out = capsys.readouterr().out
    assert status == 0
    assert "(1438 training, 359 held out), 64-6-10, minibatch 100, 3 epochs (all run)" in out
    rows = _estimator_rows(out)
    names = ["sklearn MLPClassifier", "fastbp.sklearn", "sgd_epoch loop", "fastbp.MLP.fit"]
    assert [r[0] for r in rows] == names + ["numpy loop (10 lines)"]
    assert float(rows[0][1]) == 1.0  # scikit-learn against itself
    assert rows[1][3] == "bitwise" and rows[2][2] == "-"
    assert all(r[2].endswith("%") for r in (rows[0], rows[1], rows[3], rows[4]))
    assert "fastbp.sklearn / sgd_epoch loop: " in out
    assert re.search(r"fastbp\.MLP\.fit / sgd_epoch loop: [\d.]+ .*numpy loop \(10 lines\) / "
                     r"fastbp\.MLP\.fit: [\d.]+$", out, re.M)  # fmt: skip


def test_bench_training_flags_an_estimator_that_differs_from_the_loop(
    tiny_estimator, monkeypatch, capsys
):
    real = bench_training._sgd_epoch_loop

    def one_epoch_short(X, y, dtype, epochs):
        return real(X, y, dtype, epochs - 1)

    monkeypatch.setattr(bench_training, "_sgd_epoch_loop", one_epoch_short)
    status = bench.run(parse(*TINY, "--training", "--dtypes", "float64"))
    captured = capsys.readouterr()
    assert status == 1
    assert _estimator_rows(captured.out)[1][3] == "FAIL"
    assert "estimator fastbp.sklearn digits/100/3 float64" in captured.err


def test_bench_training_without_sklearn_leaves_the_comparison_out(monkeypatch, capsys):
    monkeypatch.setattr(bench_training, "WORKLOADS", TINY_WORKLOADS[1:])
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setattr(bench_training, "estimator_section", REAL_ESTIMATOR_SECTION)
    assert bench.run(parse(*TINY, "--training", "--dtypes", "float32")) == 0
    assert "scikit-learn: not installed, its comparison left out" in capsys.readouterr().out
