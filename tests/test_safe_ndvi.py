"""NDVI from Sentinel-2 L2A SAFE products: offsets by baseline, nodata, batches, other indices, the demo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tilewise
from tests.conftest import read_raster
from tilewise.errors import GridMismatchError
from tilewise.synthetic import scene_dns, write_safe


def reflectance_ndvi(red: np.ndarray, nir: np.ndarray, add_offset: int, q: int = 10000) -> np.ndarray:
    r = (red.astype(np.float64) + add_offset) / q
    n = (nir.astype(np.float64) + add_offset) / q
    with np.errstate(all="ignore"):
        out = (n - r) / (n + r)
    return np.where((red != 0) & (nir != 0) & np.isfinite(out), out, np.nan)


@pytest.mark.parametrize(("baseline", "offset"), [("05.11", -1000), ("02.14", 0)])
def test_offsets_follow_the_metadata(tmp_path: Path, baseline: str, offset: int) -> None:
    red, nir = scene_dns(200, 260, seed=5, add_offset=offset)
    safe = write_safe(tmp_path, {"B04": red, "B08": nir}, baseline=baseline)
    out = tilewise.ndvi(str(safe), str(tmp_path / "ndvi.tif"), tile_size=64, executor="serial")
    got, _ = read_raster(out)
    ref = reflectance_ndvi(red, nir, offset)
    np.testing.assert_array_equal(np.isnan(got[0]), np.isnan(ref))
    m = ~np.isnan(ref)
    assert np.abs(got[0][m] - ref[m]).max() <= 1e-6
    # Forgetting the offset (the tutorial's bug) would be visibly wrong on this scene.
    if offset:
        wrong = reflectance_ndvi(red, nir, 0)
        assert np.nanmax(np.abs(wrong - ref)) > 0.05


def test_same_dns_different_baselines_differ_by_exactly_the_offset(tmp_path: Path) -> None:
    red, nir = scene_dns(64, 64, seed=1, add_offset=-1000)
    new = write_safe(tmp_path / "a", {"B04": red, "B08": nir}, baseline="05.11")
    # An old-baseline product whose DNs already are reflectance * 10000.
    valid = (red != 0) & (nir != 0)
    red0 = np.where(valid, red.astype(np.int32) - 1000, 0).astype(np.uint16)
    nir0 = np.where(valid, nir.astype(np.int32) - 1000, 0).astype(np.uint16)
    old = write_safe(tmp_path / "b", {"B04": red0, "B08": nir0}, baseline="02.14")
    a = read_raster(tilewise.ndvi(str(new), str(tmp_path / "a.tif"), executor="serial"))[0]
    b = read_raster(tilewise.ndvi(str(old), str(tmp_path / "b.tif"), executor="serial"))[0]
    keep = (red0 != 0) & (nir0 != 0)  # a DN of exactly 1000 becomes 0 = nodata in the old product
    np.testing.assert_allclose(a[0][keep], b[0][keep], atol=1e-6)


def test_folder_of_safe_products_batch(tmp_path: Path) -> None:
    scenes = tmp_path / "scenes"
    for i, date in enumerate(["2024-06-01T10:00:00", "2024-07-01T10:00:00", "2024-08-01T10:00:00"]):
        red, nir = scene_dns(96, 128, seed=i)
        write_safe(scenes, {"B04": red, "B08": nir}, sensing=date)
    outs = tilewise.ndvi(str(scenes), str(tmp_path / "out") + "/", workers=2)
    assert len(outs) == 3
    assert all(Path(p).name.endswith("_NDVI.tif") and "MSIL2A" in Path(p).name for p in outs)


def test_nbr_needs_align_for_20m_band(tmp_path: Path) -> None:
    red, nir = scene_dns(128, 128, seed=2)
    swir = (nir[::2, ::2] // 2).astype(np.uint16)
    prod = write_safe(tmp_path, {"B04": red, "B08": nir}, resolution=10)
    # Add a 20 m B12 like a real product's R20m folder.
    granule = next((prod / "GRANULE").iterdir())
    r20 = granule / "IMG_DATA" / "R20m"
    r20.mkdir()
    from affine import Affine

    from tilewise.rasterfile import open_write

    with open_write(r20 / "T32ULA_20240824T103629_B12_20m.jp2", driver="JP2OpenJPEG", width=64, height=64, count=1, dtype="uint16",
                    crs="EPSG:32632", transform=Affine(20.0, 0, 300000.0, 0, -20.0, 5600000.0), QUALITY=100, REVERSIBLE="YES") as ds:  # fmt: skip
        ds.write(swir, 1)
    with pytest.raises(GridMismatchError, match="B12"):
        tilewise.normdiff(str(prod), str(tmp_path / "nbr.tif"), index="nbr", executor="serial")
    out = tilewise.normdiff(str(prod), str(tmp_path / "nbr.tif"), index="nbr", align="nearest", executor="serial")
    got = read_raster(out)[0][0]
    n = (nir.astype(np.float32) - 1000) / 10000
    s = (np.repeat(np.repeat(swir, 2, 0), 2, 1).astype(np.float32) - 1000) / 10000
    ref = (n - s) / (n + s)
    m = ~np.isnan(got)
    assert m.mean() > 0.9
    # Pixels where NIR + SWIR is near 0 are ill-conditioned: compare relative to the value.
    np.testing.assert_allclose(got[m], ref[m], rtol=1e-5, atol=1e-5)


def test_demo_runs_small(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tilewise.demo import main

    assert main(["--out", str(tmp_path / "demo"), "--size", "256"]) == 0
    out = capsys.readouterr().out
    assert "NDVI: min" in out and "Mpix/s" in out
    assert len(list((tmp_path / "demo" / "quicklooks").glob("*.png"))) == 4
