"""Where tasks run. Executors move opaque picklable work; they never import ops."""

from __future__ import annotations

from tilewise.errors import UsageError
from tilewise.executors.base import Executor, WorkList, usable_cores

EXECUTORS = ("processes", "threads", "serial")


def get_executor(name: str, workers: int | None = None) -> Executor:
    """Create the executor called ``name`` with ``workers`` workers (default: usable cores)."""
    n = workers if workers is not None else usable_cores()
    if n < 1:
        raise UsageError(f"--workers {n} is not positive", "use --workers 1 or more")
    if name == "serial":
        from tilewise.executors.local import SerialExecutor

        return SerialExecutor()
    if name == "threads":
        from tilewise.executors.local import ThreadExecutor

        return ThreadExecutor(n)
    if name == "processes":
        from tilewise.executors.local import ProcessExecutor

        return ProcessExecutor(n)
    raise UsageError(f"unknown executor {name!r}", f"use one of: {', '.join(EXECUTORS)}")


__all__ = ["EXECUTORS", "Executor", "WorkList", "get_executor", "usable_cores"]
