"""The Dask measurement scripts in benchmarks/ run end to end (tiny sizes; no timing is checked)."""

import os
import pathlib
import subprocess
import sys
import threading

import pytest

distributed = pytest.importorskip("distributed")

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
    out = run(
        "dask_speed.py",
        *("--n", "1200", "--m", "20", "--d", "8", "--t", "3", "--rounds", "2", "--as-sent"),
    )
    assert "every dask call bitwise equal to dask 1x1: True" in out
    assert "in the workers [1]" in out
    for name in ("in-memory", "dask 1x1", "dask 2x1", "dask 1x1 as sent"):
        assert f"\n{name:18s} median" in out
        assert f"\n  {name:18s}" in out  # its row of CPU per call
    assert "overhead dask 1x1 / in-memory = " in out
    assert "scaling  dask 1x1 / dask 2x1  = " in out
    assert "the highest scaling this CPU time allows here = " in out


def dask_speed_module():
    sys.path.insert(0, str(BENCHMARKS.parent))
    try:
        from benchmarks import dask_speed
    finally:
        sys.path.remove(str(BENCHMARKS.parent))
    return dask_speed


def test_dask_speed_reports_medians_with_quartiles():
    spread = dask_speed_module().spread
    assert spread([1.25]) == "1.250"
    assert spread([3.0, 1.0, 2.0]) == "2.000 (quartiles 1.500–2.500)"


def test_dask_speed_counts_cpu_by_thread():
    dask_speed = dask_speed_module()
    before = {("this process", 1): 1.0, ("tcp://w", 7): 2.0, ("tcp://w", 8): 0.5}
    after = {
        ("this process", 1): 1.5,
        ("this process", 2): 0.25,  # a thread started between the readings
        ("tcp://w", 7): 5.0,
        ("tcp://w", 8): 0.75,
    }
    parts = dask_speed.cpu_by_part(before, after, executor_ids={7})
    assert parts == {
        "executor threads": 3.0,
        "workers' other threads": 0.25,
        "this process": 0.75,
    }
    import psutil

    seconds = dask_speed.thread_cpu({"this process": psutil.Process()})
    assert ("this process", threading.get_native_id()) in seconds
    assert all(value >= 0 for value in seconds.values())


def test_lbfgs_digits_runs():
    out = run("dask_lbfgs_digits.py", "--smoke")
    assert "L-BFGS, Dask" in out and "SGD" in out


def test_scattered_puts_each_block_of_Y_beside_its_block_of_X_where_asked():
    import dask
    import numpy as np

    dask_speed = dask_speed_module()  # puts benchmarks/ on the path for its helpers
    scattered = dask_speed.scattered
    X = np.arange(60.0).reshape(15, 4)
    Y = np.arange(30.0).reshape(15, 2)
    with (
        distributed.LocalCluster(
            processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):
        first, second = sorted(client.scheduler_info()["workers"])

        def holders(array):
            futures = distributed.futures_of(array)
            client.gather(futures)  # in memory by now
            where = client.who_has(futures)
            return [tuple(where[key]) for key in dask.core.flatten(array.__dask_keys__())]

        for workers, realigned in (([first], True), ([second], False)):
            X_dask, Y_dask = scattered(client, X, Y, 4, workers=workers, realigned=realigned)
            assert X_dask.chunks == ((3, 4, 4, 4), (4,)) and Y_dask.chunks[0] == X_dask.chunks[0]
            assert set(holders(X_dask)) == set(holders(Y_dask)) == {tuple(workers)}
            assert np.array_equal(X_dask.compute(scheduler=client.get), X)
            assert np.array_equal(Y_dask.compute(scheduler=client.get), Y)

        X_dask, Y_dask = scattered(client, X, Y, 4)
        assert holders(X_dask) == holders(Y_dask)
        assert {holder for (holder,) in holders(X_dask)} == {first, second}
