"""Batch runs: a job cut into parts that SLURM array elements or GNU parallel jobs run as ``tilewise worker``.

No coordinator has to stay alive. The submitting command saves the job, its
partition into parts (``parts.json``) and what it submitted (``batch/``) in the
work directory; each part records its tiles in a manifest file of its own; a
last step, ``tilewise worker WORKDIR --finish``, writes the outputs once every
tile is recorded (a SLURM job that depends on the array, or this process after
GNU parallel). ``tilewise status`` reads the same files and asks SLURM how
unfinished parts ended; ``tilewise resume`` submits only the parts with missing
tiles.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from tilewise import slurm
from tilewise.errors import OutputError, RunFailedError, UsageError
from tilewise.executors import Executor, ExecutorOptions, make_executor, usable_cores
from tilewise.io import DiskFullError
from tilewise.job import Job, Plan, plan_job
from tilewise.manifest import Manifest, WorkLock, write_json_atomic
from tilewise.resources import estimate
from tilewise.runner import (
    Event,
    ProgressFn,
    RunSummary,
    _check_output_paths,
    _fill_stats,
    _make_dirs,
    _make_tasks,
    _out_key,
    _Phase,
    _prepare_workdir,
    _run,
    _run_phase,
    _tile_done,
    _with_space_needed,
    check_unowned_outputs,
    output_done,
    prepare_op,
    raise_if_failed,
)
from tilewise.status import describe_failure, load_job_at

PARTS_FILE = "parts.json"
BATCH_DIR = "batch"
SUBMISSIONS = "submissions.jsonl"
# A SLURM array element should run for minutes: about this many pixels per core.
PART_PIXELS_PER_CPU = 1 << 30
MAX_PARTS = 1000
POLL_S = 1.0


def python_command() -> str:
    """How a batch job starts tilewise: this interpreter (so the same venv), as ``python -m tilewise``."""
    return f"{shlex.quote(sys.executable)} -m tilewise"


# ---------------------------------------------------------------- parts


def split(keys: list[str], n: int) -> list[list[str]]:
    """Cut task keys into ``n`` contiguous, near-equal parts (consecutive tiles share halo blocks)."""
    n = max(1, min(n, len(keys)))
    q, r = divmod(len(keys), n)
    out, start = [], 0
    for i in range(n):
        end = start + q + (1 if i < r else 0)
        out.append(keys[start:end])
        start = end
    return out


def default_parts(opts: ExecutorOptions, tasks: list[Any]) -> int:
    """How many parts to cut ``tasks`` into when ``--parts`` is not given."""
    if opts.parts:
        return max(1, min(opts.parts, len(tasks)))
    if opts.tiles_per_task:
        return max(1, math.ceil(len(tasks) / opts.tiles_per_task))
    if opts.name == "slurm":
        cpus = opts.resources.cpus_per_task or 1
        px = sum(t.pixels for t in tasks)
        return max(1, min(math.ceil(px / (PART_PIXELS_PER_CPU * cpus)), len(tasks), MAX_PARTS))
    # GNU parallel: a few parts per job slot; each part is a process with ~1 s of start-up.
    return max(1, min(len(tasks), 4 * _slots(opts)))


def _slots(opts: ExecutorOptions) -> int:
    return opts.max_running or opts.workers or usable_cores()


def _load_parts(workdir: Path, fingerprint: str) -> list[list[str]] | None:
    try:
        saved = json.loads((workdir / PARTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("fingerprint") != fingerprint:
        return None
    parts = saved.get("parts")
    return parts if isinstance(parts, list) else None


def _saved_job(workdir: Path) -> tuple[Job, BatchWork]:
    job, saved = load_job_at(workdir)
    work = work_for(job)
    if work.fingerprint != saved.get("fingerprint"):
        raise OutputError(f"the inputs of the job in {str(workdir)!r} changed since it was submitted (fingerprint now {work.fingerprint})",
                          "rerun the original command with --overwrite to start over")  # fmt: skip
    return job, work


def _missing_parts(parts: list[list[str]], done: Callable[[str], bool]) -> list[int]:
    """1-based numbers of the parts with a task not yet recorded."""
    return [i for i, keys in enumerate(parts, 1) if not all(done(k) for k in keys)]


def _items_done(plan: Plan, latest: dict[str, dict[str, Any]]) -> set[int]:
    return {it.index for it in plan.items if output_done(latest.get(_out_key(it.index)), it.output)}


class BatchWork(Protocol):
    """What the batch launchers need to know about a job: its parallel tasks, what is done, how to finish.

    :class:`RasterWork` is a job with raster outputs assembled from tiles;
    :class:`tilewise.rasterize_batch.TileSetWork` is a rasterize job onto TMS tiles.
    """

    job: Job
    fingerprint: str

    def prepare(self, workdir: Path, manifest: Manifest, overwrite: bool) -> dict[str, dict[str, Any]]:
        """Check and record the job in its work directory (the submitter holds the lock); return the manifest's state."""
        ...

    def tasks(self, workdir: Path) -> list[Any]:
        """Every task of the parallel phase, in a stable order (each has ``key``, ``pixels`` and ``run()``)."""
        ...

    def is_done(self, latest: dict[str, dict[str, Any]]) -> Callable[[str], bool]:
        """A test of whether the task with a key needs no run."""
        ...

    def complete(self, latest: dict[str, dict[str, Any]]) -> bool:
        """Whether the outputs are written."""
        ...

    def resources(self, opts: ExecutorOptions, pixels: int) -> Any:
        """Cluster resources for a batch job processing ``pixels``, the options' own values kept."""
        ...

    def fill(self, summary: RunSummary, latest: dict[str, dict[str, Any]]) -> None:
        """Fill the summary's statistics from the records."""
        ...

    def write_outputs(self, workdir: Path, manifest: Manifest, latest: dict[str, dict[str, Any]], executor: Executor, emit: ProgressFn) -> RunSummary:
        """Write the outputs once every task is recorded, in this process (which holds the lock)."""
        ...

    def finish(self, executor: Executor, emit: ProgressFn) -> RunSummary:
        """Write the outputs in a fresh process (the finishing job), taking the lock."""
        ...


