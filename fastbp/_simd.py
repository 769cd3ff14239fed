"""Explicit SIMD register tiles for the blocked gradient, and scalar bit casts, as Numba intrinsics.

The intrinsics, usable only inside compiled code (W = VECTOR_BYTES // itemsize
lanes per vector; ``n_vectors``, ``n_rows`` and ``blend`` compile-time constants):

``tile_fma(A, D, i0, i1, g_col, g_row, G, skip, fresh, a_col, n_vectors, n_rows, blend)``
    G[g_row+q, g_col+c] += Σ_{i0 ≤ i < i1} D[i, g_row+q] · A[i, a_col+c], for
    q < n_rows and c < n_vectors·W; A (n, ·), D (n, t), G (t, d); with
    ``fresh`` the sums start from zero instead of G's values.
``copy_vectors(A, row, col, buf, offset, n_vectors)``
    buf[offset : offset+n_vectors·W] = A[row, col : col+n_vectors·W]; A 2-D, buf 1-D.
``bits_from_float(x)``, ``float_from_bits(bits)``
    The IEEE-754 bits of a float64 as an int64, and back (bit casts).
``fused_multiply_add(a, b, c)``
    a·b + c rounded once (``llvm.fma``), for three floats of one type.
``smaller(a, b)``, ``larger(a, b)``
    The smaller and the larger of two integers of one signedness (a compare
    and a select); plain Python functions as well, so the size arithmetic
    that Python runs as Python can use them.

Why this module exists
----------------------
LLVM vectorises a plain ``for j`` loop, but for the short rows of the
gradient (d ≈ 100) every pass pays loop set-up, run-time alias checks and a
scalar remainder, and a scalar register tile written out by hand is not
turned into vector code (the SLP vectoriser gives up).  So the one hot loop
of :func:`fastbp._tiles.accumulate` is emitted here directly
as LLVM IR on *generic* vector types (``<4 x double>``, ``<8 x float>``,
or twice as long with AVX-512):
the accumulators of a whole tile live in vector registers across a block of
examples and touch memory only at the start and the end.

Portability
-----------
Only target-independent IR is used: vector loads/stores, ``insertelement``
/ ``shufflevector`` (broadcast, transposition), ``select`` and the generic
``llvm.fmuladd.*`` intrinsic.  LLVM lowers these on any target: with AVX2 +
FMA one 32-byte vector is one ymm register and ``fmuladd`` one
``vfmadd``, with AVX-512 a 64-byte vector one zmm register; on a machine
without them LLVM splits the vectors and uses a multiply and an add.
``llvm.fmuladd`` fuses exactly where the ``contract`` fast-math flag would
(the only fast-math flag fastbp uses, see :mod:`fastbp._jit`), so the vector
code rounds exactly like the scalar fallback compiled with ``CONTRACT``.
Nothing here is x86-specific; the width (:data:`VECTOR_BYTES`, 32 or 64
bytes, chosen at import by :func:`choose_vector_bytes`) is only a tuning
choice.

The bit casts (:func:`bits_from_float`, :func:`float_from_bits` and their
float32 twins) are single LLVM instructions: they let the exponentials of
:mod:`fastbp._kernels` build 2^k from its exponent bits in plain,
vectorisable code.

Summation order
---------------
For every element, ``tile_fma`` starts from the value already in ``G`` and
adds the examples one at a time in ascending order ``i0, i0+1, …``, one
rounded (fused) multiply-add each.  No reassociation: the result of a sum
over a range of examples does not depend on how the range is cut into
calls, nor on the tile shape, nor on the vector width.

Code generation
---------------
The IR is emitted by the small helpers below (:class:`_Vectors`,
:class:`_Matrix`, :class:`_DColumns`, :func:`_example_loop`,
:func:`_store_tile`); each intrinsic's ``codegen`` only strings them
together.  Nothing is checked at run time: the callers (the kernels of
:mod:`fastbp._kernels` and the step's modules) keep every
access in bounds.
"""

