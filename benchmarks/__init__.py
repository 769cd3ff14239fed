"""asv benchmarks for fastbp (see asv.conf.json at the repository root).

asv runs every parameter combination in a fresh process.  fastbp's on-disk
cache of compiled kernels is on by default and keyed on a hash of the
installed package's sources (and the Numba version, CPU and vector width),
so those processes load the kernels a first one compiled, and a commit that
changes any kernel gets a fresh folder: no process ever loads code compiled
from another commit.  Compilation is kept out of the timings either way
(every ``setup`` calls the kernel once); ``bench_first_call`` measures it.
"""
