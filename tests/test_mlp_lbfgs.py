"""MLP(solver="lbfgs"): full-batch L-BFGS on NumPy and Dask arrays, and predict on Dask arrays."""

import subprocess
import sys

import numpy as np
import pytest
from scipy.optimize import minimize

from fastbp import MLP, backprop
from fastbp.datasets import load_digits

from reference import book_initial_weights, small_problem

WEIGHTS = ("W_h", "b_h", "W_out", "b_out")


def weights(model):
    return tuple(getattr(model, name) for name in WEIGHTS)


def digits_split():
    """The split of ``fastbp train``: a seed-1 permutation, its first 20 % held out."""
    X, y = load_digits()
    order = np.random.default_rng(1).permutation(len(y))
    n_valid = int(round(0.2 * len(y)))
    return X[order[n_valid:]], y[order[n_valid:]], X[order[:n_valid]], y[order[:n_valid]]


# ----------------------------------------------------------------------
# NumPy arrays
# ----------------------------------------------------------------------


def test_lbfgs_learns_digits():
    """The 64-100-10 network of ``fastbp train`` (where SGD's defaults reach
    97.2 % with seed 1), with the same l2 = 0.01 and at most 100 iterations
    instead of 200 epochs: 97.2 % on the same 359 held-out digits."""
    X, y, X_test, y_test = digits_split()
    model = MLP(n_hidden=100, epochs=100, l2=0.01, seed=1, solver="lbfgs")
    model.fit(X, y, X_test, y_test)
    accuracy = np.mean(model.predict(X_test) == y_test)
    assert accuracy >= 0.965
    assert model.history_["valid_acc"][-1] == accuracy
    assert model.history_["train_acc"][-1] >= 0.99
    assert 1 <= len(model.history_["cost"]) <= 100
    assert model.history_["cost"][-1] < 0.05 * model.history_["cost"][0]


def test_lbfgs_is_scipy_on_the_packed_weights():
    """The model's run is minimize(L-BFGS-B) on (W_h, b_h, W_out, b_out) packed
    in that order, started from SGD's initial weights, with fastbp.backprop's
    cost and gradient and maxiter = epochs: the same bits when done by hand."""
    X, y = small_problem(n=60)
    n, m = X.shape
    d, t, l2, epochs, seed = 5, 3, 0.3, 15, 4
    model = MLP(n_hidden=d, l2=l2, epochs=epochs, seed=seed, solver="lbfgs").fit(X, y)

    start = book_initial_weights(np.random.default_rng(seed), m, d, t)
    shapes = [a.shape for a in start]
    sizes = np.cumsum([a.size for a in start])[:-1]
    Y = np.eye(t)[y]

    def objective(x):
        W = [part.reshape(shape) for part, shape in zip(np.split(x, sizes), shapes)]
        result = backprop(X, Y, *W, l2=l2)
        return float(result.cost), np.concatenate([g.ravel() for g in result[1:]])

    x0 = np.concatenate([a.ravel() for a in start])
    expected = minimize(objective, x0, method="L-BFGS-B", jac=True, options={"maxiter": epochs})
    assert expected.nit == epochs == len(model.history_["cost"])
    ours = np.concatenate([a.ravel() for a in weights(model)])
    assert np.array_equal(ours, expected.x)


def test_epochs_zero_leaves_the_initial_weights():
    X, y = small_problem(n=60)
    model = MLP(n_hidden=4, epochs=0, seed=9, solver="lbfgs").fit(X, y)
    for ours, theirs in zip(
        weights(model), book_initial_weights(np.random.default_rng(9), 6, 4, 3)
    ):
        assert np.array_equal(ours, theirs)
    assert model.history_ == {"cost": [], "train_acc": [], "valid_acc": []}


def test_lbfgs_is_deterministic():
    X, y = small_problem(1, n=60)
    runs = [MLP(n_hidden=7, epochs=25, l2=0.05, seed=3, solver="lbfgs").fit(X, y) for _ in range(2)]
    for a, b in zip(weights(runs[0]), weights(runs[1])):
        assert np.array_equal(a, b)
    assert runs[0].history_["cost"] == runs[1].history_["cost"]
    other = MLP(n_hidden=7, epochs=25, l2=0.05, seed=4, solver="lbfgs").fit(X, y)
    assert not np.array_equal(other.W_h, runs[0].W_h)


