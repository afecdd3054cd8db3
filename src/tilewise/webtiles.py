"""Web tiles: RGBA PNG tiles of a statistic, and a small Leaflet page to look at them.

The PNGs are 8-bit RGBA: nodata (and, when asked, zero) is fully transparent and
every other pixel is its value mapped through a colour palette. The viewer is one
``index.html`` beside the tile folders, showing one overlay per statistic.

Leaflet is never part of the repository: ``make`` set-up (``scripts/fetch_leaflet.py``)
puts the pinned version's ``dist/`` files from the npm registry into
``{sys.prefix}/share/tilewise/leaflet``; :func:`write_viewer` copies them next to the
page, or, where the set-up could not fetch them, points the page at the same version
on the unpkg CDN.

matplotlib (and Pillow, which it depends on) are optional (the ``plot`` extra) and
imported only when a palette is parsed or a tile drawn.
"""

from __future__ import annotations

import functools
import html
import json
import math
import os
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from tilewise.errors import OutputError, UsageError

if TYPE_CHECKING:
    import matplotlib.colors

LEAFLET_VERSION = "1.9.4"
"""The Leaflet release the viewer uses (also pinned in ``scripts/fetch_leaflet.py``)."""

LEAFLET_ENV = "TILEWISE_LEAFLET_DIR"
"""Environment variable naming a folder with Leaflet's dist files (overrides the set-up's)."""

LEAFLET_CDN = f"https://unpkg.com/leaflet@{LEAFLET_VERSION}/dist"
# Subresource-integrity hashes of the CDN files (the bytes of the npm tarball's dist/).
_CDN_INTEGRITY = {
    "leaflet.css": "sha256-p4NxAoJBhIIN+hmNHrzRCf9tD/miZyoHS5obTRR9BMY=",
    "leaflet.js": "sha256-20nQCchB9co0qIjJZRGuk2/Z9VM+kNiyxNV1lvTlZBo=",
}
# What the viewer needs from Leaflet's dist/ (the images are the layer control's and markers' icons).
_LEAFLET_FILES = ("leaflet.js", "leaflet.css")
_LEAFLET_EXTRA = ("LICENSE",)

VIEWER_TMS = ("WorldCRS84Quad", "WebMercatorQuad")
"""The tile matrix sets the viewer can show."""

_LEAFLET_CRS = {"WorldCRS84Quad": "EPSG4326", "WebMercatorQuad": "EPSG3857"}
_MERCATOR_MAX_LAT = 85.0511287798066
# Deepest zoom the viewer lets one zoom in past a layer's deepest tiles (Leaflet upscales them).
_EXTRA_ZOOM = 6
_OSM_URL = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
_OSM_ATTRIBUTION = '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors'
_SUGGESTED_CMAPS = "viridis, magma, inferno, cividis, YlOrRd, RdYlGn, Blues, coolwarm (append _r to reverse)"


def _import_matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise UsageError("web tiles need matplotlib, which is not installed", "pip install 'tilewise[plot]'") from None
    return matplotlib


def parse_palette(spec: str) -> matplotlib.colors.Colormap:
    """Turn a palette given on the command line into a colour map.

    Parameters
    ----------
    spec
        A matplotlib colour-map name (``viridis``, ``magma_r``; an exact name, else
        a case-insensitive match) or a comma-separated list of at least two colours
        (``#ffffcc,#fd8d3c,#800026``, ``white,red``; ``#rrggbbaa`` gives alpha),
        spread evenly from the low to the high end.

    Returns
    -------
    matplotlib.colors.Colormap
        The colour map.

    Raises
    ------
    UsageError
        The spec is neither a colour-map name nor a list of two or more colours,
        or matplotlib is not installed.
    """
    mpl = _import_matplotlib()
    from matplotlib.colors import LinearSegmentedColormap, to_rgba

    text = spec.strip()
    hint = f"give a matplotlib colour map such as {_SUGGESTED_CMAPS}, or two or more comma-separated colours such as '#ffffcc,#fd8d3c,#800026'"
    if not text:
        raise UsageError("the palette is empty", hint)
    if "," not in text:
        if text in mpl.colormaps:
            cmap: matplotlib.colors.Colormap = mpl.colormaps[text]
            return cmap
        folded = {name.lower(): name for name in mpl.colormaps}
        if text.lower() in folded:
            cmap = mpl.colormaps[folded[text.lower()]]
            return cmap
        try:
            to_rgba(text)
        except ValueError:
            raise UsageError(f"unknown palette {spec!r}", hint) from None
        raise UsageError(f"palette {spec!r} is a single colour", f"give at least two comma-separated colours, e.g. 'white,{text}'")
    parts = [p.strip() for p in text.split(",")]
    colours = []
    for part in parts:
        try:
            colours.append(to_rgba(part))
        except ValueError:
            raise UsageError(f"palette {spec!r}: {part!r} is not a colour", hint) from None
    return LinearSegmentedColormap.from_list(text, colours)


