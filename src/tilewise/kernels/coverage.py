"""Exact polygon coverage of pixels, pixel counts of intersecting features, and point binning.

The kernels behind ``tilewise rasterize`` (vector polygons to raster statistics).

Coordinates
-----------
A north-up grid is given by ``(left, top, xres, yres)`` with positive
resolutions. Every vertex is taken once, with numpy over the whole coordinate
array, to *global* pixel coordinates ``u = (x - left) / xres`` (columns,
rightwards) and ``v = (top - y) / yres`` (rows, downwards): pixel (row r, col c)
is the unit square [c, c+1) × [r, r+1). A window is ``(row_off, col_off, height,
width)`` in global pixel indices and results have the window's shape.

Coverage
--------
The coverage of a pixel is Σ over features of area(feature ∩ pixel) / area(pixel),
computed from the true intersection areas (no supersampling) with the signed-area
cell accumulation of anti-aliased scan converters (FreeType, AGG): every ring edge
is cut at each integer u and v it crosses; a piece lying in cell (r, c) with
signed vertical extent dy and mean abscissa u adds dy·(c + 1 - u) to the cell's
``area`` and dy to a ``cover`` that applies to every cell to its right in that
row, so a cell's value is its area plus the covers of the cells to its left. The
sign of each ring is fixed from its shoelace area, so exteriors count positive
and holes negative whatever the winding in the data.

The accumulation runs per polygon *part* in a scratch buffer spanning the part's
pixel bounding box clipped to the window, plus one carry column that collects
the covers of pieces left of the window (pieces right of the window, and rows
outside it, cannot change the window's cells and are skipped). Each part's
per-pixel value is snapped (|v| < 1e-12 → 0, |v - 1| < 1e-12 → 1, then clipped
to [0, 1]) before it is added to the output in feature order, so pixels outside
every polygon are exactly 0 and pixels inside a part exactly 1; overlapping
features add up (coverage may exceed 1). Covers are differences of coordinates
that share a row, so in practice they cancel exactly; the absolute accuracy of a
coverage is that of the global pixel coordinates themselves (about 1e-16 · max(|u|, |v|)).

Tiling contract
---------------
For a fixed window and the same features in the same order, the result bits
depend on nothing else: each edge is cut at points computed in global
coordinates by the same expressions whatever the window, and every cell sums the
same pieces in the same (ring) order. The carry column makes a pixel's value
depend on where its window starts when a part crosses the window's left edge
(the sum is the same up to rounding, and usually to the bit), so callers must
always evaluate the same fixed windows (the blocks of one global grid) to get
the same bytes. A pixel whose contributing parts all have their pixel bounding
boxes inside two windows gets the same bits from both.

Counts
------
``count`` is the number of features whose intersection with the pixel is not
empty: a feature counts for a pixel (once, even when several of its parts reach
the pixel) where a piece of its boundary of positive length lies in the pixel's
*interior*, or where one of its parts covers more than half the pixel (a pixel
without boundary inside is either outside, 0, or inside, exactly 1). Touching
only along a pixel edge or at a corner (measure zero) does **not** count: a
polygon aligned exactly on grid lines counts exactly the pixels it covers.

Points
------
:func:`centroid_cells` bins points half-open (x in [left, right), y in (bottom,
top]), and :func:`aggregate` reduces values per pixel in input order.

The kernels are compiled with numba (``cache=True``), without fastmath, so the
order of operations is the one written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numba
import numpy as np
import shapely

AGGREGATIONS = ("sum", "mean", "min", "max", "count", "median")

_SNAP = 1e-12


@dataclass(frozen=True)
class PixelPolygons:
    """Polygon features in global pixel coordinates, ragged like :func:`shapely.to_ragged_array`.

    Attributes
    ----------
    coords
        (n, 2) float64 (u, v) vertices; rings are closed (first vertex repeated).
    ring_offsets
        (n_rings + 1,) int64 offsets into ``coords``.
    part_offsets
        (n_parts + 1,) int64 offsets into the rings; the first ring of each part
        is its exterior, the others are holes.
    feature_offsets
        (n_features + 1,) int64 offsets into the parts (a Polygon feature has one
        part, a MultiPolygon several, an empty feature none or only empty ones).
    """

    coords: np.ndarray
    ring_offsets: np.ndarray
    part_offsets: np.ndarray
    feature_offsets: np.ndarray

    @property
    def n_features(self) -> int:
        """Number of features."""
        return int(self.feature_offsets.shape[0]) - 1

    @property
    def n_parts(self) -> int:
        """Number of polygon parts over all features."""
        return int(self.part_offsets.shape[0]) - 1

    @cached_property
    def part_bounds(self) -> np.ndarray:
        """(n_parts, 4) float64 ``(umin, vmin, umax, vmax)`` of every part's rings; NaN for an empty part.

        Raises ValueError for non-finite coordinates (the kernels need finite ones).
        """
        coords = np.ascontiguousarray(self.coords, dtype=np.float64)
        if not np.isfinite(coords).all():
            raise ValueError("polygon coordinates must be finite")
        rings = np.ascontiguousarray(self.ring_offsets, dtype=np.int64)
        parts = np.ascontiguousarray(self.part_offsets, dtype=np.int64)
        out = np.empty((self.n_parts, 4))
        _part_bounds(coords, rings, parts, out)
        return out

    @cached_property
    def feature_bounds(self) -> np.ndarray:
        """(n_features, 4) float64 ``(umin, vmin, umax, vmax)`` of every feature; NaN for an empty feature."""
        pb = self.part_bounds
        out = np.full((self.n_features, 4), np.nan)
        feat = np.asarray(self.feature_offsets, dtype=np.int64)
        nparts = np.diff(feat)
        idx = np.repeat(np.arange(self.n_features), nparts)
        ok = ~np.isnan(pb[:, 0])
        if ok.any():
            i = idx[ok]
            for k, fn in ((0, np.fmin), (1, np.fmin), (2, np.fmax), (3, np.fmax)):
                fn.at(out[:, k], i, pb[ok, k])
        return out


def to_pixel_polygons(geoms: np.ndarray, left: float, top: float, xres: float, yres: float) -> PixelPolygons:
    """Convert polygon features to global pixel coordinates.

    Parameters
    ----------
    geoms
        1-D object array of valid shapely Polygon / MultiPolygon geometries. Empty
        geometries (of any type) and None are allowed and contribute nothing;
        Z values are dropped.
    left, top
        World coordinates of the grid's upper-left corner.
    xres, yres
        Pixel width and height, both positive.

    Returns
    -------
    PixelPolygons
        One feature per input geometry, in input order.

    Raises
    ------
    ValueError
        If the resolutions are not positive or ``geoms`` is not 1-D.
    TypeError
        If a non-empty geometry is not a Polygon or MultiPolygon.
    """
    if not (xres > 0 and yres > 0):
        raise ValueError(f"resolutions must be positive, got xres={xres}, yres={yres}")
    geoms = np.asarray(geoms, dtype=object)
    if geoms.ndim != 1:
        raise ValueError(f"geoms must be a 1-D array, got shape {geoms.shape}")
    n = geoms.shape[0]
    if n == 0:
        z = np.zeros(1, dtype=np.int64)
        return PixelPolygons(np.empty((0, 2)), z, z.copy(), z.copy())
    empty = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    if empty.any():
        geoms = geoms.copy()
        geoms[empty] = shapely.MultiPolygon()
    types = shapely.get_type_id(geoms)
    bad = ~np.isin(types, (shapely.GeometryType.POLYGON, shapely.GeometryType.MULTIPOLYGON))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise TypeError(f"feature {i} is a {shapely.get_type_id(geoms[i])!r} geometry ({geoms[i].geom_type}), not a Polygon or MultiPolygon")
    gtype, coords, offsets = shapely.to_ragged_array(geoms, include_z=False)
    rings = np.asarray(offsets[0], dtype=np.int64)
    parts = np.asarray(offsets[1], dtype=np.int64)
    feats = np.asarray(offsets[2], dtype=np.int64) if gtype == shapely.GeometryType.MULTIPOLYGON else np.arange(n + 1, dtype=np.int64)
    xy = np.asarray(coords, dtype=np.float64)
    uv = np.empty_like(xy)
    uv[:, 0] = (xy[:, 0] - left) / xres
    uv[:, 1] = (top - xy[:, 1]) / yres
    return PixelPolygons(uv, rings, parts, feats)


def coverage_and_intersects(pp: PixelPolygons, window: tuple[int, int, int, int], intersects: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Exact pixel coverage of the features over a window, and the number of features touching each pixel.

    Parameters
    ----------
    pp
        The features, in global pixel coordinates.
    window
        ``(row_off, col_off, height, width)`` in global pixel indices.
    intersects
        Also compute the per-pixel feature count.

    Returns
    -------
    coverage : numpy.ndarray
        float64 (height, width): Σ over features of area(feature ∩ pixel) / area(pixel),
        holes excluded; overlapping features add up. Exactly 0 outside every
        feature, exactly 1 inside a single one.
    count : numpy.ndarray or None
        int32 (height, width): the number of features whose boundary passes
        through the pixel's interior or that cover more than half of it (so
        every feature with positive-area intersection; touching only along a
        pixel edge or at a corner does not count). None unless ``intersects``.

    Notes
    -----
    Bit-identical for the same window and the same features in the same order;
    see the module docstring for the tiling contract.
    """
    r0, c0, h, w = (int(x) for x in window)
    if h < 0 or w < 0:
        raise ValueError(f"window height and width must be >= 0, got {window}")
    out = np.zeros((h, w))
    count = np.zeros((h, w) if intersects else (0, 0), dtype=np.int32)
    if h == 0 or w == 0 or pp.n_features == 0:
        return out, (count if intersects else None)
    # The last feature that counted each pixel (a feature counts a pixel once, whichever of its parts reach it).
    stamp = np.full(count.shape, -1, dtype=np.int32 if pp.n_features < 2**31 else np.int64)
    _coverage(
        np.ascontiguousarray(pp.coords, dtype=np.float64),
        np.ascontiguousarray(pp.ring_offsets, dtype=np.int64),
        np.ascontiguousarray(pp.part_offsets, dtype=np.int64),
        np.ascontiguousarray(pp.feature_offsets, dtype=np.int64),
        pp.part_bounds,
        r0,
        c0,
        h,
        w,
        intersects,
        out,
        count,
        stamp,
    )
    return out, (count if intersects else None)


