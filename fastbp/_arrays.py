"""Arrays inside compiled kernels: ``empty``, ``zeros``, ``transposed`` and views of scratch.

Numba compiles an overload such as ``np.empty`` as a function of its own,
once per argument types *and* per set of compile flags of the kernel that
calls it (a kernel's Python-entry twin, its threaded variant and a
``fastmath`` kernel each have their own), and ``np.zeros`` as ``np.empty``
plus a fill: each a compilation, with Numba's fixed cost of some tens of
milliseconds, for a few instructions.  Kernels allocate (and copy a
transpose) through intrinsics instead, which put Numba's own allocation
code (the shape checks, NumPy's alignment; a loop of zero stores for
zeros) into the caller: nothing compiles per shape or dtype.  The array
is made at its shape, never reshaped: a reshape goes through a runtime
helper that hides the shape from LLVM, which then vectorises a caller's
loops over it differently.

Views of scratch memory go through intrinsics (``matrix_view``,
``float64_matrix_view``, ``vector_view``) instead of ``reshape`` and ``view``:
the new array's shape and strides are computed inline (no runtime call, no
compiled error path for a shape that cannot fail to fit), sharing the
source's memory and keeping it alive.  Only C-contiguous sources are
accepted, so a view is always one run of elements; any other layout is a
typing error, never a copy.  No checks happen here: callers keep views
inside their source.
"""

import numpy as np
from numba import types
from numba.core import cgutils
from numba.core import config as _numba_config
from numba.core.imputils import impl_ret_borrowed, impl_ret_new_ref
from numba.extending import intrinsic
from numba.np.arrayobj import _empty_nd_impl, _parse_shape, make_array, populate_array


def _element_type(dtype):
    """The Numba type of a ``dtype`` argument: a NumPy scalar class or an array's ``.dtype``."""
    if isinstance(dtype, types.DType):
        return dtype.dtype
    if isinstance(dtype, types.NumberClass):
        return dtype.instance_type
    return None


def _allocation(shape, dtype, fill_with_zeros):
    """Typing of :func:`empty` and :func:`zeros`: (signature, codegen), or None to refuse."""
    element = _element_type(dtype)
    if element is None or not isinstance(shape, types.BaseTuple):
        return None
    if not all(isinstance(extent, types.Integer) for extent in shape):
        return None
    array_type = types.Array(element, len(shape), "C")

    def codegen(context, builder, signature, args):
        # Numba's own np.empty: extents cast to intp, a negative one or an
        # overflowing size raise ValueError, the data aligned as NumPy's.
        extents = _parse_shape(context, builder, signature.args[0], args[0])
        array = _empty_nd_impl(context, builder, array_type, extents)
        if fill_with_zeros:
            # A loop of stores, as ``out[:] = 0`` compiles to: with a memset call
            # here LLVM compiled the caller's loops after it into slower code.
            zero = context.get_constant(array_type.dtype, 0)
            with cgutils.for_range(builder, array.nitems) as loop:
                builder.store(zero, builder.gep(array.data, [loop.index]))
        return impl_ret_new_ref(context, builder, array_type, array._getvalue())

    return array_type(shape, dtype), codegen


@intrinsic
def empty(typingctx, shape, dtype):
    """An uninitialised C-contiguous array of ``shape`` (a tuple of ints) and ``dtype``."""
    return _allocation(shape, dtype, fill_with_zeros=False)


@intrinsic
def zeros(typingctx, shape, dtype):
    """A C-contiguous array of zeros (all bits zero: +0.0) of ``shape`` and ``dtype``."""
    return _allocation(shape, dtype, fill_with_zeros=True)


@intrinsic
def transposed(typingctx, matrix):
    """A new C-contiguous (cols, rows) array holding the transpose of a 2-D ``matrix``.

    ``np.ascontiguousarray(matrix.T)``, element for element, put into the
    caller's code (Numba's ``np.ascontiguousarray`` is a compilation of its
    own): output rows are written in order, reading a column of
    ``matrix`` each.
    """
    if not (isinstance(matrix, types.Array) and matrix.ndim == 2):
        return None
    result_type = types.Array(matrix.dtype, 2, "C")

    def codegen(context, builder, signature, args):
        source_type = signature.args[0]
        source = make_array(source_type)(context, builder, value=args[0])
        n_rows, n_cols = cgutils.unpack_tuple(builder, source.shape, count=2)
        result = _empty_nd_impl(context, builder, result_type, [n_cols, n_rows])
        with cgutils.for_range(builder, n_cols) as col:
            with cgutils.for_range(builder, n_rows) as row:
                value = builder.load(
                    cgutils.get_item_pointer(
                        context, builder, source_type, source, [row.index, col.index]
                    )
                )
                builder.store(
                    value,
                    cgutils.get_item_pointer(
                        context, builder, result_type, result, [col.index, row.index]
                    ),
                )
        return impl_ret_new_ref(context, builder, result_type, result._getvalue())

    return result_type(matrix), codegen


