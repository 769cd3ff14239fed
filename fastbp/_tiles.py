"""The register-tile engine: G[k, j] += Σ_i D[i, k] · A[i, j], packed and blocked.

Every large product in fastbp runs here: ∂J/∂W_out (``A = A_h``,
``D = δ_out``, ``G = (A_hᵀ δ_out)ᵀ``), the forward product
(``A = W_h``, ``D = X_blockᵀ``, ``G = Z``) and Xᵀ δ_h in either
orientation.  The engine names its operands A, D and G; each caller says
what they are.

:func:`accumulate` cuts the rows i, the columns j and the rows k of G into
blocks, packs each block of A into panels (:func:`panel_layout` defines
them once, :func:`pack_panels` fills them) and runs the register tiles of
:func:`tiles_for_panel` over them.  Each tile is one call of
:func:`fastbp._simd.tile_fma`: every element of G gets one fused
multiply-add per row i, in order of i, whatever the block sizes, tile
shapes or vector width, so all of them change the speed and never the bits.

No checks happen here: callers pass C-contiguous A and G of one float dtype.
"""

from ._arrays import matrix_view, vector_view
from ._jit import CONTRACT, kernel
from ._simd import VECTOR_BYTES, copy_vectors, larger, smaller, tile_fma
from ._tuning import ENGINE_IN_PLACE_MAX_BYTES, ENGINE_IN_PLACE_MAX_ROWS, TILE_ROWS


@kernel(inlined=True)
def tile_two_vectors(A, D, i0, i1, g_col, g_row, rows, G, fresh, a_col):
    """One register tile two vectors wide and ``rows`` (1…6) rows of G tall.

    With ``fresh`` the tile is written, not added to; its columns of A
    start at ``a_col`` (:func:`tile_fma`).
    """
    if rows == 6:
        tile_fma(A, D, i0, i1, g_col, g_row, G, 0, fresh, a_col, 2, 6, 0)
    elif rows == 5:
        tile_fma(A, D, i0, i1, g_col, g_row, G, 0, fresh, a_col, 2, 5, 0)
    elif rows == 4:
        tile_fma(A, D, i0, i1, g_col, g_row, G, 0, fresh, a_col, 2, 4, 0)
    elif rows == 3:
        tile_fma(A, D, i0, i1, g_col, g_row, G, 0, fresh, a_col, 2, 3, 0)
    elif rows == 2:
        tile_fma(A, D, i0, i1, g_col, g_row, G, 0, fresh, a_col, 2, 2, 0)
    else:
        tile_fma(A, D, i0, i1, g_col, g_row, G, 0, fresh, a_col, 2, 1, 0)


@kernel(inlined=True)
def tile_one_vector(A, D, i0, i1, g_col, g_row, rows, G, skip, fresh, a_col):
    """One register tile one vector wide, ``rows`` (1…6) rows of G tall.

    The first ``skip`` columns of the tile are left as they are (an
    overlapping tile at the end of a row, see :func:`tile_fma`); with
    ``skip`` = 0 every column is written.  Always blending costs one load
    and one select per accumulator per block, and halves the number of
    specialised tiles to compile.
    """
    if rows == 6:
        tile_fma(A, D, i0, i1, g_col, g_row, G, skip, fresh, a_col, 1, 6, 1)
    elif rows == 5:
        tile_fma(A, D, i0, i1, g_col, g_row, G, skip, fresh, a_col, 1, 5, 1)
    elif rows == 4:
        tile_fma(A, D, i0, i1, g_col, g_row, G, skip, fresh, a_col, 1, 4, 1)
    elif rows == 3:
        tile_fma(A, D, i0, i1, g_col, g_row, G, skip, fresh, a_col, 1, 3, 1)
    elif rows == 2:
        tile_fma(A, D, i0, i1, g_col, g_row, G, skip, fresh, a_col, 1, 2, 1)
    else:
        tile_fma(A, D, i0, i1, g_col, g_row, G, skip, fresh, a_col, 1, 1, 1)


