"""Describe a raster: its grid, layout, bands and (on request) band statistics.

:func:`describe` returns a plain, JSON-serialisable dict (what ``tilewise info
--json`` prints); :func:`format_info` renders it as a few lines of text, in the
spirit of ``rio info`` / ``gdalinfo``. Statistics are computed block by block so
memory stays bounded whatever the raster size.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
from rasterio.windows import Window as RioWindow

from tilewise.rasterfile import grid_of, open_read

# Dataset tags worth showing; the default domain of some drivers (netCDF, HDF)
# holds hundreds of items, so everything else is left out.
TAGS_OF_INTEREST = ("AREA_OR_POINT", "TIFFTAG_DATETIME", "TIFFTAG_SOFTWARE", "TIFFTAG_IMAGEDESCRIPTION")

# Pixels (all bands together) read per statistics chunk: ~32 MiB of float64.
_STATS_CHUNK_PIXELS = 4 * 1024 * 1024


def describe(path: str, *, stats: bool = False) -> dict[str, Any]:
    """Describe a raster file without reading its pixels (unless ``stats``).

    Parameters
    ----------
    path
        A raster path or GDAL name (``/vsicurl/...``, ``NETCDF:file.nc:var``).
    stats
        Also compute per-band min/max/mean/std and the valid pixel count, reading
        the raster block by block; nodata (the dataset mask) and NaN are excluded.

    Returns
    -------
    dict
        Keys ``path, driver, width, height, count, crs, transform, bounds,
        resolution, nodata, compression, interleave, tiled, cog, tags,
        subdatasets, bands``. ``crs`` is ``{"epsg": int | None, "wkt": str}`` or
        None; ``transform`` is the affine ``[a, b, c, d, e, f]``; ``bounds`` is
        ``[left, bottom, right, top]``; ``resolution`` is ``[xres, yres]``.
        ``bands`` holds one dict per band with ``index, dtype, nodata,
        description, units, scale, offset, block_shape ([rows, cols]),
        overviews (decimation factors), colorinterp, mask_flags`` and, with
        ``stats``, ``stats: {min, max, mean, std, valid_count}`` (None values
        when no pixel is valid; ``std`` is the population standard deviation).
        Non-finite floats (a NaN nodata, say) are given as the strings
        ``"nan"``, ``"inf"``, ``"-inf"`` so the dict is strict JSON.

    Raises
    ------
    InputError
        When ``path`` is missing or not a raster GDAL can read.
    """
    with open_read(path) as ds:
        grid = grid_of(ds)
        structure = ds.tags(ns="IMAGE_STRUCTURE")
        tags = ds.tags()
        crs: dict[str, Any] | None = None
        if ds.crs:
            crs = {"epsg": ds.crs.to_epsg(), "wkt": grid.crs}
        blocks = ds.block_shapes
        bands: list[dict[str, Any]] = []
        for i in range(ds.count):
            bidx = i + 1
            bands.append(
                {
                    "index": bidx,
                    "dtype": ds.dtypes[i],
                    "nodata": _num(ds.nodatavals[i]),
                    "description": ds.descriptions[i],
                    "units": ds.units[i] or None,
                    "scale": _num(ds.scales[i]),
                    "offset": _num(ds.offsets[i]),
                    "block_shape": list(blocks[i]),
                    "overviews": list(ds.overviews(bidx)),
                    "colorinterp": ds.colorinterp[i].name,
                    "mask_flags": [flag.name for flag in ds.mask_flag_enums[i]],
                }
            )
        # GDAL >= 3.1 reports LAYOUT=COG when the file carries the COG header
        # it wrote; free to read, unlike a full layout validation.
        cog = structure.get("LAYOUT", "").upper() == "COG"
        # Striped TIFFs always have full-width blocks, so narrower blocks mean
        # tiles; a non-COG raster held in one block reports False (untellable).
        tiled = cog or (bool(blocks) and blocks[0][1] < ds.width)
        info: dict[str, Any] = {
            "path": path,
            "driver": ds.driver,
            "width": ds.width,
            "height": ds.height,
            "count": ds.count,
            "crs": crs,
            "transform": [float(v) for v in tuple(ds.transform)[:6]],
            "bounds": [float(v) for v in ds.bounds],
            "resolution": [float(v) for v in ds.res],
            "nodata": _num(ds.nodata),
            "compression": structure.get("COMPRESSION"),
            "interleave": structure.get("INTERLEAVE"),
            "tiled": tiled,
            "cog": cog,
            "tags": {k: tags[k] for k in TAGS_OF_INTEREST if k in tags},
            "subdatasets": list(ds.subdatasets),
            "bands": bands,
        }
        if stats and ds.count:
            for band, st in zip(bands, _band_stats(ds), strict=True):
                band["stats"] = st
    return info


def _num(value: float | None) -> float | str | None:
    """Return a JSON-safe number: None stays None, non-finite floats become strings."""
    if value is None:
        return None
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _chunks(height: int, width: int, block: tuple[int, int], count: int) -> Iterator[RioWindow]:
    """Yield block-aligned windows of about ``_STATS_CHUNK_PIXELS`` pixels (all bands)."""
    bh, bw = max(1, block[0]), max(1, block[1])
    budget = max(1, _STATS_CHUNK_PIXELS // max(1, count))
    # Whole blocks only, so each block is decoded once; at least one block.
    cw = min(width, bw * max(1, math.isqrt(budget) // bw))
    ch = min(height, bh * max(1, (budget // cw) // bh))
    for r in range(0, height, ch):
        for c in range(0, width, cw):
            yield RioWindow(c, r, min(cw, width - c), min(ch, height - r))


def _band_stats(ds: Any) -> list[dict[str, Any]]:
    """Per-band statistics merged chunk by chunk (Chan et al.'s parallel variance)."""
    n = ds.count
    counts = np.zeros(n, dtype=np.int64)
    means = np.zeros(n)
    m2 = np.zeros(n)
    mins = np.full(n, np.inf)
    maxs = np.full(n, -np.inf)
    for window in _chunks(ds.height, ds.width, ds.block_shapes[0], n):
        data = ds.read(window=window, masked=True)
        for i in range(n):
            band = data[i]
            values = band.compressed() if np.ma.is_masked(band) else np.asarray(band.data).ravel()
            if values.dtype.kind == "f":
                values = values[~np.isnan(values)]
            k = values.size
            if k == 0:
                continue
            v = values.astype(np.float64, copy=False)
            mean_k = float(v.mean())
            m2_k = float(np.square(v - mean_k).sum())
            total = counts[i] + k
            delta = mean_k - means[i]
            means[i] += delta * k / total
            m2[i] += m2_k + delta * delta * counts[i] * k / total
            counts[i] = total
            mins[i] = min(mins[i], float(v.min()))
            maxs[i] = max(maxs[i], float(v.max()))
    out: list[dict[str, Any]] = []
    for i in range(n):
        if counts[i] == 0:
            out.append({"min": None, "max": None, "mean": None, "std": None, "valid_count": 0})
            continue
        out.append(
            {
                "min": _num(mins[i]),
                "max": _num(maxs[i]),
                "mean": _num(means[i]),
                "std": _num(math.sqrt(m2[i] / counts[i])),
                "valid_count": int(counts[i]),
            }
        )
    return out


def _crs_label(crs: dict[str, Any] | None) -> str:
    if crs is None:
        return "none"
    if crs.get("epsg"):
        return f"EPSG:{crs['epsg']}"
    # No EPSG code: show the name at the head of the WKT, e.g. PROJCRS["..."].
    match = re.match(r'\s*\w+\["([^"]*)"', crs.get("wkt") or "")
    return match.group(1) if match else "custom (no EPSG code)"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def format_info(info: dict[str, Any]) -> str:
    """Render a :func:`describe` result as a few lines of human-readable text.

    Parameters
    ----------
    info
        The dict returned by :func:`describe`.

    Returns
    -------
    str
        Text without a trailing newline: file and driver, size, CRS, origin and
        resolution, bounds, nodata, layout, then one line per band.
    """
    bands: list[dict[str, Any]] = info.get("bands", [])
    dtypes = sorted({b["dtype"] for b in bands})
    lines = [
        f"{info['path']}  ({info['driver']})",
        f"Size: {info['width']} x {info['height']} pixels, {info['count']} band(s), {', '.join(dtypes) or '-'}",
        f"CRS: {_crs_label(info.get('crs'))}",
    ]
    t = info["transform"]
    xres, yres = info["resolution"]
    lines.append(f"Origin: ({_fmt(t[2])}, {_fmt(t[5])})  Resolution: {_fmt(xres)} x {_fmt(yres)}")
    left, bottom, right, top = info["bounds"]
    lines.append(f"Bounds: left {_fmt(left)}, bottom {_fmt(bottom)}, right {_fmt(right)}, top {_fmt(top)}")
    nodata = {_fmt(b["nodata"]) for b in bands}
    lines.append(f"Nodata: {', '.join(sorted(nodata)) if nodata else _fmt(info.get('nodata'))}")
    layout = []
    if bands:
        bh, bw = bands[0]["block_shape"]
        kind = "tiled" if info.get("tiled") else "strips" if bh < info["height"] else "one block"
        layout.append(f"{kind} {bw}x{bh}")
    layout.append(f"compression {info.get('compression') or 'none'}")
    if info.get("interleave"):
        layout.append(f"interleave {info['interleave']}")
    if info.get("cog"):
        layout.append("COG")
    if bands and bands[0]["overviews"]:
        layout.append("overviews " + ", ".join(str(f) for f in bands[0]["overviews"]))
    else:
        layout.append("no overviews")
    lines.append("Layout: " + ", ".join(layout))
    if info.get("tags"):
        lines.append("Tags: " + ", ".join(f"{k}={v}" for k, v in info["tags"].items()))
    for b in bands:
        parts = [f"Band {b['index']}"]
        if b.get("description"):
            parts.append(f"({b['description']})")
        parts.append(f": {b['dtype']}")
        text = " ".join(parts[:-1]) + parts[-1]
        if b.get("units"):
            text += f" [{b['units']}]"
        if b.get("scale") not in (None, 1.0) or b.get("offset") not in (None, 0.0):
            text += f", scale {_fmt(b['scale'])} offset {_fmt(b['offset'])}"
        st = b.get("stats")
        if st is not None:
            if st["valid_count"]:
                text += f", min {_fmt(st['min'])} max {_fmt(st['max'])} mean {_fmt(st['mean'])} std {_fmt(st['std'])}, {st['valid_count']} valid"
            else:
                text += ", no valid pixels"
        lines.append(text)
    if info.get("subdatasets"):
        lines.append(f"Subdatasets: {len(info['subdatasets'])} (open one by its GDAL name)")
    return "\n".join(lines)
