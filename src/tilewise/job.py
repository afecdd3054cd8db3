"""The validated request (:class:`Job`) and its resolution into a :class:`Plan`.

A Job is what the user asked for, whether from CLI flags or a job file; it is
saved in the work directory with a fingerprint. A Plan is the Job resolved
against the files: bands checked, grids compared, tiles cut, outputs named.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, ValidationError, field_validator, model_serializer

from tilewise.errors import ExpressionError, UsageError
from tilewise.executors.options import ExecutorOptions
from tilewise.grid import Grid
from tilewise.ops.base import Operation
from tilewise.ops.pixel import ExpressionOp
from tilewise.ops.rasterize import RasterStatSpec
from tilewise.sources.raster import BandRef, align_bands, resolve_band
from tilewise.sources.safe import is_safe, read_safe
from tilewise.tiling import Tiling, choose_tile_shape, strip_cuts

DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")
COMPRESSIONS = ("zstd", "deflate", "lzw", "lerc", "none")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StacSpec(_Model):
    """A STAC search whose items are a stack's members (see :mod:`tilewise.sources.stac`)."""

    source: str  # a STAC API root, or a static catalog / collection / item collection JSON
    asset: str
    collections: tuple[str, ...] = ()
    datetime: str | None = None
    bbox: tuple[float, float, float, float] | None = None  # longitude/latitude
    query: tuple[str, ...] = ()


