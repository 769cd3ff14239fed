"""``fastbp bench``: the benchmark sweep without asv, as tables of ratios to NumPy.

For each shape (n, d, t) and dtype, and each thread count, the kernels and
their NumPy baselines are timed in interleaved rounds
(:func:`fastbp._timing.interleaved_medians`), so a shared machine's drift
hits them alike and the ratios within one table are what to read.  BLAS
threads and Numba threads are set alike for each table and stated, and so
is the BLAS library that threadpoolctl finds.  Every result is also checked
against a float64 NumPy reference and a failure is flagged (exit status 1).

The fused-step tables also give each row's GFLOP/s as a percentage of the
core's reference: a square product through NumPy's BLAS in the same dtype
and on the same threads, timed once per dtype and thread count in the run.
PyTorch and JAX rows are added where those packages are installed; neither
is a dependency, and neither is imported where it is not installed.

The command line (``fastbp bench``, :mod:`fastbp.cli`) takes its options
from :func:`add_arguments` and runs :func:`run`; ``--breakdown``,
``--training`` and ``--first-call`` add the sections of
:mod:`fastbp._breakdown`, :mod:`fastbp._bench_training` and the first-call
timings.
"""

import contextlib
import functools
import os
import sys
import tempfile
import time

import numba
import numpy as np

from . import _core
from ._checks import gamma, unit_roundoff
from ._timing import (
    blas_description,
    first_calls_seconds,
    gflops,
    interleaved_medians,
    machine_description,
    thread_counts,
    thread_limits,
)

__all__ = ["add_arguments", "run"]

#: (n, d, t) of the gradient sweep: the seed's MNIST network on a mini-batch,
#: a larger batch and the whole training set, then a wide and a square layer.
GRAD_SHAPES = ("100x100x10", "1000x100x10", "60000x100x10", "10000x512x64", "4096x1024x1024")

#: (n, m, d, t) of the fused training step: minibatches of the digits' 64-input
#: network and of MNIST's 784-input one, a batch and the whole MNIST set, a wide layer.
STEP_SHAPES = (
    "32x64x100x10",
    "128x64x100x10",
    "256x64x100x10",
    "32x784x100x10",
    "100x784x100x10",
    "128x784x100x10",
    "256x784x100x10",
    "1000x784x100x10",
    "60000x784x100x10",
    "10000x64x512x64",
)

#: Gradient shapes that --quick leaves out, so it stays short on two cores.
QUICK_DROPPED = {"4096x1024x1024"}

#: The step shapes --quick keeps: a digits minibatch, an MNIST minibatch, an MNIST batch.
QUICK_STEP_SHAPES = ("32x64x100x10", "128x784x100x10", "1000x784x100x10")

#: Side of the square product that gives each step table its reference speed: 512³ measured
#: within 3 % of 1024³'s GFLOP/s in an eighth of the time (docs/tuning.md).
STEP_REFERENCE_SIDE = 512

#: Rounds of the reference product's timing, each at least 0.02 s: about 0.1 s a timing.
REFERENCE_ROUNDS = 5

#: --quick leaves out kernels of more floating-point operations than this a
#: call: the forward pass at (n, m, d) = (60000, 784, 100) and (10000, 512, 512).
QUICK_MAX_FLOPS = 4e9

#: Above this many multiply-adds (n·d·t) the per-example ``outer`` loop takes
#: about a second a call and is left out.
OUTER_MAX_MULTIPLY_ADDS = 10**9

DTYPES = ("float32", "float64")


# --------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------


def _shape_list(text, length):
    shapes = []
    for item in text.split(","):
        sizes = item.strip().lower().split("x")
        if len(sizes) != length or not all(size.isdigit() and int(size) > 0 for size in sizes):
            raise ValueError(f"a shape is {length} positive integers joined by 'x', got {item!r}")
        shapes.append("x".join(str(int(size)) for size in sizes))
    return shapes


def _default_threads():
    # 1 and all cores: on a 2-core machine, 1 and 2.
    most = min(os.cpu_count() or 1, numba.config.NUMBA_NUM_THREADS)
    return "1" if most == 1 else f"1,{most}"


