"""tilewise rasterize: polygon count and coverage on TMS tiles, against independent shapely/rasterio references.

The references work pixel by pixel with shapely (intersection areas with each pixel's
box, intersects) and rasterio's ``rowcol`` (centroid binning), on the whole set of
polygons, never through tilewise's kernels.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from rasterio.transform import rowcol

from tests.conftest import SHARED_DATA, write_raster
from tilewise.cli.main import main
from tilewise.errors import UsageError
from tilewise.polygons import rasterize, rasterize_job
from tilewise.tms import get_tile_set

STAGED = SHARED_DATA / "vectors" / "pdg_iwp" / "complete_workflow_staged"
UNSTAGED = SHARED_DATA / "vectors" / "pdg_iwp" / "complete_workflow_input" / "large-shapefile-example.shp"


def _polygons(n: int, seed: int, center: tuple[float, float] = (-148.83, 70.03), spread: float = 0.02, size: float = 0.0004) -> list[shapely.Geometry]:
    """Random small polygons (some concave, some with holes, a few MultiPolygons) near ``center`` in lon/lat."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        cx, cy = center[0] + rng.uniform(-spread, spread), center[1] + rng.uniform(-spread / 2, spread / 2)
        k = int(rng.integers(5, 9))
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        rad = size * rng.uniform(0.4, 1.0, k)
        shell = np.c_[cx + 2 * rad * np.cos(ang), cy + rad * np.sin(ang)]
        poly = shapely.Polygon(shell)
        poly = poly if poly.is_valid else poly.buffer(0)
        if i % 7 == 0:
            poly = poly.difference(shapely.Point(cx, cy).buffer(size * 0.2))
        if i % 11 == 0:
            poly = shapely.MultiPolygon([poly, shapely.affinity.translate(poly, 3 * size, 0)]) if poly.geom_type == "Polygon" else poly
        out.append(shapely.make_valid(poly))
    return out


def _write_layer(path: Path, geoms: list[shapely.Geometry], crs: str = "OGC:CRS84", **columns: list) -> Path:
    import geopandas as gpd

    gpd.GeoDataFrame(columns, geometry=geoms, crs=crs).to_file(path)
    return path


