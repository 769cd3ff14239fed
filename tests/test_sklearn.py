"""fastbp.sklearn.MLPClassifier: scikit-learn's own checks, the training it stands for, its API."""

import os
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier as SklearnMLPClassifier  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import fastbp  # noqa: E402
from fastbp.datasets import load_digits  # noqa: E402
from fastbp.sklearn import MLPClassifier  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _as_list(mark):
    """parametrize_with_checks's mark with its checks in a list: scikit-learn 1.6 passes a
    generator, which pytest 9 deprecates (an error under this suite's warning filter)."""
    names, values = mark.args
    return pytest.mark.parametrize(names, list(values), **mark.kwargs)


CHECKS = _as_list(
    parametrize_with_checks([MLPClassifier(hidden_layer_sizes=(20,), max_iter=100, random_state=0)])
)


# A short max_iter keeps the checks quick; stopping there is what ConvergenceWarning
# reports, not a failure of any check.
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@CHECKS
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_array_api_check_with_scipy_array_api():
    # scikit-learn skips its array-API input check unless SCIPY_ARRAY_API=1 is set before
    # SciPy is imported: run that one check in a process of its own, so none is left out.
    if not any("check_array_api_input" in str(check) for _, check in CHECKS.args[1]):
        pytest.skip(f"scikit-learn {sklearn.__version__} yields no array-API check")
    env = dict(os.environ, SCIPY_ARRAY_API="1")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"]
        + ["-k", "check_array_api_input", "-rs", os.path.abspath(__file__)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout and "skipped" not in result.stdout, result.stdout


def _run_python(code):
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_import_fastbp_does_not_import_sklearn():
    result = _run_python(
        "import sys, fastbp; print('sklearn' in sys.modules, 'fastbp.sklearn' in sys.modules)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


def test_missing_sklearn_names_the_extra():
    result = _run_python("import sys; sys.modules['sklearn'] = None; import fastbp.sklearn")
    assert result.returncode != 0
    assert "pip install 'fastbp[sklearn]'" in result.stderr
    assert "ImportError" in result.stderr


def test_old_sklearn_is_refused():
    result = _run_python("import sklearn; sklearn.__version__ = '1.5.2'; import fastbp.sklearn")
    assert result.returncode != 0
    assert "scikit-learn >= 1.6, found 1.5.2" in result.stderr


# --------------------------------------------------------------------------
# The training it stands for
# --------------------------------------------------------------------------


def _blobs(n, m, n_classes, seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2, (n_classes, m))
    y = rng.integers(0, n_classes, n)
    X = centres[y] + rng.normal(0, 1, (n, m))
    return X, y


def _reference_sgd(X, y, classes, hidden, lr, alpha, batch, epochs, seed, dtype):
    """Epochs as scikit-learn runs them, each step a plain fastbp.backprop call.

    The start and the shuffles draw from RandomState(seed) in scikit-learn's order; each step
    is W -= (lr / B) (Σ ∇J + αW) over its B examples (the left-over ones last).
    Returns the weights and each epoch's loss (Σ steps' costs / n).
    """
    rs = np.random.RandomState(seed)
    codes = np.searchsorted(classes, y)
    t = 1 if len(classes) == 2 else len(classes)
    if t == 1:
        Y = (codes == 1).astype(dtype).reshape(-1, 1)
    else:
        Y = np.eye(t, dtype=dtype)[codes]
    weights = []
    for fan_in, fan_out in ((X.shape[1], hidden), (hidden, t)):
        bound = np.sqrt(2.0 / (fan_in + fan_out))
        weights.append(rs.uniform(-bound, bound, (fan_in, fan_out)).astype(dtype))
        weights.append(rs.uniform(-bound, bound, fan_out).astype(dtype))
    W_h, b_h, W_out, b_out = weights[0], weights[1], weights[2], weights[3]
    X = X.astype(dtype)
    n = X.shape[0]
    idx = np.arange(n)
    losses = []
    for _ in range(epochs):
        permutation = np.arange(n)
        rs.shuffle(permutation)
        idx = idx[permutation]
        total = 0.0
        for start in range(0, n, batch):
            rows = idx[start : start + batch]
            result = fastbp.backprop(X[rows], Y[rows], W_h, b_h, W_out, b_out, alpha)
            total += float(result.cost)
            eta = dtype(lr / rows.shape[0])
            W_h -= eta * result.grad_W_h
            b_h -= eta * result.grad_b_h
            W_out -= eta * result.grad_W_out
            b_out -= eta * result.grad_b_out
        losses.append(total / n)
    return (W_h, b_h, W_out, b_out), losses


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_classes", [2, 4])
def test_fit_is_fastbp_sgd_bit_for_bit(dtype, n_classes):
    # 103 examples in minibatches of 16: six full steps and a left-over step of 7 per epoch.
    X, y = _blobs(103, 5, n_classes, seed=n_classes)
    labels = np.array([3, 10, 42, 77])[:n_classes][y]  # non-contiguous integer labels
    model = MLPClassifier(
        hidden_layer_sizes=7,
        alpha=0.01,
        batch_size=16,
        learning_rate_init=0.3,
        max_iter=4,
        random_state=5,
        dtype=dtype,
    )
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        model.fit(X, labels)
    classes = np.unique(labels)
    expected, losses = _reference_sgd(X, labels, classes, 7, 0.3, 0.01, 16, 4, 5, dtype)
    got = (model.coefs_[0], model.intercepts_[0], model.coefs_[1], model.intercepts_[1])
    for a, b in zip(got, expected):
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, b)
    if dtype == np.float64:
        # The losses are sums of the same float64 costs, added in the same order.
        assert model.loss_curve_ == losses
        assert model.loss_ == losses[-1]
    else:
        # sgd_epoch adds each step's cost in float64; backprop returns it rounded to float32,
        # so each (positive) term of the reference is off by at most u = 2^-24 of itself.
        np.testing.assert_allclose(model.loss_curve_, losses, rtol=2.0**-24, atol=0)
    assert model.n_iter_ == 4 and model.t_ == 4 * 103
    assert model.best_loss_ == min(model.loss_curve_)


def test_binary_follows_sklearn_sgd_step_for_step():
    # Two classes: one logistic output, scikit-learn's own binary model.  Same start, same
    # shuffles, same steps (momentum 0, constant rate), so the weights agree to rounding.
    X, y = _blobs(90, 6, 2, seed=11)
    X = StandardScaler().fit_transform(X)
    settings = dict(
        hidden_layer_sizes=(9,),
        alpha=0.001,
        batch_size=20,
        learning_rate_init=0.2,
        max_iter=5,
        random_state=3,
        tol=0.0,
        n_iter_no_change=100,
    )
    ours = MLPClassifier(**settings)
    theirs = SklearnMLPClassifier(
        solver="sgd", activation="logistic", momentum=0.0, learning_rate="constant", **settings
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours.fit(X, y)
        theirs.fit(X, y)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-12)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=0, atol=1e-12)


