"""The durable record of finished work: the one place that writes the manifest.

Records are JSON lines appended (and fsynced) to ``manifest/records-<writer>.jsonl``
in the job's work directory; each writer has its own file, so no two processes
ever write the same file. A torn last line (a kill during a write) is ignored on
load, and a record is only written after the file it describes is in place.
"""

from __future__ import annotations

import contextlib
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
        self.write_many([record])

    def write_many(self, records: list[dict[str, Any]]) -> None:
        """Append records durably, with one fsync."""
        try:
            if self._fh is None:
                self.dir.mkdir(parents=True, exist_ok=True)
                torn = self._torn()
                self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for appends
                fsync_dir(self.dir)
                if torn:
                    # A killed writer left a last line without its newline: end it, so the next
                    # record starts on a line of its own (the torn line is skipped on load).
                    self._fh.write("\n")
            self._fh.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            raise _write_error(self.path, exc, "cannot write the manifest") from None

    def _torn(self) -> bool:
        try:
            with open(self.path, "rb") as fh:
                if fh.seek(0, os.SEEK_END) == 0:
                    return False
                fh.seek(-1, os.SEEK_END)
                return fh.read(1) != b"\n"
        except FileNotFoundError:
            return False

    def close(self) -> None:
        if self._fh is not None:
            fh, self._fh = self._fh, None
            with contextlib.suppress(OSError):  # a record that could not be written (disk full) was reported when it failed
                fh.close()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write a JSON (or any text) file through a temporary name and a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(data if isinstance(data, str) else json.dumps(data, indent=2, sort_keys=True))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _write_error(path, exc, "cannot write") from None
    fsync_dir(path.parent)


def _write_error(path: Path, exc: OSError, what: str) -> OutputError:
    from tilewise.io import disk_full

    full = disk_full(path, exc)
    if full is not None:
        return full
    return OutputError(f"{what} {str(path)!r} ({exc.strerror or exc})", "check free disk space and write permission, then rerun to resume")


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
        self._fd = fd
        try:  # naming the holder is a courtesy: a full disk must not stop the run here
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        except OSError:
            pass

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