def test_init_is_the_starting_point_and_is_not_modified():
    X, y = small_problem(n=60)
    init = book_initial_weights(np.random.default_rng(5), 6, 4, 3)
    copies = [a.copy() for a in init]
    seeded = MLP(n_hidden=4, epochs=10, seed=5, solver="lbfgs").fit(X, y)
    given = MLP(n_hidden=4, epochs=10, seed=123, solver="lbfgs").fit(X, y, init=init)
    for a, b in zip(init, copies):
        assert np.array_equal(a, b)
    for a, b in zip(weights(seeded), weights(given)):
        assert np.array_equal(a, b)


def test_history_and_callback():
    """One history entry per iteration; each is the cost (with the penalty)
    and the accuracies at the weights the callback sees at that iteration."""
    X, y = small_problem(2, n=60)
    l2 = 0.2
    seen = []

    def callback(iteration, model):
        seen.append(
            (iteration, len(model.history_["cost"]), tuple(a.copy() for a in weights(model)))
        )

    model = MLP(n_hidden=4, epochs=12, l2=l2, seed=0, solver="lbfgs")
    model.fit(X[:45], y[:45], X[45:], y[45:], callback=callback)
    assert [s[:2] for s in seen] == [(i, i) for i in range(1, 13)]
    assert set(model.history_) == {"cost", "train_acc", "valid_acc"}
    assert all(len(v) == 12 for v in model.history_.values())
    Y = np.eye(3)[y[:45]]
    probe = MLP(n_hidden=4)
    for (_, _, W), cost, train_acc, valid_acc in zip(
        seen, model.history_["cost"], model.history_["train_acc"], model.history_["valid_acc"]
    ):
        assert cost == float(backprop(X[:45], Y, *W, l2=l2).cost)
        probe.W_h, probe.b_h, probe.W_out, probe.b_out = W
        assert train_acc == np.mean(probe.predict(X[:45]) == y[:45])
        assert valid_acc == np.mean(probe.predict(X[45:]) == y[45:])
    # The line search only accepts decreases; the model ends at the last iterate.
    assert all(b < a for a, b in zip(model.history_["cost"], model.history_["cost"][1:]))
    for a, b in zip(seen[-1][2], weights(model)):
        assert np.array_equal(a, b)
    assert np.isnan(
        MLP(n_hidden=4, epochs=2, seed=0, solver="lbfgs").fit(X, y).history_["valid_acc"]
    ).all()


def test_convergence_stops_before_epochs():
    X, y = small_problem(3, n=12)
    model = MLP(n_hidden=3, epochs=5000, l2=1.0, seed=0, solver="lbfgs").fit(X, y)
    assert 0 < len(model.history_["cost"]) < 5000


def test_float32_model():
    X, y = small_problem(n=60)
    model = MLP(n_hidden=4, epochs=20, l2=0.1, seed=0, solver="lbfgs", dtype=np.float32).fit(X, y)
    assert all(a.dtype == np.float32 for a in weights(model))
    assert model.predict_proba(X).dtype == np.float32
    assert model.history_["cost"][-1] < model.history_["cost"][0]


def test_sgd_only_hyperparameters_are_ignored():
    """eta, minibatch_size and shuffle do not matter to L-BFGS (a minibatch
    larger than the training set is no error)."""
    X, y = small_problem(n=60)
    a = MLP(n_hidden=4, epochs=8, seed=0, solver="lbfgs").fit(X, y)
    b = MLP(
        n_hidden=4, epochs=8, eta=5.0, minibatch_size=1000, shuffle=False, seed=0, solver="lbfgs"
    ).fit(X, y)
    for u, v in zip(weights(a), weights(b)):
        assert np.array_equal(u, v)


