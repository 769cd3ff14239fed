"""The intrinsics of fastbp._simd and fastbp._arrays, checked against a few lines of NumPy.

``tile_fma``, ``copy_vectors`` and ``transposed_sum_block`` exist only inside compiled code, so each
test calls them through small ``numba.njit`` wrappers.  Both vector widths
are tested in this process: an intrinsic reads ``_simd.VECTOR_BYTES`` when
its code is generated, so a wrapper compiled while that is patched is built
for the patched width (the copy test's exact extent shows it took effect).

Data: A and D hold numbers of at most 8 significant bits, so every product
A·D is exact in float32 and float64 and a fused multiply-add rounds exactly
like an addition of the product; G holds full-precision numbers, so the
additions round.  A NumPy loop that adds the examples' products one at a
time, in order, is then the bitwise reference.
"""

import contextlib

import numba
import numpy as np
import pytest

from fastbp import _simd
from fastbp._simd import copy_vectors, tile_fma, transposed_sum_block

WIDTHS = (32, 64)
DTYPES = (np.float32, np.float64)
TILE_ROWS = range(1, 7)  # every tile height the kernels use

_compiled = {}


@contextlib.contextmanager
def _at_width(width):
    """Make the intrinsics generate ``width``-byte vectors while the block runs."""
    saved = _simd.VECTOR_BYTES
    _simd.VECTOR_BYTES = width
    try:
        yield
    finally:
        _simd.VECTOR_BYTES = saved


def _tile(width, n_vectors, n_rows, blend):
    """tile_fma with these compile-time constants, as a function compiled at ``width``.

    Call it only under ``_at_width(width)``: each dtype and layout of its
    arguments compiles at its first call.
    """
    key = ("tile", width, n_vectors, n_rows, blend)
    if key not in _compiled:

        @numba.njit
        def tile(A, D, i0, i1, g_col, g_row, G, skip, fresh, a_col):
            tile_fma(A, D, i0, i1, g_col, g_row, G, skip, fresh, a_col, n_vectors, n_rows, blend)

        _compiled[key] = tile
    return _compiled[key]


def _copy(width, n_vectors):
    """copy_vectors with this compile-time n_vectors, as a function compiled at ``width``."""
    key = ("copy", width, n_vectors)
    if key not in _compiled:

        @numba.njit
        def copy(A, row, col, buf, offset):
            copy_vectors(A, row, col, buf, offset, n_vectors)

        _compiled[key] = copy
    return _compiled[key]


def _lanes(width, dtype):
    return width // np.dtype(dtype).itemsize


def _short(rng, shape, dtype):
    """Numbers with at most 8 significant bits (k·2^e, |k| < 256), so products are exact."""
    k = rng.integers(-255, 256, size=shape)
    e = rng.integers(-6, 3, size=shape)
    return np.ldexp(k, e).astype(dtype)


def _d_matrix(rng, n, t, dtype, layout):
    """D (n, t): C-contiguous, or a view with a stride on both axes."""
    if layout == "C":
        return _short(rng, (n, t), dtype)
    D = _short(rng, (t + 1, 2 * n), dtype)[1:, ::2].T
    assert not D.flags.c_contiguous and not D.flags.f_contiguous
    return D


def _tile_reference(A, D, i0, i1, g_col, g_row, G, n_rows, n_cols, skip):
    """G after the tile: one rounded addition of D[i, row]·A[i, col] per example i, in order."""
    expected = G.copy()
    rows = slice(g_row, g_row + n_rows)
    for i in range(i0, i1):
        expected[rows, g_col + skip : g_col + n_cols] += D[i, rows, None] * A[i, skip:n_cols]
    return expected


