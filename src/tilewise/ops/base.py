"""The operation interface every op kind implements."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True, slots=True)
class TileContext:
    """Where a tile's arrays sit in the raster they are read from.

    Attributes
    ----------
    row, col
        Position of the arrays' pixel [0, 0] in the source raster (negative in a
        halo above or left of it). Neighbourhood ops anchor their arithmetic here
        so results do not depend on where a tile starts.
    height, width
        Size of the source raster (the whole surface, for a mosaic of sheets).
    """

    row: int
    col: int
    height: int
    width: int


@runtime_checkable
class Operation(Protocol):
    """What is computed on a tile's arrays.

    Attributes
    ----------
    name
        Short name used in messages and band descriptions.
    halo
        Pixels of context needed on every side of a tile (0 for pixel ops).
    inputs
        Names of the inputs the op reads.
    band_names
        One description per output band.
    """

    @property
    def name(self) -> str: ...

    @property
    def halo(self) -> int: ...

    @property
    def inputs(self) -> tuple[str, ...]: ...

    @property
    def band_names(self) -> tuple[str, ...]: ...

    def compute(
        self, arrays: Mapping[str, np.ndarray], valid: Mapping[str, np.ndarray], dtype: np.dtype, ctx: TileContext
    ) -> tuple[np.ndarray, np.ndarray]:
        """Compute one tile.

        Parameters
        ----------
        arrays
            One 2-D array per input, already scaled, in the working ``dtype``;
            masked pixels hold arbitrary values.
        valid
            One boolean array per input: True where the pixel is valid.
        dtype
            The working floating-point type (float32 unless float64 output is asked).
        ctx
            Where the arrays sit in the source raster.

        Returns
        -------
        data, valid
            ``data`` of shape (bands, h, w) and a boolean ``valid`` of the same shape,
            where (h, w) is either the arrays' shape (the halo is cropped after) or
            already the tile's core shape.
        """
        ...
