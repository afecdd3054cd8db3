"""How a job scales with workers: run it at several worker counts, measure, and say what limits it.

:func:`run_scaling` runs one job at each worker count, each time into a fresh output
folder, and :func:`verdict` reads the measurements; ``tilewise bench scaling`` (in
``tilewise.cli.bench``) prints the table and writes ``scaling.json`` and, with
:func:`plot`, ``scaling.png``.

How a run is measured
---------------------
Each run is a child process (``python -m tilewise.scaling``) that calls
:func:`tilewise.runner.run_job` with the worker count and notes when the runner's
events arrive. A child process per run, rather than runs in this process, because
every run then starts alike (no GDAL block cache, imported module or worker pool
left warm by the run before) and the process tree that is sampled is exactly the
run's: its coordinator, the ``forkserver`` and the worker processes. While it runs,
a thread here samples that tree every 50 ms with ``psutil``: the sum of its
resident memory (peak memory; shared pages count once per process, as RSS does)
and each process's user + system CPU seconds. A run's CPU time is the larger of
``getrusage(RUSAGE_CHILDREN)`` (exact for the processes that were waited for) and
the sampled sum (which also sees the ``forkserver`` and its workers, which nobody
waits for). From the manifest records the runner hands to its progress events
come the per-tile read / compute / write seconds, bytes read (decoded array bytes)
and tile file sizes; output sizes come from the output records.

A run's wall time is :func:`~tilewise.runner.run_job`'s own (planning to last
output written; not interpreter start-up), split by the events into *setup*
(planning, work directory), the *tile phase* (pool start and tiles), *finish*
(overviews and assembly) and *close* (pool shut down). Local input files are read
once before the first run so every run finds them in the page cache. With
``repeats`` > 1 the worker counts run in turn that many times (so a change of load
on the machine touches them alike) and, per worker count, the run with the median
wall time (the lower median for an even count) is the one reported. The CPU
time other processes used meanwhile (machine-wide busy time less the run's) is
recorded: cores kept busy by others are not counted as free for the run, and
the verdict warns when the machine was busy.

The verdict
-----------
Taken at the highest worker count W against the lowest B. *speedup* =
wall(B) / wall(W), *efficiency* = speedup / (W / B); *busy* = summed tile seconds
/ (wall × W), the share of the workers' time spent inside tiles; *CPU per
worker* = CPU seconds of the tile phase / (tile-phase wall × c), where c = min(W,
usable cores less those other processes kept busy, at least 1); the *shares* are
read, compute and write seconds over their sum. The rules, first match wins:

1. **overhead-bound** when busy < 0.5: fixed phases (planning, pool start,
   overviews, assembly, shut-down) or idle workers (too few tiles) take more than
   half the time; the verdict gives each phase's seconds, and the time outside
   tiles per worker at B and at W (which more workers do not shrink).
2. **I/O-bound (disk)** when CPU per worker < 0.5 and reading plus writing take
   at least half of the tile time: workers sit in reads or writes without using
   their CPU, waiting on storage (a disk, a network file system, HTTP).
3. **I/O-bound (decode)** when reading is the largest share and efficiency is
   below 0.75 (or there is one worker count) while the CPU is busy: decoding
   compressed input blocks is the limit.
4. **CPU-bound** when CPU per worker ≥ 0.5: the cores are busy computing and
   encoding (and decoding, when that scales); more cores help. Beyond the usable
   cores the speedup cannot grow, which the verdict says.
5. **overhead-bound** otherwise: workers are inside tiles but neither on the CPU
   nor waiting on reads or writes — waiting on each other (the GIL, locks).

Efficiency ≥ 0.75 is reported as "scales well" whatever the verdict; the numbers
each rule looked at are printed with it (and stored in the JSON).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tilewise.errors import OutputError, RunFailedError, UsageError
from tilewise.job import Job

#: Efficiency at the highest worker count from which a job "scales well".
GOOD_EFFICIENCY = 0.75
#: Below this share of the workers' time spent inside tiles, a run is overhead-bound.
MIN_BUSY = 0.5
#: Below this CPU use per worker during the tile phase, workers are waiting rather than working.
MIN_CPU = 0.5
#: Cores used by other processes from which the machine is called busy (the measurements are skewed).
BUSY_MACHINE_CORES = 0.3
#: Seconds between samples of the run's process tree.
SAMPLE_INTERVAL_S = 0.05

EXECUTOR_CHOICES = ("processes", "threads")

ProgressFn = Callable[[str], None]


# ---------------------------------------------------------------- results


@dataclass
class RunMeasure:
    """What one run at one worker count did (the median run when repeated)."""

    workers: int
    wall_s: float
    process_wall_s: float
    cpu_s: float
    cpu_tiles_s: float
    peak_rss_bytes: int
    tiles: int
    pixels: int
    read_s: float
    compute_s: float
    write_s: float
    assemble_s: float
    bytes_read: int
    tile_bytes: int
    output_bytes: int
    setup_s: float
    tiles_s: float
    finish_s: float
    close_s: float
    worker_processes: int
    other_cores: float = 0.0
    walls: list[float] = field(default_factory=list)

    @property
    def task_s(self) -> float:
        """Seconds spent inside tiles, summed over tiles (read + compute + write)."""
        return self.read_s + self.compute_s + self.write_s

    @property
    def shares(self) -> dict[str, float]:
        """Read, compute and write seconds as fractions of their sum."""
        total = self.task_s
        if total <= 0:
            return {"read": 0.0, "compute": 0.0, "write": 0.0}
        return {"read": self.read_s / total, "compute": self.compute_s / total, "write": self.write_s / total}

    @property
    def busy(self) -> float:
        """Share of the workers' time (wall × workers) spent inside tiles."""
        return self.task_s / (self.wall_s * self.workers) if self.wall_s > 0 else 0.0

    @property
    def fixed_s(self) -> float:
        """Wall seconds outside the tile phase: setup, overviews and assembly, shut-down."""
        return max(0.0, self.wall_s - self.tiles_s)

    @property
    def overhead_s(self) -> float:
        """Wall seconds an average worker spends outside tiles: the fixed phases plus idle time in the tile phase."""
        return max(0.0, self.wall_s - self.task_s / self.workers)

    @property
    def idle_s(self) -> float:
        """Seconds of the tile phase an average worker is not inside a tile (pool start, dispatch, waiting for the last tiles)."""
        return max(0.0, self.tiles_s - self.task_s / self.workers)

    @property
    def bytes_written(self) -> int:
        """Tile files plus outputs."""
        return self.tile_bytes + self.output_bytes

    def cpu_per_worker(self, cores: float) -> float | None:
        """CPU seconds of the tile phase per second and per worker, counting at most ``cores`` workers (at least one)."""
        if self.tiles_s <= 0:
            return None
        return self.cpu_tiles_s / (self.tiles_s * max(1.0, min(self.workers, cores)))


