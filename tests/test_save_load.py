"""MLP.save is atomic, MLP.load checks the file whole, and save-load-save gives the same bytes."""

import os
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from fastbp import MLP
from fastbp.mlp import FORMAT_VERSION

from reference import small_problem

WEIGHTS = ("W_h", "b_h", "W_out", "b_out")


def trained(**options):
    X, y = small_problem()
    settings = dict(n_hidden=4, epochs=2, eta=0.05, minibatch_size=5, seed=0)
    settings.update(options)
    return MLP(**settings).fit(X, y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("solver", ["sgd", "lbfgs"])
def test_save_load_save_gives_the_same_bytes(tmp_path, dtype, solver):
    model = trained(dtype=dtype, solver=solver, l2=0.125, shuffle=False)
    first, second = tmp_path / "first.npz", tmp_path / "second.npz"
    model.save(first)
    loaded = MLP.load(first)
    loaded.save(second)
    assert first.read_bytes() == second.read_bytes()
    for name in WEIGHTS:
        assert np.array_equal(getattr(loaded, name), getattr(model, name))
        assert getattr(loaded, name).dtype == np.dtype(dtype)
    assert (loaded.l2, loaded.shuffle, loaded.solver) == (0.125, False, solver)
    # Saved again later, the same model still gives the same bytes (no timestamps inside).
    os.utime(first, (0, 0))
    model.save(second)
    assert first.read_bytes() == second.read_bytes()


def test_the_file_is_an_npz_with_a_format_version(tmp_path):
    path = tmp_path / "model"
    trained().save(path)  # ".npz" is appended, as numpy.savez does
    with np.load(tmp_path / "model.npz") as archive:
        assert int(archive["format_version"]) == FORMAT_VERSION == 1
        assert set(archive.files) == {
            "format_version", *WEIGHTS, "l2", "epochs", "eta", "minibatch_size", "shuffle",
            "solver", "max_grad_norm", "noise_multiplier", "target_epsilon", "delta",
        }  # fmt: skip
    assert os.listdir(tmp_path) == ["model.npz"]  # no temporary file left behind


def test_save_to_a_file_object_and_files_without_a_version_load(tmp_path):
    model = trained()
    with open(tmp_path / "object.npz", "wb") as file:
        model.save(file)
    assert MLP.load(tmp_path / "object.npz").W_h.tolist() == model.W_h.tolist()
    # A file written before format_version existed (numpy.savez, as fastbp 0.1 wrote it).
    with np.load(tmp_path / "object.npz") as archive:
        arrays = {k: archive[k] for k in archive.files if k != "format_version"}
    np.savez(tmp_path / "old.npz", **arrays)
    assert np.array_equal(MLP.load(tmp_path / "old.npz").W_out, model.W_out)


def test_a_failed_save_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    old = trained(seed=1)
    old.save(path)
    before = path.read_bytes()
    new = trained(seed=2)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np.lib.format, "write_array", fail)
    with pytest.raises(OSError, match="disk full"):
        new.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.npz"]


def test_the_saved_file_has_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    trained().save(tmp_path / "model.npz")
    assert (tmp_path / "model.npz").stat().st_mode & 0o777 == 0o666 & ~umask


# The child saves a large model, stopping halfway through writing it: after W_h is written,
# it tells the parent and waits to be killed.  In-place writing (numpy.savez on the path)
# would leave a truncated archive there; the atomic save leaves the old file untouched.
CHILD = """
import sys, time
import numpy as np
from fastbp import MLP

path = sys.argv[1]
model = MLP(n_hidden=1000)
rng = np.random.default_rng(2)
model.W_h = rng.random((4000, 1000))
model.b_h = np.zeros(1000)
model.W_out = rng.random((1000, 10))
model.b_out = np.zeros(10)
write_array = np.lib.format.write_array

def write_then_hang(file, array, *args, **kwargs):
    write_array(file, array, *args, **kwargs)
    if array.shape == (4000, 1000):
        file.flush()
        print("half written", flush=True)
        time.sleep(600)

np.lib.format.write_array = write_then_hang
model.save(path)
"""


