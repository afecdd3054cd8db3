"""The operation interface every op kind implements."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np


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
        self, arrays: Mapping[str, np.ndarray], valid: Mapping[str, np.ndarray], dtype: np.dtype
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

        Returns
        -------
        data, valid
            ``data`` of shape (bands, h, w) and a boolean ``valid`` of the same shape.
        """
        ...
