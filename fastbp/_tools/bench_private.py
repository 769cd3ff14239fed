"""``fastbp bench --private``: private training's cost against the plain step and epoch.

Three tables, each timed in interleaved rounds on one thread (BLAS and
Numba), ratios taken within the run:

* the step: :func:`fastbp.dp_backprop` (clipping and noise, and clipping
  alone) and :func:`fastbp.per_example_grad_norms` against
  :func:`fastbp.backprop` on the same minibatch;
* the epoch: :func:`fastbp.dp_sgd_epoch` on the digits (sample rate 32/n,
  the same number of steps in expectation) against :func:`fastbp.sgd_epoch`
  with minibatches of 32; the DP epoch's time includes drawing its batches
  and noise;
* Opacus, where it is installed (never a dependency): its DP step (per-sample
  gradients by hooks, clipping, noise, the optimiser's step) on the same
  network in PyTorch, float64, against fastbp's DP step with its update.
"""

import warnings

import numpy as np

import fastbp

from ..datasets import load_digits
from .problems import make_problem, step_arrays
from .timing import format_seconds, interleaved_medians, thread_limits

__all__ = ["private_section"]

#: (n, m, d, t) of the step table: the digits' minibatch, MNIST's minibatch and a large batch.
STEP_SHAPES = ("32x64x100x10", "256x784x100x10", "1000x784x100x10")
QUICK_STEP_SHAPES = ("32x64x100x10",)
#: The DP settings timed: clipping norm C, noise multiplier σ, L2 λ.
MAX_GRAD_NORM = 1.0
NOISE_MULTIPLIER = 1.1
L2 = 0.01


def _step_candidates(arrays, rng_seed=0):
    rng = np.random.default_rng(rng_seed)

    def dp_call(sigma):
        return lambda: fastbp.dp_backprop(
            *arrays, max_grad_norm=MAX_GRAD_NORM, noise_multiplier=sigma, rng=rng, l2=L2,
            n_threads=1,
        )  # fmt: skip

    return {
        "backprop": lambda: fastbp.backprop(*arrays, l2=L2, n_threads=1),
        "dp_backprop": dp_call(NOISE_MULTIPLIER),
        "dp_backprop, no noise": dp_call(0.0),
        "per_example_grad_norms": lambda: fastbp.per_example_grad_norms(*arrays, n_threads=1),
    }


def _epoch_candidates(X, Y, start, batch, epochs):
    n = X.shape[0]
    orders = [np.random.default_rng(e).permutation(n) for e in range(epochs)]
    q = batch / n
    steps = n // batch
    weights = {name: [w.copy() for w in start] for name in ("plain", "dp", "dp0")}

    def restore(name):
        for w, w0 in zip(weights[name], start):
            np.copyto(w, w0)
        return weights[name]

    def run_sgd():
        W = restore("plain")
        for order in orders:
            fastbp.sgd_epoch(X, Y, *W, order, 0.02, batch, L2)

    def run_dp(name, sigma):
        def run():
            W = restore(name)
            rng = np.random.default_rng(1)
            for _ in range(epochs):
                fastbp.dp_sgd_epoch(
                    X, Y, *W, sample_rate=q, eta=0.02 * batch, max_grad_norm=MAX_GRAD_NORM,
                    noise_multiplier=sigma, rng=rng, steps=steps, l2=L2,
                )  # fmt: skip

        return run

    return {
        "sgd_epoch": run_sgd,
        "dp_sgd_epoch": run_dp("dp", NOISE_MULTIPLIER),
        "dp_sgd_epoch, no noise": run_dp("dp0", 0.0),
    }


