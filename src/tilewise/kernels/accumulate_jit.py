"""One-pass kernels for the hot loops of time stacks: validity from nodata, and adding a date into running sums.

A stack's mean reads hundreds of dates per tile; in numpy each step is several
passes over the tile with temporaries (``band != nodata``, ``~isnan``, the
invalid pixels zeroed, the cast to float64, the count). These kernels do each in
one pass. They compute exactly what the numpy expressions do (the same float64
additions in the same order), so outputs are unchanged.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _valid_float(band: np.ndarray, nodata: float, out: np.ndarray) -> None:  # pragma: no cover - compiled
    h, w = band.shape
    for i in range(h):
        for j in range(w):
            v = band[i, j]
            out[i, j] = v == v and v != nodata


@numba.njit(cache=True, nogil=True)
def _valid_nan(band: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    h, w = band.shape
    for i in range(h):
        for j in range(w):
            v = band[i, j]
            out[i, j] = v == v


@numba.njit(cache=True, nogil=True)
def _add(values: np.ndarray, good: np.ndarray, total: np.ndarray, n: np.ndarray) -> None:  # pragma: no cover - compiled
    h, w = values.shape
    for i in range(h):
        for j in range(w):
            if good[i, j]:
                total[i, j] += values[i, j]
                n[i, j] += 1


def valid_float(band: np.ndarray, nodata: float | None) -> np.ndarray | None:
    """Validity of a 2-D float32/float64 band (not NaN, not ``nodata``) in one pass; None for other arrays.

    Parameters
    ----------
    band
        The values.
    nodata
        The nodata value, or None (NaN only).

    Returns
    -------
    numpy.ndarray or None
        A bool array of the band's shape, or None where the caller's numpy path applies.
    """
    if band.ndim != 2 or band.dtype not in (np.float32, np.float64):
        return None
    out = np.empty(band.shape, dtype=bool)
    if nodata is None or np.isnan(nodata):
        _valid_nan(band, out)
    else:
        # Compare in the band's own type, as numpy does after casting nodata to it.
        _valid_float(band, band.dtype.type(nodata), out)
    return out


def add_valid(values: np.ndarray, good: np.ndarray, total: np.ndarray, n: np.ndarray) -> bool:
    """``total += values`` and ``n += 1`` where ``good``, in one pass; False (nothing done) for shapes or types it does not take.

    Parameters
    ----------
    values
        One date's values (2-D float32 or float64).
    good
        Their validity.
    total, n
        The running float64 sum and int32 count, updated in place.
    """
    if (values.ndim != 2 or values.dtype not in (np.float32, np.float64) or good.dtype != np.bool_ or total.dtype != np.float64
            or n.dtype != np.int32 or not (values.shape == good.shape == total.shape == n.shape)):  # fmt: skip
        return False
    _add(values, good, total, n)
    return True
