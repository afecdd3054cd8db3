"""The Python API: the same jobs as the CLI, returning output paths (or xarray for small results).

Each public function builds a :class:`~tilewise.job.Job` exactly as the CLI does
(the CLI calls the same builders) and runs it with :func:`~tilewise.runner.run_job`.
"""

from __future__ import annotations

import glob as _glob
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tilewise.errors import InputError, UsageError
from tilewise.job import ExecutorOptions, InputSpec, ItemSpec, Job, OutputOptions, build_job
from tilewise.ops.pixel import INDICES, S2_ROLE_BANDS, normalized_difference
from tilewise.runner import ProgressFn, RunSummary, run_job
from tilewise.sources.raster import find_band_by_alias, split_band_spec
from tilewise.sources.safe import is_safe

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt", ".nc", ".img", ".hdf", ".h5", ".grib", ".grb", ".asc", ".png")


# ---------------------------------------------------------------- expanding inputs


def expand_inputs(inputs: Sequence[str], from_list: str | None = None) -> list[str]:
    """Expand paths, globs, directories (of rasters or .SAFE folders) and a list file into input paths.

    Order is kept (list file after the arguments); duplicates are dropped.
    """
    raw = list(inputs)
    if from_list is not None:
        lf = Path(from_list)
        if not lf.is_file():
            raise InputError(f"list file {from_list!r} does not exist", "give a text file with one input path per line")
        base = lf.parent
        for line in lf.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                p = Path(line)
                raw.append(str(p if p.is_absolute() or p.exists() else base / p))
    out: list[str] = []
    for item in raw:
        if any(ch in item for ch in "*?[") and not Path(item).exists():
            hits = sorted(_glob.glob(item))
            if not hits:
                raise InputError(f"pattern {item!r} matches no files", "check the pattern (quote it so the shell does not expand it)")
            out.extend(hits)
        elif Path(item).is_dir() and not is_safe(item):
            found = sorted(str(p) for p in Path(item).iterdir() if is_safe(p) or p.suffix.lower() in RASTER_SUFFIXES)
            if not found:
                raise InputError(f"directory {item!r} holds no rasters or .SAFE folders", "name files, a glob, or a folder of them")
            out.extend(found)
        else:
            out.append(item)
    if not out:
        raise UsageError("no inputs given", "name an input raster or SAFE folder, or use --from-list FILE")
    seen: set[str] = set()
    return [p for p in out if not (p in seen or seen.add(p))]  # type: ignore[func-returns-value]


