"""Explicit SIMD register tiles for the blocked gradient, and scalar bit casts, as Numba intrinsics.

Why this module exists
----------------------
LLVM vectorises a plain ``for j`` loop, but for the short rows of the
gradient (d ≈ 100) every pass pays loop set-up, run-time alias checks and a
scalar remainder, and a scalar register tile written out by hand is not
turned into vector code (the SLP vectoriser gives up).  So the one hot loop
of :func:`fastbp._kernels._accumulate_gradT_rows` is emitted here directly
as LLVM IR on *generic* vector types (``<4 x double>``, ``<8 x float>``,
or twice as long with AVX-512):
the accumulators of a whole tile live in vector registers across a block of
examples and touch memory only at the start and the end.

Portability
-----------
Only target-independent IR is used: vector loads/stores, ``insertelement``
/ ``shufflevector`` (broadcast), ``select`` and the generic
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

The bit casts (:func:`bits_from_float`, :func:`float_from_bits`) and
:func:`cast_like` are single LLVM instructions: they let the exponential of
:mod:`fastbp._kernels` build 2^k from its exponent bits in plain, vectorisable
code, and round a float64 result to the caller's float type.

Summation order
---------------
For every element, ``tile_fma`` starts from the value already in ``G`` and
adds the examples one at a time in ascending order ``i0, i0+1, …``, one
rounded (fused) multiply-add each.  No reassociation: the result of a sum
over a range of examples does not depend on how the range is cut into
calls, nor on the tile shape, nor on the vector width.
"""

