"""OGC tile matrix sets (via morecantile): tile grids, the tiles features touch, quadtree parents.

A TMS tile at zoom ``z`` becomes a :class:`~tilewise.grid.Grid` of ``tile_px`` × ``tile_px``
pixels over the tile's bounds in the TMS CRS. Every tile of a level shares one global
pixel grid (the level's top-left corner and cell size), which the rasterizer uses for
its arithmetic so a pixel's value never depends on the tile it is computed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from affine import Affine

from tilewise.errors import UsageError
from tilewise.grid import Grid


@dataclass(frozen=True)
class Level:
    """One zoom level of a TMS at a chosen tile size in pixels.

    Attributes
    ----------
    z
        The zoom level (the TMS matrix id as an integer).
    left, top
        The level's top-left corner in the TMS CRS.
    span_x, span_y
        A tile's width and height in CRS units.
    cols, rows
        Number of tiles across and down.
    tile_px
        Pixels along a tile's edge.
    """

    z: int
    left: float
    top: float
    span_x: float
    span_y: float
    cols: int
    rows: int
    tile_px: int

    @property
    def xres(self) -> float:
        return self.span_x / self.tile_px

    @property
    def yres(self) -> float:
        return self.span_y / self.tile_px

    def tile_bounds(self, x: int, y: int) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` of tile (x, y) in the TMS CRS."""
        left = self.left + x * self.span_x
        top = self.top - y * self.span_y
        return (left, top - self.span_y, left + self.span_x, top)

    def tile_grid(self, x: int, y: int, crs: str) -> Grid:
        """The pixel grid of tile (x, y)."""
        left, _, _, top = self.tile_bounds(x, y)
        return Grid(crs, Affine(self.xres, 0.0, left, 0.0, -self.yres, top), self.tile_px, self.tile_px)

    def tile_window(self, x: int, y: int) -> tuple[int, int, int, int]:
        """Tile (x, y) as a window ``(row_off, col_off, height, width)`` of the level's global pixel grid."""
        return (y * self.tile_px, x * self.tile_px, self.tile_px, self.tile_px)


@dataclass(frozen=True)
class TileSet:
    """A resolved tile matrix set: its id, CRS (WKT) and levels."""

    id: str
    crs: str
    minzoom: int
    maxzoom: int
    quad_from: int  # from this zoom down to maxzoom, each level splits every tile into 2 x 2 children

    def level(self, z: int, tile_px: int = 256) -> Level:
        """The level ``z`` at ``tile_px`` pixels per tile edge."""
        return _level(self.id, z, tile_px)

    def check_zoom(self, z: int, what: str = "--zoom") -> None:
        """Refuse a zoom level the TMS does not define, or one that is not a regular top-left grid."""
        if not self.minzoom <= z <= self.maxzoom:
            raise UsageError(f"{what} {z} is outside the zoom levels of {self.id} ({self.minzoom}..{self.maxzoom})",
                             f"choose a zoom between {self.minzoom} and {self.maxzoom}")  # fmt: skip
        self.level(z)

    def check_parents(self, z: int, min_zoom: int) -> None:
        """Refuse ``--parents`` when the levels from ``z`` up to ``min_zoom`` are not a quadtree (children cannot be merged 2 × 2)."""
        if z > min_zoom and self.quad_from > min_zoom:
            raise UsageError(f"{self.id} is not a quadtree above zoom {self.quad_from}, so parent tiles cannot be built from their children",
                             "leave out --parents, or use a quadtree TMS such as WorldCRS84Quad or WebMercatorQuad")  # fmt: skip


@lru_cache(maxsize=64)
def _level(tms_id: str, z: int, tile_px: int) -> Level:
    """A level from morecantile's own tile bounds (x/y order whatever the CRS's axis order), checked to be a regular top-left grid."""
    import morecantile

    t = _tms(tms_id)
    m = t.matrix(z)
    b0 = t.xy_bounds(morecantile.Tile(0, 0, z))
    span_x, span_y = b0.right - b0.left, b0.top - b0.bottom
    lv = Level(z, float(b0.left), float(b0.top), float(span_x), float(span_y), int(m.matrixWidth), int(m.matrixHeight), tile_px)
    x1, y1 = m.matrixWidth - 1, m.matrixHeight - 1
    b1 = t.xy_bounds(morecantile.Tile(x1, y1, z))
    want = lv.tile_bounds(x1, y1)
    if m.variableMatrixWidths or not all(math.isclose(a, c, rel_tol=1e-9, abs_tol=1e-9 * max(span_x, span_y)) for a, c in zip(b1, want, strict=True)):
        raise UsageError(f"tile matrix set {tms_id!r} is not a regular grid of tiles numbered from its top-left corner at zoom {z}",
                         "use a TMS such as WorldCRS84Quad, WebMercatorQuad or WGS1984Quad")  # fmt: skip
    return lv


