"""Dated stacks: many rasters (or the bands of one) ordered in time, on one grid.

A :class:`Stack` is resolved once, up front: its members' dates are known, their
grids, data types and nodata are checked, and duplicates are settled, so bad input
fails before any tile is read. Three ways to make one (:func:`open_stack`):

1. files from folders, globs or paths, dated by their names with a pattern
   (``"chirps_pr_%Y%m%d.tif"``, or a regex with named groups, see
   :func:`compile_date_pattern`);
2. the bands of one multi-band file, dated by a sidecar file (one ISO date per
   line, a CSV with a ``date`` column, or a JSON list) or by the file's own
   metadata (netCDF time axis, GRIB valid times, band descriptions or ``DATE``
   tags, a terra ``.aux.json`` sidecar);
3. a netCDF variable with a time axis (``--variable tas``, or a
   ``NETCDF:"file.nc":tas`` name).

Selection (:func:`select`), bounding boxes (:func:`bbox_window`) and per-row
area weights for geographic grids (:func:`area_weights`) work on the result.
All dates are naive datetimes in UTC; a daily file's date is at 00:00.
"""

from __future__ import annotations

import csv
import datetime as dt
import glob as _glob
import io
import json
import math
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tilewise.errors import GridMismatchError, InputError, UsageError
from tilewise.grid import Grid, crs_name
from tilewise.rasterfile import check_readable, grid_of, open_probed, open_read, probe_env
from tilewise.remote import is_remote, url_name
from tilewise.sources.raster import BandRef, file_identity

# Files a folder of stack members may hold (others, e.g. .aux.xml or .ovr sidecars, are ignored).
STACK_SUFFIXES = (".tif", ".tiff", ".nc", ".nc4", ".vrt", ".jp2", ".img", ".hdf", ".h5", ".grib", ".grib2", ".grb", ".grb2", ".asc")

DUPLICATE_POLICIES = ("error", "first", "last", "mean")

ALIGN_HINT = "give files on one grid, or pass --align RESAMPLING"

PATTERN_HELP = "use %Y %m %d %j %H %M %S %y %b, '*' for any text and '?' for one character, or a regex with (?P<year>...) groups"

_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december")


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Member:
    """One date of a stack: one band of one raster.

    Attributes
    ----------
    date
        When it was observed: a naive datetime in UTC (a daily file gets 00:00).
    path
        The GDAL dataset name: a file path, or ``NETCDF:"file.nc":var``.
    band
        1-based band index.
    label
        How messages name it: the file name, or ``"file.nc band 17"``.
    scale, offset
        Physical value = stored value * scale + offset (GDAL convention).
    identity
        (size, mtime_ns) of the underlying file, so a changed input is detected on resume.
    grid
        The member's own grid (equal to the stack's unless the stack was opened with
        ``align=True``); not part of equality.
    """

    date: dt.datetime
    path: str
    band: int
    label: str
    scale: float = 1.0
    offset: float = 0.0
    identity: tuple[int, int] = (0, 0)
    grid: Grid | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Stack:
    """A dated stack: members sorted by date, on one grid.

    Attributes
    ----------
    members
        Sorted by date; members with the same date (kept only with
        ``duplicate_policy="mean"``) are adjacent, ordered by path then band.
    grid
        The shared grid (the first member's, when opened with ``align=True``).
    dtype
        The first member's data type (members of other types are noted in ``notes``).
    nodata
        The members' common nodata value, or None.
    duplicate_policy
        How same-date members were settled: ``"error"``, ``"first"``, ``"last"``
        (one member per date is left), or ``"mean"``: every member is kept and a
        consumer averages the members of one date before using the date (per-date
        statistics treat them as one date; reductions weight the date once).
    use_mask
        True when masks come from a GDAL per-dataset mask instead of ``nodata``.
    block_shape
        The first member's block (tile or strip) shape, to align tiles to.
    skipped
        Files found in the folders or globs whose names did not match the date pattern.
    notes
        Things worth telling the user that are not errors (differing data types).
    """

    members: tuple[Member, ...]
    grid: Grid
    dtype: str
    nodata: float | None
    duplicate_policy: str = "error"
    use_mask: bool = False
    block_shape: tuple[int, int] = (0, 0)
    skipped: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    # Set when the stack was put on a target grid (regrid.regrid_stack): members on other grids are
    # resampled onto it with this resampling when read.
    resampling: str | None = None

    def __len__(self) -> int:
        return len(self.members)

    @property
    def dates(self) -> tuple[dt.datetime, ...]:
        """The members' dates, in order (repeated for same-date members)."""
        return tuple(m.date for m in self.members)

    @property
    def date_range(self) -> str:
        """``"1981-01-01 to 1982-12-31 (730 dates)"`` for messages."""
        if not self.members:
            return "no dates"
        n = len({m.date for m in self.members})
        return f"{format_date(self.members[0].date)} to {format_date(self.members[-1].date)} ({n} date{'s' if n != 1 else ''})"

    def groups(self) -> list[tuple[dt.datetime, tuple[Member, ...]]]:
        """The members grouped by date, in date order (one member per group unless ``duplicate_policy="mean"``)."""
        out: list[tuple[dt.datetime, tuple[Member, ...]]] = []
        for m in self.members:
            if out and out[-1][0] == m.date:
                out[-1] = (m.date, (*out[-1][1], m))
            else:
                out.append((m.date, (m,)))
        return out

    def band_ref(self, member: Member) -> BandRef:
        """A :class:`~tilewise.sources.raster.BandRef` to read ``member`` with (no file is opened)."""
        if self.resampling is not None and member.grid is not None and member.grid.mismatch(self.grid) is not None:
            return replace(self.band_ref(replace(member, grid=None)), grid=member.grid, warp_to=self.grid, resampling=self.resampling)
        return BandRef(
            path=member.path,
            band=member.band,
            label=member.label,
            grid=member.grid if member.grid is not None else self.grid,
            dtype=self.dtype,
            nodata=self.nodata,
            use_mask=self.use_mask,
            scale=member.scale,
            offset=member.offset,
            block_shape=self.block_shape,
            identity=member.identity,
        )


def format_date(value: dt.datetime) -> str:
    """``2021-06-01`` for midnight, ``2021-06-01T06:00`` (or with seconds) otherwise."""
    if value.time() == dt.time(0):
        return value.strftime("%Y-%m-%d")
    return value.strftime("%Y-%m-%dT%H:%M" if value.second == 0 and value.microsecond == 0 else "%Y-%m-%dT%H:%M:%S")


# --------------------------------------------------------------------------- date patterns

# strftime directive -> (group name, regex); fixed widths, as strftime writes them.
_DIRECTIVES: dict[str, tuple[str, str]] = {
    "Y": ("year", "[0-9]{4}"),
    "y": ("year2", "[0-9]{2}"),
    "m": ("month", "[0-9]{2}"),
    "d": ("day", "[0-9]{2}"),
    "j": ("doy", "[0-9]{3}"),
    "H": ("hour", "[0-9]{2}"),
    "M": ("minute", "[0-9]{2}"),
    "S": ("second", "[0-9]{2}"),
    "b": ("mon", "(?i:" + "|".join(m[:3] for m in _MONTHS) + ")"),
    "B": ("monthname", "(?i:" + "|".join(_MONTHS) + ")"),
}
_GROUPS = ("year", "month", "day", "doy", "hour", "minute", "second")


