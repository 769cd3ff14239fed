"""fastbp.dask.backprop: the fused step over dask arrays, on every kind of scheduler.

The promise under test: the result depends on the data, the chunks and
``split_every`` only.  So every scheduler (synchronous, threads, processes,
a distributed cluster of any shape, with a worker killed half-way) must give
the same bits; random chunkings must stay within the proven rounding bound
of the in-memory step; and where the blocks' partial sums are exact, or the
blocks are the in-memory call's own chunks, the bits of the in-memory step.
"""

import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import dask.core  # noqa: E402, F811 (after the importorskip above)
from dask.delayed import Delayed  # noqa: E402

import fastbp  # noqa: E402
from fastbp import _backprop  # noqa: E402
from fastbp import dask as fastbp_dask  # noqa: E402

from reference import (  # noqa: E402
    backprop_rounding_bound,
    gamma,
    random_network,
    unit_roundoff,
)

DTYPES = [np.float32, np.float64]
FIELDS = ("cost", "grad_W_h", "grad_b_h", "grad_W_out", "grad_b_out")


def on_dask(network, chunks):
    """X and Y as dask arrays cut into blocks of ``chunks`` rows (an int or a tuple)."""
    X, Y, *weights = network
    return (da.from_array(X, chunks=(chunks, -1)), da.from_array(Y, chunks=(chunks, -1)), *weights)


def same_bits(first, second):
    assert first._fields == FIELDS
    return all(
        np.asarray(a).dtype == np.asarray(b).dtype
        and np.shape(a) == np.shape(b)
        and np.asarray(a).tobytes() == np.asarray(b).tobytes()
        for a, b in zip(first, second)
    )


def local(scheduler, **options):
    """Dask's local scheduler for a ``with`` block (and never a distributed Client)."""
    return dask.config.set(scheduler=scheduler, **options)


def within_bound(result, network, l2, dtype):
    bound = backprop_rounding_bound(*network, l2, dtype)
    expected = fastbp.backprop(*network, l2=l2)
    for key in FIELDS:
        value = np.asarray(getattr(result, key))
        assert value.dtype == dtype, key
        difference = np.abs(
            value.astype(np.float64) - np.asarray(getattr(expected, key), np.float64)
        )
        assert np.all(difference <= bound[key]), (key, np.max(difference / bound[key]))


# --------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------