def _tile_arrays(root: Path, tms: str = "WorldCRS84Quad") -> dict[str, np.ndarray]:
    out = {}
    for f in sorted((root / "geotiff" / tms).rglob("*.tif")):
        with rasterio.open(f) as ds:
            out[str(f.relative_to(root))] = ds.read()
    return out


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def reference(geoms: np.ndarray, values: np.ndarray, transform, size: int) -> dict[str, np.ndarray]:
    """Per-pixel count (centroid), count-intersects, coverage, coverage-union and mean of ``values`` with shapely and rasterio only."""
    boxes = []
    for r in range(size):
        for c in range(size):
            x0, y0 = transform * (c, r)
            x1, y1 = transform * (c + 1, r + 1)
            boxes.append(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
    boxes_a = np.array(boxes, dtype=object)
    area = abs(transform.a * transform.e)
    tree = shapely.STRtree(geoms)
    bi, gi = tree.query(boxes_a, predicate="intersects")
    cov = np.zeros(size * size)
    np.add.at(cov, bi, shapely.area(shapely.intersection(geoms[gi], boxes_a[bi])) / area)
    hits = np.bincount(bi, minlength=size * size).astype(float)
    parts = shapely.get_parts(shapely.union_all(geoms))  # disjoint polygons: their areas per pixel add up to the union's
    ubi, upi = shapely.STRtree(parts).query(boxes_a, predicate="intersects")
    ucov = np.zeros(size * size)
    np.add.at(ucov, ubi, shapely.area(shapely.intersection(parts[upi], boxes_a[ubi])) / area)
    cent = shapely.centroid(geoms)
    rows, cols = rowcol(transform, shapely.get_x(cent), shapely.get_y(cent), op=math.floor)
    rows, cols = np.asarray(rows), np.asarray(cols)
    inside = (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)
    count = np.zeros((size, size))
    np.add.at(count, (rows[inside], cols[inside]), 1)
    total = np.zeros((size, size))
    np.add.at(total, (rows[inside], cols[inside]), values[inside])
    with np.errstate(invalid="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return {"count": count, "count-intersects": hits.reshape(size, size), "coverage": cov.reshape(size, size),
            "coverage-union": ucov.reshape(size, size), "mean": mean}  # fmt: skip


STATS = ["count", "count-intersects", "coverage", "coverage-union", "v:mean"]


def _check_against_reference(root: Path, geoms: np.ndarray, values: np.ndarray, zoom: int, tile_px: int, names: list[str] = STATS) -> int:
    """Compare every written tile at ``zoom`` with the reference; return how many were checked."""
    n = 0
    for f in sorted((root / "geotiff" / "WorldCRS84Quad" / str(zoom)).rglob("*.tif")):
        with rasterio.open(f) as ds:
            got = ds.read().astype(np.float64)
            transform = ds.transform
            assert ds.dtypes[0] == "float32" and ds.descriptions == tuple(names) and ds.compression is not None
            assert ds.nodata is not None and math.isnan(ds.nodata)
        ref = reference(geoms, values, transform, tile_px)
        assert np.array_equal(got[0], ref["count"]), f"count differs in {f}"
        assert np.array_equal(got[1], ref["count-intersects"]), f"count-intersects differs in {f}"
        # float32 output: compare within its precision (values up to a few units)
        assert np.nanmax(np.abs(got[2] - ref["coverage"])) <= 4e-7, f"coverage differs in {f}"
        assert np.nanmax(np.abs(got[3] - ref["coverage-union"])) <= 4e-7, f"coverage-union differs in {f}"
        np.testing.assert_allclose(got[4], ref["mean"].astype(np.float32), rtol=1e-6, equal_nan=True)
        n += 1
    return n


def test_synthetic_polygons_match_the_shapely_reference(tmp_path: Path) -> None:
    geoms = _polygons(400, 1)
    values = np.arange(len(geoms), dtype=float) * 0.5
    src = _write_layer(tmp_path / "p.gpkg", geoms, v=list(values))
    s = rasterize([str(src)], str(tmp_path / "out"), zoom=12, tile_px=64, stats=STATS, executor="serial")
    assert s.batch["report"]["kept"] == len(geoms)
    assert _check_against_reference(tmp_path / "out", np.array(geoms, dtype=object), values, 12, 64) >= 2


def test_exact_coverage_in_float64_within_1e_9(tmp_path: Path) -> None:
    """The kernel's coverage before the float32 output: ≤ 1e-9 from shapely's pixel-by-pixel areas."""
    from tilewise.ops.rasterize import PixelGrid, compute_stats, parse_stat

    geoms = np.array(_polygons(300, 2), dtype=object)
    lv = get_tile_set("WorldCRS84Quad").level(12, 64)
    cent = shapely.centroid(geoms)
    x = int((shapely.get_x(cent[0]) - lv.left) // lv.span_x)  # the tile of the first polygon
    y = int((lv.top - shapely.get_y(cent[0])) // lv.span_y)
    tf = lv.tile_grid(x, y, "OGC:CRS84").transform
    got = compute_stats([parse_stat("coverage")], geoms, shapely.get_x(cent), shapely.get_y(cent), np.zeros((0, len(geoms))),
                        PixelGrid(lv.left, lv.top, lv.xres, lv.yres), lv.tile_window(x, y))  # fmt: skip
    ref = reference(geoms, np.zeros(len(geoms)), tf, 64)["coverage"]
    assert ref.sum() > 10
    assert np.abs(got[0] - ref).max() <= 1e-9


def test_overlapping_polygons_sum_above_one_and_union_stays_below(tmp_path: Path) -> None:
    sq = shapely.box(-148.80, 70.00, -148.79, 70.005)
    src = _write_layer(tmp_path / "o.geojson", [sq, sq.buffer(0.001), shapely.Polygon()], crs="EPSG:4326")
    s = rasterize([str(src)], str(tmp_path / "out"), zoom=13, stats=["coverage", "coverage-union", "count"], executor="serial")
    assert s.batch["report"]["skipped"] == 1 and "empty" in s.batch["report"]["skipped_examples"][0]
    arrays = _tile_arrays(tmp_path / "out")
    cov = np.stack([a[0] for a in arrays.values()])
    union = np.stack([a[1] for a in arrays.values()])
    assert cov.max() == pytest.approx(2.0) and union.max() == pytest.approx(1.0) and union.max() <= 1.0
    assert sum(a[2].sum() for a in arrays.values()) == 2  # two polygons, two centroids


def test_broken_feature_is_repaired_and_reported(tmp_path: Path) -> None:
    bowtie = shapely.Polygon([(-148.80, 70.00), (-148.79, 70.005), (-148.79, 70.00), (-148.80, 70.005)])
    assert not bowtie.is_valid
    src = _write_layer(tmp_path / "b.gpkg", [bowtie, shapely.box(-148.78, 70.0, -148.775, 70.002)])
    s = rasterize([str(src)], str(tmp_path / "out"), zoom=13, stats=["coverage"], executor="serial")
    assert s.batch["report"]["repaired"] == 1 and s.batch["report"]["kept"] == 2
    total = sum(float(a[0].sum()) for a in _tile_arrays(tmp_path / "out").values())
    lv = get_tile_set("WorldCRS84Quad").level(13)
    expected = (shapely.make_valid(bowtie).area + 0.005 * 0.002) / (lv.xres * lv.yres)
    assert total == pytest.approx(expected, rel=1e-5)


def test_parents_are_the_sum_and_mean_of_their_children_down_to_z0(tmp_path: Path) -> None:
    geoms = _polygons(300, 3, spread=0.05)
    src = _write_layer(tmp_path / "p.gpkg", geoms, v=[float(i % 5) for i in range(len(geoms))])
    root = tmp_path / "out"
    rasterize([str(src)], str(root), zoom=11, tile_px=32, stats=["count", "coverage", "v:max"], parents=True, executor="serial")
    base = root / "geotiff" / "WorldCRS84Quad"
    assert (base / "0" / "0" / "0.tif").exists()
    for z in range(10, -1, -1):
        for f in (base / str(z)).rglob("*.tif"):
            x, y = int(f.parent.name), int(f.stem)
            with rasterio.open(f) as ds:
                parent = ds.read().astype(np.float64)
            big = np.zeros((3, 64, 64))
            big[2] = np.nan
            for dy in (0, 1):
                for dx in (0, 1):
                    c = base / str(z + 1) / str(2 * x + dx) / f"{2 * y + dy}.tif"
                    if c.exists():
                        with rasterio.open(c) as ds:
                            big[:, dy * 32 : (dy + 1) * 32, dx * 32 : (dx + 1) * 32] = ds.read()
            quads = big.reshape(3, 32, 2, 32, 2)
            np.testing.assert_array_equal(parent[0], quads[0].sum(axis=(1, 3)))
            np.testing.assert_allclose(parent[1], quads[1].mean(axis=(1, 3)).astype(np.float32), rtol=1e-6)
            with np.errstate(all="ignore"), __import__("warnings").catch_warnings():
                __import__("warnings").simplefilter("ignore", RuntimeWarning)
                np.testing.assert_array_equal(parent[2], np.nanmax(quads[2], axis=(1, 3)))
    # the count is conserved from z11 to z0
    with rasterio.open(base / "0" / "0" / "0.tif") as ds:
        assert ds.read(1).sum() == len(geoms)


def test_identical_bytes_across_executors_and_batching(tmp_path: Path) -> None:
    geoms = _polygons(300, 4, spread=0.05)
    src = _write_layer(tmp_path / "p.gpkg", geoms)
    runs = [dict(executor="serial"), dict(executor="processes", workers=2, tiles_per_task=1), dict(executor="threads", workers=3, tiles_per_task=3)]
    results = []
    for i, kw in enumerate(runs):
        rasterize([str(src)], str(tmp_path / f"o{i}"), zoom=12, tile_px=64, stats=["count", "coverage", "count-intersects"], parents=True, **kw)
        results.append(_tile_arrays(tmp_path / f"o{i}"))
    assert len(results[0]) > 10
    for other in results[1:]:
        assert other.keys() == results[0].keys()
        for k in other:
            assert np.array_equal(other[k], results[0][k], equal_nan=True), k


def test_copies_across_inputs_count_once_and_give_the_bytes_of_one_input(tmp_path: Path) -> None:
    """Staged copies (a polygon in every tile file it touches) give the same tiles as the unstaged layer, by id and by geometry."""
    geoms = _polygons(200, 5, spread=0.05)
    one = _write_layer(tmp_path / "all.gpkg", geoms)
    lv = get_tile_set("WorldCRS84Quad").level(12)
    b = shapely.bounds(np.array(geoms, dtype=object))
    tx = np.floor((b[:, 0] - lv.left) / lv.span_x).astype(int)
    parts = {}
    for i in range(len(geoms)):  # a copy into each neighbouring x-tile file the polygon's box reaches
        for x in {tx[i], int(np.floor((b[i, 2] - lv.left) / lv.span_x))}:
            parts.setdefault(x, []).append(i)
    assert sum(len(v) for v in parts.values()) > len(geoms)  # some polygons were copied
    staged = tmp_path / "staged"
    staged.mkdir()
    for x, idx in parts.items():
        _write_layer(staged / f"12_{x}.gpkg", [geoms[i] for i in reversed(idx)], staging_identifier=[f"id{i}" for i in reversed(idx)])
    rasterize([str(one)], str(tmp_path / "a"), zoom=12, stats=["count", "coverage"], executor="serial")
    s_id = rasterize([str(staged)], str(tmp_path / "b"), zoom=12, stats=["count", "coverage"], executor="serial")
    s_geom = rasterize([str(staged)], str(tmp_path / "c"), zoom=12, stats=["count", "coverage"], executor="serial", id_column=None)
    assert s_id.batch["report"]["id_column"] == "staging_identifier" and s_id.batch["report"]["kept"] == len(geoms)
    a, bb = _tile_arrays(tmp_path / "a"), _tile_arrays(tmp_path / "b")
    assert a.keys() == bb.keys()
    assert all(np.array_equal(a[k], bb[k]) for k in a)
    assert s_geom.batch["report"]["duplicates"] == sum(len(v) for v in parts.values()) - len(geoms)


def test_webtiles_pngs_and_viewer(tmp_path: Path) -> None:
    from PIL import Image

    geoms = _polygons(150, 6)
    src = _write_layer(tmp_path / "p.gpkg", geoms, v=[1.0] * len(geoms))
    root = tmp_path / "out"
    rasterize([str(src)], str(root), zoom=12, stats=["coverage", "v:mean"], parents=True, min_zoom=9, webtiles=True, palette={"coverage": "magma"},
              value_range={"coverage": (0, 1)}, executor="serial")  # fmt: skip
    pngs = sorted((root / "web_tiles" / "coverage" / "WorldCRS84Quad").rglob("*.png"))
    tifs = sorted((root / "geotiff" / "WorldCRS84Quad").rglob("*.tif"))
    assert len(pngs) == len(tifs) and {p.parent.parent.name for p in pngs} == {"9", "10", "11", "12"}
    for tif in tifs:
        rel = tif.relative_to(root / "geotiff")
        with rasterio.open(tif) as ds:
            mean_band = ds.read(2)
        im = np.asarray(Image.open(root / "web_tiles" / "v_mean" / rel.with_suffix(".png")))
        assert im.shape == (256, 256, 4)
        assert np.array_equal(im[..., 3] == 0, np.isnan(mean_band))  # transparent exactly where nodata
    html = (root / "web_tiles" / "index.html").read_text()
    assert "coverage/WorldCRS84Quad/{z}/{x}/{y}.png" in html and "v_mean/WorldCRS84Quad" in html
    rows = (root / "rasters_summary.csv").read_text().splitlines()
    assert rows[0] == "tile,stat,min,max,mean,sum" and len(rows) == 1 + 2 * len(tifs)
    record = json.loads((root / "job_record.json").read_text())
    assert record["staging"]["kept"] == len(geoms) and record["tiles_per_zoom"]["9"] >= 1


def test_like_raster_grid_is_tile_size_invariant_and_matches_the_reference(tmp_path: Path) -> None:
    from affine import Affine

    geoms = _polygons(300, 7, center=(500_000.0, 7_700_000.0), spread=6000.0, size=40.0)
    src = _write_layer(tmp_path / "u.gpkg", geoms, crs="EPSG:32606", v=[float(i) for i in range(len(geoms))])
    tf = Affine(7.0, 0.0, 493_000.0, 0.0, -7.0, 7_703_500.0)
    ref_tif = write_raster(tmp_path / "ref.tif", np.zeros((1, 1000, 1900), np.uint8), crs="EPSG:32606", transform=tf)
    outs = []
    for ts in (512, 1024):
        out = tmp_path / f"like{ts}.tif"
        rasterize([str(src)], str(out), like=str(ref_tif), stats=["count", "coverage"], tile_size=ts, executor="processes", workers=2)
        with rasterio.open(out) as ds:
            assert ds.transform == tf and ds.shape == (1000, 1900) and ds.descriptions == ("count", "coverage")
            outs.append(ds.read())
    assert np.array_equal(outs[0], outs[1])
    garr = np.array(geoms, dtype=object)
    r0, c0 = (int(v) - 24 for v in rowcol(tf, *shapely.centroid(garr[0]).coords[0]))  # a window around the first polygon
    sub = rasterio.windows.Window(c0, r0, 48, 48)
    ref = reference(garr, np.zeros(len(geoms)), rasterio.windows.transform(sub, tf), 48)
    assert ref["coverage"].sum() > 5
    np.testing.assert_array_equal(outs[0][0, r0 : r0 + 48, c0 : c0 + 48], ref["count"])
    assert np.abs(outs[0][1, r0 : r0 + 48, c0 : c0 + 48] - ref["coverage"]).max() <= 4e-7


def test_rerun_is_complete_and_a_lost_tile_is_rebuilt(tmp_path: Path) -> None:
    src = _write_layer(tmp_path / "p.gpkg", _polygons(100, 8))
    root = tmp_path / "out"
    rasterize([str(src)], str(root), zoom=12, stats=["count"], executor="serial")
    first = _tile_arrays(root)
    again = rasterize([str(src)], str(root), zoom=12, stats=["count"], executor="serial")
    assert again.already_complete
    victim = next(iter((root / "geotiff").rglob("*.tif")))
    victim.unlink()
    (root / "rasters_summary.csv").unlink()
    third = rasterize([str(src)], str(root), zoom=12, stats=["count"], executor="serial")
    assert third.tiles_run == 1
    assert all(np.array_equal(v, first[k]) for k, v in _tile_arrays(root).items())
    with pytest.raises(Exception, match="different job"):
        rasterize([str(src)], str(root), zoom=11, stats=["count"], executor="serial")


def test_stats_config_file_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _write_layer(tmp_path / "p.gpkg", _polygons(80, 9), Area=[float(i) for i in range(80)])
    cfg = tmp_path / "stats.toml"
    cfg.write_text('[[stat]]\nname = "iwp_coverage"\nkind = "coverage"\npalette = "#ffffff00,#ff0000"\nrange = [0, 1]\n\n'
                   '[[stat]]\nname = "Area:sum"\n\n[[stat]]\nname = "iwp_count"\nkind = "count"\nresampling = "max"\n')  # fmt: skip
    job = rasterize_job([str(src)], str(tmp_path / "o"), zoom=12, stats_config=str(cfg))
    assert job.rasterize is not None
    assert [s.name for s in job.rasterize.stats] == ["iwp_coverage", "Area:sum", "iwp_count"]
    assert job.rasterize.stats[0].range == (0.0, 1.0) and job.rasterize.stats[1].property == "Area" and job.rasterize.stats[2].resampling == "max"
    rc, out, _ = cli(capsys, "rasterize", str(src), "-o", str(tmp_path / "cli"), "--zoom", "12", "--stats-config", str(cfg), "--parents",
                     "--min-zoom", "10", "--executor", "serial")  # fmt: skip
    assert rc == 0 and "80 kept" in out and "z10: " in out
    with rasterio.open(next((tmp_path / "cli" / "geotiff").rglob("*.tif"))) as ds:
        assert ds.descriptions == ("iwp_coverage", "Area:sum", "iwp_count")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(zoom=13, stats=["cover"]), r"unknown statistic 'cover'.*did you mean 'coverage'"),
        (dict(zoom=13, tms="WorldCRS84"), r"unknown tile matrix set 'WorldCRS84'"),
        (dict(zoom=40), r"--zoom 40 is outside the zoom levels of WorldCRS84Quad \(0..23\)"),
        (dict(), r"no --zoom given"),
        (dict(zoom=13, stats=["Area:avg"]), r"unknown aggregation 'avg'"),
        (dict(zoom=13, stats=["count", "count"]), r"'count' is asked for twice"),
        (dict(zoom=13, palette="not_a_cmap", webtiles=True), r"not_a_cmap"),
        (dict(zoom=13, value_range="coverage=1,0"), r"reversed"),
    ],
)
def test_bad_options_name_the_value(tmp_path: Path, kwargs: dict, match: str) -> None:
    src = _write_layer(tmp_path / "p.gpkg", _polygons(5, 10))
    with pytest.raises(UsageError, match=match):
        rasterize_job([str(src)], str(tmp_path / "o"), **kwargs)


