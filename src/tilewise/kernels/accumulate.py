"""When the one-pass kernels of :mod:`tilewise.kernels.accumulate_jit` are used (kept apart so that numba is imported only then)."""

# Below this many pixels numpy's few passes cost less than loading the compiled kernels in a process (~0.4 s).
FAST_MIN_PIXELS = 1 << 18
