"""The dated stack Source (tilewise.sources.stack): date patterns, discovery, dates of bands, selection, bbox, area weights."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import write_raster
from tilewise.errors import GridMismatchError, InputError, TilewiseError, UsageError
from tilewise.grid import Grid
from tilewise.rasterfile import copy_raster, open_write
from tilewise.sources.stack import (
    Member,
    Stack,
    area_weights,
    bbox_window,
    cf_time_decoder,
    check_grids,
    compile_date_pattern,
    open_stack,
    parse_bbox,
    parse_date,
    parse_iso,
    parse_months,
    read_dates_file,
    select,
    suggest_pattern,
)

D = dt.datetime
GEO = "EPSG:4326"
GEO_T = Affine(0.25, 0.0, -88.0, 0.0, -0.25, 16.0)


def _tif(path: Path, value: float = 1.0, *, shape: tuple[int, int] = (6, 8), dtype: str = "float32", nodata: float | None = -9999.0,
         crs: str = GEO, transform: Affine = GEO_T, bands: int = 1, descriptions: list[str] | None = None) -> Path:  # fmt: skip
    data = np.full((bands, *shape), value, dtype=dtype)
    return write_raster(path, data, nodata=nodata, crs=crs, transform=transform, blocksize=None, descriptions=descriptions)


def _daily(folder: Path, days: list[str], fmt: str = "himax.%Y.%m.%d.tif", **kw: object) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [_tif(folder / D.fromisoformat(d).strftime(fmt), float(i), **kw) for i, d in enumerate(days)]  # type: ignore[arg-type]


def _mem_stack(dates: list[D], dup: str = "error") -> Stack:
    """A Stack built in memory (no files), for the selection tests."""
    grid = Grid(GEO, GEO_T, 4, 4)
    members = tuple(Member(date=d, path=f"f{i:03d}.tif", band=1, label=f"f{i:03d}.tif", grid=grid) for i, d in enumerate(dates))
    return Stack(members=members, grid=grid, dtype="float32", nodata=None, duplicate_policy=dup)


def _days(start: str, n: int) -> list[D]:
    d0 = D.fromisoformat(start)
    return [d0 + dt.timedelta(days=i) for i in range(n)]


# --------------------------------------------------------------------------- date patterns


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("himax.%Y.%m.%d.tif", "himax.2021.06.30.tif", D(2021, 6, 30)),
        ("chirps_pr_%Y%m%d.tif", "chirps_pr_19810101.tif", D(1981, 1, 1)),
        (r"t2m_(?P<year>\d{4})(?P<month>\d\d)(?P<day>\d\d)\.tif", "t2m_20190331.tif", D(2019, 3, 31)),
        (r"MOD13.A(?P<year>\d{4})(?P<doy>\d{3})\..*", "MOD13.A2020060.h18v04.hdf", D(2020, 2, 29)),
        ("MOD13.A%Y%j.*.hdf", "MOD13.A2021032.h18v04.061.hdf", D(2021, 2, 1)),
        ("era5_%Y%m%dT%H%M%S.tif", "era5_20190301T063015.tif", D(2019, 3, 1, 6, 30, 15)),
        ("s_%y%m%d.tif", "s_990115.tif", D(1999, 1, 15)),
        ("s_%y%m%d.tif", "s_050115.tif", D(2005, 1, 15)),
        ("mean_%b_%Y.tif", "mean_JUN_2020.tif", D(2020, 6, 1)),
        ("mean_%B_%Y.tif", "mean_september_2020.tif", D(2020, 9, 1)),
        ("monthly_%Y%m.tif", "monthly_202112.tif", D(2021, 12, 1)),
        ("annual_%Y.tif", "annual_2003.tif", D(2003, 1, 1)),
        ("*_%Y-%m-%d_v?.tif", "anything_goes_2020-02-02_v7.tif", D(2020, 2, 2)),
        ("100%%_%Y.tif", "100%_2010.tif", D(2010, 1, 1)),
        ("%Y_%Y", "2010_2010", D(2010, 1, 1)),  # a repeated directive must repeat the same text
        ("himax.%Y.%m.%d.tif", "/some/folder/himax.2021.06.30.tif", D(2021, 6, 30)),  # only the file name is matched
    ],
)
def test_patterns_parse(pattern: str, name: str, expected: D) -> None:
    assert parse_date(name, compile_date_pattern(pattern)) == expected


@pytest.mark.parametrize(
    ("pattern", "name"),
    [
        ("himax.%Y.%m.%d.tif", "himaxX2021.06.30.tif"),  # '.' is literal, not "any character"
        ("himax.%Y.%m.%d.tif", "himax.2021.06.30.tif.aux.xml"),  # fullmatch: sidecars do not match
        ("himax.%Y.%m.%d.tif", "himax.2021.6.30.tif"),  # fields have strftime's fixed widths
        ("%Y_%Y", "2010_2011"),
        ("chirps_pr_%Y%m%d.tif", "CHIRPS_PR_19810101.TIF"),  # literal text is case-sensitive (month names are not)
    ],
)
def test_patterns_do_not_match(pattern: str, name: str) -> None:
    assert parse_date(name, compile_date_pattern(pattern)) is None


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        ("data_%m%d.tif", "no year"),
        ("data_%Y%Q.tif", "unknown directive %Q"),
        ("data_%Y%", "lone '%'"),
        ("data_%Y%d.tif", "no month"),
        ("data_%Y%j_%m.tif", "day of year"),
        ("data_%Y%H.tif", "time of day but no day"),
        ("data_%Y_%y.tif", "twice"),
        ("daily/%Y%m%d.tif", "folder part"),
        ("(?P<year>[0-9", "not a valid regular expression"),
        (r"(?P<yr>\d{4})\.tif", "no year"),
        (r"(?P<year>\d{4})(?P<day>\d\d)", "no month"),
        ("", "empty"),
    ],
)
def test_bad_patterns_name_the_pattern(pattern: str, words: str) -> None:
    with pytest.raises(UsageError) as err:
        compile_date_pattern(pattern)
    assert repr(pattern) in str(err.value)
    assert words in str(err.value)
    assert err.value.hint


@pytest.mark.parametrize(
    ("pattern", "name", "value"),
    [
        ("chirps_pr_%Y%m%d.tif", "chirps_pr_20210230.tif", "2021-02-30"),
        ("chirps_pr_%Y%m%d.tif", "chirps_pr_20211301.tif", "2021-13-01"),
        ("m_%Y%j.tif", "m_2021366.tif", "day of year 366 in 2021"),
        ("m_%Y%j.tif", "m_2021000.tif", "day of year 0 in 2021"),
        ("h_%Y%m%d%H.tif", "h_2021010124.tif", "24:00:00"),
        (r"x_(?P<year>\w+)\.tif", "x_abcd.tif", "'abcd'"),
    ],
)
def test_impossible_dates_name_file_and_value(pattern: str, name: str, value: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_date(name, compile_date_pattern(pattern))
    assert name in str(err.value)
    assert value in str(err.value)


def test_suggest_pattern() -> None:
    assert suggest_pattern("chirps_pr_19810101.tif") == "chirps_pr_%Y%m%d.tif"
    assert suggest_pattern("himax.2021.06.30.tif") == "himax.%Y.%m.%d.tif"
    assert suggest_pattern("MOD.A2021032.hdf") == "MOD.A%Y%j.hdf"
    assert suggest_pattern("readme.txt") is None


TEMPLATES = ["%Y%m%d", "%Y.%m.%d", "%Y-%m-%dT%H%M%S", "%Y%j", "%Y_%j_%H%M", "%d-%m-%Y", "%b%Y", "%Y%m", "%Y", "%B_%d_%Y", "%y%m%d"]


def _truncate(value: D, template: str) -> D:
    if "%j" in template or "%d" in template:
        return value.replace(hour=value.hour if "%H" in template else 0, minute=value.minute if "%M" in template else 0,
                             second=value.second if "%S" in template else 0, microsecond=0)  # fmt: skip
    if "%m" in template or "%b" in template or "%B" in template:
        return D(value.year, value.month, 1)
    return D(value.year, 1, 1)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=st.datetimes(min_value=D(1000, 1, 1), max_value=D(9999, 12, 31, 23, 59, 59)),
    template=st.sampled_from(TEMPLATES),
    prefix=st.text(alphabet="abcXYZ_-.()[]{}+^$ 019", max_size=8),
    suffix=st.sampled_from(["", ".tif", "_v2.nc", ".TIF", "-x"]),
)
def test_strftime_round_trip(value: D, template: str, prefix: str, suffix: str) -> None:
    """For any date, the name strftime writes parses back to that date (at the pattern's resolution)."""
    if "%y" in template:
        # Two-digit years read back as 1969-2068. 1972 + year % 96 lies there and keeps the year's
        # leap status (it is the year modulo 4, and every multiple of 4 in that span is a leap year),
        # so a 29 February stays a date.
        value = value.replace(year=1972 + value.year % 96)
    name = prefix + value.strftime(template) + suffix
    assert parse_date(name, compile_date_pattern(prefix + template + suffix)) == _truncate(value, template)


_TOKENS = ["%Y", "%m", "%d", "%j", "%H", "%M", "%S", "%y", "%b", "%B", "%%", "%", "%Q", "*", "?", "(?P<year>", "(?P<month>", "(?P<doy>",
           "(?P<day>", "(?P<hour>", ")", "[0-9]{4}", r"\d\d", ".+", "(", "[", "{", "a", "_", ".", "0", "/"]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    pattern=st.one_of(st.text(max_size=20), st.lists(st.sampled_from(_TOKENS), max_size=8).map("".join)),
    names=st.lists(st.one_of(st.text(alphabet="0123456789abJun_.-", max_size=16), st.text(max_size=12)), max_size=4),
)
def test_fuzz_patterns_raise_only_tilewise_errors(pattern: str, names: list[str]) -> None:
    try:
        regex = compile_date_pattern(pattern)
    except TilewiseError as exc:
        assert repr(pattern) in str(exc)
        return
    for name in names:
        try:
            d = parse_date(name, regex)
        except TilewiseError:
            continue
        assert d is None or isinstance(d, D)