def test_bad_inputs_exit_2_with_one_line_and_no_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import geopandas as gpd

    pts = _write_layer(tmp_path / "pts.gpkg", [shapely.Point(0, 0), shapely.Point(1, 1)])
    gpd.GeoDataFrame({"a": []}, geometry=[], crs="EPSG:4326").to_file(tmp_path / "empty.gpkg")
    nocrs = _write_layer(tmp_path / "nocrs.shp", [shapely.box(0, 0, 1, 1)])
    nocrs.with_suffix(".prj").unlink()  # a Shapefile without its .prj
    poly = _write_layer(tmp_path / "poly.gpkg", _polygons(5, 11))
    cases = [
        ([str(pts)], "Point geometries"),
        ([str(tmp_path / "empty.gpkg")], "hold no features"),
        ([str(poly), "--stat", "Height:mean"], "property 'Height' is not a field"),
        ([str(tmp_path / "missing.gpkg")], "does not exist"),
        ([str(nocrs)], "has no CRS"),
    ]
    for args, msg in cases:
        out = tmp_path / f"out{len(msg)}"
        rc, _, err_text = cli(capsys, "rasterize", *args, "-o", str(out), "--zoom", "12", "--executor", "serial")
        err = err_text.strip().splitlines()
        assert rc == 2 and len(err) == 1 and msg in err[0], (args, err)
        assert not (out / "geotiff").exists() and not (out / "rasters_summary.csv").exists()


