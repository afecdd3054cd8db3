"""write_tile: one tile's file, checksum and statistics (the manifest's record of a finished tile)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from tilewise.grid import Grid
from tilewise.io import write_tile
from tilewise.rasterfile import open_read


@settings(max_examples=30, deadline=None)
@given(bands=st.integers(1, 2), h=st.integers(1, 40), w=st.integers(1, 40), seed=st.integers(0, 2**16),
       hole=st.sampled_from([0.0, 0.0, 0.3, 1.0]), dtype=st.sampled_from(["float32", "int16"]))  # fmt: skip
def test_statistics_are_those_of_the_valid_pixels_whether_or_not_the_tile_has_nodata(
    tmp_path_factory: pytest.TempPathFactory, bands: int, h: int, w: int, seed: int, hole: float, dtype: str
) -> None:
    # A tile without nodata takes its statistics from the tile itself, not from a masked copy:
    # the results must be exactly those of the masked formulation.
    rng = np.random.default_rng(seed)
    out = (rng.normal(0, 1000, (bands, h, w))).astype(dtype)
    valid = rng.random((bands, h, w)) >= hole
    nodata = -9999
    out[~valid] = nodata
    path = tmp_path_factory.mktemp("tile") / "t.tif"
    grid = Grid(None, Affine(10.0, 0.0, 0.0, 0.0, -10.0, 0.0), h, w)
    rec = write_tile(path, out, valid, grid, nodata, tuple(f"b{i}" for i in range(bands)))
    vals = out[valid]
    assert rec.valid_count == vals.size
    if vals.size:
        assert (rec.minimum, rec.maximum) == (float(vals.min()), float(vals.max()))
        assert rec.total == float(vals.sum(dtype=np.float64))
    else:
        assert (rec.minimum, rec.maximum, rec.total) == (None, None, 0.0)
    assert rec.checksum == f"{zlib.crc32(np.ascontiguousarray(out).data):08x}"
    with open_read(str(path)) as ds:
        np.testing.assert_array_equal(ds.read(), out)
    assert rec.size == path.stat().st_size
