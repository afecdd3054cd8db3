"""Per-pixel operations (halo 0): band math from an expression, normalized differences."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from tilewise.expr import Expression, parse
from tilewise.ops.base import TileContext

# Normalized-difference indices: name -> (first, second, description) for (a - b) / (a + b).
# The band roles are named; a Sentinel-2 product maps them to its band names below.
INDICES: dict[str, tuple[str, str, str]] = {
    "ndvi": ("nir", "red", "normalized difference vegetation index"),
    "ndwi": ("green", "nir", "normalized difference water index (McFeeters)"),
    "mndwi": ("green", "swir1", "modified NDWI (Xu)"),
    "nbr": ("nir", "swir2", "normalized burn ratio"),
    "ndre": ("nir_narrow", "rededge1", "normalized difference red edge"),
    "ndmi": ("nir_narrow", "swir1", "normalized difference moisture index"),
    "ndsi": ("green", "swir1", "normalized difference snow index"),
}

# Sentinel-2 band of each role.
S2_ROLE_BANDS: dict[str, str] = {
    "blue": "B02", "green": "B03", "red": "B04", "rededge1": "B05", "rededge2": "B06", "rededge3": "B07",
    "nir": "B08", "nir_narrow": "B8A", "swir1": "B11", "swir2": "B12",
}  # fmt: skip


def normalized_difference(a: str, b: str) -> str:
    """Return the expression ``(a - b) / (a + b)`` for two input names."""
    return f"({a} - {b}) / ({a} + {b})"


@dataclass(frozen=True)
class ExpressionOp:
    """A per-pixel op defined by an expression over named inputs.

    A pixel is valid in the output when every input it reads is valid there and
    the result is finite (so a division by zero becomes nodata, not inf).
    """

    expression: str
    name: str = "calc"
    halo: int = 0
    band_name: str = ""
    _parsed: Expression | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_parsed", parse(self.expression))

    def __getstate__(self) -> dict[str, object]:
        # Ship the text, not the parsed tree: small and version-independent.
        return {"expression": self.expression, "name": self.name, "halo": self.halo, "band_name": self.band_name}

    def __setstate__(self, state: dict[str, object]) -> None:
        for k, v in state.items():
            object.__setattr__(self, k, v)
        object.__setattr__(self, "_parsed", parse(self.expression))

    @property
    def parsed(self) -> Expression:
        assert self._parsed is not None
        return self._parsed

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(sorted(self.parsed.names))

    @property
    def band_names(self) -> tuple[str, ...]:
        return (self.band_name or self.name,)

    def compute(
        self, arrays: Mapping[str, np.ndarray], valid: Mapping[str, np.ndarray], dtype: np.dtype, ctx: TileContext | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Evaluate the expression on one tile; see :meth:`Operation.compute`."""
        names = self.inputs
        shape = next(iter(arrays.values())).shape
        out = self.parsed.evaluate({n: arrays[n] for n in names}, dtype=dtype, shape=shape)
        ok = np.isfinite(out)
        for n in names:
            ok &= valid[n]
        return out[np.newaxis], ok[np.newaxis]
