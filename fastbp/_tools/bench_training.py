"""``fastbp bench --training``: whole epochs, fastbp against the same loop in NumPy.

Three ways to run the same epochs from the same weights over the same
shuffled orders, timed in interleaved rounds on one thread (BLAS and Numba):

* ``sgd_epoch``: one :func:`fastbp.sgd_epoch` call per epoch;
* ``backprop loop``: the epoch in Python, :func:`fastbp.backprop` per
  minibatch and ``W -= eta * g`` (what :func:`fastbp.sgd_epoch` stands for);
* ``numpy loop``: the book's NumPy step with its L2 term per minibatch and
  ``W -= eta * g`` (:func:`.problems.numpy_sgd_epoch`, the asv suite's too).

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
from .problems import numpy_sgd_epoch
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
            numpy_sgd_epoch(X, Y, *W, order, eta, size, l2)

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


#: The estimator comparison: ``fastbp train``'s network, minibatch and seed, its step
#: (η = 0.02 on minibatch sums, l2 = 0.01) in scikit-learn's scaling: learning_rate_init = 0.02 × 32
#: on minibatch means, alpha = 0.01.
ESTIMATOR_SETTINGS = {
    "hidden": 100,
    "batch_size": 32,
    "learning_rate_init": 0.64,
    "alpha": 0.01,
    "epochs": 200,
    "quick_epochs": 20,
    "seed": 1,
}


def _estimator_candidates(X, y, dtype, epochs):
    """{name: callable} fitting the digits four ways; the fitted models in ``models``.

    * ``sklearn MLPClassifier``: scikit-learn's own, plain SGD (momentum 0,
      constant rate, logistic units), every epoch run (no early stop);
    * ``fastbp.sklearn``: :class:`fastbp.sklearn.MLPClassifier`, same settings;
    * ``sgd_epoch loop``: the floor under it, the same epochs as plain
      :func:`fastbp.sgd_epoch` calls from the same start and orders;
    * ``fastbp.MLP.fit``: the book's model, same step, its per-epoch history
      included (its start and last minibatch differ, so its accuracy too);
    * ``numpy loop (10 lines)``: what a user writes instead of ``MLP.fit``,
      the book's step in plain NumPy over the same minibatches and epochs
      (its own shuffles and start, no history).
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier as SklearnMLPClassifier

    from ..sklearn import MLPClassifier

    s = ESTIMATOR_SETTINGS
    common = dict(
        hidden_layer_sizes=(s["hidden"],),
        alpha=s["alpha"],
        batch_size=s["batch_size"],
        learning_rate_init=s["learning_rate_init"],
        max_iter=epochs,
        random_state=s["seed"],
        tol=0.0,
        n_iter_no_change=epochs + 1,
    )
    models = {}
    X = np.ascontiguousarray(X, dtype=dtype)

    def quietly(fit):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return fit()

    def run_sklearn():
        model = SklearnMLPClassifier(
            solver="sgd", activation="logistic", momentum=0.0, learning_rate="constant", **common
        )
        models["sklearn MLPClassifier"] = quietly(lambda: model.fit(X, y))

    def run_estimator():
        model = MLPClassifier(dtype=dtype, **common)
        models["fastbp.sklearn"] = quietly(lambda: model.fit(X, y))

    def run_loop():
        models["sgd_epoch loop"] = _sgd_epoch_loop(X, y, dtype, epochs)

    def run_mlp():
        model = fastbp.MLP(
            n_hidden=s["hidden"],
            l2=s["alpha"],
            epochs=epochs,
            eta=s["learning_rate_init"] / s["batch_size"],
            minibatch_size=s["batch_size"],
            seed=s["seed"],
            dtype=dtype,
        )
        models["fastbp.MLP.fit"] = model.fit(X, y)

    def run_numpy_loop():
        models["numpy loop (10 lines)"] = _numpy_loop(X, y, dtype, epochs)

    calls = {
        "sklearn MLPClassifier": run_sklearn,
        "fastbp.sklearn": run_estimator,
        "sgd_epoch loop": run_loop,
        "fastbp.MLP.fit": run_mlp,
        "numpy loop (10 lines)": run_numpy_loop,
    }
    return calls, models