def test_default_solver_is_sgd():
    assert MLP().solver == "sgd"
    X, y = small_problem(n=60)
    a = MLP(n_hidden=4, epochs=2, eta=0.05, minibatch_size=5, seed=0).fit(X, y)
    b = MLP(n_hidden=4, epochs=2, eta=0.05, minibatch_size=5, seed=0, solver="sgd").fit(X, y)
    for u, v in zip(weights(a), weights(b)):
        assert np.array_equal(u, v)


@pytest.mark.parametrize("solver", ["adam", "LBFGS", ""])
def test_unknown_solver(solver):
    with pytest.raises(ValueError, match=r"solver must be one of 'sgd', 'lbfgs', got"):
        MLP(solver=solver)


@pytest.mark.parametrize("solver", [None, 1, b"sgd"])
def test_solver_that_is_not_a_str(solver):
    # A value of the wrong kind is a TypeError, as for every scalar (fastbp._validate.one_of).
    with pytest.raises(TypeError, match=r"solver must be one of 'sgd', 'lbfgs', got"):
        MLP(solver=solver)


@pytest.mark.parametrize("solver", ["sgd", "lbfgs"])
def test_save_load_round_trip(tmp_path, solver):
    X, y = small_problem(n=60)
    model = MLP(
        n_hidden=4, epochs=3, eta=0.05, minibatch_size=5, seed=0, l2=0.1, solver=solver
    ).fit(X, y)
    model.save(tmp_path / "model.npz")
    loaded = MLP.load(tmp_path / "model.npz")
    assert loaded.solver == solver
    assert (loaded.l2, loaded.epochs, loaded.eta, loaded.minibatch_size) == (0.1, 3, 0.05, 5)
    for name in WEIGHTS:
        assert np.array_equal(getattr(loaded, name), getattr(model, name))
    # The loaded model trains with its solver.
    again = MLP.load(tmp_path / "model.npz")
    again.seed = 0
    again.fit(X, y)
    for u, v in zip(weights(again), weights(model)):
        assert np.array_equal(u, v)


def test_files_without_a_solver_load_as_sgd(tmp_path):
    """Model files written before the solver was saved."""
    model = MLP(n_hidden=2, epochs=1, eta=0.05, minibatch_size=5, seed=0).fit(*small_problem(n=60))
    path = tmp_path / "old.npz"
    fields = {k: getattr(model, k) for k in WEIGHTS}
    fields.update(l2=0.0, epochs=1, eta=0.05, minibatch_size=5, shuffle=True)
    np.savez(path, **fields)
    assert MLP.load(path).solver == "sgd"
    np.savez(path, **fields, solver="newton")
    with pytest.raises(ValueError, match="solver must be one of"):
        MLP.load(path)