import os
import struct as _struct

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core import config as _numba_config
from numba.core.imputils import lower_builtin
from numba.extending import intrinsic, type_callable

__all__ = [
    "VECTOR_BYTES",
    "bits_from_float",
    "bits_from_float32",
    "choose_vector_bytes",
    "copy_vectors",
    "float32_from_bits",
    "float_from_bits",
    "fused_multiply_add",
    "larger",
    "smaller",
    "tile_fma",
    "transposed_sum_block",
]

_VECTOR_BYTES_CHOICES = (32, 64)


def _target_features():
    """The LLVM feature string Numba compiles for (``NUMBA_CPU_FEATURES`` or the host's)."""
    from numba.core import config

    if config.CPU_FEATURES is not None:
        return config.CPU_FEATURES
    if config.CPU_NAME is not None and config.CPU_NAME != "host":
        return ""  # a named CPU without a feature list: assume nothing
    import llvmlite.binding as llvm

    return llvm.get_host_cpu_features().flatten()


def choose_vector_bytes(environ=None, features=None):
    """Bytes per vector register for the register tiles: 64 with AVX-512, else 32.

    ``FASTBP_VECTOR_BYTES`` (32 or 64) in ``environ`` overrides the choice,
    for testing the other width or for code meant to run elsewhere.  The
    width changes only speed, never results: every element is the same
    chain of fused multiply-adds whatever the vector width (see
    "Summation order" above).

    Raises
    ------
    ValueError
        If ``FASTBP_VECTOR_BYTES`` is set to anything but 32 or 64.
    """
    environ = os.environ if environ is None else environ
    setting = environ.get("FASTBP_VECTOR_BYTES", "").strip()
    if setting:
        if setting not in {str(v) for v in _VECTOR_BYTES_CHOICES}:
            raise ValueError(
                f"FASTBP_VECTOR_BYTES must be 32 or 64 (bytes per vector register), got {setting!r}"
            )
        return int(setting)
    features = _target_features() if features is None else features
    return 64 if "+avx512f" in features.split(",") else 32


#: Bytes per vector register the tiles are shaped for: 64 where Numba's
#: target has AVX-512 (32 vector registers, 64 bytes each), else 32 (AVX2;
#: on other targets LLVM splits the vectors).  Fixed at import.
VECTOR_BYTES = choose_vector_bytes()


# --------------------------------------------------------------------------
# IR helpers
# --------------------------------------------------------------------------

_I32 = ir.IntType(32)


def _literal_int(ty, intrinsic_name, arg_name):
    """The value of a compile-time integer argument; TypeError if it is not one."""
    if not isinstance(ty, types.IntegerLiteral):
        raise TypeError(
            f"{intrinsic_name}: {arg_name} must be a compile-time integer constant, got {ty}"
        )
    return ty.literal_value


def _is_float_array(ty):
    return isinstance(ty, types.Array) and ty.dtype in (types.float32, types.float64)


def _element_pointer(builder, data, row, n_cols, col):
    """Pointer to element [row, col] of a C-contiguous 2-D array with rows of ``n_cols``."""
    return builder.gep(data, [builder.add(builder.mul(row, n_cols), col)])


