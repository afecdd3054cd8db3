"""Local executors: serial (the reference), threads, and processes (the default)."""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import multiprocessing as mp
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from tilewise.executors.base import WorkerLostError, WorkList


class SerialExecutor:
    """Runs every unit in this process, in order: the reference executor."""

    name = "serial"
    workers = 1

    def map_unordered(self, fn: Callable[[Any], Any], units: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        work = units if isinstance(units, WorkList) else WorkList(units)
        while (i := work.take()) is not None:
            try:
                result = fn(work[i])
            except Exception as exc:
                result = exc
            yield i, result

    def close(self) -> None:
        pass


class _PoolExecutor:
    """Shared logic: keep a bounded number of units in flight, yield as they finish."""

    name = "pool"

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: cf.Executor | None = None

    def _make_pool(self) -> cf.Executor:
        raise NotImplementedError

    def map_unordered(self, fn: Callable[[Any], Any], units: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        # Submitting lazily keeps memory flat for millions of units. Units the caller adds to a
        # WorkList while iterating (retries) go out next; a closed one gets no new submissions
        # while the units in flight drain.
        work = units if isinstance(units, WorkList) else WorkList(units)
        pending: dict[cf.Future[Any], int] = {}
        in_flight = 2 * self.workers
        if self._pool is None:
            self._pool = self._make_pool()

        def top_up() -> None:
            while len(pending) < in_flight and (i := work.take()) is not None:
                assert self._pool is not None
                try:
                    pending[self._pool.submit(fn, work[i])] = i
                except BrokenProcessPool:
                    self._restart()
                    pending[self._pool.submit(fn, work[i])] = i

        try:
            top_up()
            while pending:
                done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                broken = False
                for fut in done:
                    i = pending.pop(fut)
                    try:
                        result = fut.result()
                    except BrokenProcessPool:
                        broken = True
                        result = WorkerLostError(
                            "a worker process died while running this task (killed, out of memory, or a script calling tilewise"
                            " without an 'if __name__ == \"__main__\":' guard)"
                        )
                    except Exception as exc:
                        result = exc
                    yield i, result
                if broken:
                    # The other units in flight died with the pool (its workers are stopped): report
                    # them too, keeping any result that arrived before, then start afresh.
                    for fut, i in list(pending.items()):
                        pending.pop(fut)
                        if fut.done() and not fut.cancelled() and fut.exception() is None:
                            yield i, fut.result()
                        else:
                            yield i, WorkerLostError("a worker process died while this task was in flight")
                    self._restart()
                top_up()
        finally:
            # The caller stopped early (fail-fast, an error, Ctrl-C): submit nothing more and drop
            # what has not started; units already running finish, and close() waits for them.
            for fut in pending:
                fut.cancel()

    def _restart(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._make_pool()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def terminate(self) -> None:
        """Stop at once (Ctrl-C): cancel queued work and kill worker processes."""
        pool = self._pool
        self._pool = None
        if pool is None:
            return
        procs = list(getattr(pool, "_processes", {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            p.kill()


class ThreadExecutor(_PoolExecutor):
    """Threads in this process: GDAL decoding and numpy release the GIL."""

    name = "threads"

    def _make_pool(self) -> cf.Executor:
        return cf.ThreadPoolExecutor(self.workers, thread_name_prefix="tilewise")


class ProcessExecutor(_PoolExecutor):
    """Worker processes on this machine (the default executor).

    Workers come from a clean ``forkserver`` process, never forked from this one:
    a fork copies GDAL's worker-thread pool without its threads (after a
    multi-threaded COG write here, a forked worker would wait forever) and any
    lock another thread holds. As with every spawn-style pool, a script that
    calls tilewise must do so under ``if __name__ == "__main__":``.
    """

    name = "processes"

    def _make_pool(self) -> cf.Executor:
        return cf.ProcessPoolExecutor(self.workers, mp_context=_forkserver(), initializer=keep_freed_memory)


# A worker's tiles allocate and free arrays of the same few sizes over and over. By default glibc
# returns the biggest of them to the kernel when freed (above 32 MiB, or whatever its moving
# threshold reached) and trims the heap, so the next tile takes fresh pages, each a page fault: on
# the 2-core VM about a fifth of an NDVI worker's time. Kept, the next tile reuses them.
KEEP_FREED_BYTES = 64 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
memory_kept = False  # whether this process's malloc keeps freed memory (set by keep_freed_memory)


def keep_freed_memory(limit: int = KEEP_FREED_BYTES) -> bool:
    """Make glibc's malloc in this process keep freed blocks below ``limit`` bytes for reuse (worker initializer).

    Blocks below ``limit`` come from the heap rather than from their own mappings, and
    up to ``limit`` free bytes stay at the top of the heap instead of going back to
    the kernel. Peak memory is unchanged: a worker keeps what its largest tile used.
    Returns False, changing nothing, where malloc is not glibc's.
    """
    global memory_kept
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # no mallopt (macOS), no C library by that name (Windows)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    memory_kept = bool(mallopt(_M_MMAP_THRESHOLD, limit) and mallopt(_M_TRIM_THRESHOLD, limit))
    return memory_kept


# What the forkserver imports once, so each worker it forks starts with them loaded: the task code,
# and what a worker needs before its first task (the pool initializer's module, and the runner and
# stack_stats, whose batch functions a unit names). A worker that imported those itself started its
# first tile ~0.1 s late.
FORKSERVER_PRELOAD = ["tilewise.task", "tilewise.assemble", "tilewise.overviews", "tilewise.executors.local", "tilewise.runner",
                      "tilewise.stack_stats"]  # fmt: skip


def _forkserver() -> Any:
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(FORKSERVER_PRELOAD)
    return ctx


def warm_forkserver() -> None:
    """Start the forkserver now, so its imports (~0.4 s) overlap the caller's planning.

    The server imports :data:`FORKSERVER_PRELOAD` in its own process; this returns
    at once, and the first worker is forked when the pool gets its first task.
    """
    from multiprocessing import forkserver

    _forkserver()
    forkserver.ensure_running()
