"""Rasterize onto TMS tiles as batch parts: SLURM job arrays and GNU parallel.

The submitting command stages the polygons once (under the work directory's
lock) and cuts the tiles of the zoom level into parts; each part
(``tilewise worker WORKDIR --part I/N``) computes its tiles from the staged file;
the finishing step (``tilewise worker WORKDIR --finish``, a SLURM job that
depends on the array, or the submitting process after GNU parallel) builds the
parent levels one after the other, the web tiles and the summary.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tilewise.errors import InputError
from tilewise.executors import Executor, ExecutorOptions
from tilewise.job import Job
from tilewise.manifest import Manifest
from tilewise.ops.rasterize import properties_of
from tilewise.rasterize_run import (
    GEOTIFF_DIR,
    STAGED,
    SUMMARY_CSV,
    Encoding,
    TileTask,
    _done,
    _prepare,
    _run,
    _stage,
    _State,
    check_vectors,
    fingerprint,
    open_output,
    run_rasterize,
    validate_spec,
)
from tilewise.resources import estimate_from
from tilewise.runner import ProgressFn, RunSummary


class TileSetWork:
    """A rasterize job onto TMS tiles, seen by the batch launchers (:class:`tilewise.launch.BatchWork`)."""

    def __init__(self, job: Job) -> None:
        assert job.rasterize is not None
        self.job = job
        self.spec = job.rasterize
        self.ts = validate_spec(self.spec)
        check_vectors(self.spec, exclude=job.output_root)
        self.fingerprint = fingerprint(job)
        self.root = Path(job.output_root)
        self._stage: dict[str, Any] | None = None

    def prepare(self, workdir: Path, manifest: Manifest, overwrite: bool) -> dict[str, dict[str, Any]]:
        root = open_output(self.job, overwrite)
        state = _prepare(self.job, self.fingerprint, root, workdir, manifest, overwrite)
        if not self.complete(state):
            st = _State({k: v for k, v in state.items() if v.get("kind") == "stage"})
            self._stage = _stage(self.spec, self.ts, workdir, manifest, st, lambda e: None)
            state["stage"] = self._stage
        return state

    def _stage_record(self, workdir: Path) -> dict[str, Any]:
        if self._stage is None:
            rec = Manifest(workdir).latest().get("stage")
            if rec is None or not (workdir / STAGED).exists():
                raise InputError(f"the polygons of the job in {str(workdir)!r} are not staged", "rerun the original command to stage them and resubmit")
            self._stage = rec
        return self._stage

    def tasks(self, workdir: Path) -> list[Any]:
        spec, ts = self.spec, self.ts
        assert spec.zoom is not None
        lv = ts.level(spec.zoom, spec.tile_px)
        out = self.job.output
        enc = Encoding(out.nodata if out.nodata is not None else float("nan"), out.compress, out.level, out.predictor)
        tif = self.root / GEOTIFF_DIR / ts.id / str(spec.zoom)
        tiles = sorted((tuple(t) for t in self._stage_record(workdir)["tiles"]), key=lambda t: (t[1], t[0]))
        return [TileTask(f"{spec.zoom}/{x}/{y}", lv, x, y, ts.crs, str(workdir / STAGED), spec.stats, str(tif / str(x) / f"{y}.tif"), enc)
                for x, y in tiles]  # fmt: skip

    def is_done(self, latest: dict[str, dict[str, Any]]) -> Callable[[str], bool]:
        return lambda k: _done(latest.get(k))

    def complete(self, latest: dict[str, dict[str, Any]]) -> bool:
        return latest.get("done", {}).get("kind") == "done" and (self.root / SUMMARY_CSV).exists()

    def resources(self, opts: ExecutorOptions, pixels: int) -> Any:
        # A tile holds its stats in float64 plus the kernels' scratch; its polygons a few MB more.
        px = self.spec.tile_px**2
        return estimate_from(opts, pixels, px * 8 * (len(self.spec.stats) + 4) + (64 << 20) * (1 + len(properties_of(self.spec.stats))))

    def fill(self, summary: RunSummary, latest: dict[str, dict[str, Any]]) -> None:
        report = (latest.get("stage") or self._stage or {}).get("report")
        if report:
            summary.batch.setdefault("report", report)

    def write_outputs(self, workdir: Path, manifest: Manifest, latest: dict[str, dict[str, Any]], executor: Executor, emit: ProgressFn) -> RunSummary:
        return _run(self.job, self.spec, self.ts, self.root, workdir, manifest, latest, executor, emit)

    def finish(self, executor: Executor, emit: ProgressFn) -> RunSummary:
        return run_rasterize(self.job, progress=emit, executor=executor)
