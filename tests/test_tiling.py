"""Tiling covers every pixel exactly once, for any grid and tile size (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from tilewise.errors import UsageError
from tilewise.grid import Grid, Window
from tilewise.tiling import DEFAULT_TILE_SIZE, Tiling, choose_tile_shape, strip_cuts

GRID = Grid("EPSG:32632", Affine(10.0, 0.0, 1000.0, 0.0, -10.0, 2000.0), 0, 0)


def grid(h: int, w: int) -> Grid:
    return Grid(GRID.crs, GRID.transform, h, w)


@settings(max_examples=300, deadline=None)
@given(h=st.integers(1, 300), w=st.integers(1, 300), th=st.integers(1, 120), tw=st.integers(1, 120), halo=st.integers(0, 9),
       phase=st.one_of(st.just((0, 0)), st.tuples(st.integers(0, 500), st.integers(0, 500))))  # fmt: skip
def test_tiles_cover_each_pixel_once(h: int, w: int, th: int, tw: int, halo: int, phase: tuple[int, int]) -> None:
    g = grid(h, w)
    tiling = Tiling.for_grid(g, th, tw, halo=halo, phase=phase)
    for t in tiling:
        # Every edge inside the grid lies where (row + phase) is a multiple of the tile size; no tile is larger.
        assert t.core.row_off == 0 or (t.core.row_off + phase[0]) % th == 0
        assert t.core.col_off == 0 or (t.core.col_off + phase[1]) % tw == 0
        assert t.core.height <= th and t.core.width <= tw
    cover = np.zeros((h, w), dtype=np.int32)
    keys = set()
    for t in tiling:
        c = t.core
        assert c.height >= 1 and c.width >= 1
        cover[c.row_off : c.row_end, c.col_off : c.col_end] += 1
        assert t.read == Window(c.row_off - halo, c.col_off - halo, c.height + 2 * halo, c.width + 2 * halo)
        # The tile's own grid places its first pixel where the parent grid does.
        assert t.grid.transform @ (0, 0) == g.transform @ (c.col_off, c.row_off)
        assert t.grid.shape == (c.height, c.width)
        keys.add(t.key)
    assert (cover == 1).all()
    assert len(keys) == len(tiling)
    assert tiling.columns == len({t.core.col_off for t in tiling})


def test_non_dividing_sizes_keep_last_rows_and_columns() -> None:
    # The tutorial's 4x4 split with swapped axes dropped the last rows; ours cannot.
    tiling = Tiling.for_grid(grid(1428, 1128), 357, 282)
    assert max(t.core.row_end for t in tiling) == 1428
    assert max(t.core.col_end for t in tiling) == 1128
    assert len(tiling) == 16


def test_choose_tile_shape() -> None:
    g = grid(16384, 16384)
    assert choose_tile_shape(g, 700, [(512, 512)]) == (700, 700)  # explicit size honoured
    assert choose_tile_shape(g, None, [(512, 512)]) == (DEFAULT_TILE_SIZE, DEFAULT_TILE_SIZE)
    assert choose_tile_shape(g, None, [(384, 384)]) == (768, 768)  # whole blocks
    strips = choose_tile_shape(grid(20000, 3000), None, [(1, 3000)])
    assert strips[1] == 3000 and strips[0] * 3000 <= DEFAULT_TILE_SIZE**2 + 3000
    with pytest.raises(UsageError, match="--tile-size 3"):
        choose_tile_shape(g, 3, [])


@settings(max_examples=300, deadline=None)
@given(h=st.integers(1, 20000), w=st.integers(1025, 40000), bh=st.integers(1, 64), size=st.integers(16, 2048))
def test_default_strip_bands_leave_no_thin_last_band(h: int, w: int, bh: int, size: int) -> None:
    # Files in full-width strips get bands of whole strips: as many as bands of about size² pixels
    # give, each of the smallest height that gives that many, so the last band is as thick as it can be.
    if w <= size:
        return
    rows, cols = choose_tile_shape(grid(h, w), None, [(bh, w)], default=size)
    aimed = max(bh, (size * size // w) // bh * bh)
    assert cols == w and rows % bh == 0 and rows <= aimed
    n = math.ceil(h / aimed)
    assert math.ceil(h / rows) == n  # as many tiles as bands of the aimed height
    assert rows == bh or math.ceil(h / (rows - bh)) > n  # one strip less would need another band
    bands = [t.core.height for t in Tiling.for_grid(grid(h, w), rows, cols)]
    assert sum(bands) == h and len(bands) == n
    assert bands[-1] >= h - (n - 1) * aimed  # never thinner than the aimed height left it


def test_default_strip_bands_of_the_stack_benchmark() -> None:
    # 1300 rows of single-row strips: six bands of 217/215 rows, not five of 223 and one of 185.
    rows, _ = choose_tile_shape(grid(1300, 3600), None, [(1, 3600)], default=896)
    assert rows == 217
    assert [t.core.height for t in Tiling.for_grid(grid(1300, 3600), rows, 3600)] == [217] * 5 + [215]


def test_strip_cuts_counts_tiles_across_full_width_strips() -> None:
    g = grid(1300, 3600)
    assert strip_cuts(3600, (1, 3600), Tiling.for_grid(g, 512)) == 8  # 8 tile columns each decode every strip
    assert strip_cuts(3600, (1, 3600), Tiling.for_grid(g, 223, 3600)) == 1  # bands of whole strips
    assert strip_cuts(3600, (256, 256), Tiling.for_grid(g, 512)) == 1  # a tiled file
    assert strip_cuts(4000, (1, 4000), Tiling.for_grid(g, 1800)) == 2  # a window of a wider striped file
    assert strip_cuts(3600, (0, 0), Tiling.for_grid(g, 512)) == 1  # block shape unknown


def test_window_intersection() -> None:
    a = Window(-2, -2, 10, 10)
    assert a.intersection(Window(0, 0, 5, 5)) == Window(0, 0, 5, 5)
    assert Window(0, 0, 2, 2).intersection(Window(5, 5, 2, 2)) is None


@settings(max_examples=200, deadline=None)
@given(items=st.integers(1, 3), rows=st.integers(1, 40), cols=st.integers(1, 40), workers=st.integers(1, 32), halo=st.integers(0, 3),
       px=st.integers(1, 1 << 21), done=st.floats(0, 1))  # fmt: skip
def test_work_units_keep_every_task_once_in_order(items: int, rows: int, cols: int, workers: int, halo: int, px: int, done: float) -> None:
    from types import SimpleNamespace

    from tilewise.runner import HALO_RUN_ROWS, HALO_UNITS_PER_WORKER, MIN_UNIT_PIXELS, _units

    op = SimpleNamespace(halo=halo)
    tasks = [SimpleNamespace(op=op, pixels=px, item=i, tile=SimpleNamespace(core=Window(r * 7, c * 7, 7, 7)), key=(i, r, c))
             for i in range(items) for r in range(rows) for c in range(cols)]  # fmt: skip
    # A resumed run: the tiles done before are not planned again (here a leading share of them).
    tasks = tasks[int(done * (len(tasks) - 1)) :]
    n = len(tasks)
    units = _units(tasks, workers)  # type: ignore[arg-type]
    # Every task once, in the order given (halo runs rely on row order to share decoded blocks).
    assert [t.key for u in units for t in u] == [t.key for t in tasks]
    if halo:
        # Runs of consecutive tiles, all but the last of one length: a share of the work that leaves
        # each worker at most HALO_UNITS_PER_WORKER runs, unless that is more than HALO_RUN_ROWS rows
        # (full rows, even when the first row left to run is a part of one).
        run = len(units[0])
        assert all(len(u) == run for u in units[:-1]) and len(units[-1]) <= run
        assert run == min(math.ceil(n / (HALO_UNITS_PER_WORKER * workers)), HALO_RUN_ROWS * min(n, cols))
    else:
        # Small tasks are grouped until about MIN_UNIT_PIXELS, each unit at most a quarter of a worker's share.
        cap = math.ceil(n / (4 * workers))
        assert all(len(u) <= cap and sum(t.pixels for t in u[:-1]) < MIN_UNIT_PIXELS for u in units)