class _Sparse(_Model):
    """A model whose fields named in ``_sparse`` are left out of its JSON when None.

    Fields added after jobs were first saved: a job that does not use them serializes (and
    fingerprints) as it did before they existed.
    """

    _sparse: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _drop_unset(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for key in self._sparse:
                if key in data and data[key] is None:
                    del data[key]
        return data


class InputSpec(_Sparse):
    """One named input band: a path (raster or .SAFE folder) and which band of it.

    With ``stac`` the input is the mosaic of the asset ``stac.asset`` of the STAC items
    selected (``path`` then holds the STAC source, ``band`` the asset).
    """

    _sparse: ClassVar[tuple[str, ...]] = ("stac",)

    name: str
    path: str
    band: int | str | None = None
    scale: float | None = None
    offset: float | None = None
    stac: StacSpec | None = None


class ItemSpec(_Sparse):
    """One output and the inputs it is computed from.

    ``crs`` and ``resolution`` (x, y) fix the output grid of STAC mosaic inputs (see
    :mod:`tilewise.sources.stac_mosaic`); None: the items' own CRS and finest resolution.
    """

    _sparse: ClassVar[tuple[str, ...]] = ("crs", "resolution")

    inputs: tuple[InputSpec, ...]
    output: str
    crs: str | None = None
    resolution: tuple[float, float] | None = None


class OutputOptions(_Model):
    """How outputs are encoded."""

    dtype: str = "float32"
    nodata: float | None = None
    compress: str = "zstd"
    level: int | None = None
    predictor: int | None = None
    creation_options: dict[str, str] = Field(default_factory=dict)
    overviews: bool = True

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        if v not in DTYPES:
            raise ValueError(f"unknown dtype {v!r}; use one of {', '.join(DTYPES)}")
        return v

    @field_validator("compress")
    @classmethod
    def _compress(cls, v: str) -> str:
        v = v.lower()
        if v not in COMPRESSIONS:
            raise ValueError(f"unknown compression {v!r}; use one of {', '.join(COMPRESSIONS)}")
        return v


class FocalSpec(_Model):
    """A focal-statistics op: statistic, window (``size`` K or ``radius`` R), edges, nodata rules, bands."""

    stat: str
    size: int | None = None
    radius: int | None = None
    edge: str = "nodata"
    min_valid: float = 0.0
    subtract: bool = False
    bands: tuple[int, ...] | None = None
    mosaic: bool = False


class StackSpec(_Sparse):
    """A dated stack: where its members are, how their dates are found, and which dates are used.

    With ``stac`` the members are the items of a STAC search (``sources`` then holds the STAC source).
    With ``crs`` and/or ``resolution`` (x, y) the members are resampled (``resampling``, default
    nearest) onto a grid in that CRS at that resolution covering them all, its corners on
    multiples of the resolution (``gdalwarp -tap``).
    """

    _sparse: ClassVar[tuple[str, ...]] = ("crs", "resolution", "resampling")

    sources: tuple[str, ...]
    stac: StacSpec | None = None
    date_pattern: str | None = None
    dates: str | None = None  # sidecar file of dates, or "metadata", for the bands of one file
    variable: str | None = None  # netCDF variable with a time axis
    duplicates: str = "error"
    start: str | None = None
    end: str | None = None
    months: tuple[int, ...] | None = None
    every: int | None = None
    bbox: tuple[float, float, float, float] | None = None
    bbox_crs: str | None = None
    crs: str | None = None
    resolution: tuple[float, float] | None = None
    resampling: str | None = None


class ReduceSpec(_Model):
    """A per-pixel reduction over time: statistic, grouping, expression applied to each date first."""

    stat: str
    groupby: str = "all"
    expr: str = ""
    stack: StackSpec


class RasterizeSpec(_Model):
    """Vector polygons to raster statistics: on TMS tiles (``tms``, ``zoom``) or on the grid of a ``like`` raster."""

    vectors: tuple[str, ...]
    stats: tuple[RasterStatSpec, ...]
    layer: str | None = None
    tms: str = "WorldCRS84Quad"
    zoom: int | None = None
    tile_px: int = Field(256, ge=16, le=4096)
    like: str | None = None
    id_column: str | None = None
    parents: bool = False
    min_zoom: int = 0
    webtiles: bool = False


class Job(_Model):
    """A validated request: op, items (inputs → output), output options, tiling, executor."""

    version: Literal[1] = 1
    command: str
    expression: str = ""
    band_name: str = ""
    focal: FocalSpec | None = None
    reduce: ReduceSpec | None = None
    rasterize: RasterizeSpec | None = None
    items: tuple[ItemSpec, ...]
    output: OutputOptions = OutputOptions()
    tile_size: int | None = None
    align: str | None = None
    executor: ExecutorOptions = ExecutorOptions()
    output_root: str
    batch: bool = False
    keep_tiles: bool = False
    # Endpoint of an S3-compatible store for s3:// inputs (--s3-endpoint); saved with the job so that
    # every process planning or running it reads from the same store. Not in the fingerprint: where
    # the bytes are fetched from does not decide the output, each input's identity (size, ETag) does.
    s3_endpoint: str | None = None
    # The s3:// URL the outputs go to (-o s3://...): output_root and the items' outputs are then
    # their local staging paths (remote_output.staged_output), uploaded once assembled.
    upload: str | None = None
    # Folder keeping remote inputs' blocks for re-runs (--cache); not in the fingerprint: it changes
    # where bytes come from, not which (a changed input has another identity, so another cache key).
    cache: str | None = None

    @field_validator("s3_endpoint")
    @classmethod
    def _s3_endpoint(cls, v: str | None) -> str | None:
        from tilewise.remote import check_s3_endpoint

        return check_s3_endpoint(v) if v else None

    @property
    def tile_set(self) -> bool:
        """A rasterize job onto TMS tiles: a folder of tile files, run by its own coordinator (``rasterize_run``)."""
        return self.rasterize is not None and self.rasterize.like is None

    def fingerprint_payload(self) -> dict[str, Any]:
        """The parts of the job that decide output bytes."""
        payload = self.model_dump(mode="json", exclude={"executor", "keep_tiles", "s3_endpoint", "cache"})
        stack = (payload.get("reduce") or {}).get("stack") or {}
        if stack.get("stac", 0) is None:
            del stack["stac"]  # jobs without STAC keep the fingerprints they had before the field existed
        if payload.get("upload", 0) is None:
            del payload["upload"]  # likewise for jobs with local outputs
        return payload

    @property
    def workdir(self) -> Path:
        """The work directory: ``OUTDIR/.tilewise`` for batches, ``.OUT.tif.tilewise`` beside a single output."""
        root = Path(self.output_root)
        return root / ".tilewise" if self.batch else root.parent / f".{root.name}.tilewise"

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str) -> Job:
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise UsageError(f"invalid job description: {_first_error(exc)}", "check the job file against docs/jobs.md") from None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    value = err.get("input")
    if err.get("type") != "missing" and not isinstance(value, dict) and len(repr(value)) <= 60:
        where = f"{where} {value!r}" if where else repr(value)
    return f"{where}: {err.get('msg', '')}" if where else str(err.get("msg", ""))


