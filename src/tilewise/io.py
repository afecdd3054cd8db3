"""Reading a tile's windows from its inputs and writing a tile's own file.

Reads go through :mod:`tilewise.rasterfile`; a window that reaches outside a
raster (a halo at the edge) is read as its inside part and padded as invalid,
which is exact and much cheaper than GDAL's boundless VRT reads.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tilewise.blockcache import cache_for, read_blocks
from tilewise.errors import InputError, OutputError
from tilewise.grid import Grid, Window
from tilewise.rasterfile import open_read_kept, write_raster_direct, write_raster_file
from tilewise.sources.raster import BandRef


@dataclass
class TileArrays:
    """The inputs of one tile: scaled values and validity, one 2-D array per input name.

    ``finite_invalid`` names the inputs known to hold finite values at every invalid pixel
    (nodata that is a number, and no NaN): multiplying by the validity zeroes those pixels
    exactly, so a streaming sum needs no check of its own (see ``ops.reduce``).
    """

    values: dict[str, np.ndarray]
    valid: dict[str, np.ndarray]
    bytes_read: int
    finite_invalid: frozenset[str] = frozenset()


def read_tile(refs: Mapping[str, BandRef], window: Window, dtype: np.dtype) -> TileArrays:
    """Read ``window`` (in the inputs' common grid) of every input band.

    Bands of the same file are read in one call so each block is decoded once.
    A band with an ``origin`` (a sheet of a mosaic) is read at the window moved there.
    """
    by_file: dict[tuple[str, object, str, tuple[int, int]], list[str]] = defaultdict(list)
    for name, ref in refs.items():
        by_file[(ref.path, ref.warp_to, ref.resampling, ref.origin)].append(name)
    values: dict[str, np.ndarray] = {}
    valid: dict[str, np.ndarray] = {}
    finite: set[str] = set()
    nbytes = 0
    for (path, _warp, _res, origin), names in by_file.items():
        group = [refs[n] for n in names]
        raw, ok, clean = _read_group(path, group, window.shift(*origin))
        nbytes += raw.nbytes
        for i, (name, ref) in enumerate(zip(names, group, strict=True)):
            values[name] = _scaled(raw[i], ref, dtype)
            valid[name] = ok[i]
            # A scaled or narrowed finite value may overflow to inf (a float64 nodata of 1e300 read as float32).
            narrowed = raw.dtype.kind == "f" and values[name].dtype.itemsize < raw.dtype.itemsize
            if clean[i] and ref.scale == 1.0 and ref.offset == 0.0 and not narrowed:
                finite.add(name)
    return TileArrays(values, valid, nbytes, frozenset(finite))


def _read_group(path: str, refs: Sequence[BandRef], window: Window) -> tuple[np.ndarray, np.ndarray, list[bool]]:
    """Read ``window`` of the bands ``refs`` of one file: values, validity, and per band whether every invalid pixel is finite."""
    grid = refs[0].out_grid
    inside = window.intersection(grid.full_window())
    indexes = [r.band for r in refs]
    shape = (len(refs), window.height, window.width)
    whole = inside == window
    # Zeros (and invalid) only where part of the window lies outside the raster (a halo at an edge).
    raw = np.empty(shape, dtype=refs[0].dtype) if whole else np.zeros(shape, dtype=refs[0].dtype)
    ok = np.empty(shape, dtype=bool) if whole else np.zeros(shape, dtype=bool)
    if inside is None:
        return raw, ok, [True] * len(refs)  # all zeros
    dst = (slice(None), slice(inside.row_off - window.row_off, inside.row_end - window.row_off),
           slice(inside.col_off - window.col_off, inside.col_end - window.col_off))  # fmt: skip
    folder = cache_for(path, refs[0].identity, refs[0].warp_to is not None)
    try:
        with open_read_kept(path, refs[0].identity) as ds:
            if folder is not None:  # --cache: a remote file's blocks kept on disk for re-runs
                data, masks = read_blocks(ds, folder, indexes, inside, [r.use_mask for r in refs])
                raw[dst] = data

                def cached_mask(i: int, _ref: BandRef) -> np.ndarray:
                    assert masks is not None  # None only when no band asked for a mask
                    return masks[i] > 0

                return raw, ok, _validity(refs, data, ok[dst], cached_mask)
            src = ds
            vrt = None
            if refs[0].warp_to is not None:
                vrt = _warped(ds, refs[0])
                src = vrt
            try:
                if whole:  # the usual case: decode straight into the result
                    src.read(indexes, window=inside.to_rasterio(), out=raw)
                    clean = _validity(refs, raw, ok, _mask_reader(src, inside))
                else:
                    data = src.read(indexes, window=inside.to_rasterio())
                    raw[dst] = data
                    clean = _validity(refs, data, ok[dst], _mask_reader(src, inside))
            finally:
                if vrt is not None:
                    vrt.close()
    except InputError:
        raise
    except Exception as exc:  # a damaged block: name the file and the window
        raise InputError(
            f"cannot read {path!r} window rows {inside.row_off}:{inside.row_end}, cols {inside.col_off}:{inside.col_end} ({_root_cause(exc)})",
            "the file may be truncated or damaged; check it with gdalinfo -checksum",
        ) from None
    return raw, ok, clean


def _root_cause(exc: BaseException) -> str:
    """The first line of the innermost error: rasterio's "Read failed. See previous exception" wraps GDAL's own message."""
    root: BaseException = exc
    for _ in range(10):
        nxt = root.__cause__ or root.__context__
        if nxt is None:
            break
        root = nxt
    text = str(root).strip().splitlines()[0] if str(root).strip() else type(root).__name__
    return text[:300]


def valid_of(band: np.ndarray, nodata: float | None) -> np.ndarray:
    """Validity of a band by its nodata value: not nodata and, for floats, not NaN."""
    return validity(band, nodata)[0]


def validity(band: np.ndarray, nodata: float | None, out: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
    """Validity of a band by its nodata value, and whether every invalid pixel holds a finite value.

    Parameters
    ----------
    band : numpy.ndarray
        The values as read.
    nodata : float or None
        The band's nodata value; None or NaN for a float band means NaN marks nodata.
    out : numpy.ndarray, optional
        A bool array of ``band``'s shape to write the validity into.

    Returns
    -------
    valid, finite_invalid
        ``valid`` is True where the pixel holds data (not nodata and, for floats, not NaN).
        ``finite_invalid`` is True when no invalid pixel is NaN or infinite, so that
        multiplying the band by ``valid`` zeroes them exactly.
    """
    ok = np.empty(band.shape, dtype=bool) if out is None else out
    if band.dtype.kind != "f":
        if nodata is None or np.isnan(nodata):
            ok[...] = True
        else:
            np.not_equal(band, np.asarray(nodata).astype(band.dtype), out=ok)
        return ok, band.dtype.kind in "biu"  # integers are finite; complex values need not be
    if nodata is None or np.isnan(nodata):
        np.isnan(band, out=ok)
        np.logical_not(ok, out=ok)
        return ok, bool(ok.all())
    nd = np.asarray(nodata).astype(band.dtype)
    np.not_equal(band, nd, out=ok)
    # Usually no NaN: the maximum propagates NaN and reads the band once without writing
    # a mask (cheaper than isnan().any()), so two passes are saved on most reads.
    if band.size and np.isnan(np.max(band)):
        ok &= ~np.isnan(band)
        return ok, False
    return ok, bool(np.isfinite(nd))  # a nodata too large for the dtype is inf


def _mask_reader(ds: Any, window: Window) -> Callable[[int, BandRef], np.ndarray]:
    """The validity of a band that uses its GDAL mask, read from ``ds`` over ``window``."""
    return lambda _i, ref: ds.read_masks(ref.band, window=window.to_rasterio()) > 0


def _validity(refs: Sequence[BandRef], data: np.ndarray, ok: np.ndarray, mask: Callable[[int, BandRef], np.ndarray]) -> list[bool]:
    """Write the validity of each band of ``data`` into ``ok``; per band, whether its invalid pixels are all finite.

    Bands that use a mask take it from ``mask(index, ref)`` (read from the file, or from the block cache).
    """
    clean = []
    for i, ref in enumerate(refs):
        if ref.use_mask:
            ok[i] = mask(i, ref)
            clean.append(False)  # a mask says nothing about the values under it
        else:
            clean.append(validity(data[i], ref.nodata, out=ok[i])[1])
    return clean


def _warped(ds: Any, ref: BandRef) -> Any:
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    target = ref.warp_to
    assert target is not None
    return WarpedVRT(
        ds, crs=target.crs, transform=target.transform, width=target.width, height=target.height,
        resampling=Resampling[ref.resampling], src_nodata=ref.nodata, nodata=ref.nodata,
    )  # fmt: skip


def _scaled(raw: np.ndarray, ref: BandRef, dtype: np.dtype) -> np.ndarray:
    out = raw.astype(dtype, copy=False)
    if ref.scale not in (0.0, 1.0):
        # Sentinel-2 style (DN + BOA_ADD_OFFSET) / QUANTIFICATION: when 1/scale and offset/scale
        # are whole numbers, add and divide by them, so the result is the correctly rounded
        # value of the product specification's formula, not one rounding off.
        inv, shift = 1.0 / ref.scale, ref.offset / ref.scale
        if abs(inv - round(inv)) < 1e-9 * inv and abs(shift - round(shift)) < 1e-6 and abs(shift) < 2**24:
            if round(shift):
                out = out + dtype.type(round(shift))
            return out / dtype.type(round(inv))
    if ref.scale != 1.0:
        out = out * dtype.type(ref.scale)
    if ref.offset != 0.0:
        out = out + dtype.type(ref.offset)
    return out


TILE_BLOCK = 512


def block_size(n: int) -> int:
    """Block edge for an intermediate file edge of ``n`` pixels: 512, or less (a multiple of 16) for small files."""
    return min(TILE_BLOCK, max(16, -(-n // 16) * 16))


@dataclass
class TileWritten:
    """What writing a tile produced: its size, a checksum of its pixels and their statistics."""

    path: str
    size: int
    checksum: str
    valid_count: int
    minimum: float | None
    maximum: float | None
    total: float
    seconds: float


def to_output(data: np.ndarray, valid: np.ndarray, dtype: str, nodata: float) -> np.ndarray:
    """Cast computed values to the output type, putting ``nodata`` where invalid.

    Integer outputs are rounded half to even and clipped to the type's range.
    """
    out_dtype = np.dtype(dtype)
    if out_dtype.kind in "iu":
        info = np.iinfo(out_dtype)
        data = np.clip(np.rint(data), info.min, info.max)
    out = data.astype(out_dtype, copy=False)
    if not valid.all():
        out = np.where(valid, out, out_dtype.type(nodata))
    return out


def fmt_bytes(n: int) -> str:
    """``n`` bytes in binary units, e.g. ``1.5 MiB``."""
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def free_bytes(path: str | Path) -> int:
    """Bytes free for this user on the file system holding ``path`` (or its nearest existing parent)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return 0


class DiskFullError(OutputError):
    """A write failed because its file system is full: names the path, the space free and what is needed.

    Exit code 1: the run started; free space and rerun the same command to resume.
    """

    exit_code = 1

    def __init__(self, path: str, free: int, detail: str = "") -> None:
        self.path, self.free, self.detail = path, free, detail
        super().__init__(
            f"no space left on device writing {path!r} ({fmt_bytes(free)} free there{'; ' + detail if detail else ''})",
            "free some space (or write elsewhere with -o), then rerun the same command to resume",
        )

    def __reduce__(self) -> tuple[Any, ...]:  # keep the fields across process boundaries
        return (type(self), (self.path, self.free, self.detail))


_NO_SPACE_TEXTS = ("no space left", "free disk space", "disk full", "quota exceeded")


def disk_full(path: str | Path, exc: BaseException, size_hint: int = 0) -> DiskFullError | None:
    """Return a :class:`DiskFullError` when ``exc``, raised writing ``path``, came from a full file system.

    GDAL reports a full disk in several ways (an ``OSError``, "No space left on device",
    "Free disk space available is ...", or only "Write failed"), so besides the error
    itself the free space is compared with ``size_hint``, the bytes the write needed.
    """
    if isinstance(exc, DiskFullError):
        return exc
    texts: list[str] = []
    e: BaseException | None = exc
    while e is not None and len(texts) < 5:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            texts.append("no space left")
        texts.append(str(e).lower())
        e = e.__cause__ or e.__context__
    free = free_bytes(Path(path).parent)
    if any(t in text for text in texts for t in _NO_SPACE_TEXTS) or (size_hint and free < size_hint):
        return DiskFullError(str(path), free)
    return None


def write_array(path: str | Path, out: np.ndarray, grid: Grid, nodata: float, band_names: Sequence[str], encoding: dict[str, Any] | None = None) -> int:
    """Write a (bands, h, w) array as a tiled GeoTIFF (uncompressed unless ``encoding`` says), atomically; return its size.

    Raises
    ------
    DiskFullError
        The file system is full (nothing is left at ``path`` or its temporary name).
    """
    path = Path(path)
    try:
        return _write_array(path, out, grid, nodata, band_names, encoding or {})
    except Exception as exc:
        full = disk_full(path, exc, out.nbytes)
        if full is not None:
            raise full from None
        raise


def _write_array(path: Path, out: np.ndarray, grid: Grid, nodata: float, band_names: Sequence[str], encoding: dict[str, Any]) -> int:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    profile = {
        "driver": "GTiff", "width": grid.width, "height": grid.height, "count": out.shape[0], "dtype": out.dtype.name,
        "crs": grid.crs, "transform": grid.transform, "nodata": nodata, "interleave": "band",
        # Uncompressed, in the output's own 512x512 blocks: the COG is built from these, and
        # GDAL reads them block by block (striped tiles made that step ~2x slower).
        "tiled": True, "blockxsize": block_size(grid.width), "blockysize": block_size(grid.height), **encoding,
    }  # fmt: skip

    def fill(ds: Any) -> None:
        ds.write(out)
        for i, name in enumerate(band_names, start=1):
            ds.set_band_description(i, name)

    try:
        if encoding:
            # Encoded in memory, written with checked I/O: GDAL writing the file itself can
            # report success for a tile a full disk cut short (then recorded as done).
            write_raster_file(tmp, fill, **profile)
        else:
            # Uncompressed, so every block has its full size: a file shorter than its blocks was cut short.
            bh, bw = profile["blockysize"], profile["blockxsize"]
            blocks = -(-grid.height // bh) * -(-grid.width // bw) * out.shape[0]
            write_raster_direct(tmp, fill, blocks * bh * bw * out.dtype.itemsize, **profile)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path.stat().st_size


def write_tile(path: str | Path, out: np.ndarray, valid: np.ndarray, grid: Grid, nodata: float, band_names: Sequence[str]) -> TileWritten:
    """Write one tile's output file atomically and describe it (size, checksum, statistics).

    Parameters
    ----------
    out
        Output pixels, shape (bands, h, w), already in the output dtype.
    valid
        Boolean validity of ``out`` (used for the statistics).
    """
    t0 = time.perf_counter()
    size = write_array(path, out, grid, nodata, band_names)
    # A tile without nodata needs no masked copy: its values in the same order, so the same statistics.
    vals = out.ravel() if valid.all() else out[valid]
    has = vals.size > 0
    return TileWritten(
        path=str(path),
        size=size,
        checksum=f"{zlib.crc32(np.ascontiguousarray(out).data):08x}",
        valid_count=int(vals.size),
        minimum=float(vals.min()) if has else None,
        maximum=float(vals.max()) if has else None,
        total=float(vals.sum(dtype=np.float64)) if has else 0.0,
        seconds=time.perf_counter() - t0,
    )
