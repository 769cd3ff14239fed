"""``fastbp bench --training``: whole epochs, fastbp against the same loop in NumPy.

Three ways to run the same epochs from the same weights over the same
shuffled orders, timed in interleaved rounds on one thread (BLAS and Numba):

* ``sgd_epoch``: one :func:`fastbp.sgd_epoch` call per epoch;
* ``backprop loop``: the epoch in Python, :func:`fastbp.backprop` per
  minibatch and ``W -= eta * g`` (what :func:`fastbp.sgd_epoch` stands for);
* ``numpy loop``: the book's NumPy step (:func:`.problems.numpy_step`) per minibatch,
  ``g += l2 * W`` and ``W -= eta * g``.

Two workloads: the digits as ``fastbp train`` trains them (64-100-10,
minibatch 32, 200 epochs; 20 with ``--quick``) and one epoch of a synthetic
MNIST-shaped set (60000 × 784, 100 hidden, 10 outputs, minibatch 128; 6000
examples with ``--quick``).  Checks: the sgd_epoch weights equal the
backprop loop's bit for bit; the NumPy loop's are shown as the largest
difference relative to the largest weight (a trajectory, not a bound).
"""

import numpy as np

import fastbp

from ..datasets import load_digits
from .problems import numpy_step
from .timing import format_seconds, interleaved_medians, thread_limits

__all__ = ["training_section"]

#: (name, n, m, d, t, minibatch, epochs, quick n, quick epochs) of each workload.
WORKLOADS = (
    ("digits", None, 64, 100, 10, 32, 200, None, 20),
    ("synthetic, MNIST-shaped", 60000, 784, 100, 10, 128, 1, 6000, 1),
)
ETA = 0.001
L2 = 0.01


def _workload_data(n, m, t, dtype, rng):
    """X (n, m) in [0, 1) and one-hot Y: the digits when ``n`` is None, else synthetic."""
    if n is None:
        X, y = load_digits()
    else:
        X = rng.random((n, m))
        y = rng.integers(0, t, n)
    Y = np.zeros((X.shape[0], t))
    Y[np.arange(X.shape[0]), y] = 1.0
    return np.ascontiguousarray(X, dtype=dtype), Y.astype(dtype)


def _epochs_candidates(X, Y, start, orders, size):
    """{name: callable} running every epoch of ``orders`` from ``start`` (restored each call)."""
    dtype = X.dtype
    eta = dtype.type(ETA)
    l2 = dtype.type(L2)
    weights = {
        name: [w.copy() for w in start] for name in ("sgd_epoch", "backprop loop", "numpy loop")
    }

    def restore(name):
        for w, w0 in zip(weights[name], start):
            np.copyto(w, w0)
        return weights[name]

    def run_sgd_epoch():
        W = restore("sgd_epoch")
        for order in orders:
            fastbp.sgd_epoch(X, Y, *W, order, ETA, size, L2)

    def run_backprop_loop():
        W = restore("backprop loop")
        for order in orders:
            for first in range(0, len(order) - size + 1, size):
                rows = order[first : first + size]
                result = fastbp.backprop(X[rows], Y[rows], *W, L2)
                for w, g in zip(W, result[1:]):
                    w -= eta * g

    def run_numpy_loop():
        W = restore("numpy loop")
        for order in orders:
            for first in range(0, len(order) - size + 1, size):
                rows = order[first : first + size]
                _, g_W_h, g_b_h, g_W_out, g_b_out = numpy_step(X[rows], Y[rows], *W)
                g_W_h += l2 * W[0]
                g_W_out += l2 * W[2]
                for w, g in zip(W, (g_W_h, g_b_h, g_W_out, g_b_out)):
                    w -= eta * g

    calls = {
        "sgd_epoch": run_sgd_epoch,
        "backprop loop": run_backprop_loop,
        "numpy loop": run_numpy_loop,
    }
    return calls, weights


def training_section(dtypes, repeats, quick):
    """Print one table per workload and dtype; return records with their checks.

    Parameters
    ----------
    dtypes : list of str
    repeats : int
        Interleaved rounds per table.
    quick : bool
        Fewer epochs and examples (see :data:`WORKLOADS`).

    Returns
    -------
    list of dict
        One record per candidate and table, ``check`` "bitwise" or "FAIL"
        for sgd_epoch, a float (relative difference) for the NumPy loop.
    """
    print(
        "\nTraining: whole epochs from the same weights over the same shuffled orders, "
        "1 thread (BLAS 1, Numba 1); 'x NumPy' = the NumPy loop's time / this time;\n"
        f"eta = {ETA}, l2 = {L2}; sgd_epoch's weights are checked bit for bit against the "
        "backprop loop's; the NumPy loop's are a separate trajectory (largest difference "
        "relative to the largest weight)"
    )
    records = []
    for name, n, m, d, t, size, epochs, quick_n, quick_epochs in WORKLOADS:
        if quick:
            n, epochs = quick_n, quick_epochs
        for dtype in dtypes:
            rng = np.random.default_rng([7, d, t, size])
            X, Y = _workload_data(n, m, t, np.dtype(dtype), rng)
            start = (
                (0.1 * rng.standard_normal((m, d))).astype(dtype),
                np.zeros(d, dtype),
                (0.1 * rng.standard_normal((d, t))).astype(dtype),
                np.zeros(t, dtype),
            )
            orders = [rng.permutation(X.shape[0]) for _ in range(epochs)]
            calls, weights = _epochs_candidates(X, Y, start, orders, size)
            with thread_limits(1):
                medians = interleaved_medians(calls, repeats)
            same = all(
                np.array_equal(a, b) for a, b in zip(weights["sgd_epoch"], weights["backprop loop"])
            )
            scale = max(float(np.max(np.abs(w))) for w in weights["backprop loop"])
            drift = (
                max(
                    float(np.max(np.abs(a.astype(np.float64) - b)))
                    for a, b in zip(weights["numpy loop"], weights["backprop loop"])
                )
                / scale
            )
            steps = epochs * (X.shape[0] // size)
            print(
                f"\n{name}: {X.shape[0]}x{m}x{d}x{t}, minibatch {size}, {epochs} epoch(s), "
                f"{steps} steps, {dtype}"
            )
            header = f"{'implementation':<16} {'median':>10} {'per step':>10} {'x NumPy':>8}  check"
            print(header)
            print("-" * (len(header) + 12))
            checks = {
                "sgd_epoch": "bitwise" if same else "FAIL",
                "backprop loop": "reference",
                "numpy loop": drift,
            }
            for implementation, seconds in medians.items():
                speedup = medians["numpy loop"] / seconds
                check = checks[implementation]
                shown = f"{check:.2g} apart" if isinstance(check, float) else check
                print(
                    f"{implementation:<16} {format_seconds(seconds):>10} "
                    f"{format_seconds(seconds / steps):>10} {speedup:>8.2f}  {shown}"
                )
                records.append(
                    {
                        "kernel": "training",
                        "implementation": implementation,
                        "shape": f"{X.shape[0]}x{m}x{d}x{t}/{size}",
                        "dtype": dtype,
                        "seconds": seconds,
                        "speedup": speedup,
                        # A trajectory apart by more than the weights themselves is wrong.
                        "check": check if check != "reference" else "bitwise",
                    }
                )
    return records
