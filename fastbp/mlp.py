"""A one-hidden-layer sigmoid network trained by minibatch gradient descent or L-BFGS.

:class:`MLP` is Raschka's ``NeuralNetMLP`` (*Python Machine Learning*,
chapter 12) with the same hyperparameters, the same initialisation and the
same update rule, but every step computed by the fused
:func:`fastbp.backprop` kernel, a whole epoch at a time in compiled code
(:func:`fastbp.sgd_epoch`).  ``solver="lbfgs"`` minimises the same cost with
SciPy's L-BFGS-B on the whole training set instead; it also trains on Dask
arrays, through :mod:`fastbp.dask` (imported only then: ``import fastbp``
never imports Dask).

This module holds the model: its hyperparameters and their checks
(:mod:`fastbp._validate`), :meth:`MLP.fit`'s checks of the data and its
dispatch, prediction and the model file.  The training loops are functions
of :mod:`fastbp._solvers` (SGD, DP-SGD, L-BFGS), the Dask glue is
:mod:`fastbp._mlp_dask`.
"""

import contextlib
import math
import os
import secrets
import signal
import threading
import zipfile

import numpy as np

from . import _mlp_dask, _solvers
from ._core import forward
from ._mlp_dask import is_dask_array
from ._validate import (
    as_float_array,
    as_labels,
    boolean,
    check_delta,
    check_eta,
    check_l2,
    check_max_grad_norm,
    check_n_threads,
    check_noise_multiplier,
    check_target_epsilon,
    finite_float_array,
    float_dtype,
    non_negative_int,
    one_of,
    positive_int,
    require_equal,
    require_fits,
)

__all__ = ["FORMAT_VERSION", "MLP", "SOLVERS"]

_WEIGHT_NAMES = ("W_h", "b_h", "W_out", "b_out")
_HYPERPARAMETER_NAMES = (
    "l2",
    "epochs",
    "eta",
    "minibatch_size",
    "shuffle",
    "solver",
    "max_grad_norm",
    "noise_multiplier",
    "target_epsilon",
    "delta",
)
# The privacy hyperparameters that may be None: written as NaN, read back as None.
_OPTIONAL_HYPERPARAMETERS = ("max_grad_norm", "noise_multiplier", "target_epsilon")
# Hyperparameters added after the first model files were written: a file
# without them loads with these values (what those models were trained with).
_HYPERPARAMETER_DEFAULTS = {
    "solver": "sgd",
    "max_grad_norm": None,
    "noise_multiplier": None,
    "target_epsilon": None,
    "delta": 1e-5,
}
#: The training methods of :class:`MLP`.
SOLVERS = ("sgd", "lbfgs")
#: The version of the file format :meth:`MLP.save` writes (the ``format_version`` array);
#: :meth:`MLP.load` reads this one and the files before it (no ``format_version``: 0).
FORMAT_VERSION = 1
# Every member of a model file gets this timestamp (the earliest a zip file can hold), so that
# the same model always gives the same bytes.
_ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)