class RasterWork:
    """A job whose outputs are rasters assembled from its tiles."""

    def __init__(self, job: Job, plan: Plan) -> None:
        self.job, self.plan, self.fingerprint = job, plan, plan.fingerprint

    def prepare(self, workdir: Path, manifest: Manifest, overwrite: bool) -> dict[str, dict[str, Any]]:
        state = _prepare_workdir(self.job, self.plan, workdir, manifest, overwrite)
        prepare_op(self.plan)
        items_done = _items_done(self.plan, state)
        _make_dirs(workdir, [it for it in self.plan.items if it.index not in items_done])
        return state

    def tasks(self, workdir: Path) -> list[Any]:
        return list(_make_tasks(self.plan, workdir))

    def is_done(self, latest: dict[str, dict[str, Any]]) -> Callable[[str], bool]:
        items_done = _items_done(self.plan, latest)
        return lambda k: int(k.split("/")[0]) in items_done or _tile_done(latest.get(k))

    def complete(self, latest: dict[str, dict[str, Any]]) -> bool:
        return len(_items_done(self.plan, latest)) == len(self.plan.items)

    def resources(self, opts: ExecutorOptions, pixels: int) -> Any:
        return estimate(self.plan, opts, pixels)

    def fill(self, summary: RunSummary, latest: dict[str, dict[str, Any]]) -> None:
        _fill_stats(summary, self.plan, {k: v for k, v in latest.items() if v.get("kind") == "tile"})

    def write_outputs(self, workdir: Path, manifest: Manifest, latest: dict[str, dict[str, Any]], executor: Executor, emit: ProgressFn) -> RunSummary:
        return _run(self.job, self.plan, workdir, manifest, latest, executor, emit)

    def finish(self, executor: Executor, emit: ProgressFn) -> RunSummary:
        from tilewise.runner import run_job

        return run_job(self.job, progress=emit, executor=executor)


def work_for(job: Job) -> BatchWork:
    """The batch view of a job (checks its inputs: a rasterize job's layers, a raster job's plan)."""
    if job.tile_set:
        from tilewise.rasterize_batch import TileSetWork

        return TileSetWork(job)
    return RasterWork(job, plan_job(job))


# ---------------------------------------------------------------- submission records


def submissions(workdir: Path) -> list[dict[str, Any]]:
    """What batch launches this job has had, oldest first."""
    path = workdir / BATCH_DIR / SUBMISSIONS
    out = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.endswith("\n"):
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        continue
    except OSError:
        return []
    return out


