"""Every tuning constant of fastbp, in one place.

Each constant changes speed or memory only, never the bits of a result: the
equality tests hold every result to the same bits (or the same rounding
bound) whatever these values are.  Each says what it governs and how it was
chosen; the measurements behind the measured ones, and how to repeat them,
are in docs/tuning.md.  The register tiles' vector width is not here: it is
fixed at import from the CPU (:data:`fastbp._simd.VECTOR_BYTES`).
"""

__all__ = [
    "COST_TERMS_BLOCK",
    "DELTA_H_BLOCK_HIDDEN",
    "ENGINE_BLOCK_I",
    "ENGINE_BLOCK_J",
    "ENGINE_BLOCK_K",
    "ENGINE_IN_PLACE_MAX_BYTES",
    "ENGINE_IN_PLACE_MAX_ROWS",
    "FORWARD_PASS_MAX_INPUTS",
    "GRAD_W_H_T_BLOCK_HIDDEN",
    "GRAD_W_H_T_BLOCK_INPUTS",
    "GRAD_W_OUT_MAX_CHUNKS",
    "GRAD_W_OUT_MAX_PARTIAL_BYTES",
    "GRAD_W_OUT_MIN_CHUNK_EXAMPLES",
    "GRAD_W_OUT_MIN_SHARED_MULTIPLY_ADDS",
    "NOISE_BUFFER_ELEMENTS",
    "SHARED_STEP_MIN_MULTIPLY_ADDS",
    "SHARED_STEP_PACK_COPY_BYTES",
    "STEP_BLOCK_EXAMPLES",
    "STEP_MAX_CHUNKS",
    "STEP_MAX_PARTIAL_BYTES",
    "STEP_MIN_CHUNK_EXAMPLES",
    "TILE_ROWS",
    "WEIGHTS_IN_PLACE_MAX_EXAMPLES",
    "WORKSPACE_MAX_KEPT_BYTES",
]

# --------------------------------------------------------------------------
# The register-tile engine (fastbp._tiles): G[k, j] += Σ_i D[i, k] · A[i, j]
# --------------------------------------------------------------------------

#: Rows of G in one register tile (and the forward product's row groups), set by register
#: count: 2 vectors × 6 = 12 accumulators leave 4 of AVX2's 16 registers for A and D.
TILE_ROWS = 6
#: Rows i per block of the engine: rows of a packed block of A and of a block of D.
#: No measurement recorded.
ENGINE_BLOCK_I = 256
#: Columns j per block of the engine: columns of a packed block of A.  No measurement recorded.
ENGINE_BLOCK_J = 256
#: Rows k of G per block of the engine, 8 tiles of :data:`TILE_ROWS`; D is read in place, not
#: copied, for K ≤ 48.  No measurement recorded.
ENGINE_BLOCK_K = 48
#: The tile engine reads A's rows in place instead of packing each block of A into panels
#: first where a block of A (rows × columns × itemsize) takes at most this many bytes (it
#: stays in a 32 KiB L1 data cache) ...
ENGINE_IN_PLACE_MAX_BYTES = 32 * 1024
#: ... or four times as many where G has at most this many rows (each panel is then read by
#: two tiles at most).  Both measured, see docs/tuning.md.
ENGINE_IN_PLACE_MAX_ROWS = 12

# --------------------------------------------------------------------------
# The fused step (fastbp.backprop, sgd_epoch, private training)
# --------------------------------------------------------------------------

