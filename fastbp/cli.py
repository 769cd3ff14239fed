"""Command line: ``fastbp`` (the main job), ``bench``, ``train``, ``compile`` and ``cache``.

The main job builds a seeded synthetic problem shaped like the book's MNIST
network (n = 60000, m = 784, d = 100, t = 10), runs the forward pass and
δ_out, computes ∂J/∂W_out all three ways, checks each against a
wider-precision reference within the proven rounding bound, and prints a
table of median times, GFLOP/s and speed ratios to NumPy's
``A_h.T @ delta_out`` measured in the same run.  Exit status 1 if any check
fails.
"""

import argparse
import sys

import numpy as np

from . import __version__, _core
from ._checks import grad_W_out_reference, worst_excess
from ._timing import (
    blas_description,
    gflops,
    interleaved_medians,
    machine_description,
    thread_limits,
)

_DTYPES = {"float32": np.float32, "float64": np.float64}


def make_problem(n, m, d, t, dtype, seed=0):
    """A seeded synthetic problem: inputs in [0, 1), N(0, 0.1²) weights, one-hot targets.

    Parameters
    ----------
    n, m, d, t : int
        Examples, inputs, hidden units, outputs.
    dtype : numpy dtype
        float32 or float64.
    seed : int, default 0

    Returns
    -------
    dict
        ``X`` (n, m), ``W_h`` (m, d), ``b_h`` (d,), ``W_out`` (d, t),
        ``b_out`` (t,), ``Y`` (n, t), all of ``dtype``.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, t, size=n) if t > 0 else np.zeros(n, dtype=int)
    Y = np.zeros((n, t), dtype=dtype)
    if t > 0:
        Y[np.arange(n), labels] = 1
    return {
        "X": rng.random((n, m)).astype(dtype),
        "W_h": rng.normal(0.0, 0.1, (m, d)).astype(dtype),
        "b_h": np.zeros(d, dtype=dtype),
        "W_out": rng.normal(0.0, 0.1, (d, t)).astype(dtype),
        "b_out": np.zeros(t, dtype=dtype),
        "Y": Y,
    }


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def _add_main_arguments(parser):
    group = parser.add_argument_group("main job (when no command is given)")
    group.add_argument("-n", type=_non_negative, default=60000, help="examples (default 60000)")
    group.add_argument("-m", type=_non_negative, default=784, help="inputs (default 784)")
    group.add_argument("-d", type=_non_negative, default=100, help="hidden units (default 100)")
    group.add_argument("-t", type=_non_negative, default=10, help="outputs (default 10)")
    group.add_argument(
        "--dtype", choices=sorted(_DTYPES), default="float64", help="precision (default float64)"
    )
    group.add_argument(
        "--repeats", type=_positive, default=7, help="timed rounds, medians reported (default 7)"
    )
    group.add_argument(
        "--threads",
        type=_positive,
        default=1,
        help=(
            "BLAS and Numba threads (default 1: on few cores, OpenBLAS threads that spin "
            "between NumPy calls take cores from Numba's and blur the comparison)"
        ),
    )
    group.add_argument("--seed", type=int, default=0, help="data seed (default 0)")


def run_main_job(args, out=sys.stdout):
    """Run the main job with parsed ``args``; return the exit status (0 or 1)."""
    import numba

    dtype = np.dtype(_DTYPES[args.dtype])
    threads = args.threads
    if threads > numba.config.NUMBA_NUM_THREADS:
        print(
            f"fastbp: --threads {threads} exceeds NUMBA_NUM_THREADS="
            f"{numba.config.NUMBA_NUM_THREADS}",
            file=sys.stderr,
        )
        return 2
    n, m, d, t = args.n, args.m, args.d, args.t
    data = make_problem(n, m, d, t, dtype, args.seed)

    def emit(line=""):
        print(line, file=out)

    emit(f"fastbp {__version__}: ∂J/∂W_out three ways, n={n} m={m} d={d} t={t} {dtype.name}")
    emit(machine_description())
    with thread_limits(threads):
        emit(f"threads: {threads} Numba, {threads} BLAS")
        for line in blas_description():
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

    emit(f"forward pass: {forward_time * 1e3:.3f} ms; cost J = {float(J):.6g}")
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


def build_parser():
    """The argument parser of the ``fastbp`` command."""
    parser = argparse.ArgumentParser(
        prog="fastbp",
        description=(
            "Fast, provably correct backpropagation kernels. Without a command: time "
            "∂J/∂W_out = A_hᵀ δ_out three ways on a synthetic MNIST-shaped problem, "
            "check each against the rounding bound, and print a table."
        ),
    )
    parser.add_argument("--version", action="version", version=f"fastbp {__version__}")
    _add_main_arguments(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench = commands.add_parser(
        "bench", help="benchmark every kernel against NumPy over a sweep of shapes"
    )
    train = commands.add_parser("train", help="train a 64-100-10 network on the 8x8 digits")
    compile_ = commands.add_parser(
        "compile", help="compile every kernel into the on-disk cache ahead of use"
    )
    cache = commands.add_parser(
        "cache", help="show the compiled-code cache's folder and size (--clear empties it)"
    )
    from . import _bench, _compile, _train

    _bench.add_arguments(bench)
    _train.add_arguments(train)
    _compile.add_compile_arguments(compile_)
    _compile.add_cache_arguments(cache)
    bench.set_defaults(run=_bench.run)
    train.set_defaults(run=_train.run)
    compile_.set_defaults(run=_compile.run_compile)
    cache.set_defaults(run=_compile.run_cache)
    return parser


def main(argv=None):
    """Entry point of the ``fastbp`` console script and ``python -m fastbp``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        return run_main_job(args)
    return args.run(args)