def test_parse_iso_forms() -> None:
    assert parse_iso("2021-06-01") == D(2021, 6, 1)
    assert parse_iso("1981-1-2 0:0:0") == D(1981, 1, 2)  # terra's .aux.json style
    assert parse_iso("1980-01-01 00:00:0.0") == D(1980, 1, 1)
    assert parse_iso("2021-06") == D(2021, 6, 1)
    assert parse_iso("20210601") == D(2021, 6, 1)
    assert parse_iso("2021-06-01T12:30:00Z") == D(2021, 6, 1, 12, 30)
    assert parse_iso("2021-06-01T12:30:00+02:00") == D(2021, 6, 1, 10, 30)
    assert parse_iso("2021-06-01T12:30:00.5") == D(2021, 6, 1, 12, 30, 0, 500000)
    for bad in ("2021-02-30", "June 1st", "", "pr_1", "2021/06/01"):
        assert parse_iso(bad) is None


# --------------------------------------------------------------------------- CF time


@pytest.mark.parametrize(
    ("units", "value", "expected"),
    [
        ("days since 1980-01-01 00:00:0.0", 1.5, D(1980, 1, 2, 12)),
        ("days since 1950-01-01 00:00:00", 17927, D(1999, 1, 31)),
        ("hours since 1900-01-01", 1043136, D(2019, 1, 1)),
        ("minutes since 2000-01-01T00:00:00Z", 90, D(2000, 1, 1, 1, 30)),
        ("seconds since 1970-01-01", 1551398400, D(2019, 3, 1)),
        ("Days Since 2000-1-1", -1, D(1999, 12, 31)),
        ("hours since 2000-01-01 00:00:00", 1 / 3600 * 3599.9999, D(2000, 1, 1, 1)),  # rounded to the nearest second
    ],
)
def test_cf_time(units: str, value: float, expected: D) -> None:
    assert cf_time_decoder(units, "standard", "x.nc")(value) == expected


