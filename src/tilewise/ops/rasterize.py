"""Polygon statistics on a pixel window: count, count-intersects, coverage, coverage-union, PROPERTY:AGG.

Every statistic is computed in the global pixel grid of its level (or of the
``--like`` raster), over fixed windows, from the features in a fixed content order,
so a pixel's value does not depend on how tiles are batched or which executor ran
them. Coverage is exact (the polygon ∩ pixel area, see
:mod:`tilewise.kernels.coverage`), not supersampled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tilewise.errors import UsageError

if TYPE_CHECKING:
    from tilewise.sources.vector import StagingSpec

KINDS = ("count", "count-intersects", "coverage", "coverage-union")
AGGS = ("sum", "mean", "min", "max", "count", "median")
RESAMPLINGS = ("sum", "mean", "nanmean", "min", "max")
class RasterStatSpec(BaseModel):
    """One band of a rasterize job: what is computed, how parent levels merge it, how web tiles draw it.

    ``kind`` is count (polygons whose centroid is in the pixel), count-intersects,
    coverage (sum of covered fractions), coverage-union (covered fraction of the
    union, at most 1) or property (``agg`` of ``property`` over the polygons whose
    centroid is in the pixel). ``resampling`` (sum, mean, nanmean, min, max) merges
    2 x 2 children into a parent pixel; empty means the kind's default. ``range`` fixes
    the web-tile value range for every zoom, ``ranges`` per zoom; otherwise each zoom
    takes its range from the tiles' summary.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: Literal["count", "count-intersects", "coverage", "coverage-union", "property"]
    property: str = ""
    agg: str = ""
    resampling: str = ""
    palette: str = "viridis"
    range: tuple[float, float] | None = None
    ranges: dict[int, tuple[float, float]] = Field(default_factory=dict)
    zero_transparent: bool = True


# How 2 x 2 children merge into a parent pixel, by kind (property stats: by aggregation).
DEFAULT_RESAMPLING = {"count": "sum", "count-intersects": "sum", "coverage": "mean", "coverage-union": "mean",
                      "sum": "sum", "count_agg": "sum", "mean": "nanmean", "median": "nanmean", "min": "min", "max": "max"}  # fmt: skip


def parse_stat(text: str) -> RasterStatSpec:
    """Parse a ``--stat`` value: a kind (count, count-intersects, coverage, coverage-union) or ``PROPERTY:AGG``."""
    t = text.strip()
    if t in KINDS:
        return RasterStatSpec(name=t, kind=t)  # type: ignore[arg-type]
    if ":" in t:
        prop, _, agg = t.rpartition(":")
        if not prop:
            raise UsageError(f"--stat {text!r} names no property", "write PROPERTY:AGG, e.g. --stat Area:mean")
        if agg not in AGGS:
            raise UsageError(f"--stat {text!r}: unknown aggregation {agg!r}", f"use one of: {', '.join(AGGS)} (e.g. {prop}:mean)")
        return RasterStatSpec(name=t, kind="property", property=prop, agg=agg)
    import difflib

    close = difflib.get_close_matches(t, KINDS, n=1)
    guess = f"did you mean {close[0]!r}? " if close else ""
    raise UsageError(f"unknown statistic {text!r}", f"{guess}use {', '.join(KINDS)} or PROPERTY:AGG with AGG in {', '.join(AGGS)}")


def check_stats(stats: Sequence[RasterStatSpec]) -> None:
    """Refuse an empty list, repeated names, a property stat without property or aggregation, an unknown resampling."""
    if not stats:
        raise UsageError("no statistic asked for", "add --stat count, --stat coverage, ... (or stats in the job file)")
    names = [s.name for s in stats]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UsageError(f"statistic {dup[0]!r} is asked for twice", "give each --stat once (job files: give each stat its own name)")
    for s in stats:
        if not s.name or any(c in s.name for c in "/\\") or s.name in (".", ".."):
            raise UsageError(f"statistic name {s.name!r} cannot name a folder", "use letters, digits, ':', '-' or '_'")
        if s.kind == "property" and (not s.property or s.agg not in AGGS):
            raise UsageError(f"statistic {s.name!r} needs a property and an aggregation ({', '.join(AGGS)})", 'write property = "Area", agg = "mean"')
        if s.kind != "property" and (s.property or s.agg):
            raise UsageError(f"statistic {s.name!r} of kind {s.kind} takes no property or aggregation", 'use kind = "property" to aggregate a field')
        if s.resampling and s.resampling not in RESAMPLINGS:
            raise UsageError(f"unknown resampling {s.resampling!r} for statistic {s.name!r}", f"use one of: {', '.join(RESAMPLINGS)}")
        for r in [s.range, *s.ranges.values()]:
            if r is not None and not r[0] <= r[1]:
                raise UsageError(f"value range {list(r)} of statistic {s.name!r} is reversed", "give MIN,MAX with MIN <= MAX")