def _stem(path: str) -> str:
    name = Path(path.rstrip("/")).name
    for suffix in (".SAFE", ".safe"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem or re.sub(r"\W+", "_", path)


def _is_batch(inputs: Sequence[str], output: str) -> bool:
    return len(inputs) > 1 or output.endswith(("/", "\\")) or Path(output).is_dir()


def _looks_like_path(spec: str) -> bool:
    path, _ = split_band_spec(spec)
    return "/" in path or "\\" in path or Path(path).suffix.lower() in RASTER_SUFFIXES or Path(path).exists()


def _band_value(spec: str | int | None) -> int | str | None:
    if spec is None or isinstance(spec, int):
        return spec
    return int(spec) if spec.strip().isdigit() else spec


# ---------------------------------------------------------------- job builders


OPTION_NAMES = frozenset({"dtype", "nodata", "compress", "level", "predictor", "creation_options", "overviews", "tile_size",
                          "align", "executor", "workers", "retries", "keep_tiles"})


def _common(options: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - OPTION_NAMES)
    if unknown:
        raise UsageError(f"unknown option {unknown[0]!r}", f"options are: {', '.join(sorted(OPTION_NAMES))}")
    out = OutputOptions(
        dtype=options.get("dtype") or "float32", nodata=options.get("nodata"), compress=options.get("compress") or "zstd",
        level=options.get("level"), predictor=options.get("predictor"), creation_options=dict(options.get("creation_options") or {}),
        overviews=options.get("overviews", True),
    )
    return {
        "output": out,
        "tile_size": options.get("tile_size"),
        "align": options.get("align"),
        "executor": ExecutorOptions(name=options.get("executor") or "processes", workers=options.get("workers"), retries=options.get("retries", 2)),
        "keep_tiles": bool(options.get("keep_tiles", False)),
    }


def _validated_common(options: Mapping[str, Any]) -> dict[str, Any]:
    from pydantic import ValidationError

    try:
        return _common(options)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UsageError(f"invalid option {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def normdiff_job(
    inputs: Sequence[str] = (),
    output: str = "",
    *,
    index: str = "ndvi",
    a: str | int | None = None,
    b: str | int | None = None,
    from_list: str | None = None,
    scale: float | None = None,
    offset: float | None = None,
    **options: Any,
) -> Job:
    """Build a normalized-difference job ``(a - b) / (a + b)``; see :func:`ndvi` for the inputs.

    ``index`` names the index (ndvi, ndwi, nbr, ndre, ndmi, ndsi, mndwi, or any
    name when ``a`` and ``b`` are given); for a Sentinel-2 SAFE input its bands
    are chosen from the index, for other rasters ``a``/``b`` give 1-based band
    indices, band names, or (both) separate files ``PATH[:BAND]``.
    """
    index = index.lower()
    roles = INDICES.get(index)
    if roles is None and (a is None or b is None):
        raise UsageError(f"unknown index {index!r}", f"use one of {', '.join(INDICES)}, or give both bands with --a/--b")
    role_a, role_b = (roles[0], roles[1]) if roles else ("a", "b")
    if not output:
        raise UsageError("no output given", "add -o OUT.tif (or -o OUTDIR/ for many inputs)")
    common = _validated_common(options)
    ident = re.sub(r"\W", "_", role_a), re.sub(r"\W", "_", role_b)
    expression = normalized_difference(*ident)
    label = index.upper()
    separate = isinstance(a, str) and isinstance(b, str) and _looks_like_path(a) and _looks_like_path(b)
    if separate:
        if inputs or from_list:
            raise UsageError("give either an INPUT or separate band files, not both", f"e.g. tilewise {index} --red RED.tif --nir NIR.tif -o OUT.tif")
        assert isinstance(a, str) and isinstance(b, str)
        pa, ba = split_band_spec(a)
        pb, bb = split_band_spec(b)
        specs = (InputSpec(name=ident[0], path=pa, band=_band_value(ba), scale=scale, offset=offset),
                 InputSpec(name=ident[1], path=pb, band=_band_value(bb), scale=scale, offset=offset))  # fmt: skip
        if output.endswith("/") or Path(output).is_dir():
            output = str(Path(output) / f"{_stem(pb)}_{label}.tif")
        items = (ItemSpec(inputs=specs, output=output),)
        return build_job(command=index, expression=expression, band_name=label, items=items, output_root=output, batch=False, **common)
    paths = expand_inputs(inputs, from_list)
    batch = _is_batch(paths, output)
    items_list = []
    for path in paths:
        if is_safe(path):
            band_a = a if a is not None else S2_ROLE_BANDS.get(role_a)
            band_b = b if b is not None else S2_ROLE_BANDS.get(role_b)
        else:
            band_a = _band_value(a) if a is not None else _alias(path, role_a)
            band_b = _band_value(b) if b is not None else _alias(path, role_b)
            if band_a is None or band_b is None:
                raise UsageError(
                    f"cannot tell which bands of {path!r} are {role_a} and {role_b}",
                    "pass 1-based band indices, e.g. --red 3 --nir 4" if index == "ndvi" else "pass 1-based band indices with --a N --b M",
                )
        specs = (InputSpec(name=ident[0], path=path, band=_band_value(band_a), scale=scale, offset=offset),
                 InputSpec(name=ident[1], path=path, band=_band_value(band_b), scale=scale, offset=offset))  # fmt: skip
        out = str(Path(output) / f"{_stem(path)}_{label}.tif") if batch else output
        items_list.append(ItemSpec(inputs=specs, output=out))
    root = output.rstrip("/") if batch else output
    return build_job(command=index, expression=expression, band_name=label, items=tuple(items_list), output_root=root or ".", batch=batch, **common)


def focal_job(
    inputs: Sequence[str] = (),
    output: str = "",
    *,
    stat: str = "mean",
    size: int | None = None,
    radius: int | None = None,
    edge: str = "nodata",
    min_valid: float = 0.0,
    subtract: bool = False,
    bands: Sequence[int] | None = None,
    mosaic: bool = False,
    from_list: str | None = None,
    **options: Any,
) -> Job:
    """Build a focal-statistics job; see :func:`focal` for the parameters."""
    from pydantic import ValidationError

    from tilewise.job import FocalSpec
    from tilewise.job_focal import validate_focal

    try:
        spec = FocalSpec(stat=stat, size=size, radius=radius, edge=edge, min_valid=min_valid, subtract=subtract,
                         bands=tuple(bands) if bands else None, mosaic=mosaic)  # fmt: skip
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UsageError(f"invalid focal option {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    fp = validate_focal(spec)
    if not output:
        raise UsageError("no output given", "add -o OUT.tif (or -o OUTDIR/ for many inputs or --mosaic)")
    common = _validated_common(options)
    paths = expand_inputs(inputs, from_list)
    batch = _is_batch(paths, output)
    if mosaic and (not batch or Path(output).suffix.lower() in RASTER_SUFFIXES):
        raise UsageError("--mosaic writes one output per sheet, so -o must be a directory", "end the output with a slash, e.g. -o filtered/")
    suffix = f"{'relief_' if subtract else ''}{stat}_{fp.describe()}"
    items = tuple(ItemSpec(inputs=(InputSpec(name="input", path=p),), output=str(Path(output) / f"{_stem(p)}_{suffix}.tif") if batch else output)
                  for p in paths)  # fmt: skip
    outs = [it.output for it in items]
    if len(set(outs)) < len(outs):
        dup = next(o for o in outs if outs.count(o) > 1)
        raise UsageError(f"two inputs would both write {dup!r}", "inputs in a batch need different file names")
    root = output.rstrip("/") if batch else output
    return build_job(command="focal", band_name=f"{stat} {fp.describe()}", focal=spec, items=items, output_root=root or ".", batch=batch, **common)


def _alias(path: str, role: str) -> int | None:
    if role in ("red", "nir"):
        return find_band_by_alias(path, role)
    return None


def calc_job(
    expression: str,
    inputs: Mapping[str, str],
    output: str,
    *,
    scales: Mapping[str, float] | None = None,
    offsets: Mapping[str, float] | None = None,
    name: str | None = None,
    **options: Any,
) -> Job:
    """Build a band-math job: ``expression`` over named inputs ``{name: "PATH[:BAND]"}``."""
    from tilewise.expr import parse

    if not inputs:
        raise UsageError("calc needs at least one input", "add -i NAME=PATH[:BAND]")
    if not output:
        raise UsageError("no output given", "add -o OUT.tif")
    parse(expression)
    scales, offsets = scales or {}, offsets or {}
    for what, mapping in (("--scale", scales), ("--offset", offsets)):
        for key in mapping:
            if key not in inputs:
                raise UsageError(f"{what} names {key!r}, which is not an input", f"inputs are: {', '.join(inputs)}")
    specs = []
    for n, spec in inputs.items():
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", n):
            raise UsageError(f"input name {n!r} is not a valid name", "use letters, digits and _ (starting with a letter), e.g. -i red=b4.tif")
        path, band = split_band_spec(spec)
        specs.append(InputSpec(name=n, path=path, band=_band_value(band), scale=scales.get(n), offset=offsets.get(n)))
    if output.endswith("/") or Path(output).is_dir():
        raise UsageError(f"calc writes one raster; -o {output!r} is a directory", "give a file name, e.g. -o result.tif")
    common = _validated_common(options)
    return build_job(command="calc", expression=expression, band_name=name or "calc", items=(ItemSpec(inputs=tuple(specs), output=output),),
                     output_root=output, batch=False, **common)  # fmt: skip


# ---------------------------------------------------------------- public functions


def _finish(summary: RunSummary, as_xarray: bool) -> Any:
    if as_xarray:
        try:
            import rioxarray
        except ImportError:
            raise UsageError("as_xarray=True needs rioxarray, which is not installed", "pip install 'tilewise[xarray]'") from None
        arrays = [rioxarray.open_rasterio(p, masked=True).load() for p in summary.outputs]  # type: ignore[union-attr]
        return arrays[0] if len(arrays) == 1 else arrays
    return summary.outputs[0] if len(summary.outputs) == 1 else summary.outputs


def run(job: Job, *, overwrite: bool = False, progress: ProgressFn | None = None) -> RunSummary:
    """Run a prepared job (from a builder or :func:`load_job_file`) and return its summary."""
    return run_job(job, overwrite=overwrite, progress=progress)


def ndvi(
    input: str | Sequence[str] | None = None,
    output: str = "",
    *,
    red: str | int | None = None,
    nir: str | int | None = None,
    from_list: str | None = None,
    overwrite: bool = False,
    as_xarray: bool = False,
    progress: ProgressFn | None = None,
    **options: Any,
) -> Any:
    """Compute NDVI = (NIR - red) / (NIR + red) as float32 with nodata where any input is masked.

    Parameters
    ----------
    input
        A Sentinel-2 L2A ``.SAFE`` folder, a multi-band raster, several of them,
        a glob, or a directory of them. Omit it to give ``red`` and ``nir`` as files.
    output
        Output GeoTIFF (COG) path, or a directory for many inputs (``<stem>_NDVI.tif``).
    red, nir
        1-based band indices or band names of ``input``, or two ``PATH[:BAND]`` files.
    from_list
        A text file with one input path per line.
    overwrite
        Replace existing outputs / discard an unfinished run of a different job.
    as_xarray
        Return ``xarray.DataArray`` (s) loaded from the outputs instead of paths.
    **options
        tile_size, executor, workers, retries, dtype, nodata, compress, level,
        predictor, creation_options, overviews, align, keep_tiles.

    Returns
    -------
    str or list of str or xarray.DataArray
        The output path(s), or arrays when ``as_xarray``.
    """
    inputs = [input] if isinstance(input, str) else list(input or [])
    job = normdiff_job(inputs, output, index="ndvi", a=nir, b=red, from_list=from_list, **options)
    return _finish(run_job(job, overwrite=overwrite, progress=progress), as_xarray)


def normdiff(
    input: str | Sequence[str] | None = None,
    output: str = "",
    *,
    index: str = "ndvi",
    a: str | int | None = None,
    b: str | int | None = None,
    overwrite: bool = False,
    as_xarray: bool = False,
    progress: ProgressFn | None = None,
    **options: Any,
) -> Any:
    """Compute a normalized difference ``(a - b) / (a + b)`` (NDWI, NBR, NDRE, NDMI, ...).

    See :func:`ndvi`; ``index`` picks Sentinel-2 bands for SAFE inputs, ``a``/``b``
    give bands or files explicitly.
    """
    inputs = [input] if isinstance(input, str) else list(input or [])
    job = normdiff_job(inputs, output, index=index, a=a, b=b, **options)
    return _finish(run_job(job, overwrite=overwrite, progress=progress), as_xarray)


def calc(
    expression: str,
    inputs: Mapping[str, str],
    output: str,
    *,
    scales: Mapping[str, float] | None = None,
    offsets: Mapping[str, float] | None = None,
    overwrite: bool = False,
    as_xarray: bool = False,
    progress: ProgressFn | None = None,
    **options: Any,
) -> Any:
    """Band math: evaluate ``expression`` over named inputs, pixel by pixel.

    Parameters
    ----------
    expression
        E.g. ``"where(t > 30, 1, 0)"`` or ``"t * 9 / 5 + 32"``; see docs/expressions.md.
    inputs
        ``{name: "PATH[:BAND]"}``; every input the expression reads must share a
        grid (or pass ``align="bilinear"``).
    output
        Output GeoTIFF (COG) path.
    scales, offsets
        Per-input scale/offset replacing the file's metadata.
    **options
        As for :func:`ndvi`.
    """
    job = calc_job(expression, inputs, output, scales=scales, offsets=offsets, **options)
    return _finish(run_job(job, overwrite=overwrite, progress=progress), as_xarray)


def focal(
    input: str | Sequence[str] | None = None,
    output: str = "",
    *,
    stat: str = "mean",
    size: int | None = None,
    radius: int | None = None,
    edge: str = "nodata",
    min_valid: float = 0.0,
    subtract: bool = False,
    bands: Sequence[int] | None = None,
    mosaic: bool = False,
    overwrite: bool = False,
    as_xarray: bool = False,
    progress: ProgressFn | None = None,
    **options: Any,
) -> Any:
    """Focal (moving-window) statistics, nodata-aware and seamless across tiles and map sheets.

    Parameters
    ----------
    input
        A raster, several, a glob or a directory; with ``mosaic`` the adjacent sheets.
    output
        Output GeoTIFF (COG), or a directory for many inputs (``<stem>_<stat>_<window>.tif``).
    stat
        mean, sum, min, max, std, variance (population), range, median or count (valid cells).
    size, radius
        The window: a ``size`` x ``size`` square (odd) or a disc of ``radius`` pixels; give one.
    edge
        ``nodata`` (pixels whose window leaves the raster are nodata), ``partial``
        (statistic of the part inside), ``reflect`` or ``nearest`` (scipy.ndimage modes).
    min_valid
        Fraction (0-1) of the window's cells that must be valid, else nodata.
    subtract
        Write ``value - statistic`` (local relief / high-pass).
    bands
        1-based bands to filter (default all), one output band each.
    mosaic
        Treat the inputs as adjacent map sheets of one surface: seams use the
        neighbours' pixels; one output per sheet with the sheet's extent.
    overwrite, as_xarray, progress, **options
        As for :func:`ndvi`.

    Returns
    -------
    str or list of str or xarray.DataArray
        The output path(s), or arrays when ``as_xarray``.
    """
    inputs = [input] if isinstance(input, str) else list(input or [])
    job = focal_job(inputs, output, stat=stat, size=size, radius=radius, edge=edge, min_valid=min_valid, subtract=subtract,
                    bands=bands, mosaic=mosaic, **options)  # fmt: skip
    return _finish(run_job(job, overwrite=overwrite, progress=progress), as_xarray)


def load_job_file(path: str) -> Job:
    """Load a job from a TOML, YAML or JSON file (the same object the CLI builds).

    The file holds ``command`` (ndvi, normdiff or calc) and that command's options
    by their Python names, e.g. ``command = "ndvi"``, ``inputs = ["a.SAFE"]``,
    ``output = "out/"``, ``workers = 4``. A saved ``job.json`` from a work
    directory loads as it is.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"job file {path!r} does not exist", "give the path of a .toml, .yaml or .json job file")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif p.suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise UsageError("YAML job files need PyYAML, which is not installed", "pip install pyyaml, or write the job as TOML") from None
            data = yaml.safe_load(text)
        else:
            import json

            data = json.loads(text)
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"cannot parse job file {path!r}: {str(exc).splitlines()[0]}", "check its syntax") from None
    if not isinstance(data, dict):
        raise UsageError(f"job file {path!r} does not hold a table of options")
    if "job" in data and "fingerprint" in data:
        data = data["job"]
    if "items" in data:
        return Job.from_json(__import__("json").dumps(data))
    return job_from_options(dict(data), source=path)


def job_from_options(data: dict[str, Any], source: str = "job file") -> Job:
    """Build a job from ``command`` plus that command's keyword options (job files, tests)."""
    command = str(data.pop("command", ""))
    try:
        if command in ("ndvi",):
            inputs = data.pop("inputs", data.pop("input", []))
            inputs = [inputs] if isinstance(inputs, str) else inputs
            red, nir = data.pop("red", None), data.pop("nir", None)
            return normdiff_job(inputs, data.pop("output", ""), index="ndvi", a=nir, b=red, **data)
        if command == "normdiff":
            inputs = data.pop("inputs", data.pop("input", []))
            inputs = [inputs] if isinstance(inputs, str) else inputs
            return normdiff_job(inputs, data.pop("output", ""), **data)
        if command == "focal":
            inputs = data.pop("inputs", data.pop("input", []))
            inputs = [inputs] if isinstance(inputs, str) else inputs
            return focal_job(inputs, data.pop("output", ""), **data)
        if command == "calc":
            return calc_job(data.pop("expression", ""), data.pop("inputs", {}), data.pop("output", ""), **data)
    except TypeError as exc:
        raise UsageError(f"{source}: {exc}", "see docs/jobs.md for the options of each command") from None
    raise UsageError(f"{source}: unknown command {command!r}", "use command = \"ndvi\", \"normdiff\", \"calc\" or \"focal\"")