def add_arguments(parser):
    """Add the options of ``fastbp bench`` to an :class:`argparse.ArgumentParser`."""
    parser.add_argument(
        "--shapes",
        help="gradient shapes n x d x t, comma-separated "
        f"(default {','.join(GRAD_SHAPES)}); the forward pass uses m = 784 "
        "inputs where d = 100 and m = d otherwise",
    )
    parser.add_argument(
        "--step-shapes",
        help="fused-step shapes n x m x d x t, comma-separated "
        f"(default {','.join(STEP_SHAPES)}); rows only where fastbp.backprop exists",
    )
    parser.add_argument(
        "--dtypes", default=",".join(DTYPES), help="comma-separated (default float32,float64)"
    )
    parser.add_argument(
        "--threads",
        default=None,
        help="BLAS = Numba thread counts, comma-separated (default 1 and all cores)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="interleaved rounds per table (default 7, quick 3)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3 rounds, without the largest gradient shape, without kernels of more "
        f"than 4 GFLOP a call, and only the step shapes {','.join(QUICK_STEP_SHAPES)}",
    )
    parser.add_argument(
        "--plot",
        metavar="FILE.png",
        help="also draw GFLOP/s of grad_W_out per method and shape (needs matplotlib: "
        "pip install 'fastbp[plot]')",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also show, per fused-step shape, where the step's time goes on one thread "
        "(its two large products against OpenBLAS's, the rest, a square product for "
        "reference) and how much each call slows when two run at once",
    )
    parser.add_argument(
        "--training",
        action="store_true",
        help="also time whole epochs on one thread: fastbp.sgd_epoch, a Python loop over "
        "fastbp.backprop and the same loop in NumPy (the digits, 200 epochs of minibatch 32; "
        "one epoch of 60000x784 in minibatches of 128; fewer with --quick)",
    )
    parser.add_argument(
        "--first-call",
        action="store_true",
        help="also time import fastbp and each public function's first call in a fresh "
        "process, cold (empty cache) and from the on-disk cache, per dtype",
    )
    return parser


# --------------------------------------------------------------------------
# Data and NumPy references
# --------------------------------------------------------------------------


def _input_width(d):
    """M = 784 (MNIST) for the seed's d = 100 network, m = d otherwise."""
    return 784 if d == 100 else d


def _network(n, m, d, t, dtype, seed=0):
    """Seeded inputs, one-hot targets and weights scaled by 1/sqrt(fan-in)."""
    rng = np.random.default_rng([seed, n, m, d, t])
    Y = np.zeros((n, t))
    Y[np.arange(n), rng.integers(0, t, n)] = 1.0
    arrays = {
        "X": rng.random((n, m)),
        "Y": Y,
        "W_h": rng.standard_normal((m, d)) / np.sqrt(m),
        "b_h": 0.1 * rng.standard_normal(d),
        "W_out": rng.standard_normal((d, t)) / np.sqrt(d),
        "b_out": 0.1 * rng.standard_normal(t),
    }
    return {name: np.ascontiguousarray(value, dtype=dtype) for name, value in arrays.items()}


def _sigmoid(Z):
    """The book's sigmoid, clipped so np.exp never overflows."""
    return 1.0 / (1.0 + np.exp(-np.clip(Z, -250, 250)))


def _numpy_forward(X, W_h, b_h, W_out, b_out):
    """The book's NeuralNetMLP forward pass: (A_h, A_out)."""
    A_h = _sigmoid(X @ W_h + b_h)
    return A_h, _sigmoid(A_h @ W_out + b_out)


def _numpy_cost(A_out, Y):
    return -np.sum(Y * np.log(A_out) + (1.0 - Y) * np.log(1.0 - A_out))


def _numpy_step(X, Y, W_h, b_h, W_out, b_out):
    """The book's training step: (cost, grad_W_h, grad_b_h, grad_W_out, grad_b_out)."""
    A_h, A_out = _numpy_forward(X, W_h, b_h, W_out, b_out)
    delta_out = A_out - Y
    delta_h = (delta_out @ W_out.T) * A_h * (1.0 - A_h)
    return (
        _numpy_cost(A_out, Y),
        X.T @ delta_h,
        delta_h.sum(axis=0),
        A_h.T @ delta_out,
        delta_out.sum(axis=0),
    )


def _torch():
    """PyTorch if importable (never a dependency), else None."""
    try:
        import torch
    except ImportError:
        return None
    return torch


