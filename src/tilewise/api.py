"""The Python API: the same jobs as the CLI, returning output paths (or xarray for small results).

Each public function builds a :class:`~tilewise.job.Job` exactly as the CLI does
(the CLI calls the same builders) and runs it with :func:`~tilewise.runner.run_job`.
"""

from __future__ import annotations

import glob as _glob
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tilewise.errors import InputError, UsageError
from tilewise.executors.options import ClusterResources, ExecutorOptions
from tilewise.job import InputSpec, ItemSpec, Job, OutputOptions, build_job
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
        if not isinstance(from_list, str):
            raise UsageError(f"--from-list {_short_repr(from_list)} is not a path", "give a text file with one input path per line")
        lf = Path(from_list)
        if not lf.is_file():
            raise InputError(f"list file {from_list!r} does not exist", "give a text file with one input path per line")
        base = lf.parent
        try:
            text = lf.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = "it is not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else exc.strerror or str(exc)
            raise InputError(f"cannot read list file {from_list!r} ({why})", "give a text file with one input path per line") from None
        for line in text.splitlines():
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


def _short_repr(value: Any) -> str:
    """``repr`` cut to a readable length, safe for huge or self-referencing values from job files."""
    import reprlib

    r = reprlib.Repr()
    r.maxstring, r.maxother, r.maxlevel = 60, 60, 3
    return r.repr(value)


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


def _check_number(value: Any, what: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        sep = "" if what.endswith("=") else " "
        raise UsageError(f"{what}{sep}{_short_repr(value)} is not a number", f"give a number, e.g. {what}{sep}0.0001")


def _check_band(value: Any, role: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | str)):
        raise UsageError(f"band {_short_repr(value)} for {role} is not a 1-based number, a band name or PATH[:BAND]",
                         "e.g. --red 3 --nir 4, --red B04, or --red b4.tif (red = 3 in a job file)")  # fmt: skip


def _band_value(spec: str | int | None) -> int | str | None:
    if spec is None or isinstance(spec, int):
        return spec
    return int(spec) if spec.strip().isdigit() else spec


# ---------------------------------------------------------------- job builders


# Engine settings and cluster resources, given flat like every other option (executor="slurm", partition="debug").
ENGINE_OPTIONS = ("tiles_per_task", "threads_per_worker", "memory_limit", "scheduler", "dask_cluster", "adapt", "parsl_provider", "blocks",
                  "workers_per_node", "parts", "max_running", "interface")  # fmt: skip
RESOURCE_OPTIONS = ("partition", "account", "time", "cpus_per_task", "mem_per_cpu", "mem", "nodes", "sbatch_args", "modules", "setup")
OPTION_NAMES = frozenset({"dtype", "nodata", "compress", "level", "predictor", "creation_options", "overviews", "tile_size",
                          "align", "executor", "workers", "retries", "fail_fast", "keep_tiles", "s3_endpoint", "cache", *ENGINE_OPTIONS, *RESOURCE_OPTIONS})


def check_executor(name: Any, workers: Any) -> None:
    """Refuse an unknown executor name or a worker count below 1, before any work directory is made."""
    from tilewise.executors import EXECUTORS

    if name is not None and name not in EXECUTORS:
        raise UsageError(f"unknown executor {name!r}", f"use one of: {', '.join(EXECUTORS)}")
    if isinstance(workers, int) and not isinstance(workers, bool) and workers < 1:
        raise UsageError(f"--workers {workers} is not positive", "use --workers 1 or more, or leave it out to use every usable core")