def _record_submission(workdir: Path, rec: dict[str, Any]) -> None:
    path = workdir / BATCH_DIR / SUBMISSIONS
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(rec, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _slurm_ids(sub: dict[str, Any]) -> list[str]:
    return [j for j in (sub.get("array_job"), sub.get("finish_job")) if j]


def active_jobs(workdir: Path) -> dict[str, str]:
    """SLURM jobs of this job's latest submission that are still queued or running."""
    subs = submissions(workdir)
    if not subs or subs[-1].get("system") != "slurm":
        return {}
    return slurm.active(_slurm_ids(subs[-1]))


def part_report(workdir: Path, work: BatchWork, latest: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """For each part with missing tiles: its number, the batch job that last ran it and how that ended."""
    parts = _load_parts(workdir, work.fingerprint)
    if parts is None:
        return []
    done = work.is_done(latest)
    missing = _missing_parts(parts, done)
    subs = submissions(workdir)
    sub = subs[-1] if subs else {}
    known: dict[str, slurm.JobState] = slurm.states(sub["array_job"]) if sub.get("system") == "slurm" and sub.get("array_job") else {}
    ended = {r["part"]: r for r in latest.values() if r.get("kind") == "part"}
    out = []
    for p in missing:
        keys = parts[p - 1]
        entry: dict[str, Any] = {"part": p, "parts": len(parts), "tiles": len(keys), "tiles_done": sum(done(k) for k in keys), "state": "not run", "job": ""}
        if sub.get("system") == "slurm" and p in sub.get("parts", []):
            jid = f"{sub['array_job']}_{p}"
            entry["job"] = jid
            st = known.get(jid)
            if st is not None:
                entry["state"] = st.describe()
            elif jid in slurm.active([jid]):
                entry["state"] = "queued or running"
            else:
                entry["state"] = "ended (SLURM no longer reports it)"
        rec = ended.get(p)
        if rec is not None and rec.get("state") != "done":
            entry["state"] += f"; the worker recorded: {rec.get('state')} {rec.get('detail', '')}".rstrip()
        out.append(entry)
    return out


def describe_part(e: dict[str, Any]) -> str:
    """One line about an unfinished part."""
    job = f" (SLURM job {e['job']})" if e.get("job") else ""
    return f"part {e['part']}/{e['parts']}{job}: {e['state']}, {e['tiles_done']} of {e['tiles']} tiles done"


# ---------------------------------------------------------------- launching


def launch_job(job: Job, *, overwrite: bool, emit: ProgressFn, dry_run: bool, wait: bool) -> RunSummary:
    """Run ``job`` as batch parts (``job.executor.name`` is ``slurm`` or ``gnu-parallel``).

    Cuts the missing tiles into parts, writes the batch script or task list under
    the work directory and submits it (SLURM) or runs it (GNU parallel, when
    installed). With ``wait`` it follows the manifest until the outputs are
    written; with ``dry_run`` it only writes the files and reports the commands.
    """
    t0 = time.perf_counter()
    opts = job.executor
    work = work_for(job)
    plan = work.plan if isinstance(work, RasterWork) else None
    if plan is not None:
        _check_output_paths(job, plan)
        check_unowned_outputs(job, plan, overwrite)
    if opts.name == "slurm" and not dry_run:
        slurm.require("sbatch")  # before anything is written
    workdir = job.workdir
    running = active_jobs(workdir)
    if running:
        ids = ", ".join(sorted(running))
        raise OutputError(f"output {job.output_root!r} is being computed by SLURM job(s) {ids}",
                          f"follow them with 'tilewise status {job.output_root}', or scancel them first")  # fmt: skip
    lock = WorkLock(workdir, job.output_root)
    lock.acquire()
    manifest = Manifest(workdir)
    try:
        state = work.prepare(workdir, manifest, overwrite)
        if overwrite:
            shutil.rmtree(workdir / BATCH_DIR, ignore_errors=True)
        tasks = work.tasks(workdir)
        summary = RunSummary(outputs=[job.output_root] if plan is None else [str(it.output) for it in plan.items], tiles_total=len(tasks), tiles_run=0,
                             tiles_skipped=0, failed={}, pixels=0, valid=0, minimum=None, maximum=None, mean=None, wall_s=0.0, workdir=str(workdir),
                             executor=opts.name)  # fmt: skip
        if work.complete(state):
            summary.already_complete = True
            work.fill(summary, state)
            emit(Event("done", len(tasks), len(tasks), "already complete"))
            return summary
        (workdir / BATCH_DIR).mkdir(exist_ok=True)
        parts = _load_parts(workdir, work.fingerprint)
        if parts is None:
            parts = split([t.key for t in tasks], default_parts(opts, tasks))
            write_json_atomic(workdir / PARTS_FILE, {"fingerprint": work.fingerprint, "parts": parts})
        done = work.is_done(state)
        missing = _missing_parts(parts, done)
        summary.tiles_skipped = sum(done(t.key) for t in tasks)
        if opts.name == "slurm":
            _launch_slurm(job, work, workdir, parts, missing, {t.key: t for t in tasks}, dry_run, summary, emit)
        else:
            _launch_parallel(job, work, workdir, manifest, parts, missing, dry_run, summary, emit)
    except DiskFullError as exc:
        if plan is None:
            raise
        raise _with_space_needed(exc, job, plan) from None
    finally:
        manifest.close()
        lock.release()
    if opts.name == "slurm" and not dry_run and wait:
        _follow_slurm(job, work, workdir, summary, emit)
    summary.wall_s = time.perf_counter() - t0
    raise_if_failed(summary, job)
    return summary


def _sbatch_lines(opts: ExecutorOptions, res: Any) -> list[str]:
    lines = []
    for flag, value in (("partition", res.partition), ("account", res.account), ("time", res.time), ("cpus-per-task", res.cpus_per_task),
                        ("nodes", res.nodes), ("mem", res.mem), ("mem-per-cpu", None if res.mem else res.mem_per_cpu)):  # fmt: skip
        if value is not None:
            lines.append(f"#SBATCH --{flag}={value}")
    lines += [f"#SBATCH {a}" for a in res.sbatch_args]
    return lines


def _env_lines(res: Any) -> list[str]:
    return [f"module load {m}" for m in res.modules] + list(res.setup)


def slurm_scripts(job: Job, work: BatchWork, workdir: Path, parts: list[list[str]], run: list[int], tasks: dict[str, Any]) -> tuple[str, str]:
    """The array script (one element per part in ``run``) and the finishing script, as text; ``tasks`` by key."""
    opts = job.executor
    px = max((sum(tasks[k].pixels for k in parts[p - 1]) for p in run), default=0)
    res = work.resources(opts, px)
    name = f"tilewise-{work.fingerprint[:8]}"
    logs = workdir.resolve() / BATCH_DIR
    head = ["#!/bin/bash", f"# tilewise {job.command} job {work.fingerprint}: {len(parts)} parts; written by tilewise, resubmitted by 'tilewise resume'"]
    cwd = f"#SBATCH --chdir={Path.cwd()}"  # the job's relative paths are relative to where it was submitted
    array = [*head, f"#SBATCH --job-name={name}", cwd, f"#SBATCH --output={logs}/slurm-%A_%a.log", f"#SBATCH --array={slurm.array_spec(run, opts.max_running)}",
             *_sbatch_lines(opts, res), "", *_env_lines(res),
             f"exec {python_command()} worker {shlex.quote(str(workdir))} --part ${{SLURM_ARRAY_TASK_ID}}/{len(parts)}", ""]  # fmt: skip
    # The finishing job assembles the outputs: one node, the same cores, time for the COG write.
    # The COG encode is multi-threaded: the finishing job asks for the cores of up to 8 parts.
    fcpus = min(8, len(run) or 1) * (res.cpus_per_task or 1)
    fres = work.resources(opts.model_copy(update={"resources": opts.resources.model_copy(update={"cpus_per_task": fcpus})}),
                          sum(t.pixels for t in tasks.values()))  # fmt: skip
    finish = [*head, f"#SBATCH --job-name={name}-finish", cwd, f"#SBATCH --output={logs}/slurm-finish-%j.log",
              *_sbatch_lines(opts, fres), "", *_env_lines(res),
              f"exec {python_command()} worker {shlex.quote(str(workdir))} --finish", ""]  # fmt: skip
    return "\n".join(array), "\n".join(finish)


def _launch_slurm(job: Job, work: BatchWork, workdir: Path, parts: list[list[str]], missing: list[int], tasks: dict[str, Any], dry_run: bool,
                  summary: RunSummary, emit: ProgressFn) -> None:  # fmt: skip
    array_txt, finish_txt = slurm_scripts(job, work, workdir, parts, missing, tasks)
    k = len(submissions(workdir)) + 1
    array_path, finish_path = workdir / BATCH_DIR / f"array-{k}.sbatch", workdir / BATCH_DIR / f"finish-{k}.sbatch"
    if missing:
        write_json_atomic(array_path, array_txt)
    write_json_atomic(finish_path, finish_txt)
    summary.batch = {"system": "slurm", "parts": len(parts), "run": missing, "array_script": str(array_path) if missing else "",
                     "finish_script": str(finish_path)}  # fmt: skip
    if dry_run:
        summary.pending = True
        cmds = [f"sbatch --parsable {shlex.quote(str(array_path))}"] if missing else []
        cmds.append(f"sbatch --dependency=afterany:<array job id> {shlex.quote(str(finish_path))}" if missing else f"sbatch {shlex.quote(str(finish_path))}")
        summary.batch.update(script=array_txt if missing else finish_txt, commands=cmds)
        return
    array_id = slurm.sbatch(str(array_path)) if missing else ""
    finish_id = slurm.sbatch(str(finish_path), *([f"--dependency=afterany:{array_id}"] if array_id else []))
    rec = {"system": "slurm", "array_job": array_id, "finish_job": finish_id, "parts": missing, "n": len(parts), "time": time.time()}
    _record_submission(workdir, rec)
    summary.batch.update(array_job=array_id, finish_job=finish_id)
    summary.pending = True
    what = f"array job {array_id} ({len(missing)} of {len(parts)} parts) and finishing job {finish_id}" if missing else f"finishing job {finish_id}"
    emit(Event("start", summary.tiles_skipped, summary.tiles_total,
               f"submitted SLURM {what}; safe to log out: 'tilewise status {job.output_root}' shows progress"))  # fmt: skip


def _follow_slurm(job: Job, work: BatchWork, workdir: Path, summary: RunSummary, emit: ProgressFn) -> None:
    """Follow the submitted jobs through the manifest until none is left in SLURM's queue."""
    ids = [j for j in (summary.batch.get("array_job"), summary.batch.get("finish_job")) if j]
    manifest = Manifest(workdir)
    seen = -1
    while True:
        alive = slurm.active(ids)
        latest = manifest.latest()
        n = sum(1 for r in latest.values() if r.get("kind") == "tile")
        if n != seen:
            seen = n
            emit(Event("tile", n, summary.tiles_total, "slurm"))
        if not alive:
            break
        time.sleep(POLL_S)
    _conclude(job, work, workdir, manifest.latest(), summary, emit)


def _conclude(job: Job, work: BatchWork, workdir: Path, latest: dict[str, dict[str, Any]], summary: RunSummary, emit: ProgressFn) -> None:
    """Fill the summary from the manifest after the batch jobs ended; name the parts that did not finish."""
    summary.pending = False
    records = {k: v for k, v in latest.items() if v.get("kind") == "tile"}
    summary.tiles_run = len(records) - summary.tiles_skipped
    work.fill(summary, latest)
    if work.complete(latest):
        emit(Event("done", summary.tiles_total, summary.tiles_total, "finished"))
        return
    report = part_report(workdir, work, latest)
    failed = {k: describe_failure(r) for k, r in sorted(latest.items()) if r.get("kind") == "failed"}
    if report:
        lines = "; ".join(describe_part(e) for e in report[:5]) + (f"; and {len(report) - 5} more" if len(report) > 5 else "")
        raise RunFailedError(f"{len(report)} of {summary.batch.get('parts', '?')} parts did not finish: {lines}",
                             f"'tilewise resume {job.output_root}' resubmits only those parts")  # fmt: skip
    if failed:
        summary.failed.update(failed)
        return
    raise RunFailedError(f"every tile of {job.output_root!r} is done but the outputs were not written",
                         f"see the finishing job's log in {str(workdir / BATCH_DIR)!r}; 'tilewise resume {job.output_root}' writes them")  # fmt: skip


def parallel_command(workdir: Path, tasks_file: Path, slots: int) -> list[str]:
    """The GNU parallel command line that runs the task list, resumable through its job log."""
    # --resume-failed rather than --resume: a part killed or failed last time runs again, and
    # parts that finished are skipped (they would find their tiles done anyway).
    return ["parallel", "--joblog", str(workdir / BATCH_DIR / "parallel.joblog"), "--resume-failed", "-j", str(slots), "::::", str(tasks_file)]


def _launch_parallel(job: Job, work: BatchWork, workdir: Path, manifest: Manifest, parts: list[list[str]], missing: list[int], dry_run: bool,
                     summary: RunSummary, emit: ProgressFn) -> None:  # fmt: skip
    opts = job.executor
    slots = _slots(opts)
    tasks_file = workdir / BATCH_DIR / "parallel-tasks.txt"
    # Every part is listed, always in the same order: GNU parallel resumes by line number.
    here = shlex.quote(str(Path.cwd()))  # the job's relative paths are relative to this directory
    lines = [f"cd {here} && {python_command()} -q worker {shlex.quote(str(workdir))} --part {i}/{len(parts)}" for i in range(1, len(parts) + 1)]
    write_json_atomic(tasks_file, "\n".join(lines) + "\n")
    cmd = parallel_command(workdir, tasks_file, slots)
    finish_cmd = f"{python_command()} worker {shlex.quote(str(workdir))} --finish"
    summary.batch = {"system": "gnu-parallel", "parts": len(parts), "run": missing, "tasks_file": str(tasks_file), "command": shlex.join(cmd),
                     "finish_command": finish_cmd}  # fmt: skip
    exe = shutil.which("parallel")
    if dry_run or exe is None:
        summary.pending = True
        summary.batch["installed"] = exe is not None
        return
    emit(Event("start", summary.tiles_skipped, summary.tiles_total, f"running {len(missing)} of {len(parts)} parts with GNU parallel -j {slots}"))
    _record_submission(workdir, {"system": "gnu-parallel", "parts": missing, "n": len(parts), "time": time.time()})
    log = workdir / BATCH_DIR / "parallel.log"
    with open(log, "ab") as fh:
        proc = subprocess.Popen([exe, *cmd[1:]], stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            seen = -1
            while proc.poll() is None:
                n = sum(1 for r in manifest.latest().values() if r.get("kind") == "tile")
                if n != seen:
                    seen = n
                    emit(Event("tile", n, summary.tiles_total, "parallel"))
                time.sleep(0.5)
        except BaseException:
            os.killpg(proc.pid, signal.SIGTERM)  # Ctrl-C: stop the parts too; a rerun resumes them
            proc.wait()
            raise
    latest = manifest.latest()
    still = _missing_parts(parts, work.is_done(latest))
    if still:
        report = part_report(workdir, work, latest)
        failed = {k: describe_failure(r) for k, r in sorted(latest.items()) if r.get("kind") == "failed"}
        first = f" (first failed tile {next(iter(failed))}: {next(iter(failed.values()))})" if failed else ""
        raise RunFailedError(f"{len(report)} of {len(parts)} GNU parallel parts did not finish{first}: "
                             + "; ".join(describe_part(e) for e in report[:5]),
                             f"see {str(log)!r} and 'tilewise status {job.output_root}'; rerun the same command to retry them")  # fmt: skip
    # Every tile is recorded: write the outputs here, under the lock this process holds.
    executor = _local_executor(slots, opts.retries)
    try:
        done = work.write_outputs(workdir, manifest, latest, executor, emit)
    finally:
        executor.close()
    summary.pending = False
    summary.tiles_run = sum(1 for r in latest.values() if r.get("kind") == "tile") - summary.tiles_skipped
    summary.failed.update(done.failed)
    summary.pixels, summary.valid, summary.minimum, summary.maximum, summary.mean = done.pixels, done.valid, done.minimum, done.maximum, done.mean
    summary.per_output, summary.workers, summary.batch["report"] = done.per_output, slots, done.batch.get("report", {})


# ---------------------------------------------------------------- the worker side


def _local_executor(cpus: int, retries: int) -> Executor:
    return make_executor(ExecutorOptions(name="processes" if cpus > 1 else "serial", workers=cpus, retries=retries))


def _cpus(job: Job) -> int:
    env = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    if job.executor.name == "slurm":
        return job.executor.resources.cpus_per_task or 1
    return 1  # GNU parallel runs one part per job slot


def run_part(workdir: Path, part: int, n: int, emit: ProgressFn | None = None) -> RunSummary:
    """Run part ``part`` of ``n`` of the job saved in ``workdir``: its tiles not yet recorded.

    Raises
    ------
    UsageError
        ``n`` is not the number of parts the job was cut into, or ``part`` is out of range.
    RunFailedError
        Some of its tiles failed after their retries.
    """
    t0 = time.perf_counter()
    emit = emit or (lambda e: None)
    job, work = _saved_job(workdir)
    parts = _load_parts(workdir, work.fingerprint)
    if parts is None:
        raise UsageError(f"the job in {str(workdir)!r} has not been cut into parts", "start it with --executor slurm or gnu-parallel")
    if n != len(parts) or not 1 <= part <= n:
        raise UsageError(f"--part {part}/{n} does not fit: the job was cut into {len(parts)} parts",
                         f"give --part I/{len(parts)} with I from 1 to {len(parts)}")  # fmt: skip
    jobid = os.environ.get("SLURM_ARRAY_JOB_ID", "")
    writer = f"part{part}-{jobid}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}" if jobid else f"part{part}-{os.getpid()}"
    manifest = Manifest(workdir, writer=writer)
    latest = manifest.latest()
    done = work.is_done(latest)
    mine = set(parts[part - 1])
    todo = [t for t in work.tasks(workdir) if t.key in mine and not done(t.key)]
    phase = _Phase(len(parts[part - 1]) - len(todo), len(parts[part - 1]))
    summary = RunSummary(outputs=[], tiles_total=phase.total, tiles_run=0, tiles_skipped=phase.done, failed={}, pixels=0, valid=0, minimum=None,
                         maximum=None, mean=None, wall_s=0.0, workdir=str(workdir), executor=job.executor.name)  # fmt: skip

    def on_term(signum: int, frame: Any) -> None:
        # SLURM sends SIGTERM at the time limit and on scancel: say so before going.
        manifest.write({"kind": "part", "key": f"part/{part}", "part": part, "state": "stopped", "detail": f"by {signal.Signals(signum).name}",
                        "job": jobid})  # fmt: skip
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    executor = _local_executor(_cpus(job), job.executor.retries)
    records: dict[str, dict[str, Any]] = {}
    try:
        emit(Event("start", phase.done, phase.total, f"part {part}/{n}: {len(todo)} of {phase.total} tiles to run on {executor.workers} worker(s)"))
        _run_phase(todo, "tile", executor, manifest, job.executor, phase, records, summary.failed, emit)
        manifest.write({"kind": "part", "key": f"part/{part}", "part": part, "state": "failed" if summary.failed else "done", "job": jobid})
    except BaseException:
        terminate = getattr(executor, "terminate", None)
        if terminate is not None:
            terminate()
        raise
    finally:
        signal.signal(signal.SIGTERM, old)
        executor.close()
        manifest.close()
    summary.tiles_run = phase.ran
    work.fill(summary, records)
    summary.wall_s = time.perf_counter() - t0
    raise_if_failed(summary, job)
    emit(Event("done", phase.done, phase.total, "part finished"))
    return summary


def finish(workdir: Path, emit: ProgressFn | None = None) -> RunSummary:
    """Write the outputs of the job saved in ``workdir`` once every part recorded its tiles.

    Raises
    ------
    RunFailedError
        Parts are missing tiles; the message names them and how they ended.
    """
    emit = emit or (lambda e: None)
    job, work = _saved_job(workdir)
    if _load_parts(workdir, work.fingerprint) is None:
        raise UsageError(f"the job in {str(workdir)!r} has not been cut into parts", "start it with --executor slurm or gnu-parallel")
    latest = Manifest(workdir).latest()
    report = part_report(workdir, work, latest)
    if report:
        lines = "; ".join(describe_part(e) for e in report[:5])
        raise RunFailedError(f"{len(report)} part(s) did not finish, so the outputs are not written: {lines}",
                             f"'tilewise resume {job.output_root}' resubmits only those parts")  # fmt: skip
    executor = _local_executor(_cpus(job), job.executor.retries)
    try:
        return work.finish(executor, emit)
    finally:
        executor.close()
