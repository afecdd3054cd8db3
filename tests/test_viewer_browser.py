"""The web viewer in a real headless browser: the PNG tiles are requested and drawn where they belong.

A small pyramid of web tiles (zooms 0-3) is rendered with :func:`render_png` around
lon -148.8, lat 70.0, solid red inside a 15 x 10 degree box and transparent outside;
:func:`write_viewer` writes the page; a loopback-only HTTP server serves the folder and
headless Chromium takes a screenshot. The red box must appear at the centre of the
screenshot with the size the tile matrix set gives it at zoom 3 (which checks the
viewer's CRS, including rows counted from the top), the tiles under it must have been
requested, and the second overlay (off by default) must not.

Skipped when no Chromium / Chrome is installed (``make system-deps`` installs it as
root) or the set-up could not fetch Leaflet (offline), unless ``TILEWISE_REQUIRE_BROWSER=1``,
which makes either a failure.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import morecantile
import numpy as np
import pytest

from tilewise.webtiles import Layer, leaflet_dir, parse_palette, render_png, write_viewer

pytestmark = pytest.mark.slow
Image = pytest.importorskip("PIL.Image", reason="Pillow (with matplotlib) not installed")

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WIDTH, HEIGHT = 800, 600
BOX = (-156.3, 65.0, -141.3, 75.0)  # west, south, east, north: centred on lon -148.8, lat 70.0
ZOOMS = range(4)


def _cannot(reason: str) -> None:
    if os.environ.get("TILEWISE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}, and TILEWISE_REQUIRE_BROWSER=1")
    pytest.skip(reason)


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    _cannot(f"no headless browser found (looked for {', '.join(BROWSERS)}); 'make system-deps' installs chromium as root")
    raise AssertionError("unreachable")


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder and records each request line and status."""

    log: list[tuple[str, int]]

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.log.append((self.path, int(code) if isinstance(code, int) else 0))

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[functools.partial[tuple[str, list[tuple[str, int]]]]]:
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(root: Path) -> tuple[str, list[tuple[str, int]]]:
        log: list[tuple[str, int]] = []
        handler = type("Handler", (_Handler,), {"log": log})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}/", log

    yield functools.partial(start)
    for server in servers:
        server.shutdown()
        server.server_close()


def _pyramid(web_root: Path, name: str, tms_name: str, colour: str) -> list[str]:
    """Render ``name``'s tiles over BOX for ZOOMS: ``colour`` inside the box, transparent outside."""
    tms = morecantile.tms.get(tms_name)
    west, south = tms.xy(BOX[0], BOX[1])
    east, north = tms.xy(BOX[2], BOX[3])
    cmap = parse_palette(f"{colour},{colour}")
    written = []
    for tile in tms.tiles(*BOX, list(ZOOMS)):
        b = tms.xy_bounds(tile)
        size = tms.matrix(tile.z).tileWidth
        x = b.left + (np.arange(size) + 0.5) * (b.right - b.left) / size
        y = b.top - (np.arange(size) + 0.5) * (b.top - b.bottom) / size
        valid = ((x >= west) & (x <= east))[np.newaxis, :] & ((y >= south) & (y <= north))[:, np.newaxis]
        rel = f"{name}/{tms_name}/{tile.z}/{tile.x}/{tile.y}.png"
        render_png(np.ones((size, size), np.float32), valid, 0.0, 1.0, cmap, web_root / rel)
        written.append(rel)
    return written


def _screenshot(browser: str, url: str, out: Path, profile: Path) -> None:
    cmd = [
        browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--disable-dev-shm-usage",
        "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--force-device-scale-factor=1",
        f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}", "--virtual-time-budget=8000", f"--screenshot={out}", url,
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{browser} did not finish its screenshot in 60 s")
    assert proc.returncode == 0 and out.is_file(), f"{browser} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"


