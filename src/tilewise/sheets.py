"""Cutting one raster into georeferenced tile files (:func:`split`) and joining tiles back (:func:`merge`).

:func:`split` writes ``{stem}_r{row:03d}_c{col:03d}.tif`` files that cover the
raster exactly once: every pixel is in exactly one tile, whatever the grid or
tile size. Each tile keeps the input's bands, dtype, nodata, band descriptions,
scale/offset, colour interpretation, CRS and exact window transform, and is
written losslessly under a temporary name, then renamed, so an interrupted split
never leaves a complete-looking partial tile. Pixels are copied in bounded
strips, never a whole tile or raster at once.

:func:`merge` checks that the tiles can share one pixel grid (CRS, resolution,
whole-pixel offsets, bands, dtype, nodata) before writing anything, then writes
either a VRT referencing them or a Cloud-Optimized GeoTIFF built from such a
VRT by GDAL's COG driver (atomically, through a ``.partial`` file). Where files
overlap, the later file wins (GDAL's VRT convention); gaps are nodata.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import numpy as np
from affine import Affine

from tilewise.errors import GridMismatchError, InputError, OutputError, UsageError
from tilewise.executors.base import usable_cores
from tilewise.grid import Window, crs_name
from tilewise.rasterfile import fsync_dir, open_read, open_write, vrt_number

#: Most bytes of pixels read from the input at once while splitting (one strip of a group of tiles).
STRIP_BYTES = 64 * 2**20
#: Most tile files open for writing at once while splitting.
MAX_OPEN_TILES = 32
#: Most tiles one split may write; more is almost surely a typo in --tile-size.
MAX_TILES = 100_000
#: Compressions :func:`split` and :func:`merge` accept.
COMPRESSIONS = ("zstd", "deflate", "lzw", "none")
#: Largest misalignment of a file's origin, in pixels, that :func:`merge` treats as whole pixels.
ALIGN_TOL = 1e-6

_COUNT_RE = re.compile(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*")
_EXTRA_GDAL_TYPES = {"int64": "Int64", "uint64": "UInt64", "complex64": "CFloat32", "complex128": "CFloat64"}
PathLike = str | os.PathLike[str]


# ---------------------------------------------------------------------------------------------- split


def parse_grid(value: str | tuple[int, int]) -> tuple[int, int]:
    """Parse a ``--grid`` value ``"RxC"`` (rows x columns of tiles) into ``(rows, cols)``.

    Raises
    ------
    UsageError
        When the text is not two positive whole numbers joined by ``x``.
    """
    rows, cols = _two_counts(value, "--grid", "RxC", "--grid 4x4 (rows x columns of tiles)")
    if rows < 1 or cols < 1:
        raise UsageError(f"--grid {_show(value)} asks for zero tiles along one axis", "both counts must be 1 or more, e.g. --grid 4x4")
    return rows, cols


def parse_tile_size(value: int | str | tuple[int, int]) -> tuple[int, int]:
    """Parse a ``--tile-size`` value ``N`` or ``"HxW"`` (pixels) into ``(height, width)``.

    Raises
    ------
    UsageError
        When the text is not one or two positive whole numbers.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        h = w = value
    elif isinstance(value, str) and value.strip().isdigit():
        h = w = int(value.strip())
    else:
        h, w = _two_counts(value, "--tile-size", "N or HxW", "--tile-size 512 or --tile-size 512x1024 (height x width in pixels)")
    if h < 1 or w < 1:
        raise UsageError(f"--tile-size {_show(value)} is not a positive size", "use a size of 1 pixel or more, e.g. --tile-size 512")
    return h, w


def _two_counts(value: Any, option: str, form: str, example: str) -> tuple[int, int]:
    if isinstance(value, tuple | list) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return int(value[0]), int(value[1])
    m = _COUNT_RE.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise UsageError(f"{option} {_show(value)} is not of the form {form}", f"write it like {example}")
    return int(m.group(1)), int(m.group(2))


def _show(value: Any) -> str:
    if isinstance(value, tuple | list) and len(value) == 2:
        return f"{value[0]}x{value[1]}"
    return repr(value) if isinstance(value, str) else str(value)


