"""What a first touch of memory costs on this machine, against writing straight to its disk.

On the project's benchmark VM, memory that no process used for a while (the host takes it
back within seconds) costs about 2.5 s per GB to touch again: more than writing the same
bytes to the disk with O_DIRECT. Every byte a job puts in the page cache (its intermediate
files and its output) and every byte of process memory pays that price, which is why the
I/O-heavy benchmarks here are bound by how many bytes each approach touches. This script
measures it, so the figures in docs/performance.md can be checked on another machine:

* anonymous memory: touch 1 GB after a rest (cold), then again at once (warm);
* the page cache: write a new 1 GB file through it after a rest (cold), then again at once;
* the disk itself: write and read 1 GB with O_DIRECT (no page cache).

    .venv/bin/python bench/memory_probe.py [--gb 1] [--rest 30]

Results: bench/results/memory_probe.{json,md}.
"""

from __future__ import annotations

import argparse
import mmap
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, WORK_DIR, machine_info, md_table, write_json

CHUNK = 4 << 20  # 4 MiB writes, the size of one tilewise intermediate tile of 1024x1024 float32


def touch_anonymous(nbytes: int) -> float:
    """Seconds to allocate and fill ``nbytes`` of new process memory."""
    t = time.perf_counter()
    a = np.ones(nbytes // 4, dtype=np.float32)
    took = time.perf_counter() - t
    del a
    return took


def write_cached(path: Path, nbytes: int) -> float:
    """Seconds to write a new file of ``nbytes`` through the page cache (no sync)."""
    buf = np.ones(CHUNK, dtype=np.uint8).tobytes()
    t = time.perf_counter()
    with open(path, "wb") as fh:
        for _ in range(nbytes // CHUNK):
            fh.write(buf)
    took = time.perf_counter() - t
    path.unlink()
    return took


def _aligned(n: int) -> mmap.mmap:
    m = mmap.mmap(-1, n)  # page-aligned, as O_DIRECT needs
    m.write(b"\1" * n)
    return m


def write_direct(path: Path, nbytes: int) -> float:
    """Seconds to write ``nbytes`` to a new file with O_DIRECT (the page cache bypassed)."""
    buf = _aligned(CHUNK)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
    t = time.perf_counter()
    try:
        for _ in range(nbytes // CHUNK):
            os.write(fd, buf)
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t


def read_direct(path: Path, nbytes: int) -> float:
    """Seconds to read ``nbytes`` of ``path`` with O_DIRECT."""
    buf = _aligned(CHUNK)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    t = time.perf_counter()
    try:
        for _ in range(nbytes // CHUNK):
            os.readv(fd, [buf])
    finally:
        os.close(fd)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gb", type=float, default=1.0, help="bytes per measurement, in GB (default 1)")
    ap.add_argument("--rest", type=float, default=30.0, help="seconds to rest before each cold measurement (default 30)")
    args = ap.parse_args()
    nbytes = int(args.gb * 1e9) // CHUNK * CHUNK
    gb = nbytes / 1e9
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    scratch = WORK_DIR / "memory_probe.bin"
    rows: dict[str, float] = {}
    time.sleep(args.rest)
    rows["anonymous memory, cold"] = touch_anonymous(nbytes)
    rows["anonymous memory, warm (again at once)"] = touch_anonymous(nbytes)
    time.sleep(args.rest)
    rows["new file through the page cache, cold"] = write_cached(scratch, nbytes)
    rows["new file through the page cache, warm (again at once)"] = write_cached(scratch, nbytes)
    try:
        rows["disk write, O_DIRECT + fsync"] = write_direct(scratch, nbytes)
        rows["disk read, O_DIRECT"] = read_direct(scratch, nbytes)
    except OSError as exc:  # a file system without O_DIRECT (tmpfs, some network file systems)
        print(f"O_DIRECT not available here: {exc}", file=sys.stderr)
    finally:
        if scratch.exists():
            scratch.unlink()
    report = {"machine": machine_info(), "gb": gb, "rest_s": args.rest,
              "results": {k: {"seconds": round(v, 3), "s_per_gb": round(v / gb, 3)} for k, v in rows.items()}}  # fmt: skip
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS_DIR / "memory_probe.json", report)
    m = report["machine"]
    md = [f"# First touch of memory against the disk ({gb:.2f} GB each)", "",
          f"Machine: {m.get('cpu_model', '?')}, {m.get('usable_cores', '?')} cores, {m.get('hypervisor') or 'no hypervisor named'}; "
          f"cold = after {args.rest:.0f} s of rest, warm = again at once. Regenerate with `.venv/bin/python bench/memory_probe.py`.", "",
          md_table(["what", "seconds", "s per GB"], [[k, f"{v:.2f}", f"{v / gb:.2f}"] for k, v in rows.items()]), ""]  # fmt: skip
    (RESULTS_DIR / "memory_probe.md").write_text("\n".join(md), encoding="utf-8")
    print("\n".join(md))


if __name__ == "__main__":
    main()