class _Vectors:
    """IR for vectors of one float dtype, W = VECTOR_BYTES // itemsize lanes each."""

    def __init__(self, context, builder, dtype):
        self.builder = builder
        self.intp = context.get_value_type(types.intp)
        self.float_type = context.get_value_type(dtype)
        self.itemsize = context.get_abi_sizeof(self.float_type)
        self.lanes = VECTOR_BYTES // self.itemsize
        self.type = ir.VectorType(self.float_type, self.lanes)

    def intp_constant(self, value):
        return ir.Constant(self.intp, value)

    def starts(self, first, n_vectors):
        """first, first + W, …: where each of ``n_vectors`` consecutive vectors starts."""
        return [
            self.builder.add(first, self.intp_constant(v * self.lanes)) for v in range(n_vectors)
        ]

    # Aligned only to the element: rows of A and G, and the panels of a
    # buffer, need not start on a vector boundary.
    def load(self, pointer):
        """The vector of W elements starting at the element ``pointer``."""
        vector_pointer = self.builder.bitcast(pointer, self.type.as_pointer())
        return self.builder.load(vector_pointer, align=self.itemsize)

    def store(self, value, pointer):
        """Write the vector ``value`` to W elements starting at the element ``pointer``."""
        vector_pointer = self.builder.bitcast(pointer, self.type.as_pointer())
        self.builder.store(value, vector_pointer, align=self.itemsize)

    def broadcast(self, scalar, vector_type=None):
        """``scalar`` in every lane of a vector (of ``vector_type``, else the float vector type)."""
        vector_type = self.type if vector_type is None else vector_type
        undef = ir.Constant(vector_type, ir.Undefined)
        zeros = ir.Constant(ir.VectorType(_I32, self.lanes), [0] * self.lanes)
        first_lane = self.builder.insert_element(undef, scalar, ir.Constant(_I32, 0))
        return self.builder.shuffle_vector(first_lane, undef, zeros)

    def fmuladd(self):
        """``llvm.fmuladd`` on this vector type: a·b + c, fused where the target has FMA."""
        suffix = "f64" if self.itemsize == 8 else "f32"
        return cgutils.get_or_insert_function(
            self.builder.module,
            ir.FunctionType(self.type, [self.type] * 3),
            f"llvm.fmuladd.v{self.lanes}{suffix}",
        )


class _Matrix:
    """A 2-D array argument: its data pointer and row length, to address C-contiguous elements."""

    def __init__(self, context, builder, array_type, value):
        array = context.make_array(array_type)(context, builder, value)
        self.n_cols = cgutils.unpack_tuple(builder, array.shape, 2)[1]
        self.data = array.data

    def element(self, builder, row, col):
        return _element_pointer(builder, self.data, row, self.n_cols, col)


class _DColumns:
    """Pointers to D[i, c] for the columns c of a tile, one example i at a time.

    A C-contiguous D is addressed from its row length.  Any other D (the
    forward product passes X[rows].T, to read X's rows in place instead of
    copying them transposed) is addressed through its byte strides, with
    each column's start computed once, outside the loop over examples.
    """

    def __init__(self, context, builder, array_type, value, d):
        self.builder = builder
        self.d = d
        self.strided = array_type.layout != "C"
        if self.strided:
            array = context.make_array(array_type)(context, builder, value)
            self.row_stride, self.col_stride = cgutils.unpack_tuple(builder, array.strides, 2)
            self.bytes = builder.bitcast(d.data, ir.IntType(8).as_pointer())
            self.float_pointer = d.data.type

    def select(self, first, columns):
        """Read columns ``columns`` (the values first, first + 1, …) from now on."""
        self.first = first
        self.n_columns = len(columns)
        if self.strided:
            self.column_starts = [
                self.builder.gep(self.bytes, [self.builder.mul(c, self.col_stride)])
                for c in columns
            ]

    def pointers(self, i):
        """Pointers to D[i, c] for the selected columns c, in order."""
        builder = self.builder
        if self.strided:
            offset = builder.mul(i, self.row_stride)
            return [
                builder.bitcast(builder.gep(start, [offset]), self.float_pointer)
                for start in self.column_starts
            ]
        first = self.d.element(builder, i, self.first)
        return [builder.gep(first, [ir.Constant(i.type, q)]) for q in range(self.n_columns)]


