"""The durable record of finished work: the one place that writes the manifest.

Records are JSON lines appended (and fsynced) to ``manifest/records-<writer>.jsonl``
in the job's work directory; each writer has its own file, so no two processes
ever write the same file. A torn last line (a kill during a write) is ignored on
load, and a record is only written after the file it describes is in place.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tilewise.errors import OutputError
from tilewise.rasterfile import fsync_dir


class Manifest:
    """Append-only records of finished tiles, outputs and failures.

    Parameters
    ----------
    workdir
        The job's work directory.
    writer
        Name of this writer's record file (``main`` for the coordinating process).
    """

    def __init__(self, workdir: Path, writer: str = "main") -> None:
        self.dir = Path(workdir) / "manifest"
        self.path = self.dir / f"records-{writer}.jsonl"
        self._fh: Any = None

    def records(self) -> Iterator[dict[str, Any]]:
        """Yield every complete record from every writer's file."""
        if not self.dir.is_dir():
            return
        for f in sorted(self.dir.glob("records-*.jsonl")):
            with open(f, encoding="utf-8") as fh:
                for line in fh:
                    if not line.endswith("\n"):
                        break  # torn write from a killed process
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError:
                        continue

    def latest(self) -> dict[str, dict[str, Any]]:
        """Return the last record per key (a later success supersedes an earlier failure)."""
        out: dict[str, dict[str, Any]] = {}
        for rec in self.records():
            out[rec["key"]] = rec
        return out

    def write(self, record: dict[str, Any]) -> None:
        """Append one record durably."""
        if self._fh is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for appends
            fsync_dir(self.dir)
        try:
            self._fh.write(json.dumps(record, sort_keys=True) + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            raise OutputError(f"cannot write the manifest {str(self.path)!r} ({exc.strerror})", "free disk space, then rerun to resume") from None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def write_json_atomic(path: Path, data: Any) -> None:
    """Write a JSON file through a temporary name and a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(data if isinstance(data, str) else json.dumps(data, indent=2, sort_keys=True))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


class WorkLock:
    """An exclusive lock on a work directory, naming its holder when taken.

    Uses ``flock``, which the kernel releases when the holder dies (even by
    ``kill -9``), so a crashed run never leaves a stale lock behind.
    """

    def __init__(self, workdir: Path, output: str) -> None:
        self.path = Path(workdir) / "lock"
        self.output = output
        self._fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(f"cannot create the work directory {str(self.path.parent)!r} ({exc.strerror})", "choose a writable output location") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown process"
            os.close(fd)
            raise OutputError(
                f"output {self.output!r} is being written by another tilewise run ({holder})", "wait for it to finish, or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
