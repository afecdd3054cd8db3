"""Run a rasterize job on a tile matrix set: stage, tiles at the zoom, parent levels, web tiles, summary.

Layout of ``OUTDIR`` (the Permafrost Discovery Gateway's, so its users can switch)::

    geotiff/{tms}/{z}/{x}/{y}.tif           float32, one band per statistic, compressed, nodata tag
    web_tiles/{stat}/{tms}/{z}/{x}/{y}.png  RGBA, with --webtiles (and web_tiles/index.html)
    rasters_summary.csv                     tile, stat, min, max, mean, sum
    job_record.json                         the job, the staging report, tiles per zoom
    .tilewise/                              work directory: saved job, manifest, staged polygons

Phases run one after the other, each as a list of tasks any in-process executor runs
(the parents of level z only once level z+1 is complete, so the levels form a
dependency chain). Every file is written under a temporary name and renamed into
place; the manifest records what is done, so a re-run after a crash only does
the rest, and the summary and record are written last.
"""

from __future__ import annotations

import contextlib
import csv
import io as _io
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tilewise.errors import OutputError, UsageError
from tilewise.executors import Executor
from tilewise.grid import Grid
from tilewise.io import write_array
from tilewise.job import Job, RasterizeSpec
from tilewise.manifest import Manifest, write_json_atomic
from tilewise.ops.rasterize import PixelGrid, RasterStatSpec, check_stats, compute_stats, empty_value, merge_children, properties_of, resampling_of
from tilewise.rasterfile import open_read
from tilewise.runner import Event, ProgressFn, RunSummary, _Phase, _run_phase, raise_if_failed, saved_record, start_run
from tilewise.tms import Level, TileSet, get_tile_set, touched_tiles

GEOTIFF_DIR = "geotiff"
WEB_DIR = "web_tiles"
SUMMARY_CSV = "rasters_summary.csv"
RECORD = "job_record.json"
STAGED = "staged"


def folder_name(stat: str) -> str:
    """A statistic's name as a folder name in URLs (``Area:mean`` -> ``Area_mean``)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stat)


@dataclass(frozen=True)
class Encoding:
    """How tile GeoTIFFs are written."""

    nodata: float
    compress: str
    level: int | None
    predictor: int | None

    def profile(self) -> dict[str, Any]:
        p: dict[str, Any] = {"blockxsize": 256, "blockysize": 256}
        if self.compress != "none":
            p["compress"] = self.compress
            p["predictor"] = self.predictor or 3
            if self.level is not None:
                p[{"zstd": "zstd_level", "deflate": "zlevel"}.get(self.compress, "level")] = self.level
        return p


def write_stat_tile(path: str, data: np.ndarray, grid: Grid, names: Sequence[str], enc: Encoding) -> dict[str, Any]:
    """Write a (stats, h, w) float tile as float32 atomically; return size, checksum and per-band min/max/mean/sum."""
    out = data.astype(np.float32)
    nodata = np.float32(enc.nodata)
    valid = ~np.isnan(out) if np.isnan(nodata) else out != nodata
    if not np.isnan(nodata):
        out = np.where(np.isnan(out), nodata, out)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    size = write_array(path, out, grid, float(nodata), names, enc.profile())
    bands = []
    for b in range(out.shape[0]):
        v = out[b][valid[b]].astype(np.float64)
        bands.append([float(v.min()), float(v.max()), float(v.mean()), float(v.sum())] if v.size else None)
    return {"path": str(path), "size": size, "bands": bands}


def read_stat_tile(path: str, nodata: float) -> np.ndarray:
    """A tile's bands as float64 with nodata as NaN."""
    with open_read(path) as ds:
        a = ds.read().astype(np.float64)
    if not np.isnan(nodata):
        a[a == np.float32(nodata)] = np.nan
    return a