@pytest.mark.realdata
def test_real_ice_wedge_polygons_staged_match_references(shared_data: Path, tmp_path: Path) -> None:
    import geopandas as gpd
    import pandas as pd

    files = sorted(STAGED.glob("*.gpkg"))
    assert len(files) == 4
    root = tmp_path / "staged"
    s = rasterize([str(f) for f in files], str(root), zoom=13, stats=[*STATS[:4], "Area:mean"], parents=True, executor="processes", workers=2)
    rep = s.batch["report"]
    assert (rep["read"], rep["kept"], rep["duplicates"]) == (14465, 14281, 184)
    frames = pd.concat([gpd.read_file(f) for f in files]).drop_duplicates("staging_identifier")
    geoms = np.asarray(frames.geometry.values, dtype=object)
    values = frames["Area"].to_numpy(dtype=float)
    assert _check_against_reference(root, geoms, values, 13, 256, [*STATS[:4], "Area:mean"]) == 4
    # Before the float32 output: the coverage of every pixel within 1e-9 of shapely's intersection areas
    from tilewise.ops.rasterize import PixelGrid, compute_stats, parse_stat
    from tilewise.sources.vector import Staged

    lv = get_tile_set("WorldCRS84Quad").level(13)
    for f in sorted((root / "geotiff" / "WorldCRS84Quad" / "13").rglob("*.tif")):
        x, y = int(f.parent.name), int(f.stem)
        g, cx, cy, props = Staged(root / ".tilewise" / "staged").in_tile(y * lv.cols + x)
        got = compute_stats([parse_stat("coverage")], g, cx, cy, props, PixelGrid(lv.left, lv.top, lv.xres, lv.yres), lv.tile_window(x, y))
        ref = reference(geoms, values, lv.tile_grid(x, y, "OGC:CRS84").transform, 256)["coverage"]
        assert np.abs(got[0] - ref).max() <= 1e-9, f
    assert (root / "geotiff" / "WorldCRS84Quad" / "0" / "0" / "0.tif").exists()
    with rasterio.open(root / "geotiff" / "WorldCRS84Quad" / "0" / "0" / "0.tif") as ds:
        assert ds.read(1).sum() == 14281  # every centroid counted once, up to z0


