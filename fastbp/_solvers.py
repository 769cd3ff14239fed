"""The solvers of :class:`fastbp.MLP`: plain and private minibatch SGD, and L-BFGS.

Each solver is a function of checked, prepared arrays (C-contiguous, in
the model's dtype) and plain settings: it updates the weights, appends one
entry per epoch (L-BFGS: per iteration) to a history dict and calls
``report(epoch, weights)`` after each, where :meth:`fastbp.MLP.fit` keeps
the weights, calls the user's callback and stops on Ctrl-C.  The model
validates and dispatches; nothing here checks its arguments.  As
scikit-learn keeps ``_fit_stochastic`` apart from ``_fit_lbfgs``.
"""

import numba
import numpy as np

from ._backprop import (
    _backprop_prepared,
    _data_terms,
    _shares_threads,
    _with_penalty,
    default_backprop_chunks,
    l2_penalty,
)
from ._core import forward
from ._private import _run_dp_epoch
from ._sgd import _run_epoch
from ._tuning import STEP_MAX_CHUNKS


def one_hot(labels, n_classes, dtype):
    """(n, t) targets: 1 in column ``labels[i]`` of row i, 0 elsewhere."""
    Y = np.zeros((labels.shape[0], n_classes), dtype=dtype)
    Y[np.arange(labels.shape[0]), labels] = 1
    return Y


def argmax_rows(proba):
    """The class of each row: the column of its largest output, as int64."""
    return np.argmax(proba, axis=1).astype(np.int64)


def accuracy(predicted, labels):
    """The share of ``predicted`` equal to ``labels`` (NaN for no labels)."""
    return float(np.mean(predicted == labels)) if labels.size else float("nan")


def accuracy_on(X, labels, weights, dtype):
    """Accuracy of the network ``weights`` on NumPy inputs X, as :meth:`MLP.predict` scores them."""
    A_out = forward(X.astype(dtype, copy=False), *weights)[1]
    return accuracy(argmax_rows(A_out), labels)


def new_history():
    """An empty ``history_``: ``"cost"``, ``"train_acc"`` and ``"valid_acc"`` lists."""
    return {"cost": [], "train_acc": [], "valid_acc": []}


def _record(history, training_cost, train_acc, valid_acc):
    history["cost"].append(training_cost)
    history["train_acc"].append(train_acc)
    history["valid_acc"].append(valid_acc)


# ---------------------------------------------------------------------------------------
# SGD
# ---------------------------------------------------------------------------------------


def _epoch_history(data_cost, correct, examples, X_valid, labels_valid, weights, l2):
    """One SGD epoch's history entry: (cost, training accuracy, validation accuracy).

    From the epoch's own steps, with no pass over the training set of its
    own: the cost is Σ of the steps' data costs J (each minibatch's, at the
    weights of its step, as :func:`fastbp.backprop` computes it) plus
    (λ/2) Σ W² at the weights after the epoch; the training accuracy is the
    share of the ``examples`` the steps trained on whose largest output was
    their label at their step (NaN when no step ran).  The validation
    accuracy is a forward pass over ``X_valid`` at the weights after the
    epoch (NaN without a validation set).
    """
    W_h, b_h, W_out, b_out = weights
    training_cost = data_cost + l2_penalty(W_h, W_out, l2)
    train_acc = correct / examples if examples else float("nan")
    if X_valid is None:
        valid_acc = float("nan")
    else:
        valid_acc = accuracy_on(X_valid, labels_valid, weights, W_h.dtype)
    return training_cost, train_acc, valid_acc


def _epoch_order(n, rng, shuffle):
    """The examples' order for one epoch: shuffled by ``rng`` or 0, 1, …, n−1."""
    indices = np.arange(n)
    if shuffle:
        rng.shuffle(indices)
    return indices