@dataclass(frozen=True)
class TileTask:
    """One TMS tile at the job's zoom: read its staged polygons, compute every stat, write the GeoTIFF."""

    key: str
    level: Level
    x: int
    y: int
    crs: str
    staged: str
    stats: tuple[RasterStatSpec, ...]
    path: str
    enc: Encoding

    @property
    def pixels(self) -> int:
        return self.level.tile_px**2

    def run(self) -> dict[str, Any]:
        import shapely

        from tilewise.sources.vector import Staged

        t0 = time.perf_counter()
        bounds = self.level.tile_bounds(self.x, self.y)
        geoms, cx, cy, props = Staged.open(self.staged).in_tile(self.y * self.level.cols + self.x)
        if len(geoms):
            # Features whose box meets the tile may still miss it (or only touch its edge); a polygon
            # whose centroid lies outside itself (a ring) still counts where its centroid is.
            box = shapely.box(*bounds)
            x0, y0, x1, y1 = bounds
            meet = (shapely.intersects(geoms, box) & ~shapely.touches(geoms, box)) | ((cx >= x0) & (cx <= x1) & (cy >= y0) & (cy <= y1))
            geoms, cx, cy, props = geoms[meet], cx[meet], cy[meet], props[:, meet]
        t1 = time.perf_counter()
        rec: dict[str, Any] = {"kind": "tile", "key": self.key, "features": len(geoms), "read_s": round(t1 - t0, 6)}
        if not len(geoms):
            return {**rec, "path": "", "compute_s": 0.0, "write_s": 0.0}
        lv = self.level
        data = compute_stats(self.stats, geoms, cx, cy, props, PixelGrid(lv.left, lv.top, lv.xres, lv.yres), lv.tile_window(self.x, self.y))
        t2 = time.perf_counter()
        written = write_stat_tile(self.path, data, lv.tile_grid(self.x, self.y, self.crs), [s.name for s in self.stats], self.enc)
        return {**rec, **written, "compute_s": round(t2 - t1, 6), "write_s": round(time.perf_counter() - t2, 6)}


