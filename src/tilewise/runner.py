"""The run: plan, skip what the manifest says is done, run tiles, assemble, record.

The runner is the only coordinator: it owns the work directory's lock and the
manifest, hands picklable work units to an executor, retries failures, and
reports progress through a callback (the library never prints).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tilewise.assemble import AssembleTask, Source, cog_options, run_assemble, vrt_xml
from tilewise.errors import OutputError, RunFailedError
from tilewise.executors import DETACHED, Executor, WorkList, make_executor, warm_executor
from tilewise.grid import Grid
from tilewise.io import DiskFullError, disk_full, fmt_bytes, free_bytes
from tilewise.job import ExecutorOptions, ItemPlan, Job, Plan, plan_job, tiling_notes
from tilewise.manifest import Manifest, WorkLock, write_json_atomic
from tilewise.overviews import OverviewTask, level_grid, overview_factors, pyramid_sources, regions
from tilewise.rasterfile import close_kept
from tilewise.remote_output import check_bucket, remote_version, url_of
from tilewise.task import Task

# A work unit should carry at least this many pixels, so per-unit overhead stays small.
MIN_UNIT_PIXELS = 1 << 20
# Runs of halo tiles per worker: fewer, longer runs decode fewer shared blocks twice; two still
# let one worker take over the other's second run when tiles cost unequal time.
HALO_UNITS_PER_WORKER = 2
# ...but a run is at most this many rows of tiles (1.25x the blocks decoded), so a large raster
# still reports progress, and loses little to a crash, run by run.
HALO_RUN_ROWS = 4


@dataclass
class Event:
    """A progress report: ``kind`` is note (advice before the run), start, tile, retry, failed, phase, overview, assemble, output, stopped or done."""

    kind: str
    done: int
    total: int
    message: str = ""
    record: dict[str, Any] | None = None


@dataclass
class RunSummary:
    """What a run did."""

    outputs: list[str]
    tiles_total: int
    tiles_run: int
    tiles_skipped: int
    failed: dict[str, str]
    pixels: int
    valid: int
    minimum: float | None
    maximum: float | None
    mean: float | None
    wall_s: float
    read_s: float = 0.0
    compute_s: float = 0.0
    write_s: float = 0.0
    assemble_s: float = 0.0
    workdir: str = ""
    already_complete: bool = False
    executor: str = ""
    workers: int = 0
    per_output: dict[str, dict[str, Any]] = field(default_factory=dict)
    stopped: bool = False  # fail-fast stopped the run at its first failed tile
    batch: dict[str, Any] = field(default_factory=dict)  # batch executors: what was submitted, scripts, commands
    pending: bool = False  # batch executors: submitted (or, with dry_run, prepared) but not waited for


ProgressFn = Callable[[Event], None]


def run_job(job: Job, *, overwrite: bool = False, progress: ProgressFn | None = None, executor: Executor | None = None,
            dry_run: bool = False, wait: bool = True) -> RunSummary:  # fmt: skip
    """Run ``job`` to completion, resuming from its work directory when possible.

    Parameters
    ----------
    job
        The validated job.
    overwrite
        Replace existing outputs and discard an unfinished run of a different job.
    progress
        Called with an :class:`Event` after each finished unit.
    executor
        An executor to use instead of the one the job names.
    dry_run
        For the batch executors (slurm, gnu-parallel): write the scripts and
        report the commands, but submit or run nothing.
    wait
        For the batch executors: follow the submitted jobs until they end
        (default), or return once they are submitted.

    Raises
    ------
    OutputError
        Outputs exist (without ``overwrite``), the directory is unwritable, or
        another run holds the lock.
    RunFailedError
        Some tiles failed after their retries; the others finished (or, with
        ``job.executor.fail_fast``, the run stopped after the first).
    DiskFullError
        A file system filled up; the message names the path, the space free and
        what the job needs.
    """
    t0 = time.perf_counter()
    emit = progress or (lambda e: None)
    if executor is None and job.executor.name in DETACHED:
        from tilewise.launch import launch_job  # the batch launchers sit above the runner

        return launch_job(job, overwrite=overwrite, emit=emit, dry_run=dry_run, wait=wait)
    if job.tile_set:
        from tilewise.rasterize_run import run_rasterize  # TMS tiles: a layout of many files, run by its own coordinator

        return run_rasterize(job, overwrite=overwrite, progress=progress, executor=executor)
    if executor is None:
        warm_executor(job.executor)  # its start-up runs while the job is planned
    plan = plan_job(job)
    for note in tiling_notes(plan):
        emit(Event("note", 0, plan.n_tiles, note))
    _check_output_paths(job, plan)
    workdir = job.workdir
    check_unowned_outputs(job, plan, overwrite)
    own_executor = executor is None
    executor, lock = start_run(job, executor)
    manifest = Manifest(workdir)
    try:
        done = _prepare_workdir(job, plan, workdir, manifest, overwrite)
        prepare_op(plan)
        summary = _run(job, plan, workdir, manifest, done, executor, emit)
    except DiskFullError as exc:
        raise _with_space_needed(exc, job, plan) from None
    finally:
        manifest.close()
        lock.release()
        if own_executor:
            executor.close()
        close_kept()  # read handles the serial executor kept in this thread
    summary.wall_s = time.perf_counter() - t0
    summary.workdir = str(workdir)
    raise_if_failed(summary, job)
    return summary


def start_run(job: Job, executor: Executor | None) -> tuple[Executor, WorkLock]:
    """Make the job's executor (unless given) and take its work directory's lock; nothing is left open on failure."""
    own = executor is None
    if executor is None:
        # Before the lock: an unreachable scheduler or a missing sbatch leaves no work directory behind.
        executor = make_executor(job.executor, job.workdir)
    lock = WorkLock(job.workdir, job.output_root)
    try:
        lock.acquire()
    except BaseException:
        if own:
            executor.close()
        raise
    return executor, lock


def prepare_op(plan: Plan) -> None:
    """Let the op set up what its tasks read (rasterize --like stages its polygons), under the work directory's lock."""
    prepare = getattr(plan.op, "prepare", None)
    if prepare is not None:
        prepare()