@pytest.mark.parametrize(
    ("units", "calendar", "words"),
    [
        ("days since 2000-01-01", "noleap", "'noleap' calendar"),
        ("days since 2000-01-01", "360_day", "'360_day' calendar"),
        ("months since 2000-01-01", "standard", "months"),
        ("fortnights since 2000-01-01", "standard", "'fortnights'"),
        ("days after 2000-01-01", "standard", "'days after 2000-01-01'"),
        ("days since yesterday", "standard", "'yesterday'"),
        ("days since 1500-01-01", "gregorian", "1582-10-15"),
    ],
)
def test_cf_time_refusals(units: str, calendar: str, words: str) -> None:
    with pytest.raises(InputError) as err:
        cf_time_decoder(units, calendar, "x.nc")
    assert words in str(err.value)
    assert "x.nc" in str(err.value)


def test_cf_time_proleptic_allows_early_reference() -> None:
    assert cf_time_decoder("days since 0001-01-01", "proleptic_gregorian", "x.nc")(730119) == D(2000, 1, 1)


# --------------------------------------------------------------------------- stacks of files


def test_folder_stack_sorted_by_date_with_skips(tmp_path: Path) -> None:
    folder = tmp_path / "daily"
    _daily(folder, ["2021-01-02", "2020-12-31", "2021-01-01"], fmt="%d-%m-%Y.tif")  # name order is not date order
    _tif(folder / "mask.tif")
    (folder / "notes.txt").write_text("not a raster")
    (folder / "02-01-2021.tif.aux.xml").write_text("<PAMDataset/>")
    stack = open_stack([str(folder)], date_pattern="%d-%m-%Y.tif")
    assert stack.dates == (D(2020, 12, 31), D(2021, 1, 1), D(2021, 1, 2))
    assert [m.label for m in stack.members] == ["31-12-2020.tif", "01-01-2021.tif", "02-01-2021.tif"]
    assert [Path(p).name for p in stack.skipped] == ["mask.tif"]
    assert (stack.dtype, stack.nodata, stack.grid.shape, stack.duplicate_policy) == ("float32", -9999.0, (6, 8), "error")
    assert all(m.band == 1 and m.identity[0] > 0 for m in stack.members)
    assert stack.date_range == "2020-12-31 to 2021-01-02 (3 dates)"
    ref = stack.band_ref(stack.members[0])
    assert (ref.path, ref.band, ref.nodata, ref.grid) == (stack.members[0].path, 1, -9999.0, stack.grid)


def test_glob_and_explicit_files(tmp_path: Path) -> None:
    files = _daily(tmp_path / "a", ["2021-06-01", "2021-06-02"], fmt="chirps_pr_%Y%m%d.tif")
    extra = _daily(tmp_path / "b", ["2021-06-03"], fmt="chirps_pr_%Y%m%d.tif")
    stack = open_stack([str(tmp_path / "a" / "chirps_pr_*.tif"), str(extra[0])], date_pattern="chirps_pr_%Y%m%d.tif")
    assert [m.path for m in stack.members] == [str(files[0]), str(files[1]), str(extra[0])]
    # The same file reached twice (a folder and a glob over it) is one member, not a duplicate date.
    again = open_stack([str(tmp_path / "a"), str(tmp_path / "a" / ".." / "a" / "*.tif")], date_pattern="chirps_pr_%Y%m%d.tif")
    assert len(again) == 2