def test_a_save_killed_halfway_leaves_the_old_model(tmp_path):
    path = tmp_path / "model.npz"
    old = trained(seed=3)
    old.save(path)
    before = path.read_bytes()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "half written"
        temporaries = [p for p in os.listdir(tmp_path) if p != "model.npz"]
        assert len(temporaries) == 1 and temporaries[0].startswith(".model.npz.")
        assert (tmp_path / temporaries[0]).stat().st_size > 30_000_000  # W_h, 32 MB, is written
        child.kill()
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert path.read_bytes() == before
    loaded = MLP.load(path)
    assert np.array_equal(loaded.W_h, old.W_h)


LOOP_CHILD = """
import sys
import time
import numpy as np
from fastbp import MLP

path = sys.argv[1]
for i in range(1000):
    model = MLP(n_hidden=500)
    model.W_h = np.full((2000, 500), float(i))
    model.b_h = np.zeros(500)
    model.W_out = np.full((500, 10), float(i))
    model.b_out = np.zeros(10)
    model.save(path)
    print(i, flush=True)
"""


def test_saves_killed_at_random_times_always_leave_a_whole_model(tmp_path):
    # Without the hook: kill a child that saves 8 MB models in a loop, at an unplanned moment.
    path = tmp_path / "model.npz"
    rng = np.random.default_rng(0)
    for round in range(8):
        child = subprocess.Popen(
            [sys.executable, "-c", LOOP_CHILD, str(path)], stdout=subprocess.PIPE, text=True
        )
        try:
            saved = int(child.stdout.readline())  # at least one whole save
            for _ in range(int(rng.integers(0, 3))):
                saved = int(child.stdout.readline())
            time.sleep(rng.uniform(0, 0.02))  # a save takes about that long
        finally:
            child.kill()
            child.wait()
            child.stdout.close()
        model = MLP.load(path)
        value = model.W_h[0, 0]
        assert value >= saved and np.all(model.W_h == value) and np.all(model.W_out == value)


def write(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_load_names_the_newer_format_and_this_version(tmp_path):
    import fastbp

    model = trained()
    path = tmp_path / "model.npz"
    model.save(path)
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["format_version"] = np.int64(FORMAT_VERSION + 1)
    write(path, **arrays)
    with pytest.raises(ValueError) as caught:
        MLP.load(path)
    message = str(caught.value)
    assert f"model file format {FORMAT_VERSION + 1}" in message
    assert f"fastbp {fastbp.__version__} reads formats up to {FORMAT_VERSION}" in message
    assert "upgrade fastbp" in message


def test_load_reads_nothing_unchecked(tmp_path):
    # Every check of MLP.load, one file each (the error table in test_bad_inputs covers more).
    model = trained()
    path = tmp_path / "model.npz"
    model.save(path)
    with np.load(path) as archive:
        good = {k: archive[k] for k in archive.files}
    changes = {
        "format_version": (np.array([1, 2]), "format_version must be a non-negative integer"),
        "W_h": (model.W_h[0], r"W_h must be 2-D, got shape \(4,\)"),
        "b_h": (np.array([np.nan, 0, 0, 0]), "b_h contains NaN or infinity"),
        "W_out": (np.zeros((4, 0)), r"W_out \(4, 0\) make it \(0,\)"),
        "shuffle": (np.array(1), "shuffle must be a single bool"),
        "solver": (np.str_("adam"), "holds a hyperparameter out of range: solver must be one of"),
        "minibatch_size": (np.int64(0), "minibatch_size must be a positive integer, got 0"),
    }
    for name, (value, pattern) in changes.items():
        write(path, **{**good, name: value})
        with pytest.raises(ValueError, match=pattern):
            MLP.load(path)
    # An archive whose member is not a NumPy array at all.
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, b"not an array" if name == "eta.npy" else data)
    with pytest.raises(ValueError, match="is not a valid fastbp model: eta is not a NumPy array"):
        MLP.load(path)


def test_the_loaded_model_predicts_as_the_saved_one(tmp_path):
    X, _ = small_problem()
    model = trained(dtype=np.float32)
    model.save(tmp_path / "m.npz")
    loaded = MLP.load(tmp_path / "m.npz")
    assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert loaded.history_ is None and loaded.seed is None  # neither is saved
