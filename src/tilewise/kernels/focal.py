"""Nodata-aware focal (moving-window) statistics on one array, tile-invariant.

Square windows are separable: a row pass then a column pass of window sums (or
minima/maxima) with the van Herk / Gil-Werman scheme, O(1) per pixel whatever
the window size. Each window of length K is the suffix of one block plus the
prefix of the next, with blocks of length K anchored at multiples of K in the
*global* grid (``origin`` gives the array's place in it). Every result is
therefore computed from the same values in the same order wherever a tile
starts, so tiled output is bit-identical to whole-raster output (promise 1),
while a running sum restarted at each tile's edge would not be.

Circular windows are the union of horizontal runs, one per row offset: the row
sums of each run width are computed once and added row by row, O(radius) per
pixel. The median keeps every value of the window, O(K²) per pixel.

All sums run in float64 with masked pixels as 0 and valid pixels counted; float32
values squared are exact in float64. The kernels are compiled with numba
(``cache=True``), without fastmath so the order of operations is the one written.
"""

from __future__ import annotations

import math

import numba
import numpy as np

# The window types live in a numba-free module, so planning a job does not load numba.
from tilewise.kernels.windows import STATS, Footprint

# ---------------------------------------------------------------- compiled 1-D passes


@numba.njit(cache=True, nogil=True)
def _row_pass(x: np.ndarray, k: int, c0: int, op: int, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """out[i, j] = reduce(x[i, j:j+k]) with blocks of k anchored at global column multiples of k.

    op 0 = sum, 1 = min, 2 = max.
    """
    h, w = x.shape
    m = w - k + 1
    pre = np.empty(w)
    suf = np.empty(w)
    for i in range(h):
        acc = 0.0
        for j in range(w):
            v = x[i, j]
            if (c0 + j) % k == 0:
                acc = v
            elif op == 0:
                acc = acc + v
            elif op == 1:
                acc = min(acc, v)
            else:
                acc = max(acc, v)
            pre[j] = acc
        for j in range(w - 1, -1, -1):
            v = x[i, j]
            if (c0 + j + 1) % k == 0 or j == w - 1:
                acc = v
            elif op == 0:
                acc = acc + v
            elif op == 1:
                acc = min(acc, v)
            else:
                acc = max(acc, v)
            suf[j] = acc
        for j in range(m):
            if (c0 + j) % k == 0:
                out[i, j] = suf[j]
            elif op == 0:
                out[i, j] = suf[j] + pre[j + k - 1]
            elif op == 1:
                out[i, j] = min(suf[j], pre[j + k - 1])
            else:
                out[i, j] = max(suf[j], pre[j + k - 1])


@numba.njit(cache=True, nogil=True)
def _moment_rows(values: np.ndarray, valid: np.ndarray, k: int, c0: int, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """Row pass of the window count, sum and sum of squares of valid cells, in one sweep.

    ``out`` has shape (n, h, w - k + 1) with n = 1 (count), 2 (+ sum) or 3 (+ squares).
    ``c0`` is the global column of column 0, taken modulo k.
    """
    n = out.shape[0]
    h, w = values.shape
    m = w - k + 1
    pre = np.empty((3, w))
    suf = np.empty((3, w))
    for i in range(h):
        a0 = 0.0
        a1 = 0.0
        a2 = 0.0
        phase = c0 % k
        for j in range(w):
            t0 = 0.0
            t1 = 0.0
            if valid[i, j]:
                t0 = 1.0
                # + 0.0 turns -0.0 into 0.0: a sum of negative zeros alone would keep the sign here
                # (it starts from a value) but not in _running_stat (it starts from 0.0).
                t1 = np.float64(values[i, j]) + 0.0
            if phase == 0:
                a0 = t0
                a1 = t1
                a2 = t1 * t1
            else:
                a0 += t0
                a1 += t1
                if n > 2:
                    a2 += t1 * t1
            pre[0, j] = a0
            pre[1, j] = a1
            pre[2, j] = a2
            phase += 1
            if phase == k:
                phase = 0
        # phase of the last column: (c0 + w - 1) % k; a block ends where the phase is k - 1
        phase = (c0 + w - 1) % k
        for j in range(w - 1, -1, -1):
            t0 = 0.0
            t1 = 0.0
            if valid[i, j]:
                t0 = 1.0
                t1 = np.float64(values[i, j]) + 0.0
            if phase == k - 1 or j == w - 1:
                a0 = t0
                a1 = t1
                a2 = t1 * t1
            else:
                a0 += t0
                a1 += t1
                if n > 2:
                    a2 += t1 * t1
            suf[0, j] = a0
            suf[1, j] = a1
            suf[2, j] = a2
            phase -= 1
            if phase < 0:
                phase = k - 1
        for q in range(n):
            phase = c0 % k
            for j in range(m):
                if phase == 0:
                    out[q, i, j] = suf[q, j]
                else:
                    out[q, i, j] = suf[q, j] + pre[q, j + k - 1]
                phase += 1
                if phase == k:
                    phase = 0


@numba.njit(cache=True, nogil=True)
def _col_pass(x: np.ndarray, k: int, r0: int, op: int, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """Column pass over stacked arrays x (n, h, w) -> out (n, h - k + 1, w), blocks anchored at global row multiples of k.

    Works one block of rows at a time: the block's suffix reductions (a k-row
    buffer) plus a running prefix over the next block, so memory stays small and is read in order.
    """
    n, h, w = x.shape
    m = h - k + 1
    suf = np.empty((k, w))
    run = np.empty(w)
    for q in range(n):
        s = -(r0 % k)
        while s < m:
            lo = max(s, 0)
            hi = min(s + k - 1, m - 1)
            e = s + k - 1
            for rr in range(e, lo - 1, -1):
                t = rr - s
                for j in range(w):
                    v = x[q, rr, j]
                    if rr == e:
                        suf[t, j] = v
                    elif op == 0:
                        suf[t, j] = suf[t + 1, j] + v
                    elif op == 1:
                        suf[t, j] = min(suf[t + 1, j], v)
                    else:
                        suf[t, j] = max(suf[t + 1, j], v)
            if lo == s:
                for j in range(w):
                    out[q, s, j] = suf[0, j]
            for t in range(1, hi - s + 1):
                pr = s + k + t - 1
                for j in range(w):
                    v = x[q, pr, j]
                    if t == 1:
                        run[j] = v
                    elif op == 0:
                        run[j] = run[j] + v
                    elif op == 1:
                        run[j] = min(run[j], v)
                    else:
                        run[j] = max(run[j], v)
                if s + t >= lo:
                    i = s + t
                    for j in range(w):
                        if op == 0:
                            out[q, i, j] = suf[t, j] + run[j]
                        elif op == 1:
                            out[q, i, j] = min(suf[t, j], run[j])
                        else:
                            out[q, i, j] = max(suf[t, j], run[j])
            s += k


@numba.njit(cache=True, nogil=True)
def _magnitude_bits(bits: np.ndarray, valid: np.ndarray, absmask: np.integer, none: np.integer) -> tuple[np.integer, np.integer]:  # pragma: no cover - compiled
    """(largest, smallest nonzero) magnitude of the valid cells, as the integer bits of their floats.

    ``bits`` are the values viewed as same-width integers; with the sign bit masked
    off, integer order is float order (NaN and inf sort above every finite value),
    so both reductions are integer min/max, which the compiler vectorizes.
    ``none`` is returned as the minimum when no valid cell is nonzero.
    """
    h, w = bits.shape
    mx = bits.dtype.type(0)
    mn = none
    for i in range(h):
        for j in range(w):
            a = bits[i, j] & absmask
            ok = valid[i, j]
            mx = max(mx, a if ok else 0)
            mn = min(mn, a if ok and a != 0 else none)
    return mx, mn


@numba.njit(cache=True, nogil=True)
def _all_integers(values: np.ndarray, valid: np.ndarray) -> bool:  # pragma: no cover - compiled
    """Whether every valid cell holds a whole number."""
    h, w = values.shape
    for i in range(h):
        for j in range(w):
            if valid[i, j] and values[i, j] != math.floor(values[i, j]):
                return False
    return True


@numba.njit(cache=True, nogil=True)
def _running_stat(values: np.ndarray, valid: np.ndarray, k: int, stat: int, need: int, out: np.ndarray) -> None:  # pragma: no cover
    """A moment statistic over every k×k window by running sums: O(1) per pixel, one sweep.

    Column sums of the last k rows are kept per column (a row enters, is used, and
    leaves), and each output row slides a window along them. ``out`` may be float32:
    each result is then rounded once from its float64 value, as ``astype`` would. Only for values whose
    every partial sum is exact (see :func:`exact_sums`): then the order of the
    additions cannot change a bit, and results equal the block-anchored passes'.
    ``stat``: 0 count, 1 sum, 2 mean, 3 variance, 4 std (the formulas of
    :func:`focal_statistic`); NaN where fewer than ``need`` cells are valid.
    """
    h, w = values.shape
    ow = w - k + 1
    n = 1 if stat == 0 else (2 if stat < 3 else 3)
    cs = np.zeros((n, w))
    for i in range(h):
        for j in range(w):
            if valid[i, j]:
                v = np.float64(values[i, j])
                cs[0, j] += 1.0
                if n > 1:
                    cs[1, j] += v
                if n > 2:
                    cs[2, j] += v * v
        o = i - k + 1
        if o < 0:
            continue
        a0 = a1 = a2 = 0.0
        for j in range(k):
            a0 += cs[0, j]
            if n > 1:
                a1 += cs[1, j]
            if n > 2:
                a2 += cs[2, j]
        for j in range(ow):
            if j > 0:
                a0 += cs[0, j + k - 1] - cs[0, j - 1]
                if n > 1:
                    a1 += cs[1, j + k - 1] - cs[1, j - 1]
                if n > 2:
                    a2 += cs[2, j + k - 1] - cs[2, j - 1]
            if stat == 0:
                out[o, j] = a0
            elif a0 < need:
                out[o, j] = np.nan
            elif stat == 1:
                out[o, j] = a1
            elif stat == 2:
                out[o, j] = a1 / a0
            else:
                var = a2 - a1 * a1 / a0
                if var <= 0.0:  # as numpy.maximum(var, 0.0): -0.0 becomes 0.0, NaN stays
                    var = 0.0
                var = var / a0
                out[o, j] = var if stat == 3 else math.sqrt(var)
        for j in range(w):
            if valid[o, j]:
                v = np.float64(values[o, j])
                cs[0, j] -= 1.0
                if n > 1:
                    cs[1, j] -= v
                if n > 2:
                    cs[2, j] -= v * v


@numba.njit(cache=True, nogil=True)
def _median(x: np.ndarray, ok: np.ndarray, mask: np.ndarray, need: int, out: np.ndarray) -> None:  # pragma: no cover
    kh, kw = mask.shape
    h, w = out.shape
    buf = np.empty(kh * kw)
    for i in range(h):
        for j in range(w):
            n = 0
            for a in range(kh):
                for b in range(kw):
                    if mask[a, b] and ok[i + a, j + b]:
                        buf[n] = x[i + a, j + b]
                        n += 1
            out[i, j] = np.median(buf[:n]) if n >= need and n > 0 else np.nan


_OPS = {"sum": 0, "min": 1, "max": 2}
# Statistics made of window moments, and how many moments each needs (count, sum, sum of squares).
_MOMENTS = {"count": 1, "sum": 2, "mean": 2, "variance": 3, "std": 3}
_RUNNING_CODE = {"count": 0, "sum": 1, "mean": 2, "variance": 3, "std": 4}
# Explicit mantissa bits and the smallest positive (subnormal) value of each float type.
_MANTISSA: dict[np.dtype, tuple[int, float]] = {np.dtype(np.float32): (23, 2.0**-149), np.dtype(np.float64): (52, 2.0**-1074)}
# Views that order a float's magnitude as an integer: (integer type, sign-clearing mask).
_BITS: dict[np.dtype, tuple[type[np.signedinteger], int]] = {
    np.dtype(np.float32): (np.int32, 0x7FFFFFFF),
    np.dtype(np.float64): (np.int64, 0x7FFFFFFFFFFFFFFF),
}


def exact_sums(values: np.ndarray, valid: np.ndarray, k: int, n: int) -> bool:
    """Whether every partial sum of ``n`` window moments over k×k windows is exact in float64.

    Every valid value is a whole multiple of a power of two ``g``, the spacing of
    floats at the smallest nonzero magnitude (or 1 when all are whole numbers),
    and a sum of at most (k + 1)² such values (or of their squares, for n = 3) is
    at most (k + 1)² · max|v| in magnitude. When that is below 2**53 · g (2**53 · g²),
    every sum and difference of them is an integer multiple of g (g²) that float64
    holds exactly, so no addition rounds and the order of the additions does not
    matter: any algorithm, tiled anywhere, gives the same bits. The count (n = 1)
    always is. NaN or infinite valid values never qualify.
    """
    if n == 1:
        return True
    if values.dtype not in _BITS:
        return False
    itype, absmask = _BITS[values.dtype]
    none = itype(absmask)
    mx_bits, mn_bits = _magnitude_bits(values.view(itype), valid, itype(absmask), none)
    mx = float(np.array(mx_bits, dtype=itype).view(values.dtype))
    if not math.isfinite(mx):
        return False
    if mn_bits == none:  # every valid value is zero (or none is valid)
        return True
    mn = float(np.array(mn_bits, dtype=itype).view(values.dtype))
    # The spacing of floats in mn's binade (numpy.spacing overflows to inf at the largest float).
    mant, tiny = _MANTISSA[values.dtype]
    grain = max(math.ldexp(1.0, math.frexp(mn)[1] - 1 - mant), tiny)
    power = n - 1  # 1 for sums of values, 2 for sums of squares
    cells = float((k + 1) ** 2)

    def fits(g: float) -> bool:
        if power == 2 and g < 2.0**-500:  # g² would leave float64's normal range
            return False
        return cells * (mx / g) ** power < 2.0**53

    if fits(grain):
        return True
    return grain < 1.0 and mx < 2.0**53 and fits(1.0) and bool(_all_integers(values, valid))



def window_reduce(x: np.ndarray, footprint: Footprint, origin: tuple[int, int], how: str) -> np.ndarray:
    """Reduce ``x`` (float64, h×w) over every full window: result (h - 2R, w - 2R).

    ``how`` is ``sum``, ``min`` or ``max``; ``origin`` is the global (row, col) of
    ``x[0, 0]``, which fixes where accumulations restart.
    """
    op = _OPS[how]
    r = footprint.radius
    h, w = x.shape
    oh, ow = h - 2 * r, w - 2 * r
    if footprint.shape == "square":
        k = 2 * r + 1
        rows = np.empty((h, ow))
        # Anchors go in as residues in [0, k) (Python's %), so the kernels never take a negative modulo.
        _row_pass(x, k, origin[1] % k, op, rows)
        out = np.empty((1, oh, ow))
        _col_pass(rows[None], k, origin[0] % k, op, out)
        return out[0]
    out = np.zeros((oh, ow)) if op == 0 else np.full((oh, ow), np.inf if op == 1 else -np.inf)
    widths = footprint.half_widths
    combine = {0: np.add, 1: np.minimum, 2: np.maximum}[op]
    for hw in sorted(set(widths)):
        k = 2 * hw + 1
        runs = np.empty((h, w - k + 1))
        _row_pass(x, k, origin[1] % k, op, runs)
        part = runs[:, r - hw : r - hw + ow]
        for dy, wd in enumerate(widths):
            if wd == hw:
                combine(out, part[dy : dy + oh], out=out)
    return out


def window_moments(values: np.ndarray, valid: np.ndarray, footprint: Footprint, origin: tuple[int, int], n: int) -> np.ndarray:
    """Per window: count of valid cells, their sum (n >= 2) and sum of squares (n == 3); shape (n, h - 2R, w - 2R)."""
    r = footprint.radius
    h, w = values.shape
    oh, ow = h - 2 * r, w - 2 * r
    if footprint.shape == "square":
        k = 2 * r + 1
        rows = np.empty((n, h, ow))
        _moment_rows(values, valid, k, origin[1] % k, rows)
        out = np.empty((n, oh, ow))
        _col_pass(rows, k, origin[0] % k, 0, out)
        return out
    x = np.where(valid, values, 0.0).astype(np.float64, copy=False)
    terms = [valid.astype(np.float64), x, x * x][:n]
    return np.stack([window_reduce(t, footprint, origin, "sum") for t in terms])


def focal_statistic(values: np.ndarray, valid: np.ndarray, stat: str, footprint: Footprint, origin: tuple[int, int], min_count: int = 1,
                    dtype: np.dtype | type = np.float64) -> np.ndarray:  # fmt: skip
    """Compute ``stat`` over the window around every pixel whose window lies inside the arrays.

    Parameters
    ----------
    values, valid
        2-D arrays (h, w); masked cells are excluded from every statistic.
    stat
        One of :data:`STATS`. ``variance``/``std`` are population (ddof 0) values.
    footprint
        The window.
    origin
        Global (row, col) of ``values[0, 0]``.
    min_count
        Fewest valid cells a window needs; windows with fewer give NaN
        (except for the ``count`` statistic, which is always given).
    dtype
        Type of the returned values: float64, or float32 for the float64 results
        rounded once (the same bits as ``astype(numpy.float32)`` of the float64
        values; on the running-sum path no float64 array is made at all).

    Returns
    -------
    numpy.ndarray
        The statistic, shape (h - 2R, w - 2R), NaN where too few cells were valid.
    """
    if stat not in STATS:
        raise ValueError(f"unknown statistic {stat!r}")
    need = max(min_count, 1)
    n = _MOMENTS.get(stat, 1)
    k = footprint.size
    if stat in _MOMENTS and footprint.shape == "square" and min(values.shape) >= k and exact_sums(values, valid, k, n):
        # Exact sums: running sums in one sweep give the very bits of the anchored passes below, ~4x faster.
        # No float64 values unless asked for: 8 MB per 1024² tile less to write, read and convert.
        oh, ow = values.shape[0] - k + 1, values.shape[1] - k + 1
        out = np.empty((oh, ow), dtype=dtype)
        _running_stat(values, valid, k, _RUNNING_CODE[stat], need, out)
        return out
    mom = window_moments(values, valid, footprint, origin, n)
    count = mom[0]
    if stat == "count":
        return count.astype(dtype)
    if stat == "median":
        out = np.empty(count.shape)
        _median(values, valid, footprint.mask(), need, out)
        return out.astype(dtype, copy=False)
    with np.errstate(invalid="ignore", divide="ignore"):
        if stat == "sum":
            res = mom[1]
        elif stat == "mean":
            res = mom[1] / count
        elif stat in ("std", "variance"):
            s1, s2 = mom[1], mom[2]
            res = np.maximum(s2 - s1 * s1 / count, 0.0) / count
            if stat == "std":
                res = np.sqrt(res)
        else:
            lo = hi = None
            if stat in ("min", "range"):
                lo = window_reduce(np.where(valid, values, np.inf).astype(np.float64, copy=False), footprint, origin, "min")
            if stat in ("max", "range"):
                hi = window_reduce(np.where(valid, values, -np.inf).astype(np.float64, copy=False), footprint, origin, "max")
            if stat == "min":
                res = lo
            elif stat == "max":
                res = hi
            else:
                assert lo is not None and hi is not None
                res = hi - lo
    with np.errstate(over="ignore"):  # beyond float32's range is inf, as the compiled path gives
        return np.where(count >= need, res, np.nan).astype(dtype, copy=False)
