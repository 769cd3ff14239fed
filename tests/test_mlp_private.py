"""fastbp.MLP with private training: DP-SGD epochs, the noise chosen for a target ε, ε reported."""

import math

import numpy as np
import pytest

import fastbp

from reference import small_problem

pytest.importorskip("dp_accounting")


def test_private_fit_is_dp_sgd_epochs_from_the_book_start():
    X, y = small_problem(seed=1, n=60, m=5, t=3)
    model = fastbp.MLP(
        n_hidden=4, epochs=3, eta=0.05, minibatch_size=10, l2=0.01, seed=2,
        max_grad_norm=0.5, noise_multiplier=1.3,
    )  # fmt: skip
    model.fit(X, y)
    # The same draws by hand: the book's start from default_rng(seed), then each epoch's
    # Poisson batches and noise from that generator, q = 10/60, 6 steps an epoch.
    rng = np.random.default_rng(2)
    weights = [rng.normal(0, 0.1, (5, 4)), np.zeros(4), rng.normal(0, 0.1, (4, 3)), np.zeros(3)]
    Y = np.eye(3)[y]
    for _ in range(3):
        fastbp.dp_sgd_epoch(
            X, Y, *weights, sample_rate=10 / 60, eta=0.05 * 10, max_grad_norm=0.5,
            noise_multiplier=1.3, rng=rng, steps=6, l2=0.01 / 10,
        )  # fmt: skip
    for got, expected in zip((model.W_h, model.b_h, model.W_out, model.b_out), weights):
        np.testing.assert_array_equal(got, expected)
    assert model.noise_multiplier_ == 1.3
    assert model.epsilon_ == fastbp.privacy.epsilon(1.3, 10 / 60, 18, 1e-5)
    assert len(model.history_["cost"]) == 3


def test_target_epsilon_picks_the_noise():
    X, y = small_problem(seed=3, n=80, m=4, t=2)
    model = fastbp.MLP(
        n_hidden=3, epochs=4, eta=0.05, minibatch_size=8, seed=0, max_grad_norm=1.0,
        target_epsilon=5.0, delta=1e-4,
    )  # fmt: skip
    model.fit(X, y)
    expected = fastbp.privacy.noise_multiplier(5.0, 1e-4, 8 / 80, 40)
    assert model.noise_multiplier_ == expected
    assert 4.9 < model.epsilon_ <= 5.0


def test_plain_training_is_unchanged_by_the_new_parameters():
    X, y = small_problem(seed=4, n=40, m=4, t=3)
    a = fastbp.MLP(n_hidden=3, epochs=2, eta=0.1, minibatch_size=5, seed=1).fit(X, y)
    b = fastbp.MLP(n_hidden=3, epochs=2, eta=0.1, minibatch_size=5, seed=1, delta=0.5).fit(X, y)
    np.testing.assert_array_equal(a.W_h, b.W_h)
    assert not hasattr(a, "epsilon_")


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"noise_multiplier": 1.0}, ValueError, "give max_grad_norm too"),
        ({"target_epsilon": 1.0}, ValueError, "give max_grad_norm too"),
        ({"max_grad_norm": 1.0}, ValueError, "exactly one of noise_multiplier and target_epsilon"),
        (
            {"max_grad_norm": 1.0, "noise_multiplier": 1.0, "target_epsilon": 2.0},
            ValueError,
            "exactly one of",
        ),
        ({"max_grad_norm": 1.0, "noise_multiplier": 1.0, "solver": "lbfgs"}, ValueError, "DP-SGD"),
        ({"max_grad_norm": -1.0, "noise_multiplier": 1.0}, ValueError, "max_grad_norm must be a"),
        ({"max_grad_norm": "1", "noise_multiplier": 1.0}, TypeError, "max_grad_norm must be a"),
        ({"max_grad_norm": 1.0, "noise_multiplier": -1.0}, ValueError, "noise_multiplier must"),
        ({"max_grad_norm": 1.0, "target_epsilon": 0.0}, ValueError, "target_epsilon must be"),
        ({"delta": 1.0}, ValueError, r"delta must be a finite number in \(0, 1\), got 1.0"),
        ({"delta": 0.0}, ValueError, r"delta must be a finite number in \(0, 1\), got 0.0"),
        ({"delta": "1e-5"}, TypeError, r"delta must be a real number in \(0, 1\), got '1e-5'"),
        (
            {"max_grad_norm": math.inf, "noise_multiplier": 1.0},
            ValueError,
            r"max_grad_norm=inf \(no clipping\) takes noise_multiplier=0 only",
        ),
        (
            {"max_grad_norm": math.inf, "target_epsilon": 1.0},
            ValueError,
            r"max_grad_norm=inf \(no clipping\) takes noise_multiplier=0 only",
        ),
    ],
)
def test_bad_privacy_parameters(kwargs, error, message):
    with pytest.raises(error, match=message):
        fastbp.MLP(**kwargs)


def test_no_clipping_and_no_noise_is_accepted_as_dp_sgd_epoch_accepts_it():
    X, y = small_problem(seed=5, n=30, m=3, t=2)
    model = fastbp.MLP(
        n_hidden=2, epochs=1, minibatch_size=5, seed=0, max_grad_norm=math.inf,
        noise_multiplier=0.0,
    ).fit(X, y)  # fmt: skip
    assert model.max_grad_norm == math.inf and model.epsilon_ == math.inf
    assert all(np.all(np.isfinite(w)) for w in (model.W_h, model.W_out))


def test_save_and_load_keep_the_privacy_parameters(tmp_path):
    X, y = small_problem(seed=5, n=30, m=3, t=2)
    model = fastbp.MLP(
        n_hidden=2, epochs=1, minibatch_size=5, seed=0, max_grad_norm=0.7, target_epsilon=8.0,
        delta=1e-3,
    ).fit(X, y)  # fmt: skip
    model.save(tmp_path / "private.npz")
    loaded = fastbp.MLP.load(tmp_path / "private.npz")
    assert (loaded.max_grad_norm, loaded.noise_multiplier, loaded.target_epsilon) == (
        0.7,
        None,
        8.0,
    )
    assert loaded.delta == 1e-3
    plain = fastbp.MLP(n_hidden=2, epochs=1, minibatch_size=5, seed=0).fit(X, y)
    plain.save(tmp_path / "plain.npz")
    again = fastbp.MLP.load(tmp_path / "plain.npz")
    assert again.max_grad_norm is None and again.noise_multiplier is None
