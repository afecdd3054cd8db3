"""Per-date statistics of a dated stack (``tilewise stats``): one table row per date.

Each member (a file, or a band of one) is one task: its window is read in bands of
rows (memory bounded by the band, not the raster) and reduced in float64 to
count, mean, min, max, std (population) and, on a geographic grid, the
area-weighted mean. Row bands are combined in order with Chan's formula, so the
table is the same on every executor and worker count. The table is written
through a temporary name, then renamed.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tilewise.errors import OutputError, UsageError
from tilewise.executors import ExecutorOptions, make_executor
from tilewise.grid import Window
from tilewise.io import read_tile
from tilewise.job import StackSpec
from tilewise.ops.reduce import zero_invalid
from tilewise.sources.raster import BandRef
from tilewise.sources.stack import area_weights, format_date

ROWS_PER_BAND = 256
COLUMNS = ("date", "file", "band", "count", "mean", "min", "max", "std", "area_mean")
FORMATS = (".csv", ".parquet")


@dataclass(frozen=True)
class StatsTask:
    """One member of the stack: where it is, the window read, and the expression applied first."""

    index: int
    date: str
    ref: BandRef
    window: Window
    expr: str
    weighted: bool
    s3_endpoint: str | None = None  # carried to the worker, like a raster task's
    cache: str | None = None

    def run(self) -> dict[str, Any]:
        from tilewise.blockcache import use_cache
        from tilewise.remote import use_s3_endpoint

        use_s3_endpoint(self.s3_endpoint)
        use_cache(self.cache)
        return member_stats(self)


def member_stats(task: StatsTask) -> dict[str, Any]:
    """Count, mean, min, max, std and area-weighted mean of one member's window, nodata excluded."""
    from tilewise.expr import parse

    expr = parse(task.expr) if task.expr else None
    work = _work_dtype(task.ref.dtype, expr is not None)
    n = 0
    mean = m2 = 0.0
    lo, hi = math.inf, -math.inf
    wsum = wtot = 0.0
    w = task.window
    for r in range(w.row_off, w.row_end, ROWS_PER_BAND):
        band = Window(r, w.col_off, min(ROWS_PER_BAND, w.row_end - r), w.width)
        got = read_tile({"t": task.ref}, band, work)
        vals, ok = got.values["t"], got.valid["t"]
        finite = "t" in got.finite_invalid
        if expr is not None:
            vals = np.asarray(expr.evaluate({"t": vals}, dtype=np.float64, shape=vals.shape))
            ok = ok & np.isfinite(vals)
            finite = False
        k = int(np.count_nonzero(ok))
        if k == 0:
            continue
        bmean, bm2, blo, bhi, row_sums = _band_stats(vals, ok, k, finite)
        delta = bmean - mean
        tot = n + k
        mean += delta * k / tot
        m2 += bm2 + delta * delta * n * k / tot
        n = tot
        lo, hi = min(lo, blo), max(hi, bhi)
        if task.weighted:
            weights = area_weights(task.ref.grid, band.row_off, band.height)
            if weights is not None:
                # Per row: the sum of the valid values (invalid ones are zero by now) and their count.
                row_w = np.asarray(weights, dtype=np.float64)
                wsum += float(row_sums @ row_w)
                wtot += float(np.count_nonzero(ok, axis=1) @ row_w)
    return {
        "index": task.index, "date": task.date, "file": os.path.basename(task.ref.path.rstrip("/")) or task.ref.path, "band": task.ref.band,
        "count": n, "mean": mean if n else None, "min": lo if n else None, "max": hi if n else None,
        "std": math.sqrt(m2 / n) if n else None, "area_mean": (wsum / wtot if wtot > 0 else None) if task.weighted else None,
    }  # fmt: skip


def _work_dtype(dtype: str, expr: bool) -> np.dtype:
    """float32 where it holds the member's values exactly and no expression needs float64; sums are float64 either way."""
    exact = np.dtype(dtype) in (np.dtype(t) for t in ("float32", "float16", "uint8", "int8", "uint16", "int16"))
    return np.dtype(np.float32) if exact and not expr else np.dtype(np.float64)


def _band_stats(vals: np.ndarray, ok: np.ndarray, k: int, finite_invalid: bool) -> tuple[float, float, float, float, np.ndarray]:
    """Mean, sum of squared deviations, min, max and per-row sums of the ``k`` valid values of one band of rows.

    Whole-array passes instead of a compacted copy of the valid values (``vals[ok]``, the slowest
    step before): invalid pixels are zeroed in place for the float64 sums, and replaced by one
    valid value for the min and max, which that cannot change. ``vals`` is this band's own buffer.
    """
    zero_invalid(vals, ok, finite_invalid)
    first = vals.flat[int(np.argmax(ok))]  # a valid value
    filled = np.where(ok, vals, first)
    lo, hi = float(filled.min()), float(filled.max())
    rows = vals.sum(axis=1, dtype=np.float64)
    bmean = float(rows.sum()) / k
    dev = np.subtract(vals, bmean, dtype=np.float64)
    dev *= ok
    return bmean, float(np.einsum("ij,ij->", dev, dev)), lo, hi, rows


def _run_unit(unit: tuple[StatsTask, ...]) -> list[dict[str, Any]]:
    return [t.run() for t in unit]