@pytest.mark.parametrize("tms_name", ["WorldCRS84Quad", "WebMercatorQuad"])
def test_viewer_draws_the_tiles(tms_name: str, tmp_path: Path, serve: functools.partial[tuple[str, list[tuple[str, int]]]]) -> None:
    browser = _browser()
    if leaflet_dir() is None:
        # The page would load Leaflet from the CDN, which a test must not depend on.
        _cannot("Leaflet was not fetched by the set-up (run scripts/fetch_leaflet.py with network access)")
    root = tmp_path / "web_tiles"
    shown = _pyramid(root, "coverage", tms_name, "#ff0000")
    hidden = _pyramid(root, "count", tms_name, "#0000ff")
    layers = [Layer(name, f"{name}/{tms_name}/{{z}}/{{x}}/{{y}}.png", 0, max(ZOOMS), "1 (solid)") for name in ("coverage", "count")]
    write_viewer(root, layers, tms_name, BOX)

    url, log = serve(root)
    shot = tmp_path / "shot.png"
    _screenshot(browser, url + "index.html", shot, tmp_path / "profile")

    # The tiles under the view at zoom 3 were requested (and only those of the first overlay).
    tms = morecantile.tms.get(tms_name)
    deepest = max(ZOOMS)
    expected = {f"/{rel}" for rel in shown if rel.split("/")[2] == str(deepest)}
    got = {path for path, _ in log}
    assert expected <= got, f"tiles not requested: {sorted(expected - got)}; requests: {sorted(got)}"
    assert all(code == 200 for path, code in log if path.endswith(".png") or "leaflet" in path), log
    assert not any(path.lstrip("/") in hidden for path in got), "the second overlay is off by default but its tiles were requested"
    assert {"/index.html", "/leaflet/leaflet.js", "/leaflet/leaflet.css"} <= got

    # The red box is drawn at the centre with the size zoom 3 gives it.
    with Image.open(shot) as im:
        assert im.size == (WIDTH, HEIGHT)
        rgb = np.asarray(im.convert("RGB")).astype(int)
    red = (rgb[..., 0] > 200) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)
    blue = (rgb[..., 2] > 200) & (rgb[..., 0] < 60) & (rgb[..., 1] < 60)
    cell = tms.matrix(deepest).cellSize
    (x0, y0), (x1, y1) = tms.xy(BOX[0], BOX[1]), tms.xy(BOX[2], BOX[3])
    want_w, want_h = (x1 - x0) / cell, (y1 - y0) / cell
    rows, cols = np.nonzero(red)
    assert red.sum() > 0.9 * want_w * want_h > 5000, f"only {red.sum()} red pixels; expected about {want_w * want_h:.0f}"
    assert not blue.any()
    got_w, got_h = cols.max() - cols.min() + 1, rows.max() - rows.min() + 1
    assert abs(got_w - want_w) <= 3 and abs(got_h - want_h) <= 3, f"red box {got_w} x {got_h} px, expected {want_w:.1f} x {want_h:.1f}"
    centre = ((cols.max() + cols.min()) / 2, (rows.max() + rows.min()) / 2)
    assert abs(centre[0] - WIDTH / 2) <= 3 and abs(centre[1] - HEIGHT / 2) <= 3, f"red box centred at {centre}, not the view's centre"
    assert red.sum() >= 0.97 * got_w * got_h  # solid, not a few scattered pixels


def test_rasterize_webtiles_render_in_the_browser(tmp_path: Path, serve: functools.partial[tuple[str, list[tuple[str, int]]]]) -> None:
    """The viewer that `tilewise rasterize --webtiles` writes shows the coverage layer over the polygons."""
    import geopandas as gpd
    import shapely

    from tilewise.polygons import rasterize

    browser = _browser()
    if leaflet_dir() is None:
        _cannot("Leaflet was not fetched by the set-up (run scripts/fetch_leaflet.py with network access)")
    rng = np.random.default_rng(0)
    polys = [shapely.box(x, y, x + 0.002, y + 0.001) for x, y in zip(rng.uniform(-148.84, -148.80, 300), rng.uniform(70.01, 70.04, 300), strict=True)]
    src = tmp_path / "p.gpkg"
    gpd.GeoDataFrame(geometry=polys, crs="OGC:CRS84").to_file(src)
    root = tmp_path / "out"
    rasterize([str(src)], str(root), zoom=12, stats=["coverage"], parents=True, min_zoom=8, webtiles=True, palette="#ff0000,#ff0000", executor="serial")
    url, log = serve(root / "web_tiles")
    shot = tmp_path / "shot.png"
    _screenshot(browser, url + "index.html", shot, tmp_path / "profile")
    assert any(path.startswith("/coverage/WorldCRS84Quad/12/") and code == 200 for path, code in log), log
    with Image.open(shot) as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    red = (rgb[..., 0] > 200) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)
    assert red.sum() > 2000, f"only {red.sum()} layer pixels in the screenshot"
