"""fastbp's tools: the ``fastbp`` command line, its benchmarks, checks and timers.

No library module imports this package; it uses the library's public
functions and, where it times a kernel alone, the kernel itself.

cli
    The command line: every command's options and their validation.
main_job, bench, bench_training, breakdown, train, compile
    What each command does.
problems
    The seeded problems and the NumPy, PyTorch and JAX reference steps.
bounds
    The rounding-error bounds every check uses.
timing
    Interleaved medians, thread limits, the seconds formatter, first-call timers.
perf_map
    A ``perf`` map of the kernels compiled in a process, for profiling them.
"""
