"""``fastbp bench --breakdown``: where the fused step's time goes, on one core and on two.

For a step shape (n, m, d, t), the table times, interleaved on one thread:
the whole step (fastbp's and the book's NumPy step), each side's two large
products (X W_h and Xᵀ δ_h), and a square product of OpenBLAS as the
core's reference speed.  fastbp's products are timed as the step runs
them, packing included, repeated in one compiled call
(:func:`product_repeats` times); NumPy's as a NumPy call, and OpenBLAS's
product alone in the same kind of compiled loop (SciPy's OpenBLAS, which
Numba's ``np.dot`` calls).  At a minibatch's size a Python call and its
allocation weigh as much as the product, so only the compiled loops
compare the two libraries' products.  "The rest" is each step less its
two products (fastbp's from the loops, NumPy's from its calls):
activations, cost, the small products with W_out, chunk sums and the
call's own work.

The "two at once" lines run a call on both cores at the same time, each
core on its own copy of the data, and give the time relative to the same
call alone: fastbp's serial step twice in one parallel loop (two Numba
threads), and OpenBLAS's square product on two Python threads (one BLAS
thread each; the product releases the GIL).  If a call takes s times as
long while the other core works too, two threads can speed it up by at
most 2/s, whatever the code: on a shared virtual machine s can be well
above 1.
"""

import threading

import numba
import numpy as np
from numba import prange

from .. import _backprop, _kernels_step, _scratch, _tuning
from .._jit import parallel_kernel
from . import step_parts
from .bounds import gamma, unit_roundoff
from .problems import make_problem, numpy_step, step_arrays
from .timing import format_seconds, gflops, interleaved_medians, thread_limits

__all__ = [
    "breakdown_candidates",
    "breakdown_section",
    "product_repeats",
    "products_within_bound",
    "reference_product",
]

#: Side of the square product that stands for what OpenBLAS reaches on one core.
REFERENCE_SIDE = 1024


def square_operands(dtype, count=2, side=REFERENCE_SIDE):
    """Seeded operands of the reference product: ``count`` uniform (side, side) matrices.

    The first two are the same for any ``count`` (one stream of draws), so
    the breakdown's product and ``fastbp bench``'s reference multiply the
    same matrices where their sides agree.
    """
    return np.random.default_rng(3).random((count, side, side)).astype(dtype)


def reference_product(dtype, side=REFERENCE_SIDE, operands=None):
    """The core's reference speed: a square product through NumPy's BLAS (OpenBLAS).

    Parameters
    ----------
    dtype : str
        ``"float32"`` or ``"float64"``.
    side : int, default :data:`REFERENCE_SIDE`
        The product is (side × side) times (side × side).
    operands : numpy.ndarray, optional
        Matrices from :func:`square_operands` (of this ``dtype`` and
        ``side``) whose first two are multiplied; by default two made here.

    Returns
    -------
    (callable, float)
        The call (no arguments) and its floating-point operations, 2·side³.
    """
    first, second = (square_operands(dtype, 2, side) if operands is None else operands)[:2]
    return (lambda: first @ second), 2 * side**3


# The step's own kernels for its two large products, run alone; replaced in tests.
_forward_product = step_parts._step_hidden_product
_input_gradient = step_parts._step_input_gradient


