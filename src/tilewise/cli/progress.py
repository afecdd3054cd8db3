"""Rendering run progress: a bar on a terminal, plain periodic lines in a batch log."""

from __future__ import annotations

import sys
import time
from typing import Any

from tilewise.runner import Event


class ProgressPrinter:
    """A progress callback for :func:`tilewise.runner.run_job`.

    Parameters
    ----------
    verbosity
        -1 quiet (nothing), 0 normal, 1+ also per-retry and failure lines.
    interval
        Seconds between plain lines when stderr is not a terminal.
    """

    def __init__(self, verbosity: int = 0, interval: float = 10.0) -> None:
        self.verbosity = verbosity
        self.interval = interval
        self.tty = sys.stderr.isatty()
        self._bar: Any = None
        self._task: Any = None
        self._last = 0.0
        self._t0 = time.perf_counter()

    def __call__(self, ev: Event) -> None:
        if self.verbosity < 0:
            return
        if ev.kind == "note":
            self._line(f"note: {ev.message}")
        elif ev.kind == "start":
            self._t0 = time.perf_counter()
            self._line(ev.message)
            if self.tty:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

                self._bar = Progress(TextColumn("tiles"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True)
                self._bar.start()
                self._task = self._bar.add_task("tiles", total=ev.total, completed=ev.done)
        elif ev.kind == "tile":
            if self._bar is not None:
                self._bar.update(self._task, completed=ev.done)
            elif time.perf_counter() - self._last >= self.interval or ev.done == ev.total:
                self._last = time.perf_counter()
                pct = 100.0 * ev.done / max(ev.total, 1)
                self._line(f"tiles {ev.done}/{ev.total} ({pct:.0f}%) after {time.perf_counter() - self._t0:.1f} s")
        elif ev.kind in ("retry", "failed"):
            if ev.kind == "failed" or self.verbosity > 0:
                self._line(f"{ev.kind}: {ev.message}")
        elif ev.kind in ("assemble", "phase"):
            self._stop_bar()
            self._line(ev.message)
        elif ev.kind == "output" and self.verbosity > 0:
            self._line(f"wrote {ev.message}")
        elif ev.kind == "done":
            self._stop_bar()

    def _stop_bar(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def _line(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(text, highlight=False)
        else:
            print(text, file=sys.stderr, flush=True)
