"""Input checks and normalisation shared by every public function.

Policy (documented in the README):

* Arrays must hold float32 or float64.  bool, integer, complex, object,
  float16 and long double arrays are refused with a ``TypeError`` that names
  the argument; convert explicitly, e.g. ``Y.astype(np.float64)``.
* Arguments of one call that differ in precision are promoted as NumPy
  promotes them (float32 with float64 gives float64); the result has the
  promoted dtype.
* Wrong numbers of dimensions and shapes that do not agree raise
  ``ValueError`` naming the arguments, what they have and what was expected.
* Any memory layout is accepted (Fortran order, strided views, read-only
  arrays); a C-contiguous copy is made only where the kernel needs one.
  Inputs are never written to.
* A copy or a result that would need more bytes than the machine's
  physical memory is refused with a ``ValueError`` that names it and its
  size, before anything is allocated (:func:`require_fits`).
* Scalars are checked by one family of functions here
  (:func:`positive_int`, :func:`non_negative_int`, :func:`real_number`,
  :func:`boolean`, :func:`one_of`, :func:`float_dtype`), and a parameter
  that several functions take (``l2``, ``eta``, ``n_threads``,
  ``max_grad_norm``, ``noise_multiplier``, ``sample_rate``, ``delta``,
  ``target_epsilon``) by one ``check_<name>`` function here, so that it has
  one rule and one message everywhere: strings, bools, None (unless it
  means a default), complex numbers, NaN and ±inf (unless it means
  something) are refused by name, never converted.

The table of every kind of bad input and what it gets is
``docs/bad_inputs.md``.
"""

import math
import numbers
import os

import numpy as np

from ._kernels import _all_in_unit_interval

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _physical_memory_bytes():
    """The machine's physical memory in bytes, or None where it cannot be read."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        return None


#: Largest allocation fastbp attempts: the physical memory (read once, at import).  Larger
#: copies and results are refused by :func:`require_fits` before allocating.
MEMORY_LIMIT_BYTES = _physical_memory_bytes()


def _format_bytes(count):
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} bytes"


def require_fits(name, shape, dtype):
    """Raise ``ValueError`` if an array of ``shape`` and ``dtype`` exceeds physical memory.

    Parameters
    ----------
    name : str
        What the array is (an argument's copy, a result), used in the message.
    shape : tuple of int
    dtype : numpy.dtype
    """
    if MEMORY_LIMIT_BYTES is None:
        return
    count = math.prod(shape) * np.dtype(dtype).itemsize
    if count > MEMORY_LIMIT_BYTES:
        raise ValueError(
            f"{name} of shape {tuple(shape)} and dtype {np.dtype(dtype)} would take "
            f"{_format_bytes(count)}, more than this machine's memory "
            f"({_format_bytes(MEMORY_LIMIT_BYTES)}); nothing was allocated"
        )


def as_float_array(value, name, ndim):
    """Return ``value`` as an ndarray after checking its dtype and ndim.

    Parameters
    ----------
    value : array_like
        What the caller passed.
    name : str
        The argument's name, used in error messages.
    ndim : int or None
        The required number of dimensions, or None for any.

    Returns
    -------
    numpy.ndarray
        The same object when it already is an ndarray (no copy).

    Raises
    ------
    TypeError
        If the dtype is not float32 or float64.
    ValueError
        If the number of dimensions is wrong.
    """
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as error:  # ragged nested lists, objects NumPy cannot read
        raise type(error)(
            f"{name} cannot be read as an array of float32 or float64 ({error}); got "
            f"{type(value).__name__}"
        ) from None
    if array.dtype not in _FLOAT_DTYPES:
        hint = ""
        if array.dtype.kind in "biuf":
            hint = f"; convert it first, e.g. {name}.astype(np.float64)"
        raise TypeError(f"{name} has dtype {array.dtype}; expected float32 or float64{hint}")
    if ndim is not None and array.ndim != ndim:
        raise ValueError(
            f"{name} must be {ndim}-D, got a {array.ndim}-D array of shape {array.shape}"
        )
    return array


def finite_float_array(value, name, ndim):
    """:func:`as_float_array`, and ``ValueError`` if it holds NaN or infinity."""
    array = as_float_array(value, name, ndim)
    if array.size and not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinity")
    return array


def check_label_array(labels, name, n, hint=""):
    """Raise unless ``labels`` (NumPy or Dask) is 1-D, of an integer dtype, with n entries.

    Looks at the shape and dtype only, never at the values (``hint`` is added
    to the dtype's message).
    """
    if labels.ndim != 1:
        raise ValueError(
            f"{name} must be 1-D (one class label per example), got shape {labels.shape}"
        )
    if labels.dtype.kind not in "iu":
        raise TypeError(
            f"{name} must hold integer class labels 0..t-1, got dtype {labels.dtype}{hint}"
        )
    if labels.shape[0] != n:
        raise ValueError(f"{name} has {labels.shape[0]} labels but X has {n} rows (n)")


def require_labels_non_negative(smallest, name):
    """Raise ``ValueError`` if the smallest class label found is negative."""
    if smallest < 0:
        raise ValueError(f"{name} must hold class labels 0..t-1, found {smallest}")


def as_labels(y, name, n):
    """Integer class labels 0..t-1 as an int64 array of length n (by :func:`check_label_array`).

    NaN and infinity, and floats that hold whole numbers (with a hint to
    convert them), are named as such; negative labels raise ``ValueError``.
    """
    labels = np.asarray(y)
    if labels.ndim == 1 and labels.dtype.kind in "fc" and labels.size:
        if not np.all(np.isfinite(labels)):
            raise ValueError(f"{name} contains NaN or infinity; it must hold class labels 0..t-1")
    hint = ""
    if labels.dtype.kind == "f" and labels.size and np.all(labels == np.round(labels)):
        hint = f"; convert it first, e.g. {name}.astype(np.int64)"
    check_label_array(labels, name, n, hint)
    if labels.size:
        require_labels_non_negative(labels.min(), name)
    return labels.astype(np.int64, copy=False)


def common_dtype(*arrays):
    """The dtype NumPy would promote these float arrays to (float32 or float64)."""
    return np.result_type(*arrays)


def contiguous(array, dtype, name="an input"):
    """A C-contiguous array of ``dtype`` with the data of ``array`` (no copy if it already is).

    A copy larger than physical memory is refused first (:func:`require_fits`).
    """
    if not (array.flags.c_contiguous and array.dtype == dtype):
        require_fits(f"a C-contiguous {np.dtype(dtype)} copy of {name}", array.shape, dtype)
    return np.ascontiguousarray(array, dtype=dtype)


def require_equal(name_a, size_a, name_b, size_b, what_a, what_b):
    """Raise ``ValueError`` unless two sizes that must agree do agree."""
    if size_a != size_b:
        raise ValueError(
            f"{what_a} of {name_a} ({size_a}) must equal {what_b} of {name_b} ({size_b})"
        )


def require_same_shape(name_a, a, name_b, b):
    """Raise ``ValueError`` unless ``a`` and ``b`` have the same shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} has shape {a.shape} but {name_b} has shape {b.shape}; they must be equal"
        )