@dataclass(frozen=True)
class ParentTask:
    """One parent tile: merge its (up to four) children 2 × 2 per stat."""

    key: str
    level: Level
    x: int
    y: int
    crs: str
    children: tuple[str | None, ...]  # top-left, top-right, bottom-left, bottom-right
    stats: tuple[RasterStatSpec, ...]
    path: str
    enc: Encoding

    @property
    def pixels(self) -> int:
        return 4 * self.level.tile_px**2

    def run(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        arrays = [read_stat_tile(p, self.enc.nodata) if p else None for p in self.children]
        t1 = time.perf_counter()
        px = self.level.tile_px
        data = np.stack([merge_children([a[b] if a is not None else None for a in arrays], resampling_of(s), empty_value(s), px)
                         for b, s in enumerate(self.stats)])  # fmt: skip
        t2 = time.perf_counter()
        written = write_stat_tile(self.path, data, self.level.tile_grid(self.x, self.y, self.crs), [s.name for s in self.stats], self.enc)
        return {"kind": "tile", "key": self.key, **written, "read_s": round(t1 - t0, 6), "compute_s": round(t2 - t1, 6),
                "write_s": round(time.perf_counter() - t2, 6)}  # fmt: skip


@dataclass(frozen=True)
class WebTask:
    """The PNG web tiles of one GeoTIFF tile, one per stat."""

    key: str
    source: str
    outputs: tuple[str, ...]
    ranges: tuple[tuple[float, float], ...]
    palettes: tuple[str, ...]
    zero_transparent: tuple[bool, ...]
    nodata: float
    tile_px: int

    @property
    def pixels(self) -> int:
        return len(self.outputs) * self.tile_px**2

    def run(self) -> dict[str, Any]:
        from tilewise.webtiles import parse_palette, render_png

        t0 = time.perf_counter()
        a = read_stat_tile(self.source, self.nodata)
        for b, out in enumerate(self.outputs):
            lo, hi = self.ranges[b]
            render_png(a[b], ~np.isnan(a[b]), lo, hi, parse_palette(self.palettes[b]), out, zero_transparent=self.zero_transparent[b])
        sizes = sum(os.path.getsize(o) for o in self.outputs)
        return {"kind": "web", "key": self.key, "paths": list(self.outputs), "size": sizes, "write_s": round(time.perf_counter() - t0, 6)}


@dataclass
class _State:
    """What the coordinator knows: records by key, failures, tiles per zoom."""

    records: dict[str, dict[str, Any]]
    failed: dict[str, str] = field(default_factory=dict)
    levels: dict[int, list[tuple[int, int]]] = field(default_factory=dict)


def _done(rec: dict[str, Any] | None) -> bool:
    if not rec:
        return False
    if rec.get("kind") == "tile":
        if not rec.get("path"):
            return True  # an empty tile: nothing to write
        try:
            return bool(os.path.getsize(rec["path"]) == rec["size"])
        except OSError:
            return False
    if rec.get("kind") == "web":
        return all(os.path.exists(p) for p in rec.get("paths", []))
    return False


def input_identities(paths: Sequence[str], exclude: str | Path | None = None) -> list[list[Any]]:
    """(path, size, mtime) of every vector file (and a Shapefile's sidecars): a changed input changes the fingerprint."""
    from tilewise.sources.vector import expand_inputs

    out: list[list[Any]] = []
    for p in expand_inputs(paths, exclude):
        for f in [Path(p), *(Path(p).with_suffix(s) for s in (".dbf", ".shx", ".prj") if p.lower().endswith(".shp"))]:
            if f.exists():
                st = f.stat()
                out.append([str(f), st.st_size, st.st_mtime_ns])
    return out


def fingerprint(job: Job) -> str:
    """A hash of what decides the outputs: the job (executor aside) and its inputs' identities."""
    import hashlib

    assert job.rasterize is not None
    payload = {"job": job.fingerprint_payload(), "inputs": input_identities(job.rasterize.vectors, exclude=job.output_root)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def validate_spec(spec: RasterizeSpec) -> TileSet:
    """Check the TMS, zoom and stats before any file is touched."""
    check_stats(spec.stats)
    ts = get_tile_set(spec.tms)
    if spec.zoom is None:
        raise UsageError("no --zoom given", f"add --zoom Z (0..{ts.maxzoom} for {ts.id}), or --like REF.tif to rasterize onto a raster's grid")
    ts.check_zoom(spec.zoom)
    if spec.parents:
        ts.check_zoom(spec.min_zoom, "--min-zoom")
        if spec.min_zoom > spec.zoom:
            raise UsageError(f"--min-zoom {spec.min_zoom} is above --zoom {spec.zoom}", "parents are built from --zoom down to --min-zoom (default 0)")
        ts.check_parents(spec.zoom, spec.min_zoom)
        for z in range(spec.min_zoom, spec.zoom):
            ts.check_zoom(z, "--min-zoom")
    if spec.webtiles:
        from tilewise.webtiles import parse_palette

        folders: dict[str, str] = {}
        for s in spec.stats:
            parse_palette(s.palette)
            other = folders.setdefault(folder_name(s.name), s.name)
            if other != s.name:
                raise UsageError(f"statistics {other!r} and {s.name!r} would share the web-tile folder {folder_name(s.name)!r}",
                                 "give one of them another name (job files: name = ...)")  # fmt: skip
    return ts


def check_vectors(spec: RasterizeSpec, exclude: str | None = None) -> None:
    """Open the inputs' layers and check them (CRS, geometry type, fields), so a bad input fails before any output exists."""
    from tilewise.sources.vector import check_inputs

    check_inputs(spec.vectors, layer=spec.layer, id_column=spec.id_column, properties=properties_of(spec.stats), exclude=exclude)


def run_rasterize(job: Job, *, overwrite: bool = False, progress: ProgressFn | None = None, executor: Executor | None = None) -> RunSummary:
    """Run a rasterize job onto TMS tiles, resuming from its work directory when possible.

    Raises
    ------
    UsageError
        Bad TMS, zoom, statistic or input. (Batch executors go through :func:`tilewise.launch.launch_job`.)
    OutputError
        ``OUTDIR`` holds another job's tiles, is not writable, or another run holds the lock.
    RunFailedError
        Some tiles failed after their retries.
    """
    t0 = time.perf_counter()
    emit = progress or (lambda e: None)
    spec = job.rasterize
    assert spec is not None
    ts = validate_spec(spec)
    check_vectors(spec, exclude=job.output_root)
    root = open_output(job, overwrite)
    fp = fingerprint(job)
    workdir = job.workdir
    own = executor is None
    executor, lock = start_run(job, executor)
    manifest = Manifest(workdir)
    try:
        state = _prepare(job, fp, root, workdir, manifest, overwrite)
        summary = _run(job, spec, ts, root, workdir, manifest, state, executor, emit)
    finally:
        manifest.close()
        lock.release()
        if own:
            executor.close()
    summary.wall_s = time.perf_counter() - t0
    summary.workdir = str(workdir)
    raise_if_failed(summary, job)
    return summary


def open_output(job: Job, overwrite: bool) -> Path:
    """Create the output folder; refuse one holding tiles no saved job owns (unless ``overwrite``)."""
    root = Path(job.output_root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output directory {str(root)!r} ({exc.strerror})", "choose a writable location") from None
    if not overwrite and not (job.workdir / "job.json").exists() and any((root / d).exists() for d in (GEOTIFF_DIR, WEB_DIR, SUMMARY_CSV)):
        raise OutputError(f"{str(root)!r} already holds tiles that no saved job owns", "pass --overwrite to replace them, or choose another -o folder")
    return root


def _prepare(job: Job, fp: str, root: Path, workdir: Path, manifest: Manifest, overwrite: bool) -> dict[str, dict[str, Any]]:
    job_file = workdir / "job.json"
    state: dict[str, dict[str, Any]] = {}
    if job_file.exists():
        saved = saved_record(workdir)
        same = saved.get("fingerprint") == fp
        finished = manifest.latest().get("done", {}).get("kind") == "done"
        if not same and not overwrite and not finished:
            raise OutputError(f"{job.output_root!r} has an unfinished run of a different job (fingerprint {saved.get('fingerprint')}, now {fp})",
                              "rerun the original command to resume it, or pass --overwrite to start over")  # fmt: skip
        if same and not overwrite:
            state = manifest.latest()
        else:
            if not overwrite:
                raise OutputError(f"{str(root)!r} holds the tiles of a different job", "pass --overwrite to replace them, or choose another -o folder")
            _clear(root, workdir)
    elif overwrite:
        _clear(root, workdir)
    write_json_atomic(job_file, {"fingerprint": fp, "job": job.model_dump(mode="json"), "outputs": [str(root)]})
    if state.get("done", {}).get("kind") != "done":
        for d in (root / GEOTIFF_DIR, root / WEB_DIR, root):  # temporaries of a killed run (our own hidden names only)
            for p in (d.rglob(".*.tmp") if d != root else d.glob(".*.tmp")):
                if p.is_file():
                    p.unlink(missing_ok=True)
    for p in workdir.glob(f".{STAGED}.*.staging"):  # a staging a kill interrupted
        shutil.rmtree(p, ignore_errors=True)
    return state


def _clear(root: Path, workdir: Path) -> None:
    # The completion marks first: a kill part-way never leaves a complete-looking layout of half-deleted tiles.
    for f in (root / SUMMARY_CSV, root / RECORD, workdir / "job.json"):
        f.unlink(missing_ok=True)
    for d in (workdir / "manifest", root / GEOTIFF_DIR, root / WEB_DIR, workdir / STAGED):
        shutil.rmtree(d, ignore_errors=True)


def _run(job: Job, spec: RasterizeSpec, ts: TileSet, root: Path, workdir: Path, manifest: Manifest, saved: dict[str, dict[str, Any]],
         executor: Executor, emit: ProgressFn) -> RunSummary:  # fmt: skip
    assert spec.zoom is not None
    st = _State({k: v for k, v in saved.items() if _done(v) or v.get("kind") == "stage"})
    summary = RunSummary(outputs=[str(root)], tiles_total=0, tiles_run=0, tiles_skipped=0, failed=st.failed, pixels=0, valid=0,
                         minimum=None, maximum=None, mean=None, wall_s=0.0)  # fmt: skip
    summary.executor, summary.workers = executor.name, executor.workers
    if saved.get("done", {}).get("kind") == "done" and (root / SUMMARY_CSV).exists():
        summary.already_complete = True
        summary.batch = {"report": saved.get("stage", {}).get("report", {})}
        emit(Event("done", 1, 1, "already complete"))
        return summary
    stage = _stage(spec, ts, workdir, manifest, st, emit, executor)
    summary.batch = {"report": stage["report"]}
    enc = Encoding(job.output.nodata if job.output.nodata is not None else float("nan"), job.output.compress, job.output.level, job.output.predictor)
    crs = ts.crs
    stats = spec.stats
    tiles = [tuple(t) for t in stage["tiles"]]
    zooms = list(range(spec.zoom, (spec.min_zoom if spec.parents else spec.zoom) - 1, -1))
    # Every tile of every level is known up front: parents are the children's parents.
    per_level: dict[int, list[tuple[int, int]]] = {spec.zoom: sorted(tiles, key=lambda t: (t[1], t[0]))}
    for z in zooms[1:]:
        per_level[z] = sorted({(x // 2, y // 2) for x, y in per_level[z + 1]}, key=lambda t: (t[1], t[0]))
    total = sum(len(v) for v in per_level.values()) * (2 if spec.webtiles else 1)
    phase = _Phase(sum(1 for k, v in st.records.items() if v.get("kind") in ("tile", "web")), total)
    summary.tiles_total, summary.tiles_skipped = total, phase.done
    manifest.write({"kind": "plan", "key": "plan", "total": total})
    emit(Event("start", phase.done, total, f"{total - phase.done} of {total} tiles to run on {executor.workers} worker(s) (executor {executor.name}); "
                                           f"{stage['report_line']}"))  # fmt: skip
    tif = root / GEOTIFF_DIR / ts.id
    complete = True
    for z in zooms:
        lv = ts.level(z, spec.tile_px)
        if z == spec.zoom:
            tasks: list[Any] = [TileTask(f"{z}/{x}/{y}", lv, x, y, crs, str(workdir / STAGED), stats, str(tif / str(z) / str(x) / f"{y}.tif"), enc)
                                for x, y in per_level[z]]  # fmt: skip
        else:
            tasks = []
            for x, y in per_level[z]:
                kids = []
                for cx, cy in ((2 * x, 2 * y), (2 * x + 1, 2 * y), (2 * x, 2 * y + 1), (2 * x + 1, 2 * y + 1)):
                    rec = st.records.get(f"{z + 1}/{cx}/{cy}")
                    kids.append(rec["path"] if rec and rec.get("path") else None)
                if any(kids):
                    tasks.append(ParentTask(f"{z}/{x}/{y}", lv, x, y, crs, tuple(kids), stats, str(tif / str(z) / str(x) / f"{y}.tif"), enc))
                else:
                    st.records[f"{z}/{x}/{y}"] = {"kind": "tile", "key": f"{z}/{x}/{y}", "path": ""}  # its children were all empty
                    phase.done += 1
        todo = [t for t in tasks if not _done(st.records.get(t.key))]
        complete = _run_phase(todo, "tile", executor, manifest, job.executor, phase, st.records, st.failed, emit)
        if not complete or st.failed:
            break  # parents need every child
    if complete and not st.failed and spec.webtiles:
        complete = _web(spec, ts, root, per_level, zooms, enc, executor, manifest, job, phase, st, emit)
    summary.tiles_run = phase.ran
    summary.stopped = not complete
    if complete and not st.failed:
        _finish(job, spec, ts, root, per_level, zooms, st, stage, manifest, summary)
    emit(Event("done", phase.done, total, "finished"))
    return summary


def _stage(spec: RasterizeSpec, ts: TileSet, workdir: Path, manifest: Manifest, st: _State, emit: ProgressFn,
           executor: Executor | None = None) -> dict[str, Any]:  # fmt: skip
    """Stage the polygons (once per job: recorded in the manifest; chunks on the executor) and list the tiles they touch at the zoom."""
    from tilewise.sources.vector import Staged, stage_vectors

    rec = st.records.get("stage")
    if rec is not None and (workdir / STAGED).exists():
        return rec
    assert spec.zoom is not None
    emit(Event("phase", 0, 0, f"staging {len(spec.vectors)} vector input(s) into {ts.id}"))
    report, bounds = stage_vectors(spec.vectors, workdir / STAGED, crs=ts.crs, id_column=spec.id_column, properties=properties_of(spec.stats),
                                   layer=spec.layer, map_fn=executor.map_unordered if executor is not None else None,
                                   exclude=str(workdir.parent))  # fmt: skip
    lv = ts.level(spec.zoom, spec.tile_px)
    feature, tx, ty = touched_tiles(lv, bounds)
    tile_ids = ty * lv.cols + tx
    Staged(workdir / STAGED).write_tile_index(tile_ids, feature)
    keys = np.unique(tile_ids)
    tiles = [(int(k % lv.cols), int(k // lv.cols)) for k in keys]
    rec = {"kind": "stage", "key": "stage", "report": report.as_dict(), "report_line": report.describe(), "tiles": tiles}
    manifest.write(rec)
    st.records["stage"] = rec
    return rec


def auto_range(records: list[dict[str, Any]], band: int) -> tuple[float, float]:
    """The value range of one stat over a level's tiles (from their records)."""
    vals = [r["bands"][band] for r in records if r.get("bands") and r["bands"][band] is not None]
    if not vals:
        return (0.0, 1.0)
    return (min(v[0] for v in vals), max(v[1] for v in vals))


def _web(spec: RasterizeSpec, ts: TileSet, root: Path, per_level: dict[int, list[tuple[int, int]]], zooms: list[int], enc: Encoding,
         executor: Executor, manifest: Manifest, job: Job, phase: _Phase, st: _State, emit: ProgressFn) -> bool:  # fmt: skip
    tasks = []
    for z in zooms:
        recs = [st.records[f"{z}/{x}/{y}"] for x, y in per_level[z] if st.records.get(f"{z}/{x}/{y}", {}).get("path")]
        ranges = tuple(_range_for(s, z, recs, b) for b, s in enumerate(spec.stats))
        for r in recs:
            _, x, y = r["key"].split("/")
            outs = tuple(str(root / WEB_DIR / folder_name(s.name) / ts.id / str(z) / x / f"{y}.png") for s in spec.stats)
            tasks.append(WebTask(f"web/{r['key']}", r["path"], outs, ranges, tuple(s.palette for s in spec.stats),
                                 tuple(s.zero_transparent for s in spec.stats), enc.nodata, spec.tile_px))  # fmt: skip
        phase.done += sum(1 for x, y in per_level[z] if not st.records.get(f"{z}/{x}/{y}", {}).get("path"))  # empty tiles draw nothing
    todo = [t for t in tasks if not _done(st.records.get(t.key))]
    return _run_phase(todo, "tile", executor, manifest, job.executor, phase, st.records, st.failed, emit)


def _range_for(s: RasterStatSpec, z: int, recs: list[dict[str, Any]], band: int) -> tuple[float, float]:
    if z in s.ranges:
        return (float(s.ranges[z][0]), float(s.ranges[z][1]))
    if s.range is not None:
        return (float(s.range[0]), float(s.range[1]))
    lo, hi = auto_range(recs, band)
    return (min(lo, 0.0) if s.kind != "property" else lo, hi)


def _finish(job: Job, spec: RasterizeSpec, ts: TileSet, root: Path, per_level: dict[int, list[tuple[int, int]]], zooms: list[int],
            st: _State, stage: dict[str, Any], manifest: Manifest, summary: RunSummary) -> None:  # fmt: skip
    rows = []
    counts: dict[int, int] = {}
    for z in zooms:
        counts[z] = 0
        for x, y in per_level[z]:
            r = st.records.get(f"{z}/{x}/{y}", {})
            if not r.get("path"):
                continue
            counts[z] += 1
            for b, s in enumerate(spec.stats):
                v = r["bands"][b]
                rows.append([f"{ts.id}/{z}/{x}/{y}", s.name, *(v if v is not None else ["", "", "", ""])])
    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["tile", "stat", "min", "max", "mean", "sum"])
    w.writerows(rows)
    tmp = root / f".{SUMMARY_CSV}.tmp"
    tmp.write_text(buf.getvalue(), encoding="utf-8")
    if spec.webtiles:
        _viewer(spec, ts, root, zooms, stage, st)
    write_json_atomic(root / RECORD, {"job": job.model_dump(mode="json"), "staging": stage["report"], "tms": ts.id,
                                      "tiles_per_zoom": {str(z): counts[z] for z in zooms},
                                      "geotiff": f"{GEOTIFF_DIR}/{ts.id}/{{z}}/{{x}}/{{y}}.tif"})  # fmt: skip
    os.replace(tmp, root / SUMMARY_CSV)  # last: its presence means the whole layout is complete
    manifest.write({"kind": "done", "key": "done"})
    zmax = zooms[0]
    top = [st.records[f"{zmax}/{x}/{y}"] for x, y in per_level[zmax] if st.records.get(f"{zmax}/{x}/{y}", {}).get("path")]
    summary.pixels = len(top) * spec.tile_px**2
    summary.per_output = {"tiles_per_zoom": {str(z): counts[z] for z in zooms}}
    summary.read_s = sum(r.get("read_s", 0.0) for r in top)
    summary.compute_s = sum(r.get("compute_s", 0.0) for r in top)
    summary.write_s = sum(r.get("write_s", 0.0) for r in top)


def _viewer(spec: RasterizeSpec, ts: TileSet, root: Path, zooms: list[int], stage: dict[str, Any], st: _State) -> None:
    from tilewise.webtiles import Layer, write_viewer

    zmin, zmax = min(zooms), max(zooms)
    layers = []
    for b, s in enumerate(spec.stats):
        recs = [r for k, r in st.records.items() if k.startswith(f"{zmax}/") and r.get("path") and r.get("bands")]
        lo, hi = _range_for(s, zmax, recs, b)
        layers.append(Layer(s.name, f"{folder_name(s.name)}/{ts.id}/{{z}}/{{x}}/{{y}}.png", zmin, zmax, f"{lo:.4g} – {hi:.4g} ({s.palette})"))
    lv = ts.level(zmax, spec.tile_px)
    xs = [t[0] for t in stage["tiles"]]
    ys = [t[1] for t in stage["tiles"]]
    left, _, _, top = lv.tile_bounds(min(xs), min(ys))
    _, bottom, right, _ = lv.tile_bounds(max(xs), max(ys))
    bounds = (left, bottom, right, top)
    if ts.id != "WorldCRS84Quad":
        from pyproj import Transformer

        tr = Transformer.from_crs(ts.crs, "EPSG:4326", always_xy=True)
        bounds = tr.transform_bounds(*bounds)
    # The viewer knows WorldCRS84Quad and WebMercatorQuad; the PNG tiles are written either way.
    with contextlib.suppress(UsageError):
        write_viewer(root / WEB_DIR, layers, ts.id, bounds)
