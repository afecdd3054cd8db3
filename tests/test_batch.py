"""Batch executors against real engines: SLURM job arrays on a real single-node cluster, and GNU parallel.

The same NDVI and focal jobs run as array elements / parallel jobs (``tilewise worker
WORKDIR --part i/N``) and a finishing step, and must give the bytes of a serial run.
Faults: an array element cancelled mid-run, a time limit exceeded, a part killed under
GNU parallel; each is named by ``tilewise status`` and finished by a rerun or ``resume``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import two_band_scene, write_raster
from tests.slurm_cluster import SlurmCluster
from tests.slurm_cluster import slurm_cluster as slurm_cluster_fixture  # noqa: F401
from tilewise import slurm
from tilewise.launch import split

CLI = [sys.executable, "-m", "tilewise"]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


def ndvi(src: Path, out: Path, *extra: str) -> list[str]:
    return ["-q", "ndvi", str(src), "--red", "1", "--nir", "2", "-o", str(out), "--tile-size", "256", *extra]


def focal(src: Path, out: Path, *extra: str) -> list[str]:
    return ["-q", "focal", str(src), "--band", "2", "--stat", "mean", "--size", "9", "-o", str(out), "--tile-size", "250", *extra]


JOBS = {"ndvi": ndvi, "focal": focal}


def status(out: Path, env: dict[str, str] | None = None) -> dict:
    r = run_cli("status", str(out), "--json", env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("batch")
    return write_raster(d / "scene.tif", two_band_scene(1000, 1100, seed=5), nodata=0, blocksize=256)


@pytest.fixture(scope="module")
def refs(scene: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("ref")
    out = {}
    for name, make in JOBS.items():
        r = run_cli(*make(scene, d / f"{name}.tif", "--executor", "serial"))
        assert r.returncode == 0, r.stderr
        out[name] = (d / f"{name}.tif").read_bytes()
    return out


# ---------------------------------------------------------------- pure parts


@given(st.lists(st.text(min_size=1, max_size=3), max_size=60), st.integers(1, 80))
def test_split_keeps_order_and_balances(keys: list[str], n: int) -> None:
    parts = split(keys, n)
    assert [k for p in parts for k in p] == keys
    if keys:
        assert len(parts) == min(n, len(keys))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        assert all(parts)


@given(st.sets(st.integers(1, 200), min_size=1), st.none() | st.integers(1, 9))
def test_array_spec_lists_exactly_the_parts(parts: set[int], m: int | None) -> None:
    spec = slurm.array_spec(sorted(parts), m)
    body, _, limit = spec.partition("%")
    got: set[int] = set()
    for span in body.split(","):
        lo, _, hi = span.partition("-")
        got |= set(range(int(lo), int(hi or lo) + 1))
    assert got == parts
    assert limit == ("" if m is None else str(m))


# ---------------------------------------------------------------- GNU parallel


needs_parallel = pytest.mark.skipif(shutil.which("parallel") is None, reason="GNU parallel is not installed (make test installs it: apt-get install parallel)")


@needs_parallel
@pytest.mark.parametrize("job", sorted(JOBS))
def test_gnu_parallel_matches_serial(job: str, scene: Path, refs: dict[str, bytes], tmp_path: Path) -> None:
    out = tmp_path / f"{job}.tif"
    r = run_cli(*JOBS[job](scene, out, "--executor", "gnu-parallel", "--parts", "5", "--max-running", "2"))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == refs[job]
    log = (tmp_path / f".{job}.tif.tilewise" / "batch" / "parallel.joblog").read_text().splitlines()
    assert len(log) == 1 + 5 and all(line.split("\t")[6] == "0" for line in log[1:])  # five parts, each exit 0


def test_gnu_parallel_without_parallel_prints_the_commands_that_finish_the_job(scene: Path, refs: dict[str, bytes], tmp_path: Path) -> None:
    # With `parallel` missing the command prints the task list and the two commands; running
    # those lines by hand (here with sh, as parallel would) and then the finish gives the output.
    env = {**os.environ, "PATH": os.path.dirname(sys.executable)}  # tilewise needs no other command here
    if shutil.which("parallel", path=env["PATH"]):
        pytest.skip("GNU parallel is installed in the venv's bin; cannot hide it")
    out = tmp_path / "ndvi.tif"
    r = run_cli(*ndvi(scene, out, "--executor", "gnu-parallel", "--parts", "3"), env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "not installed" in lines[0] and lines[1].startswith("parallel --joblog") and "--resume-failed" in lines[1]
    assert not out.exists()
    tasks = Path(lines[1].split()[-1]).read_text().splitlines()
    assert len(tasks) == 3 and all("worker" in t and f"--part {i}/3" in t for i, t in enumerate(tasks, 1))
    for t in tasks:
        subprocess.run(["sh", "-c", t], check=True, timeout=120)
    subprocess.run(["sh", "-c", lines[3]], check=True, timeout=120)
    assert out.read_bytes() == refs["ndvi"]
    assert status(out)["state"] == "complete"


@needs_parallel
def test_gnu_parallel_failed_part_is_named_and_a_rerun_finishes(scene: Path, refs: dict[str, bytes], tmp_path: Path) -> None:
    out = tmp_path / "ndvi.tif"
    args = ndvi(scene, out, "--executor", "gnu-parallel", "--parts", "4", "--retries", "0")
    # Part 3's first tile reads a window that is unreadable until the input is put back.
    broken = tmp_path / "scene.tif"
    shutil.copy(scene, broken)
    args[2] = str(broken)
    r = run_cli(*args, "--dry-run")  # cut the job into parts; then damage what part 3 reads
    assert r.returncode == 0, r.stderr
    parts = json.loads((tmp_path / ".ndvi.tif.tilewise" / "parts.json").read_text())["parts"]
    from tests.test_failures import damage_block

    row, col = (int(v[1:]) for v in parts[2][0].split("/")[1].split("-"))  # e.g. 0/r0001-c0002
    before = broken.stat()
    damage_block(broken, row, col)
    os.utime(broken, ns=(before.st_atime_ns, before.st_mtime_ns))  # same size and time: the job's fingerprint is unchanged
    r = run_cli(*args)
    assert r.returncode == 1
    (line,) = errors(r.stderr)
    assert "part 3/4" in line and "did not finish" in line
    st_ = status(out)
    assert st_["state"] == "failed" and [e["part"] for e in st_["batch"]["unfinished"]] == [3]
    # Put the input back as it was (same bytes, so the same fingerprint) and rerun: only part 3 runs again.
    shutil.copy(scene, broken)
    os.utime(broken, ns=(before.st_atime_ns, before.st_mtime_ns))
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == refs["ndvi"]


def test_worker_part_errors_are_one_line_exit_2(tmp_path: Path, scene: Path) -> None:
    out = tmp_path / "ndvi.tif"
    r = run_cli(*ndvi(scene, out, "--executor", "gnu-parallel", "--parts", "3", "--dry-run"))
    assert r.returncode == 0, r.stderr
    wd = tmp_path / ".ndvi.tif.tilewise"
    for args, needle in ((["--part", "4/3"], "does not fit"), (["--part", "1/5"], "cut into 3 parts"), (["--part", "x"], "is not I/N"),
                         ([], "exactly one of"), (["--part", "1/3", "--finish"], "exactly one of")):  # fmt: skip
        r = run_cli("worker", str(wd), *args)
        assert r.returncode == 2 and len(errors(r.stderr)) == 1 and needle in r.stderr, (args, r.stderr)
    r = run_cli("worker", str(tmp_path / "nowhere"), "--part", "1/3")
    assert r.returncode == 2 and "holds no tilewise job" in r.stderr


# ---------------------------------------------------------------- SLURM job arrays


def test_missing_sbatch_is_exit_2_within_seconds(scene: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + ":/nonexistent"}
    out = tmp_path / "ndvi.tif"
    t0 = time.monotonic()
    r = run_cli(*ndvi(scene, out, "--executor", "slurm"), env=env)
    assert time.monotonic() - t0 < 10
    assert r.returncode == 2 and len(errors(r.stderr)) == 1 and "sbatch not found" in r.stderr
    assert not out.exists() and not (tmp_path / ".ndvi.tif.tilewise").exists()


def test_slurm_dry_run_prints_the_array_script(scene: Path, tmp_path: Path) -> None:
    out = tmp_path / "ndvi.tif"
    r = run_cli(*ndvi(scene, out, "--executor", "slurm", "--parts", "6", "--max-running", "2", "--partition", "short", "--account", "proj1",
                      "--time", "0:30:00", "--cpus-per-task", "2", "--mem", "3G", "--sbatch-arg=--qos=low", "--module", "gdal/3.8",
                      "--setup", "source /opt/venv/bin/activate", "--dry-run"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    text = r.stdout
    for line in ("#SBATCH --array=1-6%2", "#SBATCH --partition=short", "#SBATCH --account=proj1", "#SBATCH --time=0:30:00",
                 "#SBATCH --cpus-per-task=2", "#SBATCH --mem=3G", "#SBATCH --qos=low", "module load gdal/3.8", "source /opt/venv/bin/activate",
                 "--part ${SLURM_ARRAY_TASK_ID}/6", "sbatch --dependency=afterany:"):  # fmt: skip
        assert line in text, line
    assert "--mem-per-cpu" not in text  # --mem replaces the estimate
    assert not out.exists()


@pytest.mark.slurm
@pytest.mark.parametrize("job", sorted(JOBS))
def test_slurm_array_matches_serial(job: str, scene: Path, refs: dict[str, bytes], tmp_path: Path, slurm_cluster: SlurmCluster) -> None:
    out = tmp_path / f"{job}.tif"
    r = run_cli(*JOBS[job](scene, out, "--executor", "slurm", "--parts", "3", "--partition", slurm_cluster.partition), env=slurm_cluster.env())
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == refs[job]
    st_ = status(out, slurm_cluster.env())
    assert st_["state"] == "complete" and st_["batch"]["system"] == "slurm" and st_["batch"]["parts"] == 3


@pytest.mark.slurm
def test_slurm_cancelled_element_is_named_and_resume_resubmits_only_it(scene: Path, refs: dict[str, bytes], tmp_path: Path,
                                                                         slurm_cluster: SlurmCluster) -> None:  # fmt: skip
    out = tmp_path / "ndvi.tif"
    env = slurm_cluster.env()
    # Every element sleeps first, so element 2 can be cancelled while it runs; --no-wait returns at once.
    args = ndvi(scene, out, "--executor", "slurm", "--parts", "4", "--partition", slurm_cluster.partition, "--setup", "sleep 4")
    r = run_cli(*args, "--no-wait", env=env)
    assert r.returncode == 0, r.stderr
    sub = json.loads((tmp_path / ".ndvi.tif.tilewise" / "batch" / "submissions.jsonl").read_text().splitlines()[-1])
    element = f"{sub['array_job']}_2"
    slurm_cluster.wait_state(element, "RUNNING", timeout=60)
    slurm_cluster.run("scancel", element)
    assert status(out, env)["state"] == "running"
    # A second run while the array is queued or running refuses, naming the jobs.
    r2 = run_cli(*args, env=env)
    assert r2.returncode == 2 and "is being computed by SLURM job(s)" in r2.stderr
    _wait_inactive(slurm_cluster, sub["finish_job"])
    st_ = status(out, env)
    assert st_["state"] == "incomplete" and not out.exists()
    (unfinished,) = st_["batch"]["unfinished"]
    assert unfinished["part"] == 2 and unfinished["job"] == element and "CANCELLED" in unfinished["state"]
    r = run_cli("-q", "resume", str(out), "--setup", "", env=env)
    assert r.returncode == 0, r.stderr
    last = json.loads((tmp_path / ".ndvi.tif.tilewise" / "batch" / "submissions.jsonl").read_text().splitlines()[-1])
    assert last["parts"] == [2]
    assert out.read_bytes() == refs["ndvi"]


@pytest.mark.slurm
def test_slurm_follower_reports_the_cancelled_part_by_name(scene: Path, tmp_path: Path, slurm_cluster: SlurmCluster) -> None:
    out = tmp_path / "ndvi.tif"
    env = slurm_cluster.env()
    proc = subprocess.Popen([*CLI, *ndvi(scene, out, "--executor", "slurm", "--parts", "2", "--partition", slurm_cluster.partition,
                                         "--setup", "sleep 3")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    subs = tmp_path / ".ndvi.tif.tilewise" / "batch" / "submissions.jsonl"
    deadline = time.monotonic() + 60
    while not subs.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    sub = json.loads(subs.read_text().splitlines()[-1])
    slurm_cluster.wait_state(f"{sub['array_job']}_1", "RUNNING", timeout=60)
    slurm_cluster.run("scancel", f"{sub['array_job']}_1")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    (line,) = errors(err)
    assert "part 1/2" in line and f"{sub['array_job']}_1" in line and "CANCELLED" in line and "tilewise resume" in line


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_time_limit_is_reported_and_resume_finishes(scene: Path, refs: dict[str, bytes], tmp_path: Path, slurm_cluster: SlurmCluster) -> None:
    out = tmp_path / "ndvi.tif"
    env = slurm_cluster.env()
    # One minute is SLURM's smallest limit; the setup line outlasts it.
    r = run_cli(*ndvi(scene, out, "--executor", "slurm", "--parts", "2", "--partition", slurm_cluster.partition, "--time", "1",
                      "--setup", "sleep 300"), env=env, timeout=400)  # fmt: skip
    assert r.returncode == 1
    assert "TIMEOUT (exceeded its time limit of 00:01:00)" in r.stderr
    st_ = status(out, env)
    assert st_["state"] == "incomplete"
    assert sorted(e["part"] for e in st_["batch"]["unfinished"]) == [1, 2]
    assert all("TIMEOUT" in e["state"] for e in st_["batch"]["unfinished"])
    text = run_cli("status", str(out), env=env).stdout
    assert "exceeded its time limit" in text
    r = run_cli("-q", "resume", str(out), "--time", "10", "--setup", "", env=env)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == refs["ndvi"]


def _wait_inactive(cluster: SlurmCluster, job_id: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while cluster.active(job_id):
        assert time.monotonic() < deadline, f"job {job_id} still active"
        time.sleep(0.2)