def run_python(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_importing_fastbp_does_not_import_dask():
    done = run_python(
        "import sys, fastbp\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_without_dask_the_import_error_says_what_to_install():
    done = run_python(
        "import sys; sys.modules['dask'] = None\n"
        "try:\n"
        "    import fastbp.dask\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'fastbp[dask]'" in done.stdout


# --------------------------------------------------------------------------
# Against the in-memory step
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("l2", [0.0, 0.7])
@pytest.mark.parametrize("n", [1, 300, 1000])
def test_one_block_gives_the_bits_of_the_in_memory_step(dtype, l2, n):
    """A single block is the in-memory call itself: the same chunks, the same kernel."""
    rng = np.random.default_rng([n, 1])
    network = random_network(rng, n, 23, 17, 5, dtype)
    with local("sync"):
        result = fastbp_dask.backprop(*on_dask(network, n), l2=l2)
    assert isinstance(result, fastbp.BackpropResult)
    assert isinstance(result.cost, np.dtype(dtype).type)
    assert same_bits(result, fastbp.backprop(*network, l2=l2))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("split_every", [None, 8, 100])
def test_blocks_that_are_the_in_memory_chunks_give_its_bits(dtype, split_every):
    """Random data, several blocks, the in-memory step's bits.

    fastbp.backprop cuts 1024 examples into default_backprop_chunks = 8
    chunks of 128 and adds their partials left to right in chunk order;
    blocks of 128 rows are one chunk each, and with split_every ≥ 8 one
    task adds the 8 partials left to right in block order: the same
    additions in the same order.
    """
    n, m, d, t = 1024, 31, 19, 6
    assert fastbp.default_backprop_chunks(n, m, d, t, np.dtype(dtype).itemsize) == 8
    assert fastbp.default_backprop_chunks(128, m, d, t, np.dtype(dtype).itemsize) == 1
    network = random_network(np.random.default_rng(2), n, m, d, t, dtype)
    with local("sync"):
        result = fastbp_dask.backprop(*on_dask(network, 128), l2=0.2, split_every=split_every)
    assert same_bits(result, fastbp.backprop(*network, l2=0.2))


def saturated_network(rng, n, m, d, t, dtype):
    """A network whose every activation is exactly 0, 1/2 or 1, and every gradient sum exact.

    X holds 0, 1 and 2; W_h and b_h are multiples of 1024, so each hidden
    input z is a multiple of 1024 computed exactly: 0, where the sigmoid
    gives exactly 1/2, or |z| ≥ 1024, where e^{−|z|} underflows to 0 and
    the sigmoid gives exactly 0 or 1 (float32 and float64 alike).  W_out
    and b_out are multiples of 2048, so the outputs' inputs are multiples of
    1024 too, and A_out is 0, 1/2 or 1.  Y holds multiples of 1/4.  Then
    δ_out is a multiple of 1/4 in [−1, 1] and δ_h = (δ_out W_outᵀ) A_h (1 − A_h)
    a multiple of 128 of size at most 512 t.  Every partial sum over
    examples, in any order and any grouping, is then a multiple of 1/8
    below n (A_hᵀ δ_out, Σ δ_out) or of 128 below 2 · 512 · t · n (Xᵀ δ_h,
    Σ δ_h): with n = 1000 and t = 4, 24 significant bits hold each exactly,
    so each block's partial, the in-memory step's chunk partials and any
    tree of their sums are the same numbers, in float32 as in float64.
    The penalty's λW with λ = 1/2 is exact too.

    The cost cannot be made exact this way: its terms are logarithms of
    1/2 or of the smallest normal number, irrational multiples, and any
    data with more than two nonzero terms (every example with a nonzero
    δ_out has one) sums them with rounding.  The cost is held to the
    bound of two float64 sums of the same n·t terms in different orders
    instead, plus the final rounding to the dtype.
    """
    X = (rng.random((n, m)) < 0.3) * rng.integers(1, 3, (n, m))
    W_h = 1024.0 * rng.choice([-1, 0, 0, 0, 1], (m, d))
    b_h = 1024.0 * rng.choice([-1, 0, 0, 1], d)
    W_out = 2048.0 * rng.choice([-1, 0, 1], (d, t))
    b_out = 2048.0 * rng.choice([-1, 0, 1], t)
    Y = rng.integers(0, 5, (n, t)) / 4
    return tuple(np.asarray(a, dtype) for a in (X, Y, W_h, b_h, W_out, b_out))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "chunks", [64, 37, 333, (1, 0, 498, 500, 1), (999, 1)], ids=lambda c: str(c).replace(" ", "")
)
@pytest.mark.parametrize("split_every", [None, 2, 3])
def test_exact_data_gives_the_bits_of_the_in_memory_step(dtype, chunks, split_every):
    n, m, d, t = 1000, 9, 7, 4
    network = saturated_network(np.random.default_rng(3), n, m, d, t, dtype)
    A_h, A_out = fastbp.forward(*network[:1], *network[2:])
    for A in (A_h, A_out):  # the premise, and every case present
        assert set(np.unique(A)) == {0.0, 0.5, 1.0}
    expected = fastbp.backprop(*network, l2=0.5)
    with local("sync"):
        result = fastbp_dask.backprop(*on_dask(network, chunks), l2=0.5, split_every=split_every)
    for key in FIELDS[1:]:  # the gradients: bitwise
        value, exact = getattr(result, key), getattr(expected, key)
        assert value.dtype == exact.dtype and value.tobytes() == exact.tobytes(), key
    assert np.abs(expected.grad_W_h).max() > 1000 and np.abs(expected.grad_W_out).max() > 100
    J = float(expected.cost)
    bound = 2 * gamma(n * t + 4, unit_roundoff(np.float64)) * J + 2 * unit_roundoff(dtype) * J
    assert abs(float(result.cost) - J) <= bound


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("l2", [0.0, 0.3])
@pytest.mark.parametrize(
    "chunks",
    [100, 7, (1, 699), (0, 350, 0, 350), (250, 1, 0, 200, 249), (699, 1)],
    ids=lambda c: str(c).replace(" ", ""),
)
@pytest.mark.parametrize("split_every", [None, 2])
def test_any_chunking_is_within_the_rounding_bound(dtype, l2, chunks, split_every):
    network = random_network(np.random.default_rng(4), 700, 20, 12, 4, dtype)
    with local("sync"):
        result = fastbp_dask.backprop(*on_dask(network, chunks), l2=l2, split_every=split_every)
    within_bound(result, network, l2, dtype)


def test_random_chunkings_are_within_the_rounding_bound():
    rng = np.random.default_rng(5)
    for dtype in DTYPES:
        network = random_network(rng, 500, 13, 9, 3, dtype)
        for _ in range(6):
            cuts = np.sort(rng.integers(0, 501, rng.integers(1, 12)))
            chunks = tuple(int(c) for c in np.diff(np.concatenate([[0], cuts, [500]])))
            split_every = int(rng.integers(2, 6))
            with local("sync"):
                result = fastbp_dask.backprop(
                    *on_dask(network, chunks), l2=0.1, split_every=split_every
                )
            within_bound(result, network, 0.1, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_examples_and_empty_blocks(dtype):
    rng = np.random.default_rng(6)
    network = random_network(rng, 0, 5, 4, 3, dtype)
    with local("sync"):
        result = fastbp_dask.backprop(*on_dask(network, 10), l2=2.0)
    expected = fastbp.backprop(*network, l2=2.0)
    assert same_bits(result, expected)
    assert result.cost == dtype(fastbp.l2_penalty(network[2], network[4], 2.0))
    assert not result.grad_b_h.any() and not result.grad_b_out.any()
    # Empty blocks add exact zeros: with one task adding all partials, the
    # same bits as without them.
    network = random_network(rng, 80, 5, 4, 3, dtype)
    with local("sync"):
        with_empty = fastbp_dask.backprop(*on_dask(network, (0, 50, 0, 30, 0)), l2=0.1)
        without = fastbp_dask.backprop(*on_dask(network, (50, 30)), l2=0.1)
    assert same_bits(with_empty, without)


def test_mixed_precision_is_promoted_as_in_memory():
    rng = np.random.default_rng(7)
    network = list(random_network(rng, 60, 5, 4, 3, np.float32))
    network[4] = network[4].astype(np.float64)  # W_out
    with local("sync"):
        result = fastbp_dask.backprop(*on_dask(network, 60))
    assert all(np.asarray(v).dtype == np.float64 for v in result)
    assert same_bits(result, fastbp.backprop(*network))
    # float32 data with float64 targets: float64, the blocks converted in their tasks
    network = list(random_network(rng, 60, 5, 4, 3, np.float32))
    network[1] = network[1].astype(np.float64)
    with local("sync"):
        result = fastbp_dask.backprop(*on_dask(network, 60))
    assert same_bits(result, fastbp.backprop(*network))


def test_blocks_in_any_layout_and_weights_as_lists():
    rng = np.random.default_rng(8)
    network = random_network(rng, 90, 6, 5, 3, np.float64)
    X, Y, W_h, b_h, W_out, b_out = network
    X_dask = da.from_array(np.asfortranarray(X), chunks=(30, -1))
    Y_dask = da.from_array(Y[::-1].copy(), chunks=(30, -1))[::-1]  # reversed views per block
    with local("sync"):
        result = fastbp_dask.backprop(X_dask, Y_dask, W_h.tolist(), b_h, W_out, b_out.tolist())
        expected = fastbp_dask.backprop(*on_dask(network, 30))
    assert same_bits(result, expected)


def misaligned_copy(array, offset):
    """A C-contiguous copy of ``array`` starting ``offset`` bytes past an aligned address."""
    buffer = np.empty(array.nbytes + 64 + offset, np.uint8)
    start = (-buffer.ctypes.data) % 64 + offset
    view = np.frombuffer(buffer[start : start + array.nbytes], array.dtype).reshape(array.shape)
    view[...] = array
    return view


@pytest.mark.parametrize("dtype", DTYPES)
def test_misaligned_blocks_are_copied_and_give_the_same_bits(dtype):
    """A block deserialised from another process can start at any byte."""
    rng = np.random.default_rng(9)
    network = random_network(rng, 200, 12, 9, 4, dtype)
    X, Y, W_h, b_h, W_out, b_out = network
    X_odd = misaligned_copy(X, 1)
    assert X_odd.ctypes.data % X.dtype.itemsize != 0
    aligned = fastbp_dask._element_aligned(X_odd)
    assert aligned is not X_odd and aligned.ctypes.data % X.dtype.itemsize == 0
    assert np.array_equal(aligned, X)
    X_even = misaligned_copy(X, X.dtype.itemsize)
    assert fastbp_dask._element_aligned(X_even) is X_even
    weights = (W_h, b_h, W_out, b_out)
    expected = fastbp_dask._block_terms(X, Y, weights, 200)
    result = fastbp_dask._block_terms(X_odd, misaligned_copy(Y, 3), weights, 200)
    assert result[0] == expected[0]
    assert all(a.tobytes() == b.tobytes() for a, b in zip(result[1:], expected[1:]))


# --------------------------------------------------------------------------
# The reduction tree and the graph
# --------------------------------------------------------------------------


def block_partials(network, chunks):
    X, Y, W_h, b_h, W_out, b_out = network
    starts = [0, *np.cumsum(chunks).tolist()]
    m, d = W_h.shape
    t = W_out.shape[1]
    partials = []
    for a, b in zip(starts[:-1], starts[1:]):
        n_chunks = fastbp.default_backprop_chunks(b - a, m, d, t, X.dtype.itemsize)
        partials.append(_backprop._data_terms(X[a:b], Y[a:b], W_h, b_h, W_out, b_out, n_chunks, 1))
    return partials


def add(*partials):
    """Left to right, as documented: ((p₀ + p₁) + p₂) + …"""
    total = partials[0]
    for partial in partials[1:]:
        total = tuple(a + b for a, b in zip(total, partial))
    return total


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_tree_adds_in_the_documented_order(dtype):
    rng = np.random.default_rng(9)
    chunks = (150, 1, 200, 149, 0, 300, 100)
    network = random_network(rng, sum(chunks), 24, 16, 5, dtype)
    p = block_partials(network, chunks)
    W_h, W_out = network[2], network[4]
    trees = {
        2: add(add(add(p[0], p[1]), add(p[2], p[3])), add(add(p[4], p[5]), p[6])),
        3: add(add(p[0], p[1], p[2]), add(p[3], p[4], p[5]), p[6]),
        7: add(*p),
        8: add(*p),
    }
    for split_every, tree in trees.items():
        cost, *gradients = tree
        expected = _backprop._with_penalty(cost, *(g.copy() for g in gradients), W_h, W_out, 0.25)
        with local("sync"):
            result = fastbp_dask.backprop(
                *on_dask(network, chunks), l2=0.25, split_every=split_every
            )
        assert same_bits(result, expected), split_every


def graph_of(delayed):
    return dict(delayed.__dask_graph__())


# The last level of the tree (at most split_every partials) is added in the
# root task, which also adds the penalty: 7 blocks by 2 are 7 -> 4 -> 2 in
# sum tasks, then the root.
@pytest.mark.parametrize(
    "n_blocks, split_every, n_sums", [(1, None, 0), (7, 2, 5), (7, 3, 2), (7, 7, 0), (20, None, 3)]
)
def test_reduction_tasks(n_blocks, split_every, n_sums):
    network = random_network(np.random.default_rng(10), 10 * n_blocks, 4, 3, 2, np.float64)
    delayed = fastbp_dask.backprop(*on_dask(network, 10), split_every=split_every, compute=False)
    graph = graph_of(delayed)
    names = [k[0] if isinstance(k, tuple) else k for k in graph]
    assert sum(name.startswith("fastbp-backprop-block-") for name in names) == n_blocks
    assert sum(name.startswith("fastbp-backprop-sum-") for name in names) == n_sums
    # The root: fastbp's only other task besides the weights.
    ours = [name for name in names if name.startswith("fastbp-backprop-")]
    assert len(ours) == n_blocks + n_sums + 2 and delayed.key in graph


def test_the_weights_are_one_key_that_every_block_task_refers_to():
    # W_h alone is larger than the whole of X, so any task carrying its bytes shows.
    rng = np.random.default_rng(11)
    network = random_network(rng, 60, 40, 200, 3, np.float64)
    W_h = network[2]
    assert W_h.nbytes > network[0].nbytes
    delayed = fastbp_dask.backprop(*on_dask(network, 10), l2=0.1, compute=False)
    graph = graph_of(delayed)
    heavy = [key for key, task in graph.items() if len(pickle.dumps(task)) >= W_h.nbytes]
    assert len(heavy) == 1
    (weights_key,) = heavy
    blocks = [
        k for k in graph if isinstance(k, tuple) and k[0].startswith("fastbp-backprop-block-")
    ]
    assert len(blocks) == 6
    for key in blocks + [delayed.key]:
        assert weights_key in dask.core.get_dependencies(graph, key)


def test_compute_false_returns_a_delayed_with_the_same_bits():
    network = random_network(np.random.default_rng(12), 300, 8, 6, 3, np.float32)
    delayed = fastbp_dask.backprop(*on_dask(network, 70), l2=0.4, compute=False)
    assert isinstance(delayed, Delayed)
    with local("sync"):
        now = fastbp_dask.backprop(*on_dask(network, 70), l2=0.4)
        later = delayed.compute()
        again = dask.compute(delayed)[0]
    assert same_bits(later, now) and same_bits(again, now)


def test_the_same_call_twice_gives_the_same_keys_and_inputs_are_not_modified():
    network = random_network(np.random.default_rng(13), 200, 8, 6, 3, np.float64)
    copies = [a.copy() for a in network]
    first = fastbp_dask.backprop(*on_dask(network, 70), l2=0.4, compute=False)
    second = fastbp_dask.backprop(*on_dask(network, 70), l2=0.4, compute=False)
    assert first.key == second.key
    other = fastbp_dask.backprop(*on_dask(network, 70), l2=0.5, compute=False)
    assert other.key != first.key
    with local("sync"):
        first.compute()
    for a, b in zip(network, copies):
        assert np.array_equal(a, b)


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


def arrays(n=40, m=5, d=4, t=3, chunks=10):
    network = random_network(np.random.default_rng(14), n, m, d, t, np.float64)
    X, Y, *weights = on_dask(network, chunks)
    return X, Y, weights, network


def test_arrays_in_memory_are_refused_with_a_pointer():
    X, Y, weights, network = arrays()
    pattern = r"X is a numpy\.ndarray, not a dask array.*fastbp\.backprop.*from_array"
    with pytest.raises(TypeError, match=pattern):
        fastbp_dask.backprop(network[0], Y, *weights)
    with pytest.raises(TypeError, match=r"Y is a numpy\.ndarray, not a dask array"):
        fastbp_dask.backprop(X, network[1], *weights)


@pytest.mark.parametrize(
    "change, name",
    [
        (lambda X, Y, w: (X.astype(int), Y, w), "X"),
        (lambda X, Y, w: (X, Y.astype(bool), w), "Y"),
        (lambda X, Y, w: (X.astype(np.float16), Y, w), "X"),
        (lambda X, Y, w: (X, Y, [w[0].astype(np.int32), *w[1:]]), "W_h"),
        (lambda X, Y, w: (X, Y, [*w[:3], w[3].astype(complex)]), "b_out"),
    ],
)
def test_bad_dtypes_name_the_argument(change, name):
    X, Y, weights, _ = arrays()
    X, Y, weights = change(X, Y, weights)
    with pytest.raises(TypeError, match=rf"^{name} has dtype .*; expected float32 or float64"):
        fastbp_dask.backprop(X, Y, *weights)


@pytest.mark.parametrize(
    "change, pattern",
    [
        (lambda X, Y, w: (X[:, 0], Y, w), r"X must be 2-D, got a 1-D dask array of shape \(40,\)"),
        (lambda X, Y, w: (X, Y[None], w), r"Y must be 2-D, got a 3-D"),
        (
            lambda X, Y, w: (X[:, :4], Y, w),
            r"columns \(m\) of X \(4\) must equal rows \(m\) of W_h \(5\)",
        ),
        (
            lambda X, Y, w: (X, Y[:, :2], w),
            r"columns \(t\) of Y \(2\) must equal columns \(t\) of W_out \(3\)",
        ),
        (lambda X, Y, w: (X, Y, [w[0], w[1][:3], *w[2:]]), r"W_h.*b_h"),
        (lambda X, Y, w: (X, Y, [*w[:2], w[2][:3], w[3]]), r"W_h.*W_out"),
        (lambda X, Y, w: (X, Y, [*w[:3], w[3][:2]]), r"W_out.*b_out"),
        (lambda X, Y, w: (X, Y, [w[0][0], *w[1:]]), r"W_h must be 2-D"),
        (
            lambda X, Y, w: (X[:30], Y, w),
            r"rows \(n\) of X \(30\) must equal rows \(n\) of Y \(40\)",
        ),
    ],
)
def test_bad_shapes_name_the_arguments(change, pattern):
    X, Y, weights, _ = arrays()
    X, Y, weights = change(X, Y, weights)
    with pytest.raises(ValueError, match=pattern):
        fastbp_dask.backprop(X, Y, *weights)


def test_different_row_chunks_are_refused_with_both_chunkings():
    X, Y, weights, _ = arrays()
    with pytest.raises(ValueError) as error:
        fastbp_dask.backprop(X, Y.rechunk({0: 20}), *weights)
    message = str(error.value)
    assert "(10, 10, 10, 10)" in message and "(20, 20)" in message
    assert "Y = Y.rechunk({0: X.chunks[0]})" in message and "X = X.rechunk(" in message
    # long chunkings are abbreviated, with the number of blocks
    X, Y, weights, _ = arrays(n=400)
    with pytest.raises(ValueError, match=r"\(10, 10, 10, 10, 10, …, 10; 40 blocks\)"):
        fastbp_dask.backprop(X, Y.rechunk({0: 100}), *weights)


def test_several_chunks_across_the_columns_are_refused():
    X, Y, weights, _ = arrays()
    pattern = r"X has 3 chunks across its 5 columns \(2, 2, 1\).*X = X\.rechunk\(\{1: -1\}\)"
    with pytest.raises(ValueError, match=pattern):
        fastbp_dask.backprop(X.rechunk({1: 2}), Y, *weights)
    pattern = r"Y has 2 chunks across its 3 columns.*Y\.rechunk\(\{1: -1\}\)"
    with pytest.raises(ValueError, match=pattern):
        fastbp_dask.backprop(X, Y.rechunk({1: 2}), *weights)


def test_unknown_chunk_sizes_are_refused_with_the_fix():
    X, Y, weights, _ = arrays()
    keep = X[:, 0] > 0.5  # boolean indexing: row counts unknown until computed
    X_unknown, Y_unknown = X[keep], Y[keep]
    assert np.isnan(X_unknown.shape[0])
    pattern = (
        r"X has unknown chunk sizes \(NaN\).*to_dask_array\(\)"
        r".*X\.compute_chunk_sizes\(\).*lengths=True"
    )
    with pytest.raises(ValueError, match=pattern):
        fastbp_dask.backprop(X_unknown, Y_unknown, *weights)
    # and the fix works
    with local("sync"):
        result = fastbp_dask.backprop(
            X_unknown.compute_chunk_sizes(), Y_unknown.compute_chunk_sizes(), *weights
        )
    network = [np.asarray(a) for a in (X, Y)]
    rows = network[0][:, 0] > 0.5
    within_bound(result, (network[0][rows], network[1][rows], *weights), 0.0, np.float64)


def test_unknown_chunk_sizes_from_a_dataframe():
    dd = pytest.importorskip("dask.dataframe")
    pd = pytest.importorskip("pandas")
    X, Y, weights, network = arrays()
    frame = dd.from_pandas(pd.DataFrame(network[0]), npartitions=3)
    with pytest.raises(ValueError, match=r"X has unknown chunk sizes.*lengths=True"):
        fastbp_dask.backprop(frame.to_dask_array(), Y, *weights)


@pytest.mark.parametrize(
    "options, error, pattern",
    [
        ({"l2": -1.0}, ValueError, "l2"),
        ({"l2": float("nan")}, ValueError, "l2"),
        ({"l2": "big"}, TypeError, "l2"),
        ({"split_every": 1}, ValueError, "split_every must be at least 2"),
        ({"split_every": 0}, ValueError, "split_every"),
        ({"split_every": 2.5}, TypeError, "split_every"),
        ({"split_every": True}, TypeError, "split_every"),
    ],
)
def test_bad_options(options, error, pattern):
    X, Y, weights, _ = arrays()
    with pytest.raises(error, match=pattern):
        fastbp_dask.backprop(X, Y, *weights, **options)


def test_a_block_that_breaks_its_promised_shape_is_reported():
    X, Y, weights, network = arrays()
    lying = da.from_delayed(dask.delayed(network[0][:35]), shape=(40, 5), dtype=np.float64)
    pattern = r"block of X has shape \(35, 5\).*\(40, 5\)"
    with local("sync"), pytest.raises(ValueError, match=pattern):
        fastbp_dask.backprop(lying, Y.rechunk({0: -1}), *weights)


# --------------------------------------------------------------------------
# The same bits on every scheduler
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cases():
    """Calls covering several blocks, an empty one, one block, float32, promotion, split_every."""
    rng = np.random.default_rng(15)
    f64 = random_network(rng, 700, 20, 12, 4, np.float64)
    f32 = random_network(rng, 700, 20, 12, 4, np.float32)
    mixed = (f32[0], f32[1]) + f64[2:]
    return [
        (on_dask(f64, 100), {"l2": 0.3}),
        (on_dask(f32, (250, 1, 0, 200, 249)), {"split_every": 2}),
        (on_dask(f64, 700), {}),
        (on_dask(mixed, 300), {"l2": 0.1, "split_every": 3}),
    ]


@pytest.fixture(scope="module")
def references(cases):
    with local("sync"):
        return [fastbp_dask.backprop(*args, **options) for args, options in cases]


def compute_cases(cases, **compute_options):
    delayed = [fastbp_dask.backprop(*args, **options, compute=False) for args, options in cases]
    return dask.compute(*delayed, **compute_options)


@pytest.mark.parametrize(
    "scheduler, options",
    [("sync", {}), ("threads", {"num_workers": 2}), ("processes", {"num_workers": 2})],
)
def test_local_schedulers_give_the_same_bits(cases, references, scheduler, options):
    with local(scheduler, **options):
        results = compute_cases(cases)
        now = fastbp_dask.backprop(*cases[0][0], **cases[0][1])
    for result, reference in zip(results, references):
        assert same_bits(result, reference)
    assert same_bits(now, references[0])


CLUSTERS = [
    (processes, n_workers, threads)
    for processes in (True, False)
    for n_workers in (1, 2)
    for threads in (1, 2)
]


def start_cluster(processes, n_workers, threads):
    options = {"host": "127.0.0.1"} if processes else {}  # in-process clusters talk inproc://
    return distributed.LocalCluster(
        processes=processes,
        n_workers=n_workers,
        threads_per_worker=threads,
        dashboard_address=":0",  # any free port: never a clash with another cluster
        **options,
    )


@pytest.fixture(
    scope="module",
    params=CLUSTERS,
    ids=lambda c: f"{'processes' if c[0] else 'in-process'}-{c[1]}x{c[2]}",
)
def client(request):
    with start_cluster(*request.param) as cluster, distributed.Client(cluster) as client:
        yield client


def test_distributed_clusters_give_the_same_bits(client, cases, references):
    with distributed.get_task_stream(client) as stream:
        results = compute_cases(cases)
        now = fastbp_dask.backprop(*cases[0][0], **cases[0][1])  # compute=True: the Client's
    for result, reference in zip(results, references):
        assert same_bits(result, reference)
    assert same_bits(now, references[0])
    ran = [task["key"] for task in stream.data]
    assert any("fastbp-backprop-block-" in str(key) for key in ran)  # on the cluster's workers


@pytest.fixture(scope="module")
def in_process_client():
    with start_cluster(False, 2, 1) as cluster, distributed.Client(cluster) as client:
        yield client


def test_a_retried_task_changes_no_bits(in_process_client, cases, references, tmp_path):
    marker = str(tmp_path / "failed-once")

    def fail_once(block, block_info=None):
        if block_info[None]["chunk-location"][0] == 3 and not os.path.exists(marker):
            open(marker, "x").close()
            raise RuntimeError("a transient failure")
        return block

    (X, Y, *weights), options = cases[0]
    flaky = X.map_blocks(fail_once, dtype=X.dtype)
    delayed = fastbp_dask.backprop(flaky, Y, *weights, **options, compute=False)
    (result,) = dask.compute(delayed, retries=1)
    assert os.path.exists(marker)
    assert same_bits(result, references[0])


@pytest.fixture(scope="module")
def killable_client():
    # One worker process: whatever it held when it died is lost, and must be
    # computed again.  Two threads: one to compute while the other waits to kill.
    with start_cluster(True, 1, 2) as cluster, distributed.Client(cluster) as client:
        yield client


def test_a_worker_killed_mid_computation_changes_no_bits(
    killable_client, cases, references, tmp_path
):
    """The task that loads the last block of X kills its worker process the first time it runs.

    It waits until the worker holds some blocks' partial results (and the
    scheduler knows), then kills the process.  The nanny starts a new worker, and the scheduler
    runs the killed task again and recomputes the lost partials: every task
    is a pure function of its inputs, so the bits do not change.
    """
    client = killable_client
    (pid_before,) = client.run(os.getpid).values()
    marker = str(tmp_path / "killed-once")

    def kill_once(block, block_info=None):
        location, (n_blocks, _) = block_info[None]["chunk-location"], block_info[None]["num-chunks"]
        if location[0] == n_blocks - 1 and not os.path.exists(marker):
            worker = distributed.get_worker()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not any(
                "fastbp-backprop-block-" in str(key) for key in list(worker.data)
            ):
                time.sleep(0.01)
            time.sleep(1.0)  # and until the scheduler has heard that they are done
            open(marker, "x").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return block

    (X, Y, *weights), options = cases[0]
    n_blocks = X.numblocks[0]
    deadly = X.map_blocks(kill_once, dtype=X.dtype)
    with distributed.get_task_stream(client) as stream:
        result = fastbp_dask.backprop(deadly, Y, *weights, **options)
    assert os.path.exists(marker)
    assert same_bits(result, references[0])
    client.wait_for_workers(1, timeout=60)
    (pid_after,) = client.run(os.getpid).values()
    assert pid_after != pid_before  # the worker process was replaced
    blocks_run = sum("fastbp-backprop-block-" in str(task["key"]) for task in stream.data)
    assert blocks_run > n_blocks  # some partials were lost with it and computed again
