"""Public functions for private training: per-example gradients, their norms, DP-SGD steps.

The seed builds ∂J/∂W_out out of one term per example, a^{[i]} ⊗ δ^{[i]}
(§6), added up over the examples (§7).  Differentially private SGD
(Abadi et al., 2016) clips each example's whole gradient g_i to a norm C
before that sum and adds Gaussian noise to it.  For this network the norm
has a closed form (:mod:`fastbp._kernels_private`), so the clipped sum is
the fused step of :func:`fastbp.backprop` with row i of δ_out and δ_h
scaled by c_i = min(1, C / ‖g_i‖): one pass, no per-example gradient built.

Input rules are :func:`fastbp.backprop`'s.
"""

from collections import namedtuple

import numpy as np

from . import _kernels_epoch, _kernels_step
from ._backprop import (
    _NO_COUNTS,
    _TINY,
    _with_penalty,
    default_backprop_chunks,
    delta_h,
)
from ._core import forward, network_arrays
from ._scratch import _workspace
from ._sgd import _check_data, _check_no_aliasing, _check_weights
from ._threads import _numba_threads, _parallel_launch
from ._tuning import DELTA_H_BLOCK_HIDDEN, NOISE_BUFFER_ELEMENTS, STEP_BLOCK_EXAMPLES
from ._validate import (
    check_clipping_and_noise,
    check_eta,
    check_l2,
    check_n_threads,
    check_sample_rate,
    positive_int,
    require_equal,
    require_targets_in_unit_interval,
)

__all__ = [
    "DPBackpropResult",
    "DPEpochResult",
    "PER_EXAMPLE_GRADS_MAX_ELEMENTS",
    "PerExampleGrads",
    "dp_backprop",
    "dp_sgd_epoch",
    "per_example_grad_norms",
    "per_example_grads",
]

#: Most elements :func:`per_example_grads` builds, n · (m·d + d + d·t + t): 2**27 is 1 GiB of
#: float64.  Past it, :func:`per_example_grad_norms` gives the norms without building them.
PER_EXAMPLE_GRADS_MAX_ELEMENTS = 2**27

PerExampleGrads = namedtuple(
    "PerExampleGrads", ["grad_W_h", "grad_b_h", "grad_W_out", "grad_b_out"]
)
PerExampleGrads.__doc__ = """Each example's own gradient of the cost (no penalty).

Attributes
----------
grad_W_h : numpy.ndarray, shape (n, m, d)
    x^{[i]} ⊗ δ_h^{[i]} for each example i.
grad_b_h : numpy.ndarray, shape (n, d)
    δ_h^{[i]}.
grad_W_out : numpy.ndarray, shape (n, d, t)
    a_h^{[i]} ⊗ δ_out^{[i]}: the seed's §6 matrix, one per example.
grad_b_out : numpy.ndarray, shape (n, t)
    δ_out^{[i]}.
"""

DPBackpropResult = namedtuple(
    "DPBackpropResult", ["cost", "grad_W_h", "grad_b_h", "grad_W_out", "grad_b_out", "norms"]
)
DPBackpropResult.__doc__ = """Cost, the noisy clipped gradient sums, each example's gradient norm.

Attributes
----------
cost : numpy.float32 or numpy.float64
    J (+ the L2 penalty) on the data as given: not clipped, not private.
grad_W_h : numpy.ndarray, shape (m, d)
grad_b_h : numpy.ndarray, shape (d,)
grad_W_out : numpy.ndarray, shape (d, t)
grad_b_out : numpy.ndarray, shape (t,)
    Σ_i c_i g_i + noise (+ λW for the weights).
norms : numpy.ndarray, shape (n,)
    ‖g_i‖, each example's whole gradient before clipping.
"""


def _check_rng(rng):
    if rng is None:
        return np.random.default_rng()
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (e.g. numpy.random.default_rng(seed)) or "
            f"None, got {type(rng).__name__}"
        )
    return rng


def _chunks(n_chunks, n, m, d, t, dtype):
    if n_chunks is None:
        return default_backprop_chunks(n, m, d, t, dtype.itemsize)
    return positive_int(n_chunks, "n_chunks", or_none=True)


def _run_chunks(kernel_serial, kernel_parallel, n_chunks, n_threads, arguments):
    """A serial-and-parallel chunk kernel: serial for one chunk or one thread (same bits)."""
    if n_chunks == 1 or n_threads == 1:
        return kernel_serial(*arguments)
    with _numba_threads(n_threads) as threads:
        if threads == 1:
            return kernel_serial(*arguments)
        with _parallel_launch():
            return kernel_parallel(*arguments)