def _example_loop(builder, start, stop, tile, step):
    """Emit ``for i in range(start, stop): tile = step(i, tile)``; return the tile after the loop.

    ``tile`` is a list of rows of vector values, carried from one example
    to the next in phi nodes (registers), not in memory.  ``step(i, tile)``
    emits the update for example i and returns the new rows.  The builder
    is left after the loop.
    """
    entry = builder.basic_block
    header = builder.append_basic_block("tile.hdr")
    body = builder.append_basic_block("tile.body")
    done = builder.append_basic_block("tile.done")
    builder.branch(header)

    builder.position_at_end(header)
    i = builder.phi(start.type, "i")
    i.add_incoming(start, entry)
    carried = [[builder.phi(value.type) for value in row] for row in tile]
    for phis, values in zip(carried, tile):
        for phi, value in zip(phis, values):
            phi.add_incoming(value, entry)
    builder.cbranch(builder.icmp_signed("<", i, stop), body, done)

    builder.position_at_end(body)
    updated = step(i, carried)
    i_next = builder.add(i, ir.Constant(start.type, 1))
    latch = builder.basic_block  # the body's last block, wherever step left the builder
    builder.branch(header)
    i.add_incoming(i_next, latch)
    for phis, values in zip(carried, updated):
        for phi, value in zip(phis, values):
            phi.add_incoming(value, latch)

    builder.position_at_end(done)
    return carried


def _initial_tile(vec, g, rows, col_starts, fresh):
    """The tile's accumulators on entry: +0.0 where ``fresh`` (an i1) is true, else G's values.

    G is loaded either way and a select keeps +0.0 for a fresh tile: what
    G holds then (anything, NaN included) never reaches the sums, and a
    select adds no control flow for LLVM to optimise in every tile.
    """
    builder = vec.builder
    zero = ir.Constant(vec.type, [0.0] * vec.lanes)
    return [
        [builder.select(fresh, zero, vec.load(g.element(builder, row, col))) for col in col_starts]
        for row in rows
    ]


def _store_tile(vec, g, rows, col_starts, tile, skip=None):
    """Store tile[q][v] to G[rows[q], col_starts[v] : col_starts[v] + W].

    With ``skip`` (an intp value in [0, W)), lanes 0 … skip-1 of each row's
    first vector keep G's value: a select against the stored vector, so a
    row's last tile can overlap columns an earlier tile has done.
    """
    builder = vec.builder
    if skip is not None:
        lane_type = ir.VectorType(vec.intp, vec.lanes)
        lanes = ir.Constant(lane_type, list(range(vec.lanes)))
        write_lane = builder.icmp_signed(">=", lanes, vec.broadcast(skip, lane_type))
    for row, row_values in zip(rows, tile):
        for v, (col, value) in enumerate(zip(col_starts, row_values)):
            if skip is not None and v == 0:
                kept = vec.load(g.element(builder, row, col))
                value = builder.select(write_lane, value, kept)
            vec.store(value, g.element(builder, row, col))


# --------------------------------------------------------------------------
# Register tiles
# --------------------------------------------------------------------------


