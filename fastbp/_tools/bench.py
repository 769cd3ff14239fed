"""``fastbp bench``: the benchmark sweep without asv, as tables of ratios to NumPy.

For each shape (n, d, t) and dtype, and each thread count, the kernels and
their NumPy baselines are timed in interleaved rounds
(:func:`.timing.interleaved_medians`), so a shared machine's drift
hits them alike and the ratios within one table are what to read.  BLAS
threads and Numba threads are set alike for each table and stated, and so
is the BLAS library that threadpoolctl finds.  Every result is also checked
against a float64 NumPy reference and a failure is flagged (exit status 1).

The header names the kernels every BLAS runs and the CPU's widest vector
ISA, with a warning where a baseline runs narrower kernels than the CPU
has (:func:`.blas.baseline_description`).  The fused-step tables give each
row's GFLOP/s as a percentage of the peak: the larger of a compiled loop of
independent FMAs at the vector width (:mod:`.peak`, no BLAS involved) and
a 2048³ product through NumPy's BLAS, both in the same dtype and on the same
threads, timed once per dtype and thread count in the run and both named
in the table's title.  PyTorch and JAX rows, and their "x PyTorch" and
"x JAX" columns, are added where those packages are installed; neither is
a dependency, and neither is imported where it is not installed.  Shapes,
data and the reference steps come from :mod:`.problems`, which the asv
suite uses too.

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
from .blas import baseline_description
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
    GRAD_SHAPES,
    OUTER_MAX_MULTIPLY_ADDS,
    STEP_L2,
    STEP_SHAPES,
    forward_flops,
    grad_flops,
    input_width,
    jax_or_none,
    jax_step,
    make_problem,
    numpy_cost,
    numpy_forward,
    numpy_step,
    parse_shape,
    step_arrays,
    step_flops,
    torch_or_none,
    torch_step,
    torch_threads,
)
from .timing import (
    first_calls_seconds,
    format_seconds,
    gflops,
    interleaved_medians,
    machine_description,
    schedulable_cpus,
    thread_counts,
    thread_limits,
)

__all__ = ["GRAD_SHAPES", "QUICK_STEP_SHAPES", "STEP_SHAPES", "run"]

#: Gradient shapes that --quick leaves out, so it stays short on two cores.
QUICK_DROPPED = {"4096x1024x1024"}

#: The step shapes --quick keeps: a digits minibatch, an MNIST minibatch, an MNIST batch.
QUICK_STEP_SHAPES = ("32x64x100x10", "128x784x100x10", "1000x784x100x10")

#: Side of the square BLAS product behind each step table's peak: large enough for
#: OpenBLAS to reach its best (about 0.3 s a float64 call on one Zen 4 core).
STEP_REFERENCE_SIDE = 2048

#: Rounds of each peak timing (the FMA loop's and the product's); fewer where the
#: run asks for fewer rounds.
REFERENCE_ROUNDS = 5

#: Column headings of the ratio columns, one per peer library with rows in a table.
PEERS = {"numpy": "NumPy", "torch": "PyTorch", "jax": "JAX"}

#: --quick leaves out kernels of more floating-point operations than this a
#: call: the forward pass at (n, m, d) = (60000, 784, 100) and (10000, 512, 512).
QUICK_MAX_FLOPS = 4e9


def _default_threads():
    # 1 and all cores: on a 2-core machine, 1 and 2.
    most = min(os.cpu_count() or 1, numba.config.NUMBA_NUM_THREADS)
    return [1] if most == 1 else [1, most]


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


def _ratio(medians, kernel, peer, seconds):
    """``peer``'s time over ``seconds`` for ``kernel`` ("x NumPy"), nan without that row."""
    other = medians.get(f"{kernel}/{peer}")
    return other / seconds if other and seconds > 0 else float("nan")


