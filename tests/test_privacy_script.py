"""benchmarks/privacy_accuracy.py: the privacy-accuracy table, end to end on a short run."""

import os
import sys

import pytest

pytest.importorskip("dp_accounting")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))

import privacy_accuracy  # noqa: E402


def test_table_rows_and_accounting(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(privacy_accuracy, "EPOCHS", 2)
    argv = ["privacy_accuracy.py", "--seeds", "1"]
    if _has_matplotlib():
        argv += ["--plot", str(tmp_path / "curve.png")]
    monkeypatch.setattr(sys, "argv", argv)
    privacy_accuracy.main()
    out = capsys.readouterr().out
    rows = [
        line.split() for line in out.splitlines() if line.strip()[:1].isdigit() or "none" in line
    ]
    targets = [row[0] for row in rows]
    assert targets == ["1", "2", "4", "8", "none"]
    for row in rows[:4]:
        # The ε the accountant gives for the noise chosen is the target (to its tolerance).
        assert float(row[0]) - 0.01 <= float(row[2]) <= float(row[0])
    if "--plot" in argv:
        assert (tmp_path / "curve.png").stat().st_size > 0


def _has_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