def test_random_state_reproduces_bits_and_seeds_differ():
    X, y = _blobs(80, 4, 3, seed=0)
    settings = dict(hidden_layer_sizes=6, max_iter=3, batch_size=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = MLPClassifier(random_state=7, **settings).fit(X, y)
        b = MLPClassifier(random_state=7, **settings).fit(X, y)
        c = MLPClassifier(random_state=8, **settings).fit(X, y)
    for wa, wb in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(a.coefs_[0], c.coefs_[0])


def test_stops_after_n_iter_no_change_without_warning():
    X, y = _blobs(60, 3, 2, seed=1)
    # A tolerance no epoch can beat: the first epoch improves on inf, then n_iter_no_change + 1
    # epochs without improvement end the run.
    model = MLPClassifier(hidden_layer_sizes=4, tol=1e9, n_iter_no_change=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(X, y)
    assert model.n_iter_ == 5
    assert len(model.loss_curve_) == 5


def test_early_stopping_keeps_the_best_epoch():
    X, y = _blobs(200, 4, 3, seed=2)
    model = MLPClassifier(
        hidden_layer_sizes=5,
        early_stopping=True,
        validation_fraction=0.25,
        n_iter_no_change=2,
        learning_rate_init=2.0,
        max_iter=60,
        random_state=4,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    # The held-out rows, drawn as the estimator draws them: after the four starting draws.
    rs = np.random.RandomState(4)
    for fan_in, fan_out in ((4, 5), (5, 3)):
        bound = np.sqrt(2.0 / (fan_in + fan_out))
        rs.uniform(-bound, bound, (fan_in, fan_out))
        rs.uniform(-bound, bound, fan_out)
    _, X_valid, _, y_valid = train_test_split(X, y, random_state=rs, test_size=0.25, stratify=y)
    assert len(model.validation_scores_) == model.n_iter_
    assert model.best_validation_score_ == max(model.validation_scores_)
    assert model.score(X_valid, y_valid) == model.best_validation_score_
    assert model.best_loss_ is None
    assert model.t_ == model.n_iter_ * (200 - 50)


def test_early_stopping_with_too_few_held_out_examples():
    X, y = _blobs(20, 3, 4, seed=2)
    model = MLPClassifier(early_stopping=True, validation_fraction=0.1)
    with pytest.raises(ValueError, match="early_stopping holds out 2 of the 20 examples"):
        model.fit(X, y)


def test_partial_fit_is_one_epoch_of_fit():
    X, y = _blobs(70, 4, 3, seed=5)
    settings = dict(hidden_layer_sizes=6, batch_size=8, random_state=9)
    with pytest.warns(ConvergenceWarning):
        whole = MLPClassifier(max_iter=1, **settings).fit(X, y)
    part = MLPClassifier(**settings).partial_fit(X, y, classes=[0, 1, 2])
    for a, b in zip(whole.coefs_ + whole.intercepts_, part.coefs_ + part.intercepts_):
        np.testing.assert_array_equal(a, b)
    part.partial_fit(X[:30], y[:30])
    assert part.n_iter_ == 2 and part.t_ == 100 and len(part.loss_curve_) == 2


def test_partial_fit_errors():
    X, y = _blobs(30, 3, 3, seed=5)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        MLPClassifier().partial_fit(X, y)
    model = MLPClassifier(hidden_layer_sizes=3).partial_fit(X, y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match=r"labels \[7\] that are not among the classes"):
        model.partial_fit(X, np.where(y == 2, 7, y))
    with pytest.raises(ValueError, match="X has 2 features, but MLPClassifier is expecting 3"):
        model.partial_fit(X[:, :2], y)
    lbfgs = MLPClassifier(solver="lbfgs")
    assert not hasattr(lbfgs, "partial_fit")
    with pytest.raises(AttributeError, match="has no attribute 'partial_fit'"):
        lbfgs.partial_fit(X, y, classes=[0, 1, 2])


def test_warm_start_continues_from_the_weights():
    X, y = _blobs(60, 3, 3, seed=6)
    settings = dict(hidden_layer_sizes=4, max_iter=3, random_state=0, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        cold = MLPClassifier(**settings).fit(X, y)
        warm = MLPClassifier(warm_start=True, **settings).fit(X, y)
        start = [w.copy() for w in warm.coefs_]
        warm.fit(X, y)
        assert warm.n_iter_ == 6 and len(warm.loss_curve_) == 6
        assert not np.array_equal(warm.coefs_[0], start[0])
        # Another cold fit starts again from the random start: cold's weights.
        refit = MLPClassifier(**settings).fit(X, y).fit(X, y)
    np.testing.assert_array_equal(refit.coefs_[0], cold.coefs_[0])
    with pytest.raises(ValueError, match="warm_start needs y to hold the classes"):
        warm.fit(X[y < 2], y[y < 2])


def test_lbfgs_minimises_the_mean_cost():
    X, y = _blobs(120, 4, 3, seed=8)
    model = MLPClassifier(hidden_layer_sizes=5, solver="lbfgs", alpha=0.01, random_state=1)
    model.fit(X, y)
    Y = np.eye(3)[np.searchsorted(model.classes_, y)]
    result = fastbp.backprop(
        X, Y, model.coefs_[0], model.intercepts_[0], model.coefs_[1], model.intercepts_[1], 0.01
    )
    np.testing.assert_allclose(model.loss_, float(result.cost) / 120, rtol=1e-12)
    # At L-BFGS's stopping point the mean gradient is below tol (SciPy's gtol: the largest entry).
    gradient = np.concatenate([np.ravel(g) for g in result[1:]]) / 120
    assert np.max(np.abs(gradient)) <= model.tol
    assert 1 <= model.n_iter_ <= model.max_iter
    assert not hasattr(model, "loss_curve_") and not hasattr(model, "best_loss_")
    assert model.score(X, y) > 0.9


def test_lbfgs_warns_when_stopped_by_max_iter():
    X, y = _blobs(50, 3, 2, seed=8)
    with pytest.warns(ConvergenceWarning, match="lbfgs failed to converge"):
        MLPClassifier(hidden_layer_sizes=3, solver="lbfgs", max_iter=2).fit(X, y)


def test_divergence_is_an_error():
    X, y = _blobs(40, 3, 3, seed=9)
    X = X * 1e200
    with pytest.raises(ValueError, match="training diverged by epoch .*lower learning_rate_init"):
        MLPClassifier(hidden_layer_sizes=3, learning_rate_init=1e200).fit(X, y)


def test_batch_size_larger_than_n_is_clipped_with_a_warning():
    X, y = _blobs(30, 3, 2, seed=1)
    with pytest.warns(UserWarning, match=r"batch_size \(50\) is larger than the 30"):
        MLPClassifier(batch_size=50, tol=1e9, n_iter_no_change=1).fit(X, y)


# --------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, message",
    [
        ({"hidden_layer_sizes": (10, 10)}, "exactly one hidden layer"),
        ({"hidden_layer_sizes": ()}, "exactly one hidden layer"),
        ({"hidden_layer_sizes": (0,)}, "positive number of hidden units"),
        ({"hidden_layer_sizes": (2.5,)}, "positive number of hidden units"),
        ({"dtype": "float16"}, "'dtype' parameter of MLPClassifier must be float32 or float64"),
        ({"dtype": "int"}, "'dtype' parameter of MLPClassifier must be float32 or float64"),
        ({"learning_rate_init": 0.0}, "'learning_rate_init' parameter"),
        ({"learning_rate_init": "0.1"}, "'learning_rate_init' parameter"),
        ({"alpha": -1.0}, "'alpha' parameter"),
        ({"solver": "adam"}, "'solver' parameter"),
        ({"batch_size": 0}, "'batch_size' parameter"),
        ({"max_iter": 0}, "'max_iter' parameter"),
        ({"validation_fraction": 1.0}, "'validation_fraction' parameter"),
        ({"n_iter_no_change": 0}, "'n_iter_no_change' parameter"),
    ],
)
def test_bad_parameters_are_refused_at_fit_not_init(params, message):
    X, y = _blobs(20, 3, 2, seed=0)
    model = MLPClassifier(**params)  # __init__ only stores
    assert model.get_params()[next(iter(params))] is next(iter(params.values()))
    with pytest.raises(ValueError, match=message):
        model.fit(X, y)


def test_one_class_is_refused():
    X, y = _blobs(20, 3, 2, seed=0)
    with pytest.raises(ValueError, match=r"y holds 1 class \(\['a'\]\)"):
        MLPClassifier().fit(X, np.full(20, "a"))


def test_sparse_input_is_refused():
    scipy_sparse = pytest.importorskip("scipy.sparse")
    X, y = _blobs(20, 3, 2, seed=0)
    with pytest.raises(TypeError, match="Sparse data was passed"):
        MLPClassifier().fit(scipy_sparse.csr_matrix(X), y)


# --------------------------------------------------------------------------
# Outputs: labels, probabilities, dtypes
# --------------------------------------------------------------------------


@pytest.mark.parametrize("labels", [["cat", "dog"], ["x", "y", "z"], [-5, 2, 1000]])
def test_labels_of_any_kind(labels):
    X, y = _blobs(90, 4, len(labels), seed=3)
    y_labels = np.asarray(labels, dtype=object if isinstance(labels[0], str) else None)[y]
    model = MLPClassifier(hidden_layer_sizes=8, learning_rate_init=1.0, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y_labels)
    assert list(model.classes_) == sorted(labels)
    predicted = model.predict(X)
    assert set(predicted) <= set(labels)
    assert model.score(X, y_labels) > 0.9
    proba = model.predict_proba(X)
    assert proba.shape == (90, len(labels))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-14)
    np.testing.assert_array_equal(predicted, model.classes_[np.argmax(proba, axis=1)])
    outputs = model.predict_sigmoid(X)
    if len(labels) == 2:
        assert model.coefs_[1].shape == (8, 1) and outputs.shape == (90, 1)
        np.testing.assert_array_equal(proba[:, 1], outputs[:, 0])
        np.testing.assert_array_equal(proba[:, 0], 1 - outputs[:, 0])
    else:
        assert model.coefs_[1].shape == (8, len(labels))
        np.testing.assert_array_equal(proba, outputs / outputs.sum(axis=1, keepdims=True))
    np.testing.assert_array_equal(model.predict_log_proba(X), np.log(proba))


def test_predict_proba_when_every_output_underflows():
    X, y = _blobs(30, 3, 3, seed=4)
    model = MLPClassifier(hidden_layer_sizes=4, tol=1e9, n_iter_no_change=1)
    model.fit(X, y)
    # Biases far below where a float64 sigmoid underflows: every output is exactly 0.
    model.intercepts_[1][:] = [-2000.0, -1990.0, -2010.0]
    assert np.all(model.predict_sigmoid(X) == 0)
    proba = model.predict_proba(X)
    assert np.all(np.isfinite(proba))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-14)
    # log σ(z) = z − log(1 + e^z) is z to the last bit this far down: the softmax of the logits.
    A_h = fastbp.forward(
        X, model.coefs_[0], model.intercepts_[0], model.coefs_[1], model.intercepts_[1]
    )[0]
    z = A_h @ model.coefs_[1] + model.intercepts_[1]
    expected = np.exp(z - z.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(proba, expected, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(model.predict(X), np.argmax(z, axis=1))


@pytest.mark.parametrize("data_dtype", [np.float32, np.float64, np.int64])
def test_float32_model_stays_float32(data_dtype):
    X, y = _blobs(50, 4, 3, seed=1)
    X = (X * 10).astype(data_dtype)
    model = MLPClassifier(hidden_layer_sizes=5, dtype="float32", tol=1e9, n_iter_no_change=1)
    model.fit(X, y)
    for w in model.coefs_ + model.intercepts_:
        assert w.dtype == np.float32
    assert model.predict_sigmoid(X).dtype == np.float32
    assert model.predict_proba(X).dtype == np.float32


def test_numpy_types_as_dtype():
    X, y = _blobs(30, 3, 2, seed=1)
    model = MLPClassifier(hidden_layer_sizes=3, dtype=np.float32, tol=1e9, n_iter_no_change=1)
    assert model.fit(X, y).coefs_[0].dtype == np.float32


def test_verbose_prints_the_loss(capsys):
    X, y = _blobs(30, 3, 2, seed=1)
    MLPClassifier(hidden_layer_sizes=3, verbose=True, tol=1e9, n_iter_no_change=1).fit(X, y)
    out = capsys.readouterr().out
    assert "Iteration 1, loss = " in out and "Training loss did not improve" in out


# --------------------------------------------------------------------------
# Use with scikit-learn's tools (the examples of docs/sklearn.md)
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits()
    return train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)


# Training to max_iter (no early stopping) ends with a ConvergenceWarning, as in scikit-learn.
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_pipeline_and_grid_search_on_threads(digits):
    from joblib import parallel_config

    X_train, X_test, y_train, y_test = digits
    pipe = make_pipeline(StandardScaler(), MLPClassifier(batch_size=32, random_state=0))
    grid = {
        "mlpclassifier__alpha": [1e-4, 1e-2],
        "mlpclassifier__hidden_layer_sizes": [(30,), (60,)],
    }
    with parallel_config(backend="threading"):
        search = GridSearchCV(pipe, grid, cv=3, n_jobs=2).fit(X_train, y_train)
    assert search.best_estimator_.score(X_test, y_test) > 0.93
    # The same search on one thread: the same scores, as each fit is deterministic.
    serial = GridSearchCV(pipe, grid, cv=3, n_jobs=1).fit(X_train, y_train)
    np.testing.assert_array_equal(
        search.cv_results_["mean_test_score"], serial.cv_results_["mean_test_score"]
    )


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_cross_val_score(digits):
    X_train, _, y_train, _ = digits
    model = MLPClassifier(hidden_layer_sizes=(40,), batch_size=32, random_state=0)
    scores = cross_val_score(model, X_train, y_train, cv=3)
    assert scores.shape == (3,) and np.all(scores > 0.9)


def test_clone_and_pickle(digits):
    X_train, X_test, y_train, _ = digits
    model = MLPClassifier(hidden_layer_sizes=(30,), alpha=0.01, random_state=2, max_iter=20)
    copy = clone(model)
    assert copy.get_params() == model.get_params() and not hasattr(copy, "coefs_")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X_train, y_train)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.predict_proba(X_test), model.predict_proba(X_test))
    np.testing.assert_array_equal(restored.predict(X_test), model.predict(X_test))
    # Training goes on from the restored state as from the original.
    restored.partial_fit(X_train, y_train)
    model.partial_fit(X_train, y_train)
    np.testing.assert_array_equal(restored.coefs_[0], model.coefs_[0])