@intrinsic(prefer_literal=True)
def tile_fma(
    typingctx, A, D, i0, i1, g_col, g_row, G, skip, fresh, a_col, n_vectors, n_rows, blend
):
    """Add the examples i0 … i1-1 of Dᵀ A to a tile of G, one fused multiply-add per example.

    G[g_row+q, g_col+c] += Σ_{i0 ≤ i < i1} D[i, g_row+q] · A[i, a_col+c]
    for the tile's rows q < n_rows and columns c < n_vectors·W.  With
    ``fresh`` (a run-time boolean) the tile is written instead:
    G[g_row+q, g_col+c] = Σ …, the accumulators starting from +0.0 whatever
    G holds (NaN included), which gives the bits of adding to a G of zeros.
    A (n, d) and G (t, d) are C-contiguous, D (n, t) has any strides, all
    of one float dtype; G is updated in place.  ``n_vectors``, ``n_rows`` and
    ``blend`` (0 or 1) are compile-time constants; W = VECTOR_BYTES // itemsize.
    With ``blend=1`` the first ``skip`` (in [0, W)) of the tile's columns,
    G[·, g_col : g_col+skip], are left as they are, so that a row whose
    width is not a multiple of W ends with a tile overlapping the previous
    one instead of a scalar remainder; ``skip`` is ignored with ``blend=0``.
    Nothing is checked: A[i0:i1, :n_vectors·W],
    D[i0:i1, g_row:g_row+n_rows] and G[g_row:g_row+n_rows,
    g_col:g_col+n_vectors·W] must be in bounds.  A is a packed panel
    (``a_col`` = 0) or the rows of a matrix read in place (``a_col`` the
    tile's first column there).

    The n_rows × n_vectors accumulators are loaded from G once (and set to
    zero where ``fresh``), updated with one ``fmuladd`` per example (a vector of A's row
    times a broadcast element of D), in example order, and stored once.
    """
    if not (_is_float_array(A) and _is_float_array(D) and _is_float_array(G)):
        return None
    if not (A.dtype == D.dtype == G.dtype):
        return None
    if not (A.ndim == D.ndim == G.ndim == 2 and A.layout == G.layout == "C"):
        return None
    vectors_per_row = _literal_int(n_vectors, "tile_fma", "n_vectors")
    tile_rows = _literal_int(n_rows, "tile_fma", "n_rows")
    blended = _literal_int(blend, "tile_fma", "blend")
    if vectors_per_row < 1 or tile_rows < 1 or blended not in (0, 1):
        raise ValueError("tile_fma: need n_vectors >= 1, n_rows >= 1, blend in {0, 1}")
    if not all(isinstance(ty, types.Integer) for ty in (i0, i1, g_col, g_row, skip, a_col)):
        return None
    if not isinstance(fresh, types.Boolean):
        return None
    call_signature = types.void(
        A, D, i0, i1, g_col, g_row, G, skip, fresh, a_col, n_vectors, n_rows, blend
    )

    def codegen(context, builder, signature, args):
        a_value, d_value, g_value = args[0], args[1], args[6]
        start, stop, first_g_col, first_row, skip_lanes = (
            context.cast(builder, args[p], signature.args[p], types.intp) for p in (2, 3, 4, 5, 7)
        )
        vec = _Vectors(context, builder, A.dtype)
        a = _Matrix(context, builder, A, a_value)
        g = _Matrix(context, builder, G, g_value)
        d = _Matrix(context, builder, D, d_value)
        d_columns = _DColumns(context, builder, D, d_value, d)
        fmuladd = vec.fmuladd()

        g_cols = vec.starts(first_g_col, vectors_per_row)
        # A's columns from a_col on: its data pointer moved once, here, so that the loop over
        # examples addresses A as it addresses a packed panel (constant column offsets).
        a.data = builder.gep(
            a.data, [context.cast(builder, args[9], signature.args[9], types.intp)]
        )
        a_cols = [vec.intp_constant(v * vec.lanes) for v in range(vectors_per_row)]
        rows = [builder.add(first_row, vec.intp_constant(q)) for q in range(tile_rows)]
        d_columns.select(first_row, rows)  # column q of D goes with row q of G

        def step(i, tile):
            a_vectors = [vec.load(a.element(builder, i, col)) for col in a_cols]
            updated = []
            for pointer, row_values in zip(d_columns.pointers(i), tile):
                coefficient = vec.broadcast(builder.load(pointer, align=vec.itemsize))
                updated.append(
                    [
                        builder.call(fmuladd, [a_vector, coefficient, value])
                        for a_vector, value in zip(a_vectors, row_values)
                    ]
                )
            return updated

        start_fresh = context.cast(builder, args[8], signature.args[8], types.boolean)
        tile = _initial_tile(vec, g, rows, g_cols, start_fresh)
        tile = _example_loop(builder, start, stop, tile, step)
        _store_tile(vec, g, rows, g_cols, tile, skip_lanes if blended else None)
        return context.get_dummy_value()

    return call_signature, codegen


