"""Tests of tilewise.info (describe / format_info) and tilewise.quicklook."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio.io
from affine import Affine
from rasterio.enums import Resampling

from tilewise import info as info_mod
from tilewise.errors import InputError, OutputError, UsageError
from tilewise.info import describe, format_info
from tilewise.quicklook import NODATA_GREY, NODATA_RED, _value_range, quicklook
from tilewise.rasterfile import copy_raster, open_write

# matplotlib is an optional extra (it brings PIL): the quicklook drawing tests need it.
needs_plot = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib (tilewise[plot]) not installed")

NODATA = -9999.0
H, W = 384, 512
TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4600000.0)


def _arrays() -> np.ndarray:
    rng = np.random.default_rng(42)
    data = rng.normal(0.4, 0.2, size=(2, H, W)).astype("float32")
    data[0, :100, :150] = NODATA  # a nodata region in band 1
    data[1, 200:210, :] = np.nan  # NaN that is not the nodata value, in band 2
    data[1, 300:, 400:] = NODATA
    return data


@pytest.fixture(scope="module")
def tiled_tif(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-band float32 tiled GeoTIFF, 128x128 blocks, overviews 2 and 4, nodata -9999."""
    path = tmp_path_factory.mktemp("info") / "scene.tif"
    profile = {
        "driver": "GTiff",
        "width": W,
        "height": H,
        "count": 2,
        "dtype": "float32",
        "crs": "EPSG:32633",
        "transform": TRANSFORM,
        "nodata": NODATA,
        "tiled": True,
        "blockxsize": 128,
        "blockysize": 128,
        "compress": "deflate",
    }
    with open_write(path, **profile) as ds:
        ds.write(_arrays())
        ds.set_band_description(1, "ndvi")
        ds.build_overviews([2, 4], Resampling.average)
    return path


