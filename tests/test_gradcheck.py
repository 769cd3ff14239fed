"""The analytic gradients are the derivative of the seed's cost J (central differences)."""

import numpy as np
import pytest

import fastbp

from reference import make_network


def _cost_of(net, W_out, b_out):
    _, A_out = fastbp.forward(net["X"], net["W_h"], net["b_h"], W_out, b_out)
    return float(fastbp.cost(A_out, net["Y"]))


@pytest.mark.parametrize("method", fastbp.GRAD_W_OUT_METHODS)
@pytest.mark.parametrize("n, m, d, t", [(1, 2, 1, 1), (7, 4, 5, 3), (23, 6, 9, 4)])
def test_gradients_are_derivatives_of_cost(method, n, m, d, t, rng):
    net = make_network(n, m, d, t, np.float64, rng)
    A_h, A_out = fastbp.forward(net["X"], net["W_h"], net["b_h"], net["W_out"], net["b_out"])
    delta = fastbp.delta_out(A_out, net["Y"])
    grad_W = fastbp.grad_W_out(A_h, delta, method=method)
    grad_b = fastbp.grad_b_out(delta)

    # Central difference: truncation error ~ h²·|J'''|, rounding ~ ε|J|/h;
    # h = 1e-5 keeps both near 1e-10 for these sizes, far below the O(0.1)
    # an index or sign error makes.
    h = 1e-5
    numeric_W = np.empty_like(grad_W)
    for j in range(d):
        for k in range(t):
            W_plus, W_minus = net["W_out"].copy(), net["W_out"].copy()
            W_plus[j, k] += h
            W_minus[j, k] -= h
            numeric_W[j, k] = (
                _cost_of(net, W_plus, net["b_out"]) - _cost_of(net, W_minus, net["b_out"])
            ) / (2 * h)
    numeric_b = np.empty_like(grad_b)
    for k in range(t):
        b_plus, b_minus = net["b_out"].copy(), net["b_out"].copy()
        b_plus[k] += h
        b_minus[k] -= h
        numeric_b[k] = (
            _cost_of(net, net["W_out"], b_plus) - _cost_of(net, net["W_out"], b_minus)
        ) / (2 * h)

    tolerance = 1e-7 * (1 + n)
    assert np.all(np.abs(grad_W - numeric_W) <= tolerance), np.abs(grad_W - numeric_W).max()
    assert np.all(np.abs(grad_b - numeric_b) <= tolerance), np.abs(grad_b - numeric_b).max()


def test_delta_out_is_derivative_of_cost_wrt_output_logits(rng):
    # δ_out = ∂J/∂z_out: check it directly on z, the seed's §3 chain-rule step.
    Z = rng.normal(0, 2, (5, 3))
    Y = rng.random((5, 3))
    h = 1e-6
    numeric = np.empty_like(Z)
    for index in np.ndindex(Z.shape):
        Z_plus, Z_minus = Z.copy(), Z.copy()
        Z_plus[index] += h
        Z_minus[index] -= h
        numeric[index] = (
            fastbp.cost(fastbp.sigmoid(Z_plus), Y) - fastbp.cost(fastbp.sigmoid(Z_minus), Y)
        ) / (2 * h)
    assert np.allclose(fastbp.delta_out(fastbp.sigmoid(Z), Y), numeric, rtol=0, atol=1e-8)