def build_job(**kwargs: Any) -> Job:
    """Build a :class:`Job`, turning validation errors into one-line :class:`UsageError` s."""
    try:
        return Job(**kwargs)
    except ValidationError as exc:
        raise UsageError(f"invalid job: {_first_error(exc)}", "check the options and their types against docs/cli.md and docs/jobs.md") from None


# ---------------------------------------------------------------- planning


@dataclass(frozen=True)
class ItemPlan:
    """One output resolved: its bands, grid and tiles."""

    index: int
    output: Path
    refs: dict[str, BandRef]
    grid: Grid
    tiling: Tiling


@dataclass(frozen=True)
class Plan:
    """A Job resolved against the files."""

    job: Job
    op: Operation
    items: tuple[ItemPlan, ...]
    work_dtype: str
    nodata: float
    fingerprint: str

    @property
    def n_tiles(self) -> int:
        return sum(len(it.tiling) for it in self.items)


def tiling_notes(plan: Plan) -> list[str]:
    """Advice on the tiling to show before a run: an explicit ``--tile-size`` that cuts inputs' strips.

    A file stored in full-width strips (GDAL's default for a GeoTIFF that is not tiled)
    is decoded a whole strip at a time, so square tiles narrower than the file decode each
    strip once per tile across it: for a time stack, whose tiles read every date, that
    many times the decoding. The default tiling avoids it (bands of whole strips); an
    explicit size is honoured exactly, so this says what it costs (as xarray warns about
    chunks that split the stored ones).
    """
    if plan.job.tile_size is None:
        return []
    worst, first, count = 1, "", 0
    seen: set[str] = set()
    for item in plan.items:
        for ref in item.refs.values():
            if ref.warp_to is not None or ref.path in seen:
                continue
            seen.add(ref.path)
            cuts = strip_cuts(ref.grid.width, ref.block_shape, item.tiling)
            if cuts > 1:
                count += 1
                if cuts > worst:
                    worst, first = cuts, ref.path
    if worst == 1:
        return []
    others = f" (and {count - 1} other input file(s))" if count > 1 else ""
    return [f"{first}{others} is stored in full-width strips: --tile-size {plan.job.tile_size} cuts each strip into {worst} tiles "
            f"across, so each strip is decoded up to {worst} times; leave --tile-size out (tiles then span whole strips) or rewrite "
            "the input tiled (gdal_translate -co TILED=YES)"]  # fmt: skip


def resolve_input(spec: InputSpec) -> BandRef:
    """Resolve one input spec: a Sentinel-2 SAFE band or a band of any GDAL raster."""
    if is_safe(spec.path):
        product = read_safe(spec.path)
        band = spec.band if isinstance(spec.band, str) else None
        if band is None:
            raise UsageError(f"input {spec.name} is a SAFE folder ({spec.path!r}), not one band of it",
                             "use tilewise normdiff SAFE --a B08 --b B04 for SAFE bands, or give calc the band's .jp2 under GRANULE/*/IMG_DATA")  # fmt: skip
        sb = product.band(band.upper())
        ref = resolve_band(sb.path, 1, spec.name)
        from dataclasses import replace

        ref = replace(ref, scale=sb.scale, offset=sb.offset, nodata=sb.nodata, use_mask=False,
                      label=f"{spec.name} ({product.name} {sb.name})")  # fmt: skip
    else:
        ref = resolve_band(spec.path, spec.band, spec.name)
    return ref.with_scaling(spec.scale, spec.offset)


