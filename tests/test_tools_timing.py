"""The tools' timers (fastbp/_tools/timing.py): interleaved medians and first calls."""

import numba
import numpy as np
import pytest

from fastbp._tools import timing


def test_first_calls_seconds_times_every_call_of_fastbp_compile():
    # On the test process's own cache root (warm after `fastbp compile`, as
    # in CI; else the child compiles what is missing and saves it there).
    from fastbp import _cache
    from fastbp._tools.compile import _calls

    result = timing.first_calls_seconds("float32", _cache.cache_root())
    names = [
        name for name, _ in _calls(np.dtype("float32"), min(2, numba.config.NUMBA_NUM_THREADS))
    ]
    assert [name for name, _ in result["calls"]] == names
    assert result["import"] > 0 and all(seconds >= 0 for _, seconds in result["calls"])


def test_interleaved_medians_settles_before_each_timing_untimed():
    import time

    from fastbp._tools.timing import interleaved_medians

    calls = []
    start = time.perf_counter()
    medians = interleaved_medians(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 2, settle=0.05
    )
    elapsed = time.perf_counter() - start
    assert elapsed >= 4 * 0.05  # two rounds of two candidates, each after a pause
    assert all(value < 0.05 for value in medians.values())  # the pause is not timed
    assert calls.count("a") == calls.count("b") == 4  # 2 untimed first calls + 2 rounds


def test_interleaved_medians_warms_up_untimed_after_the_settle():
    import time

    from fastbp._tools.timing import interleaved_medians

    calls = []

    def slow_after_pause():
        # The first call after a pause (or ever) is slow; the rest are fast.
        slow = not calls or calls[-1] == "pause"
        calls.append("call")
        if slow:
            time.sleep(0.02)

    def pause_marker():
        calls.append("pause")

    medians = interleaved_medians(
        {"marker": pause_marker, "slow": slow_after_pause}, 3, settle=0.001, warmup=0.005
    )
    assert medians["slow"] < 0.01  # the slow first call after each pause is untimed
    # 2 untimed first calls, then per round ≥ 1 warm-up call and 1 timed call.
    assert calls.count("call") >= 2 + 3 * 2


def test_format_seconds_picks_the_unit():
    assert timing.format_seconds(2.5) == "2.5 s"
    assert timing.format_seconds(0.0123) == "12.3 ms"
    assert timing.format_seconds(4.56e-6) == "4.56 µs"
    assert timing.format_seconds(7e-9) == "7 ns"
    assert timing.format_seconds(float("nan")) == "n/a"


def test_thread_limits_sets_numba_and_blas_and_restores_them():
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads():
        info = threadpoolctl.threadpool_info()
        return {entry["num_threads"] for entry in info if entry["user_api"] == "blas"}

    before = numba.get_num_threads()
    with timing.thread_limits(1):
        assert numba.get_num_threads() == 1 and blas_threads() == {1}
        with timing.thread_limits(numba.config.NUMBA_NUM_THREADS, blas=False):
            assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS
            assert blas_threads() == {1}  # BLAS left as it was
    assert numba.get_num_threads() == before


def test_schedulable_cpus_is_the_affinity_or_else_the_cpu_count(monkeypatch):
    monkeypatch.setattr(timing.os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert timing.schedulable_cpus() == 3
    monkeypatch.delattr(timing.os, "sched_getaffinity")
    monkeypatch.setattr(timing.os, "cpu_count", lambda: 7)
    assert timing.schedulable_cpus() == 7
