"""STAC items as one surface per asset, for per-pixel ops (``tilewise ndvi --stac``, ``tilewise calc --stac``).

For each asset the selected items' files are mosaicked into one GDAL VRT on a
common target grid (:func:`tilewise.sources.regrid.target_grid`: ``--crs`` /
``--resolution``, else the items' CRS at their finest resolution). An item already
on the grid's pixel lattice is placed as it is (a ``ComplexSource``); any other is
warped onto the grid by GDAL (a warped VRT of its own, written next to the mosaic,
with the job's ``--align`` resampling, default nearest). Where items overlap the
first valid pixel wins, in date order (then item id): the ``first`` method of
``rio merge`` / ``rasterio.merge`` given the items in that order. Each item's nodata
is respected (its nodata pixels let the next item show through).

The VRTs are written into the job's work directory; each tile reads only the
windows it needs, through them, from the items' files (over HTTP for URLs). The
mosaic VRT lists every item's id, date, href and identity (size and ETag or mtime)
in its metadata, so its content, and with it the job's fingerprint, changes when an
item or its file does.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from affine import Affine

from tilewise.errors import InputError
from tilewise.grid import Grid
from tilewise.rasterfile import GDAL_TYPES, grid_of, open_read, vrt_number
from tilewise.remote import vrt_source_name
from tilewise.sources.raster import BandRef, file_identity, resolve_band
from tilewise.sources.regrid import check_resampling, target_grid
from tilewise.sources.stac import Selection, StacHit, asset_hits, select_items


@dataclass(frozen=True)
class ItemFile:
    """One item's asset file, probed: what the mosaic needs to place it."""

    hit: StacHit
    asset: str
    grid: Grid
    dtype: str
    nodata: float | None
    scale: float
    offset: float
    identity: tuple[int, int]

    @property
    def label(self) -> str:
        return f"STAC item {self.hit.item_id!r} asset {self.asset!r}"


def probe(hit: StacHit, asset: str) -> ItemFile:
    """Open ``hit``'s file once and check it holds one band.

    Raises
    ------
    InputError
        An unreadable file, or one with other than one band.
    """
    with open_read(hit.href) as ds:
        if ds.count != 1:
            raise InputError(f"asset {asset!r} of STAC item {hit.item_id!r} has {ds.count} bands, but a mosaic input takes one band per asset",
                             "pick an asset holding a single band (e.g. B04 rather than visual)")  # fmt: skip
        return ItemFile(hit, asset, grid_of(ds), ds.dtypes[0], None if ds.nodata is None else float(ds.nodata),
                        float(ds.scales[0]) if ds.scales[0] is not None else 1.0, float(ds.offsets[0]) if ds.offsets[0] is not None else 0.0,
                        file_identity(hit.href))  # fmt: skip


def resolve_mosaics(inputs: Sequence[tuple[str, Any]], crs: str | None, resolution: tuple[float, float] | None, resampling: str | None,
                    folder: Path) -> dict[str, BandRef]:  # fmt: skip
    """One :class:`BandRef` per named input: the mosaic of its asset over the selected items, all on one grid.

    Parameters
    ----------
    inputs
        ``(name, stac)`` per input, ``stac`` a :class:`~tilewise.job.StacSpec` (source,
        filters, asset). Inputs with the same source and filters share one search.
    crs, resolution
        The target grid (see :func:`~tilewise.sources.regrid.target_grid`); the grid covers
        the items of every input, cut to the search's bbox when it has one.
    resampling
        How items off the grid's lattice are warped (default nearest).
    folder
        Where the VRTs are written (the job's work directory).

    Raises
    ------
    UsageError, InputError
        From the search (:func:`~tilewise.sources.stac.select_items`), a missing asset, a
        multi-band asset, items in several CRSs without ``crs``, assets whose items
        differ in scale or offset.
    """
    method = check_resampling(resampling or "nearest")
    searches: dict[tuple[Any, ...], Selection] = {}
    files: dict[str, list[ItemFile]] = {}
    probed: dict[tuple[str, str], ItemFile] = {}
    clip = None
    for name, spec in inputs:
        key = (spec.source, tuple(spec.collections), spec.datetime, spec.bbox, tuple(spec.query))
        if key not in searches:
            searches[key] = select_items(spec.source, list(spec.collections), spec.datetime, spec.bbox, list(spec.query))
        clip = spec.bbox if spec.bbox is not None else clip
        hint = "name one of their assets (--red/--nir ASSET for ndvi, -i NAME=ASSET for calc)"
        hits = asset_hits(searches[key], spec.asset, hint)
        files[name] = []
        for h in hits:
            if (h.href, spec.asset) not in probed:
                probed[(h.href, spec.asset)] = probe(h, spec.asset)
            files[name].append(probed[(h.href, spec.asset)])
    grid = target_grid([(f.grid, f.label) for fs in files.values() for f in fs], crs, resolution, clip)
    folder = folder.resolve()  # the VRTs name each other by absolute paths (workers may run elsewhere)
    folder.mkdir(parents=True, exist_ok=True)
    refs: dict[str, BandRef] = {}
    for name, fs in files.items():
        xml = mosaic_vrt(fs, grid, method, folder, name)
        path = _write_if_changed(folder / f"{name}.vrt", xml)
        ref = resolve_band(str(path), 1, name)
        asset = fs[0].asset
        refs[name] = replace(ref, label=f"{name} (STAC asset {asset!r} of {len(fs)} item(s))",
                             identity=(len(xml), zlib.crc32(xml.encode())))  # fmt: skip
    return refs