@pytest.mark.realdata
def test_real_unstaged_shapefile_gives_identical_tiles_where_the_polygons_are_identical(shared_data: Path, tmp_path: Path) -> None:
    """The staged copies of 162 polygons differ from the raw input (the Gateway's staging changed them): elsewhere tiles are bit-identical."""
    import geopandas as gpd

    files = [str(f) for f in sorted(STAGED.glob("*.gpkg"))]
    rasterize(files, str(tmp_path / "a"), zoom=13, stats=["count", "coverage"], executor="serial")
    rasterize([str(UNSTAGED)], str(tmp_path / "b"), zoom=13, stats=["count", "coverage"], executor="serial")
    a, b = _tile_arrays(tmp_path / "a"), _tile_arrays(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) == 4
    raw = np.asarray(gpd.read_file(UNSTAGED).geometry.values, dtype=object)
    staged = np.concatenate([np.asarray(gpd.read_file(f).geometry.values, dtype=object) for f in files])
    key = set(shapely.to_wkb(shapely.normalize(staged)))
    changed = raw[[w not in key for w in shapely.to_wkb(shapely.normalize(raw))]]
    assert 0 < len(changed) < 200
    lv = get_tile_set("WorldCRS84Quad").level(13)
    same_pixels = 0
    for k in a:
        _, _, _, x, yf = Path(k).parts
        tf = lv.tile_grid(int(x), int(Path(yf).stem), "OGC:CRS84").transform
        touched = np.zeros((256, 256), bool)
        for g in changed:  # every pixel a changed polygon (raw or staged version) may reach, plus a pixel of margin
            minx, miny, maxx, maxy = g.buffer(2 * lv.xres).bounds
            r0, c0 = rowcol(tf, minx, maxy, op=math.floor)
            r1, c1 = rowcol(tf, maxx, miny, op=math.floor)
            touched[max(r0, 0) : max(min(r1 + 1, 256), 0), max(c0, 0) : max(min(c1 + 1, 256), 0)] = True
        keep = ~touched
        assert np.array_equal(a[k][:, keep], b[k][:, keep]), k
        same_pixels += int(keep.sum())
    assert same_pixels > 0.9 * 4 * 256 * 256


