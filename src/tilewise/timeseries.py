"""Python API for dated stacks: ``tilewise.reduce`` (per-pixel over time) and ``tilewise.stats`` (per date).

Both take the stack the same way: ``sources`` (folders, globs or files) with a
``date_pattern``, or one multi-band file with ``dates`` (a sidecar file or
``"metadata"``), or a netCDF ``variable``; then a selection (``start``, ``end``,
``months``, ``every``, ``bbox`` in the stack's CRS or ``bbox_crs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tilewise.api import _cache_dir, _finish, _s3_endpoint, _short_repr, _validated_common, build_job, executor_options, option_error, staged
from tilewise.errors import UsageError
from tilewise.job import InputSpec, ItemSpec, Job, ReduceSpec, StackSpec, StacSpec
from tilewise.runner import ProgressFn, run_job

DUPLICATES = ("error", "first", "last", "mean")
STACK_OPTIONS = ("date_pattern", "dates", "variable", "duplicates", "start", "end", "months", "every", "bbox", "bbox_crs",
                 "stac", "collection", "datetime", "stac_bbox", "query", "asset", "crs", "resolution", "resampling")  # fmt: skip


def stack_spec(sources: str | Sequence[str], *, date_pattern: str | None = None, dates: str | None = None, variable: str | None = None,
               duplicates: str = "error", start: str | None = None, end: str | None = None, months: Sequence[int] | str | None = None,
               every: int | None = None, bbox: Sequence[float] | str | None = None, bbox_crs: str | None = None,
               stac: str | None = None, collection: str | Sequence[str] | None = None, datetime: str | None = None,
               stac_bbox: Sequence[float] | str | None = None, query: str | Sequence[str] | None = None, asset: str | None = None,
               crs: str | None = None, resolution: float | str | Sequence[float] | None = None, resampling: str | None = None) -> StackSpec:  # fmt: skip
    """Check and build the stack description shared by ``reduce`` and ``stats``.

    With ``stac`` (a STAC API URL or a catalog / item collection file) the members are the items
    that ``collection``, ``datetime``, ``stac_bbox`` (lon/lat) and ``query`` select, read from their
    ``asset``; ``sources`` must then be empty (see :mod:`tilewise.sources.stac`).
    With ``crs`` and/or ``resolution`` the members are resampled (``resampling``, default nearest)
    onto a grid in that CRS at that pixel size covering them all (see :mod:`tilewise.sources.regrid`).
    """
    from pydantic import ValidationError

    srcs = [sources] if isinstance(sources, str) else list(sources or [])
    stac_spec = _stac_spec(srcs, date_pattern, dates, variable, stac, collection, datetime, stac_bbox, query, asset)
    if stac_spec is not None:
        srcs = [stac_spec.source]
    if not srcs:
        raise UsageError("no stack given", "name a folder, a glob or files, e.g. 'chirps/*.tif' --date-pattern 'chirps_pr_%Y%m%d.tif', "
                         "or STAC items with --stac URL_OR_FILE --asset NAME")  # fmt: skip
    if duplicates not in DUPLICATES:
        raise UsageError(f"--duplicates {duplicates!r} is not a policy", f"use one of {', '.join(DUPLICATES)}")
    if isinstance(months, str):
        from tilewise.sources.stack import parse_months

        months = list(parse_months(months))  # also "jun-aug", "12-2"
    if months is not None and any(not isinstance(m, int) or isinstance(m, bool) or not 1 <= m <= 12 for m in months):
        raise UsageError(f"--months {_short_repr(months)} holds a value that is not a month 1-12", "e.g. --months 6,7,8")
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        raise UsageError(f"--every {_short_repr(every)} is not a whole number of 1 or more", "e.g. --every 7 for weekly dates of a daily stack")
    if isinstance(bbox, str):
        from tilewise.sources.stack import parse_bbox

        bbox = parse_bbox(bbox)
    if bbox is not None and len(bbox) != 4:
        raise UsageError(f"--bbox {_short_repr(bbox)} is not minx,miny,maxx,maxy", "e.g. --bbox 20,-35,52,38")
    try:
        return StackSpec(sources=tuple(srcs), stac=stac_spec, date_pattern=date_pattern, dates=dates, variable=variable, duplicates=duplicates, start=start,
                         end=end, months=tuple(months) if months else None, every=every,
                         bbox=tuple(float(v) for v in bbox) if bbox is not None else None,  # type: ignore[arg-type]
                         bbox_crs=bbox_crs, **_grid_kw(crs, resolution, resampling))  # fmt: skip
    except ValidationError as exc:
        raise option_error(exc) from None


def _stac_spec(srcs: list[str], date_pattern: str | None, dates: str | None, variable: str | None, stac: str | None,
               collection: str | Sequence[str] | None, datetime: str | None, stac_bbox: Sequence[float] | str | None,
               query: str | Sequence[str] | None, asset: str | None) -> StacSpec | None:  # fmt: skip
    """The STAC part of a stack (checked), or None when no ``stac`` source is given."""
    collections = [collection] if isinstance(collection, str) else list(collection or [])
    queries = [query] if isinstance(query, str) else list(query or [])
    if stac is None:
        given = [n for n, v in (("--collection", collections), ("--datetime", datetime), ("--stac-bbox", stac_bbox), ("--query", queries),
                                ("--asset", asset)) if v]  # fmt: skip
        if given:
            raise UsageError(f"{given[0]} is given without --stac", "add --stac URL_OR_FILE (a STAC API or catalog), or leave the STAC options out")
        return None
    if srcs:
        raise UsageError(f"--stac {stac!r} and stack files ({_short_repr(srcs[0])}) cannot be combined", "give the stack either as files or as a STAC source")
    for name, value in (("--date-pattern", date_pattern), ("--dates", dates), ("--variable", variable)):
        if value is not None:
            raise UsageError(f"{name} cannot be used with --stac", "a STAC item's date is its datetime property; leave the option out")
    if not asset:
        raise UsageError("--stac needs --asset NAME", "name the asset of each item to read, e.g. --asset B04 (the keys of an item's 'assets')")
    from tilewise.sources.stac import parse_datetime, parse_query
    from tilewise.sources.stack import parse_bbox

    for q in queries:
        parse_query(q)
    if datetime:
        parse_datetime(datetime)
    try:
        box = parse_bbox(stac_bbox) if isinstance(stac_bbox, str) else None
    except UsageError as exc:
        raise UsageError(f"--stac-{exc.message}", "give --stac-bbox minx,miny,maxx,maxy in longitude/latitude, e.g. --stac-bbox 10,45,12,47") from None
    if box is None and stac_bbox is not None and not isinstance(stac_bbox, str):
        box = tuple(float(v) for v in stac_bbox)  # type: ignore[assignment]
    if box is not None and len(box) != 4:
        raise UsageError(f"--stac-bbox {_short_repr(stac_bbox)} is not minx,miny,maxx,maxy", "e.g. --stac-bbox 10,45,12,47 (longitude/latitude)")
    return StacSpec(source=stac, asset=asset, collections=tuple(collections), datetime=datetime or None,
                    bbox=box, query=tuple(queries))  # fmt: skip


def _grid_kw(crs: Any, resolution: Any, resampling: Any) -> dict[str, Any]:
    """The checked target-grid fields of a :class:`StackSpec` (none when neither ``crs`` nor ``resolution`` is given)."""
    from tilewise.sources.regrid import check_resampling, parse_crs, parse_resolution

    if crs is None and resolution is None:
        if resampling is not None:
            check_resampling(resampling)
        return {}
    if crs is not None:
        parse_crs(crs)
    return {"crs": crs, "resolution": parse_resolution(resolution) if resolution is not None else None,
            "resampling": check_resampling(resampling) if resampling is not None else None}  # fmt: skip


def reduce_job(sources: str | Sequence[str], output: str, *, stat: str = "mean", groupby: str = "all", expr: str = "",
               **options: Any) -> Job:  # fmt: skip
    """Build a per-pixel reduction job; see :func:`reduce` for the parameters."""
    from tilewise.job_reduce import validate_reduce

    stack_kw = {k: options.pop(k) for k in STACK_OPTIONS if k in options}
    if (stack_kw.get("crs") is not None or stack_kw.get("resolution") is not None) and stack_kw.get("resampling") is None:
        stack_kw["resampling"] = options.get("align")  # --align names the resampling onto the --crs/--resolution grid
    spec = ReduceSpec(stat=stat, groupby=groupby, expr=expr or "", stack=stack_spec(sources, **stack_kw))
    validate_reduce(spec)
    if not output:
        raise UsageError("no output given", "add -o OUT.tif")
    if stat == "argmax-date" and options.get("dtype") is None:
        options["dtype"] = "int32"  # YYYYMMDD numbers do not fit float32 exactly
    common = _validated_common(options)
    output = staged(output, common)
    item = ItemSpec(inputs=(InputSpec(name="stack", path=spec.stack.sources[0]),), output=output)
    return build_job(command="reduce", band_name=stat, reduce=spec, items=(item,), output_root=output, **common)


def reduce(sources: str | Sequence[str], output: str, *, stat: str = "mean", groupby: str = "all", expr: str = "", overwrite: bool = False,
           as_xarray: bool = False, progress: ProgressFn | None = None, **options: Any) -> Any:  # fmt: skip
    """Reduce a dated stack per pixel over time: one output band per group.

    Parameters
    ----------
    sources
        Folders, globs or files of the stack (see the module doc for the other forms).
    output
        The output GeoTIFF (COG); band descriptions name the groups.
    stat
        mean, sum, count, std (population), min, max, median, pNN (percentile NN) or
        argmax-date (the first date of the maximum, as a YYYYMMDD number; int32 output).
    groupby
        all (one band), month (month of year, as xarray's ``time.month``), season
        (DJF, MAM, JJA, SON) or year.
    expr
        Applied to each date's values (variable ``t``) first, e.g. ``t * 9 / 5 + 32``.
    overwrite, as_xarray, progress
        As for :func:`tilewise.ndvi`.
    **options
        Stack options (date_pattern, dates, variable, duplicates, start, end, months,
        every, bbox, bbox_crs; or stac, collection, datetime, stac_bbox, query, asset) and the shared job options (dtype, nodata, tile_size, executor ...).

    Returns
    -------
    str or xarray.DataArray
    """
    job = reduce_job(sources, output, stat=stat, groupby=groupby, expr=expr, **options)
    return _finish(run_job(job, overwrite=overwrite, progress=progress), as_xarray)


def stats(sources: str | Sequence[str], output: str, *, expr: str = "", area_weighted: bool | None = None, plot: str | None = None,
          overwrite: bool = False, executor: str | None = None, workers: int | None = None, s3_endpoint: str | None = None,
          cache: str | None = None, **stack_options: Any) -> list[dict[str, Any]]:  # fmt: skip
    """Per-date statistics of a stack (count, mean, min, max, std, area-weighted mean) written to a .csv or .parquet table.

    Parameters
    ----------
    sources, **stack_options
        The stack and its selection, as for :func:`reduce`.
    output
        The table (.csv or .parquet).
    expr
        Applied to each pixel first (variable ``t``); nodata stays out.
    area_weighted
        Add the area-weighted mean (default: on geographic grids).
    plot
        Also draw the series into this PNG.
    executor, workers
        Where the dates are computed (default: processes on every usable core).
    s3_endpoint
        The S3-compatible store of ``s3://`` members, table and plot (``--s3-endpoint``).
    cache
        A folder keeping remote members' blocks for re-runs (``--cache``).

    Returns
    -------
    list of dict
        The table's rows in date order.
    """
    from tilewise.stack_stats import stack_stats

    unknown = sorted(set(stack_options) - set(STACK_OPTIONS))
    if unknown:
        raise UsageError(f"unknown option {unknown[0]!r}", f"stack options are: {', '.join(STACK_OPTIONS)}")
    endpoint = _s3_endpoint(s3_endpoint)  # before the members are opened
    spec = stack_spec(sources, **stack_options)
    opts = executor_options({"executor": executor, "workers": workers})
    return stack_stats(spec, output, expr=expr, area_weighted=area_weighted, plot=plot, executor=opts, overwrite=overwrite, s3_endpoint=endpoint,
                       cache=_cache_dir(cache) if cache else None)  # fmt: skip
