"""The ``fastbp`` command line: every command's options, their validation, and dispatch.

This module only wires :mod:`argparse`; the work is done by the tool
modules: :mod:`.main_job` (no command), :mod:`.bench` (``bench``),
:mod:`.train` (``train``) and :mod:`.compile` (``compile``, ``cache``).
Every option is validated here by its ``type``, so a bad value ends the
command with argparse's usage message and exit status 2 before any work
starts.  Every command writes its results to stdout and its errors to
stderr as ``fastbp <command>: ...``, and returns 0 on success, 1 when a
check fails, and 2 when it cannot run as asked (an optional package
missing, a value the model refuses).
"""

import argparse
import gc
import math

import numba

from .. import __version__
from .bench import GRAD_SHAPES, QUICK_STEP_SHAPES, STEP_SHAPES
from .train import DEFAULTS

__all__ = ["build_parser", "main"]

DTYPES = ("float32", "float64")

# --------------------------------------------------------------------------
# Argument types: each returns the value or raises ArgumentTypeError
# --------------------------------------------------------------------------


def _integer(text, least, what):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
    return value


def positive_int(text):
    """An integer ≥ 1."""
    return _integer(text, 1, "a positive integer")


def non_negative_int(text):
    """An integer ≥ 0."""
    return _integer(text, 0, "a non-negative integer")


def _real(text, positive):
    what = "a positive finite number" if positive else "a non-negative finite number"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
    return value


def positive_float(text):
    """A finite number > 0 (nan, inf and words refused)."""
    return _real(text, positive=True)


def non_negative_float(text):
    """A finite number ≥ 0 (nan, inf and words refused)."""
    return _real(text, positive=False)


def thread_count(text):
    """A thread count from 1 to ``NUMBA_NUM_THREADS``."""
    value = positive_int(text)
    if value > numba.config.NUMBA_NUM_THREADS:
        raise argparse.ArgumentTypeError(
            f"{value} exceeds NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS}"
        )
    return value


def thread_list(text):
    """Comma-separated thread counts, each from 1 to ``NUMBA_NUM_THREADS``."""
    return [thread_count(item.strip()) for item in text.split(",")]