def test_dataframe_input_keeps_feature_names(digits):
    pd = pytest.importorskip("pandas")
    X_train, X_test, y_train, _ = digits
    columns = [f"pixel_{i}" for i in range(64)]
    frame = pd.DataFrame(X_train, columns=columns)
    model = MLPClassifier(hidden_layer_sizes=(20,), max_iter=5, tol=1e9, n_iter_no_change=1)
    model.fit(frame, pd.Series(y_train))
    assert list(model.feature_names_in_) == columns
    from_frame = model.predict(pd.DataFrame(X_test, columns=columns))
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        from_array = model.predict(X_test)
    np.testing.assert_array_equal(from_frame, from_array)
    with pytest.raises(ValueError, match="feature names"):
        model.predict(pd.DataFrame(X_test, columns=columns[::-1]))


def test_readme_example_runs_as_written(capsys):
    with open(os.path.join(ROOT, "docs", "sklearn.md"), encoding="utf-8") as handle:
        text = handle.read()
    block = text.split("<!-- sklearn-example -->\n```python\n", 1)[1].split("```", 1)[0]
    namespace = {}
    exec(compile(block, "docs/sklearn.md (sklearn example)", "exec"), namespace)
    assert namespace["search"].score(namespace["X_test"], namespace["y_test"]) > 0.93
    assert namespace["proba"].shape == (450, 10)
    np.testing.assert_allclose(namespace["proba"].sum(axis=1), 1.0, rtol=1e-14)
    best, score = capsys.readouterr().out.splitlines()[0].rsplit(" ", 1)
    assert "mlpclassifier__alpha" in best and 0.93 < float(score) <= 1.0


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_warm_start_and_partial_fit_across_early_stopping_settings():
    X, y = _blobs(200, 4, 3, seed=2)
    settings = dict(hidden_layer_sizes=5, random_state=0, learning_rate_init=2.0, max_iter=8)
    # Refit with early stopping: no epoch may beat the score kept from the first fit.
    model = MLPClassifier(early_stopping=True, warm_start=True, **settings).fit(X, y)
    model.fit(X, y)
    assert len(model.validation_scores_) == model.n_iter_
    # partial_fit after an early-stopping fit tracks the training loss from then on.
    model.partial_fit(X, y)
    assert model.best_loss_ == model.loss_curve_[-1]
    # A warm start that turns early stopping on starts its scores.
    plain = MLPClassifier(**settings).fit(X, y)
    plain.set_params(warm_start=True, early_stopping=True)
    plain.fit(X, y)
    assert len(plain.validation_scores_) >= 1


def test_partial_fit_keeps_the_models_dtype():
    X, y = _blobs(60, 4, 3, seed=3)
    a = MLPClassifier(hidden_layer_sizes=4, random_state=0).partial_fit(X, y, classes=[0, 1, 2])
    b = MLPClassifier(hidden_layer_sizes=4, random_state=0).partial_fit(X, y, classes=[0, 1, 2])
    b.set_params(dtype="float32")
    a.partial_fit(X, y)
    b.partial_fit(X, y)  # still a float64 model, trained on float64 data
    for wa, wb in zip(a.coefs_, b.coefs_):
        assert wb.dtype == np.float64
        np.testing.assert_array_equal(wa, wb)


def test_a_diverged_model_is_left_unfitted():
    from sklearn.exceptions import NotFittedError

    X, y = _blobs(40, 3, 3, seed=9)
    model = MLPClassifier(hidden_layer_sizes=3, learning_rate_init=1e200)
    with pytest.raises(ValueError, match="the model is left unfitted"):
        model.fit(X * 1e200, y)
    with pytest.raises(NotFittedError):
        model.predict(X)
