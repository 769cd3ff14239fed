"""Python threads: separate fits at once give each model a lone fit's bits; backprop from
threads stays correct while another thread runs ``fastbp compile``."""

import json
import subprocess
import sys
import threading

import numpy as np

from fastbp import MLP

from reference import small_problem

WEIGHTS = ("W_h", "b_h", "W_out", "b_out")


def fit_settings():
    """Four different fits: both solvers, both dtypes, steps on one and on two Numba threads."""
    X, y = small_problem(n=300, m=24, t=4)
    return [
        (dict(n_hidden=8, epochs=6, eta=0.01, minibatch_size=5, seed=1), X, y),
        (dict(n_hidden=8, epochs=6, eta=0.01, minibatch_size=7, seed=2, dtype=np.float32), X, y),
        # 256 examples a step, 2 threads: the threaded fused step, step by step in Python.
        (dict(n_hidden=40, epochs=3, eta=0.001, minibatch_size=256, seed=3, n_threads=2), X, y),
        (dict(n_hidden=8, epochs=5, seed=4, solver="lbfgs"), X, y),
    ]


def test_four_threads_fitting_separate_models_get_the_bits_of_lone_fits():
    settings = fit_settings()
    lone = [MLP(**options).fit(X, y) for options, X, y in settings]
    for round in range(3):
        models = [MLP(**options) for options, _, _ in settings]
        barrier = threading.Barrier(len(models))
        errors = []

        def fit(model, X, y):
            try:
                barrier.wait()
                model.fit(X, y)
            except Exception as error:
                errors.append(error)

        threads = [
            threading.Thread(target=fit, args=(model, X, y))
            for model, (_, X, y) in zip(models, settings)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        for model, alone in zip(models, lone):
            for name in WEIGHTS:
                assert np.array_equal(getattr(model, name), getattr(alone, name)), name
            for key, values in alone.history_.items():
                assert np.array_equal(model.history_[key], values, equal_nan=True), key


# A fresh process, so that no kernel is loaded yet: `fastbp compile` (in process, as the
# command line runs it) loads or compiles every kernel while three threads call backprop
# on problems that take the serial, the chunked and the shared-chunk kernels.  Each
# thread's results are compared with the same calls made afterwards, alone.
CHILD = """
import contextlib, io, json, threading
import numpy as np
import fastbp
from fastbp._tools import cli

rng = np.random.default_rng(0)

def network(n, m, d, t, dtype):
    return (rng.random((n, m)).astype(dtype), np.eye(t, dtype=dtype)[rng.integers(0, t, n)],
            rng.normal(0, 0.5, (m, d)).astype(dtype), np.zeros(d, dtype),
            rng.normal(0, 0.5, (d, t)).astype(dtype), np.zeros(t, dtype))

problems = [
    (network(50, 8, 5, 3, np.float64), {}),
    (network(600, 16, 40, 10, np.float32), {"n_threads": 2}),
    (network(100, 64, 64, 10, np.float64), {"n_threads": 2, "l2": 0.5}),
]
results = {}
errors = []
status = {}
start = threading.Barrier(len(problems) + 1)

def compile_everything():
    start.wait()
    with contextlib.redirect_stdout(io.StringIO()) as out:
        status["compile"] = cli.main(["compile", "--jobs", "1"])
    status["rows"] = sum(line.startswith("  ") for line in out.getvalue().splitlines())

def step(i):
    arrays, options = problems[i]
    try:
        start.wait()
        results[i] = [fastbp.backprop(*arrays, **options) for _ in range(20)]
    except Exception as error:
        errors.append(repr(error))

threads = [threading.Thread(target=compile_everything)]
threads += [threading.Thread(target=step, args=(i,)) for i in range(len(problems))]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
same = []
for i, (arrays, options) in enumerate(problems):
    alone = fastbp.backprop(*arrays, **options)
    same.append(all(
        all(np.array_equal(a, b) for a, b in zip(result, alone)) for result in results.get(i, [])
    ) and len(results.get(i, [])) == 20)
print(json.dumps({"errors": errors, "same": same, **status}))
"""


def test_backprop_from_threads_while_fastbp_compile_runs():
    result = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["errors"] == []
    assert report["compile"] == 0 and report["rows"] >= 28  # both dtypes, every call
    assert report["same"] == [True, True, True]
