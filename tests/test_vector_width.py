"""The register tiles' vector width: how it is chosen, and that it never changes a result."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fastbp import _simd
from fastbp._simd import VECTOR_BYTES, choose_vector_bytes


def test_vector_width_follows_the_target_features():
    assert choose_vector_bytes(environ={}, features="+avx,+avx2,+fma,+avx512f,+avx512bw") == 64
    assert choose_vector_bytes(environ={}, features="+avx,+avx2,+fma,-avx512f") == 32
    assert choose_vector_bytes(environ={}, features="+neon") == 32
    assert choose_vector_bytes(environ={}, features="") == 32


@pytest.mark.parametrize("setting", ["32", "64", " 64 "])
def test_vector_width_setting_overrides_the_features(setting):
    expected = int(setting)
    assert (
        choose_vector_bytes(environ={"FASTBP_VECTOR_BYTES": setting}, features="+avx512f")
        == expected
    )
    assert (
        choose_vector_bytes(environ={"FASTBP_VECTOR_BYTES": setting}, features="+avx2") == expected
    )


@pytest.mark.parametrize("setting", ["16", "128", "48", "avx512", "-32"])
def test_bad_vector_width_setting_is_refused_by_name(setting):
    with pytest.raises(ValueError, match=r"FASTBP_VECTOR_BYTES must be 32 or 64.*" + setting):
        choose_vector_bytes(environ={"FASTBP_VECTOR_BYTES": setting}, features="+avx512f")


def test_import_time_width_is_the_chosen_one():
    assert VECTOR_BYTES in (32, 64)
    assert VECTOR_BYTES == choose_vector_bytes()
    # Numba's own target decides: NUMBA_CPU_FEATURES, else the host's features.
    assert isinstance(_simd._target_features(), str)


# Shapes that cross every edge of both widths: d and t below, at and between
# one and two vectors of either width, over the 128-unit blocks; n over one
# 192-example block and several chunks.
_WIDTH_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import fastbp
    from fastbp._simd import VECTOR_BYTES

    out = {"width": np.array(VECTOR_BYTES)}
    rng = np.random.default_rng(7)
    for dtype in (np.float32, np.float64):
        for n, m, d, t in [(5, 3, 1, 1), (200, 20, 9, 17), (37, 803, 100, 10), (300, 31, 131, 33)]:
            X = rng.normal(size=(n, m)).astype(dtype)
            Y = (rng.random((n, t)) < 0.5).astype(dtype)
            W_h = rng.normal(scale=0.3, size=(m, d)).astype(dtype)
            b_h = rng.normal(scale=0.1, size=d).astype(dtype)
            W_out = rng.normal(scale=0.3, size=(d, t)).astype(dtype)
            b_out = rng.normal(scale=0.1, size=t).astype(dtype)
            key = f"{np.dtype(dtype).name}_{n}_{m}_{d}_{t}"
            step = fastbp.backprop(X, Y, W_h, b_h, W_out, b_out, n_chunks=3)
            for name, value in step._asdict().items():
                out[f"{key}_{name}"] = np.asarray(value)
            A_h, A_out = fastbp.forward(X, W_h, b_h, W_out, b_out)
            out[f"{key}_blocked"] = fastbp.grad_W_out_blocked(A_h, A_out - Y, n_chunks=2)
    np.savez(sys.argv[1], **out)
    """
)


def _results_with_width(width, path):
    env = dict(os.environ, FASTBP_VECTOR_BYTES=str(width))
    result = subprocess.run(
        [sys.executable, "-c", _WIDTH_SCRIPT, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (
        f"width {width}: exit {result.returncode}\n{result.stderr[-3000:]}"
    )
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def test_both_vector_widths_give_the_same_bits(tmp_path):
    # 32-byte and 64-byte tiles run the same chain of fused multiply-adds
    # per element, so every cost and gradient is bitwise equal.
    # On a machine without AVX-512, LLVM splits the 64-byte vectors.
    narrow = _results_with_width(32, tmp_path / "narrow.npz")
    wide = _results_with_width(64, tmp_path / "wide.npz")
    assert int(narrow.pop("width")) == 32 and int(wide.pop("width")) == 64
    assert narrow.keys() == wide.keys() and len(narrow) == 2 * 4 * 6
    for name in narrow:
        assert narrow[name].dtype == wide[name].dtype, name
        assert np.array_equal(narrow[name], wide[name]), name


def test_benchmark_header_states_the_vector_width():
    from fastbp._tools.timing import machine_description

    assert f"{VECTOR_BYTES}-byte vectors" in machine_description()


def test_each_vector_width_has_its_own_cache_folder():
    # The width is compiled into the kernels, so it is part of the cache key:
    # code compiled at one width is never looked for at the other.
    code = "from fastbp import _cache; print(_cache.CACHE_ENABLED, _cache.cache_dir().name)"
    folders = {}
    for setting in ("32", "64"):
        env = dict(os.environ, FASTBP_CACHE="1", FASTBP_VECTOR_BYTES=setting)
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        enabled, folders[setting] = result.stdout.split()
        assert enabled == "True"
    assert folders["32"] != folders["64"]
