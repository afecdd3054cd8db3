"""Cutting an output grid into :class:`Tile` s.

A tile owns a *core* window of the output; it reads the core grown by the
operation's halo (boundless, filled with nodata) so neighbourhood operations see
their neighbours, and crops the halo away before writing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise

from tilewise.errors import UsageError
from tilewise.grid import Grid, Window

DEFAULT_TILE_SIZE = 1024
MIN_TILE_SIZE = 16


@dataclass(frozen=True, slots=True)
class Tile:
    """One unit of space.

    Attributes
    ----------
    key
        A stable, file-name-safe name, ``r<row>-c<col>`` of the tile in the tiling.
    core
        The window of the output grid that this tile owns.
    read
        The window read from the inputs: ``core`` grown by the halo.
    grid
        The grid of the core window.
    """

    key: str
    core: Window
    read: Window
    grid: Grid


@dataclass(frozen=True, slots=True)
class Tiling:
    """A list of tiles covering a grid exactly once (cores never overlap)."""

    grid: Grid
    tile_height: int
    tile_width: int
    halo: int
    tiles: tuple[Tile, ...]
    phase: tuple[int, int] = (0, 0)

    def __iter__(self) -> Iterator[Tile]:
        return iter(self.tiles)

    def __len__(self) -> int:
        return len(self.tiles)

    @property
    def columns(self) -> int:
        """The number of tiles across the grid."""
        return len(_edges(self.grid.width, self.tile_width, self.phase[1])) - 1

    @classmethod
    def for_grid(cls, grid: Grid, tile_height: int, tile_width: int | None = None, halo: int = 0,
                 phase: tuple[int, int] = (0, 0)) -> Tiling:  # fmt: skip
        """Cut ``grid`` into tiles of at most ``tile_height`` x ``tile_width`` pixels.

        The last row and column of tiles are smaller when the size does not divide
        the grid; no pixel is dropped or covered twice. With a ``phase`` (rows,
        cols), tile edges fall where ``row + phase[0]`` (``col + phase[1]``) is a
        multiple of the tile size, so the first row (column) of tiles is smaller:
        a grid that is a window of a file starting at ``phase`` gets tiles on the
        file's own tile (and block) edges.
        """
        tile_width = tile_height if tile_width is None else tile_width
        if tile_height < 1 or tile_width < 1:
            raise UsageError(f"tile size {tile_height}x{tile_width} is not positive", "use --tile-size 512 or larger")
        if halo < 0:
            raise UsageError(f"halo {halo} is negative")
        rows, cols = _edges(grid.height, tile_height, phase[0]), _edges(grid.width, tile_width, phase[1])
        tiles = []
        for r, (row_off, row_end) in enumerate(pairwise(rows)):
            for c, (col_off, col_end) in enumerate(pairwise(cols)):
                core = Window(row_off, col_off, row_end - row_off, col_end - col_off)
                tiles.append(Tile(f"r{r:04d}-c{c:04d}", core, core.grow(halo), grid.window_grid(core)))
        return cls(grid, tile_height, tile_width, halo, tuple(tiles), (phase[0] % tile_height, phase[1] % tile_width))


def _edges(n: int, size: int, phase: int) -> list[int]:
    """Tile edges along one axis of ``n`` pixels: 0, then every ``size`` shifted back by ``phase``, then ``n``."""
    first = size - phase % size
    return [0, *range(first if phase % size else size, n, size), n]


def strip_cuts(file_width: int, block_shape: tuple[int, int], tiling: Tiling) -> int:
    """How many tiles of ``tiling`` cut across each strip of a file stored in full-width strips.

    Every tile that reads part of a strip decodes all of it, so each strip is decoded
    this many times (1: the file is tiled, or each tile spans whole strips).
    """
    bh, bw = block_shape
    if bh < 1 or bw < file_width:
        return 1
    return tiling.columns


def choose_tile_shape(grid: Grid, tile_size: int | None, block_shapes: Sequence[tuple[int, int]], default: int | None = None) -> tuple[int, int]:
    """Pick the tile shape for a grid read from files with the given block shapes.

    An explicit ``tile_size`` is honoured exactly (square tiles). The default
    aligns to the first input's blocks: square tiles of about
    :data:`DEFAULT_TILE_SIZE` that are a whole number of blocks, or, for files
    stored in full-width strips, full-width bands of whole strips holding about
    as many pixels (of the smallest height that gives as many bands, so the last
    band is as thick as it can be), so no worker decodes a strip another worker
    also decodes.
    ``default`` replaces :data:`DEFAULT_TILE_SIZE` as the edge aimed at.
    """
    if tile_size is not None:
        if tile_size < MIN_TILE_SIZE:
            raise UsageError(f"--tile-size {tile_size} is too small", f"use at least {MIN_TILE_SIZE} (512 to 2048 is typical)")
        return tile_size, tile_size
    size = default or DEFAULT_TILE_SIZE
    if not block_shapes:
        return size, size
    bh, bw = block_shapes[0]
    if bw >= grid.width and grid.width > size:
        rows = max(bh, (size * size // grid.width) // bh * bh)
        # As many bands as that gives, each of the smallest height (in whole strips) that gives as
        # many: a last band much thinner than the others leaves a worker idle at the end of a job of
        # few tiles (a stack's 1300 rows: 5 x 217 + 215 rows, not 5 x 223 + 185).
        bands = math.ceil(grid.height / rows)
        rows = max(bh, math.ceil(math.ceil(grid.height / bands) / bh) * bh)
        return rows, grid.width
    if 0 < bh <= size and 0 < bw <= size and bh == bw:
        size = size // bh * bh
    return size, size
