"""tilewise rasterize onto TMS tiles as batch parts: GNU parallel and a real SLURM job array give the serial bytes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.slurm_cluster import SlurmCluster
from tests.slurm_cluster import slurm_cluster as slurm_cluster_fixture  # noqa: F401
from tests.test_rasterize import _polygons, _tile_arrays, _write_layer

CLI = [sys.executable, "-m", "tilewise"]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env)


def rasterize_args(src: Path, out: Path, *extra: str) -> list[str]:
    return ["-q", "rasterize", str(src), "-o", str(out), "--zoom", "12", "--tile-px", "64", "--stat", "count", "--stat", "coverage",
            "--parents", "--min-zoom", "9", "--webtiles", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def polygons(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("rz-batch")
    return _write_layer(d / "p.gpkg", _polygons(400, 21, spread=0.06))


@pytest.fixture(scope="module")
def serial(polygons: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp("rz-serial") / "o"
    r = run_cli(*rasterize_args(polygons, out, "--executor", "serial"))
    assert r.returncode == 0, r.stderr
    return _tile_arrays(out)


def _same(out: Path, serial: dict[str, np.ndarray]) -> None:
    got = _tile_arrays(out)
    assert got.keys() == serial.keys() and len(got) > 10
    assert all(np.array_equal(got[k], serial[k]) for k in got)
    assert (out / "rasters_summary.csv").exists() and (out / "web_tiles" / "index.html").exists()


@pytest.mark.skipif(shutil.which("parallel") is None, reason="GNU parallel is not installed ('make system-deps' installs it as root)")
def test_gnu_parallel_parts_give_the_serial_tiles(polygons: Path, serial: dict[str, np.ndarray], tmp_path: Path) -> None:
    out = tmp_path / "o"
    r = run_cli(*rasterize_args(polygons, out, "--executor", "gnu-parallel", "--parts", "3"))
    assert r.returncode == 0, r.stderr
    _same(out, serial)
    st = json.loads(run_cli("status", str(out), "--json").stdout)
    assert st["state"] == "complete" and st["batch"]["system"] == "gnu-parallel" and st["batch"]["parts"] == 3


def test_slurm_dry_run_writes_the_array_and_finishing_scripts(polygons: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    r = run_cli(*rasterize_args(polygons, out, "--executor", "slurm", "--parts", "4", "--partition", "short", "--dry-run"))
    assert r.returncode == 0, r.stderr
    assert "#SBATCH --array=1-4" in r.stdout and "--part ${SLURM_ARRAY_TASK_ID}/4" in r.stdout and "#SBATCH --partition=short" in r.stdout
    assert not (out / "geotiff").exists()  # staged, nothing computed


@pytest.mark.slurm
def test_slurm_array_gives_the_serial_tiles(polygons: Path, serial: dict[str, np.ndarray], tmp_path: Path, slurm_cluster: SlurmCluster) -> None:
    out = tmp_path / "o"
    env = slurm_cluster.env()
    r = run_cli(*rasterize_args(polygons, out, "--executor", "slurm", "--parts", "3", "--partition", slurm_cluster.partition), env=env)
    assert r.returncode == 0, r.stderr
    _same(out, serial)
    st = json.loads(run_cli("status", str(out), "--json", env=env).stdout)
    assert st["state"] == "complete" and st["batch"]["system"] == "slurm" and st["batch"]["parts"] == 3


@pytest.mark.faults
def test_kill_9_at_random_moments_then_rerun_gives_the_same_tiles(polygons: Path, serial: dict[str, np.ndarray], tmp_path: Path) -> None:
    """A killed run never leaves a complete-looking layout with wrong tiles; every tile present is whole; a rerun finishes identically."""
    import os
    import random
    import signal
    import time

    args = rasterize_args(polygons, tmp_path / "probe", "--executor", "processes", "--workers", "2", "--tiles-per-task", "1")
    t0 = time.perf_counter()
    assert run_cli(*args).returncode == 0
    full = time.perf_counter() - t0
    rng = random.Random(7)
    for i in range(6):
        out = tmp_path / f"k{i}"
        a = rasterize_args(polygons, out, "--executor", "processes", "--workers", "2", "--tiles-per-task", "1")
        proc = subprocess.Popen([*CLI, *a], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(rng.uniform(0.05, 1.0) * full)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        got = _tile_arrays(out) if (out / "geotiff").exists() else {}
        assert all(np.array_equal(v, serial[k]) for k, v in got.items()), f"kill {i}: a tile differs from the reference"
        if (out / "rasters_summary.csv").exists():  # complete-looking: then it must be complete
            assert got.keys() == serial.keys()
        r = run_cli(*a)
        assert r.returncode == 0, r.stderr
        _same(out, serial)
