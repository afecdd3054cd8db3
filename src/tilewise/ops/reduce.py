"""Per-pixel reductions over time: a tile's window is read one date at a time into running accumulators.

Memory does not grow with the number of dates for mean, sum, count, std, min, max
and argmax-date; median and percentiles hold one tile's column of dates (a tile of
the group's dates), which the planner bounds by shrinking the tile. Dates are
always visited in date order, so a pixel's arithmetic is the same whatever the
tiling, executor or worker count.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from tilewise.expr import Expression, parse
from tilewise.ops.base import TileContext

STATS = ("mean", "sum", "count", "std", "min", "max", "median", "argmax-date")  # and pNN, 0 <= NN <= 100
GROUPBYS = ("all", "month", "season", "year")
SEASONS = {12: "DJF", 1: "DJF", 2: "DJF", 3: "MAM", 4: "MAM", 5: "MAM", 6: "JJA", 7: "JJA", 8: "JJA", 9: "SON", 10: "SON", 11: "SON"}

#: read(name) -> (values, valid, finite_invalid): one date's window; finite_invalid when every invalid pixel is
#: known to hold a finite value (io.TileArrays), which spares the sums a check per date.
ReadFn = Callable[[str], tuple[np.ndarray, np.ndarray, bool]]


def percentile_of(stat: str) -> float | None:
    """The percentile of a ``pNN`` statistic (``p90`` -> 90.0, ``p2.5`` -> 2.5), or None for other statistics."""
    m = re.fullmatch(r"p(\d+(?:\.\d+)?)", stat)
    if not m:
        return None
    q = float(m.group(1))
    return q if 0.0 <= q <= 100.0 else None


def is_stat(stat: str) -> bool:
    """True for a statistic :class:`ReduceOp` computes."""
    return stat in STATS or percentile_of(stat) is not None


def holds_column(stat: str) -> bool:
    """True when the statistic needs every date of a pixel at once (median, percentiles)."""
    return stat == "median" or percentile_of(stat) is not None


@dataclass(frozen=True)
class Group:
    """One output band: its description and the dates it reduces, each date a tuple of input names (same-date members are averaged)."""

    label: str
    dates: tuple[tuple[str, ...], ...]
    ordinals: tuple[int, ...]  # YYYYMMDD of each date, for argmax-date


@dataclass(frozen=True)
class ReduceOp:
    """Reduce a dated stack per pixel, one output band per group.

    Attributes
    ----------
    stat
        mean, sum, count, std (population, ddof 0), min, max, median, pNN or argmax-date.
    groups
        The output bands, in order.
    expression
        Applied to each date's values (variable ``t``) before reducing; empty for none.
    """

    stat: str
    groups: tuple[Group, ...]
    expression: str = ""
    name: str = "reduce"
    halo: int = 0
    streaming: bool = True
    _parsed: Expression | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_parsed", parse(self.expression) if self.expression else None)

    def __getstate__(self) -> dict[str, object]:
        return {"stat": self.stat, "groups": self.groups, "expression": self.expression, "name": self.name, "halo": self.halo, "streaming": True}

    def __setstate__(self, state: dict[str, object]) -> None:
        for k, v in state.items():
            object.__setattr__(self, k, v)
        object.__setattr__(self, "_parsed", parse(self.expression) if self.expression else None)

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(n for g in self.groups for d in g.dates for n in d)

    @property
    def band_names(self) -> tuple[str, ...]:
        return tuple(g.label for g in self.groups)

    def compute(self, arrays: Mapping[str, np.ndarray], valid: Mapping[str, np.ndarray], dtype: np.dtype,
                ctx: TileContext | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Reduce arrays already in memory (small stacks, tests); the engine calls :meth:`reduce` instead."""
        shape = next(iter(arrays.values())).shape
        return self.reduce(lambda n: (arrays[n].copy(), valid[n], False), shape, dtype)  # reduce may zero a date's invalid pixels in place

    def reduce(self, read: ReadFn, shape: tuple[int, int], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """Reduce one tile, reading each date through ``read(name) -> (values, valid, finite_invalid)`` one at a time.

        Returns
        -------
        data, valid
            Arrays of shape (groups, h, w).
        """
        out = np.empty((len(self.groups), *shape), dtype=dtype)
        ok = np.empty(out.shape, dtype=bool)
        for gi, group in enumerate(self.groups):
            acc = _accumulator(self.stat, shape, len(group.dates))
            for names, ordinal in zip(group.dates, group.ordinals, strict=True):
                values, good, finite = self._date(read, names, shape)
                acc.add(values, good, ordinal, finite)
            out[gi], ok[gi] = acc.result(dtype)
        return out, ok

    def _date(self, read: ReadFn, names: tuple[str, ...], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, bool]:
        """One date's values (float64), validity and whether its invalid pixels are known finite: the members of that date averaged, then the expression."""
        if len(names) == 1:
            values, good, finite = read(names[0])  # the working dtype: accumulators add it into float64 in place
            if self._parsed is None:
                return values, good, finite
            values = values.astype(np.float64)
        else:  # --duplicates mean: average the valid members of the date
            total = np.zeros(shape, dtype=np.float64)
            count = np.zeros(shape, dtype=np.int32)
            for n in names:
                v, g, _ = read(n)
                total += np.where(g, v, 0.0)
                count += g
            good = count > 0
            with np.errstate(invalid="ignore", divide="ignore"):
                values = total / count
        if self._parsed is not None:
            values = np.asarray(self._parsed.evaluate({"t": values}, dtype=np.float64, shape=shape), dtype=np.float64)
            good = good & np.isfinite(values)
        return values, good, False


def zero_invalid(values: np.ndarray, valid: np.ndarray, finite_invalid: bool = False) -> None:
    """Set ``values`` to zero where not ``valid``, in place, for sums that must not see those pixels.

    Multiplying by the validity does it in one cheap pass (half the time of a masked copy) when
    every invalid value is finite; x * 0 is then +-0.0, and adding either leaves a float64 sum
    that started at +0.0 unchanged, so sums are the same bits either way. ``finite_invalid``
    says the caller knows they are finite (the reader does, see ``io.validity``), which spares
    the check; NaN or inf where invalid (x * 0 would be NaN) takes the masked copy.
    """
    if finite_invalid or np.isfinite(values).all():
        np.multiply(values, valid, out=values)
    else:
        np.copyto(values, 0, where=~valid)


class _Accumulator:
    def add(self, values: np.ndarray, good: np.ndarray, ordinal: int, finite_invalid: bool = False) -> None:
        raise NotImplementedError

    def result(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class _Moments(_Accumulator):
    """count, sum, mean (float64 sum over count) and std (Welford's running mean and M2 in float64), per pixel."""

    def __init__(self, stat: str, shape: tuple[int, int], dates: int = 2**31 - 1) -> None:
        self.stat = stat
        # The count in the narrowest type that holds it: adding the validity into it is one of the
        # few passes per date and pixel (uint16 halves that pass's memory traffic against int32).
        self.n = np.zeros(shape, dtype=np.uint16 if dates < 2**16 else np.int32)
        self.total = np.zeros(shape, dtype=np.float64)
        # Welford's running mean and M2, for std only.
        self.mean = np.zeros(shape if stat == "std" else (0, 0), dtype=np.float64)
        self.m2 = np.zeros(shape if stat == "std" else (0, 0), dtype=np.float64)

    def add(self, values: np.ndarray, good: np.ndarray, ordinal: int, finite_invalid: bool = False) -> None:
        # This runs once per date and pixel, so in place and without masked ufuncs (whose casting
        # path is slow). ``values`` is this date's own buffer, so its invalid pixels may be zeroed.
        zero_invalid(values, good, finite_invalid)
        self.total += values
        np.add(self.n, good.view(np.uint8) if good.dtype == np.bool_ else good, out=self.n)  # bool as 0/1 bytes: no cast
        if self.stat == "std":  # the mean is the float64 sum over the count; std needs Welford to stay accurate
            x = np.where(good, values, 0.0)
            n = np.maximum(self.n, 1)
            delta = np.where(good, x - self.mean, 0.0)
            self.mean += delta / n
            self.m2 += delta * np.where(good, x - self.mean, 0.0)

    def result(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        ok = self.n > 0
        if self.stat == "count":
            return self.n.astype(dtype), np.ones_like(ok)  # a count is known everywhere, 0 included
        if self.stat == "sum":
            return self.total.astype(dtype), ok
        with np.errstate(invalid="ignore", divide="ignore"):
            if self.stat == "mean":
                return (self.total / self.n).astype(dtype), ok
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sqrt(self.m2 / self.n).astype(dtype), ok


class _Extreme(_Accumulator):
    """min, max and argmax-date (the first date holding the maximum, as numpy's nanargmax)."""

    def __init__(self, stat: str, shape: tuple[int, int]) -> None:
        self.stat = stat
        self.best = np.full(shape, np.inf if stat == "min" else -np.inf, dtype=np.float64)
        self.seen = np.zeros(shape, dtype=bool)
        self.when = np.zeros(shape, dtype=np.int64)

    def add(self, values: np.ndarray, good: np.ndarray, ordinal: int, finite_invalid: bool = False) -> None:
        better = good & ((values < self.best) if self.stat == "min" else (values > self.best))
        better |= good & ~self.seen  # the first valid date, whatever its value
        self.best = np.where(better, values, self.best)
        self.when = np.where(better, ordinal, self.when)
        self.seen |= good

    def result(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        if self.stat == "argmax-date":
            return self.when.astype(dtype), self.seen
        return self.best.astype(dtype), self.seen


class _Column(_Accumulator):
    """median and percentiles: the tile's column of dates, NaN where invalid."""

    def __init__(self, stat: str, shape: tuple[int, int], n: int) -> None:
        q = percentile_of(stat)
        self.q = 50.0 if q is None else q
        self.column = np.full((n, *shape), np.nan, dtype=np.float64)
        self.i = 0

    def add(self, values: np.ndarray, good: np.ndarray, ordinal: int, finite_invalid: bool = False) -> None:
        self.column[self.i] = np.where(good, values, np.nan)
        self.i += 1

    def result(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        ok = ~np.all(np.isnan(self.column), axis=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels: nodata below
            res = np.nanpercentile(self.column, self.q, axis=0) if self.q != 50.0 else np.nanmedian(self.column, axis=0)
        return np.where(ok, res, 0.0).astype(dtype), ok


def _accumulator(stat: str, shape: tuple[int, int], n: int) -> _Accumulator:
    if holds_column(stat):
        return _Column(stat, shape, n)
    if stat in ("min", "max", "argmax-date"):
        return _Extreme(stat, shape)
    return _Moments(stat, shape, n)