@pytest.fixture(scope="module")
def checker_tif(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 0/100 checkerboard whose nearest-neighbour overviews are constant.

    A full-resolution read averaged to half size gives 50 everywhere; a read
    served from an overview gives a single value of 0 or 100.
    """
    path = tmp_path_factory.mktemp("checker") / "checker.tif"
    data = ((np.indices((512, 512)).sum(axis=0) % 2) * 100).astype("uint8")
    profile = {
        "driver": "GTiff",
        "width": 512,
        "height": 512,
        "count": 1,
        "dtype": "uint8",
        "crs": "EPSG:4326",
        "transform": Affine(0.001, 0, 10, 0, -0.001, 50),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    with open_write(path, **profile) as ds:
        ds.write(data, 1)
        ds.build_overviews([2, 4, 8], Resampling.nearest)
    return path


@pytest.fixture
def read_spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[dict[str, Any], Any]]:
    """Record the keyword arguments and result of every DatasetReader.read call."""
    calls: list[tuple[dict[str, Any], Any]] = []
    original = rasterio.io.DatasetReader.read

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        calls.append((kwargs, result))
        return result

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", spy)
    return calls


# --------------------------------------------------------------------- describe


def test_describe_reports_what_was_written(tiled_tif: Path) -> None:
    info = describe(str(tiled_tif))
    json.dumps(info, allow_nan=False)  # strict JSON, no NaN leaking out
    assert info["path"] == str(tiled_tif)
    assert info["driver"] == "GTiff"
    assert (info["width"], info["height"], info["count"]) == (W, H, 2)
    assert info["nodata"] == NODATA
    assert info["crs"]["epsg"] == 32633
    assert "UTM zone 33N" in info["crs"]["wkt"]
    assert info["transform"] == [10.0, 0.0, 500000.0, 0.0, -10.0, 4600000.0]
    assert info["bounds"] == [500000.0, 4600000.0 - 10 * H, 500000.0 + 10 * W, 4600000.0]
    assert info["resolution"] == [10.0, 10.0]
    assert info["compression"] == "DEFLATE"
    assert info["tiled"] is True
    assert info["cog"] is False
    assert info["tags"]["AREA_OR_POINT"] == "Area"
    bands = info["bands"]
    assert [b["dtype"] for b in bands] == ["float32", "float32"]
    assert [b["nodata"] for b in bands] == [NODATA, NODATA]
    assert [b["block_shape"] for b in bands] == [[128, 128], [128, 128]]
    assert [b["overviews"] for b in bands] == [[2, 4], [2, 4]]
    assert [b["description"] for b in bands] == ["ndvi", None]
    assert [b["scale"] for b in bands] == [1.0, 1.0]
    assert all("stats" not in b for b in bands)  # only when asked


@pytest.mark.parametrize("chunk_pixels", [None, 128 * 128])
def test_describe_stats_match_numpy_on_valid_pixels(
    tiled_tif: Path, chunk_pixels: int | None, monkeypatch: pytest.MonkeyPatch, read_spy: list[tuple[dict[str, Any], Any]]
) -> None:
    if chunk_pixels is not None:
        # Force many chunks so merging partial statistics is exercised.
        monkeypatch.setattr(info_mod, "_STATS_CHUNK_PIXELS", chunk_pixels)
    info = describe(str(tiled_tif), stats=True)
    json.dumps(info, allow_nan=False)
    data = _arrays()
    for b, band in zip(info["bands"], data, strict=True):
        valid = band[(band != NODATA) & ~np.isnan(band)].astype(np.float64)
        st = b["stats"]
        assert st["valid_count"] == valid.size
        assert st["min"] == pytest.approx(valid.min())
        assert st["max"] == pytest.approx(valid.max())
        assert st["mean"] == pytest.approx(valid.mean(), rel=1e-9)
        assert st["std"] == pytest.approx(valid.std(), rel=1e-9)
    # Never one full-raster read: every read is a window of at most the chunk size.
    assert read_spy
    limit = (chunk_pixels or info_mod._STATS_CHUNK_PIXELS) // 2  # two bands share the budget
    for kwargs, _result in read_spy:
        window = kwargs["window"]
        assert window.width * window.height <= max(limit, 128 * 128)
    if chunk_pixels is not None:
        assert len(read_spy) > 4


def test_describe_flags_cog_layout(checker_tif: Path, tmp_path: Path) -> None:
    cog = tmp_path / "cog.tif"
    copy_raster(checker_tif, cog, "COG", {"COMPRESS": "LZW", "BLOCKSIZE": "256"})
    info = describe(str(cog))
    assert info["cog"] is True and info["tiled"] is True
    assert info["compression"] == "LZW"
    assert info["bands"][0]["block_shape"] == [256, 256]
    assert info["bands"][0]["overviews"] == [2, 4, 8]  # kept from the source
    assert describe(str(checker_tif))["cog"] is False


def test_describe_stats_all_nodata_band(tmp_path: Path) -> None:
    path = tmp_path / "empty.tif"
    profile = {"driver": "GTiff", "width": 8, "height": 8, "count": 1, "dtype": "int16", "nodata": 0, "transform": TRANSFORM}
    with open_write(path, **profile) as ds:
        ds.write(np.zeros((1, 8, 8), "int16"))
    info = describe(str(path), stats=True)
    assert info["crs"] is None
    assert info["bands"][0]["stats"] == {"min": None, "max": None, "mean": None, "std": None, "valid_count": 0}
    assert "no valid pixels" in format_info(info)
    assert "CRS: none" in format_info(info)


def test_describe_nan_nodata_is_strict_json(tmp_path: Path) -> None:
    path = tmp_path / "nan.tif"
    profile = {"driver": "GTiff", "width": 4, "height": 4, "count": 1, "dtype": "float32", "nodata": float("nan"), "transform": TRANSFORM}
    with open_write(path, **profile) as ds:
        ds.write(np.full((1, 4, 4), 2.5, "float32"))
    info = describe(str(path), stats=True)
    assert info["nodata"] == "nan"
    json.dumps(info, allow_nan=False)
    assert info["bands"][0]["stats"]["mean"] == 2.5


def test_format_info_mentions_size_crs_nodata(tiled_tif: Path) -> None:
    text = format_info(describe(str(tiled_tif), stats=True))
    assert f"{W} x {H}" in text
    assert "EPSG:32633" in text
    assert "-9999" in text
    assert "overviews 2, 4" in text
    assert "Band 1 (ndvi)" in text
    assert 5 <= len(text.splitlines()) <= 15


def test_describe_missing_and_not_raster(tmp_path: Path) -> None:
    missing = tmp_path / "nope.tif"
    with pytest.raises(InputError, match=re.escape("nope.tif")):
        describe(str(missing))
    text = tmp_path / "notes.txt"
    text.write_text("not a raster\n")
    with pytest.raises(InputError, match=re.escape("notes.txt")):
        describe(str(text))


# -------------------------------------------------------------------- quicklook


def _open_png(png: Path) -> Any:
    from PIL import Image

    return Image.open(png)


def _count_colour(png: Path, rgb: tuple[float, ...]) -> int:
    arr = np.asarray(_open_png(png).convert("RGB")).astype(int)
    target = np.round(np.array(rgb[:3]) * 255)
    return int(np.all(np.abs(arr - target) <= 1, axis=-1).sum())


@needs_plot
def test_quicklook_writes_bounded_png_with_grey_nodata(tiled_tif: Path, tmp_path: Path, read_spy: list[tuple[dict[str, Any], Any]]) -> None:
    out = quicklook(str(tiled_tif), tmp_path / "q.png", max_size=256)
    assert out == tmp_path / "q.png"
    assert [p.name for p in tmp_path.iterdir()] == ["q.png"]  # no temporary left behind
    with _open_png(out) as im:
        im.verify()
    with _open_png(out) as im:
        width, height = im.size
    assert 256 <= width <= 256 + 200 and 192 <= height <= 192 + 100
    # One reduced read, never the full resolution.
    assert [kw["out_shape"] for kw, _ in read_spy] == [(192, 256)]
    # The 100x150 nodata corner, halved, is drawn in the nodata grey.
    grey = _count_colour(out, NODATA_GREY)
    assert 0.8 * 50 * 75 <= grey <= 1.2 * 50 * 75


@needs_plot
def test_quicklook_masks_nan_and_uses_red_with_grey_cmap(tiled_tif: Path, tmp_path: Path) -> None:
    out = quicklook(str(tiled_tif), tmp_path / "b2.png", band=2, cmap="gray", max_size=512, title="band two")
    # NaN rows (10 x 512) plus the nodata corner (84 x 112) at full size.
    red = _count_colour(out, NODATA_RED)
    expected = 10 * 512 + 84 * 112
    assert 0.8 * expected <= red <= 1.2 * expected


@needs_plot
def test_quicklook_reads_from_overviews(checker_tif: Path, tmp_path: Path, read_spy: list[tuple[dict[str, Any], Any]]) -> None:
    quicklook(str(checker_tif), tmp_path / "c.png", max_size=128)
    ((kwargs, result),) = read_spy
    assert kwargs["out_shape"] == (128, 128)
    # 50 would mean the full resolution was read and averaged.
    assert np.unique(np.asarray(result)).size == 1
    assert np.unique(np.asarray(result))[0] in (0, 100)


@needs_plot
def test_quicklook_overwrites_existing_png(checker_tif: Path, tmp_path: Path) -> None:
    target = tmp_path / "c.png"
    target.write_bytes(b"old")
    quicklook(str(checker_tif), str(target), max_size=64)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["c.png"]


def test_value_range_defaults_to_percentiles() -> None:
    data = np.ma.masked_array(np.arange(101, dtype="float64"), mask=np.arange(101) > 100)
    assert _value_range(data, None, None) == (2.0, 98.0)
    assert _value_range(data, 10.0, None) == (10.0, 98.0)
    # vmax below the 2nd percentile: vmin follows it down, then the empty range is widened.
    assert _value_range(data, None, 1.0) == (0.5, 1.5)
    assert _value_range(np.ma.masked_all((3,)), None, None) == (0.0, 1.0)
    assert _value_range(np.ma.masked_array(np.full(5, 7.0)), None, None) == (6.5, 7.5)


@needs_plot
@pytest.mark.parametrize("band", [0, 3])
def test_quicklook_band_out_of_range(tiled_tif: Path, tmp_path: Path, band: int) -> None:
    with pytest.raises(UsageError, match=rf"band {band} .*2 band"):
        quicklook(str(tiled_tif), tmp_path / "x.png", band=band)
    assert not list(tmp_path.iterdir())


@needs_plot
def test_quicklook_unknown_cmap(tiled_tif: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="nosuchmap") as err:
        quicklook(str(tiled_tif), tmp_path / "x.png", cmap="nosuchmap")
    assert err.value.hint is not None and "viridis" in err.value.hint


@needs_plot
def test_quicklook_bad_options(tiled_tif: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=re.escape("vmin 2.0")):
        quicklook(str(tiled_tif), tmp_path / "x.png", vmin=2.0, vmax=1.0)
    with pytest.raises(UsageError, match="max_size 0"):
        quicklook(str(tiled_tif), tmp_path / "x.png", max_size=0)


@needs_plot
def test_quicklook_missing_input_and_output_dir(tiled_tif: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=re.escape("missing.tif")):
        quicklook(str(tmp_path / "missing.tif"), tmp_path / "x.png")
    with pytest.raises(OutputError, match="no_dir"):
        quicklook(str(tiled_tif), tmp_path / "no_dir" / "x.png", max_size=32)


def test_quicklook_without_matplotlib(tiled_tif: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes "import matplotlib" fail
    with pytest.raises(UsageError, match="matplotlib") as err:
        quicklook(str(tiled_tif), tmp_path / "x.png")
    assert err.value.hint == "pip install 'tilewise[plot]'"