@dataclass
class Verdict:
    """What limits the job, with the numbers that say so."""

    kind: str  # cpu, io-disk, io-decode, overhead
    label: str  # CPU-bound, I/O-bound (disk), I/O-bound (decode), overhead-bound
    summary: str
    reasons: list[str]
    evidence: dict[str, Any]
    scales_well: bool | None


@dataclass
class ScalingResult:
    """Every run of a scaling measurement, the machine it ran on and the verdict."""

    job: dict[str, Any]
    executor: str
    repeats: int
    cores: int
    machine: dict[str, Any]
    runs: list[RunMeasure]
    verdict: Verdict
    work_dir: str = ""

    def speedup(self, run: RunMeasure) -> float:
        """Wall time of the lowest worker count over ``run``'s."""
        return self.runs[0].wall_s / run.wall_s if run.wall_s > 0 else 0.0

    def efficiency(self, run: RunMeasure) -> float:
        """Speedup over the ideal one (worker count over the lowest worker count)."""
        return self.speedup(run) / (run.workers / self.runs[0].workers)

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per worker count, with the derived numbers."""
        out = []
        for r in self.runs:
            d = asdict(r)
            d.update(
                speedup=round(self.speedup(r), 4), ideal=r.workers / self.runs[0].workers, efficiency=round(self.efficiency(r), 4),
                shares={k: round(v, 4) for k, v in r.shares.items()}, busy=round(r.busy, 4), fixed_s=round(r.fixed_s, 4),
                overhead_s=round(r.overhead_s, 4), idle_s=round(r.idle_s, 4),
                cpu_cores=round(r.cpu_s / r.wall_s, 3) if r.wall_s > 0 else None,
                cpu_per_worker=_round(r.cpu_per_worker(available_cores(self.cores, r)), 3), bytes_written=r.bytes_written,
                read_per_tile_s=round(r.read_s / r.tiles, 6) if r.tiles else None,
            )  # fmt: skip
            out.append(d)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready (what ``scaling.json`` holds)."""
        return {"job": self.job, "executor": self.executor, "repeats": self.repeats, "usable_cores": self.cores, "machine": self.machine,
                "runs": self.rows(), "verdict": asdict(self.verdict), "work_dir": self.work_dir or None}  # fmt: skip