@lru_cache(maxsize=8)
def _tms(tms_id: str) -> Any:
    import morecantile

    return morecantile.tms.get(tms_id)


def tile_set_names() -> list[str]:
    """The tile matrix sets morecantile knows."""
    import morecantile

    return sorted(morecantile.tms.list())


@lru_cache(maxsize=8)
def get_tile_set(tms_id: str) -> TileSet:
    """Resolve a TMS by its identifier (e.g. ``WorldCRS84Quad``, ``WebMercatorQuad``).

    Raises
    ------
    UsageError
        The identifier is unknown; the message lists the known ones.
    """
    names = tile_set_names()
    if tms_id not in names:
        import difflib

        close = difflib.get_close_matches(tms_id, names, n=1)
        guess = f"did you mean {close[0]!r}? " if close else ""
        raise UsageError(f"unknown tile matrix set {tms_id!r}", f"{guess}known: {', '.join(names)}")
    t = _tms(tms_id)
    crs = t.rasterio_crs.to_wkt()
    quad_from = t.maxzoom
    for z in range(t.maxzoom, t.minzoom, -1):
        a, b = t.matrix(z - 1), t.matrix(z)
        quad = (
            b.matrixWidth == 2 * a.matrixWidth and b.matrixHeight == 2 * a.matrixHeight and tuple(a.pointOfOrigin) == tuple(b.pointOfOrigin)
            and math.isclose(a.cellSize, 2 * b.cellSize, rel_tol=1e-12) and a.tileWidth == b.tileWidth
        )  # fmt: skip
        if not quad:
            break
        quad_from = z - 1
    return TileSet(tms_id, crs, int(t.minzoom), int(t.maxzoom), quad_from)


def touched_tiles(level: Level, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tiles whose interior each feature's bounding box overlaps.

    Parameters
    ----------
    bounds
        (n, 4) ``minx, miny, maxx, maxy`` in the TMS CRS.

    Returns
    -------
    feature, x, y
        One row per (feature, tile) pair, int64. A box ending exactly on a tile edge
        does not touch the next tile.
    """
    if len(bounds) == 0:
        e = np.zeros(0, np.int64)
        return e, e, e
    fx0 = (bounds[:, 0] - level.left) / level.span_x
    fx1 = (bounds[:, 2] - level.left) / level.span_x
    fy0 = (level.top - bounds[:, 3]) / level.span_y
    fy1 = (level.top - bounds[:, 1]) / level.span_y
    x0 = np.clip(np.floor(fx0), 0, level.cols - 1).astype(np.int64)
    y0 = np.clip(np.floor(fy0), 0, level.rows - 1).astype(np.int64)
    # max(start, ceil(end) - 1): a degenerate box (a point) still lies in one tile
    x1 = np.clip(np.maximum(np.ceil(fx1) - 1, np.floor(fx0)), 0, level.cols - 1).astype(np.int64)
    y1 = np.clip(np.maximum(np.ceil(fy1) - 1, np.floor(fy0)), 0, level.rows - 1).astype(np.int64)
    nx, ny = x1 - x0 + 1, y1 - y0 + 1
    counts = nx * ny
    feature = np.repeat(np.arange(len(bounds), dtype=np.int64), counts)
    # position of each pair within its feature's block of nx * ny tiles
    start = np.repeat(np.cumsum(counts) - counts, counts)
    k = np.arange(int(counts.sum()), dtype=np.int64) - start
    nxr = np.repeat(nx, counts)
    return feature, np.repeat(x0, counts) + k % nxr, np.repeat(y0, counts) + k // nxr