def _even_cuts(n: int, k: int) -> list[tuple[int, int]]:
    """``(offset, size)`` of ``k`` parts of ``n``: the first ``n % k`` parts are one pixel larger (numpy's array_split)."""
    base, extra = divmod(n, k)
    cuts, off = [], 0
    for i in range(k):
        size = base + (1 if i < extra else 0)
        cuts.append((off, size))
        off += size
    return cuts


def _fixed_cuts(n: int, size: int) -> list[tuple[int, int]]:
    """``(offset, size)`` of parts of ``size`` pixels; the last one holds the remainder."""
    return [(off, min(size, n - off)) for off in range(0, n, size)]


def split_windows(height: int, width: int, grid: str | tuple[int, int] | None = None,
                  tile_size: int | str | tuple[int, int] | None = None) -> list[tuple[int, int, Window]]:  # fmt: skip
    """Return the tiles of a ``height`` x ``width`` raster as ``(row, col, window)``, row by row.

    The windows partition the raster exactly: every pixel lies in exactly one.

    Parameters
    ----------
    height, width
        The raster's shape in pixels.
    grid
        ``"RxC"`` or ``(R, C)``: that many rows and columns of tiles, sizes as even as
        possible (along each axis they differ by at most one pixel; the first
        ``height % R`` rows of tiles are the taller ones).
    tile_size
        ``N``, ``"N"``, ``"HxW"`` or ``(H, W)``: tiles of that many pixels; the last row
        and column of tiles are smaller when the size does not divide the raster.

    Raises
    ------
    UsageError
        When both or neither of ``grid`` and ``tile_size`` are given, a value does not
        parse, the grid has more tiles along an axis than the raster has pixels, or the
        split would make more than :data:`MAX_TILES` tiles.
    """
    _check_layout(grid, tile_size)
    if height < 1 or width < 1:
        raise InputError(f"the raster is empty ({height}x{width} pixels)", "split a raster with at least one pixel")
    if grid is not None:
        rows, cols = parse_grid(grid)
        if rows > height or cols > width:
            raise UsageError(f"--grid {rows}x{cols} has more tiles than the raster has pixels ({height} rows x {width} columns)",
                             f"use at most --grid {min(rows, height)}x{min(cols, width)}")  # fmt: skip
        row_cuts, col_cuts = _even_cuts(height, rows), _even_cuts(width, cols)
    else:
        assert tile_size is not None
        th, tw = parse_tile_size(tile_size)
        row_cuts, col_cuts = _fixed_cuts(height, th), _fixed_cuts(width, tw)
    n = len(row_cuts) * len(col_cuts)
    if n > MAX_TILES:
        raise UsageError(f"the split would write {n} tiles ({len(row_cuts)}x{len(col_cuts)}), more than {MAX_TILES}",
                         "use a larger --tile-size or a smaller --grid")  # fmt: skip
    return [(r, c, Window(r0, c0, h, w)) for r, (r0, h) in enumerate(row_cuts) for c, (c0, w) in enumerate(col_cuts)]


def _check_layout(grid: str | tuple[int, int] | None, tile_size: int | str | tuple[int, int] | None) -> None:
    """Raise :class:`UsageError` unless exactly one of ``grid`` and ``tile_size`` is given and it parses."""
    if (grid is None) == (tile_size is None):
        raise UsageError("give exactly one of --grid RxC and --tile-size N" + (", not both" if grid is not None else ""),
                         "e.g. --grid 4x4 for 16 tiles, or --tile-size 1024 for tiles of 1024x1024 pixels")  # fmt: skip
    if grid is not None:
        parse_grid(grid)
    else:
        assert tile_size is not None
        parse_tile_size(tile_size)


def tile_name(stem: str, row: int, col: int, digits: int = 3) -> str:
    """The file name of a tile: ``{stem}_r{row:03d}_c{col:03d}.tif`` (wider numbers beyond 999 tiles per axis)."""
    return f"{stem}_r{row:0{digits}d}_c{col:0{digits}d}.tif"


