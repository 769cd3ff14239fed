"""Small data sets shipped with fastbp, loadable offline.

``digits.npz`` holds the 8×8 handwritten digits: 1,797 images, 64 pixels
each (integers 0..16), 10 classes.

Provenance and license
----------------------
E. Alpaydin and C. Kaynak, "Optical Recognition of Handwritten Digits",
UCI Machine Learning Repository, 1998, https://doi.org/10.24432/C50P49 —
licensed under Creative Commons Attribution 4.0 International (CC BY 4.0),
https://creativecommons.org/licenses/by/4.0/.

These are the 1,797 examples of the UCI *test* set (``optdigits.tes``),
taken from the copy scikit-learn ships as
``sklearn/datasets/data/digits.csv.gz`` (scikit-learn 1.9.1; SHA-256 of that
file 09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22) and
stored unchanged, in the same order, as ``uint8`` arrays ``pixels``
(1797, 64) and ``labels`` (1797,) with :func:`numpy.savez_compressed`.
Each pixel counts the "on" pixels of a 4×4 block of a 32×32 bitmap
(NIST preprocessing), hence the range 0..16.
"""

from importlib import resources

import numpy as np

__all__ = ["load_digits"]

#: Largest pixel value of the digits images (a count over a 4×4 block).
DIGITS_MAX_PIXEL = 16


def load_digits():
    """The 8×8 handwritten digits (UCI, CC BY 4.0), scaled to [0, 1].

    Returns
    -------
    X : numpy.ndarray of float64, shape (1797, 64)
        Pixels divided by 16, one image per row (row-major 8×8).
    y : numpy.ndarray of int64, shape (1797,)
        Digit labels 0..9.

    Notes
    -----
    Read with :mod:`importlib.resources`, so it works from a wheel or a zip
    import.  See the module docstring for the source and the credit the
    CC BY 4.0 license asks for.
    """
    source = resources.files(__name__).joinpath("digits.npz")
    with source.open("rb") as handle, np.load(handle, allow_pickle=False) as archive:
        pixels = archive["pixels"]
        labels = archive["labels"]
    X = pixels.astype(np.float64) / DIGITS_MAX_PIXEL
    y = labels.astype(np.int64)
    return X, y
