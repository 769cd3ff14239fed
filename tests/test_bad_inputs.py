"""One table of bad inputs over every public function, MLP and the command line.

Each kind of bad input gets a ``TypeError`` or ``ValueError`` whose message
names the argument, shows what it got and says what was expected, and no
argument is modified.  The kinds that are legal (n = 0, duplicates in
``order``, NaN in the data, lists, memmaps, ...) are in a second table with
what they give.  ``docs/bad_inputs.md`` is these two tables, written by
``python tests/test_bad_inputs.py`` (a test checks that the page is up to
date).
"""

import math
import pathlib
import sys
from fractions import Fraction

import numpy as np
import pytest

import fastbp
from fastbp import MLP
from fastbp._tools import cli

DOCS_PAGE = pathlib.Path(__file__).resolve().parent.parent / "docs" / "bad_inputs.md"
HUGE = np.broadcast_to(np.zeros(1), (2**20, 2**20))  # 8 TiB as float64, no memory behind it
n, m, d, t = 6, 4, 3, 2


class Arrays(dict):
    """Fresh, valid arguments for every function (attribute access for short lambdas)."""

    __getattr__ = dict.__getitem__

    @property
    def net(self):
        return (self.W_h, self.b_h, self.W_out, self.b_out)

    @property
    def step(self):
        """sgd_epoch's arguments before eta and minibatch_size."""
        return (self.X, self.Y, *self.net, self.order)


def fresh():
    rng = np.random.default_rng(26)
    return Arrays(
        X=rng.random((n, m)),
        Y=np.eye(t)[rng.integers(0, t, n)],
        W_h=rng.normal(0, 0.5, (m, d)),
        b_h=rng.normal(0, 0.5, d),
        W_out=rng.normal(0, 0.5, (d, t)),
        b_out=rng.normal(0, 0.5, t),
        order=np.arange(n),
        A_h=rng.random((n, d)),
        A_out=rng.random((n, t)),
        delta_out=rng.random((n, t)) - 0.5,
        delta_h=rng.random((n, d)) - 0.5,
        Z=rng.normal(0, 3, (n, t)),
        labels=np.arange(n) % 3,
    )


def snapshot(arrays):
    return {k: v.copy() for k, v in arrays.items()}


def assert_unchanged(arrays, before):
    for name, value in before.items():
        assert arrays[name].dtype == value.dtype and np.array_equal(
            arrays[name], value, equal_nan=True
        ), f"{name} was modified"


def with_Y(a, value, row=1, col=0):
    """A copy of a.Y (or of ``a`` itself, an array) with one value replaced."""
    Y = (a if isinstance(a, np.ndarray) else a.Y).copy()
    Y[row, col] = value
    return Y


def sgd(a, **change):
    """sgd_epoch on copies of the weights unless ``change`` gives them."""
    args = dict(
        X=a.X, Y=a.Y, W_h=a.W_h, b_h=a.b_h, W_out=a.W_out, b_out=a.b_out, order=a.order,
        eta=0.1, minibatch_size=2, l2=0.0,
    )  # fmt: skip
    args.update(change)
    return fastbp.sgd_epoch(**args)


def dp_epoch(a, **change):
    """dp_sgd_epoch on copies of the weights, with valid privacy settings unless changed."""
    args = dict(
        sample_rate=0.5, eta=0.1, max_grad_norm=1.0, noise_multiplier=1.0,
        rng=np.random.default_rng(0), l2=0.0,
    )  # fmt: skip
    args.update(change)
    Y = args.pop("Y", a.Y)
    return fastbp.dp_sgd_epoch(a.X, Y, *(w.copy() for w in a.net), **args)


def private_model(**privacy):
    """MLP with one privacy parameter given: max_grad_norm with it, unless it is None."""
    (value,) = privacy.values()
    return MLP(max_grad_norm=None if value is None else 1.0, **privacy)


def privacy_epsilon(**change):
    """fastbp.privacy.epsilon with valid arguments unless changed (checked before dp-accounting)."""
    args = dict(noise_multiplier=1.0, sample_rate=0.01, steps=10, delta=1e-5)
    args.update(change)
    return fastbp.privacy.epsilon(**args)


def privacy_sigma(**change):
    """fastbp.privacy.noise_multiplier with valid arguments unless changed."""
    args = dict(target_epsilon=1.0, delta=1e-5, sample_rate=0.01, steps=10)
    args.update(change)
    return fastbp.privacy.noise_multiplier(**args)


def dask_backprop(a, **options):
    da = pytest.importorskip("dask.array")
    import fastbp.dask

    X = da.from_array(a.X, chunks=(3, -1))
    Y = da.from_array(options.pop("Y", a.Y), chunks=(3, -1))
    return fastbp.dask.backprop(X, Y, *a.net, **options)


def fit(a, **options):
    return MLP(n_hidden=3, epochs=1, minibatch_size=2, seed=0, **options).fit(a.X, a.labels)


def cli_exit(argv, capsys):
    """(exit status, stderr) of the command line run in this process."""
    try:
        status = cli.main(argv)
    except SystemExit as exit:
        status = exit.code
    return status, capsys.readouterr().err


# --------------------------------------------------------------------------
# Scalars: every scalar parameter of every function that takes it
# --------------------------------------------------------------------------