def _view(context, builder, source_type, source_value, view_type, first, shape):
    """A C-contiguous view of ``shape`` starting at element ``first`` of a C-contiguous source.

    The view's elements are ``view_type.dtype`` (the source's, or wider:
    see :func:`float64_matrix_view`).
    """
    source = make_array(source_type)(context, builder, value=source_value)
    view = make_array(view_type)(context, builder)
    data_type = context.get_data_type(view_type.dtype)
    itemsize = context.get_constant(types.intp, context.get_abi_sizeof(data_type))
    strides = [itemsize]
    for extent in reversed(shape[1:]):
        strides.insert(0, builder.mul(strides[0], extent))
    populate_array(
        view,
        data=builder.bitcast(builder.gep(source.data, [first]), data_type.as_pointer()),
        shape=shape,
        strides=strides,
        itemsize=itemsize,
        meminfo=source.meminfo,
        parent=source.parent,
    )
    # A new reference to the source's memory, as a slice or reshape returns.
    return impl_ret_borrowed(context, builder, view_type, view._getvalue())


def _matrix_view_typing(flat, start, rows, cols, view_type):
    """Typing of the matrix views: (signature, codegen), or None for non-integer extents."""
    if not all(isinstance(ty, types.Integer) for ty in (start, rows, cols)):
        return None

    def codegen(context, builder, signature, args):
        first, n_rows, n_cols = (
            context.cast(builder, args[p], signature.args[p], types.intp) for p in (1, 2, 3)
        )
        return _view(
            context, builder, signature.args[0], args[0], view_type, first, [n_rows, n_cols]
        )

    return view_type(flat, start, rows, cols), codegen


@intrinsic
def matrix_view(typingctx, flat, start, rows, cols):
    """``flat[start : start + rows·cols]`` as a (rows, cols) C-contiguous array: a view.

    ``flat`` is a 1-D C-contiguous array; nothing is checked.
    """
    if not (isinstance(flat, types.Array) and flat.ndim == 1 and flat.layout == "C"):
        return None
    return _matrix_view_typing(flat, start, rows, cols, flat.copy(ndim=2, layout="C"))


@intrinsic
def float64_matrix_view(typingctx, flat, start, rows, cols):
    """The bytes of ``flat`` from element ``start`` on as a (rows, cols) float64 array: a view.

    For float64 sums kept in a float32 scratch.  ``flat`` is a 1-D
    C-contiguous float32 or float64 array, and ``start`` must put the
    view on an 8-byte boundary; nothing is checked.
    """
    if not (isinstance(flat, types.Array) and flat.ndim == 1 and flat.layout == "C"):
        return None
    if not (isinstance(flat.dtype, types.Float) and flat.dtype.bitwidth in (32, 64)):
        return None
    return _matrix_view_typing(flat, start, rows, cols, types.Array(types.float64, 2, "C"))


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


def _float64_matrix_view_python(flat, start, rows, cols):
    """:func:`float64_matrix_view` in Python."""
    if flat.ndim != 1 or not flat.flags.c_contiguous or flat.dtype not in (np.float32, np.float64):
        raise TypeError(
            "float64_matrix_view: flat must be a 1-D C-contiguous float32 or float64 array"
        )
    start, rows, cols = int(start), int(rows), int(cols)
    if start * flat.itemsize % 8:
        raise ValueError("float64_matrix_view: the view does not start on an 8-byte boundary")
    count = rows * cols * 8 // flat.itemsize
    if count > 0 and start + count > flat.shape[0]:
        raise IndexError("float64_matrix_view: the view is outside flat")
    return flat[start : start + count].view(np.float64).reshape((rows, cols))


def _transposed_python(matrix):
    """:func:`transposed` in Python."""
    if matrix.ndim != 2:
        raise TypeError("transposed: matrix must be 2-D")
    return matrix.T.copy(order="C")  # always new memory, as compiled code gives


def _vector_view_python(matrix):
    """:func:`vector_view` in Python."""
    if matrix.ndim != 2 or not matrix.flags.c_contiguous:
        raise TypeError("vector_view: matrix must be a 2-D C-contiguous array")
    return matrix.reshape(-1)


def _empty_python(shape, dtype):
    """:func:`empty` in Python."""
    return np.empty(shape, dtype)


def _zeros_python(shape, dtype):
    """:func:`zeros` in Python."""
    return np.zeros(shape, dtype)


if _numba_config.DISABLE_JIT:
    empty = _empty_python
    zeros = _zeros_python
    matrix_view = _matrix_view_python
    float64_matrix_view = _float64_matrix_view_python
    transposed = _transposed_python
    vector_view = _vector_view_python
