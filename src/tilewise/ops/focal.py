"""Focal (neighbourhood) statistics as an :class:`~tilewise.ops.base.Operation`.

The op's halo is the window radius, so the engine reads every tile with the
context its edge pixels need; the arithmetic lives in :mod:`tilewise.kernels.focal`.
Edge handling follows scipy.ndimage's names for the padded modes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from tilewise.kernels.windows import Footprint
from tilewise.ops.base import TileContext

EDGES = ("nodata", "partial", "reflect", "nearest")
# numpy.pad names of scipy.ndimage's modes: scipy "reflect" (d c b a | a b c d) is numpy "symmetric".
_PAD_MODE = {"reflect": "symmetric", "nearest": "edge"}


@dataclass(frozen=True)
class FocalOp:
    """A statistic over a moving window, band by band.

    Attributes
    ----------
    stat
        One of :data:`tilewise.kernels.windows.STATS`.
    footprint
        The window (square or circle).
    edge
        ``nodata``: a pixel whose window leaves the raster is nodata; ``partial``:
        the statistic of the part inside; ``reflect`` / ``nearest``: the raster is
        extended by mirroring / repeating its edge pixels (scipy.ndimage modes).
    min_valid
        Fraction of the window's cells that must be valid, else the pixel is nodata.
    subtract
        Output ``value - statistic`` (high-pass, local relief) instead of the statistic.
    band_inputs
        Input names, one per band filtered; one output band each.
    band_labels
        Output band descriptions.
    values_dtype
        Type the statistic is computed into: ``float32`` only for a float32 output
        without ``subtract`` (one rounding either way, so the same bits, and no
        float64 arrays to fill and convert); ``float64`` otherwise, since an integer
        output rounds the float64 value to whole numbers, ``subtract`` needs it whole
        and a ``count`` is compared with the fewest cells needed.
    """

    stat: str
    footprint: Footprint
    edge: str = "nodata"
    min_valid: float = 0.0
    subtract: bool = False
    band_inputs: tuple[str, ...] = ("b1",)
    band_labels: tuple[str, ...] = ("",)
    name: str = "focal"
    values_dtype: str = "float64"

    @property
    def halo(self) -> int:
        return self.footprint.radius

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.band_inputs

    @property
    def band_names(self) -> tuple[str, ...]:
        return self.band_labels

    @property
    def min_count(self) -> int:
        """Fewest valid cells a window needs (at least 1, except for ``count``)."""
        need = math.ceil(self.min_valid * self.footprint.cells - 1e-9)
        return max(need, 0 if self.stat == "count" else 1)

    def compute(
        self, arrays: Mapping[str, np.ndarray], valid: Mapping[str, np.ndarray], dtype: np.dtype, ctx: TileContext
    ) -> tuple[np.ndarray, np.ndarray]:
        """Filter every band of one tile; returns arrays of the tile's core shape."""
        # Imported here: the kernels load numba, which the process planning the job does not need.
        from tilewise.kernels.focal import focal_statistic

        r = self.halo
        outs, oks = [], []
        for name in self.band_inputs:
            x, ok = arrays[name], valid[name]
            if self.edge in _PAD_MODE:
                x, ok = _extend(x, ok, ctx, _PAD_MODE[self.edge])
            values = focal_statistic(x, ok, self.stat, self.footprint, (ctx.row, ctx.col), self.min_count, dtype=np.dtype(self.values_dtype))
            # A count is its own value; other statistics are NaN wherever fewer than min_count (>= 1) cells are valid.
            good = values >= self.min_count if self.stat == "count" else ~np.isnan(values)
            if self.subtract:
                core = arrays[name][r : x.shape[0] - r, r : x.shape[1] - r]
                values = core.astype(np.float64) - values
                good &= valid[name][r : x.shape[0] - r, r : x.shape[1] - r]
            outs.append(values)
            oks.append(good)
        # One band (the usual case) needs no copy into a stack.
        data, ok_all = (outs[0][None], oks[0][None]) if len(outs) == 1 else (np.stack(outs), np.stack(oks))
        if self.edge == "nodata":
            ok_all &= _inside_mask(ctx, r, data.shape[1], data.shape[2])
        return data, ok_all


def _inside_mask(ctx: TileContext, r: int, h: int, w: int) -> np.ndarray:
    """True for output pixels whose whole window lies inside the source raster."""
    rows = ctx.row + r + np.arange(h)
    cols = ctx.col + r + np.arange(w)
    rok = (rows - r >= 0) & (rows + r <= ctx.height - 1)
    cok = (cols - r >= 0) & (cols + r <= ctx.width - 1)
    return rok[:, None] & cok[None, :]


def _extend(x: np.ndarray, ok: np.ndarray, ctx: TileContext, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Replace the part of the arrays outside the raster by the raster's mirrored / repeated edge."""
    h, w = x.shape
    top, left = max(0, -ctx.row), max(0, -ctx.col)
    bottom, right = max(0, ctx.row + h - ctx.height), max(0, ctx.col + w - ctx.width)
    if not (top or left or bottom or right):
        return x, ok
    inner = (slice(top, h - bottom), slice(left, w - right))
    pad = ((top, bottom), (left, right))
    return np.pad(x[inner], pad, mode=mode), np.pad(ok[inner], pad, mode=mode)  # type: ignore[call-overload]