def products_within_bound(shape, dtype):
    """Whether the breakdown's two fastbp products are within their rounding bound, elementwise.

    With L the length of each dot product (m for X W_h, n for Xᵀ δ_h), any
    order of summation with one rounding per multiply-add is within
    γ_L(u)·(|A| |B|) of the exact product; the float64 reference adds its
    own γ_L(2⁻⁵³)·(|A| |B|), and the float64 scale, computed the same way,
    is allowed as much again.  A wrong index or a missing block of
    examples is far outside this.
    """
    n, m, d, t = map(int, shape.split("x"))
    problem = make_problem(n, m, d, t, dtype, 0)
    X, W_h = problem["X"], problem["W_h"]
    delta_h = _delta_h_sample(n, m, d, dtype)
    n_chunks = _backprop.default_backprop_chunks(n, m, d, t, X.itemsize)
    u = unit_roundoff(dtype)
    X64, W64, D64 = (a.astype(np.float64) for a in (X, W_h, delta_h))
    rows = _tuning.STEP_BLOCK_EXAMPLES
    checks = (
        (_forward_product(X, W_h, rows, 1), X64 @ W64, np.abs(X64) @ np.abs(W64), m),
        (
            _input_gradient(X, delta_h, rows, n_chunks, 1),
            X64.T @ D64,
            np.abs(X64).T @ np.abs(D64),
            n,
        ),
    )
    return all(
        result.shape == exact.shape
        and bool(
            np.all(
                np.abs(result.astype(np.float64) - exact)
                <= (gamma(length, u) + 2 * gamma(length, unit_roundoff(np.float64))) * scale
            )
        )
        for result, exact, scale, length in checks
    )


def _delta_h_sample(n, m, d, dtype):
    """Seeded stand-in for δ_h: small values of both signs, as in training."""
    rng = np.random.default_rng([2, n, m, d])
    return (0.01 * rng.standard_normal((n, d))).astype(dtype)


class _TwoAtOnce:
    """Calls ``call`` in this thread and ``other_call`` in a second one, started together.

    For calls that release the GIL for all their length (one OpenBLAS
    product): the second thread is started once and waits at a barrier
    between calls, so a timing holds the two calls and two barrier
    crossings, not the start of a thread.  An exception in either call is
    raised here once both have ended.  :meth:`close` ends the thread.
    """

    def __init__(self, call, other_call):
        self._call = call
        self._other_call = other_call
        self._start = threading.Barrier(2)
        self._done = threading.Barrier(2)
        self._stopping = False
        self._error = None
        self._worker = threading.Thread(target=self._serve, daemon=True)
        self._worker.start()

    def _serve(self):
        while True:
            self._start.wait()
            if self._stopping:
                return
            try:
                self._other_call()
            except BaseException as error:  # noqa: BLE001 - raised again in the caller
                self._error = error
            finally:
                self._done.wait()

    def __call__(self):
        self._start.wait()
        try:
            self._call()
        finally:
            self._done.wait()  # the second call has ended too, whatever happened
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self):
        self._stopping = True
        self._start.wait()
        self._worker.join()


@parallel_kernel
def _two_serial_steps(first, second, workspaces, tiny, n_chunks, block_rows, block_cols):
    """The serial fused step on two networks at once, one per Numba thread; returns the costs.

    Each of ``first`` and ``second`` is the tuple (X, Y, W_h, b_h, W_out,
    b_out), and ``workspaces`` a pair of step workspaces
    (:func:`fastbp._scratch._workspace_size`).  Both calls are the kernel
    that ``fastbp.backprop(..., n_threads=1)`` runs
    (:func:`fastbp._kernels_step._plain_step` for one chunk,
    :func:`fastbp._kernels_step._backprop_serial` for more), started
    together by one parallel loop (no Python threads, no GIL hand-over).
    """
    costs = np.zeros(2)
    for p in prange(2):
        X, Y, W_h, b_h, W_out, b_out = first if p == 0 else second
        if n_chunks == 1:  # _plain_step blocks as the tuning table says (block_rows, block_cols)
            m, d = W_h.shape
            t = W_out.shape[1]
            costs[p] = _kernels_step._plain_step(
                X, Y, W_h, b_h, W_out, b_out, 0.0, tiny, workspaces[p],
                np.empty(0, dtype=np.int64), np.empty((m, d), X.dtype), np.empty(d, X.dtype),
                np.empty((d, t), X.dtype), np.empty(t, X.dtype), True,
            )[1]  # fmt: skip
            continue
        costs[p] = _kernels_step._backprop_serial(
            X,
            Y,
            W_h,
            b_h,
            W_out,
            b_out,
            tiny,
            n_chunks,
            block_rows,
            block_cols,
            workspaces[p],
            np.empty(0, dtype=np.float64),
            np.inf,
            np.empty(0, dtype=np.int64),
        )[0]
    return costs


