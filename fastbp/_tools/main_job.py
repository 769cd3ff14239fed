"""The main job (``fastbp`` with no command): ∂J/∂W_out three ways, checked and timed.

It builds a seeded synthetic problem shaped like the book's MNIST network
(n = 60000, m = 784, d = 100, t = 10 by default), runs the forward pass and
δ_out, computes ∂J/∂W_out all three ways, checks each against a
wider-precision reference within the proven rounding bound, and prints a
table of median times, GFLOP/s and speed ratios to NumPy's
``A_h.T @ delta_out`` measured in the same run.  Exit status 1 if any check
fails.
"""

import sys

import numpy as np

from .. import __version__, _core
from .._validate import require_fits
from .blas import baseline_description
from .bounds import grad_W_out_reference, worst_excess
from .problems import make_problem
from .timing import (
    format_seconds,
    gflops,
    interleaved_medians,
    machine_description,
    thread_limits,
)

__all__ = ["run"]


def run(args, out=None):
    """Run the main job with parsed ``args``, writing to ``out`` (default stdout).

    Returns
    -------
    int
        0 when every check passes, 1 when one fails, 2 when the problem would
        not fit in memory.
    """
    out = sys.stdout if out is None else out
    dtype = np.dtype(args.dtype)
    threads = args.threads
    n, m, d, t = args.n, args.m, args.d, args.t
    try:  # refused by name before anything is allocated
        for name, shape in (("X", (n, m)), ("A_h", (n, d)), ("Y", (n, t))):
            require_fits(f"the problem's {name}", shape, dtype)
    except ValueError as error:
        print(f"fastbp: {error}", file=sys.stderr)
        return 2
    data = make_problem(n, m, d, t, dtype, args.seed)

    def emit(line=""):
        print(line, file=out)

    emit(f"fastbp {__version__}: ∂J/∂W_out three ways, n={n} m={m} d={d} t={t} {dtype.name}")
    emit(machine_description())
    with thread_limits(threads):
        emit(f"threads: {threads} Numba, {threads} BLAS")
        # The kernels behind NumPy's column, and a warning where they are narrower than the CPU.
        for line in baseline_description():
            emit(line)

        A_h, A_out = _core.forward(
            data["X"], data["W_h"], data["b_h"], data["W_out"], data["b_out"]
        )
        delta = _core.delta_out(A_out, data["Y"])
        J = _core.cost(A_out, data["Y"])
        grad_b = _core.grad_b_out(delta)

        methods = {
            "numpy": lambda: A_h.T @ delta,
            "outer": lambda: _core.grad_W_out_outer(A_h, delta),
            "blocked": lambda: _core.grad_W_out_blocked(A_h, delta),
            "matmul": lambda: _core.grad_W_out_matmul(A_h, delta),
        }
        results = {name: function() for name, function in methods.items()}
        times = interleaved_medians(methods, args.repeats, min_time=1e-3)
        forward_time = interleaved_medians(
            {
                "forward": lambda: _core.forward(
                    data["X"], data["W_h"], data["b_h"], data["W_out"], data["b_out"]
                )
            },
            max(3, args.repeats // 2),
            min_time=1e-3,
        )["forward"]

    reference, bound = grad_W_out_reference(A_h, delta)
    bias_reference = delta.astype(reference.dtype).sum(axis=0)
    bias_bound = grad_W_out_reference(np.ones((n, 1), dtype=dtype), delta)[1][0]
    _, bias_ratio = worst_excess(grad_b, bias_reference, bias_bound)

    emit(f"forward pass: {format_seconds(forward_time)}; cost J = {float(J):.6g}")
    emit()
    flops = 2.0 * n * d * t
    header = (
        f"{'method':<8} {'median ms':>10} {'GFLOP/s':>8} {'vs numpy':>9} "
        f"{'max |diff|':>11} {'max bound':>11} {'diff/bound':>10}  equal"
    )
    emit(header)
    emit("-" * len(header))
    failures = 0
    max_bound = float(bound.max()) if bound.size else 0.0
    for name in methods:
        difference, ratio = worst_excess(results[name], reference, bound)
        ok = ratio <= 1.0 and results[name].shape == (d, t) and results[name].dtype == dtype
        failures += (not ok) and name != "numpy"
        emit(
            f"{name:<8} {times[name] * 1e3:>10.3f} {gflops(flops, times[name]):>8.2f} "
            f"{times['numpy'] / times[name]:>8.2f}x {difference:>11.3e} "
            f"{max_bound:>11.3e} {ratio:>10.2e}  "
            f"{'pass' if ok else 'FAIL'}"
        )
    bias_ok = bias_ratio <= 1.0
    failures += not bias_ok
    emit()
    emit(f"grad_b_out within its bound: {'pass' if bias_ok else 'FAIL'}")
    emit(
        "equal: every element within γ_n·(|A_h|ᵀ|δ_out|) of a "
        f"{reference.dtype.name} reference (n = {n}), i.e. diff/bound ≤ 1; "
        "'vs numpy' > 1 means faster than NumPy"
    )
    if failures:
        emit(f"{failures} check(s) FAILED")
        return 1
    emit("all checks passed")
    return 0
