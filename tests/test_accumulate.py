"""The fast numpy paths of time stacks compute exactly what the plain expressions they replace compute.

``valid_of`` skips the NaN masking when a band has no NaN, and ``ReduceOp`` zeroes a date's
invalid pixels by multiplying with the validity when they are finite (x * 0 may be -0.0).
Both must leave outputs bit-identical to the straightforward numpy: checked here on
arrays holding NaN, infinities, -0.0 and nodata.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tilewise.grid import Window
from tilewise.io import read_tile, valid_of, validity
from tilewise.ops.reduce import Group, ReduceOp
from tilewise.sources.raster import resolve_band

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # inf + -inf in the generated dates

SPECIAL = st.sampled_from([np.nan, -9999.0, 0.0, -0.0, np.inf, -np.inf, 1e30, -1e-30])
FLOATS = st.one_of(SPECIAL, st.floats(width=32, allow_nan=True, allow_infinity=True))
ARRAYS = hnp.arrays(st.sampled_from([np.float32, np.float64]), hnp.array_shapes(min_dims=2, max_dims=2, max_side=17), elements=FLOATS)


@settings(max_examples=300, deadline=None)
@given(band=ARRAYS, nodata=st.one_of(st.none(), SPECIAL))
def test_validity_equals_the_plain_expression(band: np.ndarray, nodata: float | None) -> None:
    expected = ~np.isnan(band)
    if nodata is not None and not np.isnan(nodata):
        expected &= band != np.asarray(nodata).astype(band.dtype)
    assert np.array_equal(valid_of(band, nodata), expected)
    ok, finite_invalid = validity(band, nodata)
    assert np.array_equal(ok, expected)
    if finite_invalid:  # the claim that lets the sums skip their own check: x * 0 is +-0.0 at every invalid pixel
        assert np.isfinite(band[~ok]).all()
    if nodata is not None and np.isfinite(np.asarray(nodata).astype(band.dtype)) and not np.isnan(band).any():
        assert finite_invalid  # the usual stack member (-9999, no NaN) gets the fast path


@settings(max_examples=100, deadline=None)
@given(band=hnp.arrays(st.sampled_from([np.int16, np.uint8, np.int32]), hnp.array_shapes(min_dims=2, max_dims=2, max_side=9)),
       nodata=st.one_of(st.none(), st.integers(0, 3)))  # fmt: skip
def test_integer_validity(band: np.ndarray, nodata: int | None) -> None:
    ok, finite_invalid = validity(band, nodata)
    assert finite_invalid
    assert np.array_equal(ok, np.ones(band.shape, bool) if nodata is None else band != nodata)


def _plain_reduce(stat: str, dates: list[np.ndarray], nodata: float) -> np.ndarray:
    """The running float64 sum and count of the plain numpy path (masked copy of zeros), then the statistic."""
    total = np.zeros(dates[0].shape, dtype=np.float64)
    n = np.zeros(dates[0].shape, dtype=np.int32)
    for d in dates:
        v, g = d.copy(), valid_of(d, nodata)
        np.copyto(v, 0, where=~g)
        total += v
        n += g
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"sum": total, "count": n.astype(np.float64), "mean": total / n}[stat]


@settings(max_examples=150, deadline=None)
@given(data=st.data(), shape=hnp.array_shapes(min_dims=2, max_dims=2, max_side=11), stat=st.sampled_from(["mean", "sum", "count"]))
def test_reduce_sums_are_the_same_bits_as_the_plain_path(data: st.DataObject, shape: tuple[int, int], stat: str) -> None:
    nodata = -9999.0
    dates = [data.draw(hnp.arrays(np.float32, shape, elements=FLOATS)) for _ in range(data.draw(st.integers(1, 6)))]
    names = tuple((f"d{i}",) for i in range(len(dates)))
    op = ReduceOp(stat, (Group("all", names, tuple(20210101 + i for i in range(len(dates)))),))
    arrays = {f"d{i}": d for i, d in enumerate(dates)}
    got, ok = op.compute(arrays, {k: valid_of(a, nodata) for k, a in arrays.items()}, np.dtype(np.float64))
    want = _plain_reduce(stat, dates, nodata)
    g, w = got[0][ok[0]], want[ok[0]]
    assert np.array_equal(g, w, equal_nan=True)  # inf + -inf is NaN on both paths
    assert np.array_equal(np.signbit(g[~np.isnan(g)]), np.signbit(w[~np.isnan(w)]))


@settings(max_examples=150, deadline=None)
@given(data=st.data(), shape=hnp.array_shapes(min_dims=2, max_dims=2, max_side=11), stat=st.sampled_from(["mean", "sum", "count"]),
       nodata=SPECIAL)  # fmt: skip
def test_sums_trusting_the_readers_finite_claim_are_the_same_bits(data: st.DataObject, shape: tuple[int, int], stat: str, nodata: float) -> None:
    """The engine's reads pass validity()'s finite_invalid on, and the sums then skip their check: same bits as the plain path."""
    dates = [data.draw(hnp.arrays(np.float32, shape, elements=FLOATS)) for _ in range(data.draw(st.integers(1, 6)))]
    names = tuple((f"d{i}",) for i in range(len(dates)))
    op = ReduceOp(stat, (Group("all", names, tuple(20210101 + i for i in range(len(dates)))),))
    arrays = {f"d{i}": d for i, d in enumerate(dates)}

    def read(name: str) -> tuple[np.ndarray, np.ndarray, bool]:
        return (arrays[name].copy(), *validity(arrays[name], nodata))

    got, ok = op.reduce(read, shape, np.dtype(np.float64))
    want = _plain_reduce(stat, dates, nodata)
    g, w = got[0][ok[0]], want[ok[0]]
    assert np.array_equal(g, w, equal_nan=True)
    assert np.array_equal(np.signbit(g[~np.isnan(g)]), np.signbit(w[~np.isnan(w)]))


def _write(path: str, array: np.ndarray, nodata: float) -> None:
    import rasterio
    from rasterio.transform import from_origin

    with rasterio.open(path, "w", driver="GTiff", width=array.shape[1], height=array.shape[0], count=1, dtype=array.dtype,
                       nodata=nodata, transform=from_origin(0, 10, 1, 1), crs="EPSG:32633") as ds:  # fmt: skip
        ds.write(array, 1)


@pytest.mark.parametrize(("dtype", "nodata", "work", "expected"), [
    (np.float32, -9999.0, np.float32, True),  # the usual stack member
    (np.float64, 1e300, np.float64, True),
    (np.float64, 1e300, np.float32, False),  # read narrowed, the nodata becomes inf: x * 0 would be NaN
    (np.int16, -1, np.float32, True),
])  # fmt: skip
def test_read_tile_claims_finite_invalid_pixels_only_when_they_are(tmp_path, dtype: type, nodata: float, work: type, expected: bool) -> None:
    a = np.arange(20, dtype=dtype).reshape(4, 5)
    a[1, 2] = nodata
    path = str(tmp_path / "m.tif")
    _write(path, a, nodata)
    got = read_tile({"t": resolve_band(path, 1, "t")}, Window(0, 0, 4, 5), np.dtype(work))
    assert ("t" in got.finite_invalid) is expected
    assert not got.valid["t"][1, 2] and got.valid["t"].sum() == 19
    assert bool(np.isfinite(got.values["t"][1, 2])) is expected
    a[0, 0] = np.nan if a.dtype.kind == "f" else a[0, 0]  # a NaN anywhere: no longer claimed
    _write(path, a, nodata)
    got = read_tile({"t": resolve_band(path, 1, "t")}, Window(0, 0, 4, 5), np.dtype(work))
    assert ("t" in got.finite_invalid) is (expected and a.dtype.kind != "f")


@pytest.mark.parametrize("with_nan", [False, True])
def test_a_large_stack_mean_equals_the_plain_path(with_nan: bool) -> None:
    rng = np.random.default_rng(4)
    shape = (300, 400)
    dates = []
    for i in range(9):
        v = (rng.normal(20, 5, shape) * (i + 1)).astype(np.float32)
        v[rng.random(shape) < 0.1] = -9999.0
        if with_nan:
            v[rng.random(shape) < 0.02] = np.nan
        dates.append(v)
    names = tuple((f"d{i}",) for i in range(len(dates)))
    op = ReduceOp("mean", (Group("all", names, tuple(20210101 + i for i in range(len(dates)))),))
    arrays = {f"d{i}": d for i, d in enumerate(dates)}
    got, ok = op.compute(arrays, {k: valid_of(a, -9999.0) for k, a in arrays.items()}, np.dtype(np.float64))
    want = _plain_reduce("mean", dates, -9999.0)
    assert np.array_equal(got[0], np.where(ok[0], want, got[0])) and ok[0].sum() > 0.9 * ok[0].size


VALUES = st.one_of(st.sampled_from([0.0, -0.0, 1e30, -1e-30, 17.5]), st.floats(width=32, allow_nan=False, allow_infinity=False))


@settings(max_examples=200, deadline=None)
@given(data=st.data(), shape=hnp.array_shapes(min_dims=2, max_dims=2, max_side=13), nodata=st.sampled_from([None, -9999.0, 0.0, np.nan]),
       with_nan=st.booleans(), trust=st.booleans())  # fmt: skip
def test_stats_band_passes_equal_the_compacted_numpy(data: st.DataObject, shape: tuple[int, int], nodata: float | None, with_nan: bool,
                                                      trust: bool) -> None:  # fmt: skip
    """tilewise stats reduces a band of rows with whole-array passes; the plain way compacts the valid values first."""
    from tilewise.stack_stats import _band_stats

    band = data.draw(hnp.arrays(np.float32, shape, elements=VALUES))
    band[data.draw(hnp.arrays(bool, shape))] = np.nan if nodata is None else nodata  # nodata holes (NaN where None)
    if with_nan:
        band[data.draw(hnp.arrays(bool, shape))] = np.nan
    ok, finite_invalid = validity(band, nodata)
    k = int(ok.sum())
    if k == 0:
        return
    mean, m2, lo, hi, rows = _band_stats(band.copy(), ok, k, finite_invalid and trust)
    x = band[ok].astype(np.float64)
    scale = float(np.abs(x).mean()) or 1.0
    assert abs(mean - x.mean()) <= 1e-12 * scale
    assert abs(m2 - ((x - x.mean()) ** 2).sum()) <= 1e-9 * max(float((x**2).sum()), 1e-300)
    assert (lo, hi) == (float(x.min()), float(x.max()))  # exact: no valid value can be missed or invented
    want_rows = [band[i][ok[i]].astype(np.float64).sum() for i in range(band.shape[0])]
    np.testing.assert_allclose(rows, want_rows, rtol=1e-12, atol=1e-12 * scale * band.shape[1])
