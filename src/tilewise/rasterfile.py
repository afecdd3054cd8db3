"""The one place that opens raster files, for reading and for writing.

Everything else asks this module; GDAL/rasterio errors are turned into
:class:`~tilewise.errors.InputError` / :class:`~tilewise.errors.OutputError`
naming the path here, once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import rasterio
from rasterio.errors import RasterioIOError

from tilewise.errors import InputError, OutputError
from tilewise.grid import Grid

# GDAL settings for every read/write: a bounded block cache per worker. Directory
# listing on open stays on, so .aux.xml sidecars (nodata, scale/offset) are seen.
GDAL_ENV: dict[str, Any] = {
    "GDAL_CACHEMAX": 256,
    "GDAL_NUM_THREADS": 1,
}


# numpy dtype name -> GDAL data type name, for VRT XML.
GDAL_TYPES = {
    "uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
    "int32": "Int32", "float32": "Float32", "float64": "Float64",
}  # fmt: skip

def _looks_like_gdal_name(path: str) -> bool:
    return path.startswith(("/vsi", "netcdf:", "NETCDF:", "HDF5:", "HDF4", "GTIFF_DIR:")) or "://" in path


def check_readable(path: str) -> None:
    """Raise :class:`InputError` when ``path`` is a local path that does not exist."""
    if _looks_like_gdal_name(path):
        return
    p = Path(path)
    if not p.exists():
        raise InputError(f"input {path!r} does not exist", "check the path (relative paths are taken from the current directory)")
    if p.is_dir():
        raise InputError(f"input {path!r} is a directory, not a raster file", "name a raster file, or a Sentinel-2 .SAFE folder where one is accepted")


@contextmanager
def open_read(path: str, **kwargs: Any) -> Iterator[rasterio.io.DatasetReader]:
    """Open a raster for reading, with a clear error when it is missing or not a raster."""
    check_readable(path)
    with rasterio.Env(**GDAL_ENV):
        try:
            ds = rasterio.open(path, **kwargs)
        except RasterioIOError as exc:
            raise InputError(
                f"{path!r} is not a raster GDAL can read ({_short(exc)})", "check the file is a complete raster (GeoTIFF, JP2, VRT, netCDF:file:var ...)"
            ) from None
        try:
            yield ds
        finally:
            ds.close()


@contextmanager
def open_write(path: str | Path, **profile: Any) -> Iterator[rasterio.io.DatasetWriter]:
    """Open a new raster for writing (the caller writes to a temporary name and renames)."""
    with rasterio.Env(**GDAL_ENV):
        try:
            ds = rasterio.open(path, "w", **profile)
        except (RasterioIOError, OSError) as exc:
            raise OutputError(f"cannot create {str(path)!r} ({_short(exc)})", "check the output directory exists and is writable") from None
        try:
            yield ds
        finally:
            ds.close()


def copy_raster(src: str | Path, dst: str | Path, driver: str, **creation_options: Any) -> None:
    """Copy ``src`` to a new file ``dst`` with a GDAL driver's CreateCopy (e.g. the COG driver)."""
    from rasterio.shutil import copy

    with rasterio.Env(**{**GDAL_ENV, "GDAL_NUM_THREADS": creation_options.get("NUM_THREADS", 1)}):
        try:
            copy(str(src), str(dst), driver=driver, **creation_options)
        except (RasterioIOError, OSError, rasterio.errors.RasterioError) as exc:
            raise OutputError(f"cannot write {str(dst)!r} ({_short(exc)})", "check free disk space and write permission") from None


def grid_of(ds: rasterio.io.DatasetReader) -> Grid:
    """Return the :class:`Grid` of an open dataset."""
    crs = ds.crs.to_wkt() if ds.crs else None
    return Grid(crs, ds.transform, ds.height, ds.width)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


def fsync_dir(path: str | Path) -> None:
    """Flush a directory entry so a rename in it survives a power loss."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