def _print_table(title, rows, medians, threads, peak=None, peers=("numpy",)):
    """Print one table; return its records (for the plot and the exit status).

    ``peak`` (:func:`_peak`), for the step tables, is named in the title
    line with the two figures it is the larger of, and each row gets a
    "% peak" column: its GFLOP/s as a percentage of the peak.  Each of
    ``peers`` (keys of :data:`PEERS`) gets an "x <library>" column: that
    library's time for the row's kernel over the row's time, "n/a" where
    the table has no row of that library.
    """
    numba_threads, blas_threads = thread_counts()
    blas = ", ".join(str(count) for count in blas_threads) or "not controlled"
    line = f"\n{title}  [threads={threads}: Numba {numba_threads}, BLAS {blas}]"
    if peak is not None:
        line += (
            f"  peak: {peak['gflops']:.3g} GFLOP/s, the larger of the FMA loop's "
            f"{peak['fma']:.3g} and the {peak['blas_label']}'s {peak['blas']:.3g}"
        )
    print(line)
    percent_column = f" {'% peak':>6}" if peak is not None else ""
    ratio_columns = "".join(f" {'x ' + PEERS[peer]:>9}" for peer in peers)
    header = (
        f"{'kernel':<12} {'implementation':<16} {'median':>10} {'GFLOP/s':>9}"
        f"{percent_column}{ratio_columns}  check"
    )
    print(header)
    print("-" * (len(header) + 18))
    records = []
    for row in rows:
        seconds = medians[row.key]
        rate = gflops(row.flops, seconds) if row.flops else float("nan")
        ratios = {peer: _ratio(medians, row.kernel, peer, seconds) for peer in peers}
        record = {
            "kernel": row.kernel,
            "implementation": row.implementation,
            "threads": threads,
            "seconds": seconds,
            "gflops": rate,
            "speedup": _ratio(medians, row.kernel, "numpy", seconds),
            "ratios": ratios,
            "check": row.check,
        }
        percent = ""
        if peak is not None:
            record["peak_gflops"] = peak["gflops"]
            record["percent_of_peak"] = 100 * rate / peak["gflops"]
            percent = f" {record['percent_of_peak']:>6.3g}"
        ratio_text = "".join(
            f" {ratios[peer]:>9.2f}" if np.isfinite(ratios[peer]) else f" {'n/a':>9}"
            for peer in peers
        )
        print(
            f"{row.kernel:<12} {row.implementation:<16} {format_seconds(seconds):>10} "
            f"{rate:>9.3g}{percent}{ratio_text}  {_format_check(row.check)}"
        )
        records.append(record)
    return records