def _got(value):
    """How an error message shows a value it refuses: its repr and, unless plain, its type."""
    if type(value) in (int, float):
        return repr(value)
    return f"{value!r} ({type(value).__name__})"


#: Largest integer the kernels take (int64): larger sizes and counts are refused by name.
INT64_MAX = 2**63 - 1


def _or_none(what, or_none):
    return f"{what} or None" if or_none else what


def _require_integer(value, name, what, or_none, int64=True):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {_or_none(what, or_none)}, got {_got(value)}")
    if int64 and value > INT64_MAX:
        raise ValueError(f"{name} must be {what} of at most 2**63 - 1, got {_got(value)}")


def positive_int(value, name, *, at_least=1, or_none=False):
    """Return ``value`` as an int, or raise if it is not a positive integer.

    Python and NumPy integers are accepted; bool, float (even 2.0), str,
    None and everything else raise ``TypeError``, integers below 1 or above
    2**63 − 1 (what the kernels take) ``ValueError``.  Both messages name
    the argument and show what it got.

    Parameters
    ----------
    value : object
        What the caller passed.
    name : str
        The argument's name, used in error messages.
    at_least : int, default 1
        The smallest value accepted (``ValueError`` below it).
    or_none : bool, default False
        Let None through (returned as None); the messages then say "or None".
    """
    if type(value) is int and at_least <= value <= INT64_MAX:  # the common case, at no cost
        return value
    if value is None and or_none:
        return None
    _require_integer(value, name, "a positive integer", or_none)
    if value < 1:
        what = _or_none("a positive integer", or_none)
        raise ValueError(f"{name} must be {what}, got {_got(value)}")
    if value < at_least:
        raise ValueError(f"{name} must be at least {at_least}, got {_got(value)}")
    return int(value)