@intrinsic(prefer_literal=True)
def copy_vectors(typingctx, A, row, col, buf, offset, n_vectors):
    """buf[offset : offset+n_vectors·W] = A[row, col : col+n_vectors·W], one vector at a time.

    A is a 2-D C-contiguous float array, buf a 1-D contiguous array of the
    same dtype, ``n_vectors`` a compile-time constant, W = VECTOR_BYTES //
    itemsize.  A plain copy (the values are not changed); no bounds are checked.
    """
    if not (_is_float_array(A) and _is_float_array(buf) and A.dtype == buf.dtype):
        return None
    if not (A.ndim == 2 and buf.ndim == 1):
        return None
    count = _literal_int(n_vectors, "copy_vectors", "n_vectors")
    if not all(isinstance(ty, types.Integer) for ty in (row, col, offset)):
        return None
    call_signature = types.void(A, row, col, buf, offset, n_vectors)

    def codegen(context, builder, signature, args):
        row_index, first_col, first_out = (
            context.cast(builder, args[p], signature.args[p], types.intp) for p in (1, 2, 4)
        )
        vec = _Vectors(context, builder, A.dtype)
        source = context.make_array(A)(context, builder, args[0])
        n_cols = cgutils.unpack_tuple(builder, source.shape, 2)[1]
        target = context.make_array(buf)(context, builder, args[3])
        for v in range(count):
            step = vec.intp_constant(v * vec.lanes)
            source_pointer = _element_pointer(
                builder, source.data, row_index, n_cols, builder.add(first_col, step)
            )
            target_pointer = builder.gep(target.data, [builder.add(first_out, step)])
            vec.store(vec.load(source_pointer), target_pointer)
        return context.get_dummy_value()

    return call_signature, codegen


def _transposed_rows(builder, rows):
    """The columns of the W × W block whose rows are the W-lane vectors ``rows``, as vectors.

    log2(W) rounds of ``shufflevector``: the round of half-width h swaps
    the h × h off-diagonal blocks of every 2h × 2h block, pairing row i
    with row i + h (the recursive block transposition, in registers).
    """
    lanes = len(rows)
    rows = list(rows)
    h = lanes // 2
    while h >= 1:
        low, high = [], []
        for base in range(0, lanes, 2 * h):
            low += list(range(base, base + h)) + list(range(lanes + base, lanes + base + h))
            high += list(range(base + h, base + 2 * h)) + list(
                range(lanes + base + h, lanes + base + 2 * h)
            )
        masks = [ir.Constant(ir.VectorType(_I32, lanes), mask) for mask in (low, high)]
        for i in range(lanes):
            if i % (2 * h) < h:
                upper, lower = rows[i], rows[i + h]
                rows[i] = builder.shuffle_vector(upper, lower, masks[0])
                rows[i + h] = builder.shuffle_vector(upper, lower, masks[1])
        h //= 2
    return rows


@intrinsic
def transposed_sum_block(typingctx, first, second, row, col, out, out_row, out_col):
    """out[out_row + a, out_col + b] = first[row + b, col + a] + second[row + b, col + a].

    For 0 ≤ a, b < W (W = VECTOR_BYTES // itemsize): the W × W block of
    ``first`` + ``second`` at (row, col), transposed into ``out``.  Each sum
    is one IEEE addition (first's value first), as ``first + second`` in
    NumPy.  The arrays are 2-D, C-contiguous and of one float dtype; W
    vector loads from each source, shuffles in registers
    (:func:`_transposed_rows`) and W vector stores: the transposition that
    the chunked step's sum of (d, m) partials ends with.  No bounds are
    checked.
    """
    arrays = (first, second, out)
    # The addresses come from each array's row length: a layout other than
    # C-contiguous is a typing error, not wrong elements.
    if not all(
        _is_float_array(a) and a.ndim == 2 and a.layout == "C" and a.dtype == first.dtype
        for a in arrays
    ):
        return None
    if not all(isinstance(ty, types.Integer) for ty in (row, col, out_row, out_col)):
        return None
    call_signature = types.void(first, second, row, col, out, out_row, out_col)

    def codegen(context, builder, signature, args):
        first_row, first_col, target_row, target_col = (
            context.cast(builder, args[p], signature.args[p], types.intp) for p in (2, 3, 5, 6)
        )
        vec = _Vectors(context, builder, first.dtype)
        sources = [_Matrix(context, builder, signature.args[p], args[p]) for p in (0, 1)]
        target = _Matrix(context, builder, signature.args[4], args[4])
        rows = []
        for r in range(vec.lanes):
            source_row = builder.add(first_row, vec.intp_constant(r))
            a, b = (vec.load(m.element(builder, source_row, first_col)) for m in sources)
            rows.append(builder.fadd(a, b))
        for r, column in enumerate(_transposed_rows(builder, rows)):
            target_row_r = builder.add(target_row, vec.intp_constant(r))
            vec.store(column, target.element(builder, target_row_r, target_col))
        return context.get_dummy_value()

    return call_signature, codegen


