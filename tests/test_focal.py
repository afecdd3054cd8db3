"""Focal statistics (issue 3): against scipy on the whole array, across tilings, executors and map sheets."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

import tilewise
import tilewise.kernels.focal as focal_kernels
from tests.conftest import read_raster, write_raster
from tilewise.kernels.focal import Footprint, exact_sums, focal_statistic

NAN_STATS: dict[str, Callable[[np.ndarray], float]] = {
    "mean": np.nanmean, "sum": np.nansum, "min": np.nanmin, "max": np.nanmax, "std": np.nanstd, "variance": np.nanvar,
    "median": np.nanmedian, "range": lambda z: float(np.nanmax(z) - np.nanmin(z)), "count": lambda z: float(np.sum(~np.isnan(z))),
}  # fmt: skip
SCIPY_MODE = {"nodata": "constant", "partial": "constant", "reflect": "reflect", "nearest": "nearest"}


def reference(data: np.ndarray, valid: np.ndarray, stat: str, size: int | None = None, radius: int | None = None,
              edge: str = "nodata", min_valid: float = 0.0) -> np.ndarray:  # fmt: skip
    """NaN-aware scipy.ndimage.generic_filter on the whole array (independent of tilewise's kernels)."""
    x = np.where(valid, data, np.nan).astype(np.float64)
    if radius is not None:
        yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
        kw: dict[str, object] = {"footprint": yy * yy + xx * xx <= radius * radius}
        r = radius
        cells = int(np.sum(kw["footprint"]))  # type: ignore[call-overload]
    else:
        assert size is not None
        kw = {"size": size}
        r = size // 2
        cells = size * size
    need = max(int(np.ceil(min_valid * cells - 1e-9)), 0 if stat == "count" else 1)
    fn = NAN_STATS[stat]

    def f(z: np.ndarray) -> float:
        n = int(np.sum(~np.isnan(z)))
        if n < need:
            return np.nan
        return fn(z) if n else (0.0 if stat == "count" else np.nan)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = ndimage.generic_filter(x, f, mode=SCIPY_MODE[edge], cval=np.nan, **kw)  # type: ignore[arg-type]
    if edge == "nodata" and r:
        out[:r] = out[-r:] = np.nan
        out[:, :r] = out[:, -r:] = np.nan
    return out


def dem(height: int, width: int, seed: int = 0, hole_share: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """A float32 terrain-like surface (hundreds of metres) with nodata holes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    z = 800 + 300 * np.sin(yy / 23.0) * np.cos(xx / 31.0) + 40 * np.sin((xx + yy) / 7.0) + rng.normal(0, 5, (height, width))
    holes = rng.random((height, width)) < hole_share
    holes |= (yy - height * 0.6) ** 2 + (xx - width * 0.3) ** 2 < (min(height, width) * 0.08) ** 2
    return z.astype(np.float32), ~holes


def _write_dem(path: Path, z: np.ndarray, ok: np.ndarray, nodata: float = -9999.0, blocksize: int | None = 64) -> Path:
    return write_raster(path, np.where(ok, z, np.float32(nodata)), nodata=nodata, blocksize=blocksize)


def _assert_close(out: np.ndarray, ref: np.ndarray, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    assert out.shape == ref.shape
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref), err_msg="nodata positions differ")
    np.testing.assert_allclose(out[~np.isnan(out)], ref[~np.isnan(ref)], rtol=rtol, atol=atol)


@pytest.fixture(scope="module")
def surface(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    z, ok = dem(61, 83, seed=3)
    return _write_dem(tmp_path_factory.mktemp("focal") / "dem.tif", z, ok), z, ok


# ---------------------------------------------------------------- against scipy


@pytest.mark.parametrize("stat", list(NAN_STATS))
@pytest.mark.parametrize("window", [{"size": 5}, {"radius": 3}])
def test_every_stat_matches_scipy(stat: str, window: dict[str, int], surface: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path) -> None:
    src, z, ok = surface
    out = tilewise.focal(str(src), str(tmp_path / "o.tif"), stat=stat, tile_size=16, executor="serial", **window)
    got = read_raster(out)[0][0].astype(np.float64)
    ref = reference(z, ok, stat, edge="nodata", **window)
    # float32 output; variance/std of values near 800 carry float64 cancellation of ~1e-9 absolute
    _assert_close(got, ref, atol=1e-4 if stat in ("variance", "std") else 1e-6)


@pytest.mark.parametrize("edge", ["nodata", "partial", "reflect", "nearest"])
@pytest.mark.parametrize("stat", ["mean", "max", "std"])
def test_edge_modes_match_scipy(edge: str, stat: str, surface: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path) -> None:
    src, z, ok = surface
    out = tilewise.focal(str(src), str(tmp_path / "o.tif"), stat=stat, size=7, edge=edge, tile_size=16, executor="serial")
    _assert_close(read_raster(out)[0][0].astype(np.float64), reference(z, ok, stat, size=7, edge=edge), atol=1e-4)


def test_nodata_edge_marks_border_and_partial_fills_it(surface: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path) -> None:
    src, _, _ = surface
    a = read_raster(tilewise.focal(str(src), str(tmp_path / "a.tif"), size=9, executor="serial"))[0][0]
    b = read_raster(tilewise.focal(str(src), str(tmp_path / "b.tif"), size=9, edge="partial", executor="serial"))[0][0]
    assert np.isnan(a[:4]).all() and np.isnan(a[:, -4:]).all()
    assert np.isfinite(b[:4]).mean() > 0.9  # the border is computed from the part inside
    inner = (slice(4, -4), slice(4, -4))
    np.testing.assert_array_equal(a[inner], b[inner])


@pytest.mark.parametrize("min_valid", [0.3, 0.75, 1.0])
def test_min_valid_fraction(min_valid: float, surface: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path) -> None:
    src, z, ok = surface
    out = tilewise.focal(str(src), str(tmp_path / "o.tif"), size=5, min_valid=min_valid, edge="partial", executor="serial")
    _assert_close(read_raster(out)[0][0].astype(np.float64), reference(z, ok, "mean", size=5, edge="partial", min_valid=min_valid))


def test_subtract_from_input_is_local_relief(surface: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path) -> None:
    src, z, ok = surface
    out = tilewise.focal(str(src), str(tmp_path / "o.tif"), size=9, subtract=True, executor="serial")
    ref = z.astype(np.float64) - reference(z, ok, "mean", size=9)
    ref[~ok] = np.nan
    _assert_close(read_raster(out)[0][0].astype(np.float64), ref, atol=1e-3)


def test_large_window_against_uniform_filter(tmp_path: Path) -> None:
    z, ok = dem(260, 300, seed=5)
    src = _write_dem(tmp_path / "dem.tif", z, ok)
    out = tilewise.focal(str(src), str(tmp_path / "o.tif"), size=201, tile_size=64, executor="serial")
    # NaN-aware mean by uniform_filter: mean of values / mean of validity (exact window sums)
    x = np.where(ok, z, 0).astype(np.float64)
    s = ndimage.uniform_filter(x, 201, mode="constant")
    c = ndimage.uniform_filter(ok.astype(np.float64), 201, mode="constant")
    ref = np.full(z.shape, np.nan)
    ref[100:-100, 100:-100] = (s / c)[100:-100, 100:-100]
    _assert_close(read_raster(out)[0][0].astype(np.float64), ref)


def test_integer_dem_gives_float32(tmp_path: Path) -> None:
    z, ok = dem(50, 70, seed=8)
    zi = np.where(ok, np.rint(z), 65535).astype(np.uint16)
    src = write_raster(tmp_path / "dem_u16.tif", zi, nodata=65535)
    out = tilewise.focal(str(src), str(tmp_path / "o.tif"), size=3, tile_size=16, executor="serial")
    data, nodata = read_raster(out)
    assert data.dtype == np.float32 and np.isnan(nodata)  # type: ignore[arg-type]
    _assert_close(data[0].astype(np.float64), reference(zi.astype(np.float32), ok, "mean", size=3))


def test_every_band_by_default_or_chosen(tmp_path: Path) -> None:
    bands = [dem(40, 45, seed=s) for s in (1, 2, 3)]
    stack = np.stack([np.where(ok, z, -9999) for z, ok in bands]).astype(np.float32)
    src = write_raster(tmp_path / "three.tif", stack, nodata=-9999, descriptions=["a", "b", "c"])
    out = tilewise.focal(str(src), str(tmp_path / "all.tif"), stat="max", size=3, executor="serial")
    got = read_raster(out)[0]
    assert got.shape == (3, 40, 45)
    for i, (z, ok) in enumerate(bands):
        _assert_close(got[i].astype(np.float64), reference(z, ok, "max", size=3))
    one = read_raster(tilewise.focal(str(src), str(tmp_path / "b2.tif"), stat="max", size=3, bands=[2], executor="serial"))[0]
    np.testing.assert_array_equal(one[0], got[1])
    from tilewise.info import describe

    assert [b["description"] for b in describe(out)["bands"]] == ["max 3x3 of a", "max 3x3 of b", "max 3x3 of c"]


# ---------------------------------------------------------------- tile invariance


@settings(max_examples=200, deadline=None)
@given(
    stat=st.sampled_from(["mean", "std", "min", "max", "sum"]),
    k=st.integers(0, 12),
    circle=st.booleans(),
    r0=st.integers(0, 30),
    c0=st.integers(0, 30),
    origin=st.tuples(st.integers(-60, 60), st.integers(-60, 60)),
)
def test_kernel_is_anchored_to_the_global_grid(stat: str, k: int, circle: bool, r0: int, c0: int, origin: tuple[int, int]) -> None:
    rng = np.random.default_rng(k * 131 + r0)
    x = (rng.normal(500, 80, (70, 75))).astype(np.float32)
    ok = rng.random(x.shape) > 0.1
    fp = Footprint.circle(max(k, 1)) if circle else Footprint.square(2 * k + 1)
    whole = focal_statistic(x, ok, stat, fp, origin)
    part = focal_statistic(x[r0:, c0:], ok[r0:, c0:], stat, fp, (origin[0] + r0, origin[1] + c0))
    np.testing.assert_array_equal(whole[r0:, c0:], part)


MOMENT_STATS = ["count", "sum", "mean", "variance", "std"]


def _anchored(x: np.ndarray, ok: np.ndarray, stat: str, fp: Footprint, origin: tuple[int, int], min_count: int = 1) -> np.ndarray:
    """The statistic by the block-anchored passes alone (the running-sum path switched off)."""
    mp = pytest.MonkeyPatch()
    mp.setattr(focal_kernels, "exact_sums", lambda *a: False)
    try:
        return focal_statistic(x, ok, stat, fp, origin, min_count)
    finally:
        mp.undo()


@settings(max_examples=150, deadline=None)
@given(
    stat=st.sampled_from(MOMENT_STATS),
    k=st.integers(0, 9),
    scale=st.sampled_from([1.0, 1e-3, 3000.0, 1e6]),
    integers=st.booleans(),
    holes=st.floats(0.0, 0.9),
    min_count=st.integers(1, 30),
    seed=st.integers(0, 2**16),
)
def test_running_sums_give_the_anchored_bits(stat: str, k: int, scale: float, integers: bool, holes: float, min_count: int, seed: int) -> None:
    # Where sums are exact, the one-sweep running sums must equal the anchored passes bit for bit:
    # a tiling may take either path for the same window.
    rng = np.random.default_rng(seed)
    x = rng.normal(0, scale, (40, 43))
    x = (np.round(x) if integers else x).astype(np.float32)
    ok = rng.random(x.shape) >= holes
    fp = Footprint.square(2 * k + 1)
    n = {"count": 1, "sum": 2, "mean": 2}.get(stat, 3)
    if not exact_sums(x, ok, fp.size, n):
        return
    got = focal_statistic(x, ok, stat, fp, (7, -3), min_count)
    assert got.tobytes() == _anchored(x, ok, stat, fp, (7, -3), min_count).tobytes()


@settings(max_examples=120, deadline=None)
@given(
    stat=st.sampled_from(MOMENT_STATS),
    k=st.integers(1, 8),
    spikes=st.lists(st.tuples(st.integers(0, 59), st.integers(0, 63), st.sampled_from([1e-7, 3e-30, 7e9, -2e12])), max_size=3),
    r0=st.integers(0, 40),
    c0=st.integers(0, 40),
)
def test_tiles_that_take_different_paths_agree(stat: str, k: int, spikes: list[tuple[int, int, float]], r0: int, c0: int) -> None:
    # A few extreme values make the sums inexact in the tiles that hold them, which then take the
    # anchored passes, while other tiles of the same raster take the running sums.
    rng = np.random.default_rng(k * 977 + r0 * 31 + c0)
    x = rng.normal(500, 80, (60, 64)).astype(np.float32)
    for i, j, v in spikes:
        x[i, j] = v
    ok = rng.random(x.shape) > 0.1
    # A patch of negative zeros (as -x gives for zeros), fully valid and wider than the window:
    # a sum of them alone must not keep its sign on one path and lose it on the other.
    x[40:58, 3:25] = -0.0
    ok[40:58, 3:25] = True
    fp = Footprint.square(2 * k + 1)
    whole = focal_statistic(x, ok, stat, fp, (0, 0))
    part = focal_statistic(x[r0:, c0:], ok[r0:, c0:], stat, fp, (r0, c0))
    assert whole[r0:, c0:].tobytes() == part.tobytes()  # bytes: signed zeros count
    assert whole.tobytes() == _anchored(x, ok, stat, fp, (0, 0)).tobytes()


@settings(max_examples=150, deadline=None)
@given(
    stat=st.sampled_from(focal_kernels.STATS),
    k=st.integers(0, 6),
    circle=st.booleans(),
    scale=st.sampled_from([1.0, 3000.0, 1e30]),
    holes=st.floats(0.0, 0.6),
    min_count=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_float32_values_are_the_float64_ones_rounded_once(stat: str, k: int, circle: bool, scale: float, holes: float, min_count: int, seed: int) -> None:
    # A float32 output's job computes its statistic straight into float32 (no float64 arrays):
    # that must be the float64 result rounded once, on the running-sum path (exact sums,
    # scale 1 or 3000) and the anchored one (1e30: inexact), for squares and circles.
    rng = np.random.default_rng(seed)
    x = (500 + rng.normal(0, scale, (33, 37))).astype(np.float32)
    ok = rng.random(x.shape) >= holes
    fp = Footprint.circle(max(k, 1)) if circle else Footprint.square(2 * k + 1)
    wide = focal_statistic(x, ok, stat, fp, (5, -2), min_count)
    narrow = focal_statistic(x, ok, stat, fp, (5, -2), min_count, dtype=np.float32)
    assert wide.dtype == np.float64 and narrow.dtype == np.float32
    with np.errstate(over="ignore"):  # variances of 1e30s are beyond float32: inf either way
        assert narrow.tobytes() == wide.astype(np.float32).tobytes()


@pytest.mark.parametrize("stat", ["mean", "std", "count", "max"])
def test_float32_output_equals_the_float64_output_rounded(stat: str, surface: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path) -> None:
    # End to end: the default float32 output (statistic computed in float32, see FocalOp.values_dtype)
    # against a float64 output of the same job (float64 throughout) rounded to float32.
    path, _, _ = surface
    opts = {"stat": stat, "size": 7, "tile_size": 40, "executor": "serial", "min_valid": 0.3}
    f32 = read_raster(tilewise.focal(str(path), str(tmp_path / "f32.tif"), **opts))[0][0]
    f64 = read_raster(tilewise.focal(str(path), str(tmp_path / "f64.tif"), dtype="float64", **opts))[0][0]
    assert f32.dtype == np.float32 and f64.dtype == np.float64
    assert f32.tobytes() == f64.astype(np.float32).tobytes()


def test_integer_output_rounds_the_float64_statistic(tmp_path: Path) -> None:
    # Eight 3.5s and one float32 3.4999998 average to 3.49999997 in float64, which rounds to 3;
    # rounded to float32 first it would be 3.5 and then 4 (so integer outputs keep float64 values).
    z = np.full((9, 9), 3.5, np.float32)
    z[4, 4] = np.nextafter(np.float32(3.5), np.float32(0))
    src = write_raster(tmp_path / "z.tif", z, nodata=-9999.0)
    got = read_raster(tilewise.focal(str(src), str(tmp_path / "o.tif"), stat="mean", size=3, dtype="int16", nodata=-1, executor="serial"))[0][0]
    assert got[4, 4] == 3 and got[3:6, 3:6].tolist() == [[3] * 3] * 3
    assert got[1, 1] == 4  # a window of 3.5s alone: half to even


@settings(max_examples=300, deadline=None)
@given(
    vals=st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1, max_size=16),
    k=st.integers(1, 3),
    n=st.sampled_from([2, 3]),
)
def test_exact_sums_is_sound(vals: list[float], k: int, n: int) -> None:
    # Whenever it says yes, sums (and sums of squares) of up to (k + 1)² of the values, in any
    # order, equal the exactly rounded sum.
    x = np.array(vals, dtype=np.float32).reshape(1, -1)
    ok = np.ones(x.shape, dtype=bool)
    if not exact_sums(x, ok, k, n):
        return
    terms = [float(v) ** (n - 1) for v in x[0]] * ((k + 1) ** 2 // len(vals) or 1)
    terms = terms[: (k + 1) ** 2]
    fwd = 0.0
    for t in terms:
        fwd += t
    back = 0.0
    for t in reversed(terms):
        back -= t
    assert fwd == -back == math.fsum(terms)


def test_exact_sums_cases() -> None:
    ok = np.ones((3, 4), dtype=bool)
    dem = np.linspace(58.9, 3121.4, 12, dtype=np.float32).reshape(3, 4)
    assert exact_sums(dem, ok, 201, 2)  # a DEM's mean, even at K = 201
    assert not exact_sums(dem, ok, 51, 3)  # but not its sum of squares
    assert exact_sums(dem, ok, 51, 1)  # counts always are
    assert exact_sums(np.zeros((3, 4), np.float32), ok, 101, 3)
    assert not exact_sums(np.array([[1e-8, 3000.0]], np.float32), ok[:1, :2], 51, 2)
    # Whole numbers: the spacing at the smallest value (1) says no at K = 201, the integer check yes.
    ints = np.array([[1.0, 32767.0, -5.0]], np.float32)
    assert exact_sums(ints, ok[:1, :3], 201, 2)
    assert exact_sums(ints.astype(np.float64), ok[:1, :3], 51, 3)
    assert not exact_sums(np.array([[0.5, 32767.0]]), ok[:1, :2], 201, 2)  # float64 0.5: spacing 2**-53
    # Sums of the largest float64 overflow (numpy.spacing there is inf, which must not say yes).
    assert not exact_sums(np.full((1, 2), np.finfo(np.float64).max), ok[:1, :2], 3, 2)
    # Non-finite valid values never qualify; invalid ones do not count.
    for bad in (np.nan, np.inf, -np.inf):
        x = np.array([[1.0, bad]], np.float32)
        assert not exact_sums(x, np.array([[True, True]]), 3, 2)
        assert exact_sums(x, np.array([[True, False]]), 3, 2)


@pytest.fixture(scope="module")
def big_surface(tmp_path_factory: pytest.TempPathFactory) -> Path:
    z, ok = dem(157, 211, seed=11)
    return _write_dem(tmp_path_factory.mktemp("inv") / "dem.tif", z, ok, blocksize=32)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(16, 240), stat=st.sampled_from(["mean", "std", "range", "median"]), window=st.sampled_from([7, 21]))
def test_any_tile_size_same_pixels(size: int, stat: str, window: int, big_surface: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    d = tmp_path_factory.mktemp("t")
    whole = read_raster(tilewise.focal(str(big_surface), str(d / "w.tif"), stat=stat, size=window, tile_size=4096, executor="serial"))[0]
    tiled = read_raster(tilewise.focal(str(big_surface), str(d / "t.tif"), stat=stat, size=window, tile_size=size, executor="serial"))[0]
    np.testing.assert_array_equal(tiled, whole)


@pytest.mark.parametrize(("executor", "workers"), [("processes", 1), ("processes", 2), ("threads", 2)])
def test_executors_same_bytes(executor: str, workers: int, big_surface: Path, tmp_path: Path) -> None:
    opts = {"stat": "std", "radius": 6, "edge": "reflect", "tile_size": 48}
    ref = tilewise.focal(str(big_surface), str(tmp_path / "ref.tif"), executor="serial", **opts)
    out = tilewise.focal(str(big_surface), str(tmp_path / "o.tif"), executor=executor, workers=workers, **opts)
    assert Path(out).read_bytes() == Path(ref).read_bytes()


# ---------------------------------------------------------------- map sheets


def _sheets(tmp_path: Path, z: np.ndarray, ok: np.ndarray, rows: list[int], cols: list[int]) -> list[Path]:
    """Cut a surface into georeferenced sheets at the given row/column cuts (uneven sizes)."""
    t = Affine(30.0, 0, 500000.0, 0, -30.0, 4100000.0)
    paths = []
    rb, cb = [0, *rows, z.shape[0]], [0, *cols, z.shape[1]]
    for i in range(len(rb) - 1):
        for j in range(len(cb) - 1):
            sl = (slice(rb[i], rb[i + 1]), slice(cb[j], cb[j + 1]))
            paths.append(_write_dem_at(tmp_path / f"sheet_{i}{j}.tif", z[sl], ok[sl], t @ Affine.translation(cb[j], rb[i])))
    return paths


def _write_dem_at(path: Path, z: np.ndarray, ok: np.ndarray, transform: Affine) -> Path:
    return write_raster(path, np.where(ok, z, np.float32(-9999)), nodata=-9999.0, transform=transform, blocksize=None)


@pytest.mark.parametrize(("stat", "edge"), [("mean", "nodata"), ("std", "reflect"), ("min", "partial")])
def test_mosaic_equals_the_merged_raster_seams_included(stat: str, edge: str, tmp_path: Path) -> None:
    z, ok = dem(90, 110, seed=4)
    t = Affine(30.0, 0, 500000.0, 0, -30.0, 4100000.0)
    whole_src = _write_dem_at(tmp_path / "whole.tif", z, ok, t)
    whole = read_raster(tilewise.focal(str(whole_src), str(tmp_path / "whole_out.tif"), stat=stat, size=11, edge=edge, executor="serial"))[0]
    sheets = _sheets(tmp_path, z, ok, rows=[37], cols=[45, 80])
    outs = tilewise.focal([str(p) for p in sheets], str(tmp_path / "out") + "/", stat=stat, size=11, edge=edge, mosaic=True, tile_size=32)
    assert len(outs) == len(sheets)
    rb, cb = [0, 37, 90], [0, 45, 80, 110]
    for n, out in enumerate(outs):
        i, j = divmod(n, 3)
        np.testing.assert_array_equal(read_raster(out)[0], whole[:, rb[i] : rb[i + 1], cb[j] : cb[j + 1]])
        assert Path(out).name == f"sheet_{i}{j}_{stat}_11x11.tif"


def test_without_mosaic_sheets_have_seams(tmp_path: Path) -> None:
    z, ok = dem(60, 60, seed=2)
    sheets = _sheets(tmp_path, z, ok, rows=[30], cols=[])
    outs = tilewise.focal([str(p) for p in sheets], str(tmp_path / "out") + "/", size=5, executor="serial")
    top = read_raster(outs[0])[0][0]
    assert np.isnan(top[-2:]).all()  # the sheet's own edge: nodata without its neighbour


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tilewise.cli.main", *args], capture_output=True, text=True, timeout=120)


def test_mosaic_refuses_bad_sheets(tmp_path: Path) -> None:
    z, ok = dem(40, 40, seed=6)
    t = Affine(30.0, 0, 500000.0, 0, -30.0, 4100000.0)
    a = _write_dem_at(tmp_path / "a.tif", z, ok, t)
    far = _write_dem_at(tmp_path / "far.tif", z, ok, t @ Affine.translation(100, 0))
    coarse = _write_dem_at(tmp_path / "coarse.tif", z, ok, Affine(60.0, 0, 501200.0, 0, -60.0, 4100000.0))
    shifted = _write_dem_at(tmp_path / "shift.tif", z, ok, t @ Affine.translation(40.5, 0))
    other = write_raster(tmp_path / "utm33.tif", np.where(ok, z, np.float32(-9999)), nodata=-9999.0, transform=t @ Affine.translation(40, 0), crs="EPSG:32633")
    cases = {far: "does not touch", coarse: "another resolution", shifted: "not aligned", other: "another CRS"}
    for sheet, words in cases.items():
        res = _cli("focal", str(a), str(sheet), "-o", str(tmp_path / "o") + "/", "--size", "3", "--mosaic")
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and sheet.name in lines[0], res.stderr
        assert not (tmp_path / "o").exists() or not any((tmp_path / "o").glob("*.tif"))
    res = _cli("focal", str(a), str(far), "-o", str(tmp_path / "single.tif"), "--size", "3", "--mosaic")
    assert res.returncode == 2 and "directory" in res.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--size", "4"], "--size 4 is even"),
        (["--size", "0"], "--size 0 is not positive"),
        (["--size", "-3"], "--size -3 is not positive"),
        (["--size", "101"], "larger than"),
        (["--radius", "0"], "--radius 0"),
        (["--size", "3", "--radius", "2"], "exactly one"),
        ([], "exactly one"),
        (["--size", "3", "--stat", "mode"], "unknown statistic 'mode'"),
        (["--size", "3", "--edge", "wrap"], "unknown edge mode 'wrap'"),
        (["--size", "3", "--min-valid", "1.5"], "--min-valid 1.5"),
        (["--size", "3", "--band", "0"], "--band 0"),
        (["--size", "3", "--band", "4"], "band 4"),
    ],
)
def test_bad_focal_arguments_exit_2_with_one_line(args: list[str], words: str, surface: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path) -> None:
    src, _, _ = surface
    out = tmp_path / "o.tif"
    res = _cli("focal", str(src), "-o", str(out), *args)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and words in lines[0], res.stderr
    assert not out.exists() and not list(tmp_path.glob(".o.tif*"))


def test_focal_job_file_runs(surface: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path) -> None:
    src, z, ok = surface
    job = tmp_path / "job.toml"
    job.write_text(f'command = "focal"\ninputs = ["{src}"]\noutput = "{tmp_path / "o.tif"}"\nstat = "max"\nsize = 3\nexecutor = "serial"\n')
    res = _cli("run", str(job))
    assert res.returncode == 0, res.stderr
    _assert_close(read_raster(tmp_path / "o.tif")[0][0].astype(np.float64), reference(z, ok, "max", size=3))


# ---------------------------------------------------------------- real DEMs


DEMS = ["terra/elev.tif", "terra/elev_vinschgau.tif", "spdatalarge/srtm.tif", "spdatalarge/dem.tif", "stars/olinda_dem_utm25s.tif"]


@pytest.mark.realdata
@pytest.mark.parametrize("name", DEMS)
@pytest.mark.parametrize(("stat", "size"), [("mean", 5), ("std", 3), ("median", 3)])
def test_real_dems_match_scipy(name: str, stat: str, size: int, shared_data: Path, tmp_path: Path) -> None:
    path = shared_data / "dem" / name
    data, nodata = read_raster(path)
    band = data[0]
    ok = np.ones(band.shape, dtype=bool) if nodata is None else band != np.asarray(nodata).astype(band.dtype)
    if band.dtype.kind == "f":
        ok &= ~np.isnan(band)
    out = tilewise.focal(str(path), str(tmp_path / "o.tif"), stat=stat, size=size, tile_size=32, executor="serial")
    ref = reference(band.astype(np.float32), ok, stat, size=size)
    _assert_close(read_raster(out)[0][0].astype(np.float64), ref, atol=1e-3 if stat == "std" else 1e-6)