def non_negative_int(value, name, *, or_none=False, int64=True):
    """Return ``value`` as an int, or raise if it is not an integer ≥ 0 (as positive_int).

    ``int64=False`` lifts the limit of 2**63 − 1 (for a value no kernel
    takes, such as a seed).
    """
    if type(value) is int and 0 <= value <= INT64_MAX:
        return value
    if value is None and or_none:
        return None
    _require_integer(value, name, "a non-negative integer", or_none, int64)
    if value < 0:
        what = _or_none("a non-negative integer", or_none)
        raise ValueError(f"{name} must be {what}, got {_got(value)}")
    return int(value)


def check_itemsize(itemsize):
    """Return ``itemsize`` if it is 4 or 8 (bytes per float32 or float64 element), else raise."""
    if isinstance(itemsize, (bool, np.bool_)) or not isinstance(itemsize, numbers.Integral):
        raise TypeError(f"itemsize must be 4 or 8 (bytes per element), got {_got(itemsize)}")
    if itemsize not in (4, 8):
        raise ValueError(f"itemsize must be 4 or 8 (bytes per element), got {_got(itemsize)}")
    return int(itemsize)


def real_number(value, name, *, positive=False, below=None, at_most=None, inf_ok=False,
                or_none=False):  # fmt: skip
    """Return ``value`` as a Python float, or raise if it is not a finite real number in range.

    Parameters
    ----------
    value : object
        What the caller passed.  Python and NumPy integers and floats are
        accepted (and ``fractions.Fraction``, any :class:`numbers.Real`);
        str (even ``"0.1"``), bool, None, complex, 0-d arrays and anything
        else raise ``TypeError``.
    name : str
        The argument's name, used in error messages.
    positive : bool, default False
        Require ``value > 0``; otherwise ``value ≥ 0``.
    below, at_most : float, optional
        An upper bound: ``value < below`` or ``value ≤ at_most``.
    inf_ok : bool, default False
        Accept +inf (a float or NumPy infinity, not an integer too large
        for a float) as a value of its own, e.g. "no clipping".
    or_none : bool, default False
        Let None through (returned as None); the messages then say "or None".

    Returns
    -------
    float or None

    Raises
    ------
    TypeError
        Not a real number.
    ValueError
        NaN, -inf, +inf (unless ``inf_ok``), too large for a float, or
        outside the range.
    """
    if (
        type(value) is float
        and (0.0 < value if positive else 0.0 <= value)
        and value < math.inf
        and below is None
        and at_most is None
    ):
        return value  # the common case, at no cost
    if value is None and or_none:
        return None
    if below is not None or at_most is not None:
        interval = f"{'(' if positive else '['}0, {below if below is not None else at_most}"
        interval += ")" if below is not None else "]"
        kind, finite = f"real number in {interval}", f"finite number in {interval}"
    else:
        sign = "positive" if positive else "non-negative"
        kind, finite = f"{sign} real number", f"{sign} finite number"
        if inf_ok:
            kind, finite = f"{kind} (or inf)", f"{sign} number (finite, or inf)"
    kind, finite = _or_none(kind, or_none), _or_none(finite, or_none)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a {kind}, got {_got(value)}")
    try:
        result = float(value)
    except OverflowError:  # an integer beyond every float: never taken for +inf
        raise ValueError(f"{name} must be a {finite}, got {_got(value)}") from None
    in_range = (
        (0 < result if positive else 0 <= result)
        and (below is None or result < below)
        and (at_most is None or result <= at_most)
        and (result < math.inf or inf_ok)
    )
    if not in_range:  # NaN too
        raise ValueError(f"{name} must be a {finite}, got {_got(value)}")
    return result