def test_job_file_runs_a_rasterize_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _write_layer(tmp_path / "p.gpkg", _polygons(40, 12))
    job = tmp_path / "job.toml"
    job.write_text(f'command = "rasterize"\ninputs = ["{src}"]\noutput = "{tmp_path / "o"}"\nzoom = 12\n'
                   'stats = ["count", { name = "cov", kind = "coverage" }]\nparents = true\nmin_zoom = 11\nexecutor = "serial"\n')  # fmt: skip
    rc, out, _ = cli(capsys, "run", str(job))
    assert rc == 0 and "40 kept" in out
    with rasterio.open(next((tmp_path / "o" / "geotiff" / "WorldCRS84Quad" / "11").rglob("*.tif"))) as ds:
        assert ds.descriptions == ("count", "cov") and ds.read(1).sum() == 40
    rc, out, _ = cli(capsys, "status", str(tmp_path / "o"))
    assert rc == 0 and "complete" in out


@pytest.mark.engines
@pytest.mark.parametrize("engine", ["dask", "parsl"])
def test_cluster_engines_give_the_serial_bytes(tmp_path: Path, engine: str) -> None:
    pytest.importorskip("distributed" if engine == "dask" else "parsl")
    src = _write_layer(tmp_path / "p.gpkg", _polygons(300, 13, spread=0.05))
    kw = dict(zoom=12, tile_px=64, stats=["count", "coverage"], parents=True, min_zoom=9)
    rasterize([str(src)], str(tmp_path / "serial"), executor="serial", **kw)
    rasterize([str(src)], str(tmp_path / engine), executor=engine, workers=2, tiles_per_task=2, **kw)
    a, b = _tile_arrays(tmp_path / "serial"), _tile_arrays(tmp_path / engine)
    assert a.keys() == b.keys() and len(a) > 8
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("suffix", [".shp", ".geojson", ".fgb", ".parquet"])
def test_every_vector_format_gives_the_geopackage_tiles(tmp_path: Path, suffix: str) -> None:
    import geopandas as gpd

    geoms = _polygons(120, 14)
    values = [float(i) for i in range(len(geoms))]
    ref = _write_layer(tmp_path / "p.gpkg", geoms, v=values)
    other = tmp_path / f"p{suffix}"
    frame = gpd.GeoDataFrame({"v": values}, geometry=geoms, crs="OGC:CRS84")
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
        frame.to_parquet(other)
    else:
        frame.to_file(other)
    kw = dict(zoom=12, stats=["count", "coverage", "v:sum"], executor="serial")
    rasterize([str(ref)], str(tmp_path / "a"), **kw)
    rasterize([str(other)], str(tmp_path / "b"), **kw)
    a, b = _tile_arrays(tmp_path / "a"), _tile_arrays(tmp_path / "b")
    assert a.keys() == b.keys() and a
    assert all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


