"""Time stacks end to end: ``tilewise reduce`` and ``tilewise stats`` against numpy on the whole masked stack.

The generated stack imitates the heat-index lesson: daily float32 GeoTIFFs named
``himax.%Y.%m.%d.tif`` with nodata -9999 (a fixed "ocean" region plus random gaps),
spanning a winter and two summers so months, seasons and years all group.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
import rasterio

from tests.conftest import write_raster
from tilewise.runner import run_job
from tilewise.timeseries import reduce_job

NODATA = -9999.0
H, W = 150, 170
CLI = [sys.executable, "-m", "tilewise"]


def _days(start: date, n: int, step: int = 1) -> list[date]:
    return [start + timedelta(days=step * i) for i in range(n)]


def make_stack(folder: Path, days: list[date], seed: int = 0, crs: str = "EPSG:4326", size: tuple[int, int] = (H, W),
               keep: bool = True) -> np.ndarray:  # fmt: skip
    """Write one file per day; return the masked stack (NaN at nodata) as float64 for the references (empty unless ``keep``)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    ocean = (yy - h / 2) ** 2 / (h / 3) ** 2 + (xx - w / 3) ** 2 / (w / 5) ** 2 < 1
    cube = []
    for i, d in enumerate(days):
        season = 15 * np.sin(2 * np.pi * (d.timetuple().tm_yday - 100) / 365.25)
        field = (20 + season + 5 * np.sin(xx / 17.0 + i / 5) * np.cos(yy / 23.0) + rng.normal(0, 2, (h, w))).astype(np.float32)
        gaps = rng.random((h, w)) < 0.1
        field[ocean | gaps] = NODATA
        if i % 7 == 3:
            field[: h // 4, : w // 4] = NODATA  # some dates miss a whole corner
        field[5, 7] = NODATA  # one pixel never valid
        write_raster(folder / f"himax.{d:%Y.%m.%d}.tif", field[np.newaxis], nodata=NODATA, crs=crs,
                     transform=rasterio.transform.from_origin(-30.0, 40.0, 0.25, 0.25))  # fmt: skip
        if keep:
            cube.append(np.where(field == NODATA, np.nan, field.astype(np.float64)))
    return np.stack(cube) if keep else np.empty((0, h, w))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[date], np.ndarray]:
    folder = tmp_path_factory.mktemp("himax") / "days"
    days = _days(date(2020, 11, 20), 45, step=9)  # 2020-11-20 .. 2021-12: every month, seasons, two years
    return folder, days, make_stack(folder, days)


PATTERN = "himax.%Y.%m.%d.tif"


def _reduce(folder: Path, out: Path, **kw: object) -> np.ndarray:
    """Run a reduction (float output, NaN nodata) and read it back."""
    with rasterio.open(_write(folder, out, **kw)) as ds:
        assert ds.nodata is not None and np.isnan(ds.nodata)
        return ds.read().astype(np.float64)


REFERENCES = {
    "mean": lambda c: np.nanmean(c, axis=0),
    "min": lambda c: np.nanmin(c, axis=0),
    "max": lambda c: np.nanmax(c, axis=0),
    "std": lambda c: np.nanstd(c, axis=0),
    "sum": lambda c: np.where(np.all(np.isnan(c), axis=0), np.nan, np.nansum(c, axis=0)),
    "median": lambda c: np.nanmedian(c, axis=0),
    "p90": lambda c: np.nanpercentile(c, 90, axis=0),
    "p2.5": lambda c: np.nanpercentile(c, 2.5, axis=0),
}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("stat", sorted(REFERENCES))
def test_reduce_equals_numpy_on_the_masked_stack(stat: str, stack: tuple[Path, list[date], np.ndarray], tmp_path: Path) -> None:
    folder, _, cube = stack
    got = _reduce(folder, tmp_path / "o.tif", stat=stat, dtype="float64")[0]
    ref = REFERENCES[stat](cube)
    assert np.array_equal(np.isnan(got), np.isnan(ref)), "nodata where no date is valid, and only there"
    np.testing.assert_allclose(got[~np.isnan(ref)], ref[~np.isnan(ref)], rtol=1e-5, atol=1e-9)
    assert np.isnan(got[5, 7])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_count_and_argmax_date(stack: tuple[Path, list[date], np.ndarray], tmp_path: Path) -> None:
    folder, days, cube = stack
    with rasterio.open(_write(folder, tmp_path / "n.tif", stat="count")) as ds:
        count = ds.read(1)
    np.testing.assert_array_equal(count, np.sum(~np.isnan(cube), axis=0))
    out = _write(folder, tmp_path / "a.tif", stat="argmax-date")
    with rasterio.open(out) as ds:
        assert ds.dtypes[0] == "int32"
        got, nod = ds.read(1), ds.nodata
    filled = np.where(np.isnan(cube), -np.inf, cube)
    idx = np.argmax(filled, axis=0)
    ymd = np.array([d.year * 10000 + d.month * 100 + d.day for d in days])[idx]
    never = np.all(np.isnan(cube), axis=0)
    np.testing.assert_array_equal(got[~never], ymd[~never])
    assert np.all(got[never] == nod)