def compile_date_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a file-name date pattern into a regex matched with ``fullmatch`` against file names.

    Parameters
    ----------
    pattern
        Either strftime-style text: ``%Y`` (4-digit year), ``%y`` (2-digit, 69-99 ->
        19xx), ``%m``, ``%d``, ``%j`` (day of year), ``%H``, ``%M``, ``%S``, ``%b`` /
        ``%B`` (month name, any case) and ``%%``; ``*`` matches any text, ``?`` one
        character, everything else is literal (``himax.%Y.%m.%d.tif``). Or, when it
        contains ``(?P<``, a regular expression with named groups ``year`` and some of
        ``month``, ``day``, ``doy``, ``hour``, ``minute``, ``second``. A pattern without
        a day means the 1st of the month, without a month January 1st.

    Returns
    -------
    re.Pattern
        The compiled regex (its group names tell :func:`parse_date` what is where).

    Raises
    ------
    UsageError
        An unknown directive, a pattern without a year, a day without a month, a day
        of year together with a month, or a regex that does not compile.
    """
    if not isinstance(pattern, str) or not pattern:
        raise UsageError(f"date pattern {pattern!r} is empty or not text", f"give a file-name pattern such as 'chirps_pr_%Y%m%d.tif' ({PATTERN_HELP})")
    if "(?P<" in pattern:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # "possible nested set": about a future re, not this one
                regex = re.compile(pattern)
        except (re.error, OverflowError, RecursionError, ValueError) as exc:
            raise UsageError(
                f"date pattern {pattern!r} is not a valid regular expression ({exc})", "fix the regex, or use a strftime pattern such as '%Y%m%d'"
            ) from None
        _check_groups(pattern, set(regex.groupindex))
        return regex
    if "/" in pattern or (os.sep != "/" and os.sep in pattern):
        raise UsageError(f"date pattern {pattern!r} has a folder part, but it is matched against file names only",
                         "pass the folder or glob as the input and give the pattern for the file name, e.g. 'chirps_pr_%Y%m%d.tif'")  # fmt: skip
    parts: list[str] = []
    used: set[str] = set()
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "%":
            if i + 1 >= len(pattern):
                raise UsageError(f"date pattern {pattern!r} ends with a lone '%'", "write %% for a literal percent sign")
            code = pattern[i + 1]
            i += 2
            if code == "%":
                parts.append("%")
                continue
            if code not in _DIRECTIVES:
                raise UsageError(f"date pattern {pattern!r} has an unknown directive %{code}", PATTERN_HELP)
            name, rx = _DIRECTIVES[code]
            # The same directive twice must match the same text both times.
            parts.append(f"(?P={name})" if name in used else f"(?P<{name}>{rx})")
            used.add(name)
            continue
        parts.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
        i += 1
    _check_groups(pattern, used)
    return re.compile("".join(parts), re.DOTALL)


def _check_groups(pattern: str, names: set[str]) -> None:
    """Refuse patterns whose fields cannot make one date."""
    years = names & {"year", "year2"}
    months = names & {"month", "mon", "monthname"}
    if not years:
        raise UsageError(f"date pattern {pattern!r} has no year", "add %Y (or %y), or a (?P<year>...) group to a regex")
    if len(years) > 1 or len(months) > 1:
        raise UsageError(f"date pattern {pattern!r} gives the {'year' if len(years) > 1 else 'month'} twice in different forms",
                         "use one of %Y/%y and one of %m/%b/%B")  # fmt: skip
    if "doy" in names and (months or "day" in names):
        raise UsageError(f"date pattern {pattern!r} has a day of year (%j) and a month or day", "use either %j alone, or %m and %d")
    if "day" in names and not months:
        raise UsageError(f"date pattern {pattern!r} has a day (%d) but no month", "add %m, or use %j for the day of the year")
    if names & {"hour", "minute", "second"} and not ({"day", "doy"} & names):
        raise UsageError(f"date pattern {pattern!r} has a time of day but no day", "add %d (with %m) or %j")


def parse_date(name: str, pattern: re.Pattern[str]) -> dt.datetime | None:
    """Return the date in a file name, or None when the name does not match ``pattern``.

    Parameters
    ----------
    name
        A file name or path (only the last component is matched).
    pattern
        A regex from :func:`compile_date_pattern`.

    Raises
    ------
    UsageError
        The name matches but its date is impossible (``2021-02-30``, month 13,
        day of year 366 in a common year); the message names the file and the value.
    """
    base = os.path.basename(name.rstrip("/\\")) or name
    m = pattern.fullmatch(base)
    if m is None:
        return None
    g = {k: v for k, v in m.groupdict().items() if v is not None}
    hint = "fix the file name, or change the date pattern so that it does not match this file"

    def num(key: str) -> int | None:
        if key not in g:
            return None
        text = g[key].strip()
        if not text.isdigit() or len(text) > 9:
            raise UsageError(f"file {base!r}: {key} {g[key]!r} is not a number", hint)
        return int(text)

    year = num("year")
    if year is None:
        y2 = num("year2")
        if y2 is None:
            raise UsageError(f"file {base!r} matches the date pattern but no year was found in it", "give the year group a value in every name it matches")
        year = 1900 + y2 if y2 >= 69 else 2000 + y2
    month = num("month")
    for key in ("mon", "monthname"):
        if key in g:
            word = g[key].strip().lower()
            hits = [i + 1 for i, full in enumerate(_MONTHS) if len(word) >= 3 and full.startswith(word)]
            if len(hits) != 1:
                raise UsageError(f"file {base!r}: {g[key]!r} is not a month name", hint)
            month = hits[0]
    day, doy = num("day"), num("doy")
    hour, minute, second = num("hour") or 0, num("minute") or 0, num("second") or 0
    try:
        if doy is not None:
            leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
            if not 1 <= doy <= (366 if leap else 365):
                raise ValueError
            base_date = dt.datetime(year, 1, 1) + dt.timedelta(days=doy - 1)
            return base_date.replace(hour=hour, minute=minute, second=second)
        return dt.datetime(year, month or 1, day or 1, hour, minute, second)
    except (ValueError, OverflowError):
        if doy is not None:
            value = f"day of year {doy} in {year}"
        else:
            value = f"{year:04d}-{month or 1:02d}-{day or 1:02d}" + (f" {hour:02d}:{minute:02d}:{second:02d}" if {"hour", "minute", "second"} & set(g) else "")
        raise UsageError(f"file {base!r} has an impossible date {value}", hint) from None


def suggest_pattern(name: str) -> str | None:
    """Guess a date pattern for a file name (``chirps_pr_19810101.tif`` -> ``chirps_pr_%Y%m%d.tif``), or None."""
    base = os.path.basename(name).replace("%", "%%")
    guesses = [
        (r"(?<![0-9])(1[89]|20)[0-9]{2}([-_.])[0-9]{2}\2[0-9]{2}(?![0-9])", lambda m: f"%Y{m.group(2)}%m{m.group(2)}%d"),
        (r"(?<![0-9])(1[89]|20)[0-9]{2}(0[1-9]|1[0-2])[0-3][0-9](?![0-9])", lambda m: "%Y%m%d"),
        (r"(?<![0-9])(1[89]|20)[0-9]{2}[0-3][0-9]{2}(?![0-9])", lambda m: "%Y%j"),
        (r"(?<![0-9])(1[89]|20)[0-9]{2}([-_.])[0-9]{2}(?![0-9])", lambda m: f"%Y{m.group(2)}%m"),
    ]
    for rx, make in guesses:
        m = re.search(rx, base)
        if m:
            return base[: m.start()] + make(m) + base[m.end() :]
    return None


# --------------------------------------------------------------------------- ISO dates and CF time


_ISO = re.compile(
    r"\s*(?P<y>[0-9]{1,4})-(?P<m>[0-9]{1,2})(?:-(?P<d>[0-9]{1,2}))?"
    r"(?:(?:T|\s+)(?P<H>[0-9]{1,2})(?::(?P<M>[0-9]{1,2})(?::(?P<S>[0-9]{1,2})(?:\.(?P<f>[0-9]+))?)?)?)?"
    r"\s*(?P<tz>Z|UTC|GMT|[+-][0-9]{2}(?::?[0-9]{2})?)?\s*",
    re.ASCII | re.IGNORECASE,
)
_COMPACT = re.compile(r"\s*(?P<y>[0-9]{4})(?P<m>[0-9]{2})(?P<d>[0-9]{2})(?:T(?P<H>[0-9]{2})(?P<M>[0-9]{2})(?P<S>[0-9]{2})?)?(?P<tz>Z)?\s*", re.ASCII)


def parse_iso(text: str) -> dt.datetime | None:
    """Parse an ISO-like date or date-time into a naive UTC datetime, or return None.

    Accepts ``2021-06-01``, ``2021-6-1``, ``2021-06`` (the 1st), ``20210601``,
    ``2021-06-01T12:30:00Z``, ``1981-1-1 0:0:0``, ``1980-01-01 00:00:0.0`` and
    UTC offsets (``+02:00``, converted to UTC). Impossible dates give None.
    """
    m = _ISO.fullmatch(text) or _COMPACT.fullmatch(text)
    if m is None:
        return None
    g = m.groupdict()
    try:
        frac = g.get("f")
        micro = round(float("0." + frac) * 1e6) if frac else 0
        value = dt.datetime(int(g["y"]), int(g["m"]), int(g["d"] or 1), int(g["H"] or 0), int(g["M"] or 0), int(g["S"] or 0)) + dt.timedelta(microseconds=micro)
    except (ValueError, OverflowError):
        return None
    tz = (g.get("tz") or "").upper()
    if tz and tz[0] in "+-":
        digits = tz[1:].replace(":", "")
        offset = dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
        value = value - offset if tz[0] == "+" else value + offset
    return value


_CF_UNITS: dict[str, float] = {}
for _names, _secs in (
    (("days", "day", "d"), 86400.0),
    (("hours", "hour", "hrs", "hr", "h"), 3600.0),
    (("minutes", "minute", "mins", "min"), 60.0),
    (("seconds", "second", "secs", "sec", "s"), 1.0),
    (("milliseconds", "millisecond", "msecs", "msec", "ms"), 0.001),
    (("weeks", "week"), 604800.0),
):
    for _n in _names:
        _CF_UNITS[_n] = _secs

_GREGORIAN_START = dt.datetime(1582, 10, 15)


def cf_time_decoder(units: str, calendar: str | None, where: str) -> Any:
    """Return a function turning CF time values (``"days since 1980-01-01 00:00:0.0"``) into datetimes.

    Only the standard (``gregorian``) and ``proleptic_gregorian`` calendars are
    supported, and only fixed-length units (weeks, days, hours, minutes, seconds,
    milliseconds). Values are rounded to the nearest second.

    Raises
    ------
    InputError
        Another calendar, units that are not ``X since DATE``, months or years as
        units, or a reference date before 1582-10-15 in the mixed standard calendar.
    """
    cal = (calendar or "standard").strip().lower()
    hint = "convert the time axis to the standard calendar (e.g. cdo setcalendar,standard), or give the dates with --dates FILE"
    if cal not in ("standard", "gregorian", "proleptic_gregorian", ""):
        raise InputError(f"{where} uses the {calendar!r} calendar, which tilewise cannot convert to dates", hint)
    m = re.fullmatch(r"\s*([A-Za-z]+)\s+since\s+(.+?)\s*", units or "", re.IGNORECASE)
    if m is None:
        raise InputError(f"{where} has time units {units!r}, not 'UNITS since DATE'", "give the dates with --dates FILE (one ISO date per line)")
    unit = m.group(1).lower()
    if unit in ("months", "month", "years", "year", "common_years", "common_year"):
        raise InputError(f"{where} counts time in {unit} ({units!r}), which have no fixed length", hint)
    if unit not in _CF_UNITS:
        raise InputError(f"{where} has an unknown time unit {m.group(1)!r} in {units!r}", "expected days, hours, minutes or seconds since a date")
    ref_text = m.group(2)
    ref = parse_iso(ref_text)
    if ref is None:
        raise InputError(f"{where} has a reference date {ref_text!r} that is not a date", hint)
    if cal in ("standard", "gregorian") and ref < _GREGORIAN_START:
        raise InputError(f"{where} counts time from {ref_text!r}, before 1582-10-15 in the mixed Julian/Gregorian calendar", hint)
    factor = _CF_UNITS[unit]

    def decode(value: float) -> dt.datetime:
        seconds = float(value) * factor
        if not math.isfinite(seconds):
            raise InputError(f"{where} has a time value {value!r} that is not a number", hint)
        try:
            return ref + dt.timedelta(seconds=round(seconds))
        except OverflowError:
            raise InputError(f"{where} has a time value {value!r} {unit} since {ref_text} outside the years 1..9999", hint) from None

    return decode


# --------------------------------------------------------------------------- opening stacks


@dataclass
class _Item:
    date: dt.datetime
    path: str
    band: int
    label: str
    grid: Grid
    dtype: str
    nodata: float | None
    use_mask: bool
    scale: float
    offset: float
    identity: tuple[int, int]
    block: tuple[int, int]


def open_stack(
    sources: Sequence[str],
    *,
    date_pattern: str | None = None,
    dates: str | None = None,
    variable: str | None = None,
    duplicates: str = "error",
    align: bool = False,
) -> Stack:
    """Resolve inputs into a dated :class:`Stack`.

    Parameters
    ----------
    sources
        Folders (their raster files, sorted), globs, or file paths; or one
        multi-band file (or netCDF file, or ``NETCDF:"file.nc":var`` name) whose
        bands are the dates.
    date_pattern
        Dates the files by name (see :func:`compile_date_pattern`). Files from
        folders and globs (and named files) that do not match are skipped and listed
        in :attr:`Stack.skipped`. With ``variable``, each file is opened as
        ``NETCDF:"file":variable``.
    dates
        For the bands of one file: a sidecar file (one ISO date per line; a CSV with
        a ``date`` or ``time`` column; or a JSON list, or object with a ``time``
        list), or ``"metadata"`` (the default for one file): the netCDF time axis
        (``NETCDF_DIM_time`` with ``time#units``), GRIB valid times, band ``DATE``
        tags or descriptions that are dates, or a terra ``FILE.aux.json`` sidecar.
    variable
        The netCDF variable with a time axis.
    duplicates
        Members with the same date: ``"error"`` (the default), ``"first"`` /
        ``"last"`` (keep one, in path then band order) or ``"mean"`` (keep all; a
        consumer averages them, see :attr:`Stack.duplicate_policy`).
    align
        When False, members on different grids raise :class:`GridMismatchError`;
        when True the stack's grid is the first member's and each member keeps its
        own grid (:attr:`Member.grid`) for the caller to resample.

    Raises
    ------
    UsageError
        Bad option values, impossible dates, duplicate dates under ``"error"``.
    InputError
        Missing files, no file matching the pattern, a sidecar whose date count
        differs from the band count, undated bands, differing nodata values.
    GridMismatchError
        Members on different grids (and ``align`` is False).
    """
    srcs = [str(sources)] if isinstance(sources, str | os.PathLike) else [str(s) for s in sources]
    if not srcs:
        raise UsageError("no stack inputs given", "name a folder, a glob or files with --date-pattern, or one multi-band file")
    if duplicates not in DUPLICATE_POLICIES:
        raise UsageError(f"unknown duplicates policy {duplicates!r}", f"use one of: {', '.join(DUPLICATE_POLICIES)}")
    if variable is not None and (not isinstance(variable, str) or not variable.strip() or any(c in variable for c in ':"')):
        raise UsageError(f"netCDF variable {variable!r} is not a variable name", "give the name of a variable in the file, e.g. --variable tas")
    if dates is not None and not isinstance(dates, str | os.PathLike):
        raise UsageError(f"--dates {dates!r} is not a file name", "give a text/CSV file with one ISO date per line, or 'metadata'")
    skipped: tuple[str, ...] = ()
    if date_pattern is not None:
        if dates is not None:
            raise UsageError(f"--date-pattern {date_pattern!r} and --dates {str(dates)!r} cannot be combined",
                             "use --date-pattern to date files by name, or --dates for the bands of one file")  # fmt: skip
        items, skipped = _items_from_files(srcs, date_pattern, variable)
    else:
        if len(srcs) > 1 or _is_glob(srcs[0]) or Path(srcs[0]).is_dir():
            files = _expand(srcs)
            example = os.path.basename(files[0]) if files else srcs[0]
            guess = suggest_pattern(example)
            hint = f"pass --date-pattern {guess!r}" if guess else f"pass --date-pattern to read the dates from the file names ({PATTERN_HELP})"
            shown = ", ".join(_shorten(s) for s in srcs[:3])
            raise UsageError(f"{len(files)} files given for a stack ({shown}) without a date pattern", hint)
        items = _items_from_bands(srcs[0], dates, variable)
    return _finish(items, duplicates, align, skipped)


def open_dated(members: Sequence[tuple[dt.datetime, str, str]], *, duplicates: str = "error", align: bool = False) -> Stack:
    """A :class:`Stack` of single-band files whose dates are given (e.g. the items of a STAC search).

    Parameters
    ----------
    members
        ``(date, path, label)`` per file: a naive UTC date, a path or URL, and how
        messages name it (a STAC item id).
    duplicates, align
        As for :func:`open_stack`.

    Raises
    ------
    UsageError
        No members, an unknown duplicates policy, duplicate dates under ``"error"``.
    InputError
        A missing or unreadable file, a file with other than one band, differing nodata.
    GridMismatchError
        Members on different grids (and ``align`` is False).
    """
    if not members:
        raise UsageError("no stack members given", "give at least one dated file")
    if duplicates not in DUPLICATE_POLICIES:
        raise UsageError(f"unknown duplicates policy {duplicates!r}", f"use one of: {', '.join(DUPLICATE_POLICIES)}")
    items = []
    for (date, path, label), (info, ident) in zip(members, _probe_all([(path, path) for _d, path, _l in members]), strict=True):
        if info["count"] != 1:
            raise InputError(f"{label} ({_shorten(path)!r}) has {info['count']} bands, but a stack of files takes one band per file",
                             "pick an asset holding one band per item")  # fmt: skip
        items.append(_item_of(info, date, path, 1, label, ident))
    return _finish(items, duplicates, align, ())


# Remote members are probed this many at a time: each open and identity request waits on the network.
PROBE_THREADS = 16


def _probe_all(pairs: Sequence[tuple[str, str]]) -> Iterator[tuple[dict[str, Any], tuple[int, int]]]:
    """:func:`_probe` and the file identity of each ``(path, file_part)``, in order; remote ones concurrently.

    An error is raised for the first failing member in order, as a serial loop would.
    """

    def one(pair: tuple[str, str]) -> tuple[dict[str, Any], tuple[int, int]]:
        return _probe(*pair), file_identity(pair[1])

    if sum(is_remote(f) for _p, f in pairs) < 2:
        with probe_env():  # local members: one GDAL environment for all their opens
            yield from map(one, pairs)
        return
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(PROBE_THREADS)
    try:
        yield from pool.map(one, pairs)
    finally:  # an error (or a caller stopping at a bad member) need not wait for the members not yet probed
        pool.shutdown(wait=False, cancel_futures=True)


def _items_from_files(srcs: list[str], date_pattern: str, variable: str | None) -> tuple[list[_Item], tuple[str, ...]]:
    regex = compile_date_pattern(date_pattern)
    for s in srcs:
        if not (_is_glob(s) or Path(s).is_dir()):
            check_readable(_file_part(s))
    files = _expand(srcs)
    dated: list[tuple[dt.datetime, str]] = []
    skipped: list[str] = []
    for f in files:
        d = parse_date(url_name(f) if is_remote(f) else f, regex)
        if d is None:
            skipped.append(f)
        else:
            dated.append((d, f))
    if not dated:
        where = ", ".join(repr(_shorten(s)) for s in srcs[:3]) + (f" and {len(srcs) - 3} more" if len(srcs) > 3 else "")
        example = os.path.basename(files[0])
        guess = suggest_pattern(example)
        hint = (
            f"the pattern must match the whole file name, e.g. --date-pattern {guess!r}"
            if guess
            else f"the pattern must match the whole file name; {PATTERN_HELP}"
        )
        raise InputError(f"no file name matches the date pattern {date_pattern!r} in {where} (e.g. {example!r})", hint)
    items = []
    paths = [(f'NETCDF:"{f}":{variable}' if variable else f, f) for _d, f in dated]
    for (d, f), (path, _f), (info, ident) in zip(dated, paths, _probe_all(paths), strict=True):
        if info["count"] != 1:
            if info["count"] == 0:
                raise InputError(f"{os.path.basename(f)!r} holds no raster bands but subdatasets ({', '.join(info['subdatasets'][:4])})",
                                 "pass --variable NAME to pick one of its variables")  # fmt: skip
            raise InputError(f"{os.path.basename(f)!r} has {info['count']} bands, but a stack of files takes one band per file",
                             "give single-band files, or give this file alone (with --dates) to stack its bands")  # fmt: skip
        label = (url_name(f) if is_remote(f) else os.path.basename(f)) + (f":{variable}" if variable else "")
        items.append(_item_of(info, d, path, 1, label, ident))
    return items, tuple(skipped)


def _items_from_bands(src: str, dates: str | None, variable: str | None) -> list[_Item]:
    path, file_part, label_base = _band_source(src, variable)
    info = _probe(path, file_part)
    count = info["count"]
    if count == 0:
        subs = info["subdatasets"]
        names = ", ".join(s.rsplit(":", 1)[-1] for s in subs[:8])
        raise InputError(f"{_shorten(src)!r} holds no raster bands but variables ({names})", "pass --variable NAME to pick the one with the time axis")
    by_metadata = dates is None or str(dates) == "metadata"
    when = _dates_from_metadata(info, path, label_base, count) if by_metadata else read_dates_file(str(dates), count, label_base)
    ident = file_identity(file_part)
    return [_item_of(info, when[b - 1], path, b, f"{label_base} band {b}", ident) for b in range(1, count + 1)]


def _band_source(src: str, variable: str | None) -> tuple[str, str, str]:
    """Return (GDAL name, underlying file, label) for the one-file forms."""
    m = re.fullmatch(r'(?i)netcdf:"?(.+?)"?:([^:"]+)', src)
    if m is not None:
        if variable is not None and variable != m.group(2):
            raise UsageError(
                f"{src!r} names variable {m.group(2)!r} but --variable is {variable!r}", "give the variable once, either in the name or with --variable"
            )
        check_readable(m.group(1))
        return src, m.group(1), f"{os.path.basename(m.group(1))}:{m.group(2)}"
    check_readable(src)
    if variable is None:
        return src, src, os.path.basename(src)
    with _quiet(), open_read(src) as ds:
        subs = list(ds.subdatasets)
    if subs:
        names = [s.rsplit(":", 1)[-1] for s in subs]
        if variable not in names:
            raise UsageError(f"{_shorten(src)!r} has no variable {variable!r} (variables: {', '.join(names[:12])})", "pass one of the variables it has")
    path = f'NETCDF:"{src}":{variable}'
    try:
        with open_read(path):
            pass
    except InputError:
        raise UsageError(f"{_shorten(src)!r} has no netCDF variable {variable!r}", "check the variable name (gdalinfo FILE lists them)") from None
    return path, src, f"{os.path.basename(src)}:{variable}"


def _probe(path: str, file_part: str) -> dict[str, Any]:
    """Open ``path`` once and collect what the stack needs of it."""
    check_readable(file_part)
    from rasterio.enums import MaskFlags

    with _quiet(), open_probed(path) as ds:
        count = ds.count
        info: dict[str, Any] = {"count": count, "subdatasets": list(ds.subdatasets), "path": path, "file": file_part}
        if count == 0:
            return info
        info.update(
            grid=grid_of(ds),
            dtypes=list(ds.dtypes),
            nodatavals=list(ds.nodatavals),
            scales=list(ds.scales),
            offsets=list(ds.offsets),
            block=tuple(int(v) for v in ds.block_shapes[0]),
            use_mask=ds.nodatavals[0] is None and MaskFlags.per_dataset in ds.mask_flag_enums[0],
            tags=None,
        )
        if count > 1 or path.lower().startswith("netcdf:") or path.lower().endswith((".nc", ".nc4", ".grib", ".grib2", ".grb", ".grb2")):
            # Per-band metadata only matters for band stacks; reading it for every file of a folder stack is wasted work.
            info["tags"] = ds.tags()
            info["band_tags"] = [ds.tags(b) for b in range(1, count + 1)]
            info["descriptions"] = list(ds.descriptions)
        return info


def _item_of(info: dict[str, Any], date: dt.datetime, path: str, band: int, label: str, identity: tuple[int, int]) -> _Item:
    nd = info["nodatavals"][band - 1]
    scale, offset = info["scales"][band - 1], info["offsets"][band - 1]
    return _Item(
        date=date, path=path, band=band, label=label, grid=info["grid"], dtype=info["dtypes"][band - 1],
        nodata=None if nd is None else float(nd), use_mask=bool(info["use_mask"]),
        scale=1.0 if scale is None else float(scale), offset=0.0 if offset is None else float(offset),
        identity=identity, block=info["block"],
    )  # fmt: skip


def _dates_from_metadata(info: dict[str, Any], path: str, label: str, count: int) -> list[dt.datetime]:
    """Dates of every band from the file's own metadata (see :func:`open_stack`)."""
    tags: dict[str, str] = info.get("tags") or {}
    band_tags: list[dict[str, str]] = info.get("band_tags") or [{} for _ in range(count)]
    descriptions: list[str | None] = info.get("descriptions") or [None] * count
    decoders: dict[str, Any] = {}
    out: list[dt.datetime | None] = []
    for b in range(1, count + 1):
        bt = band_tags[b - 1]
        found: dt.datetime | None = None
        # netCDF: NETCDF_DIM_<dim> per band, with <dim>#units "X since DATE" in the dataset metadata.
        for key, value in bt.items():
            if key.startswith("NETCDF_DIM_"):
                dim = key[len("NETCDF_DIM_") :]
                units = tags.get(f"{dim}#units", "")
                if " since " not in units.lower():
                    continue
                if dim not in decoders:
                    decoders[dim] = cf_time_decoder(units, tags.get(f"{dim}#calendar"), f"{label} (time axis {dim!r})")
                try:
                    number = float(value)
                except ValueError:
                    raise InputError(f"{label} band {b} has a time value {value!r} that is not a number", "give the dates with --dates FILE") from None
                found = decoders[dim](number)
                break
        if found is None and "GRIB_VALID_TIME" in bt:
            m = re.match(r"\s*(-?[0-9]+)", bt["GRIB_VALID_TIME"])
            if m:
                found = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=int(m.group(1)))
        if found is None:
            for key, value in bt.items():
                if key.lower() in ("date", "datetime", "time", "acquisition_date", "acquisitiondate", "date_time"):
                    found = parse_iso(value)
                    if found is not None:
                        break
        if found is None and descriptions[b - 1]:
            found = parse_iso(str(descriptions[b - 1]))
        if found is None and count == 1:
            for key in ("DATE", "date", "TIFFTAG_DATETIME"):
                if key in tags:
                    found = parse_iso(tags[key]) or _parse_tiff_datetime(tags[key])
                    if found is not None:
                        break
        out.append(found)
    missing = [b for b, d in enumerate(out, start=1) if d is None]
    if not missing:
        return [d for d in out if d is not None]
    aux = info["file"] + ".aux.json"
    if not path.lower().startswith("netcdf:") and Path(aux).is_file():
        return read_dates_file(aux, count, label)
    example = f"band {missing[0]}" + (f" (description {descriptions[missing[0] - 1]!r})" if descriptions[missing[0] - 1] else "")
    raise InputError(f"{label} has no date in its metadata for {example}{f' and {len(missing) - 1} other bands' if len(missing) > 1 else ''}",
                     f"give the dates with --dates FILE (one ISO date per line, {count} lines)")  # fmt: skip


def _parse_tiff_datetime(text: str) -> dt.datetime | None:
    m = re.fullmatch(r"\s*([0-9]{4}):([0-9]{2}):([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})\s*", text)
    if m is None:
        return None
    try:
        y, mo, d, hh, mi, ss = (int(v) for v in m.groups())
        return dt.datetime(y, mo, d, hh, mi, ss)
    except ValueError:
        return None


def read_dates_file(path: str, count: int | None, what: str) -> list[dt.datetime]:
    """Read a dates sidecar: one ISO date per line, a CSV with a ``date``/``time`` column, or JSON.

    Parameters
    ----------
    path
        The sidecar file. Blank lines and lines starting with ``#`` are ignored.
        JSON: a list of date strings, or an object with a ``time``/``date``/``dates``
        list (terra's ``.aux.json``).
    count
        The number of dates expected (the band count), or None for any number.
    what
        How messages name the stack (the raster's name).

    Raises
    ------
    InputError
        A missing or unreadable file, a line that is not a date (named with its line
        number), or a count that differs from ``count``.
    """
    p = Path(path)
    hint = "give a text file with one ISO date (YYYY-MM-DD) per line, a CSV with a 'date' column, or --dates metadata"
    if not p.is_file():
        raise InputError(f"dates file {path!r} does not exist", hint)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        why = "it is not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else exc.strerror or str(exc)
        raise InputError(f"cannot read dates file {path!r} ({why})", hint) from None
    values: list[tuple[int, str]] = []
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InputError(f"dates file {path!r} is not valid JSON ({exc})", hint) from None
        if isinstance(data, dict):
            data = next((data[k] for k in ("time", "date", "dates", "times") if k in data), None)
        if not isinstance(data, list):
            raise InputError(f"dates file {path!r} holds no list of dates (expected a list, or an object with a 'time' list)", hint)
        values = [(i, str(v)) for i, v in enumerate(data, start=1)]
    else:
        lines = [(i, line.strip()) for i, line in enumerate(text.splitlines(), start=1)]
        lines = [(i, line) for i, line in lines if line and not line.startswith("#")]
        if lines and any(sep in lines[0][1] for sep in ",;\t"):
            delimiter = next(sep for sep in ",;\t" if sep in lines[0][1])
            rows = [(i, next(csv.reader(io.StringIO(line), delimiter=delimiter), [])) for i, line in lines]
            header = [c.strip().lower() for c in rows[0][1]]
            col = 0
            if not any(parse_iso(c) for c in rows[0][1]):
                names = [n for n in ("date", "time", "datetime", "dates") if n in header]
                if not names:
                    raise InputError(f"dates file {path!r} has no 'date' column (columns: {', '.join(rows[0][1])})", "name the column of dates 'date'")
                col = header.index(names[0])
                rows = rows[1:]
            for i, row in rows:
                values.append((i, row[col].strip() if col < len(row) else ""))
        else:
            values = lines
    out = []
    for i, value in values:
        d = parse_iso(value)
        if d is None:
            raise InputError(f"dates file {path!r} line {i}: {value!r} is not a date", hint)
        out.append(d)
    if count is not None and len(out) != count:
        raise InputError(f"dates file {path!r} has {len(out)} dates but {what} has {count} bands", f"give exactly {count} dates, one per band, in band order")
    return out


def _finish(items: list[_Item], duplicates: str, align: bool, skipped: tuple[str, ...]) -> Stack:
    items = sorted(items, key=lambda it: (it.date, it.path, it.band))
    kept: list[_Item] = []
    i = 0
    while i < len(items):
        j = i
        while j + 1 < len(items) and items[j + 1].date == items[i].date:
            j += 1
        group = items[i : j + 1]
        if len(group) > 1 and duplicates == "error":
            a, b = group[0], group[1]
            na, nb = (a.label, b.label) if a.label != b.label else (a.path, b.path)
            raise UsageError(f"two members have the date {format_date(a.date)}: {na!r} and {nb!r}",
                             "pass --duplicates first|last|mean to keep the first, keep the last, or average them")  # fmt: skip
        if duplicates == "first":
            kept.append(group[0])
        elif duplicates == "last":
            kept.append(group[-1])
        else:
            kept.extend(group)
        i = j + 1
    first = kept[0]
    notes: list[str] = []
    for it in kept[1:]:
        diff = first.grid.mismatch(it.grid)
        if diff is not None and not align:
            raise GridMismatchError(f"{it.label} is on a different grid than {first.label}: {diff}", ALIGN_HINT)
    other_types = sorted({it.dtype for it in kept} - {first.dtype})
    if other_types:
        odd = next(it for it in kept if it.dtype != first.dtype)
        notes.append(f"members have data types {', '.join([first.dtype, *other_types])} (e.g. {odd.label} is {odd.dtype}); values are read as {first.dtype}")
    for it in kept[1:]:
        if not _same_nodata(first.nodata, it.nodata):
            raise InputError(f"{it.label} has nodata {_nd(it.nodata)} but {first.label} has nodata {_nd(first.nodata)}",
                             "give members with one nodata value (set it with gdal_edit.py -a_nodata VALUE)")  # fmt: skip
    if align:
        n_off = sum(1 for it in kept if first.grid.mismatch(it.grid) is not None)
        if n_off:
            notes.append(f"{n_off} member(s) are on other grids than {first.label} and need resampling onto it")
    # Members on the shared grid share one Grid object, so a pickled stack carries its CRS WKT once.
    members = tuple(
        Member(date=it.date, path=it.path, band=it.band, label=it.label, scale=it.scale, offset=it.offset, identity=it.identity,
               grid=first.grid if first.grid.mismatch(it.grid) is None else it.grid)
        for it in kept
    )  # fmt: skip
    return Stack(
        members=members, grid=first.grid, dtype=first.dtype, nodata=first.nodata, duplicate_policy=duplicates,
        use_mask=first.use_mask, block_shape=first.block, skipped=skipped, notes=tuple(notes),
    )  # fmt: skip


def check_grids(stack: Stack) -> None:
    """Raise :class:`GridMismatchError` naming the first member (in date order) not on the stack's grid."""
    ref = stack.members[0].label if stack.members else "the stack"
    for m in stack.members:
        if m.grid is None:
            continue
        diff = stack.grid.mismatch(m.grid)
        if diff is not None:
            raise GridMismatchError(f"{m.label} is on a different grid than {ref}: {diff}", ALIGN_HINT)


def _same_nodata(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a == b or (math.isnan(a) and math.isnan(b))


def _nd(v: float | None) -> str:
    return "none" if v is None else f"{v:g}"


def _is_glob(item: str) -> bool:
    return any(ch in item for ch in "*?[") and not Path(item).exists()


def _file_part(path: str) -> str:
    m = re.fullmatch(r'(?i)netcdf:"?(.+?)"?:([^:"]+)', path)
    return m.group(1) if m else path


def _expand(srcs: list[str]) -> list[str]:
    """Folders (their raster files, sorted), globs (sorted) and paths, in order, without repeats."""
    out: list[str] = []
    for item in srcs:
        if is_remote(item):  # URLs and object-store keys are taken as named: nothing is listed over the network
            if item.split("?", 1)[0].endswith("/") or "*" in item.split("?", 1)[0]:
                raise InputError(f"{item!r} names a folder or a pattern of remote files, which cannot be listed over HTTP or S3",
                                 "name each file's URL (or s3:// key) as an input, e.g. generated by a shell loop")  # fmt: skip
            out.append(item)
        elif _is_glob(item):
            hits = sorted(h for h in _glob.glob(item, recursive=True) if Path(h).is_file())
            if not hits:
                raise InputError(f"pattern {item!r} matches no files", "check the pattern (quote it so the shell does not expand it)")
            out.extend(hits)
        elif Path(item).is_dir():
            found = sorted(str(p) for p in Path(item).iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in STACK_SUFFIXES)
            if not found:
                raise InputError(f"folder {item!r} holds no raster files ({', '.join(STACK_SUFFIXES[:4])} ...)", "name a folder of rasters, a glob, or files")
            out.extend(found)
        else:
            out.append(item)
    seen: set[str] = set()
    unique = []
    for p in out:
        key = p if is_remote(p) else os.path.realpath(p)  # the same file named twice (a folder and a glob over it) is one member
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence rasterio's NotGeoreferencedWarning for netCDF containers (their variables carry the georeferencing)."""
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield


def _shorten(path: str) -> str:
    return path if len(path) < 60 else "..." + path[-57:]


# --------------------------------------------------------------------------- selection


def _parse_bound(value: str | dt.date, what: str) -> tuple[dt.datetime, dt.datetime]:
    """Return (start of the period named, start of the next one): ``2021`` is all of 2021, ``2021-06`` all of June."""
    hint = "give a date as YYYY-MM-DD, YYYY-MM or YYYY (or YYYY-MM-DDTHH:MM)"
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None), value.replace(tzinfo=None) + dt.timedelta(microseconds=1)
    if isinstance(value, dt.date):
        d0 = dt.datetime(value.year, value.month, value.day)
        return d0, d0 + dt.timedelta(days=1)
    if not isinstance(value, str):
        raise UsageError(f"{what} {value!r} is not a date", hint)
    text = value.strip()
    try:
        if re.fullmatch(r"[0-9]{4}", text):
            y = int(text)
            return dt.datetime(y, 1, 1), (dt.datetime(y + 1, 1, 1) if y < 9999 else dt.datetime.max)
        m = re.fullmatch(r"([0-9]{4})-([0-9]{1,2})", text)
        if m:
            y, mo = int(m.group(1)), int(m.group(2))
            start = dt.datetime(y, mo, 1)
            return start, (dt.datetime(y + (mo == 12), mo % 12 + 1, 1) if (y, mo) != (9999, 12) else dt.datetime.max)
        m = re.fullmatch(r"([0-9]{4})-?([0-9]{2})-?([0-9]{2})", text) or re.fullmatch(r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})", text)
        if m:
            start = dt.datetime(int(m.group(1)), int(m.group(2)), int(m.group(3)))
            return start, (start + dt.timedelta(days=1) if start.date() < dt.date.max else dt.datetime.max)
    except (ValueError, OverflowError):
        raise UsageError(f"{what} {value!r} is not a valid date", hint) from None
    if re.search(r"[T ][0-9]", text):
        d = parse_iso(text)
        if d is not None:
            return d, d + dt.timedelta(microseconds=1)
    raise UsageError(f"{what} {value!r} is not a date", hint)