def per_example_grad_norms(X, Y, W_h, b_h, W_out, b_out, *, n_chunks=None, n_threads=None):
    """The norm of each example's whole gradient, without building any gradient.

    ‖g_i‖² = (‖x_i‖² + 1) · ‖δ_h^{[i]}‖² + (‖a_h^{[i]}‖² + 1) · ‖δ_out^{[i]}‖²
    over all four parameters (W_h, b_h, W_out, b_out), no penalty: each
    block of the fused step's forward pass and deltas, then four sums of
    squares per example.  Neither of the step's gradient products runs.

    Parameters
    ----------
    X : array_like, shape (n, m)
    Y : array_like, shape (n, t)
    W_h : array_like, shape (m, d)
    b_h : array_like, shape (d,)
    W_out : array_like, shape (d, t)
    b_out : array_like, shape (t,)
        As for :func:`fastbp.backprop`.
    n_chunks, n_threads : int, optional
        How the examples are spread over threads, as for
        :func:`fastbp.backprop`; the norms do not depend on either.

    Returns
    -------
    numpy.ndarray, shape (n,)
        ‖g_i‖ in the (promoted) dtype of the inputs.  The squares and sums
        are taken in float64 from the step's own activations and deltas,
        then rounded once; a row whose sum of squares would overflow is
        done again with scaled norms, so finite inputs give a finite norm
        (or, past the float64 range, inf).  NaN in an example's inputs
        gives NaN there; a norm past the dtype's range is inf.
    """
    X, W_h, b_h, W_out, b_out, Y = network_arrays(X, W_h, b_h, W_out, b_out, Y)
    require_targets_in_unit_interval(Y)
    n_threads = check_n_threads(n_threads)
    n, m = X.shape
    d, t = W_out.shape
    dtype = X.dtype
    n_chunks = _chunks(n_chunks, n, m, d, t, dtype)
    norms = np.zeros(n, dtype=np.float64)
    if n:
        arguments = (
            X, Y, W_h, b_h, W_out, b_out, _TINY[dtype], n_chunks,
            STEP_BLOCK_EXAMPLES, DELTA_H_BLOCK_HIDDEN, _workspace(dtype, m, d, t, 1, n_chunks),
            norms,
        )  # fmt: skip
        _run_chunks(
            _kernels_step._example_norms_serial,
            _kernels_step._example_norms_parallel,
            n_chunks,
            n_threads,
            arguments,
        )
    return norms.astype(dtype)


def per_example_grads(X, Y, W_h, b_h, W_out, b_out):
    """Each example's own gradient, materialised: for teaching, tests and small n.

    The forward pass (:func:`fastbp.forward`), δ_out = A_out − Y and
    :func:`fastbp.delta_h`, then one outer product per example and
    parameter, as the seed's §6 writes it.  Their sum over the examples is
    :func:`fastbp.backprop`'s gradient (without penalty), up to rounding.

    Parameters
    ----------
    X : array_like, shape (n, m)
    Y : array_like, shape (n, t)
    W_h : array_like, shape (m, d)
    b_h : array_like, shape (d,)
    W_out : array_like, shape (d, t)
    b_out : array_like, shape (t,)
        As for :func:`fastbp.backprop`.

    Returns
    -------
    PerExampleGrads
        ``(grad_W_h, grad_b_h, grad_W_out, grad_b_out)``, shapes (n, m, d),
        (n, d), (n, d, t), (n, t), in the (promoted) dtype of the inputs.

    Raises
    ------
    ValueError
        When the four arrays would hold more than
        :data:`PER_EXAMPLE_GRADS_MAX_ELEMENTS` elements: use
        :func:`per_example_grad_norms` (the norms, without the gradients) or
        :func:`dp_backprop` (the clipped sum) instead.
    """
    X, W_h, b_h, W_out, b_out, Y = network_arrays(X, W_h, b_h, W_out, b_out, Y)
    require_targets_in_unit_interval(Y)
    n, m = X.shape
    d, t = W_out.shape
    elements = n * (m * d + d + d * t + t)
    if elements > PER_EXAMPLE_GRADS_MAX_ELEMENTS:
        raise ValueError(
            f"per_example_grads would build {elements} elements ({n} examples × "
            f"{m * d + d + d * t + t} parameters, {elements * X.dtype.itemsize / 2**30:.1f} GiB), "
            f"more than PER_EXAMPLE_GRADS_MAX_ELEMENTS = {PER_EXAMPLE_GRADS_MAX_ELEMENTS}: use "
            "fastbp.per_example_grad_norms for the norms or fastbp.dp_backprop for the "
            "clipped sum, which build none"
        )
    A_h, A_out = forward(X, W_h, b_h, W_out, b_out)
    delta_out = A_out - Y
    delta_hidden = delta_h(delta_out, W_out, A_h)
    return PerExampleGrads(
        X[:, :, None] * delta_hidden[:, None, :],
        delta_hidden,
        A_h[:, :, None] * delta_out[:, None, :],
        delta_out,
    )


