"""Where tasks run. Executors move opaque picklable work; they never import ops."""

from __future__ import annotations

from pathlib import Path

from tilewise.errors import UsageError
from tilewise.executors.base import Executor, WorkList, usable_cores
from tilewise.executors.options import CLUSTER_EXECUTORS, EXECUTORS, ClusterResources, ExecutorOptions

# Executors that do not stream units through map_unordered: they hand whole shares of the
# job to batch jobs (SLURM array elements, GNU parallel jobs) that run `tilewise worker`.
DETACHED = ("slurm", "gnu-parallel")


def warm_executor(opts: ExecutorOptions) -> None:
    """Start, in the background, what the executor ``opts`` names can start cheaply before it is made.

    Called before a job is planned, so the start-up overlaps the planning: the processes
    executor's forkserver imports the worker modules (~0.4 s). Engines whose start-up
    costs more (a dask cluster, Parsl) start nothing here, so a job refused while
    planning has started nothing big.
    """
    if opts.name == "processes":
        from tilewise.executors.local import warm_forkserver

        warm_forkserver()


def make_executor(opts: ExecutorOptions, workdir: Path | None = None) -> Executor:
    """Create the streaming executor ``opts`` names (serial, threads, processes, dask or parsl).

    ``workdir`` is the job's work directory: engines that write logs or batch scripts
    (dask-jobqueue, Parsl) keep them under it.

    Raises
    ------
    UsageError
        Unknown name, a worker count below 1, or a detached executor (slurm,
        gnu-parallel), which the runner launches through :mod:`tilewise.launch`.
    """
    name = opts.name
    if opts.workers is not None and opts.workers < 1:
        raise UsageError(f"--workers {opts.workers} is not positive", "use --workers 1 or more")
    n = opts.workers if opts.workers is not None else usable_cores()
    if name == "serial":
        from tilewise.executors.local import SerialExecutor

        return SerialExecutor()
    if name == "threads":
        from tilewise.executors.local import ThreadExecutor

        return ThreadExecutor(n)
    if name == "processes":
        from tilewise.executors.local import ProcessExecutor

        return ProcessExecutor(n)
    if name == "dask":
        from tilewise.executors.dask import DaskExecutor

        return DaskExecutor(opts, workdir)
    if name == "parsl":
        from tilewise.executors.parsl import ParslExecutor

        return ParslExecutor(opts, workdir)
    if name in DETACHED:
        raise UsageError(f"executor {name!r} runs as batch jobs, not in this process", "run the job through tilewise.run_job or the CLI")
    raise UsageError(f"unknown executor {name!r}", f"use one of: {', '.join(EXECUTORS)}")


__all__ = ["CLUSTER_EXECUTORS", "DETACHED", "EXECUTORS", "ClusterResources", "Executor", "ExecutorOptions", "WorkList", "make_executor",
           "usable_cores", "warm_executor"]  # fmt: skip