def _safe_stem(path: str) -> str:
    """The input's file stem with characters other than letters, digits, ``.``, ``_`` and ``-`` replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path.rstrip("/")).stem).strip("._") or "raster"


def _check_compress(compress: str) -> str:
    c = str(compress).lower()
    if c not in COMPRESSIONS:
        raise UsageError(f"--compress {compress!r} is not supported here", f"use one of {', '.join(COMPRESSIONS)}")
    return c


def _tiff_compression(compress: str, dtype: np.dtype[Any]) -> dict[str, Any]:
    """GTiff creation options: lossless, with the predictor suited to the dtype (3 for floats, 2 for integers)."""
    if compress == "none":
        return {}
    opts: dict[str, Any] = {"compress": compress.upper()}
    if compress == "zstd":
        opts["zstd_level"] = 1
    if dtype.kind == "f":
        opts["predictor"] = 3
    elif dtype.kind in "iu":
        opts["predictor"] = 2
    return opts


@dataclass(frozen=True)
class _Meta:
    """What a tile copies from its input besides pixels."""

    count: int
    dtype: np.dtype[Any]
    nodata: float | None
    crs: Any
    transform: Affine
    descriptions: tuple[str | None, ...]
    scales: tuple[float, ...]
    offsets: tuple[float, ...]
    units: tuple[str | None, ...]
    colorinterp: tuple[Any, ...]
    colormap: dict[int, tuple[int, ...]] | None
    tags: dict[str, str]


def _read_meta(ds: Any, path: str) -> _Meta:
    dtypes = set(ds.dtypes)
    if len(dtypes) != 1:
        raise InputError(f"{path!r} has bands of different data types ({', '.join(sorted(dtypes))})",
                         "a GeoTIFF holds one data type: convert first, e.g. gdal_translate -ot Float32")  # fmt: skip
    nodatas = {("nan" if v is not None and math.isnan(v) else v) for v in ds.nodatavals}
    if len(nodatas) != 1:
        raise InputError(f"{path!r} has a different nodata value per band ({ds.nodatavals})",
                         "a GeoTIFF holds one nodata value: set one for all bands first (gdal_edit.py -a_nodata V)")  # fmt: skip
    try:
        cmap: dict[int, tuple[int, ...]] | None = ds.colormap(1)
    except ValueError:
        cmap = None
    return _Meta(
        count=ds.count, dtype=np.dtype(ds.dtypes[0]), nodata=ds.nodata, crs=ds.crs, transform=ds.transform,
        descriptions=tuple(ds.descriptions), scales=tuple(ds.scales), offsets=tuple(ds.offsets), units=tuple(ds.units),
        colorinterp=tuple(ds.colorinterp), colormap=cmap, tags=dict(ds.tags()),
    )  # fmt: skip


def _tile_profile(meta: _Meta, window: Window, compression: dict[str, Any]) -> dict[str, Any]:
    profile: dict[str, Any] = {
        "driver": "GTiff", "width": window.width, "height": window.height, "count": meta.count, "dtype": meta.dtype.name,
        "crs": meta.crs, "transform": meta.transform * Affine.translation(window.col_off, window.row_off), "nodata": meta.nodata,
        "BIGTIFF": "IF_SAFER", **compression,
    }  # fmt: skip
    if window.height >= 256 and window.width >= 256:
        block = 512 if min(window.height, window.width) >= 512 else 256
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    return profile


def _set_metadata(dst: Any, meta: _Meta) -> None:
    for i, d in enumerate(meta.descriptions, start=1):
        if d:
            dst.set_band_description(i, d)
    if any(s != 1.0 for s in meta.scales):
        dst.scales = meta.scales
    if any(o != 0.0 for o in meta.offsets):
        dst.offsets = meta.offsets
    if any(meta.units):
        dst.units = tuple(u or "" for u in meta.units)
    if meta.colormap is not None:
        dst.write_colormap(1, meta.colormap)
    if tuple(dst.colorinterp) != meta.colorinterp:
        dst.colorinterp = meta.colorinterp
    if meta.tags:
        dst.update_tags(**meta.tags)


def _groups(tiles: Sequence[tuple[int, int, Window, Path]], bytes_per_pixel: int) -> Iterator[list[tuple[int, int, Window, Path]]]:
    """Consecutive tiles of one tile row, as many as one bounded strip of the input can feed at once."""
    group: list[tuple[int, int, Window, Path]] = []
    width = 0
    for t in tiles:
        w = t[2]
        rows = min(512, w.height)
        if group and (group[0][0] != t[0] or len(group) >= MAX_OPEN_TILES or (width + w.width) * rows * bytes_per_pixel > STRIP_BYTES):
            yield group
            group, width = [], 0
        group.append(t)
        width += w.width
    if group:
        yield group


def _strip_rows(height: int, width: int, bytes_per_pixel: int) -> int:
    rows = STRIP_BYTES // max(1, width * bytes_per_pixel)
    if rows >= 512:
        rows = rows // 512 * 512  # whole output blocks per write
    return max(1, min(rows, height))


def _write_group(src: Any, meta: _Meta, group: Sequence[tuple[int, int, Window, Path]], compression: dict[str, Any]) -> None:
    """Copy one group of tiles (same tile row, adjacent columns) in row strips, each tile atomically."""
    temps = [p.with_name(f".{p.name}.{os.getpid()}.partial") for *_, p in group]
    r0, h = group[0][2].row_off, group[0][2].height
    c0, c1 = group[0][2].col_off, group[-1][2].col_end
    bpp = meta.count * meta.dtype.itemsize
    try:
        with ExitStack() as stack:
            dsts = [stack.enter_context(open_write(tmp, **_tile_profile(meta, w, compression))) for (_, _, w, _), tmp in zip(group, temps, strict=True)]
            for dst in dsts:
                _set_metadata(dst, meta)  # before the pixels: a TIFF's photometric tag is fixed once written
            step = _strip_rows(h, c1 - c0, bpp)
            for top in range(0, h, step):
                n = min(step, h - top)
                data = src.read(window=((r0 + top, r0 + top + n), (c0, c1)))
                for (_, _, w, _), dst in zip(group, dsts, strict=True):
                    dst.write(data[:, :, w.col_off - c0 : w.col_end - c0], window=((top, top + n), (0, w.width)))
        for tmp, (*_, path) in zip(temps, group, strict=True):
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
    finally:
        for tmp in temps:
            for p in (tmp, tmp.with_name(tmp.name + ".aux.xml")):
                if p.exists():
                    p.unlink()


def split(input: PathLike, out_dir: PathLike, grid: str | tuple[int, int] | None = None, tile_size: int | str | tuple[int, int] | None = None,
          overwrite: bool = False, compress: str = "zstd") -> list[Path]:  # fmt: skip
    """Cut a raster into georeferenced GeoTIFF tiles that cover it exactly once.

    Tiles are named ``{stem}_r{row:03d}_c{col:03d}.tif`` (row and column of the tile,
    from 0 at the top left; zero-padded so names sort, wider beyond 1000 tiles per axis).
    Each keeps the input's bands, dtype, nodata, band descriptions, scale/offset,
    units, colour interpretation, palette, dataset metadata, CRS and the exact
    transform of its window, and is compressed losslessly (``compress`` with
    predictor 3 for floats, 2 for integers), in 512- or 256-pixel blocks when large
    enough. Pixels are copied in strips of at most :data:`STRIP_BYTES`; each file is
    written under a hidden temporary name and renamed when complete.

    Parameters
    ----------
    input
        The raster to split (any file GDAL reads).
    out_dir
        The directory for the tiles, created when missing.
    grid
        ``"RxC"`` or ``(R, C)``: R rows and C columns of tiles with sizes as even as
        possible (along an axis they differ by at most one pixel, larger ones first).
    tile_size
        ``N``, ``"HxW"`` or ``(H, W)``: tiles of that many pixels; the last row and column
        of tiles hold the remainder. Give exactly one of ``grid`` and ``tile_size``.
    overwrite
        Replace existing tiles of this input's stem in ``out_dir``; tiles of an earlier
        split with another layout that this split does not write are removed.
    compress
        ``zstd`` (default, level 1), ``deflate``, ``lzw`` or ``none``.

    Returns
    -------
    list of Path
        The tile files, row by row.

    Raises
    ------
    UsageError
        Bad ``grid`` / ``tile_size`` / ``compress`` (nothing is written).
    InputError
        The input is missing or not a raster.
    OutputError
        Tiles exist and ``overwrite`` is false, or ``out_dir`` cannot be written.
    """
    compression_name = _check_compress(compress)
    _check_layout(grid, tile_size)
    src_path = os.fspath(input)
    out = Path(out_dir)
    with open_read(src_path) as src:
        meta = _read_meta(src, src_path)
        tiles = split_windows(src.height, src.width, grid, tile_size)
        stem = _safe_stem(src_path)
        digits = max(3, len(str(max(tiles[-1][0], tiles[-1][1]))))
        planned = [(r, c, w, out / tile_name(stem, r, c, digits)) for r, c, w in tiles]
        stale = _check_out_dir(out, stem, planned, src_path, overwrite)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create output directory {str(out)!r} ({exc.strerror})", "choose a writable location with -o") from None
        compression = _tiff_compression(compression_name, meta.dtype)
        for group in _groups(planned, meta.count * meta.dtype.itemsize):
            _write_group(src, meta, group, compression)
    for p in stale:
        p.unlink()
    fsync_dir(out)
    return [p for *_, p in planned]


def _check_out_dir(out: Path, stem: str, planned: Sequence[tuple[int, int, Window, Path]], src_path: str, overwrite: bool) -> list[Path]:
    """Refuse existing tiles unless ``overwrite``; return the stale tiles of an earlier split to remove afterwards."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"-o {str(out)!r} is a file, not a directory", "give a directory for the tiles, e.g. -o tiles/")
    if not out.is_dir():
        return []
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"output directory {str(out)!r} is not writable", "choose a writable location with -o")
    pattern = re.compile(re.escape(stem) + r"_r\d{3,}_c\d{3,}\.tif")
    existing = sorted(p for p in out.iterdir() if pattern.fullmatch(p.name))
    src = Path(src_path).resolve() if Path(src_path).exists() else None
    if src is not None and any(p.resolve() == src for p in [*existing, *(t[3] for t in planned)]):
        raise UsageError(f"the input {src_path!r} has a tile's name in {str(out)!r} and would be overwritten",
                         "rename the input or choose another -o directory")  # fmt: skip
    if existing and not overwrite:
        raise OutputError(f"{len(existing)} tile file(s) of {stem!r} already exist in {str(out)!r}, e.g. {existing[0].name!r}",
                          "pass --overwrite to replace them, or choose another -o directory")  # fmt: skip
    names = {t[3].name for t in planned}
    return [p for p in existing if p.name not in names]