def _new_workspaces(dtype, m, d, t, n_chunks):
    """Two step workspaces, one for each network of :func:`_two_serial_steps`."""
    size = _scratch._workspace_size(np.dtype(dtype), m, d, t, 1, n_chunks)
    return (np.empty(size, dtype), np.empty(size, dtype))


#: Floating-point operations of the products one compiled call repeats (about
#: 0.2 ms of work): a Python call's microsecond or two is then under 1 %.
PRODUCT_BATCH_FLOPS = 2e7


def product_repeats(product_flops):
    """How many products of ``product_flops`` operations one timed call runs (1 to 1000).

    Enough that the call around them is under about 1 % of the time; one
    for products of :data:`PRODUCT_BATCH_FLOPS` or more.
    """
    return max(1, min(1000, int(PRODUCT_BATCH_FLOPS // max(product_flops, 1))))


def breakdown_candidates(shape, dtype):
    """The timed calls of one breakdown table, each with its floating-point operations.

    Parameters
    ----------
    shape : str
        ``"n x m x d x t"``, as ``"1000x784x100x10"``.
    dtype : str
        ``"float32"`` or ``"float64"``.

    Returns
    -------
    dict of str to (callable, float, int)
        Label → (call with no arguments, floating-point operations of one
        product or step, how many of them a call runs).  fastbp's two
        products and OpenBLAS's in a compiled loop run :func:`product_repeats`
        of them a call; every other call runs one.
        The OpenBLAS "two at once" call holds a waiting thread: call its
        ``close()`` when done (:func:`breakdown_section` does).  The "two at
        once" rows are left out where Numba has a single thread.
    """
    n, m, d, t = map(int, shape.split("x"))
    arrays = step_arrays(make_problem(n, m, d, t, dtype, 0))
    twin_arrays = step_arrays(make_problem(n, m, d, t, dtype, 1))  # the second thread's own
    X, W_h = arrays[0], arrays[2]
    delta_h = _delta_h_sample(n, m, d, dtype)
    n_chunks = _backprop.default_backprop_chunks(n, m, d, t, X.itemsize)
    rows, cols = _tuning.STEP_BLOCK_EXAMPLES, _tuning.DELTA_H_BLOCK_HIDDEN
    side = REFERENCE_SIDE
    square = square_operands(dtype, 4)
    product_flops = 2 * n * m * d
    step_flops = 4 * n * m * d + 6 * n * d * t

    def step():  # default options, as users call it: one Numba thread under thread_limits(1)
        return _backprop.backprop(*arrays)

    tiny = float(np.finfo(dtype).tiny)
    workspace = _scratch._workspace(np.dtype(dtype), m, d, t, 1, n_chunks)

    def step_kernel():  # the kernel backprop runs on one thread, without its checks
        if n_chunks == 1:
            gradients = _backprop._empty_gradients(m, d, t, X.dtype)
            _, cost = _kernels_step._plain_step(
                *arrays, 0.0, tiny, workspace, _backprop._NO_COUNTS, *gradients, True
            )
            return (cost, *gradients)
        return _kernels_step._backprop_serial(
            *arrays, tiny, n_chunks, rows, cols, workspace, _backprop._NO_NORMS, np.inf,
            _backprop._NO_COUNTS,
        )  # fmt: skip

    repeats = product_repeats(product_flops)
    Z, G = np.empty((n, d), X.dtype), np.empty((m, d), X.dtype)
    square_pair = _TwoAtOnce(lambda: square[0] @ square[1], lambda: square[2] @ square[3])
    candidates = {
        "fastbp step": (step, step_flops, 1),
        "numpy step": (lambda: numpy_step(*arrays), step_flops, 1),
        "fastbp X W_h": (
            lambda: _forward_product(X, W_h, rows, repeats),
            product_flops,
            repeats,
        ),
        "numpy X @ W_h": (lambda: X @ W_h, product_flops, 1),
        "OpenBLAS X @ W_h, compiled loop": (
            lambda: step_parts._blas_products(X, W_h, Z, repeats),
            product_flops,
            repeats,
        ),
        "fastbp Xᵀ δ_h": (
            lambda: _input_gradient(X, delta_h, rows, n_chunks, repeats),
            product_flops,
            repeats,
        ),
        "numpy X.T @ δ_h": (lambda: X.T @ delta_h, product_flops, 1),
        "OpenBLAS X.T @ δ_h, compiled loop": (
            lambda: step_parts._blas_products(X.T, delta_h, G, repeats),
            product_flops,
            repeats,
        ),
        f"numpy {side}³ product": (*reference_product(dtype, side, square), 1),
        "fastbp step kernel": (step_kernel, step_flops, 1),
    }
    if numba.config.NUMBA_NUM_THREADS >= 2:  # a second core to run on
        workspaces = _new_workspaces(dtype, m, d, t, n_chunks)

        def two_steps():
            with thread_limits(2, blas=False):
                return _two_serial_steps(
                    arrays, twin_arrays, workspaces, tiny, n_chunks, rows, cols
                )

        candidates["fastbp step kernel, two at once"] = (two_steps, step_flops, 1)
        candidates[f"numpy {side}³ product, two at once"] = (square_pair, 2 * side**3, 1)
    else:
        square_pair.close()
    return candidates


def breakdown_section(shape, dtype, repeats):
    """Print the breakdown table of one step shape and dtype (one thread, interleaved rounds).

    Returns
    -------
    dict of str to float
        Median seconds per label, and ``"fastbp rest"`` / ``"numpy rest"``:
        the step less its two products.
    """
    candidates = breakdown_candidates(shape, dtype)
    try:
        with thread_limits(1):
            medians = interleaved_medians(
                {label: call for label, (call, _, _) in candidates.items()}, repeats, min_time=0.01
            )
    finally:
        for call, _, _ in candidates.values():
            if isinstance(call, _TwoAtOnce):
                call.close()
    for label, (_, _, count) in candidates.items():
        medians[label] /= count  # one product's time
    medians["fastbp rest"] = (
        medians["fastbp step"] - medians["fastbp X W_h"] - medians["fastbp Xᵀ δ_h"]
    )
    medians["numpy rest"] = (
        medians["numpy step"] - medians["numpy X @ W_h"] - medians["numpy X.T @ δ_h"]
    )
    n, m, d, t = shape.split("x")
    print(
        f"\nwhere the step's time goes: n={n} m={m} d={d} t={t} {dtype}, 1 thread "
        "(BLAS 1, Numba 1); 'two at once': the same call on both cores at the same "
        "time, each on its own data; 'step kernel': the step without the public "
        "function's checks"
    )
    print(f"{'part':<34} {'median':>10} {'GFLOP/s':>9}")
    print("-" * 55)
    for label, (_, flops, _) in candidates.items():
        seconds = medians[label]
        if label.endswith("two at once"):
            alone = medians[label.replace(", two at once", "")]  # the same call, alone
            slowdown = f"{seconds / alone:.2f}× one alone"
            print(f"{label:<34} {format_seconds(seconds):>10} {'':>9}  {slowdown}")
            continue
        print(f"{label:<34} {format_seconds(seconds):>10} {gflops(flops, seconds):>9.1f}")
        if label == "OpenBLAS X.T @ δ_h, compiled loop":
            for side in ("fastbp", "numpy"):
                rest = medians[f"{side} rest"]
                share = rest / medians[f"{side} step"]
                print(
                    f"{side + ' rest of the step':<34} {format_seconds(rest):>10} {'':>9}  "
                    f"{share:.0%} of its step"
                )
    return medians