def _common(options: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - OPTION_NAMES)
    if unknown:
        import difflib

        close = difflib.get_close_matches(str(unknown[0]), sorted(OPTION_NAMES), n=1)
        guess = f"did you mean {close[0]!r}? " if close else ""
        raise UsageError(f"unknown option {unknown[0]!r}", f"{guess}options are: {', '.join(sorted(OPTION_NAMES))}")
    check_executor(options.get("executor") or "processes", options.get("workers"))
    co = options.get("creation_options") or {}
    if not isinstance(co, Mapping):
        raise UsageError(f"--co {_short_repr(co)} is not a set of KEY=VALUE options", _OPTION_HINTS["creation_options"])
    out = OutputOptions(
        dtype=options.get("dtype") or "float32", nodata=options.get("nodata"), compress=options.get("compress") or "zstd",
        level=options.get("level"), predictor=options.get("predictor"), creation_options=dict(co),
        overviews=options.get("overviews", True),
    )
    s3_endpoint = _s3_endpoint(options.get("s3_endpoint"))
    cache = options.get("cache")
    if cache is not None and (not isinstance(cache, str | os.PathLike) or not str(cache)):
        raise UsageError(f"--cache {_short_repr(cache)} is not a folder", "give a local folder, e.g. --cache ~/.cache/tilewise")
    return {
        "s3_endpoint": s3_endpoint,
        "cache": _cache_dir(str(cache)) if cache is not None else None,
        "output": out,
        "tile_size": options.get("tile_size"),
        "align": options.get("align"),
        "executor": executor_options(options),
        "keep_tiles": bool(options.get("keep_tiles", False)),
    }


def _cache_dir(folder: str) -> str:
    """The --cache folder as an absolute path (workers may run elsewhere), created, or a one-line error."""
    path = Path(folder).expanduser().absolute()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--cache {folder!r} cannot be created ({exc.strerror})", "give a writable local folder") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"--cache {folder!r} is not writable", "give a writable local folder")
    return str(path)


def _s3_endpoint(value: Any) -> str | None:
    """Check ``s3_endpoint`` (``--s3-endpoint``) and use it for the reads made while the job is built."""
    from tilewise.remote import check_s3_endpoint, use_s3_endpoint

    if value is None or value == "":
        use_s3_endpoint(None)
        return None
    if not isinstance(value, str):
        raise UsageError(f"--s3-endpoint {_short_repr(value)} is not a URL", "give http(s)://HOST[:PORT], e.g. --s3-endpoint https://a3s.fi")
    try:
        url = check_s3_endpoint(value)
    except ValueError as exc:
        raise UsageError(*str(exc).split("; ", 1)) from None
    use_s3_endpoint(url)
    return url


def executor_options(options: Mapping[str, Any], base: ExecutorOptions | None = None) -> ExecutorOptions:
    """Build :class:`ExecutorOptions` from flat options (``executor``, ``workers``, engine settings, resources).

    Values that are None (or empty sequences) are left out, so ``base`` (the saved
    job's options, for ``tilewise resume``) keeps them; an explicit value replaces it.
    """
    base = base or ExecutorOptions()
    given = {k: v for k, v in options.items() if v is not None and not (isinstance(v, list | tuple) and not v)}
    res = {k: tuple(given[k]) if k in ("sbatch_args", "modules", "setup") else given[k] for k in RESOURCE_OPTIONS if k in given}
    if "adapt" in given and isinstance(given["adapt"], str):
        from tilewise.executors.options import parse_adapt

        try:
            given["adapt"] = parse_adapt(given["adapt"])
        except ValueError as exc:
            raise UsageError(*str(exc).split("; ", 1)) from None
    update: dict[str, Any] = {k: given[k] for k in ENGINE_OPTIONS if k in given}
    for key, name in (("executor", "name"), ("workers", "workers"), ("retries", "retries"), ("fail_fast", "fail_fast")):
        if key in given:
            update[name] = bool(given[key]) if key == "fail_fast" else given[key]
    if res:
        update["resources"] = ClusterResources.model_validate({**base.resources.model_dump(), **res})
    return ExecutorOptions.model_validate({**base.model_dump(), **update})


