"""Where and how a job runs: executor choice, engine settings and cluster resources.

These models are saved with the job but are not part of its fingerprint: moving a
job to another engine never changes its output bytes. They live here, not in
``tilewise.job``, so that executors can read them without importing any op.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Local executors first; then the engines that reach other machines.
EXECUTORS = ("processes", "threads", "serial", "dask", "parsl", "slurm", "gnu-parallel")
CLUSTER_EXECUTORS = ("dask", "parsl", "slurm", "gnu-parallel")

_MEM = re.compile(r"^\d+(\.\d+)?\s*([KMGT]i?B?)?$", re.IGNORECASE)
# SLURM --time forms: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S
_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClusterResources(_Model):
    """Resources asked of a batch system, shared by the dask-jobqueue, Parsl and SLURM executors.

    Unset values are estimated from the job when it is planned (see
    :func:`tilewise.cluster.estimate_resources`).
    """

    partition: str | None = None
    account: str | None = None
    time: str | None = None  # SLURM walltime: MM, HH:MM:SS, D-HH:MM ...
    cpus_per_task: int | None = Field(default=None, ge=1, le=1024)
    mem_per_cpu: str | None = None  # e.g. 2G
    mem: str | None = None  # per node, instead of mem_per_cpu
    nodes: int | None = Field(default=None, ge=1, le=100000)
    sbatch_args: tuple[str, ...] = ()  # extra '#SBATCH' arguments, e.g. --qos=short
    modules: tuple[str, ...] = ()  # 'module load' lines for the worker environment
    setup: tuple[str, ...] = ()  # shell lines run before a worker starts

    @field_validator("time")
    @classmethod
    def _time(cls, v: str | None) -> str | None:
        if v is not None and not _TIME.match(v.strip()):
            raise ValueError(f"--time {v!r} is not a SLURM time limit; use MINUTES, HH:MM:SS or D-HH:MM, e.g. --time 01:30:00")
        return v.strip() if v is not None else v

    @field_validator("mem_per_cpu", "mem")
    @classmethod
    def _mem(cls, v: str | None) -> str | None:
        if v is not None and not _MEM.match(v.strip()):
            raise ValueError(f"memory {v!r} is not a size; give a number with a unit, e.g. 2G or 500M")
        return v.strip() if v is not None else v


class ExecutorOptions(_Model):
    """Where tasks run and how; not part of the fingerprint (moving a job does not change it)."""

    name: str = "processes"
    workers: int | None = None
    retries: int = Field(default=2, ge=0, le=20)
    fail_fast: bool = False  # stop at the first tile that failed all its attempts (default: finish the others)
    # Granularity: tiles per task handed to the engine (default: sized for the engine's overhead).
    tiles_per_task: int | None = Field(default=None, ge=1)
    # Dask
    threads_per_worker: int | None = Field(default=None, ge=1, le=256)
    memory_limit: str | None = None  # per dask worker: 4GB, auto
    scheduler: str | None = None  # address of a running dask scheduler
    dask_cluster: Literal["local", "slurm"] = "local"
    adapt: tuple[int, int] | None = None  # dask-jobqueue adaptive scaling, in jobs
    # Parsl
    parsl_provider: Literal["local", "slurm"] = "local"
    blocks: int | None = Field(default=None, ge=1, le=10000)  # parsl blocks (batch jobs), also dask-jobqueue jobs
    workers_per_node: int | None = Field(default=None, ge=1, le=1024)
    # SLURM job arrays and GNU parallel
    parts: int | None = Field(default=None, ge=1, le=100000)  # array elements / parallel jobs
    max_running: int | None = Field(default=None, ge=1)  # the M of --array=1-N%M, parallel -j M
    interface: str | None = None  # network interface workers use to reach the dask scheduler / parsl interchange (ib0, lo)
    resources: ClusterResources = ClusterResources()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if v not in EXECUTORS:
            raise ValueError(f"unknown executor {v!r}; use one of: {', '.join(EXECUTORS)}")
        return v

    @field_validator("adapt")
    @classmethod
    def _adapt(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and not (0 <= v[0] <= v[1] and v[1] >= 1):
            raise ValueError(f"--adapt {v[0]}:{v[1]} is not a range of jobs; give MIN:MAX with 0 <= MIN <= MAX and MAX >= 1, e.g. --adapt 1:4")
        return v


def parse_adapt(text: str) -> tuple[int, int]:
    """Parse ``MIN:MAX`` (``--adapt``) into two integers; raise ValueError with the offending text."""
    lo, sep, hi = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(lo), int(hi)
    except ValueError:
        raise ValueError(f"--adapt {text!r} is not MIN:MAX; give two whole numbers of jobs, e.g. --adapt 1:4") from None


def memory_bytes(text: str) -> int:
    """Bytes in a SLURM/dask memory size (``500M``, ``2G``, ``4GB``, ``1.5GiB``; a bare number is MiB as in SLURM)."""
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)\s*$", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"memory {text!r} is not a size; give a number with a unit, e.g. 2G or 500M")
    unit = m.group(2).upper() or "M"
    return int(float(m.group(1)) * 1024 ** "KMGT".index(unit) * 1024)