def resampling_of(s: RasterStatSpec) -> str:
    """The resampling that merges children of ``s`` into parents (the configured one or the kind's default)."""
    if s.resampling:
        return s.resampling
    if s.kind == "property":
        return DEFAULT_RESAMPLING["count_agg" if s.agg == "count" else s.agg]
    return DEFAULT_RESAMPLING[s.kind]


def empty_value(s: RasterStatSpec) -> float:
    """A pixel no polygon reaches: 0 for counts and coverage (a real zero), NaN (nodata) for property aggregates but count."""
    return 0.0 if s.kind != "property" or s.agg == "count" else float("nan")


def properties_of(stats: Sequence[RasterStatSpec]) -> list[str]:
    """The distinct properties the stats read, in first-use order."""
    out: list[str] = []
    for s in stats:
        if s.kind == "property" and s.property not in out:
            out.append(s.property)
    return out


@dataclass(frozen=True)
class PixelGrid:
    """A north-up global pixel grid: the arithmetic of every window is relative to its corner."""

    left: float
    top: float
    xres: float
    yres: float


def compute_stats(stats: Sequence[RasterStatSpec], geoms: np.ndarray, cx: np.ndarray, cy: np.ndarray, props: np.ndarray,
                  grid: PixelGrid, window: tuple[int, int, int, int]) -> np.ndarray:  # fmt: skip
    """Compute every stat on one window of ``grid``.

    Parameters
    ----------
    geoms, cx, cy, props
        The features that may reach the window (shapely polygons, their centroids,
        and one row of values per property of :func:`properties_of`), in a fixed order.
    window
        ``(row_off, col_off, height, width)`` in the grid's pixels.

    Returns
    -------
    numpy.ndarray
        float64 (n_stats, height, width); NaN where a property aggregate has no polygon.
    """
    from tilewise.kernels import coverage as kc

    h, w = window[2], window[3]
    out = np.empty((len(stats), h, w), dtype=np.float64)
    cov: np.ndarray | None = None
    hits: np.ndarray | None = None
    union_cov: np.ndarray | None = None
    cells: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    prop_index = {p: i for i, p in enumerate(properties_of(stats))}
    if len(geoms) and any(s.kind in ("coverage", "count-intersects") for s in stats):
        pp = kc.to_pixel_polygons(geoms, grid.left, grid.top, grid.xres, grid.yres)
        cov, hits = kc.coverage_and_intersects(pp, window, intersects=any(s.kind == "count-intersects" for s in stats))
    for i, s in enumerate(stats):
        if not len(geoms):
            out[i] = empty_value(s)
        elif s.kind == "coverage":
            assert cov is not None
            out[i] = cov
        elif s.kind == "count-intersects":
            assert hits is not None
            out[i] = hits
        elif s.kind == "coverage-union":
            if union_cov is None:
                union_cov = _union_coverage(geoms, grid, window)
            out[i] = union_cov
        else:
            if cells is None:
                rows, cols, inside = kc.centroid_cells(cx, cy, grid.left, grid.top, grid.xres, grid.yres, window)
                cells = (rows[inside], cols[inside], inside)
            if s.kind == "count":
                out[i] = kc.aggregate(cells[0], cells[1], np.ones(len(cells[0])), "count", (h, w))
            else:
                out[i] = kc.aggregate(cells[0], cells[1], props[prop_index[s.property]][cells[2]], s.agg, (h, w))
    return out


def _union_coverage(geoms: np.ndarray, grid: PixelGrid, window: tuple[int, int, int, int]) -> np.ndarray:
    """Covered fraction of the union of ``geoms`` per pixel (overlaps count once)."""
    import shapely

    from tilewise.kernels import coverage as kc

    r0, c0, h, w = window
    # Clip to the window (plus a pixel) first: the union is then local, whatever the polygons' extent.
    x0 = grid.left + (c0 - 1) * grid.xres
    x1 = grid.left + (c0 + w + 1) * grid.xres
    y1 = grid.top - (r0 - 1) * grid.yres
    y0 = grid.top - (r0 + h + 1) * grid.yres
    clipped = shapely.clip_by_rect(geoms, x0, y0, x1, y1)
    union = shapely.union_all(clipped[~shapely.is_empty(clipped)])
    polys = [p for p in shapely.get_parts(union) if shapely.get_type_id(p) == 3]
    if not polys:
        return np.zeros((h, w))
    pp = kc.to_pixel_polygons(np.array([shapely.multipolygons(polys)], dtype=object), grid.left, grid.top, grid.xres, grid.yres)
    cov, _ = kc.coverage_and_intersects(pp, window, intersects=False)
    return np.minimum(cov, 1.0)  # the union's parts do not overlap: only rounding can pass 1