# How to give each option right, for messages about a value of the wrong type or range.
_OPTION_HINTS = {
    "dtype": "use one of uint8, int8, uint16, int16, uint32, int32, float32, float64",
    "nodata": "give a number, e.g. --nodata -9999 (NaN is the default for floats)",
    "compress": "use one of zstd, deflate, lzw, lerc, none",
    "level": "give a whole number, e.g. --level 1 for zstd or 6 for deflate",
    "predictor": "use --predictor 1, 2 or 3",
    "creation_options": "give KEY=VALUE pairs, e.g. --co BLOCKSIZE=512 (a table of strings in a job file)",
    "overviews": "use true or false",
    "tile_size": "give a whole number of pixels, e.g. --tile-size 1024",
    "align": "give a resampling name, e.g. --align bilinear",
    "workers": "give a whole number of 1 or more, e.g. --workers 4",
    "name": "use one of processes, threads, serial, dask, parsl, slurm, gnu-parallel",
    "tiles_per_task": "give a whole number of 1 or more, e.g. --tiles-per-task 8",
    "threads_per_worker": "give a whole number of 1 or more, e.g. --threads-per-worker 2",
    "dask_cluster": "use --dask-cluster local or slurm",
    "parsl_provider": "use --parsl-provider local or slurm",
    "blocks": "give a whole number of batch jobs, e.g. --blocks 2",
    "workers_per_node": "give a whole number of 1 or more, e.g. --workers-per-node 4",
    "parts": "give a whole number of 1 or more, e.g. --parts 16",
    "max_running": "give a whole number of 1 or more, e.g. --max-running 4",
    "cpus_per_task": "give a whole number of cores, e.g. --cpus-per-task 4",
    "nodes": "give a whole number of nodes, e.g. --nodes 1",
    "time": "give a SLURM time limit, e.g. --time 01:30:00",
    "mem_per_cpu": "give a size with a unit, e.g. --mem-per-cpu 2G",
    "mem": "give a size with a unit, e.g. --mem 16G",
    "retries": "use a whole number from 0 to 20, e.g. --retries 2",
    "keep_tiles": "use true or false",
    "stat": "use one of mean, sum, min, max, std, variance, range, median, count",
    "size": "give an odd whole number of pixels, e.g. --size 5",
    "radius": "give a whole number of pixels, e.g. --radius 3",
    "edge": "use one of nodata, partial, reflect, nearest",
    "min_valid": "give a fraction from 0 to 1, e.g. --min-valid 0.5",
    "subtract": "use true or false",
    "bands": "give 1-based band numbers, e.g. --band 1",
    "mosaic": "use true or false",
}


# CLI flags whose names differ from the option's Python name.
_FLAGS = {"bands": "--band", "creation_options": "--co", "subtract": "--subtract-from-input", "overviews": "--no-overviews", "name": "--executor",
          "sbatch_args": "--sbatch-arg", "modules": "--module"}


def option_error(exc: Any) -> UsageError:
    """Turn a pydantic ``ValidationError`` about one option into a one-line :class:`UsageError` naming the option and value."""
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ())]
    name = loc[0] if loc else "option"
    msg = str(err.get("msg", "")).removeprefix("Value error, ")
    if err.get("type") == "value_error":  # our own validators: "unknown dtype 'x'; use one of ..."
        reason, _, hint = msg.partition("; ")
        return UsageError(reason, hint or _OPTION_HINTS.get(name))
    flag = _FLAGS.get(name, "--" + name.replace("_", "-"))
    key = f"{loc[1]!r}=" if name == "creation_options" and len(loc) > 1 else ""
    return UsageError(f"{flag} {key}{_short_repr(err.get('input'))} is not valid: {msg[:1].lower()}{msg[1:]}",
                      _OPTION_HINTS.get(name, "see docs/cli.md and docs/jobs.md for the options"))  # fmt: skip


def staged(output: str, common: dict[str, Any]) -> str:
    """The local path a job writes for ``-o output``: an ``s3://`` output is staged locally and uploaded (``common["upload"]``)."""
    from tilewise.remote_output import staged_output

    local, url = staged_output(output)
    if url is not None:
        common["upload"] = url
    return local


