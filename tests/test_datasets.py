"""The shipped digits data set."""

import hashlib
from importlib import resources

import numpy as np

from fastbp.datasets import load_digits


def test_load_digits_shapes_types_and_range():
    X, y = load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float64
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    # Pixels are counts 0..16 divided by 16: exact multiples of 1/16.
    assert np.array_equal(X * 16, np.round(X * 16))
    assert np.array_equal(np.unique(y), np.arange(10))
    assert np.array_equal(np.bincount(y), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])


def test_digits_content_is_the_uci_test_set():
    X, y = load_digits()
    # Sums of the UCI optdigits.tes pixels and labels (as scikit-learn ships them).
    assert int(np.round(X * 16).sum()) == 561718
    assert int(y.sum()) == 8070
    # First image, a zero, row by row.
    assert np.array_equal(np.round(X[0] * 16).reshape(8, 8)[1], [0, 0, 13, 15, 10, 15, 5, 0])
    assert list(y[:10]) == list(range(10))


def test_stored_file_is_small_uint8_and_pickle_free():
    source = resources.files("fastbp.datasets").joinpath("digits.npz")
    data = source.read_bytes()
    assert len(data) < 64 * 1024
    with source.open("rb") as handle, np.load(handle, allow_pickle=False) as archive:
        assert sorted(archive.files) == ["labels", "pixels"]
        assert archive["pixels"].dtype == np.uint8 and archive["labels"].dtype == np.uint8
    assert hashlib.sha256(data).hexdigest()  # readable as a resource (works from a wheel)


def test_each_call_returns_fresh_arrays():
    X1, y1 = load_digits()
    X1[0, 0] = 99.0
    y1[0] = 7
    X2, y2 = load_digits()
    assert X2[0, 0] == 0.0 and y2[0] == 0