def parse_months(text: str) -> tuple[int, ...]:
    """Parse ``"6,7,8"``, ``"jun,jul,aug"``, ``"6-8"`` or ``"11-2"`` (wrapping) into month numbers.

    Raises
    ------
    UsageError
        A part that is not a month 1..12 or a month name.
    """
    hint = "give months as numbers 1..12 or names, separated by commas, e.g. 6,7,8 or jun-aug or 12,1,2"

    def one(part: str) -> int:
        p = part.strip().lower()
        if p.isdigit() and 1 <= int(p) <= 12:
            return int(p)
        hits = [i + 1 for i, name in enumerate(_MONTHS) if len(p) >= 3 and name.startswith(p)]
        if len(hits) == 1:
            return hits[0]
        raise UsageError(f"month {part.strip()!r} in {text!r} is not a month", hint)

    if not isinstance(text, str) or not text.strip():
        raise UsageError(f"months {text!r} is empty", hint)
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, _, b = part.partition("-")
            lo, hi = one(a), one(b)
            k = lo
            out.append(k)
            while k != hi:
                k = k % 12 + 1
                out.append(k)
        else:
            out.append(one(part))
    return tuple(sorted(set(out)))


def select(
    stack: Stack,
    *,
    start: str | dt.date | None = None,
    end: str | dt.date | None = None,
    months: Sequence[int] | None = None,
    every: int | None = None,
) -> Stack:
    """Keep the members within a date range, in some months, and every Nth date.

    Parameters
    ----------
    start, end
        ISO dates ``YYYY-MM-DD``, ``YYYY-MM`` or ``YYYY`` (or ``date`` objects);
        both ends are inclusive and a coarse date covers its whole period:
        ``end="2021-06"`` keeps all of June 2021.
    months
        Month numbers 1..12 to keep (``[6, 7, 8]`` for JJA).
    every
        Keep dates 0, N, 2N ... of what is left after ``start``/``end``/``months``.
        It counts dates, so same-date members (``duplicates="mean"``) stay together.

    Raises
    ------
    UsageError
        A bad date, month or step, ``start`` after ``end``, or nothing left.
    """
    asked: list[str] = []
    lo = hi = None
    if start is not None:
        lo = _parse_bound(start, "--start")[0]
        asked.append(f"start {start}")
    if end is not None:
        hi = _parse_bound(end, "--end")[1]
        asked.append(f"end {end}")
    if lo is not None and hi is not None and lo >= hi:
        raise UsageError(f"--start {start} is after --end {end}", "give a start date before the end date")
    month_set: set[int] | None = None
    if months is not None:
        if isinstance(months, str):
            months = parse_months(months)
        month_set = set()
        for mo in months:
            if isinstance(mo, bool) or not isinstance(mo, int | np.integer) or not 1 <= int(mo) <= 12:
                raise UsageError(f"month {mo!r} is not a month number", "give months as numbers 1..12, e.g. --months 6,7,8")
            month_set.add(int(mo))
        if not month_set:
            raise UsageError("--months is empty", "give months as numbers 1..12, e.g. --months 6,7,8")
        asked.append(f"months {','.join(str(mo) for mo in sorted(month_set))}")
    if every is not None:
        if isinstance(every, bool) or not isinstance(every, int | np.integer) or every < 1:
            raise UsageError(f"--every {every!r} is not a whole number of dates >= 1", "give --every N with N >= 1 (1 keeps every date)")
        asked.append(f"every {every}")
    kept = [
        m for m in stack.members
        if (lo is None or m.date >= lo) and (hi is None or m.date < hi) and (month_set is None or m.date.month in month_set)
    ]  # fmt: skip
    if every is not None and every > 1:
        order: dict[dt.datetime, int] = {}
        for m in kept:
            order.setdefault(m.date, len(order))
        kept = [m for m in kept if order[m.date] % every == 0]
    if not kept:
        raise UsageError(f"no dates left after the selection ({', '.join(asked) or 'nothing asked'})", f"the stack has {stack.date_range}")
    return replace(stack, members=tuple(kept))


