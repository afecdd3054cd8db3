"""Turning finished tiles into what the user asked for: one Cloud-Optimized GeoTIFF per output.

The tiles are mosaicked through a VRT (no pixel copy) and GDAL's COG driver
encodes the result with overviews, using several threads for compression. The
COG is written under a hidden temporary name and renamed into place, so the
output path never holds a partial file.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np

from tilewise.errors import OutputError
from tilewise.grid import Grid, Window
from tilewise.io import block_size, disk_full
from tilewise.rasterfile import GDAL_TYPES, copy_raster, flushing, fsync_dir, open_read

# A piece of a mosaic: (file, window of the mosaic it fills, column where it starts in the file,
# the file's width and height) - the sizes let GDAL plan reads without opening every file.
Source = tuple[str, Window, int, int, int]


@dataclass(frozen=True)
class AssembleTask:
    """Everything needed to build one output from its tiles (picklable)."""

    key: str
    item: int
    output: str
    grid: Grid
    dtype: str
    nodata: float
    band_names: tuple[str, ...]
    tiles: tuple[Source, ...]
    creation_options: dict[str, str] = field(default_factory=dict)
    levels: tuple[tuple[Grid, tuple[Source, ...]], ...] = ()
    upload: str | None = None  # the s3:// URL the finished COG goes to (then removed locally)
    s3_endpoint: str | None = None


def cog_options(compress: str, level: int | None, predictor: int | None, overviews: bool, dtype: str,
                extra: dict[str, str], threads: int) -> dict[str, str]:  # fmt: skip
    """Creation options for GDAL's COG driver from tilewise's output options.

    ZSTD defaults to level 1 (fast, about DEFLATE's size with a predictor); a
    predictor is on by default (floating-point for floats, horizontal for ints).
    """
    opts = {"BLOCKSIZE": "512", "BIGTIFF": "IF_SAFER", "NUM_THREADS": str(max(1, threads)),
            "OVERVIEWS": "AUTO" if overviews else "NONE", "RESAMPLING": "AVERAGE"}  # fmt: skip
    opts["COMPRESS"] = "NONE" if compress == "none" else compress.upper()
    if compress == "zstd":
        opts["LEVEL"] = str(level if level is not None else 1)
    elif level is not None and compress == "deflate":
        opts["LEVEL"] = str(level)
    if compress in ("zstd", "deflate", "lzw"):
        if predictor is None:
            opts["PREDICTOR"] = "YES"
        else:
            opts["PREDICTOR"] = {1: "NO", 2: "STANDARD", 3: "FLOATING_POINT"}.get(predictor, str(predictor))
        if opts["PREDICTOR"] == "FLOATING_POINT" and np.dtype(dtype).kind != "f":
            opts["PREDICTOR"] = "STANDARD"
    opts.update({k.upper(): v for k, v in extra.items()})
    return opts


def vrt_xml(grid: Grid, dtype: str, nodata: float, band_names: Sequence[str], tiles: Sequence[Source],
            overviews: Sequence[str] = ()) -> str:  # fmt: skip
    """Return a VRT document placing each source (a tile file, or a level in a pyramid file) at its window of ``grid``.

    ``overviews`` are VRT files of the overview levels, largest first; GDAL's COG
    driver copies them instead of computing its own.
    """
    gdt = GDAL_TYPES[dtype]
    t = grid.transform
    lines = [f'<VRTDataset rasterXSize="{grid.width}" rasterYSize="{grid.height}">']
    if grid.crs:
        lines.append(f"  <SRS>{escape(grid.crs)}</SRS>")
    lines.append(f"  <GeoTransform>{t.c!r}, {t.a!r}, {t.b!r}, {t.f!r}, {t.d!r}, {t.e!r}</GeoTransform>")
    nd = "nan" if np.isnan(nodata) else repr(nodata)
    for b, name in enumerate(band_names, start=1):
        lines.append(f'  <VRTRasterBand dataType="{gdt}" band="{b}">')
        lines.append(f"    <NoDataValue>{nd}</NoDataValue>")
        lines.append(f"    <Description>{escape(name)}</Description>")
        for ov in overviews:
            lines.append(f'    <Overview><SourceFilename relativeToVRT="0">{escape(ov)}</SourceFilename><SourceBand>{b}</SourceBand></Overview>')
        for path, w, col, fw, fh in tiles:
            props = (f'<SourceProperties RasterXSize="{fw}" RasterYSize="{fh}" DataType="{gdt}" '
                     f'BlockXSize="{block_size(fw)}" BlockYSize="{block_size(fh)}"/>')  # fmt: skip
            lines.append(
                f'    <SimpleSource><SourceFilename relativeToVRT="0">{escape(path)}</SourceFilename><SourceBand>{b}</SourceBand>{props}'
                f'<SrcRect xOff="{col}" yOff="0" xSize="{w.width}" ySize="{w.height}"/>'
                f'<DstRect xOff="{w.col_off}" yOff="{w.row_off}" xSize="{w.width}" ySize="{w.height}"/></SimpleSource>'
            )
        lines.append("  </VRTRasterBand>")
    lines.append("</VRTDataset>")
    return "\n".join(lines) + "\n"


def check_complete(path: Path, grid: Grid, bands: int) -> None:
    """Raise :class:`OutputError` unless the GeoTIFF ``path`` opens with the expected shape and its last blocks lie inside it.

    GDAL's COG driver can report success for a file whose last writes failed (a full
    disk: the end of the file, or its directory, is silently missing), so a written
    output is checked before it is renamed into place.
    """
    size = path.stat().st_size
    try:
        with open_read(str(path)) as ds:
            if (ds.height, ds.width, ds.count) != (grid.height, grid.width, bands):
                raise ValueError(f"it is {ds.width}x{ds.height}x{ds.count}, not {grid.width}x{grid.height}x{bands}")
            levels = [(None, ds.height, ds.width)] + [(i, math.ceil(ds.height / f), math.ceil(ds.width / f)) for i, f in enumerate(ds.overviews(1))]
            bh, bw = ds.block_shapes[0]
            for ovr, h, w in levels:
                last = f"{math.ceil(w / bw) - 1}_{math.ceil(h / bh) - 1}"
                for b in range(1, bands + 1):
                    kw = {} if ovr is None else {"ovr": ovr}
                    off = int(ds.get_tag_item(f"BLOCK_OFFSET_{last}", "TIFF", bidx=b, **kw) or 0)
                    n = int(ds.get_tag_item(f"BLOCK_SIZE_{last}", "TIFF", bidx=b, **kw) or 0)
                    if off + n > size:
                        raise ValueError(f"its block {last} ends at byte {off + n} of {size}")
    except Exception as exc:  # unreadable, the wrong shape, cut short: not the complete output
        raise OutputError(f"the output written to {str(path)!r} is incomplete ({exc})", "check free disk space, then rerun to resume") from None


def run_assemble(task: AssembleTask) -> dict[str, Any]:
    """Build one output COG from its tiles, atomically.

    Returns
    -------
    dict
        The manifest record of the output: key, path, size and seconds taken.
    """
    t0 = time.perf_counter()
    out = Path(task.output)
    vrt = out.with_name(f".{out.name}.{os.getpid()}.tiles.vrt")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    level_vrts = [out.with_name(f".{out.name}.{os.getpid()}.ovr{i}.tiles.vrt") for i in range(len(task.levels))]
    try:
        for path, (grid, tiles) in zip(level_vrts, task.levels, strict=True):
            path.write_text(vrt_xml(grid, task.dtype, task.nodata, task.band_names, tiles), encoding="utf-8")
        xml = vrt_xml(task.grid, task.dtype, task.nodata, task.band_names, task.tiles, [str(p) for p in level_vrts])
        vrt.write_text(xml, encoding="utf-8")
        with flushing(tmp):
            copy_raster(vrt, tmp, "COG", task.creation_options, vrt_georef_only=True)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        check_complete(tmp, task.grid, len(task.band_names))
        os.replace(tmp, out)
        fsync_dir(out.parent)
        if task.upload:
            return _upload(task, out, t0)
    except Exception as exc:
        # A full disk gets one clear error naming the output (the runner adds how much the job needs).
        full = disk_full(out, exc, task.grid.height * task.grid.width * len(task.band_names) * np.dtype(task.dtype).itemsize)
        if full is not None:
            raise full from None
        raise
    finally:
        for p in (vrt, tmp, *level_vrts):
            if p.exists():
                p.unlink()
    return {"kind": "output", "key": task.key, "item": task.item, "path": str(out), "size": out.stat().st_size,
            "mtime_ns": out.stat().st_mtime_ns, "seconds": round(time.perf_counter() - t0, 3)}  # fmt: skip


def _upload(task: AssembleTask, out: Path, t0: float) -> dict[str, Any]:
    """Upload the assembled ``out`` to ``task.upload`` (atomic: whole or absent under the key), then remove it locally."""
    from tilewise.remote import use_s3_endpoint
    from tilewise.remote_output import upload

    assert task.upload is not None
    use_s3_endpoint(task.s3_endpoint)
    size, version = upload(out, task.upload)
    # A run stopped before this record is written finds no output recorded and uploads again
    # from the tiles (still kept): the same bytes under the same key.
    out.unlink()
    return {"kind": "output", "key": task.key, "item": task.item, "path": str(out), "url": task.upload, "size": size, "version": version,
            "seconds": round(time.perf_counter() - t0, 3)}  # fmt: skip