def _plain_epoch(X, Y, weights, order, eta, minibatch_size, l2, n_chunks, n_threads, correct):
    """One epoch of updates W ← W − η (∇J + λW) over the full minibatches of ``order``.

    In one compiled call (:func:`fastbp.sgd_epoch`'s), unless ``n_threads``
    would share each step among threads: then step by step through the
    threaded :func:`fastbp.backprop` kernels.  The two give the same bits.
    The weights are updated in place.  Returns Σ of the steps' data costs
    (float64, in step order); ``correct`` (int64, zeroed, with a slot for
    every chunk and every thread) gets the counts of the examples the steps
    classified correctly.
    """
    W_h, b_h, W_out, b_out = weights
    m, d = W_h.shape
    threads = numba.get_num_threads() if n_threads is None else n_threads
    if not _shares_threads(minibatch_size, m, d, n_chunks, threads):
        return _run_epoch(
            X, Y, order, minibatch_size, weights, eta, l2, correct, step_penalties=False
        )[1]
    step = W_h.dtype.type(eta)
    data_cost = 0.0
    for start in range(0, order.shape[0] - minibatch_size + 1, minibatch_size):
        batch = order[start : start + minibatch_size]
        terms = _data_terms(
            X[batch], Y[batch], W_h, b_h, W_out, b_out, n_chunks, n_threads, correct
        )
        data_cost += terms[0]
        result = _with_penalty(*terms, W_h, W_out, l2)
        # The gradients already hold the λW terms; as the book: w -= eta * delta_w.
        W_h -= step * result.grad_W_h
        b_h -= step * result.grad_b_h
        W_out -= step * result.grad_W_out
        b_out -= step * result.grad_b_out
    return data_cost


class PrivateTraining:
    """DP-SGD's settings for :func:`fit_sgd`, and the steps it has taken (for ε).

    Parameters
    ----------
    sample_rate : float
        q, the Poisson sampling rate of each step.
    steps_per_epoch : int
    max_grad_norm : float
        C.
    noise_multiplier : float
        σ.
    """

    def __init__(self, sample_rate, steps_per_epoch, max_grad_norm, noise_multiplier):
        self.sample_rate = sample_rate
        self.steps_per_epoch = steps_per_epoch
        self.max_grad_norm = max_grad_norm
        self.noise_multiplier = noise_multiplier
        #: Steps taken so far, counted after each epoch's compiled call returns.
        self.steps_taken = 0


def _private_epoch(X, Y, weights, rng, eta, minibatch_size, l2, private, correct):
    """One epoch of DP-SGD (:func:`fastbp.dp_sgd_epoch`'s), its steps counted in ``private``.

    dp_sgd_epoch steps by η' (ĝ + λ'W) with ĝ the noisy sum over the
    expected batch size B: η' = ηB and λ' = λ/B make that η (Σ + noise)
    + ηλW, the plain step's scaling.  Returns (Σ of the steps' data costs,
    how many examples the Poisson batches held); ``correct`` as for
    :func:`_plain_epoch`.
    """
    size = minibatch_size
    result = _run_dp_epoch(
        X, Y, weights, private.sample_rate, eta * size, private.max_grad_norm,
        private.noise_multiplier, rng, private.steps_per_epoch, l2 / size, correct,
    )  # fmt: skip
    private.steps_taken += private.steps_per_epoch
    return result.cost, int(result.batch_sizes.sum())


def fit_sgd(X, Y, weights, *, epochs, eta, minibatch_size, l2, shuffle, rng,
            n_threads, validation, history, report, private=None):  # fmt: skip
    """Train by minibatch SGD (the book's), or DP-SGD with ``private``, the weights in place.

    Parameters
    ----------
    X : numpy.ndarray, shape (n, m)
    Y : numpy.ndarray, shape (n, t)
        Inputs and one-hot targets, C-contiguous, in the weights' dtype.
    weights : tuple (W_h, b_h, W_out, b_out)
        C-contiguous arrays of one dtype, updated in place.
    epochs, eta, minibatch_size, l2, shuffle, n_threads
        :class:`fastbp.MLP`'s settings, checked.
    rng : numpy.random.Generator
        Draws each epoch's shuffle (plain SGD) or its Poisson samples and
        noise (DP-SGD).
    validation : tuple (X_valid, labels_valid)
        NumPy arrays, or (None, None).
    history : dict
        ``"cost"``, ``"train_acc"`` and ``"valid_acc"`` lists, each given
        one entry per epoch (:func:`_epoch_history`: the cost and training
        accuracy come from the epoch's own steps).
    report : callable
        ``report(epoch, weights)`` after each epoch and its history entry.
    private : PrivateTraining, optional
        DP-SGD's settings; plain SGD without.
    """
    n, m = X.shape
    d, t = weights[2].shape
    n_chunks = default_backprop_chunks(minibatch_size, m, d, t, X.dtype.itemsize)
    X_valid, labels_valid = validation
    # A slot per chunk (at most STEP_MAX_CHUNKS) or per thread sharing one chunk.
    correct = np.zeros(max(STEP_MAX_CHUNKS, numba.config.NUMBA_NUM_THREADS), dtype=np.int64)
    for epoch in range(1, epochs + 1):
        correct[:] = 0
        data_cost, examples = 0.0, 0
        if private is not None:
            data_cost, examples = _private_epoch(
                X, Y, weights, rng, eta, minibatch_size, l2, private, correct
            )
        else:
            order = _epoch_order(n, rng, shuffle)
            if n:
                data_cost = _plain_epoch(
                    X, Y, weights, order, eta, minibatch_size, l2, n_chunks, n_threads, correct
                )
                examples = n // minibatch_size * minibatch_size
        entry = _epoch_history(
            data_cost, int(correct.sum()), examples, X_valid, labels_valid, weights, l2
        )
        _record(history, *entry)
        report(epoch, weights)