def dp_backprop(
    X,
    Y,
    W_h,
    b_h,
    W_out,
    b_out,
    *,
    max_grad_norm,
    noise_multiplier=0.0,
    rng=None,
    l2=0.0,
    n_chunks=None,
    n_threads=None,
):
    """The DP-SGD step: cost, clipped and noised gradient sums, per-example norms, in one pass.

    One compiled pass over the blocks of :func:`fastbp.backprop`: for each
    example its deltas, its gradient norm ‖g_i‖ (as
    :func:`per_example_grad_norms`), c_i = min(1, C / ‖g_i‖), and its
    contributions added with its rows of δ_out and δ_h scaled by c_i.  So
    the output layer's part is (A_h)ᵀ diag(c) δ_out
    (:func:`fastbp.grad_W_out` with ``sample_weight=c``).  Then Gaussian
    noise N(0, (σ C)²) is added to every coordinate of each of the four
    sums, drawn from ``rng`` in the order W_h, b_h, W_out, b_out (each in
    C order, float64, added in float64 and rounded once); then λW, which is
    not per example and so not clipped.

    Parameters
    ----------
    X, Y, W_h, b_h, W_out, b_out : array_like
        As for :func:`fastbp.backprop`.
    max_grad_norm : float
        C > 0, the norm each example's whole gradient (all four
        parameters) is clipped to; ``inf`` clips nothing.
    noise_multiplier : float, default 0.0
        σ ≥ 0: the noise's standard deviation is σ C.  0 adds no noise
        (the clipped sum alone); σ > 0 needs a finite C.
    rng : numpy.random.Generator, optional
        Where the noise comes from: a seeded generator reproduces it (for
        reproducibility, not security).  By default a fresh
        :func:`numpy.random.default_rng`.  Not used when σ = 0.
    l2 : float, default 0.0
        λ ≥ 0, as for :func:`fastbp.backprop`: (λ/2) Σ W² in the cost and λW
        in the weight gradients, after the noise.
    n_chunks, n_threads : int, optional
        As for :func:`fastbp.backprop`: chunks come from the shape alone and
        are added in order, so the bits do not depend on the thread count.

    Returns
    -------
    DPBackpropResult
        ``(cost, grad_W_h, grad_b_h, grad_W_out, grad_b_out, norms)``,
        shapes (), (m, d), (d,), (d, t), (t,), (n,), in the (promoted) dtype
        of the inputs.  The cost is the data's (+ penalty), as
        :func:`fastbp.backprop` computes it, and is not private.

    Notes
    -----
    Conventions: an example whose gradient is 0 (or whose norm is at most C)
    is not scaled (c_i = 1); a NaN norm leaves its example unscaled, so NaN
    propagates as in :func:`fastbp.backprop`; a norm past the float64 range
    gives c_i = 0.  With C = inf and σ = 0 the
    result has :func:`fastbp.backprop`'s bits exactly.  c_i is rounded to
    the dtype, so a clipped example's norm is C within a few units of
    roundoff.
    """
    X, W_h, b_h, W_out, b_out, Y = network_arrays(X, W_h, b_h, W_out, b_out, Y)
    require_targets_in_unit_interval(Y)
    max_grad_norm, noise_multiplier = check_clipping_and_noise(max_grad_norm, noise_multiplier)
    rng = _check_rng(rng) if noise_multiplier > 0 or rng is not None else None
    l2 = check_l2(l2)
    n_threads = check_n_threads(n_threads)
    n, m = X.shape
    d, t = W_out.shape
    dtype = X.dtype
    n_chunks = _chunks(n_chunks, n, m, d, t, dtype)
    norms = np.zeros(n, dtype=np.float64)
    arguments = (
        X, Y, W_h, b_h, W_out, b_out, _TINY[dtype], n_chunks,
        STEP_BLOCK_EXAMPLES, DELTA_H_BLOCK_HIDDEN, _workspace(dtype, m, d, t, 1, n_chunks),
        norms, max_grad_norm, _NO_COUNTS,
    )  # fmt: skip
    cost, *gradients = _run_chunks(
        _kernels_step._backprop_serial,
        _kernels_step._backprop_parallel,
        n_chunks,
        n_threads,
        arguments,
    )
    if noise_multiplier > 0:
        std = noise_multiplier * max_grad_norm
        for gradient in gradients:
            noise = rng.normal(0.0, std, size=gradient.shape)
            np.add(gradient, noise, out=gradient, casting="unsafe")
    result = _with_penalty(cost, *gradients, W_h, W_out, l2)
    return DPBackpropResult(*result, norms.astype(dtype))