def test_import_fastbp_does_not_import_dask():
    code = (
        "import sys, fastbp, fastbp.mlp; "
        "assert not [k for k in sys.modules if k.split('.')[0] in ('dask', 'distributed')]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------
# Dask arrays
# ----------------------------------------------------------------------


@pytest.fixture
def da():
    dask = pytest.importorskip("dask")
    dask_array = pytest.importorskip("dask.array")
    with dask.config.set(scheduler="synchronous"):
        yield dask_array


@pytest.fixture
def fastbp_dask(da):
    try:
        import fastbp.dask as module
    except ImportError as error:
        pytest.skip(f"fastbp.dask cannot be imported ({error})")
    return module


def fitted(seed=0, d=5, **kwargs):
    X, y = small_problem(seed, n=192, m=8, t=4)
    return MLP(n_hidden=d, epochs=5, l2=0.1, seed=seed, solver="lbfgs", **kwargs).fit(X, y), X, y


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_predict_on_dask_is_lazy_and_bitwise_numpys(da, dtype):
    """Blocks of 64 rows: each block's forward pass rounds as that rows' part of
    the whole array's (the kernel's BLAS product may round the last row of an
    odd-sized block differently, so the test keeps blocks even)."""
    model, X, _ = fitted(dtype=dtype)
    X = np.concatenate([X, X[:70] * 0.5])  # 262 rows: blocks 64, 64, 64, 70
    Xd = da.from_array(X, chunks=((64, 64, 64, 70), (3, 3, 2)))  # and columns in three chunks
    proba = model.predict_proba(Xd)
    labels = model.predict(Xd)
    assert isinstance(proba, da.Array) and isinstance(labels, da.Array)
    assert proba.chunks == ((64, 64, 64, 70), (4,)) and proba.dtype == dtype
    assert labels.chunks == ((64, 64, 64, 70),) and labels.dtype == np.int64
    assert np.array_equal(proba.compute(), model.predict_proba(X))
    assert np.array_equal(labels.compute(), model.predict(X))
    # float32 inputs to a float64 model are converted per block as in memory.
    assert np.array_equal(
        model.predict_proba(Xd.astype(np.float32)).compute(),
        model.predict_proba(X.astype(np.float32)),
    )
    # Odd blocks: the same within a rounding.
    odd = model.predict_proba(da.from_array(X, chunks=(77, 8))).compute()
    np.testing.assert_allclose(odd, model.predict_proba(X), rtol=4 * np.finfo(dtype).eps, atol=0)


def test_predict_on_dask_computes_nothing_until_asked(da):
    model, X, _ = fitted()
    calls = []

    def block(x):
        calls.append(x.shape)
        return x

    Xd = da.from_array(X, chunks=(64, 8)).map_blocks(block, dtype=X.dtype)
    calls.clear()  # Dask's own trial call on an empty block
    proba = model.predict_proba(Xd)
    labels = model.predict(Xd)
    assert calls == []
    before = model.predict_proba(X)
    model.fit(X, (np.arange(192) % 2))  # new weights: the lazy results keep the old ones
    assert np.array_equal(proba.compute(), before)
    assert labels.compute().shape == (192,) and len(calls) == 6


def test_predict_on_dask_checks(da):
    model, X, _ = fitted()
    with pytest.raises(ValueError, match="columns"):
        model.predict(da.from_array(X[:, :5], chunks=64))
    with pytest.raises(TypeError, match="X has dtype int64"):
        model.predict(da.from_array(X.astype(np.int64), chunks=64))
    with pytest.raises(ValueError, match="2-D"):
        model.predict(da.from_array(X[0], chunks=4))
    bad = X.copy()
    bad[100, 2] = np.nan
    lazy = model.predict(da.from_array(bad, chunks=64))  # found when the block is computed
    with pytest.raises(ValueError, match="X contains NaN"):
        lazy.compute()


def test_sgd_refuses_dask_arrays(da):
    X, y = small_problem(n=60)
    with pytest.raises(TypeError, match=r'X is a Dask array.*solver="lbfgs".*X\.compute\(\)'):
        MLP(n_hidden=4, epochs=1).fit(da.from_array(X, chunks=20), y)


def test_lbfgs_on_dask_matches_numpy(fastbp_dask, da):
    """Three blocks of rows: the same run as in memory, up to the rounding of
    the blocks' partial sums (about 1e-16 per evaluation, 1e-13 after the
    20 iterations; a lost block or a wrong target is off by far more)."""
    X, y = small_problem(4, n=150, m=8, t=4)
    kwargs = dict(n_hidden=6, epochs=20, l2=0.1, seed=2, solver="lbfgs")
    in_memory = MLP(**kwargs).fit(X[:120], y[:120], X[120:], y[120:])
    Xd = da.from_array(X[:120], chunks=(40, 8))
    yd = da.from_array(y[:120], chunks=40)
    on_dask = MLP(**kwargs).fit(Xd, yd, X[120:], y[120:])
    for a, b in zip(weights(on_dask), weights(in_memory)):
        assert a.dtype == np.float64 and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)
    assert len(on_dask.history_["cost"]) == len(in_memory.history_["cost"]) == 20
    np.testing.assert_allclose(on_dask.history_["cost"], in_memory.history_["cost"], rtol=1e-12)
    assert on_dask.history_["valid_acc"] == in_memory.history_["valid_acc"]
    assert np.isnan(on_dask.history_["train_acc"]).all()
    # Labels in memory, or in other chunks than X, and a Dask validation set: the same bits.
    Xd_other = da.from_array(X[:120], chunks=(40, 3))
    others = [
        MLP(**kwargs).fit(Xd, y[:120], X[120:], y[120:]),
        MLP(**kwargs).fit(
            Xd_other, da.from_array(y[:120], chunks=70), da.from_array(X[120:], chunks=7), y[120:]
        ),
    ]
    for other in others:
        for a, b in zip(weights(other), weights(on_dask)):
            assert np.array_equal(a, b)
        assert other.history_["valid_acc"] == on_dask.history_["valid_acc"]