def _opacus_candidates(arrays):
    """Opacus's DP step and fastbp's, both with their update, or {} without Opacus."""
    try:
        import torch
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer
    except ImportError:
        return {}
    X, Y, W_h, b_h, W_out, b_out = (np.asarray(a, dtype=np.float64) for a in arrays)
    n = X.shape[0]
    model = torch.nn.Sequential(
        torch.nn.Linear(W_h.shape[0], W_h.shape[1]),
        torch.nn.Sigmoid(),
        torch.nn.Linear(W_out.shape[0], W_out.shape[1]),
    ).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(W_h.T))
        model[0].bias.copy_(torch.from_numpy(b_h))
        model[2].weight.copy_(torch.from_numpy(W_out.T))
        model[2].bias.copy_(torch.from_numpy(b_out))
    module = GradSampleModule(model)
    optimizer = DPOptimizer(
        torch.optim.SGD(module.parameters(), lr=0.01, weight_decay=L2),
        noise_multiplier=NOISE_MULTIPLIER,
        max_grad_norm=MAX_GRAD_NORM,
        expected_batch_size=n,
    )
    X_t, Y_t = torch.from_numpy(X), torch.from_numpy(Y)
    loss_function = torch.nn.BCEWithLogitsLoss(reduction="sum")
    weights = [w.copy() for w in (W_h, b_h, W_out, b_out)]
    rng = np.random.default_rng(0)

    def opacus_step():
        optimizer.zero_grad()
        loss_function(module(X_t), Y_t).backward()
        optimizer.step()

    def fastbp_step():
        result = fastbp.dp_backprop(
            X, Y, *weights, max_grad_norm=MAX_GRAD_NORM, noise_multiplier=NOISE_MULTIPLIER,
            rng=rng, l2=L2, n_threads=1,
        )  # fmt: skip
        for w, g in zip(weights, result[1:5]):
            w -= (0.01 / n) * g

    return {"fastbp dp_backprop + step": fastbp_step, "opacus DP step": opacus_step}


def _print_rows(medians, baseline, label):
    header = f"{'implementation':<26} {'median':>10} {label:>14}"
    print(header)
    print("-" * len(header))
    for name, seconds in medians.items():
        ratio = seconds / medians[baseline]
        print(f"{name:<26} {format_seconds(seconds):>10} {ratio:>14.3f}")


def private_section(dtypes, repeats, quick):
    """Print the private-training tables; return their records (no check can fail here)."""
    print(
        "\nPrivate training, 1 thread (BLAS 1, Numba 1): time / the plain computation's time; "
        f"C = {MAX_GRAD_NORM}, sigma = {NOISE_MULTIPLIER}, l2 = {L2}"
    )
    records = []
    for shape in QUICK_STEP_SHAPES if quick else STEP_SHAPES:
        n, m, d, t = map(int, shape.split("x"))
        for dtype in dtypes:
            arrays = step_arrays(make_problem(n, m, d, t, dtype))
            with thread_limits(1):
                medians = interleaved_medians(_step_candidates(arrays), repeats, min_time=0.02)
            print(f"\nstep {shape} {dtype}")
            _print_rows(medians, "backprop", "x backprop")
            records += [
                {"kernel": "private step", "implementation": name, "shape": shape,
                 "dtype": dtype, "seconds": s, "check": "n/a"}
                for name, s in medians.items()
            ]  # fmt: skip
    X_all, y_all = load_digits()
    epochs = 2 if quick else 20
    for dtype in dtypes:
        X = np.ascontiguousarray(X_all, dtype=dtype)
        Y = np.eye(10, dtype=dtype)[y_all]
        rng = np.random.default_rng(3)
        start = (
            (0.1 * rng.standard_normal((64, 100))).astype(dtype),
            np.zeros(100, dtype),
            (0.1 * rng.standard_normal((100, 10))).astype(dtype),
            np.zeros(10, dtype),
        )
        with thread_limits(1):
            medians = interleaved_medians(_epoch_candidates(X, Y, start, 32, epochs), repeats)
        print(
            f"\ndigits 1797x64x100x10, minibatch 32 (sample rate 32/1797), {epochs} epochs, {dtype}"
        )
        _print_rows(medians, "sgd_epoch", "x sgd_epoch")
        records += [
            {"kernel": "private epoch", "implementation": name, "shape": "digits/32",
             "dtype": dtype, "seconds": s, "check": "n/a"}
            for name, s in medians.items()
        ]  # fmt: skip
    for shape in QUICK_STEP_SHAPES if quick else ("32x64x100x10", "256x784x100x10"):
        n, m, d, t = map(int, shape.split("x"))
        candidates = _opacus_candidates(step_arrays(make_problem(n, m, d, t, "float64")))
        if not candidates:
            print("\nOpacus: not installed, its comparison left out")
            break
        import torch

        from .problems import torch_threads

        with thread_limits(1), torch_threads(torch, 1), warnings.catch_warnings():
            # Opacus's per-sample hooks warn that no input requires a gradient: none needs to.
            warnings.filterwarnings("ignore", message="Full backward hook", category=UserWarning)
            medians = interleaved_medians(candidates, repeats, min_time=0.02)
        print(f"\nOpacus against fastbp, DP step with its update, {shape} float64")
        _print_rows(medians, "fastbp dp_backprop + step", "x fastbp")
    return records
