"""Seeded problems and the reference steps fastbp's tools time and check against.

One data maker (:func:`make_problem`) serves the main job, ``fastbp bench``,
its breakdown and ``fastbp compile``.  The reference steps are the book's
NeuralNetMLP step in NumPy, the same operations in PyTorch, and JAX's
``jit(value_and_grad)`` of the same cost; PyTorch and JAX are never
dependencies and are imported only where installed.
"""

import contextlib

import numpy as np

__all__ = [
    "STEP_ARGUMENTS",
    "jax_or_none",
    "jax_step",
    "make_problem",
    "numpy_cost",
    "numpy_forward",
    "numpy_step",
    "step_arrays",
    "torch_or_none",
    "torch_step",
    "torch_threads",
]

#: The arrays of a problem in the order ``fastbp.backprop`` takes them.
STEP_ARGUMENTS = ("X", "Y", "W_h", "b_h", "W_out", "b_out")


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


def numpy_step(X, Y, W_h, b_h, W_out, b_out):
    """The book's training step: (cost, grad_W_h, grad_b_h, grad_W_out, grad_b_out)."""
    A_h, A_out = numpy_forward(X, W_h, b_h, W_out, b_out)
    delta_out = A_out - Y
    delta_h = (delta_out @ W_out.T) * A_h * (1.0 - A_h)
    return (
        numpy_cost(A_out, Y),
        X.T @ delta_h,
        delta_h.sum(axis=0),
        A_h.T @ delta_out,
        delta_out.sum(axis=0),
    )


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


def torch_step(torch, X, Y, W_h, b_h, W_out, b_out):
    """The book's step written in torch (the operations of :func:`numpy_step`)."""
    A_h = torch.sigmoid(X @ W_h + b_h)
    A_out = torch.sigmoid(A_h @ W_out + b_out)
    cost = -torch.sum(Y * torch.log(A_out) + (1.0 - Y) * torch.log(1.0 - A_out))
    delta_out = A_out - Y
    delta_h = (delta_out @ W_out.T) * A_h * (1.0 - A_h)
    return cost, X.T @ delta_h, delta_h.sum(0), A_h.T @ delta_out, delta_out.sum(0)


def jax_or_none():
    """JAX if importable (never a dependency), else None; float64 switched on at first import."""
    try:
        import jax
    except ImportError:
        return None
    # Without x64 JAX silently computes float64 inputs in float32; float32 ones stay float32.
    jax.config.update("jax_enable_x64", True)
    return jax


def jax_step(jax):
    """The book's step in JAX: ``jax.jit(jax.value_and_grad(loss))``, gradients by autodiff.

    ``loss`` is the cost of :func:`numpy_step` (no L2 term).  The returned
    function takes ``((W_h, b_h, W_out, b_out), X, Y)`` and gives ``(cost,
    (grad_W_h, grad_b_h, grad_W_out, grad_b_out))``.
    """
    jnp = jax.numpy

    def loss(weights, X, Y):
        W_h, b_h, W_out, b_out = weights
        A_h = jax.nn.sigmoid(X @ W_h + b_h)
        A_out = jax.nn.sigmoid(A_h @ W_out + b_out)
        return -jnp.sum(Y * jnp.log(A_out) + (1.0 - Y) * jnp.log(1.0 - A_out))

    return jax.jit(jax.value_and_grad(loss))