def check_unowned_outputs(job: Job, plan: Plan, overwrite: bool) -> None:
    """Refuse an existing output when no saved job owns it, before a lock creates a work directory beside it."""
    if not overwrite and not (job.workdir / "job.json").exists():
        for it in plan.items:
            if it.output.is_file():
                raise OutputError(f"output {str(it.output)!r} already exists", "pass --overwrite to replace it, or choose another -o path")
            if job.upload and remote_version(url_of(it.output)) is not None:
                raise OutputError(f"output {url_of(it.output)!r} already exists", "pass --overwrite to replace it, or choose another -o URL")


def raise_if_failed(summary: RunSummary, job: Job) -> None:
    """Raise :class:`RunFailedError` naming the first failed tile when ``summary`` has failures."""
    if summary.failed:
        first = sorted(summary.failed.items())[0]
        stopped = ""
        left = summary.tiles_total - summary.tiles_skipped - summary.tiles_run - len(summary.failed)
        if summary.stopped and left > 0:
            stopped = f"; stopped at the first failure (--fail-fast), {left} tiles not run"
        raise RunFailedError(
            f"{len(summary.failed)} of {summary.tiles_total} tiles failed (first: {first[0]}: {first[1]}){stopped}",
            f"see 'tilewise status {job.output_root}'; rerun the same command to retry them",
        )


