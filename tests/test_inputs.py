"""Bad input gets a clear error naming the argument; odd-but-valid input works."""

import numpy as np
import pytest

import fastbp

n, m, d, t = 5, 4, 3, 2
F64 = np.float64


def good():
    rng = np.random.default_rng(0)
    return dict(
        X=rng.random((n, m)),
        W_h=rng.random((m, d)),
        b_h=rng.random(d),
        W_out=rng.random((d, t)),
        b_out=rng.random(t),
        A_h=rng.random((n, d)),
        A_out=rng.random((n, t)),
        Y=rng.random((n, t)),
        delta_out=rng.random((n, t)) - 0.5,
        Z=rng.random((n, t)),
    )


CALLS = {
    "forward": (fastbp.forward, ["X", "W_h", "b_h", "W_out", "b_out"]),
    "delta_out": (fastbp.delta_out, ["A_out", "Y"]),
    "cost": (fastbp.cost, ["A_out", "Y"]),
    "grad_W_out_outer": (fastbp.grad_W_out_outer, ["A_h", "delta_out"]),
    "grad_W_out_blocked": (fastbp.grad_W_out_blocked, ["A_h", "delta_out"]),
    "grad_W_out_matmul": (fastbp.grad_W_out_matmul, ["A_h", "delta_out"]),
    "grad_W_out": (fastbp.grad_W_out, ["A_h", "delta_out"]),
    "grad_b_out": (fastbp.grad_b_out, ["delta_out"]),
    "sigmoid": (fastbp.sigmoid, ["Z"]),
}
ARGUMENTS = [(call, arg) for call, (_, args) in CALLS.items() for arg in args]


def call_with(call, **replacements):
    function, names = CALLS[call]
    values = good()
    values.update(replacements)
    return function(*[values[name] for name in names])


BAD_DTYPES = {
    "int64": lambda a: a.astype(np.int64),
    "int8": lambda a: a.astype(np.int8),
    "bool": lambda a: a > 0.5,
    "complex128": lambda a: a.astype(np.complex128),
    "object": lambda a: a.astype(object),
    "float16": lambda a: a.astype(np.float16),
    "longdouble": lambda a: a.astype(np.longdouble),
}


@pytest.mark.parametrize("bad", sorted(BAD_DTYPES))
@pytest.mark.parametrize("call, arg", ARGUMENTS)
def test_non_float_dtypes_are_refused_by_name(call, arg, bad):
    value = BAD_DTYPES[bad](good()[arg])
    if value.dtype == np.longdouble and np.dtype(np.longdouble) == np.dtype(np.float64):
        pytest.skip("long double is float64 here")
    with pytest.raises(
        TypeError, match=rf"^{arg} has dtype {value.dtype}; expected float32 or float64"
    ):
        call_with(call, **{arg: value})


@pytest.mark.parametrize("call, arg", [a for a in ARGUMENTS if a[0] != "sigmoid"])
@pytest.mark.parametrize("ndim", [0, 1, 2, 3])
def test_wrong_number_of_dimensions_is_refused_by_name(call, arg, ndim):
    value = good()[arg]
    if value.ndim == ndim:
        return
    wrong = np.zeros((2,) * ndim)
    with pytest.raises(
        ValueError, match=rf"^{arg} must be {value.ndim}-D, got a {ndim}-D array of shape"
    ):
        call_with(call, **{arg: wrong})


