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
  (:func:`positive_int`, :func:`non_negative_int`, :func:`real_number`):
  strings, bools, None, complex numbers, NaN and ±inf are refused by name,
  never converted.

The table of every kind of bad input and what it gets is
``docs/bad_inputs.md``.
"""

import math
import numbers
import os

import numpy as np

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
        raise TypeError(
            f"{name} has dtype {array.dtype}; expected float32 or float64{hint}"
        )
    if ndim is not None and array.ndim != ndim:
        raise ValueError(
            f"{name} must be {ndim}-D, got a {array.ndim}-D array of shape {array.shape}"
        )
    return array


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
            f"{name_a} has shape {a.shape} but {name_b} has shape {b.shape}; "
            "they must be equal"
        )


def _got(value):
    """How an error message shows a value it refuses: its repr and, unless plain, its type."""
    if type(value) in (int, float):
        return repr(value)
    return f"{value!r} ({type(value).__name__})"


#: Largest integer the kernels take (int64): larger sizes and counts are refused by name.
INT64_MAX = 2**63 - 1


def _require_integer(value, name, what):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {what}, got {_got(value)}")
    if value > INT64_MAX:
        raise ValueError(f"{name} must be {what} of at most 2**63 - 1, got {_got(value)}")


def positive_int(value, name):
    """Return ``value`` as an int, or raise if it is not a positive integer.

    Python and NumPy integers are accepted; bool, float (even 2.0), str,
    None and everything else raise ``TypeError``, integers below 1 or above
    2**63 − 1 (what the kernels take) ``ValueError``.  Both messages name
    the argument and show what it got.
    """
    if type(value) is int and 0 < value <= INT64_MAX:  # the common case, without the ABC check
        return value
    _require_integer(value, name, "a positive integer")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {_got(value)}")
    return int(value)


def non_negative_int(value, name):
    """Return ``value`` as an int, or raise if it is not an integer ≥ 0 (as positive_int)."""
    if type(value) is int and 0 <= value <= INT64_MAX:
        return value
    _require_integer(value, name, "a non-negative integer")
    if value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {_got(value)}")
    return int(value)


def check_itemsize(itemsize):
    """Return ``itemsize`` if it is 4 or 8 (bytes per float32 or float64 element), else raise."""
    if isinstance(itemsize, (bool, np.bool_)) or not isinstance(itemsize, numbers.Integral):
        raise TypeError(f"itemsize must be 4 or 8 (bytes per element), got {_got(itemsize)}")
    if itemsize not in (4, 8):
        raise ValueError(f"itemsize must be 4 or 8 (bytes per element), got {_got(itemsize)}")
    return int(itemsize)


def real_number(value, name, *, positive=False):
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

    Returns
    -------
    float

    Raises
    ------
    TypeError
        Not a real number.
    ValueError
        NaN, ±inf, too large for a float, negative, or zero where
        ``positive``.
    """
    if type(value) is float and (0.0 < value if positive else 0.0 <= value) and value < math.inf:
        return value  # the common case, at no cost
    what = "positive" if positive else "non-negative"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a {what} real number, got {_got(value)}")
    try:
        result = float(value)
    except OverflowError:
        result = math.inf
    if not math.isfinite(result) or result < 0 or (positive and result == 0):
        raise ValueError(f"{name} must be a {what} finite number, got {_got(value)}")
    return result


def require_targets_in_unit_interval(Y, name="Y"):
    """Raise ``ValueError`` unless every value of ``Y`` other than NaN lies in [0, 1].

    NaN is let through (it propagates to the cost, as documented); -inf,
    +inf and every other value outside [0, 1] are refused, naming the first
    one found and its index.  Two passes (min and max) without temporaries
    when there is no NaN.
    """
    if Y.size == 0:
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