def _write(folder: Path, out: Path, **kw: object) -> Path:
    kw.setdefault("executor", "serial")
    run_job(reduce_job([str(folder)], str(out), date_pattern=PATTERN, **kw))  # type: ignore[arg-type]
    return out


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("groupby", ["month", "season", "year"])
def test_groupby_equals_each_group_computed_alone(groupby: str, stack: tuple[Path, list[date], np.ndarray], tmp_path: Path) -> None:
    folder, days, cube = stack
    out = _write(folder, tmp_path / "g.tif", stat="mean", groupby=groupby, dtype="float64")
    with rasterio.open(out) as ds:
        bands, descs = ds.read(), ds.descriptions
    if groupby == "month":
        keys = sorted({d.month for d in days})
        members = [[i for i, d in enumerate(days) if d.month == k] for k in keys]
        assert descs[0].startswith("mean month 01 (Jan)")
        # The same month computed alone through --months gives the same bytes.
        alone = _write(folder, tmp_path / "m7.tif", stat="mean", months=[7], dtype="float64")
        with rasterio.open(alone) as ds:
            np.testing.assert_array_equal(ds.read(1), bands[keys.index(7)])
    elif groupby == "season":
        order = ["DJF", "MAM", "JJA", "SON"]
        season = {12: "DJF", 1: "DJF", 2: "DJF", 3: "MAM", 4: "MAM", 5: "MAM", 6: "JJA", 7: "JJA", 8: "JJA", 9: "SON", 10: "SON", 11: "SON"}
        members = [[i for i, d in enumerate(days) if season[d.month] == s] for s in order]
        assert [d.split()[1] for d in descs] == order
    else:
        keys = sorted({d.year for d in days})
        members = [[i for i, d in enumerate(days) if d.year == k] for k in keys]
        assert [d.split()[1] for d in descs] == [str(k) for k in keys]
    assert len(bands) == len(members)
    for band, idx in zip(bands, members, strict=True):
        ref = np.nanmean(cube[idx], axis=0)
        ok = ~np.isnan(ref)
        np.testing.assert_allclose(band[ok], ref[ok], rtol=1e-5)
        assert np.all(np.isnan(band[~ok]))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_expression_converts_units_and_keeps_nodata_out(stack: tuple[Path, list[date], np.ndarray], tmp_path: Path) -> None:
    folder, _, cube = stack
    got = _reduce(folder, tmp_path / "f.tif", stat="mean", expr="t * 9 / 5 + 32", dtype="float64")[0]
    ref = np.nanmean(cube * 9 / 5 + 32, axis=0)  # -9999 masked before converting: never averaged in
    ok = ~np.isnan(ref)
    np.testing.assert_allclose(got[ok], ref[ok], rtol=1e-6)
    assert np.nanmin(got) > 0  # a -9999 converted to °F (-17966) would pull some means far below zero


def test_selection_start_end_every_bbox(stack: tuple[Path, list[date], np.ndarray], tmp_path: Path) -> None:
    folder, days, cube = stack
    out = _write(folder, tmp_path / "s.tif", stat="max", start="2021-02", end="2021-08-15", every=2, bbox="-25,20,-5,35", dtype="float64")
    idx = [i for i, d in enumerate(days) if date(2021, 2, 1) <= d <= date(2021, 8, 15)][::2]
    with rasterio.open(out) as ds:
        got = ds.read(1)
        # bbox -25..-5 x 20..35 on a 0.25° grid starting at (-30, 40): rows 20..80, cols 20..100
        assert (ds.width, ds.height) == (80, 60)
        assert ds.transform.c == pytest.approx(-25.0) and ds.transform.f == pytest.approx(35.0)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        ref = np.nanmax(cube[idx][:, 20:80, 20:100], axis=0)
    ok = ~np.isnan(ref)
    np.testing.assert_array_equal(got[ok], ref[ok])