# Where each scalar parameter goes in: (label, call(a, value)).
SCALAR_SITES = {
    "l2": [
        ("backprop", lambda a, v: fastbp.backprop(a.X, a.Y, *a.net, l2=v)),
        ("l2_penalty", lambda a, v: fastbp.l2_penalty(a.W_h, a.W_out, v)),
        ("sgd_epoch", lambda a, v: sgd(a, W_h=a.W_h.copy(), l2=v)),
        ("MLP", lambda a, v: MLP(l2=v)),
        ("fastbp.dask.backprop", lambda a, v: dask_backprop(a, l2=v)),
        ("dp_backprop", lambda a, v: fastbp.dp_backprop(a.X, a.Y, *a.net, max_grad_norm=1.0, l2=v)),
        ("dp_sgd_epoch", lambda a, v: dp_epoch(a, l2=v)),
    ],
    "eta": [
        ("sgd_epoch", lambda a, v: sgd(a, eta=v)),
        ("MLP", lambda a, v: MLP(eta=v)),
        ("dp_sgd_epoch", lambda a, v: dp_epoch(a, eta=v)),
    ],
    "noise_multiplier": [
        (
            "dp_backprop",
            lambda a, v: fastbp.dp_backprop(
                a.X, a.Y, *a.net, max_grad_norm=1.0, noise_multiplier=v
            ),
        ),
        ("dp_sgd_epoch", lambda a, v: dp_epoch(a, noise_multiplier=v)),
        ("MLP", lambda a, v: private_model(noise_multiplier=v)),
        ("privacy.epsilon", lambda a, v: privacy_epsilon(noise_multiplier=v)),
    ],
    "max_grad_norm": [
        ("dp_backprop", lambda a, v: fastbp.dp_backprop(a.X, a.Y, *a.net, max_grad_norm=v)),
        ("dp_sgd_epoch", lambda a, v: dp_epoch(a, max_grad_norm=v, noise_multiplier=0.0)),
        ("MLP", lambda a, v: MLP(max_grad_norm=v, noise_multiplier=None if v is None else 0.0)),
    ],
    "target_epsilon": [
        ("MLP", lambda a, v: private_model(target_epsilon=v)),
        ("privacy.noise_multiplier", lambda a, v: privacy_sigma(target_epsilon=v)),
    ],
    "delta": [
        ("MLP", lambda a, v: MLP(delta=v)),
        ("privacy.epsilon", lambda a, v: privacy_epsilon(delta=v)),
        ("privacy.noise_multiplier", lambda a, v: privacy_sigma(delta=v)),
    ],
    "sample_rate": [
        ("dp_sgd_epoch", lambda a, v: dp_epoch(a, sample_rate=v)),
        ("privacy.epsilon", lambda a, v: privacy_epsilon(sample_rate=v)),
        ("privacy.noise_multiplier", lambda a, v: privacy_sigma(sample_rate=v)),
    ],
    "steps": [
        ("dp_sgd_epoch", lambda a, v: dp_epoch(a, steps=v)),
        ("privacy.epsilon", lambda a, v: privacy_epsilon(steps=v)),
        ("privacy.noise_multiplier", lambda a, v: privacy_sigma(steps=v)),
    ],
    "epochs": [("MLP", lambda a, v: MLP(epochs=v))],
    "minibatch_size": [
        ("sgd_epoch", lambda a, v: sgd(a, minibatch_size=v)),
        ("MLP", lambda a, v: MLP(minibatch_size=v)),
    ],
    "n_hidden": [("MLP", lambda a, v: MLP(n_hidden=v))],
    "n_chunks": [
        ("backprop", lambda a, v: fastbp.backprop(a.X, a.Y, *a.net, n_chunks=v)),
        (
            "per_example_grad_norms",
            lambda a, v: fastbp.per_example_grad_norms(a.X, a.Y, *a.net, n_chunks=v),
        ),
        (
            "dp_backprop",
            lambda a, v: fastbp.dp_backprop(a.X, a.Y, *a.net, max_grad_norm=1.0, n_chunks=v),
        ),
        (
            "grad_W_out_blocked",
            lambda a, v: fastbp.grad_W_out_blocked(a.A_h, a.delta_out, n_chunks=v),
        ),
    ],
    "n_threads": [
        ("backprop", lambda a, v: fastbp.backprop(a.X, a.Y, *a.net, n_threads=v)),
        (
            "dp_backprop",
            lambda a, v: fastbp.dp_backprop(a.X, a.Y, *a.net, max_grad_norm=1.0, n_threads=v),
        ),
        (
            "per_example_grad_norms",
            lambda a, v: fastbp.per_example_grad_norms(a.X, a.Y, *a.net, n_threads=v),
        ),
        (
            "grad_W_out_blocked",
            lambda a, v: fastbp.grad_W_out_blocked(a.A_h, a.delta_out, n_threads=v),
        ),
        ("MLP", lambda a, v: MLP(n_threads=v)),
    ],
    "seed": [("MLP", lambda a, v: MLP(seed=v))],
    "block_n": [
        (
            "grad_W_out_blocked",
            lambda a, v: fastbp.grad_W_out_blocked(a.A_h, a.delta_out, block_n=v),
        ),
    ],
    "block_d": [
        (
            "grad_W_out_blocked",
            lambda a, v: fastbp.grad_W_out_blocked(a.A_h, a.delta_out, block_d=v),
        ),
    ],
    "block_t": [
        (
            "grad_W_out_blocked",
            lambda a, v: fastbp.grad_W_out_blocked(a.A_h, a.delta_out, block_t=v),
        ),
    ],
    "split_every": [("fastbp.dask.backprop", lambda a, v: dask_backprop(a, split_every=v))],
    "shuffle": [("MLP", lambda a, v: MLP(shuffle=v))],
    "compute": [("fastbp.dask.backprop", lambda a, v: dask_backprop(a, compute=v))],
    "solver": [("MLP", lambda a, v: MLP(solver=v))],
    "accountant": [
        ("privacy.epsilon", lambda a, v: privacy_epsilon(accountant=v)),
        ("privacy.noise_multiplier", lambda a, v: privacy_sigma(accountant=v)),
    ],
    "method": [("grad_W_out", lambda a, v: fastbp.grad_W_out(a.A_h, a.delta_out, method=v))],
    "n": [
        ("default_n_chunks", lambda a, v: fastbp.default_n_chunks(v, 3, 2, 8)),
        ("default_backprop_chunks", lambda a, v: fastbp.default_backprop_chunks(v, 4, 3, 2, 8)),
    ],
    "m": [("default_backprop_chunks", lambda a, v: fastbp.default_backprop_chunks(5, v, 3, 2, 8))],
    "d": [
        ("default_n_chunks", lambda a, v: fastbp.default_n_chunks(5, v, 2, 8)),
        ("default_backprop_chunks", lambda a, v: fastbp.default_backprop_chunks(5, 4, v, 2, 8)),
    ],
    "t": [
        ("default_n_chunks", lambda a, v: fastbp.default_n_chunks(5, 3, v, 8)),
        ("default_backprop_chunks", lambda a, v: fastbp.default_backprop_chunks(5, 4, 3, v, 8)),
    ],
    "itemsize": [
        ("default_n_chunks", lambda a, v: fastbp.default_n_chunks(5, 3, 2, v)),
        ("default_backprop_chunks", lambda a, v: fastbp.default_backprop_chunks(5, 4, 3, 2, v)),
    ],
}

