"""A :class:`Task` is one tile of one output; :func:`run_task` reads, computes, crops and writes it.

Tasks are small picklable values so any executor can move them; the runner
groups tiny ones into one unit of work so they do not pay per-unit overhead.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tilewise.blockcache import use_cache
from tilewise.grid import Grid
from tilewise.io import TileArrays, read_tile, to_output, write_tile
from tilewise.ops.base import Operation, TileContext
from tilewise.overviews import compute_levels, write_pyramid
from tilewise.rasterfile import set_read_cache, stream_env
from tilewise.remote import is_remote, use_s3_endpoint
from tilewise.sources.raster import BandRef
from tilewise.tiling import Tile


@dataclass(frozen=True)
class Task:
    """One (job, tile) pair: everything a worker needs, nothing it must look up."""

    key: str
    item: int
    tile: Tile
    refs: dict[str, BandRef]
    op: Operation
    work_dtype: str
    out_dtype: str
    nodata: float
    tile_path: str
    # Set when the tile's origin is aligned to the largest overview factor: the tile
    # also writes its piece of every overview level (one pyramid file), saving a re-read.
    ovr_factors: tuple[int, ...] = ()
    ovr_path: str = ""
    grid: Grid | None = None
    s3_endpoint: str | None = None  # the job's --s3-endpoint, carried to the worker (remote.use_s3_endpoint)
    cache: str | None = None  # the job's --cache folder for remote blocks (blockcache.use_cache)
    # Whether the tile files carry the CRS. The assembly takes it from its VRT, and writing
    # a CRS costs ~0.9 ms per file (GeoTIFF keys), so only tiles the user keeps (--keep-tiles) get it.
    georef: bool = True

    @property
    def pixels(self) -> int:
        return self.tile.core.height * self.tile.core.width

    def run(self) -> dict[str, Any]:
        return run_task(self)


def run_task(task: Task) -> dict[str, Any]:
    """Read the tile's windows, compute, crop the halo, write the tile file atomically.

    Returns
    -------
    dict
        The result record for the manifest: key, file size, checksum, pixel
        statistics (valid count, min, max, sum) and read/compute/write seconds.
    """
    t0 = time.perf_counter()
    use_s3_endpoint(task.s3_endpoint)
    use_cache(task.cache)
    work = np.dtype(task.work_dtype)
    read = task.tile.read
    if getattr(task.op, "streaming", False):
        # A time stack: the op reads one date at a time, so memory does not grow with the dates.
        data, valid, nbytes, read_s = _stream(task, work)
        t1 = t0 + read_s
    elif getattr(task.op, "generates", False):
        # Drawn from vectors (rasterize --like): no raster is read.
        data, valid = task.op.generate(read.row_off, read.col_off, read.height, read.width)  # type: ignore[attr-defined]
        data = data.astype(work)
        nbytes = 0
        t1 = time.perf_counter()
    else:
        arrays = read_tile(task.refs, read, work)
        nbytes = arrays.bytes_read
        t1 = time.perf_counter()
        ref = next(iter(task.refs.values()))
        ctx = TileContext(read.row_off + ref.origin[0], read.col_off + ref.origin[1], ref.out_grid.height, ref.out_grid.width)
        data, valid = task.op.compute(arrays.values, arrays.valid, work, ctx)
    halo = task.op.halo
    if halo and data.shape[-2:] == (read.height, read.width):
        data = data[:, halo:-halo, halo:-halo]
        valid = valid[:, halo:-halo, halo:-halo]
    out = to_output(data, valid, task.out_dtype, task.nodata)
    t2 = time.perf_counter()
    Path(task.tile_path).parent.mkdir(parents=True, exist_ok=True)
    written = write_tile(task.tile_path, out, valid, _placed(task.tile.grid, task.georef), task.nodata, task.op.band_names)
    if task.ovr_factors:
        assert task.grid is not None
        levels = compute_levels(out, task.ovr_factors, task.out_dtype, task.nodata)
        write_pyramid(task.ovr_path, task.tile.core, _placed(task.grid, task.georef), levels, task.nodata, task.op.band_names)
    t3 = time.perf_counter()
    return {
        "kind": "tile",
        "key": task.key,
        "item": task.item,
        "path": written.path,
        "size": written.size,
        "checksum": written.checksum,
        "valid": written.valid_count,
        "min": written.minimum,
        "max": written.maximum,
        "sum": written.total,
        "pixels": task.pixels,
        "bytes_read": nbytes,
        "read_s": round(t1 - t0, 6),
        "compute_s": round(t2 - t1, 6),
        "write_s": round(t3 - t2, 6),
        "ovr": task.ovr_path,
        "worker": f"{os.uname().nodename}:{os.getpid()}",
    }


def _placed(grid: Grid, georef: bool) -> Grid:
    """``grid``, or the same grid without its CRS (the transform still places the file)."""
    return grid if georef else replace(grid, crs=None)


STREAM_CACHE_BYTES = 16 << 20
# Windows of remote stack members fetched ahead of the one being added (threads waiting on the network).
REMOTE_PREFETCH = 8


def _stream(task: Task, work: np.dtype) -> tuple[np.ndarray, np.ndarray, int, float]:
    """Run a streaming op on one tile: (data, valid, bytes read, seconds spent reading)."""
    nbytes = 0
    read_s = 0.0

    def read_one(name: str) -> tuple[np.ndarray, np.ndarray, bool]:
        nonlocal nbytes, read_s
        t = time.perf_counter()
        got = read_tile({name: task.refs[name]}, task.tile.read, work)
        nbytes += got.bytes_read
        read_s += time.perf_counter() - t
        return got.values[name], got.valid[name], name in got.finite_invalid

    shape = (task.tile.read.height, task.tile.read.width)
    # A stack's blocks are each decoded once, so GDAL's cache stays small. Files are not kept open
    # between tiles: a bare open costs ~0.15 ms, while hundreds of open handles cost ~0.4 MB each.
    order = list(task.op.inputs)
    remote = sum(is_remote(task.refs[n].path) for n in set(order)) >= 2
    sidecars = remote or any(task.refs[n].use_mask for n in set(order))  # only a mask may live in a sidecar file
    with stream_env(STREAM_CACHE_BYTES, sidecars=sidecars):
        if not remote:
            data, valid = task.op.reduce(read_one, shape, work)  # type: ignore[attr-defined]
            return data, valid, nbytes, read_s
        # Remote members: each read waits on the network, so the next dates' windows are fetched while
        # this one is added. The op still takes the dates one at a time in date order (the same
        # arithmetic), and at most REMOTE_PREFETCH windows are held.
        from collections import deque
        from concurrent.futures import Future, ThreadPoolExecutor

        def fetch(name: str) -> tuple[TileArrays, float]:
            t = time.perf_counter()
            return read_tile({name: task.refs[name]}, task.tile.read, work), time.perf_counter() - t

        pending: deque[tuple[str, Future[tuple[TileArrays, float]]]] = deque()
        with ThreadPoolExecutor(REMOTE_PREFETCH, initializer=set_read_cache, initargs=(STREAM_CACHE_BYTES,)) as pool:
            ahead = iter(order)

            def fill() -> None:
                while len(pending) < REMOTE_PREFETCH:
                    name = next(ahead, None)
                    if name is None:
                        return
                    pending.append((name, pool.submit(fetch, name)))

            def read_next(name: str) -> tuple[np.ndarray, np.ndarray, bool]:
                nonlocal nbytes, read_s
                fill()
                if not pending or pending[0][0] != name:  # not the order planned: read it here
                    return read_one(name)
                got, took = pending.popleft()[1].result()
                fill()
                nbytes += got.bytes_read
                read_s += took
                return got.values[name], got.valid[name], name in got.finite_invalid

            try:
                data, valid = task.op.reduce(read_next, shape, work)  # type: ignore[attr-defined]
            finally:
                for _n, fut in pending:
                    fut.cancel()
    return data, valid, nbytes, read_s
