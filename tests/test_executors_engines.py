"""Promise 6 on the cluster engines: Dask and Parsl give the serial executor's bytes.

Real engines, nothing mocked: a Dask ``LocalCluster`` (started by the executor, or
beforehand as a "running scheduler"), a local Parsl HighThroughputExecutor, a Dask worker
killed with SIGKILL in the middle of a run, and (marked ``slurm``) dask-jobqueue and
Parsl's SlurmProvider on the single-node SLURM of ``tests/slurm_cluster.py``.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import two_band_scene, write_raster
from tilewise.api import focal_job, normdiff_job
from tilewise.errors import UsageError
from tilewise.executors.base import WorkList
from tilewise.executors.options import ClusterResources, ExecutorOptions
from tilewise.runner import Event, RunSummary, run_job

pytest.importorskip("distributed")
pytest.importorskip("parsl")

try:
    from tests.slurm_cluster import slurm_cluster  # the session fixture, when that module exists
except ImportError:

    @pytest.fixture(scope="session")
    def slurm_cluster() -> Any:
        pytest.skip("tests/slurm_cluster.py (the test SLURM cluster) is not available")


pytestmark = pytest.mark.engines

# Jobs: (name, builder). Small tiles on a 1000 x 1200 raster: 20 tiles, several units per worker.
JOBS: dict[str, Callable[..., Any]] = {
    "ndvi": lambda src, out: normdiff_job([str(src)], str(out), index="ndvi", a=1, b=2, tile_size=256, executor="serial"),
    "focal": lambda src, out: focal_job([str(src)], str(out), stat="mean", size=5, tile_size=256, executor="serial"),
    # Slow enough (about 0.1 s a tile) that a worker is busy when it is killed.
    "median": lambda src, out: focal_job([str(src)], str(out), stat="median", size=9, tile_size=256, executor="serial"),
}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("engines")
    return write_raster(d / "scene.tif", two_band_scene(1000, 1200, seed=3), nodata=0, blocksize=256)


@pytest.fixture(scope="module")
def reference(scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], str]:
    """The sha256 of each job's output from the serial (reference) executor, computed once when first asked."""
    d = tmp_path_factory.mktemp("serial")
    cache: dict[str, str] = {}

    def get(name: str) -> str:
        if name not in cache:
            out = d / f"{name}.tif"
            run_job(JOBS[name](scene, out))
            cache[name] = sha(out)
        return cache[name]

    return get


def run_on(name: str, scene: Path, out: Path, opts: ExecutorOptions | None = None, **kwargs: Any) -> RunSummary:
    job = JOBS[name](scene, out)
    if opts is not None:
        job = job.model_copy(update={"executor": opts})
    return run_job(job, **kwargs)


# ---------------------------------------------------------------- Dask


@pytest.mark.parametrize("name", ["ndvi", "focal"])
def test_dask_local_cluster_same_bytes(name: str, scene: Path, reference: Callable[[str], str], tmp_path: Path) -> None:
    out = tmp_path / "out.tif"
    events: list[Any] = []
    summary = run_on(name, scene, out, ExecutorOptions(name="dask", workers=2), progress=events.append)
    assert (summary.executor, summary.workers, summary.failed) == ("dask", 2, {})
    assert summary.tiles_run == summary.tiles_total == 20
    assert sha(out) == reference(name)
    # The start line (what the CLI prints) gives the dashboard's address.
    (start,) = [e.message for e in events if e.kind == "start"]
    assert re.search(r"dashboard http://127\.0\.0\.1:\d+/status", start), start


@pytest.mark.slow
def test_dask_worker_killed_mid_run(scene: Path, reference: Callable[[str], str], tmp_path: Path) -> None:
    from tilewise.executors.dask import DaskExecutor

    ex = DaskExecutor(ExecutorOptions(name="dask", workers=2))
    killed: list[str] = []

    def kill_a_busy_worker(ev: Event) -> None:
        # At the first finished tiles, SIGKILL a worker that is running a unit right now.
        if ev.kind != "tile" or killed:
            return
        busy = [addr for addr, keys in ex.client.processing().items() if keys]
        if busy:
            pid = ex.client.run(os.getpid, workers=busy[:1])[busy[0]]
            os.kill(pid, signal.SIGKILL)
            killed.append(busy[0])

    try:
        out = tmp_path / "out.tif"
        summary = run_on("median", scene, out, progress=kill_a_busy_worker, executor=ex)
        # The scheduler saw the worker go with work on it, and ran that work again elsewhere.
        removed = [msg for _t, msg in ex.client.get_events("all") if isinstance(msg, dict) and msg.get("action") == "remove-worker"]
    finally:
        ex.close()
    assert killed, "no worker was busy when the first tiles finished"
    assert any(m.get("worker") == killed[0] and m.get("processing-tasks") for m in removed), removed
    assert summary.failed == {} and summary.tiles_run == 20
    assert sha(out) == reference("median")