# ---------------------------------------------------------------------------------------------- merge


@dataclass(frozen=True)
class _Piece:
    """One input of a merge, as read from its header."""

    path: str
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    crs: Any
    transform: Affine
    block: tuple[int, int]
    meta: _Meta


def _expand(inputs: PathLike | Sequence[PathLike], output: Path) -> list[str]:
    items = [os.fspath(inputs)] if isinstance(inputs, str | os.PathLike) else [os.fspath(p) for p in inputs]
    if not items:
        raise UsageError("merge needs at least one input file", "give the tiles, e.g. tilewise merge tiles/*.tif -o mosaic.tif, or their directory")
    dirs = [p for p in items if Path(p).is_dir()]
    if dirs and len(items) > 1:
        raise UsageError(f"{dirs[0]!r} is a directory among several inputs", "give either one directory or a list of files")
    if not dirs:
        return items
    folder = Path(dirs[0])
    out = output.resolve()
    files = sorted(str(p) for p in folder.iterdir()
                   if p.suffix.lower() in (".tif", ".tiff") and not p.name.startswith(".") and p.is_file() and p.resolve() != out)  # fmt: skip
    if not files:
        raise InputError(f"directory {str(folder)!r} holds no .tif or .tiff files", "give the directory the tiles are in, or the files themselves")
    return files


