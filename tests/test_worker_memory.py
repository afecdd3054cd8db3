"""Worker processes keep the memory a tile freed for the next tile, instead of faulting in fresh pages every time."""

from __future__ import annotations

import resource
import sys

import numpy as np
import pytest

from tilewise.executors.local import KEEP_FREED_BYTES, ProcessExecutor


def _faults_reallocating(nbytes: int) -> tuple[bool, int, int]:
    """In a worker: whether its malloc keeps freed memory, and the page faults of a first and of later rounds of allocate-touch-free."""
    from tilewise.executors import local

    def one_round() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        a = np.ones(nbytes, dtype=np.uint8)  # touches every page
        a.sum()
        del a
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    first = one_round()
    later = sum(one_round() for _ in range(5))
    return local.memory_kept, first, later


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux); elsewhere the allocator is left as it is")
def test_process_workers_reuse_freed_tile_memory() -> None:
    # 40 MiB: above glibc's largest moving threshold (32 MiB), so without the setting every round maps
    # fresh pages and faults them in; with it, later rounds reuse the first round's pages.
    ex = ProcessExecutor(1)
    try:
        [(_i, (kept, first, later))] = list(ex.map_unordered(_faults_reallocating, [40 << 20]))
    finally:
        ex.close()
    assert kept, "the worker initializer did not set mallopt"
    assert first > 0
    assert later <= first // 10, f"{later} page faults in 5 later rounds against {first} in the first: freed memory was not reused"
    assert KEEP_FREED_BYTES > 40 << 20
