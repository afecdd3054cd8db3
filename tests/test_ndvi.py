"""NDVI against a whole-array numpy float32 reference, on generated and real rasters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tilewise
from tests.conftest import ndvi_reference, read_raster, two_band_scene, write_raster
from tilewise.rasterfile import open_read


def assert_ndvi(out: str | Path, ref: np.ndarray, atol: float = 1e-6) -> None:
    got, nodata = read_raster(out)
    assert got.dtype == np.float32
    assert nodata is not None and np.isnan(nodata), "output must carry a nodata tag (NaN)"
    got = got[0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    m = ~np.isnan(ref)
    assert m.any()
    assert np.max(np.abs(got[m] - ref[m])) <= atol


def test_ndvi_generated_multiband(tmp_path: Path, scene_tif: Path) -> None:
    data = two_band_scene(300, 500)
    out = tilewise.ndvi(str(scene_tif), str(tmp_path / "ndvi.tif"), red=1, nir=2, tile_size=64, executor="serial")
    valid = (data[0] != 0) & (data[1] != 0)
    ref = ndvi_reference(data[0], data[1], valid)
    got, _ = read_raster(out)
    np.testing.assert_array_equal(got[0], ref)  # bit-identical: the same float32 arithmetic per pixel
    with open_read(out) as ds:
        assert ds.descriptions[0] == "NDVI"
        assert (ds.profile["tiled"] and ds.block_shapes[0] == (512, 512)) or ds.width < 512


def test_output_is_cog_with_overviews(tmp_path: Path) -> None:
    data = two_band_scene(1100, 1300, seed=2)
    src = write_raster(tmp_path / "big.tif", data, nodata=0, blocksize=256)
    out = tilewise.ndvi(str(src), str(tmp_path / "o.tif"), red=1, nir=2, compress="deflate", workers=2)
    with open_read(out) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.compression.name.lower() == "deflate"
        assert ds.overviews(1) == [2, 4]
    assert not list(tmp_path.glob(".o.tif.*.partial")), "no temporary left behind"


@pytest.mark.realdata
def test_landsat7_bands_3_4(tmp_path: Path, shared_data: Path) -> None:
    src = shared_data / "ndvi/stars_l7_etm/L7_ETMs.tif"
    out = tilewise.ndvi(str(src), str(tmp_path / "l7.tif"), red=3, nir=4, tile_size=100)
    with open_read(str(src)) as ds:
        red, nir = ds.read(3), ds.read(4)
    assert_ndvi(out, ndvi_reference(red, nir, np.ones(red.shape, bool)))


@pytest.mark.realdata
def test_landsat8_separate_files_with_nodata(tmp_path: Path, shared_data: Path) -> None:
    d = shared_data / "ndvi/spdatalarge_landsat8_zion"
    out = tilewise.ndvi(red=str(d / "landsat_b4.tif"), nir=str(d / "landsat_b5.tif"), output=str(tmp_path / "z.tif"), tile_size=300)
    with open_read(str(d / "landsat_b4.tif")) as r, open_read(str(d / "landsat_b5.tif")) as n:
        red, nir, nd_r, nd_n = r.read(1), n.read(1), r.nodata, n.nodata
    assert_ndvi(out, ndvi_reference(red, nir, (red != nd_r) & (nir != nd_n)))


@pytest.mark.realdata
@pytest.mark.parametrize("rel", ["ndvi/terra_sentinel2_lux/sent2_L2A_2024-08-24.tif", "ndvi/xrspatial_sentinel2/xrspatial_s2_B02_B03_B04_B08.tif"])
def test_sentinel2_bands_found_by_name(tmp_path: Path, shared_data: Path, rel: str) -> None:
    src = shared_data / rel
    out = tilewise.ndvi(str(src), str(tmp_path / "s2.tif"), tile_size=32)  # bands found from descriptions B04/B08
    with open_read(str(src)) as ds:
        names = [d.split("_")[0] for d in ds.descriptions]
        red, nir = ds.read(names.index("B04") + 1), ds.read(names.index("B08") + 1)
    assert_ndvi(out, ndvi_reference(red, nir, ~np.isnan(red) & ~np.isnan(nir)))


@pytest.mark.realdata
def test_netcdf_subdatasets(tmp_path: Path, shared_data: Path) -> None:
    nc = shared_data / "ndvi/rioxarray_s2_tiny/sentinel_2_L1C_geographic.nc"
    out = tilewise.ndvi(red=f"netcdf:{nc}:red", nir=f"netcdf:{nc}:nir", output=str(tmp_path / "nc.tif"), executor="serial")
    with open_read(f"netcdf:{nc}:red") as r, open_read(f"netcdf:{nc}:nir") as n:
        red, nir = r.read(1), n.read(1)
        valid = (red != r.nodata) & (nir != n.nodata) if r.nodata is not None else np.ones(red.shape, bool)
    assert_ndvi(out, ndvi_reference(red, nir, valid))