def _read_piece(path: str) -> _Piece:
    with open_read(path) as ds:
        meta = _read_meta(ds, path)
        bh, bw = ds.block_shapes[0]
        return _Piece(path, ds.width, ds.height, ds.count, meta.dtype.name, meta.nodata, ds.crs, ds.transform, (bw, bh), meta)


def _same_nodata(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return (math.isnan(a) and math.isnan(b)) or a == b


def _place(pieces: Sequence[_Piece]) -> tuple[Affine, int, int, list[Window]]:
    """Check the pieces share one pixel grid; return the mosaic's transform, shape and each piece's window."""
    first = pieces[0]
    t0 = first.transform
    name0 = first.path
    offsets = []
    for p in pieces:
        t = p.transform
        if p.count != first.count:
            raise InputError(f"{p.path!r} has {p.count} band(s) but {name0!r} has {first.count}",
                             "merge only files with the same bands (pick bands with gdal_translate -b)")  # fmt: skip
        if p.dtype != first.dtype:
            raise InputError(f"{p.path!r} is {p.dtype} but {name0!r} is {first.dtype}",
                             f"convert it first, e.g. gdal_translate -ot {_gdal_types().get(first.dtype, first.dtype)}")  # fmt: skip
        if not _same_nodata(p.nodata, first.nodata):
            raise InputError(f"{p.path!r} has nodata {_nodata_text(p.nodata)} but {name0!r} has {_nodata_text(first.nodata)}",
                             "set the same nodata on every file (gdal_edit.py -a_nodata V FILE, or -unsetnodata)")  # fmt: skip
        if (p.crs is None) != (first.crs is None) or (p.crs is not None and p.crs != first.crs):
            raise GridMismatchError(f"{p.path!r} is in CRS {_crs_label(p.crs)} but {name0!r} is in {_crs_label(first.crs)}",
                                    f"reproject it first, e.g. gdalwarp -t_srs {_crs_label(first.crs)}")  # fmt: skip
        if t.b != 0 or t.d != 0:
            raise GridMismatchError(f"{p.path!r} has a rotated or sheared geotransform {tuple(t)[:6]}", "warp it to a north-up grid first (gdalwarp)")
        if not (math.isclose(t.a, t0.a, rel_tol=1e-9) and math.isclose(t.e, t0.e, rel_tol=1e-9)):
            raise GridMismatchError(f"{p.path!r} has pixel size {t.a!r} x {t.e!r} but {name0!r} has {t0.a!r} x {t0.e!r}",
                                    f"resample it to the same resolution first, e.g. gdalwarp -tr {abs(t0.a)!r} {abs(t0.e)!r} -tap")  # fmt: skip
        col, row = (t.c - t0.c) / t0.a, (t.f - t0.f) / t0.e
        if abs(col - round(col)) > ALIGN_TOL or abs(row - round(row)) > ALIGN_TOL:
            raise GridMismatchError(f"{p.path!r} is not aligned with the pixels of {name0!r}: its origin is {col + 0.0:.6g} columns "
                                    f"and {row + 0.0:.6g} rows away, "
                                    "not whole pixels", "resample it onto the same pixel grid first (gdalwarp -tap -tr)")  # fmt: skip
        offsets.append((round(row), round(col)))
    if first.dtype not in _gdal_types():
        raise InputError(f"{name0!r} has data type {first.dtype}, which merge does not support", "convert it first, e.g. gdal_translate -ot Float32")
    min_row = min(r for r, _ in offsets)
    min_col = min(c for _, c in offsets)
    # The mosaic's origin is copied from the files that define it, so a split and merge keeps the exact transform.
    c = next(p.transform.c for p, (_, col) in zip(pieces, offsets, strict=True) if col == min_col)
    f = next(p.transform.f for p, (row, _) in zip(pieces, offsets, strict=True) if row == min_row)
    windows = [Window(r - min_row, col - min_col, p.height, p.width) for p, (r, col) in zip(pieces, offsets, strict=True)]
    height = max(w.row_end for w in windows)
    width = max(w.col_end for w in windows)
    return Affine(t0.a, 0.0, c, 0.0, t0.e, f), height, width, windows


def _crs_label(crs: Any) -> str:
    return "none" if crs is None else crs_name(crs.to_wkt())


def _gdal_types() -> dict[str, str]:
    from tilewise.rasterfile import GDAL_TYPES

    return {**GDAL_TYPES, **_EXTRA_GDAL_TYPES}


def _first_gap(height: int, width: int, windows: Sequence[Window]) -> tuple[int, int] | None:
    """The top-left pixel of the first part of the mosaic that no file covers, or None (on compressed coordinates)."""
    rows = sorted({0, height, *(w.row_off for w in windows), *(w.row_end for w in windows)})
    cols = sorted({0, width, *(w.col_off for w in windows), *(w.col_end for w in windows)})
    if (len(rows) - 1) * (len(cols) - 1) > 50_000_000:
        return None  # too irregular to check cheaply; gaps then read as 0
    ri = {v: i for i, v in enumerate(rows)}
    ci = {v: i for i, v in enumerate(cols)}
    cover = np.zeros((len(rows) - 1, len(cols) - 1), dtype=bool)
    for w in windows:
        cover[ri[w.row_off] : ri[w.row_end], ci[w.col_off] : ci[w.col_end]] = True
    if cover.all():
        return None
    i, j = np.argwhere(~cover)[0]
    return rows[int(i)], cols[int(j)]


def _nodata_text(v: float | None) -> str:
    return "none" if v is None else vrt_number(v)


def mosaic_vrt_xml(transform: Affine, height: int, width: int, pieces: Sequence[_Piece], windows: Sequence[Window], vrt_dir: Path | None) -> str:
    """A VRT placing each piece at its window, later pieces over earlier ones.

    With ``vrt_dir`` local paths are written relative to it (``relativeToVRT="1"``)
    where possible; otherwise absolute.
    """
    first = pieces[0]
    meta = first.meta
    gdt = _gdal_types()[first.dtype]
    lines = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">']
    if first.crs is not None:
        lines.append(f"  <SRS>{escape(first.crs.to_wkt())}</SRS>")
    t = transform
    lines.append(f"  <GeoTransform>{t.c!r}, {t.a!r}, {t.b!r}, {t.f!r}, {t.d!r}, {t.e!r}</GeoTransform>")
    if meta.tags:
        lines.append("  <Metadata>")
        lines += [f"    <MDI key={quoteattr(k)}>{escape(v)}</MDI>" for k, v in meta.tags.items()]
        lines.append("  </Metadata>")
    sources = [_source_name(p.path, vrt_dir) for p in pieces]
    for b in range(1, first.count + 1):
        lines.append(f'  <VRTRasterBand dataType="{gdt}" band="{b}">')
        if first.nodata is not None:
            lines.append(f"    <NoDataValue>{vrt_number(first.nodata)}</NoDataValue>")
        if meta.descriptions[b - 1]:
            lines.append(f"    <Description>{escape(meta.descriptions[b - 1] or '')}</Description>")
        lines.append(f"    <ColorInterp>{meta.colorinterp[b - 1].name.capitalize()}</ColorInterp>")
        if meta.offsets[b - 1] != 0.0:
            lines.append(f"    <Offset>{meta.offsets[b - 1]!r}</Offset>")
        if meta.scales[b - 1] != 1.0:
            lines.append(f"    <Scale>{meta.scales[b - 1]!r}</Scale>")
        if meta.units[b - 1]:
            lines.append(f"    <UnitType>{escape(meta.units[b - 1] or '')}</UnitType>")
        if b == 1 and meta.colormap:
            lines.append("    <ColorTable>")
            lines += [f'      <Entry c1="{e[0]}" c2="{e[1]}" c3="{e[2]}" c4="{e[3] if len(e) > 3 else 255}"/>' for _, e in sorted(meta.colormap.items())]
            lines.append("    </ColorTable>")
        for p, w, (name, rel) in zip(pieces, windows, sources, strict=True):
            bw, bh = p.block
            lines.append(
                f'    <SimpleSource><SourceFilename relativeToVRT="{int(rel)}">{escape(name)}</SourceFilename><SourceBand>{b}</SourceBand>'
                f'<SourceProperties RasterXSize="{p.width}" RasterYSize="{p.height}" DataType="{gdt}" BlockXSize="{bw}" BlockYSize="{bh}"/>'
                f'<SrcRect xOff="0" yOff="0" xSize="{p.width}" ySize="{p.height}"/>'
                f'<DstRect xOff="{w.col_off}" yOff="{w.row_off}" xSize="{w.width}" ySize="{w.height}"/></SimpleSource>'
            )
        lines.append("  </VRTRasterBand>")
    lines.append("</VRTDataset>")
    return "\n".join(lines) + "\n"


def _source_name(path: str, vrt_dir: Path | None) -> tuple[str, bool]:
    p = Path(path)
    if path.startswith("/vsi") or "://" in path or not p.exists():
        return path, False
    absolute = str(p.resolve())
    if vrt_dir is None:
        return absolute, False
    try:
        return os.path.relpath(absolute, vrt_dir.resolve()), True
    except ValueError:  # another drive on Windows
        return absolute, False


def merge(inputs: PathLike | Sequence[PathLike], output: PathLike, compress: str = "zstd", overviews: bool = True, overwrite: bool = False) -> Path:
    """Merge georeferenced tiles into one raster: a VRT (``output`` ends in ``.vrt``) or a Cloud-Optimized GeoTIFF.

    Before writing anything the inputs are checked to share one pixel grid: the same
    CRS, resolution, band count, dtype and nodata, no rotation, and origins a whole
    number of pixels apart (within :data:`ALIGN_TOL` of a pixel). The mosaic spans
    all inputs; where none covers a pixel it is nodata (files without nodata must
    then cover the whole extent). Files may overlap: the later file in the order
    given wins (GDAL's VRT convention; a directory is taken in name order). Band
    descriptions, scale/offset, units, colour interpretation, palette and dataset
    metadata come from the first file.

    Parameters
    ----------
    inputs
        Tile files, or one directory meaning all its ``.tif`` / ``.tiff`` files.
    output
        ``*.vrt``: a VRT referencing the inputs by paths relative to it; anything
        else: a COG built from such a VRT by GDAL's COG driver, written under a
        temporary name and renamed.
    compress
        COG compression: ``zstd`` (default, level 1), ``deflate``, ``lzw`` or ``none``,
        with a predictor suited to the dtype. Ignored for a VRT.
    overviews
        Build overviews in the COG. Ignored for a VRT.
    overwrite
        Replace an existing ``output``.

    Returns
    -------
    Path
        The output path.

    Raises
    ------
    UsageError
        No inputs, an unknown ``compress``, or the output is also an input.
    InputError
        An input is missing or unreadable, or the inputs do not share a pixel grid
        (:class:`~tilewise.errors.GridMismatchError`), naming the file.
    OutputError
        The output exists and ``overwrite`` is false, or cannot be written.
    """
    compression = _check_compress(compress)
    out = Path(output)
    files = _expand(inputs, out)
    _check_output(out, files, overwrite)
    pieces = [_read_piece(f) for f in files]
    transform, height, width, windows = _place(pieces)
    if pieces[0].nodata is None:
        gap = _first_gap(height, width, windows)
        if gap is not None:
            raise InputError(
                f"the files leave pixels uncovered (row {gap[0]}, column {gap[1]} of the mosaic) and {pieces[0].path!r} has no nodata value to fill them",
                "set a nodata value on every file (gdal_edit.py -a_nodata V FILE) or add the missing tiles",
            )
    if out.suffix.lower() == ".vrt":
        _write_vrt(out, mosaic_vrt_xml(transform, height, width, pieces, windows, out.parent))
    else:
        _write_cog(out, mosaic_vrt_xml(transform, height, width, pieces, windows, None), pieces[0].dtype, compression, overviews)
    return out


def _check_output(out: Path, files: Sequence[str], overwrite: bool) -> None:
    if out.is_dir():
        raise OutputError(f"output {str(out)!r} is a directory", "give a file name, e.g. -o mosaic.tif or -o mosaic.vrt")
    parent = out.parent
    if not parent.is_dir():
        raise OutputError(f"output directory {str(parent)!r} does not exist", "create it first or choose another -o path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output directory {str(parent)!r} is not writable", "choose a writable location with -o")
    resolved = out.resolve()
    for f in files:
        if Path(f).exists() and Path(f).resolve() == resolved:
            raise UsageError(f"the output {str(out)!r} is also an input", "write the mosaic to another file")
    if out.exists() and not overwrite:
        raise OutputError(f"output {str(out)!r} exists", "pass --overwrite to replace it")


def _write_vrt(out: Path, xml: str) -> None:
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(xml)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
        fsync_dir(out.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {str(out)!r} ({exc.strerror})", "check free disk space and write permission") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_cog(out: Path, xml: str, dtype: str, compress: str, overviews: bool) -> None:
    from tilewise.assemble import cog_options
    from tilewise.rasterfile import copy_raster

    extra = {"PREDICTOR": "NO"} if np.dtype(dtype).kind == "c" else {}
    opts = cog_options(compress, None, None, overviews, dtype, extra, usable_cores())
    vrt = out.with_name(f".{out.name}.{os.getpid()}.merge.vrt")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        vrt.write_text(xml, encoding="utf-8")
        copy_raster(vrt, tmp, "COG", opts)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out)
        fsync_dir(out.parent)
    finally:
        for p in (vrt, tmp, tmp.with_name(tmp.name + ".aux.xml")):
            if p.exists():
                p.unlink()
