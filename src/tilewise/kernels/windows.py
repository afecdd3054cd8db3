"""Moving-window shapes and the focal statistics' names, without numba.

Planning a focal job (validating the window, sizing the halo) needs these in
the main process; the compiled kernels in :mod:`tilewise.kernels.focal` load
numba (~0.25 s), which only the processes computing tiles need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

STATS = ("mean", "sum", "min", "max", "std", "variance", "range", "median", "count")


@dataclass(frozen=True)
class Footprint:
    """A window: a K×K square (``size`` K, odd) or a disc of ``radius`` R (cells with dx² + dy² ≤ R²)."""

    shape: str
    radius: int

    @classmethod
    def square(cls, size: int) -> Footprint:
        return cls("square", size // 2)

    @classmethod
    def circle(cls, radius: int) -> Footprint:
        return cls("circle", radius)

    @property
    def size(self) -> int:
        """Edge of the bounding square, 2R + 1."""
        return 2 * self.radius + 1

    @cached_property
    def half_widths(self) -> tuple[int, ...]:
        """Half-width of the window's run on each row offset -R..R."""
        r = self.radius
        if self.shape == "square":
            return (r,) * (2 * r + 1)
        return tuple(math.isqrt(r * r - dy * dy) for dy in range(-r, r + 1))

    @property
    def cells(self) -> int:
        """Number of cells in the window."""
        return sum(2 * w + 1 for w in self.half_widths)

    def mask(self) -> np.ndarray:
        """The window as a boolean (K, K) array."""
        r = self.radius
        m = np.zeros((self.size, self.size), dtype=bool)
        for i, w in enumerate(self.half_widths):
            m[i, r - w : r + w + 1] = True
        return m

    def describe(self) -> str:
        return f"{self.size}x{self.size}" if self.shape == "square" else f"r{self.radius}"
