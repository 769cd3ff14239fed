"""``fastbp bench`` (fastbp/_tools/bench.py): its tables, checks, peak, ratio columns and JAX rows.

No timing is asserted anywhere: the machine is shared and figures move.
"""

import re
import sys

import numba
import numpy as np
import pytest

from fastbp._tools import bench, breakdown, problems
from fastbp._tools.cli import build_parser, shape_list
from fastbp._tools.problems import numpy_step

TINY = ("--shapes", "7x5x3", "--step-shapes", "6x4x5x3", "--repeats", "1", "--threads", "1")


def parse(*arguments):
    """``fastbp bench`` options, parsed (and validated) by the command line's parser."""
    return build_parser().parse_args(["bench", *arguments])


def test_bench_tiny_prints_tables_and_exits_0(capsys):
    status = bench.run(parse(*TINY))
    out = capsys.readouterr().out
    assert status == 0
    assert "BLAS" in out
    assert "n=7 d=5 t=3 float32" in out and "n=7 d=5 t=3 float64" in out
    for row in (
        "grad_W_out   outer",
        "grad_W_out   blocked",
        "grad_W_out   matmul",
        "grad_W_out   numpy",
        "forward      fastbp",
        "delta_out    fastbp",
        "cost         fastbp",
    ):
        assert row in out
    assert "FAIL" not in out


def test_bench_two_thread_counts_leave_serial_kernels_out_of_the_second_table(capsys):
    status = bench.run(
        parse(
            "--shapes",
            "9x4x2",
            "--step-shapes",
            "6x4x5x3",
            "--dtypes",
            "float64",
            "--repeats",
            "1",
            "--threads",
            "1,2",
        )
    )
    out = capsys.readouterr().out
    assert status == 0
    second = out.split("[threads=2")[1]
    assert "grad_W_out   blocked" in second and "grad_W_out   outer" not in second


def test_bench_plot_writes_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "bench.png"
    assert bench.run(parse(*TINY, "--dtypes", "float64", "--plot", str(path))) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_plot_without_matplotlib_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    # A None entry in sys.modules makes ``import matplotlib`` raise ImportError.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    status = bench.run(parse(*TINY, "--plot", str(tmp_path / "bench.png")))
    err = capsys.readouterr().err
    assert status == 2
    assert "matplotlib" in err and "pip install 'fastbp[plot]'" in err
    assert not (tmp_path / "bench.png").exists()


def step_tables(out):
    """{title line: [row tokens]} of each fused-step table in ``out``."""
    tables = {}
    lines = out.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("fused step "):
            rows = []
            for row in lines[index + 3 :]:  # title, column header, rule
                if not row.startswith("step "):
                    break
                rows.append(row.split())
            tables[line] = rows
    return tables


PEAK = re.compile(
    r"peak: ([0-9.e+]+) GFLOP/s, the larger of the FMA loop's ([0-9.e+]+) "
    r"and the (.+) 2048³ product's ([0-9.e+]+)$"
)


def test_step_tables_give_the_peak_and_each_rows_percentage_of_it(capsys):
    assert bench.run(parse(*TINY, "--dtypes", "float64")) == 0
    out = capsys.readouterr().out
    tables = step_tables(out)
    assert len(tables) == 1
    ((title, rows),) = tables.items()
    match = PEAK.search(title)
    assert match, title
    peak, fma, blas = (float(match.group(k)) for k in (1, 2, 4))
    assert fma > 0 and blas > 0
    assert peak == pytest.approx(max(fma, blas), rel=0.01)  # the larger of the two
    header = out.splitlines()[out.splitlines().index(title) + 1].split()
    assert header[header.index("GFLOP/s") + 1 : header.index("GFLOP/s") + 3] == ["%", "peak"]
    assert {row[1] for row in rows} >= {"fastbp", "numpy"}
    for row in rows:
        # kernel, implementation, median and its unit, GFLOP/s, % peak, x NumPy, ..., check
        rate, percent = float(row[4]), float(row[5])
        assert percent == pytest.approx(100 * rate / peak, rel=0.01)  # 3 digits each
    # The gradient tables have no peak.
    gradient_titles = [line for line in out.splitlines() if line.startswith("n=7 d=5 t=3")]
    assert gradient_titles and not any("peak:" in line for line in gradient_titles)