def test_no_file_matches(tmp_path: Path) -> None:
    _daily(tmp_path / "daily", ["2021-06-01"], fmt="chirps_pr_%Y%m%d.tif")
    with pytest.raises(InputError) as err:
        open_stack([str(tmp_path / "daily")], date_pattern="chirps_%Y%m%d.tif")
    msg = str(err.value)
    assert "'chirps_%Y%m%d.tif'" in msg and "daily" in msg and "chirps_pr_20210601.tif" in msg
    assert "chirps_pr_%Y%m%d.tif" in err.value.hint  # type: ignore[operator]


@pytest.mark.parametrize("kind", ["glob", "missing", "empty"])
def test_inputs_that_are_not_there(tmp_path: Path, kind: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    src = {"glob": str(tmp_path / "nothing_*.tif"), "missing": str(tmp_path / "gone.tif"), "empty": str(tmp_path / "empty")}[kind]
    with pytest.raises(InputError) as err:
        open_stack([src], date_pattern="%Y%m%d.tif")
    assert src in str(err.value)


def test_impossible_date_in_a_file_name(tmp_path: Path) -> None:
    _daily(tmp_path / "d", ["2021-02-27"], fmt="t_%Y%m%d.tif")
    _tif(tmp_path / "d" / "t_20210230.tif")
    with pytest.raises(UsageError) as err:
        open_stack([str(tmp_path / "d")], date_pattern="t_%Y%m%d.tif")
    assert "t_20210230.tif" in str(err.value) and "2021-02-30" in str(err.value)


def test_many_files_need_a_pattern(tmp_path: Path) -> None:
    _daily(tmp_path / "d", ["2021-06-01", "2021-06-02"], fmt="chirps_pr_%Y%m%d.tif")
    with pytest.raises(UsageError) as err:
        open_stack([str(tmp_path / "d")])
    assert "without a date pattern" in str(err.value)
    assert "chirps_pr_%Y%m%d.tif" in err.value.hint  # type: ignore[operator]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"duplicates": "average"}, "'average'"),
        ({"variable": "a:b"}, "'a:b'"),
        ({"date_pattern": "%Y.tif", "dates": "metadata"}, "'%Y.tif'"),
    ],
)
def test_bad_options(tmp_path: Path, kwargs: dict, words: str) -> None:
    f = _tif(tmp_path / "2021.tif")
    with pytest.raises(UsageError) as err:
        open_stack([str(f)], **kwargs)
    assert words in str(err.value)


def test_multiband_file_in_a_folder_stack(tmp_path: Path) -> None:
    _daily(tmp_path / "d", ["2021-06-01"], fmt="x_%Y%m%d.tif")
    _tif(tmp_path / "d" / "x_20210602.tif", bands=3)
    with pytest.raises(InputError) as err:
        open_stack([str(tmp_path / "d")], date_pattern="x_%Y%m%d.tif")
    assert "x_20210602.tif" in str(err.value) and "3 bands" in str(err.value)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"transform": Affine(0.25, 0.0, -87.75, 0.0, -0.25, 16.0)}, "transform c=-87.75"),
        ({"shape": (6, 9)}, "shape 6x9"),
        ({"crs": "EPSG:32616", "transform": Affine(10.0, 0.0, 300000.0, 0.0, -10.0, 1700000.0)}, "CRS EPSG:32616"),
    ],
)
def test_grid_mismatch(tmp_path: Path, change: dict, words: str) -> None:
    _daily(tmp_path / "d", ["2021-06-01", "2021-06-03"], fmt="x_%Y%m%d.tif")
    _tif(tmp_path / "d" / "x_20210602.tif", **change)
    with pytest.raises(GridMismatchError) as err:
        open_stack([str(tmp_path / "d")], date_pattern="x_%Y%m%d.tif")
    msg = str(err.value)
    assert "x_20210602.tif" in msg and "x_20210601.tif" in msg and words in msg
    assert err.value.hint == "give files on one grid, or pass --align RESAMPLING"
    # align=True leaves the resampling to the caller: members keep their own grids.
    stack = open_stack([str(tmp_path / "d")], date_pattern="x_%Y%m%d.tif", align=True)
    assert stack.grid.shape == (6, 8) and stack.members[1].grid != stack.grid
    assert any("other grids" in n for n in stack.notes)
    with pytest.raises(GridMismatchError, match=re.escape("x_20210602.tif")):
        check_grids(stack)


def test_dtype_difference_is_noted(tmp_path: Path) -> None:
    _daily(tmp_path / "d", ["2021-06-01"], fmt="x_%Y%m%d.tif")
    _tif(tmp_path / "d" / "x_20210602.tif", dtype="int16")
    stack = open_stack([str(tmp_path / "d")], date_pattern="x_%Y%m%d.tif")
    assert stack.dtype == "float32"
    assert any("int16" in n and "x_20210602.tif" in n for n in stack.notes)


def test_nodata_difference(tmp_path: Path) -> None:
    _daily(tmp_path / "d", ["2021-06-01"], fmt="x_%Y%m%d.tif")
    _tif(tmp_path / "d" / "x_20210602.tif", nodata=0.0)
    with pytest.raises(InputError) as err:
        open_stack([str(tmp_path / "d")], date_pattern="x_%Y%m%d.tif")
    msg = str(err.value)
    assert "x_20210602.tif has nodata 0" in msg and "x_20210601.tif has nodata -9999" in msg
    # NaN equals NaN here.
    _daily(tmp_path / "n", ["2021-06-01", "2021-06-02"], fmt="x_%Y%m%d.tif", nodata=float("nan"))
    assert math.isnan(open_stack([str(tmp_path / "n")], date_pattern="x_%Y%m%d.tif").nodata)  # type: ignore[arg-type]


