"""``fastbp bench --training`` (fastbp/_tools/bench_training.py): whole epochs, three ways."""

import re

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