@kernel(fastmath=CONTRACT, linked=True)
def tile_scalar(A, D, i0, i1, j0, j1, g_col, g_row, rows, G, fresh):
    """The same update as a register tile, one element at a time.

    Only for a column range narrower than one vector (d or ``block_d``
    below W).  Each element is the same left-to-right chain of fused
    multiply-adds over the examples as in :func:`tile_fma`, from zero
    where ``fresh``.
    """
    zero = G.dtype.type(0.0)
    for q in range(g_row, g_row + rows):
        for jj in range(j0, j1):
            s = G[q, g_col + jj - j0]
            s = zero if fresh else s  # a select: one loop for both
            for i in range(i0, i1):
                s += D[i, q] * A[i, jj]
            G[q, g_col + jj - j0] = s


@kernel
def pack_panels(A, i_block, nb, j_block, width, w, panels):
    """Copy A[i_block:i_block+nb, j_block:j_block+width] into the panels of :func:`panel_layout`.

    Each panel holds its columns for all nb rows, row after row (nb × its
    width, contiguous), so a tile reads its strip of A sequentially; A is
    read row by row.  Needs width ≥ w.  The layout is :func:`panel_layout`'s,
    written out here so that no division runs per row (this copy is on the
    hot path); a disagreement between the two would give wrong products,
    which the equality tests catch.
    """
    n2 = width // (2 * w)
    rest = width - n2 * 2 * w
    for r in range(nb):
        i = i_block + r
        for p in range(n2):
            copy_vectors(A, i, j_block + p * 2 * w, panels, p * nb * 2 * w + r * 2 * w, 2)
        offset = n2 * nb * 2 * w
        if rest >= w:
            copy_vectors(A, i, j_block + n2 * 2 * w, panels, offset + r * w, 1)
            offset += nb * w
        if rest != 0 and rest != w:
            copy_vectors(A, i, j_block + width - w, panels, offset + r * w, 1)


@kernel(linked=True)
def pack_block(D, i_block, nb, g_first, g_count, buffer):
    """Copy D[i_block:i_block+nb, g_first:g_first+g_count] into buffer (nb × g_count)."""
    for r in range(nb):
        for e in range(g_count):
            buffer[r * g_count + e] = D[i_block + r, g_first + e]


@kernel(linked=True, arithmetic=True)
def panel_count(width, w):
    """How many panels :func:`panel_layout` cuts ``width`` (≥ w) columns into."""
    n2 = width // (2 * w)
    rest = width - n2 * 2 * w
    return n2 + (1 if rest >= w else 0) + (1 if rest % w != 0 else 0)


@kernel(linked=True, arithmetic=True)
def panel_layout(width, w, panel):
    """(vectors, first column, skip) of panel number ``panel`` of a ``width``-column block.

    The one definition of the panels (:func:`pack_panels` fills them, the
    tiles read them): full panels of 2W columns, then one of W if that many
    are left, then one W-wide panel overlapping the previous columns for
    the last (rest mod W), whose first ``skip`` columns its tile leaves
    alone.  Columns count from the block's first.
    """
    n2 = width // (2 * w)
    rest = width - n2 * 2 * w
    if panel < n2:
        return 2, panel * 2 * w, 0
    if panel == n2 and rest >= w:
        return 1, n2 * 2 * w, 0
    return 1, width - w, w - (rest % w)