def _with_space_needed(exc: DiskFullError, job: Job, plan: Plan) -> DiskFullError:
    """Add to a disk-full error how much space the whole job needs (uncompressed, the most it can take)."""
    itemsize = np.dtype(job.output.dtype).itemsize
    bands = len(plan.op.band_names)
    work = 0
    for it in plan.items:
        h, w = it.grid.height, it.grid.width
        work += (h * w + sum(math.ceil(h / f) * math.ceil(w / f) for f in _item_factors(job, it))) * bands * itemsize
    # Finished tiles (and their overview pieces) stay in the work directory until their output is
    # written, and the output takes at most as much again before compression.
    need = 2 * work
    detail = (f"this job needs up to {fmt_bytes(need)} ({need} bytes): {fmt_bytes(work)} of tiles in {str(job.workdir)!r} "
              f"and up to {fmt_bytes(work)} for the output before compression")  # fmt: skip
    # Measured again: the failed write's own temporary is gone by now.
    return DiskFullError(exc.path, max(exc.free, free_bytes(Path(exc.path).parent)), detail)


def _check_output_paths(job: Job, plan: Plan) -> None:
    root = Path(job.output_root)
    if job.upload:
        check_bucket(job.upload)  # before any work: a missing bucket or refused key is found now, not after hours
        for parent in {Path(it.output).parent for it in plan.items} | {job.workdir.parent}:
            try:
                parent.mkdir(parents=True, exist_ok=True)  # the local staging folder mirroring the URL
            except OSError as exc:
                raise OutputError(f"cannot create the staging directory {str(parent)!r} ({exc.strerror})",
                                  "run from a writable directory: outputs for S3 are assembled there before the upload") from None  # fmt: skip
    if job.batch:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create output directory {str(root)!r} ({exc.strerror})", "choose a writable location") from None
    parents = {Path(it.output).parent for it in plan.items} | {job.workdir.parent}
    for parent in parents:
        if not parent.is_dir():
            raise OutputError(f"output directory {str(parent)!r} does not exist", "create it first or choose another -o path")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise OutputError(f"output directory {str(parent)!r} is not writable", "choose a writable location with -o")
    seen: dict[str, int] = {}
    for it in plan.items:
        key = str(it.output.resolve())
        if key in seen:
            raise OutputError(f"inputs {seen[key] + 1} and {it.index + 1} would both write {str(it.output)!r}", "give the inputs different names")
        seen[key] = it.index
        if it.output.is_dir():
            raise OutputError(f"output {str(it.output)!r} is a directory", "for many inputs end -o with a slash: -o OUTDIR/")