import os

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = [
    "VECTOR_BYTES",
    "bits_from_float",
    "cast_like",
    "choose_vector_bytes",
    "copy_vectors",
    "float_from_bits",
    "is_float32",
    "tile_fma",
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


def _literal_int(ty, name):
    if not isinstance(ty, types.IntegerLiteral):
        raise TypeError(f"tile_fma: {name} must be a compile-time integer constant, got {ty}")
    return ty.literal_value


def _elem_ptr(builder, data, row, ncol, col):
    """Pointer to element [row, col] of a C-contiguous 2-D array."""
    return builder.gep(data, [builder.add(builder.mul(row, ncol), col)])


@intrinsic(prefer_literal=True)
def tile_fma(typingctx, A, D, i0, i1, ja, jg, k, G, skip, nvec, kt, blend):
    """G[k+q, jg:jg+nvec·W] += Σ_{i0 ≤ i < i1} D[i, k+q] · A[i, ja:ja+nvec·W], q < kt.

    Arguments
    ---------
    A : 2-D C-contiguous float array (n, d)
    D : 2-D float array (n, t), same dtype, any strides.  When it is not
        C-contiguous (the transpose of a block of rows, say), its elements
        are addressed through its strides: the forward product reads the
        rows of X in place this way, as D = X[rows].T, instead of copying
        them transposed first.
    i0, i1 : int
        Examples [i0, i1).
    ja, jg, k : int
        First hidden unit of the tile as a column of A (ja) and of G (jg),
        and first output (column of D, row of G).
    G : 2-D C-contiguous float array (t, d), same dtype; updated in place.
    skip : int
        With ``blend=1``: the first ``skip`` lanes of the first vector
        (columns jg … jg+skip-1 of G) are left as they are, the rest are
        written (the tile overlaps columns done by an earlier tile, so that
        a row whose width is not a multiple of W needs no scalar
        remainder).  Must be in [0, W).  Ignored with ``blend=0``.
    nvec, kt, blend : compile-time int constants
        Vectors per row (width nvec·W, W = VECTOR_BYTES // itemsize elements), rows
        of G in the tile, and whether the first vector is blended.

    All of A[i0:i1, ja:ja+nvec·W], D[i0:i1, k:k+kt] and G[k:k+kt,
    jg:jg+nvec·W] must be in bounds; nothing is checked.

    The nvec × kt vector accumulators are loaded from G once, updated
    with one ``fmuladd`` per example (a vector row of A times a broadcast
    element of D), in example order, and stored once.
    """
    if not (isinstance(A, types.Array) and isinstance(D, types.Array) and isinstance(G, types.Array)):
        return None
    if not (A.dtype == D.dtype == G.dtype and A.dtype in (types.float32, types.float64)):
        return None
    if not (A.ndim == D.ndim == G.ndim == 2 and A.layout == G.layout == "C"):
        return None
    nv = _literal_int(nvec, "nvec")
    nk = _literal_int(kt, "kt")
    bl = _literal_int(blend, "blend")
    if nv < 1 or nk < 1 or bl not in (0, 1):
        raise ValueError("tile_fma: need nvec >= 1, kt >= 1, blend in {0, 1}")
    for ty in (i0, i1, ja, jg, k, skip):
        if not isinstance(ty, types.Integer):
            return None
    sig = types.void(A, D, i0, i1, ja, jg, k, G, skip, nvec, kt, blend)

    def codegen(context, builder, signature, args):
        aA, aD, ai0, ai1, aja, ajg, ak, aG, askip = args[:9]
        tys = signature.args
        intp = context.get_value_type(types.intp)

        def as_intp(val, ty):
            return context.cast(builder, val, ty, types.intp)

        i0v = as_intp(ai0, tys[2])
        i1v = as_intp(ai1, tys[3])
        jav = as_intp(aja, tys[4])
        jgv = as_intp(ajg, tys[5])
        kv = as_intp(ak, tys[6])
        skipv = as_intp(askip, tys[8])

        ftype = context.get_value_type(A.dtype)
        width = VECTOR_BYTES // context.get_abi_sizeof(ftype)
        itemsize = context.get_abi_sizeof(ftype)
        vtype = ir.VectorType(ftype, width)
        vptr = vtype.as_pointer()
        i32 = ir.IntType(32)
        splat_mask = ir.Constant(ir.VectorType(i32, width), [0] * width)
        undef_v = ir.Constant(vtype, ir.Undefined)

        def unpack(ary_ty, val):
            ary = context.make_array(ary_ty)(context, builder, val)
            shape = cgutils.unpack_tuple(builder, ary.shape, 2)
            return ary.data, shape[1]

        dA, ncA = unpack(A, aA)
        dG, ncG = unpack(G, aG)
        dD, ncD = unpack(D, aD)
        d_strided = D.layout != "C"
        if d_strided:  # byte strides; row k+q of G reads column k+q of D
            d_strides = cgutils.unpack_tuple(
                builder, context.make_array(D)(context, builder, aD).strides, 2
            )
            d_bytes = builder.bitcast(dD, ir.IntType(8).as_pointer())
            fptr = ftype.as_pointer()

        fname = "llvm.fmuladd.v%d%s" % (width, "f64" if itemsize == 8 else "f32")
        fmuladd = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vtype, [vtype, vtype, vtype]), fname
        )

        def vload(data, row, ncol, col):
            p = builder.bitcast(_elem_ptr(builder, data, row, ncol, col), vptr)
            return builder.load(p, align=itemsize)

        def vstore(val, data, row, ncol, col):
            p = builder.bitcast(_elem_ptr(builder, data, row, ncol, col), vptr)
            builder.store(val, p, align=itemsize)

        cols = [builder.add(jgv, ir.Constant(intp, v * width)) for v in range(nv)]
        acols = [builder.add(jav, ir.Constant(intp, v * width)) for v in range(nv)]
        rows = [builder.add(kv, ir.Constant(intp, q)) for q in range(nk)]

        if d_strided:  # where column k+q of D starts, for each q
            d_cols = [
                builder.gep(d_bytes, [builder.mul(rows[q], d_strides[1])]) for q in range(nk)
            ]
        # Load the accumulators.
        init = [[vload(dG, rows[q], ncG, cols[v]) for v in range(nv)] for q in range(nk)]
        pre = builder.basic_block
        hdr = builder.append_basic_block("tile.hdr")
        body = builder.append_basic_block("tile.body")
        done = builder.append_basic_block("tile.done")
        builder.branch(hdr)

        builder.position_at_end(hdr)
        iphi = builder.phi(intp, "i")
        iphi.add_incoming(i0v, pre)
        acc = [[builder.phi(vtype) for v in range(nv)] for q in range(nk)]
        for q in range(nk):
            for v in range(nv):
                acc[q][v].add_incoming(init[q][v], pre)
        builder.cbranch(builder.icmp_signed("<", iphi, i1v), body, done)

        builder.position_at_end(body)
        avec = [vload(dA, iphi, ncA, acols[v]) for v in range(nv)]
        if d_strided:
            offset = builder.mul(iphi, d_strides[0])
            dptrs = [builder.bitcast(builder.gep(d_cols[q], [offset]), fptr) for q in range(nk)]
        else:
            drow = _elem_ptr(builder, dD, iphi, ncD, kv)
            dptrs = [builder.gep(drow, [ir.Constant(intp, q)]) for q in range(nk)]
        new = []
        for q in range(nk):
            c = builder.load(dptrs[q], align=itemsize)
            b = builder.shuffle_vector(
                builder.insert_element(undef_v, c, ir.Constant(i32, 0)), undef_v, splat_mask
            )
            new.append([builder.call(fmuladd, [avec[v], b, acc[q][v]]) for v in range(nv)])
        inext = builder.add(iphi, ir.Constant(intp, 1))
        end = builder.basic_block
        builder.branch(hdr)
        iphi.add_incoming(inext, end)
        for q in range(nk):
            for v in range(nv):
                acc[q][v].add_incoming(new[q][v], end)

        # Store the accumulators (the first vector blended when asked).
        builder.position_at_end(done)
        if bl:
            i64v = ir.VectorType(intp, width)
            lanes = ir.Constant(i64v, list(range(width)))
            undef_i = ir.Constant(i64v, ir.Undefined)
            sk = builder.shuffle_vector(
                builder.insert_element(undef_i, skipv, ir.Constant(i32, 0)),
                undef_i,
                splat_mask,
            )
            keep_new = builder.icmp_signed(">=", lanes, sk)
        for q in range(nk):
            for v in range(nv):
                val = acc[q][v]
                if bl and v == 0:
                    cur = vload(dG, rows[q], ncG, cols[0])
                    val = builder.select(keep_new, val, cur)
                vstore(val, dG, rows[q], ncG, cols[v])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic(prefer_literal=True)