@kernel(refcounted=False)
def tiles_for_panel(P, D_block, nb, nvec, g_col, skip, g_first, g_count, G, fresh, a_col):
    """All register tiles of one panel against G[g_first : g_first+g_count].

    The panel is P[:, a_col : a_col + nvec·W]: a packed panel P (nb × nvec·W,
    ``a_col`` = 0) or columns of a matrix P read in place.  The rows go in
    tiles of equal height, at most :data:`fastbp._tuning.TILE_ROWS`.  With
    ``fresh`` the panel's columns of those rows are written, not added to
    (:func:`fastbp._simd.tile_fma`).
    The twelve tiles (:func:`tile_two_vectors`, :func:`tile_one_vector`) are
    inlined here, so a tile costs no call.
    """
    n_tiles = (g_count + TILE_ROWS - 1) // TILE_ROWS
    low = g_count // n_tiles  # tiles of low or low + 1 rows
    n_high = g_count - low * n_tiles
    row = 0
    for q in range(n_tiles):
        rows = low + 1 if q < n_high else low
        # D_block's column `row` goes with row g_first + row of G: G is shifted instead.
        if nvec == 2:
            tile_two_vectors(P, D_block, 0, nb, g_col, row, rows, G[g_first:], fresh, a_col)
        else:
            tile_one_vector(P, D_block, 0, nb, g_col, row, rows, G[g_first:], skip, fresh, a_col)
        row += rows


@kernel(linked=True, arithmetic=True)
def scratch_size(n_rows, N, K, block_n, block_d, block_t, w):
    """Elements of :func:`accumulate`'s ``scratch`` for ``n_rows`` rows, A (·, N) and D (·, K).

    One block of A in panels, bn · (min(block_d, N) + W) with bn =
    min(block_n, n_rows), and where D is copied (``block_t`` < K) one
    block of it, bn · block_t.
    """
    bn = smaller(block_n, larger(n_rows, 0))
    return bn * (smaller(block_d, N) + w) + (bn * block_t if block_t < K else 0)


@kernel(linked=True, refcounted=False)
def accumulate(A, D, i_start, i_stop, G, block_n, block_d, block_t, scratch, fresh):
    """G[k, j] += Σ_{i_start ≤ i < i_stop} D[i, k] · A[i, j], for A (n, N), D (n, K), G (K, N).

    :func:`accumulate_columns` over all N columns (``=`` instead of ``+=`` with ``fresh``).
    """
    accumulate_columns(
        A, D, i_start, i_stop, G, 0, A.shape[1], block_n, block_d, block_t, scratch, fresh
    )


