"""Python API for polygons to rasters: ``tilewise.rasterize``.

Two targets: the tiles of an OGC tile matrix set (``tms``, ``zoom``; the Permafrost
Discovery Gateway layout under an output folder, with parent levels and web tiles
on request), or the grid of an existing raster (``like``; one COG).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tilewise.api import _short_repr, _validated_common, build_job, option_error, staged
from tilewise.errors import InputError, UsageError
from tilewise.job import ItemSpec, Job, RasterizeSpec
from tilewise.ops.rasterize import RasterStatSpec, check_stats, parse_stat
from tilewise.runner import ProgressFn, RunSummary, run_job

DEFAULT_STATS = ("count", "coverage")


def stat_specs(stats: Sequence[str | Mapping[str, Any] | RasterStatSpec]) -> list[RasterStatSpec]:
    """Statistics from ``--stat`` strings (``count``, ``Area:mean``) or tables of :class:`RasterStatSpec` fields."""
    from pydantic import ValidationError

    out: list[RasterStatSpec] = []
    for s in stats:
        if isinstance(s, RasterStatSpec):
            out.append(s)
        elif isinstance(s, str):
            out.append(parse_stat(s))
        elif isinstance(s, Mapping):
            table = dict(s)
            if "kind" not in table and isinstance(table.get("name"), str):
                base = parse_stat(table["name"])  # name = "Area:mean" alone is enough
                table = {**base.model_dump(exclude_defaults=True), **table}
            if "ranges" in table and isinstance(table["ranges"], Mapping):
                table["ranges"] = {int(k): v for k, v in table["ranges"].items()}
            try:
                out.append(RasterStatSpec.model_validate(table))
            except (ValidationError, ValueError) as exc:
                if isinstance(exc, ValidationError):
                    raise option_error(exc) from None
                raise UsageError(f"statistic {_short_repr(s)}: {exc}", "see docs/rasterize.md for the fields of a statistic") from None
        else:
            raise UsageError(f"statistic {_short_repr(s)} is neither a name nor a table", 'write "count" or { name = "coverage", palette = "magma" }')
    check_stats(out)
    return out


def load_stats_config(path: str) -> list[RasterStatSpec]:
    """Read a statistics config (TOML or JSON): ``[[stat]]`` tables (or a JSON list) with name, kind, property, agg, resampling, palette, range(s)."""
    import json
    import tomllib

    p = Path(path)
    if not p.is_file():
        raise InputError(f"statistics config {path!r} does not exist", "give a .toml or .json file of [[stat]] tables")
    try:
        text = p.read_text(encoding="utf-8")
        data: Any = tomllib.loads(text) if p.suffix == ".toml" else json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot parse statistics config {path!r}: {str(exc).splitlines()[0]}", "fix its TOML/JSON syntax (docs/rasterize.md)") from None
    if isinstance(data, Mapping):
        data = data.get("stat", data.get("stats"))
    if not isinstance(data, list) or not data:
        raise UsageError(f"statistics config {path!r} lists no statistics", "write [[stat]] tables (TOML) or a list of objects (JSON)")
    return stat_specs(data)


def _per_stat(value: Any, what: str) -> dict[str | None, Any]:
    """``palette="magma"`` (every stat) or ``{"coverage": "magma"}``; CLI ``STAT=VALUE`` strings too."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    items = [value] if isinstance(value, str) else list(value)
    out: dict[str | None, Any] = {}
    for item in items:
        if isinstance(item, str) and "=" in item:
            k, _, v = item.partition("=")
            out[k.strip()] = v.strip()
        else:
            out[None] = item
    return out


def _parse_range(value: Any, stat: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in (value.split(",") if isinstance(value, str) else value))
    except (TypeError, ValueError):
        raise UsageError(f"value range {_short_repr(value)} for {stat!r} is not MIN,MAX", "e.g. --range coverage=0,1") from None
    return (lo, hi)


