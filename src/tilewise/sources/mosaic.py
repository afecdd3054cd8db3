"""Adjacent map sheets read as one surface, through a GDAL VRT.

Neighbourhood ops over a mosaic see the neighbouring sheets' pixels at every
seam. The sheets must share CRS, resolution, pixel alignment, band count and
type, and form one connected surface (each touches another at an edge or corner).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from affine import Affine

from tilewise.errors import InputError
from tilewise.grid import Grid, crs_name
from tilewise.rasterfile import GDAL_TYPES, grid_of, open_read, vrt_number
from tilewise.remote import vrt_source_name


@dataclass(frozen=True)
class Sheet:
    """One input sheet: its grid, bands and place in the mosaic (row, col)."""

    path: str
    grid: Grid
    count: int
    dtype: str
    nodata: float | None
    offset: tuple[int, int]


@dataclass(frozen=True)
class Mosaic:
    """The surface the sheets make: its grid and the sheets placed in it."""

    grid: Grid
    sheets: tuple[Sheet, ...]

    def vrt_xml(self) -> str:
        """A VRT of the mosaic (absolute source paths; later sheets win where sheets overlap, as in GDAL)."""
        g = self.grid
        first = self.sheets[0]
        gt = ", ".join(repr(float(v)) for v in g.transform.to_gdal())
        out = [f'<VRTDataset rasterXSize="{g.width}" rasterYSize="{g.height}">']
        if g.crs:
            out.append(f"  <SRS>{escape(g.crs)}</SRS>")
        out.append(f"  <GeoTransform>{gt}</GeoTransform>")
        for b in range(1, first.count + 1):
            out.append(f'  <VRTRasterBand dataType="{GDAL_TYPES[first.dtype]}" band="{b}">')
            if first.nodata is not None:
                out.append(f"    <NoDataValue>{vrt_number(first.nodata)}</NoDataValue>")
            for s in self.sheets:
                r, c = s.offset
                w, h = s.grid.width, s.grid.height
                out.append("    <ComplexSource>")
                out.append(f'      <SourceFilename relativeToVRT="0">{escape(vrt_source_name(s.path))}</SourceFilename>')
                out.append(f"      <SourceBand>{b}</SourceBand>")
                out.append(f'      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>')
                out.append(f'      <DstRect xOff="{c}" yOff="{r}" xSize="{w}" ySize="{h}"/>')
                if s.nodata is not None:
                    out.append(f"      <NODATA>{vrt_number(s.nodata)}</NODATA>")
                out.append("    </ComplexSource>")
            out.append("  </VRTRasterBand>")
        out.append("</VRTDataset>")
        return "\n".join(out) + "\n"


def read_sheets(paths: list[str]) -> Mosaic:
    """Check that ``paths`` form one mosaic and place each sheet in it.

    Raises
    ------
    InputError
        Sheets with different CRS, resolution, rotation, band count or type,
        misaligned pixel grids, or a sheet that touches none of the others.
    """
    if len(paths) < 2:
        raise InputError(f"--mosaic needs at least two sheets, got {len(paths)}", "name all the adjacent sheets, or drop --mosaic")
    infos = []
    for p in paths:
        with open_read(p) as ds:
            infos.append((p, grid_of(ds), ds.count, ds.dtypes[0], ds.nodata, ds.crs))
    p0, g0, n0, dt0, _nd0, crs0 = infos[0]
    t0 = g0.transform
    if t0.b != 0 or t0.d != 0:
        raise InputError(f"sheet {p0!r} has a rotated grid", "mosaics need north-up sheets; warp it first (gdalwarp)")
    for p, g, n, dt, _nd, crs in infos[1:]:
        t = g.transform
        if (crs is None) != (crs0 is None) or (crs is not None and crs != crs0):
            raise InputError(f"sheet {p!r} has another CRS than {p0!r} ({crs_name(crs)} vs {crs_name(crs0)})",
                             "reproject the sheets to one CRS (gdalwarp -t_srs) before --mosaic")  # fmt: skip
        if t.b != 0 or t.d != 0 or not (_close(t.a, t0.a) and _close(t.e, t0.e)):
            raise InputError(f"sheet {p!r} has another resolution than {p0!r} ({t.a:g} x {-t.e:g} vs {t0.a:g} x {-t0.e:g})",
                             "resample the sheets to one resolution before --mosaic")  # fmt: skip
        if n != n0 or dt != dt0:
            raise InputError(f"sheet {p!r} has {n} band(s) of {dt}, {p0!r} has {n0} of {dt0}", "mosaic sheets must have the same bands and data type")
    offsets = []
    for p, g, *_ in infos:
        fc = (g.transform.c - t0.c) / t0.a
        fr = (g.transform.f - t0.f) / t0.e
        if abs(fc - round(fc)) > 1e-6 or abs(fr - round(fr)) > 1e-6:
            raise InputError(f"sheet {p!r} is not aligned to the pixel grid of {p0!r} (offset {fc:.3f}, {fr:.3f} pixels)",
                             "the sheets' corners must fall on a common pixel grid; resample them onto one grid")  # fmt: skip
        offsets.append((round(fr), round(fc)))
    r_min = min(r for r, _ in offsets)
    c_min = min(c for _, c in offsets)
    rects = [(r - r_min, c - c_min, g.height, g.width) for (r, c), (_, g, *_) in zip(offsets, infos, strict=True)]
    _check_connected(paths, rects)
    height = max(r + h for r, _, h, _ in rects)
    width = max(c + w for _, c, _, w in rects)
    transform = t0 @ Affine.translation(c_min, r_min)
    grid = Grid(g0.crs, transform, height, width)
    sheets = tuple(Sheet(p, g, n, dt, nd, (r, c)) for (p, g, n, dt, nd, _), (r, c, _, _) in zip(infos, rects, strict=True))
    return Mosaic(grid, sheets)


def write_vrt(mosaic: Mosaic, path: Path) -> str:
    """Write the mosaic's VRT to ``path`` (atomically, and only when its content changed); return the path."""
    text = mosaic.vrt_xml()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return str(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return str(path)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b))


def _check_connected(paths: list[str], rects: list[tuple[int, int, int, int]]) -> None:
    """Every sheet must touch (share an edge or corner with, or overlap) the rest of the mosaic."""

    def touch(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
        return a[0] <= b[0] + b[2] and b[0] <= a[0] + a[2] and a[1] <= b[1] + b[3] and b[1] <= a[1] + a[3]

    seen = {0}
    todo = [0]
    while todo:
        i = todo.pop()
        for j in range(len(rects)):
            if j not in seen and touch(rects[i], rects[j]):
                seen.add(j)
                todo.append(j)
    if len(seen) < len(rects):
        lone = paths[min(set(range(len(rects))) - seen)]
        raise InputError(f"sheet {lone!r} does not touch the other sheets", "--mosaic joins adjacent sheets; process separate areas without --mosaic")