def test_lbfgs_on_dask_in_the_in_memory_chunks_has_its_bits(fastbp_dask, da):
    """512 examples are 4 chunks of 128 for fastbp.backprop; as 4 Dask blocks of
    128 (added in order by one task, split_every 8 ≥ 4) every evaluation has
    the same bits, so the whole L-BFGS run does too."""
    from fastbp import default_backprop_chunks

    X, y = small_problem(7, n=512, m=8, t=4)
    assert default_backprop_chunks(512, 8, 6, 4, 8) == 4
    kwargs = dict(n_hidden=6, epochs=30, l2=0.1, seed=2, solver="lbfgs")
    in_memory = MLP(**kwargs).fit(X, y)
    on_dask = MLP(**kwargs).fit(da.from_array(X, chunks=(128, 8)), da.from_array(y, chunks=128))
    for a, b in zip(weights(on_dask), weights(in_memory)):
        assert np.array_equal(a, b)
    assert on_dask.history_["cost"] == in_memory.history_["cost"]


def test_lbfgs_on_dask_calls_fastbp_dask_with_blockwise_targets(fastbp_dask, da, monkeypatch):
    X, y = small_problem(5, n=90, m=4, t=3)
    calls = []
    real = fastbp_dask.backprop

    def spy(X, Y, W_h, b_h, W_out, b_out, **kwargs):
        calls.append((X, Y, kwargs))
        return real(X, Y, W_h, b_h, W_out, b_out, **kwargs)

    monkeypatch.setattr(fastbp_dask, "backprop", spy)
    Xd = da.from_array(X, chunks=(30, 4))
    model = MLP(n_hidden=3, epochs=4, l2=0.25, seed=0, solver="lbfgs", dtype=np.float32)
    model.fit(Xd, da.from_array(y, chunks=45))
    assert calls
    Xc, Yc, kwargs = calls[0]
    assert kwargs == {"l2": 0.25, "split_every": None, "compute": True}
    assert Xc.dtype == np.float32 and Yc.dtype == np.float32
    assert Xc.chunks == ((30, 30, 30), (4,)) and Yc.chunks == ((30, 30, 30), (3,))
    assert np.array_equal(Yc.compute(), np.eye(3, dtype=np.float32)[y])
    assert all(a.dtype == np.float32 for a in weights(model))


@pytest.mark.parametrize(
    "change, error, pattern",
    [
        (lambda X, y: (X.astype(np.int64), y), TypeError, "X has dtype int64"),
        (lambda X, y: (X, y.astype(np.float64)), TypeError, "y must hold integer class labels"),
        (
            lambda X, y: (X, y[:30]),
            ValueError,
            r"y has 30 labels but X has 90 rows \(n\)",
        ),
        (lambda X, y: (X, y[:, None]), ValueError, "y must be 1-D"),
        (lambda X, y: (X, -y), ValueError, "class labels 0..t-1, found -2"),
        (
            lambda X, y: (X.map_blocks(lambda b: np.where(b > 0.9, np.nan, b)), y),
            ValueError,
            "X contains NaN",
        ),
        (lambda X, y: (X[X[:, 0] > 0.5], y), ValueError, "unknown size"),
    ],
)
def test_lbfgs_on_dask_checks(fastbp_dask, da, change, error, pattern):
    X, y = small_problem(6, n=90, m=4, t=3)
    Xd, yd = change(da.from_array(X, chunks=(30, 4)), da.from_array(y, chunks=30))
    with pytest.raises(error, match=pattern):
        MLP(n_hidden=3, epochs=2, seed=0, solver="lbfgs").fit(Xd, yd)