def test_dask_unreachable_scheduler_fails_fast() -> None:
    from tilewise.executors.dask import DaskExecutor

    t0 = time.perf_counter()
    with pytest.raises(UsageError, match=r"tcp://127\.0\.0\.1:1.*dask scheduler"):
        DaskExecutor(ExecutorOptions(name="dask", scheduler="tcp://127.0.0.1:1"))
    assert time.perf_counter() - t0 < 10


def test_dask_malformed_scheduler_address() -> None:
    from tilewise.executors.dask import DaskExecutor

    for address in ("nonsense", "foo://1.2.3.4:5"):
        with pytest.raises(UsageError, match=r"is not a dask scheduler address.*tcp://HOST:PORT"):
            DaskExecutor(ExecutorOptions(name="dask", scheduler=address))


def test_dask_scheduler_without_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    from distributed import LocalCluster

    import tilewise.executors.dask as dask_executor

    monkeypatch.setattr(dask_executor, "WORKER_WAIT_S", 1.0)  # the bounded wait, shortened
    with LocalCluster(n_workers=0, processes=True, dashboard_address=":0", silence_logs=50) as cluster:
        ex = dask_executor.DaskExecutor(ExecutorOptions(name="dask", scheduler=cluster.scheduler_address))
        try:
            assert ex.workers == 1
            with pytest.raises(UsageError, match=r"no dask worker connected within 1 s.*dask worker tcp://"):
                list(ex.map_unordered(abs, [-1]))
        finally:
            ex.close()


def test_dask_running_scheduler_same_bytes(scene: Path, reference: Callable[[str], str], tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=50) as cluster:
        out = tmp_path / "out.tif"
        summary = run_on("ndvi", scene, out, ExecutorOptions(name="dask", scheduler=cluster.scheduler_address))
        assert (summary.executor, summary.workers, summary.failed) == ("dask", 2, {})
        assert sha(out) == reference("ndvi")
        # The run disconnected but left the scheduler and its workers running.
        with Client(cluster.scheduler_address, timeout=5, set_as_default=False) as client:
            assert len(client.nthreads()) == 2


# ---------------------------------------------------------------- Parsl


@pytest.mark.parametrize("name", ["ndvi", "focal"])
def test_parsl_local_same_bytes(name: str, scene: Path, reference: Callable[[str], str], tmp_path: Path) -> None:
    out = tmp_path / "out.tif"
    had_runinfo = Path("runinfo").exists()
    summary = run_on(name, scene, out, ExecutorOptions(name="parsl", workers=2))
    assert (summary.executor, summary.workers, summary.failed) == ("parsl", 2, {})
    assert sha(out) == reference(name)
    # Parsl's run directory is in the job's work directory, not ./runinfo.
    assert (out.parent / f".{out.name}.tilewise" / "parsl").is_dir()
    assert had_runinfo or not Path("runinfo").exists()


# ---------------------------------------------------------------- WorkList semantics, both engines


@pytest.fixture(scope="module", params=["dask", "parsl"])
def engine(request: pytest.FixtureRequest) -> Iterator[Any]:
    """One running executor of each engine, shared by the semantics tests (built-in functions only:
    Parsl's workers cannot import this test module)."""
    from tilewise.executors import make_executor

    ex = make_executor(ExecutorOptions(name=request.param, workers=2))
    try:
        yield ex
    finally:
        ex.close()


def test_results_errors_and_retries(engine: Any) -> None:
    work = WorkList([4.0, 9.0, -1.0, 16.0])
    seen: dict[int, Any] = {}
    for i, result in engine.map_unordered(math.sqrt, work):
        seen[i] = result
        if i == 0:
            work.add(25.0)  # a "retry": handed out before the iterator ends
    assert sorted(seen) == [0, 1, 2, 3, 4]
    assert [seen[i] for i in (0, 1, 3, 4)] == [2.0, 3.0, 4.0, 5.0]
    assert isinstance(seen[2], ValueError)  # yielded, not raised


def test_closed_worklist_drains_and_stops(engine: Any) -> None:
    work = WorkList([float(x) for x in range(200)])
    got = []
    for i, _result in engine.map_unordered(math.sqrt, work):
        got.append(i)
        work.close()
    # Only what was already in flight (at most 2 per task slot) still came back.
    assert 1 <= len(got) <= 2 * engine.workers
    # Closing the iterator early leaves the executor usable.
    it = engine.map_unordered(abs, [-1, -2, -3, -4, -5, -6, -7])
    next(it)
    it.close()
    assert sorted(r for _i, r in engine.map_unordered(abs, [-1, -2])) == [1, 2]


# ---------------------------------------------------------------- on a real SLURM


