"""Check that the equality tests catch the bugs they exist to catch.

Run from the repository root::

    python tests/mutation_check.py

Each mutation below plants one classic loop bug in a copy of the package
(swapped indices, a dropped last partial block, an off-by-one in a tail
loop, ...), runs the equality tests against the copy, and reports whether
at least one test failed ("caught") or all passed ("MISSED").  Mutants run
with NUMBA_BOUNDSCHECK=1 so that an out-of-range index fails a test with an
IndexError instead of reading stray memory.  Exit status 1 if any mutation
is missed.  This is a developer's check, not part of the test suite (it
takes a few minutes).
"""

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
KERNELS = "fastbp/_kernels.py"
TILES = "fastbp/_tiles.py"
HIDDEN = "fastbp/_kernels_hidden.py"
STEP = "fastbp/_kernels_step.py"
SCRATCH = "fastbp/_scratch.py"

# The tests that guard the three ways; the mutants must fail at least one.
TESTS = [
    "tests/test_grad_W_out.py",
    "tests/test_properties.py",
    "tests/test_gradcheck.py",
]

# The tests that guard the fused step (for the mutants in HIDDEN, STEP and SCRATCH).
FUSED_TESTS = ["tests/test_backprop.py"]

# (what the bug is, file, exact text, replacement[, tests instead of TESTS])
MUTATIONS = [
    (
        "outer: swap the loop indices j and k in the product",
        KERNELS,
        "grad[j, k] += a * delta_out[i, k]",
        "grad[j, k] += A_h[i, k] * delta_out[i, j]",
    ),
    (
        "outer: off-by-one, the last example left out",
        KERNELS,
        "    for i in range(n):\n        for j in range(d):\n            a = A_h[i, j]",
        "    for i in range(n - 1):\n        for j in range(d):\n            a = A_h[i, j]",
    ),
    (
        "blocked: drop the last partial block of examples",
        TILES,
        "for i_block in range(i_start, i_stop, block_n):",
        "for i_block in range(i_start, i_stop - block_n + 1, block_n):",
    ),
    (
        "blocked: drop the last partial block of hidden units",
        TILES,
        "for j_block in range(0, d, block_d):",
        "for j_block in range(0, d - block_d + 1, block_d):",
    ),
    (
        "blocked: drop the last partial block of outputs",
        TILES,
        "for g_first in range(0, t, block_t):\n"
        "                g_count = min(block_t, t - g_first)\n"
        "                if g_count == t:",
        "for g_first in range(0, t - block_t + 1, block_t):\n"
        "                g_count = min(block_t, t - g_first)\n"
        "                if g_count == t:",
    ),
    (
        "blocked: off-by-one in the overlapping tail panel (one column too few)",
        TILES,
        "return 1, width - w, w - (rest % w)",
        "return 1, width - w, w - (rest % w) + 1",
    ),
    (
        "blocked: the last partial panel of hidden units left out",
        TILES,
        "(1 if rest % w != 0 else 0)",
        "(1 if rest > w else 0)",
    ),
    (
        "blocked: off-by-one in the scalar tail loop over examples",
        TILES,
        "for i in range(i0, i1):\n                s += D[i, q] * A[i, jj]",
        "for i in range(i0, i1 - 1):\n                s += D[i, q] * A[i, jj]",
    ),
    (
        "blocked: swap the loop indices jj and q in the scalar tail",
        TILES,
        "s += D[i, q] * A[i, jj]",
        "s += D[i, jj] * A[i, q]",
    ),
    (
        "blocked: uneven output tiles lose their extra output",
        TILES,
        "rows = low + 1 if q < n_high else low",
        "rows = low",
    ),
    (
        "blocked: the last chunk stops one example short",
        KERNELS,
        "return (chunk * n) // n_chunks, ((chunk + 1) * n) // n_chunks",
        "return (chunk * n) // n_chunks, ((chunk + 1) * n) // n_chunks - (chunk == n_chunks - 1)",
    ),
    (
        "blocked: the last chunk's partial gradient is not added",
        KERNELS,
        "    for c in range(n_chunks):\n        for j in range(d):",
        "    for c in range(n_chunks - 1):\n        for j in range(d):",
    ),
    (
        "bias: the column sums skip the first example",
        KERNELS,
        "    for i in range(n):\n        for k in range(t):\n            out[k] += delta_out[i, k]",
        "    for i in range(1, n):\n"
        "        for k in range(t):\n"
        "            out[k] += delta_out[i, k]",
    ),
    (
        "fused: a chunk's partial Xᵀ δ_h is not zeroed before it accumulates",
        STEP,
        "    grad_W_h[:] = 0\n",
        "",
        FUSED_TESTS,
    ),
    (
        "fused, one chunk on threads: each part's rows stop one short",
        STEP,
        "            r1 = min(g1 * TILE_ROWS, rows)\n",
        "            r1 = min(g1 * TILE_ROWS, rows) - 1\n",
        FUSED_TESTS,
    ),
    (
        "fused, one chunk on threads: the last part's inputs are left out of Xᵀ δ_h",
        STEP,
        "            p1 = min(q1 * TILE_ROWS, m)\n",
        "            p1 = min(q1 * TILE_ROWS, m - 1)\n",
        FUSED_TESTS,
    ),
    (
        "fused: a block's δ_h buffer lies over its A_h buffer (a layout offset off by one part)",
        SCRATCH,
        "        scratch[e1:e2][: rows * d].reshape((rows, d)),",
        "        scratch[:e0][: rows * d].reshape((rows, d)),",
        FUSED_TESTS,
    ),
    (
        "fused: the last chunk's partial Xᵀ δ_h is not added",
        STEP,
        "        for c in range(1, n_chunks):\n            row = partials[c, r]",
        "        for c in range(1, n_chunks - 1):\n            row = partials[c, r]",
        FUSED_TESTS,
    ),
    (
        "fused: the loop nest adds its four terms up before the update (not one chain)",
        HIDDEN,
        "o[j] = o[j] + x0 * v0 + x1 * v1 + x2 * v2 + x3 * v3",
        "o[j] += x0 * v0 + x1 * v1 + x2 * v2 + x3 * v3",
        FUSED_TESTS,
    ),
]


def run_mutant(description, path, old, new, tests=TESTS):
    with tempfile.TemporaryDirectory() as scratch:
        copy = pathlib.Path(scratch) / "repo"
        shutil.copytree(
            ROOT, copy, ignore=shutil.ignore_patterns(".git", ".asv", ".venv", "__pycache__")
        )
        source = (copy / path).read_text()
        if source.count(old) != 1:
            return f"NOT APPLIED (text found {source.count(old)} times): {description}"
        (copy / path).write_text(source.replace(old, new))
        env = dict(os.environ, PYTHONPATH=str(copy), NUMBA_BOUNDSCHECK="1", FASTBP_CACHE="0")
        where = subprocess.run(
            [sys.executable, "-c", "import fastbp; print(fastbp.__file__)"],
            cwd=copy,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if not where.startswith(str(copy)):
            return f"NOT APPLIED (fastbp imported from {where}): {description}"
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
            cwd=copy,
            env=env,
            capture_output=True,
            text=True,
        )
        summary = (
            result.stdout.strip().splitlines()[-1]
            if result.stdout.strip()
            else result.stderr[-200:]
        )
        verdict = "caught" if result.returncode != 0 else "MISSED"
        return f"{verdict:7s} {description}  [{summary}]"


def main():
    missed = 0
    for mutation in MUTATIONS:
        line = run_mutant(*mutation)
        missed += not line.startswith("caught")
        print(line, flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
