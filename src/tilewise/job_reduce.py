"""Planning per-pixel reductions over a dated stack (``tilewise reduce``).

The stack's members become the inputs of one output (``t0000``, ``t0001``, ...
in date order), grouped into output bands by month, season, year or all; a
``--bbox`` reads a window of the stack's grid. Median and percentiles hold a
tile's column of dates, so their tiles are shrunk to keep that column small.
"""

from __future__ import annotations

import calendar
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from tilewise.errors import UsageError
from tilewise.grid import Grid, Window
from tilewise.job import ItemPlan, Job, Plan, ReduceSpec, StackSpec, check_nodata_fits, default_nodata, fingerprint
from tilewise.ops.reduce import GROUPBYS, SEASONS, STATS, Group, ReduceOp, holds_column, is_stat
from tilewise.remote import is_remote
from tilewise.sources.raster import RESAMPLINGS, BandRef
from tilewise.sources.stack import Member, Stack, bbox_window, open_dated, open_stack, select
from tilewise.tiling import DEFAULT_TILE_SIZE, Tiling, choose_tile_shape

# A median/percentile tile holds (dates x tile pixels) float64 values: keep that under this.
COLUMN_BYTES = 256 << 20
# The tile edge aimed at (about 0.8 Mpix a tile). Every tile opens and reads every date, at a fixed
# cost per read (~0.5 ms: the open, the file's strip or tile index, the Python around it) besides
# the decoding, so fewer, larger tiles cost less: 366 dates of 3600 x 1300 take 9.7 s at 0.8 Mpix
# tiles against 10.5-11.5 s at 0.4 Mpix on 2 workers (the accumulators stay ~10 MB a tile).
STACK_TILE_SIZE = 896


def validate_reduce(spec: ReduceSpec) -> None:
    """Check the statistic and the grouping; each problem is a one-line :class:`UsageError`."""
    if not is_stat(spec.stat):
        raise UsageError(f"unknown statistic {spec.stat!r}", f"use one of {', '.join(STATS)} or pNN (a percentile, e.g. p90)")
    if spec.groupby not in GROUPBYS:
        raise UsageError(f"unknown --groupby {spec.groupby!r}", f"use one of {', '.join(GROUPBYS)}")
    if spec.expr:
        check_stack_expr(spec.expr)


def check_stack_expr(expr: str) -> None:
    """Refuse an expression that reads another name than ``t`` (each date's value)."""
    from tilewise.expr import parse

    other = sorted(parse(expr).names - {"t"})
    if other:
        raise UsageError(f"unknown name {other[0]!r} in --expr {expr!r}", "the expression reads each date's value as t, e.g. --expr 't * 9 / 5 + 32'")


def resolve_stack(spec: StackSpec, align: bool = False) -> tuple[Stack, tuple[int, int, int, int]]:
    """Open and select the stack; return it with the (row, col, height, width) window the job reads.

    With ``align`` members on other grids are allowed (they are resampled onto the first one's).
    With ``spec.crs``/``spec.resolution`` they are resampled onto the grid those make (``spec.resampling``).
    """
    align = align or spec.crs is not None or spec.resolution is not None
    if spec.stac is not None:
        from tilewise.sources.stac import search_stac

        s = spec.stac
        hits = search_stac(s.source, s.collections, s.datetime, s.bbox, s.query, s.asset)
        stack = open_dated([(h.date, h.href, h.item_id) for h in hits], duplicates=spec.duplicates, align=align)
    else:
        stack = open_stack(list(spec.sources), date_pattern=spec.date_pattern, dates=spec.dates, variable=spec.variable, duplicates=spec.duplicates,
                           align=align)  # fmt: skip
    stack = select(stack, start=spec.start, end=spec.end, months=list(spec.months) if spec.months else None, every=spec.every)
    if spec.crs is not None or spec.resolution is not None:  # --crs/--resolution: members resampled onto a grid covering them all
        from tilewise.sources.regrid import regrid_stack

        stack = regrid_stack(stack, spec.crs, spec.resolution, spec.resampling, spec.stac.bbox if spec.stac is not None else None)
    full = (0, 0, stack.grid.height, stack.grid.width)
    return stack, bbox_window(stack.grid, spec.bbox, spec.bbox_crs) if spec.bbox is not None else full


def _ordinal(m: Member) -> int:
    return m.date.year * 10000 + m.date.month * 100 + m.date.day


def _group_key(m: Member, groupby: str) -> tuple[Any, str]:
    d = m.date
    if groupby == "month":
        return d.month, f"month {d.month:02d} ({calendar.month_abbr[d.month]})"
    if groupby == "season":
        s = SEASONS[d.month]
        return ("DJF", "MAM", "JJA", "SON").index(s), s
    if groupby == "year":
        return d.year, str(d.year)
    return 0, "all"