def _validated_common(options: Mapping[str, Any]) -> dict[str, Any]:
    from pydantic import ValidationError

    try:
        return _common(options)
    except ValidationError as exc:
        raise option_error(exc) from None


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
    if not isinstance(index, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", index):
        # The index names the output files (<stem>_<INDEX>.tif): a path in it would write elsewhere.
        raise UsageError(f"index name {_short_repr(index)} is not a plain name", "use letters, digits, - and _, e.g. --index ndre")
    index = index.lower()
    roles = INDICES.get(index)
    if roles is None and (a is None or b is None):
        raise UsageError(f"unknown index {index!r}", f"use one of {', '.join(INDICES)}, or give both bands with --a/--b")
    role_a, role_b = (roles[0], roles[1]) if roles else ("a", "b")
    _check_band(a, role_a)
    _check_band(b, role_b)
    _check_number(scale, "--scale")
    _check_number(offset, "--offset")
    if not output:
        raise UsageError("no output given", "add -o OUT.tif (or -o OUTDIR/ for many inputs)")
    stac_kw = _pop_stac(options)
    common = _validated_common(options)
    output = staged(output, common)
    ident = re.sub(r"\W", "_", role_a), re.sub(r"\W", "_", role_b)
    expression = normalized_difference(*ident)
    label = index.upper()
    flags = (f"--{role_a}", f"--{role_b}") if index == "ndvi" else ("--a", "--b")
    named = [(ident[0], (flags[0], a)), (ident[1], (flags[1], b))]
    stac_inputs = _stac_inputs(stac_kw, dict(named[::-1] if index == "ndvi" else named), {ident[0]: scale, ident[1]: scale},
                               {ident[0]: offset, ident[1]: offset})  # fmt: skip
    if stac_inputs is not None:  # --stac: a and b name assets, each mosaicked over the selected items
        if inputs or from_list:
            raise UsageError("give either INPUT files or --stac, not both",
                             f"e.g. tilewise {index} --stac CATALOG {flags[0]} ASSET {flags[1]} ASSET -o OUT.tif")  # fmt: skip
        if output.endswith(("/", "\\")) or Path(output).is_dir():
            raise UsageError(f"--stac writes one raster; -o {output!r} is a directory", f"give a file name, e.g. -o {index}.tif")
        item = ItemSpec(inputs=stac_inputs[0], output=output, **stac_inputs[1])
        return build_job(command=index, expression=expression, band_name=label, items=(item,), output_root=output, batch=False, **common)
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
    items_list: list[ItemSpec] = []
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
        if any(it.output == out for it in items_list):
            raise UsageError(f"two inputs would both write {out!r}", "inputs in a batch need different file names")
        items_list.append(ItemSpec(inputs=specs, output=out))
    root = (output.rstrip("/") or output) if batch else output
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
        raise option_error(exc) from None
    fp = validate_focal(spec)
    if not output:
        raise UsageError("no output given", "add -o OUT.tif (or -o OUTDIR/ for many inputs or --mosaic)")
    common = _validated_common(options)
    output = staged(output, common)
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
    root = (output.rstrip("/") or output) if batch else output
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
        if not isinstance(mapping, Mapping):
            raise UsageError(f"{what} {_short_repr(mapping)} is not a table of NAME = VALUE", f"e.g. {what} a=0.5 ({what[2:]}s = {{ a = 0.5 }} in a job file)")
        for key, value in mapping.items():
            _check_number(value, f"{what} {key}=")
            if key not in inputs:
                raise UsageError(f"{what} names {key!r}, which is not an input", f"inputs are: {', '.join(inputs)}")
    specs = []
    for n, spec in inputs.items():
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", n):
            raise UsageError(f"input name {n!r} is not a valid name", "use letters, digits and _ (starting with a letter), e.g. -i red=b4.tif")
        path, band = split_band_spec(spec)
        specs.append(InputSpec(name=n, path=path, band=_band_value(band), scale=scales.get(n), offset=offsets.get(n)))
    # --stac: every input names an asset (-i red=B04), mosaicked over the selected items.
    stac_inputs = _stac_inputs(_pop_stac(options), {n: (f"-i {n}=", v) for n, v in inputs.items()}, scales, offsets)
    if output.endswith("/") or Path(output).is_dir():
        raise UsageError(f"calc writes one raster; -o {output!r} is a directory", "give a file name, e.g. -o result.tif")
    common = _validated_common(options)
    output = staged(output, common)
    item = ItemSpec(inputs=tuple(specs), output=output) if stac_inputs is None else ItemSpec(inputs=stac_inputs[0], output=output, **stac_inputs[1])
    return build_job(command="calc", expression=expression, band_name=name or "calc", items=(item,),
                     output_root=output, batch=False, **common)  # fmt: skip


# Options of ndvi, normdiff and calc that read their inputs as mosaics of STAC items' assets.
STAC_MOSAIC_OPTIONS = ("stac", "collection", "datetime", "stac_bbox", "query", "crs", "resolution")


def _pop_stac(options: dict[str, Any]) -> dict[str, Any]:
    return {k: options.pop(k) for k in STAC_MOSAIC_OPTIONS if k in options}


def _stac_inputs(stac_kw: Mapping[str, Any], assets: Mapping[str, tuple[str, Any]], scales: Mapping[str, Any],
                 offsets: Mapping[str, Any]) -> tuple[tuple[InputSpec, ...], dict[str, Any]] | None:  # fmt: skip
    """The inputs (one per asset) and grid fields of a STAC mosaic job, or None without ``stac``.

    ``assets`` maps each input name to (its flag, for messages; the asset it names).
    """
    given = [k for k in STAC_MOSAIC_OPTIONS if stac_kw.get(k) not in (None, "", (), [])]
    if "stac" not in given:
        if given:
            raise UsageError(f"--{given[0].replace('_', '-')} is given without --stac",
                             "add --stac URL_OR_FILE (a STAC API or catalog) to read STAC items' assets, or leave the option out")  # fmt: skip
        return None
    from tilewise.timeseries import _grid_kw, _stac_spec

    missing = [flag for flag, asset in assets.values() if not isinstance(asset, str | int) or isinstance(asset, bool) or not str(asset).strip()]
    if missing:
        shown = " and ".join(f"{f}{'' if f.endswith('=') else ' '}ASSET" for f, _ in assets.values())
        raise UsageError(f"--stac needs {shown}", "name the items' assets to read, e.g. --red B04 --nir B08 (the keys of an item's 'assets')")
    for n in assets:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", n):
            raise UsageError(f"input name {n!r} is not a valid name", "use letters, digits and _ (starting with a letter), e.g. -i red=B04")
    grid = _grid_kw(stac_kw.get("crs"), stac_kw.get("resolution"), None)
    specs = []
    for n, (_flag, asset) in assets.items():
        stac = _stac_spec([], None, None, None, stac_kw["stac"], stac_kw.get("collection"), stac_kw.get("datetime"), stac_kw.get("stac_bbox"),
                          stac_kw.get("query"), str(asset).strip())  # fmt: skip
        assert stac is not None
        specs.append(InputSpec(name=n, path=stac.source, band=stac.asset, scale=scales.get(n), offset=offsets.get(n), stac=stac))
    return tuple(specs), {k: v for k, v in grid.items() if k in ("crs", "resolution")}


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
        tile_size, executor, workers, retries, fail_fast, dtype, nodata, compress,
        level, predictor, creation_options, overviews, align, keep_tiles, s3_endpoint
        (``http(s)://HOST[:PORT]`` of an S3-compatible store for ``s3://`` inputs
        and outputs), cache (a folder keeping remote inputs' blocks for re-runs).
        ``output`` may be ``s3://BUCKET/KEY.tif`` (docs/remote.md).

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
    if p.is_dir():
        raise InputError(f"job file {path!r} is a directory", "give the path of a .toml, .yaml or .json job file")
    if not p.is_file():
        raise InputError(f"job file {path!r} does not exist", "give the path of a .toml, .yaml or .json job file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"job file {path!r} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})",
                         "save it as UTF-8 text (.toml, .yaml or .json)") from None  # fmt: skip
    except OSError as exc:
        raise InputError(f"cannot read job file {path!r} ({exc.strerror or exc})", "check the file's permissions") from None
    fmt = {".toml": "TOML", ".yaml": "YAML", ".yml": "YAML"}.get(p.suffix, "JSON")
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
        hint = f"fix the {fmt} syntax there (docs/jobs.md shows examples)"
        if fmt == "YAML" and "python/" in str(exc):
            hint = "job files hold plain values; Python tags such as !!python/object are refused"
        elif fmt == "JSON" and p.suffix != ".json":
            hint = "job files are .toml, .yaml/.yml or .json (other names are read as JSON)"
        raise UsageError(f"cannot parse job file {path!r} as {fmt}: {_parse_problem(exc)}", hint) from None
    _check_size(data, path)
    if not isinstance(data, dict):
        kind = "nothing" if data is None else f"a {type(data).__name__}"
        raise UsageError(f"job file {path!r} holds {kind}, not a table of options",
                         'write command = "..." and the options as keys (docs/jobs.md)')  # fmt: skip
    if "job" in data and "fingerprint" in data:
        data = data["job"]
    if "items" in data:
        return Job.from_json(__import__("json").dumps(data))
    return job_from_options(dict(data), source=path)


