"""Parsl: a HighThroughputExecutor whose worker pools run on this machine or as SLURM jobs.

The engine is imported only here. A private DataFlowKernel is used (never the global
``parsl.load``), its run directory lives under the job's work directory, and nothing is
logged to the console.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import math
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tilewise.errors import UsageError
from tilewise.executors.base import WorkerLostError, WorkList, usable_cores
from tilewise.executors.dask import DEFAULT_WALLTIME, slurm_preflight  # engine-free helpers; dask itself is not imported
from tilewise.executors.options import ExecutorOptions, memory_bytes

LABEL = "tilewise"


def _import_parsl() -> None:
    try:
        import parsl  # noqa: F401
    except ImportError:
        raise UsageError("the parsl executor needs the 'parsl' package, which is not installed",
                         "install it with: pip install 'tilewise[cluster]' (or parsl)") from None  # fmt: skip


def _call(fn: Callable[[Any], Any], unit: Any) -> Any:
    """Run one unit on a Parsl worker (``fn`` travels by reference, so it must be importable there)."""
    return fn(unit)


def _slots(wpn: int, cores: int) -> float:
    """``cores_per_worker`` that lets exactly ``wpn`` workers start on ``cores`` cores.

    Parsl starts ``min(max_workers_per_node, cores / cores_per_worker)`` workers; an
    explicit worker count above the core count must not be cut down silently.
    """
    return min(1.0, cores / wpn * (1 - 1e-9))


class ParslExecutor:
    """Runs work units on a Parsl HighThroughputExecutor.

    Parameters
    ----------
    opts
        Executor options. ``parsl_provider="slurm"`` submits ``blocks`` SLURM jobs of
        ``resources.nodes`` nodes, each running ``workers_per_node`` workers
        (default: ``resources.cpus_per_task``); otherwise one worker pool of
        ``workers_per_node`` (or ``workers``, default: usable cores) processes runs on
        this machine. ``interface`` names the network the workers use to reach the
        interchange (default: loopback for a local pool, every address for SLURM).
    workdir
        The job's work directory: Parsl's run directory (logs, batch scripts) is
        ``workdir/parsl``; without one a temporary directory, removed on close.

    Attributes
    ----------
    workers : int
        Task slots that run at once (workers per node × nodes × blocks).
    detail : str
        Where Parsl keeps its logs, for the CLI to show.

    Raises
    ------
    UsageError
        ``sbatch`` is missing for the SLURM provider, the interface does not exist,
        or parsl is not installed.
    """

    name = "parsl"

    def __init__(self, opts: ExecutorOptions, workdir: Path | None = None) -> None:
        _import_parsl()
        from parsl.app.python import PythonApp
        from parsl.config import Config
        from parsl.dataflow.dflow import DataFlowKernel
        from parsl.executors import HighThroughputExecutor

        address = self._address(opts)
        # Batch scripts run a login shell without our venv activated: the worker pool's
        # entry point (process_worker_pool.py) lives beside this interpreter.
        path_line = f"export PATH={Path(sys.executable).parent}:$PATH"
        if opts.parsl_provider == "slurm":
            provider, wpn, cores_per_worker, nodes = self._slurm(opts, path_line)
        else:
            from parsl.providers import LocalProvider

            wpn = opts.workers_per_node or opts.workers or usable_cores()
            cores_per_worker = _slots(wpn, usable_cores())
            nodes = 1
            provider = LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1, worker_init=path_line)
        blocks = provider.max_blocks
        self.workers = wpn * nodes * blocks
        self._own_run_dir = workdir is None
        run_dir = Path(tempfile.mkdtemp(prefix="tilewise-parsl-")) if workdir is None else Path(workdir) / "parsl"
        run_dir.mkdir(parents=True, exist_ok=True)
        self._run_dir = run_dir
        htex = HighThroughputExecutor(
            label=LABEL, provider=provider, address=address, max_workers_per_node=wpn, cores_per_worker=cores_per_worker,
            # The interchange started by this very interpreter, not found on PATH.
            interchange_launch_cmd=[sys.executable, "-m", "parsl.executors.high_throughput.interchange"],
        )  # fmt: skip
        # min_blocks = max_blocks: the pools stay up between phases (tiles, overviews,
        # assembly); the strategy only replaces a lost block. retries=0: the runner retries.
        config = Config(executors=[htex], strategy="simple", strategy_period=0.5, run_dir=str(run_dir), retries=0,
                        initialize_logging=False, usage_tracking=0)  # fmt: skip
        try:
            self._dfk: Any = DataFlowKernel(config)
        except BaseException:
            if self._own_run_dir:
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        self._closed = False
        self.detail = f"parsl logs in {str(self._dfk.run_dir)!r}" if not self._own_run_dir else ""
        # One app for every function: Parsl reads an app's signature, which builtins lack.
        self._app = PythonApp(_call, data_flow_kernel=self._dfk, executors=[LABEL])
        # The interchange outlives this process unless stopped: stop it even when a script
        # using tilewise dies of an uncaught exception.
        atexit.register(self.close)

    @staticmethod
    def _address(opts: ExecutorOptions) -> str | None:
        if opts.interface:
            from parsl.addresses import address_by_interface

            try:
                return str(address_by_interface(opts.interface))
            except OSError:
                raise UsageError(f"network interface {opts.interface!r} not found on this machine",
                                 "name one that 'ip addr' lists (e.g. ib0, eth0, lo)") from None  # fmt: skip
        # A local pool talks over loopback; SLURM workers probe every address of this host.
        return "127.0.0.1" if opts.parsl_provider == "local" else None

    @staticmethod
    def _slurm(opts: ExecutorOptions, path_line: str) -> tuple[Any, int, float, int]:
        from parsl.launchers import SingleNodeLauncher, SrunLauncher
        from parsl.providers import SlurmProvider

        res = opts.resources
        cores = res.cpus_per_task
        wpn = opts.workers_per_node or cores or 1
        mem_gb: int | None = None
        if res.mem:
            mem_gb = math.ceil(memory_bytes(res.mem) / 2**30)
        elif res.mem_per_cpu:
            mem_gb = math.ceil(memory_bytes(res.mem_per_cpu) * (cores or 1) / 2**30)
        blocks = opts.blocks or 1
        nodes = res.nodes or 1
        slurm_preflight(res, cpus=cores or 1, mem_mb=mem_gb * 1024 if mem_gb else None, nodes=nodes, engine="Parsl")
        worker_init = "\n".join([*(f"module load {m}" for m in res.modules), *res.setup, path_line])
        provider = SlurmProvider(
            partition=res.partition, account=res.account, walltime=res.time or DEFAULT_WALLTIME, nodes_per_block=nodes, cores_per_node=cores,
            mem_per_node=mem_gb, init_blocks=blocks, min_blocks=blocks, max_blocks=blocks, exclusive=False,
            scheduler_options="\n".join(f"#SBATCH {a}" for a in res.sbatch_args), worker_init=worker_init,
            # A block of several nodes needs srun to start a worker pool on each of them.
            launcher=SrunLauncher() if nodes > 1 else SingleNodeLauncher(),
        )  # fmt: skip
        return provider, wpn, _slots(wpn, cores) if cores else 1.0, nodes

    # ------------------------------------------------------------------ running

    def map_unordered(self, fn: Callable[[Any], Any], units: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        """Run ``fn(unit)`` for each unit on the Parsl workers; yield ``(index, result or exception)`` as they finish.

        ``fn`` must be importable by the workers (a module-level function) and units
        picklable. At most twice as many units as task slots are submitted at once.
        """
        work = units if isinstance(units, WorkList) else WorkList(units)
        app = self._app
        pending: dict[cf.Future[Any], int] = {}
        in_flight = 2 * self.workers

        def top_up() -> None:
            while len(pending) < in_flight and (i := work.take()) is not None:
                pending[app(fn, work[i])] = i

        try:
            top_up()
            while pending:
                done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    yield pending.pop(fut), self._outcome(fut)
                top_up()
        finally:
            # Parsl cannot cancel a submitted task: those in flight are dropped here and
            # stopped with the workers by close().
            pending.clear()

    def _outcome(self, fut: cf.Future[Any]) -> Any:
        """The unit's result or exception; a lost worker becomes WorkerLostError, failed pools a UsageError."""
        from parsl.executors.errors import BadStateException
        from parsl.executors.high_throughput.errors import ManagerLost, WorkerLost

        exc = fut.exception()
        if exc is None:
            return fut.result()
        if isinstance(exc, (WorkerLost, ManagerLost)):
            return WorkerLostError(f"a parsl worker was lost while running this task ({exc})")
        if isinstance(exc, BadStateException):
            # Its blocks keep failing to start (or died): no unit can run any more, so stop the
            # run with one message instead of failing every tile with it.
            reason = " ".join(str(exc).split())[:400]
            raise UsageError(f"Parsl's worker pools failed ({reason})", f"see the logs in {str(self._dfk.run_dir)!r}")
        return exc

    # ------------------------------------------------------------------ shutting down

    def close(self) -> None:
        """Stop the worker pools (cancelling their batch jobs) and the interchange."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        try:
            self._dfk.cleanup()
        finally:
            if self._own_run_dir:
                shutil.rmtree(self._run_dir, ignore_errors=True)

    def terminate(self) -> None:
        """Stop at once (Ctrl-C): the same as :meth:`close`, which does not wait for running tasks."""
        self.close()


__all__ = ["ParslExecutor"]
