"""The asv suite (benchmarks/): each class's setup and one timed call on a small set.

No timing is asserted anywhere: the machine is shared and figures move.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastbp
from fastbp._tools import problems
from fastbp._tools.problems import numpy_step

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def suite(monkeypatch):
    monkeypatch.syspath_prepend(REPOSITORY)
    import benchmarks.bench_backprop
    import benchmarks.bench_first_call
    import benchmarks.bench_forward
    import benchmarks.bench_grad
    import benchmarks.bench_sgd_epoch

    return benchmarks


def blas(suite):
    """The one value of the ``blas`` parameter: the kernels NumPy's and SciPy's BLAS run here."""
    (kernels,) = suite.common.BLAS_KERNELS
    return kernels


def run_benchmark(cls, params, names):
    """What asv does for one parameter set: setup, the named methods, teardown."""
    benchmark = cls()
    benchmark.setup(*params)
    try:
        results = [getattr(benchmark, name)(*params) for name in names]
    finally:
        if hasattr(benchmark, "teardown"):
            benchmark.teardown(*params)
    return results


@pytest.mark.parametrize("method", ["outer", "blocked", "matmul", "numpy"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_asv_grad(suite, method, dtype):
    _, gflops = run_benchmark(
        suite.bench_grad.GradWOut,
        ("100x100x10", dtype, method, 1, blas(suite)),
        ["time_grad_W_out", "track_gflops"],
    )
    assert gflops > 0
    assert suite.bench_grad.GradWOut.track_gflops.unit == "GFLOP/s"


def test_asv_grad_two_threads_and_skips(suite):
    run_benchmark(
        suite.bench_grad.GradWOut,
        ("100x100x10", "float64", "blocked", 2, blas(suite)),
        ["time_grad_W_out"],
    )
    for params in [
        ("100x100x10", "float64", "outer", 2, blas(suite)),
        ("4096x1024x1024", "float64", "outer", 1, blas(suite)),
    ]:
        with pytest.raises(NotImplementedError):
            suite.bench_grad.GradWOut().setup(*params)


def test_asv_grad_b_out(suite):
    for implementation in ("fastbp", "numpy"):
        run_benchmark(
            suite.bench_grad.GradBOut,
            ("100x100x10", "float32", implementation),
            ["time_grad_b_out"],
        )


@pytest.mark.parametrize("implementation", ["fastbp", "numpy"])
def test_asv_forward_and_output_layer(suite, implementation):
    _, gflops = run_benchmark(
        suite.bench_forward.Forward,
        ("100x100x10", "float32", implementation, 1, blas(suite)),
        ["time_forward", "track_gflops"],
    )
    assert gflops > 0
    results = run_benchmark(
        suite.bench_forward.OutputLayer,
        ("100x100x10", "float64", implementation),
        ["time_delta_out", "time_cost", "track_delta_out_gflops", "track_cost_gflops"],
    )
    assert min(results[2:]) > 0


def test_asv_backprop_step(suite):
    _, gflops = run_benchmark(
        suite.bench_backprop.BackpropStep,
        ("100x784x100x10", "float32", "numpy", 1, blas(suite)),
        ["time_step", "track_gflops"],
    )
    assert gflops > 0
    import fastbp

    if hasattr(fastbp, "backprop"):
        run_benchmark(
            suite.bench_backprop.BackpropStep,
            ("100x784x100x10", "float32", "fastbp", 1, blas(suite)),
            ["time_step"],
        )
    else:
        with pytest.raises(NotImplementedError):
            suite.bench_backprop.BackpropStep().setup(
                "100x784x100x10", "float32", "fastbp", 1, blas(suite)
            )


@pytest.mark.parametrize("implementation", ["torch", "jax"])
def test_asv_backprop_step_torch_and_jax_or_skipped(suite, implementation, monkeypatch):
    BackpropStep = suite.bench_backprop.BackpropStep
    installed = getattr(problems, f"{implementation}_or_none")() is not None
    threads = 1 if implementation == "torch" else suite.bench_backprop._schedulable_cpus()
    params = ("32x64x100x10", "float64", implementation, threads, blas(suite))
    if installed and threads <= 2:
        _, gflops = run_benchmark(BackpropStep, params, ["time_step", "track_gflops"])
        assert gflops > 0
    if implementation == "jax" and installed:
        # XLA ignores the thread limits: other thread counts are skipped.
        with pytest.raises(NotImplementedError, match="JAX runs on every CPU"):
            BackpropStep().setup(*params[:3], threads + 1, blas(suite))
    monkeypatch.setitem(sys.modules, implementation, None)  # as where it is not installed
    with pytest.raises(NotImplementedError, match="not installed"):
        BackpropStep().setup(*params)


def test_asv_numpy_step_matches_finite_structure(suite):
    """The NumPy baseline step returns the cost and four gradients of the right shapes."""
    common = suite.common
    data = common.dataset(5, 4, 3, "float64", m=6)
    cost, grad_W_h, grad_b_h, grad_W_out, grad_b_out = common.numpy_step(
        *[data[k] for k in ("X", "Y", "W_h", "b_h", "W_out", "b_out")]
    )
    assert np.ndim(cost) == 0
    assert grad_W_h.shape == (6, 4) and grad_b_h.shape == (4,)
    assert grad_W_out.shape == (4, 3) and grad_b_out.shape == (3,)


DIGITS_EPOCH = "1797x64x100x10"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_asv_sgd_epoch_numpy_times_the_same_epoch_every_call(suite, dtype):
    benchmark = suite.bench_sgd_epoch.SgdEpoch()
    params = (DIGITS_EPOCH, dtype, "numpy", blas(suite))
    benchmark.setup(*params)
    try:
        costs = [benchmark.call() for _ in range(2)]
        assert benchmark.track_gflops(*params) > 0
    finally:
        benchmark.teardown(*params)
    # The weights are restored before each call: no drift from one call to the next.
    assert costs[0] == costs[1] and np.isfinite(costs[0])
    assert set(suite.bench_sgd_epoch.EPOCHS) == {"1797x64x100x10", "6000x784x100x10"}


def test_asv_sgd_epoch_numpy_baseline_is_the_per_step_loop(suite):
    epochs = suite.bench_sgd_epoch
    X, Y, start, order, minibatch_size, eta = epochs.epoch_data(DIGITS_EPOCH, "float64")
    order = order[:100]  # three minibatches of 32, four examples left over
    weights = [np.array(w) for w in start]
    cost = epochs.numpy_sgd_epoch(X, Y, *weights, order, eta, minibatch_size, l2=0.5)
    expected = [np.array(w) for w in start]
    expected_cost = 0.0
    for step in range(3):
        rows = order[step * 32 : (step + 1) * 32]
        J, *gradients = numpy_step(X[rows], Y[rows], *expected)
        expected_cost += J + 0.25 * (np.sum(expected[0] ** 2) + np.sum(expected[2] ** 2))
        gradients[0] = gradients[0] + 0.5 * expected[0]
        gradients[2] = gradients[2] + 0.5 * expected[2]
        for weight, gradient in zip(expected, gradients):
            weight -= eta * gradient
    assert cost == pytest.approx(expected_cost, rel=1e-12)
    for weight, wanted in zip(weights, expected):
        np.testing.assert_allclose(weight, wanted, rtol=1e-12, atol=1e-15)


def test_asv_sgd_epoch_fastbp_or_skipped(suite, monkeypatch):
    SgdEpoch = suite.bench_sgd_epoch.SgdEpoch
    if hasattr(fastbp, "sgd_epoch"):
        costs = {}
        for implementation in ("fastbp", "numpy"):
            benchmark = SgdEpoch()
            params = (DIGITS_EPOCH, "float64", implementation, blas(suite))
            benchmark.setup(*params)
            try:
                benchmark.time_epoch(*params)
                costs[implementation] = benchmark.call()
            finally:
                benchmark.teardown(*params)
        # Both sides train the same epoch: the costs agree to rounding.
        assert costs["fastbp"] == pytest.approx(costs["numpy"], rel=1e-9)
    monkeypatch.delattr(fastbp, "sgd_epoch", raising=False)  # as on an older commit
    with pytest.raises(NotImplementedError, match="sgd_epoch"):
        SgdEpoch().setup(DIGITS_EPOCH, "float64", "fastbp", blas(suite))
    monkeypatch.setitem(sys.modules, "fastbp.datasets", None)  # a commit without the digits
    with pytest.raises(NotImplementedError, match="digits"):
        SgdEpoch().setup(DIGITS_EPOCH, "float64", "numpy", blas(suite))


@pytest.mark.parametrize("cache", ["cold", "cached"])
def test_asv_first_call(suite, cache):
    (seconds,) = run_benchmark(
        suite.bench_first_call.FirstCall,
        ("matmul", "float32", cache),
        ["track_import_and_first_call"],
    )
    assert seconds > 0


def test_asv_first_call_seconds_cold_then_cached(suite, tmp_path):
    first_call_seconds = suite.bench_first_call.first_call_seconds
    cold = first_call_seconds("matmul", "float32", cache_dir=tmp_path)
    assert any(tmp_path.iterdir())  # the cold process saved what it compiled
    cached = first_call_seconds("matmul", "float32", cache_dir=tmp_path)
    assert set(cold) == set(cached) == {"import", "first_call"}
    with pytest.raises(ValueError, match="method must be one of"):
        first_call_seconds("nope", "float32", tmp_path)


def test_asv_dask_step_runs_on_one_numba_thread_per_worker(suite, monkeypatch):
    pytest.importorskip("distributed")
    import benchmarks.bench_dask as bench_dask

    monkeypatch.setattr(bench_dask, "SHAPE", "1200x20x8x3")
    before = os.environ.get("NUMBA_NUM_THREADS")
    for implementation in ("in-memory", "dask-1x1"):
        # setup raises where a worker runs more than one Numba thread
        _, gflops = run_benchmark(
            bench_dask.DaskStep, (implementation,), ["time_step", "track_gflops"]
        )
        assert gflops > 0
    # The workers' setting does not stay in this process (Numba would refuse
    # it at the next compilation once its threads run).
    assert os.environ.get("NUMBA_NUM_THREADS") == before


def test_asv_dask_calls_take_two_weight_sets_in_turn(suite):
    import benchmarks.bench_dask as bench_dask

    weights = (np.ones((3, 2)), np.zeros(2))
    turns = bench_dask.alternating_weights(weights)
    first, second, third = next(turns), next(turns), next(turns)
    assert first is weights and third is weights
    assert all(not np.array_equal(a, b) for a, b in zip(first, second))


# --------------------------------------------------------------------------
# One definition of the shapes, the problems and the reference steps
# --------------------------------------------------------------------------


def test_the_suite_times_fastbp_benchs_shapes_data_and_reference_steps(suite):
    from fastbp._tools import bench

    common = suite.common
    assert common.GRAD_SHAPES == list(bench.GRAD_SHAPES) == list(problems.GRAD_SHAPES)
    assert common.STEP_SHAPES == list(bench.STEP_SHAPES) == list(problems.STEP_SHAPES)
    assert suite.bench_backprop.BackpropStep.params[0] == list(problems.STEP_SHAPES)
    assert suite.bench_grad.GradWOut.params[0] == list(problems.GRAD_SHAPES)
    assert common.numpy_step is problems.numpy_step
    assert common.torch_step is problems.torch_step and common.jax_step is problems.jax_step
    # The same seeded arrays as fastbp bench's (make_problem), read-only in the suite.
    data = common.dataset(7, 4, 3, "float32", m=5)
    for name, value in problems.make_problem(7, 5, 4, 3, "float32").items():
        assert np.array_equal(data[name], value) and not data[name].flags.writeable


# --------------------------------------------------------------------------
# The kernels behind the BLAS baselines, recorded as a parameter
# --------------------------------------------------------------------------


def test_every_blas_baseline_records_the_kernels_it_ran_on(suite):
    kernels = blas(suite)
    assert "numpy=" in kernels and "scipy=" in kernels
    for cls in (
        suite.bench_grad.GradWOut,
        suite.bench_forward.Forward,
        suite.bench_backprop.BackpropStep,
        suite.bench_sgd_epoch.SgdEpoch,
    ):
        assert cls.param_names[-1] == "blas" and cls.params[-1] == [kernels], cls


def test_blas_kernels_id_names_library_version_and_kernels(suite):
    libraries = [
        {"owner": "scipy", "label": "SciPy", "api": "openblas", "version": "0.3.30",
         "architecture": "Haswell"},
        {"owner": "numpy", "label": "NumPy", "api": "openblas", "version": "0.3.31",
         "architecture": "SkylakeX"},
        {"owner": "torch", "label": "PyTorch", "api": "openblas", "version": "0.3.2",
         "architecture": "Zen"},
    ]  # fmt: skip
    assert suite.common.blas_kernels(libraries) == (
        "numpy=openblas-0.3.31-SkylakeX,scipy=openblas-0.3.30-Haswell"
    )
    assert suite.common.blas_kernels([]) == "unknown"


def test_a_run_on_other_kernels_than_its_parameter_is_skipped(suite):
    with pytest.raises(NotImplementedError, match="BLAS kernels are"):
        suite.bench_forward.Forward().setup(
            "100x100x10", "float64", "numpy", 1, "numpy=openblas-0.3.31-Haswell"
        )


# --------------------------------------------------------------------------
# Thread limits reach every BLAS, SciPy's (Numba's @) included
# --------------------------------------------------------------------------

# A fresh interpreter (no BLAS but NumPy's loaded yet) runs one benchmark's setup on one
# thread, then reports every BLAS library's threads while the benchmark is entered.
_THREADS_CHILD = textwrap.dedent(
    """
    import json, sys
    import benchmarks.bench_backprop, benchmarks.bench_grad
    from benchmarks.common import BLAS_KERNELS
    from threadpoolctl import threadpool_info
    module, name, params = json.loads(sys.argv[1])
    benchmark = getattr(getattr(benchmarks, module), name)()
    benchmark.setup(*params, BLAS_KERNELS[0])
    try:
        entered = [
            [info["filepath"], info["num_threads"]]
            for info in threadpool_info()
            if info["user_api"] == "blas"
        ]
    finally:
        benchmark.teardown(*params, BLAS_KERNELS[0])
    print(json.dumps(entered))
    """
)


@pytest.mark.parametrize(
    ("module", "name", "params"),
    [
        # matmul: Numba's @ loads SciPy's BLAS at its first call, after the limits are set.
        ("bench_grad", "GradWOut", ["100x100x10", "float64", "matmul", 1]),
        ("bench_backprop", "BackpropStep", ["32x64x100x10", "float64", "numpy", 1]),
    ],
)
def test_a_one_thread_benchmark_runs_one_thread_in_every_blas(module, name, params):
    pytest.importorskip("threadpoolctl")
    import json

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [REPOSITORY] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    # OpenBLAS's own default (one thread per CPU, at most 3), whatever this environment
    # set: a library the limits missed shows more than one thread on two cores or more.
    env["OPENBLAS_NUM_THREADS"] = "3"
    completed = subprocess.run(
        [sys.executable, "-c", _THREADS_CHILD, json.dumps([module, name, params])],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=REPOSITORY,
    )
    entered = json.loads(completed.stdout.strip().splitlines()[-1])
    # Wheels ship one OpenBLAS each in numpy.libs and scipy.libs (a conda environment
    # shares one): every library loaded, SciPy's included, runs one thread.
    assert entered and all(threads == 1 for _, threads in entered), entered
    if any("numpy.libs" in path for path, _ in entered):
        assert any("scipy.libs" in path for path, _ in entered), entered
