"""``tilewise bench executors``: the tutorial's table from real runs on several engines."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import two_band_scene, write_raster
from tests.slurm_cluster import SlurmCluster
from tests.slurm_cluster import slurm_cluster as slurm_cluster_fixture  # noqa: F401

CLI = [sys.executable, "-m", "tilewise"]


def _job(tmp_path: Path) -> Path:
    src = write_raster(tmp_path / "scene.tif", two_band_scene(600, 700, seed=2), nodata=0, blocksize=128)
    job = tmp_path / "job.toml"
    job.write_text(f'command = "ndvi"\ninputs = ["{src}"]\nred = 1\nnir = 2\noutput = "{tmp_path / "ndvi.tif"}"\ntile_size = 128\n')
    return job


@pytest.mark.slurm
def test_bench_executors_table_and_reports(tmp_path: Path, slurm_cluster: SlurmCluster) -> None:
    job = _job(tmp_path)
    out = tmp_path / "report"
    r = subprocess.run([*CLI, "bench", "executors", str(job), "--executors", "processes,slurm,gnu-parallel", "--workers", "2",
                        "--partition", slurm_cluster.partition, "--out", str(out)], capture_output=True, text=True, timeout=600,
                       env=slurm_cluster.env())  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("| ") and not line.startswith("| Example")]
    assert [row.split(" | ")[0] for row in rows] == ["| single core", "| multiprocessing (processes)", "| SLURM array job", "| GNU parallel"]
    data = json.loads((out / "executors.json").read_text())
    runs = {run["executor"]: run for run in data["runs"]}
    assert list(runs) == ["serial", "processes", "slurm", "gnu-parallel"]
    assert all(run["same_bytes"] for run in runs.values())  # every engine wrote the serial run's bytes
    assert runs["serial"]["speedup"] == 1.0 and runs["slurm"]["jobs"] == 2 and runs["slurm"]["cores_per_job"] == 1
    assert all(run["wall_s"] > 0 and run["cpu_s"] > 0 for run in runs.values())
    md = (out / "executors.md").read_text()
    assert "| Example | Jobs | CPU cores/job | Time | CPU efficiency |" in md
    fastest = min(runs.values(), key=lambda run: run["wall_s"])["executor"]
    winner = next(line for line in md.splitlines() if line.startswith("**Winner**"))
    assert {"serial": "single core", "processes": "multiprocessing (processes)", "slurm": "SLURM array job",
            "gnu-parallel": "GNU parallel"}[fastest] in winner.split(";")[0]  # fmt: skip
    assert len(re.findall(r"\d\.\d\dx", winner)) == len(runs) - 1  # every other executor's time relative to the winner
    assert not (tmp_path / "ndvi.tif").exists()  # the runs wrote into a scratch folder, since removed


def test_bench_executors_unknown_name_is_exit_2(tmp_path: Path) -> None:
    r = subprocess.run([*CLI, "bench", "executors", str(_job(tmp_path)), "--executors", "serial,magic"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("Error: --executors 'serial,magic' names no executor 'magic'")


def test_the_report_names_the_fastest_executor_and_the_ratios() -> None:
    from tilewise.executor_bench import winner

    runs = [{"executor": "serial", "wall_s": 80.0}, {"executor": "processes", "wall_s": 40.0}, {"executor": "dask", "wall_s": 50.0}]
    assert winner({"runs": runs}) == ("**Winner**: multiprocessing (processes) (40.0 s); the others' time relative to it: "
                                      "single core 2.00x, dask (LocalCluster) 1.25x.")  # fmt: skip