@contextlib.contextmanager
def _torch_threads(torch, n_threads):
    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _jax():
    """JAX if importable (never a dependency), else None; float64 switched on at first import."""
    try:
        import jax
    except ImportError:
        return None
    # Without x64 JAX silently computes float64 inputs in float32; float32 ones stay float32.
    jax.config.update("jax_enable_x64", True)
    return jax


def _schedulable_cpus():
    """How many CPUs this process may run on (its affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity call here (macOS, Windows)
        return os.cpu_count() or 1


def _jax_step(jax):
    """The book's step in JAX: ``jax.jit(jax.value_and_grad(loss))``, gradients by autodiff.

    ``loss`` is the cost of :func:`_numpy_step` (no L2 term, as the fastbp
    row's ``l2=0.0``).  The returned function takes ``((W_h, b_h, W_out,
    b_out), X, Y)`` and gives ``(cost, (grad_W_h, grad_b_h, grad_W_out,
    grad_b_out))``.
    """
    jnp = jax.numpy

    def loss(weights, X, Y):
        W_h, b_h, W_out, b_out = weights
        A_h = jax.nn.sigmoid(X @ W_h + b_h)
        A_out = jax.nn.sigmoid(A_h @ W_out + b_out)
        return -jnp.sum(Y * jnp.log(A_out) + (1.0 - Y) * jnp.log(1.0 - A_out))

    return jax.jit(jax.value_and_grad(loss))


def _torch_step(torch, X, Y, W_h, b_h, W_out, b_out):
    """The book's step written in torch (same operations as :func:`_numpy_step`)."""
    A_h = torch.sigmoid(X @ W_h + b_h)
    A_out = torch.sigmoid(A_h @ W_out + b_out)
    cost = -torch.sum(Y * torch.log(A_out) + (1.0 - Y) * torch.log(1.0 - A_out))
    delta_out = A_out - Y
    delta_h = (delta_out @ W_out.T) * A_h * (1.0 - A_h)
    return cost, X.T @ delta_h, delta_h.sum(0), A_h.T @ delta_out, delta_out.sum(0)


# --------------------------------------------------------------------------
# Checks: each result against a float64 reference
# --------------------------------------------------------------------------
# Each check returns err/bound: at most 1 passes.  The references are
# computed in float64; their own rounding (u = 2^-53) is added to the bound.


def _grad_check_ratio(result, A64, D64, reference, u):
    """Proven bound of a sum of n products: |Ĝ − G| ≤ γ_n·|A_h|ᵀ|δ_out|, per element."""
    n = A64.shape[0]
    bound = (gamma(n, u) + gamma(n, unit_roundoff(np.float64))) * (np.abs(A64).T @ np.abs(D64))
    return _ratio(np.abs(np.asarray(result, dtype=np.float64) - reference), bound)


def _ratio(error, bound):
    error = np.asarray(error, dtype=np.float64)
    if error.size == 0:
        return 0.0
    if not np.all(np.isfinite(error)):
        return float("inf")
    # Where the bound is 0 the result must be exact.
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(
            bound > 0, error / np.where(bound > 0, bound, 1.0), np.where(error > 0, np.inf, 0.0)
        )
    return float(ratios.max())


def _forward_bounds(net64, A_h64, u):
    """First-order rounding bound of the forward pass, elementwise.

    z = x·w + b is a sum of m + 1 products (|Δz| ≤ γ_{m+1}(|X||W_h| + |b_h|));
    φ' ≤ 1/4; each sigmoid evaluation is taken to add at most 4u (exp,
    add, divide).  The output layer adds the hidden error carried through
    |W_out|.  Not a proof for every libm, hence "first order".
    """
    m = net64["X"].shape[1]
    d = net64["W_h"].shape[1]
    error_h = (
        0.25 * gamma(m + 1, u) * (np.abs(net64["X"]) @ np.abs(net64["W_h"]) + np.abs(net64["b_h"]))
        + 4 * u
    )
    W_out = np.abs(net64["W_out"])
    error_out = (
        0.25 * (gamma(d + 1, u) * (A_h64 @ W_out + np.abs(net64["b_out"])) + error_h @ W_out)
        + 4 * u
    )
    return error_h, error_out


