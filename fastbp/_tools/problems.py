"""The one home of the benchmark shapes, the seeded problems and the reference steps.

``fastbp bench`` (and its breakdown and training sections), the main job,
``fastbp compile`` and the asv suite in ``benchmarks/`` all take from here:
the shapes (:data:`GRAD_SHAPES`, :data:`STEP_SHAPES`), the seeded data
(:func:`make_problem`, :func:`output_layer_problem`), the operation counts
behind every GFLOP/s, and the reference steps: the book's NeuralNetMLP step
in NumPy, the same operations in PyTorch, and JAX's ``jit(value_and_grad)``
of the same cost, each with the L2 term of ``fastbp.backprop(..., l2)``.
PyTorch and JAX are never dependencies and are imported only where installed.
"""

import contextlib

import numpy as np

__all__ = [
    "GRAD_SHAPES",
    "OUTER_MAX_MULTIPLY_ADDS",
    "STEP_ARGUMENTS",
    "STEP_L2",
    "STEP_SHAPES",
    "forward_flops",
    "grad_flops",
    "input_width",
    "jax_or_none",
    "jax_step",
    "make_problem",
    "numpy_cost",
    "numpy_forward",
    "numpy_sgd_epoch",
    "numpy_step",
    "output_layer_problem",
    "parse_shape",
    "step_arrays",
    "step_flops",
    "torch_or_none",
    "torch_step",
    "torch_threads",
]

#: The arrays of a problem in the order ``fastbp.backprop`` takes them.
STEP_ARGUMENTS = ("X", "Y", "W_h", "b_h", "W_out", "b_out")

# --------------------------------------------------------------------------
# Shapes and operation counts
# --------------------------------------------------------------------------

#: (n, d, t) of the gradient sweep: the seed's MNIST network on a mini-batch,
#: a larger batch and the whole training set, then a wide and a square layer.
GRAD_SHAPES = ("100x100x10", "1000x100x10", "60000x100x10", "10000x512x64", "4096x1024x1024")

#: (n, m, d, t) of the fused training step: minibatches of the digits' 64-input
#: network and of MNIST's 784-input one, a batch and the whole MNIST set, a wide layer.
STEP_SHAPES = (
    "32x64x100x10",
    "128x64x100x10",
    "256x64x100x10",
    "32x784x100x10",
    "100x784x100x10",
    "128x784x100x10",
    "256x784x100x10",
    "1000x784x100x10",
    "60000x784x100x10",
    "10000x64x512x64",
)

#: λ of the timed step, as ``fastbp train`` trains: every implementation adds
#: (λ/2)(ΣW_h² + ΣW_out²) to the cost and λW to the weights' gradients.
STEP_L2 = 0.01

#: Above this many multiply-adds (n·d·t) the per-example ``outer`` loop takes
#: about a second a call, and the benchmarks leave it out.
OUTER_MAX_MULTIPLY_ADDS = 10**9


def parse_shape(shape):
    """``"1000x100x10"`` -> ``(1000, 100, 10)``."""
    return tuple(int(size) for size in shape.split("x"))


def input_width(d):
    """Inputs m of the forward pass for an (n, d, t) gradient shape.

    m = 784 (MNIST's 28 × 28 pixels) for the seed's d = 100 network, and
    m = d otherwise (a square hidden layer).
    """
    return 784 if d == 100 else d


# Floating-point operations behind every GFLOP/s: 2 per multiply-add of the
# matrix products; elementwise work (sigmoid, logs) is not counted.


def grad_flops(n, d, t):
    """(A_h)ᵀ δ_out: n·d·t multiply-adds."""
    return 2 * n * d * t


def forward_flops(n, m, d, t):
    """X W_h and A_h W_out."""
    return 2 * n * (m * d + d * t)


def step_flops(n, m, d, t):
    """Forward (2nmd + 2ndt), δ_out W_outᵀ (2ndt), Xᵀ δ_h (2nmd), A_hᵀ δ_out (2ndt)."""
    return 4 * n * m * d + 6 * n * d * t


# --------------------------------------------------------------------------
# Seeded data
# --------------------------------------------------------------------------


