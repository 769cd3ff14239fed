"""The core's practical peak: a compiled loop of independent fused multiply-adds.

A share of NumPy's speed moves with NumPy's BLAS; a share of the peak says
how much is left.  The peak here does not depend on any BLAS:
:data:`CHAINS` vector accumulators at the CPU's vector width
(:data:`PEAK_VECTOR_BYTES`), each updated ``acc = acc·x + y`` by one fused
multiply-add per iteration.  The chains are independent, so a new FMA can
start every cycle on every FMA unit while earlier ones are in flight: with
FMA latency L cycles and P units, L·P chains keep them all busy (4 × 2 on
recent x86 cores), and :data:`CHAINS` = 12 leaves room while fitting, with
the two broadcast operands, in the 16 registers of AVX2 (AVX-512 has 32).

The loop is emitted as LLVM IR on generic vector types with
``llvm.fmuladd`` (the style of :mod:`fastbp._simd`), because LLVM does not
turn a scalar loop over an accumulator array into register-resident vector
chains: it would load and store the array every iteration and time the L1
cache instead.  The accumulators are written out and summed at the end, so
the optimiser cannot delete the loop, and with x = 1/2, y = 1 they converge
to 2 (no overflow, no subnormals, whatever the count); the sum after a small
count is exact and checked by the tests.

Used only by ``fastbp bench`` (:func:`peak_gflops`), never by fastbp's own
functions.  2 floating-point operations are counted per lane per FMA.
"""

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .._jit import kernel, parallel_kernel
from .._simd import choose_vector_bytes
from .timing import interleaved_medians, thread_limits

__all__ = ["CHAINS", "PEAK_VECTOR_BYTES", "fma_chains_sum", "peak_gflops"]

#: Independent vector accumulators of the FMA loop (see the module's docstring).
CHAINS = 12

#: Bytes per vector of the loop: the CPU's widest (64 with AVX-512, else 32),
#: whatever FASTBP_VECTOR_BYTES asks of fastbp's own tiles.
PEAK_VECTOR_BYTES = choose_vector_bytes(environ={})

#: Iterations of one timed call: 2^20 · CHAINS vectors, about 4 ms at 50 GFLOP/s.
ITERATIONS = 1 << 20

#: The loop's operands: acc → acc·X + Y converges to Y / (1 − X) = 2.
X_FACTOR = 0.5
Y_ADDEND = 1.0


def lanes(dtype):
    """Lanes per vector of the loop in ``dtype``: :data:`PEAK_VECTOR_BYTES` / itemsize."""
    return PEAK_VECTOR_BYTES // np.dtype(dtype).itemsize


@intrinsic
def _fma_chains(typingctx, start, out, n_iterations, x, y):
    """Write to ``out`` the CHAINS vectors of ``start`` after ``n_iterations`` FMA steps.

    Each step is acc = fmuladd(acc, x, y) on every accumulator.

    ``start`` and ``out`` are 1-D C-contiguous arrays of one float dtype,
    CHAINS · W elements each (W = PEAK_VECTOR_BYTES // itemsize), ``x`` and
    ``y`` scalars (cast to that dtype).  The accumulators live in registers
    (loop phis) for the whole loop and touch memory only at its ends.
    Nothing is checked: the arrays must hold CHAINS · W elements.
    """
    arrays_ok = all(
        isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" for a in (start, out)
    )
    if not arrays_ok or start.dtype != out.dtype:
        return None
    if start.dtype not in (types.float32, types.float64):
        return None
    if not isinstance(n_iterations, types.Integer):
        return None
    if not all(isinstance(s, (types.Float, types.Integer)) for s in (x, y)):
        return None
    dtype = start.dtype

    def codegen(context, builder, signature, args):
        float_type = context.get_value_type(dtype)
        itemsize = context.get_abi_sizeof(float_type)
        width = PEAK_VECTOR_BYTES // itemsize
        vector = ir.VectorType(float_type, width)
        intp = context.get_value_type(types.intp)
        count = context.cast(builder, args[2], signature.args[2], types.intp)

        def broadcast(value, value_type):
            scalar = context.cast(builder, value, value_type, dtype)
            undef = ir.Constant(vector, ir.Undefined)
            first = builder.insert_element(undef, scalar, ir.Constant(ir.IntType(32), 0))
            zeros = ir.Constant(ir.VectorType(ir.IntType(32), width), [0] * width)
            return builder.shuffle_vector(first, undef, zeros)

        x_vector = broadcast(args[3], signature.args[3])
        y_vector = broadcast(args[4], signature.args[4])
        fmuladd = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(vector, [vector] * 3),
            f"llvm.fmuladd.v{width}{'f64' if itemsize == 8 else 'f32'}",
        )
        source = builder.bitcast(
            context.make_array(start)(context, builder, args[0]).data, vector.as_pointer()
        )
        target = builder.bitcast(
            context.make_array(out)(context, builder, args[1]).data, vector.as_pointer()
        )
        first = [
            builder.load(builder.gep(source, [ir.Constant(intp, k)]), align=itemsize)
            for k in range(CHAINS)
        ]
        before = builder.block
        loop = builder.append_basic_block("fma_chains.loop")
        done = builder.append_basic_block("fma_chains.done")
        zero = ir.Constant(intp, 0)
        builder.cbranch(builder.icmp_signed(">", count, zero), loop, done)

        builder.position_at_end(loop)
        index = builder.phi(intp)
        chains = [builder.phi(vector) for _ in range(CHAINS)]
        updated = [builder.call(fmuladd, [chain, x_vector, y_vector]) for chain in chains]
        following = builder.add(index, ir.Constant(intp, 1))
        index.add_incoming(zero, before)
        index.add_incoming(following, loop)
        for chain, start_value, new_value in zip(chains, first, updated):
            chain.add_incoming(start_value, before)
            chain.add_incoming(new_value, loop)
        builder.cbranch(builder.icmp_signed("<", following, count), loop, done)

        builder.position_at_end(done)
        finals = [builder.phi(vector) for _ in range(CHAINS)]  # phis first, then the stores
        for k, (final, start_value, new_value) in enumerate(zip(finals, first, updated)):
            final.add_incoming(start_value, before)
            final.add_incoming(new_value, loop)
            builder.store(final, builder.gep(target, [ir.Constant(intp, k)]), align=itemsize)
        return context.get_dummy_value()

    return types.void(start, out, n_iterations, x, y), codegen


