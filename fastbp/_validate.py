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
"""

import numbers

import numpy as np

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


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
    array = np.asarray(value)
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


def contiguous(array, dtype):
    """A C-contiguous array of ``dtype`` with the data of ``array`` (no copy if it already is)."""
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


def positive_int(value, name):
    """Return ``value`` as an int, or raise if it is not a positive integer."""
    if type(value) is int and value > 0:  # the common case, without the ABC check
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