MISMATCHES = [
    (
        "forward",
        {"W_h": np.zeros((m + 1, d))},
        r"columns \(m\) of X \(4\) must equal rows \(m\) of W_h \(5\)",
    ),
    (
        "forward",
        {"b_h": np.zeros(d + 1)},
        r"columns \(d\) of W_h \(3\) must equal length \(d\) of b_h \(4\)",
    ),
    (
        "forward",
        {"W_out": np.zeros((d + 1, t))},
        r"columns \(d\) of W_h \(3\) must equal rows \(d\) of W_out \(4\)",
    ),
    (
        "forward",
        {"b_out": np.zeros(t + 1)},
        r"columns \(t\) of W_out \(2\) must equal length \(t\) of b_out \(3\)",
    ),
    (
        "delta_out",
        {"Y": np.zeros((n, t + 1))},
        r"A_out has shape \(5, 2\) but Y has shape \(5, 3\)",
    ),
    (
        "delta_out",
        {"Y": np.zeros((n + 1, t))},
        r"A_out has shape \(5, 2\) but Y has shape \(6, 2\)",
    ),
    ("cost", {"Y": np.zeros((n, t + 1))}, r"A_out has shape \(5, 2\) but Y has shape \(5, 3\)"),
    (
        "grad_W_out_outer",
        {"delta_out": np.zeros((n + 1, t))},
        r"rows \(n\) of A_h \(5\) must equal rows \(n\) of delta_out \(6\)",
    ),
    (
        "grad_W_out_blocked",
        {"delta_out": np.zeros((n - 1, t))},
        r"rows \(n\) of A_h \(5\) must equal rows \(n\) of delta_out \(4\)",
    ),
    (
        "grad_W_out_matmul",
        {"A_h": np.zeros((n + 2, d))},
        r"rows \(n\) of A_h \(7\) must equal rows \(n\) of delta_out \(5\)",
    ),
    (
        "grad_W_out",
        {"A_h": np.zeros((n + 2, d))},
        r"rows \(n\) of A_h \(7\) must equal rows \(n\) of delta_out \(5\)",
    ),
]


@pytest.mark.parametrize("call, replacement, message", MISMATCHES)
def test_mismatched_shapes_are_refused_naming_both(call, replacement, message):
    with pytest.raises(ValueError, match=message):
        call_with(call, **replacement)


def test_lists_are_accepted_but_integer_lists_are_not():
    assert fastbp.delta_out([[0.5]], [[1.0]]).dtype == np.float64
    with pytest.raises(TypeError, match="Y has dtype int64"):
        fastbp.delta_out([[0.5]], [[1]])


def _dtypes_of(result):
    return [np.asarray(part).dtype for part in (result if isinstance(result, tuple) else (result,))]


@pytest.mark.parametrize(
    "call, arg", [a for a in ARGUMENTS if a[0] not in ("sigmoid", "grad_b_out")]
)
def test_mixed_precision_is_promoted_like_numpy(call, arg):
    values = good()
    mixed = call_with(call, **{arg: values[arg].astype(np.float32)})
    assert _dtypes_of(mixed) == _dtypes_of(call_with(call))
    assert set(_dtypes_of(mixed)) == {np.dtype(np.float64)}
    all32 = call_with(call, **{name: value.astype(np.float32) for name, value in values.items()})
    assert set(_dtypes_of(all32)) == {np.dtype(np.float32)}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_inputs_are_never_modified(call):
    values = good()
    for value in values.values():
        value.setflags(write=False)  # any write would raise
    function, names = CALLS[call]
    function(*[values[name] for name in names])
    fresh = good()
    for name in names:
        assert np.array_equal(values[name], fresh[name])


def test_empty_inputs_give_zeros():
    for method in fastbp.GRAD_W_OUT_METHODS:
        G = fastbp.grad_W_out(np.zeros((0, 3)), np.zeros((0, 2)), method=method)
        assert G.shape == (3, 2) and np.all(G == 0)
        G = fastbp.grad_W_out(np.zeros((4, 0)), np.zeros((4, 2)), method=method)
        assert G.shape == (0, 2)
    assert np.array_equal(fastbp.grad_b_out(np.zeros((0, 2), np.float32)), np.zeros(2, np.float32))
    A_h, A_out = fastbp.forward(
        np.zeros((0, 4)), np.zeros((4, 3)), np.zeros(3), np.zeros((3, 2)), np.zeros(2)
    )
    assert A_h.shape == (0, 3) and A_out.shape == (0, 2)
    assert fastbp.delta_out(np.zeros((0, 2)), np.zeros((0, 2))).shape == (0, 2)


