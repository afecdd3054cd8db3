"""``tilewise`` command line: one subcommand per job type, plus run/resume/status/info/quicklook.

Every failure goes through :func:`main`: a :class:`~tilewise.errors.TilewiseError`
becomes one ``Error: ...`` line on stderr and its exit code (2 for bad usage or
input, 1 for a failed run); a traceback only with ``-v``.
"""

from __future__ import annotations

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


def job_options(f: F) -> F:
    """Options shared by every job command (like rasterio's shared options)."""
    opts = [
        click.option("--tile-size", type=int, default=None, help="Tile edge in pixels (default: 1024, aligned to the input's blocks)."),
        click.option("--executor", default="processes", show_default=True, help="Where tiles run: processes, threads or serial."),
        click.option("--workers", type=int, default=None, help="Number of workers (default: usable cores)."),
        click.option("--retries", type=int, default=2, show_default=True, help="Retries of a failing tile before it is reported."),
        click.option("--fail-fast/--keep-going", "fail_fast", default=False,
                     help="Stop at the first tile that fails all its retries, or (the default) finish the other tiles first; exit 1 either way."),
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
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _options(kw: dict[str, Any]) -> dict[str, Any]:
    return {
        "tile_size": kw.pop("tile_size"), "executor": kw.pop("executor"), "workers": kw.pop("workers"), "retries": kw.pop("retries"),
        "dtype": kw.pop("dtype"), "nodata": kw.pop("nodata"), "compress": kw.pop("compress"), "level": kw.pop("level"),
        "predictor": kw.pop("predictor"), "creation_options": _parse_kv(kw.pop("creation_options"), "--co"),
        "overviews": not kw.pop("no_overviews"), "align": kw.pop("align"), "keep_tiles": kw.pop("keep_tiles"), "fail_fast": kw.pop("fail_fast"),
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


def _run(ctx: click.Context, job: Any, overwrite: bool) -> None:
    from tilewise.cli.progress import ProgressPrinter
    from tilewise.runner import run_job

    verbosity = ctx.obj["verbosity"]
    summary = run_job(job, overwrite=overwrite, progress=ProgressPrinter(verbosity))
    if verbosity >= 0:
        click.echo(format_summary(summary, job.band_name))


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


@cli.command()
@click.argument("inputs", nargs=-1, metavar="INPUT...")
@click.option("-o", "--output", required=True, help="Output .tif, or OUTDIR/ for many inputs (<stem>_NDVI.tif).")
@click.option("--red", default=None, help="Red band: 1-based index or name of INPUT, or a file PATH[:BAND].")
@click.option("--nir", default=None, help="NIR band: 1-based index or name of INPUT, or a file PATH[:BAND].")
@click.option("--from-list", type=str, default=None, help="Text file with one input path per line.")
@click.option("--scale", type=float, default=None, help="Scale for both bands, replacing the file's (value = DN*scale+offset).")
@click.option("--offset", type=float, default=None, help="Offset for both bands, replacing the file's.")
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
    """
    from tilewise.api import normdiff_job

    job = normdiff_job(list(inputs), output, index="ndvi", a=nir, b=red, from_list=from_list, scale=scale, offset=offset, **_options(kw))
    _run(ctx, job, overwrite)


@cli.command()
@click.argument("inputs", nargs=-1, metavar="INPUT...")
@click.option("-o", "--output", required=True, help="Output .tif, or OUTDIR/ for many inputs (<stem>_<INDEX>.tif).")
@click.option("--index", "index", default="ndvi", show_default=True,
              help="ndvi, ndwi, mndwi, nbr, ndre, ndmi, ndsi (SAFE bands chosen for you), or any name with --a/--b.")
@click.option("--a", "a", default=None, help="First band (1-based index, name, or PATH[:BAND]).")
@click.option("--b", "b", default=None, help="Second band (1-based index, name, or PATH[:BAND]).")
@click.option("--from-list", type=str, default=None, help="Text file with one input path per line.")
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

    job = normdiff_job(list(inputs), output, index=index, a=a, b=b, from_list=from_list, **_options(kw))
    _run(ctx, job, overwrite)


@cli.command()
@click.argument("expression")
@click.option("-i", "--input", "inputs", multiple=True, required=True, metavar="NAME=PATH[:BAND]", help="A named input band (repeatable).")
@click.option("-o", "--output", required=True, help="Output .tif.")
@click.option("--scale", "scales", multiple=True, metavar="NAME=V", help="Scale of an input, replacing the file's.")
@click.option("--offset", "offsets", multiple=True, metavar="NAME=V", help="Offset of an input, replacing the file's.")
@click.option("--name", default=None, help="Band description of the output (default: calc).")
@job_options
@click.pass_context
def calc(ctx: click.Context, expression: str, inputs: tuple[str, ...], output: str, scales: tuple[str, ...], offsets: tuple[str, ...],
         name: str | None, overwrite: bool, **kw: Any) -> None:  # fmt: skip
    """Band math on named inputs with a safe expression language.

    \b
    tilewise calc "t * 9 / 5 + 32" -i t=day.tif -o f.tif
    tilewise calc "where(nir > red, 1, 0)" -i red=L7.tif:3 -i nir=L7.tif:4 --dtype uint8 -o veg.tif

    Masked input pixels give nodata in the output. Functions: where, clip, abs,
    sqrt, exp, log, log10, sin, cos, min, max, ... (docs/expressions.md).
    """
    from tilewise.api import calc_job

    job = calc_job(expression, _parse_kv(inputs, "-i"), output, scales=_parse_float_kv(scales, "--scale"),
                   offsets=_parse_float_kv(offsets, "--offset"), name=name, **_options(kw))  # fmt: skip
    _run(ctx, job, overwrite)


@cli.command()
@click.argument("inputs", nargs=-1, metavar="INPUT...")
@click.option("-o", "--output", required=True, help="Output .tif, or OUTDIR/ for many inputs or --mosaic (<stem>_<stat>_<window>.tif).")
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
    _run(ctx, job, overwrite)


@cli.command("run")
@click.argument("job_file")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs / start over.")
@click.option("--executor", default=None, help="Run on another executor than the file says.")
@click.option("--workers", type=int, default=None, help="Number of workers.")
@click.pass_context
def run_cmd(ctx: click.Context, job_file: str, overwrite: bool, executor: str | None, workers: int | None) -> None:
    """Run a job described in a TOML, YAML or JSON file."""
    from tilewise.api import load_job_file

    job = _with_executor(load_job_file(job_file), executor, workers)
    _run(ctx, job, overwrite)


def _with_executor(job: Any, executor: str | None, workers: int | None) -> Any:
    from tilewise.api import check_executor

    check_executor(executor, workers)
    updates = {k: v for k, v in (("name", executor), ("workers", workers)) if v is not None}
    if updates:
        job = job.model_copy(update={"executor": job.executor.model_copy(update=updates)})
    return job


@cli.command()
@click.argument("output")
@click.option("--executor", default=None, help="Run on another executor than the original.")
@click.option("--workers", type=int, default=None, help="Number of workers.")
@click.pass_context
def resume(ctx: click.Context, output: str, executor: str | None, workers: int | None) -> None:
    """Finish the job that writes OUTPUT, from its saved description."""
    from tilewise.status import load_saved_job

    job, _ = load_saved_job(output)
    _run(ctx, _with_executor(job, executor, workers), False)


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