def _path_list(data: dict[str, Any], source: str) -> list[str]:
    inputs = data.pop("inputs", data.pop("input", []))
    inputs = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
        raise UsageError(f"{source}: inputs {_short_repr(inputs)} is not a path or a list of paths", 'write inputs = ["a.tif", "scenes/"]')
    return inputs


def _text_option(data: dict[str, Any], key: str, source: str, default: Any = "") -> Any:
    value = data.pop(key, default)
    if value is not None and not isinstance(value, str):
        raise UsageError(f"{source}: {key} {_short_repr(value)} is not text", f'write {key} = "..." in quotes')
    return value


MAX_JOB_VALUES = 100_000
"""Most values (counting every repeat of a YAML alias) a job file may hold."""


def _check_size(data: Any, path: str) -> None:
    """Refuse a job file that expands to a huge or endless structure (YAML aliases: "billion laughs", self-references)."""
    count, stack = 0, [data]
    while stack:
        value = stack.pop()
        count += 1
        if count > MAX_JOB_VALUES:
            raise UsageError(f"job file {path!r} holds more than {MAX_JOB_VALUES} values (counting repeated YAML aliases)",
                             "a job needs a command and a few options; list many inputs in a --from-list style file (from_list = \"FILE\")")  # fmt: skip
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)


