"""∂J/∂W_out = (A_h)ᵀ δ_out: fastbp's three methods against NumPy's ``A_h.T @ delta_out``."""

import fastbp

from .common import (
    BLAS_KERNELS,
    DTYPES,
    GRAD_SHAPES,
    OUTER_MAX_MULTIPLY_ADDS,
    THREADS,
    ThreadedBenchmark,
    dataset,
    grad_flops,
    measured_seconds,
    parse_shape,
    require_blas_kernels,
)


class GradWOut(ThreadedBenchmark):
    """``fastbp.grad_W_out(A_h, delta_out, method)`` and the NumPy baseline.

    ``method="numpy"`` is the plain ``A_h.T @ delta_out`` in NumPy, so every
    fastbp figure has its baseline in the same run.  ``threads`` sets BLAS
    threads and Numba threads alike.  Skipped (asv shows n/a): ``outer`` with
    2 threads (a serial loop: the figure would repeat the 1-thread one) and
    ``outer`` above ``OUTER_MAX_MULTIPLY_ADDS`` multiply-adds (the
    4096x1024x1024 shape: about a second a call).  ``blas`` names the
    kernels NumPy's and SciPy's BLAS run (:data:`benchmarks.common.BLAS_KERNELS`).
    """

    params = [GRAD_SHAPES, DTYPES, ["outer", "blocked", "matmul", "numpy"], THREADS, BLAS_KERNELS]
    param_names = ["n_d_t", "dtype", "method", "threads", "blas"]
    timeout = 300

    def setup(self, shape, dtype, method, threads, blas):
        require_blas_kernels(blas)
        n, d, t = parse_shape(shape)
        if method == "outer" and threads > 1:
            raise NotImplementedError("outer is a serial loop: its 1-thread figure stands")
        if method == "outer" and n * d * t > OUTER_MAX_MULTIPLY_ADDS:
            raise NotImplementedError("outer takes about a second a call on this shape")
        data = dataset(n, d, t, dtype)
        A_h, delta_out = data["A_h"], data["delta_out"]
        if method == "numpy":
            self.call = lambda: A_h.T @ delta_out
        else:
            self.call = lambda: fastbp.grad_W_out(A_h, delta_out, method=method)
        self.flops = grad_flops(n, d, t)
        self.enter_threads(threads)
        self.call()  # compile (first call per dtype) outside the timings

    def time_grad_W_out(self, shape, dtype, method, threads, blas):
        self.call()

    def track_gflops(self, shape, dtype, method, threads, blas):
        return self.flops / measured_seconds(self.call) / 1e9

    track_gflops.unit = "GFLOP/s"


class GradBOut:
    """``fastbp.grad_b_out(delta_out)`` against NumPy's ``delta_out.sum(axis=0)``."""

    params = [GRAD_SHAPES, DTYPES, ["fastbp", "numpy"]]
    param_names = ["n_d_t", "dtype", "implementation"]

    def setup(self, shape, dtype, implementation):
        n, d, t = parse_shape(shape)
        delta_out = dataset(n, d, t, dtype)["delta_out"]
        if implementation == "numpy":
            self.call = lambda: delta_out.sum(axis=0)
        else:
            self.call = lambda: fastbp.grad_b_out(delta_out)
        self.call()

    def time_grad_b_out(self, shape, dtype, implementation):
        self.call()
