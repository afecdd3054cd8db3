"""Shared fixtures: generated rasters for the core tests, and the real data in ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from tilewise.grid import Grid
from tilewise.rasterfile import open_read, open_write

SHARED_DATA = Path(os.environ.get("TILEWISE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
REPO = Path(__file__).resolve().parents[1]

UTM_GRID = Grid("EPSG:32632", Affine(10.0, 0.0, 300000.0, 0.0, -10.0, 5600000.0), 0, 0)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real rasters of ../shared/data; tests using it skip when it is absent."""
    if not (SHARED_DATA / "MANIFEST.md").is_file():
        pytest.skip(f"real test data not found at {SHARED_DATA} (set TILEWISE_SHARED_DATA or put ../shared/data beside the repo)")
    return SHARED_DATA


def write_raster(path: Path, data: np.ndarray, *, nodata: float | None = None, crs: str = "EPSG:32632",
                 transform: Affine | None = None, blocksize: int | None = 256, compress: str = "deflate",
                 descriptions: list[str] | None = None) -> Path:  # fmt: skip
    """Write a (bands, h, w) or (h, w) array as a GeoTIFF (tiled when blocksize is given)."""
    arr = data if data.ndim == 3 else data[np.newaxis]
    profile: dict = {"driver": "GTiff", "width": arr.shape[2], "height": arr.shape[1], "count": arr.shape[0], "dtype": arr.dtype.name,
                     "crs": crs, "transform": transform or Affine(10.0, 0.0, 300000.0, 0.0, -10.0, 5600000.0), "nodata": nodata,
                     "compress": compress}  # fmt: skip
    if blocksize:
        profile.update(tiled=True, blockxsize=blocksize, blockysize=blocksize)
    with open_write(path, **profile) as ds:
        ds.write(arr)
        for i, d in enumerate(descriptions or [], start=1):
            ds.set_band_description(i, d)
    return path


def read_raster(path: str | Path) -> tuple[np.ndarray, float | None]:
    """Read every band of a raster and its nodata."""
    with open_read(str(path)) as ds:
        return ds.read(), ds.nodata


def two_band_scene(height: int, width: int, seed: int = 0, nodata: int = 0) -> np.ndarray:
    """A (2, h, w) uint16 red/NIR pair with structure, noise and a nodata hole."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = (np.sin(xx / 37.0) + np.cos(yy / 23.0)) * 0.25 + 0.5
    red = (800 + 1500 * (1 - base) + rng.normal(0, 60, (height, width))).clip(1, 65000).astype(np.uint16)
    nir = (1500 + 3500 * base + rng.normal(0, 80, (height, width))).clip(1, 65000).astype(np.uint16)
    hole = (yy - height / 3) ** 2 + (xx - width / 2) ** 2 < (min(height, width) / 6) ** 2
    red[hole] = nodata
    nir[hole & (xx % 2 == 0)] = nodata  # masked in one band only on half the hole
    return np.stack([red, nir])


@pytest.fixture
def scene_tif(tmp_path: Path) -> Path:
    """A 2-band uint16 GeoTIFF (red=1, nir=2), 300x500, nodata 0, 128-pixel blocks."""
    return write_raster(tmp_path / "scene.tif", two_band_scene(300, 500), nodata=0, blocksize=128)


def ndvi_reference(red: np.ndarray, nir: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Whole-array float32 NDVI with NaN where invalid or undefined."""
    r = red.astype(np.float32)
    n = nir.astype(np.float32)
    with np.errstate(all="ignore"):
        out = (n - r) / (n + r)
    return np.where(valid & np.isfinite(out), out, np.float32(np.nan)).astype(np.float32)
