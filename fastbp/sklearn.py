"""fastbp's network as a scikit-learn classifier: :class:`MLPClassifier`.

``pip install 'fastbp[sklearn]'`` installs scikit-learn (1.6 or newer, the
range this module is tested on).  ``import fastbp`` never imports this
module or scikit-learn; ``import fastbp.sklearn`` does.

The estimator trains the same one-hidden-layer sigmoid network as
:class:`fastbp.MLP`, every SGD epoch in one compiled call of
:func:`fastbp.sgd_epoch`, behind scikit-learn's API: ``get_params`` /
``set_params``, labels of any kind, ``partial_fit``, ``score``, pipelines,
searches, cross-validation, ``clone`` and pickling.
"""

import numbers
import warnings

import numpy as np

try:
    import sklearn
except ImportError as error:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "fastbp.sklearn needs scikit-learn >= 1.6: install it with "
        "`pip install 'fastbp[sklearn]'` (or `pip install scikit-learn`)"
    ) from error


def _version_tuple(text):
    parts = []
    for part in text.split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


#: The oldest scikit-learn this module supports (validate_data and __sklearn_tags__ appeared in it).
MIN_SKLEARN_VERSION = (1, 6)
if _version_tuple(sklearn.__version__) < MIN_SKLEARN_VERSION:
    raise ImportError(
        f"fastbp.sklearn needs scikit-learn >= 1.6, found {sklearn.__version__}: "
        "upgrade it with `pip install 'fastbp[sklearn]'`"
    )

from scipy.optimize import minimize  # noqa: E402
from scipy.special import log_expit  # noqa: E402
from sklearn.base import BaseEstimator, ClassifierMixin  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.utils import check_random_state  # noqa: E402
from sklearn.utils._param_validation import (  # noqa: E402
    Interval,
    InvalidParameterError,
    StrOptions,
)
from sklearn.utils.metaestimators import available_if  # noqa: E402
from sklearn.utils.multiclass import check_classification_targets  # noqa: E402
from sklearn.utils.validation import (  # noqa: E402
    check_is_fitted,
    column_or_1d,
    validate_data,
)

from ._backprop import backprop  # noqa: E402
from ._core import forward  # noqa: E402
from ._sgd import sgd_epoch  # noqa: E402
from ._solvers import _pack, _unpack  # noqa: E402

__all__ = ["MIN_SKLEARN_VERSION", "MLPClassifier"]

_DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}
# batch_size="auto" takes min(_AUTO_BATCH_SIZE, n), as scikit-learn's MLPClassifier does.
_AUTO_BATCH_SIZE = 200


def _resolve_dtype(dtype):
    """The ``dtype`` parameter as a numpy dtype, float32 or float64; anything else is refused."""
    try:
        resolved = np.dtype(dtype) if dtype is not None else None
    except TypeError:
        resolved = None
    if resolved not in _DTYPES.values():
        raise InvalidParameterError(
            "The 'dtype' parameter of MLPClassifier must be float32 or float64 "
            f"(numpy.float32, numpy.float64 or their names). Got {dtype!r} instead."
        )
    return resolved


def _hidden_units(hidden_layer_sizes):
    """d, the one hidden layer's width, from ``hidden_layer_sizes`` (an int or a 1-sequence)."""
    sizes = hidden_layer_sizes
    if isinstance(sizes, numbers.Integral) and not isinstance(sizes, (bool, np.bool_)):
        sizes = (sizes,)
    try:
        sizes = list(sizes)
    except TypeError:
        sizes = None
    if sizes is None or len(sizes) != 1:
        raise InvalidParameterError(
            "The 'hidden_layer_sizes' parameter of MLPClassifier must be an int or a sequence "
            "of one int, such as (100,): fastbp's network has exactly one hidden layer. "
            f"Got {hidden_layer_sizes!r} instead."
        )
    (units,) = sizes
    if isinstance(units, (bool, np.bool_)) or not isinstance(units, numbers.Integral) or units < 1:
        raise InvalidParameterError(
            "The 'hidden_layer_sizes' parameter of MLPClassifier must hold a positive number "
            f"of hidden units. Got {hidden_layer_sizes!r} instead."
        )
    return int(units)