@pytest.mark.parametrize("method", fastbp.GRAD_W_OUT_METHODS)
def test_nan_and_inf_propagate_as_in_numpy(method):
    rng = np.random.default_rng(1)
    A_h = (rng.integers(1, 8, (9, 4)) / 8).astype(F64)
    delta = (rng.integers(1, 8, (9, 3)) / 4).astype(F64)
    delta[:, 1] *= -1
    A_h[2, 1] = np.nan
    A_h[5, 3] = np.inf
    expected = A_h.T @ delta  # exact apart from the special values
    result = fastbp.grad_W_out(A_h, delta, method=method)
    assert np.array_equal(result, expected, equal_nan=True)
    assert np.all(np.isnan(result[1])) and np.array_equal(result[3], [np.inf, -np.inf, np.inf])
    assert np.all(np.isfinite(result[[0, 2]]))
    assert np.isnan(fastbp.grad_b_out(np.array([[np.nan, 1.0]]))[0])
    assert np.isnan(fastbp.delta_out(np.array([[np.nan]]), np.array([[1.0]]))[0, 0])


def _ready_reference(arrays):
    """What fastbp._core._ready must answer, written plainly: one loop over the arrays."""
    ndims = (2, 2, 1, 2, 1, 2)
    dtype = arrays[0].dtype if type(arrays[0]) is np.ndarray else None
    if dtype is None or dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        return False
    if not dtype.isnative:
        return False
    for array, ndim in zip(arrays, ndims):
        if (
            type(array) is not np.ndarray
            or array.dtype != dtype
            or not array.dtype.isnative
            or array.ndim != ndim
            or not array.flags.c_contiguous
        ):
            return False
    X, W_h, b_h, W_out, b_out = arrays[:5]
    (n, m), (d, t) = X.shape, W_out.shape
    if W_h.shape != (m, d) or b_h.shape != (d,) or b_out.shape != (t,):
        return False
    return len(arrays) == 5 or arrays[5].shape == (n, t)


def _ready_variants():
    """A network's arrays as the kernels take them, and each way one of them can differ."""
    g = good()
    base = [g["X"], g["W_h"], g["b_h"], g["W_out"], g["b_out"], g["Y"]]
    yield "ready", base
    for i in range(6):
        a = base[i]
        yield f"{i} float32", base[:i] + [a.astype(np.float32)] + base[i + 1 :]
        yield f"{i} big-endian", base[:i] + [a.astype(">f8")] + base[i + 1 :]
        yield f"{i} int", base[:i] + [a.astype(np.int64)] + base[i + 1 :]
        yield f"{i} list", base[:i] + [a.tolist()] + base[i + 1 :]
        yield f"{i} 0-d", base[:i] + [np.float64(1.0) * np.ones(())] + base[i + 1 :]
        yield f"{i} extra dim", base[:i] + [a[..., None]] + base[i + 1 :]
        yield f"{i} flat", base[:i] + [a.ravel()[:-1] if a.ndim == 1 else a.ravel()] + base[i + 1 :]
        yield f"{i} longer", base[:i] + [np.concatenate([a, a[:1]])] + base[i + 1 :]
        yield f"{i} subclass", base[:i] + [a.view(np.ma.MaskedArray)] + base[i + 1 :]
        if a.ndim == 2:
            yield f"{i} Fortran", base[:i] + [np.asfortranarray(a)] + base[i + 1 :]
            yield f"{i} wider", base[:i] + [np.hstack([a, a[:, :1]])] + base[i + 1 :]
            yield f"{i} strided", base[:i] + [np.repeat(a, 2, axis=1)[:, ::2]] + base[i + 1 :]
        else:
            yield f"{i} strided", base[:i] + [np.repeat(a, 2)[::2]] + base[i + 1 :]
    single = [a.astype(np.float32) for a in base]
    yield "all float32", single
    yield "Y is b_out", base[:5] + [base[4]]
    yield "Y one-dimensional", base[:5] + [base[5][:, 0].copy()]


@pytest.mark.parametrize("with_targets", [True, False], ids=["with Y", "without Y"])
def test_the_fast_paths_readiness_check_agrees_with_its_definition(with_targets):
    """fastbp._core._ready, written out array by array for speed, says yes exactly when it should.

    A wrong yes would send arrays the kernels cannot take (another dtype,
    layout or shape) past every check into a compiled call.
    """
    from fastbp._core import _ready

    answers = []
    for name, arrays in _ready_variants():
        arrays = tuple(arrays if with_targets else arrays[:5])
        assert _ready(arrays) == _ready_reference(arrays), name
        answers.append(_ready_reference(arrays))
    assert answers[0] and not all(answers)
