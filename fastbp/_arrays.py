"""Arrays allocated inside compiled kernels: ``empty`` and ``zeros``.

Numba compiles an overload such as ``np.empty`` once per argument types *and*
per set of compile flags of the kernel that calls it (a kernel's
Python-entry twin, its threaded variant and a ``fastmath`` kernel each have
their own), and ``np.zeros`` as ``np.empty`` plus a fill: three compilations
each time.  Kernels allocate through these two helpers instead, which
compile once per shape type and dtype whatever their caller's flags, and
call ``np.empty`` with one signature per dtype.  No checks happen here.
"""

import numpy as np

from ._jit import kernel


@kernel(linked=True)
def empty(shape, dtype):
    """An uninitialised C-contiguous array of ``shape`` (a tuple of ints) and ``dtype``."""
    size = 1
    for extent in shape:
        size *= extent
    return np.empty(size, dtype).reshape(shape)


@kernel(linked=True)
def zeros(shape, dtype):
    """A C-contiguous array of zeros of ``shape`` (a tuple of ints) and ``dtype``."""
    size = 1
    for extent in shape:
        size *= extent
    flat = np.empty(size, dtype)
    flat[:] = 0
    return flat.reshape(shape)