@kernel(refcounted=False)
def accumulate_columns(
    A, D, i_start, i_stop, G, j_start, j_stop, block_n, block_d, block_t, scratch, fresh
):
    """G[k, j] += Σ_{i_start ≤ i < i_stop} D[i, k] · A[i, j] for the columns j_start ≤ j < j_stop.

    A (n, N), D (n, K), G (K, N).  The column blocks start at ``j_start``:
    disjoint column ranges are disjoint elements of G, so they can go to
    different threads, each with its own ``scratch``, with the bits of one
    call over all columns (each element is the same chain whatever the blocks).

    A row of A and a row of G run the same way (over j, unit stride).
    Blocks: rows i in blocks of ``block_n``, columns j in blocks of
    ``block_d``, rows k of G in blocks of ``block_t``.  Each A block is
    copied (read sequentially) into panels of 2W columns (W elements fill
    one vector of :data:`fastbp._simd.VECTOR_BYTES`: 4 float64 or 8
    float32 in 32 bytes, twice as many in 64), each panel contiguous; a
    small block (:data:`fastbp._tuning.ENGINE_IN_PLACE_MAX_BYTES`, or four
    times that for at most :data:`fastbp._tuning.ENGINE_IN_PLACE_MAX_ROWS`
    rows of G) is read in place instead, the same panels as columns of A.
    Register tiles of 2 vectors × up to :data:`fastbp._tuning.TILE_ROWS` rows of G then
    run over the block's rows i with their accumulators in vector
    registers (:func:`fastbp._simd.tile_fma`), reading a panel and D's
    block sequentially from cache.  A block width that is not a multiple
    of W ends with one vector-wide panel that overlaps the previous
    columns, whose tile writes only its new ones; a block narrower than W
    is done element by element.

    Every element of G is updated by one fused multiply-add per row i in
    ascending order, starting from its value on entry, whatever the block
    sizes: the order of the seed's outer-product loop.  With ``fresh``
    the sums start from zero instead (the first block of rows i writes
    its tiles whatever G holds): the bits of the same call on a G of
    zeros, with no pass to zero it first.

    ``D`` may have any strides; with ``block_t`` ≥ t it is read in
    place (no copy), otherwise each block is copied into a contiguous
    buffer first.  Every caller passes it as a view of any layout
    (``D[:, 0:t]``, typed "A" even where D is C-contiguous), and the packed
    block of D is viewed the same way, so the tile engine compiles once per
    dtype instead of once per layout.

    ``scratch`` (1-D, A's dtype, at least :func:`scratch_size` elements)
    holds the packed blocks; what it holds on entry does not matter.
    Callers that run many small products keep one between them: a fresh
    buffer each time costs page faults wherever the C allocator hands freed
    memory straight back to the system (as Dask's workers set it up to).
    """
    d = j_stop
    t = D.shape[1]
    w = VECTOR_BYTES // A.itemsize
    n_rows = larger(i_stop - i_start, 0)
    bn = smaller(block_n, n_rows)
    panels_size = bn * (smaller(block_d, larger(j_stop - j_start, 0)) + w)
    panels = scratch[:panels_size]
    buffer = scratch[panels_size : panels_size + (bn * block_t if block_t < t else 0)]
    # A's rows read in place rather than packed first where a block of A is small,
    # four times larger where each panel is read by two tiles at most (few rows of G).
    block_bytes = bn * smaller(block_d, larger(j_stop - j_start, 0)) * A.itemsize
    in_place = block_bytes <= ENGINE_IN_PLACE_MAX_BYTES or (
        t <= ENGINE_IN_PLACE_MAX_ROWS and block_bytes <= 4 * ENGINE_IN_PLACE_MAX_BYTES
    )
    n_cols = A.shape[1]
    source = vector_view(A) if in_place else panels
    # With ``fresh`` and no rows, one empty block runs: its tiles write the zeros.
    blocks_stop = i_stop if n_rows > 0 or not fresh else i_start + 1
    for i_block in range(i_start, blocks_stop, block_n):
        i_end = larger(smaller(i_block + block_n, i_stop), i_block)
        nb = i_end - i_block
        first_rows = fresh and i_block == i_start
        for j_block in range(j_start, d, block_d):
            j_end = smaller(j_block + block_d, d)
            width = j_end - j_block
            if width < w:
                for g_first in range(0, t, block_t):
                    g_count = smaller(block_t, t - g_first)
                    tile_scalar(
                        A,
                        D,
                        i_block,
                        i_end,
                        j_block,
                        j_end,
                        j_block,
                        g_first,
                        g_count,
                        G,
                        first_rows,
                    )
                continue
            if not in_place:
                pack_panels(A, i_block, nb, j_block, width, w, panels)
            n_panels = panel_count(width, w)
            for g_first in range(0, t, block_t):
                g_count = smaller(block_t, t - g_first)
                if g_count == t:  # D's block read in place
                    D_block = D[i_block:i_end]
                else:
                    pack_block(D, i_block, nb, g_first, g_count, buffer)
                    D_block = matrix_view(buffer, 0, nb, g_count)[:, 0:g_count]
                # One call site for every panel: each call site of
                # tiles_for_panel is a full copy of its 18 unrolled tiles,
                # so this keeps compile time down.
                offset = 0
                for p in range(n_panels):
                    nvec, first_column, skip = panel_layout(width, w, p)
                    first_column += j_block
                    size = nb * nvec * w
                    # Selects, not a branch: one copy of the loop for both sources of A.
                    P = matrix_view(
                        source,
                        i_block * n_cols if in_place else offset,
                        nb,
                        n_cols if in_place else nvec * w,
                    )
                    a_col = first_column if in_place else 0
                    tiles_for_panel(
                        P, D_block, nb, nvec, first_column, skip, g_first, g_count, G, first_rows,
                        a_col,
                    )  # fmt: skip
                    offset += size
