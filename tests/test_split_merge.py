"""split / merge: tiles cover the raster exactly once, and merging them gives the input back bit for bit."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

import tilewise
from tests.conftest import write_raster
from tilewise import sheets
from tilewise.cli.main import main
from tilewise.errors import GridMismatchError, InputError, OutputError, UsageError
from tilewise.rasterfile import open_read
from tilewise.sheets import merge, split, split_windows

T0 = Affine(10.0, 0.0, 300000.0, 0.0, -10.0, 5600000.0)


def scene(dtype: str, bands: int, height: int = 97, width: int = 131, nodata: float | None = None, seed: int = 0) -> np.ndarray:
    """A (bands, h, w) array of ``dtype`` with a nodata hole and, for floats, awkward values."""
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        a = rng.normal(100.0, 50.0, (bands, height, width)).astype(dtype)
        a[:, 0, :3] = [np.float32(1e-38), -0.0, np.float32(3.4e38)]  # subnormal-ish, negative zero, huge
    else:
        info = np.iinfo(dtype)
        a = rng.integers(info.min, info.max, (bands, height, width), endpoint=False, dtype=dtype)
    if nodata is not None:
        a[:, height // 3 : height // 2, width // 4 : width // 2] = np.array(nodata).astype(dtype)
    return a


def read_all(path: Path) -> dict[str, Any]:
    with open_read(str(path)) as ds:
        return {"data": ds.read(), "dtype": ds.dtypes[0], "nodata": ds.nodata, "crs": ds.crs, "transform": ds.transform,
                "descriptions": ds.descriptions, "shape": (ds.count, ds.height, ds.width)}  # fmt: skip


def bits(a: np.ndarray) -> np.ndarray:
    """The raw bits of an array, so NaN payloads and -0.0 compare exactly."""
    return np.ascontiguousarray(a).view(f"u{a.dtype.itemsize}")


def assert_same_raster(got: Path, want: Path) -> None:
    g, w = read_all(got), read_all(want)
    assert g["shape"] == w["shape"]
    assert g["dtype"] == w["dtype"]
    assert (g["nodata"] is None and w["nodata"] is None) or g["nodata"] == w["nodata"] or (math.isnan(g["nodata"]) and math.isnan(w["nodata"]))
    assert g["crs"] == w["crs"]
    assert g["transform"] == w["transform"]  # exact, not almost
    assert g["descriptions"] == w["descriptions"]
    assert np.array_equal(bits(g["data"]), bits(w["data"]))


def hidden_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


CASES = [
    pytest.param("float32", float("nan"), 3, {"grid": "4x4"}, 16, id="float32-nan-grid4x4"),
    pytest.param("float32", float("nan"), 2, {"tile_size": 40}, 12, id="float32-nan-tile40"),
    pytest.param("uint16", 65535, 2, {"grid": "3x5"}, 15, id="uint16-grid3x5"),
    pytest.param("uint16", 65535, 3, {"tile_size": "40x25"}, 18, id="uint16-tile40x25"),
    pytest.param("int16", -9999, 2, {"tile_size": 40}, 12, id="int16-tile40"),
    pytest.param("int16", -32768, 4, {"grid": (4, 4)}, 16, id="int16-grid-tuple"),
]


@pytest.mark.parametrize(("dtype", "nodata", "bands", "layout", "n_tiles"), CASES)
def test_split_then_merge_reproduces_the_input(tmp_path: Path, dtype: str, nodata: float, bands: int, layout: dict[str, Any], n_tiles: int) -> None:
    names = [f"band {i}" for i in range(1, bands + 1)]
    src = write_raster(tmp_path / "dem.tif", scene(dtype, bands, nodata=nodata), nodata=nodata, descriptions=names, blocksize=32)
    tiles = split(src, tmp_path / "tiles", **layout)
    assert len(tiles) == n_tiles
    assert [p.name for p in tiles] == sorted(p.name for p in (tmp_path / "tiles").iterdir())  # names sort row by row
    assert tiles[0].name == "dem_r000_c000.tif"
    whole = read_all(src)
    covered = np.zeros((97, 131), dtype=np.int32)
    for p in tiles:
        t = read_all(p)
        assert t["dtype"] == dtype and t["crs"] == whole["crs"] and t["descriptions"] == tuple(names)
        assert (math.isnan(t["nodata"]) and math.isnan(nodata)) or t["nodata"] == nodata
        col, row = ~T0 * (t["transform"].c, t["transform"].f)
        r0, c0 = round(row), round(col)
        assert t["transform"] == T0 * Affine.translation(c0, r0)  # the exact window transform
        _, h, w = t["shape"]
        assert np.array_equal(bits(t["data"]), bits(whole["data"][:, r0 : r0 + h, c0 : c0 + w]))
        covered[r0 : r0 + h, c0 : c0 + w] += 1
    assert (covered == 1).all()  # no dropped rows or columns, nothing twice
    vrt = merge(tmp_path / "tiles", tmp_path / "tiles" / "mosaic.vrt")
    assert_same_raster(vrt, src)
    assert 'relativeToVRT="1">dem_r000_c000.tif<' in vrt.read_text()
    cog = merge(tiles, tmp_path / "mosaic.tif")
    assert_same_raster(cog, src)
    with open_read(str(cog)) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    assert hidden_files(tmp_path) == []  # no temporary files left


def test_grid_sizes_are_as_even_as_possible() -> None:
    wins = split_windows(97, 131, grid="4x4")
    assert [w.height for r, c, w in wins if c == 0] == [25, 24, 24, 24]  # 97 = 25 + 3*24: the first (97 % 4) rows are taller
    assert [w.width for r, c, w in wins if r == 0] == [33, 33, 33, 32]
    assert [w.width for r, c, w in split_windows(10, 131, tile_size="5x40") if r == 0] == [40, 40, 40, 11]  # remainder last


@settings(max_examples=300, deadline=None)
@given(h=st.integers(1, 400), w=st.integers(1, 400), rows=st.integers(1, 40), cols=st.integers(1, 40),
       th=st.integers(1, 150), tw=st.integers(1, 150), by_grid=st.booleans())  # fmt: skip
def test_windows_partition_the_raster(h: int, w: int, rows: int, cols: int, th: int, tw: int, by_grid: bool) -> None:
    if by_grid:
        rows, cols = min(rows, h), min(cols, w)
        wins = split_windows(h, w, grid=f"{rows}x{cols}")
        assert len(wins) == rows * cols
        heights = {win.height for _, _, win in wins}
        widths = {win.width for _, _, win in wins}
        assert max(heights) - min(heights) <= 1 and max(widths) - min(widths) <= 1
    else:
        n = -(-h // th) * -(-w // tw)
        if n > sheets.MAX_TILES:
            with pytest.raises(UsageError, match=f"would write {n} tiles"):
                split_windows(h, w, tile_size=(th, tw))
            return
        wins = split_windows(h, w, tile_size=(th, tw))
        assert len(wins) == n
        assert all(win.height <= th and win.width <= tw for _, _, win in wins)
    cover = np.zeros((h, w), dtype=np.int32)
    for _, _, win in wins:
        assert win.height >= 1 and win.width >= 1
        cover[win.row_off : win.row_end, win.col_off : win.col_end] += 1
    assert (cover == 1).all()
    keys = [(r, c) for r, c, _ in wins]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


def test_tiles_are_copied_in_bounded_strips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_raster(tmp_path / "s.tif", scene("float32", 2, nodata=-1.0), nodata=-1.0)
    monkeypatch.setattr(sheets, "STRIP_BYTES", 2000)  # a few rows at a time, one or two tiles per group
    monkeypatch.setattr(sheets, "MAX_OPEN_TILES", 2)
    reads: list[int] = []
    real_group = sheets._write_group

    def spying_group(src_ds: Any, *args: Any) -> None:
        real_read = src_ds.read

        def read(*a: Any, **kw: Any) -> np.ndarray:
            out = real_read(*a, **kw)
            reads.append(out.nbytes)
            return out

        src_ds.read = read
        try:
            real_group(src_ds, *args)
        finally:
            del src_ds.read

    monkeypatch.setattr(sheets, "_write_group", spying_group)
    split(src, tmp_path / "t", grid="3x5")
    assert len(reads) > 15 and max(reads) <= 2000
    assert_same_raster(merge(tmp_path / "t", tmp_path / "m.vrt"), src)


def test_big_tiles_are_tiled_and_losslessly_compressed(tmp_path: Path) -> None:
    src = write_raster(tmp_path / "big.tif", scene("uint16", 1, 1100, 700), blocksize=256)
    big, small = split(src, tmp_path / "t", tile_size="1024x700")
    with open_read(str(big)) as ds:
        assert ds.block_shapes[0] == (512, 512)
        assert {"COMPRESSION": "ZSTD", "PREDICTOR": "2"}.items() <= ds.tags(ns="IMAGE_STRUCTURE").items()
    with open_read(str(small)) as ds:
        assert ds.profile["tiled"] is False and ds.height == 1100 - 1024
    deflate = split(src, tmp_path / "d", grid="1x1", compress="deflate")[0]
    with open_read(str(deflate)) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"
    assert_same_raster(merge([big, small], tmp_path / "m.tif", compress="deflate"), src)


def test_interrupted_split_leaves_no_partial_tile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_raster(tmp_path / "s.tif", scene("int16", 1, nodata=-9999), nodata=-9999)
    monkeypatch.setattr(sheets, "MAX_OPEN_TILES", 1)  # one tile per group, each read in one strip
    reads = {"n": 0}
    real = sheets._write_group

    def interrupted_group(src_ds: Any, *args: Any) -> None:
        real_read = src_ds.read

        def read(*a: Any, **kw: Any) -> np.ndarray:
            reads["n"] += 1
            if reads["n"] == 3:  # Ctrl-C while the third tile's file is open
                raise KeyboardInterrupt
            return real_read(*a, **kw)

        src_ds.read = read
        try:
            real(src_ds, *args)
        finally:
            del src_ds.read

    monkeypatch.setattr(sheets, "_write_group", interrupted_group)
    with pytest.raises(KeyboardInterrupt):
        split(src, tmp_path / "t", grid="2x2")
    done = sorted(p.name for p in (tmp_path / "t").iterdir())
    assert done == ["s_r000_c000.tif", "s_r000_c001.tif"]  # the finished ones only, no temporary file
    assert [read_all(tmp_path / "t" / name)["shape"] for name in done] == [(1, 49, 66), (1, 49, 65)]  # 131 = 66 + 65
    monkeypatch.setattr(sheets, "_write_group", real)
    with pytest.raises(OutputError, match="--overwrite"):
        split(src, tmp_path / "t", grid="2x2")
    assert len(split(src, tmp_path / "t", grid="2x2", overwrite=True)) == 4


def test_overwrite_replaces_an_earlier_split_entirely(tmp_path: Path) -> None:
    src = write_raster(tmp_path / "s.tif", scene("uint16", 1, nodata=0), nodata=0)
    other = tmp_path / "t" / "keep_me.tif"
    split(src, tmp_path / "t", grid="4x4")
    other.write_bytes(b"not a tile of s")
    before = sorted(p.name for p in (tmp_path / "t").iterdir())
    with pytest.raises(OutputError, match=r"16 tile file\(s\) of 's' already exist"):
        split(src, tmp_path / "t", grid="2x2")
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == before
    split(src, tmp_path / "t", grid="2x2", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["keep_me.tif", *(f"s_r{r:03d}_c{c:03d}.tif" for r in (0, 1) for c in (0, 1))]


def test_more_than_999_tiles_per_axis_widen_the_numbers(tmp_path: Path) -> None:
    src = write_raster(tmp_path / "s.tif", np.arange(1001, dtype=np.uint16).reshape(1, 1001), blocksize=None)
    tiles = split(src, tmp_path / "t", tile_size="1x1")
    assert tiles[0].name == "s_r0000_c0000.tif" and tiles[-1].name == "s_r0000_c1000.tif"
    assert_same_raster(merge(tmp_path / "t", tmp_path / "m.vrt"), src)


def two_tiles(tmp_path: Path, first: np.ndarray, second: np.ndarray, col: int, nodata: float | None = 0, **kw: Any) -> tuple[Path, Path]:
    a = write_raster(tmp_path / "a.tif", first, nodata=nodata, blocksize=None)
    b = write_raster(tmp_path / "b.tif", second, nodata=nodata, blocksize=None, transform=T0 * Affine.translation(col, 0), **kw)
    return a, b


def test_merge_later_file_wins_and_gaps_are_nodata(tmp_path: Path) -> None:
    a, b = two_tiles(tmp_path, np.full((4, 6), 1, np.uint8), np.full((4, 6), 2, np.uint8), col=4)  # columns 4-5 overlap
    got = read_all(merge([a, b], tmp_path / "ab.vrt"))["data"][0]
    assert got.shape == (4, 10) and (got[:, :4] == 1).all() and (got[:, 4:] == 2).all()
    got = read_all(merge([b, a], tmp_path / "ba.tif"))["data"][0]
    assert (got[:, :6] == 1).all() and (got[:, 6:] == 2).all()
    c = write_raster(tmp_path / "c.tif", np.full((3, 3), 3, np.uint8), nodata=0, blocksize=None, transform=T0 * Affine.translation(12, 6))
    got = read_all(merge([a, c], tmp_path / "ac.tif"))["data"][0]
    assert got.shape == (9, 15) and got[5, 8] == 0 and got[7, 13] == 3 and got[0, 0] == 1
    assert (got == 0).sum() == 9 * 15 - 24 - 9


def test_merge_without_nodata_refuses_gaps(tmp_path: Path) -> None:
    a, b = two_tiles(tmp_path, np.ones((4, 6), np.uint8), np.ones((4, 6), np.uint8), col=8, nodata=None)
    with pytest.raises(InputError, match=r"uncovered \(row 0, column 6 .*a.tif.* no nodata"):
        merge([a, b], tmp_path / "m.tif")
    a2, b2 = two_tiles(tmp_path, np.ones((4, 6), np.uint8), np.ones((4, 6), np.uint8), col=6, nodata=None)
    assert read_all(merge([a2, b2], tmp_path / "m.tif"))["shape"] == (1, 4, 12)


def test_merge_directory_takes_tifs_in_name_order(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    write_raster(d / "b.TIFF", np.full((2, 2), 2, np.uint8), nodata=0, blocksize=None)
    write_raster(d / "a.tif", np.full((2, 2), 1, np.uint8), nodata=0, blocksize=None)
    (d / "notes.txt").write_text("x")
    (d / ".hidden.tif").write_text("x")
    vrt = merge(d, d / "all.vrt")
    assert read_all(vrt)["data"][0, 0, 0] == 2  # b after a: b wins
    # The directory now holds the VRT too; merging it again ignores it (not a .tif).
    assert read_all(merge(str(d), d / "all.vrt", overwrite=True))["data"][0, 0, 0] == 2


def test_merged_vrt_moves_with_its_tiles(tmp_path: Path) -> None:
    src = write_raster(tmp_path / "s.tif", scene("float32", 1, nodata=np.nan), nodata=np.nan)
    split(src, tmp_path / "a" / "t", grid="2x3")
    merge(tmp_path / "a" / "t", tmp_path / "a" / "mosaic.vrt")
    (tmp_path / "a").rename(tmp_path / "b")
    assert_same_raster(tmp_path / "b" / "mosaic.vrt", src)


def test_merge_errors_name_the_file(tmp_path: Path) -> None:
    base = np.ones((4, 4), np.uint16)
    a = write_raster(tmp_path / "a.tif", base, nodata=0, blocksize=None)
    cases: list[tuple[Path, type[Exception], str]] = [
        (write_raster(tmp_path / "crs.tif", base, nodata=0, crs="EPSG:32633", blocksize=None, transform=T0 * Affine.translation(4, 0)),
         GridMismatchError, "crs.tif' is in CRS EPSG:32633 but"),
        (write_raster(tmp_path / "res.tif", base, nodata=0, blocksize=None, transform=Affine(20.0, 0, 300040.0, 0, -20.0, 5600000.0)),
         GridMismatchError, "res.tif' has pixel size 20.0"),
        (write_raster(tmp_path / "shift.tif", base, nodata=0, blocksize=None, transform=T0 * Affine.translation(4.5, 0)),
         GridMismatchError, "shift.tif' is not aligned with the pixels of .*4.5 columns"),
        (write_raster(tmp_path / "dtype.tif", base.astype(np.int16), nodata=0, blocksize=None), InputError, "dtype.tif' is int16 but"),
        (write_raster(tmp_path / "bands.tif", np.ones((2, 4, 4), np.uint16), nodata=0, blocksize=None), InputError, "bands.tif' has 2 band"),
        (write_raster(tmp_path / "nodata.tif", base, nodata=65535, blocksize=None), InputError, "nodata.tif' has nodata 65535"),
    ]  # fmt: skip
    for other, exc, needle in cases:
        with pytest.raises(exc, match=needle):
            merge([a, other], tmp_path / "m.tif")
        assert not (tmp_path / "m.tif").exists() and hidden_files(tmp_path) == []
    # Within the tolerance of 1e-6 pixel an origin counts as aligned.
    near = write_raster(tmp_path / "near.tif", base, nodata=0, blocksize=None, transform=T0 * Affine.translation(4 + 1e-8, 0))
    assert read_all(merge([a, near], tmp_path / "m.tif"))["shape"] == (1, 4, 8)


def cli_inproc(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_cli_split_errors_exit_2_and_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sheets, "MAX_TILES", 1000)
    src = str(write_raster(tmp_path / "s.tif", scene("uint16", 1, nodata=0), nodata=0))
    out = tmp_path / "tiles"
    cases = [
        (["--grid", "4by4"], "'4by4'"),
        (["--grid", "0x3"], "'0x3'"),
        (["--grid", "4x4", "--tile-size", "40"], "not both"),
        ([], "--grid"),
        (["--grid", "200x3"], "--grid 200x3"),
        (["--grid", "3x200"], "--grid 3x200"),
        (["--tile-size", "big"], "'big'"),
        (["--tile-size", "0"], "--tile-size '0'"),
        (["--tile-size", "1"], "12707 tiles"),
        (["--grid", "2x2", "--compress", "brotli"], "brotli"),
    ]
    for extra, needle in cases:
        code, _, err = cli_inproc(capsys, "split", src, "-o", str(out), *extra)
        lines = err.strip().splitlines()
        assert code == 2, (extra, err)
        assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], (extra, err)
        assert not out.exists(), extra
    code, _, err = cli_inproc(capsys, "split", str(tmp_path / "missing.tif"), "-o", str(out), "--grid", "2x2")
    assert code == 2 and "missing.tif" in err and not out.exists()
    code, stdout, err = cli_inproc(capsys, "split", src, "-o", str(out), "--grid", "2x2")
    assert code == 0 and "4 tile(s) written" in stdout, err
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    code, _, err = cli_inproc(capsys, "split", src, "-o", str(out), "--grid", "2x2")
    assert code == 2 and err.count("\n") == 1 and "s_r000_c000.tif" in err and "--overwrite" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    code, _, err = cli_inproc(capsys, "split", src, "-o", src, "--grid", "2x2")
    assert code == 2 and "is a file, not a directory" in err


def test_cli_merge_errors_exit_2_and_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = np.ones((4, 4), np.uint16)
    a = str(write_raster(tmp_path / "a.tif", base, nodata=0, blocksize=None))
    bad = {
        "crs": write_raster(tmp_path / "crs.tif", base, nodata=0, crs="EPSG:4326", blocksize=None, transform=Affine(0.1, 0, 9, 0, -0.1, 50)),
        "res": write_raster(tmp_path / "res.tif", base, nodata=0, blocksize=None, transform=Affine(10.5, 0, 300040.0, 0, -10.5, 5600000.0)),
        "dtype": write_raster(tmp_path / "dtype.tif", base.astype(np.float32), nodata=0, blocksize=None),
        "bands": write_raster(tmp_path / "bands.tif", np.ones((3, 4, 4), np.uint16), nodata=0, blocksize=None),
        "shift": write_raster(tmp_path / "shift.tif", base, nodata=0, blocksize=None, transform=T0 * Affine.translation(0, 0.25)),
    }
    out = tmp_path / "m.tif"
    for key, other in bad.items():
        for target in (out, tmp_path / "m.vrt"):
            code, _, err = cli_inproc(capsys, "merge", a, str(other), "-o", str(target))
            lines = err.strip().splitlines()
            assert code == 2, (key, err)
            assert len(lines) == 1 and lines[0].startswith("Error: ") and f"{key}.tif" in lines[0] and " - " in lines[0], (key, err)
            assert not target.exists() and hidden_files(tmp_path) == [], key
    for args, needle in [
        ([], "at least one input"),
        ([str(tmp_path / "missing.tif")], "missing.tif"),
        ([a, "--compress", "brotli"], "brotli"),
        ([str(tmp_path), a], "directory among several inputs"),
        ([str(tmp_path / "empty")], "empty"),
    ]:
        (tmp_path / "empty").mkdir(exist_ok=True)
        code, _, err = cli_inproc(capsys, "merge", *args, "-o", str(out))
        assert code == 2 and err.count("\n") == 1 and needle in err, (args, err)
        assert not out.exists()
    code, _, err = cli_inproc(capsys, "merge", a, "-o", str(tmp_path / "no" / "dir" / "m.tif"))
    assert code == 2 and "no/dir" in err
    code, _, err = cli_inproc(capsys, "merge", a, "-o", a, "--overwrite")
    assert code == 2 and "also an input" in err
    out.write_bytes(b"old")
    code, _, err = cli_inproc(capsys, "merge", a, "-o", str(out))
    assert code == 2 and err.count("\n") == 1 and "m.tif" in err and "--overwrite" in err
    assert out.read_bytes() == b"old"
    code, stdout, err = cli_inproc(capsys, "merge", a, "-o", str(out), "--overwrite", "--no-overviews", "--compress", "deflate")
    assert code == 0 and "output:" in stdout, err
    assert read_all(out)["shape"] == (1, 4, 4)


def test_cli_round_trip_subprocess(tmp_path: Path) -> None:
    src = write_raster(tmp_path / "s.tif", scene("float32", 2, nodata=np.nan), nodata=np.nan, descriptions=["red", "nir"])

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tilewise.cli.main", *args], capture_output=True, text=True, timeout=300)

    r = run("split", str(src), "-o", str(tmp_path / "t"), "--tile-size", "40")
    assert r.returncode == 0 and "12 tile(s) written" in r.stdout, r.stderr
    r = run("-q", "merge", str(tmp_path / "t"), "-o", str(tmp_path / "m.tif"))
    assert r.returncode == 0 and r.stdout == "", r.stderr
    assert_same_raster(tmp_path / "m.tif", src)
    r = run("split", str(src), "-o", str(tmp_path / "t"), "--grid", "4by4")
    assert r.returncode == 2 and r.stderr.startswith("Error: --grid '4by4'") and r.stderr.count("\n") == 1


def test_api_is_exported_and_validates_before_reading(tmp_path: Path) -> None:
    assert tilewise.split is split and tilewise.merge is merge
    assert {"split", "merge"} <= set(tilewise.__all__)
    with pytest.raises(UsageError, match="not both"):
        split(tmp_path / "does-not-matter.tif", tmp_path / "t", grid="2x2", tile_size=10)
    with pytest.raises(InputError, match=r"does-not-exist\.tif"):
        split(tmp_path / "does-not-exist.tif", tmp_path / "t", grid="2x2")
    assert not (tmp_path / "t").exists()


def test_band_metadata_travels(tmp_path: Path) -> None:
    from tilewise.rasterfile import open_write

    path = tmp_path / "meta.tif"
    profile = {"driver": "GTiff", "width": 50, "height": 40, "count": 1, "dtype": "uint8", "crs": "EPSG:32632", "transform": T0, "nodata": 255}
    with open_write(path, **profile) as ds:
        ds.write(np.arange(2000, dtype=np.uint16).reshape(1, 40, 50).astype(np.uint8))
        ds.scales, ds.offsets, ds.units = (0.5,), (-10.0,), ("m",)
        ds.update_tags(AREA_OR_POINT="Point", SOURCE="test")
        ds.write_colormap(1, {0: (0, 0, 0, 255), 1: (255, 0, 0, 255), 255: (0, 0, 255, 255)})
    tiles = split(path, tmp_path / "t", grid="2x2")
    for out in (tiles[3], merge(tiles, tmp_path / "m.vrt"), merge(tiles, tmp_path / "m.tif")):
        with open_read(str(out)) as ds:
            assert ds.scales == (0.5,) and ds.offsets == (-10.0,) and ds.units == ("m",), out
            assert ds.tags()["AREA_OR_POINT"] == "Point" and ds.tags()["SOURCE"] == "test", out
            assert ds.colormap(1)[1] == (255, 0, 0, 255), out
    assert_same_raster(tmp_path / "m.tif", path)


@pytest.mark.realdata
def test_real_srtm_round_trip(shared_data: Path, tmp_path: Path) -> None:
    srtm = shared_data / "dem" / "spdatalarge" / "srtm.tif"
    if not srtm.is_file():
        pytest.skip(f"{srtm} not found")
    tiles = split(srtm, tmp_path / "t", grid="4x4")  # 457 x 465 does not divide by 4
    assert len(tiles) == 16 and read_all(tiles[0])["nodata"] == 65535
    assert_same_raster(merge(tmp_path / "t", tmp_path / "srtm.tif"), srtm)
    tiles = split(srtm, tmp_path / "u", tile_size=100)
    assert len(tiles) == 25
    assert_same_raster(merge(tiles, tmp_path / "srtm.vrt"), srtm)
