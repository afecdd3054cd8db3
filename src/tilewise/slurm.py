"""Talking to SLURM's command-line tools: submit, list what is active, and read how jobs ended.

Only the client commands are used (``sbatch``, ``squeue``, ``scontrol``, ``scancel``),
so this works wherever a user can submit jobs, without ``sacct``/slurmdbd.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tilewise.errors import TilewiseError, UsageError

# States in which a job or array element may still run.
ACTIVE_STATES = frozenset({"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING"})

# What a final state means, for messages.
STATE_MEANING = {
    "TIMEOUT": "exceeded its time limit",
    "CANCELLED": "was cancelled (scancel or the administrator)",
    "FAILED": "exited with an error",
    "NODE_FAIL": "lost its node",
    "OUT_OF_MEMORY": "ran out of memory",
    "PREEMPTED": "was preempted",
    "BOOT_FAIL": "could not start its node",
    "DEADLINE": "passed its deadline",
}


class SlurmError(TilewiseError):
    """A SLURM command failed (submission refused, controller unreachable)."""


def require(tool: str = "sbatch") -> str:
    """Return the path of a SLURM client command, or raise a one-line :class:`UsageError`."""
    path = shutil.which(tool)
    if path is None:
        raise UsageError(f"{tool} not found on PATH, so --executor slurm cannot submit jobs",
                         "run on a SLURM login node (or load its module), or use --dry-run to only write the script")  # fmt: skip
    return path


def _call(args: Sequence[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        require(args[0])
        raise
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{args[0]} did not answer within {timeout:.0f} s", "check that the SLURM controller is up (scontrol ping)") from None


def sbatch(script: str, *args: str) -> str:
    """Submit ``script`` with extra ``sbatch`` arguments; return the job id."""
    exe = require("sbatch")
    proc = _call([exe, "--parsable", *args, script])
    if proc.returncode != 0:
        msg = " ".join((proc.stderr or proc.stdout).split()) or f"exit status {proc.returncode}"
        raise SlurmError(f"sbatch refused {script!r}: {msg}", "check --partition, --account, --time and the other resources")
    return proc.stdout.strip().split(";")[0]


def active(job_ids: Iterable[str]) -> dict[str, str]:
    """Map each job or array element (``ID`` or ``ID_TASK``) still queued or running to its state.

    Ids SLURM no longer knows are simply absent.
    """
    ids = [j for j in job_ids if j]
    if not ids or shutil.which("squeue") is None:
        return {}
    out: dict[str, str] = {}
    # One query per id: squeue rejects the whole list when one id has left its memory.
    for jid in ids:
        proc = _call(["squeue", "-h", "-r", "-j", jid, "-o", "%i %T"], timeout=30)
        if proc.returncode != 0:
            continue
        for line in proc.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1] in ACTIVE_STATES:
                out[parts[0]] = parts[1]
    return out


@dataclass(frozen=True)
class JobState:
    """How one job or array element stands or ended, as ``scontrol show job`` reports it."""

    job_id: str  # ID or ID_TASK
    state: str
    reason: str
    time_limit: str
    exit_code: str

    def describe(self) -> str:
        """A short phrase, e.g. ``TIMEOUT (exceeded its time limit of 00:01:00)``."""
        meaning = STATE_MEANING.get(self.state)
        if self.state == "TIMEOUT":
            meaning = f"exceeded its time limit of {self.time_limit}"
        return f"{self.state} ({meaning})" if meaning else self.state


def states(job_id: str) -> dict[str, JobState]:
    """States of a job and, for an array, of each element still in the controller's memory (``MinJobAge``)."""
    if not job_id or shutil.which("scontrol") is None:
        return {}
    proc = _call(["scontrol", "show", "job", "-o", job_id], timeout=30)
    if proc.returncode != 0:
        return {}
    out: dict[str, JobState] = {}
    for line in proc.stdout.splitlines():
        fields = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
        base = fields.get("ArrayJobId") or fields.get("JobId", "")
        task = fields.get("ArrayTaskId")
        jid = f"{base}_{task}" if task and task.isdigit() else fields.get("JobId", "")
        out[jid] = JobState(jid, fields.get("JobState", "UNKNOWN"), fields.get("Reason", ""), fields.get("TimeLimit", ""), fields.get("ExitCode", ""))
    return out


def cancel(job_ids: Iterable[str]) -> None:
    """Cancel jobs (used by tests and by ``--overwrite`` of a job whose array is still queued)."""
    ids = [j for j in job_ids if j]
    if ids and shutil.which("scancel"):
        _call(["scancel", *ids], timeout=30)


def array_spec(parts: Sequence[int], max_running: int | None = None) -> str:
    """``--array`` value for 1-based part numbers, ranges compressed: ``[1,2,3,7]`` -> ``1-3,7``."""
    spans: list[str] = []
    ps = sorted(set(parts))
    i = 0
    while i < len(ps):
        j = i
        while j + 1 < len(ps) and ps[j + 1] == ps[j] + 1:
            j += 1
        spans.append(str(ps[i]) if i == j else f"{ps[i]}-{ps[j]}")
        i = j + 1
    return ",".join(spans) + (f"%{max_running}" if max_running else "")