REAL_NON_NEGATIVE = {"l2", "noise_multiplier"}
REAL_POSITIVE = {"eta", "target_epsilon"}
# Real parameters where +inf means something: max_grad_norm=inf is no clipping.
REAL_POSITIVE_OR_INF = {"max_grad_norm"}
# Real parameters in an interval (the message writes it).
REAL_INTERVALS = {"delta": "(0, 1)", "sample_rate": "(0, 1]"}
REAL = REAL_NON_NEGATIVE | REAL_POSITIVE | REAL_POSITIVE_OR_INF | set(REAL_INTERVALS)
# True or False (NumPy bools too), nothing else.
BOOLEAN = {"shuffle", "compute"}
# One of a few names: another str is a ValueError, anything else a TypeError.
CHOICES = {"solver", "accountant", "method"}
# Integer parameters where 0 is legal, and where None is (the default).
ZERO_IS_LEGAL = {"epochs", "seed", "n", "m", "d", "t"}
NONE_IS_LEGAL = {"n_chunks", "n_threads", "seed", "split_every"}
# Where a parameter's rule depends on the function: (parameter, function) pairs.
ZERO_IS_LEGAL_AT = {("steps", "privacy.epsilon"), ("steps", "privacy.noise_multiplier")}
NONE_IS_LEGAL_AT = {
    ("steps", "dp_sgd_epoch"),  # round(1 / sample_rate) steps
    ("max_grad_norm", "MLP"),  # plain training (the privacy parameters all None)
    ("noise_multiplier", "MLP"),
    ("target_epsilon", "MLP"),
}

# The kinds of scalar every parameter is tried with: (kind, value).
SCALAR_VALUES = [
    ("str", "0.1"),
    ("str of an integer", "1"),
    ("bool", True),
    ("None", None),
    ("NaN", math.nan),
    ("+inf", math.inf),
    ("-inf", -math.inf),
    ("negative", -1),
    ("zero", 0),
    ("float for an integer", 2.0),
    ("complex", 1j),
    ("0-d array", np.array(2)),
    ("too large for a float", 10**400),
]


def scalar_expectation(param, kind, value, site=None):
    """The error (type, message fragment) a parameter gives for a kind of value; None if legal."""
    real = param in REAL
    if kind == "None" and (param in NONE_IS_LEGAL or (param, site) in NONE_IS_LEGAL_AT):
        return None
    if param in BOOLEAN:
        return None if kind == "bool" else (TypeError, "True or False")
    if param in CHOICES:
        return (ValueError if kind.startswith("str") else TypeError), "one of"
    if param in REAL_POSITIVE_OR_INF:
        if kind == "+inf" or kind == "float for an integer":
            return None
        if kind in ("NaN", "-inf", "too large for a float", "negative", "zero"):
            return ValueError, "positive number"
        return TypeError, "positive real number"
    if param in REAL_INTERVALS:
        interval = REAL_INTERVALS[param]
        if kind in ("str", "str of an integer", "bool", "None", "complex", "0-d array"):
            return TypeError, f"real number in {interval}"
        return ValueError, f"finite number in {interval}"
    if param == "itemsize":  # 4 or 8, nothing else
        not_an_integer = kind not in ("negative", "zero", "too large for a float")
        return (TypeError if not_an_integer else ValueError), "4 or 8"
    if kind in ("str", "str of an integer", "bool", "None", "complex", "0-d array"):
        return TypeError, "real number" if real else "integer"
    if kind in ("NaN", "+inf", "-inf", "float for an integer"):
        if real:
            return None if kind == "float for an integer" else (ValueError, "finite number")
        return TypeError, "integer"
    if kind == "too large for a float":
        if real:
            return ValueError, "finite number"
        if param == "itemsize":
            return ValueError, "4 or 8"
        if param == "seed":
            return None  # numpy.random.default_rng takes any non-negative integer
        return ValueError, "of at most 2**63 - 1"  # the kernels' int64
    if kind == "negative":
        if param == "itemsize":
            return ValueError, "4 or 8"
        if param in REAL_POSITIVE:
            return ValueError, "positive"
        zero_is_legal = param in ZERO_IS_LEGAL or (param, site) in ZERO_IS_LEGAL_AT
        return ValueError, "non-negative" if real or zero_is_legal else "positive"
    if kind == "zero":
        if param == "itemsize":
            return ValueError, "4 or 8"
        if param in REAL_NON_NEGATIVE or param in ZERO_IS_LEGAL:
            return None
        if (param, site) in ZERO_IS_LEGAL_AT:
            return None
        return ValueError, "positive"
    raise AssertionError(kind)


def scalar_cases():
    cases = []
    for param, sites in SCALAR_SITES.items():
        for kind, value in SCALAR_VALUES:
            for site, call in sites:
                expected = scalar_expectation(param, kind, value, site)
                if expected is not None:
                    cases.append((f"{param}: {kind}", site, param, value, call, *expected))
    return cases


SCALAR_CASES = scalar_cases()


@pytest.mark.parametrize(
    "kind, site, param, value, call, error, fragment",
    SCALAR_CASES,
    ids=[f"{c[0]}-{c[1]}" for c in SCALAR_CASES],
)
def test_bad_scalars_are_refused_by_name(kind, site, param, value, call, error, fragment):
    a = fresh()
    before = snapshot(a)
    with pytest.raises(error) as caught:
        call(a, value)
    message = str(caught.value)
    # The argument by name, what was expected, and what it got.
    assert message.startswith(f"{param} must be"), message
    assert fragment in message, message
    assert f"got {value!r}" in message, message
    assert_unchanged(a, before)


def test_scalar_types_accepted_besides_python_numbers():
    a = fresh()
    # NumPy scalars and fractions are real numbers; the result is the plain float's.
    for l2 in (np.float32(0.25), np.float64(0.25), Fraction(1, 4)):
        expected = fastbp.backprop(a.X, a.Y, *a.net, l2=0.25)
        result = fastbp.backprop(a.X, a.Y, *a.net, l2=l2)
        assert all(np.array_equal(x, y) for x, y in zip(result, expected))
    model = MLP(
        n_hidden=np.int64(3), epochs=np.int32(2), minibatch_size=np.uint8(2), seed=np.int64(0)
    )
    assert (model.n_hidden, model.epochs, model.minibatch_size, model.seed) == (3, 2, 2, 0)
    assert type(model.n_hidden) is int and type(model.epochs) is int
    assert MLP(eta=np.float32(0.5)).eta == 0.5 and MLP(epochs=0).epochs == 0
    assert MLP(shuffle=np.bool_(False)).shuffle is False
    # A seed is any non-negative integer, as numpy.random.default_rng takes it.
    assert MLP(seed=10**400).seed == 10**400
    assert MLP(max_grad_norm=math.inf, noise_multiplier=0.0).max_grad_norm == math.inf


