"""∂J/∂W_out three ways: the seed's formula, bitwise equality, rounding bound."""

import numba
import numpy as np
import pytest

import fastbp

from reference import (
    DT_VALUES,
    FLOAT_DTYPES,
    N_VALUES,
    assert_within_bound,
    exact_pair,
    outer_sum_reference,
    random_pair,
    rounding_bound,
)

METHODS = {
    "outer": fastbp.grad_W_out_outer,
    "blocked": fastbp.grad_W_out_blocked,
    "matmul": fastbp.grad_W_out_matmul,
}


@pytest.mark.parametrize("method", fastbp.GRAD_W_OUT_METHODS)
def test_seed_element_formula_by_hand(method):
    # n = 2 examples, d = 3 hidden units, t = 2 outputs.  By the seed's
    # element formula ∂J/∂w_{j,k} = Σ_i a_j^{[i]} δ_k^{[i]}:
    #   j=1: 1·1 + 4·0.5 = 3      1·(−1) + 4·2 = 7
    #   j=2: 2·1 + 5·0.5 = 4.5    2·(−1) + 5·2 = 8
    #   j=3: 3·1 + 6·0.5 = 6      3·(−1) + 6·2 = 9
    A_h = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    delta = np.array([[1.0, -1.0], [0.5, 2.0]])
    expected = np.array([[3.0, 7.0], [4.5, 8.0], [6.0, 9.0]])
    assert np.array_equal(fastbp.grad_W_out(A_h, delta, method=method), expected)
    # and the bias gradient, the seed's w_{0,k} with a_0 = 1: 1 + 0.5, −1 + 2
    assert np.array_equal(fastbp.grad_b_out(delta), np.array([1.5, 1.0]))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("d, t", DT_VALUES, ids=lambda v: str(v))
@pytest.mark.parametrize("n", N_VALUES)
def test_three_ways_bitwise_equal_on_exact_data(n, d, t, dtype, rng):
    A_h, delta = exact_pair(n, d, t, dtype, rng)
    expected = outer_sum_reference(A_h, delta).astype(dtype)  # exact, so rounding is a no-op
    for name, function in METHODS.items():
        result = function(A_h, delta)
        assert result.dtype == dtype and result.shape == (d, t), name
        assert result.flags.c_contiguous, name
        assert np.array_equal(result, expected), name


BLOCK_CASES = [
    # block_n, block_d, block_t, n_chunks
    (1, 1, 1, 1),
    (2, 3, 2, 1),
    (3, 5, 4, 2),
    (4, 8, 5, 3),
    (5, 16, 7, 7),
    (7, 32, 16, 1),
    (8, 37, 11, 4),
    (13, 64, 3, 5),
    (64, 100, 1, 2),
    (256, 128, 16, 16),
    (1001, 1000, 1000, 1),
    (5000, 2, 100, 3),
]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("block_n, block_d, block_t, n_chunks", BLOCK_CASES)
def test_blocked_bitwise_for_every_block_size(block_n, block_d, block_t, n_chunks, dtype, rng):
    # 1001 examples (odd, prime-ish factors), 37 × 11: no block size divides them.
    A_h, delta = exact_pair(1001, 37, 11, dtype, rng)
    expected = outer_sum_reference(A_h, delta).astype(dtype)
    result = fastbp.grad_W_out_blocked(
        A_h, delta, block_n=block_n, block_d=block_d, block_t=block_t, n_chunks=n_chunks
    )
    assert np.array_equal(result, expected)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_blocked_result_does_not_depend_on_block_sizes(dtype, rng):
    # Documented: every element is one fused multiply-add per example in
    # example order, so cache blocking changes the speed, never the bits.
    A_h, delta = random_pair(3001, 37, 11, dtype, rng)
    results = [
        fastbp.grad_W_out_blocked(A_h, delta, block_n=bn, block_d=bd, block_t=bt, n_chunks=3)
        for bn, bd, bt, _ in BLOCK_CASES
    ]
    for result in results[1:]:
        assert np.array_equal(result, results[0])
    assert_within_bound(results[0], A_h, delta)


@pytest.mark.parametrize("n", [0, 1, 5, 4099])
def test_blocked_more_chunks_than_examples(n, rng):
    A_h, delta = exact_pair(n, 6, 4, np.float64, rng)
    result = fastbp.grad_W_out_blocked(A_h, delta, n_chunks=16, block_n=3)
    assert np.array_equal(result, outer_sum_reference(A_h, delta).astype(np.float64))


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 Numba threads")
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n_chunks", [None, 2, 5, 16])
def test_blocked_same_bits_for_one_and_two_threads(n_chunks, dtype, rng):
    A_h, delta = random_pair(20011, 100, 10, dtype, rng)
    one = fastbp.grad_W_out_blocked(A_h, delta, n_chunks=n_chunks, n_threads=1)
    two = fastbp.grad_W_out_blocked(A_h, delta, n_chunks=n_chunks, n_threads=2)
    assert np.array_equal(one, two)
    assert_within_bound(two, A_h, delta)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 Numba threads")
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_one_chunk_shared_by_columns_keeps_the_serial_bits(dtype, rng):
    # One chunk with enough work shares its blocks of hidden units among the threads: every
    # element must keep the one-thread bits, -0 included, for any number of parts and any
    # column cut (block_d not dividing d, a last block narrower than one vector).
    from fastbp import _kernels

    for n, d, t, block_d in [(300, 77, 13, 16), (64, 530, 50, 256), (7, 33, 5, 8)]:
        A_h, delta = random_pair(n, d, t, dtype, rng)
        A_h[:, 3] = -0.0
        serial = _kernels._grad_W_out_blocked_serial(A_h, delta, 1, 32, block_d, 48)
        for parts in (2, 3, 7):
            shared = _kernels._grad_W_out_blocked_columns_parallel(
                A_h, delta, parts, 32, block_d, 48
            )
            assert np.array_equal(shared, serial) and np.array_equal(
                np.signbit(shared), np.signbit(serial)
            )
    # Through the public function: one chunk (n < 8192) above the threshold (n·d·t ≥ 2**24).
    A_h, delta = random_pair(512, 1100, 40, dtype, rng)
    assert 512 * 1100 * 40 >= 2**24 and fastbp.default_n_chunks(512, 1100, 40, 8) == 1
    one = fastbp.grad_W_out_blocked(A_h, delta, n_threads=1)
    two = fastbp.grad_W_out_blocked(A_h, delta, n_threads=2)
    assert np.array_equal(one, two)
    assert_within_bound(two, A_h, delta)