def default_nodata(dtype: str, refs: dict[str, BandRef]) -> float:
    """The output nodata when the user gives none.

    Float outputs use NaN. Integer outputs keep the inputs' common nodata when it
    fits the type, else the type's maximum (GDAL/gdal_calc convention).
    """
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return float("nan")
    vals = {r.nodata for r in refs.values() if r.nodata is not None}
    info = np.iinfo(dt)
    if len(vals) == 1:
        v = vals.pop()
        if float(v).is_integer() and info.min <= v <= info.max:
            return float(v)
    return float(info.max)


def plan_job(job: Job) -> Plan:
    """Resolve every input of ``job``, check grids and names, cut tiles."""
    from tilewise.remote import use_s3_endpoint

    use_s3_endpoint(job.s3_endpoint)  # this process reads the job's S3 inputs from its store
    if job.focal is not None:
        from tilewise.job_focal import plan_focal

        return plan_focal(job, job.focal)
    if job.reduce is not None:
        from tilewise.job_reduce import plan_reduce

        return plan_reduce(job, job.reduce)
    if job.rasterize is not None:
        if job.rasterize.like is None:
            raise UsageError("a rasterize job onto TMS tiles has no single-raster plan", "run it with tilewise.rasterize_run.run_rasterize")
        from tilewise.job_rasterize import plan_rasterize_like

        return plan_rasterize_like(job, job.rasterize)
    op = ExpressionOp(job.expression, name=job.command, band_name=job.band_name)
    work_dtype = "float64" if job.output.dtype == "float64" else "float32"
    items: list[ItemPlan] = []
    identities: list[Any] = []
    nodata: float | None = job.output.nodata
    for i, item in enumerate(job.items):
        names = [s.name for s in item.inputs]
        op.parsed.check_names(names)
        if any(s.stac is not None for s in item.inputs):  # STAC assets: one mosaic VRT each, on one grid (sources/stac_mosaic.py)
            from tilewise.sources.stac_mosaic import resolve_mosaics

            used = [s for s in item.inputs if s.name in op.parsed.names and s.stac is not None]
            mosaics = resolve_mosaics([(s.name, s.stac) for s in used], item.crs, item.resolution, job.align, job.workdir / "stac" / str(i)) if used else {}
            refs = {s.name: mosaics[s.name].with_scaling(s.scale, s.offset) for s in used}
        else:
            refs = {s.name: resolve_input(s) for s in item.inputs if s.name in op.parsed.names}
        if not refs:
            raise ExpressionError(f"expression {job.expression!r} reads none of the inputs ({', '.join(names)})",
                                  f"use the input names in the expression, e.g. {names[0]} * 2")  # fmt: skip
        refs = align_bands(refs, job.align)
        grid = next(iter(refs.values())).out_grid
        th, tw = choose_tile_shape(grid, job.tile_size, [r.block_shape for r in refs.values() if r.warp_to is None])
        tiling = Tiling.for_grid(grid, th, tw, halo=op.halo)
        items.append(ItemPlan(i, Path(item.output), refs, grid, tiling))
        identities.append({n: [r.path, r.band, list(r.identity)] for n, r in refs.items()})
        if nodata is None and i == 0:
            nodata = default_nodata(job.output.dtype, refs)
    assert nodata is not None
    check_nodata_fits(nodata, job.output.dtype)
    return Plan(job, op, tuple(items), work_dtype, nodata, fingerprint(job, identities, items))


def fingerprint(job: Job, identities: list[Any], items: list[ItemPlan]) -> str:
    """A hash of what decides the output bytes: the job, its inputs' identities and the tile shapes."""
    payload = {"job": job.fingerprint_payload(), "inputs": identities, "tile_shapes": [[it.tiling.tile_height, it.tiling.tile_width] for it in items]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def check_nodata_fits(nodata: float, dtype: str) -> None:
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        if np.isnan(nodata) or not float(nodata).is_integer() or not info.min <= nodata <= info.max:
            raise UsageError(
                f"--nodata {nodata} does not fit the output type {dtype} ({info.min}..{info.max})", "choose a nodata value in range or another --dtype"
            )