@pytest.mark.parametrize("value", ["no", 0, 1, None, 1.0])
def test_shuffle_must_be_a_bool(value):
    with pytest.raises(TypeError, match=rf"^shuffle must be True or False, got {value!r}"):
        MLP(shuffle=value)


def test_n_threads_above_numbas_limit_is_refused_by_name():
    a = fresh()
    too_many = 10**6
    with pytest.raises(ValueError, match=rf"n_threads must be at most .* got {too_many}"):
        fastbp.backprop(a.X, a.Y, *a.net, n_threads=too_many)


# --------------------------------------------------------------------------
# Arrays: (kind, where, call(a), error, pattern)
# --------------------------------------------------------------------------


def order_with(values, dtype=None):
    return np.array(values, dtype=dtype)


def aliasing_X_and_W_out(a):
    X = np.zeros((n, m))
    return sgd(a, X=X, W_out=X[:d, :t])


def read_only(array):
    array = array.copy()
    array.flags.writeable = False
    return array


def model_file(tmp, **change):
    """A model file written with numpy.savez: a real model's arrays, some replaced."""
    path = tmp / "model.npz"
    a = fresh()
    fit(a).save(path)
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays.update(change)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return path


Y_RANGE = r"^Y must hold targets in \[0, 1\].*got {} at index \(1, 0\)"

