"""Promise 1 and 6: bit-identical output across tile sizes, executors and worker counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tilewise
from tests.conftest import read_raster, two_band_scene, write_raster


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("inv")
    return write_raster(d / "in.tif", two_band_scene(333, 517, seed=7), nodata=0, blocksize=64)


@pytest.fixture(scope="module")
def whole(source: Path, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    out = tilewise.ndvi(str(source), str(tmp_path_factory.mktemp("whole") / "w.tif"), red=1, nir=2, tile_size=4096, executor="serial")
    return read_raster(out)[0]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(16, 400))
def test_any_tile_size_same_pixels(size: int, source: Path, whole: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> None:
    out = tilewise.ndvi(str(source), str(tmp_path_factory.mktemp("t") / "o.tif"), red=1, nir=2, tile_size=size, executor="serial")
    np.testing.assert_array_equal(read_raster(out)[0], whole)


@pytest.mark.parametrize(("executor", "workers"), [("serial", 1), ("processes", 1), ("processes", 2), ("processes", 3), ("threads", 2)])
def test_executors_same_bytes(executor: str, workers: int, source: Path, tmp_path: Path) -> None:
    ref = tilewise.ndvi(str(source), str(tmp_path / "ref.tif"), red=1, nir=2, tile_size=100, executor="serial")
    out = tilewise.ndvi(str(source), str(tmp_path / "o.tif"), red=1, nir=2, tile_size=100, executor=executor, workers=workers)
    assert Path(out).read_bytes() == Path(ref).read_bytes()


def test_tile_size_does_not_change_file_bytes(source: Path, tmp_path: Path) -> None:
    a = tilewise.ndvi(str(source), str(tmp_path / "a.tif"), red=1, nir=2, tile_size=50, executor="serial")
    b = tilewise.ndvi(str(source), str(tmp_path / "b.tif"), red=1, nir=2, tile_size=333, executor="threads", workers=2)
    assert Path(a).read_bytes() == Path(b).read_bytes()
