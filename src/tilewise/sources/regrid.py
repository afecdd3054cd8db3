"""Target grids: where inputs on other grids (STAC items in several CRSs) are resampled to.

:func:`target_grid` makes the grid that covers a set of rasters in one CRS at one
resolution: with ``--crs``/``--resolution`` its corners lie on multiples of the
resolution (like ``gdalwarp -tap``); without them it is the rasters' common CRS at
their finest resolution, on the pixel lattice of the finest raster (so rasters on one
lattice need no resampling). :func:`regrid_stack` puts a dated stack onto such a grid;
the members are then read through GDAL's warper (:attr:`BandRef.warp_to`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from affine import Affine

from tilewise.errors import InputError, UsageError
from tilewise.grid import Grid, crs_name
from tilewise.sources.raster import RESAMPLINGS

CRS_HELP = "give an EPSG code or another CRS GDAL knows, e.g. --crs EPSG:32633 or --crs EPSG:4326"
RESOLUTION_HELP = "give the pixel size in units of the CRS, e.g. --resolution 20 (or XRES,YRES: --resolution 20,20)"
# Pixel edges closer than this fraction of a pixel to the lattice are taken as on it (floating point of transforms).
_EPS = 1e-6


def parse_crs(value: Any) -> str:
    """The WKT of ``value`` (``"EPSG:32633"``, a PROJ string, WKT).

    Raises
    ------
    UsageError
        Text GDAL does not know as a CRS.
    """
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"--crs {value!r} is not a CRS", CRS_HELP)
    import rasterio

    try:
        with rasterio.Env():  # PROJ's complaint goes to logging, not to the terminal
            return str(CRS.from_user_input(value.strip()).to_wkt())
    except (CRSError, ValueError):
        raise UsageError(f"--crs {value!r} is not a CRS GDAL knows", CRS_HELP) from None


def parse_resolution(value: Any) -> tuple[float, float]:
    """``20``, ``"20"``, ``"20,10"`` or ``(20, 10)`` as (x, y) pixel sizes.

    Raises
    ------
    UsageError
        Not one or two numbers, or a size that is not a positive finite number.
    """
    parts: list[Any]
    if isinstance(value, str):
        parts = [p.strip() for p in value.replace(" ", ",").split(",") if p.strip()]
    elif isinstance(value, int | float) and not isinstance(value, bool):
        parts = [value]
    elif isinstance(value, list | tuple):
        parts = list(value)
    else:
        raise UsageError(f"--resolution {value!r} is not a pixel size", RESOLUTION_HELP)
    try:
        if not 1 <= len(parts) <= 2 or any(isinstance(p, bool) for p in parts):
            raise ValueError
        nums = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise UsageError(f"--resolution {value!r} is not a pixel size", RESOLUTION_HELP) from None
    if not all(math.isfinite(n) and n > 0 for n in nums):
        shown = ",".join(str(p) for p in parts)
        raise UsageError(f"--resolution {shown} is not positive", RESOLUTION_HELP)
    return (nums[0], nums[-1])


def check_resampling(value: Any) -> str:
    """``value`` if it names a resampling, else a :class:`UsageError` listing them."""
    if value not in RESAMPLINGS:
        raise UsageError(f"unknown resampling {value!r}", f"use one of: {', '.join(RESAMPLINGS)}")
    return str(value)


def _bounds(grid: Grid, label: str) -> tuple[float, float, float, float]:
    t = grid.transform
    if t.b != 0 or t.d != 0:
        raise InputError(f"{label} has a rotated grid", "warp it to a north-up grid first (gdalwarp)")
    xs = (t.c, t.c + t.a * grid.width)
    ys = (t.f, t.f + t.e * grid.height)
    return min(xs), min(ys), max(xs), max(ys)


def target_grid(
    grids: Sequence[tuple[Grid, str]],
    crs: str | None = None,
    resolution: tuple[float, float] | None = None,
    clip_lonlat: Sequence[float] | None = None,
) -> Grid:
    """The grid covering ``grids`` (each with its label for messages) in ``crs`` at ``resolution``.

    Parameters
    ----------
    grids
        The rasters' grids and how messages name them.
    crs
        Target CRS (any text :func:`parse_crs` takes); None: the rasters' common CRS.
    resolution
        (x, y) pixel size in units of the CRS; None: the finest of the rasters' (for
        rasters in another CRS, the size GDAL suggests for warping them).
    clip_lonlat
        ``(minx, miny, maxx, maxy)`` in longitude/latitude: the grid covers only this
        part of the rasters.

    Returns
    -------
    Grid
        North-up. With ``crs`` or ``resolution`` given its corners are multiples of the
        resolution (``gdalwarp -tap``); otherwise it lies on the pixel lattice of the
        finest raster.

    Raises
    ------
    InputError
        Rasters without a CRS, in several CRSs while ``crs`` is None, rotated, or
        not meeting ``clip_lonlat``.
    """
    from rasterio.crs import CRS
    from rasterio.warp import calculate_default_transform, transform_bounds

    if not grids:
        raise InputError("no rasters to make a grid for", "select at least one item")
    for g, label in grids:
        if g.crs is None:
            raise InputError(f"{label} has no CRS", "assign one with gdal_edit.py -a_srs, or leave it out")
    dst: str | None = parse_crs(crs) if crs is not None else grids[0][0].crs
    if crs is None:
        for g, label in grids[1:]:
            if CRS.from_user_input(g.crs) != CRS.from_user_input(dst):
                raise InputError(f"the rasters are in several CRSs: {crs_name(dst)} ({grids[0][1]}) and {crs_name(g.crs)} ({label})",
                                 "choose the output CRS with --crs (and the pixel size with --resolution)")  # fmt: skip
    assert dst is not None
    dst_crs = CRS.from_user_input(dst)
    boxes = []
    sizes: list[tuple[float, float, Grid | None]] = []
    for g, label in grids:
        b = _bounds(g, label)
        if CRS.from_user_input(g.crs) == dst_crs:
            boxes.append(b)
            sizes.append((abs(g.transform.a), abs(g.transform.e), g))
        else:
            boxes.append(tuple(transform_bounds(g.crs, dst_crs, *b, densify_pts=21)))
            t, _, _ = calculate_default_transform(g.crs, dst_crs, g.width, g.height, *b)
            sizes.append((abs(t.a), abs(t.e), None))
    minx = min(b[0] for b in boxes)
    miny = min(b[1] for b in boxes)
    maxx = max(b[2] for b in boxes)
    maxy = max(b[3] for b in boxes)
    if clip_lonlat is not None:
        cx0, cy0, cx1, cy1 = transform_bounds("EPSG:4326", dst_crs, *clip_lonlat, densify_pts=21)
        minx, miny, maxx, maxy = max(minx, cx0), max(miny, cy0), min(maxx, cx1), min(maxy, cy1)
        if minx >= maxx or miny >= maxy:
            box = ",".join(f"{v:g}" for v in clip_lonlat)
            raise InputError(f"the selected rasters do not meet --stac-bbox {box}", "widen --stac-bbox (longitude/latitude)")
    tap = crs is not None or resolution is not None
    if resolution is not None:
        rx, ry = resolution
        ox, oy = 0.0, 0.0
    else:
        rx = min(s[0] for s in sizes)
        ry = min(s[1] for s in sizes)
        finest = [s[2] for s in sizes if s[2] is not None and s[0] == rx and s[1] == ry]
        if finest and not tap:
            ox, oy = finest[0].transform.c, finest[0].transform.f
        else:
            ox, oy = 0.0, 0.0
    x0 = ox + math.floor((minx - ox) / rx + _EPS) * rx
    x1 = ox + math.ceil((maxx - ox) / rx - _EPS) * rx
    y0 = oy + math.floor((miny - oy) / ry + _EPS) * ry
    y1 = oy + math.ceil((maxy - oy) / ry - _EPS) * ry
    width, height = max(1, round((x1 - x0) / rx)), max(1, round((y1 - y0) / ry))
    return Grid(dst, Affine(rx, 0.0, x0, 0.0, -ry, y1), height, width)


def regrid_stack(stack: Any, crs: str | None, resolution: tuple[float, float] | None, resampling: str | None,
                 clip_lonlat: Sequence[float] | None = None) -> Any:  # fmt: skip
    """``stack`` (a :class:`~tilewise.sources.stack.Stack`) on the grid :func:`target_grid` makes of its members.

    Members keep their own grids; :meth:`Stack.band_ref` then resamples those off the
    new grid with ``resampling`` (default nearest).
    """
    grids = [(m.grid if m.grid is not None else stack.grid, m.label) for m in stack.members]
    grid = target_grid(grids, crs, resolution, clip_lonlat)
    members = tuple(replace(m, grid=m.grid if m.grid is not None else stack.grid) for m in stack.members)
    return replace(stack, grid=grid, members=members, resampling=check_resampling(resampling or "nearest"))