def render_png(
    values: np.ndarray,
    valid: np.ndarray,
    vmin: float,
    vmax: float,
    cmap: matplotlib.colors.Colormap,
    path: str | Path,
    *,
    zero_transparent: bool = False,
) -> None:
    """Colour one tile's values and write them as an 8-bit RGBA PNG.

    Parameters
    ----------
    values
        The tile's values, shape ``(h, w)``; any real dtype.
    valid
        Where ``values`` holds data, boolean, same shape. Pixels that are not valid,
        and valid pixels holding NaN or infinity, come out fully transparent ``(0, 0, 0, 0)``.
    vmin, vmax
        The values mapped to the palette's low and high ends; values outside are
        clipped to them. When ``vmin == vmax`` every shown pixel gets the high end.
    cmap
        A matplotlib colour map (see :func:`parse_palette`); its own alpha is kept.
    path
        The PNG to write; its folder is created, and an existing file is replaced
        atomically (temporary file beside it, then a rename).
    zero_transparent
        Also make pixels whose value is exactly 0 transparent.

    Raises
    ------
    UsageError
        ``vmin`` or ``vmax`` is not finite, or ``vmin > vmax``.
    ValueError
        ``values`` is not 2-D or ``valid`` has another shape.
    OutputError
        The PNG cannot be written.

    Notes
    -----
    The bytes depend only on the inputs (Pillow writes no time stamps), so a rerun
    writes identical tiles. Colours are matplotlib's own ``cmap(x, bytes=True)``.
    """
    from PIL import Image

    if not (math.isfinite(vmin) and math.isfinite(vmax)):
        raise UsageError(f"the colour range {vmin} to {vmax} is not finite", "give finite --vmin/--vmax values")
    if vmin > vmax:
        raise UsageError(f"vmin {vmin} is greater than vmax {vmax}", "swap them, or use a reversed palette (name_r)")
    data = np.asarray(values)
    mask = np.asarray(valid, dtype=bool)
    if data.ndim != 2 or mask.shape != data.shape:
        raise ValueError(f"values must be 2-D and valid the same shape, got {data.shape} and {mask.shape}")

    data = data.astype(np.float64, copy=False)
    shown = mask & np.isfinite(data)
    if zero_transparent:
        shown &= data != 0
    # A zero-width range puts every pixel at the palette's high end.
    norm = (np.clip(data, vmin, vmax) - vmin) / (vmax - vmin) if vmax > vmin else np.ones(data.shape, dtype=np.float64)
    norm[~shown] = 0.0  # NaNs would map to the palette's "bad" colour; these pixels are cleared below anyway
    rgba = np.ascontiguousarray(np.asarray(cmap(norm, bytes=True), dtype=np.uint8))
    rgba[~shown] = 0
    image = Image.fromarray(rgba)  # (h, w, 4) uint8 is RGBA
    _write_atomic(Path(path), lambda fh: image.save(fh, format="PNG", compress_level=6), fsync=False)


def leaflet_dir() -> Path | None:
    """Where the set-up put Leaflet's dist files, if it did.

    Returns
    -------
    Path or None
        ``$TILEWISE_LEAFLET_DIR`` when that variable is set, else
        ``{sys.prefix}/share/tilewise/leaflet``; None when that folder lacks
        ``leaflet.js`` or ``leaflet.css``.
    """
    override = os.environ.get(LEAFLET_ENV)
    folder = Path(override) if override else Path(sys.prefix) / "share" / "tilewise" / "leaflet"
    if all((folder / name).is_file() for name in _LEAFLET_FILES):
        return folder
    return None


@dataclass(frozen=True)
class Layer:
    """One overlay of the viewer: a statistic's PNG tiles.

    Parameters
    ----------
    name
        The statistic, shown in the layer control (e.g. ``coverage``).
    url
        The tile URL template, relative to the viewer's folder, with ``{z}``, ``{x}``
        and ``{y}`` (e.g. ``coverage/WorldCRS84Quad/{z}/{x}/{y}.png``).
    min_zoom, max_zoom
        The shallowest and deepest zoom levels written; deeper zooms in the viewer
        upscale the ``max_zoom`` tiles.
    legend
        A short description of the colours, e.g. ``0 – 1.2 (viridis)``.
    """

    name: str
    url: str
    min_zoom: int
    max_zoom: int
    legend: str = ""


