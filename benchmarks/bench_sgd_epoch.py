"""One epoch of minibatch gradient descent: ``fastbp.sgd_epoch`` against the book's NumPy loop.

The ``fastbp`` side is skipped on commits without ``fastbp.sgd_epoch``; the
digits shape needs ``fastbp.datasets`` (both sides are skipped without it).
"""

import numpy as np

import fastbp
from fastbp._tools.problems import numpy_sgd_epoch

from .common import (
    BLAS_KERNELS,
    DTYPES,
    ThreadedBenchmark,
    dataset,
    measured_seconds,
    parse_shape,
    require_blas_kernels,
    step_flops,
)

#: (n, m, d, t) of an epoch → (its data, examples per minibatch, learning rate η):
#: the shipped digits as ``fastbp train`` runs them (its default η), and an
#: MNIST-wide synthetic set, with an η small enough for 784 inputs summed over
#: 128 examples that no sigmoid saturates within the epoch (0.02 overflows np.exp).
EPOCHS = {
    "1797x64x100x10": ("digits", 32, 0.02),
    "6000x784x100x10": ("synthetic", 128, 0.001),
}

#: L2 penalty λ of ``fastbp train``'s defaults (so the L2 path is timed too).
L2 = 0.01


def epoch_data(shape, dtype):
    """Inputs, one-hot targets, starting weights and a seeded order for one epoch.

    Returns
    -------
    tuple
        ``(X, Y, weights, order, minibatch_size, eta)``: ``X`` (n, m) and
        ``Y`` (n, t) read-only, ``weights`` the read-only starting ``(W_h,
        b_h, W_out, b_out)``, ``order`` a permutation of ``range(n)`` in int64.

    Raises
    ------
    NotImplementedError
        For the digits on a commit without ``fastbp.datasets`` (asv skips).
    """
    n, m, d, t = parse_shape(shape)
    source, minibatch_size, eta = EPOCHS[shape]
    data = dataset(n, d, t, dtype, m=m)
    X, Y = data["X"], data["Y"]
    if source == "digits":
        try:
            from fastbp.datasets import load_digits
        except ImportError:
            raise NotImplementedError("this commit ships no digits (fastbp.datasets)") from None
        pixels, labels = load_digits()
        X = np.ascontiguousarray(pixels, dtype=dtype)
        Y = np.eye(t, dtype=dtype)[labels]
    weights = tuple(data[name] for name in ("W_h", "b_h", "W_out", "b_out"))
    order = np.random.default_rng([n, m, 1]).permutation(n).astype(np.int64)
    return X, Y, weights, order, minibatch_size, eta


class SgdEpoch(ThreadedBenchmark):
    """A whole epoch, every full minibatch of a fixed order, weights updated in place.

    Shapes (n, m, d, t): the digits, 1797×64×100×10 in minibatches of 32,
    and a synthetic 6000×784×100×10 in minibatches of 128 (η in
    :data:`EPOCHS`, λ of ``fastbp train``).  ``numpy`` is
    :func:`numpy_sgd_epoch`.  One thread (BLAS and Numba): ``sgd_epoch``
    runs its steps on the calling thread, so NumPy gets one BLAS thread too.
    ``blas`` names the kernels NumPy's and SciPy's BLAS run
    (:data:`benchmarks.common.BLAS_KERNELS`).
    """

    params = [list(EPOCHS), DTYPES, ["fastbp", "numpy"], BLAS_KERNELS]
    param_names = ["n_m_d_t", "dtype", "implementation", "blas"]
    timeout = 300

    def setup(self, shape, dtype, implementation, blas):
        require_blas_kernels(blas)
        if implementation == "fastbp":
            epoch = getattr(fastbp, "sgd_epoch", None)
            if epoch is None:
                raise NotImplementedError("this commit has no fastbp.sgd_epoch")
        else:
            epoch = numpy_sgd_epoch
        X, Y, start, order, minibatch_size, eta = epoch_data(shape, dtype)
        weights = [np.array(w) for w in start]  # writeable copies the epoch updates
        # asv calls the timed function many times per setup (warm-up, `number`), so
        # every call restores the starting weights first: each times the same epoch,
        # never one on weights drifted by earlier calls.  The four copies (about 0.1 %
        # of an epoch) are included, alike for both implementations.

        def call():
            for weight, first in zip(weights, start):
                np.copyto(weight, first)
            return epoch(X, Y, *weights, order, eta, minibatch_size, l2=L2)

        self.call = call
        n, m, d, t = parse_shape(shape)
        self.flops = (len(order) // minibatch_size) * step_flops(minibatch_size, m, d, t)
        self.enter_threads(1)
        self.call()

    def time_epoch(self, shape, dtype, implementation, blas):
        self.call()

    def track_gflops(self, shape, dtype, implementation, blas):
        return self.flops / measured_seconds(self.call) / 1e9

    track_gflops.unit = "GFLOP/s"
