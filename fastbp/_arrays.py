"""Arrays allocated inside compiled kernels: ``empty`` and ``zeros``.

Numba compiles an overload such as ``np.empty`` once per argument types *and*
per set of compile flags of the kernel that calls it (a kernel's
Python-entry twin, its threaded variant and a ``fastmath`` kernel each have
their own), and ``np.zeros`` as ``np.empty`` plus a fill: three compilations
each time.  Kernels allocate through these two helpers instead, which share
one set of flags, so each NumPy overload compiles once per shape type and
dtype.  The array is made at its shape, never reshaped: a reshape goes
through a runtime helper that hides the shape from LLVM, which then
vectorises a caller's loops over it differently.  No checks happen here.
"""

import numpy as np

from ._jit import kernel


@kernel(linked=True)
def empty(shape, dtype):
    """An uninitialised C-contiguous array of ``shape`` (a tuple of ints) and ``dtype``."""
    return np.empty(shape, dtype)


@kernel(linked=True)
def zeros(shape, dtype):
    """A C-contiguous array of zeros of ``shape`` (a tuple of ints) and ``dtype``."""
    out = np.empty(shape, dtype)
    out[:] = 0
    return out