def write_viewer(web_root: str | Path, layers: list[Layer], tms: str, bounds: tuple[float, float, float, float]) -> Path:
    """Write ``web_root/index.html``, a Leaflet map of the web tiles.

    Parameters
    ----------
    web_root
        The folder holding the tile folders the layers' URLs point into; created if missing.
    layers
        The overlays, in the layer control's order; the first one is shown on opening.
    tms
        The tile matrix set of the tiles: ``WorldCRS84Quad`` (shown in Leaflet's
        ``EPSG4326`` CRS, whose zoom 0 is the same 2 x 1 tiles of 256 pixels, rows from
        the top) or ``WebMercatorQuad`` (``EPSG3857``, with an OpenStreetMap base layer
        that is off by default).
    bounds
        The area to open on, ``(west, south, east, north)`` in degrees of longitude
        and latitude; tiles outside it are never requested.

    Returns
    -------
    Path
        The ``index.html`` written (atomically).

    Raises
    ------
    UsageError
        ``tms`` is not one of the two above, a layer's URL lacks ``{z}``, ``{x}`` or
        ``{y}`` or its zooms are out of order, two layers share a name, or the bounds are
        not finite with west < east and south < north.
    OutputError
        The page or Leaflet's files cannot be written.

    Notes
    -----
    Leaflet's files are copied from :func:`leaflet_dir` into ``web_root/leaflet/`` and
    referenced relatively, so the folder works offline and from ``file://``. When the
    set-up did not fetch them, the page loads Leaflet from the unpkg CDN (pinned
    version, with subresource integrity) and says so in an HTML comment.
    """
    if tms not in _LEAFLET_CRS:
        raise UsageError(
            f"the web viewer cannot show tile matrix set {tms!r}",
            f"it supports {' and '.join(VIEWER_TMS)}; the PNG tiles are written all the same",
        )
    west, south, east, north = (float(b) for b in bounds)
    if not all(math.isfinite(b) for b in (west, south, east, north)) or west >= east or south >= north:
        raise UsageError(f"viewer bounds {tuple(bounds)!r} are not (west, south, east, north) with west < east and south < north", "pass lon/lat bounds")
    names = [layer.name for layer in layers]
    if len(set(names)) != len(names):
        raise UsageError(f"layer names {names!r} repeat", "give each statistic one layer")
    for layer in layers:
        if not all(key in layer.url for key in ("{z}", "{x}", "{y}")):
            raise UsageError(f"layer {layer.name!r}: URL template {layer.url!r} lacks {{z}}, {{x}} or {{y}}", "use e.g. 'NAME/TMS/{z}/{x}/{y}.png'")
        if not 0 <= layer.min_zoom <= layer.max_zoom:
            raise UsageError(f"layer {layer.name!r}: zooms {layer.min_zoom} to {layer.max_zoom} are out of order", "give 0 <= min_zoom <= max_zoom")

    root = Path(web_root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {str(root)!r} ({exc.strerror or exc})", "check the parent folder is writable") from None
    source = leaflet_dir()
    if source is not None:
        _copy_leaflet(source, root / "leaflet")
        head = "\n".join(
            [
                f"<!-- Leaflet {LEAFLET_VERSION} (BSD-2-Clause, see leaflet/LICENSE), copied beside this page by tilewise -->",
                '<link rel="stylesheet" href="leaflet/leaflet.css">',
                '<script src="leaflet/leaflet.js"></script>',
            ]
        )
    else:
        head = "\n".join(
            [
                f"<!-- Leaflet {LEAFLET_VERSION} is loaded from the unpkg CDN: the tilewise set-up did not fetch it"
                f" (run 'make setup' with network access, or set {LEAFLET_ENV}), so this page needs the internet -->",
                f'<link rel="stylesheet" href="{LEAFLET_CDN}/leaflet.css" integrity="{_CDN_INTEGRITY["leaflet.css"]}" crossorigin="">',
                f'<script src="{LEAFLET_CDN}/leaflet.js" integrity="{_CDN_INTEGRITY["leaflet.js"]}" crossorigin=""></script>',
            ]
        )

    mercator = tms == "WebMercatorQuad"
    if mercator:
        south, north = max(south, -_MERCATOR_MAX_LAT), min(north, _MERCATOR_MAX_LAT)
    deepest = max((layer.max_zoom for layer in layers), default=0)
    config = {
        "crs": _LEAFLET_CRS[tms],
        "tms": tms,
        "bounds": [[south, west], [north, east]],
        "fitMaxZoom": deepest,
        "maxZoom": max(deepest + _EXTRA_ZOOM, 19 if mercator else 0),
        "osm": {"url": _OSM_URL, "attribution": _OSM_ATTRIBUTION} if mercator else None,
        "layers": [
            {
                "label": html.escape(layer.name),  # the layer control shows labels as HTML
                "name": layer.name,
                "url": layer.url,
                "minZoom": layer.min_zoom,
                "maxZoom": layer.max_zoom,
                "legend": layer.legend,
            }
            for layer in layers
        ],
    }
    page = _PAGE.format(title=html.escape(f"tilewise web tiles ({tms})"), head=head, config=_script_json(config), script=_SCRIPT)
    index = root / "index.html"
    data = page.encode("utf-8")
    _write_atomic(index, functools.partial(_put, data), fsync=True)
    return index


def _script_json(value: Any) -> str:
    """JSON safe to embed in a ``<script>`` element (no ``</script>`` or ``<!--`` can appear)."""
    text = json.dumps(value, indent=1, ensure_ascii=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _copy_leaflet(source: Path, target: Path) -> None:
    """Copy Leaflet's js, css, licence and icon images into ``target`` (each file atomically)."""
    names = [*_LEAFLET_FILES, *(n for n in _LEAFLET_EXTRA if (source / n).is_file())]
    images = source / "images"
    if images.is_dir():
        names += [f"images/{p.name}" for p in sorted(images.iterdir()) if p.is_file() and p.suffix == ".png"]
    for name in names:
        try:
            data = (source / name).read_bytes()
        except OSError as exc:
            raise OutputError(f"cannot read Leaflet's {str(source / name)!r} ({exc.strerror or exc})", f"rerun 'make setup' or unset {LEAFLET_ENV}") from None
        dest = target / name
        try:
            if dest.is_file() and dest.read_bytes() == data:
                continue
        except OSError:
            pass
        _write_atomic(dest, functools.partial(_put, data), fsync=False)


def _put(data: bytes, fh: BinaryIO) -> None:
    fh.write(data)


def _write_atomic(path: Path, write: Callable[[BinaryIO], object], *, fsync: bool) -> None:
    """Write ``path`` through a temporary file beside it and a rename; create its folder."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Mode "xb" (not mkstemp) so the file gets the umask's permissions.
        with open(tmp, "xb") as fh:
            write(fh)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        from tilewise.io import disk_full

        full = disk_full(path, exc)
        if full is not None:
            raise full from None  # the run stops at once with one error naming the path and the space free
        raise OutputError(f"cannot write {str(path)!r} ({exc.strerror or exc})", "check free disk space and write permission") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
{head}
<style>
html, body, #map {{ height: 100%; margin: 0; }}
.tilewise-legend {{ background: rgba(255, 255, 255, 0.85); padding: 4px 8px; border-radius: 4px; font: 12px/1.5 sans-serif; }}
.tilewise-legend:empty {{ display: none; }}
</style>
</head>
<body>
<div id="map"></div>
<script>
const config = {config};
{script}
</script>
</body>
</html>
"""

# Leaflet's EPSG4326 CRS maps lon/lat linearly onto 512 x 256 pixels at zoom 0, rows from
# the top: the same grid as WorldCRS84Quad, so its {z}/{x}/{y} are the TMS's own.
_SCRIPT = """\
const bounds = L.latLngBounds(config.bounds);
const map = L.map("map", {crs: L.CRS[config.crs], minZoom: 0, maxZoom: config.maxZoom});
const overlays = {};
const legends = new Map();
config.layers.forEach((layer, i) => {
  const tiles = L.tileLayer(layer.url, {
    minZoom: 0,
    maxZoom: config.maxZoom,
    minNativeZoom: layer.minZoom,
    maxNativeZoom: layer.maxZoom,
    bounds: bounds,
    zIndex: 10 + i,
  });
  overlays[layer.label] = tiles;
  legends.set(tiles, layer);
  if (i === 0) tiles.addTo(map);
});
if (config.osm) {
  overlays["OpenStreetMap (base)"] = L.tileLayer(config.osm.url, {maxZoom: 19, zIndex: 0, attribution: config.osm.attribution});
}
L.control.layers(null, overlays, {collapsed: false}).addTo(map);
L.control.scale().addTo(map);

const legend = L.control({position: "bottomright"});
legend.onAdd = () => L.DomUtil.create("div", "tilewise-legend");
legend.addTo(map);
function updateLegend() {
  const box = legend.getContainer();
  box.replaceChildren();
  for (const [tiles, layer] of legends) {
    if (!map.hasLayer(tiles) || !layer.legend) continue;
    const row = document.createElement("div");
    const name = document.createElement("b");
    name.textContent = layer.name + ": ";
    row.append(name, layer.legend);
    box.append(row);
  }
}
map.on("overlayadd overlayremove", updateLegend);
updateLegend();
map.fitBounds(bounds, {maxZoom: config.fitMaxZoom});
"""
