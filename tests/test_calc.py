"""Band math: the heat-index conversion, masks, output types, grids and alignment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from affine import Affine

import tilewise
from tests.conftest import read_raster, write_raster
from tilewise.errors import GridMismatchError


@pytest.fixture
def day(tmp_path: Path) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(3)
    t = rng.normal(25, 8, (120, 200)).astype(np.float32)
    t[10:30, 40:90] = -9999
    return write_raster(tmp_path / "day.tif", t, nodata=-9999, blocksize=None), t


def test_heat_index_fahrenheit_masks_nodata(tmp_path: Path, day: tuple[Path, np.ndarray]) -> None:
    path, t = day
    out = tilewise.calc("where(t == -9999, -9999, t * 9 / 5 + 32)", {"t": str(path)}, str(tmp_path / "f.tif"), tile_size=64)
    got, nodata = read_raster(out)
    ref = t * 9 / 5 + 32
    masked = t == -9999
    assert np.isnan(nodata)
    assert np.isnan(got[0][masked]).all(), "masked pixels stay nodata even without the where()"
    np.testing.assert_array_equal(got[0][~masked], ref[~masked])


def test_plain_formula_keeps_input_nodata_value_when_asked(tmp_path: Path, day: tuple[Path, np.ndarray]) -> None:
    path, t = day
    out = tilewise.calc("t * 9 / 5 + 32", {"t": str(path)}, str(tmp_path / "f.tif"), nodata=-9999, executor="serial")
    got, nodata = read_raster(out)
    assert nodata == -9999
    np.testing.assert_array_equal(got[0], np.where(t == -9999, np.float32(-9999), t * 9 / 5 + 32))


def test_integer_output_rounds_and_tags_nodata(tmp_path: Path, day: tuple[Path, np.ndarray]) -> None:
    path, t = day
    out = tilewise.calc("where(t > 25, 1, 0)", {"t": str(path)}, str(tmp_path / "c.tif"), dtype="uint8", executor="serial")
    got, nodata = read_raster(out)
    assert got.dtype == np.uint8 and nodata == 255
    np.testing.assert_array_equal(got[0], np.where(t == -9999, 255, (t > 25).astype(np.uint8)))


def test_two_inputs_and_scale_override(tmp_path: Path) -> None:
    a = np.arange(60 * 70, dtype=np.uint16).reshape(60, 70)
    b = (a[::-1] % 1000).astype(np.uint16)
    pa = write_raster(tmp_path / "a.tif", a, blocksize=None)
    pb = write_raster(tmp_path / "b.tif", b, blocksize=None)
    out = tilewise.calc("sqrt(a) + b", {"a": str(pa), "b": f"{pb}:1"}, str(tmp_path / "o.tif"), scales={"b": 0.5}, offsets={"b": 1.0},
                        executor="serial")  # fmt: skip
    got, _ = read_raster(out)
    ref = np.sqrt(a.astype(np.float32)) + (b.astype(np.float32) * np.float32(0.5) + np.float32(1.0))
    np.testing.assert_array_equal(got[0], ref)


def test_different_grids_refused_then_aligned(tmp_path: Path) -> None:
    a = np.ones((40, 40), np.float32)
    pa = write_raster(tmp_path / "a.tif", a, blocksize=None)
    pb = write_raster(tmp_path / "b.tif", np.full((20, 20), 3, np.float32), blocksize=None,
                      transform=Affine(20.0, 0.0, 300000.0, 0.0, -20.0, 5600000.0))  # fmt: skip
    with pytest.raises(GridMismatchError, match=r"b\.tif") as exc:
        tilewise.calc("a + b", {"a": str(pa), "b": str(pb)}, str(tmp_path / "o.tif"))
    assert "--align" in str(exc.value)
    out = tilewise.calc("a + b", {"a": str(pa), "b": str(pb)}, str(tmp_path / "o.tif"), align="nearest", executor="serial")
    got, _ = read_raster(out)
    assert got.shape == (1, 40, 40)
    np.testing.assert_array_equal(got[0], np.full((40, 40), 4, np.float32))


def test_api_returns_xarray_for_small_results(tmp_path: Path, day: tuple[Path, np.ndarray]) -> None:
    path, t = day
    arr = tilewise.calc("t + 1", {"t": str(path)}, str(tmp_path / "x.tif"), as_xarray=True, executor="serial")
    assert arr.shape == (1, 120, 200) and arr.rio.crs.to_epsg() == 32632
    np.testing.assert_array_equal(np.isnan(arr.values[0]), t == -9999)
    np.testing.assert_array_equal(arr.values[0][t != -9999], t[t != -9999] + 1)