# --------------------------------------------------------------------------- space


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """Parse ``"minx,miny,maxx,maxy"`` (commas and/or spaces) into four floats.

    Raises
    ------
    UsageError
        Not four finite numbers, or min >= max on an axis.
    """
    hint = "give --bbox minx,miny,maxx,maxy, e.g. --bbox -88,11,-83,16"
    if not isinstance(text, str):
        raise UsageError(f"bbox {text!r} is not text", hint)
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise UsageError(f"bbox {text!r} is not four numbers", hint) from None
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        raise UsageError(f"bbox {text!r} is not four finite numbers", hint)
    box = (vals[0], vals[1], vals[2], vals[3])
    _check_box(box, text)
    return box


def _check_box(box: tuple[float, float, float, float], shown: object) -> None:
    minx, miny, maxx, maxy = box
    if not all(math.isfinite(v) for v in box):
        raise UsageError(f"bbox {shown!r} is not four finite numbers", "give --bbox minx,miny,maxx,maxy")
    if minx >= maxx or miny >= maxy:
        raise UsageError(f"bbox {shown!r} has min >= max ({'x' if minx >= maxx else 'y'})", "give the corners in the order minx,miny,maxx,maxy")


def bbox_window(grid: Grid, bbox: tuple[float, float, float, float], bbox_crs: str | None = None) -> tuple[int, int, int, int]:
    """Return ``(row_off, col_off, height, width)`` of the pixels whose centres fall in ``bbox``.

    Parameters
    ----------
    grid
        A north-up grid.
    bbox
        ``(minx, miny, maxx, maxy)`` in the grid's CRS, or in ``bbox_crs``; edges are inclusive.
    bbox_crs
        The bbox's CRS (anything rasterio accepts, e.g. ``"EPSG:4326"``); the box is
        reprojected (its bounds, densified) into the grid's CRS.

    Raises
    ------
    UsageError
        min >= max, a bad ``bbox_crs``, a rotated grid, or a box that holds no pixel
        centre of the grid (the message names the box and the grid's bounds).
    """
    box = tuple(float(v) for v in bbox)
    if len(box) != 4:
        raise UsageError(f"bbox {bbox!r} is not four numbers", "give minx,miny,maxx,maxy")
    b4 = (box[0], box[1], box[2], box[3])
    _check_box(b4, bbox)
    shown = ",".join(f"{v:g}" for v in b4)
    if bbox_crs is not None:
        if grid.crs is None:
            raise UsageError(f"--bbox-crs {bbox_crs!r} given but the stack has no CRS", "give --bbox in the stack's pixel coordinates without --bbox-crs")
        from rasterio.crs import CRS
        from rasterio.errors import CRSError
        from rasterio.warp import transform_bounds

        try:
            src = CRS.from_user_input(bbox_crs)
        except (CRSError, ValueError, TypeError):
            raise UsageError(f"--bbox-crs {bbox_crs!r} is not a CRS", "give an EPSG code such as EPSG:4326, or a PROJ/WKT definition") from None
        try:
            tb = transform_bounds(src, CRS.from_user_input(grid.crs), *b4, densify_pts=21)
            b4 = (float(tb[0]), float(tb[1]), float(tb[2]), float(tb[3]))
        except Exception as exc:  # GDAL/PROJ raise several types for untransformable boxes
            raise UsageError(
                f"bbox {shown} cannot be transformed from {bbox_crs} to {crs_name(grid.crs)} ({exc})", "give the bbox in the stack's CRS"
            ) from None
        if not all(math.isfinite(v) for v in b4) or b4[0] >= b4[2] or b4[1] >= b4[3]:
            raise UsageError(f"bbox {shown} in {bbox_crs} has no extent in {crs_name(grid.crs)}", "give the bbox in the stack's CRS")
        shown = f"{shown} ({bbox_crs})"
    t = grid.transform
    if t.b != 0 or t.d != 0:
        raise UsageError(f"bbox {shown} cannot select from a rotated grid", "warp the stack to a north-up grid first (gdalwarp)")
    minx, miny, maxx, maxy = b4
    eps = 1e-9
    cols = sorted(((minx - t.c) / t.a - 0.5, (maxx - t.c) / t.a - 0.5))
    rows = sorted(((miny - t.f) / t.e - 0.5, (maxy - t.f) / t.e - 0.5))
    c0, c1 = max(math.ceil(cols[0] - eps), 0), min(math.floor(cols[1] + eps), grid.width - 1)
    r0, r1 = max(math.ceil(rows[0] - eps), 0), min(math.floor(rows[1] + eps), grid.height - 1)
    if c1 < c0 or r1 < r0:
        gb = ",".join(f"{v:g}" for v in grid.bounds)
        inside = minx < grid.bounds[2] and maxx > grid.bounds[0] and miny < grid.bounds[3] and maxy > grid.bounds[1]
        why = f"holds no pixel centre (pixels are {grid.res[0]:g} x {grid.res[1]:g})" if inside else "does not overlap the grid"
        raise UsageError(
            f"bbox {shown} {why}; the stack's bounds are {gb} in {crs_name(grid.crs)}", "give a bbox inside the stack's bounds, in its CRS (or pass --bbox-crs)"
        )
    return (r0, c0, r1 - r0 + 1, c1 - c0 + 1)


