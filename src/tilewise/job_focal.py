"""Planning focal-statistics jobs: checking the window, resolving bands, placing map sheets.

A focal job has one input raster per output (or, with ``mosaic``, map sheets
read together as one surface, one output per sheet with the sheet's extent).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from tilewise.errors import UsageError
from tilewise.job import FocalSpec, ItemPlan, Job, Plan, check_nodata_fits, default_nodata, fingerprint
from tilewise.kernels.windows import STATS, Footprint
from tilewise.ops.focal import EDGES, FocalOp
from tilewise.rasterfile import open_read
from tilewise.sources.mosaic import Mosaic, read_sheets, write_vrt
from tilewise.sources.raster import BandRef, resolve_band
from tilewise.tiling import Tiling, choose_tile_shape


def validate_focal(spec: FocalSpec) -> Footprint:
    """Check a focal spec and return its window; every problem is a one-line :class:`UsageError`."""
    if spec.stat not in STATS:
        raise UsageError(f"unknown statistic {spec.stat!r}", f"use one of {', '.join(STATS)}")
    if spec.edge not in EDGES:
        raise UsageError(f"unknown edge mode {spec.edge!r}", f"use one of {', '.join(EDGES)}")
    if (spec.size is None) == (spec.radius is None):
        raise UsageError("give the window as --size K (square) or --radius R (circle), exactly one of them", "e.g. --size 5 or --radius 3")
    if spec.size is not None:
        if spec.size <= 0:
            raise UsageError(f"--size {spec.size} is not positive", "use an odd window size such as 3, 5 or 51")
        if spec.size % 2 == 0:
            raise UsageError(f"--size {spec.size} is even; a window needs a centre pixel", f"use an odd size such as {spec.size - 1} or {spec.size + 1}")
        fp = Footprint.square(spec.size)
    else:
        assert spec.radius is not None
        if spec.radius <= 0:
            raise UsageError(f"--radius {spec.radius} is not positive", "use a radius of 1 pixel or more")
        fp = Footprint.circle(spec.radius)
    if not 0.0 <= spec.min_valid <= 1.0:
        raise UsageError(f"--min-valid {spec.min_valid} is not a fraction", "use a value from 0 to 1, e.g. 0.5")
    if spec.bands is not None and any(b < 1 for b in spec.bands):
        raise UsageError(f"--band {min(spec.bands)} is not a 1-based band index", "bands are numbered from 1")
    return fp


def _label(spec: FocalSpec, fp: Footprint, desc: str) -> str:
    what = f"{spec.stat} {fp.describe()}"
    return f"{desc} - {what}" if spec.subtract else f"{what} of {desc}"


def _band_refs(path: str, spec: FocalSpec, fp: Footprint) -> tuple[dict[str, BandRef], tuple[str, ...]]:
    with open_read(path) as ds:
        count, descs = ds.count, ds.descriptions
    bands = spec.bands or tuple(range(1, count + 1))
    refs: dict[str, BandRef] = {}
    labels = []
    for b in bands:
        ref = resolve_band(path, b, f"band {b}")
        refs[f"b{b}"] = ref
        labels.append(_label(spec, fp, descs[b - 1] or f"band {b}"))
    return refs, tuple(labels)


def _check_fits(fp: Footprint, height: int, width: int, what: str) -> None:
    if fp.size > min(height, width):
        raise UsageError(f"window {fp.describe()} ({fp.size} px across) is larger than {what} ({width}x{height} px)",
                         "use a smaller --size/--radius, or --mosaic the neighbouring sheets")  # fmt: skip


def plan_focal(job: Job, spec: FocalSpec) -> Plan:
    """Resolve a focal job: one output per input raster, or per sheet of a mosaic."""
    fp = validate_focal(spec)
    paths = [item.inputs[0].path for item in job.items]
    mosaic: Mosaic | None = read_sheets(paths) if spec.mosaic else None
    if mosaic is not None:
        _check_fits(fp, mosaic.grid.height, mosaic.grid.width, "the mosaic")
        vrt = write_vrt(mosaic, job.workdir / "sheets.vrt")
    items: list[ItemPlan] = []
    identities: list[Any] = []
    labels: tuple[str, ...] = ()
    op: FocalOp | None = None
    for i, item in enumerate(job.items):
        path = item.inputs[0].path
        refs, item_labels = _band_refs(path, spec, fp)
        if op is None:
            labels = item_labels
            # Counts stay float64: compared with --min-valid's cell count, they must be whole even past 2**24 cells.
            values_dtype = "float32" if job.output.dtype == "float32" and not spec.subtract and spec.stat != "count" else "float64"
            op = FocalOp(spec.stat, fp, spec.edge, spec.min_valid, spec.subtract, tuple(refs), labels, values_dtype=values_dtype)
        elif tuple(refs) != op.band_inputs:
            raise UsageError(f"{path!r} has other bands than {paths[0]!r}", "filter files with the same bands together, or pick bands with --band")
        grid = next(iter(refs.values())).grid
        blocks = [r.block_shape for r in refs.values()]
        if mosaic is not None:
            # Read through the mosaic's VRT at the sheet's place in it; the sheet's own
            # identity still decides whether a resume may reuse tiles.
            at = mosaic.sheets[i].offset
            refs = {n: replace(resolve_band(vrt, r.band, r.label), origin=at, identity=r.identity, block_shape=r.block_shape) for n, r in refs.items()}
        else:
            _check_fits(fp, grid.height, grid.width, f"{path!r}")
        # Default 1024-pixel tiles even for large windows: measured, 2048 tiles halve the kernel's
        # speed (its buffers leave the cache), more than the smaller halo share saves.
        th, tw = choose_tile_shape(grid, job.tile_size, blocks)
        items.append(ItemPlan(i, Path(item.output), refs, grid, Tiling.for_grid(grid, th, tw, halo=fp.radius)))
        identities.append({n: [path, r.band, list(r.identity)] for n, r in refs.items()})
    assert op is not None
    nodata = job.output.nodata if job.output.nodata is not None else default_nodata(job.output.dtype, items[0].refs)
    check_nodata_fits(nodata, job.output.dtype)
    work_dtype = "float64" if job.output.dtype == "float64" else "float32"
    return Plan(job, op, tuple(items), work_dtype, nodata, fingerprint(job, identities, items))
