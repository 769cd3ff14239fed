"""Ctrl-C during MLP.fit stops at the next epoch boundary with that epoch's weights.

A child process trains for many epochs; the parent sends it SIGINT in the
middle of an epoch.  The child then compares its model with a lone fit of as
many epochs as its history records: the same bits, or the interrupt landed
inside an epoch.
"""

import json
import signal
import subprocess
import sys
import time

import pytest

CHILD = """
import json, sys
import numpy as np
from fastbp import MLP

solver = sys.argv[1]
rng = np.random.default_rng(0)
n = 20000 if solver == "sgd" else 60000
X = rng.random((n, 100))
y = rng.integers(0, 10, n)
settings = dict(n_hidden=64, eta=0.001, minibatch_size=1, seed=5, solver=solver)


def report(epoch, model):
    print(epoch, flush=True)


model = MLP(epochs=10000, **settings)
try:
    model.fit(X, y, callback=report)
    print(json.dumps({"interrupted": False}))
except KeyboardInterrupt as interrupt:
    done = len(model.history_["cost"])
    lone = MLP(epochs=done, **settings).fit(X, y)
    same = all(
        np.array_equal(getattr(model, name), getattr(lone, name))
        for name in ("W_h", "b_h", "W_out", "b_out")
    )
    print(json.dumps({
        "interrupted": True, "epochs": done, "same_weights": bool(same),
        "same_history": all(
            np.array_equal(model.history_[key], lone.history_[key], equal_nan=True)
            for key in ("cost", "train_acc", "valid_acc")
        ),
        "message": str(interrupt),
    }))
"""


@pytest.mark.parametrize("solver", ["sgd", "lbfgs"])
def test_ctrl_c_stops_at_the_next_epoch_boundary(solver):
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, solver], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "1"
        start = time.perf_counter()
        assert child.stdout.readline().strip() == "2"
        epoch_time = time.perf_counter() - start
        time.sleep(epoch_time / 3)  # inside epoch 3's compiled call, most likely
        child.send_signal(signal.SIGINT)
        lines = child.stdout.read().splitlines()
        assert child.wait(timeout=300) == 0
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    result = json.loads(lines[-1])
    assert result["interrupted"]
    assert result["epochs"] >= 2 and lines[-2] == str(result["epochs"])
    assert result["same_weights"] and result["same_history"]
    assert f"interrupted after epoch {result['epochs']}" in result["message"]


def test_the_handler_is_restored_and_fit_outside_the_main_thread_is_unchanged():
    import signal as signal_module
    import threading

    import numpy as np

    from fastbp import MLP

    X = np.random.default_rng(0).random((20, 3))
    y = np.arange(20) % 2
    handler = signal_module.getsignal(signal_module.SIGINT)
    MLP(n_hidden=2, epochs=2, seed=0).fit(X, y)
    assert signal_module.getsignal(signal_module.SIGINT) is handler
    errors = []

    def fit_in_thread():
        try:
            MLP(n_hidden=2, epochs=2, seed=0).fit(X, y)
        except Exception as error:  # signal.signal would raise ValueError here
            errors.append(error)

    thread = threading.Thread(target=fit_in_thread)
    thread.start()
    thread.join()
    assert errors == []