def test_bit_identical_across_tilings_and_executors(stack: tuple[Path, list[date], np.ndarray], tmp_path: Path) -> None:
    folder, _, _ = stack
    outs = {}
    for name, kw in {"serial-64": {"tile_size": 64, "executor": "serial"}, "serial-big": {"tile_size": 1024, "executor": "serial"},
                     "threads-96": {"tile_size": 96, "executor": "threads", "workers": 3},
                     "processes-48": {"tile_size": 48, "executor": "processes", "workers": 2}}.items():  # fmt: skip
        outs[name] = _write(folder, tmp_path / f"{name}.tif", stat="std", groupby="season", **kw).read_bytes()
    assert len(set(outs.values())) == 1, "the output bytes depend on the tiling or executor"


# ---------------------------------------------------------------- stats


def test_stats_equals_per_file_numpy(stack: tuple[Path, list[date], np.ndarray], tmp_path: Path) -> None:
    folder, days, cube = stack
    table = tmp_path / "daily.csv"
    png = tmp_path / "daily.png"
    r = subprocess.run([*CLI, "stats", str(folder), "--date-pattern", PATTERN, "--expr", "t * 9 / 5 + 32", "-o", str(table), "--plot", str(png)],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(table.open()))
    assert [row["date"] for row in rows] == [d.isoformat() for d in days]
    lat = 40.0 - 0.25 * (np.arange(H) + 0.5)
    for row, day in zip(rows, cube * 9 / 5 + 32, strict=True):
        v = day[~np.isnan(day)]
        assert int(row["count"]) == v.size
        assert float(row["mean"]) == pytest.approx(v.mean(), rel=1e-9)
        assert float(row["min"]) == pytest.approx(v.min(), rel=1e-6) and float(row["max"]) == pytest.approx(v.max(), rel=1e-6)
        assert float(row["std"]) == pytest.approx(v.std(), rel=1e-9)
        wts = np.broadcast_to(np.cos(np.radians(lat))[:, None], day.shape)[~np.isnan(day)]
        assert float(row["area_mean"]) == pytest.approx(np.average(v, weights=wts), rel=1e-4)
    from PIL import Image

    with Image.open(png) as im:
        assert im.size[0] > 300


def test_stats_same_on_every_executor(stack: tuple[Path, list[date], np.ndarray], tmp_path: Path) -> None:
    from tilewise.timeseries import stats

    folder, _, _ = stack
    a = stats([str(folder)], str(tmp_path / "a.csv"), date_pattern=PATTERN, executor="serial")
    b = stats([str(folder)], str(tmp_path / "b.csv"), date_pattern=PATTERN, executor="processes", workers=2)
    assert a == b
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


# ---------------------------------------------------------------- bad input


def _err(*args: str) -> tuple[int, list[str]]:
    r = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)
    return r.returncode, [line for line in r.stderr.splitlines() if line.startswith("Error:")]


def test_bad_stack_input_is_one_line_exit_2(stack: tuple[Path, list[date], np.ndarray], tmp_path: Path) -> None:
    folder, _, _ = stack
    out = str(tmp_path / "o.tif")
    code, lines = _err("reduce", str(folder), "--date-pattern", "chirps_%Y%m%d.tif", "-o", out)
    assert code == 2 and len(lines) == 1 and "chirps_%Y%m%d.tif" in lines[0]
    code, lines = _err("reduce", str(folder), "--date-pattern", PATTERN, "--start", "2030-01-01", "-o", out)
    assert code == 2 and len(lines) == 1 and "2030-01-01" in lines[0]
    code, lines = _err("reduce", str(folder), "--date-pattern", PATTERN, "--stat", "mode", "-o", out)
    assert code == 2 and len(lines) == 1 and "'mode'" in lines[0]
    code, lines = _err("reduce", str(folder), "--date-pattern", PATTERN, "--expr", "x + 1", "-o", out)
    assert code == 2 and len(lines) == 1 and "x" in lines[0]
    assert not Path(out).exists()


