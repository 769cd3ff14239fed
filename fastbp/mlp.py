"""A one-hidden-layer sigmoid network trained by minibatch gradient descent.

:class:`MLP` is Raschka's ``NeuralNetMLP`` (*Python Machine Learning*,
chapter 12) with the same hyperparameters, the same initialisation and the
same update rule, but every step computed by the fused
:func:`fastbp.backprop` kernel, a whole epoch at a time in compiled code
(:func:`fastbp.sgd_epoch`).
"""

import numbers
import zipfile

import numba
import numpy as np

from ._backprop import (
    _backprop_prepared,
    _check_l2,
    _shares_threads,
    default_backprop_chunks,
    l2_penalty,
)
from ._core import _check_n_threads, cost, forward
from ._sgd import sgd_epoch
from ._validate import as_float_array, positive_int, require_equal

__all__ = ["MLP"]

_WEIGHT_NAMES = ("W_h", "b_h", "W_out", "b_out")
_HYPERPARAMETER_NAMES = ("l2", "epochs", "eta", "minibatch_size", "shuffle")


def _as_labels(y, name, n):
    """Integer class labels as an int64 array of length n."""
    labels = np.asarray(y)
    if labels.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one class label per example), got shape {labels.shape}")
    if labels.dtype.kind in "fc" and labels.size and not np.all(np.isfinite(labels)):
        raise ValueError(f"{name} contains NaN or infinity; it must hold class labels 0..t-1")
    if labels.dtype.kind not in "iu":
        if labels.dtype.kind == "f" and labels.size and np.all(np.isfinite(labels)) and np.all(
            labels == np.round(labels)
        ):
            hint = f"; convert it first, e.g. {name}.astype(np.int64)"
        else:
            hint = ""
        raise TypeError(f"{name} must hold integer class labels 0..t-1, got dtype {labels.dtype}{hint}")
    if labels.shape[0] != n:
        raise ValueError(f"{name} has {labels.shape[0]} labels but X has {n} rows (n)")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{name} must hold class labels 0..t-1, found {labels.min()}")
    return labels.astype(np.int64, copy=False)


def _as_inputs(X, name):
    X = as_float_array(X, name, 2)
    if X.size and not np.all(np.isfinite(X)):
        raise ValueError(f"{name} contains NaN or infinity")
    return X


def _one_hot(labels, n_classes, dtype):
    """(n, t) targets: 1 in column ``labels[i]`` of row i, 0 elsewhere."""
    Y = np.zeros((labels.shape[0], n_classes), dtype=dtype)
    Y[np.arange(labels.shape[0]), labels] = 1
    return Y