def stack_stats(spec: StackSpec, output: str, *, expr: str = "", area_weighted: bool | None = None, plot: str | None = None,
                executor: ExecutorOptions | None = None, overwrite: bool = False,
                progress: Callable[[int, int], None] | None = None, s3_endpoint: str | None = None,
                cache: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Compute the per-date table of a stack and write it to ``output`` (.csv or .parquet).

    Parameters
    ----------
    spec
        The stack and its selection.
    output
        The table to write; its suffix picks the format.
    expr
        Applied to each pixel (variable ``t``) before the statistics, e.g. ``t * 9 / 5 + 32``.
    area_weighted
        Add the area-weighted mean; default: when the grid is geographic.
    plot
        Also draw the series (mean with min-max band) into this PNG.
    executor
        Where members run (default: processes on every usable core).
    overwrite
        Replace existing output files.
    s3_endpoint
        The S3-compatible store of ``s3://`` members and outputs (``--s3-endpoint``).
    cache
        A folder keeping remote members' blocks for re-runs (``--cache``).

    Table and plot may be ``s3://`` URLs: they are written locally under
    ``.tilewise-upload/`` and uploaded when complete (whole or not at all).

    Returns
    -------
    list of dict
        The rows, in date order.
    """
    from tilewise.job_reduce import resolve_stack
    from tilewise.remote import use_s3_endpoint
    from tilewise.remote_output import check_bucket, remote_version, staged_output, upload

    use_s3_endpoint(s3_endpoint)
    local, url = staged_output(output)
    out = Path(local)
    if out.suffix.lower() not in FORMATS:
        raise UsageError(f"table {output!r} has an unknown format", "end the name with .csv or .parquet")
    plot_local, plot_url = staged_output(plot) if plot else (None, None)
    targets = [(out, url), *([(Path(plot_local), plot_url)] if plot_local else [])]
    for p, u in targets:
        if u is not None:
            check_bucket(u)
            if not overwrite and remote_version(u) is not None:
                raise OutputError(f"output {u!r} already exists", "pass --overwrite to replace it, or choose another URL")
        elif p.exists() and not overwrite:
            raise OutputError(f"output {str(p)!r} already exists", "pass --overwrite to replace it, or choose another path")
    if out.suffix.lower() == ".parquet":
        _parquet_writer()  # fail before the work, not after
    if plot:
        _pyplot()
    if expr:
        from tilewise.job_reduce import check_stack_expr

        check_stack_expr(expr)
    stack, (r0, c0, h, w) = resolve_stack(spec)
    geographic = area_weights(stack.grid, 0, 1) is not None
    weighted = geographic if area_weighted is None else area_weighted
    if weighted and not geographic:
        raise UsageError("--area-weighted needs a geographic (longitude/latitude) grid",
                         f"the stack's grid is projected ({stack.grid.crs}); leave the option out")  # fmt: skip
    tasks = [StatsTask(i, format_date(m.date), stack.band_ref(m), Window(r0, c0, h, w), expr, weighted, s3_endpoint, cache)
             for i, m in enumerate(stack.members)]  # fmt: skip
    opts = executor or ExecutorOptions()
    ex = make_executor(opts)
    per = max(1, len(tasks) // (4 * ex.workers))
    units = [tuple(tasks[i : i + per]) for i in range(0, len(tasks), per)]
    rows: list[dict[str, Any]] = []
    try:
        for _i, result in ex.map_unordered(_run_unit, units):
            if isinstance(result, BaseException):
                raise result
            rows.extend(result)
            if progress is not None:
                progress(len(rows), len(tasks))
    finally:
        ex.close()
    rows.sort(key=lambda r: r["index"])
    for r in rows:
        del r["index"]
    cols = [c for c in COLUMNS if c != "area_mean" or weighted]
    _write_table(rows, cols, out)
    if plot_local:
        _plot(rows, Path(plot_local), expr)
    for p, u in targets:
        if u is not None:
            upload(p, u)
            p.unlink()
    return rows


def _write_table(rows: Sequence[dict[str, Any]], cols: Sequence[str], out: Path) -> None:
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() == ".csv":
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                wr = csv.writer(fh)
                wr.writerow(cols)
                for r in rows:
                    wr.writerow(["" if r[c] is None else (repr(r[c]) if isinstance(r[c], float) else r[c]) for c in cols])
        else:
            write = _parquet_writer()
            write({c: [r[c] for r in rows] for c in cols}, tmp)
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write the table {str(out)!r} ({exc.strerror or exc})", "check the folder exists and is writable") from None


def _parquet_writer() -> Callable[[dict[str, list[Any]], Path], None]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError("writing .parquet needs pyarrow, which is not installed", "pip install pyarrow, or write .csv") from None

    def write(columns: dict[str, list[Any]], path: Path) -> None:
        pq.write_table(pa.table(columns), path)

    return write


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib, which is not installed", "pip install matplotlib (or tilewise[plot])") from None
    return plt


def _plot(rows: Sequence[dict[str, Any]], path: Path, expr: str) -> None:
    from datetime import datetime

    plt = _pyplot()
    good = [r for r in rows if r["count"]]
    dates = [datetime.fromisoformat(r["date"]) for r in good]
    fig, ax = plt.subplots(figsize=(10, 4), dpi=100)
    ax.fill_between(dates, [r["min"] for r in good], [r["max"] for r in good], alpha=0.2, label="min-max")
    ax.plot(dates, [r["mean"] for r in good], lw=1.2, label="mean")
    if good and good[0].get("area_mean") is not None:
        ax.plot(dates, [r["area_mean"] for r in good], lw=1.0, ls="--", label="area-weighted mean")
    ax.set_ylabel(expr or "value")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