def _normwise_ratio(results, references, n_terms, u):
    """Heuristic check of the fused step: max|Δ| ≤ 16·n_terms·u·max|reference| for each output."""
    worst = 0.0
    for result, reference in zip(results, references):
        reference = np.asarray(reference, dtype=np.float64)
        scale = float(np.max(np.abs(reference))) if reference.size else 0.0
        bound = 16 * n_terms * (u + unit_roundoff(np.float64)) * scale
        error = np.abs(np.asarray(result, dtype=np.float64) - reference)
        worst = max(worst, _ratio(error, np.full(error.shape, bound)))
    return worst


# --------------------------------------------------------------------------
# One table
# --------------------------------------------------------------------------


class _Row:
    """One timed candidate: kernel, implementation, its call, flops, its check."""

    def __init__(self, kernel, implementation, call, flops, serial=False, check=None, cpus=None):
        self.kernel = kernel
        self.implementation = implementation
        self.call = call
        self.flops = flops
        self.serial = serial  # timed at the first thread count only
        self.check = check  # err/bound, or a label like "bitwise"
        # CPUs the call runs on whatever the thread settings (JAX); None: it follows them.
        self.cpus = cpus
        self.key = f"{kernel}/{implementation}"


def _format_seconds(seconds):
    if not np.isfinite(seconds):
        return "n/a"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _format_check(check):
    if check is None:
        return "-"
    if isinstance(check, str):
        return check
    if check <= 1.0:
        return f"ok ({check:.2g} of bound)"
    return f"FAIL ({check:.3g} x bound)"


def _check_failed(check):
    return isinstance(check, float) and not check <= 1.0 or check == "FAIL"


def _print_table(title, rows, medians, threads, reference=None):
    """Print one table; return its records (for the plot and the exit status).

    ``reference`` is ``(label, GFLOP/s)`` of the core's reference speed
    (:func:`_reference_gflops`): it is named in the title line and each
    row gets a "% ref" column, its GFLOP/s as a percentage of it.
    """
    numba_threads, blas_threads = thread_counts()
    blas = ", ".join(str(count) for count in blas_threads) or "not controlled"
    line = f"\n{title}  [threads={threads}: Numba {numba_threads}, BLAS {blas}]"
    if reference is not None:
        line += f"  reference: {reference[0]}, {reference[1]:.3g} GFLOP/s"
    print(line)
    percent_column = f" {'% ref':>6}" if reference is not None else ""
    header = (
        f"{'kernel':<12} {'implementation':<16} {'median':>10} {'GFLOP/s':>9}"
        f"{percent_column} {'x NumPy':>8}  check"
    )
    print(header)
    print("-" * (len(header) + 18))
    records = []
    for row in rows:
        seconds = medians[row.key]
        baseline = medians.get(f"{row.kernel}/numpy")
        speedup = baseline / seconds if baseline and seconds > 0 else float("nan")
        rate = gflops(row.flops, seconds) if row.flops else float("nan")
        record = {
            "kernel": row.kernel,
            "implementation": row.implementation,
            "threads": threads,
            "seconds": seconds,
            "gflops": rate,
            "speedup": speedup,
            "check": row.check,
        }
        percent = ""
        if reference is not None:
            record["reference_gflops"] = reference[1]
            record["percent_of_reference"] = 100 * rate / reference[1]
            percent = f" {record['percent_of_reference']:>6.3g}"
        print(
            f"{row.kernel:<12} {row.implementation:<16} {_format_seconds(seconds):>10} "
            f"{rate:>9.3g}{percent} {speedup:>8.2f}  {_format_check(row.check)}"
        )
        records.append(record)
    return records


