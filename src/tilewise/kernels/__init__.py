"""Array kernels: pure functions on numpy arrays, no I/O."""