ARRAY_CASES = [
    # Targets outside [0, 1] (NaN propagates: see LEGAL_CASES)
    ("Y above 1", "cost", lambda a: fastbp.cost(a.A_out, with_Y(a, 1.5)), ValueError,
     Y_RANGE.format(1.5)),
    ("Y below 0", "cost", lambda a: fastbp.cost(a.A_out, with_Y(a, -0.25)), ValueError,
     Y_RANGE.format(-0.25)),
    ("Y = +inf", "backprop", lambda a: fastbp.backprop(a.X, with_Y(a, np.inf), *a.net),
     ValueError, Y_RANGE.format("inf")),
    ("Y = -inf", "backprop", lambda a: fastbp.backprop(a.X, with_Y(a, -np.inf), *a.net),
     ValueError, Y_RANGE.format("-inf")),
    ("Y above 1 beside a NaN", "backprop",
     lambda a: fastbp.backprop(a.X, with_Y(with_Y(a, 2.0), np.nan, 0, 1), *a.net),
     ValueError, Y_RANGE.format(2.0)),
    ("Y above 1", "sgd_epoch", lambda a: sgd(a, Y=with_Y(a, 1.5)), ValueError,
     Y_RANGE.format(1.5)),
    ("Y above 1", "fastbp.dask.backprop", lambda a: dask_backprop(a, Y=with_Y(a, 1.5)),
     ValueError, r"^Y \(a block of it\) must hold targets in \[0, 1\].*got 1.5"),
    ("Y above 1", "per_example_grad_norms",
     lambda a: fastbp.per_example_grad_norms(a.X, with_Y(a, 1.5), *a.net), ValueError,
     Y_RANGE.format(1.5)),
    ("Y below 0", "per_example_grads",
     lambda a: fastbp.per_example_grads(a.X, with_Y(a, -0.25), *a.net), ValueError,
     Y_RANGE.format(-0.25)),
    ("Y = +inf", "dp_backprop",
     lambda a: fastbp.dp_backprop(a.X, with_Y(a, np.inf), *a.net, max_grad_norm=1.0),
     ValueError, Y_RANGE.format("inf")),
    ("Y above 1", "dp_sgd_epoch", lambda a: dp_epoch(a, Y=with_Y(a, 1.5)), ValueError,
     Y_RANGE.format(1.5)),
    # NaN or inf in weights where weights are taken as a model's
    ("NaN in init weights", "MLP.fit",
     lambda a: MLP(n_hidden=3, epochs=1).fit(a.X, a.labels, init=(
         np.where(a.W_h > 0, np.nan, a.W_h), a.b_h, np.zeros((d, 3)), np.zeros(3))),
     ValueError, "^init W_h contains NaN or infinity"),
    ("inf in init weights", "MLP.fit",
     lambda a: MLP(n_hidden=3, epochs=1).fit(a.X, a.labels, init=(
         a.W_h, a.b_h, np.full((d, 3), np.inf), np.zeros(3))),
     ValueError, "^init W_out contains NaN or infinity"),
    # A model without inputs (zero widths in the kernels are legal: see LEGAL_CASES)
    ("m = 0", "MLP.fit", lambda a: MLP(epochs=1).fit(a.X[:, :0], a.labels), ValueError,
     r"^X has shape \(6, 0\): a network needs at least one input"),
    # dtypes
    ("object array", "backprop", lambda a: fastbp.backprop(a.X.astype(object), a.Y, *a.net),
     TypeError, "^X has dtype object; expected float32 or float64"),
    ("complex array", "forward",
     lambda a: fastbp.forward(a.X, a.W_h.astype(complex), a.b_h, a.W_out, a.b_out), TypeError,
     "^W_h has dtype complex128; expected float32 or float64"),
    ("float16 array", "cost", lambda a: fastbp.cost(a.A_out.astype(np.float16), a.Y), TypeError,
     r"^A_out has dtype float16; expected float32 or float64; convert it first, e\.g\."),
    ("integer array", "sgd_epoch", lambda a: sgd(a, b_h=np.zeros(d, np.int64)), TypeError,
     "^b_h has dtype int64; expected float32 or float64"),
    ("bool array", "grad_W_h", lambda a: fastbp.grad_W_h(a.X > 0.5, a.delta_h), TypeError,
     "^X has dtype bool; expected float32 or float64"),
    ("integer array", "MLP.fit", lambda a: MLP(epochs=1).fit(a.X.astype(int), a.labels),
     TypeError, "^X has dtype int64"),
    ("integer list", "delta_out", lambda a: fastbp.delta_out([[0.5]], [[1]]), TypeError,
     "^Y has dtype int64"),
    ("ragged list", "sigmoid", lambda a: fastbp.sigmoid([[0.5], [0.5, 1.0]]), ValueError,
     r"^Z cannot be read as an array of float32 or float64 \(.*inhomogeneous.*\); got list"),
    # Weights that sgd_epoch updates in place
    ("list as a weight", "sgd_epoch", lambda a: sgd(a, W_h=a.W_h.tolist()), TypeError,
     r"^W_h must be a numpy.ndarray \(it is updated in place\), got list"),
    ("tuple as a weight", "sgd_epoch", lambda a: sgd(a, b_out=tuple(a.b_out)), TypeError,
     r"^b_out must be a numpy.ndarray \(it is updated in place\), got tuple"),
    ("read-only weight", "sgd_epoch", lambda a: sgd(a, W_out=read_only(a.W_out)), ValueError,
     "^W_out is read-only; sgd_epoch updates the weights in place"),
    ("weights of mixed dtypes", "sgd_epoch", lambda a: sgd(a, b_h=a.b_h.astype(np.float32)),
     TypeError, r"^the weights must share one dtype .*b_h float32"),
    # order
    ("order: index out of range", "sgd_epoch", lambda a: sgd(a, order=order_with([0, 1, n])),
     ValueError, rf"^order holds index {n}, outside the {n} rows of X \(0..{n - 1}\)"),
    ("order: negative index", "sgd_epoch", lambda a: sgd(a, order=order_with([0, -1, 2])),
     ValueError, "^order holds index -1, outside the 6 rows of X"),
    ("order: float dtype", "sgd_epoch", lambda a: sgd(a, order=a.order.astype(float)),
     TypeError, "^order must hold integer example indices, got dtype float64"),
    ("order: bool dtype", "sgd_epoch", lambda a: sgd(a, order=a.order > 2), TypeError,
     "^order must hold integer example indices, got dtype bool"),
    ("order: shorter than a minibatch", "sgd_epoch", lambda a: sgd(a, order=a.order[:1]),
     ValueError, r"^minibatch_size \(2\) is larger than order \(1 examples\)"),
    ("order: 2-D", "sgd_epoch", lambda a: sgd(a, order=a.order.reshape(2, 3)), ValueError,
     r"^order must be 1-D \(example indices\), got shape \(2, 3\)"),
    # Arrays that alias one another in sgd_epoch
    ("weight that is a view of X", "sgd_epoch", aliasing_X_and_W_out, ValueError,
     "^W_out shares memory with X; sgd_epoch updates the weights in place while it reads X"),
    ("weight that is a view of Y", "sgd_epoch",
     lambda a: sgd(a, b_out=a.Y[0], Y=a.Y), ValueError, "^b_out shares memory with Y"),
    ("weights that share memory", "sgd_epoch", lambda a: sgd(a, b_h=a.W_h[0, :d]), ValueError,
     "^W_h and b_h share memory"),
    # Shapes whose buffers would not fit in memory
    ("result larger than memory", "sigmoid", lambda a: fastbp.sigmoid(HUGE), ValueError,
     r"^sigmoid's result of shape \(1048576, 1048576\) .* would take 8\.0 TiB, more than"),
    ("result larger than memory", "grad_W_out",
     lambda a: fastbp.grad_W_out(HUGE[:2], HUGE[:2]), ValueError,
     r"^grad_W_out's result of shape \(1048576, 1048576\) .* 8\.0 TiB"),
    ("result larger than memory", "forward",
     lambda a: fastbp.forward(HUGE[:, :1], np.ones((1, 2**20)), np.ones(2**20), np.ones((2**20, 1)),
                              np.ones(1)),
     ValueError, r"^forward's result A_h of shape \(1048576, 1048576\)"),
    ("copy larger than memory", "backprop",
     lambda a: fastbp.backprop(HUGE, np.zeros((2**20, 1)), np.zeros((2**20, 1)), np.zeros(1),
                               np.zeros((1, 1)), np.zeros(1)),
     ValueError, r"^a C-contiguous float64 copy of X of shape \(1048576, 1048576\) .* 8\.0 TiB"),
    ("result larger than memory", "delta_h",
     lambda a: fastbp.delta_h(np.broadcast_to(np.zeros(1), (2**20, 1)), np.zeros((2**20, 1)), HUGE),
     ValueError, r"^delta_h's result of shape \(1048576, 1048576\)"),
    ("n_chunks whose partials exceed memory", "backprop",
     lambda a: fastbp.backprop(a.X, a.Y, *a.net, n_chunks=2**50), ValueError,
     r"^the partial gradients of n_chunks=1125899906842624 of shape \(1125899906842624, 23\)"),
    ("n_chunks whose partials exceed memory", "grad_W_out_blocked",
     lambda a: fastbp.grad_W_out_blocked(a.A_h, a.delta_out, n_chunks=2**50), ValueError,
     r"^the partial gradients of n_chunks=1125899906842624 of shape \(1125899906842624, 3, 2\)"),
    ("weights larger than memory", "MLP.fit",
     lambda a: MLP(n_hidden=2**40, epochs=1).fit(a.X, a.labels), ValueError,
     r"^the initial W_h \(m, n_hidden\) of shape \(4, 1099511627776\) .* TiB, more than"),
    ("class label too large for memory", "MLP.fit",
     lambda a: MLP(epochs=1).fit(a.X, a.labels * 2**45), ValueError,
     rf"^the initial W_out \(n_hidden, t\) of shape \(30, {2**46 + 1}\)"),
]  # fmt: skip


@pytest.mark.parametrize(
    "kind, site, call, error, pattern",
    ARRAY_CASES,
    ids=[f"{c[0]}-{c[1]}" for c in ARRAY_CASES],
)
def test_bad_arrays_are_refused_by_name(kind, site, call, error, pattern):
    a = fresh()
    before = snapshot(a)
    with pytest.raises(error, match=pattern):
        call(a)
    assert_unchanged(a, before)


# --------------------------------------------------------------------------
# Model files
# --------------------------------------------------------------------------

FILE_CASES = [
    ("file from a newer fastbp", dict(format_version=np.int64(2)),
     r"was written by a newer fastbp \(model file format 2\); fastbp .* reads formats up to 1"),
    ("NaN in saved weights", dict(W_out=np.full((3, 3), np.nan)),
     "is not a valid fastbp model: W_out contains NaN or infinity"),
    ("inf in saved weights", dict(b_h=np.array([np.inf, 0.0, 0.0])),
     "is not a valid fastbp model: b_h contains NaN or infinity"),
    ("saved shapes that disagree", dict(b_out=np.zeros(4)),
     r"b_out has shape \(4,\) but W_h \(4, 3\) and W_out \(3, 3\) make it \(3,\)"),
    ("saved weights of mixed dtypes", dict(b_h=np.zeros(3, np.float32)),
     "the weights must share one dtype, got W_h float64, b_h float32"),
    ("integer saved weights", dict(W_h=np.zeros((4, 3), np.int64)),
     "W_h has dtype int64; expected float32 or float64"),
    ("saved hyperparameter of the wrong kind", dict(epochs=np.float64(2.5)),
     "epochs must be a single int, got an array of dtype float64"),
    ("saved hyperparameter out of range", dict(eta=np.float64(-1.0)),
     "holds a hyperparameter out of range: eta must be a positive finite number, got -1.0"),
    ("saved file without weights", dict(W_h=None), "is not a saved fastbp model: missing W_h"),
]  # fmt: skip


