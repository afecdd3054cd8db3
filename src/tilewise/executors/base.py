"""The executor interface: map a function over work units, yielding results as they finish."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol, overload


class WorkerLostError(RuntimeError):
    """A worker died (killed, out of memory) while running a unit of work."""


class WorkList(Sequence[Any]):
    """Units of work an executor hands out in order, to which the caller may add while it runs.

    ``add`` puts a unit (a retry) ahead of those not yet handed out, so it runs
    promptly; ``close`` stops handing out more (units already running still finish
    and are yielded). Indices are stable: the i-th unit added keeps its index.
    """

    def __init__(self, units: Iterable[Any] = ()) -> None:
        self._items: list[Any] = list(units)
        self._order: deque[int] = deque(range(len(self._items)))
        self.closed = False

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, i: int) -> Any: ...

    @overload
    def __getitem__(self, i: slice) -> list[Any]: ...

    def __getitem__(self, i: int | slice) -> Any:
        return self._items[i]

    def add(self, unit: Any) -> int:
        """Add a unit to be handed out next; return its index."""
        self._items.append(unit)
        self._order.appendleft(len(self._items) - 1)
        return len(self._items) - 1

    def take(self) -> int | None:
        """The index of the next unit to run, or None (none left, or closed)."""
        if self.closed or not self._order:
            return None
        return self._order.popleft()

    def close(self) -> None:
        self.closed = True


class Executor(Protocol):
    """Runs ``fn(unit)`` for each unit somewhere, yielding ``(index, result or exception)``.

    Results come back in completion order. An exception raised by ``fn`` (or a
    lost worker) is yielded, not raised, so one failing unit never stops the others.
    ``units`` may be a :class:`WorkList`: units the caller adds while iterating (the
    runner's retries) are run before the iterator ends, and once it is closed nothing
    more is submitted while the units already submitted are still yielded. Closing
    the iterator early submits nothing more either.
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
