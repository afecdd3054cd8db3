"""The one place that opens raster files, for reading and for writing.

Everything else asks this module; GDAL/rasterio errors are turned into
:class:`~tilewise.errors.InputError` / :class:`~tilewise.errors.OutputError`
naming the path here, once.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import rasterio
from rasterio.errors import RasterioIOError

from tilewise.errors import InputError, OutputError
from tilewise.grid import Grid
from tilewise.remote import endpoint_env, gdal_name, is_remote, open_error, remote_env

# GDAL settings for every read/write: a bounded block cache per worker. Directory
# listing on open stays on, so .aux.xml sidecars (nodata, scale/offset) are seen.
# Remote inputs (URLs, S3) get tilewise.remote's HTTP settings on top.
GDAL_ENV: dict[str, Any] = {
    # In bytes: rasterio passes an integer to GDALSetCacheMax64, so 256 meant 256 *bytes*
    # (no block cache at all), which made every halo re-decode its neighbours' blocks.
    # 128 MiB holds a row of 512-pixel blocks of a 16384-wide float32 raster several times
    # over; 256 MiB only raised peak memory (and measured no faster).
    "GDAL_CACHEMAX": 128 * 1024 * 1024,
    "GDAL_NUM_THREADS": 1,
}


# numpy dtype name -> GDAL data type name, for VRT XML.
GDAL_TYPES = {
    "uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
    "int32": "Int32", "float32": "Float32", "float64": "Float64",
}  # fmt: skip


def vrt_number(v: float) -> str:
    """A number as VRT XML writes it: ``nan``, ``inf``, integers without a fraction, else the shortest repr."""
    if v != v:
        return "nan"
    if v in (float("inf"), float("-inf")):
        return "inf" if v > 0 else "-inf"
    return str(int(v)) if float(v).is_integer() and abs(v) < 2**53 else repr(float(v))


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
    with open_read_unclosed(path, **kwargs) as ds:
        try:
            yield ds
        finally:
            ds.close()


@contextmanager
def open_read_unclosed(path: str, **kwargs: Any) -> Iterator[rasterio.io.DatasetReader]:
    """Open a raster for reading (errors as :func:`open_read`); the caller closes it."""
    check_readable(path)
    if is_remote(path):
        with rasterio.Env(**{**GDAL_ENV, **remote_env()}):
            try:
                ds = rasterio.open(gdal_name(path), **kwargs)
            except RasterioIOError as exc:
                raise open_error(path, _short(exc)) from None
            yield ds
        return
    with rasterio.Env(**{**GDAL_ENV, **endpoint_env()}):  # a local VRT may name s3:// sources (a STAC mosaic)
        try:
            ds = rasterio.open(path, **kwargs)
        except RasterioIOError as exc:
            raise _not_a_raster(path, exc) from None
        yield ds


def _not_a_raster(path: str, exc: BaseException) -> InputError:
    hint = "check the file is a complete raster (GeoTIFF, JP2, VRT, netCDF:file:var ...)"
    if path.lower().endswith(".zip"):
        hint = "unzip it first and pass the raster (or the Sentinel-2 .SAFE folder) inside, or name a file in it as /vsizip/ARCHIVE.zip/PATH"
    return InputError(f"{path!r} is not a raster GDAL can read ({_short(exc)})", hint)


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


def copy_raster(src: str | Path, dst: str | Path, driver: str, creation_options: Mapping[str, Any], vrt_georef_only: bool = False) -> None:
    """Copy ``src`` to a new file ``dst`` with a GDAL driver's CreateCopy (e.g. the COG driver) and its ``creation_options``.

    ``vrt_georef_only``: ``src`` is a VRT whose XML holds the georeferencing, and
    the files it reads are opened without reading their own (GDAL_GEOREF_SOURCES=NONE):
    a VRT only takes pixel windows from its sources, and parsing the CRS of each of a
    job's ~1500 tile and overview files was ~0.8 s of a 16384² COG's assembly.
    """
    from rasterio.shutil import copy

    # A small block cache: the COG driver streams its source once, and a big cache only
    # added copying (measured: 16 MiB assembles a 16384² output ~1 s faster than 256 MiB).
    env = {**GDAL_ENV, "GDAL_NUM_THREADS": creation_options.get("NUM_THREADS", 1), "GDAL_CACHEMAX": 16 * 1024 * 1024}
    if vrt_georef_only:
        env["GDAL_GEOREF_SOURCES"] = "NONE"
    with rasterio.Env(**env):
        try:
            copy(str(src), str(dst), driver=driver, **creation_options)
        except (RasterioIOError, OSError, rasterio.errors.RasterioError) as exc:
            raise OutputError(f"cannot write {str(dst)!r} ({_short(exc)})", "check free disk space and write permission") from None


def write_raster_file(path: str | Path, fill: Any, **profile: Any) -> None:
    """Create the raster file ``path`` with ``fill(dataset)``, encoding it in memory first.

    GDAL can report success for a file whose last writes failed (on a full disk the
    directory it writes at close is silently lost), so the bytes are encoded in GDAL's
    in-memory file system and written here with Python's file I/O, which raises
    ``OSError`` on any failed or short write. Costs one copy of the file in memory.
    """
    from rasterio.io import MemoryFile

    with rasterio.Env(**GDAL_ENV):
        try:
            with MemoryFile() as mem:
                with mem.open(**profile) as ds:
                    fill(ds)
                with open(path, "wb") as fh:
                    fh.write(mem.getbuffer())
        except (RasterioIOError, rasterio.errors.RasterioError) as exc:
            raise OutputError(f"cannot create {str(path)!r} ({_short(exc)})", "check the output directory exists and is writable") from None


def write_raster_direct(path: str | Path, fill: Any, min_size: int, **profile: Any) -> None:
    """Create the raster file ``path`` with ``fill(dataset)``, GDAL writing it itself; then check it holds ``min_size`` bytes.

    For uncompressed files, whose size is known before they are written: GDAL can
    report success for a file whose last writes failed (a full disk), and such a
    file is shorter than its blocks. Half the memory traffic of
    :func:`write_raster_file` (no copy of the file in memory), which on a machine
    that charges for every new page is most of a tile's write time.

    Raises
    ------
    OutputError
        GDAL failed, or the file is shorter than ``min_size`` (the caller turns this
        into a :class:`~tilewise.errors.DiskFullError` when the disk is full).
    """
    with rasterio.Env(**GDAL_ENV):
        try:
            with rasterio.open(path, "w", **profile) as ds:
                fill(ds)
        except (RasterioIOError, rasterio.errors.RasterioError, OSError) as exc:
            raise OutputError(f"cannot create {str(path)!r} ({_short(exc)})", "check the output directory exists and is writable") from None
    size = os.stat(path).st_size
    if size < min_size:
        raise OutputError(f"{str(path)!r} was cut short: {size} of at least {min_size} bytes written", "check free disk space, then rerun to resume")


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


@contextmanager
def flushing(path: str | Path, every: float = 0.5) -> Iterator[None]:
    """While the body writes the file ``path``, flush what it has written to the disk every ``every`` seconds.

    The output is fsynced before it is renamed into place; flushing along the way
    overlaps the disk writes with the encoding, so that final fsync finds little
    left (a 0.95 GB COG: 0.5 s of waiting at the end, 0.05 s). A thread of its own
    waits on the disk; it never touches the file's contents.
    """
    if not hasattr(os, "fdatasync"):  # not on every platform (macOS): the final fsync does it all
        yield
        return
    stop = threading.Event()

    def flush() -> None:
        while not stop.wait(every):
            try:
                fd = os.open(str(path), os.O_RDONLY)
            except OSError:  # not created yet
                continue
            try:
                os.fdatasync(fd)
            except OSError:
                pass
            finally:
                os.close(fd)

    thread = threading.Thread(target=flush, name="tilewise-flush", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


_KEPT = threading.local()
KEPT_HANDLES = 8


@contextmanager
def open_read_kept(path: str, identity: tuple[int, int] = (0, 0)) -> Iterator[rasterio.io.DatasetReader]:
    """Like :func:`open_read`, but the handle stays open in this thread for the next tiles.

    GDAL's block cache belongs to an open dataset: a tile whose halo reaches into its
    neighbours' blocks finds them decoded when the same worker read those neighbours
    just before, instead of decoding them again (the blocks a halo touches can triple
    what a tile decodes). Handles are keyed by path and file identity (size, mtime),
    so a rewritten file is reopened, and at most :data:`KEPT_HANDLES` stay open per thread.
    """
    remote = is_remote(path)
    streaming = getattr(_KEPT, "cache_bytes", 0) > 0  # set_read_cache: a time stack's reads
    if not remote and getattr(_KEPT, "bare_opens", False):
        # A stream reads hundreds of files once per tile, so a kept handle is never reused:
        # a bare open under the stream's own environment (stream_env) saves a third of the
        # cost of each open (two environments and a stat per read).
        with _open_streamed(path) as ds:
            yield ds
        return
    if remote and streaming:
        # A stream (a time stack) reads each block once: a remote file is opened afresh for each
        # tile, because on a kept handle GDAL takes the next tile's block for a sequential read and
        # fetches twice as many bytes ahead (measured: 1.5x the bytes the windows need). Reopening
        # costs no request: the header stays in GDAL's process-wide cache (CPL_VSIL_CURL_CACHE_SIZE).
        with open_read(path) as ds:
            yield ds
        return
    kept: OrderedDict[tuple[str, tuple[int, int], int], Any] | None = getattr(_KEPT, "handles", None)
    if kept is None:
        kept = _KEPT.handles = OrderedDict()
    key = (path, identity, os.getpid())
    ds = kept.pop(key, None)
    if ds is None or ds.closed:
        with open_read_unclosed(path) as opened:
            ds = opened
    cache = getattr(_KEPT, "cache_bytes", 0)
    env = GDAL_ENV if not cache else {**GDAL_ENV, "GDAL_CACHEMAX": cache}
    # Kept for the blocks a halo shares with the previous tile; reads fetch, so the HTTP settings apply
    # (for a local VRT, the endpoint of its s3:// sources: a STAC mosaic).
    env = {**env, **(remote_env() if remote else endpoint_env())}
    try:
        with rasterio.Env(**env):
            yield ds
    except BaseException:
        ds.close()
        raise
    kept[key] = ds
    while len(kept) > KEPT_HANDLES:
        _, old = kept.popitem(last=False)
        old.close()


def _bare_open(path: str) -> rasterio.io.DatasetReader:
    """Open a local raster as rasterio.open does, minus the credential environment it enters per call (a third of its cost)."""
    try:
        from rasterio._path import _parse_path
    except ImportError:  # a rasterio that moved its path parser: the public way
        return rasterio.open(path)
    return rasterio.io.DatasetReader(_parse_path(path))


@contextmanager
def _open_streamed(path: str) -> Iterator[rasterio.io.DatasetReader]:
    try:
        ds = _bare_open(path)
    except RasterioIOError as exc:
        check_readable(path)  # a file removed since the job was planned: say so
        raise _not_a_raster(path, exc) from None
    try:
        yield ds
    finally:
        ds.close()


@contextmanager
def stream_env(cache_bytes: int, sidecars: bool = True) -> Iterator[None]:
    """The GDAL environment of one time-stack stream in this thread (see :func:`set_read_cache`).

    Set once for a tile's whole stream instead of once per read, which with the bare
    opens of :func:`open_read_kept` saves a third of the cost of each member read.
    With ``sidecars`` False, an open does not look for ``.aux.xml``/``.msk``/``.ovr``
    files beside the member (GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR), which otherwise
    lists the member's folder on every open (0.2 of 0.35 ms in a folder of 366 dated
    files): the stream takes nodata, scale and offset from the job's plan, so only a
    per-dataset mask needs a sidecar. (TRUE would probe sidecar names one by one,
    which for a VRT member naming remote sources means requests.)
    """
    opts: dict[str, Any] = {"GDAL_CACHEMAX": cache_bytes}
    if not sidecars:
        opts["GDAL_DISABLE_READDIR_ON_OPEN"] = "EMPTY_DIR"
    set_read_cache(cache_bytes)
    try:
        with _bare_open_env(**opts):
            yield
    finally:
        set_read_cache(0)


@contextmanager
def _bare_open_env(**overrides: Any) -> Iterator[None]:
    """The one GDAL environment that local bare opens (:func:`_open_streamed`) rely on, with ``overrides``."""
    _KEPT.bare_opens = True
    try:
        with rasterio.Env(**{**GDAL_ENV, **endpoint_env(), **overrides}):
            yield
    finally:
        _KEPT.bare_opens = False


@contextmanager
def probe_env() -> Iterator[None]:
    """One GDAL environment for opening many local rasters in a row (a stack's members, when planning).

    Inside it, :func:`open_probed` opens a local file with a bare open (no environment of its
    own per file: ~0.35 ms instead of ~0.9 ms, which for a stack of hundreds of members is
    start-up time every worker waits for). Sidecar files are still looked for: the planner
    reads nodata, scale, offset and masks, which may live in ``.aux.xml`` or ``.msk`` files.
    """
    with _bare_open_env():
        yield


@contextmanager
def open_probed(path: str) -> Iterator[rasterio.io.DatasetReader]:
    """:func:`open_read`, with a bare open for a local file inside :func:`probe_env` (same errors)."""
    if is_remote(path) or not getattr(_KEPT, "bare_opens", False):
        with open_read(path) as ds:
            yield ds
        return
    with _open_streamed(path) as ds:  # a missing file is named when the open fails (check_readable)
        yield ds


def set_read_cache(cache_bytes: int) -> None:
    """Use a GDAL block cache of ``cache_bytes`` for this thread's :func:`open_read_kept` reads (0: the default).

    A time stack decodes each block once, so the default cache would only hold memory.
    """
    _KEPT.cache_bytes = cache_bytes


def close_kept() -> None:
    """Close the handles :func:`open_read_kept` keeps in this thread."""
    kept = getattr(_KEPT, "handles", None) or {}
    for ds in kept.values():
        ds.close()
    kept.clear()
