"""``tilewise bench executors``: the same job on every engine, as the tutorial's table.

Each executor runs the job into a fresh output folder in a child process
(:func:`tilewise.scaling._measure`). CPU time is the whole machine's busy time
during the run: SLURM array elements run under ``slurmd``, not under this
process, so a process-tree count would miss them (run it on a quiet machine).
Every output is compared byte for byte with the serial run's.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tilewise.errors import UsageError
from tilewise.executors import EXECUTORS, usable_cores
from tilewise.job import Job
from tilewise.scaling import _measure, machine_info, relocated

DEFAULT_ENGINES = ("serial", "processes", "dask", "parsl", "slurm", "gnu-parallel")


@dataclass
class EngineRun:
    """One executor's run of the job."""

    executor: str
    jobs: int  # processes / batch jobs the engine ran the work in
    cores_per_job: int
    wall_s: float
    cpu_s: float
    same_bytes: bool
    note: str = ""

    @property
    def cores(self) -> int:
        return self.jobs * self.cores_per_job

    @property
    def efficiency(self) -> float:
        """CPU seconds over the core-seconds the run held (wall × cores)."""
        return self.cpu_s / (self.wall_s * self.cores) if self.wall_s > 0 else 0.0


def parse_engines(spec: str) -> list[str]:
    """``serial,processes,dask`` -> a list of known executor names (serial is always measured first)."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in EXECUTORS]
    if bad or not names:
        raise UsageError(f"--executors {spec!r} names no executor {bad[0]!r}" if bad else f"--executors {spec!r} is empty",
                         f"give a comma-separated list of {', '.join(EXECUTORS)}")  # fmt: skip
    return ["serial", *[n for n in names if n != "serial"]]


def _engine_job(job: Job, folder: Path, name: str, workers: int, options: dict[str, Any]) -> tuple[Job, int, int]:
    """The job for ``name`` with ``workers`` cores, and (jobs, cores per job) for the table."""
    j = relocated(job, folder, name, 1 if name == "serial" else workers)
    update: dict[str, Any] = {}
    jobs, per = 1, 1 if name == "serial" else workers
    if name in ("slurm", "gnu-parallel"):
        # One part per core, one core per part: the tutorial's array job and GNU parallel.
        update.update(parts=workers, max_running=workers)
        jobs, per = workers, 1
        if name == "slurm":
            given = {k: v for k, v in options.items() if v is not None and k in ("partition", "account")}
            update["resources"] = j.executor.resources.model_copy(update={**given, "cpus_per_task": 1})
    if name == "dask":
        update["threads_per_worker"] = 1
    if name == "parsl":
        update["workers_per_node"] = workers
    return j.model_copy(update={"executor": j.executor.model_copy(update=update)}), jobs, per


def _digest(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _outputs(job: Job) -> list[Path]:
    return [Path(it.output) for it in job.items]


def run_executor_bench(job: Job, engines: Sequence[str], workers: int | None = None, *, work_dir: str | Path | None = None,
                       options: dict[str, Any] | None = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """Run ``job`` on each executor in ``engines`` (serial first) and return the table as a JSON-ready dict.

    Parameters
    ----------
    job
        The job; its outputs are moved into a scratch folder per executor.
    engines
        Executor names; serial is the reference for speedup and output bytes.
    workers
        Cores every parallel executor gets (default: usable cores).
    work_dir
        Scratch folder (default: a temporary folder, removed after).
    options
        ``partition``/``account`` for the slurm executor.
    """
    say = progress or (lambda m: None)
    n = workers or usable_cores()
    scratch = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="tilewise-executors-"))
    runs: list[EngineRun] = []
    ref = ""
    try:
        for name in engines:
            folder = scratch / name
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            j, jobs, per = _engine_job(job, folder, name, n, options or {})
            say(f"running on {name} ({jobs} job(s) x {per} core(s)) ...")
            m = _measure(j, folder)
            cpu = m.cpu_s + m.other_cores * m.process_wall_s  # the whole machine's busy time: SLURM's processes too
            digest = _digest(_outputs(j))
            ref = ref or digest
            # The whole command's time, start-up included, as the tutorial timed its jobs.
            runs.append(EngineRun(name, jobs, per, m.process_wall_s, cpu, digest == ref))
            say(f"  {m.process_wall_s:.1f} s, CPU {cpu:.1f} s, output {'identical to serial' if digest == ref else 'DIFFERENT from serial'}")
    finally:
        if not work_dir:
            shutil.rmtree(scratch, ignore_errors=True)
    serial = runs[0].wall_s
    return {
        "job": {"command": job.command, "items": len(job.items)},
        "workers": n,
        "machine": machine_info(usable_cores()),
        "runs": [asdict(r) | {"speedup": round(serial / r.wall_s, 3) if r.wall_s else None, "efficiency": round(r.efficiency, 3)} for r in runs],
    }


def _clock(s: float) -> str:
    m, sec = divmod(round(s), 60)
    return f"{m}:{sec:02d}"


LABELS = {"serial": "single core", "processes": "multiprocessing (processes)", "threads": "threads", "dask": "dask (LocalCluster)",
          "parsl": "parsl (HighThroughputExecutor)", "slurm": "SLURM array job", "gnu-parallel": "GNU parallel"}  # fmt: skip


def table(result: dict[str, Any]) -> str:
    """The tutorial's table: Example, Jobs, CPU cores/job, Time, CPU efficiency, plus speedup and output check."""
    lines = ["| Example | Jobs | CPU cores/job | Time | CPU efficiency | Speedup | Output |", "|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        lines.append(f"| {LABELS.get(r['executor'], r['executor'])} | {r['jobs']} | {r['cores_per_job']} | {_clock(r['wall_s'])} ({r['wall_s']:.1f} s) "
                     f"| {100 * r['efficiency']:.0f}% | {r['speedup']:.2f}x | {'= serial' if r['same_bytes'] else 'DIFFERS'} |")  # fmt: skip
    return "\n".join(lines)


def winner(result: dict[str, Any]) -> str:
    """The fastest executor and every other's time relative to it, as one Markdown line."""
    runs = result["runs"]
    if not runs:
        return "**Winner**: none measured."
    best = min(runs, key=lambda r: r["wall_s"])
    others = ", ".join(f"{LABELS.get(r['executor'], r['executor'])} {r['wall_s'] / best['wall_s']:.2f}x" for r in runs if r is not best)
    return f"**Winner**: {LABELS.get(best['executor'], best['executor'])} ({best['wall_s']:.1f} s); the others' time relative to it: {others or 'none'}."


def write(result: dict[str, Any], out: Path) -> list[Path]:
    """Write executors.json and executors.md into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "executors.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    m = result["machine"]
    md = [f"# tilewise bench executors: {result['job']['command']}", "",
          f"Machine: {m.get('cpu_model', '?')}, {m.get('usable_cores', '?')} usable cores; {result['workers']} core(s) per parallel executor.", "",
          table(result), "", winner(result), ""]  # fmt: skip
    (out / "executors.md").write_text("\n".join(md), encoding="utf-8")
    return [out / "executors.json", out / "executors.md"]