def test_duplicates_and_grids(tmp_path: Path) -> None:
    d = tmp_path / "dup"
    cube = make_stack(d, _days(date(2021, 1, 1), 3), seed=1)
    # The same date twice under another name the pattern also reads.
    (d / "himax.2021.01.02.tif").rename(d / "himax.2021.01.02.a.tif")
    make_stack(tmp_path / "b", [date(2021, 1, 2)], seed=2)
    (tmp_path / "b" / "himax.2021.01.02.tif").rename(d / "himax.2021.01.02.b.tif")
    pattern = "himax.%Y.%m.%d*.tif"
    code, lines = _err("reduce", str(d), "--date-pattern", pattern, "-o", str(tmp_path / "o.tif"))
    assert code == 2 and len(lines) == 1 and "2021-01-02" in lines[0] and "--duplicates" in lines[0]
    out = tmp_path / "mean.tif"
    run_job(reduce_job([str(d)], str(out), date_pattern=pattern, duplicates="mean", stat="mean", dtype="float64", executor="serial"))
    assert out.exists()
    other = make_stack(tmp_path / "c", [date(2021, 1, 9)], seed=3, size=(H + 1, W))
    del other
    (tmp_path / "c" / "himax.2021.01.09.tif").rename(d / "himax.2021.01.09.tif")
    code, lines = _err("reduce", str(d), "--date-pattern", pattern, "--duplicates", "first", "-o", str(tmp_path / "o2.tif"))
    assert code == 2 and len(lines) == 1 and "himax.2021.01.09.tif" in lines[0]
    del cube


# ---------------------------------------------------------------- memory


def _peak_rss(folder: Path, out: Path) -> int:
    code = ("import sys; from tilewise.timeseries import reduce_job; from tilewise.runner import run_job;"
            f"run_job(reduce_job([{str(folder)!r}], {str(out)!r}, date_pattern={PATTERN!r}, stat='mean', executor='serial', tile_size=256));"
            "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])")  # fmt: skip
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent across exec.
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True)
    return int(r.stdout.strip().splitlines()[-1]) * 1024


@pytest.mark.slow
def test_reduce_memory_does_not_grow_with_dates(tmp_path: Path) -> None:
    few, many = tmp_path / "few", tmp_path / "many"
    size = (512, 640)  # two tiles of 256 rows ... the work per tile stays the same, only the dates grow
    make_stack(few, _days(date(2000, 1, 1), 10), size=size, keep=False)
    make_stack(many, _days(date(2000, 1, 1), 1000), size=size, keep=False)
    small, large = _peak_rss(few, tmp_path / "few.tif"), _peak_rss(many, tmp_path / "many.tif")
    assert large <= 1.10 * small, f"peak memory {large / 2**20:.0f} MiB on 1000 dates vs {small / 2**20:.0f} MiB on 10"
    print(json.dumps({"peak_mib_10_dates": small / 2**20, "peak_mib_1000_dates": large / 2**20}))


# ---------------------------------------------------------------- the real daily grids (../shared/data/timeseries)

REAL = {
    "chirps": ("timeseries/chirps_daily_nicaragua_1981-1982/daily", "chirps_pr_%Y%m%d.tif", 730),
    "era5": ("timeseries/era5_t2m_uk_2019-03/daily_mean", "era5_t2m_daily_mean_%Y%m%d.tif", 31),
}


def _real_cube(folder: Path, pattern: str) -> tuple[list[date], np.ndarray]:
    from tilewise.sources.stack import open_stack

    st = open_stack([str(folder)], date_pattern=pattern)
    cube = []
    for m in st.members:
        with rasterio.open(m.path) as ds:
            a = ds.read(m.band, masked=True).astype(np.float64)
        cube.append(a.filled(np.nan))
    return [m.date.date() for m in st.members], np.stack(cube)