class _Predictor:
    """Weights with :meth:`fastbp.MLP.predict`'s rule, for the NumPy loop's accuracy."""

    def __init__(self, weights):
        self.weights = weights

    def predict(self, X):
        return np.argmax(fastbp.forward(X, *self.weights)[1], axis=1)


def _numpy_loop(X, y, dtype, epochs):
    """:meth:`fastbp.MLP.fit`'s training as the ten lines of NumPy a user would write.

    The book's start (N(0, 0.1²) weights, zero biases), a shuffle per epoch,
    full minibatches, summed gradients with λW; no history.
    """
    s = ESTIMATOR_SETTINGS
    rng = np.random.default_rng(s["seed"])
    n, m = X.shape
    t = int(y.max()) + 1
    d, size, alpha = s["hidden"], s["batch_size"], s["alpha"]
    eta = dtype.type(s["learning_rate_init"] / size)
    Y = np.eye(t, dtype=dtype)[y]
    W_h = rng.normal(0.0, 0.1, (m, d)).astype(dtype)
    W_out = rng.normal(0.0, 0.1, (d, t)).astype(dtype)
    b_h, b_out = np.zeros(d, dtype), np.zeros(t, dtype)
    for _ in range(epochs):
        order = rng.permutation(n)
        for first in range(0, n - size + 1, size):
            rows = order[first : first + size]
            x, target = X[rows], Y[rows]
            a_h = 1 / (1 + np.exp(-(x @ W_h + b_h)))
            a_out = 1 / (1 + np.exp(-(a_h @ W_out + b_out)))
            delta_out = a_out - target
            delta_h = (delta_out @ W_out.T) * a_h * (1 - a_h)
            W_out -= eta * (a_h.T @ delta_out + alpha * W_out)
            b_out -= eta * delta_out.sum(axis=0)
            W_h -= eta * (x.T @ delta_h + alpha * W_h)
            b_h -= eta * delta_h.sum(axis=0)
    return _Predictor((W_h, b_h, W_out, b_out))


def _sgd_epoch_loop(X, y, dtype, epochs):
    """The estimator's epochs as bare sgd_epoch calls: (classes, weights).

    The same draws as the estimator (and scikit-learn): Glorot-uniform start
    from ``RandomState(seed)``, then each epoch's shuffle of the running order.
    """
    s = ESTIMATOR_SETTINGS
    rs = np.random.RandomState(s["seed"])
    classes = np.unique(y)
    Y = np.zeros((y.shape[0], classes.shape[0]), dtype=dtype)
    Y[np.arange(y.shape[0]), np.searchsorted(classes, y)] = 1
    weights = []
    for fan_in, fan_out in ((X.shape[1], s["hidden"]), (s["hidden"], classes.shape[0])):
        bound = np.sqrt(2.0 / (fan_in + fan_out))
        weights.append(np.ascontiguousarray(rs.uniform(-bound, bound, (fan_in, fan_out)), dtype))
        weights.append(np.ascontiguousarray(rs.uniform(-bound, bound, fan_out), dtype))
    W_h, b_h, W_out, b_out = weights
    n, size, rate = X.shape[0], s["batch_size"], s["learning_rate_init"]
    full = n - n % size
    order = np.arange(n)
    for _ in range(epochs):
        permutation = np.arange(n)
        rs.shuffle(permutation)
        order = order[permutation]
        fastbp.sgd_epoch(X, Y, W_h, b_h, W_out, b_out, order[:full], rate / size, size, s["alpha"])
        if full < n:
            rest = n - full
            fastbp.sgd_epoch(
                X, Y, W_h, b_h, W_out, b_out, order[full:], rate / rest, rest, s["alpha"]
            )
    return classes, (W_h, b_h, W_out, b_out)


