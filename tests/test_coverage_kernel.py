"""Exact polygon coverage, feature counts and point binning of tilewise.kernels.coverage, against shapely and plain Python."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from shapely.geometry import MultiPolygon, Polygon, box

from tilewise.kernels.coverage import AGGREGATIONS, PixelPolygons, aggregate, centroid_cells, coverage_and_intersects, to_pixel_polygons

# A grid with power-of-two resolutions, so pixel coordinates of "round" world coordinates are exact.
LEFT, TOP, XRES, YRES = 100.0, 200.0, 0.5, 0.25
WINDOW = (0, 0, 12, 14)


def world(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates of the test grid to world coordinates."""
    return LEFT + np.asarray(u) * XRES, TOP - np.asarray(v) * YRES


def pixel_boxes(window: tuple[int, int, int, int]) -> np.ndarray:
    """Every pixel of the window as a world-coordinate box, shape (h, w)."""
    r0, c0, h, w = window
    rr, cc = np.mgrid[r0 : r0 + h, c0 : c0 + w]
    x0, y1 = world(cc, rr)
    x1, y0 = world(cc + 1, rr + 1)
    return shapely.box(x0, y0, x1, y1)


def reference(geoms: list, window: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shapely: Σ area(feature ∩ pixel) / area(pixel), Σ intersects, Σ (area > 0), each (h, w)."""
    boxes = pixel_boxes(window)
    cov = np.zeros(boxes.shape)
    inter = np.zeros(boxes.shape, dtype=int)
    positive = np.zeros(boxes.shape, dtype=int)
    for g in geoms:
        if g is None or g.is_empty:
            continue
        a = shapely.area(shapely.intersection(g, boxes)) / (XRES * YRES)
        cov += a
        inter += shapely.intersects(g, boxes)
        positive += a > 0
    return cov, inter, positive


def star(cu: float, cv: float, gaps: list[float], radii: list[float]) -> Polygon:
    """A star-shaped (so simple, often concave) polygon around (cu, cv) in pixel coordinates, as world coordinates."""
    ang = np.cumsum(gaps)
    ang = ang / ang[-1] * 2 * np.pi
    r = np.resize(np.asarray(radii, dtype=float), ang.size)
    x, y = world(cu + r * np.cos(ang), cv + r * np.sin(ang))
    return Polygon(np.column_stack([x, y]))


def polygonal(g: shapely.Geometry) -> shapely.Geometry:
    """The polygons of an overlay's result (snapping can leave lines or points beside them)."""
    if isinstance(g, Polygon | MultiPolygon):
        return g
    polys = [p for p in shapely.get_parts(g) if isinstance(p, Polygon)]
    return MultiPolygon(polys) if polys else Polygon()


def rng_feature(rng: np.random.Generator, span: float = 12.0, max_r: float = 4.0) -> Polygon | MultiPolygon:
    """A random feature with continuous coordinates: one or two stars, maybe a hole, maybe reversed."""
    stars = []
    for _ in range(rng.integers(1, 3)):
        n = int(rng.integers(3, 10))
        cu, cv = rng.uniform(-2, span + 2, 2)
        radii = rng.uniform(0.3, max_r, n)
        stars.append((cu, cv, radii, star(cu, cv, list(rng.uniform(0.2, 1.0, n)), list(radii))))
    g = shapely.union_all([s[3] for s in stars])
    cu, cv, radii, _ = stars[0]
    if rng.random() < 0.5 and radii.min() > 0.6:
        g = g.difference(star(cu, cv, list(rng.uniform(0.2, 1.0, 5)), list(rng.uniform(0.2, 0.9, 5) * radii.min())))
    if rng.random() < 0.5:
        g = shapely.reverse(g)
    return g


def check_coverage(geoms: list, window: tuple[int, int, int, int] = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    pp = to_pixel_polygons(np.array(geoms, dtype=object), LEFT, TOP, XRES, YRES)
    cov, cnt = coverage_and_intersects(pp, window)
    assert cnt is not None
    ref, _, positive = reference(geoms, window)
    assert cov.shape == cnt.shape == window[2:]
    assert cov.dtype == np.float64 and cnt.dtype == np.int32
    np.testing.assert_allclose(cov, ref, rtol=0, atol=1e-9)
    # Pixels outside every feature are exactly 0, never rounding noise.
    assert np.all(cov[positive == 0] == 0.0)
    return cov, cnt


# ---------------------------------------------------------------- coverage against shapely


coord = st.floats(-3.0, 15.0, allow_nan=False, allow_infinity=False)


@st.composite
def features(draw: st.DrawFn) -> list:
    """Random features: unions of stars, holes, differences, grid snapping (edges on grid lines), both windings, empties."""
    out: list = []
    for _ in range(draw(st.integers(1, 4))):
        parts = []
        for _ in range(draw(st.integers(1, 2))):
            n = draw(st.integers(3, 8))
            cu, cv = draw(coord), draw(coord)
            gaps = draw(st.lists(st.floats(0.2, 1.0), min_size=n, max_size=n))
            radii = draw(st.lists(st.floats(0.3, 6.0), min_size=1, max_size=n))
            parts.append(star(cu, cv, gaps, radii))
        kind = draw(st.sampled_from(["plain", "hole", "cut", "box"]))
        hole_r, quad = draw(st.floats(0.05, 0.6)), draw(st.integers(1, 4))
        cut = star(draw(coord), draw(coord), [1.0, 1.0, 1.0, 1.0, 1.0], [draw(st.floats(0.5, 4.0))])
        x0, y1 = world(draw(coord), draw(coord))
        bx = box(x0, y1 - draw(st.floats(0.05, 2.0)), x0 + draw(st.floats(0.1, 4.0)), y1)
        snap, reverse = draw(st.booleans()), draw(st.booleans())
        try:
            g = shapely.union_all([shapely.make_valid(p) for p in parts])
            if kind == "hole":
                g = g.difference(shapely.buffer(shapely.centroid(parts[0]), hole_r, quad_segs=quad))
            elif kind == "cut":
                g = g.difference(cut)
            elif kind == "box":
                g = g.union(bx)
            if snap:
                # Vertices on multiples of 0.25 world units: u on multiples of 0.5, v on integers (edges along grid lines).
                # (through WKB, which drops the geometry's precision grid: GEOS would also snap the reference's overlays to it)
                g = shapely.from_wkb(shapely.to_wkb(shapely.set_precision(g, 0.25)))
        except shapely.errors.GEOSException:  # a near-degenerate star that GEOS cannot overlay
            assume(False)
        g = polygonal(g)
        assume(shapely.is_valid(g))
        out.append(shapely.reverse(g) if reverse else g)
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(features())
def test_coverage_matches_shapely(geoms: list) -> None:
    _, cnt = check_coverage(geoms)
    _, inter, positive = reference(geoms, WINDOW)
    # A feature counts where it covers a positive area of the pixel; shapely's intersects also counts touching.
    assert np.all(cnt <= inter)
    np.testing.assert_array_equal(cnt, positive)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_count_matches_shapely_intersects(seed: int) -> None:
    rng = np.random.default_rng(seed)
    geoms = [rng_feature(rng) for _ in range(int(rng.integers(1, 6)))]
    pp = to_pixel_polygons(np.array(geoms, dtype=object), LEFT, TOP, XRES, YRES)
    u, v = pp.coords[:, 0], pp.coords[:, 1]
    assert not np.any(u == np.floor(u)) and not np.any(v == np.floor(v))  # vertices off grid lines
    cov, cnt = coverage_and_intersects(pp, WINDOW)
    ref, inter, _ = reference(geoms, WINDOW)
    np.testing.assert_allclose(cov, ref, rtol=0, atol=1e-9)
    assert cnt is not None
    np.testing.assert_array_equal(cnt, inter)
    # Without the count: the same coverage bits.
    cov2, none = coverage_and_intersects(pp, WINDOW, intersects=False)
    assert none is None and np.array_equal(cov2, cov)


def test_grid_aligned_box_exact() -> None:
    x0, y1 = world(2, 3)
    x1, y0 = world(7, 5)
    cov, cnt = check_coverage([box(x0, y0, x1, y1)])
    want = np.zeros(WINDOW[2:])
    want[3:5, 2:7] = 1.0
    assert np.array_equal(cov, want)  # exactly 1 inside, exactly 0 outside
    # Touching along pixel edges does not count: exactly the covered pixels.
    assert cnt is not None
    np.testing.assert_array_equal(cnt, want.astype(np.int32))


@pytest.mark.parametrize("reverse", [False, True])
def test_fixed_shapes(reverse: bool) -> None:
    x, y = world(np.array([1.5, 9.25, 9.25, 5.0, 5.0, 1.5]), np.array([1.0, 1.0, 8.0, 8.0, 4.5, 4.5]))
    concave = Polygon(np.column_stack([x, y]))  # an L: vertical and horizontal edges, some on grid lines
    hx, hy = world(np.array([6.3, 8.7, 8.7, 6.3]), np.array([2.2, 2.2, 6.6, 6.6]))
    with_hole = Polygon(np.column_stack(world([0.0, 13.0, 13.0, 0.0], [0.0, 0.0, 11.0, 11.0])), [np.column_stack([hx, hy])])
    tx, ty = world(np.array([-5.0, 20.0, 3.3]), np.array([-4.0, 2.5, 30.0]))
    outside = Polygon(np.column_stack([tx, ty]))  # partly outside the window on three sides
    bx, by = world(np.array([10.0, 12.0]), np.array([9.0, 11.0]))
    multi = MultiPolygon([box(bx[0], by[1], bx[1], by[0]), box(*world(-3, 3)[0:1], *world(0.5, 2)[1:2], *world(-1, 2)[0:1], *world(0.5, 1)[1:2])])
    geoms = [concave, with_hole, outside, multi, Polygon()]
    if reverse:
        geoms = [shapely.reverse(g) for g in geoms]
    cov, _ = check_coverage(geoms)
    assert cov.max() > 2  # overlaps add up


def test_polygon_covering_the_window_and_far_beyond() -> None:
    x0, y1 = world(-1e5, -2e5)
    x1, y0 = world(3e5, 1e5)
    pp = to_pixel_polygons(np.array([box(x0, y0, x1, y1), box(x0, y0, x1, y1)], dtype=object), LEFT, TOP, XRES, YRES)
    cov, cnt = coverage_and_intersects(pp, (5000, 7000, 64, 80))
    assert np.array_equal(cov, np.full((64, 80), 2.0))
    assert cnt is not None and np.all(cnt == 2)


def test_big_polygon_many_vertices() -> None:
    # A disc of radius 3000 pixels (8000 vertices), windows across its edge, inside it and outside it.
    cu, cv = 5000.3172, 4000.4519  # vertices off grid lines: no measure-zero touching for intersects
    x, y = world(cu, cv)
    disc = shapely.Point(x, y).buffer(3000 * XRES, quad_segs=2000)
    disc = shapely.affinity.scale(disc, 1.0, YRES / XRES, origin=(x, y))  # a circle in pixel units
    pp = to_pixel_polygons(np.array([disc], dtype=object), LEFT, TOP, XRES, YRES)
    for window in [(3990, 1990, 24, 40), (1010, 4990, 30, 20), (3000, 4000, 50, 50), (100, 100, 20, 20)]:
        cov, cnt = coverage_and_intersects(pp, window)
        ref, inter, _ = reference([disc], window)
        np.testing.assert_allclose(cov, ref, rtol=0, atol=1e-9)
        assert cnt is not None
        np.testing.assert_array_equal(cnt, inter)
    assert np.array_equal(cov, np.zeros((20, 20))) and not cnt.any()
    cov, _ = coverage_and_intersects(pp, (3000, 4000, 50, 50))
    assert np.array_equal(cov, np.ones((50, 50)))


def test_non_finite_coordinates_rejected() -> None:
    pp = PixelPolygons(np.array([[0.0, 0.0], [np.nan, 1.0], [1.0, 1.0], [0.0, 0.0]]), np.array([0, 4]), np.array([0, 1]), np.array([0, 1]))
    with pytest.raises(ValueError, match="finite"):
        coverage_and_intersects(pp, (0, 0, 2, 2))


def test_polygon_left_of_window_and_crossing_it() -> None:
    rng = np.random.default_rng(5)
    geoms = [rng_feature(rng, span=30.0, max_r=6.0) for _ in range(20)]
    pp = to_pixel_polygons(np.array(geoms, dtype=object), LEFT, TOP, XRES, YRES)
    for window in [(4, 9, 7, 5), (0, 20, 30, 3), (10, -3, 5, 40), (40, 40, 3, 3)]:
        cov, cnt = coverage_and_intersects(pp, window)
        ref, inter, _ = reference(geoms, window)
        np.testing.assert_allclose(cov, ref, rtol=0, atol=1e-9)
        assert cnt is not None
        np.testing.assert_array_equal(cnt, inter)


# ---------------------------------------------------------------- tiling


def part_pixel_boxes(pp: PixelPolygons) -> np.ndarray:
    """(n_parts, 4) global pixel rows/cols (rmin, rmax, cmin, cmax) of every non-empty part's box."""
    b = pp.part_bounds
    b = b[~np.isnan(b[:, 0])]
    return np.floor(b[:, [1, 3, 0, 2]]).astype(int)


def test_sub_window_invariance() -> None:
    rng = np.random.default_rng(11)
    geoms = [rng_feature(rng, span=36.0) for _ in range(40)]
    pp = to_pixel_polygons(np.array(geoms, dtype=object), LEFT, TOP, XRES, YRES)
    big = (-8, -8, 56, 56)
    cov_big, cnt_big = coverage_and_intersects(pp, big)
    assert cnt_big is not None
    boxes = part_pixel_boxes(pp)
    assert boxes[:, 0].min() > big[0] and boxes[:, 2].min() > big[1]
    compared = 0
    for i, g in enumerate(geoms):
        one = to_pixel_polygons(np.array([g], dtype=object), LEFT, TOP, XRES, YRES)
        fb = part_pixel_boxes(one)
        lo_r, hi_r, lo_c, hi_c = fb[:, 0].min(), fb[:, 1].max(), fb[:, 2].min(), fb[:, 3].max()
        m = rng.integers(0, 4, 4)
        win = (int(lo_r - m[0]), int(lo_c - m[1]), int(hi_r - lo_r + 1 + m[0] + m[2]), int(hi_c - lo_c + 1 + m[1] + m[3]))
        cov, cnt = coverage_and_intersects(pp, win)
        assert cnt is not None
        r0, c0, h, w = win
        sl = (slice(r0 - big[0], r0 - big[0] + h), slice(c0 - big[1], c0 - big[1] + w))
        # Pixels touched only by parts whose boxes lie inside the sub-window: the same bits.
        ok = np.ones((h, w), dtype=bool)
        for br0, br1, bc0, bc1 in boxes:
            inside = br0 >= r0 and br1 < r0 + h and bc0 >= c0 and bc1 < c0 + w
            if not inside:
                ok[max(br0 - r0, 0) : max(br1 - r0 + 1, 0), max(bc0 - c0, 0) : max(bc1 - c0 + 1, 0)] = False
        compared += int((ok & (cov != 0)).sum())
        assert np.array_equal(cov[ok].view(np.int64), cov_big[sl][ok].view(np.int64)), i
        # Elsewhere the same values up to rounding, and the same counts everywhere.
        np.testing.assert_allclose(cov, cov_big[sl], rtol=0, atol=1e-12)
        np.testing.assert_array_equal(cnt, cnt_big[sl])
    assert compared > 300


def test_fixed_blocks_match_whole_window_and_repeat_bitwise() -> None:
    rng = np.random.default_rng(3)
    geoms = [rng_feature(rng, span=44.0, max_r=7.0) for _ in range(60)]
    pp = to_pixel_polygons(np.array(geoms, dtype=object), LEFT, TOP, XRES, YRES)
    whole, cnt_whole = coverage_and_intersects(pp, (0, 0, 48, 48))
    assert cnt_whole is not None
    tiled = np.empty_like(whole)
    for r in range(0, 48, 16):
        for c in range(0, 48, 16):
            cov, cnt = coverage_and_intersects(pp, (r, c, 16, 16))
            again, _ = coverage_and_intersects(pp, (r, c, 16, 16))
            assert np.array_equal(cov.view(np.int64), again.view(np.int64))
            tiled[r : r + 16, c : c + 16] = cov
            np.testing.assert_array_equal(cnt, cnt_whole[r : r + 16, c : c + 16])
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-12)
    ref, _, _ = reference(geoms, (0, 0, 48, 48))
    np.testing.assert_allclose(whole, ref, rtol=0, atol=1e-9)


# ---------------------------------------------------------------- conversion


def test_to_pixel_polygons_layout_and_empties() -> None:
    mp = MultiPolygon([box(100, 190, 101, 191), box(102, 190, 103, 191).difference(box(102.25, 190.25, 102.5, 190.5))])
    geoms = np.array([box(100, 199, 100.5, 200), None, Polygon(), mp, MultiPolygon(), shapely.from_wkt("GEOMETRYCOLLECTION EMPTY")], dtype=object)
    pp = to_pixel_polygons(geoms, LEFT, TOP, XRES, YRES)
    assert pp.n_features == 6
    assert np.diff(pp.feature_offsets).tolist()[0] == 1 and np.diff(pp.feature_offsets)[3] == 2
    for a in (pp.ring_offsets, pp.part_offsets, pp.feature_offsets):
        assert a.dtype == np.int64
    assert pp.coords.dtype == np.float64
    # First feature: x 100..100.5 -> u 0..1, y 199..200 -> v 0..4.
    first = pp.coords[pp.ring_offsets[0] : pp.ring_offsets[1]]
    assert first[:, 0].min() == 0 and first[:, 0].max() == 1 and first[:, 1].min() == 0 and first[:, 1].max() == 4
    fb = pp.feature_bounds
    assert np.isnan(fb[[1, 2, 4, 5]]).all() and np.array_equal(fb[0], [0.0, 0.0, 1.0, 4.0])
    cov, cnt = coverage_and_intersects(pp, (0, 0, 44, 8))
    ref, _, _ = reference(list(geoms), (0, 0, 44, 8))
    np.testing.assert_allclose(cov, ref, rtol=0, atol=1e-12)
    assert cnt is not None and cnt.sum() == 4 + 8 + 8  # the hole's pixels are still crossed by its boundary
    empty = to_pixel_polygons(np.array([], dtype=object), LEFT, TOP, XRES, YRES)
    assert empty.n_features == 0 and coverage_and_intersects(empty, (0, 0, 3, 3))[0].sum() == 0
    with pytest.raises(TypeError):
        to_pixel_polygons(np.array([shapely.Point(1, 1)], dtype=object), LEFT, TOP, XRES, YRES)
    with pytest.raises(ValueError):
        to_pixel_polygons(geoms, LEFT, TOP, -1.0, YRES)


# ---------------------------------------------------------------- points


def test_centroid_cells_half_open() -> None:
    left, top, xres, yres = 10.0, 20.0, 2.0, 0.5
    window = (3, 4, 5, 6)  # global rows 3..7, cols 4..9
    x_left_edge = left + 4 * xres  # left edge of the window's first column
    y_top_edge = top - 3 * yres  # top edge of the window's first row
    x_right_edge = left + 10 * xres  # right edge of the window
    y_bottom_edge = top - 8 * yres  # bottom edge of the window
    cx = np.array([x_left_edge, x_left_edge - 1e-9, x_left_edge + 5 * xres, x_right_edge, x_right_edge - 1e-9, 15.0, 15.0, np.nan, 1e300])
    cy = np.array([y_top_edge, y_top_edge, y_top_edge - 1e-9, 18.0, 18.0, y_bottom_edge, y_bottom_edge + 1e-9, 18.0, 18.0])
    rows, cols, inside = centroid_cells(cx, cy, left, top, xres, yres, window)
    assert rows.dtype == cols.dtype == np.int64 and inside.dtype == bool
    assert inside.tolist() == [True, False, True, False, True, False, False, False, False]
    assert (rows[0], cols[0]) == (0, 0)  # on the left and top edges: that pixel (right of and below the lines)
    assert cols[1] == -1
    assert (rows[2], cols[2]) == (0, 5)  # just below the top edge, on a pixel's left edge
    assert cols[3] == 6  # on the window's right edge: outside
    assert (rows[4], cols[4]) == (1, 5)
    assert rows[5] == 5 and rows[6] == 4  # on the bottom edge: outside; just above: last row
    # Points exactly on a pixel's top edge go to that pixel, i.e. down.
    r, _, _ = centroid_cells(np.array([12.0]), np.array([top - 5 * yres]), left, top, xres, yres, (0, 0, 10, 10))
    assert r[0] == 5


# ---------------------------------------------------------------- aggregation


def reference_aggregate(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, how: str, shape: tuple[int, int]) -> np.ndarray:
    groups: dict[tuple[int, int], list[float]] = {}
    for r, c, v in zip(rows.tolist(), cols.tolist(), values.tolist(), strict=True):
        if not math.isnan(v):
            groups.setdefault((r, c), []).append(v)
    out = np.full(shape, 0.0 if how == "count" else np.nan)
    for (r, c), vals in groups.items():
        total = 0.0
        for v in vals:
            total = total + v
        out[r, c] = {
            "sum": total,
            "mean": total / len(vals),
            "min": min(vals),
            "max": max(vals),
            "count": float(len(vals)),
            "median": statistics.median(vals),
        }[how]
    return out


@pytest.mark.parametrize("how", AGGREGATIONS)
def test_aggregate_matches_python(how: str) -> None:
    rng = np.random.default_rng(7)
    n, shape = 600, (7, 9)
    rows = rng.integers(0, shape[0], n)
    cols = rng.integers(0, shape[1] - 2, n)  # the last two columns stay empty
    values = np.where(rng.random(n) < 0.5, rng.integers(-5, 5, n) * 0.5, rng.normal(0, 100, n))  # ties for the median
    values[rng.random(n) < 0.2] = np.nan
    rows[(rows == 0) & (cols == 0)] = 1
    rows[:5], cols[:5], values[:5] = 0, 0, np.nan  # a pixel with only missing values
    got = aggregate(rows, cols, values, how, shape)
    want = reference_aggregate(rows, cols, values, how, shape)
    assert got.shape == shape and got.dtype == np.float64
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=0, equal_nan=True)
    if how in ("sum", "min", "max", "count", "median"):
        assert np.array_equal(got, want, equal_nan=True)  # the same order of operations: the same bits
    if how != "count":
        assert np.isnan(got[:, -2:]).all()
    else:
        assert (got[:, -2:] == 0).all()
    again = aggregate(rows, cols, values, how, shape)
    assert np.array_equal(got.view(np.int64), again.view(np.int64))


def test_aggregate_edge_cases() -> None:
    empty = np.array([], dtype=np.int64)
    assert np.isnan(aggregate(empty, empty, np.array([]), "median", (2, 2))).all()
    assert (aggregate(empty, empty, np.array([]), "count", (2, 2)) == 0).all()
    assert aggregate(np.array([0, 0]), np.array([1, 1]), np.array([1.0, 4.0]), "median", (1, 2))[0, 1] == 2.5
    with pytest.raises(ValueError):
        aggregate(empty, empty, np.array([]), "mode", (2, 2))
    with pytest.raises(ValueError):
        aggregate(np.array([2]), np.array([0]), np.array([1.0]), "sum", (2, 2))
