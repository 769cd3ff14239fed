"""``fastbp bench``: the benchmark sweep without asv, as tables of ratios to NumPy.

For each shape (n, d, t) and dtype, and each thread count, the kernels and
their NumPy baselines are timed in interleaved rounds
(:func:`.timing.interleaved_medians`), so a shared machine's drift
hits them alike and the ratios within one table are what to read.  BLAS
threads and Numba threads are set alike for each table and stated, and so
is the BLAS library that threadpoolctl finds.  Every result is also checked
against a float64 NumPy reference and a failure is flagged (exit status 1).

The fused-step tables also give each row's GFLOP/s as a percentage of the
core's reference: a square product through NumPy's BLAS in the same dtype
and on the same threads, timed once per dtype and thread count in the run.
PyTorch and JAX rows are added where those packages are installed; neither
is a dependency, and neither is imported where it is not installed.

``fastbp bench`` (options in :mod:`.cli`) runs :func:`run`; ``--breakdown``,
``--training`` and ``--first-call`` add the sections of :mod:`.breakdown`,
:mod:`.bench_training` and the first-call timings.
"""

import contextlib
import functools
import os
import sys
import tempfile
import time

import numba
import numpy as np

from .. import _backprop, _core
from .bounds import (
    excess_ratio,
    forward_bounds,
    gamma,
    grad_W_out_reference,
    normwise_ratio,
    unit_roundoff,
    worst_excess,
)
from .problems import (
    jax_or_none,
    jax_step,
    make_problem,
    numpy_cost,
    numpy_forward,
    numpy_step,
    step_arrays,
    torch_or_none,
    torch_step,
    torch_threads,
)
from .timing import (
    blas_description,
    first_calls_seconds,
    format_seconds,
    gflops,
    interleaved_medians,
    machine_description,
    schedulable_cpus,
    thread_counts,
    thread_limits,
)

__all__ = ["run"]

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


def _default_threads():
    # 1 and all cores: on a 2-core machine, 1 and 2.
    most = min(os.cpu_count() or 1, numba.config.NUMBA_NUM_THREADS)
    return [1] if most == 1 else [1, most]


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


