"""fastbp: fast, provably correct backpropagation kernels for sigmoid MLPs on the CPU.

The public functions validate and normalise their inputs, then call private
Numba kernels (compiled lazily, on first use).  Notation follows the seed
derivation: examples are rows, ``X`` (n, m), ``A_h`` (n, d), ``A_out`` and
``Y`` and ``delta_out`` (n, t), ``W_out`` and ``grad_W_out`` (d, t).
"""

from . import datasets, privacy
from ._backprop import (
    BackpropResult,
    backprop,
    default_backprop_chunks,
    delta_h,
    grad_b_h,
    grad_W_h,
    l2_penalty,
)
from ._core import (
    GRAD_W_OUT_METHODS,
    cost,
    default_n_chunks,
    delta_out,
    forward,
    grad_b_out,
    grad_W_out,
    grad_W_out_blocked,
    grad_W_out_matmul,
    grad_W_out_outer,
    sigmoid,
)
from ._private import (
    PER_EXAMPLE_GRADS_MAX_ELEMENTS,
    DPBackpropResult,
    DPEpochResult,
    PerExampleGrads,
    dp_backprop,
    dp_sgd_epoch,
    per_example_grad_norms,
    per_example_grads,
)
from ._sgd import sgd_epoch
from .mlp import MLP

__version__ = "0.1.0"

__all__ = [
    "BackpropResult",
    "DPBackpropResult",
    "DPEpochResult",
    "GRAD_W_OUT_METHODS",
    "MLP",
    "PER_EXAMPLE_GRADS_MAX_ELEMENTS",
    "PerExampleGrads",
    "backprop",
    "cost",
    "datasets",
    "default_backprop_chunks",
    "default_n_chunks",
    "delta_h",
    "delta_out",
    "dp_backprop",
    "dp_sgd_epoch",
    "forward",
    "grad_W_h",
    "grad_W_out",
    "grad_W_out_blocked",
    "grad_W_out_matmul",
    "grad_W_out_outer",
    "grad_b_h",
    "grad_b_out",
    "l2_penalty",
    "per_example_grad_norms",
    "per_example_grads",
    "privacy",
    "sgd_epoch",
    "sigmoid",
]