def dtype_list(text):
    """Comma-separated dtype names, each float32 or float64, duplicates dropped."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in DTYPES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {', '.join(DTYPES)}, got {text!r}"
        )
    return list(dict.fromkeys(names))


def shape_list(length):
    """A type for comma-separated shapes of ``length`` positive integers joined by 'x'."""

    def parse(text):
        shapes = []
        for item in text.split(","):
            sizes = item.strip().lower().split("x")
            if len(sizes) != length or not all(s.isdigit() and int(s) > 0 for s in sizes):
                raise argparse.ArgumentTypeError(
                    f"a shape is {length} positive integers joined by 'x', got {item!r}"
                )
            shapes.append("x".join(str(int(size)) for size in sizes))
        return shapes

    parse.__name__ = f"shape list of {length}"
    return parse


# --------------------------------------------------------------------------
# Each command's options
# --------------------------------------------------------------------------


def _add_main_job_options(parser):
    group = parser.add_argument_group("main job (when no command is given)")
    group.add_argument("-n", type=non_negative_int, default=60000, help="examples (default 60000)")
    group.add_argument("-m", type=positive_int, default=784, help="inputs (default 784)")
    group.add_argument("-d", type=positive_int, default=100, help="hidden units (default 100)")
    group.add_argument("-t", type=positive_int, default=10, help="outputs (default 10)")
    group.add_argument(
        "--dtype", choices=DTYPES, default="float64", help="precision (default float64)"
    )
    group.add_argument(
        "--repeats", type=positive_int, default=7, help="timed rounds, medians reported (default 7)"
    )
    group.add_argument(
        "--threads",
        type=thread_count,
        default=1,
        help=(
            "BLAS and Numba threads (default 1: on few cores, OpenBLAS threads that spin "
            "between NumPy calls take cores from Numba's and blur the comparison)"
        ),
    )
    group.add_argument("--seed", type=non_negative_int, default=0, help="data seed (default 0)")


def _add_bench_options(parser):
    parser.add_argument(
        "--shapes",
        type=shape_list(3),
        help="gradient shapes n x d x t, comma-separated "
        f"(default {','.join(GRAD_SHAPES)}); the forward pass uses m = 784 "
        "inputs where d = 100 and m = d otherwise",
    )
    parser.add_argument(
        "--step-shapes",
        type=shape_list(4),
        help=f"fused-step shapes n x m x d x t, comma-separated (default {','.join(STEP_SHAPES)})",
    )
    parser.add_argument(
        "--dtypes",
        type=dtype_list,
        default=list(DTYPES),
        help="comma-separated (default float32,float64)",
    )
    parser.add_argument(
        "--threads",
        type=thread_list,
        default=None,
        help="BLAS = Numba thread counts, comma-separated (default 1 and all cores)",
    )
    parser.add_argument(
        "--repeats",
        type=positive_int,
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
        "--private",
        action="store_true",
        help="also time private training on one thread: fastbp.dp_backprop and "
        "fastbp.per_example_grad_norms against fastbp.backprop, fastbp.dp_sgd_epoch against "
        "fastbp.sgd_epoch on the digits, and Opacus's DP step where Opacus is installed",
    )
    parser.add_argument(
        "--first-call",
        action="store_true",
        help="also time import fastbp and each public function's first call in a fresh "
        "process, cold (empty cache) and from the on-disk cache, per dtype",
    )


def _add_train_options(parser):
    parser.add_argument(
        "--hidden",
        type=positive_int,
        default=DEFAULTS["hidden"],
        metavar="D",
        help=f"hidden units (default {DEFAULTS['hidden']})",
    )
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=DEFAULTS["epochs"],
        help=f"passes over the training set (default {DEFAULTS['epochs']})",
    )
    parser.add_argument(
        "--eta",
        type=positive_float,
        default=DEFAULTS["eta"],
        help=f"learning rate, per example (default {DEFAULTS['eta']})",
    )
    parser.add_argument(
        "--minibatch-size",
        type=positive_int,
        default=DEFAULTS["minibatch_size"],
        metavar="B",
        help=f"examples per step (default {DEFAULTS['minibatch_size']})",
    )
    parser.add_argument(
        "--l2",
        type=non_negative_float,
        default=DEFAULTS["l2"],
        help=f"L2 penalty λ on the weights (default {DEFAULTS['l2']})",
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=DEFAULTS["seed"],
        help="seed of the split, the initial weights and the shuffles "
        f"(default {DEFAULTS['seed']})",
    )
    parser.add_argument(
        "--threads",
        type=thread_count,
        default=None,
        metavar="N",
        help="Numba threads (default: numba.get_num_threads())",
    )
    parser.add_argument(
        "--plot",
        metavar="FILE.png",
        default=None,
        help="save learning curves (needs matplotlib: pip install 'fastbp[plot]')",
    )


def _add_compile_options(parser):
    parser.add_argument(
        "--dtypes",
        type=dtype_list,
        default=list(DTYPES),
        metavar="LIST",
        help="comma-separated dtypes to compile for (default float32,float64)",
    )
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=None,
        metavar="N",
        help="processes compiling side by side, one dtype each "
        "(default: one per dtype, at most one per usable core)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="compile in this process and print each kernel's compile time "
        "(Numba's compile events), its callees' excluded, slowest first",
    )


def _add_cache_options(parser):
    parser.add_argument(
        "--clear",
        action="store_true",
        help="delete every fastbp cache folder under the root (nothing else)",
    )


# --------------------------------------------------------------------------
# The parser and the entry point
# --------------------------------------------------------------------------


def _runner(module, function):
    """A command's run function, imported when the command runs."""

    def run(args):
        import importlib

        return getattr(importlib.import_module(f"fastbp._tools.{module}"), function)(args)

    return run


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
    _add_main_job_options(parser)
    parser.set_defaults(run=_runner("main_job", "run"))
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text, add_options, module, function in (
        ("bench", "benchmark every kernel against NumPy over a sweep of shapes",
         _add_bench_options, "bench", "run"),
        ("train", "train a 64-100-10 network on the 8x8 digits", _add_train_options, "train",
         "run"),
        ("compile", "compile every kernel into the on-disk cache ahead of use",
         _add_compile_options, "compile", "run_compile"),
        ("cache", "show the compiled-code cache's folder and size (--clear empties it)",
         _add_cache_options, "compile", "run_cache"),
    ):  # fmt: skip
        command = commands.add_parser(name, help=help_text, description=help_text)
        add_options(command)
        command.set_defaults(run=_runner(module, function))
    return parser


def main(argv=None):
    """Entry point of the ``fastbp`` console script and ``python -m fastbp``; the exit status.

    ``argv`` None (the command line itself, ``sys.argv``) means the process
    ends when this returns: the objects left then are frozen out of the
    garbage collector (:func:`gc.freeze`), so that the interpreter's exit
    does not collect Numba's compiler state (hundreds of thousands of
    objects in reference cycles after a cold start) only for the operating
    system to free the memory anyway.  Called with a list (from Python, as
    the tests do), nothing changes for the calling process.
    """
    args = build_parser().parse_args(argv)
    status = args.run(args)
    if argv is None:
        gc.freeze()
    return status
