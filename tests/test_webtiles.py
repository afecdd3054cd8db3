"""Tests of tilewise.webtiles (palettes, RGBA PNG tiles, the Leaflet viewer) and scripts/fetch_leaflet.py."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import json
import re
import sys
import tarfile
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from tilewise import webtiles
from tilewise.errors import UsageError
from tilewise.webtiles import LEAFLET_VERSION, Layer, leaflet_dir, parse_palette, render_png, write_viewer

matplotlib = pytest.importorskip("matplotlib", reason="matplotlib (tilewise[plot]) not installed")
Image = pytest.importorskip("PIL.Image", reason="Pillow (with matplotlib) not installed")

REPO = Path(__file__).resolve().parents[1]
BOUNDS = (-156.3, 65.0, -141.3, 75.0)
LAYERS = [
    Layer("coverage", "coverage/WorldCRS84Quad/{z}/{x}/{y}.png", 0, 3, "0 – 1 (viridis)"),
    Layer("count", "count/WorldCRS84Quad/{z}/{x}/{y}.png", 0, 3, "0 – 12 (magma)"),
]


def _rgba(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.mode == "RGBA"
        return np.asarray(im)


def _bytes(colour: tuple) -> tuple[int, ...]:
    return tuple(int(c) for c in colour)


# --- palettes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["viridis", "magma_r", "YlOrRd", "gray"])
def test_palette_names(name: str) -> None:
    cmap = parse_palette(name)
    ref = matplotlib.colormaps[name]
    assert np.array_equal(cmap(np.linspace(0, 1, 17), bytes=True), ref(np.linspace(0, 1, 17), bytes=True))


def test_palette_name_case_insensitive_and_spaces() -> None:
    assert parse_palette(" VIRIDIS ").name == "viridis"
    assert parse_palette("ylorrd").name == "YlOrRd"


def test_palette_colour_list() -> None:
    cmap = parse_palette("#ffffcc,#fd8d3c,#800026")
    assert _bytes(cmap(0.0, bytes=True)) == (255, 255, 204, 255)
    assert _bytes(cmap(1.0, bytes=True)) == (128, 0, 38, 255)
    mid = np.array(cmap(0.5, bytes=True), dtype=int)
    assert np.all(np.abs(mid - [0xFD, 0x8D, 0x3C, 255]) <= 2)


def test_palette_names_and_alpha() -> None:
    cmap = parse_palette("white, red")
    assert _bytes(cmap(0.0, bytes=True)) == (255, 255, 255, 255)
    assert _bytes(cmap(1.0, bytes=True)) == (255, 0, 0, 255)
    faded = parse_palette("#ff000080,#0000ff")
    assert _bytes(faded(0.0, bytes=True)) == (255, 0, 0, 128)
    assert _bytes(faded(1.0, bytes=True)) == (0, 0, 255, 255)


@pytest.mark.parametrize(
    ("spec", "named"),
    [("nosuchmap", "'nosuchmap'"), ("red", "'red'"), ("red,notacolour", "'notacolour'"), ("red,", "''"), ("", "empty")],
)
def test_palette_bad(spec: str, named: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_palette(spec)
    assert named in info.value.message
    assert "viridis" in str(info.value) or "two" in str(info.value)


def test_palette_unknown_lists_names() -> None:
    with pytest.raises(UsageError, match=r"viridis.*magma"):
        parse_palette("viridiss")


# --- render_png ---------------------------------------------------------------------------------


def test_render_png_pixels(tmp_path: Path) -> None:
    cmap = parse_palette("viridis")
    values = np.array([[0.0, 0.5, 1.0, 2.0], [-3.0, 0.25, np.nan, 0.75], [1.0, 1.0, 1.0, 1.0]])
    valid = np.ones(values.shape, bool)
    valid[2, :2] = False
    out = tmp_path / "a" / "b" / "0.png"  # the folders are created
    render_png(values, valid, 0.0, 1.0, cmap, out)
    rgba = _rgba(out)
    assert rgba.shape == (3, 4, 4) and rgba.dtype == np.uint8

    transparent = ~valid | np.isnan(values)
    assert np.all(rgba[transparent] == 0)
    assert np.all(rgba[~transparent][:, 3] == 255)
    low, high = _bytes(cmap(0.0, bytes=True)), _bytes(cmap(1.0, bytes=True))
    assert _bytes(rgba[0, 0]) == low  # vmin
    assert _bytes(rgba[0, 2]) == high  # vmax
    assert _bytes(rgba[0, 3]) == high  # above vmax: clipped
    assert _bytes(rgba[1, 0]) == low  # below vmin: clipped
    assert _bytes(rgba[0, 1]) == _bytes(cmap(0.5, bytes=True))
    assert _bytes(rgba[1, 3]) == _bytes(cmap(0.75, bytes=True))
    assert [p.name for p in out.parent.iterdir()] == ["0.png"]  # no temporary file left


def test_render_png_zero_transparent(tmp_path: Path) -> None:
    cmap = parse_palette("white,red")
    values = np.array([[0.0, 1.0], [0.0, 2.0]], dtype=np.float32)
    valid = np.array([[True, True], [False, True]])
    render_png(values, valid, 0.0, 2.0, cmap, tmp_path / "kept.png")
    kept = _rgba(tmp_path / "kept.png")
    assert _bytes(kept[0, 0]) == (255, 255, 255, 255)  # zero shown as the low colour
    render_png(values, valid, 0.0, 2.0, cmap, tmp_path / "clear.png", zero_transparent=True)
    clear = _rgba(tmp_path / "clear.png")
    assert np.array_equal(clear[:, :, 3] == 0, (values == 0) | ~valid)
    assert _bytes(clear[1, 1]) == (255, 0, 0, 255)


def test_render_png_constant_range_and_palette_alpha(tmp_path: Path) -> None:
    render_png(np.full((5, 7), 3.0), np.ones((5, 7), bool), 3.0, 3.0, parse_palette("blue,#ff000080"), tmp_path / "c.png")
    rgba = _rgba(tmp_path / "c.png")
    assert rgba.shape == (5, 7, 4)
    assert np.all(rgba.reshape(-1, 4) == (255, 0, 0, 128))  # the palette's top colour, its alpha kept


def test_render_png_deterministic_and_replaces(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(size=(256, 256)).astype(np.float32)
    valid = rng.random((256, 256)) > 0.1
    out = tmp_path / "t.png"
    out.write_bytes(b"old")
    render_png(values, valid, -1.0, 1.0, parse_palette("magma"), out)
    first = out.read_bytes()
    render_png(values.copy(), valid.copy(), -1.0, 1.0, parse_palette("magma"), str(out))
    assert out.read_bytes() == first and first.startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.png"]


def test_render_png_bad_input(tmp_path: Path) -> None:
    cmap = parse_palette("viridis")
    ok = np.ones((2, 2), bool)
    with pytest.raises(UsageError, match=r"vmin 2\.0 is greater than vmax 1\.0"):
        render_png(np.zeros((2, 2)), ok, 2.0, 1.0, cmap, tmp_path / "x.png")
    with pytest.raises(UsageError, match="not finite"):
        render_png(np.zeros((2, 2)), ok, 0.0, float("nan"), cmap, tmp_path / "x.png")
    with pytest.raises(ValueError, match="same shape"):
        render_png(np.zeros((2, 3)), ok, 0.0, 1.0, cmap, tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


# --- leaflet_dir and write_viewer -----------------------------------------------------------------


@pytest.fixture
def fake_leaflet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for the set-up's Leaflet folder, pointed at by TILEWISE_LEAFLET_DIR."""
    src = tmp_path / "leaflet-dist"
    (src / "images").mkdir(parents=True)
    (src / "leaflet.js").write_text("/* leaflet js */")
    (src / "leaflet.css").write_text("/* leaflet css */")
    (src / "LICENSE").write_text("BSD-2-Clause")
    (src / "images" / "layers.png").write_bytes(b"\x89PNG fake")
    monkeypatch.setenv(webtiles.LEAFLET_ENV, str(src))
    return src