def merge_children(children: Sequence[np.ndarray | None], how: str, fill: float, tile_px: int) -> np.ndarray:
    """Merge four child tiles (row-major: top-left, top-right, bottom-left, bottom-right; None = absent) into a parent tile.

    Each parent pixel takes its 2 x 2 child pixels: ``sum`` (NaN ignored; all NaN stays NaN),
    ``mean`` (absent children and NaN count as ``fill``: for coverage 0, so the parent is the
    covered fraction of its area), ``nanmean``, ``min`` and ``max`` (over the valid ones).
    """
    big = np.full((2 * tile_px, 2 * tile_px), fill, dtype=np.float64)
    for k, child in enumerate(children):
        if child is not None:
            r, c = divmod(k, 2)
            big[r * tile_px : (r + 1) * tile_px, c * tile_px : (c + 1) * tile_px] = child
    quads = big.reshape(tile_px, 2, tile_px, 2).transpose(0, 2, 1, 3).reshape(tile_px, tile_px, 4)
    nan = np.isnan(quads)
    any_valid = ~nan.all(axis=2)
    with np.errstate(invalid="ignore"):
        if how == "sum":
            res = np.where(any_valid, np.where(nan, 0.0, quads).sum(axis=2), np.nan)
        elif how == "mean":
            res = np.where(nan, fill if not np.isnan(fill) else 0.0, quads).sum(axis=2) / 4.0
            res = np.where(any_valid | ~np.isnan(fill), res, np.nan)
        elif how == "nanmean":
            n = (~nan).sum(axis=2)
            res = np.where(n > 0, np.where(nan, 0.0, quads).sum(axis=2) / np.maximum(n, 1), np.nan)
        elif how == "min":
            res = np.where(any_valid, np.where(nan, np.inf, quads).min(axis=2), np.nan)
        elif how == "max":
            res = np.where(any_valid, np.where(nan, -np.inf, quads).max(axis=2), np.nan)
        else:  # pragma: no cover - checked by check_stats
            raise UsageError(f"unknown resampling {how!r}", f"use one of: {', '.join(RESAMPLINGS)}")
    return res


# --like rasters: kernels run on fixed blocks of the global grid, so a pixel's bits do not depend on the tile size.
LIKE_BLOCK = 512


@dataclass(frozen=True)
class RasterizeOp:
    """Polygon statistics drawn onto the grid of a reference raster (``tilewise rasterize --like REF.tif``).

    A generating op: it reads no raster. Each tile reads the staged polygons whose
    box meets it and computes the stats block by block (``LIKE_BLOCK`` pixels, anchored
    at the grid's corner), pasting the part of each block inside the tile.
    """

    stats: tuple[RasterStatSpec, ...]
    staged: str
    grid: PixelGrid
    height: int
    width: int
    name: str = "rasterize"
    halo: int = 0
    inputs: tuple[str, ...] = ()
    generates: bool = True
    staging: StagingSpec | None = None

    def prepare(self) -> None:
        """Stage the polygons for the run (the runner calls this under the work directory's lock)."""
        if self.staging is not None:
            from tilewise.sources.vector import stage_once

            stage_once(self.staging)

    @property
    def band_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stats)

    def compute(self, arrays: object, valid: object, dtype: np.dtype, ctx: object) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        raise NotImplementedError("RasterizeOp generates its tiles: the task calls generate()")

    def generate(self, row_off: int, col_off: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """The stats of one window of the grid: float64 (stats, h, w) and its validity."""
        from tilewise.sources.vector import Staged

        g = self.grid
        staged = Staged.open(self.staged)
        out = np.empty((len(self.stats), height, width), dtype=np.float64)
        b = LIKE_BLOCK
        for br in range(row_off // b * b, row_off + height, b):
            for bc in range(col_off // b * b, col_off + width, b):
                bh, bw = min(b, self.height - br), min(b, self.width - bc)
                bounds = (g.left + bc * g.xres, g.top - (br + bh) * g.yres, g.left + (bc + bw) * g.xres, g.top - br * g.yres)
                geoms, cx, cy, props = staged.in_bounds(bounds)
                block = compute_stats(self.stats, geoms, cx, cy, props, g, (br, bc, bh, bw))
                r0, c0 = max(br, row_off), max(bc, col_off)
                r1, c1 = min(br + bh, row_off + height), min(bc + bw, col_off + width)
                out[:, r0 - row_off : r1 - row_off, c0 - col_off : c1 - col_off] = block[:, r0 - br : r1 - br, c0 - bc : c1 - bc]
        return out, ~np.isnan(out)