def test_n_threads_restores_numba_setting(rng):
    A_h, delta = random_pair(9000, 8, 3, np.float64, rng)
    before = numba.get_num_threads()
    fastbp.grad_W_out_blocked(A_h, delta, n_chunks=2, n_threads=1)
    assert numba.get_num_threads() == before


RANDOM_SHAPES = [
    (1, 1, 1),
    (2, 3, 5),
    (65, 37, 11),
    (1000, 100, 10),
    (4099, 64, 17),
    (20000, 13, 3),
]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n, d, t", RANDOM_SHAPES, ids=str)
@pytest.mark.parametrize("method", fastbp.GRAD_W_OUT_METHODS)
def test_within_rounding_bound_on_random_data(method, n, d, t, dtype, rng):
    A_h, delta = random_pair(n, d, t, dtype, rng)
    result = fastbp.grad_W_out(A_h, delta, method=method)
    assert result.dtype == dtype
    assert_within_bound(result, A_h, delta)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_bound_is_tight_enough_to_catch_a_missing_example(dtype, rng):
    # The bound must not hide the kind of bug it is there to catch: leaving
    # out one example's outer product (a dropped tail) breaks it.
    A_h, delta = random_pair(4099, 37, 11, dtype, rng)
    truncated = fastbp.grad_W_out_outer(A_h[:-1], delta[:-1])
    error = np.abs(truncated - outer_sum_reference(A_h, delta))
    assert np.any(error > rounding_bound(A_h, delta))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_bias_gradient_is_column_sum(dtype, rng):
    _, delta = exact_pair(4099, 1, 13, dtype, rng)
    expected = delta.astype(np.float64).sum(axis=0).astype(dtype)  # exact data
    result = fastbp.grad_b_out(delta)
    assert result.dtype == dtype and result.shape == (13,)
    assert np.array_equal(result, expected)
    # and it is the weight gradient with a constant hidden unit a_0 = 1
    ones = np.ones((4099, 1), dtype=dtype)
    assert np.array_equal(fastbp.grad_W_out_outer(ones, delta)[0], result)


def test_bias_gradient_within_bound_on_random_data(rng):
    _, delta = random_pair(20000, 1, 7, np.float32, rng)
    ones = np.ones((20000, 1), dtype=np.float32)
    assert_within_bound(fastbp.grad_b_out(delta)[None, :], ones, delta)


def test_default_method_is_matmul(rng):
    A_h, delta = random_pair(50, 4, 3, np.float64, rng)
    assert np.array_equal(fastbp.grad_W_out(A_h, delta), fastbp.grad_W_out_matmul(A_h, delta))


def test_blocked_options_pass_through_grad_W_out(rng):
    A_h, delta = exact_pair(99, 5, 3, np.float64, rng)
    result = fastbp.grad_W_out(A_h, delta, method="blocked", block_n=2, block_d=3, n_chunks=3)
    assert np.array_equal(result, A_h.T @ delta)


def test_unknown_method_is_refused(rng):
    A_h, delta = random_pair(5, 4, 3, np.float64, rng)
    with pytest.raises(ValueError, match="method must be one of 'outer', 'blocked', 'matmul'"):
        fastbp.grad_W_out(A_h, delta, method="einsum")
    with pytest.raises(TypeError, match="method='matmul' takes no options, got block_n"):
        fastbp.grad_W_out(A_h, delta, method="matmul", block_n=4)


@pytest.mark.parametrize("name", ["block_n", "block_d", "block_t", "n_chunks", "n_threads"])
@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "4", None])
def test_blocked_parameters_must_be_positive_integers(name, bad, rng):
    A_h, delta = random_pair(5, 4, 3, np.float64, rng)
    if bad is None and name in ("n_chunks", "n_threads"):
        fastbp.grad_W_out_blocked(A_h, delta, **{name: bad})  # None means automatic
        return
    with pytest.raises((TypeError, ValueError), match=f"{name} must be a positive integer"):
        fastbp.grad_W_out_blocked(A_h, delta, **{name: bad})


def test_too_many_threads_is_refused(rng):
    A_h, delta = random_pair(5, 4, 3, np.float64, rng)
    limit = numba.config.NUMBA_NUM_THREADS
    with pytest.raises(ValueError, match=f"n_threads must be at most {limit}"):
        fastbp.grad_W_out_blocked(A_h, delta, n_threads=limit + 1)


@pytest.mark.parametrize(
    "n, d, t, itemsize, expected",
    [
        (0, 100, 10, 8, 1),
        (4095, 100, 10, 8, 1),
        (8192, 100, 10, 8, 2),
        (60000, 100, 10, 8, 14),
        (10**7, 100, 10, 8, 16),
        (10**7, 1024, 1024, 8, 8),
        (10**7, 4096, 4096, 8, 1),
    ],
)
def test_default_chunks_depend_on_shape_only(n, d, t, itemsize, expected):
    assert fastbp.default_n_chunks(n, d, t, itemsize) == expected
