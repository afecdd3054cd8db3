"""Dask distributed: a local cluster, a running scheduler, or dask-jobqueue workers on SLURM.

The engine is imported only here (and only when this executor is chosen). Work units
stream through ``client.submit`` with the same bounded, lazy submission as the local
pool: a lost worker's tasks are rescheduled by dask itself; a task that keeps killing
its workers comes back as :class:`~tilewise.executors.base.WorkerLostError`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tilewise.errors import UsageError
from tilewise.executors.base import WorkerLostError, WorkList, usable_cores
from tilewise.executors.options import ClusterResources, ExecutorOptions, memory_bytes

# Seconds allowed to reach a running scheduler: an unreachable address must fail fast.
CONNECT_TIMEOUT_S = 5.0
# Walltime of worker jobs when none is given.
DEFAULT_WALLTIME = "01:00:00"
# Seconds the first map waits for a batch job's (or external scheduler's) first worker.
WORKER_WAIT_S = 120.0


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise UsageError("the dask executor needs the 'distributed' package, which is not installed",
                         "install it with: pip install 'tilewise[cluster]' (distributed, dask-jobqueue, parsl)") from None  # fmt: skip
    return distributed


def slurm_preflight(res: ClusterResources, *, cpus: int, mem_mb: int | None, nodes: int = 1, engine: str) -> None:
    """Ask SLURM whether it would accept a worker job of these resources (``sbatch --test-only``).

    Engines submit their batch jobs in the background, where a refusal (an unknown
    partition, too much memory) would only show as workers that never come: check first.

    Raises
    ------
    UsageError
        ``sbatch`` is missing, does not answer, or refuses the job; the message quotes SLURM.
    """
    if shutil.which("sbatch") is None:
        raise UsageError(f"sbatch not found on PATH, so {engine} cannot submit SLURM jobs",
                         "run on a SLURM login node, or run the engine locally (--dask-cluster local, --parsl-provider local)")  # fmt: skip
    args = ["sbatch", "--test-only", "--job-name=tilewise-check", f"--nodes={nodes}", f"--cpus-per-task={cpus}", f"--time={res.time or DEFAULT_WALLTIME}"]
    if res.partition:
        args.append(f"--partition={res.partition}")
    if res.account:
        args.append(f"--account={res.account}")
    if mem_mb:
        args.append(f"--mem={mem_mb}M")
    for extra in res.sbatch_args:
        args += shlex.split(extra)
    try:
        proc = subprocess.run([*args, "--wrap", "true"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise UsageError("sbatch --test-only did not answer within 60 s", "check that the SLURM controller is up ('scontrol ping')") from None
    if proc.returncode != 0:
        lines = [ln.removeprefix("sbatch: ").removeprefix("error: ").strip() for ln in (proc.stderr or proc.stdout).splitlines()]
        reason = "; ".join(ln for ln in lines if ln)[:300] or f"exit code {proc.returncode}"
        raise UsageError(f"SLURM would not run a {engine} worker job ({reason})",
                         "check --partition, --account, --time, --mem/--mem-per-cpu, --cpus-per-task and --sbatch-arg ('sinfo' lists partitions)")  # fmt: skip


class DaskExecutor:
    """Runs work units on Dask distributed workers.

    Parameters
    ----------
    opts
        Executor options. ``scheduler`` connects to a running scheduler;
        ``dask_cluster="slurm"`` starts dask-jobqueue workers as SLURM jobs
        (``blocks`` jobs, or adaptive between ``adapt`` jobs); otherwise a
        ``LocalCluster`` of ``workers`` processes with ``threads_per_worker``
        threads each is started on this machine.
    workdir
        The job's work directory; dask-jobqueue writes its job logs under
        ``workdir/dask-jobqueue``.

    Attributes
    ----------
    client : distributed.Client
        The client (for inspection: ``client.processing()``, ``client.get_events()``).
    workers : int
        Task slots that run at once (worker processes × threads).
    detail : str
        Where to watch the run (scheduler address, dashboard link), for the CLI to show.

    Raises
    ------
    UsageError
        The scheduler address cannot be reached, ``sbatch`` is missing for a SLURM
        cluster, or the engine is not installed.
    """

    name = "dask"

    def __init__(self, opts: ExecutorOptions, workdir: Path | None = None) -> None:
        distributed = _import_distributed()
        self._opts = opts
        self._cluster: Any = None  # only a cluster we started; an external scheduler is never closed
        self._ready = False  # set once a worker is known to be connected
        self._log_dir: Path | None = None
        if opts.scheduler:
            self.client = self._connect(distributed, opts.scheduler)
            self.workers = max(1, sum(self.client.nthreads().values()))
        elif opts.dask_cluster == "slurm":
            self._cluster, self.workers = self._slurm_cluster(opts, workdir)
            self.client = self._client_of(distributed, self._cluster)
        else:
            threads = opts.threads_per_worker or 1
            n = opts.workers or max(1, usable_cores() // threads)
            # processes=True: GDAL and numba code must not share one interpreter's GIL and
            # caches; workers start with "spawn" (dask's default), never forked from here.
            try:
                self._cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=threads, memory_limit=opts.memory_limit or "auto",
                                                         processes=True, dashboard_address=":0", silence_logs=logging.CRITICAL)  # fmt: skip
            except ValueError as exc:  # a memory limit dask cannot read
                raise UsageError(f"--memory-limit {opts.memory_limit!r} is not valid ({exc})", "give a size per worker, e.g. 4GB, or auto") from None
            self.client = self._client_of(distributed, self._cluster)
            self.workers = n * threads
            self._ready = True  # LocalCluster returns once its workers are up
        self.detail = self._describe()

    # ------------------------------------------------------------------ set-up

    @staticmethod
    def _client_of(distributed: Any, cluster: Any) -> Any:
        try:
            return distributed.Client(cluster, set_as_default=False)
        except BaseException:
            cluster.close()  # never leave worker processes or batch jobs behind
            raise

    @staticmethod
    def _connect(distributed: Any, address: str) -> Any:
        hint = "start one with 'dask scheduler' (and workers with 'dask worker ADDRESS'), or check --scheduler"
        try:
            # Check the form first: a Client that fails on a malformed address cannot be
            # cleaned up and stalls the interpreter's exit for 10 s.
            from distributed.comm.addressing import parse_address, parse_host_port
            from distributed.comm.registry import get_backend

            scheme, loc = parse_address(address)
            get_backend(scheme)
            if scheme in ("tcp", "tls", "ws", "wss"):
                parse_host_port(loc)
        except ValueError as exc:
            raise UsageError(f"--scheduler {address!r} is not a dask scheduler address ({exc})",
                             "give it as tcp://HOST:PORT, e.g. tcp://10.0.0.5:8786") from None  # fmt: skip
        try:
            return distributed.Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UsageError(f"cannot reach the dask scheduler at {address!r} ({reason[:160]})", hint) from None

    def _slurm_cluster(self, opts: ExecutorOptions, workdir: Path | None) -> tuple[Any, int]:
        try:
            from dask_jobqueue import SLURMCluster
        except ImportError:
            raise UsageError("--dask-cluster slurm needs the 'dask-jobqueue' package, which is not installed",
                             "install it with: pip install 'tilewise[cluster]' (or dask-jobqueue)") from None  # fmt: skip
        res = opts.resources
        cores = res.cpus_per_task or 1
        if res.mem:
            mem_mb = math.ceil(memory_bytes(res.mem) / 2**20)
        elif res.mem_per_cpu:
            mem_mb = math.ceil(memory_bytes(res.mem_per_cpu) * cores / 2**20)
        else:
            mem_mb = 2048
        slurm_preflight(res, cpus=cores, mem_mb=mem_mb, engine="dask-jobqueue")
        memory = f"{mem_mb}MiB"
        prologue = [f"module load {m}" for m in res.modules] + list(res.setup)
        kwargs: dict[str, Any] = {
            "cores": cores, "processes": 1, "memory": memory, "queue": res.partition, "account": res.account,
            "walltime": res.time or DEFAULT_WALLTIME, "job_extra_directives": list(res.sbatch_args), "job_script_prologue": prologue,
            "python": sys.executable, "scheduler_options": {"dashboard_address": ":0"}, "silence_logs": "error",
        }  # fmt: skip
        if workdir is not None:
            self._log_dir = Path(workdir) / "dask-jobqueue"
            self._log_dir.mkdir(parents=True, exist_ok=True)
            kwargs["log_directory"] = str(self._log_dir)
        if opts.interface:
            kwargs["interface"] = opts.interface
        try:
            cluster = SLURMCluster(**kwargs)
        except (ValueError, RuntimeError) as exc:  # e.g. an interface that does not exist ("Cluster failed to start: ...")
            raise UsageError(f"cannot start a dask-jobqueue SLURM cluster ({exc})", "check --interface (e.g. ib0, eth0, lo) and the resources") from None
        # Scale in jobs, not workers: scale(n) counts worker processes, which differs once
        # a job runs several of them.
        if opts.adapt is not None:
            cluster.adapt(minimum_jobs=opts.adapt[0], maximum_jobs=opts.adapt[1])
            jobs = opts.adapt[1]
        else:
            jobs = opts.blocks or 1
            cluster.scale(jobs=jobs)
        return cluster, cores * jobs

    def _describe(self) -> str:
        parts = []
        info = self.client.scheduler_info() if self.client.status == "running" else {}
        address = info.get("address") or getattr(self.client.scheduler, "address", "")
        if address:
            parts.append(f"scheduler {address}")
        try:
            import bokeh  # noqa: F401  # the dashboard is served only with bokeh installed
        except ImportError:
            pass
        else:
            link = self.client.dashboard_link
            if link:
                parts.append(f"dashboard {link}")
        return ", ".join(parts)

    def _wait_for_workers(self) -> None:
        """Wait, bounded, until a worker has connected (batch jobs may queue or fail to start)."""
        if self._ready:
            return
        try:
            self.client.wait_for_workers(1, timeout=WORKER_WAIT_S)
        except TimeoutError:
            if self._opts.scheduler:
                hint = f"start workers with 'dask worker {self._opts.scheduler}', or check that they can reach the scheduler"
            else:
                logs = f" and the logs in {str(self._log_dir)!r}" if self._log_dir else ""
                hint = f"check the worker jobs with 'squeue'{logs}; --interface may need to name the network the nodes share"
            raise UsageError(f"no dask worker connected within {WORKER_WAIT_S:.0f} s", hint) from None
        self._ready = True

    # ------------------------------------------------------------------ running

    def map_unordered(self, fn: Callable[[Any], Any], units: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        """Run ``fn(unit)`` for each unit on the workers; yield ``(index, result or exception)`` as they finish.

        At most twice as many units as task slots are submitted at once, so memory stays flat
        for millions of units and units added to a :class:`WorkList` (retries) run next.
        """
        from distributed import as_completed

        work = units if isinstance(units, WorkList) else WorkList(units)
        client = self.client
        pending: dict[Any, int] = {}
        in_flight = 2 * self.workers
        token = uuid.uuid4().hex[:12]
        prefix = getattr(fn, "__name__", "task").strip("_") or "task"
        ac = as_completed(loop=client.loop)

        def top_up() -> None:
            while len(pending) < in_flight and (i := work.take()) is not None:
                # A unique key: units are not pure (they write files), and a retry must run again.
                fut = client.submit(fn, work[i], pure=False, key=f"tilewise-{prefix}-{token}-{i}")
                pending[fut] = i
                ac.add(fut)

        try:
            top_up()
            # Submit before waiting: adaptive clusters start workers only for queued tasks.
            self._wait_for_workers()
            for fut in ac:
                i = pending.pop(fut)
                yield i, self._outcome(fut)
                top_up()
        finally:
            # Stopped early (fail-fast, an error, Ctrl-C): drop what has not finished.
            if pending and client.status == "running":
                client.cancel(list(pending), reason="tilewise stopped the run")
            pending.clear()

    @staticmethod
    def _outcome(fut: Any) -> Any:
        from distributed import KilledWorker

        try:
            return fut.result()
        except KilledWorker as exc:
            # Dask already re-ran it after each worker death (distributed.scheduler.allowed-failures).
            return WorkerLostError(f"dask workers died running this task ({exc})")
        except Exception as exc:
            if fut.status == "cancelled":  # e.g. the connection to the scheduler was lost
                return WorkerLostError(f"dask cancelled this task ({exc})")
            return exc

    # ------------------------------------------------------------------ shutting down

    def close(self) -> None:
        """Disconnect, and stop the cluster this executor started (never an external scheduler)."""
        client, cluster = self.client, self._cluster
        self._cluster = None
        try:
            client.close()
        finally:
            if cluster is not None:
                try:
                    cluster.close()
                except Exception:  # e.g. jobs that never started; must not hide how the run ended
                    logging.getLogger(__name__).debug("closing the dask cluster failed", exc_info=True)

    def terminate(self) -> None:
        """Stop at once (Ctrl-C): drop queued work and stop the workers this executor started."""
        client, cluster = self.client, self._cluster
        self._cluster = None
        with contextlib.suppress(Exception):  # already closing; the cluster below still goes
            client.close(timeout=2)
        if cluster is None:
            return
        from distributed import LocalCluster

        if isinstance(cluster, LocalCluster):
            # A nanny gives its worker 4 s to finish the running task before killing it.
            with contextlib.suppress(Exception):
                cluster.sync(_stop_nannies, list(cluster.workers.values()))
        with contextlib.suppress(Exception):
            cluster.close()


async def _stop_nannies(nannies: list[Any]) -> None:
    import asyncio

    await asyncio.gather(*(n.close(timeout=0.5, reason="tilewise-terminate") for n in nannies), return_exceptions=True)