@pytest.fixture
def two_folders(tmp_path: Path) -> list[str]:
    _daily(tmp_path / "a", ["2021-06-01", "2021-06-02", "2021-06-03"], fmt="x_%Y%m%d.tif")
    _daily(tmp_path / "b", ["2021-06-02", "2021-06-04"], fmt="x_%Y%m%d.tif")
    return [str(tmp_path / "a"), str(tmp_path / "b")]


def test_duplicates_error(two_folders: list[str]) -> None:
    with pytest.raises(UsageError) as err:
        open_stack(two_folders, date_pattern="x_%Y%m%d.tif")
    msg = str(err.value)
    assert "2021-06-02" in msg and str(Path(two_folders[0]) / "x_20210602.tif") in msg and str(Path(two_folders[1]) / "x_20210602.tif") in msg
    assert "--duplicates first|last|mean" in err.value.hint  # type: ignore[operator]


@pytest.mark.parametrize(("policy", "kept_from"), [("first", "a"), ("last", "b")])
def test_duplicates_first_last(two_folders: list[str], policy: str, kept_from: str) -> None:
    stack = open_stack(two_folders, date_pattern="x_%Y%m%d.tif", duplicates=policy)
    assert stack.dates == (D(2021, 6, 1), D(2021, 6, 2), D(2021, 6, 3), D(2021, 6, 4))
    assert Path(stack.members[1].path).parent.name == kept_from
    assert stack.duplicate_policy == policy


def test_duplicates_mean_keeps_all_grouped(two_folders: list[str]) -> None:
    stack = open_stack(two_folders, date_pattern="x_%Y%m%d.tif", duplicates="mean")
    assert len(stack) == 5 and stack.duplicate_policy == "mean"
    groups = stack.groups()
    assert [(d.day, len(ms)) for d, ms in groups] == [(1, 1), (2, 2), (3, 1), (4, 1)]
    assert [Path(m.path).parent.name for m in groups[1][1]] == ["a", "b"]
    # --every counts dates, so the two members of 06-02 stay together.
    assert select(stack, every=2).dates == (D(2021, 6, 1), D(2021, 6, 3))
    assert select(stack, start="2021-06-02", every=3).dates == (D(2021, 6, 2), D(2021, 6, 2))


# --------------------------------------------------------------------------- bands of one file


@pytest.fixture
def multiband(tmp_path: Path) -> Path:
    return _tif(tmp_path / "cube.tif", bands=4)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("dates.txt", "# acquisition dates\n2021-01-03\n\n2021-01-01\n2021-01-02\n2021-01-04\n"),
        ("dates.csv", "band,date,cloud\n1,2021-01-03,0.1\n2,2021-01-01,0.2\n3,2021-01-02,0\n4,2021-01-04,0\n"),
        ("dates_noheader.csv", "2021-01-03;a\n2021-01-01;b\n2021-01-02;c\n2021-01-04;d\n"),
        ("dates.json", json.dumps(["2021-01-03", "2021-01-01", "2021-01-02", "2021-01-04"])),
        ("cube.tif.aux.json", json.dumps({"time": ["2021-1-3 0:0:0", "2021-1-1 0:0:0", "2021-1-2 0:0:0", "2021-1-4 0:0:0"], "timestep": "seconds"})),
    ],
)
def test_sidecar_dates(multiband: Path, name: str, text: str) -> None:
    sidecar = multiband.parent / name
    sidecar.write_text(text)
    stack = open_stack([str(multiband)], dates=str(sidecar))
    assert stack.dates == tuple(_days("2021-01-01", 4))
    assert [m.band for m in stack.members] == [2, 3, 1, 4]
    assert stack.members[0].label == "cube.tif band 2"


def test_terra_aux_json_is_found_as_metadata(multiband: Path) -> None:
    (multiband.parent / "cube.tif.aux.json").write_text(json.dumps({"time": [f"2021-1-{d} 0:0:0" for d in (1, 2, 3, 4)]}))
    assert open_stack([str(multiband)]).dates == tuple(_days("2021-01-01", 4))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("2021-01-01\n2021-01-02\n", "has 2 dates but cube.tif has 4 bands"),
        ("2021-01-01\n2021-01-02\nsoon\n2021-01-04\n", "line 3: 'soon' is not a date"),
        ("2021-01-01\n2021-01-02\n2021-02-30\n2021-01-04\n", "'2021-02-30' is not a date"),
        ("band,when\n1,2021-01-01\n", "no 'date' column"),
    ],
)
def test_bad_sidecar(multiband: Path, text: str, words: str) -> None:
    sidecar = multiband.parent / "dates.txt"
    sidecar.write_text(text)
    with pytest.raises(InputError) as err:
        open_stack([str(multiband)], dates=str(sidecar))
    assert words in str(err.value) and "dates.txt" in str(err.value)


def test_missing_sidecar(multiband: Path) -> None:
    with pytest.raises(InputError, match=r"dates file '.*nope\.txt' does not exist"):
        open_stack([str(multiband)], dates=str(multiband.parent / "nope.txt"))