def _input_width(d):
    """M = 784 (MNIST) for the seed's d = 100 network, m = d otherwise."""
    return 784 if d == 100 else d


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
            f"{row.kernel:<12} {row.implementation:<16} {format_seconds(seconds):>10} "
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
    net = make_problem(n, m, d, t, dtype)
    layers = [net[k] for k in ("X", "W_h", "b_h", "W_out", "b_out")]
    # The timed output layer works on this dtype's own forward pass.
    A_h, A_out = numpy_forward(*layers)
    Y = net["Y"]
    delta_out = A_out - Y
    grad_reference, grad_bound = grad_W_out_reference(A_h, delta_out)

    rows = []
    grad_flops = 2 * n * d * t
    candidates = {}
    if n * d * t <= OUTER_MAX_MULTIPLY_ADDS and grad_flops <= max_flops:
        candidates["outer"] = lambda: _core.grad_W_out(A_h, delta_out, method="outer")
    candidates["blocked"] = lambda: _core.grad_W_out(A_h, delta_out, method="blocked")
    candidates["matmul"] = lambda: _core.grad_W_out(A_h, delta_out, method="matmul")
    candidates["numpy"] = lambda: A_h.T @ delta_out
    torch = torch_or_none()
    if torch is not None:
        A_torch, delta_torch = torch.from_numpy(A_h), torch.from_numpy(delta_out)
        candidates["torch"] = lambda: A_torch.T @ delta_torch
    if grad_flops > max_flops:
        candidates.clear()
    for name, call in candidates.items():
        result = call()
        result = result.numpy() if hasattr(result, "numpy") else result
        check = worst_excess(np.asarray(result), grad_reference, grad_bound)[1]
        rows.append(_Row("grad_W_out", name, call, grad_flops, serial=name == "outer", check=check))

    forward_flops = 2 * n * (m * d + d * t)
    if forward_flops <= max_flops:
        # Reference: the forward pass in float64 from the same (rounded) inputs.
        net64 = {name: value.astype(np.float64) for name, value in net.items()}
        A_h64, A_out64 = numpy_forward(*[net64[k] for k in ("X", "W_h", "b_h", "W_out", "b_out")])
        error_h, error_out = forward_bounds(net64, A_h64, u)
        for name, function in (("fastbp", _core.forward), ("numpy", numpy_forward)):
            hidden, output = function(*layers)
            check = max(
                excess_ratio(np.abs(hidden - A_h64), error_h),
                excess_ratio(np.abs(output - A_out64), error_out),
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
    for name, function in (("fastbp", _core.cost), ("numpy", numpy_cost)):
        check = excess_ratio(abs(float(function(A_out, Y)) - cost_reference), cost_bound)
        rows.append(
            _Row("cost", name, lambda f=function: f(A_out, Y), 5 * n * t, serial=True, check=check)
        )
    return rows


def _step_rows(shape, dtype):
    """Candidates of the fused-step table: fastbp, NumPy, and PyTorch and JAX where installed."""
    n, m, d, t = map(int, shape.split("x"))
    arrays = step_arrays(make_problem(n, m, d, t, dtype))
    reference = numpy_step(*[a.astype(np.float64) for a in arrays])
    flops = 4 * n * m * d + 6 * n * d * t
    n_terms = n + m + d + t
    u = unit_roundoff(dtype)
    candidates = {
        "fastbp": lambda: _backprop.backprop(*arrays, l2=0.0),
        "numpy": lambda: numpy_step(*arrays),
    }
    torch = torch_or_none()
    if torch is not None:
        tensors = [torch.from_numpy(a) for a in arrays]
        candidates["torch"] = lambda: torch_step(torch, *tensors)
    jax = jax_or_none()
    if jax is not None:
        jax_call = jax_step(jax)
        X, Y, *weights = (jax.device_put(a) for a in arrays)  # copied once, untimed
        candidates["jax"] = lambda: jax.block_until_ready(jax_call(tuple(weights), X, Y))
    rows = []
    for name, call in candidates.items():
        results = call()
        if name == "jax":
            cost, gradients = results
            results = [cost, *gradients]
        results = [r.numpy() if hasattr(r, "numpy") else np.asarray(r) for r in results]
        check = normwise_ratio(results, reference, n_terms, u)
        # XLA sizes its thread pool from the CPUs the process may run on and ignores our limits.
        cpus = schedulable_cpus() if name == "jax" else None
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

    A square product through NumPy's BLAS (:func:`.breakdown.reference_product`,
    side :data:`STEP_REFERENCE_SIDE`) in ``dtype``, timed on ``threads`` BLAS
    threads the first time a (dtype, threads) pair is asked for and kept in
    ``cache`` (a dict the run owns) after that.  About 0.1 s a timing.
    """
    key = (dtype, threads)
    if key not in cache:
        from .breakdown import reference_product

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
#: :func:`.timing.interleaved_medians`): longer than OpenBLAS's spin.
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
    torch = torch_or_none()
    for index, threads in enumerate(threads_list):
        active = [row for row in rows if index == 0 or not row.serial]
        left_out = [row for row in active if row.cpus is not None and row.cpus != threads]
        active = [row for row in active if row not in left_out]
        table_reference = reference(threads) if reference is not None else None
        with (
            thread_limits(threads),
            torch_threads(torch, threads) if torch is not None else contextlib.nullcontext(),
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
            f"\n{dtype}: import fastbp {format_seconds(cold['import'])} cold, "
            f"{format_seconds(cached['import'])} cached"
        )
        print(f"{'call':<32} {'cold':>9} {'cached':>9}")
        for (name, cold_seconds), (_, cached_seconds) in zip(cold["calls"], cached["calls"]):
            print(
                f"{name:<32} {format_seconds(cold_seconds):>9} {format_seconds(cached_seconds):>9}"
            )
        total_cold = sum(seconds for _, seconds in cold["calls"])
        total_cached = sum(seconds for _, seconds in cached["calls"])
        print(f"{'all':<32} {format_seconds(total_cold):>9} {format_seconds(total_cached):>9}")
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
        0 when every result passed its check, 1 when one failed, 2 when
        ``--plot`` is asked for without matplotlib.
    """
    shapes = args.shapes or [s for s in GRAD_SHAPES if not (args.quick and s in QUICK_DROPPED)]
    step_shapes = args.step_shapes or list(QUICK_STEP_SHAPES if args.quick else STEP_SHAPES)
    dtypes = args.dtypes
    threads_list = args.threads or _default_threads()
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 7)
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
    torch = torch_or_none()
    if torch is not None:
        print(f"PyTorch {torch.__version__} found: torch rows added")
    jax = jax_or_none()  # step rows only
    if jax is not None:
        print(
            f"JAX {jax.__version__} found: jax rows added to the step tables "
            f"(on the {schedulable_cpus()} CPU(s) this process may use)"
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

    if args.breakdown:
        from .breakdown import breakdown_section, products_within_bound

        for shape in step_shapes:
            for dtype in dtypes:
                ok = products_within_bound(shape, dtype)
                breakdown_section(shape, dtype, repeats)
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

    if args.training:
        from .bench_training import estimator_section, training_section

        records += training_section(dtypes, repeats, args.quick)
        records += estimator_section(dtypes, repeats, args.quick)

    if args.private:
        from .bench_private import private_section

        records += private_section(dtypes, repeats, args.quick)

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