DPEpochResult = namedtuple("DPEpochResult", ["cost", "batch_sizes"])
DPEpochResult.__doc__ = """What :func:`dp_sgd_epoch` reports besides the weights it updates.

Attributes
----------
cost : float
    Σ over the steps of each batch's cost J (+ (λ/2) Σ W²) at the weights
    before its update, in float64: computed on the training data, not private.
batch_sizes : numpy.ndarray of int64, shape (steps,)
    How many examples each step's Poisson sample held (possibly 0).
"""


def _poisson_steps(rng, n, sample_rate, steps, noise_size, std):
    """One group's draws, step by step: the batch (each example with probability q), then noise.

    Returns (indices, starts, noise (steps, noise_size) float64 or (steps, 0)).
    The order is :func:`dp_sgd_epoch`'s documented one, so that a loop of
    :func:`dp_backprop` calls drawing from the same generator draws alike.
    """
    starts = np.zeros(steps + 1, dtype=np.int64)
    if std == 0:
        # No noise between the batches' draws: all of them at once, the same stream.
        steps_taken, indices = np.nonzero(rng.random((steps, n)) < sample_rate)
        np.cumsum(np.bincount(steps_taken, minlength=steps), out=starts[1:])
        return indices.astype(np.int64), starts, np.empty((steps, 0))
    batches = []
    noise = np.empty((steps, noise_size))
    for s in range(steps):
        batches.append(np.flatnonzero(rng.random(n) < sample_rate))
        noise[s] = rng.normal(0.0, std, noise_size)
    np.cumsum([b.shape[0] for b in batches], out=starts[1:])
    return np.concatenate(batches).astype(np.int64), starts, noise


