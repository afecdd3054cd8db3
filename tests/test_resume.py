"""Promise 2: a run killed with kill -9 resumes, running only the missing tiles.

The kill -9 campaign at many moments, lost workers, failing tiles and the other faults are in
tests/test_faults.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import two_band_scene, write_raster


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("kill")
    return write_raster(d / "in.tif", two_band_scene(1500, 1700, seed=11), nodata=0, blocksize=128)


def cmd(src: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tilewise.cli.main", "-q", "ndvi", str(src), "--red", "1", "--nir", "2", "-o", str(out),
            "--tile-size", "128", "--compress", "deflate", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def reference(big: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    out = tmp_path_factory.mktemp("ref") / "ref.tif"
    subprocess.run(cmd(big, out, "--executor", "serial"), check=True, timeout=300)
    return out.read_bytes()


@pytest.mark.faults
def test_kill_during_run_resumes_only_missing_tiles(big: Path, reference: bytes, tmp_path: Path) -> None:
    out = tmp_path / "o.tif"
    args = cmd(big, out, "--workers", "1", "--executor", "processes")
    proc = subprocess.Popen(args, start_new_session=True)
    records = tmp_path / ".o.tif.tilewise" / "manifest" / "records-main.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if records.exists() and records.read_text().count("\n") >= 10:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    done_before = records.read_text().count('"kind": "tile"')
    assert done_before >= 10
    r = subprocess.run([sys.executable, "-m", "tilewise.cli.main", "status", str(out)], capture_output=True, text=True)
    assert "incomplete" in r.stdout
    r = subprocess.run([sys.executable, "-m", "tilewise.cli.main", "resume", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"{done_before} already done" in r.stdout or "already done" in r.stdout
    assert out.read_bytes() == reference
