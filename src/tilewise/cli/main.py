"""``tilewise`` command line: one subcommand per job type, plus run/resume/status/info/quicklook.

Every failure goes through :func:`main`: a :class:`~tilewise.errors.TilewiseError`
becomes one ``Error: ...`` line on stderr and its exit code (2 for bad usage or
input, 1 for a failed run); a traceback only with ``-v``.
"""

from __future__ import annotations

import functools
import json
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from tilewise import __version__
from tilewise.errors import TilewiseError, UsageError

F = Callable[..., Any]


def _parse_kv(values: Sequence[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        key, sep, val = v.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{what} {v!r} is not KEY=VALUE", f"write it like {what} NAME=VALUE")
        out[key.strip()] = val
    return out


def _parse_float_kv(values: Sequence[str], what: str) -> dict[str, float]:
    out = {}
    for k, v in _parse_kv(values, what).items():
        try:
            out[k] = float(v)
        except ValueError:
            raise UsageError(f"{what} {k}={v!r}: {v!r} is not a number", f"write it like {what} {k}=0.0001") from None
    return out


def executor_options(f: F, *, saved: bool = False) -> F:
    """Where a job runs: executor, engine settings and cluster resources (shared by job commands, run and resume).

    With ``saved`` (run, resume) nothing has a default: options left out keep the job's values.
    """

    def d(value: Any) -> Any:
        return None if saved else value

    opts = [
        click.option("--executor", default=d("processes"), show_default=not saved,
                     help="Where tiles run: processes, threads, serial, dask, parsl, slurm or gnu-parallel."),
        click.option("--workers", type=int, default=None, help="Number of workers (default: usable cores; dask: worker processes)."),
        click.option("--retries", type=int, default=d(2), show_default=not saved, help="Retries of a failing tile before it is reported."),
        click.option("--fail-fast/--keep-going", "fail_fast", default=d(False),
                     help="Stop at the first tile that fails all its retries, or (the default) finish the other tiles first; exit 1 either way."),
        click.option("--tiles-per-task", type=int, default=None, help="Tiles per engine task or batch part (default: sized for the engine)."),
        click.option("--threads-per-worker", type=int, default=None, help="dask: threads per worker process (default 1)."),
        click.option("--memory-limit", default=None, help="dask: memory limit per worker, e.g. 4GB (default auto)."),
        click.option("--scheduler", default=None, metavar="ADDRESS", help="dask: use the running scheduler at ADDRESS (tcp://host:8786)."),
        click.option("--dask-cluster", type=click.Choice(["local", "slurm"]), default=None,
                     help="dask: a LocalCluster (default) or a dask-jobqueue SLURMCluster with the resources below."),
        click.option("--adapt", default=None, metavar="MIN:MAX", help="dask-jobqueue: adaptive scaling between MIN and MAX batch jobs."),
        click.option("--parsl-provider", type=click.Choice(["local", "slurm"]), default=None, help="parsl: LocalProvider (default) or SlurmProvider."),
        click.option("--blocks", type=int, default=None, help="parsl / dask-jobqueue: number of batch jobs (blocks) to start (default 1)."),
        click.option("--workers-per-node", type=int, default=None, help="parsl: workers per node (default: --workers or usable cores)."),
        click.option("--parts", type=int, default=None, help="slurm / gnu-parallel: number of parts (array elements, parallel jobs)."),
        click.option("--max-running", type=int, default=None, help="slurm: at most M array elements at once (--array=1-N%M); gnu-parallel: -j M."),
        click.option("--interface", default=None, help="dask / parsl: network interface the workers reach the scheduler on (ib0, lo)."),
        click.option("--partition", default=None, help="Cluster resources: SLURM partition (queue)."),
        click.option("--account", default=None, help="SLURM account (project) to charge."),
        click.option("--time", "time_limit", default=None, help="Time limit per batch job, e.g. 01:30:00 (default: estimated from the job)."),
        click.option("--cpus-per-task", type=int, default=None, help="Cores per batch job (default 1)."),
        click.option("--mem-per-cpu", default=None, help="Memory per core, e.g. 2G (default: estimated from the tile size)."),
        click.option("--mem", default=None, help="Memory per node instead of --mem-per-cpu, e.g. 16G."),
        click.option("--nodes", type=int, default=None, help="Nodes per batch job (default 1)."),
        click.option("--sbatch-arg", "sbatch_args", multiple=True, help="Extra sbatch argument, e.g. --sbatch-arg=--qos=short (repeatable)."),
        click.option("--module", "modules", multiple=True, help="'module load' this in the worker environment (repeatable)."),
        click.option("--setup", multiple=True, help="Shell line run before a worker starts, e.g. 'source venv/bin/activate' (repeatable)."),
        click.option("--dry-run", is_flag=True, help="slurm / gnu-parallel: write the batch script or task list and print it; submit nothing."),
        click.option("--no-wait", is_flag=True, help="slurm: return once submitted (follow later with 'tilewise status OUT')."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


EXECUTOR_KEYS = ("executor", "workers", "retries", "fail_fast", "tiles_per_task", "threads_per_worker", "memory_limit", "scheduler", "dask_cluster",
                 "adapt", "parsl_provider", "blocks", "workers_per_node", "parts", "max_running", "interface", "partition", "account", "cpus_per_task",
                 "mem_per_cpu", "mem", "nodes", "sbatch_args", "modules", "setup")  # fmt: skip


def _saved_executor_options(f: F) -> F:
    return executor_options(f, saved=True)


def _executor_kw(kw: dict[str, Any]) -> dict[str, Any]:
    out = {k: kw.pop(k) for k in EXECUTOR_KEYS}
    out["time"] = kw.pop("time_limit")
    return out


def _run_kw(kw: dict[str, Any]) -> dict[str, bool]:
    return {"dry_run": kw.pop("dry_run"), "wait": not kw.pop("no_wait")}


def job_options(f: F) -> F:
    """Options shared by every job command (like rasterio's shared options)."""
    opts = [
        click.option("--tile-size", type=int, default=None, help="Tile edge in pixels (default: 1024, aligned to the input's blocks;"
                     " whole strips for a striped input)."),
        click.option("--overwrite", is_flag=True, help="Replace existing outputs / start over an unfinished different job."),
        click.option("--dtype", default="float32", show_default=True, help="Output data type."),
        click.option("--nodata", type=float, default=None, help="Output nodata value (default: NaN for floats)."),
        click.option("--compress", default="zstd", show_default=True, help="zstd, deflate, lzw, lerc or none."),
        click.option("--level", type=int, default=None, help="Compression level (zstd default 1)."),
        click.option("--predictor", type=click.IntRange(1, 3), default=None, help="TIFF predictor 1/2/3 (default: 3 for floats, 2 for ints)."),
        click.option("--co", "creation_options", multiple=True, metavar="KEY=VALUE", help="GDAL COG creation option (repeatable)."),
        click.option("--no-overviews", is_flag=True, help="Do not build overviews."),
        click.option("--align", default=None, metavar="RESAMPLING", help="Resample inputs on other grids onto the first input's grid (e.g. bilinear)."),
        click.option("--keep-tiles", is_flag=True, help="Keep the per-tile files in the work directory."),
        click.option("--s3-endpoint", default=None, metavar="URL",
                     help="S3-compatible store for s3:// inputs, e.g. https://a3s.fi or http://127.0.0.1:9000 (path-style; credentials from "
                          "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE)."),
        click.option("--cache", default=None, metavar="DIR",
                     help="Keep the blocks read from remote (http, s3) inputs in DIR, so re-runs do not fetch them again (not pruned)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return executor_options(_warming(f))


def _warming(f: F) -> F:
    """Start the processes executor's forkserver as soon as a job command's (or stats') options are parsed.

    Its imports (~0.4 s) then run on another core while this process imports the job's
    modules and plans it, instead of after them: the workers take their first tile ~0.25 s
    sooner. (The runner warms it too, for API callers; starting it twice is a no-op.)
    """

    @functools.wraps(f)
    def command(*args: Any, **kw: Any) -> Any:
        if kw.get("executor") == "processes":
            from tilewise.executors.local import warm_forkserver

            warm_forkserver()
        return f(*args, **kw)

    return command


def _options(kw: dict[str, Any]) -> dict[str, Any]:
    """Pop the shared job options from a command's keywords (the run options stay for :func:`_run_kw`)."""
    return {
        "tile_size": kw.pop("tile_size"), "dtype": kw.pop("dtype"), "nodata": kw.pop("nodata"), "compress": kw.pop("compress"),
        "level": kw.pop("level"), "predictor": kw.pop("predictor"), "creation_options": _parse_kv(kw.pop("creation_options"), "--co"),
        "overviews": not kw.pop("no_overviews"), "align": kw.pop("align"), "keep_tiles": kw.pop("keep_tiles"),
        "s3_endpoint": kw.pop("s3_endpoint"), "cache": kw.pop("cache"),
        **_executor_kw(kw),
    }  # fmt: skip


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tilewise")
@click.option("-v", "--verbose", count=True, help="More output; -v also shows tracebacks on errors.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Parallel, tiled raster processing with the same bytes on every executor.

    Jobs are resumable: rerun the same command after a crash and only the
    missing tiles run. See https://github.com/ (docs/ in the source tree).
    """
    ctx.obj = {"verbosity": -1 if quiet else verbose}


def _run(ctx: click.Context, job: Any, overwrite: bool, dry_run: bool = False, wait: bool = True) -> None:
    from tilewise.cli.progress import ProgressPrinter
    from tilewise.runner import run_job

    verbosity = ctx.obj["verbosity"]
    try:
        summary = run_job(job, overwrite=overwrite, progress=ProgressPrinter(verbosity), dry_run=dry_run, wait=wait)
    except KeyboardInterrupt:
        if job.executor.name == "slurm" and not dry_run:
            # Only the follower stops: the jobs it submitted run on.
            click.echo(f"Stopped following; the SLURM jobs keep running. 'tilewise status {job.output_root}' shows them.", err=True)
            sys.exit(0)
        raise
    if summary.pending:
        click.echo(format_batch(summary, job.output_root))
    elif verbosity >= 0 and job.tile_set:
        click.echo(format_tiles(summary, job))
    elif verbosity >= 0:
        click.echo(format_summary(summary, job.band_name))
        if job.rasterize is not None:  # --like: what staging did with the polygons
            from tilewise.polygons import like_report
            from tilewise.sources.vector import StageReport

            report = like_report(job)
            if report:
                click.echo(StageReport(**report).describe())


def format_batch(s: Any, output: str) -> str:
    """What a batch launch wrote and submitted (slurm, gnu-parallel), and how to go on."""
    b = s.batch
    if b.get("system") == "slurm":
        if "script" in b:  # dry run
            return "\n".join([b["script"].rstrip(), "", "# to submit:", *b["commands"],
                              f"# scripts written to {Path(b['finish_script']).parent}; 'tilewise status {output}' follows progress"])  # fmt: skip
        what = f"array job {b['array_job']}" if b.get("array_job") else "no array (every tile is done)"
        return (f"submitted SLURM {what} and finishing job {b['finish_job']} ({len(b['run'])} of {b['parts']} parts)\n"
                f"follow with 'tilewise status {output}'; 'tilewise resume {output}' resubmits parts that did not finish")
    head = "GNU parallel is not installed; " if not b.get("installed", True) else ""
    return "\n".join([f"# {head}{len(b['run'])} of {b['parts']} parts listed in {b['tasks_file']}; run them with:", b["command"],
                      "# then write the outputs with:", b["finish_command"]])  # fmt: skip


def format_summary(s: Any, label: str) -> str:
    """A short human summary of a :class:`~tilewise.runner.RunSummary`."""
    if s.already_complete:
        head = f"already complete: {len(s.outputs)} output(s), nothing to do"
    else:
        mpix = s.pixels / 1e6
        rate = mpix / s.wall_s if s.wall_s > 0 else 0.0
        head = (f"{s.tiles_run} tile(s) run, {s.tiles_skipped} already done, {mpix:.1f} Mpix in {s.wall_s:.1f} s "
                f"({rate:.1f} Mpix/s on {s.workers} worker(s), executor {s.executor})")  # fmt: skip
    lines = [head]
    if s.mean is not None:
        share = 100 * s.valid / max(s.pixels, 1)
        lines.append(f"{label}: min {s.minimum:.4g}, mean {s.mean:.4g}, max {s.maximum:.4g} over {s.valid} valid pixels ({share:.1f}%)")
    if 1 < len(s.outputs) <= 20:
        for i, path in enumerate(s.outputs):
            po = s.per_output.get(str(i))
            if po and po["valid"]:
                lines.append(f"  {Path(path).name}: mean {po['sum'] / po['valid']:.4g}, min {po['min']:.4g}, max {po['max']:.4g}")
    shown = s.outputs if len(s.outputs) <= 5 else [*s.outputs[:4], f"... and {len(s.outputs) - 4} more"]
    lines += [f"output: {p}" for p in shown]
    return "\n".join(lines)


def _grid_opts() -> list[Any]:
    """--crs and --resolution: the grid inputs on other grids are resampled onto (with --align RESAMPLING, default nearest)."""
    return [
        click.option("--crs", default=None, metavar="CRS",
                     help="Output CRS (EPSG:32633, ...); inputs in other CRSs or resolutions are resampled (--align, default nearest)."),
        click.option("--resolution", default=None, metavar="RES|XRES,YRES",
                     help="Output pixel size in units of the CRS; the grid's corners are multiples of it (like gdalwarp -tap)."),
    ]  # fmt: skip


def mosaic_options(f: F) -> F:
    """STAC items as the inputs of a per-pixel command: each asset is mosaicked over the selected items."""
    opts = [
        click.option("--stac", default=None, metavar="URL|FILE",
                     help="Inputs from STAC items: a STAC API root URL, or a static catalog / collection / item collection JSON; "
                          "the band options (-i NAME=ASSET, --red/--nir) then name assets, each mosaicked over the items."),
        click.option("--collection", multiple=True, metavar="C", help="With --stac: only items of this collection (repeatable)."),
        click.option("--datetime", default=None, metavar="A/B",
                     help="With --stac: items dated in this interval (inclusive; YYYY, YYYY-MM, YYYY-MM-DD or RFC 3339; '..' for an open end)."),
        click.option("--stac-bbox", default=None, metavar="MINX,MINY,MAXX,MAXY",
                     help="With --stac: items whose bbox meets this box (longitude/latitude); the output covers only this box."),
        click.option("--query", multiple=True, metavar="PROP<V",
                     help="With --stac: a property filter, e.g. 'eo:cloud_cover<20' (< <= > >= = !=; repeatable, all must hold)."),
        *_grid_opts(),
    ]  # fmt: skip
    for o in reversed(opts):
        f = o(f)
    return f


def _mosaic_kw(kw: dict[str, Any]) -> dict[str, Any]:
    out = {k: kw.pop(k) for k in ("stac", "datetime", "stac_bbox", "crs", "resolution")}
    out["collection"] = list(kw.pop("collection", ()) or ())
    out["query"] = list(kw.pop("query", ()) or ())
    return out


@cli.command()
@click.argument("inputs", nargs=-1, metavar="INPUT...")
@click.option("-o", "--output", required=True, help="Output .tif, or OUTDIR/ for many inputs (<stem>_NDVI.tif); s3://BUCKET/KEY.tif uploads it.")
@click.option("--red", default=None, help="Red band: 1-based index or name of INPUT, or a file PATH[:BAND]; with --stac an asset (B04).")
@click.option("--nir", default=None, help="NIR band: 1-based index or name of INPUT, or a file PATH[:BAND]; with --stac an asset (B08).")
@click.option("--from-list", type=str, default=None, help="Text file with one input path per line.")
@click.option("--scale", type=float, default=None, help="Scale for both bands, replacing the file's (value = DN*scale+offset).")
@click.option("--offset", type=float, default=None, help="Offset for both bands, replacing the file's.")
@mosaic_options
@job_options
@click.pass_context
def ndvi(ctx: click.Context, inputs: tuple[str, ...], output: str, red: str | None, nir: str | None, from_list: str | None,
         scale: float | None, offset: float | None, overwrite: bool, **kw: Any) -> None:  # fmt: skip
    """NDVI = (NIR - red) / (NIR + red) from Sentinel-2 SAFE folders or any rasters.

    \b
    tilewise ndvi S2B_MSIL2A_...SAFE -o ndvi.tif
    tilewise ndvi L7_ETMs.tif --red 3 --nir 4 -o ndvi.tif
    tilewise ndvi --red b4.tif --nir b5.tif -o ndvi.tif
    tilewise ndvi scenes/*.SAFE -o ndvi/        (or --from-list list.txt)
    tilewise ndvi --stac https://stac.example.org/v1 --collection sentinel-2-l2a --datetime 2021-06-01 --red B04 --nir B08 -o ndvi.tif
    """
    from tilewise.api import normdiff_job

    stac = _mosaic_kw(kw)
    job = normdiff_job(list(inputs), output, index="ndvi", a=nir, b=red, from_list=from_list, scale=scale, offset=offset, **stac, **_options(kw))
    _run(ctx, job, overwrite, **_run_kw(kw))


@cli.command()
@click.argument("inputs", nargs=-1, metavar="INPUT...")
@click.option("-o", "--output", required=True, help="Output .tif, or OUTDIR/ for many inputs (<stem>_<INDEX>.tif); s3://BUCKET/KEY.tif uploads it.")
@click.option("--index", "index", default="ndvi", show_default=True,
              help="ndvi, ndwi, mndwi, nbr, ndre, ndmi, ndsi (SAFE bands chosen for you), or any name with --a/--b.")
@click.option("--a", "a", default=None, help="First band (1-based index, name, or PATH[:BAND]).")
@click.option("--b", "b", default=None, help="Second band (1-based index, name, or PATH[:BAND]).")
@click.option("--from-list", type=str, default=None, help="Text file with one input path per line.")
@mosaic_options
@job_options
@click.pass_context
def normdiff(ctx: click.Context, inputs: tuple[str, ...], output: str, index: str, a: str | None, b: str | None,
             from_list: str | None, overwrite: bool, **kw: Any) -> None:  # fmt: skip
    """A normalized difference (a - b) / (a + b): NDWI, NBR, NDRE, NDMI, ...

    \b
    tilewise normdiff S2.SAFE --index nbr -o nbr.tif          (B08, B12 with --align)
    tilewise normdiff s2_B8A.tif --a s2_B8A.tif --b s2_B05.tif --index ndre -o ndre.tif
    """
    from tilewise.api import normdiff_job

    stac = _mosaic_kw(kw)
    job = normdiff_job(list(inputs), output, index=index, a=a, b=b, from_list=from_list, **stac, **_options(kw))
    _run(ctx, job, overwrite, **_run_kw(kw))


@cli.command()
@click.argument("expression")
@click.option("-i", "--input", "inputs", multiple=True, required=True, metavar="NAME=PATH[:BAND]", help="A named input band (repeatable).")
@click.option("-o", "--output", required=True, help="Output .tif (s3://BUCKET/KEY.tif uploads it).")
@click.option("--scale", "scales", multiple=True, metavar="NAME=V", help="Scale of an input, replacing the file's.")
@click.option("--offset", "offsets", multiple=True, metavar="NAME=V", help="Offset of an input, replacing the file's.")
@click.option("--name", default=None, help="Band description of the output (default: calc).")
@mosaic_options
@job_options
@click.pass_context
def calc(ctx: click.Context, expression: str, inputs: tuple[str, ...], output: str, scales: tuple[str, ...], offsets: tuple[str, ...],
         name: str | None, overwrite: bool, **kw: Any) -> None:  # fmt: skip
    """Band math on named inputs with a safe expression language.

    \b
    tilewise calc "t * 9 / 5 + 32" -i t=day.tif -o f.tif
    tilewise calc "where(nir > red, 1, 0)" -i red=L7.tif:3 -i nir=L7.tif:4 --dtype uint8 -o veg.tif
    tilewise calc "(nir - red) / (nir + red)" --stac items.json -i red=B04 -i nir=B08 -o ndvi.tif

    Masked input pixels give nodata in the output. Functions: where, clip, abs,
    sqrt, exp, log, log10, sin, cos, min, max, ... (docs/expressions.md).
    """
    from tilewise.api import calc_job

    stac = _mosaic_kw(kw)
    job = calc_job(expression, _parse_kv(inputs, "-i"), output, scales=_parse_float_kv(scales, "--scale"),
                   offsets=_parse_float_kv(offsets, "--offset"), name=name, **stac, **_options(kw))  # fmt: skip
    _run(ctx, job, overwrite, **_run_kw(kw))


@cli.command()
@click.argument("inputs", nargs=-1, metavar="INPUT...")
@click.option("-o", "--output", required=True, help="Output .tif, or OUTDIR/ for many inputs or --mosaic (<stem>_<stat>_<window>.tif); s3:// URLs upload.")
@click.option("--stat", default="mean", show_default=True, help="mean, sum, min, max, std, variance, range, median or count (valid cells).")
@click.option("--size", type=int, default=None, help="Square window of K x K pixels (odd K).")
@click.option("--radius", type=int, default=None, help="Circular window of radius R pixels (instead of --size).")
@click.option("--edge", default="nodata", show_default=True,
              help="Where the window leaves the raster: nodata, partial (use the part inside), reflect or nearest.")
@click.option("--min-valid", type=float, default=0.0, show_default=True, help="Fraction of the window that must be valid, else nodata.")
@click.option("--subtract-from-input", "subtract", is_flag=True, help="Write value - statistic (local relief / high-pass).")
@click.option("--band", "bands", type=int, multiple=True, help="1-based band to filter (repeatable; default all bands).")
@click.option("--mosaic", is_flag=True, help="Inputs are adjacent map sheets: filter them as one surface, one output per sheet.")
@click.option("--from-list", type=str, default=None, help="Text file with one input path per line.")
@job_options
@click.pass_context
def focal(ctx: click.Context, inputs: tuple[str, ...], output: str, stat: str, size: int | None, radius: int | None, edge: str,
          min_valid: float, subtract: bool, bands: tuple[int, ...], mosaic: bool, from_list: str | None, overwrite: bool, **kw: Any) -> None:  # fmt: skip
    """Focal (moving-window) statistics, nodata-aware, seamless across tiles and sheets.

    The window's halo is read automatically; masked pixels are left out of every
    statistic. Square windows cost the same per pixel at any size.

    \b
    tilewise focal dem.tif -o smooth.tif --stat mean --size 51
    tilewise focal dem.tif -o relief.tif --size 81 --subtract-from-input
    tilewise focal dem.tif -o rough.tif --stat std --radius 5 --min-valid 0.5
    tilewise focal sheet_*.tif -o filtered/ --mosaic --size 101
    """
    from tilewise.api import focal_job

    job = focal_job(list(inputs), output, stat=stat, size=size, radius=radius, edge=edge, min_valid=min_valid, subtract=subtract,
                    bands=bands or None, mosaic=mosaic, from_list=from_list, **_options(kw))  # fmt: skip
    _run(ctx, job, overwrite, **_run_kw(kw))


def stack_options(f: F) -> F:
    """How a dated stack is found and which of its dates are used (shared by reduce and stats)."""
    opts = [
        click.option("--date-pattern", default=None, metavar="PATTERN",
                     help="Date in the file names: strftime codes (chirps_pr_%Y%m%d.tif, himax.%Y.%m.%d.tif) or a regex with named groups."),
        click.option("--dates", default=None, metavar="FILE|metadata", help="Dates of the bands of one multi-band file: a file of dates, or 'metadata'."),
        click.option("--variable", default=None, help="netCDF variable with a time axis."),
        click.option("--duplicates", type=click.Choice(["error", "first", "last", "mean"]), default="error", show_default=True,
                     help="What to do with two files of the same date."),
        click.option("--start", default=None, metavar="DATE", help="First date to use (YYYY-MM-DD, YYYY-MM or YYYY)."),
        click.option("--end", default=None, metavar="DATE", help="Last date to use, inclusive (YYYY-MM-DD, YYYY-MM or YYYY)."),
        click.option("--months", default=None, metavar="M,M,...", help="Only these months, e.g. 6,7,8, jun-aug or 12-2."),
        click.option("--every", type=int, default=None, metavar="N", help="Every Nth date of the selection."),
        click.option("--bbox", default=None, metavar="MINX,MINY,MAXX,MAXY", help="Only this box (in the stack's CRS, or --bbox-crs)."),
        click.option("--bbox-crs", default=None, help="CRS of --bbox, e.g. EPSG:4326."),
        click.option("--stac", default=None, metavar="URL|FILE",
                     help="Stack from STAC items instead of files: a STAC API root URL, or a static catalog / collection / item collection JSON."),
        click.option("--collection", multiple=True, metavar="C", help="With --stac: only items of this collection (repeatable)."),
        click.option("--datetime", default=None, metavar="A/B",
                     help="With --stac: items dated in this interval (inclusive; YYYY, YYYY-MM, YYYY-MM-DD or RFC 3339; '..' for an open end)."),
        click.option("--stac-bbox", default=None, metavar="MINX,MINY,MAXX,MAXY", help="With --stac: items whose bbox meets this box (longitude/latitude)."),
        click.option("--query", multiple=True, metavar="PROP<V",
                     help="With --stac: a property filter, e.g. 'eo:cloud_cover<20' (< <= > >= = !=; repeatable, all must hold)."),
        click.option("--asset", default=None, metavar="NAME", help="With --stac: the asset of each item to read (one band per item)."),
        *_grid_opts(),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _stack_kw(kw: dict[str, Any]) -> dict[str, Any]:
    out = {k: kw.pop(k) for k in ("date_pattern", "dates", "variable", "duplicates", "start", "end", "months", "every", "bbox", "bbox_crs",
                                  "stac", "datetime", "stac_bbox", "asset", "crs", "resolution")}  # fmt: skip
    out["collection"] = list(kw.pop("collection", ()) or ())
    out["query"] = list(kw.pop("query", ()) or ())
    return out


@cli.command()
@click.argument("stack", nargs=-1, required=False, metavar="[STACK...]")
@click.option("-o", "--output", required=True, help="Output .tif, one band per group (s3://BUCKET/KEY.tif uploads it).")
@click.option("--stat", default="mean", show_default=True, help="mean, sum, count, std, min, max, median, pNN (e.g. p90) or argmax-date.")
@click.option("--groupby", type=click.Choice(["all", "month", "season", "year"]), default="all", show_default=True, help="One output band per group.")
@click.option("--expr", default="", metavar="EXPR", help="Applied to each date first, in the variable t, e.g. 't * 9 / 5 + 32'.")
@stack_options
@job_options
@click.pass_context
def reduce(ctx: click.Context, stack: tuple[str, ...], output: str, stat: str, groupby: str, expr: str, overwrite: bool, **kw: Any) -> None:
    """Per-pixel statistic over the dates of a stack, in memory independent of their number.

    \b
    tilewise reduce chirps/ --date-pattern 'chirps_pr_%Y%m%d.tif' -o mean.tif
    tilewise reduce himax/ --date-pattern 'himax.%Y.%m.%d.tif' --expr 't * 9 / 5 + 32' --groupby month -o monthly_F.tif
    tilewise reduce era5/ --date-pattern 'era5_%Y%m%d.tif' --stat p90 --months 6,7,8 -o p90_summer.tif
    tilewise reduce --stac https://stac.example.org/v1 --collection s1 --datetime 2021-06 --asset vv -o vv_mean.tif
    """
    from tilewise.timeseries import reduce_job

    stack_kw, run = _stack_kw(kw), _run_kw(kw)
    opts = _options(kw)
    if stat == "argmax-date" and ctx.get_parameter_source("dtype") == click.core.ParameterSource.DEFAULT:
        opts["dtype"] = None  # int32 for YYYYMMDD dates, unless asked otherwise
    job = reduce_job(list(stack), output, stat=stat, groupby=groupby, expr=expr, **stack_kw, **opts)
    _run(ctx, job, overwrite, **run)


@cli.command()
@click.argument("stack", nargs=-1, required=False, metavar="[STACK...]")
@click.option("-o", "--output", required=True, help="Table to write: .csv or .parquet (s3://BUCKET/KEY.csv uploads it).")
@click.option("--expr", default="", metavar="EXPR", help="Applied to each pixel first, in the variable t, e.g. 't * 9 / 5 + 32'.")
@click.option("--area-weighted/--no-area-weighted", default=None, help="Add the area-weighted mean (default: on geographic grids).")
@click.option("--plot", default=None, metavar="PNG", help="Also draw the series (mean, min-max) into this PNG.")
@click.option("--overwrite", is_flag=True, help="Replace an existing table or plot.")
@click.option("--executor", default="processes", show_default=True, help="Where the dates are computed: processes, threads, serial, dask or parsl.")
@click.option("--workers", type=int, default=None, help="Number of workers (default: usable cores).")
@click.option("--s3-endpoint", default=None, metavar="URL", help="S3-compatible store for s3:// members, table and plot, e.g. https://a3s.fi.")
@click.option("--cache", default=None, metavar="DIR", help="Keep the blocks read from remote members in DIR for re-runs (not pruned).")
@click.option("--align", "resampling", default=None, metavar="RESAMPLING", help="With --crs/--resolution: the resampling (default nearest).")
@stack_options
@_warming
@click.pass_context
def stats(ctx: click.Context, stack: tuple[str, ...], output: str, expr: str, area_weighted: bool | None, plot: str | None, overwrite: bool,
          executor: str, workers: int | None, s3_endpoint: str | None, cache: str | None, **kw: Any) -> None:  # fmt: skip
    """Per-date statistics of a stack: count of valid pixels, mean, min, max, std (and area-weighted mean).

    \b
    tilewise stats himax/ --date-pattern 'himax.%Y.%m.%d.tif' --expr 't * 9 / 5 + 32' -o daily.csv --plot daily.png
    tilewise stats --stac catalog.json --datetime 2021-01/2021-06 --query 'eo:cloud_cover<20' --asset B04 -o b04.csv
    """
    from tilewise.timeseries import stats as run_stats

    if executor in ("slurm", "gnu-parallel"):
        raise UsageError(f"tilewise stats does not run on --executor {executor}", "use processes, threads, serial, dask or parsl")
    rows = run_stats(list(stack), output, expr=expr, area_weighted=area_weighted, plot=plot, overwrite=overwrite, executor=executor,
                     workers=workers, s3_endpoint=s3_endpoint, cache=cache, resampling=kw.pop("resampling"), **_stack_kw(kw))  # fmt: skip
    if ctx.obj["verbosity"] >= 0:
        valid = [r for r in rows if r["count"]]
        click.echo(f"{len(rows)} date(s), {len(valid)} with valid pixels; table: {output}" + (f"; plot: {plot}" if plot else ""))


@cli.command()
@click.argument("vectors", nargs=-1, required=True, metavar="VECTOR...")
@click.option("-o", "--output", required=True, help="Output folder for TMS tiles, or a .tif with --like (that one may be s3://BUCKET/KEY.tif).")
@click.option("--stat", "stats", multiple=True, metavar="STAT",
              help="count, count-intersects, coverage, coverage-union or PROPERTY:AGG (AGG: sum, mean, min, max, count, median); "
                   "repeatable, one band each in this order (default: count and coverage).")
@click.option("--stats-config", default=None, metavar="FILE", help="TOML/JSON file of [[stat]] tables (name, kind, property, agg, resampling, palette, range).")
@click.option("--tms", default="WorldCRS84Quad", show_default=True, help="OGC tile matrix set (morecantile id), e.g. WebMercatorQuad.")
@click.option("--zoom", type=int, default=None, help="Zoom level of the tiles (e.g. 13).")
@click.option("--tile-px", type=int, default=256, show_default=True, help="Pixels along a tile's edge.")
@click.option("--like", default=None, metavar="REF.tif", help="Rasterize onto this raster's grid instead: -o is then one GeoTIFF (COG).")
@click.option("--id-column", default=None, help="Field identifying copies of a polygon across inputs (default staging_identifier when present, "
                                                 "else identical geometry).")  # fmt: skip
@click.option("--layer", default=None, help="Layer of multi-layer inputs (default: the first).")
@click.option("--parents", is_flag=True, help="Also build every level from ZOOM-1 down to --min-zoom from the children.")
@click.option("--min-zoom", type=int, default=0, show_default=True, help="Lowest level --parents builds.")
@click.option("--webtiles", is_flag=True, help="Also render RGBA PNG web tiles per stat and level, and web_tiles/index.html.")
@click.option("--palette", "palettes", multiple=True, metavar="[STAT=]NAME", help="Matplotlib colormap or colour list (#fff,#f00) for web tiles; repeatable.")
@click.option("--range", "ranges", multiple=True, metavar="[STAT=]MIN,MAX", help="Fixed web-tile value range (default: each zoom's min..max); repeatable.")
@click.option("--resampling", "resamplings", multiple=True, metavar="[STAT=]HOW",
              help="How parents merge 2x2 children: sum, mean, nanmean, min, max (default: sum for counts, mean for coverage).")
@click.option("--opaque-zero", is_flag=True, help="Draw zero pixels in web tiles (default: transparent).")
@click.option("--nodata", type=float, default=None, help="Nodata of the GeoTIFFs (default NaN; counts and coverage are 0 where no polygon).")
@click.option("--compress", default=None, help="GeoTIFF compression: deflate (default for tiles), zstd, lzw or none.")
@click.option("--level", type=int, default=None, help="Compression level.")
@click.option("--tile-size", type=int, default=None, help="--like: processing tile edge in pixels (a multiple of 512).")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs / start over an unfinished different job.")
@executor_options
@click.pass_context
def rasterize(ctx: click.Context, vectors: tuple[str, ...], output: str, stats: tuple[str, ...], stats_config: str | None, tms: str, zoom: int | None,
              tile_px: int, like: str | None, id_column: str | None, layer: str | None, parents: bool, min_zoom: int, webtiles: bool,
              palettes: tuple[str, ...], ranges: tuple[str, ...], resamplings: tuple[str, ...], opaque_zero: bool, overwrite: bool,
              **kw: Any) -> None:  # fmt: skip
    """Polygons to raster tiles: per-pixel count, coverage and attribute statistics on a tile matrix set.

    \b
    tilewise rasterize staged/*.gpkg -o tiles/ --zoom 13 --stat count --stat coverage --parents --webtiles
    tilewise rasterize lakes.gpkg -o tiles/ --tms WebMercatorQuad --zoom 12 --stat coverage-union --stat Area_start_ha:sum
    tilewise rasterize polygons.shp -o coverage.tif --like dem.tif --stat coverage
    """
    from tilewise.polygons import rasterize_job

    if stats and stats_config:
        raise UsageError("give --stat or --stats-config, not both", "list the statistics in one place")
    run = _run_kw(kw)
    opts = {k: kw.pop(k) for k in ("nodata", "compress", "level", "tile_size")}
    opts = {k: v for k, v in opts.items() if v is not None}
    job = rasterize_job(list(vectors), output, stats=list(stats) or ["count", "coverage"], tms=tms, zoom=zoom, tile_px=tile_px, like=like,
                        id_column=id_column, layer=layer, parents=parents, min_zoom=min_zoom, webtiles=webtiles, palette=list(palettes) or None,
                        value_range=list(ranges) or None, resampling=list(resamplings) or None, zero_transparent=False if opaque_zero else None,
                        stats_config=stats_config, **opts, **_executor_kw(kw))  # fmt: skip
    _run(ctx, job, overwrite, **run)


def format_tiles(s: Any, job: Any) -> str:
    """What a rasterize run onto TMS tiles wrote."""
    from tilewise.sources.vector import StageReport

    report = s.batch.get("report") or {}
    lines = []
    if s.already_complete:
        lines.append("already complete: nothing to do")
    else:
        lines.append(f"{s.tiles_run} tile(s) written, {s.tiles_skipped} already done in {s.wall_s:.1f} s (executor {s.executor}, {s.workers} worker(s))")
    if report:
        lines.append(StageReport(**report).describe())
    per = s.per_output.get("tiles_per_zoom") if isinstance(s.per_output, dict) else None
    if per:
        lines.append("tiles per zoom: " + ", ".join(f"z{z}: {n}" for z, n in per.items()))
    root = Path(job.output_root)
    lines.append(f"output: {root / 'geotiff'}; summary: {root / 'rasters_summary.csv'}")
    if job.rasterize.webtiles:
        lines.append(f"web tiles: {root / 'web_tiles'}; viewer: {root / 'web_tiles' / 'index.html'}")
    return "\n".join(lines)


@cli.command("run")
@click.argument("job_file")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs / start over.")
@_saved_executor_options
@click.pass_context
def run_cmd(ctx: click.Context, job_file: str, overwrite: bool, **kw: Any) -> None:
    """Run a job described in a TOML, YAML or JSON file (executor options given here replace the file's)."""
    from tilewise.api import load_job_file

    run = _run_kw(kw)
    job = _with_executor(load_job_file(job_file), _executor_kw(kw))
    _run(ctx, job, overwrite, **run)


def _with_executor(job: Any, options: dict[str, Any]) -> Any:
    from pydantic import ValidationError

    from tilewise.api import check_executor, executor_options, option_error

    check_executor(options.get("executor"), options.get("workers"))
    try:
        opts = executor_options(options, base=job.executor)
    except ValidationError as exc:
        raise option_error(exc) from None
    return job.model_copy(update={"executor": opts})


@cli.command()
@click.argument("output")
@_saved_executor_options
@click.pass_context
def resume(ctx: click.Context, output: str, **kw: Any) -> None:
    """Finish the job that writes OUTPUT, from its saved description.

    Executor options given here replace the saved ones (e.g. --executor processes to
    finish a cluster job locally, or --time 2:00:00 for SLURM parts that ran out of time).
    """
    from tilewise.status import load_saved_job

    run = _run_kw(kw)
    job, _ = load_saved_job(output)
    _run(ctx, _with_executor(job, _executor_kw(kw)), False, **run)


@cli.command(hidden=False)
@click.argument("workdir", type=click.Path(file_okay=False))
@click.option("--part", default=None, metavar="I/N", help="Run part I of N (what a SLURM array element or GNU parallel job runs).")
@click.option("--finish", is_flag=True, help="Write the outputs once every part has recorded its tiles.")
@click.pass_context
def worker(ctx: click.Context, workdir: str, part: str | None, finish: bool) -> None:
    """Run one part of a batch job (slurm, gnu-parallel) from its WORKDIR; the batch scripts call this."""
    from tilewise import launch
    from tilewise.cli.progress import ProgressPrinter

    progress = ProgressPrinter(ctx.obj["verbosity"], interval=30.0)
    if finish == (part is not None):
        raise UsageError("give exactly one of --part I/N and --finish", "e.g. tilewise worker WORKDIR --part 3/8")
    if finish:
        summary = launch.finish(Path(workdir), progress)
        if ctx.obj["verbosity"] >= 0:
            click.echo(format_summary(summary, ""))
        return
    assert part is not None
    i, sep, n = part.partition("/")
    if not (sep and i.strip().isdigit() and n.strip().isdigit()):
        raise UsageError(f"--part {part!r} is not I/N", "give the part number and the number of parts, e.g. --part 3/8")
    summary = launch.run_part(Path(workdir), int(i), int(n), progress)
    if ctx.obj["verbosity"] >= 0:
        click.echo(f"part {i}/{n}: {summary.tiles_run} tile(s) run, {summary.tiles_skipped} already done in {summary.wall_s:.1f} s")


@cli.command()
@click.argument("output")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(output: str, as_json: bool) -> None:
    """Show the state of the job that writes OUTPUT: tiles done, failures, lock holder."""
    from tilewise.status import job_status

    st = job_status(output)
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    click.echo(f"{st['output']}: {st['state']} ({st['command']}, job {st['fingerprint']})")
    click.echo(f"tiles {st['tiles_done']}/{st['tiles_total']}, outputs {st['outputs_done']}/{st['outputs_total']}")
    if st["lock_holder"]:
        click.echo(f"running: {st['lock_holder']}")
    batch = st.get("batch") or {}
    if batch:
        from tilewise.launch import describe_part

        jobs = ", ".join(f"{j} {state}" for j, state in sorted(batch["active"].items())) or "none"
        click.echo(f"batch ({batch['system']}, {batch['parts']} parts, {batch['submissions']} submission(s)); active jobs: {jobs}")
        for e in batch.get("unfinished", []):
            click.echo(f"unfinished {describe_part(e)}")
    for key, err in st["failed"].items():
        click.echo(f"failed {key}: {err}")


@cli.command()
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--stats", is_flag=True, help="Also compute per-band statistics (reads the whole raster).")
def info(path: str, as_json: bool, stats: bool) -> None:
    """Describe a raster: size, CRS, bands, nodata, blocks, overviews."""
    from tilewise.info import describe, format_info

    d = describe(path, stats=stats)
    click.echo(json.dumps(d, indent=2, default=str) if as_json else format_info(d))


@cli.command()
@click.argument("raster")
@click.option("-o", "--output", required=True, help="PNG to write.")
@click.option("--band", type=int, default=1, show_default=True)
@click.option("--cmap", default="viridis", show_default=True, help="Matplotlib colour map, e.g. YlGn for NDVI.")
@click.option("--vmin", type=float, default=None)
@click.option("--vmax", type=float, default=None)
@click.option("--max-size", type=int, default=1024, show_default=True, help="Longest side of the picture in pixels.")
@click.option("--title", default=None)
def quicklook(raster: str, output: str, band: int, cmap: str, vmin: float | None, vmax: float | None, max_size: int, title: str | None) -> None:
    """A downsampled, colour-mapped PNG with a colour bar, read from overviews."""
    from tilewise.quicklook import quicklook as ql

    click.echo(str(ql(raster, output, band=band, cmap=cmap, vmin=vmin, vmax=vmax, max_size=max_size, title=title)))


from tilewise.cli.bench import bench_group  # noqa: E402
from tilewise.cli.sheets import merge_cmd, split_cmd  # noqa: E402  (the commands live beside the group)

cli.add_command(split_cmd)
cli.add_command(merge_cmd)
cli.add_command(bench_group)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: run the CLI and turn every error into one line and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = any(a in ("-v", "--verbose") or (a.startswith("-v") and set(a[1:]) == {"v"}) for a in args)
    try:
        cli.main(args=args, prog_name="tilewise", standalone_mode=False)
    except TilewiseError as exc:
        if verbose:
            traceback.print_exc()
        click.echo(f"Error: {' '.join(str(exc).split(chr(10)))}", err=True)  # one line, whatever the value named in it
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "tilewise"
        click.echo(f"Error: {exc.format_message()} - see '{where} --help'", err=True)
        sys.exit(2)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("Interrupted: rerun the same command to resume where it stopped.", err=True)
        sys.exit(130)
    except OSError as exc:
        if verbose:
            traceback.print_exc()
        click.echo(f"Error: {exc.strerror or exc}: {exc.filename!r} - check free space and permissions, then rerun to resume", err=True)
        sys.exit(1)
    except Exception as exc:
        if verbose:
            traceback.print_exc()
        click.echo(f"Error: internal error {type(exc).__name__}: {exc} (rerun with -v for the traceback and report it)", err=True)
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
