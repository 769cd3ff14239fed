"""The tools' rounding bounds (fastbp/_tools/bounds.py): the one checker behind every check."""

import numpy as np
import pytest

from fastbp._tools import bounds


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grad_check_flags_a_wrong_result(dtype):
    rng = np.random.default_rng(1)
    A_h = rng.random((50, 4)).astype(dtype)
    delta_out = (rng.random((50, 3)) - 0.5).astype(dtype)
    reference, bound = bounds.grad_W_out_reference(A_h, delta_out)
    assert reference.dtype == bounds.reference_dtype(dtype)
    _, ratio = bounds.worst_excess(A_h.T @ delta_out, reference, bound)
    assert ratio <= 1.0
    wrong = A_h.T @ delta_out
    wrong[1, 2] += 100 * float(bound[1, 2])  # far outside the bound, still tiny
    difference, ratio = bounds.worst_excess(wrong, reference, bound)
    assert ratio > 1.0 and difference > 0


def test_excess_ratio_edge_cases():
    assert bounds.excess_ratio(np.array([0.5, 1.0]), np.array([1.0, 2.0])) == 0.5
    assert bounds.excess_ratio(np.array([0.0]), np.array([0.0])) == 0.0  # exact where bound is 0
    assert bounds.excess_ratio(np.array([1e-300]), np.array([0.0])) == float("inf")
    assert bounds.excess_ratio(np.array([np.nan]), np.array([1.0])) == float("inf")
    assert bounds.excess_ratio(np.empty(0), np.empty(0)) == 0.0
    assert bounds.excess_ratio(np.array([1.0, 3.0]), 2.0) == 1.5  # a scalar bound broadcasts


def test_worst_excess_of_nan_and_of_nothing():
    reference = np.zeros(2)
    assert bounds.worst_excess(np.array([np.nan, 0.0]), reference, np.ones(2)) == (
        float("inf"),
        float("inf"),
    )
    assert bounds.worst_excess(np.empty((0, 3)), np.empty((0, 3)), np.empty((0, 3))) == (0.0, 0.0)


def test_gamma_and_unit_roundoff():
    assert bounds.unit_roundoff(np.float64) == 2.0**-53
    assert bounds.unit_roundoff(np.float32) == 2.0**-24
    assert bounds.gamma(10, 2.0**-24) == pytest.approx(10 * 2.0**-24, rel=1e-6)
    assert bounds.gamma(2**24, 2.0**-24) == float("inf")


def test_normwise_ratio_flags_a_wrong_gradient():
    reference = [np.array(3.0), np.array([[1.0, -2.0]])]
    u = bounds.unit_roundoff(np.float32)
    right = [np.float32(3.0), np.array([[1.0, -2.0]], dtype=np.float32)]
    assert bounds.normwise_ratio(right, reference, 4, u) == 0.0
    wrong = [np.float32(3.0), np.array([[1.0, -2.1]], dtype=np.float32)]
    assert bounds.normwise_ratio(wrong, reference, 4, u) > 1.0