@pytest.fixture
def no_leaflet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(webtiles.LEAFLET_ENV, str(empty))


def test_leaflet_dir(fake_leaflet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert leaflet_dir() == fake_leaflet
    monkeypatch.setenv(webtiles.LEAFLET_ENV, str(tmp_path / "missing"))
    assert leaflet_dir() is None
    monkeypatch.delenv(webtiles.LEAFLET_ENV)
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    assert leaflet_dir() is None
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    target = tmp_path / "venv" / "share" / "tilewise" / "leaflet"
    target.mkdir(parents=True)
    for name in ("leaflet.js", "leaflet.css"):
        (target / name).write_text("x")
    assert leaflet_dir() == target


def _config(page: str) -> dict:
    match = re.search(r"const config = (\{.*?\n\});", page, re.S)
    assert match, "no config in the page"
    parsed: dict = json.loads(match.group(1))
    return parsed


def test_write_viewer_crs84_with_local_leaflet(fake_leaflet: Path, tmp_path: Path) -> None:
    root = tmp_path / "web_tiles"
    index = write_viewer(root, LAYERS, "WorldCRS84Quad", BOUNDS)
    assert index == root / "index.html"
    page = index.read_text(encoding="utf-8")
    assert '<script src="leaflet/leaflet.js"></script>' in page
    assert '<link rel="stylesheet" href="leaflet/leaflet.css">' in page
    assert "unpkg.com" not in page
    for name in ("leaflet.js", "leaflet.css", "LICENSE", "images/layers.png"):
        assert (root / "leaflet" / name).read_bytes() == (fake_leaflet / name).read_bytes()
    config = _config(page)
    assert config["crs"] == "EPSG4326" and "L.CRS[config.crs]" in page
    assert [layer["url"] for layer in config["layers"]] == [layer.url for layer in LAYERS]
    assert [(la["minZoom"], la["maxZoom"]) for la in config["layers"]] == [(0, 3), (0, 3)]
    assert "maxNativeZoom: layer.maxZoom" in page
    assert config["bounds"] == [[65.0, -156.3], [75.0, -141.3]]  # Leaflet's [lat, lon] order
    assert config["osm"] is None and "openstreetmap" not in page
    assert config["layers"][0]["legend"] == "0 – 1 (viridis)"
    assert sorted(p.name for p in root.iterdir()) == ["index.html", "leaflet"]
    # Written again (a rerun): same page, files still there.
    assert write_viewer(root, LAYERS, "WorldCRS84Quad", BOUNDS).read_text(encoding="utf-8") == page


def test_write_viewer_cdn_fallback(no_leaflet: None, tmp_path: Path) -> None:
    page = write_viewer(tmp_path / "w", LAYERS[:1], "WorldCRS84Quad", BOUNDS).read_text(encoding="utf-8")
    assert f'src="https://unpkg.com/leaflet@{LEAFLET_VERSION}/dist/leaflet.js"' in page
    assert f'href="https://unpkg.com/leaflet@{LEAFLET_VERSION}/dist/leaflet.css"' in page
    assert re.search(r"<!--[^>]*unpkg CDN[^>]*-->", page)
    assert 'integrity="sha256-' in page
    assert not (tmp_path / "w" / "leaflet").exists()


def test_write_viewer_web_mercator(no_leaflet: None, tmp_path: Path) -> None:
    layers = [Layer("ndvi", "ndvi/WebMercatorQuad/{z}/{x}/{y}.png", 2, 9)]
    page = write_viewer(tmp_path, layers, "WebMercatorQuad", (-10.0, -89.0, 10.0, 89.0)).read_text(encoding="utf-8")
    config = _config(page)
    assert config["crs"] == "EPSG3857"
    assert config["osm"]["url"] == "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    assert config["bounds"][0][0] == pytest.approx(-85.0511287798) and config["bounds"][1][0] == pytest.approx(85.0511287798)
    assert config["maxZoom"] >= 19 and config["fitMaxZoom"] == 9
    # The OSM base is only offered in the layer control; only the first overlay is added to the map.
    assert page.count(".addTo(map)") == 4  # first overlay, layer control, scale, legend
    assert "if (i === 0) tiles.addTo(map);" in page


def test_write_viewer_escapes_names(no_leaflet: None, tmp_path: Path) -> None:
    layers = [Layer("</script><b>x</b>", "a/{z}/{x}/{y}.png", 0, 1, "<i>legend</i>")]
    page = write_viewer(tmp_path, layers, "WorldCRS84Quad", BOUNDS).read_text(encoding="utf-8")
    assert "<b>x</b>" not in page and "<i>legend</i>" not in page
    assert page.count("</script>") == 2  # Leaflet's and the page's own
    config = _config(page)
    assert config["layers"][0]["name"] == "</script><b>x</b>"
    assert config["layers"][0]["label"] == "&lt;/script&gt;&lt;b&gt;x&lt;/b&gt;"


@pytest.mark.parametrize("tms", ["LINZAntarticaMapTilegrid", "CanadianNAD83_LCC", "worldcrs84quad"])
def test_write_viewer_bad_tms(no_leaflet: None, tmp_path: Path, tms: str) -> None:
    with pytest.raises(UsageError) as info:
        write_viewer(tmp_path / "w", LAYERS, tms, BOUNDS)
    text = str(info.value)
    assert repr(tms) in text and "WorldCRS84Quad" in text and "WebMercatorQuad" in text
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(
    ("layers", "bounds", "match"),
    [
        (LAYERS, (10.0, 0.0, 5.0, 1.0), "west < east"),
        (LAYERS, (0.0, 0.0, float("nan"), 1.0), "west < east"),
        ([Layer("a", "a/{z}/{x}.png", 0, 3)], BOUNDS, "lacks"),
        ([Layer("a", "a/{z}/{x}/{y}.png", 4, 3)], BOUNDS, "out of order"),
        ([LAYERS[0], LAYERS[0]], BOUNDS, "repeat"),
    ],
)
def test_write_viewer_bad_values(no_leaflet: None, tmp_path: Path, layers: list[Layer], bounds: tuple, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        write_viewer(tmp_path, layers, "WorldCRS84Quad", bounds)


def test_cdn_integrity_matches_the_fetched_leaflet() -> None:
    """The page's SRI hashes for the CDN are those of the files the set-up fetched."""
    folder = leaflet_dir()
    if folder is None:
        pytest.skip("Leaflet not fetched by the set-up (scripts/fetch_leaflet.py)")
    for name, sri in webtiles._CDN_INTEGRITY.items():
        digest = base64.b64encode(hashlib.sha256((folder / name).read_bytes()).digest()).decode()
        assert sri == f"sha256-{digest}", name


# --- scripts/fetch_leaflet.py (offline parts) -----------------------------------------------------


@pytest.fixture(scope="module")
def fetch() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fetch_leaflet", REPO / "scripts" / "fetch_leaflet.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tarball(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buf.getvalue()


def test_fetch_script_pins_the_same_version(fetch: ModuleType) -> None:
    assert fetch.VERSION == LEAFLET_VERSION
    assert fetch.default_dest() == Path(sys.prefix) / "share" / "tilewise" / "leaflet"


def test_fetch_extracts_only_dist_files(fetch: ModuleType, tmp_path: Path) -> None:
    data = _tarball(
        {
            "package/dist/leaflet.js": b"js",
            "package/dist/leaflet.css": b"css",
            "package/dist/images/layers.png": b"png",
            "package/dist/leaflet-src.js": b"src",
            "package/LICENSE": b"BSD",
            "package/../../evil.png": b"evil",
            "/abs/leaflet.js": b"evil",
            "package/dist/images/../../../x.png": b"evil",
        },
        links={"package/dist/images/link.png": "/etc/passwd"},
    )
    dest = tmp_path / "share" / "leaflet"
    fetch.install(data, dest)
    found = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert found == [f"share/leaflet/{n}" for n in (".leaflet-version", "LICENSE", "images/layers.png", "leaflet.css", "leaflet.js")]
    assert (dest / "leaflet.js").read_bytes() == b"js"
    assert fetch.installed(dest)
    # A second install swaps the folder and leaves nothing behind.
    fetch.install(data, dest)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["leaflet"]


def test_fetch_rejects_incomplete_or_tampered(fetch: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(fetch.IntegrityError, match="lacks"):
        fetch.install(_tarball({"package/dist/leaflet.js": b"js"}), tmp_path / "l")
    assert not (tmp_path / "l").exists() and not list(tmp_path.iterdir())
    with pytest.raises(fetch.IntegrityError, match="does not match"):
        fetch.check_integrity(b"not leaflet")
    good = "sha512-" + base64.b64encode(hashlib.sha512(b"abc").digest()).decode()
    fetch.check_integrity(b"abc", good)


def test_fetch_offline_is_a_warning(fetch: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def offline(*_args: object) -> bytes:
        raise fetch.NetworkError("cannot download (Name or service not known)")

    monkeypatch.setattr(fetch, "fetch_with_npm", offline)
    monkeypatch.setattr(fetch, "fetch_with_urllib", offline)
    assert fetch.main(["--dest", str(tmp_path / "l")]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning:") and "unpkg" in err
    assert not (tmp_path / "l").exists()


def test_fetch_skips_when_installed(fetch: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "l"
    (dest / "images").mkdir(parents=True)
    for name in ("leaflet.js", "leaflet.css"):
        (dest / name).write_text("x")
    (dest / fetch.MARKER).write_text(fetch.VERSION + "\n")

    def boom(*_args: object) -> bytes:
        raise AssertionError("must not fetch")

    monkeypatch.setattr(fetch, "fetch_with_npm", boom)
    monkeypatch.setattr(fetch, "fetch_with_urllib", boom)
    assert fetch.main(["--dest", str(dest)]) == 0


def test_a_full_disk_is_reported_as_such(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PNG that cannot be written for lack of space raises the run's DiskFullError (which stops a run), not a per-tile failure."""
    import builtins
    import errno

    from tilewise.io import DiskFullError

    real_open = builtins.open

    def full_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if "x" in mode:
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", full_open)
    with pytest.raises(DiskFullError):
        render_png(np.ones((4, 4)), np.ones((4, 4), bool), 0.0, 1.0, parse_palette("viridis"), tmp_path / "a.png")
    assert not list(tmp_path.iterdir())