def _grad_rows(shape, dtype, max_flops=float("inf")):
    """Candidates of the (n, d, t) table: grad_W_out, forward, delta_out, cost.

    Kernels of more than ``max_flops`` a call are left out (--quick).
    """
    n, d, t = parse_shape(shape)
    m = input_width(d)
    u = unit_roundoff(dtype)
    net = make_problem(n, m, d, t, dtype)
    layers = [net[k] for k in ("X", "W_h", "b_h", "W_out", "b_out")]
    # The timed output layer works on this dtype's own forward pass.
    A_h, A_out = numpy_forward(*layers)
    Y = net["Y"]
    delta_out = A_out - Y
    grad_reference, grad_bound = grad_W_out_reference(A_h, delta_out)

    rows = []
    grad_W_out_flops = grad_flops(n, d, t)
    candidates = {}
    if n * d * t <= OUTER_MAX_MULTIPLY_ADDS and grad_W_out_flops <= max_flops:
        candidates["outer"] = lambda: _core.grad_W_out(A_h, delta_out, method="outer")
    candidates["blocked"] = lambda: _core.grad_W_out(A_h, delta_out, method="blocked")
    candidates["matmul"] = lambda: _core.grad_W_out(A_h, delta_out, method="matmul")
    candidates["numpy"] = lambda: A_h.T @ delta_out
    torch = torch_or_none()
    if torch is not None:
        A_torch, delta_torch = torch.from_numpy(A_h), torch.from_numpy(delta_out)
        candidates["torch"] = lambda: A_torch.T @ delta_torch
    if grad_W_out_flops > max_flops:
        candidates.clear()
    for name, call in candidates.items():
        result = call()
        result = result.numpy() if hasattr(result, "numpy") else result
        check = worst_excess(np.asarray(result), grad_reference, grad_bound)[1]
        rows.append(
            _Row("grad_W_out", name, call, grad_W_out_flops, serial=name == "outer", check=check)
        )

    forward_pass_flops = forward_flops(n, m, d, t)
    if forward_pass_flops <= max_flops:
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
            call = functools.partial(function, *layers)
            rows.append(_Row("forward", name, call, forward_pass_flops, check=check))

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
    """Candidates of the fused-step table: fastbp, NumPy, and PyTorch and JAX where installed.

    Every candidate computes the same step, cost and four gradients with the
    L2 term λ = :data:`.problems.STEP_L2`, and is checked against the NumPy
    step in float64 on the same (rounded) inputs.
    """
    n, m, d, t = parse_shape(shape)
    arrays = step_arrays(make_problem(n, m, d, t, dtype))
    reference = numpy_step(*[a.astype(np.float64) for a in arrays], l2=STEP_L2)
    flops = step_flops(n, m, d, t)
    n_terms = n + m + d + t
    u = unit_roundoff(dtype)
    candidates = {
        "fastbp": lambda: _backprop.backprop(*arrays, l2=STEP_L2),
        "numpy": lambda: numpy_step(*arrays, l2=STEP_L2),
    }
    torch = torch_or_none()
    if torch is not None:
        tensors = [torch.from_numpy(a) for a in arrays]
        candidates["torch"] = lambda: torch_step(torch, *tensors, l2=STEP_L2)
    jax = jax_or_none()
    if jax is not None:
        jax_call = jax_step(jax, l2=STEP_L2)
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
    """The library behind NumPy's ``@`` and its kernels, e.g. "OpenBLAS SkylakeX", else "BLAS"."""
    from .blas import blas_libraries

    names = {"openblas": "OpenBLAS", "mkl": "MKL", "blis": "BLIS", "flexiblas": "FlexiBLAS"}
    for library in blas_libraries() or []:
        if library["owner"] == "numpy":
            name = names.get(library["api"], library["api"] or "BLAS")
            return f"{name} {library['architecture']}" if library["architecture"] else name
    return "BLAS"


def _peak(dtype, threads, cache, rounds=REFERENCE_ROUNDS):
    """The peak a step table is compared with, timed once per run for each (dtype, threads).

    The larger of two figures, both on ``threads`` threads in ``dtype``: the
    FMA loop of :mod:`.peak` (independent fused multiply-adds at the CPU's
    vector width, one loop per thread; what the core can do, whatever
    BLAS), and a square product through NumPy's BLAS
    (:func:`.breakdown.reference_product`, side :data:`STEP_REFERENCE_SIDE`;
    what a tuned library reaches).  Timed the first time a (dtype, threads)
    pair is asked for and kept in ``cache`` (a dict the run owns).

    Returns
    -------
    dict
        ``gflops`` (the larger), ``fma`` and ``blas`` (GFLOP/s of each),
        ``blas_label`` (the product, named with NumPy's BLAS kernels).
    """
    key = (dtype, threads)
    if key not in cache:
        from .breakdown import reference_product
        from .peak import peak_gflops

        side = STEP_REFERENCE_SIDE
        call, flops = reference_product(dtype, side)
        with thread_limits(threads):
            if threads > 1:
                time.sleep(SETTLE_SECONDS)  # threads the last table left spinning go idle
            seconds = interleaved_medians(
                {"reference": call},
                rounds,
                min_time=0.02,
                warmup=WARMUP_SECONDS if threads > 1 else 0.0,
            )["reference"]
        blas = gflops(flops, seconds)
        if threads > 1:
            # The reference's BLAS threads spin after it, on the cores the FMA loop
            # needs: they go idle first.
            time.sleep(SETTLE_SECONDS)
        fma = peak_gflops(dtype, threads, rounds)
        cache[key] = {
            "gflops": max(fma, blas),
            "fma": fma,
            "blas": blas,
            "blas_label": f"{_numpy_blas_name()} {side}³ product",
        }
    return cache[key]