def _grad_rows(shape, dtype, max_flops=float("inf")):
    """Candidates of the (n, d, t) table: grad_W_out, forward, delta_out, cost.

    Kernels of more than ``max_flops`` a call are left out (--quick).
    """
    n, d, t = map(int, shape.split("x"))
    m = _input_width(d)
    u = unit_roundoff(dtype)
    net = _network(n, m, d, t, dtype)
    layers = [net[k] for k in ("X", "W_h", "b_h", "W_out", "b_out")]
    # The timed output layer works on this dtype's own forward pass.
    A_h, A_out = _numpy_forward(*layers)
    Y = net["Y"]
    delta_out = A_out - Y
    A_h_as64, delta_as64 = A_h.astype(np.float64), delta_out.astype(np.float64)
    grad_reference = A_h_as64.T @ delta_as64

    rows = []
    grad_flops = 2 * n * d * t
    candidates = {}
    if n * d * t <= OUTER_MAX_MULTIPLY_ADDS and grad_flops <= max_flops:
        candidates["outer"] = lambda: _core.grad_W_out(A_h, delta_out, method="outer")
    candidates["blocked"] = lambda: _core.grad_W_out(A_h, delta_out, method="blocked")
    candidates["matmul"] = lambda: _core.grad_W_out(A_h, delta_out, method="matmul")
    candidates["numpy"] = lambda: A_h.T @ delta_out
    torch = _torch()
    if torch is not None:
        A_torch, delta_torch = torch.from_numpy(A_h), torch.from_numpy(delta_out)
        candidates["torch"] = lambda: A_torch.T @ delta_torch
    if grad_flops > max_flops:
        candidates.clear()
    for name, call in candidates.items():
        result = call()
        result = result.numpy() if hasattr(result, "numpy") else result
        check = _grad_check_ratio(result, A_h_as64, delta_as64, grad_reference, u)
        rows.append(_Row("grad_W_out", name, call, grad_flops, serial=name == "outer", check=check))

    forward_flops = 2 * n * (m * d + d * t)
    if forward_flops <= max_flops:
        # Reference: the forward pass in float64 from the same (rounded) inputs.
        net64 = {name: value.astype(np.float64) for name, value in net.items()}
        A_h64, A_out64 = _numpy_forward(*[net64[k] for k in ("X", "W_h", "b_h", "W_out", "b_out")])
        error_h, error_out = _forward_bounds(net64, A_h64, u)
        for name, function in (("fastbp", _core.forward), ("numpy", _numpy_forward)):
            hidden, output = function(*layers)
            check = max(
                _ratio(np.abs(hidden - A_h64), error_h), _ratio(np.abs(output - A_out64), error_out)
            )
            rows.append(
                _Row("forward", name, lambda f=function: f(*layers), forward_flops, check=check)
            )

    # δ_out = A_out − Y is one rounding per element: NumPy and fastbp agree bit for bit.
    exact = "bitwise" if np.array_equal(_core.delta_out(A_out, Y), delta_out) else "FAIL"
    rows.append(
        _Row(
            "delta_out",
            "fastbp",
            lambda: _core.delta_out(A_out, Y),
            n * t,
            serial=True,
            check=exact,
        )
    )
    rows.append(_Row("delta_out", "numpy", lambda: A_out - Y, n * t, serial=True))

    # Cost: float64 reference on the same A_out; logs to 4u each, sum to γ_{2nt}.
    A_out_as64 = A_out.astype(np.float64)
    Y64 = Y.astype(np.float64)
    terms = Y64 * np.log(A_out_as64) + (1.0 - Y64) * np.log1p(-A_out_as64)
    cost_reference = -terms.sum()
    cost_bound = (4 * u + gamma(2 * n * t, u)) * np.abs(terms).sum()
    for name, function in (("fastbp", _core.cost), ("numpy", _numpy_cost)):
        check = _ratio(abs(float(function(A_out, Y)) - cost_reference), np.float64(cost_bound))
        rows.append(
            _Row("cost", name, lambda f=function: f(A_out, Y), 5 * n * t, serial=True, check=check)
        )
    return rows


def _step_rows(shape, dtype):
    """Candidates of the fused-step table (only where fastbp.backprop exists)."""
    import fastbp

    backprop = getattr(fastbp, "backprop", None)
    n, m, d, t = map(int, shape.split("x"))
    net = _network(n, m, d, t, dtype)
    arrays = [net[k] for k in ("X", "Y", "W_h", "b_h", "W_out", "b_out")]
    reference = _numpy_step(*[a.astype(np.float64) for a in arrays])
    flops = 4 * n * m * d + 6 * n * d * t
    n_terms = n + m + d + t
    u = unit_roundoff(dtype)
    candidates = {}
    if backprop is not None:
        candidates["fastbp"] = lambda: backprop(*arrays, l2=0.0)
    candidates["numpy"] = lambda: _numpy_step(*arrays)
    torch = _torch()
    if torch is not None:
        tensors = [torch.from_numpy(a) for a in arrays]
        candidates["torch"] = lambda: _torch_step(torch, *tensors)
    jax = _jax()
    if jax is not None:
        jax_step = _jax_step(jax)
        X, Y, *weights = (jax.device_put(a) for a in arrays)  # copied once, untimed
        candidates["jax"] = lambda: jax.block_until_ready(jax_step(tuple(weights), X, Y))
    rows = []
    for name, call in candidates.items():
        results = call()
        if name == "jax":
            cost, gradients = results
            results = [cost, *gradients]
        results = [r.numpy() if hasattr(r, "numpy") else np.asarray(r) for r in results]
        check = _normwise_ratio(results, reference, n_terms, u)
        # XLA sizes its thread pool from the CPUs the process may run on and ignores our limits.
        cpus = _schedulable_cpus() if name == "jax" else None
        rows.append(_Row("step", name, call, flops, check=check, cpus=cpus))
    return rows