def copy_vectors(typingctx, A, row, col, buf, off, nvec):
    """buf[off:off+nvec·W] = A[row, col:col+nvec·W], as nvec vector loads/stores.

    A is a 2-D C-contiguous float array, buf a 1-D contiguous array of the
    same dtype, nvec a compile-time int constant, W = VECTOR_BYTES // itemsize.  No
    bounds are checked.  (A plain copy: the values are not changed.)
    """
    if not (isinstance(A, types.Array) and isinstance(buf, types.Array)):
        return None
    if not (A.dtype == buf.dtype and A.dtype in (types.float32, types.float64)):
        return None
    if not (A.ndim == 2 and buf.ndim == 1):
        return None
    nv = _literal_int(nvec, "nvec")
    for ty in (row, col, off):
        if not isinstance(ty, types.Integer):
            return None
    sig = types.void(A, row, col, buf, off, nvec)

    def codegen(context, builder, signature, args):
        aA, arow, acol, abuf, aoff = args[:5]
        tys = signature.args
        intp = context.get_value_type(types.intp)
        rowv = context.cast(builder, arow, tys[1], types.intp)
        colv = context.cast(builder, acol, tys[2], types.intp)
        offv = context.cast(builder, aoff, tys[4], types.intp)
        ftype = context.get_value_type(A.dtype)
        itemsize = context.get_abi_sizeof(ftype)
        width = VECTOR_BYTES // itemsize
        vptr = ir.VectorType(ftype, width).as_pointer()
        src = context.make_array(A)(context, builder, aA)
        ncol = cgutils.unpack_tuple(builder, src.shape, 2)[1]
        dst = context.make_array(buf)(context, builder, abuf)
        for v in range(nv):
            step = ir.Constant(intp, v * width)
            ps = _elem_ptr(builder, src.data, rowv, ncol, builder.add(colv, step))
            pd = builder.gep(dst.data, [builder.add(offv, step)])
            val = builder.load(builder.bitcast(ps, vptr), align=itemsize)
            builder.store(val, builder.bitcast(pd, vptr), align=itemsize)
        return context.get_dummy_value()

    return sig, codegen


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
def cast_like(typingctx, value, like):
    """``value`` converted (rounded to nearest) to the float type of ``like``."""
    if not (isinstance(value, types.Float) and isinstance(like, types.Float)):
        return None

    def codegen(context, builder, signature, args):
        return context.cast(builder, args[0], signature.args[0], signature.args[1])

    return like(value, like), codegen


@intrinsic
def is_float32(typingctx, value):
    """True when ``value`` is a float32 (a constant: LLVM folds branches on it)."""
    if not isinstance(value, types.Float):
        return None
    single = value == types.float32

    def codegen(context, builder, signature, args):
        return ir.Constant(ir.IntType(1), int(single))

    return types.boolean(value), codegen