def test_features_are_reprojected_to_the_tms_crs_and_web_mercator_works(tmp_path: Path) -> None:
    """Polygons in UTM on WebMercatorQuad tiles equal the reference computed from the same polygons reprojected by geopandas."""
    import geopandas as gpd

    utm = _polygons(200, 15, center=(500_000.0, 7_700_000.0), spread=4000.0, size=30.0)
    src = _write_layer(tmp_path / "u.gpkg", utm, crs="EPSG:32606")
    root = tmp_path / "o"
    s = rasterize([str(src)], str(root), tms="WebMercatorQuad", zoom=14, tile_px=128, stats=["count", "coverage"], parents=True, min_zoom=12,
                  webtiles=True, executor="serial")  # fmt: skip
    assert s.batch["report"]["kept"] == 200
    merc = np.asarray(gpd.GeoSeries(utm, crs="EPSG:32606").to_crs("EPSG:3857").values, dtype=object)
    n = 0
    for f in sorted((root / "geotiff" / "WebMercatorQuad" / "14").rglob("*.tif")):
        with rasterio.open(f) as ds:
            got = ds.read().astype(np.float64)
            ref = reference(merc, np.zeros(len(merc)), ds.transform, 128)
        assert np.array_equal(got[0], ref["count"])
        assert np.abs(got[1] - ref["coverage"]).max() <= 4e-6  # reprojected vertices: pyproj through geopandas vs through tilewise's staging
        n += 1
    assert n >= 1 and (root / "web_tiles" / "index.html").exists()
    assert "EPSG3857" in (root / "web_tiles" / "index.html").read_text()