def area_weights(grid: Grid, row_off: int, height: int) -> np.ndarray | None:
    """Per-row cell areas of a geographic grid, for area-weighted means; None for projected grids.

    The weight of row ``r`` is the area of its cells on the unit sphere,
    ``|sin(lat_top) - sin(lat_bottom)| * dlon`` (radians), which is exact for a
    spherical Earth and the same for a row whatever tile asks (latitudes clipped
    to +-90). Rows outside the grid are allowed (for halos).

    Returns
    -------
    numpy.ndarray or None
        float64 weights of shape ``(height,)``, or None when the grid has no CRS
        or a projected one (its cells are all the same area).

    Raises
    ------
    UsageError
        A rotated geographic grid.
    """
    if grid.crs is None:
        return None
    from rasterio.crs import CRS

    if not CRS.from_user_input(grid.crs).is_geographic:
        return None
    t = grid.transform
    if t.b != 0 or t.d != 0:
        raise UsageError(
            f"area weights need a north-up grid, but the grid of {crs_name(grid.crs)} is rotated", "warp the stack to a north-up grid first (gdalwarp)"
        )
    r = np.arange(row_off, row_off + height, dtype=np.float64)
    lat_a = np.clip(t.f + t.e * r, -90.0, 90.0)
    lat_b = np.clip(t.f + t.e * (r + 1.0), -90.0, 90.0)
    dlon = math.radians(abs(t.a))
    out: np.ndarray = np.abs(np.sin(np.radians(lat_a)) - np.sin(np.radians(lat_b))) * dlon
    return out