def test_dates_from_band_descriptions(tmp_path: Path) -> None:
    f = _tif(tmp_path / "s2.tif", bands=3, descriptions=["2020-07-05", "2020-06-20T10:30:00Z", "2020-07-01"])
    stack = open_stack([str(f)], dates="metadata")
    assert stack.dates == (D(2020, 6, 20, 10, 30), D(2020, 7, 1), D(2020, 7, 5))


def test_dates_from_band_tags(tmp_path: Path) -> None:
    f = tmp_path / "tagged.tif"
    profile = {"driver": "GTiff", "width": 4, "height": 3, "count": 2, "dtype": "uint8", "crs": GEO, "transform": GEO_T}
    with open_write(f, **profile) as ds:
        ds.write(np.zeros((2, 3, 4), np.uint8))
        ds.update_tags(1, DATE="2019-03-02")
        ds.update_tags(2, DATE="2019-03-01")
    assert open_stack([str(f)]).dates == (D(2019, 3, 1), D(2019, 3, 2))


def test_undated_bands(multiband: Path) -> None:
    with pytest.raises(InputError) as err:
        open_stack([str(multiband)], dates="metadata")
    assert "cube.tif has no date in its metadata for band 1" in str(err.value)
    assert "--dates FILE" in err.value.hint  # type: ignore[operator]


def test_read_dates_file_any_count(tmp_path: Path) -> None:
    (tmp_path / "d.txt").write_text("2020-01-01\n2020-02\n")
    assert read_dates_file(str(tmp_path / "d.txt"), None, "x") == [D(2020, 1, 1), D(2020, 2, 1)]


# --------------------------------------------------------------------------- netCDF


def _netcdf(tmp_path: Path, values: list[float], units: str, calendar: str = "standard", name: str = "t.nc") -> Path:
    """A small netCDF file with a time axis, written by GDAL's netCDF driver (variable 'Band1')."""
    from rasterio.drivers import raster_driver_extensions

    if "nc" not in raster_driver_extensions():
        pytest.skip("this GDAL has no netCDF driver for writing")
    src = tmp_path / f"{name}.src.tif"
    n = len(values)
    profile = {"driver": "GTiff", "width": 5, "height": 4, "count": n, "dtype": "float32", "crs": GEO, "transform": GEO_T, "nodata": -9999.0}
    with open_write(src, **profile) as ds:
        ds.write(np.arange(n * 20, dtype=np.float32).reshape(n, 4, 5))
        ds.update_tags(NETCDF_DIM_EXTRA="{time}", NETCDF_DIM_time_DEF=f"{{{n},6}}", NETCDF_DIM_time_VALUES="{" + ",".join(map(str, values)) + "}",
                       **{"time#units": units, "time#calendar": calendar, "time#standard_name": "time"})  # fmt: skip
        for b, v in enumerate(values, start=1):
            ds.update_tags(b, NETCDF_DIM_time=str(v))
    dst = tmp_path / name
    copy_raster(src, dst, "netCDF", {})
    src.unlink()
    return dst


def test_netcdf_time_axis(tmp_path: Path) -> None:
    nc = _netcdf(tmp_path, [48, 0, 24], "hours since 2020-02-28 00:00:00")
    expected = (D(2020, 2, 28), D(2020, 2, 29), D(2020, 3, 1))
    by_var = open_stack([str(nc)], variable="Band1")
    by_name = open_stack([f'NETCDF:"{nc}":Band1'])
    plain = open_stack([str(nc)])
    for stack in (by_var, by_name, plain):
        assert stack.dates == expected
        assert stack.nodata == -9999.0 and stack.grid.shape == (4, 5)
    assert [m.band for m in by_var.members] == [2, 3, 1]
    assert by_var.members[0].label == "t.nc:Band1 band 2" and by_var.members[0].path == f'NETCDF:"{nc}":Band1'
    assert by_var.members[0].identity[0] == nc.stat().st_size


def test_netcdf_unknown_variable(tmp_path: Path) -> None:
    nc = _netcdf(tmp_path, [0, 1], "days since 2000-01-01")
    with pytest.raises(UsageError) as err:
        open_stack([str(nc)], variable="tas")
    assert "'tas'" in str(err.value)


def test_netcdf_other_calendar_is_refused(tmp_path: Path) -> None:
    nc = _netcdf(tmp_path, [0, 1], "days since 2000-01-01", calendar="noleap")
    with pytest.raises(InputError) as err:
        open_stack([str(nc)], variable="Band1")
    assert "'noleap' calendar" in str(err.value) and "t.nc" in str(err.value)


def test_netcdf_files_with_a_pattern(tmp_path: Path) -> None:
    for day in (1, 2):
        _netcdf(tmp_path, [0], f"days since 2000-01-0{day}", name=f"day_2000010{day}.nc")
    stack = open_stack([str(tmp_path)], date_pattern="day_%Y%m%d.nc", variable="Band1")
    assert stack.dates == (D(2000, 1, 1), D(2000, 1, 2))
    assert stack.members[0].path == f'NETCDF:"{tmp_path / "day_20000101.nc"}":Band1'


# --------------------------------------------------------------------------- selection