@pytest.mark.parametrize("kind, change, pattern", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_bad_model_files_are_refused_by_name(tmp_path, kind, change, pattern):
    path = model_file(tmp_path, **change)
    with pytest.raises(ValueError, match=pattern) as caught:
        MLP.load(path)
    assert repr(path) in str(caught.value)


# --------------------------------------------------------------------------
# The command line: argparse's usage message naming the option, exit status 2
# --------------------------------------------------------------------------

CLI_CASES = [
    ("--eta: NaN", ["train", "--eta", "nan"], "argument --eta: must be a positive finite number"),
    (
        "--eta: str",
        ["train", "--eta", "fast"],
        "argument --eta: must be a positive finite number, got 'fast'",
    ),
    (
        "--eta: zero",
        ["train", "--eta", "0"],
        "argument --eta: must be a positive finite number, got 0",
    ),
    (
        "--l2: +inf",
        ["train", "--l2", "inf"],
        "argument --l2: must be a non-negative finite number, got inf",
    ),
    (
        "--l2: negative",
        ["train", "--l2", "-0.5"],
        "argument --l2: must be a non-negative finite number",
    ),
    (
        "--epochs: zero",
        ["train", "--epochs", "0"],
        "argument --epochs: must be a positive integer, got 0",
    ),
    (
        "--epochs: float",
        ["train", "--epochs", "2.5"],
        "argument --epochs: must be a positive integer, got '2.5'",
    ),
    (
        "--hidden: str",
        ["train", "--hidden", "many"],
        "argument --hidden: must be a positive integer",
    ),
    (
        "--minibatch-size: negative",
        ["train", "--minibatch-size", "-4"],
        "argument --minibatch-size: must be a positive integer",
    ),
    (
        "--seed: negative",
        ["train", "--seed", "-1"],
        "argument --seed: must be a non-negative integer, got -1",
    ),
    (
        "--threads: zero",
        ["train", "--threads", "0"],
        "argument --threads: must be a positive integer, got 0",
    ),
    (
        "--threads: above NUMBA_NUM_THREADS",
        ["train", "--threads", "100000"],
        "argument --threads: 100000 exceeds NUMBA_NUM_THREADS",
    ),
    ("-m: zero", ["-m", "0"], "argument -m: must be a positive integer, got 0"),
    ("-n: negative", ["-n", "-1"], "argument -n: must be a non-negative integer, got -1"),
    (
        "--jobs: zero",
        ["compile", "--jobs", "0"],
        "argument --jobs: must be a positive integer, got 0",
    ),
    (
        "--dtypes: float16",
        ["compile", "--dtypes", "float16"],
        "argument --dtypes: expected a comma-separated list of float32, float64",
    ),
    (
        "--shapes: not a shape",
        ["bench", "--shapes", "10x10"],
        "argument --shapes: a shape is 3 positive integers joined by 'x', got '10x10'",
    ),
    (
        "problem larger than memory",
        ["-n", str(2**40), "-m", "784"],
        "fastbp: the problem's X of shape (1099511627776, 784) and dtype float64 would take",
    ),
]


@pytest.mark.parametrize("kind, argv, message", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_bad_command_line_values_exit_2_naming_the_option(kind, argv, message, capsys):
    status, err = cli_exit(argv, capsys)
    assert status == 2
    assert message in err, err


# --------------------------------------------------------------------------
# Legal edge cases, and what they give
# --------------------------------------------------------------------------


def check_nan_cost(result):
    assert np.isnan(result)


def legal_nan_in_Y(a):
    Y = with_Y(a, np.nan)
    cost = fastbp.backprop(a.X, Y, *a.net).cost
    assert np.isnan(cost) and np.isnan(fastbp.cost(a.A_out, Y))
    sgd_cost = sgd(a, Y=Y, W_h=a.W_h.copy(), b_h=a.b_h.copy(), W_out=a.W_out.copy(),
                   b_out=a.b_out.copy())  # fmt: skip
    assert np.isnan(sgd_cost)


def legal_nan_in_weights(a):
    W_h = a.W_h.copy()
    W_h[0, 0] = np.nan
    A_h, A_out = fastbp.forward(a.X, W_h, a.b_h, a.W_out, a.b_out)
    assert np.all(np.isnan(A_h[:, 0])) and np.all(np.isfinite(A_h[:, 1:]))
    assert np.all(np.isnan(A_out))
    result = fastbp.backprop(a.X, a.Y, W_h, a.b_h, a.W_out, a.b_out)
    assert np.isnan(result.cost) and np.isnan(result.grad_W_out).all()


def legal_inf_in_X(a):
    X = a.X.copy()
    X[0, 0] = np.inf
    A_h = fastbp.forward(X, a.W_h, a.b_h, a.W_out, a.b_out)[0]
    # Row 0's sums are ±inf (the sign of W_h[0]), so φ gives exactly 1 or 0; other rows as before.
    assert np.array_equal(A_h[0], (a.W_h[0] > 0).astype(float))
    assert np.array_equal(A_h[1:], fastbp.forward(a.X, *a.net)[0][1:])
    X[1, 0] = np.nan
    assert np.all(np.isnan(fastbp.forward(X, *a.net)[1][1]))


def legal_n_zero(a):
    result = fastbp.backprop(a.X[:0], a.Y[:0], *a.net, l2=0.5)
    assert result.cost == fastbp.l2_penalty(a.W_h, a.W_out, 0.5)
    # The data's gradients are zero: only the penalty's λW is left.
    assert np.array_equal(result.grad_W_h, 0.5 * a.W_h)
    assert np.array_equal(result.grad_W_out, 0.5 * a.W_out)
    assert not result.grad_b_h.any() and not result.grad_b_out.any()
    assert fastbp.forward(a.X[:0], *a.net)[1].shape == (0, t)
    assert fastbp.cost(a.A_out[:0], a.Y[:0]) == 0


def network_reference(X, Y, W_h, b_h, W_out, b_out, l2):
    """Cost and gradients by the formulas, in NumPy (empty sums are 0 there too)."""
    A_h = 1 / (1 + np.exp(-(X @ W_h + b_h)))
    A_out = 1 / (1 + np.exp(-(A_h @ W_out + b_out)))
    delta_out = A_out - Y
    delta_h = (delta_out @ W_out.T) * A_h * (1 - A_h)
    return (
        X.T @ delta_h + l2 * W_h, delta_h.sum(axis=0), A_h.T @ delta_out + l2 * W_out,
        delta_out.sum(axis=0),
    )  # fmt: skip


def legal_zero_width_networks(a):
    rng = np.random.default_rng(5)
    for m_, d_, t_ in ((0, 3, 2), (4, 0, 2), (4, 3, 0), (0, 0, 0)):
        X, Y = rng.random((n, m_)), rng.random((n, t_))
        net = (rng.normal(size=(m_, d_)), rng.normal(size=d_), rng.normal(size=(d_, t_)),
               rng.normal(size=t_))  # fmt: skip
        result = fastbp.backprop(X, Y, *net, l2=0.5)
        for got, want in zip(result[1:], network_reference(X, Y, *net, 0.5)):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
        A_h, A_out = fastbp.forward(X, *net)
        assert A_h.shape == (n, d_) and A_out.shape == (n, t_)
        if m_ == 0:  # φ(b_h) on every row
            assert np.array_equal(A_h, np.broadcast_to(fastbp.sigmoid(net[1]), (n, d_)))
        weights = [w.copy() for w in net]
        sgd(a, X=X, Y=Y, W_h=weights[0], b_h=weights[1], W_out=weights[2], b_out=weights[3])
        assert all(np.all(np.isfinite(w)) for w in weights)


def legal_zero_width_elementwise(a):
    # Not a network: d or t = 0 is an empty product or sum, as in NumPy.
    for A_h, delta in ((a.A_h[:, :0], a.delta_out), (a.A_h, a.delta_out[:, :0])):
        for method in fastbp.GRAD_W_OUT_METHODS:
            G = fastbp.grad_W_out(A_h, delta, method=method)
            assert G.shape == (A_h.shape[1], delta.shape[1]) and not G.any()
    assert fastbp.sigmoid(a.Z[:, :0]).shape == (n, 0)
    assert fastbp.delta_out(a.A_out[:, :0], a.Y[:, :0]).shape == (n, 0)
    assert fastbp.cost(a.A_out[:, :0], a.Y[:, :0]) == 0
    assert fastbp.grad_b_out(a.delta_out[:, :0]).shape == (0,)
    assert fastbp.grad_b_h(a.delta_h[:, :0]).shape == (0,)
    G = fastbp.grad_W_h(a.X[:, :0], a.delta_h)
    assert G.shape == (0, d)
    G = fastbp.grad_W_h(a.X, a.delta_h[:, :0])
    assert G.shape == (m, 0)
    assert np.array_equal(fastbp.grad_W_h(a.X[:0], a.delta_h[:0]), np.zeros((m, d)))
    assert fastbp.delta_h(a.delta_out[:, :0], a.W_out[:, :0], a.A_h).shape == (n, d)
    assert not fastbp.delta_h(a.delta_out[:, :0], a.W_out[:, :0], a.A_h).any()
    assert fastbp.delta_h(a.delta_out, a.W_out[:0], a.A_h[:, :0]).shape == (n, 0)


def legal_lists_tuples_memmaps_read_only(a, tmp):
    expected = fastbp.backprop(a.X, a.Y, *a.net)
    memmap = np.lib.format.open_memmap(tmp / "X.npy", mode="w+", dtype=np.float64, shape=a.X.shape)
    memmap[:] = a.X
    memmap.flush()
    read_only_X = np.load(tmp / "X.npy", mmap_mode="r")
    for X in (a.X.tolist(), tuple(map(tuple, a.X)), memmap, read_only_X, read_only(a.X)):
        result = fastbp.backprop(X, a.Y, *a.net)
        assert all(np.array_equal(x, y) for x, y in zip(result, expected))
    del memmap, read_only_X


def legal_duplicates_in_order(a):
    order = np.array([0, 0, 3, 3, 5, 1, 1])  # repeats, a subset, an odd length
    W = [w.copy() for w in a.net]
    sgd(a, W_h=W[0], b_h=W[1], W_out=W[2], b_out=W[3], order=order)
    expected = [w.copy() for w in a.net]
    for start in range(0, 6, 2):
        rows = order[start : start + 2]
        result = fastbp.backprop(a.X[rows], a.Y[rows], *expected)
        for weight, gradient in zip(expected, result[1:]):
            weight -= 0.1 * gradient
    assert all(np.array_equal(x, y) for x, y in zip(W, expected))


def legal_weights_as_memmaps(a, tmp):
    W_h = np.lib.format.open_memmap(tmp / "W_h.npy", mode="w+", dtype=np.float64, shape=(m, d))
    W_h[:] = a.W_h
    plain = a.W_h.copy()
    sgd(a, W_h=W_h, b_h=a.b_h.copy(), W_out=a.W_out.copy(), b_out=a.b_out.copy())
    sgd(a, W_h=plain, b_h=a.b_h.copy(), W_out=a.W_out.copy(), b_out=a.b_out.copy())
    assert np.array_equal(W_h, plain) and not np.array_equal(plain, a.W_h)
    del W_h


LEGAL_CASES = [
    ("NaN in Y", "cost, backprop, sgd_epoch: NaN cost (propagates, as documented)",
     legal_nan_in_Y),
    ("NaN or inf in weights", "forward, backprop, sgd_epoch: NaN/inf propagate as in NumPy "
     "(MLP.fit's init and MLP.load refuse them)", legal_nan_in_weights),
    ("NaN or inf in X", "the kernels: propagate as in NumPy (MLP.fit and predict refuse them)",
     legal_inf_in_X),
    ("n = 0", "every function: zero gradients, the L2 penalty alone as the cost, empty outputs",
     legal_n_zero),
    ("m, d or t = 0 in a network", "forward, backprop, sgd_epoch: empty sums are 0, as in "
     "NumPy (m = 0: A_h = φ(b_h) on every row); MLP.fit refuses an X without columns",
     legal_zero_width_networks),
    ("d or t = 0 in a single product or sum",
     "grad_W_out*, grad_W_h, grad_b_*, delta_*, sigmoid, cost: empty results, or zeros for an "
     "empty sum", legal_zero_width_elementwise),
    ("lists, tuples, memmaps, read-only arrays", "every input that is only read: the same bits "
     "as a C-contiguous array", legal_lists_tuples_memmaps_read_only),
    ("duplicates and subsets in order", "sgd_epoch: legal; the steps of the per-step loop",
     legal_duplicates_in_order),
    ("memmap weights", "sgd_epoch: updated in place, the bits of ndarray weights",
     legal_weights_as_memmaps),
]  # fmt: skip


@pytest.mark.parametrize("kind, gives, check", LEGAL_CASES, ids=[c[0] for c in LEGAL_CASES])
def test_legal_edge_cases_give_what_the_docs_say(kind, gives, check, tmp_path):
    a = fresh()
    before = snapshot(a)
    if check.__code__.co_argcount == 2:
        check(a, tmp_path)
    else:
        check(a)
    assert_unchanged(a, before)


# --------------------------------------------------------------------------
# The docs page
# --------------------------------------------------------------------------


def kinds():
    """Every kind of bad input in the tables: (kind, where, what it gets)."""
    rows = {}
    for kind, site, param, value, call, error, fragment in SCALAR_CASES:
        rows.setdefault((kind, error.__name__), []).append(site)
    table = [
        (kind, ", ".join(dict.fromkeys(sites)), f"`{error}` naming `{kind.split(':')[0]}`")
        for (kind, error), sites in rows.items()
    ]
    scalar_legal = []
    for param, sites in SCALAR_SITES.items():
        for kind, value in SCALAR_VALUES:
            legal = [
                site for site, _ in sites if scalar_expectation(param, kind, value, site) is None
            ]
            if legal:
                scalar_legal.append((f"{param}: {kind}", ", ".join(legal), "legal"))
    array_rows = {}
    for kind, site, call, error, pattern in ARRAY_CASES:
        array_rows.setdefault((kind, error.__name__), []).append(site)
    table += [(kind, ", ".join(sites), f"`{error}`") for (kind, error), sites in array_rows.items()]
    table += [(kind, "MLP.load", "`ValueError` naming the file") for kind, _, _ in FILE_CASES]
    table += [
        (kind, f"`fastbp {' '.join(argv)}`", "exit status 2, the option named")
        for kind, argv, _ in CLI_CASES
    ]
    return table, scalar_legal


def markdown():
    table, scalar_legal = kinds()
    lines = [
        "# Bad inputs, and what each gets",
        "",
        "Generated from `tests/test_bad_inputs.py` by `python tests/test_bad_inputs.py`; "
        "every row is a test there.  Each refused kind raises the error below, whose message "
        "names the argument, shows what it got and says what was expected; no argument is "
        "modified.  The command line ends with argparse's usage message naming the option and "
        "exit status 2.",
        "",
        "## Decisions",
        "",
        "* **One checker per kind of scalar**, in `fastbp/_validate.py`: `positive_int`, "
        "`non_negative_int`, `real_number`, `boolean` and `one_of`; and **one rule per "
        "parameter** that several functions take (`l2`, `eta`, `n_threads`, `max_grad_norm`, "
        "`noise_multiplier`, `sample_rate`, `delta`, `target_epsilon`), the same in `MLP`, the "
        "kernels, private training, `fastbp.privacy` and `fastbp.dask`.  Python and NumPy "
        'numbers are accepted; strings (even `"0.1"`), bools, None (unless it means a default), '
        "complex numbers and 0-d arrays raise `TypeError`; NaN, ±inf (except "
        "`max_grad_norm=inf`, no clipping), values out of range and integers above 2**63 − 1 "
        "(what the kernels take; a seed may be larger) raise `ValueError`.  A flag is True or "
        "False; a name (`solver`, `accountant`, `method`) is one of its choices, case and all.",
        "* **Targets** `Y` must lie in [0, 1] for `cost`, `backprop`, `sgd_epoch` and "
        "`fastbp.dask.backprop` (there each block is checked in its task, so the error comes "
        "when the result is computed).  NaN is let through and propagates to the cost, as "
        "documented; ±inf is refused.  `A_out` outside [0, 1] still gives NaN (an output, not a "
        "target).",
        "* **NaN and ±inf** in `X`, `A_h`, `delta_*` and the weights propagate through the "
        "kernels as in NumPy.  `MLP` refuses them where they would become a model: `fit`'s `X`, "
        "`y`, validation set and `init`, and the weights `MLP.load` reads.",
        "* **Empty arrays**: n = 0 is legal everywhere (zero gradients; the cost is the L2 "
        "penalty alone), and so are m, d or t = 0 in every function: empty results, or the "
        "zeros of an empty sum, as in NumPy.  Only `MLP.fit` refuses an `X` without columns "
        "or an `init` without outputs (a model with nothing to learn from, or nothing to "
        "predict, is a mistake upstream); `MLP` needs `n_hidden` ≥ 1.",
        "* **`order`** (`sgd_epoch`): integer indices in 0..n−1.  Duplicates and subsets are "
        "legal (an epoch may revisit or leave out examples); negative indices are refused, not "
        "read from the end.",
        "* **Aliasing**: `sgd_epoch` refuses a weight that shares memory with another weight, "
        "with `X`, `Y` or `order` (it writes the weights while it reads the rest).",
        "* **Memory**: a result or a copy larger than the machine's physical memory (read once "
        "at import) is refused with its name, shape and size before anything is allocated.",
        "",
        f"## Refused ({len(table)} kinds)",
        "",
        "| kind | where | gets |",
        "|---|---|---|",
        *[f"| {kind} | {where} | {gets} |" for kind, where, gets in table],
        "",
        "## Legal, and what they give",
        "",
        "| kind | gives |",
        "|---|---|",
        *[f"| {kind} | {gives} |" for kind, gives, _ in LEGAL_CASES],
        "",
        "Scalar values that are legal where the table above does not list them "
        "(each is the plain value's result):",
        "",
        *[f"* `{kind}` ({where})" for kind, where, _ in scalar_legal],
        "",
    ]
    return "\n".join(lines)


def test_at_least_40_kinds_and_the_docs_page_is_up_to_date():
    table, _ = kinds()
    assert len(table) >= 40
    assert DOCS_PAGE.read_text() == markdown(), (
        "docs/bad_inputs.md is out of date: "
        "run python tests/test_bad_inputs.py > docs/bad_inputs.md"
    )


if __name__ == "__main__":
    sys.stdout.write(markdown())
