"""One training step, cost and all four gradients.

``fastbp.backprop`` against the book's step in NumPy, and in PyTorch and
JAX where installed (fastbp's reference steps, :mod:`fastbp._tools.problems`).
"""

import fastbp

from .common import (
    BLAS_KERNELS,
    DTYPES,
    STEP_ARGUMENTS,
    STEP_L2,
    STEP_SHAPES,
    THREADS,
    ThreadedBenchmark,
    dataset,
    jax_or_none,
    jax_step,
    measured_seconds,
    numpy_step,
    parse_shape,
    require_blas_kernels,
    step_flops,
    torch_or_none,
    torch_step,
)


def _schedulable_cpus():
    from fastbp._tools.timing import schedulable_cpus

    return schedulable_cpus()


class BackpropStep(ThreadedBenchmark):
    """Forward pass, cost, δ_out, δ_h and the four gradients with L2 λ = 0.01, at (n, m, d, t).

    ``numpy``, ``torch`` and ``jax`` are the reference steps of ``fastbp
    bench`` (:func:`fastbp._tools.problems.numpy_step`, ``torch_step``,
    ``jax_step``).  Skipped (asv shows n/a): ``fastbp`` on commits without
    ``fastbp.backprop``; ``torch`` and ``jax`` where not installed; ``jax``
    at a thread count other than the CPUs this process may use (XLA sizes
    its pool from them and ignores the limits).  ``blas`` names the kernels
    NumPy's and SciPy's BLAS run (:data:`benchmarks.common.BLAS_KERNELS`).
    """

    params = [STEP_SHAPES, DTYPES, ["fastbp", "numpy", "torch", "jax"], THREADS, BLAS_KERNELS]
    param_names = ["n_m_d_t", "dtype", "implementation", "threads", "blas"]
    timeout = 300

    def setup(self, shape, dtype, implementation, threads, blas):
        require_blas_kernels(blas)
        n, m, d, t = parse_shape(shape)
        data = dataset(n, d, t, dtype, m=m)
        arrays = [data[name] for name in STEP_ARGUMENTS]
        torch = None
        if implementation == "numpy":
            self.call = lambda: numpy_step(*arrays, l2=STEP_L2)
        elif implementation == "torch":
            torch = torch_or_none()
            if torch is None:
                raise NotImplementedError("PyTorch is not installed")
            tensors = [torch.from_numpy(a.copy()) for a in arrays]  # torch wants writeable
            self.call = lambda: torch_step(torch, *tensors, l2=STEP_L2)
        elif implementation == "jax":
            jax = jax_or_none()
            if jax is None:
                raise NotImplementedError("JAX is not installed")
            if threads != _schedulable_cpus():
                raise NotImplementedError("JAX runs on every CPU it may, whatever the threads")
            step = jax_step(jax, l2=STEP_L2)
            X, Y, *weights = (jax.device_put(a) for a in arrays)
            self.call = lambda: jax.block_until_ready(step(tuple(weights), X, Y))
        else:
            backprop = getattr(fastbp, "backprop", None)
            if backprop is None:
                raise NotImplementedError("this commit has no fastbp.backprop")
            self.call = lambda: backprop(*arrays, l2=STEP_L2)
        self.flops = step_flops(n, m, d, t)
        self.enter_threads(threads, torch)
        self.call()

    def time_step(self, shape, dtype, implementation, threads, blas):
        self.call()

    def track_gflops(self, shape, dtype, implementation, threads, blas):
        return self.flops / measured_seconds(self.call) / 1e9

    track_gflops.unit = "GFLOP/s"