# --------------------------------------------------------------------------
# Scalar bit casts, for the vectorisable exp of fastbp._kernels
# --------------------------------------------------------------------------


@intrinsic
def bits_from_float(typingctx, value):
    """The IEEE-754 bits of a float64, as an int64 (a bit cast, no conversion)."""
    if value != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(value), codegen


@intrinsic
def float_from_bits(typingctx, bits):
    """The float64 whose IEEE-754 bits are the int64 ``bits`` (a bit cast)."""
    if bits != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(bits), codegen


@intrinsic
def bits_from_float32(typingctx, value):
    """The IEEE-754 bits of a float32, as an int32 (a bit cast, no conversion)."""
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(value), codegen


@intrinsic
def float32_from_bits(typingctx, bits):
    """The float32 whose IEEE-754 bits are the int32 ``bits`` (a bit cast)."""
    if bits != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def fused_multiply_add(typingctx, a, b, c):
    """a·b + c rounded once, for float32 or float64 a, b and c of one type.

    ``llvm.fma``, not ``llvm.fmuladd``: always fused, so the elementwise
    functions built on it give the same bits on every machine, in vector
    loops and in their scalar remainders alike.
    """
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        float_type = args[0].type
        fma = builder.module.declare_intrinsic(
            "llvm.fma", [float_type], ir.FunctionType(float_type, [float_type] * 3)
        )
        return builder.call(fma, args)

    return a(a, b, c), codegen


# --------------------------------------------------------------------------
# With the JIT off (NUMBA_DISABLE_JIT=1): the same operations in Python
# --------------------------------------------------------------------------
#
# Intrinsics exist only inside compiled code; called from Python they raise
# NotImplementedError.  With the JIT off every kernel runs as plain Python
# (that is how coverage of the kernels' bodies is measured), so each
# intrinsic is replaced by a Python function doing the same thing, slowly.
# One difference: a fused multiply-add rounds once in compiled code, twice
# here (a multiply and an add), as everywhere in Python: exactly
# representable data gives the same bits, other data agrees within the
# rounding bounds the tests check.  The slices below are bounds-checked by
# NumPy, so an access outside an array shows up here as an error.


def _lanes(array):
    return VECTOR_BYTES // array.itemsize


def _tile_fma_python(A, D, i0, i1, g_col, g_row, G, skip, fresh, a_col, n_vectors, n_rows, blend):
    """:func:`tile_fma` in Python: examples in order, a multiply and an add each."""
    width = n_vectors * _lanes(A)
    if g_col + width > G.shape[1] or g_row + n_rows > G.shape[0] or a_col + width > A.shape[1]:
        raise IndexError("tile_fma: the tile is outside A or G")
    if fresh:
        tile = np.zeros((n_rows, width), dtype=G.dtype)
    else:
        tile = G[g_row : g_row + n_rows, g_col : g_col + width].copy()
    for i in range(i0, i1):
        tile += D[i, g_row : g_row + n_rows, None] * A[i, None, a_col : a_col + width]
    first = skip if blend else 0
    G[g_row : g_row + n_rows, g_col + first : g_col + width] = tile[:, first:]


def _copy_vectors_python(A, row, col, buf, offset, n_vectors):
    """:func:`copy_vectors` in Python."""
    count = n_vectors * _lanes(A)
    if col + count > A.shape[1] or offset + count > buf.shape[0]:
        raise IndexError("copy_vectors: the vectors are outside A or buf")
    buf[offset : offset + count] = A[row, col : col + count]


