"""The single-node SLURM test cluster itself: arrays run side by side, scancel and time limits end jobs."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.slurm_cluster import UP, SlurmCluster
from tests.slurm_cluster import slurm_cluster as slurm_cluster_fixture  # noqa: F401  (registers the fixture `slurm_cluster`)

pytestmark = pytest.mark.slurm


def _gone(pid: int) -> bool:
    """Whether a process has ended (a zombie counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def _wait_file(path: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while not (path.is_file() and path.read_text().strip()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} not written after {timeout:g}s")
        time.sleep(0.05)
    return path.read_text().strip()


def test_environment_points_at_the_cluster(slurm_cluster: SlurmCluster) -> None:
    assert os.environ["SLURM_CONF"] == str(slurm_cluster.conf)
    assert slurm_cluster.env()["SLURM_CONF"] == str(slurm_cluster.conf)
    assert slurm_cluster.conf.is_file() and slurm_cluster.conf.parent == slurm_cluster.state_dir
    assert slurm_cluster.partition in slurm_cluster.run("sinfo", "-h", "-o", "%P")


def test_up_again_only_checks(slurm_cluster: SlurmCluster) -> None:
    ctld_pid = (slurm_cluster.state_dir / "run" / "slurmctld.pid").read_text().strip()
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(UP), str(slurm_cluster.state_dir)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t0 < 10
    assert proc.stdout.strip().splitlines()[-1] == f"export SLURM_CONF={slurm_cluster.conf}"
    assert (slurm_cluster.state_dir / "run" / "slurmctld.pid").read_text().strip() == ctld_pid


def test_array_elements_all_run_side_by_side(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    task = "$SLURM_ARRAY_TASK_ID"
    script = f"date +%s.%N > start-{task}; echo {task} > task-{task}; sleep 1.5; date +%s.%N > end-{task}"
    job = slurm_cluster.sbatch("--array=1-3", "-o", "%A_%a.log", "--wrap", script, cwd=tmp_path)
    slurm_cluster.wait(job, timeout=60)
    for i in (1, 2, 3):
        assert (tmp_path / f"task-{i}").read_text().strip() == str(i)
        info = slurm_cluster.job(f"{job}_{i}")
        assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0")
    starts = [float((tmp_path / f"start-{i}").read_text()) for i in (1, 2, 3)]
    ends = [float((tmp_path / f"end-{i}").read_text()) for i in (1, 2, 3)]
    assert max(starts) < min(ends), "the three elements should run at once (CPUs=4 on the node)"


def test_scancel_ends_a_running_job(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    job = slurm_cluster.sbatch("-o", "job.log", "--wrap", "echo $$ > pid; exec sleep 300", cwd=tmp_path)
    slurm_cluster.wait_state(job, "RUNNING", timeout=30)
    pid = int(_wait_file(tmp_path / "pid", timeout=10))
    slurm_cluster.run("scancel", job)
    info = slurm_cluster.wait_state(job, "CANCELLED", timeout=30)
    assert info["JobState"] == "CANCELLED"
    slurm_cluster.wait(job, timeout=30)
    deadline = time.monotonic() + 10
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(pid), f"the job's sleep (pid {pid}) outlived scancel"


@pytest.mark.slow
def test_time_limit_gives_timeout(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    # SLURM time limits are whole minutes and slurmctld checks them periodically: ~60-90 s.
    job = slurm_cluster.sbatch("--time=1", "-o", "job.log", "--wrap", "exec sleep 300", cwd=tmp_path)
    info = slurm_cluster.wait_state(job, "TIMEOUT", timeout=150)
    assert info["JobState"] == "TIMEOUT"