def _numpy_blas_name():
    """The library behind NumPy's ``@`` as threadpoolctl names it (e.g. OpenBLAS), else "BLAS"."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "BLAS"
    names = {"openblas": "OpenBLAS", "mkl": "MKL", "blis": "BLIS", "flexiblas": "FlexiBLAS"}
    for info in threadpool_info():
        if info.get("user_api") == "blas" and "numpy" in info.get("filepath", ""):
            return names.get(info.get("internal_api"), info.get("internal_api") or "BLAS")
    return "BLAS"


def _reference_gflops(dtype, threads, cache):
    """The core's reference speed for a step table: ``(label, GFLOP/s)``, timed once per run.

    A square product through NumPy's BLAS (:func:`fastbp._breakdown.reference_product`,
    side :data:`STEP_REFERENCE_SIDE`) in ``dtype``, timed on ``threads`` BLAS
    threads the first time a (dtype, threads) pair is asked for and kept in
    ``cache`` (a dict the run owns) after that.  About 0.1 s a timing.
    """
    key = (dtype, threads)
    if key not in cache:
        from ._breakdown import reference_product

        side = STEP_REFERENCE_SIDE
        call, flops = reference_product(dtype, side)
        with thread_limits(threads):
            if threads > 1:
                time.sleep(SETTLE_SECONDS)  # threads the last table left spinning go idle
            seconds = interleaved_medians(
                {"reference": call},
                REFERENCE_ROUNDS,
                min_time=0.02,
                warmup=WARMUP_SECONDS if threads > 1 else 0.0,
            )["reference"]
        cache[key] = (f"square {_numpy_blas_name()} product {side}³", gflops(flops, seconds))
    return cache[key]


#: Idle time before each timing on more than one thread (see
#: :func:`fastbp._timing.interleaved_medians`): longer than OpenBLAS's spin.
SETTLE_SECONDS = 0.25
#: Untimed calls after the settle (at least one): threads woken, caches warm.
WARMUP_SECONDS = 0.02


def _time_table(title, rows, threads_list, repeats, reference=None):
    """Time ``rows`` at each thread count; print one table per count.

    ``reference``, for the step tables, is called as ``reference(threads)``
    and gives the ``(label, GFLOP/s)`` that :func:`_print_table` compares
    each row with.  A row that runs on a fixed number of CPUs whatever the
    thread settings (``row.cpus``, JAX) is timed only in the table of that
    many threads; elsewhere a note says why it is missing.
    """
    records = []
    torch = _torch()
    for index, threads in enumerate(threads_list):
        active = [row for row in rows if index == 0 or not row.serial]
        left_out = [row for row in active if row.cpus is not None and row.cpus != threads]
        active = [row for row in active if row not in left_out]
        table_reference = reference(threads) if reference is not None else None
        with (
            thread_limits(threads),
            _torch_threads(torch, threads) if torch is not None else contextlib.nullcontext(),
        ):
            medians = interleaved_medians(
                {row.key: row.call for row in active},
                repeats,
                min_time=0.01,
                settle=SETTLE_SECONDS if threads > 1 else 0.0,
                warmup=WARMUP_SECONDS if threads > 1 else 0.0,
            )
            records += _print_table(title, active, medians, threads, table_reference)
        for row in left_out:
            print(_fixed_cpus_note(row, threads))
    return records


def _fixed_cpus_note(row, threads):
    """Why a row that ignores thread settings (JAX) is not in the table of ``threads`` threads."""
    note = (
        f"{row.implementation}: left out of this table: it runs on the {row.cpus} CPU(s) "
        f"this process may use, whatever the thread settings"
    )
    if threads == 1:
        return note + "; for the one-thread table run under `taskset -c 0`"
    return note + f", not on {threads}"


# --------------------------------------------------------------------------
# First call, plot
# --------------------------------------------------------------------------


def _first_call_section(dtypes):
    """Each public function's first call in a fresh process: cold (empty cache) and cached."""
    print("\nFirst call in a fresh process, per public function, in the order of `fastbp compile`")
    for dtype in dtypes:
        with tempfile.TemporaryDirectory(prefix="fastbp-bench-cache-") as cache_dir:
            cold = first_calls_seconds(dtype, cache_dir)
            cached = first_calls_seconds(dtype, cache_dir)
        print(
            f"\n{dtype}: import fastbp {_format_seconds(cold['import'])} cold, "
            f"{_format_seconds(cached['import'])} cached"
        )
        print(f"{'call':<32} {'cold':>9} {'cached':>9}")
        for (name, cold_seconds), (_, cached_seconds) in zip(cold["calls"], cached["calls"]):
            print(
                f"{name:<32} {_format_seconds(cold_seconds):>9} "
                f"{_format_seconds(cached_seconds):>9}"
            )
        total_cold = sum(seconds for _, seconds in cold["calls"])
        total_cached = sum(seconds for _, seconds in cached["calls"])
        print(f"{'all':<32} {_format_seconds(total_cold):>9} {_format_seconds(total_cached):>9}")
    print(
        "cold: a fresh process and an empty FASTBP_CACHE_DIR (compiles, then saves); "
        "cached: a second process on the same folder. A kernel shared by two calls "
        "is compiled in the first."
    )


