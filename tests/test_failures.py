"""A tile that always fails: retried, reported by key, exit 1, the others finish, no output written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import two_band_scene, write_raster
from tilewise.rasterfile import open_read

pytestmark = pytest.mark.faults


def damage_block(path: Path, row: int, col: int) -> None:
    """Overwrite one compressed block of band 1 with garbage, so only its window is unreadable."""
    with open_read(str(path)) as ds:
        off = int(ds.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=1))
        size = int(ds.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=1))
    with open(path, "r+b") as fh:
        fh.seek(off)
        fh.write(b"\xff" * size)


def test_damaged_block_fails_one_tile_only(tmp_path: Path) -> None:
    src = write_raster(tmp_path / "in.tif", np.ascontiguousarray(two_band_scene(256, 256)), nodata=0, blocksize=64)
    damage_block(src, 1, 2)
    out = tmp_path / "o.tif"
    args = [sys.executable, "-m", "tilewise.cli.main", "ndvi", str(src), "--red", "1", "--nir", "2", "-o", str(out),
            "--tile-size", "64", "--retries", "1", "--executor", "processes", "--workers", "2"]  # fmt: skip
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith("Error: 1 of 16 tiles failed") and "0/r0001-c0002" in err and "in.tif" in err
    assert not out.exists()
    st = subprocess.run([sys.executable, "-m", "tilewise.cli.main", "status", str(out), "--json"], capture_output=True, text=True)
    status = json.loads(st.stdout)
    assert status["state"] == "failed"
    assert list(status["failed"]) == ["0/r0001-c0002"]
    assert "rows 64:128, cols 128:192" in status["failed"]["0/r0001-c0002"]
    assert status["tiles_done"] == 15