@pytest.mark.parametrize("a_col", [0, 3], ids=["panel", "in place"])
@pytest.mark.parametrize("fresh", [False, True], ids=["add", "fresh"])
@pytest.mark.parametrize("blend", [0, 1])
@pytest.mark.parametrize("n_rows", TILE_ROWS)
@pytest.mark.parametrize("n_vectors", [1, 2])
@pytest.mark.parametrize("layout", ["C", "strided"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("width", WIDTHS)
def test_tile_fma_adds_examples_products_to_a_tile_of_G(
    width, dtype, layout, n_vectors, n_rows, blend, fresh, a_col, rng
):
    """tile_fma: G[g_row+q, g_col+c] += Σ_{i0≤i<i1} D[i, g_row+q]·A[i, c].

    For the tile's rows q < n_rows and columns c < n_vectors·W, one rounded
    multiply-add per example, in ascending order, starting from G's value.
    Nothing outside the tile is written.  With blend=1 the first ``skip``
    columns of the tile keep G's value (the overlapping tile that ends a
    row whose width is not a multiple of W); with blend=0 ``skip`` is
    ignored.  An empty range of examples leaves G as it is.

    With ``fresh`` the sums start from zero and the tile's written columns
    of G are never read: they hold NaN on entry, and any NaN read would
    remain in the result.  An empty range then writes zeros.  With
    ``a_col``, A's columns a_col … a_col + n_vectors·W − 1 are the tile's
    (a matrix read in place rather than a packed panel).
    """
    W = _lanes(width, dtype)
    n_cols = n_vectors * W
    n, g_col, g_row = 9, 5, 2  # G's columns off any vector boundary
    A = _short(rng, (n, n_cols + 4), dtype)  # a panel wider than the tile: columns from 0
    D = _d_matrix(rng, n, g_row + n_rows + 3, dtype, layout)
    G = rng.standard_normal((g_row + n_rows + 3, g_col + n_cols + 4)).astype(dtype)
    skips = range(W) if blend else [0, W - 1]
    tile = _tile(width, n_vectors, n_rows, blend)
    with _at_width(width):
        for i0, i1 in [(1, 8), (4, 4)]:
            for skip in skips:
                first = skip if blend else 0
                written = (slice(g_row, g_row + n_rows), slice(g_col + first, g_col + n_cols))
                start = G.copy()
                result = G.copy()
                if fresh:
                    start[written] = 0
                    result[written] = np.nan
                tile(A, D, i0, i1, g_col, g_row, result, skip, fresh, a_col)
                expected = _tile_reference(
                    A[:, a_col:], D, i0, i1, g_col, g_row, start, n_rows, n_cols, first
                )
                assert np.array_equal(result, expected), (i0, i1, skip)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_tile_fma_result_is_the_same_chain_whatever_the_cut(dtype, rng):
    """tile_fma: each element is one chain of fused multiply-adds in example order.

    So the bits do not depend on the vector width, the tile's shape, or how
    the examples are cut into calls; full-precision data, where every
    product and sum rounds.
    """
    n, t, d = 11, 6, 32  # d: two 64-byte vectors of float32, four of float64
    A = rng.standard_normal((n, d)).astype(dtype)
    D = rng.standard_normal((n, t)).astype(dtype)
    G = rng.standard_normal((t, d)).astype(dtype)
    results = []
    for width in WIDTHS:
        W = _lanes(width, dtype)
        with _at_width(width):
            for n_vectors in (1, 2):
                for n_rows in (1, 2, 3, 6):
                    tile = _tile(width, n_vectors, n_rows, 0)
                    for calls in ([(0, n)], [(0, 4), (4, 5), (5, n)]):
                        result = G.copy()
                        for i0, i1 in calls:
                            for g_row in range(0, t, n_rows):
                                for col in range(0, d, n_vectors * W):
                                    panel = np.ascontiguousarray(A[:, col : col + n_vectors * W])
                                    tile(panel, D, i0, i1, col, g_row, result, 0, False, 0)
                        results.append(result)
    for result in results[1:]:
        assert np.array_equal(result, results[0])
    # And the chain is the sum, within (n+1)·u·(|G| + |D|ᵀ|A|), doubled for
    # the float64 reference's own rounding.
    A64, D64, G64 = (x.astype(np.float64) for x in (A, D, G))
    bound = (n + 1) * np.finfo(dtype).eps * (np.abs(G64) + np.abs(D64).T @ np.abs(A64))
    assert np.all(np.abs(results[0] - (G64 + D64.T @ A64)) <= bound)


@pytest.mark.parametrize("n_vectors", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("width", WIDTHS)
def test_copy_vectors_copies_n_vectors_times_W_elements_of_a_row(width, dtype, n_vectors, rng):
    """copy_vectors: buf[offset : offset+n_vectors·W] = A[row, col : col+n_vectors·W].

    The values are copied unchanged (bit patterns included) and nothing else
    of buf is written.  ``col`` need not be on a vector boundary: the last
    n_vectors·W columns of a row whose width is not a multiple of W are
    copied as they are (the overlapping panel that ends a block).
    """
    W = _lanes(width, dtype)
    n_cols = n_vectors * W
    A = rng.standard_normal((4, 3 * W + 3)).astype(dtype)
    A[2, 1] = -0.0
    A[2, 2] = np.nan
    d = A.shape[1]
    copy = _copy(width, n_vectors)
    with _at_width(width):
        for row, col, offset in [(2, 1, 0), (2, d - n_cols, 3), (0, 0, 5), (3, W + 1, 1)]:
            buf = np.full(offset + n_cols + W + 2, 7.0, dtype)
            copy(A, row, col, buf, offset)
            expected = np.full_like(buf, 7.0)
            expected[offset : offset + n_cols] = A[row, col : col + n_cols]
            assert np.array_equal(
                buf.view(f"u{buf.itemsize}"), expected.view(f"u{buf.itemsize}")
            ), (row, col, offset)


def _transposed_sum(width):
    """transposed_sum_block, as a function compiled at ``width``."""
    key = ("transposed_sum", width)
    if key not in _compiled:

        @numba.njit
        def transposed_sum(first, second, row, col, out, out_row, out_col):
            transposed_sum_block(first, second, row, col, out, out_row, out_col)

        _compiled[key] = transposed_sum
    return _compiled[key]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("width", WIDTHS)
def test_transposed_sum_block_writes_the_blocks_sum_transposed(width, dtype, rng):
    """out[r + a, c + b] = first[i + b, j + a] + second[i + b, j + a] for a, b < W.

    Full-precision numbers, so every sum rounds; −0 + −0, NaN and ±inf
    among them.  The sums are NumPy's (one IEEE addition each) to the bit,
    the block lands transposed at any offset, and nothing else of out is
    written.  Each lane of the block holds a different value, so a wrong
    shuffle shows up.
    """
    W = _lanes(width, dtype)
    first = rng.standard_normal((W + 5, W + 7)).astype(dtype)
    second = rng.standard_normal((W + 5, W + 7)).astype(dtype)
    first[3, 2] = second[3, 2] = -0.0
    first[4, W] = np.nan
    second[W, 5] = np.inf
    first[W + 1, W + 1] = -np.inf
    transposed_sum = _transposed_sum(width)
    with _at_width(width):
        for row, col, out_row, out_col in [(0, 0, 0, 0), (3, 2, 1, 4), (5, 7, W + 2, 0)]:
            out = np.full((2 * W + 3, W + 6), 7.0, dtype)
            transposed_sum(first, second, row, col, out, out_row, out_col)
            expected = np.full_like(out, 7.0)
            block = first[row : row + W, col : col + W] + second[row : row + W, col : col + W]
            expected[out_row : out_row + W, out_col : out_col + W] = block.T
            assert np.array_equal(
                out.view(f"u{out.itemsize}"), expected.view(f"u{out.itemsize}")
            ), (row, col, out_row, out_col)


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="typing happens only in compiled code")
def test_transposed_sum_block_refuses_a_layout_it_cannot_address():
    # Its addresses come from C-contiguous rows: a transposed (F-ordered) view,
    # mixed dtypes or a 1-D array is refused while typing, never read wrongly.
    transposed_sum = _transposed_sum(_simd.VECTOR_BYTES)
    W = _lanes(_simd.VECTOR_BYTES, np.float64)
    a = np.zeros((W, W))
    refused = (numba.core.errors.TypingError, TypeError)
    for first, second, out in [
        (a.T, a, a),
        (a, a.T, a),
        (a, a, a.T),
        (a, a.astype(np.float32), a),
        (a, a, np.zeros(W * W)),
    ]:
        with pytest.raises(refused):
            transposed_sum(first, second, 0, 0, out, 0, 0)


# --------------------------------------------------------------------------
# fastbp._arrays: views of scratch memory
# --------------------------------------------------------------------------


def _view_kernels():
    """Compiled callers of the two view intrinsics (made once: compiling costs)."""
    from fastbp._arrays import matrix_view, vector_view

    if "views" not in _compiled:

        @numba.njit
        def matrix(flat, start, rows, cols):
            return matrix_view(flat, start, rows, cols)

        @numba.njit
        def vector(matrix):
            return vector_view(matrix)

        @numba.njit
        def write_through(flat, start, rows, cols):
            view = matrix_view(flat, start, rows, cols)
            view[rows - 1, cols - 1] = -1.0
            return vector_view(view)

        @numba.njit
        def outlives_its_source(size, rows, cols):
            # The view is all that is left of a fresh array when it is returned.
            return matrix_view(np.arange(size) * 1.0, size - rows * cols, rows, cols)

        _compiled["views"] = matrix, vector, write_through, outlives_its_source
    return _compiled["views"]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(
    "start, rows, cols", [(0, 3, 4), (5, 2, 7), (11, 0, 3), (2, 4, 0), (0, 1, 1), (30, 0, 0)]
)
def test_matrix_and_vector_views_are_numpys_reshapes_sharing_memory(dtype, start, rows, cols):
    matrix, vector, write_through, _ = _view_kernels()
    flat = np.arange(30, dtype=dtype) + 0.5
    view = matrix(flat, start, rows, cols)
    expected = flat[start : start + rows * cols].reshape(rows, cols)
    assert view.shape == (rows, cols) and view.dtype == dtype and view.flags.c_contiguous
    np.testing.assert_array_equal(view, expected)
    assert np.shares_memory(view, flat) or view.size == 0
    # Unsigned and signed integer arguments alike (a threaded loop's index is unsigned).
    np.testing.assert_array_equal(matrix(flat, np.uint64(start), rows, np.int32(cols)), expected)
    square = np.arange(12, dtype=dtype).reshape(3, 4)
    np.testing.assert_array_equal(vector(square), square.reshape(-1))
    assert np.shares_memory(vector(square), square)
    # A block of rows of a bigger matrix is C-contiguous too.
    np.testing.assert_array_equal(vector(square[1:3]), square[1:3].reshape(-1))
    if rows and cols:
        flat_copy = flat.copy()
        as_vector = write_through(flat_copy, start, rows, cols)
        assert flat_copy[start + rows * cols - 1] == -1.0  # written through the view
        assert as_vector.shape == (rows * cols,) and as_vector[-1] == -1.0


def test_a_view_keeps_its_source_alive():
    # The view holds a reference to its source's memory, as a slice does: the
    # fresh array inside the kernel is freed only when the view returned is.
    _, _, _, outlives_its_source = _view_kernels()
    outlives_its_source(40, 2, 3)  # compiled before counting
    if numba.config.DISABLE_JIT:
        kept = outlives_its_source(40, 2, 3)
        np.testing.assert_array_equal(kept, np.arange(34, 40).reshape(2, 3))
        return
    from numba.core.runtime import _nrt_python, rtsys

    was_enabled = _nrt_python.memsys_stats_enabled()
    _nrt_python.memsys_enable_stats()
    try:
        before = rtsys.get_allocation_stats()
        kept = outlives_its_source(40, 2, 3)
        alive = rtsys.get_allocation_stats()
        assert alive.mi_alloc - alive.mi_free == before.mi_alloc - before.mi_free + 1
        np.testing.assert_array_equal(kept, np.arange(34, 40).reshape(2, 3))
        del kept
        after = rtsys.get_allocation_stats()
        assert after.mi_alloc - after.mi_free == before.mi_alloc - before.mi_free
    finally:
        if not was_enabled:
            _nrt_python.memsys_disable_stats()


def test_views_refuse_arrays_that_are_not_c_contiguous():
    matrix, vector, _, _ = _view_kernels()
    square = np.arange(12.0).reshape(3, 4)
    # A typing error when compiled; the Python stand-ins (JIT off) raise TypeError.
    refused = (numba.core.errors.TypingError, TypeError)
    with pytest.raises(refused):
        vector(square.T)  # Fortran order: a view of it would not be its elements in order
    with pytest.raises(refused):
        matrix(square[:, 0], 0, 1, 3)  # a strided column
    with pytest.raises(refused):
        matrix(square, 0, 1, 3)  # not 1-D


def test_the_python_views_refuse_what_compiled_code_would_read_past():
    # With the JIT off the kernels' views are NumPy's, bounds-checked: a view
    # past the end of its source is an error there (compiled code checks nothing).
    from fastbp._arrays import _matrix_view_python, _vector_view_python

    flat = np.arange(10.0)
    np.testing.assert_array_equal(_matrix_view_python(flat, 4, 2, 3), flat[4:10].reshape(2, 3))
    np.testing.assert_array_equal(
        _matrix_view_python(flat, np.uint64(4), np.int64(2), 3), flat[4:10].reshape(2, 3)
    )
    assert _matrix_view_python(flat, 12, 0, 5).shape == (0, 5)  # empty: anywhere
    with pytest.raises(IndexError, match="outside flat"):
        _matrix_view_python(flat, 5, 2, 3)
    with pytest.raises(TypeError, match="1-D C-contiguous"):
        _matrix_view_python(flat[::2], 0, 1, 2)
    with pytest.raises(TypeError, match="2-D C-contiguous"):
        _vector_view_python(flat.reshape(2, 5).T)


# --------------------------------------------------------------------------
# fastbp._arrays: allocation, transposed copies and float64 views
# --------------------------------------------------------------------------


def _array_kernels():
    """Compiled callers of empty, zeros, transposed and float64_matrix_view (made once)."""
    from fastbp._arrays import empty, float64_matrix_view, transposed, zeros

    if "arrays" not in _compiled:

        @numba.njit
        def empty_like_class(shape, like):
            return empty(shape, like.dtype), empty(shape, np.float32), empty(shape, np.int64)

        @numba.njit
        def zeros_like_class(shape, like):
            return zeros(shape, like.dtype), zeros(shape, np.float32), zeros(shape, np.int64)

        @numba.njit
        def dirty_then_zeros(size):
            # The block the first array frees is likely the one the second gets.
            garbage = empty((size,), np.float64)
            garbage[:] = -1.5
            total = garbage.sum()
            return total, zeros((size,), np.float64)

        @numba.njit
        def allocate_and_drop(rows, cols):
            a = empty((rows, cols), np.float64)
            b = zeros((rows, cols), np.float32)
            c = transposed(b)
            return a.shape[0] + b.shape[1] + c.shape[0]

        @numba.njit
        def transpose(matrix):
            return transposed(matrix)

        @numba.njit
        def float64_view(flat, start, rows, cols):
            return float64_matrix_view(flat, start, rows, cols)

        @numba.njit
        def float64_view_written(flat, start, rows, cols, value):
            view = float64_matrix_view(flat, start, rows, cols)
            view[rows - 1, cols - 1] = value
            return view

        _compiled["arrays"] = (
            empty_like_class,
            zeros_like_class,
            dirty_then_zeros,
            allocate_and_drop,
            transpose,
            float64_view,
            float64_view_written,
        )
    return _compiled["arrays"]


@pytest.mark.parametrize(
    "shape", [(0,), (5,), (3, 4), (1, 1), (2, 0, 3), (2, 3, 4)], ids=lambda s: "x".join(map(str, s))
)
def test_empty_and_zeros_make_aligned_c_arrays_of_the_shape_and_dtype(shape):
    empty_like, zeros_like, _, _, _, _, _ = _array_kernels()
    for like in (np.zeros(1, np.float32), np.zeros(1, np.float64)):
        for arrays, zero in ((empty_like(shape, like), False), (zeros_like(shape, like), True)):
            for array, dtype in zip(arrays, (like.dtype, np.float32, np.int64), strict=True):
                assert array.shape == shape and array.dtype == dtype, (array.shape, array.dtype)
                assert array.flags.c_contiguous and array.flags.writeable
                if not numba.config.DISABLE_JIT:
                    assert array.ctypes.data % 32 == 0  # NumPy's and Numba's alignment
                if zero:  # every bit zero: +0.0, never -0.0
                    assert not array.view(f"u{array.itemsize}").any()
    # Any integer types in the shape (a threaded loop's index is unsigned).
    mixed = tuple(t(e) for t, e in zip((np.uint64, np.int32, np.int64), shape, strict=False))
    assert zeros_like(mixed, np.zeros(1))[0].shape == shape[:3]


def test_zeros_are_zero_in_recycled_memory():
    _, _, dirty_then_zeros, _, _, _, _ = _array_kernels()
    for size in (1, 7, 1000, 100_000):
        total, cleared = dirty_then_zeros(size)
        assert total == -1.5 * size
        assert not cleared.view(np.uint64).any()


def test_a_negative_extent_is_refused_not_allocated():
    empty_like, zeros_like, _, _, _, _, _ = _array_kernels()
    for make in (empty_like, zeros_like):
        with pytest.raises(ValueError, match="negative dimensions"):
            make((2, -1), np.zeros(1))


def test_allocations_inside_a_kernel_are_freed_with_it():
    _, _, _, allocate_and_drop, _, _, _ = _array_kernels()
    assert allocate_and_drop(3, 4) == 3 + 4 + 4  # compiled before counting
    if numba.config.DISABLE_JIT:
        return
    from numba.core.runtime import _nrt_python, rtsys

    was_enabled = _nrt_python.memsys_stats_enabled()
    _nrt_python.memsys_enable_stats()
    try:
        before = rtsys.get_allocation_stats()
        allocate_and_drop(30, 40)
        after = rtsys.get_allocation_stats()
        assert after.alloc - before.alloc == 3  # the three arrays, and no more
        assert after.alloc - after.free == before.alloc - before.free  # all freed
    finally:
        if not was_enabled:
            _nrt_python.memsys_disable_stats()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(5, 7), (1, 1), (0, 3), (3, 0), (16, 2)])