def test_a_ring_counts_where_its_centroid_is_even_in_a_tile_it_does_not_reach(tmp_path: Path) -> None:
    lv = get_tile_set("WorldCRS84Quad").level(14, 32)
    x, y = 5000, 1500
    left, bottom, right, top = lv.tile_bounds(x, y)
    w = right - left
    ring = shapely.box(left - 2 * w, bottom - 2 * w, right + 2 * w, top + 2 * w).difference(shapely.box(left - w, bottom - w, right + w, top + w))
    src = _write_layer(tmp_path / "r.gpkg", [ring], v=[7.0])
    tiles = rasterize([str(src)], str(tmp_path / "o"), zoom=14, tile_px=32, stats=["count", "v:sum"], executor="serial")
    arrays = _tile_arrays(tmp_path / "o")
    assert tiles.batch["report"]["kept"] == 1
    assert sum(float(a[0].sum()) for a in arrays.values()) == 1  # counted once, in the tile of its centroid (inside the hole)
    assert f"geotiff/WorldCRS84Quad/14/{x}/{y}.tif" in arrays


def test_kill_leftovers_ids_without_value_output_inside_input_and_tile_px(tmp_path: Path) -> None:
    geoms = _polygons(30, 16)
    data = tmp_path / "data"
    data.mkdir()
    _write_layer(data / "p.gpkg", geoms, staging_identifier=[None] * 10 + [f"id{i}" for i in range(20)])
    out = data / "out"  # the output inside the input folder: its own files are never taken as inputs
    s = rasterize([str(data)], str(out), zoom=12, stats=["count"], executor="serial")
    assert s.batch["report"]["kept"] == 30 and s.batch["report"]["duplicates"] == 0  # features without an id are not copies of each other
    (out / ".tilewise" / ".staged.999.staging").mkdir()  # what a kill during staging leaves
    (out / ".junk.tmp").mkdir()
    (out / "rasters_summary.csv").unlink()
    again = rasterize([str(data)], str(out), zoom=12, stats=["count"], executor="serial")
    assert not again.failed and not (out / ".tilewise" / ".staged.999.staging").exists()
    with pytest.raises(UsageError, match=r"--tile-px 8 is not valid"):
        rasterize_job([str(data)], str(tmp_path / "o2"), zoom=12, tile_px=8)


def test_like_job_sees_a_reference_replaced_at_the_same_path(tmp_path: Path) -> None:
    from affine import Affine

    src = _write_layer(tmp_path / "u.gpkg", _polygons(50, 17, center=(500_000.0, 7_700_000.0), spread=2000.0, size=40.0), crs="EPSG:32606")
    ref = tmp_path / "ref.tif"
    write_raster(ref, np.zeros((1, 600, 600), np.uint8), crs="EPSG:32606", transform=Affine(7.0, 0.0, 497_900.0, 0.0, -7.0, 7_702_100.0))
    out = tmp_path / "like.tif"
    first = rasterize([str(src)], str(out), like=str(ref), stats=["coverage"], executor="serial")
    assert first.batch["report"]["kept"] == 50
    write_raster(ref, np.zeros((1, 600, 600), np.uint8), crs="EPSG:32606", transform=Affine(7.0, 0.0, 497_950.0, 0.0, -7.0, 7_702_100.0))
    with pytest.raises(Exception, match=r"already exists|different job"):
        rasterize([str(src)], str(out), like=str(ref), stats=["coverage"], executor="serial")
    again = rasterize([str(src)], str(out), like=str(ref), stats=["coverage"], executor="serial", overwrite=True)
    assert not again.already_complete
    with rasterio.open(out) as ds:
        assert ds.transform.c == 497_950.0


def test_planning_a_like_job_stages_nothing(tmp_path: Path) -> None:
    """Only a run (under the work directory's lock) stages: status and batch workers plan without side effects."""
    from affine import Affine

    from tilewise.job import plan_job

    src = _write_layer(tmp_path / "u.gpkg", _polygons(20, 18, center=(500_000.0, 7_700_000.0), spread=1000.0, size=40.0), crs="EPSG:32606")
    ref = write_raster(tmp_path / "ref.tif", np.zeros((1, 300, 300), np.uint8), crs="EPSG:32606", transform=Affine(7.0, 0.0, 498_900.0, 0.0, -7.0, 7_701_100.0))
    job = rasterize_job([str(src)], str(tmp_path / "o.tif"), like=str(ref), stats=["count"], executor="serial")
    plan_job(job)
    assert not (job.workdir / "staged").exists()
    rasterize([str(src)], str(tmp_path / "o.tif"), like=str(ref), stats=["count"], executor="serial")
    assert (job.workdir / "staged" / "meta.json").exists()
