"""Forward pass, output error and cost: fastbp against the book's NumPy code."""

import fastbp

from .common import (
    BLAS_KERNELS,
    DTYPES,
    GRAD_SHAPES,
    THREADS,
    ThreadedBenchmark,
    dataset,
    forward_flops,
    input_width,
    measured_seconds,
    numpy_cost,
    numpy_forward,
    parse_shape,
    require_blas_kernels,
)


class Forward(ThreadedBenchmark):
    """``fastbp.forward`` against the NumPy forward pass (``numpy_forward``).

    The gradient shapes (n, d, t) with m inputs: m = 784 for the d = 100
    shapes (the seed's MNIST network), m = d otherwise.  Both sides call BLAS
    for the two matrix products, so ``threads`` sets BLAS and Numba threads,
    and ``blas`` names the kernels NumPy's and SciPy's BLAS run
    (:data:`benchmarks.common.BLAS_KERNELS`).
    """

    params = [GRAD_SHAPES, DTYPES, ["fastbp", "numpy"], THREADS, BLAS_KERNELS]
    param_names = ["n_d_t", "dtype", "implementation", "threads", "blas"]
    timeout = 300

    def setup(self, shape, dtype, implementation, threads, blas):
        require_blas_kernels(blas)
        n, d, t = parse_shape(shape)
        m = input_width(d)
        data = dataset(n, d, t, dtype, m=m)
        arrays = [data[name] for name in ("X", "W_h", "b_h", "W_out", "b_out")]
        function = numpy_forward if implementation == "numpy" else fastbp.forward
        self.call = lambda: function(*arrays)
        self.flops = forward_flops(n, m, d, t)
        self.enter_threads(threads)
        self.call()

    def time_forward(self, shape, dtype, implementation, threads, blas):
        self.call()

    def track_gflops(self, shape, dtype, implementation, threads, blas):
        return self.flops / measured_seconds(self.call) / 1e9

    track_gflops.unit = "GFLOP/s"


class OutputLayer:
    """``fastbp.delta_out`` and ``fastbp.cost`` against NumPy.

    Serial, memory-bound kernels: no thread parameter.  GFLOP/s counts one
    operation per element for δ_out (a subtraction) and five for the cost
    (two subtractions, two products, one sum; the logarithms not counted).
    """

    params = [GRAD_SHAPES, DTYPES, ["fastbp", "numpy"]]
    param_names = ["n_d_t", "dtype", "implementation"]

    def setup(self, shape, dtype, implementation):
        n, d, t = parse_shape(shape)
        data = dataset(n, d, t, dtype)
        A_out, Y = data["A_out"], data["Y"]
        if implementation == "numpy":
            self.delta_out = lambda: A_out - Y
            self.cost = lambda: numpy_cost(A_out, Y)
        else:
            self.delta_out = lambda: fastbp.delta_out(A_out, Y)
            self.cost = lambda: fastbp.cost(A_out, Y)
        self.elements = n * t
        self.delta_out()
        self.cost()

    def time_delta_out(self, shape, dtype, implementation):
        self.delta_out()

    def time_cost(self, shape, dtype, implementation):
        self.cost()

    def track_delta_out_gflops(self, shape, dtype, implementation):
        return self.elements / measured_seconds(self.delta_out) / 1e9

    track_delta_out_gflops.unit = "GFLOP/s"

    def track_cost_gflops(self, shape, dtype, implementation):
        return 5 * self.elements / measured_seconds(self.cost) / 1e9

    track_cost_gflops.unit = "GFLOP/s"