def make_groups(stack: Stack, spec: ReduceSpec) -> tuple[tuple[Group, ...], dict[str, Member]]:
    """Output bands and the input name of each member (``t0000`` ... in date order)."""
    names = {f"t{i:04d}": m for i, m in enumerate(stack.members)}
    buckets: dict[Any, tuple[str, list[tuple[Any, list[str]]]]] = {}
    for name, m in names.items():
        key, label = _group_key(m, spec.groupby)
        _, dates = buckets.setdefault(key, (label, []))
        if dates and dates[-1][0] == m.date:
            dates[-1][1].append(name)  # same date (--duplicates mean): averaged per pixel
        else:
            dates.append((m.date, [name]))
    what = f"{spec.stat} of {spec.expr}" if spec.expr else spec.stat
    groups = []
    for key in sorted(buckets):
        label, dates = buckets[key]
        first, last = dates[0][0].date().isoformat(), dates[-1][0].date().isoformat()
        named = what if spec.groupby == "all" else f"{what} {label}"
        groups.append(Group(label=f"{named} ({len(dates)} dates, {first}..{last})", dates=tuple(tuple(n) for _, n in dates),
                            ordinals=tuple(_ordinal(names[n[0]]) for _, n in dates)))  # fmt: skip
    return tuple(groups), names


def _column_tile(grid: Grid, th: int, tw: int, n_dates: int, blocks: list[tuple[int, int]]) -> tuple[int, int]:
    """Shrink the tile so a column of ``n_dates`` float64 values per pixel stays under :data:`COLUMN_BYTES`."""
    max_px = max(64 * 64, COLUMN_BYTES // (8 * max(1, n_dates)))
    while th * tw > max_px and max(th, tw) > 64:
        if th >= tw:
            th = max(64, th // 2)
        else:
            tw = max(64, tw // 2)
    return th, tw


def plan_reduce(job: Job, spec: ReduceSpec) -> Plan:
    """Resolve a reduce job: one output, the stack's dates as its inputs, one band per group."""
    validate_reduce(spec)
    if job.align is not None and job.align not in RESAMPLINGS:
        raise UsageError(f"unknown resampling {job.align!r}", f"use one of: {', '.join(RESAMPLINGS)}")
    stack, (r0, c0, h, w) = resolve_stack(spec.stack, align=job.align is not None)
    groups, names = make_groups(stack, spec)
    # Every member shares the stack's type and nodata (checked when the stack was opened); the
    # BandRefs come from the stack without opening the files again.
    refs: dict[str, BandRef] = {}
    for n, m in names.items():
        ref = replace(stack.band_ref(m), label=f"{m.label} ({m.date.date().isoformat()})", origin=(r0, c0))
        if job.align is not None and m.grid is not None and m.grid.mismatch(stack.grid) is not None:
            ref = replace(ref, warp_to=stack.grid, resampling=job.align)  # --align: resampled onto the stack's grid
        refs[n] = ref
    ref0 = next(iter(refs.values()))
    grid = stack.grid.window_grid(Window(r0, c0, h, w))
    # Smaller tiles than pixel ops: a tile holds a few accumulators and reads every date, so more
    # tiles spread the dates' decoding evenly over the workers. Over a network every window read
    # pays a round trip: remote stacks take the larger tiles of pixel ops (fewer, larger requests;
    # bench/results/stac.md: 690 -> 450 requests, 4.1 -> 3.2 s).
    remote = is_remote(ref0.path) and ref0.warp_to is None
    th, tw = choose_tile_shape(grid, job.tile_size, [ref0.block_shape], default=DEFAULT_TILE_SIZE if remote else STACK_TILE_SIZE)
    if holds_column(spec.stat):
        th, tw = _column_tile(grid, th, tw, max(len(g.dates) for g in groups), [ref0.block_shape])
    op = ReduceOp(spec.stat, groups, spec.expr)
    item = job.items[0]
    # A box of remote files: tile edges on the files' own tile (and block) edges, so no block is
    # fetched by two tiles (locally the tiles stay on the box's corner, where overviews are built with them).
    phase = (r0, c0) if remote else (0, 0)
    items = [ItemPlan(0, Path(item.output), refs, grid, Tiling.for_grid(grid, th, tw, halo=0, phase=phase))]
    identities = [{n: [r.path, r.band, list(r.identity)] for n, r in refs.items()}]
    if spec.stack.stac is not None:  # a STAC member's date and item id come from the catalog, not from its file: both decide the output
        identities[0] = {n: [*v, names[n].label, names[n].date.isoformat()] for n, v in identities[0].items()}
    nodata = job.output.nodata if job.output.nodata is not None else default_nodata(job.output.dtype, {"t": ref0})
    check_nodata_fits(nodata, job.output.dtype)
    if spec.stat == "argmax-date" and np.dtype(job.output.dtype).kind == "f" and np.dtype(job.output.dtype).itemsize < 8:
        raise UsageError(f"--stat argmax-date writes dates as YYYYMMDD numbers, which {job.output.dtype} cannot hold exactly",
                         "use --dtype int32 (the default for argmax-date) or float64")  # fmt: skip
    # YYYYMMDD dates need more than float32's 24 bits on their way to the int32 output.
    work_dtype = "float64" if job.output.dtype == "float64" or spec.stat == "argmax-date" else "float32"
    return Plan(job, op, tuple(items), work_dtype, nodata, fingerprint(job, identities, items))
