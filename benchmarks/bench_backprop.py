"""One training step, cost and all four gradients.

``fastbp.backprop`` against the book's NumPy step.
"""

import fastbp

from .common import (
    DTYPES,
    STEP_SHAPES,
    THREADS,
    ThreadedBenchmark,
    dataset,
    measured_seconds,
    numpy_backprop_step,
    parse_shape,
    step_flops,
)


class BackpropStep(ThreadedBenchmark):
    """Forward pass, cost, δ_out, δ_h and the four gradients, at (n, m, d, t).

    ``numpy`` is the book's step (:func:`benchmarks.common.numpy_backprop_step`).
    The ``fastbp`` side is skipped on commits without ``fastbp.backprop``.
    """

    params = [STEP_SHAPES, DTYPES, ["fastbp", "numpy"], THREADS]
    param_names = ["n_m_d_t", "dtype", "implementation", "threads"]
    timeout = 300

    def setup(self, shape, dtype, implementation, threads):
        n, m, d, t = parse_shape(shape)
        data = dataset(n, d, t, dtype, m=m)
        arrays = [data[name] for name in ("X", "Y", "W_h", "b_h", "W_out", "b_out")]
        if implementation == "numpy":
            self.call = lambda: numpy_backprop_step(*arrays)
        else:
            backprop = getattr(fastbp, "backprop", None)
            if backprop is None:
                raise NotImplementedError("this commit has no fastbp.backprop")
            self.call = lambda: backprop(*arrays, l2=0.0)
        self.flops = step_flops(n, m, d, t)
        self.enter_threads(threads)
        self.call()

    def time_step(self, shape, dtype, implementation, threads):
        self.call()

    def track_gflops(self, shape, dtype, implementation, threads):
        return self.flops / measured_seconds(self.call) / 1e9

    track_gflops.unit = "GFLOP/s"