def _parse_problem(exc: Exception) -> str:
    """The useful part of a TOML/YAML/JSON parser's error: the problem and where it is."""
    problem = getattr(exc, "problem", None)  # PyYAML's MarkedYAMLError
    if problem:
        mark = getattr(exc, "problem_mark", None)
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(problem)
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def job_from_options(data: dict[str, Any], source: str = "job file") -> Job:
    """Build a job from ``command`` plus that command's keyword options (job files, tests)."""
    command = str(data.pop("command", ""))
    if not command:
        raise UsageError(f"{source} names no command", 'add command = "ndvi" (or "normdiff", "calc", "focal")')
    try:
        if command in ("ndvi",):
            inputs = _path_list(data, source)
            red, nir = data.pop("red", None), data.pop("nir", None)
            return normdiff_job(inputs, _text_option(data, "output", source), index="ndvi", a=nir, b=red, **data)
        if command == "normdiff":
            inputs = _path_list(data, source)
            return normdiff_job(inputs, _text_option(data, "output", source), **data)
        if command == "focal":
            inputs = _path_list(data, source)
            return focal_job(inputs, _text_option(data, "output", source), **data)
        if command == "rasterize":
            from tilewise.polygons import rasterize_job

            return rasterize_job(_path_list(data, source), _text_option(data, "output", source), **data)
        if command == "reduce":
            from tilewise.timeseries import reduce_job

            return reduce_job(_path_list(data, source), _text_option(data, "output", source), **data)
        if command == "calc":
            table = data.pop("inputs", {})
            if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
                raise UsageError(f"{source}: inputs {_short_repr(table)} is not a table of NAME = \"PATH[:BAND]\"",
                                 'write inputs = { t = "day.tif", red = "L7.tif:3" }')  # fmt: skip
            return calc_job(_text_option(data, "expression", source), table, _text_option(data, "output", source), **data)
    except TypeError as exc:
        raise UsageError(f"{source}: {exc}", "see docs/jobs.md for the options of each command and their types") from None
    raise UsageError(f"{source}: unknown command {command!r}", "use command = \"ndvi\", \"normdiff\", \"calc\", \"focal\", \"reduce\" or \"rasterize\"")