def dp_sgd_epoch(
    X,
    Y,
    W_h,
    b_h,
    W_out,
    b_out,
    *,
    sample_rate,
    eta,
    max_grad_norm,
    noise_multiplier,
    rng=None,
    steps=None,
    l2=0.0,
):
    """An epoch of DP-SGD with Poisson sampling, compiled, the weights updated **in place**.

    For each of ``steps`` steps, in this order of draws from ``rng``:

    1. the batch: each example of X joins independently with probability
       q = ``sample_rate`` (``rng.random(n) < q``), so batches vary in size
       and may be empty;
    2. the clipped sum Σ_i c_i g_i over the batch and the noise
       N(0, (σ C)²) on each coordinate, exactly as :func:`dp_backprop` (with
       ``l2=0``) computes and draws them;
    3. the noisy sum divided by the expected batch size q·n (not by the
       batch's own size, which would reveal it; as Opacus does), then
       W ← W − η (ĝ + λW), b ← b − η ĝ_b.

    All steps run in compiled code (the draws are made ahead, in groups of
    steps); the weights have the bits of that loop written in Python over
    :func:`dp_backprop` with ``eta``, ``l2`` and 1/(q·n) in the weights'
    dtype.

    Parameters
    ----------
    X : array_like, shape (n, m)
    Y : array_like, shape (n, t)
        The training set (Y in the weights' dtype or narrower, as for
        :func:`fastbp.sgd_epoch`).
    W_h, b_h, W_out, b_out : numpy.ndarray
        The weights, updated in place (as for :func:`fastbp.sgd_epoch`).
    sample_rate : float
        q in (0, 1]: each example's probability of joining each step.
    eta : float
        Learning rate η > 0, applied to the noisy clipped *mean* (the sum
        divided by q·n).
    max_grad_norm : float
        C > 0, the clipping norm of each example's whole gradient (inf: no
        clipping, and then no noise).
    noise_multiplier : float
        σ ≥ 0; the noise's standard deviation is σ C.
    rng : numpy.random.Generator, optional
        The source of the batches and the noise: a seeded generator
        reproduces the epoch (for reproducibility, not security).  By
        default a fresh :func:`numpy.random.default_rng`.
    steps : int, optional
        Steps in the epoch; by default round(1 / q), one pass in expectation.
    l2 : float, default 0.0
        λ ≥ 0: λW added to the weights' step, not clipped nor noised.

    Returns
    -------
    DPEpochResult
        ``(cost, batch_sizes)``: the steps' summed cost (on the training
        data, not private) and each step's batch size.

    Notes
    -----
    What the privacy accountant (:mod:`fastbp.privacy`) assumes is this
    procedure: Poisson sampling with rate q, clipping to C, noise σC, for
    the number of steps run.  Shuffling into fixed batches is not it.
    """
    weights = (W_h, b_h, W_out, b_out)
    _check_weights(weights)
    _check_no_aliasing(weights, (("X", X), ("Y", Y)), "dp_sgd_epoch")
    dtype = W_h.dtype
    m, d = W_h.shape
    t = W_out.shape[1]
    X = _check_data(X, "X", dtype)
    Y = _check_data(Y, "Y", dtype)
    require_equal("X", X.shape[1], "W_h", m, "columns (m)", "rows (m)")
    require_equal("X", X.shape[0], "Y", Y.shape[0], "rows (n)", "rows (n)")
    require_equal("Y", Y.shape[1], "W_out", t, "columns (t)", "columns (t)")
    require_targets_in_unit_interval(Y)
    sample_rate = check_sample_rate(sample_rate)  # the accountant's rule (fastbp.privacy)
    eta = check_eta(eta)
    max_grad_norm, noise_multiplier = check_clipping_and_noise(max_grad_norm, noise_multiplier)
    rng = _check_rng(rng)
    n = X.shape[0]
    if n == 0:
        raise ValueError(
            f"X has no rows (shape {X.shape}): private training needs examples to sample "
            "(the noisy sum is divided by the expected batch size q·n)"
        )
    if steps is None:
        steps = max(1, round(1 / sample_rate))
    else:
        steps = positive_int(steps, "steps", or_none=True)
    l2 = check_l2(l2)
    return _run_dp_epoch(
        X, Y, weights, sample_rate, eta, max_grad_norm, noise_multiplier, rng, steps, l2,
        _NO_COUNTS,
    )  # fmt: skip


def _run_dp_epoch(
    X, Y, weights, sample_rate, eta, max_grad_norm, noise_multiplier, rng, steps, l2, correct
):
    """:func:`dp_sgd_epoch` on checked arguments (X, Y C-contiguous in the weights' dtype).

    ``correct`` is empty, or an int64 array with a slot for every chunk a
    step may use (:data:`fastbp._tuning.STEP_MAX_CHUNKS`), which then gets
    the counts of the examples the steps classified correctly.
    """
    W_h, b_h, W_out, b_out = weights
    dtype = W_h.dtype
    m, d = W_h.shape
    t = W_out.shape[1]
    n = X.shape[0]
    work = [np.ascontiguousarray(a) for a in weights]
    noise_size = m * d + d + d * t + t
    std = noise_multiplier * max_grad_norm if noise_multiplier > 0 else 0.0  # not 0 · inf
    group = max(1, NOISE_BUFFER_ELEMENTS // (noise_size if std > 0 else max(1, n)))
    scale = 1.0 / (sample_rate * n)
    cost = 0.0
    batch_sizes = np.zeros(steps, dtype=np.int64)
    for first in range(0, steps, group):
        count = min(group, steps - first)
        indices, starts, noise = _poisson_steps(rng, n, sample_rate, count, noise_size, std)
        sizes = np.diff(starts)
        # dp_backprop's chunks for each batch size (a handful of distinct sizes per group).
        distinct, where = np.unique(sizes, return_inverse=True)
        chunk_counts = np.array(
            [default_backprop_chunks(int(b), m, d, t, dtype.itemsize) for b in distinct],
            dtype=np.int64,
        )[where]
        cost += _kernels_epoch._dp_sgd_steps(
            X, Y, indices, starts, chunk_counts, noise, *work,
            dtype.type(eta), dtype.type(l2), l2 != 0.0, l2, _TINY[dtype], max_grad_norm, scale,
            int(sizes.max()) if count else 0, int(chunk_counts.max()),
            STEP_BLOCK_EXAMPLES, DELTA_H_BLOCK_HIDDEN,
            batch_sizes[first : first + count], correct,
        )  # fmt: skip
    for original, updated in zip(weights, work):
        if updated is not original:
            np.copyto(original, updated)
    return DPEpochResult(float(cost), batch_sizes)