def centroid_cells(
    cx: np.ndarray, cy: np.ndarray, left: float, top: float, xres: float, yres: float, window: tuple[int, int, int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bin points into the pixels of a window.

    Parameters
    ----------
    cx, cy
        1-D point coordinates (e.g. feature centroids) in the grid's CRS.
    left, top, xres, yres
        The grid (upper-left corner and positive pixel sizes).
    window
        ``(row_off, col_off, height, width)`` in global pixel indices.

    Returns
    -------
    rows, cols : numpy.ndarray
        int64 window-relative pixel indices of every point (meaningful where
        ``inside``; -1 for non-finite coordinates).
    inside : numpy.ndarray
        bool, True for points that fall in the window.

    Notes
    -----
    Binning is half-open: a point belongs to the pixel with x in [left, right) and
    y in (bottom, top], i.e. ``col = floor(u)``, ``row = floor(v)`` in global
    pixel coordinates. A point on a pixel's left edge goes to that pixel (right
    of the line), one on its top edge to that pixel (below the line); points on
    the window's right or bottom edge are outside it.
    """
    r0, c0, h, w = (int(x) for x in window)
    u = (np.asarray(cx, dtype=np.float64) - left) / xres
    v = (top - np.asarray(cy, dtype=np.float64)) / yres
    finite = np.isfinite(u) & np.isfinite(v)
    lim = 2.0**62
    with np.errstate(invalid="ignore"):
        col = np.where(finite, np.clip(np.floor(u), -lim, lim), 0.0).astype(np.int64) - c0
        row = np.where(finite, np.clip(np.floor(v), -lim, lim), 0.0).astype(np.int64) - r0
    inside = finite & (row >= 0) & (row < h) & (col >= 0) & (col < w)
    row[~finite] = -1
    col[~finite] = -1
    return row, col, inside


def aggregate(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, how: str, shape: tuple[int, int]) -> np.ndarray:
    """Reduce values per pixel.

    Parameters
    ----------
    rows, cols
        1-D int pixel indices, inside ``shape``.
    values
        1-D float values; NaN values are ignored (missing attributes).
    how
        One of :data:`AGGREGATIONS`. ``median`` of an even number of values is
        the mean of the two middle ones.
    shape
        ``(height, width)`` of the result.

    Returns
    -------
    numpy.ndarray
        float64 ``shape``; NaN where a pixel has no (non-NaN) value, except for
        ``count``, which gives 0 there. Sums run in input order, so the same
        input gives the same bits.

    Raises
    ------
    ValueError
        For an unknown ``how``, arrays of different lengths or indices outside ``shape``.
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {how!r}; expected one of {AGGREGATIONS}")
    h, w = (int(s) for s in shape)
    r = np.asarray(rows, dtype=np.int64).ravel()
    c = np.asarray(cols, dtype=np.int64).ravel()
    x = np.asarray(values, dtype=np.float64).ravel()
    if not (r.shape == c.shape == x.shape):
        raise ValueError(f"rows, cols and values differ in length: {r.shape[0]}, {c.shape[0]}, {x.shape[0]}")
    if r.size and (r.min() < 0 or r.max() >= h or c.min() < 0 or c.max() >= w):
        raise ValueError(f"pixel indices outside the shape {shape}")
    ok = ~np.isnan(x)
    flat = (r * w + c)[ok]
    x = x[ok]
    if how == "median":
        out = np.full(h * w, np.nan)
        if x.size:
            order = np.lexsort((x, flat))
            fs, xs = flat[order], x[order]
            starts = np.flatnonzero(np.r_[True, fs[1:] != fs[:-1]])
            n = np.diff(np.r_[starts, fs.size])
            lo = xs[starts + (n - 1) // 2]
            hi = xs[starts + n // 2]
            out[fs[starts]] = np.where(n % 2 == 1, lo, (lo + hi) / 2.0)
        return out.reshape(h, w)
    op = {"sum": 0, "mean": 0, "count": 0, "min": 1, "max": 2}[how]
    acc = np.zeros(h * w)
    cnt = np.zeros(h * w, dtype=np.int64)
    _reduce(flat, x, op, acc, cnt)
    if how == "count":
        return cnt.astype(np.float64).reshape(h, w)
    if how == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = acc / cnt
    acc[cnt == 0] = np.nan
    return acc.reshape(h, w)


# ---------------------------------------------------------------- compiled kernels


@numba.njit(cache=True, nogil=True)
def _reduce(flat: np.ndarray, x: np.ndarray, op: int, acc: np.ndarray, cnt: np.ndarray) -> None:  # pragma: no cover - compiled
    """acc[i] = sum (op 0), min (1) or max (2) of x where flat == i, in input order; cnt[i] the number of values."""
    for k in range(flat.shape[0]):
        i = flat[k]
        v = x[k]
        if cnt[i] == 0:
            acc[i] = v
        elif op == 0:
            acc[i] = acc[i] + v
        elif op == 1:
            if v < acc[i]:
                acc[i] = v
        elif v > acc[i]:
            acc[i] = v
        cnt[i] += 1


@numba.njit(cache=True, nogil=True)
def _part_bounds(coords: np.ndarray, rings: np.ndarray, parts: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """(umin, vmin, umax, vmax) over every vertex of each part; NaN for a part without vertices."""
    for p in range(parts.shape[0] - 1):
        a = rings[parts[p]]
        b = rings[parts[p + 1]]
        if b <= a:
            out[p, 0] = np.nan
            out[p, 1] = np.nan
            out[p, 2] = np.nan
            out[p, 3] = np.nan
            continue
        umin = coords[a, 0]
        umax = umin
        vmin = coords[a, 1]
        vmax = vmin
        for i in range(a + 1, b):
            u = coords[i, 0]
            v = coords[i, 1]
            umin = min(umin, u)
            umax = max(umax, u)
            vmin = min(vmin, v)
            vmax = max(vmax, v)
        out[p, 0] = umin
        out[p, 1] = vmin
        out[p, 2] = umax
        out[p, 3] = vmax


@numba.njit(cache=True, nogil=True)
def _clip_part(b: np.ndarray, r0: int, c0: int, h: int, w: int) -> tuple[int, int, int, int]:  # pragma: no cover - compiled
    """Global pixel rows lr0..lr1 and columns lc0..lc1 of a part's bounding box clipped to the window (empty: lr0 > lr1 or lc0 > lc1)."""
    umin = b[0]
    vmin = b[1]
    umax = b[2]
    vmax = b[3]
    # NaN bounds (empty part) fail every comparison below and give an empty range.
    if not (umax >= c0 and umin < c0 + w and vmax >= r0 and vmin < r0 + h):
        return 1, 0, 1, 0
    lr0 = r0 if vmin < r0 else math.floor(vmin)
    lr1 = r0 + h - 1 if vmax >= r0 + h else math.floor(vmax)
    lc0 = c0 if umin < c0 else math.floor(umin)
    lc1 = c0 + w - 1 if umax >= c0 + w else math.floor(umax)
    return lr0, lr1, lc0, lc1


@numba.njit(cache=True, nogil=True, inline="always")
def _mark(r: int, c: int, f: int, r0: int, c0: int, count: np.ndarray, stamp: np.ndarray) -> None:  # pragma: no cover - compiled
    """Count feature f once for global pixel (r, c) of the window."""
    i = r - r0
    j = c - c0
    if stamp[i, j] != f:
        stamp[i, j] = f
        count[i, j] += 1


@numba.njit(cache=True, nogil=True, inline="always")
def _piece(
    pu: float, pv: float, qu: float, qv: float, g: float, r: int, c: int, lr0: int, lc0: int, stride: int,
    area: np.ndarray, cover: np.ndarray, do_count: bool, f: int, r0: int, c0: int, count: np.ndarray, stamp: np.ndarray,
) -> None:  # fmt: skip  # pragma: no cover - compiled
    """Accumulate the piece (pu, pv)-(qu, qv), pv <= qv, lying in window cell (r, c); g = ±1 orients it."""
    dy = (qv - pv) * g
    k = (r - lr0) * stride + (c - lc0)
    area[k] += dy * ((c + 1) - (pu + qu) * 0.5)
    cover[k + 1] += dy
    # Boundary in the pixel's interior: positive length and not along one of the cell's grid lines.
    if do_count and (pu != qu or pv != qv) and (pu != qu or (pu != c and pu != c + 1)) and (pv != qv or (pv != r and pv != r + 1)):
        _mark(r, c, f, r0, c0, count, stamp)


@numba.njit(cache=True, nogil=True)
def _edge(
    u0: float, v0: float, u1: float, v1: float, fac: float, lr0: int, lr1: int, lc0: int, lc1: int,
    area: np.ndarray, cover: np.ndarray, do_count: bool, f: int, r0: int, c0: int, count: np.ndarray, stamp: np.ndarray,
) -> None:  # fmt: skip  # pragma: no cover - compiled
    """Cut one edge at the integer rows and columns inside the part's clipped box and accumulate its pieces.

    Pieces left of column lc0 add their dy to the row's carry (cover index 0);
    pieces right of lc1 and rows outside lr0..lr1 are skipped.
    """
    stride = lc1 - lc0 + 2
    if v0 == v1:
        # Horizontal: no area; only the count sees it (not on a grid line).
        if do_count and u0 != u1 and v0 >= lr0 and v0 < lr1 + 1:
            r = math.floor(v0)
            if v0 != r:
                ua = min(u0, u1)
                ub = max(u0, u1)
                if ub > lc0 and ua < lc1 + 1:
                    ca = lc0 if ua < lc0 else math.floor(ua)
                    cb = lc1 if ub > lc1 + 1 else math.ceil(ub) - 1
                    for c in range(ca, cb + 1):
                        _mark(r, c, f, r0, c0, count, stamp)
        return
    # Traverse in increasing v; g orients the pieces (edge direction and ring sign).
    if v0 < v1:
        ulo, vlo, uhi, vhi = u0, v0, u1, v1
        g = fac
    else:
        ulo, vlo, uhi, vhi = u1, v1, u0, v0
        g = -fac
    if vhi <= lr0 or vlo >= lr1 + 1:
        return
    rs = lr0 if vlo < lr0 else math.floor(vlo)
    re = lr1 if vhi > lr1 + 1 else math.ceil(vhi) - 1
    du = uhi - ulo
    dv = vhi - vlo
    umn = min(ulo, uhi)
    umx = max(ulo, uhi)
    for r in range(rs, re + 1):
        # The edge's piece in row r, from (ua, va) to (ub, vb).
        if vlo >= r:
            va = vlo
            ua = ulo
        else:
            va = float(r)
            ua = min(max(ulo + (va - vlo) * du / dv, umn), umx)
        if vhi <= r + 1:
            vb = vhi
            ub = uhi
        else:
            vb = float(r + 1)
            ub = min(max(ulo + (vb - vlo) * du / dv, umn), umx)
        rowk = (r - lr0) * stride
        if ua == ub:
            if ua < lc0:
                cover[rowk] += (vb - va) * g
            elif ua < lc1 + 1:
                _piece(ua, va, ub, vb, g, r, math.floor(ua), lr0, lc0, stride, area, cover, do_count, f, r0, c0, count, stamp)
            continue
        if ua < ub:
            if ub <= lc0:
                cover[rowk] += (vb - va) * g
                continue
            if ua >= lc1 + 1:
                continue
            pu = ua
            pv = va
            if ua < lc0:
                nv = min(max(vlo + (lc0 - ulo) * dv / du, va), vb)
                cover[rowk] += (nv - va) * g
                pu = float(lc0)
                pv = nv
            c = math.floor(pu)
            while c <= lc1:
                nb = c + 1
                if ub <= nb:
                    _piece(pu, pv, ub, vb, g, r, c, lr0, lc0, stride, area, cover, do_count, f, r0, c0, count, stamp)
                    break
                nv = min(max(vlo + (nb - ulo) * dv / du, va), vb)
                _piece(pu, pv, float(nb), nv, g, r, c, lr0, lc0, stride, area, cover, do_count, f, r0, c0, count, stamp)
                pu = float(nb)
                pv = nv
                c = nb
        else:
            if ua <= lc0:
                cover[rowk] += (vb - va) * g
                continue
            if ub >= lc1 + 1:
                continue
            pu = ua
            pv = va
            if ua > lc1 + 1:
                pu = float(lc1 + 1)
                pv = min(max(vlo + (pu - ulo) * dv / du, va), vb)
            c = math.ceil(pu) - 1
            while True:
                if c < lc0:
                    cover[rowk] += (vb - pv) * g
                    break
                nb = c
                if ub >= nb:
                    _piece(pu, pv, ub, vb, g, r, c, lr0, lc0, stride, area, cover, do_count, f, r0, c0, count, stamp)
                    break
                nv = min(max(vlo + (nb - ulo) * dv / du, va), vb)
                _piece(pu, pv, float(nb), nv, g, r, c, lr0, lc0, stride, area, cover, do_count, f, r0, c0, count, stamp)
                pu = float(nb)
                pv = nv
                c = nb - 1


@numba.njit(cache=True, nogil=True)
def _ring_sign(coords: np.ndarray, a: int, b: int) -> float:  # pragma: no cover - compiled
    """Orientation factor of ring coords[a:b]: +1 when its accumulated cell values come out positive, else -1.

    The accumulation yields -(shoelace area in (u, v)), so a ring with a positive
    shoelace area gets -1. Computed relative to the first vertex.
    """
    u0 = coords[a, 0]
    v0 = coords[a, 1]
    s = 0.0
    for i in range(a, b - 1):
        s += (coords[i, 0] - u0) * (coords[i + 1, 1] - v0) - (coords[i + 1, 0] - u0) * (coords[i, 1] - v0)
    s += (coords[b - 1, 0] - u0) * (coords[a, 1] - v0) - (coords[a, 0] - u0) * (coords[b - 1, 1] - v0)
    return -1.0 if s > 0.0 else 1.0


@numba.njit(cache=True, nogil=True)
def _coverage(
    coords: np.ndarray, rings: np.ndarray, parts: np.ndarray, feats: np.ndarray, bounds: np.ndarray, r0: int, c0: int, h: int, w: int,
    do_count: bool, out: np.ndarray, count: np.ndarray, stamp: np.ndarray,
) -> None:  # fmt: skip  # pragma: no cover - compiled
    """Add every part's snapped coverage to ``out`` (h, w) in feature order; count features per pixel when ``do_count``."""
    n_parts = parts.shape[0] - 1
    need = 0
    for p in range(n_parts):
        lr0, lr1, lc0, lc1 = _clip_part(bounds[p], r0, c0, h, w)
        if lr0 <= lr1 and lc0 <= lc1:
            need = max(need, (lr1 - lr0 + 1) * (lc1 - lc0 + 2))
    area = np.zeros(need)
    cover = np.zeros(need)
    for f in range(feats.shape[0] - 1):
        for p in range(feats[f], feats[f + 1]):
            lr0, lr1, lc0, lc1 = _clip_part(bounds[p], r0, c0, h, w)
            if lr0 > lr1 or lc0 > lc1:
                continue
            for k in range(parts[p], parts[p + 1]):
                a = rings[k]
                b = rings[k + 1]
                if b - a < 2:
                    continue
                fac = _ring_sign(coords, a, b)
                if k > parts[p]:
                    fac = -fac
                for i in range(a, b - 1):
                    _edge(coords[i, 0], coords[i, 1], coords[i + 1, 0], coords[i + 1, 1], fac, lr0, lr1, lc0, lc1,
                          area, cover, do_count, f, r0, c0, count, stamp)  # fmt: skip
                if coords[b - 1, 0] != coords[a, 0] or coords[b - 1, 1] != coords[a, 1]:
                    _edge(coords[b - 1, 0], coords[b - 1, 1], coords[a, 0], coords[a, 1], fac, lr0, lr1, lc0, lc1,
                          area, cover, do_count, f, r0, c0, count, stamp)  # fmt: skip
            # Resolve: value = area + carry + covers of the cells to the left; snap; add; clear the scratch.
            stride = lc1 - lc0 + 2
            nc = lc1 - lc0 + 1
            for lr in range(lr1 - lr0 + 1):
                base = lr * stride
                acc = cover[base]
                cover[base] = 0.0
                i = lr0 + lr - r0
                for j in range(nc):
                    val = acc + area[base + j]
                    acc = acc + cover[base + j + 1]
                    area[base + j] = 0.0
                    cover[base + j + 1] = 0.0
                    if abs(val) < _SNAP:
                        continue
                    if abs(val - 1.0) < _SNAP or val > 1.0:
                        val = 1.0
                    elif val < 0.0:
                        continue
                    jj = lc0 + j - c0
                    out[i, jj] += val
                    if do_count and val > 0.5 and stamp[i, jj] != f:
                        stamp[i, jj] = f
                        count[i, jj] += 1