#: Idle time before each timing on more than one thread (see
#: :func:`.timing.interleaved_medians`): longer than OpenBLAS's spin.
SETTLE_SECONDS = 0.25
#: Untimed calls after the settle (at least one): threads woken, caches warm.
WARMUP_SECONDS = 0.02


def _time_table(title, rows, threads_list, repeats, reference=None):
    """Time ``rows`` at each thread count; print one table per count.

    ``reference``, for the step tables, is called as ``reference(threads)``
    and gives the peak (:func:`_peak`) that :func:`_print_table` compares
    each row with.  Each peer library with a row here gets a ratio column
    (:data:`PEERS`).  A row that runs on a fixed number of CPUs whatever the
    thread settings (``row.cpus``, JAX) is timed only in the table of that
    many threads; elsewhere a note says why it is missing.
    """
    records = []
    torch = torch_or_none()
    implementations = {row.implementation for row in rows}
    peers = tuple(peer for peer in PEERS if peer in implementations)
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
            records += _print_table(title, active, medians, threads, table_reference, peers)
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

    torch = torch_or_none()  # imported first, so the header names its kernels
    jax = jax_or_none()  # step rows only
    others = [name for name, module in (("PyTorch", torch), ("JAX", jax)) if module is not None]
    likewise = f" (likewise {', '.join('x ' + name for name in others)})" if others else ""
    print(
        "fastbp bench: median of interleaved rounds; 'x NumPy' = NumPy's time / this time"
        + likewise
    )
    print(machine_description())
    # The kernels behind every baseline; a WARNING line where they are narrower than the CPU.
    for line in baseline_description(torch=torch):
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
    if torch is not None:
        print(f"PyTorch {torch.__version__} found: torch rows added")
    if jax is not None:
        print(
            f"JAX {jax.__version__} found: jax rows added to the step tables "
            f"(on the {schedulable_cpus()} CPU(s) this process may use)"
        )

    records = []
    for shape in shapes:
        n, d, t = parse_shape(shape)
        for dtype in dtypes:
            max_flops = QUICK_MAX_FLOPS if args.quick else float("inf")
            rows = _grad_rows(shape, dtype, max_flops)
            m = input_width(d)
            title = f"n={n} d={d} t={t} {dtype}"
            if forward_flops(n, m, d, t) > max_flops:
                title += f" (--quick: forward, m={m}, left out)"
            else:
                title += f" (forward: m={m})"
            if n * d * t > OUTER_MAX_MULTIPLY_ADDS:
                title += " (outer left out: too slow here)"
            for record in _time_table(title, rows, threads_list, repeats):
                records.append(dict(record, shape=shape, dtype=dtype))

    print(
        f"\nFused step (cost and four gradients, l2 = {STEP_L2} in every implementation): "
        "checks within 16·(n+m+d+t)·u normwise (heuristic);\n'% peak' = GFLOP/s as a "
        "percentage of the peak, the larger of a compiled loop of independent FMAs at the "
        "CPU's vector width\nand a square "
        f"{STEP_REFERENCE_SIDE}³ product through NumPy's BLAS, each in the same dtype on "
        "the same threads, timed once in this run"
    )
    peaks = {}
    peak_rounds = min(REFERENCE_ROUNDS, repeats)
    for shape in step_shapes:
        n, m, d, t = parse_shape(shape)
        for dtype in dtypes:
            title = f"fused step n={n} m={m} d={d} t={t} {dtype}"
            rows = _step_rows(shape, dtype)
            reference = functools.partial(_peak, dtype, cache=peaks, rounds=peak_rounds)
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