def test_transposed_is_numpys_contiguous_transpose_in_new_memory(dtype, shape):
    _, _, _, _, transpose, _, _ = _array_kernels()
    rng = np.random.default_rng(3)
    wide = rng.standard_normal((shape[0], 2 * shape[1] + 1)).astype(dtype)
    for matrix in (
        wide[:, : shape[1]].copy(),  # C-contiguous
        np.asfortranarray(wide[:, : shape[1]]),  # Fortran order
        wide[:, ::2][:, : shape[1]],  # strided columns
        wide[:, : shape[1]].copy().T.copy().T,  # a transposed view of a C array
    ):
        result = transpose(matrix)
        assert result.shape == shape[::-1] and result.dtype == dtype
        assert result.flags.c_contiguous
        np.testing.assert_array_equal(result, np.ascontiguousarray(matrix.T))
        assert not np.shares_memory(result, matrix)


def test_transposed_refuses_what_is_not_a_matrix():
    _, _, _, _, transpose, _, _ = _array_kernels()
    with pytest.raises((numba.core.errors.TypingError, TypeError)):
        transpose(np.arange(3.0))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("start_bytes, rows, cols", [(0, 2, 3), (16, 1, 4), (64, 3, 1), (8, 0, 2)])
def test_float64_views_read_the_bytes_numpy_views_read(dtype, start_bytes, rows, cols):
    _, _, _, _, _, float64_view, float64_view_written = _array_kernels()
    itemsize = np.dtype(dtype).itemsize
    flat = np.arange(64, dtype=dtype) + 0.25
    start = start_bytes // itemsize
    count = rows * cols * 8 // itemsize
    expected = flat[start : start + count].view(np.float64).reshape(rows, cols)
    view = float64_view(flat, start, rows, cols)
    assert view.shape == (rows, cols) and view.dtype == np.float64 and view.flags.c_contiguous
    np.testing.assert_array_equal(view, expected)
    # Unsigned and signed integer arguments alike.
    np.testing.assert_array_equal(
        float64_view(flat, np.uint64(start), np.int32(rows), np.int64(cols)), expected
    )
    if rows and cols:
        assert np.shares_memory(view, flat)
        written = flat.copy()
        float64_view_written(written, start, rows, cols, -3.5)
        last = written[start : start + count].view(np.float64)[-1]
        assert last == -3.5  # written through into the source's bytes
        untouched = np.ones(64, bool)
        untouched[start + count - 8 // itemsize : start + count] = False
        np.testing.assert_array_equal(written[untouched], flat[untouched])


def test_float64_views_refuse_sources_they_cannot_read():
    _, _, _, _, _, float64_view, _ = _array_kernels()
    refused = (numba.core.errors.TypingError, TypeError)
    with pytest.raises(refused):
        float64_view(np.zeros(8, np.float16), 0, 1, 1)  # 2-byte elements
    with pytest.raises(refused):
        float64_view(np.zeros(8, np.int64), 0, 1, 1)  # not floats
    with pytest.raises(refused):
        float64_view(np.zeros(8, np.bool_), 0, 1, 1)  # no bit width to read
    with pytest.raises(refused):
        float64_view(np.zeros((4, 4)), 0, 1, 1)  # not 1-D
    with pytest.raises(refused):
        float64_view(np.zeros(16)[::2], 0, 1, 1)  # not contiguous


def test_the_python_float64_view_refuses_what_compiled_code_would_misread():
    from fastbp._arrays import _float64_matrix_view_python

    flat = np.arange(16, dtype=np.float32)
    np.testing.assert_array_equal(
        _float64_matrix_view_python(flat, 2, 2, 3), flat[2:14].view(np.float64).reshape(2, 3)
    )
    assert _float64_matrix_view_python(flat, 40, 0, 3).shape == (0, 3)  # empty: anywhere
    with pytest.raises(ValueError, match="8-byte boundary"):
        _float64_matrix_view_python(flat, 1, 1, 1)
    with pytest.raises(IndexError, match="outside flat"):
        _float64_matrix_view_python(flat, 8, 2, 3)
    with pytest.raises(TypeError, match="float32 or float64"):
        _float64_matrix_view_python(np.zeros(8, np.float16), 0, 1, 1)


# a·b = 1 − 2^(−2e) exactly, which rounds to 1 in the dtype (e = 30 in float64, 15 in float32):
# fused, a·b − 1 is −2^(−2e); a multiply and an add give 0.
_ONE_ROUNDING = {np.float64: 2.0**-30, np.float32: 2.0**-15}


@numba.njit
def _fused(a, b, c):
    return _simd.fused_multiply_add(a, b, c)


@numba.njit
def _fused_loop(a, b, c, out):
    for i in range(a.shape[0]):  # vectorised, with a scalar remainder
        out[i] = _simd.fused_multiply_add(a[i], b[i], c[i])


_COMPILED_ONLY = pytest.mark.skipif(
    numba.config.DISABLE_JIT,
    reason="compiled code's rounding (the Python stand-in is tested below)",
)


@_COMPILED_ONLY
@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_multiply_add_rounds_once_in_vector_loops_and_alone(dtype, rng):
    small = _ONE_ROUNDING[dtype]
    a, b, c = dtype(1 + small), dtype(1 - small), dtype(-1)
    assert a * b + c == 0  # two roundings
    assert _fused(a, b, c) == -small * small  # Numba returns it as a Python float
    # Every element alike, wherever it falls in the vectorised loop.
    size = 37
    out = np.empty(size, dtype)
    _fused_loop(np.full(size, a), np.full(size, b), np.full(size, c), out)
    np.testing.assert_array_equal(out, np.full(size, -small * small, dtype))
    # Random data: the correctly rounded a·b + c, from the exact rational value.
    from fractions import Fraction

    x, y, z = (rng.standard_normal(size).astype(dtype) for _ in range(3))
    _fused_loop(x, y, z, out)
    exact = [
        Fraction(float(p)) * Fraction(float(q)) + Fraction(float(r)) for p, q, r in zip(x, y, z)
    ]
    if dtype is np.float64:
        np.testing.assert_array_equal(out, [float(e) for e in exact])
    else:  # the float32 nearest the exact value: within half a float32 ulp of it
        ulp = np.spacing(np.abs(out)).astype(np.float64)
        error = [abs(Fraction(float(o)) - e) for o, e in zip(out, exact)]
        assert all(err <= Fraction(float(u)) / 2 for err, u in zip(error, ulp))
    assert np.isnan(_fused(dtype(np.nan), dtype(1), dtype(0)))


@_COMPILED_ONLY
def test_fused_multiply_add_refuses_mixed_or_non_float_arguments():
    refused = (numba.core.errors.TypingError, TypeError)
    with pytest.raises(refused):
        _fused(np.float32(1), 1.0, 1.0)  # float32 with float64
    with pytest.raises(refused):
        _fused(1, 2, 3)  # integers


def test_the_python_fused_multiply_add_rounds_twice_as_documented():
    from fastbp._simd import _fused_multiply_add_python

    small = _ONE_ROUNDING[np.float64]
    assert _fused_multiply_add_python(1 + small, 1 - small, -1.0) == 0.0
    result = _fused_multiply_add_python(np.float32(1.5), np.float32(2), np.float32(0.25))
    assert type(result) is np.float32 and result == np.float32(3.25)


@numba.njit
def _smaller_and_larger(a, b):
    return _simd.smaller(a, b), _simd.larger(a, b)


@numba.njit
def _with_literals(n):
    # Literal arguments on either side, a narrower integer, and unsigned ones.
    return (
        _simd.larger(1, _simd.smaller(n, 192)),
        _simd.smaller(np.int32(n), n + 1),
        _simd.larger(np.uint64(n), np.uint64(3)),
    )


@pytest.mark.parametrize("a, b", [(3, 9), (9, 3), (-7, 4), (5, 5), (-(2**63), 2**63 - 1), (0, -1)])
def test_smaller_and_larger_are_min_and_max_of_two_integers(a, b):
    expected = (min(a, b), max(a, b))
    assert _smaller_and_larger(a, b) == expected  # compiled (or Python with the JIT off)
    assert (_simd.smaller(a, b), _simd.larger(a, b)) == expected  # the Python functions
    assert _smaller_and_larger(np.uint64(a % 2**64), np.uint64(b % 2**64)) == (
        min(a % 2**64, b % 2**64),
        max(a % 2**64, b % 2**64),
    )


def test_smaller_and_larger_take_literals_and_mixed_widths():
    assert _with_literals(100) == (100, 100, 100)
    assert _with_literals(500) == (192, 500, 500)
    assert _with_literals(0) == (1, 0, 3)
    if not numba.config.DISABLE_JIT:
        (signature,) = _with_literals.nopython_signatures
        assert signature.return_type == numba.types.Tuple(
            (numba.types.int64, numba.types.int64, numba.types.uint64)
        )


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="typing errors: compiled code only")
def test_smaller_and_larger_refuse_floats_and_mixed_signedness():
    refused = (numba.core.errors.TypingError, TypeError)
    with pytest.raises(refused):
        _smaller_and_larger(1.0, np.nan)  # a float: min and max of NaN are not a select
    with pytest.raises(refused):
        _smaller_and_larger(np.int64(1), np.uint64(2))