class MLP:
    """Sigmoid m-d-t network trained as Raschka's ``NeuralNetMLP``, or by L-BFGS.

    Parameters
    ----------
    n_hidden : int, default 30
        Hidden units d.
    l2 : float, default 0.0
        λ of the L2 penalty on both weight matrices (not the biases).  Each
        SGD step subtracts η(∇J + λW), exactly as the book does; the
        recorded cost is J + (λ/2) Σ W², the cost whose gradient that is
        (the book records J + λ Σ W²).  L-BFGS minimises that same
        J + (λ/2) Σ W² over the whole training set.  The two solvers weigh
        λ differently: SGD subtracts ηλW at every *step*, n / minibatch_size
        times per epoch, while the data's gradient adds up to one full
        gradient per epoch, so SGD behaves roughly like L-BFGS with
        λ · n / minibatch_size.
    epochs : int, default 100
        With ``solver="sgd"``: passes over the training set.  With
        ``solver="lbfgs"``: the most L-BFGS iterations (SciPy's
        ``maxiter``).  Each iteration is one update of the weights from the
        whole training set, as an epoch is a pass over it; its line search
        evaluates the cost and gradient once or (rarely) a few times, and
        L-BFGS stops sooner when it converges (SciPy's default tolerances).
    eta : float, default 0.001
        Learning rate η of SGD.  Gradients are *sums* over the minibatch (the
        book's and the seed's convention), so the effective step per example
        is η.  Not used by L-BFGS (its line search chooses each step).
    minibatch_size : int, default 1
        Examples per SGD step, at most the number of training examples.
        Each epoch walks only full minibatches, as the book does: the last
        ``n mod minibatch_size`` examples of the (shuffled) order are left
        out of that epoch.  Not used by L-BFGS (always the whole set).
    shuffle : bool, default True
        Shuffle the example order at the start of each SGD epoch.  Not used
        by L-BFGS.  True or False (NumPy bools too), nothing else.
    seed : int ≥ 0 or None, default None
        Seed of the :func:`numpy.random.default_rng` generator that draws the
        initial weights (N(0, 0.1²); biases start at 0) and then every
        epoch's shuffle, in that order.  L-BFGS starts from the same initial
        weights and draws nothing else.
    solver : {"sgd", "lbfgs"}, default "sgd"
        ``"sgd"``: the book's minibatch gradient descent (see above).
        ``"lbfgs"``: full-batch L-BFGS, :func:`scipy.optimize.minimize` with
        ``method="L-BFGS-B"`` (no bounds) on the four weight arrays packed
        into one float64 vector (W_h, b_h, W_out, b_out, each flattened in C
        order), with cost and gradient from :func:`fastbp.backprop`, or from
        :func:`fastbp.dask.backprop` when ``X`` is a Dask array; each
        evaluation rounds the vector to ``dtype``, and the gradient is
        passed back in float64.  Deterministic: the same seed and data give
        the same bits.
    n_threads : int or None, default None
        Numba threads for each step (None: :func:`numba.get_num_threads`).
        Results do not depend on it.  Not used for Dask arrays (the
        workers' own settings apply).
    dtype : {numpy.float64, numpy.float32}, default numpy.float64
        Precision of the weights and of the arithmetic.
    max_grad_norm : float or None, default None
        C > 0: train privately, with DP-SGD (:func:`fastbp.dp_sgd_epoch`):
        every step takes a Poisson sample of the training set at rate
        q = minibatch_size / n (``shuffle`` is not used), clips each
        example's whole gradient to norm C, adds Gaussian noise N(0, (σC)²)
        and steps by η times the noisy sum (its λW term as in plain SGD);
        an epoch is n // minibatch_size such steps.  SGD only.  Needs
        dp-accounting (``pip install 'fastbp[privacy]'``) for the ε.
        ``inf`` (no clipping) is accepted with ``noise_multiplier=0`` only,
        as :func:`fastbp.dp_sgd_epoch` accepts it (ε is then infinite).
    noise_multiplier : float or None, default None
        σ ≥ 0 of private training; give it or ``target_epsilon``, not both.
    target_epsilon : float or None, default None
        ε > 0 to spend over all the epochs: σ is then the smallest noise
        multiplier whose ε (RDP accountant, :func:`fastbp.privacy.noise_multiplier`)
        is at most this for q and the number of steps.
    delta : float, default 1e-5
        δ in (0, 1) of the (ε, δ) guarantee; choose it well below 1 / n.

    Attributes
    ----------
    W_h : numpy.ndarray, shape (m, d)
    b_h : numpy.ndarray, shape (d,)
    W_out : numpy.ndarray, shape (d, t)
    b_out : numpy.ndarray, shape (t,)
        The trained weights (after :meth:`fit` or :meth:`load`).
    history_ : dict of str to list of float
        After each SGD epoch or L-BFGS iteration: ``"cost"``, ``"train_acc"``
        and ``"valid_acc"`` (fractions in [0, 1]; ``valid_acc`` is NaN when
        no validation set was given, and is scored at the weights after the
        epoch or iteration).  SGD takes the first two from the epoch's own
        steps, as Keras and most training loops report them, with no extra
        pass over the training set: ``"cost"`` is Σ of the steps' data costs
        J (each minibatch's, at the weights of its step, as
        :func:`fastbp.backprop` computes it) plus (λ/2) Σ W² at the weights
        after the epoch, and ``"train_acc"`` the share of the examples the
        steps trained on (the full minibatches; with private training, the
        Poisson batches) whose largest output was their label at their step.
        So they trail the end-of-epoch figures by up to one epoch's progress;
        ``fastbp.cost(fastbp.forward(X, *weights)[1], Y)`` gives the cost at
        the final weights.  L-BFGS records the cost it computed at the
        iteration's weights with :func:`fastbp.backprop`, and the training
        accuracy of a forward pass at those weights (NaN when ``X`` is a
        Dask array, where it would take one more pass over the data every
        iteration: call :meth:`predict` after :meth:`fit` instead).  L-BFGS
        records one entry per iteration: ``epochs`` entries, or fewer when
        it converges sooner.  With private training these figures are
        computed on the training data as they are: they are *not* private
        (see docs/privacy.md).
    noise_multiplier_ : float
        Private training: the σ used (the given one, or the one chosen for
        ``target_epsilon``).
    epsilon_ : float
        Private training: the ε spent by the epochs run, for ``delta``
        (RDP accountant, :func:`fastbp.privacy.epsilon`); the weights after
        :meth:`fit` are (ε, δ)-differentially private under its assumptions.
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
        solver="sgd",
        n_threads=None,
        dtype=np.float64,
        max_grad_norm=None,
        noise_multiplier=None,
        target_epsilon=None,
        delta=1e-5,
    ):
        self.n_hidden = positive_int(n_hidden, "n_hidden")
        self.l2 = check_l2(l2)
        self.epochs = non_negative_int(epochs, "epochs")
        self.eta = check_eta(eta)
        self.minibatch_size = positive_int(minibatch_size, "minibatch_size")
        self.shuffle = boolean(shuffle, "shuffle")
        # default_rng refuses negative seeds only when fit draws; refuse them here, by name.
        # It takes any non-negative integer, beyond int64 too.
        self.seed = non_negative_int(seed, "seed", or_none=True, int64=False)
        self.solver = one_of(solver, "solver", SOLVERS)
        self.n_threads = check_n_threads(n_threads)
        self.dtype = float_dtype(dtype, "dtype")
        self._check_privacy(max_grad_norm, noise_multiplier, target_epsilon, delta)
        self.W_h = self.b_h = self.W_out = self.b_out = None
        self.history_ = None

    def _check_privacy(self, max_grad_norm, noise_multiplier, target_epsilon, delta):
        """Validate and set the privacy hyperparameters (all None: plain training).

        Each by the rule :func:`fastbp.dp_sgd_epoch` and :mod:`fastbp.privacy`
        apply to it (:mod:`fastbp._validate`).
        """
        self.max_grad_norm = None if max_grad_norm is None else check_max_grad_norm(max_grad_norm)
        self.noise_multiplier = (
            None if noise_multiplier is None else check_noise_multiplier(noise_multiplier)
        )
        self.target_epsilon = (
            None if target_epsilon is None else check_target_epsilon(target_epsilon)
        )
        self.delta = check_delta(delta)
        if self.max_grad_norm is None:
            for name in ("noise_multiplier", "target_epsilon"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"{name} is for private training, which max_grad_norm turns on: "
                        f"give max_grad_norm too, or leave {name} out"
                    )
            return
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ValueError(
                "private training (max_grad_norm given) needs exactly one of noise_multiplier "
                "and target_epsilon"
            )
        if self.max_grad_norm == math.inf and (
            self.target_epsilon is not None or self.noise_multiplier > 0
        ):
            raise ValueError(
                "max_grad_norm=inf (no clipping) takes noise_multiplier=0 only: the noise's "
                "standard deviation is noise_multiplier × max_grad_norm"
            )
        if self.solver != "sgd":
            raise ValueError(
                f'private training runs DP-SGD: solver must be "sgd", got {self.solver!r}'
            )

    @property
    def _private(self):
        return self.max_grad_norm is not None

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
        for name, array in (("W_h", W_h), ("b_h", b_h), ("W_out", W_out), ("b_out", b_out)):
            if array.size and not np.all(np.isfinite(array)):
                raise ValueError(
                    f"init {name} contains NaN or infinity; the weights must be finite"
                )
        require_equal("X", m, "init W_h", W_h.shape[0], "columns (m)", "rows (m)")
        require_equal("init W_h", W_h.shape[1], "n_hidden", self.n_hidden, "columns (d)", "value")
        require_equal("init b_h", b_h.shape[0], "n_hidden", self.n_hidden, "length (d)", "value")
        require_equal("init W_out", W_out.shape[0], "n_hidden", self.n_hidden, "rows (d)", "value")
        require_equal(
            "init W_out", W_out.shape[1], "init b_out", b_out.shape[0], "columns (t)", "length (t)"
        )
        if m == 0 or W_out.shape[1] == 0:
            raise ValueError(
                f"init W_h has shape {W_h.shape} and init W_out {W_out.shape}: a network needs "
                "at least one input and one output (m, t >= 1)"
            )
        # Copies in the model's dtype: the caller's arrays are never modified.
        return tuple(
            np.array(a, dtype=self.dtype, order="C", copy=True) for a in (W_h, b_h, W_out, b_out)
        )

    def fit(self, X, y, X_valid=None, y_valid=None, init=None, callback=None):
        """Train on (X, y) for ``epochs`` epochs (SGD) or at most ``epochs`` iterations (L-BFGS).

        Parameters
        ----------
        X : array_like or dask.array.Array of float32 or float64, shape (n, m)
            Training inputs, one example per row (e.g. pixels scaled to [0, 1]).
            A Dask array needs ``solver="lbfgs"``; its row chunks are the
            blocks :func:`fastbp.dask.backprop` reduces (columns are
            rechunked into one block).  Every cost evaluation computes its
            graph again: persist it first if that is expensive.
        y : array_like or dask.array.Array of int, shape (n,)
            Class labels 0..t-1.  t is ``y.max() + 1`` (or, with ``init``,
            the number of columns of its W_out).  With a Dask ``X`` the
            one-hot targets are built block by block, chunked like X's rows.
        X_valid : array_like or dask.array.Array, shape (n_valid, m), optional
        y_valid : array_like of int, shape (n_valid,), optional
            A validation set, scored after each epoch or iteration.  A Dask
            ``X_valid`` is accepted with a Dask ``X`` (scored through the lazy
            :meth:`predict`, computed each iteration).
        init : tuple (W_h, b_h, W_out, b_out), optional
            Weights to start from, shapes (m, d), (d,), (d, t), (t,).  They are
            copied (never modified); the generator is then used for the
            shuffles only.  Default: the book's random initialisation.
        callback : callable, optional
            Called after each epoch (L-BFGS: each iteration) as
            ``callback(epoch, model)`` with the epoch or iteration number
            (1-based) and this model, whose weights and ``history_`` then
            hold that epoch's figures; used by ``fastbp train`` for progress.

        Returns
        -------
        MLP
            ``self``.

        Raises
        ------
        ValueError
            NaN or infinity in ``X``, ``y``, ``X_valid`` or ``y_valid``;
            ``minibatch_size`` larger than the number of rows of ``X`` (SGD
            only); shapes that disagree; labels outside the network's
            outputs; a Dask ``X`` whose row chunk sizes are unknown.
        TypeError
            Non-float inputs or non-integer labels; a Dask ``X`` with
            ``solver="sgd"``.
        KeyboardInterrupt
            Ctrl-C (SIGINT), at the end of the epoch (L-BFGS: iteration) in
            progress: the model then holds that epoch's weights and
            ``history_`` its entries; a second Ctrl-C interrupts at once.
            Only in the main thread with Python's default SIGINT handler;
            an epoch is one compiled call and cannot stop halfway
            (docs/robustness.md).

        Notes
        -----
        SGD: each epoch is one call to :func:`fastbp.sgd_epoch` (all its
        steps in compiled code), or, when ``n_threads`` would share each step
        among threads, a loop over the threaded :func:`fastbp.backprop`;
        both give the same weights to the bit.

        L-BFGS: :func:`scipy.optimize.minimize` (``method="L-BFGS-B"``,
        ``jac=True``, ``maxiter=epochs``, SciPy's other defaults) calls
        :func:`fastbp.backprop` on the whole training set, or
        :func:`fastbp.dask.backprop` for a Dask ``X`` (one pass over its
        blocks per evaluation, partial results reduced to NumPy arrays).
        With a Dask ``X``, labels and inputs are checked (range, NaN) in one
        pass before training.
        """
        on_dask = is_dask_array(X)
        if on_dask and self.solver != "lbfgs":
            raise TypeError(
                "X is a Dask array, which the SGD solver cannot train on (it takes minibatches "
                'of rows in memory): use MLP(..., solver="lbfgs"), which trains on Dask arrays '
                "through fastbp.dask, or pass X.compute() (a NumPy array)"
            )
        X = _mlp_dask.dask_inputs(X, "X") if on_dask else finite_float_array(X, "X", 2)
        n, m = X.shape
        if m == 0:
            raise ValueError(f"X has shape {X.shape}: a network needs at least one input (m >= 1)")
        if on_dask:
            labels = _mlp_dask.dask_labels(y, n, X.chunks[0])
        else:
            labels = as_labels(y, "y", n)
        if self.solver == "sgd" and n and self.minibatch_size > n:
            raise ValueError(
                f"minibatch_size ({self.minibatch_size}) is larger than the training set "
                f"(X has {n} rows): no full minibatch, so no step would be taken"
            )
        if (X_valid is None) != (y_valid is None):
            raise ValueError("give both X_valid and y_valid, or neither")
        if init is None and n == 0:
            raise ValueError("X has no rows: cannot infer the number of classes without init")
        if on_dask:
            largest_label = _mlp_dask.check_values(X, labels)
        else:
            largest_label = int(labels.max()) if labels.size else None
        rng = np.random.default_rng(self.seed)
        n_classes = self._start(rng, init, m, largest_label)
        validation = self._validation_set(X_valid, y_valid, m, on_dask)
        if on_dask:
            evaluate = _mlp_dask.evaluator(X, labels, n_classes, self.l2, self.dtype)
            return self._fit_lbfgs(evaluate, None, validation, callback)
        require_fits(f"a C-contiguous {self.dtype} copy of X", X.shape, self.dtype)
        require_fits("the one-hot targets Y (n, t)", (n, n_classes), self.dtype)
        X = np.ascontiguousarray(X, dtype=self.dtype)
        Y = _solvers.one_hot(labels, n_classes, self.dtype)
        if self.solver == "lbfgs":
            evaluate = _solvers.in_memory_evaluator(X, Y, self.n_hidden, self.l2, self.n_threads)
            return self._fit_lbfgs(evaluate, (X, labels), validation, callback)
        return self._fit_sgd(X, Y, rng, validation, callback)

    def _validation_set(self, X_valid, y_valid, m, on_dask):
        """(X_valid, labels_valid) checked, or (None, None); X_valid may be Dask with a Dask X."""
        if X_valid is None:
            return None, None
        if on_dask and is_dask_array(X_valid):
            X_valid = _mlp_dask.dask_inputs(X_valid, "X_valid")
        else:
            X_valid = finite_float_array(X_valid, "X_valid", 2)
        require_equal("X_valid", X_valid.shape[1], "X", m, "columns (m)", "columns (m)")
        return X_valid, as_labels(y_valid, "y_valid", X_valid.shape[0])

    def _reporter(self, callback, interrupted):
        """``report(epoch, weights)`` for a solver: keep the weights, call back, stop on Ctrl-C."""

        def report(epoch, weights):
            self.W_h, self.b_h, self.W_out, self.b_out = weights
            if callback is not None:
                callback(epoch, self)
            interrupted.raise_if_requested(epoch)

        return report

    def _weights(self):
        return (self.W_h, self.b_h, self.W_out, self.b_out)

    def _fit_sgd(self, X, Y, rng, validation, callback):
        """Plain or private SGD on prepared arrays (:func:`fastbp._solvers.fit_sgd`)."""
        self.history_ = _solvers.new_history()
        private = self._start_private(X.shape[0]) if self._private else None
        with _interrupts_at_epoch_boundaries() as interrupted, self._accounting(private):
            _solvers.fit_sgd(
                X, Y, self._weights(), epochs=self.epochs, eta=self.eta,
                minibatch_size=self.minibatch_size, l2=self.l2, shuffle=self.shuffle, rng=rng,
                n_threads=self.n_threads, validation=validation, history=self.history_,
                report=self._reporter(callback, interrupted), private=private,
            )  # fmt: skip
        return self

    def _fit_lbfgs(self, evaluate, training, validation, callback):
        """L-BFGS (:func:`fastbp._solvers.fit_lbfgs`); ``training`` (X, labels) is None for Dask."""
        X_valid, labels_valid = validation

        def score(weights):
            train_acc = (
                float("nan")  # a Dask X: one more pass over it every iteration
                if training is None
                else _solvers.accuracy_on(*training, weights, self.dtype)
            )
            if X_valid is None:
                return train_acc, float("nan")
            if is_dask_array(X_valid):
                predicted = _mlp_dask.predict(
                    _mlp_dask.predict_proba(X_valid, weights, self.dtype)
                ).compute()
                return train_acc, _solvers.accuracy(predicted, labels_valid)
            return train_acc, _solvers.accuracy_on(X_valid, labels_valid, weights, self.dtype)

        self.history_ = _solvers.new_history()
        with _interrupts_at_epoch_boundaries() as interrupted:
            weights = _solvers.fit_lbfgs(
                evaluate, self._weights(), max_iterations=self.epochs, score=score,
                history=self.history_, report=self._reporter(callback, interrupted),
            )  # fmt: skip
        self.W_h, self.b_h, self.W_out, self.b_out = weights
        return self

    def _start_private(self, n):
        """Private training's settings; sets σ and ε = 0 (no step taken yet)."""
        from . import privacy

        if n == 0:
            raise ValueError("X has no rows: private training needs training examples")
        sample_rate = self.minibatch_size / n
        steps = n // self.minibatch_size
        sigma = self.noise_multiplier
        if sigma is None:
            sigma = privacy.noise_multiplier(
                self.target_epsilon, self.delta, sample_rate, self.epochs * steps
            )
        else:
            privacy.epsilon(sigma, sample_rate, 0, self.delta)  # dp-accounting is there
        self.noise_multiplier_ = sigma
        self.epsilon_ = 0.0
        return _solvers.PrivateTraining(sample_rate, steps, self.max_grad_norm, sigma)

    @contextlib.contextmanager
    def _accounting(self, private):
        """Private training: set ``epsilon_`` for the steps run, however the epochs end."""
        try:
            yield
        finally:
            if private is not None and private.steps_taken:
                from . import privacy

                self.epsilon_ = privacy.epsilon(
                    self.noise_multiplier_, private.sample_rate, private.steps_taken, self.delta
                )

    def _start(self, rng, init, m, largest_label):
        """Set the starting weights (drawn from ``rng``, or ``init``); return t.

        ``largest_label`` is the training labels' maximum, None without labels.
        """
        if init is None:
            n_classes = largest_label + 1
            # drawn in float64 first, then rounded to the model's dtype
            require_fits("the initial W_h (m, n_hidden)", (m, self.n_hidden), np.float64)
            require_fits("the initial W_out (n_hidden, t)", (self.n_hidden, n_classes), np.float64)
            self.W_h, self.b_h, self.W_out, self.b_out = self._initial_weights(rng, m, n_classes)
        else:
            self.W_h, self.b_h, self.W_out, self.b_out = self._check_init(init, m)
            n_classes = self.W_out.shape[1]
        if largest_label is not None and largest_label >= n_classes:
            raise ValueError(
                f"y has class label {largest_label} but the network has {n_classes} outputs "
                f"(0..{n_classes - 1})"
            )
        return n_classes

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
        X : array_like or dask.array.Array, shape (n, m)

        Returns
        -------
        numpy.ndarray or dask.array.Array, shape (n, t)
            φ(z_out) for each output unit separately: each entry is in
            (0, 1), but a row does **not** sum to 1 (per-output sigmoids, as
            the book's network, not a softmax).  For a Dask ``X``, a lazy
            Dask array chunked like X's rows (one chunk across the t
            columns): each block is :func:`fastbp.forward` on that block of
            rows, the same kernel as for NumPy input, with the weights as
            they are now (a later :meth:`fit` does not change it).  NaN or
            infinity in a block raises ``ValueError`` when it is computed.
        """
        self._require_fitted()
        if is_dask_array(X):
            return _mlp_dask.predict_proba(X, self._weights(), self.dtype)
        X = finite_float_array(X, "X", 2)
        require_equal("X", X.shape[1], "W_h", self.W_h.shape[0], "columns (m)", "rows (m)")
        return forward(
            X.astype(self.dtype, copy=False), self.W_h, self.b_h, self.W_out, self.b_out
        )[1]

    def predict(self, X):
        """Class labels, the output unit with the largest activation.

        Parameters
        ----------
        X : array_like or dask.array.Array, shape (n, m)

        Returns
        -------
        numpy.ndarray or dask.array.Array of int64, shape (n,)
            For a Dask ``X``, a lazy Dask array chunked like X's rows, the
            argmax of each block of :meth:`predict_proba`.
        """
        proba = self.predict_proba(X)
        if is_dask_array(proba):
            return _mlp_dask.predict(proba)
        return _solvers.argmax_rows(proba)

    # ------------------------------------------------------------------
    # Persistence
    # ------------------------------------------------------------------

    def _file_arrays(self):
        """The arrays of a model file, in the order :meth:`save` writes them."""
        return {
            "format_version": np.int64(FORMAT_VERSION),
            "W_h": np.ascontiguousarray(self.W_h),
            "b_h": np.ascontiguousarray(self.b_h),
            "W_out": np.ascontiguousarray(self.W_out),
            "b_out": np.ascontiguousarray(self.b_out),
            "l2": np.float64(self.l2),
            "epochs": np.int64(self.epochs),
            "eta": np.float64(self.eta),
            "minibatch_size": np.int64(self.minibatch_size),
            "shuffle": np.bool_(self.shuffle),
            "solver": np.str_(self.solver),
            # None (plain training) as NaN: a file holds arrays only.
            **{
                name: np.float64(np.nan if getattr(self, name) is None else getattr(self, name))
                for name in _OPTIONAL_HYPERPARAMETERS
            },
            "delta": np.float64(self.delta),
        }

    def save(self, path):
        """Write the weights and hyperparameters to ``path`` (NumPy ``.npz``), atomically.

        Parameters
        ----------
        path : str or os.PathLike or writable binary file
            Where to write; ``.npz`` is appended to a name without it, as
            :func:`numpy.savez` does.

        Notes
        -----
        To a path, the archive is first written to a new temporary file in
        the same folder (``.<name>.<random hex>.tmp``), flushed and fsynced,
        then renamed over ``path`` (:func:`os.replace`, atomic), and the
        folder is fsynced.  A save interrupted at any point (an exception,
        a kill, a power cut after the rename's fsync) leaves either the old
        file or the new one, whole, never a mix; a killed save may leave its
        temporary file behind.  To a file object the archive is written
        directly (not atomic).

        The archive (readable with :func:`numpy.load`) holds
        ``format_version`` (:data:`FORMAT_VERSION`), ``W_h``, ``b_h``,
        ``W_out``, ``b_out`` and the hyperparameters ``l2``, ``epochs``,
        ``eta``, ``minibatch_size``, ``shuffle``, ``solver`` and the privacy
        ones ``max_grad_norm``, ``noise_multiplier``, ``target_epsilon``
        (NaN for None) and ``delta`` (not ``seed``, ``n_threads``,
        ``history_`` or ``epsilon_``).  Its members carry a fixed
        timestamp, so a model saved, loaded and saved again gives the same
        bytes.
        """
        self._require_fitted()
        arrays = self._file_arrays()
        if hasattr(path, "write"):
            _write_archive(path, arrays)
            return
        path = os.fsdecode(os.fspath(path))
        if not path.endswith(".npz"):
            path += ".npz"
        folder, name = os.path.split(path)
        temporary = os.path.join(folder, f".{name}.{secrets.token_hex(8)}.tmp")
        # O_EXCL: a new file of our own; mode 0o666 less the umask, as open() would give.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        descriptor = os.open(temporary, flags, 0o666)
        try:
            with os.fdopen(descriptor, "wb") as file:
                _write_archive(file, arrays)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        _fsync_folder(folder)

    @classmethod
    def load(cls, path):
        """Read a model written by :meth:`save` (no pickles are loaded), checking it whole.

        Parameters
        ----------
        path : str or os.PathLike or file

        Returns
        -------
        MLP
            With the saved weights and hyperparameters, the solver included
            (``seed`` is None and ``history_`` is None: neither is saved).
            A file written before ``solver`` was saved loads with
            ``solver="sgd"``, the only solver then; a file without
            ``format_version`` is read as format 0 (the same arrays).

        Raises
        ------
        ValueError
            Not an ``.npz`` archive of a model; a ``format_version`` newer
            than this fastbp reads (:data:`FORMAT_VERSION`: upgrade fastbp);
            weights that are not float32 or float64, differ in dtype, have
            shapes that do not agree (W_h (m, d), b_h (d,), W_out (d, t),
            b_out (t,), m, d, t ≥ 1) or hold NaN or infinity; hyperparameters
            of the wrong kind or out of range.  The message names the file
            and the array.
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
            try:
                contents = _read_model_arrays(archive, path, expected)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
                if isinstance(error, ValueError) and str(error).startswith(repr(path)):
                    raise
                raise ValueError(
                    f"{path!r} is not a saved fastbp model: an array cannot be read "
                    f"({type(error).__name__}: {error})"
                ) from None
        weights, hyperparameters = contents
        try:
            model = cls(
                n_hidden=weights["W_h"].shape[1], dtype=weights["W_h"].dtype, **hyperparameters
            )
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path!r} holds a hyperparameter out of range: {error}") from None
        model.W_h, model.b_h, model.W_out, model.b_out = (weights[k] for k in _WEIGHT_NAMES)
        return model


def _write_archive(file, arrays):
    """Write ``arrays`` (a dict) to ``file`` as an uncompressed ``.npz``, with fixed timestamps."""
    with zipfile.ZipFile(file, mode="w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE_TIME)
            info.external_attr = 0o644 << 16
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def _fsync_folder(folder):
    """Make a rename in ``folder`` durable (POSIX); a no-op where folders cannot be opened."""
    try:
        descriptor = os.open(folder or ".", os.O_RDONLY)
    except OSError:  # Windows, or no permission to read the folder
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(descriptor)
    finally:
        os.close(descriptor)


# Each hyperparameter's array kind in a model file, and the Python type it is read as.
_HYPERPARAMETER_KINDS = {
    "l2": ("f", float),
    "epochs": ("iu", int),
    "eta": ("f", float),
    "minibatch_size": ("iu", int),
    "shuffle": ("b", bool),
    "solver": ("U", str),
    "max_grad_norm": ("f", float),
    "noise_multiplier": ("f", float),
    "target_epsilon": ("f", float),
    "delta": ("f", float),
}


def _read_model_arrays(archive, path, expected):
    """(weights, hyperparameters) of an open model archive, each checked; ValueError naming it."""
    from . import __version__

    def refuse(what):
        return ValueError(f"{path!r} is not a valid fastbp model: {what}")

    def member(name):
        value = archive[name]  # NpzFile gives the raw bytes of a member that is not a .npy
        if not isinstance(value, np.ndarray):
            raise refuse(f"{name} is not a NumPy array")
        return value

    version = 0
    if "format_version" in archive:
        stored = member("format_version")
        if stored.ndim != 0 or stored.dtype.kind not in "iu" or stored < 0:
            raise refuse(f"format_version must be a non-negative integer, got {stored!r}")
        version = int(stored)
        if version > FORMAT_VERSION:
            raise ValueError(
                f"{path!r} was written by a newer fastbp (model file format {version}); "
                f"fastbp {__version__} reads formats up to {FORMAT_VERSION}: upgrade fastbp "
                "to load it"
            )
    missing = [
        k
        for k in _WEIGHT_NAMES + _HYPERPARAMETER_NAMES
        if k not in archive and k not in _HYPERPARAMETER_DEFAULTS
    ]
    if missing:
        raise ValueError(
            f"{path!r} is not a saved fastbp model: missing {', '.join(missing)} "
            f"(a model file holds {expected})"
        )
    weights = {}
    for name, ndim in zip(_WEIGHT_NAMES, (2, 1, 2, 1)):
        array = member(name)
        if array.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise refuse(f"{name} has dtype {array.dtype}; expected float32 or float64")
        if array.ndim != ndim:
            raise refuse(f"{name} must be {ndim}-D, got shape {array.shape}")
        if not np.all(np.isfinite(array)):
            raise refuse(f"{name} contains NaN or infinity")
        weights[name] = np.ascontiguousarray(array)
    dtypes = {array.dtype for array in weights.values()}
    if len(dtypes) > 1:
        listed = ", ".join(f"{name} {array.dtype}" for name, array in weights.items())
        raise refuse(f"the weights must share one dtype, got {listed}")
    (m, d), t = weights["W_h"].shape, weights["W_out"].shape[1]
    for name, shape, want in (
        ("b_h", weights["b_h"].shape, (d,)),
        ("W_out", weights["W_out"].shape, (d, t)),
        ("b_out", weights["b_out"].shape, (t,)),
    ):
        if shape != want:
            raise refuse(
                f"{name} has shape {shape} but W_h {weights['W_h'].shape} and W_out "
                f"{weights['W_out'].shape} make it {want}"
            )
    if not (m and d and t):
        raise refuse(f"W_h {(m, d)} and W_out {(d, t)}: m, d and t must be at least 1")
    hyperparameters = {}
    for name in _HYPERPARAMETER_NAMES:
        if name not in archive:
            hyperparameters[name] = _HYPERPARAMETER_DEFAULTS[name]
            continue
        array = member(name)
        kinds, python_type = _HYPERPARAMETER_KINDS[name]
        if array.ndim != 0 or array.dtype.kind not in kinds:
            raise refuse(
                f"{name} must be a single {python_type.__name__}, got an array of dtype "
                f"{array.dtype} and shape {array.shape}"
            )
        hyperparameters[name] = python_type(array[()])
        if name in _OPTIONAL_HYPERPARAMETERS and np.isnan(hyperparameters[name]):
            hyperparameters[name] = None
    return weights, hyperparameters


class _InterruptFlag:
    """Whether Ctrl-C (SIGINT) arrived during :meth:`MLP.fit` (see below)."""

    def __init__(self):
        self.requested = False

    def raise_if_requested(self, epoch):
        """At an epoch boundary: raise ``KeyboardInterrupt`` if Ctrl-C was pressed."""
        if self.requested:
            raise KeyboardInterrupt(
                f"MLP.fit interrupted after epoch {epoch}: the model holds that epoch's weights"
            )


@contextlib.contextmanager
def _interrupts_at_epoch_boundaries():
    """Defer Ctrl-C (SIGINT) to the end of the epoch in progress.

    Yields an :class:`_InterruptFlag`.  While the block runs, a first SIGINT
    only sets the flag; the training loop calls ``raise_if_requested`` after
    each whole epoch (its weights, history and callback complete), so the
    ``KeyboardInterrupt`` leaves the model with the last complete epoch's
    weights.  A second SIGINT raises at once, as Python's default handler
    does.  Only where Python's default handler is installed and this is the
    main thread (signal handlers can be set there only); elsewhere nothing
    changes.
    """
    flag = _InterruptFlag()
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield flag
        return

    def handler(signum, frame):
        if flag.requested:
            signal.default_int_handler(signum, frame)
        flag.requested = True

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if flag.requested:  # pressed after the last epoch's check: the fit is whole; still say so
        raise KeyboardInterrupt("MLP.fit interrupted after its last epoch: the fit is complete")