class MLP:
    """Sigmoid m-d-t network trained as Raschka's ``NeuralNetMLP``.

    Parameters
    ----------
    n_hidden : int, default 30
        Hidden units d.
    l2 : float, default 0.0
        λ of the L2 penalty on both weight matrices (not the biases).  Each
        step subtracts η(∇J + λW), exactly as the book does; the recorded
        cost is J + (λ/2) Σ W², the cost whose gradient that is (the book
        records J + λ Σ W²).
    epochs : int, default 100
        Passes over the training set.
    eta : float, default 0.001
        Learning rate η.  Gradients are *sums* over the minibatch (the book's
        and the seed's convention), so the effective step per example is η.
    minibatch_size : int, default 1
        Examples per step, at most the number of training examples.  Each
        epoch walks only full minibatches, as the book does: the last
        ``n mod minibatch_size`` examples of the (shuffled) order are left
        out of that epoch.
    shuffle : bool, default True
        Shuffle the example order at the start of each epoch.
    seed : int or None, default None
        Seed of the :func:`numpy.random.default_rng` generator that draws the
        initial weights (N(0, 0.1²); biases start at 0) and then every
        epoch's shuffle, in that order.
    n_threads : int or None, default None
        Numba threads for each step (None: :func:`numba.get_num_threads`).
        Results do not depend on it.
    dtype : {numpy.float64, numpy.float32}, default numpy.float64
        Precision of the weights and of the arithmetic.

    Attributes
    ----------
    W_h : numpy.ndarray, shape (m, d)
    b_h : numpy.ndarray, shape (d,)
    W_out : numpy.ndarray, shape (d, t)
    b_out : numpy.ndarray, shape (t,)
        The trained weights (after :meth:`fit` or :meth:`load`).
    history_ : dict of str to list of float
        After each epoch: ``"cost"`` (J + (λ/2) Σ W² on the training set),
        ``"train_acc"`` and ``"valid_acc"`` (fractions in [0, 1];
        ``valid_acc`` is NaN when no validation set was given).
    """

    def __init__(
        self,
        n_hidden=30,
        l2=0.0,
        epochs=100,
        eta=0.001,
        minibatch_size=1,
        shuffle=True,
        seed=None,
        *,
        n_threads=None,
        dtype=np.float64,
    ):
        self.n_hidden = positive_int(n_hidden, "n_hidden")
        self.l2 = _check_l2(l2)
        self.epochs = positive_int(epochs, "epochs") if epochs != 0 else 0
        try:
            self.eta = float(eta)
        except (TypeError, ValueError):
            raise TypeError(f"eta must be a positive real number, got {eta!r}") from None
        if not np.isfinite(self.eta) or self.eta <= 0:
            raise ValueError(f"eta must be a positive finite number, got {eta!r}")
        self.minibatch_size = positive_int(minibatch_size, "minibatch_size")
        self.shuffle = bool(shuffle)
        if seed is not None and (
            isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral)
        ):
            raise TypeError(f"seed must be an integer or None, got {seed!r}")
        self.seed = seed
        self.n_threads = _check_n_threads(n_threads)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"dtype must be float32 or float64, got {self.dtype}")
        self.W_h = self.b_h = self.W_out = self.b_out = None
        self.history_ = None

    # ------------------------------------------------------------------
    # Training
    # ------------------------------------------------------------------

    def _initial_weights(self, rng, m, t):
        """The book's initialisation: N(0, 0.1²) weights (W_h first), zero biases."""
        W_h = rng.normal(loc=0.0, scale=0.1, size=(m, self.n_hidden)).astype(self.dtype)
        W_out = rng.normal(loc=0.0, scale=0.1, size=(self.n_hidden, t)).astype(self.dtype)
        return W_h, np.zeros(self.n_hidden, self.dtype), W_out, np.zeros(t, self.dtype)

    def _check_init(self, init, m):
        try:
            W_h, b_h, W_out, b_out = init
        except (TypeError, ValueError):
            raise TypeError("init must be a tuple (W_h, b_h, W_out, b_out)") from None
        W_h = as_float_array(W_h, "init W_h", 2)
        b_h = as_float_array(b_h, "init b_h", 1)
        W_out = as_float_array(W_out, "init W_out", 2)
        b_out = as_float_array(b_out, "init b_out", 1)
        require_equal("X", m, "init W_h", W_h.shape[0], "columns (m)", "rows (m)")
        require_equal("init W_h", W_h.shape[1], "n_hidden", self.n_hidden, "columns (d)", "value")
        require_equal("init b_h", b_h.shape[0], "n_hidden", self.n_hidden, "length (d)", "value")
        require_equal("init W_out", W_out.shape[0], "n_hidden", self.n_hidden, "rows (d)", "value")
        require_equal("init W_out", W_out.shape[1], "init b_out", b_out.shape[0], "columns (t)", "length (t)")
        # Copies in the model's dtype: the caller's arrays are never modified.
        return tuple(np.array(a, dtype=self.dtype, order="C", copy=True) for a in (W_h, b_h, W_out, b_out))

    def _epoch_order(self, n, rng):
        """The examples' order for one epoch: shuffled by ``rng`` or 0, 1, …, n−1."""
        indices = np.arange(n)
        if self.shuffle:
            rng.shuffle(indices)
        return indices

    def _epoch(self, X, Y, order, n_chunks):
        """One epoch of updates W ← W − η (∇J + λW) over the full minibatches of ``order``.

        In one call to :func:`fastbp.sgd_epoch`, unless ``n_threads`` would
        share each step among threads: then step by step through the
        threaded :func:`fastbp.backprop` kernels.  The two give the same bits.
        """
        size = self.minibatch_size
        m, d = self.W_h.shape
        threads = numba.get_num_threads() if self.n_threads is None else self.n_threads
        if not _shares_threads(size, m, d, n_chunks, threads):
            sgd_epoch(X, Y, self.W_h, self.b_h, self.W_out, self.b_out, order, self.eta, size, self.l2)
            return
        eta = self.dtype.type(self.eta)
        for start in range(0, order.shape[0] - size + 1, size):
            batch = order[start : start + size]
            result = _backprop_prepared(
                X[batch], Y[batch], self.W_h, self.b_h, self.W_out, self.b_out,
                self.l2, n_chunks, self.n_threads,
            )
            # The gradients already hold the λW terms; as the book: w -= eta * delta_w.
            self.W_h -= eta * result.grad_W_h
            self.b_h -= eta * result.grad_b_h
            self.W_out -= eta * result.grad_W_out
            self.b_out -= eta * result.grad_b_out

    def fit(self, X, y, X_valid=None, y_valid=None, init=None, callback=None):
        """Train on (X, y) for ``epochs`` epochs.

        Parameters
        ----------
        X : array_like of float32 or float64, shape (n, m)
            Training inputs, one example per row (e.g. pixels scaled to [0, 1]).
        y : array_like of int, shape (n,)
            Class labels 0..t-1.  t is ``y.max() + 1`` (or, with ``init``,
            the number of columns of its W_out).
        X_valid : array_like, shape (n_valid, m), optional
        y_valid : array_like of int, shape (n_valid,), optional
            A validation set, scored after each epoch.
        init : tuple (W_h, b_h, W_out, b_out), optional
            Weights to start from, shapes (m, d), (d,), (d, t), (t,).  They are
            copied (never modified); the generator is then used for the
            shuffles only.  Default: the book's random initialisation.
        callback : callable, optional
            Called after each epoch as ``callback(epoch, model)`` with the
            epoch number (1-based) and this model, whose ``history_`` then
            holds that epoch's figures; used by ``fastbp train`` for progress.

        Returns
        -------
        MLP
            ``self``.

        Raises
        ------
        ValueError
            NaN or infinity in ``X``, ``y``, ``X_valid`` or ``y_valid``;
            ``minibatch_size`` larger than the number of rows of ``X``;
            shapes that disagree; labels outside the network's outputs.
        TypeError
            Non-float inputs or non-integer labels.

        Notes
        -----
        Each epoch is one call to :func:`fastbp.sgd_epoch` (all its steps
        in compiled code), or, when ``n_threads`` would share each step
        among threads, a loop over the threaded :func:`fastbp.backprop`;
        both give the same weights to the bit.
        """
        X = _as_inputs(X, "X")
        n, m = X.shape
        labels = _as_labels(y, "y", n)
        if n and self.minibatch_size > n:
            raise ValueError(
                f"minibatch_size ({self.minibatch_size}) is larger than the training set "
                f"(X has {n} rows): no full minibatch, so no step would be taken"
            )
        if (X_valid is None) != (y_valid is None):
            raise ValueError("give both X_valid and y_valid, or neither")
        rng = np.random.default_rng(self.seed)
        if init is None:
            if n == 0:
                raise ValueError("X has no rows: cannot infer the number of classes without init")
            n_classes = int(labels.max()) + 1
            self.W_h, self.b_h, self.W_out, self.b_out = self._initial_weights(rng, m, n_classes)
        else:
            self.W_h, self.b_h, self.W_out, self.b_out = self._check_init(init, m)
            n_classes = self.W_out.shape[1]
        if labels.size and labels.max() >= n_classes:
            raise ValueError(
                f"y has class label {labels.max()} but the network has {n_classes} outputs (0..{n_classes - 1})"
            )
        if X_valid is not None:
            X_valid = _as_inputs(X_valid, "X_valid")
            require_equal("X_valid", X_valid.shape[1], "X", m, "columns (m)", "columns (m)")
            labels_valid = _as_labels(y_valid, "y_valid", X_valid.shape[0])
        X = np.ascontiguousarray(X, dtype=self.dtype)
        Y = _one_hot(labels, n_classes, self.dtype)
        n_chunks = default_backprop_chunks(
            self.minibatch_size, m, self.n_hidden, n_classes, self.dtype.itemsize
        )
        self.history_ = {"cost": [], "train_acc": [], "valid_acc": []}
        for epoch in range(1, self.epochs + 1):
            order = self._epoch_order(n, rng)
            if n:
                self._epoch(X, Y, order, n_chunks)
            A_out = forward(X, self.W_h, self.b_h, self.W_out, self.b_out)[1]
            training_cost = float(cost(A_out, Y)) + l2_penalty(self.W_h, self.W_out, self.l2)
            self.history_["cost"].append(training_cost)
            self.history_["train_acc"].append(_accuracy(np.argmax(A_out, axis=1), labels))
            if X_valid is not None:
                self.history_["valid_acc"].append(_accuracy(self.predict(X_valid), labels_valid))
            else:
                self.history_["valid_acc"].append(float("nan"))
            if callback is not None:
                callback(epoch, self)
        return self

    # ------------------------------------------------------------------
    # Prediction
    # ------------------------------------------------------------------

    def _require_fitted(self):
        if self.W_h is None:
            raise RuntimeError("this MLP has no weights yet: call fit() or MLP.load() first")

    def predict_proba(self, X):
        """Output activations A_out, one row per example.

        Parameters
        ----------
        X : array_like, shape (n, m)

        Returns
        -------
        numpy.ndarray, shape (n, t)
            φ(z_out) for each output unit separately: each entry is in
            (0, 1), but a row does **not** sum to 1 (per-output sigmoids, as
            the book's network, not a softmax).
        """
        self._require_fitted()
        X = _as_inputs(X, "X")
        require_equal("X", X.shape[1], "W_h", self.W_h.shape[0], "columns (m)", "rows (m)")
        return forward(X.astype(self.dtype, copy=False), self.W_h, self.b_h, self.W_out, self.b_out)[1]

    def predict(self, X):
        """Class labels, the output unit with the largest activation.

        Parameters
        ----------
        X : array_like, shape (n, m)

        Returns
        -------
        numpy.ndarray of int64, shape (n,)
        """
        return np.argmax(self.predict_proba(X), axis=1).astype(np.int64)

    # ------------------------------------------------------------------
    # Persistence
    # ------------------------------------------------------------------

    def save(self, path):
        """Write the weights and hyperparameters to ``path`` (NumPy ``.npz``).

        Parameters
        ----------
        path : str or os.PathLike or file
            Where to write; NumPy appends ``.npz`` to a name without it.
        """
        self._require_fitted()
        np.savez(
            path,
            W_h=self.W_h, b_h=self.b_h, W_out=self.W_out, b_out=self.b_out,
            l2=np.float64(self.l2), epochs=np.int64(self.epochs), eta=np.float64(self.eta),
            minibatch_size=np.int64(self.minibatch_size), shuffle=np.bool_(self.shuffle),
        )

    @classmethod
    def load(cls, path):
        """Read a model written by :meth:`save` (no pickles are loaded).

        Parameters
        ----------
        path : str or os.PathLike or file

        Returns
        -------
        MLP
            With the saved weights and hyperparameters (``seed`` is None and
            ``history_`` is None: neither is saved).
        """
        expected = ", ".join(_WEIGHT_NAMES + _HYPERPARAMETER_NAMES)
        try:
            loaded = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
            # NumPy's own message for a non-NumPy file proposes allow_pickle=True:
            # never pass that on; say what a model file is instead.
            raise ValueError(
                f"{path!r} is not a saved fastbp model: expected a NumPy .npz archive "
                f"written by MLP.save, with arrays {expected} ({type(error).__name__})"
            ) from None
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError(
                f"{path!r} is not a saved fastbp model: it holds a single NumPy array, "
                f"not an .npz archive with arrays {expected}"
            )
        with loaded as archive:
            missing = [k for k in _WEIGHT_NAMES + _HYPERPARAMETER_NAMES if k not in archive]
            if missing:
                raise ValueError(
                    f"{path!r} is not a saved fastbp model: missing {', '.join(missing)} "
                    f"(a model file holds {expected})"
                )
            weights = {k: archive[k] for k in _WEIGHT_NAMES}
            model = cls(
                n_hidden=weights["W_h"].shape[1],
                l2=float(archive["l2"]),
                epochs=int(archive["epochs"]),
                eta=float(archive["eta"]),
                minibatch_size=int(archive["minibatch_size"]),
                shuffle=bool(archive["shuffle"]),
                dtype=weights["W_h"].dtype,
            )
        model.W_h, model.b_h, model.W_out, model.b_out = (weights[k] for k in _WEIGHT_NAMES)
        return model


def _accuracy(predicted, labels):
    return float(np.mean(predicted == labels)) if labels.size else float("nan")
