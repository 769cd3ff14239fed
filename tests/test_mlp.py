"""fastbp.MLP against a NumPy transcription of the book's NeuralNetMLP."""

import numpy as np
import pytest

from fastbp import MLP
from fastbp.datasets import load_digits

from reference import (
    book_initial_weights,
    book_minibatches,
    book_one_hot,
    book_step,
    small_problem,
    step_rounding_bound,
)


def record_epochs(monkeypatch):
    """Wrap the SGD solver's compiled epochs (sgd_epoch's) to keep their arguments and results.

    Returns the records and fastbp.sgd_epoch, the public function of the same epoch.
    """
    from fastbp import _solvers, sgd_epoch

    records = []
    real = _solvers._run_epoch

    def epoch(X, Y, order, minibatch_size, weights, eta, l2, correct, **options):
        before = tuple(a.copy() for a in weights)
        result = real(X, Y, order, minibatch_size, weights, eta, l2, correct, **options)
        after = tuple(a.copy() for a in weights)
        records.append((X.copy(), Y.copy(), order.copy(), before, after))
        return result

    monkeypatch.setattr(_solvers, "_run_epoch", epoch)
    return records, sgd_epoch


@pytest.mark.parametrize(
    "shuffle, minibatch_size, l2", [(False, 5, 0.0), (True, 4, 0.3), (True, 1, 0.01)]
)
def test_every_step_matches_the_book_within_rounding(monkeypatch, shuffle, minibatch_size, l2):
    X, y = small_problem()
    n, m = X.shape
    d, t, eta, epochs, seed = 4, 3, 0.05, 3, 42
    model = MLP(
        n_hidden=d,
        l2=l2,
        epochs=epochs,
        eta=eta,
        minibatch_size=minibatch_size,
        shuffle=shuffle,
        seed=seed,
    )
    records, sgd_epoch = record_epochs(monkeypatch)
    model.fit(X, y)

    # The same generator draws: initial weights (bitwise), then each epoch's order.
    rng = np.random.default_rng(seed)
    initial = book_initial_weights(rng, m, d, t)
    Y = book_one_hot(y, t)
    assert len(records) == epochs
    for a, b in zip(records[0][3], initial):
        assert np.array_equal(a, b)

    steps = 0
    for X_seen, Y_seen, order, before, after in records:
        assert np.array_equal(X_seen, X) and np.array_equal(Y_seen, Y)
        batches = book_minibatches(n, minibatch_size, shuffle, rng)
        # The epoch walks exactly the book's minibatches: replay it one step at a
        # time (sgd_epoch on one minibatch) and hold every step to the book's.
        weights = before
        for batch in batches:
            new = tuple(a.copy() for a in weights)
            sgd_epoch(X, Y, *new, batch, eta, minibatch_size, l2)
            expected = book_step(X[batch], Y[batch], *weights, eta, l2)
            bounds = step_rounding_bound(X[batch], Y[batch], *weights, eta, l2, np.float64)
            for ours, theirs, bound in zip(new, expected, bounds):
                assert np.all(np.abs(ours - theirs) <= bound)
            weights = new
            steps += 1
        assert np.array_equal(np.concatenate(batches), order[: len(batches) * minibatch_size])
        # One call over the epoch has the bits of the steps taken one by one.
        for a, b in zip(weights, after):
            assert np.array_equal(a, b)
    assert steps == epochs * (n // minibatch_size)
    # And each epoch starts where the previous one ended.
    for previous, current in zip(records, records[1:]):
        for a, b in zip(previous[4], current[3]):
            assert np.array_equal(a, b)
    for a, b in zip(records[-1][4], (model.W_h, model.b_h, model.W_out, model.b_out)):
        assert np.array_equal(a, b)


def test_whole_run_tracks_the_book():
    """End to end, no hooks: 24 steps from the same start stay within 1e-12."""
    X, y = small_problem(1)
    n, m = X.shape
    d, t, eta, l2, size, epochs, seed = 5, 3, 0.05, 0.1, 3, 3, 7
    model = MLP(n_hidden=d, l2=l2, epochs=epochs, eta=eta, minibatch_size=size, seed=seed).fit(X, y)
    rng = np.random.default_rng(seed)
    weights = book_initial_weights(rng, m, d, t)
    Y = book_one_hot(y, t)
    for _ in range(epochs):
        for batch in book_minibatches(n, size, True, rng):
            weights = book_step(X[batch], Y[batch], *weights, eta, l2)
    # The rigorous check is the per-step test above; this one, with no
    # hooks, checks the wiring end to end.  Rounding differs by ≈ 1e-16 per
    # step; a wrong example, order or update is off by η|g| ≈ 1e-3 or more.
    # 1e-12 separates the two by four orders of magnitude on each side.
    for ours, theirs in zip((model.W_h, model.b_h, model.W_out, model.b_out), weights):
        assert np.max(np.abs(ours - theirs)) <= 1e-12


def test_init_is_copied_not_modified():
    X, y = small_problem()
    rng = np.random.default_rng(3)
    init = book_initial_weights(rng, X.shape[1], 4, 3)
    copies = [a.copy() for a in init]
    model = MLP(n_hidden=4, epochs=2, eta=0.05, minibatch_size=5, shuffle=False).fit(
        X, y, init=init
    )
    for a, b in zip(init, copies):
        assert np.array_equal(a, b)
    assert not np.array_equal(model.W_h, init[0])


@pytest.mark.parametrize("n_threads", [1, 2])
def test_history_and_callback(n_threads):
    # SGD's history comes from the epoch's own steps: replayed here as a loop over backprop
    # (shuffle off, so the order is 0..n−1): Σ of each step's data cost J at the weights of its
    # step, plus (λ/2)ΣW² after the epoch, and the share of the stepped examples whose largest
    # output was their label at their step.  On two threads each step is shared (n·m·d is
    # large enough): the same history.
    from fastbp import backprop, forward, l2_penalty

    X, y = small_problem(n=50, m=40, t=3)
    train, valid = slice(0, 38), slice(38, 50)
    Y = np.eye(3)[y[train]]
    rng = np.random.default_rng(1)
    init = (rng.normal(0, 0.1, (40, 500)), np.zeros(500), rng.normal(0, 0.1, (500, 3)), np.zeros(3))
    seen = []
    weights_after = []

    def callback(epoch, model):
        seen.append((epoch, len(model.history_["cost"])))
        weights = (model.W_h, model.b_h, model.W_out, model.b_out)
        weights_after.append(tuple(a.copy() for a in weights))

    model = MLP(n_hidden=500, epochs=3, eta=0.05, minibatch_size=16, seed=0, l2=0.2,
                shuffle=False, n_threads=n_threads)  # fmt: skip
    assert 16 * 40 * 500 >= 2**18  # enough work to share a step between threads
    model.fit(X[train], y[train], X[valid], y[valid], init=init, callback=callback)
    assert seen == [(1, 1), (2, 2), (3, 3)]
    assert set(model.history_) == {"cost", "train_acc", "valid_acc"}
    assert all(len(v) == 3 for v in model.history_.values())

    W = [a.copy() for a in init]
    for epoch in range(3):
        data_cost, correct = 0.0, 0
        for first in range(0, 32, 16):  # 38 examples: two full minibatches of 16
            rows = slice(first, first + 16)
            A_out = forward(X[rows], *W)[1]
            top_two = np.sort(A_out, axis=1)[:, -2:]
            assert np.all(top_two[:, 1] - top_two[:, 0] > 1e-9)  # no near-tie to call
            correct += int(np.sum(np.argmax(A_out, axis=1) == y[rows]))
            data_cost += float(backprop(X[rows], Y[rows], *W).cost)
            step = backprop(X[rows], Y[rows], *W, l2=0.2)
            for a, g in zip(W, step[1:]):
                a -= 0.05 * g
        for a, b in zip(W, weights_after[epoch]):
            np.testing.assert_array_equal(a, b)  # the replay is the epoch
        expected_cost = data_cost + l2_penalty(W[0], W[2], 0.2)
        assert model.history_["cost"][epoch] == pytest.approx(expected_cost, rel=1e-13)
        assert model.history_["train_acc"][epoch] == correct / 32
        valid_acc = np.mean(np.argmax(forward(X[valid], *W)[1], axis=1) == y[valid])
        assert model.history_["valid_acc"][epoch] == valid_acc


def test_learns_digits():
    X, y = load_digits()
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[:1200], order[1200:]
    model = MLP(n_hidden=30, epochs=15, eta=0.02, minibatch_size=32, l2=0.01, seed=0)
    model.fit(X[train], y[train], X[test], y[test])
    accuracy = np.mean(model.predict(X[test]) == y[test])
    assert accuracy >= 0.9
    assert model.history_["cost"][-1] < model.history_["cost"][0]


def test_predict_shapes_and_proba_is_per_output_sigmoid():
    X, y = small_problem()
    model = MLP(n_hidden=4, epochs=1, eta=0.05, minibatch_size=5, seed=0).fit(X, y)
    proba = model.predict_proba(X[:7])
    assert proba.shape == (7, 3) and proba.dtype == np.float64
    assert np.all((proba > 0) & (proba < 1))
    labels = model.predict(X[:7])
    assert labels.shape == (7,) and labels.dtype == np.int64
    assert np.array_equal(labels, np.argmax(proba, axis=1))
    assert model.predict(np.zeros((0, X.shape[1]))).shape == (0,)


def test_float32_model():
    X, y = small_problem()
    model = MLP(n_hidden=4, epochs=2, eta=0.05, minibatch_size=5, seed=0, dtype=np.float32).fit(
        X, y
    )
    assert model.W_h.dtype == np.float32 and model.predict_proba(X).dtype == np.float32


def test_save_load_round_trip(tmp_path):
    X, y = small_problem()
    model = MLP(n_hidden=4, epochs=2, eta=0.05, minibatch_size=5, seed=0, l2=0.1).fit(X, y)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = MLP.load(path)
    for name in ("W_h", "b_h", "W_out", "b_out"):
        assert np.array_equal(getattr(loaded, name), getattr(model, name))
    assert (loaded.l2, loaded.eta, loaded.minibatch_size, loaded.n_hidden) == (0.1, 0.05, 5, 4)
    assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_minibatch_of_the_whole_set_takes_one_step_per_epoch():
    X, y = small_problem()
    model = MLP(n_hidden=4, epochs=1, eta=0.05, minibatch_size=23, shuffle=False, seed=0).fit(X, y)
    rng = np.random.default_rng(0)
    start = book_initial_weights(rng, 6, 4, 3)
    expected = book_step(X, book_one_hot(y, 3), *start, 0.05, 0.0)
    for ours, theirs in zip((model.W_h, model.b_h, model.W_out, model.b_out), expected):
        assert np.max(np.abs(ours - theirs)) <= 1e-14


@pytest.mark.parametrize(
    "kind", ["other npz", "npz without hyperparameters", "npy", "text", "pickle", "empty"]
)
def test_load_refuses_files_that_are_not_models(tmp_path, kind):
    import pickle

    path = tmp_path / "file"
    if kind == "other npz":
        np.savez(path, W_h=np.zeros((2, 2)))
        path, pattern = tmp_path / "file.npz", "missing b_h, W_out, b_out, l2"
    elif kind == "npz without hyperparameters":
        np.savez(
            path, W_h=np.zeros((2, 2)), b_h=np.zeros(2), W_out=np.zeros((2, 1)), b_out=np.zeros(1)
        )
        path, pattern = tmp_path / "file.npz", "missing l2, epochs, eta, minibatch_size, shuffle"
    elif kind == "npy":
        np.save(path, np.zeros(3))
        path, pattern = tmp_path / "file.npy", "single NumPy array, not an .npz archive"
    elif kind == "text":
        path.write_text("W_h,b_h\n1,2\n")
        pattern = "expected a NumPy .npz archive written by MLP.save"
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"W_h": [1.0]}))
        pattern = "expected a NumPy .npz archive written by MLP.save"
    else:
        path.write_bytes(b"")
        pattern = "expected a NumPy .npz archive written by MLP.save"
    with pytest.raises(ValueError, match="is not a saved fastbp model") as caught:
        MLP.load(path)
    assert caught.match(pattern)
    assert "pickle" not in str(caught.value)


