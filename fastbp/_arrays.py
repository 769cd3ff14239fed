"""Arrays inside compiled kernels: ``empty`` and ``zeros``, ``matrix_view`` and ``vector_view``.

Numba compiles an overload such as ``np.empty`` once per argument types *and*
per set of compile flags of the kernel that calls it (a kernel's
Python-entry twin, its threaded variant and a ``fastmath`` kernel each have
their own), and ``np.zeros`` as ``np.empty`` plus a fill: three compilations
each time.  Kernels allocate through these two helpers instead, which share
one set of flags, so each NumPy overload compiles once per shape type and
dtype.  The array is made at its shape, never reshaped: a reshape goes
through a runtime helper that hides the shape from LLVM, which then
vectorises a caller's loops over it differently.

Views of scratch memory go through two intrinsics instead of ``reshape``:
the new array's shape and strides are computed inline (no runtime call, no
compiled error path for a shape that cannot fail to fit), sharing the
source's memory and keeping it alive.  Only C-contiguous sources are
accepted, so a view is always one run of elements; any other layout is a
typing error, never a copy.  No checks happen here: callers keep views
inside their source.
"""

import numpy as np
from numba import types
from numba.core import config as _numba_config
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array

from ._jit import kernel


@kernel(linked=True)
def empty(shape, dtype):
    """An uninitialised C-contiguous array of ``shape`` (a tuple of ints) and ``dtype``."""
    return np.empty(shape, dtype)


@kernel(linked=True)
def zeros(shape, dtype):
    """A C-contiguous array of zeros of ``shape`` (a tuple of ints) and ``dtype``."""
    out = np.empty(shape, dtype)
    out[:] = 0
    return out


def _view(context, builder, source_type, source_value, view_type, first, shape):
    """A C-contiguous view of ``shape`` starting at element ``first`` of a C-contiguous source."""
    source = make_array(source_type)(context, builder, value=source_value)
    view = make_array(view_type)(context, builder)
    itemsize = source.itemsize
    strides = [itemsize]
    for extent in reversed(shape[1:]):
        strides.insert(0, builder.mul(strides[0], extent))
    populate_array(
        view,
        data=builder.gep(source.data, [first]),
        shape=shape,
        strides=strides,
        itemsize=itemsize,
        meminfo=source.meminfo,
        parent=source.parent,
    )
    # A new reference to the source's memory, as a slice or reshape returns.
    return impl_ret_borrowed(context, builder, view_type, view._getvalue())


@intrinsic
def matrix_view(typingctx, flat, start, rows, cols):
    """``flat[start : start + rows·cols]`` as a (rows, cols) C-contiguous array: a view.

    ``flat`` is a 1-D C-contiguous array; nothing is checked.
    """
    if not (isinstance(flat, types.Array) and flat.ndim == 1 and flat.layout == "C"):
        return None
    if not all(isinstance(ty, types.Integer) for ty in (start, rows, cols)):
        return None
    view_type = flat.copy(ndim=2, layout="C")

    def codegen(context, builder, signature, args):
        first, n_rows, n_cols = (
            context.cast(builder, args[p], signature.args[p], types.intp) for p in (1, 2, 3)
        )
        return _view(
            context, builder, signature.args[0], args[0], view_type, first, [n_rows, n_cols]
        )

    return view_type(flat, start, rows, cols), codegen


@intrinsic
def vector_view(typingctx, matrix):
    """A 2-D C-contiguous array's elements in order, as a 1-D array: a view."""
    if not (isinstance(matrix, types.Array) and matrix.ndim == 2 and matrix.layout == "C"):
        return None
    view_type = matrix.copy(ndim=1, layout="C")

    def codegen(context, builder, signature, args):
        source = make_array(signature.args[0])(context, builder, value=args[0])
        n_rows, n_cols = (builder.extract_value(source.shape, p) for p in (0, 1))
        zero = context.get_constant(types.intp, 0)
        size = builder.mul(n_rows, n_cols)
        return _view(context, builder, signature.args[0], args[0], view_type, zero, [size])

    return view_type(matrix), codegen


# With the JIT off (NUMBA_DISABLE_JIT=1) the views are NumPy's, refusing what
# compiled code refuses while typing and what it would read past.


def _matrix_view_python(flat, start, rows, cols):
    """:func:`matrix_view` in Python."""
    if flat.ndim != 1 or not flat.flags.c_contiguous:
        raise TypeError("matrix_view: flat must be a 1-D C-contiguous array")
    start, rows, cols = int(start), int(rows), int(cols)  # any mix of integer types
    if rows * cols > 0 and start + rows * cols > flat.shape[0]:
        raise IndexError("matrix_view: the view is outside flat")
    return flat[start : start + rows * cols].reshape((rows, cols))


def _vector_view_python(matrix):
    """:func:`vector_view` in Python."""
    if matrix.ndim != 2 or not matrix.flags.c_contiguous:
        raise TypeError("vector_view: matrix must be a 2-D C-contiguous array")
    return matrix.reshape(-1)


if _numba_config.DISABLE_JIT:
    matrix_view = _matrix_view_python
    vector_view = _vector_view_python
