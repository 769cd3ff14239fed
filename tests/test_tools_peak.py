"""The FMA loop behind ``fastbp bench``'s peak (fastbp/_tools/peak.py): its values, then its speed.

The values are exact: with acc ← acc·½ + 1 every step of a small count is
representable, so the sum of the accumulators is known to the last bit and
a dropped chain, lane or iteration changes it.  No speed is asserted beyond
"positive": the machine is shared.
"""

import numba
import numpy as np
import pytest

from fastbp._tools import peak


def expected_sum(start, n_iterations):
    """Σ over lanes of acc after n steps of acc ← acc/2 + 1: start·2⁻ⁿ + 2 − 2¹⁻ⁿ."""
    return float(
        np.sum(start.astype(np.float64) * 0.5**n_iterations + 2.0 - 2.0 ** (1 - n_iterations))
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n_iterations", [0, 1, 3, 9])
def test_the_fma_loop_computes_every_chain_and_lane_exactly(dtype, n_iterations):
    size = peak.CHAINS * peak.lanes(dtype)
    # Distinct small integers in every lane: a lane or chain left out changes the sum.
    start = np.arange(size, dtype=dtype)[None, :]
    result = peak.fma_chains_sum(dtype, n_iterations, start=start)
    assert result == expected_sum(start, n_iterations)


def test_the_threaded_loop_runs_one_loop_per_thread():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one Numba thread here")
    size = peak.CHAINS * peak.lanes("float64")
    start = np.arange(2 * size, dtype=np.float64).reshape(2, size)
    numba.set_num_threads(2)
    try:
        assert peak.fma_chains_sum("float64", 5, n_threads=2, start=start) == expected_sum(start, 5)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


def test_long_loops_converge_instead_of_overflowing():
    # 2 in every lane after enough steps: no overflow, no subnormals, whatever the count.
    for dtype in ("float32", "float64"):
        size = peak.CHAINS * peak.lanes(dtype)
        assert peak.fma_chains_sum(dtype, 200) == 2.0 * size


def test_vector_width_is_the_cpus_widest():
    from fastbp._simd import _target_features

    wide = "+avx512f" in _target_features().split(",")
    assert peak.PEAK_VECTOR_BYTES == (64 if wide else 32)
    assert peak.lanes("float64") * 8 == peak.lanes("float32") * 4 == peak.PEAK_VECTOR_BYTES


def test_peak_gflops_is_positive_and_finite():
    rate = peak.peak_gflops("float64", 1, rounds=1, n_iterations=1 << 12)
    assert np.isfinite(rate) and rate > 0