def boolean(value, name):
    """Return ``value`` as a bool: True or False (NumPy bools too), nothing else."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {_got(value)}")
    return bool(value)


def one_of(value, name, choices):
    """Return ``value`` if it is one of the strings ``choices``.

    A value that is not a str raises ``TypeError``; a str not among the
    choices (they are case-sensitive) ``ValueError``.  Both messages list
    the choices.
    """
    listed = ", ".join(repr(choice) for choice in choices)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {listed}, got {_got(value)}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {listed}, got {value!r}")
    return str(value)


def float_dtype(value, name="dtype"):
    """``value`` as a NumPy dtype, float32 or float64 (anything else: ``TypeError``)."""
    try:
        dtype = np.dtype(value)
    except TypeError:
        raise TypeError(f"{name} must be float32 or float64, got {_got(value)}") from None
    if dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {dtype}")
    return dtype


# ---------------------------------------------------------------------------------------
# The scalar parameters that several functions take, each with its one rule.
# ---------------------------------------------------------------------------------------


def check_l2(l2):
    """λ of the L2 penalty as a float: a finite real number ≥ 0."""
    if type(l2) is float and 0.0 <= l2 < math.inf:  # the training loops' hot path
        return l2
    return real_number(l2, "l2")


def check_eta(eta):
    """The learning rate η as a float: a finite real number > 0."""
    return real_number(eta, "eta", positive=True)


def check_n_threads(n_threads):
    """None, or a number of Numba threads from 1 to ``numba.config.NUMBA_NUM_THREADS``."""
    if n_threads is None:
        return None
    import numba

    if type(n_threads) is int and 1 <= n_threads <= numba.config.NUMBA_NUM_THREADS:
        return n_threads  # the training loops' hot path
    n_threads = positive_int(n_threads, "n_threads", or_none=True)

    if n_threads > numba.config.NUMBA_NUM_THREADS:
        raise ValueError(
            f"n_threads must be at most {numba.config.NUMBA_NUM_THREADS} "
            f"(numba.config.NUMBA_NUM_THREADS), got {n_threads}"
        )
    return n_threads


def check_max_grad_norm(max_grad_norm):
    """The clipping norm C as a float: > 0, or inf for no clipping."""
    return real_number(max_grad_norm, "max_grad_norm", positive=True, inf_ok=True)


def check_noise_multiplier(noise_multiplier):
    """σ as a float: a finite real number ≥ 0."""
    return real_number(noise_multiplier, "noise_multiplier")


def check_clipping_and_noise(max_grad_norm, noise_multiplier):
    """(C, σ) checked together; σ > 0 needs a finite C (the noise's standard deviation is σC)."""
    max_grad_norm = check_max_grad_norm(max_grad_norm)
    noise_multiplier = check_noise_multiplier(noise_multiplier)
    if noise_multiplier > 0 and max_grad_norm == math.inf:
        raise ValueError(
            "noise_multiplier > 0 needs a finite max_grad_norm (the noise's standard "
            "deviation is noise_multiplier × max_grad_norm)"
        )
    return max_grad_norm, noise_multiplier


def check_sample_rate(sample_rate):
    """The Poisson sampling rate q as a float in (0, 1]."""
    return real_number(sample_rate, "sample_rate", positive=True, at_most=1)


def check_delta(delta):
    """δ of an (ε, δ) guarantee as a float in (0, 1)."""
    return real_number(delta, "delta", positive=True, below=1)


def check_target_epsilon(target_epsilon):
    """A target ε as a float: a finite real number > 0."""
    return real_number(target_epsilon, "target_epsilon", positive=True)


def require_targets_in_unit_interval(Y, name="Y"):
    """Raise ``ValueError`` unless every value of ``Y`` other than NaN lies in [0, 1].

    NaN is let through (it propagates to the cost, as documented); -inf,
    +inf and every other value outside [0, 1] are refused, naming the first
    one found and its index.  One compiled pass for C-contiguous float32
    and float64 arrays; otherwise two passes (min and max) without
    temporaries when there is no NaN.
    """
    if Y.size == 0:
        return
    if Y.flags.c_contiguous and Y.dtype in _FLOAT_DTYPES:
        # The public functions' hot path: one compiled pass instead of NumPy's min and max.
        if _all_in_unit_interval(Y.reshape(-1)):
            return
    low, high = Y.min(), Y.max()
    if low >= 0 and high <= 1:
        return
    if not (np.isnan(low) or np.isnan(high)) and (low < 0 or high > 1):
        outside = (Y < 0) | (Y > 1)
    else:  # a NaN hides the extremes: look at the other values one by one
        outside = ~np.isnan(Y) & ((Y < 0) | (Y > 1))
        if not outside.any():
            return
    count = int(np.count_nonzero(outside))
    first = np.unravel_index(int(np.flatnonzero(outside.ravel())[0]), Y.shape)
    first = tuple(int(i) for i in first)
    raise ValueError(
        f"{name} must hold targets in [0, 1] (one-hot rows or probabilities; NaN propagates), "
        f"got {float(Y[first])!r} at index {first} "
        f"({count} value{'s' if count > 1 else ''} outside)"
    )