def _plot(records, path):
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    grad = [r for r in records if r["kernel"] == "grad_W_out"]
    dtypes = sorted({r["dtype"] for r in grad})
    shapes = list(dict.fromkeys(r["shape"] for r in grad))
    series = list(dict.fromkeys((r["implementation"], r["threads"]) for r in grad))
    figure, axes = plt.subplots(
        len(dtypes), 1, figsize=(max(6, 1.8 * len(shapes)), 3.5 * len(dtypes)), squeeze=False
    )
    width = 0.8 / max(1, len(series))
    for axis, dtype in zip(axes[:, 0], dtypes):
        for s, (implementation, threads) in enumerate(series):
            values = []
            for shape in shapes:
                match = [
                    r["gflops"]
                    for r in grad
                    if (r["dtype"], r["shape"], r["implementation"], r["threads"])
                    == (dtype, shape, implementation, threads)
                ]
                values.append(match[0] if match else np.nan)
            positions = np.arange(len(shapes)) + (s - (len(series) - 1) / 2) * width
            axis.bar(positions, values, width, label=f"{implementation}, {threads} thr")
        axis.set_xticks(np.arange(len(shapes)), [s.replace("x", "×") for s in shapes])
        axis.set_ylabel("GFLOP/s")
        axis.set_title(f"grad_W_out = A_hᵀ δ_out, {dtype} (n×d×t)")
        axis.legend(fontsize="small", ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def run(args):
    """Run the sweep that ``args`` (from :func:`add_arguments`) describes.

    Returns
    -------
    int
        0 when every result passed its check, 1 when one failed, 2 for bad
        arguments or a missing optional package.
    """
    try:
        shapes = (
            _shape_list(args.shapes, 3)
            if args.shapes
            else [s for s in GRAD_SHAPES if not (args.quick and s in QUICK_DROPPED)]
        )
        step_shapes = (
            _shape_list(args.step_shapes, 4)
            if args.step_shapes
            else list(QUICK_STEP_SHAPES if args.quick else STEP_SHAPES)
        )
        dtypes = [item.strip() for item in args.dtypes.split(",")]
        for dtype in dtypes:
            if dtype not in DTYPES:
                raise ValueError(f"dtypes are float32 and float64, got {dtype!r}")
        threads_list = [int(item) for item in (args.threads or _default_threads()).split(",")]
        for threads in threads_list:
            if not 1 <= threads <= numba.config.NUMBA_NUM_THREADS:
                raise ValueError(
                    f"threads must be 1 to {numba.config.NUMBA_NUM_THREADS} "
                    f"(NUMBA_NUM_THREADS), got {threads}"
                )
        repeats = args.repeats if args.repeats is not None else (3 if args.quick else 7)
        if repeats < 1:
            raise ValueError(f"repeats must be at least 1, got {repeats}")
    except ValueError as error:
        print(f"fastbp bench: {error}", file=sys.stderr)
        return 2
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print(
                "fastbp bench: --plot needs matplotlib, which is not installed; "
                "install it with: pip install 'fastbp[plot]'",
                file=sys.stderr,
            )
            return 2

    import fastbp

    print("fastbp bench: median of interleaved rounds; 'x NumPy' = NumPy's time / this time")
    print(machine_description())
    for line in blas_description():
        print(line)
    print(
        f"rounds: {repeats}; threads: {', '.join(map(str, threads_list))} "
        "(BLAS and Numba set alike for each table)"
    )
    print(
        "GFLOP/s counts 2 per multiply-add of the matrix products (delta_out: 1, cost: 5 "
        "per element); checks: grad_W_out within γ_n·|A_h|ᵀ|δ_out| (proven), forward "
        "within a first-order bound, cost within (4u + γ_2nt)·Σ|terms|, against float64"
    )
    torch = _torch()
    if torch is not None:
        print(f"PyTorch {torch.__version__} found: torch rows added")
    jax = _jax() if getattr(fastbp, "backprop", None) is not None else None  # step rows only
    if jax is not None:
        print(
            f"JAX {jax.__version__} found: jax rows added to the step tables "
            f"(on the {_schedulable_cpus()} CPU(s) this process may use)"
        )

    records = []
    for shape in shapes:
        n, d, t = map(int, shape.split("x"))
        for dtype in dtypes:
            max_flops = QUICK_MAX_FLOPS if args.quick else float("inf")
            rows = _grad_rows(shape, dtype, max_flops)
            m = _input_width(d)
            title = f"n={n} d={d} t={t} {dtype}"
            if 2 * n * (m * d + d * t) > max_flops:
                title += f" (--quick: forward, m={m}, left out)"
            else:
                title += f" (forward: m={m})"
            if n * d * t > OUTER_MAX_MULTIPLY_ADDS:
                title += " (outer left out: too slow here)"
            for record in _time_table(title, rows, threads_list, repeats):
                records.append(dict(record, shape=shape, dtype=dtype))

    if getattr(fastbp, "backprop", None) is None:
        print("\nFused step: fastbp.backprop is not in this version; rows left out.")
    else:
        print(
            "\nFused step: checks within 16·(n+m+d+t)·u normwise (heuristic); '% ref' = "
            "GFLOP/s as a percentage of the reference's,\nthe reference being a square "
            "product through NumPy's BLAS in the same dtype on the same threads, timed "
            "once in this run"
        )
        references = {}
        for shape in step_shapes:
            n, m, d, t = map(int, shape.split("x"))
            for dtype in dtypes:
                title = f"fused step n={n} m={m} d={d} t={t} {dtype}"
                rows = _step_rows(shape, dtype)
                reference = functools.partial(_reference_gflops, dtype, cache=references)
                for record in _time_table(title, rows, threads_list, repeats, reference):
                    records.append(dict(record, shape=shape, dtype=dtype))

    if args.breakdown and getattr(fastbp, "backprop", None) is not None:
        from ._breakdown import breakdown_section, products_within_bound

        for shape in step_shapes:
            for dtype in dtypes:
                ok = products_within_bound(shape, dtype, _network)
                breakdown_section(shape, dtype, repeats, _network, _numpy_step)
                print(f"check of fastbp's two products: {'ok' if ok else 'FAILED'}")
                if not ok:
                    records.append(
                        {
                            "kernel": "breakdown",
                            "implementation": "fastbp",
                            "shape": shape,
                            "dtype": dtype,
                            "check": "FAIL",
                        }
                    )

    if args.training and getattr(fastbp, "sgd_epoch", None) is not None:
        from ._bench_training import training_section

        records += training_section(dtypes, repeats, args.quick, _numpy_step)

    if args.first_call:
        _first_call_section(["float64"] if args.quick else list(dtypes))

    if args.plot:
        _plot(records, args.plot)
        print(f"\nplot written to {args.plot}")

    failures = [r for r in records if _check_failed(r["check"])]
    if failures:
        print(f"\n{len(failures)} result(s) FAILED their check:", file=sys.stderr)
        for r in failures:
            print(
                f"  {r['kernel']} {r['implementation']} {r['shape']} {r['dtype']}", file=sys.stderr
            )
        return 1
    return 0