def _round(v: float | None, digits: int) -> float | None:
    return None if v is None else round(v, digits)


# ---------------------------------------------------------------- running


def parse_workers(spec: str) -> list[int]:
    """Parse ``"1,2,4"`` into sorted distinct worker counts."""
    out: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            n = int(part)
        except ValueError:
            raise UsageError(f"--workers {spec!r}: {part!r} is not a whole number", "give worker counts separated by commas, e.g. --workers 1,2,4") from None
        if n < 1:
            raise UsageError(f"--workers {spec!r}: {n} is not positive", "give worker counts of 1 or more, e.g. --workers 1,2,4")
        out.add(n)
    if not out:
        raise UsageError(f"--workers {spec!r} names no worker count", "give worker counts separated by commas, e.g. --workers 1,2,4")
    return sorted(out)


def default_workers(cores: int) -> list[int]:
    """1, 2, 4, ... below the usable cores, and the usable cores."""
    out, n = [], 1
    while n < cores:
        out.append(n)
        n *= 2
    return [*out, cores]


def relocated(job: Job, folder: Path, executor: str, workers: int) -> Job:
    """A copy of ``job`` writing into ``folder`` (same file names) on ``executor`` with ``workers`` workers."""
    root = Path(job.output_root)
    new_root = folder / (root.name or "output")
    items = []
    for it in job.items:
        out = Path(it.output)
        if job.batch:
            try:
                rel = out.relative_to(root)
            except ValueError:
                rel = Path(out.name)
            new_out = new_root / rel
        else:
            new_out = folder / out.name
        items.append(it.model_copy(update={"output": str(new_out)}))
    opts = job.executor.model_copy(update={"name": executor, "workers": workers})
    return job.model_copy(update={"items": tuple(items), "output_root": str(new_root), "executor": opts})