SUMMER = _mem_stack(_days("2021-05-30", 34))  # 2021-05-30 .. 2021-07-02


@pytest.mark.parametrize(
    ("kwargs", "first", "last", "count"),
    [
        ({"start": "2021-06"}, D(2021, 6, 1), D(2021, 7, 2), 32),
        ({"end": "2021-06"}, D(2021, 5, 30), D(2021, 6, 30), 32),  # end is inclusive: all of June
        ({"start": "2021-06-10", "end": "2021-06-12"}, D(2021, 6, 10), D(2021, 6, 12), 3),
        ({"start": "2021", "end": "2021"}, D(2021, 5, 30), D(2021, 7, 2), 34),
        ({"start": dt.date(2021, 6, 30)}, D(2021, 6, 30), D(2021, 7, 2), 3),
        ({"months": [5, 7]}, D(2021, 5, 30), D(2021, 7, 2), 4),
        ({"months": "jul"}, D(2021, 7, 1), D(2021, 7, 2), 2),
        ({"every": 10}, D(2021, 5, 30), D(2021, 6, 29), 4),
        ({"start": "2021-06", "months": [6], "every": 7}, D(2021, 6, 1), D(2021, 6, 29), 5),
        ({"every": 1}, D(2021, 5, 30), D(2021, 7, 2), 34),
    ],
)
def test_select(kwargs: dict, first: D, last: D, count: int) -> None:
    out = select(SUMMER, **kwargs)
    assert (out.dates[0], out.dates[-1], len(out)) == (first, last, count)
    assert out.grid == SUMMER.grid and out.duplicate_policy == SUMMER.duplicate_policy


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"start": "June"}, "--start 'June'"),
        ({"end": "2021-13"}, "--end '2021-13'"),
        ({"start": "2021-02-30"}, "--start '2021-02-30'"),
        ({"start": "2021-07", "end": "2021-06"}, "--start 2021-07 is after --end 2021-06"),
        ({"months": [0]}, "month 0"),
        ({"months": [6, 13]}, "month 13"),
        ({"months": "summer"}, "'summer'"),
        ({"every": 0}, "--every 0"),
        ({"every": True}, "--every True"),
        ({"every": 1.5}, "--every 1.5"),
    ],
)
def test_select_bad_values(kwargs: dict, words: str) -> None:
    with pytest.raises(UsageError) as err:
        select(SUMMER, **kwargs)
    assert words in str(err.value)


def test_empty_selection_names_what_was_asked_and_the_range() -> None:
    with pytest.raises(UsageError) as err:
        select(SUMMER, start="2021-06-05", months=[8])
    assert "no dates left after the selection (start 2021-06-05, months 8)" in str(err.value)
    assert err.value.hint == "the stack has 2021-05-30 to 2021-07-02 (34 dates)"


def test_parse_months() -> None:
    assert parse_months("6,7,8") == (6, 7, 8)
    assert parse_months("jun-aug") == (6, 7, 8)
    assert parse_months("12-2") == (1, 2, 12)
    assert parse_months("December, jan,Feb") == (1, 2, 12)
    with pytest.raises(UsageError, match="'13'"):
        parse_months("6,13")


# --------------------------------------------------------------------------- bbox and area weights


UTM = Grid("EPSG:32632", Affine(10.0, 0.0, 1000.0, 0.0, -10.0, 2000.0), 20, 30)  # x 1000..1300, y 1800..2000


@pytest.mark.parametrize(
    ("bbox", "window"),
    [
        # pixel centres: x = 1005 + 10 col, y = 1995 - 10 row
        ((1020, 1900, 1060, 1950), (5, 2, 5, 4)),  # cols 1025..1055, rows 1945..1905
        ((1005, 1905, 1015, 1995), (0, 0, 10, 2)),  # centres on the edges count (inclusive)
        ((900, 1900, 1020, 2100), (0, 0, 10, 2)),  # clipped to the grid
        ((0, 0, 1e6, 1e6), (0, 0, 20, 30)),
        ((1294, 1800, 1296, 1806), (19, 29, 1, 1)),  # the last pixel
    ],
)
def test_bbox_window(bbox: tuple[float, float, float, float], window: tuple[int, int, int, int]) -> None:
    assert bbox_window(UTM, bbox) == window


def test_bbox_window_in_another_crs() -> None:
    from rasterio.warp import transform_bounds

    inner = (1100.0, 1850.0, 1200.0, 1950.0)
    geo = transform_bounds("EPSG:32632", "EPSG:4326", *inner)
    row_off, col_off, h, w = bbox_window(UTM, geo, bbox_crs="EPSG:4326")
    expected = bbox_window(UTM, inner)
    assert abs(row_off - expected[0]) <= 1 and abs(col_off - expected[1]) <= 1
    assert abs(h - expected[2]) <= 2 and abs(w - expected[3]) <= 2
    assert bbox_window(Grid(GEO, GEO_T, 20, 20), (-86, 12, -85, 13), bbox_crs="EPSG:4326") == bbox_window(Grid(GEO, GEO_T, 20, 20), (-86, 12, -85, 13))