def saved_record(workdir: Path) -> dict[str, Any]:
    """The work directory's saved ``job.json`` (fingerprint, job, outputs), or {} when it is missing or damaged (then it is rewritten)."""
    import json

    try:
        saved = json.loads((workdir / "job.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


def _prepare_workdir(job: Job, plan: Plan, workdir: Path, manifest: Manifest, overwrite: bool) -> dict[str, dict[str, Any]]:
    """Decide what is already done; refuse a changed job or existing outputs unless ``overwrite``."""
    job_file = workdir / "job.json"
    state: dict[str, dict[str, Any]] = {}
    if job_file.exists():
        saved = saved_record(workdir)
        same = saved.get("fingerprint") == plan.fingerprint
        if overwrite or not same:
            finished = _all_outputs_recorded(saved.get("outputs", []), manifest)
            if not overwrite and not finished:
                raise OutputError(
                    f"{job.output_root!r} has an unfinished run of a different job (fingerprint {saved.get('fingerprint')}, now {plan.fingerprint})",
                    "rerun the original command to resume it, or pass --overwrite to start over",
                )
            _clear_workdir(workdir)
        else:
            state = manifest.latest()
    if not overwrite:
        for it in plan.items:
            rec = state.get(_out_key(it.index))
            if it.output.exists() and not output_done(rec, it.output) and not _assembling(rec, it.output):
                raise OutputError(f"output {str(it.output)!r} already exists", "pass --overwrite to replace it, or choose another -o path")
    write_json_atomic(job_file, {"fingerprint": plan.fingerprint, "job": job.model_dump(mode="json"),
                                 "outputs": [str(it.output) for it in plan.items], "tiles": plan.n_tiles})  # fmt: skip
    _remove_stale_temporaries(plan, workdir)
    return state


def _all_outputs_recorded(outputs: Sequence[str], manifest: Manifest) -> bool:
    recs = manifest.latest()
    return bool(outputs) and all(output_done(recs.get(_out_key(i)), Path(p)) for i, p in enumerate(outputs))


def _clear_workdir(workdir: Path) -> None:
    for name in ("manifest", "tiles", "ovr", "mosaic"):
        shutil.rmtree(workdir / name, ignore_errors=True)
    (workdir / "job.json").unlink(missing_ok=True)


def _remove_stale_temporaries(plan: Plan, workdir: Path) -> None:
    # Leftovers of a killed run: only our own hidden names, never user files.
    for p in workdir.glob(".*.tmp"):
        p.unlink(missing_ok=True)
    for sub in ("tiles", "ovr", "mosaic"):
        if (workdir / sub).is_dir():
            for p in (workdir / sub).rglob(".*.tmp"):
                p.unlink(missing_ok=True)
    for it in plan.items:
        for p in it.output.parent.glob(f".{it.output.name}.*"):
            if p.name.endswith((".partial", ".tiles.vrt", ".tmp", ".ovr.tmp")):
                p.unlink(missing_ok=True)


def _out_key(item: int) -> str:
    return f"{item}/output"


def _assembling(rec: dict[str, Any] | None, path: Path) -> bool:
    """True when this job was writing ``path`` when it stopped: a file there is its own (complete, renamed into place)."""
    return bool(rec and rec.get("kind") == "assembling" and rec.get("path") == str(path))


def output_done(rec: dict[str, Any] | None, path: Path) -> bool:
    """True when the manifest records ``path`` as written and the file (the uploaded object) is still the one recorded."""
    if rec and rec.get("kind") == "output" and rec.get("url"):
        return remote_version(rec["url"]) == (rec.get("size"), rec.get("version"))
    if not rec or rec.get("kind") != "output" or not path.exists():
        return False
    st = path.stat()
    return bool(rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns)


def output_name(job: Job, path: Path) -> str:
    """How an output is named to the user: its ``s3://`` URL for an uploaded one, else its path."""
    return url_of(path) if job.upload else str(path)


def _tile_done(rec: dict[str, Any] | None) -> bool:
    if not rec or rec.get("kind") != "tile":
        return False
    try:
        ok = bool(os.path.getsize(rec["path"]) == rec["size"])
    except OSError:
        return False
    return ok and (not rec.get("ovr") or os.path.exists(rec["ovr"]))


def _item_factors(job: Job, it: ItemPlan) -> tuple[int, ...]:
    return overview_factors(it.grid.height, it.grid.width) if job.output.overviews else ()


def _fused(it: ItemPlan, factors: tuple[int, ...]) -> bool:
    """True when every tile starts on a multiple of the largest factor, so tiles can build the overviews."""
    if not factors:
        return False
    top = max(factors)
    t = it.tiling
    if t.phase != (0, 0):
        return False
    return (t.tile_height % top == 0 or t.tile_height >= it.grid.height) and (t.tile_width % top == 0 or t.tile_width >= it.grid.width)


def _make_tasks(plan: Plan, workdir: Path) -> list[Task]:
    tasks = []
    for it in plan.items:
        factors = _item_factors(plan.job, it)
        fused = _fused(it, factors)
        for tile in it.tiling:
            tasks.append(Task(
                key=f"{it.index}/{tile.key}", item=it.index, tile=tile, refs=it.refs, op=plan.op,
                work_dtype=plan.work_dtype, out_dtype=plan.job.output.dtype, nodata=plan.nodata,
                tile_path=str(workdir / "tiles" / str(it.index) / f"{tile.key}.tif"),
                ovr_factors=factors if fused else (), grid=it.grid if fused else None,
                ovr_path=str(workdir / "ovr" / str(it.index) / f"{tile.key}.tif") if fused else "", s3_endpoint=plan.job.s3_endpoint, cache=plan.job.cache,
                georef=plan.job.keep_tiles,
            ))  # fmt: skip
    # Interleave outputs so every worker starts on different files.
    if plan.op.halo:
        # Neighbourhood ops: each output's tiles in row order, so a worker running a unit of
        # consecutive tiles finds most of each halo in the blocks it decoded for the previous tile.
        tasks.sort(key=lambda t: (t.item, t.tile.key))
    else:
        tasks.sort(key=lambda t: (t.tile.key, t.item))
    return tasks


def _units(tasks: list[Task], workers: int, per_unit: int | None = None, min_pixels: int = MIN_UNIT_PIXELS) -> list[tuple[Task, ...]]:
    """Group small tasks so each unit carries about MIN_UNIT_PIXELS, keeping >= 4 units per worker.

    Tiles with a halo are grouped into runs of consecutive tiles (bands of tile rows) whatever
    their size: the worker reads them through one kept dataset handle, whose block cache then
    serves the halo blocks shared with the previous tile instead of decoding them again. Only
    the block rows at a run's two ends are decoded twice, so these runs are long: two per
    worker, at most :data:`HALO_RUN_ROWS` rows of tiles (a 16384² raster in 1024² tiles on two
    workers decodes 1.25x its blocks instead of 1.5x with runs of two rows).
    """
    if not tasks:
        return []
    if per_unit:  # the user chose the granularity (--tiles-per-task)
        return [tuple(tasks[i : i + per_unit]) for i in range(0, len(tasks), per_unit)]
    if getattr(getattr(tasks[0], "op", None), "halo", 0):
        run = min(math.ceil(len(tasks) / (HALO_UNITS_PER_WORKER * workers)), HALO_RUN_ROWS * _row_length(tasks))
        return [tuple(tasks[i : i + run]) for i in range(0, len(tasks), max(1, run))]
    cap = max(1, math.ceil(len(tasks) / (4 * workers)))
    units: list[tuple[Task, ...]] = []
    cur: list[Task] = []
    px = 0
    for t in tasks:
        cur.append(t)
        px += t.pixels
        if px >= min_pixels or len(cur) >= cap:
            units.append(tuple(cur))
            cur, px = [], 0
    if cur:
        units.append(tuple(cur))
    return units


def _row_length(tasks: list[Task]) -> int:
    """The most tasks in one row of tiles of one output (a resumed run may lack parts of some rows)."""
    rows = Counter((t.item, t.tile.core.row_off) for t in tasks)
    return max(rows.values())


def _guarded_batch(unit: tuple[Any, ...]) -> list[dict[str, Any]]:
    """Run a unit, turning each task's exception into an error record so batch-mates still finish."""
    out = []
    for t in unit:
        try:
            out.append(t.run())
        except Exception as exc:
            rec: dict[str, Any] = {"kind": "error", "key": t.key, "error": f"{type(exc).__name__}: {exc}"}
            full = disk_full(getattr(t, "tile_path", "") or getattr(t, "path", ""), exc) if isinstance(exc, (OSError, DiskFullError)) else None
            if full is not None:
                rec["disk_full"] = [full.path, full.free]
            out.append(rec)
    return out


@dataclass
class _Phase:
    """Progress counters of one phase of work units (tiles, then overview regions)."""

    done: int
    total: int
    ran: int = 0


def _run_phase(tasks: list[Any], kind: str, executor: Executor, manifest: Manifest, opts: ExecutorOptions, phase: _Phase,
               records: dict[str, dict[str, Any]], failed: dict[str, str], emit: ProgressFn) -> bool:  # fmt: skip
    """Run tasks (anything with ``key``, ``pixels`` and ``run()``) with retries, recording each result.

    A failed task is retried at once (its unit goes first in the executor's work list),
    up to ``opts.retries`` times. Returns False when ``opts.fail_fast`` stopped the phase
    at the first task that failed every attempt (units already running still finish and
    are recorded). A full disk stops the phase at once with :class:`DiskFullError`.
    """
    attempts: dict[str, int] = {}
    # A Dask or Parsl task costs ~2 ms to hand out: give each one ~4 Mpix (>= 100 ms of work).
    min_px = MIN_UNIT_PIXELS * (4 if executor.name in ("dask", "parsl") else 1)
    units = WorkList(_units(tasks, executor.workers, opts.tiles_per_task, min_px))
    results = executor.map_unordered(_guarded_batch, units)
    try:
        for idx, result in results:
            unit = units[idx]
            if isinstance(result, BaseException):
                result = [{"kind": "error", "key": t.key, "error": f"{type(result).__name__}: {result}"} for t in unit]
            by_key = {t.key: t for t in unit}
            again = []
            for rec in result:
                key = rec["key"]
                if rec["kind"] != "error":
                    manifest.write(rec)
                    records[key] = rec
                    phase.done += 1
                    phase.ran += 1
                    emit(Event(kind, phase.done, phase.total, key, rec))
                    continue
                if "disk_full" in rec:
                    path, free = rec["disk_full"]
                    units.close()
                    raise DiskFullError(path, free)
                attempts[key] = attempts.get(key, 0) + 1
                if attempts[key] > opts.retries:
                    rec = {**rec, "kind": "failed", "attempts": attempts[key]}
                    manifest.write(rec)
                    failed[key] = rec["error"]
                    emit(Event("failed", phase.done, phase.total, f"{key}: {rec['error']} (after {attempts[key]} attempts)", rec))
                    if opts.fail_fast and not units.closed:
                        units.close()
                        emit(Event("stopped", phase.done, phase.total, f"stopping after {key} failed (--fail-fast); waiting for running tiles"))
                elif not units.closed:
                    again.append(by_key[key])
                    emit(Event("retry", phase.done, phase.total, f"{key}: {rec['error']} (attempt {attempts[key]})"))
                # else: stopped (fail-fast) - left for the next run, which retries it afresh
            if again:
                units.add(tuple(again))
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()
    return not units.closed


def _run(job: Job, plan: Plan, workdir: Path, manifest: Manifest, state: dict[str, dict[str, Any]],
         executor: Executor, emit: ProgressFn) -> RunSummary:  # fmt: skip
    all_tasks = _make_tasks(plan, workdir)
    items_done = {it.index for it in plan.items if output_done(state.get(_out_key(it.index)), it.output)}
    todo = [t for t in all_tasks if t.item not in items_done and not _tile_done(state.get(t.key))]
    total = len(all_tasks)
    tiles = _Phase(total - len(todo), total)
    records = {k: v for k, v in state.items() if v.get("kind") == "tile"}
    failed: dict[str, str] = {}
    summary = RunSummary(outputs=[output_name(job, it.output) for it in plan.items], tiles_total=total, tiles_run=0,
                         tiles_skipped=tiles.done, failed=failed, pixels=0, valid=0, minimum=None, maximum=None, mean=None,
                         wall_s=0.0)  # fmt: skip
    if not job.keep_tiles:
        _remove_tiles(workdir, items_done)  # left behind when a run was stopped right after writing an output
    if len(items_done) == len(plan.items):
        summary.already_complete = True
        _fill_stats(summary, plan, records)
        emit(Event("done", total, total, "already complete"))
        return summary
    summary.executor, summary.workers = executor.name, executor.workers
    detail = getattr(executor, "detail", "")  # e.g. the dask dashboard's address
    emit(Event("start", tiles.done, total,
               f"{len(todo)} of {total} tiles to run on {executor.workers} worker(s) (executor {executor.name}){'; ' + detail if detail else ''}"))  # fmt: skip
    try:
        _make_dirs(workdir, [it for it in plan.items if it.index not in items_done])
        complete = _run_phase(todo, "tile", executor, manifest, job.executor, tiles, records, failed, emit)
        summary.tiles_run = tiles.ran
        if complete:
            ready = [it for it in plan.items if it.index not in items_done and not any(k.startswith(f"{it.index}/") for k in failed)]
            levels, complete = _overviews(job, plan, workdir, manifest, state, records, ready, failed, executor, emit)
        if complete:
            ready = [it for it in ready if not any(k.startswith(f"{it.index}/") for k in failed)]
            _assemble(job, plan, manifest, records, ready, levels, failed, executor, emit, summary)
        summary.stopped = not complete
    except BaseException:
        terminate = getattr(executor, "terminate", None)
        if terminate is not None:
            terminate()
        raise
    # Workers lost during the run (killed, out of memory) left their temporaries behind.
    _remove_stale_temporaries(plan, workdir)
    _fill_stats(summary, plan, {k: v for k, v in records.items() if v.get("kind") == "tile"})
    emit(Event("done", tiles.done, total, "finished"))
    return summary


def _make_dirs(workdir: Path, items: list[ItemPlan]) -> None:
    """Create the tile folders once here, so a full disk is reported before any worker starts."""
    try:
        for it in items:
            for sub in ("tiles", "ovr"):
                (workdir / sub / str(it.index)).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        full = disk_full(workdir / "tiles", exc)
        if full is not None:
            raise full from None
        raise OutputError(f"cannot create folders in the work directory {str(workdir)!r} ({exc.strerror})", "choose a writable output location") from None


def _remove_tiles(workdir: Path, items: set[int]) -> None:
    for i in items:
        for sub in ("tiles", "ovr"):
            if (workdir / sub / str(i)).is_dir():
                shutil.rmtree(workdir / sub / str(i), ignore_errors=True)


def _overviews(job: Job, plan: Plan, workdir: Path, manifest: Manifest, state: dict[str, dict[str, Any]],
               records: dict[str, dict[str, Any]], ready: list[ItemPlan], failed: dict[str, str], executor: Executor,
               emit: ProgressFn) -> tuple[dict[int, tuple[tuple[Grid, tuple[Source, ...]], ...]], bool]:  # fmt: skip
    """Make sure every ready output has its overview pyramids; return each item's level mosaics.

    Aligned tilings built them with the tiles; otherwise a phase of region tasks
    reads the finished tiles back and builds them. The flag is False when fail-fast
    stopped that phase.
    """
    out: dict[int, tuple[tuple[Grid, tuple[Source, ...]], ...]] = {}
    todo: list[OverviewTask] = []
    n_total = 0
    for it in ready:
        factors = _item_factors(job, it)
        if not factors:
            continue
        if _fused(it, factors):
            pieces = [pyramid_sources(records[f"{it.index}/{t.key}"]["ovr"], t.core, factors) for t in it.tiling]
        else:
            mosaic = workdir / "mosaic" / f"{it.index}.vrt"
            mosaic.parent.mkdir(parents=True, exist_ok=True)
            tiles = tuple((records[f"{it.index}/{t.key}"]["path"], t.core, 0, t.core.width, t.core.height) for t in it.tiling)
            write_json_atomic(mosaic, vrt_xml(it.grid, job.output.dtype, plan.nodata, plan.op.band_names, tiles))
            tasks = [
                OverviewTask(key=f"{it.index}/ovr/{r.key}", item=it.index, source=str(mosaic), region=r.core, grid=it.grid, factors=factors,
                             dtype=job.output.dtype, nodata=plan.nodata, band_names=plan.op.band_names,
                             path=str(workdir / "ovr" / str(it.index) / f"region-{r.key}.tif"))
                for r in regions(it.grid, factors)
            ]  # fmt: skip
            n_total += len(tasks)
            todo += [t for t in tasks if not _ovr_done(state.get(t.key))]
            pieces = [pyramid_sources(t.path, t.region, factors) for t in tasks]
        out[it.index] = tuple((level_grid(it.grid, f), tuple(p[f] for p in pieces)) for f in factors)
    complete = True
    if n_total:
        phase = _Phase(n_total - len(todo), n_total)
        emit(Event("phase", phase.done, n_total, f"computing overviews ({len(todo)} of {n_total} regions)"))
        complete = _run_phase(todo, "overview", executor, manifest, job.executor, phase, records, failed, emit)
    return out, complete


def _ovr_done(rec: dict[str, Any] | None) -> bool:
    return bool(rec and rec.get("kind") == "overview" and os.path.exists(rec["path"]))


def _assemble(job: Job, plan: Plan, manifest: Manifest, records: dict[str, dict[str, Any]], ready: list[ItemPlan],
              levels: dict[int, tuple[tuple[Grid, tuple[Source, ...]], ...]], failed: dict[str, str],
              executor: Executor, emit: ProgressFn, summary: RunSummary) -> None:  # fmt: skip
    if not ready:
        return
    threads = max(1, executor.workers // len(ready)) if len(ready) < executor.workers else 1
    opts = job.output
    co = cog_options(opts.compress, opts.level, opts.predictor, opts.overviews, opts.dtype, opts.creation_options, threads)
    tasks = [
        AssembleTask(
            key=_out_key(it.index), item=it.index, output=str(it.output), grid=it.grid, dtype=opts.dtype, nodata=plan.nodata,
            band_names=plan.op.band_names,
            tiles=tuple((records[f"{it.index}/{t.key}"]["path"], t.core, 0, t.core.width, t.core.height) for t in it.tiling),
            creation_options=co,
            levels=levels.get(it.index, ()),
            upload=url_of(it.output) if job.upload else None,
            s3_endpoint=job.s3_endpoint,
        )
        for it in ready
    ]  # fmt: skip
    emit(Event("assemble", 0, len(tasks), f"writing {len(tasks)} output(s)"))
    # Say which outputs are being written: a run stopped between an output's rename into
    # place and its record may then find that file there and write it again.
    manifest.write_many([{"kind": "assembling", "key": t.key, "path": t.output} for t in tasks])
    units = WorkList(tasks)
    attempts: dict[str, int] = {}
    n = 0
    for idx, result in executor.map_unordered(run_assemble, units):
        task = units[idx]
        if isinstance(result, BaseException):
            if isinstance(result, OutputError):
                units.close()
                raise result
            attempts[task.key] = attempts.get(task.key, 0) + 1
            error = f"{type(result).__name__}: {result}"
            if attempts[task.key] <= job.executor.retries:  # e.g. a worker lost
                units.add(task)
                emit(Event("retry", n, len(tasks), f"{task.key}: {error} (attempt {attempts[task.key]})"))
                continue
            failed[task.key] = error
            manifest.write({"kind": "failed", "key": task.key, "error": error, "attempts": attempts[task.key]})
            continue
        manifest.write(result)
        n += 1
        summary.assemble_s += result["seconds"]
        emit(Event("output", n, len(tasks), result.get("url") or result["path"], result))
        if not job.keep_tiles:
            for path in {src[0] for src in task.tiles} | {src[0] for _g, lt in task.levels for src in lt}:
                Path(path).unlink(missing_ok=True)


def _fill_stats(summary: RunSummary, plan: Plan, records: dict[str, dict[str, Any]]) -> None:
    # Sum in key order so the reported mean does not depend on completion order.
    total = 0.0
    for key in sorted(records):
        rec = records[key]
        summary.pixels += rec.get("pixels", 0)
        summary.valid += rec.get("valid", 0)
        total += rec.get("sum", 0.0)
        for attr, fn in (("minimum", min), ("maximum", max)):
            v = rec.get(attr[:3])
            if v is not None:
                cur = getattr(summary, attr)
                setattr(summary, attr, v if cur is None else fn(cur, v))
        summary.read_s += rec.get("read_s", 0.0)
        summary.compute_s += rec.get("compute_s", 0.0)
        summary.write_s += rec.get("write_s", 0.0)
        item = str(rec.get("item", key.split("/")[0]))
        po = summary.per_output.setdefault(item, {"valid": 0, "sum": 0.0, "min": None, "max": None})
        po["valid"] += rec.get("valid", 0)
        po["sum"] += rec.get("sum", 0.0)
        for k, fn in (("min", min), ("max", max)):
            v = rec.get(k)
            if v is not None:
                po[k] = v if po[k] is None else fn(po[k], v)
    summary.mean = total / summary.valid if summary.valid else None