def run_scaling(job: Job, workers: Sequence[int], *, executor: str = "processes", repeats: int = 1, work_dir: str | Path | None = None,
                keep: bool = False, warm: bool = True, progress: ProgressFn | None = None) -> ScalingResult:  # fmt: skip
    """Run ``job`` at each worker count into fresh outputs, measure every run and give a verdict.

    Parameters
    ----------
    job
        The job (e.g. from :func:`tilewise.api.load_job_file`); its outputs are
        moved into ``work_dir``, its executor replaced.
    workers
        Worker counts to run at (at least one).
    executor
        ``processes`` or ``threads``.
    repeats
        Runs per worker count; the run with the median wall time is kept.
    work_dir
        Scratch folder for the runs' outputs (``w{N}/`` each). Default: a new
        temporary folder beside the job's output (or in the system's temporary
        folder when that does not exist).
    keep
        Keep the runs' outputs (the last repeat of each worker count); otherwise
        they are removed, and so is a scratch folder this function made.
    warm
        Read local input files once before the first run, so every run finds
        them in the page cache.
    progress
        Called with a line of text before and after each run.

    Returns
    -------
    ScalingResult
        The runs, sorted by worker count, and the verdict.

    Raises
    ------
    UsageError
        No worker counts, an unknown executor, or ``repeats`` below 1.
    RunFailedError
        A run failed; the message names the worker count and the error.
    """
    from tilewise.executors import usable_cores
    from tilewise.job import plan_job

    say = progress or (lambda msg: None)
    counts = sorted(set(workers))
    if not counts or counts[0] < 1:
        raise UsageError(f"worker counts {list(workers)!r} are not all positive", "give worker counts of 1 or more, e.g. --workers 1,2,4")
    if executor not in EXECUTOR_CHOICES:
        raise UsageError(f"executor {executor!r} cannot be scaled", f"use one of: {', '.join(EXECUTOR_CHOICES)}")
    if repeats < 1:
        raise UsageError(f"--repeats {repeats} is not positive", "use --repeats 1 or more")
    made = work_dir is None
    try:
        if work_dir is None:
            parent = Path(job.output_root).absolute().parent
            scratch = Path(tempfile.mkdtemp(prefix=".tilewise-scaling-", dir=parent if parent.is_dir() and os.access(parent, os.W_OK) else None))
        else:
            scratch = Path(work_dir)
            made = not scratch.exists()
            scratch.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the scratch folder {str(work_dir or tempfile.gettempdir())!r} ({exc.strerror})",
                          "choose a writable folder with --work") from None  # fmt: skip
    measured: dict[int, list[RunMeasure]] = {n: [] for n in counts}
    try:
        # Planned as the runs will be, inside the scratch folder (planning may write there, e.g. a
        # mosaic's VRT): bad inputs fail here, once, with the usual message.
        plan = plan_job(relocated(job, scratch / "plan", executor, counts[0]))
        given = {spec.path for it in job.items for spec in it.inputs}
        inputs = sorted(given | {ref.path for it in plan.items for ref in it.refs.values()})
        remote = [p for p in inputs if p.startswith("/vsi") or "://" in p]
        local = [p for p in inputs if p not in remote and os.path.isfile(p) and scratch.absolute() not in Path(p).absolute().parents]
        if warm:
            for p in local:
                _warm(p)
        job_info = {
            "command": job.command, "inputs": sorted(given), "outputs": [it.output for it in job.items], "outputs_count": len(job.items),
            "tiles": plan.n_tiles, "pixels": sum(it.grid.height * it.grid.width for it in plan.items),
            "input_bytes": None if remote else sum(os.path.getsize(p) for p in local),
            "tile_size": [plan.items[0].tiling.tile_height, plan.items[0].tiling.tile_width] if plan.items else None,
            "compress": job.output.compress, "dtype": job.output.dtype,
        }  # fmt: skip
        shutil.rmtree(scratch / "plan", ignore_errors=True)
        # Repeats go round all worker counts in turn, so a change of load on the machine touches every count alike.
        for k in range(repeats):
            for n in counts:
                folder = scratch / f"w{n}"
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
                say(f"running {n} worker(s), executor {executor}" + (f", repeat {k + 1}/{repeats}" if repeats > 1 else ""))
                m = _measure(relocated(job, folder, executor, n), folder)
                say(f"  {n} worker(s): {m.wall_s:.2f} s")
                measured[n].append(m)
                if not keep:
                    shutil.rmtree(folder, ignore_errors=True)
    finally:
        shutil.rmtree(scratch / "plan", ignore_errors=True)
        if not keep:
            for n in counts:
                shutil.rmtree(scratch / f"w{n}", ignore_errors=True)
            if made:
                shutil.rmtree(scratch, ignore_errors=True)
    cores = usable_cores()
    runs: list[RunMeasure] = []
    for n in counts:
        ms = sorted(measured[n], key=lambda m: m.wall_s)
        median = ms[(len(ms) - 1) // 2]
        median.walls = [round(m.wall_s, 4) for m in measured[n]]
        runs.append(median)
    return ScalingResult(job=job_info, executor=executor, repeats=repeats, cores=cores, machine=machine_info(cores), runs=runs,
                         verdict=verdict(runs, cores), work_dir=str(scratch) if keep else "")  # fmt: skip


def _warm(path: str, chunk: int = 16 << 20) -> None:
    """Read a file once (page cache), unless it is larger than half the memory available."""
    try:
        import psutil

        if os.path.getsize(path) > psutil.virtual_memory().available // 2:
            return
        with open(path, "rb", buffering=0) as fh:
            while fh.read(chunk):
                pass
    except (OSError, ImportError):
        return


def machine_info(cores: int) -> dict[str, Any]:
    """The machine and library versions, for the JSON report."""
    import numpy as np
    import rasterio

    from tilewise import __version__

    info: dict[str, Any] = {"tilewise": __version__, "python": platform.python_version(), "numpy": np.__version__,
                            "rasterio": rasterio.__version__, "gdal": rasterio.__gdal_version__, "os": f"{platform.system()} {platform.release()}",
                            "cpu_model": _cpu_model(), "usable_cores": cores, "logical_cores": os.cpu_count()}  # fmt: skip
    with contextlib.suppress(ImportError):
        import psutil

        info["ram_gb"] = round(psutil.virtual_memory().total / 1e9, 1)
    return info


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _measure(job: Job, folder: Path) -> RunMeasure:
    """Run ``job`` in a child process while sampling its process tree; return the measurements."""
    try:
        import psutil
    except ImportError:
        raise UsageError("tilewise bench needs psutil, which is not installed", "pip install psutil") from None
    spec, result_path = folder / "scaling-job.json", folder / "scaling-run.json"
    spec.write_text(job.to_json(), encoding="utf-8")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryFile() as err:
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy0 = _machine_busy_s()
        t0 = time.perf_counter()
        proc = psutil.Popen([sys.executable, "-m", "tilewise.scaling", str(spec), str(result_path)], stdout=subprocess.DEVNULL, stderr=err, env=env)
        sampler = _TreeSampler(proc)
        sampler.start()
        try:
            code = proc.wait()
        except BaseException:
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    child.kill()
            proc.kill()
            proc.wait()
            raise
        finally:
            sampler.stop()
        process_wall = time.perf_counter() - t0
        busy1 = _machine_busy_s()
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        err.seek(0)
        stderr = err.read().decode("utf-8", errors="replace")
    workers = job.executor.workers or 1
    try:
        res = json.loads(result_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        tail = " ".join(stderr.strip().splitlines()[-3:])[-400:] or f"exit status {code}"
        raise RunFailedError(f"the run at {workers} worker(s) stopped without a result ({tail})", "run the job with 'tilewise run' to see the error") from None
    if "error" in res:
        raise RunFailedError(f"the run at {workers} worker(s) failed: {res['error']}", "run the job with 'tilewise run' to see it in full")
    rusage_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    cpu = max(rusage_cpu, sampler.cpu_total())
    tiles, outputs = res["tiles"], res["outputs"]
    ev = res["events"]
    t_call, t_start, t_last, t_done, t_ret = ev["call"], ev.get("start", ev["call"]), ev.get("last_tile"), ev.get("done", ev["return"]), ev["return"]
    t_last = t_last if t_last is not None else t_start
    return RunMeasure(
        workers=workers, wall_s=res["wall_s"], process_wall_s=process_wall, cpu_s=cpu,
        cpu_tiles_s=max(0.0, sampler.cpu_at(t_last) - sampler.cpu_at(t_start)), peak_rss_bytes=sampler.peak_rss,
        tiles=len(tiles), pixels=sum(int(t.get("pixels", 0)) for t in tiles),
        read_s=sum(float(t.get("read_s", 0.0)) for t in tiles), compute_s=sum(float(t.get("compute_s", 0.0)) for t in tiles),
        write_s=sum(float(t.get("write_s", 0.0)) for t in tiles), assemble_s=sum(float(o.get("seconds", 0.0)) for o in outputs),
        bytes_read=sum(int(t.get("bytes_read", 0)) for t in tiles), tile_bytes=sum(int(t.get("size", 0)) for t in tiles),
        output_bytes=sum(int(o.get("size", 0)) for o in outputs),
        setup_s=max(0.0, t_start - t_call), tiles_s=max(0.0, t_last - t_start), finish_s=max(0.0, t_done - t_last), close_s=max(0.0, t_ret - t_done),
        worker_processes=len({t.get("worker") for t in tiles}),
        other_cores=max(0.0, (busy1 - busy0 - cpu) / process_wall) if process_wall > 0 else 0.0,
    )  # fmt: skip


def _machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (not idle, not waiting on I/O) since boot."""
    import psutil

    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def available_cores(cores: int, run: RunMeasure) -> float:
    """The usable cores less those other processes kept busy during ``run`` (at least one)."""
    return max(1.0, cores - run.other_cores)


class _TreeSampler:
    """Samples a process tree: peak summed RSS, and cumulative CPU seconds over time."""

    def __init__(self, proc: Any, interval: float = SAMPLE_INTERVAL_S) -> None:
        self.proc = proc
        self.interval = interval
        self.peak_rss = 0
        self.series: list[tuple[float, float]] = []  # (time.time(), CPU seconds of every process seen so far)
        self._cpu: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tilewise-scaling-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def _sample(self) -> None:
        import psutil

        try:
            procs = [self.proc, *self.proc.children(recursive=True)]
        except psutil.Error:
            return
        rss = 0
        for p in procs:
            with contextlib.suppress(psutil.Error), p.oneshot():
                rss += p.memory_info().rss
                t = p.cpu_times()
                self._cpu[(p.pid, p.create_time())] = t.user + t.system
        self.peak_rss = max(self.peak_rss, rss)
        self.series.append((time.time(), sum(self._cpu.values())))

    def cpu_total(self) -> float:
        """CPU seconds of every process seen (each up to one interval short of its last second)."""
        return sum(self._cpu.values())

    def cpu_at(self, t: float) -> float:
        """Cumulative CPU seconds of the tree at wall-clock time ``t``, interpolated between samples."""
        import bisect

        s = self.series
        if not s:
            return 0.0
        i = bisect.bisect_left(s, t, key=lambda sample: sample[0])
        if i == 0:
            return s[0][1]
        if i == len(s):
            return s[-1][1]
        (ta, ca), (tb, cb) = s[i - 1], s[i]
        return ca + (cb - ca) * ((t - ta) / (tb - ta)) if tb > ta else cb


# ---------------------------------------------------------------- the verdict


def verdict(runs: Sequence[RunMeasure], cores: int) -> Verdict:
    """Say what limits the job from its runs (sorted by worker count); the rules are in the module docstring."""
    if not runs:
        raise UsageError("no runs to judge", "give at least one worker count")
    base, top = runs[0], runs[-1]
    avail = available_cores(cores, top)
    c = max(1.0, min(top.workers, avail))
    speedup = base.wall_s / top.wall_s if len(runs) > 1 and top.wall_s > 0 else None
    eff = speedup / (top.workers / base.workers) if speedup is not None else None
    shares = top.shares
    busy = top.busy
    cpu = top.cpu_per_worker(avail)
    other = max(r.other_cores for r in runs)
    growth = None
    if len(runs) > 1 and base.tiles and top.tiles and base.read_s > 0:
        growth = (top.read_s / top.tiles) / (base.read_s / base.tiles)
    evidence: dict[str, Any] = {
        "workers": top.workers, "baseline_workers": base.workers, "usable_cores": cores, "other_load_cores": round(other, 2),
        "speedup": _round(speedup, 3), "efficiency": _round(eff, 3),
        "busy": round(busy, 3), "cpu_per_worker": _round(cpu, 3), "shares": {k: round(v, 3) for k, v in shares.items()},
        "read_per_tile_growth": _round(growth, 3), "overhead_s": round(top.overhead_s, 3), "baseline_overhead_s": round(base.overhead_s, 3),
        "setup_s": round(top.setup_s, 3), "idle_s": round(top.idle_s, 3), "finish_s": round(top.finish_s, 3), "close_s": round(top.close_s, 3),
        "wall_s": round(top.wall_s, 3), "tiles_per_worker": round(top.tiles / top.workers, 2),
        "read_mb_per_s": round(top.bytes_read / top.tiles_s / 1e6, 1) if top.tiles_s > 0 else None,
    }  # fmt: skip
    at = f"at {top.workers} worker(s)"
    shares_txt = f"read {shares['read']:.0%}, compute {shares['compute']:.0%}, write {shares['write']:.0%} of tile time"
    cpu_txt = f"{cpu:.0%}" if cpu is not None else "n/a"
    reasons = []
    if eff is not None:
        reasons.append(f"speedup {speedup:.2f}x {at} over {base.workers} (ideal {top.workers / base.workers:g}x), efficiency {eff:.2f}"
                       + (" - scales well" if eff >= GOOD_EFFICIENCY else " - does not scale well"))  # fmt: skip
    reasons.append(f"{shares_txt}; workers inside tiles {busy:.0%} of the time; CPU per worker in the tile phase {cpu_txt} (of {c:.3g} core(s) free)")
    if growth is not None:
        reasons.append(f"read time per tile x{growth:.2f} from {base.workers} to {top.workers} worker(s)")
    if top.workers > cores:
        reasons.append(f"{top.workers} workers on {cores} usable core(s): speedup cannot pass {cores / base.workers:g}x")
    if other >= BUSY_MACHINE_CORES:
        reasons.append(f"other processes kept {other:.1f} of the {cores} core(s) busy during the runs: the numbers are skewed, rerun on a quiet machine")

    if busy < MIN_BUSY:
        kind, label = "overhead", "overhead-bound"
        summary = (f"workers spend only {busy:.0%} of the wall time inside tiles {at}; of {top.wall_s:.2f} s, {top.overhead_s:.2f} s per worker "
                   f"goes elsewhere ({base.overhead_s:.2f} s at {base.workers}): setup {top.setup_s:.2f} s, pool start and idle workers in the "
                   f"tile phase {top.idle_s:.2f} s, overviews and assembly {top.finish_s:.2f} s, shut-down {top.close_s:.2f} s; "
                   f"{top.tiles / top.workers:.1f} tiles per worker")  # fmt: skip
    elif cpu is not None and cpu < MIN_CPU and shares["read"] + shares["write"] >= 0.5:
        kind, label = "io-disk", "I/O-bound (disk)"
        what = "reading" if shares["read"] >= shares["write"] else "writing"
        summary = (f"{what} takes {max(shares['read'], shares['write']):.0%} of tile time while the workers use {cpu_txt} of a core each: "
                   "they wait on storage (disk, network file system or HTTP), not on the CPU")  # fmt: skip
    elif shares["read"] >= max(shares["compute"], shares["write"]) and (eff is None or eff < GOOD_EFFICIENCY):
        kind, label = "io-decode", "I/O-bound (decode)"
        summary = (f"reading takes {shares['read']:.0%} of tile time with the CPU busy ({cpu_txt} per worker): decoding compressed "
                   "input blocks is the limit (an uncompressed or faster-to-decode input, or more cores, helps)")  # fmt: skip
    elif cpu is not None and cpu >= MIN_CPU:
        kind, label = "cpu", "CPU-bound"
        biggest = max(shares, key=lambda k: shares[k])
        work = {"read": "decoding input", "compute": "computing", "write": "encoding output"}[biggest]
        summary = f"the cores are busy ({cpu_txt} per worker), mostly {work} ({shares[biggest]:.0%} of tile time); more cores help"
        if top.workers > cores:
            summary += f", up to the {cores} usable here"
    else:
        kind, label = "overhead", "overhead-bound"
        summary = (f"workers are inside tiles {busy:.0%} of the time but use {cpu_txt} of a core without waiting on reads or writes: "
                   "they wait on each other (the GIL, locks)")  # fmt: skip
    return Verdict(kind=kind, label=label, summary=summary, reasons=reasons, evidence=evidence,
                   scales_well=None if eff is None else eff >= GOOD_EFFICIENCY)  # fmt: skip


# ---------------------------------------------------------------- reporting


def table(result: ScalingResult) -> str:
    """The per-worker-count table as aligned plain text."""
    head = ["workers", "wall s", "speedup", "effic.", "CPU cores", "busy", "read", "compute", "write", "overhead s", "read MB", "written MB", "peak MB"]
    rows = [head]
    for r in result.runs:
        sh = r.shares
        rows.append([str(r.workers), f"{r.wall_s:.2f}", f"{result.speedup(r):.2f}", f"{result.efficiency(r):.2f}",
                     f"{r.cpu_s / r.wall_s:.2f}" if r.wall_s > 0 else "-", f"{r.busy:.0%}", f"{sh['read']:.0%}", f"{sh['compute']:.0%}",
                     f"{sh['write']:.0%}", f"{r.overhead_s:.2f}", f"{r.bytes_read / 1e6:.1f}", f"{r.bytes_written / 1e6:.1f}",
                     f"{r.peak_rss_bytes / 1e6:.0f}"])  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)


def write_json(result: ScalingResult, path: str | Path) -> Path:
    """Write :meth:`ScalingResult.to_dict` to ``path`` (through a temporary name)."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, p)
    return p


def check_plotting() -> None:
    """Raise :class:`UsageError` when matplotlib (the ``plot`` extra) is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("the scaling plot needs matplotlib, which is not installed", "pip install 'tilewise[plot]', or pass --no-plot") from None


def plot(result: ScalingResult, path: str | Path) -> Path:
    """Draw speedup against workers (with the ideal line) and efficiency per worker count into a PNG.

    Raises
    ------
    UsageError
        matplotlib is not installed.
    """
    check_plotting()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    w = [r.workers for r in result.runs]
    speed = [result.speedup(r) for r in result.runs]
    ideal = [n / w[0] for n in w]
    eff = [result.efficiency(r) for r in result.runs]
    fig = Figure(figsize=(10, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(w, ideal, "--", color="0.5", label="ideal")
    ax1.plot(w, speed, "o-", color="tab:blue", label="measured")
    if result.cores < w[-1]:
        ax1.axvline(result.cores, color="tab:red", linestyle=":", label=f"{result.cores} usable cores")
    ax1.set_xlabel("workers")
    ax1.set_ylabel(f"speedup over {w[0]} worker(s)")
    ax1.set_xticks(w)
    ax1.set_ylim(bottom=0)
    ax1.grid(alpha=0.3)
    ax1.legend(loc="upper left")
    ax1.set_title("speedup")
    pos = list(range(len(w)))
    ax2.bar(pos, eff, color="tab:blue", alpha=0.8)
    ax2.axhline(GOOD_EFFICIENCY, color="tab:green", linestyle="--", label=f"scales well (≥ {GOOD_EFFICIENCY:g})")
    for i, r in enumerate(result.runs):
        sh = r.shares
        ax2.text(i, eff[i] + 0.02, f"r {sh['read']:.0%}\nc {sh['compute']:.0%}\nw {sh['write']:.0%}", ha="center", va="bottom", fontsize=8)
    ax2.set_xticks(pos, [str(n) for n in w])
    ax2.set_xlabel("workers (read / compute / write share of tile time)")
    ax2.set_ylabel("efficiency")
    ax2.set_ylim(0, max(1.3, max(eff) + 0.3))
    ax2.legend(loc="upper right")
    ax2.set_title("efficiency")
    fig.suptitle(f"tilewise {result.job.get('command', '')} on {result.executor}: {result.verdict.label}")
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp)
    os.replace(tmp, p)
    return p


# ---------------------------------------------------------------- the child process


def _child(spec_path: str, result_path: str) -> int:
    """Run the job in ``spec_path`` (JSON) and write its timings and records to ``result_path``."""
    from tilewise.errors import TilewiseError
    from tilewise.runner import Event, run_job

    events: dict[str, float] = {}
    tiles: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = []

    def on_event(ev: Event) -> None:
        now = time.time()
        if ev.kind == "tile" and ev.record is not None:
            events["last_tile"] = now
            tiles.append({k: ev.record.get(k) for k in ("key", "read_s", "compute_s", "write_s", "bytes_read", "size", "pixels", "worker")})
        elif ev.kind == "output" and ev.record is not None:
            outputs.append({k: ev.record.get(k) for k in ("key", "path", "size", "seconds")})
        elif ev.kind in ("start", "done") and ev.kind not in events:
            events[ev.kind] = now

    out: dict[str, Any]
    try:
        job = Job.from_json(Path(spec_path).read_text(encoding="utf-8"))
        events["call"] = time.time()
        summary = run_job(job, overwrite=True, progress=on_event)
        events["return"] = time.time()
        out = {"wall_s": summary.wall_s, "events": events, "tiles": tiles, "outputs": outputs, "tiles_total": summary.tiles_total,
               "executor": summary.executor, "workers": summary.workers}  # fmt: skip
        code = 0
    except TilewiseError as exc:
        out, code = {"error": str(exc)}, 1
    tmp = Path(result_path).with_name(f".{Path(result_path).name}.tmp")
    tmp.write_text(json.dumps(out), encoding="utf-8")
    os.replace(tmp, result_path)
    return code


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], sys.argv[2]))
