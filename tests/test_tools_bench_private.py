"""``fastbp bench --private`` (fastbp/_tools/bench_private.py): private training's cost."""

import re

from fastbp._tools import bench, bench_private
from fastbp._tools.cli import build_parser

TINY = ("--shapes", "7x5x3", "--step-shapes", "6x4x5x3", "--repeats", "1", "--threads", "1")


def test_bench_private_times_every_candidate(monkeypatch, capsys):
    monkeypatch.setattr(bench_private, "QUICK_STEP_SHAPES", ("6x4x5x3",))
    arguments = build_parser().parse_args(
        ["bench", *TINY, "--private", "--quick", "--dtypes", "float32"]
    )
    assert bench.run(arguments) == 0
    out = capsys.readouterr().out.split("\nPrivate training")[1]
    step = out.split("\nstep 6x4x5x3 float32\n")[1]
    names = re.findall(
        r"^(backprop|dp_backprop, no noise|dp_backprop|per_example_grad_norms) ", step, re.M
    )
    assert names[:4] == [
        "backprop",
        "dp_backprop",
        "dp_backprop, no noise",
        "per_example_grad_norms",
    ]
    assert re.search(r"^backprop +\S+ \S+ +1\.000$", step, re.M)  # against itself
    epoch = out.split(
        "digits 1797x64x100x10, minibatch 32 (sample rate 32/1797), 2 epochs, float32"
    )[1]
    for name in ("sgd_epoch", "dp_sgd_epoch", "dp_sgd_epoch, no noise"):
        assert re.search(rf"^{re.escape(name)} +\S+ \S+ +\d+\.\d{{3}}$", epoch, re.M)
    assert "Opacus" in out
