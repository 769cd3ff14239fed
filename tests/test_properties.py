"""Hypothesis: any shape, dtype and memory layout gives the exact answer, bitwise."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import fastbp

from reference import exact_pair, outer_sum_reference

LAYOUTS = ("C", "F", "strided", "reversed", "readonly")


def _lay_out(array, layout, rng):
    """The same values in another memory layout."""
    if layout == "F":
        return np.asfortranarray(array)
    if layout == "strided":
        n, k = array.shape
        big = rng.random((2 * n, 3 * k)).astype(array.dtype)
        big[::2, ::3] = array
        view = big[::2, ::3]
        assert not view.flags.c_contiguous or array.size <= 1
        return view
    if layout == "reversed":
        return np.ascontiguousarray(array[::-1])[::-1]
    if layout == "readonly":
        copy = array.copy()
        copy.setflags(write=False)
        return copy
    return array


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(0, 70),
    d=st.integers(0, 12),
    t=st.integers(0, 9),
    dtype=st.sampled_from([np.float32, np.float64]),
    layout_A=st.sampled_from(LAYOUTS),
    layout_delta=st.sampled_from(LAYOUTS),
    block_n=st.integers(1, 9),
    block_d=st.integers(1, 13),
    block_t=st.integers(1, 10),
    n_chunks=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
)
def test_every_way_exact_for_any_shape_and_layout(
    n, d, t, dtype, layout_A, layout_delta, block_n, block_d, block_t, n_chunks, seed
):
    rng = np.random.default_rng(seed)
    A_h, delta = exact_pair(n, d, t, dtype, rng)
    expected = outer_sum_reference(A_h, delta).astype(dtype)
    A_in = _lay_out(A_h, layout_A, rng)
    delta_in = _lay_out(delta, layout_delta, rng)
    A_before, delta_before = A_in.copy(), delta_in.copy()

    results = {
        "outer": fastbp.grad_W_out_outer(A_in, delta_in),
        "matmul": fastbp.grad_W_out_matmul(A_in, delta_in),
        "blocked": fastbp.grad_W_out_blocked(
            A_in, delta_in, block_n=block_n, block_d=block_d, block_t=block_t, n_chunks=n_chunks
        ),
    }
    for name, result in results.items():
        assert result.dtype == dtype and result.shape == (d, t), name
        assert np.array_equal(result, expected), name
    assert np.array_equal(
        fastbp.grad_b_out(delta_in), delta.sum(axis=0, dtype=np.float64).astype(dtype)
    )
    # inputs untouched
    assert np.array_equal(A_in, A_before) and np.array_equal(delta_in, delta_before)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 20),
    m=st.integers(0, 6),
    d=st.integers(0, 6),
    t=st.integers(0, 5),
    dtype=st.sampled_from([np.float32, np.float64]),
    layout=st.sampled_from(LAYOUTS),
    seed=st.integers(0, 2**32 - 1),
)
def test_forward_and_delta_independent_of_layout(n, m, d, t, dtype, layout, seed):
    rng = np.random.default_rng(seed)
    X = rng.random((n, m)).astype(dtype)
    W_h = rng.normal(0, 1, (m, d)).astype(dtype)
    b_h = rng.normal(0, 1, d).astype(dtype)
    W_out = rng.normal(0, 1, (d, t)).astype(dtype)
    b_out = rng.normal(0, 1, t).astype(dtype)
    Y = rng.random((n, t)).astype(dtype)
    A_h, A_out = fastbp.forward(X, W_h, b_h, W_out, b_out)
    A_h2, A_out2 = fastbp.forward(
        _lay_out(X, layout, rng), _lay_out(W_h, layout, rng), b_h, W_out, b_out
    )
    assert np.array_equal(A_h, A_h2) and np.array_equal(A_out, A_out2)
    assert A_h.shape == (n, d) and A_out.shape == (n, t) and A_out.dtype == dtype
    assert np.all((A_out >= 0) & (A_out <= 1))
    assert np.array_equal(fastbp.delta_out(_lay_out(A_out, layout, rng), Y), A_out - Y)
