"""Overviews computed in parallel, as a phase of the run (instead of inside GDAL's COG driver).

Each overview pixel at factor ``f`` is the mean of the valid pixels of its
``f x f`` block of the full-resolution output (nodata where none is valid), the
same as GDAL's AVERAGE resampling but nodata-aware by construction. Work is cut
into *regions* aligned to the largest factor, fixed by the grid alone, and each
level is built from exact 2x2 sums and counts of the previous one in a fixed
order, so the bytes never depend on the tile size, region or executor.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from tilewise.grid import Grid, Window
from tilewise.io import valid_of, write_array
from tilewise.rasterfile import open_read
from tilewise.tiling import Tiling

COG_BLOCK = 512
REGION_TARGET = 2048


def overview_factors(height: int, width: int, block: int = COG_BLOCK) -> tuple[int, ...]:
    """The factors GDAL's COG driver picks with OVERVIEWS=AUTO: 2, 4, ... until a level fits in one block."""
    factors = []
    f = 2
    while math.ceil(width / (f // 2)) > block or math.ceil(height / (f // 2)) > block:
        factors.append(f)
        f *= 2
    return tuple(factors)


def level_grid(grid: Grid, factor: int) -> Grid:
    """The grid of an overview level (size rounded up, pixel size scaled as GDAL does)."""
    h, w = math.ceil(grid.height / factor), math.ceil(grid.width / factor)
    return Grid(grid.crs, grid.transform @ Affine.scale(grid.width / w, grid.height / h), h, w)


def regions(grid: Grid, factors: tuple[int, ...]) -> Tiling:
    """Cut ``grid`` into regions whose edges are multiples of the largest factor."""
    top = max(factors) if factors else 1
    size = top * max(1, REGION_TARGET // top)
    return Tiling.for_grid(grid, size, size)


def level_window(window: Window, factor: int) -> Window:
    """The part of an overview level covered by ``window`` (whose offsets are multiples of ``factor``)."""
    r0, c0 = window.row_off // factor, window.col_off // factor
    return Window(r0, c0, math.ceil(window.row_end / factor) - r0, math.ceil(window.col_end / factor) - c0)


def pyramid_sources(path: str, window: Window, factors: tuple[int, ...]) -> dict[int, tuple[str, Window, int, int, int]]:
    """Where each level of ``window`` lies in its pyramid file: ``{factor: (path, level window, column offset, file width, file height)}``.

    A pyramid file holds all levels of one tile or region side by side in one raster, so a
    tile costs one extra file, not one per level.
    """
    wins = [level_window(window, f) for f in factors]
    width, height = sum(w.width for w in wins), max((w.height for w in wins), default=0)
    out: dict[int, tuple[str, Window, int, int, int]] = {}
    col = 0
    for f, lw in zip(factors, wins, strict=True):
        out[f] = (path, lw, col, width, height)
        col += lw.width
    return out


def write_pyramid(path: str, window: Window, grid: Grid, levels: dict[int, np.ndarray], nodata: float,
                  band_names: tuple[str, ...]) -> None:  # fmt: skip
    """Write the levels of one window side by side (the layout of :func:`pyramid_sources`)."""
    factors = tuple(levels)
    layout = pyramid_sources(path, window, factors)
    first = levels[factors[0]]
    _p, _w, _c, width, height = layout[factors[0]]
    canvas = np.full((first.shape[0], height, width), nodata, dtype=first.dtype)
    for f, (_p, lw, col, _fw, _fh) in layout.items():
        canvas[:, : lw.height, col : col + lw.width] = levels[f]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    lg = level_grid(grid, factors[0]).window_grid(level_window(window, factors[0]))
    write_array(out, canvas, Grid(lg.crs, lg.transform, height, width), nodata, band_names)


def compute_levels(out: np.ndarray, factors: tuple[int, ...], dtype: str, nodata: float) -> dict[int, np.ndarray]:
    """All overview levels of a (bands, h, w) output array whose origin is aligned to the largest factor."""
    per: dict[int, list[np.ndarray]] = {f: [] for f in factors}
    for band in out:
        for f, level in block_means(band, valid_of(band, nodata), factors, dtype, nodata).items():
            per[f].append(level)
    return {f: np.stack(b) for f, b in per.items()}


@dataclass(frozen=True)
class OverviewTask:
    """Compute every overview level of one region of one output (when tiles are not aligned)."""

    key: str
    item: int
    source: str
    region: Window
    grid: Grid
    factors: tuple[int, ...]
    dtype: str
    nodata: float
    band_names: tuple[str, ...]
    path: str

    @property
    def pixels(self) -> int:
        return self.region.height * self.region.width

    def run(self) -> dict[str, Any]:
        return run_overviews(self)


def _sum2x2(a: np.ndarray) -> np.ndarray:
    # Pad to even sizes with empty pixels, then add each 2x2 block in a fixed order.
    if a.shape[0] % 2 or a.shape[1] % 2:
        a = np.pad(a, ((0, a.shape[0] % 2), (0, a.shape[1] % 2)))
    out: np.ndarray = a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]
    return out


def _widening_sum2x2(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    # As _sum2x2, adding in ``dtype`` without converting the whole input first.
    if a.shape[0] % 2 or a.shape[1] % 2:
        a = np.pad(a, ((0, a.shape[0] % 2), (0, a.shape[1] % 2)))
    out = a[0::2, 0::2].astype(dtype)
    out += a[1::2, 0::2]
    out += a[0::2, 1::2]
    out += a[1::2, 1::2]
    return out


def block_means(data: np.ndarray, valid: np.ndarray, factors: tuple[int, ...], dtype: str, nodata: float) -> dict[int, np.ndarray]:
    """Return ``{factor: level}`` block means of one 2-D band for each factor (powers of two).

    In a process that has loaded numba already (a focal or coverage job's worker) the
    levels come from compiled kernels, ~3x faster and the same bytes
    (:mod:`tilewise.kernels.pyramid`); elsewhere from :func:`block_means_numpy`, as
    loading numba (~0.3 s per process, even from its cache) costs more than it saves.
    """
    if "numba" in sys.modules:
        from tilewise.kernels import pyramid

        return pyramid.block_means(data, valid, factors, dtype, nodata)
    return block_means_numpy(data, valid, factors, dtype, nodata)


def block_means_numpy(data: np.ndarray, valid: np.ndarray, factors: tuple[int, ...], dtype: str, nodata: float) -> dict[int, np.ndarray]:
    """:func:`block_means` with numpy: each level from exact 2x2 sums and counts of the previous one, in a fixed order."""
    out_dtype = np.dtype(dtype)
    levels: dict[int, np.ndarray] = {}
    if not factors:
        return levels
    # A band without nodata (tiles away from holes, fill and edges) needs no masked copy, and its counts are the block
    # sizes: an outer product of per-row and per-column counts, not sums over the mask.
    full = bool(valid.all())
    # The first 2x2 step reads the full-resolution band without a float64 copy of it.
    s = _widening_sum2x2(data if full else np.where(valid, data, 0), np.dtype(np.float64))
    if full:
        rows, cols = _pair_counts(np.ones(data.shape[0], np.int32)), _pair_counts(np.ones(data.shape[1], np.int32))
        c = rows[:, None] * cols[None, :]
    else:
        c = _widening_sum2x2(valid.view(np.uint8), np.dtype(np.int32))
    f = 2
    for target in factors:
        while f < target:
            s = _sum2x2(s)
            if full:
                rows, cols = _pair_counts(rows), _pair_counts(cols)
                c = rows[:, None] * cols[None, :]
            else:
                c = _sum2x2(c)
            f *= 2
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = s / c
        if out_dtype.kind in "iu":
            info = np.iinfo(out_dtype)
            mean = np.clip(np.rint(mean), info.min, info.max)
        level = mean.astype(out_dtype) if full else np.where(c > 0, mean, nodata).astype(out_dtype)
        if out_dtype.kind == "f":
            # One NaN for every NaN mean (inf - inf, a NaN counted valid): the sign and payload
            # of a NaN an addition returns are left to the hardware and compiler.
            nan = np.isnan(level)
            if nan.any():
                level[nan] = np.nan
        levels[target] = level
    return levels


def _pair_counts(n: np.ndarray) -> np.ndarray:
    """Counts of pixels per pair of consecutive rows (or columns), the last alone when odd."""
    if n.size % 2:
        n = np.append(n, 0)
    return n[0::2] + n[1::2]


def run_overviews(task: OverviewTask) -> dict[str, Any]:
    """Read the region's full-resolution pixels and write its pyramid file."""
    t0 = time.perf_counter()
    with open_read(task.source) as ds:
        data = ds.read(window=task.region.to_rasterio())
    levels = compute_levels(data, task.factors, task.dtype, task.nodata)
    write_pyramid(task.path, task.region, task.grid, levels, task.nodata, task.band_names)
    return {"kind": "overview", "key": task.key, "item": task.item, "path": task.path, "seconds": round(time.perf_counter() - t0, 6)}
