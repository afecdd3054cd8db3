"""The executor interface: map a function over work units, yielding results as they finish."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol


class WorkerLostError(RuntimeError):
    """A worker died (killed, out of memory) while running a unit of work."""


class Executor(Protocol):
    """Runs ``fn(unit)`` for each unit somewhere, yielding ``(index, result or exception)``.

    Results come back in completion order. An exception raised by ``fn`` (or a
    lost worker) is yielded, not raised, so one failing unit never stops the others.
    """

    name: str
    workers: int

    def map_unordered(self, fn: Callable[[Any], Any], units: Sequence[Any]) -> Iterator[tuple[int, Any]]: ...

    def close(self) -> None: ...


def usable_cores() -> int:
    """Number of CPU cores this process may use (respects affinity / cgroups masks)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