def _fma_chains_python(start, out, n_iterations, x, y):
    """The loop of :func:`_fma_chains` in NumPy (the JIT off): the same values, unfused."""
    accumulators = start.copy()
    x, y = start.dtype.type(x), start.dtype.type(y)
    for _ in range(n_iterations):
        accumulators = accumulators * x + y
    out[:] = accumulators


if numba.config.DISABLE_JIT:
    _fma_chains = _fma_chains_python  # noqa: F811 - intrinsics run only in compiled code


@kernel
def _fma_loop(start, out, n_iterations, x, y):
    """One thread's FMA loop (:func:`_fma_chains`); the sum of its accumulators."""
    _fma_chains(start, out, n_iterations, x, y)
    return out.sum()


@parallel_kernel
def _fma_loop_threads(starts, outs, n_iterations, x, y):
    """One FMA loop per row of ``starts`` (one per thread); the sum of all accumulators."""
    for p in prange(starts.shape[0]):
        _fma_chains(starts[p], outs[p], n_iterations, x, y)
    return outs.sum()


def fma_chains_sum(dtype, n_iterations, n_threads=1, start=None):
    """Run the FMA loop on ``n_threads`` threads; the sum of every accumulator after it.

    Parameters
    ----------
    dtype : str or numpy dtype
        float32 or float64.
    n_iterations : int
        FMAs per accumulator lane.
    n_threads : int, default 1
        Loops run side by side, one per Numba thread (the caller sets
        Numba's thread count); 1 runs the serial kernel.
    start : numpy.ndarray, optional
        (n_threads, CHAINS · lanes) starting values; zeros by default.

    Returns
    -------
    float
        Σ over all lanes of acc after ``n_iterations`` of acc ← acc·½ + 1:
        Σ (start·2⁻ⁿ + 2 − 2¹⁻ⁿ), exact for small counts.
    """
    dtype = np.dtype(dtype)
    size = CHAINS * lanes(dtype)
    start = np.zeros((n_threads, size), dtype) if start is None else start.astype(dtype)
    out = np.empty_like(start)
    x, y = dtype.type(X_FACTOR), dtype.type(Y_ADDEND)
    if n_threads == 1:
        return float(_fma_loop(start[0], out[0], n_iterations, x, y))
    return float(_fma_loop_threads(start, out, n_iterations, x, y))


def peak_gflops(dtype, n_threads=1, rounds=5, n_iterations=ITERATIONS):
    """The FMA loop's GFLOP/s on ``n_threads`` threads (one loop each), median of ``rounds``.

    Timed with :func:`.timing.interleaved_medians` under
    :func:`.timing.thread_limits`; 2 flops per lane per FMA, every thread's
    loop counted.  The first call (untimed) compiles the loop.
    """
    flops = 2.0 * n_iterations * CHAINS * lanes(dtype) * n_threads
    with thread_limits(n_threads, blas=False):
        seconds = interleaved_medians(
            {"fma": lambda: fma_chains_sum(dtype, n_iterations, n_threads)},
            rounds,
            min_time=0.02,
        )["fma"]
    return flops / seconds / 1e9 if seconds > 0 else float("nan")