@pytest.mark.parametrize(
    "call, error, pattern",
    [
        (lambda X, y: MLP(epochs=1).fit(X.astype(int), y), TypeError, "X has dtype"),
        (
            lambda X, y: MLP(epochs=1).fit(X, y.astype(float)),
            TypeError,
            r"y must hold integer.*astype",
        ),
        (lambda X, y: MLP(epochs=1).fit(X, y[:5]), ValueError, "y has 5 labels but X has 23"),
        (lambda X, y: MLP(epochs=1).fit(X, -y), ValueError, "class labels"),
        (lambda X, y: MLP(epochs=1).fit(X, y[:, None]), ValueError, "y must be 1-D"),
        (lambda X, y: MLP(epochs=1).fit(X[0], y), ValueError, "X must be 2-D"),
        (
            lambda X, y: MLP(epochs=1).fit(np.where(X > 0.5, np.nan, X), y),
            ValueError,
            "X contains NaN",
        ),
        (
            lambda X, y: MLP(epochs=1).fit(np.where(X > 0.5, np.inf, X), y),
            ValueError,
            "X contains NaN or inf",
        ),
        (
            lambda X, y: MLP(epochs=1).fit(np.where(X > 0.5, -np.inf, X), y),
            ValueError,
            "X contains NaN or inf",
        ),
        (
            lambda X, y: MLP(epochs=1).fit(X, np.where(y > 0, np.nan, y)),
            ValueError,
            "y contains NaN",
        ),
        (
            lambda X, y: MLP(epochs=1).fit(X, np.where(y > 0, np.inf, y)),
            ValueError,
            "y contains NaN or inf",
        ),
        (
            lambda X, y: MLP(epochs=1).fit(X[:18], y[:18], X[18:] * np.nan, y[18:]),
            ValueError,
            "X_valid contains NaN",
        ),
        (
            lambda X, y: MLP(epochs=1).fit(X[:18], y[:18], X[18:], y[18:] * np.nan),
            ValueError,
            "y_valid contains NaN",
        ),
        (
            lambda X, y: MLP(epochs=1, minibatch_size=24).fit(X, y),
            ValueError,
            r"minibatch_size \(24\) is larger than the training set \(X has 23 rows\)",
        ),
        (lambda X, y: MLP(epochs=1).fit(X, y, X_valid=X), ValueError, "X_valid and y_valid"),
        (lambda X, y: MLP(epochs=1).fit(X, y, X[:, :2], y), ValueError, "X_valid"),
        (lambda X, y: MLP(n_hidden=4, epochs=1).fit(X, y, init=(1, 2)), TypeError, "init"),
        (
            lambda X, y: MLP(n_hidden=4, epochs=1).fit(
                X, y + 5, init=book_initial_weights(np.random.default_rng(0), 6, 4, 3)
            ),
            ValueError,
            "class label 7",
        ),
        (
            lambda X, y: MLP(n_hidden=5, epochs=1).fit(
                X, y, init=book_initial_weights(np.random.default_rng(0), 6, 4, 3)
            ),
            ValueError,
            "n_hidden",
        ),
        (lambda X, y: MLP().predict(X), RuntimeError, "fit"),
        (lambda X, y: MLP(n_hidden=0), ValueError, "n_hidden"),
        (lambda X, y: MLP(eta=-1), ValueError, "eta"),
        (lambda X, y: MLP(minibatch_size=0), ValueError, "minibatch_size"),
        (lambda X, y: MLP(l2=-1), ValueError, "l2"),
        (lambda X, y: MLP(seed=1.5), TypeError, "seed"),
        (lambda X, y: MLP(dtype=np.int32), TypeError, "dtype"),
    ],
)
def test_bad_input(call, error, pattern):
    X, y = small_problem()
    with pytest.raises(error, match=pattern):
        call(X, y)


def test_predict_checks_width():
    X, y = small_problem()
    model = MLP(n_hidden=4, epochs=1, eta=0.05, minibatch_size=5, seed=0).fit(X, y)
    with pytest.raises(ValueError, match="X"):
        model.predict(X[:, :3])