def test_the_fma_loop_on_several_threads_waits_for_blas_threads_to_settle(monkeypatch):
    # OpenBLAS's threads spin for a while after the reference product; timed
    # right after it, the FMA loop on 2 threads shared the cores with them.
    # So a settle comes between the two (and before the reference itself).
    from fastbp._tools import peak

    events = []
    monkeypatch.setattr(bench.time, "sleep", lambda seconds: events.append(("sleep", seconds)))
    monkeypatch.setattr(
        breakdown,
        "reference_product",
        lambda dtype, side=None, operands=None: (lambda: events.append(("blas",)), 2.0e9),
    )

    def fma_loop(dtype, threads, rounds):
        events.append(("fma", threads))
        return 1.0

    monkeypatch.setattr(peak, "peak_gflops", fma_loop)
    for threads in (1, 2):
        events.clear()
        bench._peak("float32", threads, {}, 1)
        kinds = [event[0] for event in events]
        assert kinds[-1] == "fma" and "blas" in kinds
        last_blas = len(kinds) - 1 - kinds[::-1].index("blas")
        settles = [k for k in range(last_blas + 1, len(kinds) - 1) if kinds[k] == "sleep"]
        if threads == 1:
            assert "sleep" not in kinds  # one thread: nothing else can spin on its core
        else:
            assert settles and events[settles[-1]][1] == bench.SETTLE_SECONDS


def test_the_peak_is_timed_once_per_dtype_and_thread_count(monkeypatch, capsys):
    made = []
    real = breakdown.reference_product

    def counted(dtype, side=breakdown.REFERENCE_SIDE, operands=None):
        made.append((dtype, side))
        return real(dtype, side, operands)

    monkeypatch.setattr(breakdown, "reference_product", counted)
    threads = "1,2" if numba.config.NUMBA_NUM_THREADS >= 2 else "1"
    arguments = (
        "--shapes",
        "7x5x3",
        "--step-shapes",
        "6x4x5x3,9x4x5x3",
        "--repeats",
        "1",
        "--threads",
        threads,
    )
    assert bench.run(parse(*arguments)) == 0
    tables = step_tables(capsys.readouterr().out)
    n_threads = len(threads.split(","))
    assert len(tables) == 2 * 2 * n_threads  # shapes × dtypes × thread counts
    assert sorted(made) == sorted(
        (dtype, bench.STEP_REFERENCE_SIDE)
        for dtype in ("float32", "float64")
        for _ in range(n_threads)
    )
    # Each (dtype, threads) pair shows one figure in all its tables.
    figures = {}
    for title in tables:
        key = (title.split()[6], title.split("[threads=")[1].split(":")[0])
        figures.setdefault(key, set()).add(title.split("peak: ")[1])
    assert len(figures) == 2 * n_threads and all(len(f) == 1 for f in figures.values())


def test_default_step_shapes_hold_the_minibatches_and_the_earlier_shapes():
    minibatches = {f"{n}x{m}x100x10" for n in (32, 128, 256) for m in (64, 784)}
    earlier = {"100x784x100x10", "1000x784x100x10", "60000x784x100x10", "10000x64x512x64"}
    assert set(bench.STEP_SHAPES) == minibatches | earlier
    assert len(bench.STEP_SHAPES) == len(set(bench.STEP_SHAPES))
    assert set(bench.QUICK_STEP_SHAPES) < set(bench.STEP_SHAPES)
    assert shape_list(4)(",".join(bench.STEP_SHAPES)) == list(bench.STEP_SHAPES)


@pytest.mark.parametrize("quick", [False, True])
def test_run_times_the_default_step_shapes_or_the_quick_ones(monkeypatch, capsys, quick):
    titles = []
    monkeypatch.setattr(bench, "_grad_rows", lambda *args: [])
    monkeypatch.setattr(bench, "_step_rows", lambda *args: [])
    monkeypatch.setattr(
        bench, "_time_table", lambda title, *args, **kwargs: titles.append(title) or []
    )
    arguments = ("--dtypes", "float64", "--threads", "1") + (("--quick",) if quick else ())
    assert bench.run(parse(*arguments)) == 0
    step_titles = [title for title in titles if title.startswith("fused step")]
    expected = bench.QUICK_STEP_SHAPES if quick else bench.STEP_SHAPES
    shapes = ["x".join(part.split("=")[1] for part in title.split()[2:6]) for title in step_titles]
    assert shapes == list(expected)


def fixed_cpus_rows(cpus):
    """A NumPy row that follows the thread settings and a row that runs on ``cpus`` CPUs."""
    return [
        bench._Row("step", "numpy", lambda: None, 1e6),
        bench._Row("step", "jax", lambda: None, 1e6, cpus=cpus),
    ]


def test_a_row_on_more_cpus_than_the_one_thread_table_is_left_out_with_a_note(capsys):
    bench._time_table("fused step demo", fixed_cpus_rows(2), [1], 1)
    out = capsys.readouterr().out
    assert "step         numpy" in out and "step         jax" not in out
    note = [line for line in out.splitlines() if line.startswith("jax: left out")]
    assert len(note) == 1 and "taskset -c 0" in note[0] and "2 CPU(s)" in note[0]


