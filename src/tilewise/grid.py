"""Where pixels are: :class:`Grid` (CRS + affine transform + shape) and :class:`Window`."""

from __future__ import annotations

import math
from dataclasses import dataclass

from affine import Affine

from tilewise.errors import GridMismatchError


@dataclass(frozen=True, slots=True)
class Window:
    """A rectangle of pixels: row/column offset and height/width (may lie partly outside)."""

    row_off: int
    col_off: int
    height: int
    width: int

    @property
    def row_end(self) -> int:
        return self.row_off + self.height

    @property
    def col_end(self) -> int:
        return self.col_off + self.width

    def grow(self, halo: int) -> Window:
        """Return the window grown by ``halo`` pixels on every side."""
        return Window(self.row_off - halo, self.col_off - halo, self.height + 2 * halo, self.width + 2 * halo)

    def shift(self, rows: int, cols: int) -> Window:
        """The same window moved by (rows, cols)."""
        return Window(self.row_off + rows, self.col_off + cols, self.height, self.width)

    def intersection(self, other: Window) -> Window | None:
        """Return the overlap of two windows, or None when they do not overlap."""
        r0, c0 = max(self.row_off, other.row_off), max(self.col_off, other.col_off)
        r1, c1 = min(self.row_end, other.row_end), min(self.col_end, other.col_end)
        if r1 <= r0 or c1 <= c0:
            return None
        return Window(r0, c0, r1 - r0, c1 - c0)

    def to_rasterio(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """Return ``((row_start, row_stop), (col_start, col_stop))`` as rasterio accepts it."""
        return ((self.row_off, self.row_end), (self.col_off, self.col_end))


@dataclass(frozen=True, slots=True)
class Grid:
    """A georeferenced pixel grid.

    Parameters
    ----------
    crs
        The CRS as WKT (or any string rasterio's ``CRS.from_user_input`` accepts),
        or None for rasters without one.
    transform
        The affine transform from (col, row) to (x, y) of the pixel corner.
    height, width
        The shape in pixels.
    """

    crs: str | None
    transform: Affine
    height: int
    width: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def res(self) -> tuple[float, float]:
        return (abs(self.transform.a), abs(self.transform.e))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """Return ``(left, bottom, right, top)`` for a north-up grid."""
        t = self.transform
        x0, y0 = t.c, t.f
        x1, y1 = t @ (self.width, self.height)
        return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

    def window_grid(self, window: Window) -> Grid:
        """Return the grid of a window of this grid (same CRS, shifted transform)."""
        t = self.transform @ Affine.translation(window.col_off, window.row_off)
        return Grid(self.crs, t, window.height, window.width)

    def full_window(self) -> Window:
        return Window(0, 0, self.height, self.width)

    def mismatch(self, other: Grid, rel_tol: float = 1e-9) -> str | None:
        """Describe how ``other`` differs from this grid, or return None when they match.

        Transforms are compared with a tolerance of ``rel_tol`` of a pixel, as
        rasterio's ``Affine.almost_equals`` does, so round-tripped coordinates match.
        """
        if self.shape != other.shape:
            return f"shape {other.height}x{other.width} instead of {self.height}x{self.width}"
        if not _same_crs(self.crs, other.crs):
            return f"CRS {crs_name(other.crs)} instead of {crs_name(self.crs)}"
        pix = max(abs(self.transform.a), abs(self.transform.e), 1e-300)
        for name, a, b in zip("abcdef", self.transform[:6], other.transform[:6], strict=True):
            if not math.isclose(a, b, rel_tol=rel_tol, abs_tol=pix * 1e-6):
                return f"transform {name}={b!r} instead of {a!r}"
        return None

    def require_same(self, other: Grid, what: str, other_what: str, hint: str) -> None:
        """Raise :class:`GridMismatchError` naming both inputs when the grids differ."""
        diff = self.mismatch(other)
        if diff is not None:
            raise GridMismatchError(f"{other_what} is on a different grid than {what}: {diff}", hint)


def crs_name(crs: object) -> str:
    """A short name of a CRS (WKT or any user input) for messages: ``EPSG:32632``, or the start of its definition."""
    if crs is None:
        return "none"
    from rasterio.crs import CRS

    c = CRS.from_user_input(crs)
    epsg = c.to_epsg()
    return f"EPSG:{epsg}" if epsg else (c.to_string()[:60] + "...")


def _same_crs(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if a == b:
        return True
    from rasterio.crs import CRS

    return bool(CRS.from_user_input(a) == CRS.from_user_input(b))