def make_problem(n, m, d, t, dtype, seed=0):
    """A seeded synthetic network: inputs, one-hot targets, weights scaled by 1/sqrt(fan-in).

    Parameters
    ----------
    n, m, d, t : int
        Examples, inputs, hidden units, outputs (any may be 0).
    dtype : str or numpy dtype
        float32 or float64.
    seed : int, default 0
        Mixed with the shape, so two shapes never share a stream.

    Returns
    -------
    dict of str to numpy.ndarray
        ``X`` (n, m) uniform in [0, 1), ``Y`` (n, t) one-hot, ``W_h`` (m, d)
        and ``W_out`` (d, t) standard normal over sqrt(fan-in), ``b_h`` (d,)
        and ``b_out`` (t,) N(0, 0.1²); all C-contiguous in ``dtype``.
    """
    rng = np.random.default_rng([seed, n, m, d, t])
    Y = np.zeros((n, t))
    if t > 0:
        Y[np.arange(n), rng.integers(0, t, n)] = 1.0
    arrays = {
        "X": rng.random((n, m)),
        "Y": Y,
        "W_h": rng.standard_normal((m, d)) / np.sqrt(max(m, 1)),
        "b_h": 0.1 * rng.standard_normal(d),
        "W_out": rng.standard_normal((d, t)) / np.sqrt(max(d, 1)),
        "b_out": 0.1 * rng.standard_normal(t),
    }
    return {name: np.ascontiguousarray(value, dtype=dtype) for name, value in arrays.items()}


def output_layer_problem(n, d, t, dtype, seed=0):
    """A seeded output layer alone, for the gradient kernels: no inputs, no weights.

    Cheaper than :func:`make_problem` followed by a forward pass where only
    the output layer is timed (MNIST's X alone is 60000 × 784).

    Parameters
    ----------
    n, d, t : int
        Examples, hidden units, outputs.
    dtype : str or numpy dtype
        float32 or float64.
    seed : int, default 0
        Mixed with the shape.

    Returns
    -------
    dict of str to numpy.ndarray
        ``A_h`` (n, d) uniform in [0, 1), ``A_out`` (n, t) uniform in
        [0.01, 0.99), ``Y`` (n, t) one-hot and ``delta_out = A_out - Y``
        (n, t), C-contiguous in ``dtype``.
    """
    rng = np.random.default_rng([seed, n, d, t, 1])
    Y = np.zeros((n, t))
    if t > 0:
        Y[np.arange(n), rng.integers(0, t, n)] = 1.0
    arrays = {"A_h": rng.random((n, d)), "A_out": rng.uniform(0.01, 0.99, (n, t)), "Y": Y}
    arrays = {name: np.ascontiguousarray(value, dtype=dtype) for name, value in arrays.items()}
    arrays["delta_out"] = arrays["A_out"] - arrays["Y"]
    return arrays


def step_arrays(problem):
    """The arrays of ``problem`` as a tuple in :data:`STEP_ARGUMENTS` order."""
    return tuple(problem[name] for name in STEP_ARGUMENTS)


# --------------------------------------------------------------------------
# The book's step in NumPy
# --------------------------------------------------------------------------


def _sigmoid(Z):
    """The book's sigmoid, clipped so np.exp never overflows."""
    return 1.0 / (1.0 + np.exp(-np.clip(Z, -250, 250)))


def numpy_forward(X, W_h, b_h, W_out, b_out):
    """The book's NeuralNetMLP forward pass: (A_h, A_out)."""
    A_h = _sigmoid(X @ W_h + b_h)
    return A_h, _sigmoid(A_h @ W_out + b_out)


def numpy_cost(A_out, Y):
    """The logistic cost J, summed over examples and outputs."""
    return -np.sum(Y * np.log(A_out) + (1.0 - Y) * np.log(1.0 - A_out))


def numpy_step(X, Y, W_h, b_h, W_out, b_out, l2=0.0):
    """The book's training step: (cost, grad_W_h, grad_b_h, grad_W_out, grad_b_out).

    With ``l2`` = λ > 0, the cost gains (λ/2)(ΣW_h² + ΣW_out²) and the
    weights' gradients λW_h and λW_out, as in ``fastbp.backprop(..., l2)``;
    with λ = 0 nothing is added (the same bits as the plain step).
    """
    A_h, A_out = numpy_forward(X, W_h, b_h, W_out, b_out)
    delta_out = A_out - Y
    delta_h = (delta_out @ W_out.T) * A_h * (1.0 - A_h)
    cost, grad_W_h, grad_W_out = numpy_cost(A_out, Y), X.T @ delta_h, A_h.T @ delta_out
    if l2:
        cost = cost + 0.5 * l2 * (np.sum(W_h * W_h) + np.sum(W_out * W_out))
        grad_W_h = grad_W_h + l2 * W_h
        grad_W_out = grad_W_out + l2 * W_out
    return cost, grad_W_h, delta_h.sum(axis=0), grad_W_out, delta_out.sum(axis=0)