def test_a_row_pinned_to_one_cpu_is_in_the_one_thread_table_only(capsys):
    threads = [1, 2] if numba.config.NUMBA_NUM_THREADS >= 2 else [1]
    records = bench._time_table("fused step demo", fixed_cpus_rows(1), threads, 1)
    out = capsys.readouterr().out
    jax_tables = [r["threads"] for r in records if r["implementation"] == "jax"]
    assert jax_tables == [1]
    assert "taskset" not in out
    if len(threads) == 2:
        assert "jax: left out of this table" in out.split("[threads=2")[1]


def fake_jax():
    """A stand-in for JAX with NumPy underneath: ``loss`` is run for the value, the
    gradients come from the NumPy step, so the bench's plumbing is tested without JAX."""
    import types

    def value_and_grad(loss):
        def both(weights, X, Y):
            _, *gradients = numpy_step(X, Y, *weights)
            return loss(weights, X, Y), tuple(gradients)

        return both

    return types.SimpleNamespace(
        __version__="fake",
        numpy=np,
        nn=types.SimpleNamespace(sigmoid=problems._sigmoid),
        jit=lambda function: function,
        value_and_grad=value_and_grad,
        device_put=np.asarray,
        block_until_ready=lambda tree: tree,
    )


@pytest.mark.parametrize("cpus", [1, 2])
def test_jax_rows_from_a_fake_jax_follow_the_cpus_of_the_process(monkeypatch, capsys, cpus):
    monkeypatch.setattr(bench, "jax_or_none", fake_jax)
    monkeypatch.setattr(bench, "schedulable_cpus", lambda: cpus)
    assert bench.run(parse(*TINY, "--dtypes", "float64")) == 0
    out = capsys.readouterr().out
    assert "JAX fake found" in out
    ((_, rows),) = step_tables(out).items()
    jax_rows = [row for row in rows if row[1] == "jax"]
    if cpus == 1:
        # The check is the last column, "ok (… of bound)": the loss is the NumPy step's cost.
        assert len(jax_rows) == 1 and jax_rows[0][-4] == "ok"
        assert "left out" not in out
    else:
        assert not jax_rows and "jax: left out of this table" in out and "taskset -c 0" in out


def test_a_wrong_jax_loss_fails_its_check(monkeypatch):
    def wrong_loss_jax():
        jax = fake_jax()
        right = jax.value_and_grad
        jax.value_and_grad = lambda loss: right(lambda *args: 1.01 * loss(*args))
        return jax

    monkeypatch.setattr(bench, "jax_or_none", wrong_loss_jax)
    rows = {row.implementation: row for row in bench._step_rows("6x4x5x3", "float64")}
    assert rows["jax"].check > 1 and rows["numpy"].check <= 1


def test_jax_step_with_real_jax_passes_its_check_on_the_processs_cpus():
    pytest.importorskip("jax")
    for dtype in ("float32", "float64"):
        rows = {row.implementation: row for row in bench._step_rows("40x12x17x3", dtype)}
        assert rows["jax"].check <= 1
        assert rows["jax"].cpus == bench.schedulable_cpus()
        assert rows["numpy"].cpus is None
    # float64 rows are computed in float64 (JAX's x64 switched on by _jax).
    import jax

    assert jax.config.jax_enable_x64


def test_without_jax_no_row_and_no_note(monkeypatch, capsys):
    # A None entry in sys.modules makes ``import jax`` raise ImportError.
    monkeypatch.setitem(sys.modules, "jax", None)
    assert problems.jax_or_none() is None
    assert bench.run(parse(*TINY, "--dtypes", "float32")) == 0
    out = capsys.readouterr().out
    assert "jax" not in out.lower()