def mosaic_vrt(files: Sequence[ItemFile], grid: Grid, resampling: str, folder: Path, name: str) -> str:
    """The VRT XML of one asset's mosaic on ``grid`` (first valid item wins); warped VRTs of off-grid items are written to ``folder``."""
    first = files[0]
    for f in files[1:]:
        if (f.scale, f.offset) != (first.scale, first.offset):
            raise InputError(f"{f.label} has scale {f.scale:g} and offset {f.offset:g}, {first.label} has {first.scale:g} and {first.offset:g}",
                             "a mosaic needs one scaling per asset; give the inputs' --scale/--offset explicitly")  # fmt: skip
    dtype = first.dtype
    nodata = next((f.nodata for f in files if f.nodata is not None), None)
    if nodata is None:  # no item says: pixels no item covers still need a value that means "none"
        import numpy as np

        nodata = float("nan") if np.dtype(dtype).kind == "f" else float(np.iinfo(np.dtype(dtype)).max)
    gt = ", ".join(repr(float(v)) for v in grid.transform.to_gdal())
    items_md = [[f.hit.item_id, f.hit.date.isoformat(), f.hit.href, list(f.identity)] for f in files]
    out = [f'<VRTDataset rasterXSize="{grid.width}" rasterYSize="{grid.height}">']
    if grid.crs:
        out.append(f"  <SRS>{escape(grid.crs)}</SRS>")
    out.append(f"  <GeoTransform>{gt}</GeoTransform>")
    out.append("  <Metadata>")
    out.append(f'    <MDI key="TILEWISE_STAC_ASSET">{escape(first.asset)}</MDI>')
    out.append(f'    <MDI key="TILEWISE_STAC_RESAMPLING">{resampling}</MDI>')
    out.append(f'    <MDI key="TILEWISE_STAC_ITEMS">{escape(json.dumps(items_md))}</MDI>')
    out.append("  </Metadata>")
    out.append(f'  <VRTRasterBand dataType="{GDAL_TYPES[dtype]}" band="1">')
    out.append(f"    <NoDataValue>{vrt_number(nodata)}</NoDataValue>")
    if first.offset != 0.0:
        out.append(f"    <Offset>{vrt_number(first.offset)}</Offset>")
    if first.scale != 1.0:
        out.append(f"    <Scale>{vrt_number(first.scale)}</Scale>")
    # A VRT paints its sources in order, each over the last where it is valid: the first item goes last.
    for k in reversed(range(len(files))):
        f = files[k]
        placed = _on_lattice(f.grid, grid)
        if placed is not None:
            src_name, src_nodata, rect = source_name(f.hit.href), f.nodata, placed
        else:
            warped = _warp(f, grid, resampling, nodata, folder / f"{name}_{k:04d}.vrt")
            if warped is None:
                continue
            src_name, src_nodata, rect = warped
        sx, sy, dx, dy, w, h = rect
        if w <= 0 or h <= 0:  # outside the grid (cut off by --stac-bbox)
            continue
        out.append("    <ComplexSource>")
        out.append(f'      <SourceFilename relativeToVRT="0">{escape(src_name)}</SourceFilename>')
        out.append("      <SourceBand>1</SourceBand>")
        out.append(f'      <SrcRect xOff="{sx}" yOff="{sy}" xSize="{w}" ySize="{h}"/>')
        out.append(f'      <DstRect xOff="{dx}" yOff="{dy}" xSize="{w}" ySize="{h}"/>')
        if src_nodata is not None:
            out.append(f"      <NODATA>{vrt_number(src_nodata)}</NODATA>")
        out.append("    </ComplexSource>")
    out.append("  </VRTRasterBand>")
    out.append("</VRTDataset>")
    return "\n".join(out) + "\n"


