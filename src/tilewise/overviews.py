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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from tilewise.grid import Grid, Window
from tilewise.io import write_array
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


@dataclass(frozen=True)
class OverviewTask:
    """Compute every overview level of one region of one output (picklable)."""

    key: str
    item: int
    source: str
    region: Window
    grid: Grid
    factors: tuple[int, ...]
    dtype: str
    nodata: float
    band_names: tuple[str, ...]
    out_dir: str

    @property
    def pixels(self) -> int:
        return self.region.height * self.region.width

    def level_window(self, factor: int) -> Window:
        """This region's window in the level of ``factor``."""
        r0, c0 = self.region.row_off // factor, self.region.col_off // factor
        return Window(r0, c0, math.ceil(self.region.row_end / factor) - r0, math.ceil(self.region.col_end / factor) - c0)

    def level_path(self, factor: int) -> str:
        return str(Path(self.out_dir) / str(factor) / f"{self.key.rsplit('/', 1)[-1]}.tif")

    def run(self) -> dict[str, Any]:
        return run_overviews(self)


def _halve(s: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Pad to even sizes with empty pixels, then add each 2x2 block in a fixed order.
    if s.shape[0] % 2 or s.shape[1] % 2:
        ph, pw = s.shape[0] % 2, s.shape[1] % 2
        s = np.pad(s, ((0, ph), (0, pw)))
        c = np.pad(c, ((0, ph), (0, pw)))
    s2 = s[0::2, 0::2] + s[1::2, 0::2] + s[0::2, 1::2] + s[1::2, 1::2]
    c2 = c[0::2, 0::2] + c[1::2, 0::2] + c[0::2, 1::2] + c[1::2, 1::2]
    return s2, c2


def block_means(data: np.ndarray, valid: np.ndarray, factors: tuple[int, ...], dtype: str, nodata: float) -> dict[int, np.ndarray]:
    """Return ``{factor: level}`` block means of one 2-D band for each factor (powers of two)."""
    out_dtype = np.dtype(dtype)
    levels: dict[int, np.ndarray] = {}
    if not factors:
        return levels
    # The first 2x2 step reads the full-resolution band without a float64 copy of it.
    v = np.where(valid, data, 0)
    c8 = valid.view(np.uint8)
    if v.shape[0] % 2 or v.shape[1] % 2:
        ph, pw = v.shape[0] % 2, v.shape[1] % 2
        v = np.pad(v, ((0, ph), (0, pw)))
        c8 = np.pad(c8, ((0, ph), (0, pw)))
    s = v[0::2, 0::2].astype(np.float64)
    s += v[1::2, 0::2]
    s += v[0::2, 1::2]
    s += v[1::2, 1::2]
    c = c8[0::2, 0::2].astype(np.int32)
    c += c8[1::2, 0::2]
    c += c8[0::2, 1::2]
    c += c8[1::2, 1::2]
    f = 2
    for target in factors:
        while f < target:
            s, c = _halve(s, c)
            f *= 2
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = s / c
        if out_dtype.kind in "iu":
            info = np.iinfo(out_dtype)
            mean = np.clip(np.rint(mean), info.min, info.max)
        levels[target] = np.where(c > 0, mean, nodata).astype(out_dtype)
    return levels


def run_overviews(task: OverviewTask) -> dict[str, Any]:
    """Read the region's full-resolution pixels and write its piece of every overview level."""
    t0 = time.perf_counter()
    with open_read(task.source) as ds:
        data = ds.read(window=task.region.to_rasterio())
    per_level: dict[int, list[np.ndarray]] = {f: [] for f in task.factors}
    for band in data:
        valid = ~np.isnan(band) if np.isnan(task.nodata) else band != np.asarray(task.nodata).astype(band.dtype)
        if band.dtype.kind == "f":
            valid &= ~np.isnan(band)
        for f, level in block_means(band, valid, task.factors, task.dtype, task.nodata).items():
            per_level[f].append(level)
    for f, bands in per_level.items():
        path = Path(task.level_path(f))
        path.parent.mkdir(parents=True, exist_ok=True)
        lg = level_grid(task.grid, f)
        write_array(path, np.stack(bands), lg.window_grid(task.level_window(f)), task.nodata, task.band_names)
    return {"kind": "overview", "key": task.key, "item": task.item, "seconds": round(time.perf_counter() - t0, 6)}