#: Examples per block of the fused step: a tile of Xᵀ δ_h sums 192 examples per load and store of
#: the gradient; (192, d) blocks stay in L2 for d up to a few hundred.  No measurement recorded.
STEP_BLOCK_EXAMPLES = 192
#: Hidden units (columns) per tile of the loop nest of δ_out W_outᵀ
#: (:func:`fastbp._kernels_hidden._matmul_accumulate`), which the fused step runs only where d is
#: under one vector (the register tiles do wider ones).  No measurement recorded.
DELTA_H_BLOCK_HIDDEN = 128
#: Most inputs per pass of the forward product on packed weights (m cut into equal passes; each
#: W_h panel runs over all the rows' inputs of a pass): m = 784 in one pass matched or beat
#: shallower passes when measured (with the rows then in six-row groups), see docs/tuning.md.
FORWARD_PASS_MAX_INPUTS = 800
#: Fewer examples than this in a step, and its forward products read W_h and W_out (each at
#: least one vector wide) in place instead of packing them into panels first: few row tiles
#: read each panel, so packing costs more than it saves.  Measured, see docs/tuning.md.
WEIGHTS_IN_PLACE_MAX_EXAMPLES = 256
# Xᵀ δ_h has two orientations, with the same bits: one chunk accumulates (m, d), δ_h packed and
# X read in place, with no transposition at the end; several chunks accumulate (d, m), X packed
# and δ_h read in place, summed and transposed once per call.  Both measured, see docs/tuning.md.
#: Inputs per packed block of X when Xᵀ δ_h is accumulated as (d, m).  No measurement recorded.
GRAD_W_H_T_BLOCK_INPUTS = 128
#: Hidden units per block of δ_h when Xᵀ δ_h is accumulated as (d, m): δ_h is read in place,
#: not copied, for d ≤ 128.  No measurement recorded.
GRAD_W_H_T_BLOCK_HIDDEN = 128

# Chunks of examples for threads (fastbp.default_backprop_chunks): the largest power of two
# (so 2 or 4 threads get equal shares) that the three limits below allow.  No measurement
# recorded for these three.
#: Fewest examples per chunk of the fused step: fewer than 2 × 128 examples make one chunk.
STEP_MIN_CHUNK_EXAMPLES = 128
#: Most chunks of the fused step, whatever n.
STEP_MAX_CHUNKS = 16
#: Most bytes of all the fused step's chunk partial gradients together (64 MiB).
STEP_MAX_PARTIAL_BYTES = 64 * 2**20
#: Largest W_h panel copy each thread packs for itself when one chunk is shared (half a 2 MiB L2),
#: so no core reads panels another has just written; measured, see docs/tuning.md.
SHARED_STEP_PACK_COPY_BYTES = 2**20
#: Fewest multiply-adds of X W_h (n·m·d) for sharing one chunk among threads; below it the serial
#: kernel runs (same bits).  Measured on 2 threads against 1, see docs/tuning.md.
SHARED_STEP_MIN_MULTIPLY_ADDS = 2**18
#: Largest step workspace kept between calls, per Python thread and dtype (larger: allocated per
#: call).  No measurement recorded.
WORKSPACE_MAX_KEPT_BYTES = 64 * 2**20

# --------------------------------------------------------------------------
# The output layer's kernels (fastbp.grad_W_out, fastbp.cost)
# --------------------------------------------------------------------------

#: Fewest examples per chunk of grad_W_out_blocked's threads: n // 4096 chunks at most (one chunk
#: below 8192 examples).  No measurement recorded.
GRAD_W_OUT_MIN_CHUNK_EXAMPLES = 4096
#: Most chunks of grad_W_out_blocked, whatever n.
GRAD_W_OUT_MAX_CHUNKS = 16
#: Most bytes of all grad_W_out_blocked's chunk partial (d, t) gradients together (64 MiB).
GRAD_W_OUT_MAX_PARTIAL_BYTES = 64 * 2**20
#: Fewest multiply-adds (n·d·t) for sharing one chunk of grad_W_out_blocked among threads, block
#: of hidden units by block (same bits); below it one thread runs it.  Measured on 2 threads
#: against 1, see docs/tuning.md.
GRAD_W_OUT_MIN_SHARED_MULTIPLY_ADDS = 2**24
#: Terms per pass of :func:`fastbp._kernels._cost`: 8 KiB of float64, kept in L1 between the two
#: loops of :func:`fastbp._kernels._cost_terms`.  Chosen by that size; no measurement recorded.
COST_TERMS_BLOCK = 1024

# --------------------------------------------------------------------------
# Private training
# --------------------------------------------------------------------------

#: Most float64 values (noise, or without noise the batches' uniform draws)
#: :func:`fastbp.dp_sgd_epoch` draws ahead of one compiled call (16 MiB): a longer epoch is run
#: as several calls, with the same draws and the same bits.
NOISE_BUFFER_ELEMENTS = 2**21