@pytest.mark.realdata
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("series", sorted(REAL))
def test_real_series_reduce_equals_numpy(series: str, shared_data: Path, tmp_path: Path) -> None:
    rel, pattern, n = REAL[series]
    folder = shared_data / rel
    if not folder.is_dir():
        pytest.skip(f"{folder} is not there (the real {series} daily grids)")
    days, cube = _real_cube(folder, pattern)
    assert len(days) == n
    for stat in ("mean", "min", "max", "std", "median", "p90"):
        out = tmp_path / f"{stat}.tif"
        run_job(reduce_job([str(folder)], str(out), date_pattern=pattern, stat=stat, dtype="float64", executor="processes", workers=2))
        with rasterio.open(out) as ds:
            got = ds.read(1)
        ref = {"p90": lambda c: np.nanpercentile(c, 90, axis=0), **REFERENCES}[stat](cube)
        assert np.array_equal(np.isnan(got), np.isnan(ref)), stat
        np.testing.assert_allclose(got[~np.isnan(ref)], ref[~np.isnan(ref)], rtol=1e-5, err_msg=stat)
    out = tmp_path / "monthly.tif"
    run_job(reduce_job([str(folder)], str(out), date_pattern=pattern, stat="mean", groupby="month", dtype="float64", executor="serial"))
    with rasterio.open(out) as ds:
        bands = ds.read()
    months = sorted({d.month for d in days})
    for band, mo in zip(bands, months, strict=True):
        ref = np.nanmean(cube[[i for i, d in enumerate(days) if d.month == mo]], axis=0)
        np.testing.assert_allclose(band[~np.isnan(ref)], ref[~np.isnan(ref)], rtol=1e-5)


def test_members_on_another_grid_are_resampled_with_align(tmp_path: Path) -> None:
    d = tmp_path / "mixed"
    make_stack(d, _days(date(2021, 1, 1), 2), seed=4)
    with rasterio.open(d / "himax.2021.01.02.tif") as ds:
        arr, prof = ds.read(), ds.profile
    prof["transform"] = rasterio.transform.from_origin(-30.1, 40.1, 0.25, 0.25)  # shifted by less than a pixel
    with rasterio.open(d / "himax.2021.01.02.tif", "w", **prof) as ds:
        ds.write(arr)
    code, lines = _err("reduce", str(d), "--date-pattern", PATTERN, "-o", str(tmp_path / "o.tif"))
    assert code == 2 and "himax.2021.01.02.tif" in lines[0] and "--align" in lines[0]
    out = _write(d, tmp_path / "aligned.tif", stat="count", align="nearest")
    with rasterio.open(out) as ds, rasterio.open(d / "himax.2021.01.01.tif") as first:
        assert ds.transform == first.transform and ds.shape == first.shape
        assert ds.read(1).max() == 2  # both dates read, the second resampled onto the first one's grid


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_bands_of_one_file_with_a_dates_file(stack: tuple[Path, list[date], np.ndarray], tmp_path: Path) -> None:
    # The same stack as one multi-band file, its dates in a sidecar text file, bands in another order than the dates.
    _, days, cube = stack
    order = list(reversed(range(len(days))))
    data = np.where(np.isnan(cube[order]), NODATA, cube[order]).astype(np.float32)
    multi = write_raster(tmp_path / "all.tif", data, nodata=NODATA, crs="EPSG:4326", transform=rasterio.transform.from_origin(-30.0, 40.0, 0.25, 0.25))
    (tmp_path / "dates.txt").write_text("".join(f"{days[i].isoformat()}\n" for i in order))
    out = tmp_path / "m.tif"
    run_job(reduce_job([str(multi)], str(out), dates=str(tmp_path / "dates.txt"), stat="mean", groupby="season", dtype="float64", executor="serial"))
    ref_out = _write(stack[0], tmp_path / "ref.tif", stat="mean", groupby="season", dtype="float64")
    with rasterio.open(out) as a, rasterio.open(ref_out) as b:
        np.testing.assert_allclose(a.read(), b.read(), rtol=1e-12)  # same dates in date order: the same sums
        assert a.descriptions == b.descriptions


