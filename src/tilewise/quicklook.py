"""A quick PNG preview of one band: downsampled read, colour map, colour bar, title.

Only a reduced version of the band is read (``out_shape``), so GDAL serves it
from the overviews when the file has them and a large raster never gets read at
full resolution. matplotlib is optional (the ``plot`` extra) and imported here
only when a preview is drawn.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.enums import ColorInterp, Resampling

from tilewise.errors import OutputError, UsageError
from tilewise.rasterfile import open_read

# Nodata is painted opaque grey, or pale red when the colour map is itself grey
# (so nodata never looks like a valid value).
NODATA_GREY = (0.75, 0.75, 0.75, 1.0)
NODATA_RED = (1.0, 0.75, 0.75, 1.0)

# Small previews are enlarged by a whole factor up to this side so the colour
# bar and title do not dwarf the image; whole factors keep pixels crisp.
_MIN_DISPLAY = 256
_DPI = 100
_SUGGESTED_CMAPS = "viridis, magma, gray, terrain, RdYlGn, YlGn, Blues, coolwarm"


def quicklook(
    raster: str,
    png: str | Path,
    *,
    band: int = 1,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    max_size: int = 1024,
    title: str | None = None,
) -> Path:
    """Draw one band of a raster to a PNG preview.

    Parameters
    ----------
    raster
        The raster path or GDAL name.
    png
        The PNG to write; replaced atomically if it exists.
    band
        The 1-based band to draw.
    cmap
        A matplotlib colour-map name (``YlGn`` suits NDVI; append ``_r`` to reverse).
    vmin, vmax
        The value range of the colour map; each one not given is the 2nd / 98th
        percentile of the valid pixels that were read.
    max_size
        The longest side, in pixels, of the array read from the raster (the PNG
        adds a title and colour bar around it).
    title
        The figure title; the raster's file name by default.

    Returns
    -------
    Path
        The PNG written.

    Raises
    ------
    UsageError
        matplotlib is not installed, the colour map is unknown, the band is out
        of range, ``max_size`` is below 1 or ``vmin > vmax``.
    InputError
        The raster is missing or not readable.
    OutputError
        The PNG cannot be written.
    """
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError("quicklook needs matplotlib, which is not installed", "pip install 'tilewise[plot]'") from None

    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError:
        raise UsageError(f"unknown colour map {cmap!r}", f"use a matplotlib colour map such as {_SUGGESTED_CMAPS}") from None
    if max_size < 1:
        raise UsageError(f"max_size {max_size} is too small", "give the longest side of the preview in pixels, e.g. 1024")
    if vmin is not None and vmax is not None and vmin > vmax:
        raise UsageError(f"vmin {vmin} is greater than vmax {vmax}", "swap them, or use a reversed colour map (name_r)")

    out = Path(png)
    data, label = _read_small(raster, band, max_size)
    lo, hi = _value_range(data, vmin, vmax)

    bad = NODATA_RED if _is_grey(colormap) else NODATA_GREY
    colormap = colormap.with_extremes(bad=bad)

    h, w = data.shape
    zoom = max(1, _MIN_DISPLAY // max(h, w))
    # Axes sized in inches at a fixed dpi so the image maps onto whole PNG pixels.
    fig = Figure(figsize=(w * zoom / _DPI, h * zoom / _DPI), dpi=_DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    image = ax.imshow(data, cmap=colormap, vmin=lo, vmax=hi, interpolation="nearest", resample=False)
    ax.set_axis_off()
    ax.set_title(title if title is not None else _display_name(raster), fontsize=10)
    # The colour bar goes right of the figure box; bbox_inches="tight" grows the
    # saved canvas to include it and the title without resizing the image.
    width_px = w * zoom
    cax = fig.add_axes((1.0 + 12 / width_px, 0.0, 16 / width_px, 1.0))
    bar = fig.colorbar(image, cax=cax)
    bar.set_label(label)
    bar.ax.tick_params(labelsize=8)

    _save_atomically(fig, out)
    return out


def _read_small(raster: str, band: int, max_size: int) -> tuple[np.ma.MaskedArray[Any, Any], str]:
    """Read ``band`` reduced to at most ``max_size`` pixels a side, NaN masked too."""
    with open_read(raster) as ds:
        if not 1 <= band <= ds.count:
            raise UsageError(f"band {band} is out of range: {raster!r} has {ds.count} band(s)", f"choose a band from 1 to {ds.count}")
        scale = max(ds.height, ds.width) / max_size
        shape = (max(1, round(ds.height / scale)), max(1, round(ds.width / scale))) if scale > 1 else (ds.height, ds.width)
        # Averaging blends class codes into meaningless values, so palette
        # (categorical) bands are decimated with nearest instead.
        categorical = ds.colorinterp[band - 1] == ColorInterp.palette
        resampling = Resampling.nearest if categorical or scale <= 1 else Resampling.average
        data = ds.read(band, out_shape=shape, masked=True, resampling=resampling)
        description = ds.descriptions[band - 1]
        units = ds.units[band - 1]
    label = description or f"band {band}"
    if units:
        label += f" ({units})"
    return np.ma.masked_invalid(data), label


def _value_range(data: np.ma.MaskedArray[Any, Any], vmin: float | None, vmax: float | None) -> tuple[float, float]:
    """Fill in the colour range from the 2nd-98th percentile of the valid pixels."""
    if vmin is None or vmax is None:
        valid = data.compressed()
        if valid.size:
            p2, p98 = (float(v) for v in np.percentile(valid, [2, 98]))
        else:
            p2, p98 = 0.0, 1.0
        lo = vmin if vmin is not None else p2
        hi = vmax if vmax is not None else p98
        # One given bound may lie past the other's percentile: keep the order.
        if vmin is not None:
            hi = max(hi, lo)
        else:
            lo = min(lo, hi)
    else:
        lo, hi = vmin, vmax
    if lo == hi:
        # A constant band: a zero-width range gives an unreadable colour bar.
        lo, hi = lo - 0.5, hi + 0.5
    return float(lo), float(hi)


def _is_grey(colormap: Any) -> bool:
    rgb = np.asarray(colormap(np.linspace(0.0, 1.0, 16)))[:, :3]
    return bool(np.all(np.ptp(rgb, axis=1) < 0.02))


def _display_name(raster: str) -> str:
    name = Path(raster.rstrip("/")).name
    return name or raster


def _save_atomically(fig: Any, out: Path) -> None:
    """Save under a temporary name in the target directory, then rename over ``out``."""
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
    try:
        # Mode "xb" (not mkstemp) so the PNG gets the umask's permissions.
        with open(tmp, "xb") as fh:
            fig.savefig(fh, format="png", dpi=_DPI, bbox_inches="tight", pad_inches=0.1, facecolor="white")
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {str(out)!r} ({exc.strerror or exc})", "check the directory exists and is writable") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