# ---------------------------------------------------------------------------------------
# L-BFGS
# ---------------------------------------------------------------------------------------


def _pack(*arrays):
    """The arrays flattened (C order) into one float64 vector, in order."""
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])


def _unpack(x, shapes, dtype):
    """Inverse of :func:`_pack`: fresh C-contiguous arrays of ``dtype`` (rounded to it)."""
    arrays = []
    start = 0
    for shape in shapes:
        size = int(np.prod(shape))
        arrays.append(np.array(x[start : start + size], dtype=dtype).reshape(shape))
        start += size
    return tuple(arrays)


def in_memory_evaluator(X, Y, n_hidden, l2, n_threads):
    """``evaluate(W_h, b_h, W_out, b_out)`` for :func:`fit_lbfgs`: :func:`fastbp.backprop` on X."""
    n, m = X.shape
    n_chunks = default_backprop_chunks(n, m, n_hidden, Y.shape[1], X.dtype.itemsize)

    def evaluate(W_h, b_h, W_out, b_out):
        return _backprop_prepared(X, Y, W_h, b_h, W_out, b_out, l2, n_chunks, n_threads)

    return evaluate


def fit_lbfgs(evaluate, weights, *, max_iterations, score, history, report):
    """Minimise J + (λ/2) Σ W² with SciPy's L-BFGS-B from ``weights``; return the last weights.

    Parameters
    ----------
    evaluate : callable
        ``evaluate(W_h, b_h, W_out, b_out)`` gives the
        :class:`fastbp.BackpropResult` at those weights (in their dtype).
    weights : tuple (W_h, b_h, W_out, b_out)
        The start, in the model's dtype (not modified).
    max_iterations : int
        SciPy's ``maxiter``; 0 returns ``weights`` as they are.
    score : callable
        ``score(weights)`` gives (training accuracy, validation accuracy).
    history : dict
        ``"cost"``, ``"train_acc"`` and ``"valid_acc"`` lists, each given
        one entry per iteration; the cost is the one L-BFGS computed at
        the iteration's weights.
    report : callable
        ``report(iteration, weights)`` after each iteration and its entry.

    Returns
    -------
    tuple (W_h, b_h, W_out, b_out)
        Fresh arrays in the weights' dtype, rounded from the float64 vector.
    """
    from scipy.optimize import minimize

    dtype = weights[0].dtype
    shapes = [a.shape for a in weights]
    last = {"x": None, "cost": None}

    def objective(x):
        result = evaluate(*_unpack(x, shapes, dtype))
        last["x"], last["cost"] = x.copy(), float(result.cost)
        gradient = _pack(result.grad_W_h, result.grad_b_h, result.grad_W_out, result.grad_b_out)
        return last["cost"], gradient

    iteration = 0

    def after_iteration(xk):
        nonlocal iteration
        iteration += 1
        current = _unpack(xk, shapes, dtype)
        if last["x"] is not None and np.array_equal(xk, last["x"]):
            # L-BFGS-B's last evaluation is at the point it accepts.
            iterate_cost = last["cost"]
        else:
            iterate_cost = float(evaluate(*current).cost)
        _record(history, iterate_cost, *score(current))
        report(iteration, current)

    if max_iterations == 0:
        return weights
    result = minimize(
        objective,
        _pack(*weights),
        method="L-BFGS-B",
        jac=True,
        callback=after_iteration,
        options={"maxiter": max_iterations},
    )
    return _unpack(result.x, shapes, dtype)