def estimator_section(dtypes, repeats, quick):
    """Print the scikit-learn comparison on the digits; return its records.

    Nothing is printed, and no record returned, where scikit-learn is not
    installed.  The check of ``fastbp.sklearn`` is its weights against the
    ``sgd_epoch loop``'s, bit for bit; the others show their held-out accuracy.
    """
    try:
        import sklearn
    except ImportError:
        print("\nscikit-learn: not installed, its comparison left out")
        return []
    from ..datasets import load_digits
    from .train import _split

    s = ESTIMATOR_SETTINGS
    epochs = s["quick_epochs"] if quick else s["epochs"]
    X_all, y_all = load_digits()
    train, held_out = _split(X_all.shape[0], s["seed"])
    print(
        f"\nscikit-learn {sklearn.__version__}: the digits with `fastbp train`'s split "
        f"({train.size} training, {held_out.size} held out), {X_all.shape[1]}-{s['hidden']}-10, "
        f"minibatch {s['batch_size']}, {epochs} epochs (all run), learning_rate_init "
        f"{s['learning_rate_init']}, alpha {s['alpha']}, plain SGD, 1 thread (BLAS 1, Numba 1);\n"
        "'x sklearn' = scikit-learn's time / this time; fastbp.sklearn's weights are checked "
        "bit for bit against the sgd_epoch loop's"
    )
    records = []
    for dtype in dtypes:
        dtype = np.dtype(dtype)
        calls, models = _estimator_candidates(X_all[train], y_all[train], dtype, epochs)
        with thread_limits(1):
            medians = interleaved_medians(calls, repeats)
        classes, loop_weights = models["sgd_epoch loop"]
        estimator = models["fastbp.sklearn"]
        fitted = (estimator.coefs_[0], estimator.intercepts_[0])
        fitted += (estimator.coefs_[1], estimator.intercepts_[1])
        same = all(np.array_equal(a, b) for a, b in zip(fitted, loop_weights))
        X_test = np.ascontiguousarray(X_all[held_out], dtype=dtype)
        accuracy = {
            name: float(np.mean(model.predict(X_test) == y_all[held_out]))
            for name, model in models.items()
            if name != "sgd_epoch loop"
        }
        print(f"\n{dtype}")
        header = f"{'implementation':<22} {'median':>10} {'x sklearn':>10} {'held out':>9}  check"
        print(header)
        print("-" * (len(header) + 8))
        for name, seconds in medians.items():
            speedup = medians["sklearn MLPClassifier"] / seconds
            shown = f"{100 * accuracy[name]:.2f}%" if name in accuracy else "-"
            check = {"fastbp.sklearn": "bitwise" if same else "FAIL"}.get(name, "-")
            print(f"{name:<22} {format_seconds(seconds):>10} {speedup:>10.2f} {shown:>9}  {check}")
            records.append(
                {
                    "kernel": "estimator",
                    "implementation": name,
                    "shape": f"digits/{s['batch_size']}/{epochs}",
                    "dtype": str(dtype),
                    "seconds": seconds,
                    "speedup": speedup,
                    # Only fastbp.sklearn has a check; the others' accuracy is shown, not judged.
                    "check": check if name == "fastbp.sklearn" else "n/a",
                }
            )
        overhead = medians["fastbp.sklearn"] / medians["sgd_epoch loop"]
        print(f"fastbp.sklearn / sgd_epoch loop: {overhead:.3f} (the estimator's own cost)")
        fit_overhead = medians["fastbp.MLP.fit"] / medians["sgd_epoch loop"]
        versus_numpy = medians["numpy loop (10 lines)"] / medians["fastbp.MLP.fit"]
        print(
            f"fastbp.MLP.fit / sgd_epoch loop: {fit_overhead:.3f} (fit's history and checks); "
            f"numpy loop (10 lines) / fastbp.MLP.fit: {versus_numpy:.2f}"
        )
    return records