source_name = vrt_source_name  # the GDAL name the mosaic's VRT reads an item's href by


def _on_lattice(g: Grid, target: Grid) -> tuple[int, int, int, int, int, int] | None:
    """``(src_x, src_y, dst_x, dst_y, width, height)`` placing ``g`` in ``target`` without resampling, or None when it cannot be."""
    from tilewise.grid import _same_crs

    t, tt = g.transform, target.transform
    if not _same_crs(g.crs, target.crs) or t.b != 0 or t.d != 0 or not (math.isclose(t.a, tt.a, rel_tol=1e-9) and math.isclose(t.e, tt.e, rel_tol=1e-9)):
        return None
    fc, fr = (t.c - tt.c) / tt.a, (t.f - tt.f) / tt.e
    if abs(fc - round(fc)) > 1e-6 or abs(fr - round(fr)) > 1e-6:
        return None
    c, r = round(fc), round(fr)
    sx, sy = max(0, -c), max(0, -r)
    dx, dy = max(0, c), max(0, r)
    w, h = min(g.width - sx, target.width - dx), min(g.height - sy, target.height - dy)
    return (sx, sy, dx, dy, w, h) if w > 0 and h > 0 else (0, 0, 0, 0, 0, 0)


def _warp(f: ItemFile, grid: Grid, resampling: str, nodata: float, path: Path) -> tuple[str, float, tuple[int, int, int, int, int, int]] | None:
    """Write a warped VRT of ``f`` onto the part of ``grid`` it covers; its name, nodata and place, or None when it covers none."""
    from rasterio.enums import Resampling
    from rasterio.shutil import copy
    from rasterio.vrt import WarpedVRT
    from rasterio.warp import calculate_default_transform, transform_bounds

    t = f.grid.transform
    xs, ys = (t.c, t.c + t.a * f.grid.width), (t.f, t.f + t.e * f.grid.height)
    x0, y0, x1, y1 = transform_bounds(f.grid.crs, grid.crs, min(xs), min(ys), max(xs), max(ys), densify_pts=21)
    tt = grid.transform
    c0 = max(0, math.floor((x0 - tt.c) / tt.a) - 1)
    c1 = min(grid.width, math.ceil((x1 - tt.c) / tt.a) + 1)
    r0 = max(0, math.floor((y1 - tt.f) / tt.e) - 1)
    r1 = min(grid.height, math.ceil((y0 - tt.f) / tt.e) + 1)
    if c1 <= c0 or r1 <= r0:
        return None
    sub = tt * Affine.translation(c0, r0)
    # The resampling kernel's scale (destination pixels per source pixel), fixed for the whole item: GDAL would
    # otherwise estimate it per processing chunk from the chunk's shape, so that it varied with the footprint.
    src_t, _, _ = calculate_default_transform(f.grid.crs, grid.crs, f.grid.width, f.grid.height, min(xs), min(ys), max(xs), max(ys))
    scales = {"XSCALE": repr(abs(src_t.a) / abs(tt.a)), "YSCALE": repr(abs(src_t.e) / abs(tt.e))}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open_read(source_name(f.hit.href)) as ds, WarpedVRT(ds, crs=grid.crs, transform=sub, width=c1 - c0, height=r1 - r0, resampling=Resampling[resampling],
                                                src_nodata=f.nodata, nodata=nodata, tolerance=1e-6, **scales) as vrt:  # fmt: skip
        copy(vrt, str(tmp), driver="VRT")
    text = tmp.read_text(encoding="utf-8")
    tmp.unlink()
    _write_if_changed(path, text)
    return str(path.resolve()), nodata, (0, 0, c0, r0, c1 - c0, r1 - r0)


def _write_if_changed(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically, unless it already holds it (its mtime then stays)."""
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return path
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