def _slurm_resources(slurm_cluster: Any) -> ClusterResources:
    return ClusterResources(partition=slurm_cluster.partition, time="00:10:00", cpus_per_task=1, mem="1G")


def _queue_empties(slurm_cluster: Any, timeout: float = 20.0) -> bool:
    """True once no job is left in the queue: closing the executor cancelled its worker jobs."""
    deadline = time.monotonic() + timeout
    while slurm_cluster.run("squeue", "-h").strip():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.parametrize(("name", "scaling"), [("ndvi", {"blocks": 2}), ("ndvi", {"adapt": (0, 2)}), ("focal", {"blocks": 2})],
                         ids=["ndvi-scale", "ndvi-adapt", "focal-scale"])  # fmt: skip
def test_dask_jobqueue_slurm_same_bytes(name: str, scaling: dict[str, Any], slurm_cluster: Any, scene: Path, reference: Callable[[str], str],
                                        tmp_path: Path) -> None:  # fmt: skip
    out = tmp_path / "out.tif"
    opts = ExecutorOptions(name="dask", dask_cluster="slurm", interface="lo", resources=_slurm_resources(slurm_cluster), **scaling)
    summary = run_on(name, scene, out, opts)
    assert (summary.executor, summary.workers, summary.failed) == ("dask", 2, {})
    assert sha(out) == reference(name)
    assert list((out.parent / f".{out.name}.tilewise" / "dask-jobqueue").glob("*.err")), "no worker job logs"
    assert _queue_empties(slurm_cluster), slurm_cluster.run("squeue")


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.parametrize("name", ["ndvi", "focal"])
def test_parsl_slurm_provider_same_bytes(name: str, slurm_cluster: Any, scene: Path, reference: Callable[[str], str], tmp_path: Path) -> None:
    out = tmp_path / "out.tif"
    opts = ExecutorOptions(name="parsl", parsl_provider="slurm", blocks=1, workers_per_node=2, interface="lo",
                           resources=_slurm_resources(slurm_cluster))  # fmt: skip
    summary = run_on(name, scene, out, opts)
    assert (summary.executor, summary.workers, summary.failed) == ("parsl", 2, {})
    assert sha(out) == reference(name)
    assert list((out.parent / f".{out.name}.tilewise" / "parsl").glob("*/submit_scripts/parsl.tilewise.block-*")), "no batch script in the work directory"
    assert _queue_empties(slurm_cluster), slurm_cluster.run("squeue")


@pytest.mark.slurm
def test_dask_jobqueue_bad_interface(slurm_cluster: Any) -> None:
    from tilewise.executors.dask import DaskExecutor

    opts = ExecutorOptions(name="dask", dask_cluster="slurm", interface="nope0", resources=_slurm_resources(slurm_cluster))
    with pytest.raises(UsageError, match="nope0"):
        DaskExecutor(opts)


@pytest.mark.slurm
@pytest.mark.parametrize("engine", ["dask", "parsl"])
def test_job_slurm_refuses_is_a_usage_error(engine: str, slurm_cluster: Any) -> None:
    from tilewise.executors import make_executor

    res = ClusterResources(partition="nope", time="00:10:00")
    opts = ExecutorOptions(name=engine, dask_cluster="slurm", parsl_provider="slurm", interface="lo", resources=res)
    t0 = time.perf_counter()
    with pytest.raises(UsageError, match=r"SLURM would not run .* worker job .*partition.*nope"):
        make_executor(opts)
    assert time.perf_counter() - t0 < 10


def test_missing_sbatch_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from tilewise.executors.dask import DaskExecutor
    from tilewise.executors.parsl import ParslExecutor

    monkeypatch.setenv("PATH", "/nonexistent")
    t0 = time.perf_counter()
    with pytest.raises(UsageError, match="sbatch not found"):
        DaskExecutor(ExecutorOptions(name="dask", dask_cluster="slurm"))
    with pytest.raises(UsageError, match="sbatch not found"):
        ParslExecutor(ExecutorOptions(name="parsl", parsl_provider="slurm"))
    assert time.perf_counter() - t0 < 5


def test_warm_forkserver_is_the_one_the_process_pool_uses() -> None:
    """run_job starts the forkserver before planning so its imports overlap the plan; the pool must then fork from that same server."""
    from multiprocessing import forkserver

    from tilewise.executors import warm_executor
    from tilewise.executors.local import ProcessExecutor

    warm_executor(ExecutorOptions(name="processes"))
    pid = forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]
    assert pid is not None
    ex = ProcessExecutor(2)
    try:
        got = sorted(r for _i, r in ex.map_unordered(abs, [-3, -1, -2]))
    finally:
        ex.close()
    assert got == [1, 2, 3]
    assert forkserver._forkserver._forkserver_pid == pid  # type: ignore[attr-defined]
