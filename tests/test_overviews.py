"""Overviews computed by tilewise: nodata-aware block means, the COG driver's levels, region invariance."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

import tilewise
from tests.conftest import two_band_scene, write_raster
from tilewise import overviews, runner
from tilewise.kernels import pyramid
from tilewise.overviews import block_means_numpy, overview_factors
from tilewise.rasterfile import open_read


def reference_level(data: np.ndarray, valid: np.ndarray, f: int) -> np.ndarray:
    h, w = math.ceil(data.shape[0] / f), math.ceil(data.shape[1] / f)
    out = np.full((h, w), np.nan, np.float32)
    for i in range(h):
        for j in range(w):
            blk = data[i * f : (i + 1) * f, j * f : (j + 1) * f][valid[i * f : (i + 1) * f, j * f : (j + 1) * f]]
            if blk.size:
                out[i, j] = np.float32(blk.astype(np.float64).mean())
    return out


# Both formulations of the levels: numpy's (processes without numba) and the compiled kernels.
IMPLEMENTATIONS = {"numpy": block_means_numpy, "numba": pyramid.block_means}


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 70), w=st.integers(1, 70), seed=st.integers(0, 2**16), hole=st.floats(0, 1))
def test_block_means_equal_a_per_block_reference(impl: str, h: int, w: int, seed: int, hole: float) -> None:
    rng = np.random.default_rng(seed)
    data = rng.normal(0, 1, (h, w)).astype(np.float32)
    valid = rng.random((h, w)) >= hole
    got = IMPLEMENTATIONS[impl](data, valid, (2, 4, 8, 16), "float32", float("nan"))
    for f, level in got.items():
        np.testing.assert_allclose(level, reference_level(data, valid, f), rtol=1e-6, atol=1e-7, equal_nan=True)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 70), wb=st.integers(1, 4), seed=st.integers(0, 2**16), dtype=st.sampled_from(["float32", "int16"]))
def test_block_means_of_a_band_without_nodata_equal_the_masked_path(impl: str, h: int, wb: int, seed: int, dtype: str) -> None:
    # A band with no nodata takes a path without the mask; its levels must be the bytes the masked
    # path gives for the same pixels (here: the band beside a strip of nodata, one block wide).
    rng = np.random.default_rng(seed)
    w = 16 * wb
    data = (rng.normal(0, 1000, (h, w)) * rng.choice([1e-3, 1.0, 1e6], (h, w))).astype(dtype)
    beside = np.concatenate([data, np.zeros((h, 16), dtype)], axis=1)
    valid = np.ones((h, w + 16), bool)
    valid[:, w:] = False
    full = IMPLEMENTATIONS[impl](data, np.ones((h, w), bool), (2, 4, 8, 16), dtype, -1)
    masked = IMPLEMENTATIONS[impl](beside, valid, (2, 4, 8, 16), dtype, -1)
    for f, level in full.items():
        assert level.tobytes() == np.ascontiguousarray(masked[f][:, : w // f]).tobytes()


SPECIAL = {"f": [0.0, -0.0, np.inf, -np.inf, np.nan, 1e30, -1e-30], "i": [0, -1, 1], "u": [0, 1]}


@settings(max_examples=150, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), seed=st.integers(0, 2**16), hole=st.sampled_from([0.0, 0.0, 0.1, 0.5, 1.0]),
       dtype=st.sampled_from(["float32", "float64", "int16", "uint16", "uint8", "int32", "int8"]),
       factors=st.sampled_from([(2,), (2, 4, 8), (4, 16), (2, 4, 8, 16, 32, 64)]))  # fmt: skip
def test_compiled_levels_are_the_bytes_of_the_numpy_formulation(h: int, w: int, seed: int, hole: float, dtype: str,
                                                                factors: tuple[int, ...]) -> None:  # fmt: skip
    # The kernels must add in numpy's order (signed zeros and infinities show a different order or a
    # skipped +0.0 of padding), round integers half to even and clip them to the dtype's range.
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        data = (rng.normal(0, 1, (h, w)) * rng.choice([1e-3, 1.0, 1e6], (h, w))).astype(dt)
    else:
        info = np.iinfo(dt)
        data = rng.integers(info.min, int(info.max) + 1, (h, w)).astype(dt)
    specials = np.array(SPECIAL[dt.kind], dtype=dt)
    specials = specials[rng.permutation(specials.size)[: rng.integers(1, specials.size + 1)]]  # e.g. only -0.0
    pick = rng.random((h, w)) < (1.0 if rng.random() < 0.3 else 0.2)  # some rasters of special values only
    data[pick] = rng.choice(specials, int(pick.sum()))
    valid = rng.random((h, w)) >= hole
    if dt.kind == "f" and rng.random() < 0.5:
        valid &= ~np.isnan(data)  # as valid_of makes it; else NaNs counted as values, the same in both
    nodata = {"f": float("nan"), "i": -1, "u": 0}[dt.kind]
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf
        want = block_means_numpy(data, valid, factors, dtype, nodata)
    got = pyramid.block_means(data, valid, factors, dtype, nodata)
    assert list(got) == list(want)
    for f in factors:
        assert got[f].dtype == want[f].dtype and got[f].shape == want[f].shape
        assert got[f].tobytes() == want[f].tobytes(), f"factor {f}"


def test_factors_match_gdal_cog_auto(tmp_path: Path) -> None:
    for h, w in [(300, 500), (600, 300), (1100, 1300), (16384, 16384), (513, 10), (512, 512)]:
        fs = overview_factors(h, w)
        assert all(math.ceil(max(h, w) / (f // 2)) > 512 for f in fs)
        assert not fs or math.ceil(max(h, w) / fs[-1]) <= 512
    assert overview_factors(16384, 16384) == (2, 4, 8, 16, 32)


def test_cog_overviews_are_ours_and_region_independent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_raster(tmp_path / "in.tif", two_band_scene(1300, 1700, seed=4), nodata=0, blocksize=256)
    # Tiles of 300 px start on multiples of 4 (the largest factor): the tiles build the overviews.
    a = tilewise.ndvi(str(src), str(tmp_path / "a.tif"), red=1, nir=2, tile_size=300, executor="serial")
    # Tiles of 301 px do not: a phase of regions (here many small ones) reads the tiles back.
    monkeypatch.setattr(overviews, "REGION_TARGET", 100)
    b = tilewise.ndvi(str(src), str(tmp_path / "b.tif"), red=1, nir=2, tile_size=301, executor="serial", keep_tiles=True)
    assert len(list((tmp_path / ".b.tif.tilewise" / "ovr" / "0").glob("region-*.tif"))) == 13 * 17
    assert Path(a).read_bytes() == Path(b).read_bytes()
    with open_read(a) as ds:
        assert ds.overviews(1) == [2, 4]
        full = ds.read(1)
        ov4 = ds.read(1, out_shape=(math.ceil(1300 / 4), math.ceil(1700 / 4)))
    ref = reference_level(full, ~np.isnan(full), 4)
    np.testing.assert_allclose(ov4, ref, rtol=1e-6, equal_nan=True)


def test_cog_overviews_are_the_same_bytes_from_numbas_kernels_and_numpys(tmp_path: Path) -> None:
    # A serial run computes the overview levels in this process, which has loaded numba (the kernels);
    # the processes executor's workers never load numba for an NDVI (numpy's formulation).
    assert "numba" in sys.modules
    src = write_raster(tmp_path / "in.tif", two_band_scene(1100, 1300, seed=5), nodata=0, blocksize=256)
    a = tilewise.ndvi(str(src), str(tmp_path / "a.tif"), red=1, nir=2, tile_size=256, executor="serial")
    b = tilewise.ndvi(str(src), str(tmp_path / "b.tif"), red=1, nir=2, tile_size=256, executor="processes", workers=2)
    with open_read(a) as ds:
        assert ds.overviews(1) == [2, 4]
    assert Path(a).read_bytes() == Path(b).read_bytes()


def test_cog_is_georeferenced_by_the_job_and_reading_georeferencing_is_left_on(tmp_path: Path) -> None:
    # The assembly opens the tile files without reading their georeferencing (the VRT's XML has it).
    src = write_raster(tmp_path / "in.tif", two_band_scene(700, 900, seed=2), nodata=0)
    out = tilewise.ndvi(str(src), str(tmp_path / "o.tif"), red=1, nir=2, tile_size=256, executor="serial", keep_tiles=True)
    first = tmp_path / ".o.tif.tilewise" / "tiles" / "0" / "r0000-c0000.tif"
    crs, transform = "EPSG:32632", Affine(10.0, 0.0, 300000.0, 0.0, -10.0, 5600000.0)  # write_raster's
    with open_read(out) as b:
        assert b.crs == crs and b.transform == transform and b.overviews(1) == [2]
    # The setting ends with the assembly: this process still reads a GeoTIFF's own georeferencing.
    with open_read(str(first)) as t:
        assert t.crs == crs and t.transform == transform


def test_tiles_carry_the_crs_only_when_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tile and pyramid files need no CRS for the assembly (its VRT has it): only kept tiles get one,
    # and the output is the same bytes either way.
    src = write_raster(tmp_path / "in.tif", two_band_scene(700, 900, seed=3), nodata=0)
    kept = tilewise.ndvi(str(src), str(tmp_path / "k.tif"), red=1, nir=2, tile_size=256, executor="serial", keep_tiles=True)
    plain = tilewise.ndvi(str(src), str(tmp_path / "p.tif"), red=1, nir=2, tile_size=256, executor="serial")
    assert Path(kept).read_bytes() == Path(plain).read_bytes()
    crs, transform = "EPSG:32632", Affine(10.0, 0.0, 300000.0, 0.0, -10.0, 5600000.0)  # write_raster's
    with open_read(kept) as ds:
        assert ds.crs == crs and ds.transform == transform
    # Without --keep-tiles the tiles are removed after the assembly; skipped here, they stay to be looked at.
    monkeypatch.setattr(runner, "_assemble", lambda *a, **k: None)
    tilewise.ndvi(str(src), str(tmp_path / "n.tif"), red=1, nir=2, tile_size=256, executor="serial")
    for kind, name in (("tiles", "r0001-c0002.tif"), ("ovr", "r0001-c0002.tif"), ("tiles", "r0000-c0000.tif")):
        with open_read(str(tmp_path / ".k.tif.tilewise" / kind / "0" / name)) as k, open_read(str(tmp_path / ".n.tif.tilewise" / kind / "0" / name)) as n:
            assert k.crs == crs and n.crs is None
            assert n.transform == k.transform and np.array_equal(n.read(), k.read(), equal_nan=True)


def test_no_overviews_option(tmp_path: Path) -> None:
    src = write_raster(tmp_path / "in.tif", two_band_scene(700, 900, seed=1), nodata=0)
    out = tilewise.ndvi(str(src), str(tmp_path / "o.tif"), red=1, nir=2, overviews=False, executor="serial")
    with open_read(out) as ds:
        assert ds.overviews(1) == []


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (6, 6), (5, 7), (12, 10)])
def test_compiled_levels_keep_numpys_signed_zeros(shape: tuple[int, int]) -> None:
    # A sum of -0.0 values stays -0.0 unless a +0.0 (a masked pixel, or padding at an odd edge) is added.
    data = np.full(shape, -0.0, np.float32)
    for valid in (np.ones(shape, bool), np.arange(data.size).reshape(shape) % 3 > 0):
        want = block_means_numpy(data, valid, (2, 4, 8, 16), "float32", float("nan"))
        got = pyramid.block_means(data, valid, (2, 4, 8, 16), "float32", float("nan"))
        assert [got[f].tobytes() for f in got] == [want[f].tobytes() for f in want]
