"""``tilewise split`` and ``tilewise merge``: cut a raster into tile files and join tiles back.

Errors are :class:`~tilewise.errors.TilewiseError` s, turned into one
``Error: ...`` line and exit code 2 by :func:`tilewise.cli.main.main`.
"""

from __future__ import annotations

from pathlib import Path

import click


def _verbosity(ctx: click.Context) -> int:
    obj = ctx.find_root().obj
    return int(obj.get("verbosity", 0)) if isinstance(obj, dict) else 0


@click.command("split")
@click.argument("input_path", metavar="INPUT")
@click.option("-o", "--output", "out_dir", required=True, metavar="DIR", help="Directory for the tiles (created when missing).")
@click.option("--grid", default=None, metavar="RxC", help="Rows x columns of tiles, sizes as even as possible (e.g. 4x4).")
@click.option("--tile-size", default=None, metavar="N|HxW", help="Tile size in pixels (the last row/column of tiles holds the remainder).")
@click.option("--compress", default="zstd", show_default=True, help="zstd, deflate, lzw or none (lossless, with a predictor).")
@click.option("--overwrite", is_flag=True, help="Replace existing tiles of INPUT in DIR (and remove its stale tiles).")
@click.pass_context
def split_cmd(ctx: click.Context, input_path: str, out_dir: str, grid: str | None, tile_size: str | None, compress: str, overwrite: bool) -> None:
    """Cut INPUT into GeoTIFF tiles DIR/<stem>_rRRR_cCCC.tif covering every pixel exactly once.

    \b
    tilewise split dem.tif -o tiles/ --grid 4x4
    tilewise split dem.tif -o tiles/ --tile-size 1024      (or 512x2048)
    """
    from tilewise.sheets import split

    paths = split(input_path, out_dir, grid=grid, tile_size=tile_size, overwrite=overwrite, compress=compress)
    if _verbosity(ctx) >= 0:
        names = f"{paths[0].name}" if len(paths) == 1 else f"{paths[0].name} ... {paths[-1].name}"
        click.echo(f"{len(paths)} tile(s) written to {out_dir}: {names}")


@click.command("merge")
@click.argument("inputs", nargs=-1, metavar="FILES...|DIR")
@click.option("-o", "--output", required=True, metavar="OUT", help="OUT.vrt for a VRT of the files, anything else (OUT.tif) for a COG.")
@click.option("--compress", default="zstd", show_default=True, help="COG compression: zstd, deflate, lzw or none.")
@click.option("--no-overviews", is_flag=True, help="Do not build overviews in the COG.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.pass_context
def merge_cmd(ctx: click.Context, inputs: tuple[str, ...], output: str, compress: str, no_overviews: bool, overwrite: bool) -> None:
    """Merge tiles on one pixel grid into a COG or a VRT (a directory means all its .tif/.tiff).

    Inputs must share CRS, resolution, bands, dtype and nodata, with origins whole
    pixels apart. Where files overlap the later one wins; gaps are nodata.

    \b
    tilewise merge tiles/ -o mosaic.tif
    tilewise merge tiles/*.tif -o mosaic.vrt
    """
    from tilewise.sheets import merge

    out = merge(list(inputs), output, compress=compress, overviews=not no_overviews, overwrite=overwrite)
    if _verbosity(ctx) >= 0:
        click.echo(f"output: {Path(out)}")