def rasterize_job(vectors: str | Sequence[str], output: str, *, stats: Sequence[str | Mapping[str, Any] | RasterStatSpec] = DEFAULT_STATS,
                  tms: str = "WorldCRS84Quad", zoom: int | None = None, tile_px: int = 256, like: str | None = None, id_column: str | None = None,
                  layer: str | None = None, parents: bool = False, min_zoom: int = 0, webtiles: bool = False, palette: Any = None,
                  value_range: Any = None, resampling: Any = None, zero_transparent: bool | None = None, stats_config: str | None = None,
                  **options: Any) -> Job:  # fmt: skip
    """Build a rasterize job; see :func:`rasterize` for the parameters."""
    srcs = [vectors] if isinstance(vectors, str) else list(vectors)
    if not srcs:
        raise UsageError("no vector inputs given", "name one or more files or folders, e.g. tilewise rasterize polygons.gpkg -o tiles/")
    if not output:
        raise UsageError("no output given", "add -o OUTDIR (TMS tiles) or -o OUT.tif with --like REF.tif")
    specs = load_stats_config(stats_config) if stats_config else stat_specs(stats)
    names = {s.name for s in specs}
    overrides: dict[str, dict[str, Any]] = {s.name: {} for s in specs}
    for key, given in (("palette", palette), ("range", value_range), ("resampling", resampling)):
        for stat, v in _per_stat(given, key).items():
            if stat is not None and stat not in names:
                raise UsageError(f"--{key} names statistic {stat!r}, which is not asked for", f"statistics: {', '.join(sorted(names))}")
            for n in [stat] if stat is not None else names:
                overrides[n][key] = _parse_range(v, n) if key == "range" else v
    if zero_transparent is not None:
        for n in names:
            overrides[n]["zero_transparent"] = zero_transparent
    specs = [s.model_copy(update=overrides[s.name]) for s in specs]
    check_stats(specs)
    if like is None and Path(output).suffix.lower() in (".tif", ".tiff"):
        raise UsageError(f"-o {output!r} is a GeoTIFF, but TMS tiles go into a folder",
                         "give -o OUTDIR, or add --like REF.tif to rasterize onto that raster's grid")  # fmt: skip
    if like is not None and (parents or webtiles):
        raise UsageError("--parents and --webtiles build TMS levels, and --like writes one raster", "leave them out with --like, or use --tms/--zoom")
    if like is None:
        options.setdefault("compress", "deflate")  # tile GeoTIFFs read by every web-map tool
    common = _validated_common(options)
    output = staged(output, common)
    from pydantic import ValidationError

    try:
        spec = RasterizeSpec(vectors=tuple(srcs), stats=tuple(specs), layer=layer, tms=tms, zoom=zoom, tile_px=tile_px, like=like, id_column=id_column,
                             parents=parents, min_zoom=min_zoom, webtiles=webtiles)  # fmt: skip
    except ValidationError as exc:
        raise option_error(exc) from None
    if like is None:
        from tilewise.rasterize_run import validate_spec

        if "upload" in common:
            raise UsageError(f"-o {common['upload']!r}: a folder of TMS tiles is written to local disk only",
                             "write it to a local folder and copy it to the store (e.g. aws s3 sync), or use --like REF.tif for one raster")  # fmt: skip

        validate_spec(spec)
        return build_job(command="rasterize", band_name="rasterize", rasterize=spec, items=(), output_root=output, batch=True, **common)
    item = ItemSpec(inputs=(), output=output)
    return build_job(command="rasterize", band_name="rasterize", rasterize=spec, items=(item,), output_root=output, **common)


def rasterize(vectors: str | Sequence[str], output: str, *, overwrite: bool = False, progress: ProgressFn | None = None, **options: Any) -> RunSummary:
    """Rasterize polygons: per-pixel count, coverage and attribute statistics on TMS tiles or on a raster's grid.

    Parameters
    ----------
    vectors
        OGR layers (GeoPackage, Shapefile, GeoJSON, FlatGeobuf; GeoParquet via
        geopandas) or folders of them: one big file or many staged tiles. The same
        polygon in several inputs counts once (``id_column``, default
        ``staging_identifier`` when every input has it, else identical geometry).
    output
        A folder for TMS tiles (``geotiff/{tms}/{z}/{x}/{y}.tif`` ...), or a GeoTIFF with ``like``.
    stats
        In band order: ``count`` (polygons whose centroid is in the pixel),
        ``count-intersects``, ``coverage`` (Σ area(polygon ∩ pixel) / area(pixel)),
        ``coverage-union`` (≤ 1) or ``PROPERTY:AGG`` (AGG: sum, mean, min, max, count,
        median over the polygons whose centroid is in the pixel); or tables of
        :class:`~tilewise.ops.rasterize.RasterStatSpec` fields.
    tms, zoom, tile_px
        The tile matrix set (morecantile id), the zoom level and pixels per tile edge.
    like
        Rasterize onto this raster's grid instead (one COG at ``output``).
    id_column, layer
        The field identifying copies, and the layer of multi-layer inputs.
    parents, min_zoom
        Also build every level from ``zoom - 1`` down to ``min_zoom`` from the children.
    webtiles
        Also render RGBA PNG web tiles per stat and level, and ``web_tiles/index.html``.
    palette, value_range, resampling
        One value for every stat, or a mapping stat name → value (CLI: ``STAT=VALUE``):
        a matplotlib colormap name or colour list; ``(min, max)`` fixed for every zoom;
        sum, mean, nanmean, min or max for parents.
    zero_transparent
        Draw zero pixels transparent in web tiles (default true).
    stats_config
        A TOML/JSON file of statistics, instead of ``stats`` and the per-stat options.
    overwrite, progress
        As for :func:`tilewise.ndvi`.
    **options
        Shared job options: nodata, compress, level, predictor, tile_size (``like`` only), executor, workers, retries ...

    Returns
    -------
    RunSummary
        ``batch["report"]`` holds the staging report (features read, kept, duplicates, repaired, skipped).
    """
    job = rasterize_job(vectors, output, **options)
    summary = run_job(job, overwrite=overwrite, progress=progress)
    if not job.tile_set:
        summary.batch.setdefault("report", like_report(job))
    return summary


def like_report(job: Job) -> dict[str, Any]:
    """The staging report of a ``--like`` job (kept beside its staged polygons)."""
    import json

    from tilewise.job_rasterize import STAGED_STAMP

    try:
        return dict(json.loads((job.workdir / STAGED_STAMP).read_text(encoding="utf-8")).get("report", {}))
    except (OSError, ValueError):
        return {}