def numpy_sgd_epoch(X, Y, W_h, b_h, W_out, b_out, order, eta, minibatch_size, l2=0.0):
    """The book's epoch in NumPy: for each full minibatch of ``order``, the step, then the update.

    The same contract as ``fastbp.sgd_epoch``: the weights are updated in
    place, the result is the sum of the steps' costs, each with its
    (λ/2)(ΣW_h² + ΣW_out²) at the weights before its update.
    """
    epoch_cost = 0.0
    for start in range(0, len(order) - minibatch_size + 1, minibatch_size):
        rows = order[start : start + minibatch_size]
        cost, grad_W_h, grad_b_h, grad_W_out, grad_b_out = numpy_step(
            X[rows], Y[rows], W_h, b_h, W_out, b_out, l2=l2
        )
        epoch_cost += float(cost)  # summed as a Python float, as sgd_epoch sums its steps
        W_h -= eta * grad_W_h
        b_h -= eta * grad_b_h
        W_out -= eta * grad_W_out
        b_out -= eta * grad_b_out
    return epoch_cost


# --------------------------------------------------------------------------
# PyTorch and JAX, where installed
# --------------------------------------------------------------------------


def torch_or_none():
    """PyTorch if importable (never a dependency), else None."""
    try:
        import torch
    except ImportError:
        return None
    return torch


@contextlib.contextmanager
def torch_threads(torch, n_threads):
    """Run the body with ``n_threads`` PyTorch threads (restored afterwards)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def torch_step(torch, X, Y, W_h, b_h, W_out, b_out, l2=0.0):
    """The book's step written in torch (the operations of :func:`numpy_step`, ``l2`` alike)."""
    A_h = torch.sigmoid(X @ W_h + b_h)
    A_out = torch.sigmoid(A_h @ W_out + b_out)
    cost = -torch.sum(Y * torch.log(A_out) + (1.0 - Y) * torch.log(1.0 - A_out))
    delta_out = A_out - Y
    delta_h = (delta_out @ W_out.T) * A_h * (1.0 - A_h)
    grad_W_h, grad_W_out = X.T @ delta_h, A_h.T @ delta_out
    if l2:
        cost = cost + 0.5 * l2 * (torch.sum(W_h * W_h) + torch.sum(W_out * W_out))
        grad_W_h = grad_W_h + l2 * W_h
        grad_W_out = grad_W_out + l2 * W_out
    return cost, grad_W_h, delta_h.sum(0), grad_W_out, delta_out.sum(0)


def jax_or_none():
    """JAX if importable (never a dependency), else None; float64 switched on at first import."""
    try:
        import jax
    except ImportError:
        return None
    # Without x64 JAX silently computes float64 inputs in float32; float32 ones stay float32.
    jax.config.update("jax_enable_x64", True)
    return jax


def jax_step(jax, l2=0.0):
    """The book's step in JAX: ``jax.jit`` of ``jax.value_and_grad(loss)``, gradients by autodiff.

    ``loss`` is the cost of :func:`numpy_step`; the L2 term of ``l2`` is
    added to the cost and the weights' gradients after the autodiff, inside
    the same jitted function (one compiled step, as fastbp's).  The
    returned function takes ``((W_h, b_h, W_out, b_out), X, Y)`` and gives
    ``(cost, (grad_W_h, grad_b_h, grad_W_out, grad_b_out))``.
    """
    jnp = jax.numpy

    def loss(weights, X, Y):
        W_h, b_h, W_out, b_out = weights
        A_h = jax.nn.sigmoid(X @ W_h + b_h)
        A_out = jax.nn.sigmoid(A_h @ W_out + b_out)
        return -jnp.sum(Y * jnp.log(A_out) + (1.0 - Y) * jnp.log(1.0 - A_out))

    value_and_grad = jax.value_and_grad(loss)

    def step(weights, X, Y):
        cost, (grad_W_h, grad_b_h, grad_W_out, grad_b_out) = value_and_grad(weights, X, Y)
        if l2:  # a Python float: decided when the step is traced
            W_h, _, W_out, _ = weights
            cost = cost + 0.5 * l2 * (jnp.sum(W_h * W_h) + jnp.sum(W_out * W_out))
            grad_W_h = grad_W_h + l2 * W_h
            grad_W_out = grad_W_out + l2 * W_out
        return cost, (grad_W_h, grad_b_h, grad_W_out, grad_b_out)

    return jax.jit(step)