@pytest.mark.faults
def test_kill_9_mid_reduce_then_rerun_gives_the_same_bytes(stack: tuple[Path, list[date], np.ndarray], tmp_path: Path) -> None:
    """Promise 2 for stacks: a run killed after some tiles resumes those tiles and writes the uninterrupted bytes."""
    import os
    import signal
    import time

    folder, _, _ = stack
    ref = _write(folder, tmp_path / "ref.tif", stat="p90", groupby="season", tile_size=32)
    out = tmp_path / "o.tif"
    args = [*CLI, "-q", "reduce", str(folder), "--date-pattern", PATTERN, "--stat", "p90", "--groupby", "season", "--tile-size", "32",
            "--executor", "serial", "-o", str(out)]  # fmt: skip
    proc = subprocess.Popen(args, start_new_session=True)
    records = tmp_path / ".o.tif.tilewise" / "manifest"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if any(f.stat().st_size > 0 for f in records.glob("records-*.jsonl")) if records.is_dir() else False:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    st = json.loads(subprocess.run([*CLI, "status", str(out), "--json"], capture_output=True, text=True, timeout=60).stdout)
    assert st["state"] == "complete"
    assert out.read_bytes() == ref.read_bytes()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # a pixel masked on every date
def test_members_masked_by_sidecar_mask_files(tmp_path: Path) -> None:
    """Members without nodata whose validity is a per-dataset mask in a ``.msk`` sidecar: the stream must still find it."""
    folder = tmp_path / "masked"
    folder.mkdir()
    rng = np.random.default_rng(7)
    days = _days(date(2021, 3, 1), 6)
    cube = []
    for d in days:
        field = rng.normal(10, 3, (H, W)).astype(np.float32)
        keep = rng.random((H, W)) > 0.2
        field[~keep] = 1e6  # garbage under the mask: it must never reach the mean
        path = folder / f"himax.{d:%Y.%m.%d}.tif"
        write_raster(path, field[np.newaxis], nodata=None, crs="EPSG:4326", transform=rasterio.transform.from_origin(-30.0, 40.0, 0.25, 0.25))
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=False), rasterio.open(path, "r+") as ds:
            ds.write_mask(np.where(keep, 255, 0).astype(np.uint8))
        assert (folder / f"{path.name}.msk").exists()
        cube.append(np.where(keep, field.astype(np.float64), np.nan))
    got = _reduce(folder, tmp_path / "o.tif", stat="mean", dtype="float64", tile_size=64, executor="serial")[0]
    ref = np.nanmean(np.stack(cube), axis=0)
    np.testing.assert_allclose(got, ref, rtol=1e-12)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # a pixel nodata on every date
def test_member_nodata_from_aux_xml_sidecars(tmp_path: Path) -> None:
    """Nodata given only in each member's ``.aux.xml`` (GDAL's PAM sidecar): the planner's bare opens must still find it."""
    folder = tmp_path / "pam"
    folder.mkdir()
    rng = np.random.default_rng(11)
    cube = []
    for d in _days(date(2021, 5, 1), 5):
        field = rng.normal(20, 4, (H, W)).astype(np.float32)
        field[rng.random((H, W)) < 0.15] = -9999.0
        path = write_raster(folder / f"himax.{d:%Y.%m.%d}.tif", field[np.newaxis], nodata=None, crs="EPSG:4326",
                            transform=rasterio.transform.from_origin(-30.0, 40.0, 0.25, 0.25))  # fmt: skip
        Path(f"{path}.aux.xml").write_text('<PAMDataset><PAMRasterBand band="1"><NoDataValue>-9999</NoDataValue></PAMRasterBand></PAMDataset>')
        cube.append(np.where(field == -9999.0, np.nan, field.astype(np.float64)))
    got = _reduce(folder, tmp_path / "o.tif", stat="mean", dtype="float64", executor="serial")[0]
    np.testing.assert_allclose(got, np.nanmean(np.stack(cube), axis=0), rtol=1e-12)


def test_a_stream_leaves_no_stream_settings_behind(stack: tuple[Path, list[date], np.ndarray], tmp_path: Path) -> None:
    """The serial executor runs streams in this thread: afterwards reads here are ordinary again (kept handles, default cache)."""
    from tilewise import rasterfile

    folder, _, _ = stack
    _reduce(folder, tmp_path / "o.tif", stat="mean", executor="serial")
    assert getattr(rasterfile._KEPT, "cache_bytes", 0) == 0


def test_a_member_gone_since_planning_is_named(tmp_path: Path) -> None:
    """A stack member removed after the job was planned: the stream's bare open reports the file, not a GDAL code."""
    from tilewise.errors import InputError
    from tilewise.rasterfile import open_read_kept, stream_env

    missing = str(tmp_path / "himax.2021.01.01.tif")
    with stream_env(1 << 20, sidecars=False), pytest.raises(InputError, match="does not exist"), open_read_kept(missing):
        pass