@pytest.mark.parametrize(
    ("bbox", "crs", "words"),
    [
        ((0, 0, 10, 10), None, "bbox 0,0,10,10 does not overlap the grid; the stack's bounds are 1000,1800,1300,2000 in EPSG:32632"),
        ((1001, 1801, 1003, 1803), None, "bbox 1001,1801,1003,1803 holds no pixel centre"),
        ((1100, 1900, 1050, 1950), None, "min >= max (x)"),
        ((1000, 1900, 1100, 1900), None, "min >= max (y)"),
        ((1000, 1800, 1100, 1900), "EPSG:999999", "--bbox-crs 'EPSG:999999' is not a CRS"),
    ],
)
def test_bbox_errors(bbox: tuple[float, float, float, float], crs: str | None, words: str) -> None:
    with pytest.raises(UsageError) as err:
        bbox_window(UTM, bbox, crs)
    assert words in str(err.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("-88,11,-83,16", (-88.0, 11.0, -83.0, 16.0)), (" 1 2  3 4 ", (1.0, 2.0, 3.0, 4.0)), ("1e3, 2, 3e3, 4", (1000.0, 2.0, 3000.0, 4.0))],
)
def test_parse_bbox(text: str, expected: tuple[float, float, float, float]) -> None:
    assert parse_bbox(text) == expected


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d", "3,2,1,4", "1,2,3,4,5", "1,nan,3,4"])
def test_parse_bbox_bad(text: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_bbox(text)
    assert repr(text) in str(err.value)


def test_area_weights() -> None:
    world = Grid(GEO, Affine(1.0, 0.0, -180.0, 0.0, -1.0, 90.0), 180, 360)
    w = area_weights(world, 0, 180)
    assert w is not None and w.shape == (180,) and w.dtype == np.float64
    assert math.isclose(w.sum() * 360, 4 * math.pi, rel_tol=1e-12)  # the unit sphere's area
    np.testing.assert_array_equal(w, w[::-1])  # symmetric about the equator
    assert math.isclose(w[89] / w[0], math.cos(math.radians(0.5)) / math.cos(math.radians(89.5)), rel_tol=1e-3)
    part = area_weights(world, 40, 7)
    assert part is not None
    np.testing.assert_array_equal(part, w[40:47])  # a tile's rows get the same weights bit for bit
    halo = area_weights(world, -2, 4)
    assert halo is not None and halo[0] == 0.0 and halo[1] == 0.0 and halo[2] == w[0]
    assert area_weights(UTM, 0, 20) is None
    assert area_weights(Grid(None, GEO_T, 4, 4), 0, 4) is None


# --------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_chirps_daily_folder_matches_the_730_band_file(shared_data: Path) -> None:
    base = shared_data / "timeseries" / "chirps_daily_nicaragua_1981-1982"
    files = open_stack([str(base / "daily")], date_pattern="chirps_pr_%Y%m%d.tif")
    assert files.dates == tuple(_days("1981-01-01", 730))
    assert files.dtype == "float32" and files.nodata is not None and math.isnan(files.nodata)
    assert files.grid.shape == (20, 20) and files.grid.bounds == (-88.0, 11.0, -83.0, 16.0)
    assert files.skipped == ()
    bands = open_stack([str(base / "prcp_cropped.tif")])  # dates from terra's prcp_cropped.tif.aux.json
    assert bands.dates == files.dates and bands.grid.mismatch(files.grid) is None
    assert [m.band for m in bands.members] == list(range(1, 731))
    summer = select(files, months=[6, 7, 8])
    assert len(summer) == 2 * 92 and {d.month for d in summer.dates} == {6, 7, 8}
    assert len(select(files, start="1982-02", end="1982-02")) == 28
    assert bbox_window(files.grid, (-86, 12, -85, 13)) == (12, 8, 4, 4)
    w = area_weights(files.grid, 0, 20)
    assert w is not None and np.all(np.diff(w) > 0)  # rows nearer the equator are larger


@pytest.mark.realdata
def test_real_era5(shared_data: Path) -> None:
    base = shared_data / "timeseries" / "era5_t2m_uk_2019-03"
    daily = open_stack([str(base / "daily_mean" / "era5_t2m_daily_mean_*.tif")], date_pattern="era5_t2m_daily_mean_%Y%m%d.tif")
    assert daily.dates == tuple(_days("2019-03-01", 31)) and daily.nodata is None and daily.grid.shape == (33, 49)
    hourly = open_stack([str(base / "era5-2mt-2019-03-uk.grib")])  # GRIB_VALID_TIME per band
    assert len(hourly) == 744 and hourly.dates[0] == D(2019, 3, 1) and hourly.dates[-1] == D(2019, 3, 31, 23)
    assert all(b - a == dt.timedelta(hours=1) for a, b in zip(hourly.dates, hourly.dates[1:], strict=False))


@pytest.mark.realdata
def test_real_netcdf_variable(shared_data: Path) -> None:
    nc = shared_data / "timeseries" / "stars_nc" / "bcsd_obs_1999.nc"
    tas = open_stack([str(nc)], variable="tas")
    assert [d.month for d in tas.dates] == list(range(1, 13)) and {d.year for d in tas.dates} == {1999}
    assert tas.nodata == pytest.approx(1e20) and tas.grid.shape == (33, 81)
    assert open_stack([f'NETCDF:"{nc}":pr']).dates == tas.dates
    with pytest.raises(InputError, match=re.escape("variables (pr, tas)")):
        open_stack([str(nc)])