@pytest.mark.parametrize(
    "arguments",
    [("--shapes", "7x5"), ("--dtypes", "float16"), ("--threads", "0"), ("--repeats", "0")],
)
def test_bench_bad_arguments_exit_2(arguments, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse(*arguments)
    assert exit_info.value.code == 2
    assert "fastbp bench:" in capsys.readouterr().err


def test_first_call_section_prints_cold_and_cached_per_call(monkeypatch, capsys):
    def fake(dtype, cache_dir):
        fake.folders.append(cache_dir)
        cached = len(fake.folders) % 2 == 0
        return {
            "import": 0.25,
            "calls": [
                ["forward", 0.001 if cached else 1.5],
                ["backprop", 0.002 if cached else 12.0],
            ],
        }

    fake.folders = []
    monkeypatch.setattr(bench, "first_calls_seconds", fake)
    bench._first_call_section(["float64"])
    out = capsys.readouterr().out
    assert fake.folders[0] == fake.folders[1]  # the cached run reads what the cold one wrote
    assert "float64: import fastbp" in out
    assert any(line.split()[:1] == ["backprop"] and "12" in line for line in out.splitlines())
    assert any(line.split()[:1] == ["all"] for line in out.splitlines())


def test_each_peer_gets_a_ratio_column_of_its_time_over_the_rows(capsys):
    rows = [bench._Row("step", name, lambda: None, 1e6) for name in ("fastbp", "numpy", "torch")]
    medians = {"step/fastbp": 1e-3, "step/numpy": 2e-3, "step/torch": 3e-3}
    records = bench._print_table(
        "fused step demo", rows, medians, 1, None, ("numpy", "torch", "jax")
    )
    fastbp_record = records[0]
    assert fastbp_record["ratios"] == {
        "numpy": pytest.approx(2.0),
        "torch": pytest.approx(3.0),
        "jax": pytest.approx(float("nan"), nan_ok=True),
    }
    assert records[1]["ratios"]["numpy"] == pytest.approx(1.0)
    assert records[2]["ratios"]["numpy"] == pytest.approx(2 / 3)


def test_ratio_columns_are_printed_with_n_a_where_a_peer_has_no_row(capsys):
    rows = [bench._Row("step", name, lambda: None, 1e6) for name in ("fastbp", "numpy", "torch")]
    medians = {"step/fastbp": 1e-3, "step/numpy": 2e-3, "step/torch": 3e-3}
    bench._print_table("fused step demo", rows, medians, 1, None, ("numpy", "torch", "jax"))
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("kernel"))
    assert "x NumPy" in header and "x PyTorch" in header and "x JAX" in header
    fastbp_row = next(line for line in lines if line.startswith("step         fastbp")).split()
    # kernel, implementation, median and unit, GFLOP/s, x NumPy, x PyTorch, x JAX, check "-"
    assert fastbp_row[-4:] == ["2.00", "3.00", "n/a", "-"]


def test_the_step_tables_have_a_column_per_installed_peer(monkeypatch, capsys):
    monkeypatch.setattr(bench, "jax_or_none", fake_jax)
    monkeypatch.setattr(bench, "schedulable_cpus", lambda: 1)
    assert bench.run(parse(*TINY, "--dtypes", "float64")) == 0
    out = capsys.readouterr().out
    title = next(iter(step_tables(out)))
    header = out.splitlines()[out.splitlines().index(title) + 1]
    assert "x NumPy" in header and "x JAX" in header
    assert ("x PyTorch" in header) == (problems.torch_or_none() is not None)


def test_every_reference_step_adds_the_l2_term_as_fastbp_does():
    import fastbp

    arrays = problems.step_arrays(problems.make_problem(9, 4, 5, 3, "float64"))
    expected = fastbp.backprop(*arrays, l2=problems.STEP_L2)
    steps = {"numpy": problems.numpy_step(*arrays, l2=problems.STEP_L2)}
    torch = problems.torch_or_none()
    if torch is not None:
        tensors = [torch.from_numpy(a) for a in arrays]
        steps["torch"] = [
            r.numpy() for r in problems.torch_step(torch, *tensors, l2=problems.STEP_L2)
        ]
    jax = problems.jax_or_none() or fake_jax()
    cost, gradients = problems.jax_step(jax, l2=problems.STEP_L2)(
        tuple(arrays[2:]), arrays[0], arrays[1]
    )
    steps["jax"] = [np.asarray(cost), *(np.asarray(g) for g in gradients)]
    plain = problems.numpy_step(*arrays)
    for name, results in steps.items():
        for result, wanted, without in zip(results, expected, plain):
            np.testing.assert_allclose(result, wanted, rtol=1e-12, atol=1e-14, err_msg=name)
        # The term is there: the cost and the weights' gradients move by (λ/2)ΣW² and λW.
        assert not np.allclose(results[0], plain[0], rtol=1e-12, atol=0), name


def test_a_reference_step_without_the_l2_term_fails_its_check(monkeypatch):
    monkeypatch.setattr(bench, "numpy_step", lambda *arrays, l2=0.0: problems.numpy_step(*arrays))
    monkeypatch.setattr(bench, "jax_or_none", lambda: None)
    monkeypatch.setattr(bench, "torch_or_none", lambda: None)
    # The float64 reference drops the term too, so fastbp's row is the one that fails.
    rows = {row.implementation: row for row in bench._step_rows("6x4x5x3", "float64")}
    assert rows["fastbp"].check > 1