def _transposed_sum_block_python(first, second, row, col, out, out_row, out_col):
    """:func:`transposed_sum_block` in Python."""
    w = _lanes(first)
    if row + w > first.shape[0] or col + w > first.shape[1]:
        raise IndexError("transposed_sum_block: the block is outside first")
    if row + w > second.shape[0] or col + w > second.shape[1]:
        raise IndexError("transposed_sum_block: the block is outside second")
    if out_row + w > out.shape[0] or out_col + w > out.shape[1]:
        raise IndexError("transposed_sum_block: the block is outside out")
    block = first[row : row + w, col : col + w] + second[row : row + w, col : col + w]
    out[out_row : out_row + w, out_col : out_col + w] = block.T


def _bits_from_float_python(value):
    """:func:`bits_from_float` in Python (a Python int: Python's arithmetic never warns)."""
    return _struct.unpack("<q", _struct.pack("<d", value))[0]


def _float_from_bits_python(bits):
    """:func:`float_from_bits` in Python (a Python float: underflow is silent, as compiled).

    The low 64 bits of ``bits``: Python's integers do not wrap around as int64 does.
    """
    return _struct.unpack("<d", _struct.pack("<Q", bits & 0xFFFF_FFFF_FFFF_FFFF))[0]


def _bits_from_float32_python(value):
    """:func:`bits_from_float32` in Python (a Python int)."""
    return _struct.unpack("<i", _struct.pack("<f", value))[0]


def _float32_from_bits_python(bits):
    """:func:`float32_from_bits` in Python, from the low 32 bits of ``bits``.

    A Python float holding the float32 value exactly: a product of two of
    them that underflows float32 (the exp's scaling) is then exact and
    silent, as compiled code is silent, and rounds once where the caller
    converts it to float32.
    """
    return _struct.unpack("<f", _struct.pack("<I", int(bits) & 0xFFFF_FFFF))[0]


def _fused_multiply_add_python(a, b, c):
    """:func:`fused_multiply_add` in Python: a multiply and an add, each rounded (see above)."""
    return a * b + c


def smaller(a, b):
    """The smaller of two integers of one signedness, ``min(a, b)``, in compiled code too.

    Numba's own ``min`` of two integers is an overload that compiles as a
    function of its own, once per argument types and per set of compile
    flags of its callers; this one is a compare and a select in the caller.
    """
    return a if a < b else b


def larger(a, b):
    """The larger of two integers of one signedness, ``max(a, b)``, in compiled code too."""
    return a if a > b else b


def _integer_result(a, b):
    """The type :func:`smaller` and :func:`larger` of ``a`` and ``b`` return, or None."""
    a, b = types.unliteral(a), types.unliteral(b)
    if not (isinstance(a, types.Integer) and isinstance(b, types.Integer)) or a.signed != b.signed:
        return None  # a typing error: floats (NaN) and mixed signedness are refused
    return a if a.bitwidth >= b.bitwidth else b


def _integer_select(keep_first_when):
    """The lowering of ``a if a <op> b else b``, both cast to the result type first."""

    def lower(context, builder, signature, args):
        result = signature.return_type
        a = context.cast(builder, args[0], signature.args[0], result)
        b = context.cast(builder, args[1], signature.args[1], result)
        compare = builder.icmp_signed if result.signed else builder.icmp_unsigned
        return builder.select(compare(keep_first_when, a, b), a, b)

    return lower


for _function, _keep_first_when in ((smaller, "<"), (larger, ">")):
    type_callable(_function)(lambda context: _integer_result)
    lower_builtin(_function, types.Integer, types.Integer)(_integer_select(_keep_first_when))


if _numba_config.DISABLE_JIT:
    tile_fma = _tile_fma_python
    copy_vectors = _copy_vectors_python
    transposed_sum_block = _transposed_sum_block_python
    bits_from_float = _bits_from_float_python
    float_from_bits = _float_from_bits_python
    bits_from_float32 = _bits_from_float32_python
    float32_from_bits = _float32_from_bits_python
    fused_multiply_add = _fused_multiply_add_python