def _sgd_solver(estimator):
    """``partial_fit`` exists with the SGD solver only, as in scikit-learn."""
    if estimator.solver != "sgd":
        raise AttributeError(
            f"partial_fit is only available with solver='sgd', not {estimator.solver!r}"
        )
    return True


class MLPClassifier(ClassifierMixin, BaseEstimator):
    """fastbp's sigmoid network as a scikit-learn classifier.

    One hidden layer of logistic (sigmoid) units and logistic outputs, trained
    on the seed's logistic cost: for K > 2 classes, K sigmoid outputs against
    one-hot targets, the cross-entropy summed over every output; for two
    classes, one sigmoid output, which is scikit-learn's binary model.
    **For more than two classes this is not scikit-learn's**
    ``MLPClassifier``, whose outputs are a softmax: here each output is a
    separate logistic unit, and :meth:`predict_proba` normalises them to
    sum to one (:meth:`predict_sigmoid` returns them as they are).

    SGD runs every epoch in one compiled call of :func:`fastbp.sgd_epoch`
    (the last, smaller minibatch in a second call), on the calling thread;
    the kernels release the GIL, so fits in separate threads (``GridSearchCV``
    with ``n_jobs`` under joblib's threading backend) run side by side.

    Parameters
    ----------
    hidden_layer_sizes : int or tuple of one int, default (100,)
        Hidden units d.  fastbp's network has one hidden layer: a longer
        tuple raises :class:`ValueError`.
    alpha : float, default 0.0001
        Strength of the L2 penalty on both weight matrices (not the biases),
        scaled as scikit-learn scales it: each step minimises the minibatch's
        mean loss + (α / 2) Σ W² / B, so its gradient is (Σ_i ∇J_i + αW) / B
        over the B examples of the step.  It is :func:`fastbp.backprop`'s
        ``l2`` (whose cost is a sum, not a mean) with the step's learning
        rate divided by B.  L-BFGS minimises (J + (α/2) Σ W²) / n.
    batch_size : int or "auto", default "auto"
        Examples per SGD step; "auto" is min(200, n).  Larger than n, it is
        clipped to n with a warning.  Every example is used each epoch: the
        last minibatch holds the n mod B examples left over (when any).
        Not used by L-BFGS.
    learning_rate_init : float, default 0.5
        Constant step size η of SGD, applied to the *mean* gradient of a
        minibatch (scikit-learn's convention; :class:`fastbp.MLP`'s ``eta``
        applies to the sum, so ``eta = learning_rate_init / B``).  The
        default is larger than scikit-learn's 0.001, which is tuned for its
        Adam solver: plain SGD on sigmoid units needs larger steps.
    max_iter : int, default 200
        Most epochs (SGD) or L-BFGS iterations.
    shuffle : bool, default True
        Shuffle the examples before each SGD epoch.
    random_state : int, numpy.random.RandomState or None, default None
        Draws the initial weights, the early-stopping split and the
        shuffles, in scikit-learn's order; an int makes :meth:`fit`
        reproducible to the bit.
    solver : {"sgd", "lbfgs"}, default "sgd"
        ``"sgd"``: minibatch gradient descent at a constant learning rate,
        no momentum.  ``"lbfgs"``: SciPy's L-BFGS-B on the whole training
        set, cost and gradient from :func:`fastbp.backprop`.
    tol : float, default 1e-4
        SGD stops when the training loss (or, with ``early_stopping``, the
        validation accuracy) has not improved by at least ``tol`` for
        more than ``n_iter_no_change`` consecutive epochs.  L-BFGS: the
        projected-gradient tolerance (``gtol``).
    n_iter_no_change : int, default 10
        Epochs without improvement before SGD stops.
    early_stopping : bool, default False
        Hold out ``validation_fraction`` of the training data (stratified),
        score its accuracy after each epoch, stop when it stops improving
        and keep the best epoch's weights.  SGD only.
    validation_fraction : float, default 0.1
        Share of the training data held out for early stopping, in (0, 1).
    warm_start : bool, default False
        Start :meth:`fit` from the current weights (same classes needed).
    verbose : bool or int, default False
        Print the loss after each epoch or L-BFGS iteration.
    max_fun : int, default 15000
        Most cost evaluations of L-BFGS.
    dtype : {"float64", "float32"} or numpy float type, default "float64"
        Precision of the weights and of the arithmetic.  Inputs are
        converted to it: with "float32", float32 data stays float32.

    Attributes
    ----------
    classes_ : numpy.ndarray, shape (n_classes,)
        The class labels, sorted.
    n_features_in_ : int
        m, the number of input features.
    feature_names_in_ : numpy.ndarray of str, shape (n_features_in_,)
        Column names, when ``X`` was a DataFrame with string column names.
    coefs_ : list of two numpy.ndarray
        ``[W_h, W_out]``, shapes (m, d) and (d, t), as scikit-learn lays
        them out (t = 1 for two classes, else the number of classes).
    intercepts_ : list of two numpy.ndarray
        ``[b_h, b_out]``, shapes (d,) and (t,).
    n_layers_ : int
        3 (input, hidden, output).
    n_outputs_ : int
        t.
    out_activation_ : str
        ``"logistic"``.
    loss_ : float
        The last epoch's loss: the mean over the epoch's examples of each
        minibatch's logistic cost (before its update) + the penalty, as
        scikit-learn reports it; with L-BFGS, the final (J + (α/2) Σ W²) / n.
    loss_curve_ : list of float
        ``loss_`` after each SGD epoch (SGD only).
    best_loss_ : float or None
        The smallest ``loss_`` so far (SGD without early stopping; else None).
    validation_scores_ : list of float or None
        Validation accuracy after each epoch, with ``early_stopping``.
    best_validation_score_ : float or None
        The best of ``validation_scores_``, with ``early_stopping``.
    n_iter_ : int
        Epochs (SGD, counted over ``warm_start`` and ``partial_fit`` calls)
        or L-BFGS iterations run.
    t_ : int
        Training examples seen by SGD (n per epoch).

    Notes
    -----
    Weights start as scikit-learn starts a logistic network (Glorot
    uniform: weights and biases uniform in ±√(2 / (fan_in + fan_out))),
    drawn from ``random_state`` before anything else; with two classes and
    the same ``random_state``, training follows scikit-learn's
    ``MLPClassifier(solver="sgd", activation="logistic", momentum=0,
    learning_rate="constant")`` step for step, up to rounding.

    Sparse input is refused with a :class:`TypeError` (the kernels take
    dense arrays; convert with ``X.toarray()``).  Multilabel targets are
    not supported.
    """

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(numbers.Integral, 1, None, closed="left")],
        "alpha": [Interval(numbers.Real, 0, None, closed="left")],
        "batch_size": [
            StrOptions({"auto"}),
            Interval(numbers.Integral, 1, None, closed="left"),
        ],
        "learning_rate_init": [Interval(numbers.Real, 0, None, closed="neither")],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "solver": [StrOptions({"sgd", "lbfgs"})],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "max_fun": [Interval(numbers.Integral, 1, None, closed="left")],
        # Checked by _resolve_dtype: a name or a numpy type, in the same style of message.
        "dtype": "no_validation",
    }

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        *,
        alpha=0.0001,
        batch_size="auto",
        learning_rate_init=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        solver="sgd",
        tol=1e-4,
        n_iter_no_change=10,
        early_stopping=False,
        validation_fraction=0.1,
        warm_start=False,
        verbose=False,
        max_fun=15000,
        dtype="float64",
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.solver = solver
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.warm_start = warm_start
        self.verbose = verbose
        self.max_fun = max_fun
        self.dtype = dtype

    def __sklearn_tags__(self):
        """scikit-learn's tags: a classifier of dense, finite data, single-label."""
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        tags.classifier_tags.multi_label = False
        return tags

    # ------------------------------------------------------------------
    # Checks and set-up
    # ------------------------------------------------------------------

    def _check_params(self):
        """Validate every parameter; return (hidden units, dtype)."""
        self._validate_params()
        return _hidden_units(self.hidden_layer_sizes), _resolve_dtype(self.dtype)

    def _validate_input(self, X, y, dtype, reset):
        """X in ``dtype`` (dense, finite, 2-D) and y as a 1-D array of class labels."""
        X, y = validate_data(self, X, y, dtype=dtype, order="C", reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        return X, y

    def _targets(self, y):
        """(n, t) float targets of the labels ``y`` (all in ``classes_``), in the weights' dtype."""
        found = np.isin(y, self.classes_)
        if not np.all(found):
            unseen = np.unique(y[~found])
            raise ValueError(
                f"y has labels {unseen.tolist()} that are not among the classes "
                f"{self.classes_.tolist()} this model was set up with"
            )
        codes = np.searchsorted(self.classes_, y)
        dtype = self.coefs_[0].dtype
        if self.n_outputs_ == 1:
            return (codes == 1).astype(dtype).reshape(-1, 1)
        Y = np.zeros((codes.shape[0], self.n_outputs_), dtype=dtype)
        Y[np.arange(codes.shape[0]), codes] = 1
        return Y

    def _set_classes(self, labels, name):
        classes = np.unique(labels)
        if classes.shape[0] < 2:
            raise ValueError(
                f"{name} holds {classes.shape[0]} class ({classes.tolist()}); a classifier needs "
                "at least 2 classes"
            )
        self.classes_ = classes

    def _initialize(self, random_state, n_features, n_hidden, dtype):
        """scikit-learn's Glorot-uniform start for logistic units, and the counters."""
        n_outputs = 1 if self.classes_.shape[0] == 2 else self.classes_.shape[0]
        self.n_outputs_ = n_outputs
        self.n_layers_ = 3
        self.out_activation_ = "logistic"
        self.coefs_, self.intercepts_ = [], []
        for fan_in, fan_out in ((n_features, n_hidden), (n_hidden, n_outputs)):
            bound = np.sqrt(2.0 / (fan_in + fan_out))
            coef = random_state.uniform(-bound, bound, (fan_in, fan_out))
            intercept = random_state.uniform(-bound, bound, fan_out)
            self.coefs_.append(np.ascontiguousarray(coef, dtype=dtype))
            self.intercepts_.append(np.ascontiguousarray(intercept, dtype=dtype))
        self.n_iter_ = 0
        self.t_ = 0

    def _reset_progress(self, early_stopping):
        self.loss_curve_ = []
        if early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None
            self.best_loss_ = np.inf

    def _weights(self):
        """(W_h, b_h, W_out, b_out), C-contiguous, in place (what sgd_epoch updates)."""
        arrays = (self.coefs_[0], self.intercepts_[0], self.coefs_[1], self.intercepts_[1])
        return tuple(np.ascontiguousarray(a) for a in arrays)

    # ------------------------------------------------------------------
    # Training
    # ------------------------------------------------------------------

    def fit(self, X, y):
        """Train on (X, y): SGD for up to ``max_iter`` epochs, or L-BFGS.

        Parameters
        ----------
        X : array_like, shape (n, m)
            Training inputs (dense; DataFrames keep their column names).
        y : array_like, shape (n,)
            Class labels of any kind (integers, strings, ...), at least 2.

        Returns
        -------
        MLPClassifier
            ``self``.
        """
        n_hidden, dtype = self._check_params()
        fitted = hasattr(self, "coefs_")
        X, y = self._validate_input(X, y, dtype, reset=not (self.warm_start and fitted))
        if self.warm_start and fitted:
            classes = np.unique(y)
            if not np.array_equal(classes, self.classes_):
                raise ValueError(
                    "warm_start needs y to hold the classes of the previous fit "
                    f"{self.classes_.tolist()}; y holds {classes.tolist()}"
                )
            if self.coefs_[0].shape[1] != n_hidden or self.coefs_[0].dtype != dtype:
                raise ValueError(
                    "warm_start needs the hidden_layer_sizes and dtype of the previous fit "
                    f"({self.coefs_[0].shape[1]} units, {self.coefs_[0].dtype}); "
                    f"got {n_hidden} and {dtype}"
                )
        else:
            self._set_classes(y, "y")
            self._random_state = check_random_state(self.random_state)
            self._initialize(self._random_state, X.shape[1], n_hidden, dtype)
        if self.solver == "lbfgs":
            self._fit_lbfgs(X, self._targets(y))
        else:
            self._fit_stochastic(X, y, incremental=False)
        return self

    @available_if(_sgd_solver)
    def partial_fit(self, X, y, classes=None):
        """One SGD epoch over (X, y), from the current weights.

        Parameters
        ----------
        X : array_like, shape (n, m)
        y : array_like, shape (n,)
        classes : array_like, shape (n_classes,), optional
            Every class the model will see; needed on the first call (as in
            scikit-learn), ignored afterwards.

        Returns
        -------
        MLPClassifier
            ``self``.
        """
        n_hidden, dtype = self._check_params()
        first = not hasattr(self, "coefs_")
        if first and classes is None:
            raise ValueError(
                "classes must be passed on the first call to partial_fit "
                "(every class the model will see)"
            )
        # Later calls train the model in the dtype it has, whatever ``dtype`` says now.
        X, y = self._validate_input(X, y, dtype if first else self.coefs_[0].dtype, reset=first)
        if first:
            self._set_classes(column_or_1d(np.asarray(classes)), "classes")
            self._random_state = check_random_state(self.random_state)
            self._initialize(self._random_state, X.shape[1], n_hidden, dtype)
            self._reset_progress(early_stopping=False)
        self._fit_stochastic(X, y, incremental=True)
        return self

    def _fit_stochastic(self, X, y, incremental):
        """SGD epochs, scikit-learn's stopping rules, each epoch in compiled code."""
        early_stopping = self.early_stopping and not incremental
        if not incremental and not (self.warm_start and hasattr(self, "loss_curve_")):
            self._reset_progress(early_stopping)
        elif not hasattr(self, "loss_curve_"):  # warm start after L-BFGS
            self._reset_progress(early_stopping)
        # Going on from a fit that tracked the other criterion (warm_start or partial_fit
        # after a change of early_stopping): start tracking this one.
        if early_stopping and self.validation_scores_ is None:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
        if not early_stopping and self.best_loss_ is None:
            self.best_loss_ = np.inf
        random_state = self._random_state
        if early_stopping:
            n_valid = int(np.ceil(self.validation_fraction * X.shape[0]))
            if n_valid < self.classes_.shape[0] or X.shape[0] - n_valid < 1:
                raise ValueError(
                    f"early_stopping holds out {n_valid} of the {X.shape[0]} examples "
                    f"(validation_fraction={self.validation_fraction}), too few for "
                    f"{self.classes_.shape[0]} classes: give more data or a larger fraction"
                )
            X, X_valid, y, y_valid = train_test_split(
                X,
                y,
                random_state=random_state,
                test_size=self.validation_fraction,
                stratify=y,
            )
            X = np.ascontiguousarray(X)
        Y = self._targets(y)
        n = X.shape[0]
        if self.batch_size == "auto":
            batch_size = min(_AUTO_BATCH_SIZE, n)
        else:
            if self.batch_size > n:
                warnings.warn(
                    f"batch_size ({self.batch_size}) is larger than the {n} training examples; "
                    f"it is clipped to {n}",
                    UserWarning,
                    stacklevel=3,
                )
            batch_size = min(self.batch_size, n)
        full = (n // batch_size) * batch_size
        left_over = n - full
        W_h, b_h, W_out, b_out = weights = self._weights()
        self.coefs_, self.intercepts_ = [W_h, W_out], [b_h, b_out]
        # With early stopping, the weights kept when no epoch beats the best score so far.
        best_weights = [w.copy() for w in weights] if early_stopping else None
        sample_idx = np.arange(n)
        no_improvement = 0
        stopped = False
        for _ in range(1 if incremental else self.max_iter):
            if self.shuffle:
                # scikit-learn's shuffle(sample_idx, random_state=...): the same draws.
                permutation = np.arange(n)
                random_state.shuffle(permutation)
                sample_idx = sample_idx[permutation]
            # Mean gradients, as scikit-learn steps: η / B on fastbp's sums.
            total_cost = sgd_epoch(
                X,
                Y,
                *weights,
                sample_idx[:full],
                self.learning_rate_init / batch_size,
                batch_size,
                self.alpha,
            )
            if left_over:
                total_cost += sgd_epoch(
                    X,
                    Y,
                    *weights,
                    sample_idx[full:],
                    self.learning_rate_init / left_over,
                    left_over,
                    self.alpha,
                )
            loss = total_cost / n
            # Weights that overflow make the next epoch's cost NaN or inf; the last epoch's
            # weights are checked after the loop.
            if not np.isfinite(loss):
                self._diverged(self.n_iter_ + 1, loss)
            self.n_iter_ += 1
            self.t_ += n
            self.loss_ = loss
            self.loss_curve_.append(loss)
            if self.verbose:
                print(f"Iteration {self.n_iter_}, loss = {loss:.8f}")
            if early_stopping:
                score = float(np.mean(self.predict(X_valid) == y_valid))
                self.validation_scores_.append(score)
                if self.verbose:
                    print(f"Validation score: {score:f}")
                if score < self.best_validation_score_ + self.tol:
                    no_improvement += 1
                else:
                    no_improvement = 0
                if score > self.best_validation_score_:
                    self.best_validation_score_ = score
                    best_weights = [w.copy() for w in weights]
            else:
                if loss > self.best_loss_ - self.tol:
                    no_improvement += 1
                else:
                    no_improvement = 0
                if loss < self.best_loss_:
                    self.best_loss_ = loss
            if no_improvement > self.n_iter_no_change:
                if self.verbose:
                    what = "Validation score" if early_stopping else "Training loss"
                    print(
                        f"{what} did not improve more than tol={self.tol} for "
                        f"{self.n_iter_no_change} consecutive epochs. Stopping."
                    )
                stopped = True
                break
        if not all(np.all(np.isfinite(w)) for w in weights):
            self._diverged(self.n_iter_, self.loss_)
        if early_stopping:
            for w, best in zip(weights, best_weights):
                np.copyto(w, best)
        if not incremental and not stopped:
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the "
                "optimization hasn't converged yet.",
                ConvergenceWarning,
                stacklevel=3,
            )

    def _diverged(self, epoch, loss):
        # Weights that are no longer finite describe no model: leave it unfitted.
        del self.coefs_, self.intercepts_
        raise ValueError(
            f"training diverged by epoch {epoch} (loss {loss}, or weights that are "
            f"not finite): lower learning_rate_init ({self.learning_rate_init}) or scale the "
            "inputs; the model is left unfitted"
        )

    def _fit_lbfgs(self, X, Y):
        """Minimise (J + (α/2) Σ W²) / n with L-BFGS-B, cost and gradient from backprop."""
        weights = self._weights()
        shapes = [w.shape for w in weights]
        dtype = weights[0].dtype
        n = X.shape[0]

        def objective(x):
            result = backprop(X, Y, *_unpack(x, shapes, dtype), self.alpha)
            gradient = _pack(result.grad_W_h, result.grad_b_h, result.grad_W_out, result.grad_b_out)
            return float(result.cost) / n, gradient / n

        iteration = 0

        def report(intermediate_result):
            nonlocal iteration
            iteration += 1
            print(f"Iteration {iteration}, loss = {intermediate_result.fun:.8f}")

        result = minimize(
            objective,
            _pack(*weights),
            method="L-BFGS-B",
            jac=True,
            callback=report if self.verbose else None,
            options={"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol},
        )
        if result.status != 0:
            warnings.warn(
                f"lbfgs failed to converge (status={result.status}): {result.message}",
                ConvergenceWarning,
                stacklevel=3,
            )
        W_h, b_h, W_out, b_out = _unpack(result.x, shapes, dtype)
        self.coefs_, self.intercepts_ = [W_h, W_out], [b_h, b_out]
        self.n_iter_ = int(result.nit)
        self.loss_ = float(result.fun)
        # The SGD-only progress attributes describe no L-BFGS fit.
        for name in ("loss_curve_", "best_loss_", "validation_scores_", "best_validation_score_"):
            if hasattr(self, name):
                delattr(self, name)

    # ------------------------------------------------------------------
    # Prediction
    # ------------------------------------------------------------------

    def _check_X(self, X):
        check_is_fitted(self, "coefs_")
        return validate_data(self, X, dtype=self.coefs_[0].dtype, order="C", reset=False)

    def predict_sigmoid(self, X):
        """The network's raw sigmoid outputs A_out, not normalised.

        Parameters
        ----------
        X : array_like, shape (n, m)

        Returns
        -------
        numpy.ndarray, shape (n, t)
            t = 1 for two classes (the probability of ``classes_[1]``), else
            one column per class; each in [0, 1], rows not summing to one.
        """
        X = self._check_X(X)
        return forward(X, self.coefs_[0], self.intercepts_[0], self.coefs_[1], self.intercepts_[1])[
            1
        ]

    def predict_proba(self, X):
        """Class probabilities: the sigmoid outputs normalised to sum to one.

        Parameters
        ----------
        X : array_like, shape (n, m)

        Returns
        -------
        numpy.ndarray, shape (n, n_classes)
            Two classes: [1 − p, p] with p the single output.  More: each
            row of :meth:`predict_sigmoid` divided by its sum; a row whose
            outputs all underflow to 0 is normalised in the log domain
            instead, from the same logits, so no row is NaN.
        """
        X = self._check_X(X)
        W_h, b_h, W_out, b_out = self._weights()
        A_h, A_out = forward(X, W_h, b_h, W_out, b_out)
        if self.n_outputs_ == 1:
            p = A_out[:, 0]
            return np.column_stack([1 - p, p])
        totals = A_out.sum(axis=1, keepdims=True)
        underflowed = totals[:, 0] == 0
        with np.errstate(invalid="ignore", divide="ignore"):
            proba = A_out / totals
        if np.any(underflowed):
            z_out = A_h[underflowed].astype(np.float64) @ W_out + b_out
            log_outputs = log_expit(z_out)
            relative = np.exp(log_outputs - log_outputs.max(axis=1, keepdims=True))
            proba[underflowed] = relative / relative.sum(axis=1, keepdims=True)
        return proba

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba` (−inf where a probability is 0).

        Parameters
        ----------
        X : array_like, shape (n, m)

        Returns
        -------
        numpy.ndarray, shape (n, n_classes)
        """
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        """The most probable class of each row.

        Parameters
        ----------
        X : array_like, shape (n, m)

        Returns
        -------
        numpy.ndarray, shape (n,)
            Labels from ``classes_``.
        """
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]
