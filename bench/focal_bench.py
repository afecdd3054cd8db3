#!/usr/bin/env python3
"""Focal-statistics benchmark (issue 3): a K x K moving mean over a DEM with nodata, tilewise against what users do today.

One run measures, on the same machine and the same generated input (a 16384 x 16384
float32 DEM, 30 m, EPSG:32633, ~5 % nodata in irregular holes tagged -9999, 512 x 512
tiles, DEFLATE with the floating-point predictor), file to file, at K = 3, 15, 51 and 101:

``tutorial_convolve``
    What the tutorial does: ``rasterio`` ``read(1)`` of the whole band,
    ``scipy.ndimage.convolve(a, np.ones((K, K)) / K**2, mode="constant", cval=-9999)``
    (nodata is averaged in: the tutorial's bug, kept), one ``write``. O(K²) per pixel.
``scipy_uniform_filter``
    ``scipy.ndimage.uniform_filter(a, K, mode="constant")`` on the whole band: O(1) per
    pixel, but not nodata-aware either (-9999 averaged in, zeros beyond the edges).
``scipy_uniform_nanaware``
    NaN-aware with two uniform filters: ``uniform_filter(where(valid, a, 0)) / uniform_filter(valid)``.
    Its cost does not depend on K (as ``scipy_uniform_filter``'s), so it runs at K = 3 and 101 only,
    which keeps ``make bench`` within its time budget.
``xrspatial_focal_mean``
    ``xrspatial.focal.mean`` (NaN-aware, 3 x 3 only, so K = 3 only) on an in-memory DataArray.
``xrspatial_focal_apply``
    ``xrspatial.focal.apply(raster, custom_kernel(np.ones((K, K))))`` (nanmean over the kernel,
    NaN-aware, any K; O(K²) per pixel).
``tilewise`` / ``tilewise_no_overviews``
    ``tilewise focal IN -o OUT --stat mean --size K`` (its default output: a ZSTD-1 COG with
    overviews) and the same with ``--no-overviews``.
``decode`` / ``encode_gtiff_zstd`` / ``encode_cog_zstd`` / ``encode_cog_zstd_pre``
    The machine limit for the same bytes: decoding every block of the input with all
    usable cores; encoding a precomputed float32 result as the peers' tiled GTiff (ZSTD-1,
    predictor 3) and as tilewise's COG (ZSTD-1, predictor 3, AVERAGE overviews) with
    ``NUM_THREADS=ALL_CPUS``. ``encode_cog_zstd_pre`` is the strict COG limit tilewise is
    compared with: its overview levels are computed beforehand too (untimed), so only
    encoding is timed; in ``encode_cog_zstd`` GDAL's COG driver also computes them.

The O(K²) approaches (``tutorial_convolve``, ``xrspatial_focal_apply``) run on a centred
crop when the whole raster would take longer than ``--crop-budget-s`` (their Mpix/s is then
the crop's: an extrapolation to the full size, labelled so in the report).

Each approach runs in its own process; the wall clock and the peak memory of the whole
process tree (sum of RSS sampled every 50 ms) are recorded, and each output is checked
against a NaN-aware mean computed on sample windows plus their halo.

Usage (from the repository root)::

    .venv/bin/python bench/focal_bench.py --size 16384 --k 3,15,51,101 --repeats 1   # the full benchmark
    .venv/bin/python bench/focal_bench.py --size 2048 --k 3,15                       # quick check -> results/focal_2048.*
    .venv/bin/python bench/focal_bench.py --only tilewise --k 3,101                  # re-measure rows, merged into the JSON
    .venv/bin/python bench/focal_bench.py --report-only                              # re-render focal.md/.png from focal.json
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # bench/ is not a package: found through sys.path
    GB,
    REPO_ROOT,
    RESULTS_DIR,
    WORK_DIR,
    Measurement,
    block_windows,
    build_cog_overviews,
    cached_array,
    file_size,
    fmt,
    load_json,
    machine_info,
    md_table,
    python_cmd,
    remove,
    report_phases,
    run_measured,
    sample_windows,
    tilewise_env,
    tilewise_help,
    usable_cores,
    wait_for_quiet,
    warm_page_cache,
    winner_line,
    write_json,
)
from ndvi_bench import _hash01, prefault_memory, tilewise_phases, worker_decode

BENCHMARK = "focal"
FULL_SIZE = 16384
BLOCK = 512
#: The input's nodata value (a tag, as in the tutorial; not NaN).
NODATA = -9999.0
GEN_VERSION = "tilewise-bench-focal-dem-v1"
GEN_SEED = 20240613
PIXEL_M = 30.0
VOID_FRACTION = 0.05
DEFAULT_KS = (3, 15, 51, 101)

PEERS = ("tutorial_convolve", "scipy_uniform_filter", "scipy_uniform_nanaware", "xrspatial_focal_mean", "xrspatial_focal_apply")
TILEWISE_ROWS = ("tilewise", "tilewise_no_overviews")
#: (approach, K) rows whose ratio is a goal that crossed its line from run to run: measured --goal-repeats times.
GOAL_ROWS = {("tilewise", 3), ("xrspatial_focal_mean", 3)}
TOOLS = (*PEERS, *TILEWISE_ROWS)
LIMIT_PARTS = ("decode", "encode_gtiff_zstd", "encode_cog_zstd", "encode_cog_zstd_pre")
ALL = (*LIMIT_PARTS, *TOOLS)
GROUPS = {"limit": LIMIT_PARTS, "peers": PEERS, "tilewise": TILEWISE_ROWS, "all": ALL}
#: Only these K for a tool (xrspatial.focal.mean has a fixed 3 x 3 window).
ONLY_K = {"xrspatial_focal_mean": (3,), "scipy_uniform_nanaware": (3, 101)}  # the latter: O(1) in K, ~40 s per run
#: Seconds of compute per pixel, a + b * K², of the O(K²) approaches (measured on a 2-core VM): used to choose crops.
COST_MODEL = {"tutorial_convolve": (0.0, 0.8e-9), "xrspatial_focal_apply": (0.25e-6, 1.7e-9)}
#: The machine limits: name -> (encode part added to decode, label); and which one each row is compared to.
LIMITS = {"gtiff_zstd": ("encode_gtiff_zstd", "GTiff ZSTD-1"), "cog_zstd": ("encode_cog_zstd", "COG ZSTD-1 + overviews"),
          "cog_zstd_pre": ("encode_cog_zstd_pre", "COG ZSTD-1 + precomputed overviews")}  # fmt: skip
LIMIT_OF = {**dict.fromkeys(PEERS, "gtiff_zstd"), "tilewise": "cog_zstd_pre", "tilewise_no_overviews": "gtiff_zstd"}
#: Other processes' load (cores) above which a run counts as disturbed.
NOISY_LOAD = 0.25
#: The issue's targets for tilewise (default settings).
TARGETS = {"k101_vs_k3_cost": 1.5, "vs_xrspatial_k3": 1.5, "vs_convolve_k51": 50.0, "memory_growth": 1.3}
#: The peers' output format: ZSTD level 1 with the floating-point predictor, 512 tiles (tilewise's codec, without COG layout/overviews).
PEER_CODEC = {"compress": "zstd", "zstd_level": 1, "predictor": 3, "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK, "bigtiff": "IF_SAFER"}
PEER_CODEC_LABEL = "tiled GTiff, ZSTD level 1, predictor 3 (floating point), 512 x 512 tiles, single-threaded compression (no NUM_THREADS)"

#: Measured beforehand (issue 3), 2 cores, in memory (compute only): context for the report.
PREVIOUS = {
    "tutorial_convolve": "139 Mpix/s at K=3, 5.2 Mpix/s at K=15",
    "xrspatial_focal_mean": "42 Mpix/s at K=3",
    "NaN-aware separable sum/count prototype": "69–79 Mpix/s on 2 threads at any K",
}

NOTES = {
    "tutorial_convolve": "rasterio read(1) of the whole band (float32, -9999 left in), scipy.ndimage.convolve(a, np.ones((K, K)) / K**2, "
                         "mode='constant', cval=-9999), one dst.write() with the input's profile (nodata -9999 tag kept; only the "
                         "codec changed to the peers' ZSTD-1 for comparability). Not nodata-aware: every output pixel whose window "
                         "touches a hole or the raster's edge averages -9999 in (the tutorial's bug, kept); holes get values too. "
                         "O(K²) per pixel, single-threaded.",
    "scipy_uniform_filter": "As the tutorial but scipy.ndimage.uniform_filter(a, K, mode='constant') (separable running sums: "
                            "O(1) per pixel in K, single-threaded). Not nodata-aware either: -9999 is averaged in near holes and "
                            "zeros beyond the edges.",
    "scipy_uniform_nanaware": "valid = a != -9999; uniform_filter(where(valid, a, 0), K, mode='constant') / uniform_filter(valid as "
                              "float32, K, mode='constant'); NaN where a window has no valid pixel. Holes are filled with the mean "
                              "of their valid neighbours. Output nodata NaN. Single-threaded, several full-size temporaries.",
    "xrspatial_focal_mean": "xrspatial.focal.mean(DataArray) on the whole band read into memory with -9999 set to NaN: a fixed 3 x 3 "
                            "window (so K = 3 only), nanmean over the window, NaN centres stay NaN; computed in float64 by a "
                            "numba function (JIT-compiled at the first call, in the wall clock), single-threaded; written as float32, "
                            "nodata NaN.",
    "xrspatial_focal_apply": "xrspatial.focal.apply(DataArray, xrspatial.convolution.custom_kernel(np.ones((K, K)))) with its default "
                             "function (nanmean over the kernel): NaN-aware, any K, fills holes. A numba loop (JIT-compiled at the first "
                             "call) that copies each K x K neighbourhood: O(K²) per pixel, single-threaded. Nodata NaN.",
    "tilewise": "tilewise focal IN -o OUT --stat mean --size K with default settings (a COG, ZSTD level 1, predictor 3, overviews), "
                "run as python -m tilewise.cli.main with PYTHONPATH=src (the working tree).",
    "tilewise_no_overviews": "As tilewise, with --no-overviews.",
    "decode": "Every 512 x 512 block of the input read with rasterio, one worker process per usable core, data discarded.",
    "encode_gtiff_zstd": "A precomputed float32 focal mean (NaN-aware, the smallest K of the run; untimed setup) written as the peers "
                         "write it (tiled GTiff, ZSTD-1, predictor 3, 512 tiles) but with NUM_THREADS=ALL_CPUS, one block per write.",
    "encode_cog_zstd": "The same array copied (untimed) into a MEM dataset, then GDAL's COG driver: ZSTD level 1, "
                       "PREDICTOR=FLOATING_POINT, BLOCKSIZE=512, OVERVIEWS=AUTO, RESAMPLING=AVERAGE, NUM_THREADS=ALL_CPUS: the "
                       "same kind of bytes as tilewise's default output.",
    "encode_cog_zstd_pre": "As encode_cog_zstd, with the AVERAGE overview levels (factors 2 to 32) built beforehand in the MEM "
                           "dataset (untimed, like the focal mean itself); the COG driver copies them (OVERVIEWS=AUTO uses the "
                           "source's): encoding alone.",
}  # fmt: skip


# =========================================================================== the input DEM


def value_noise(y: np.ndarray, x: np.ndarray, wavelength: float, salt: int) -> np.ndarray:
    """Smooth value noise in [0, 1] on the grid ``y`` x ``x`` (global pixel coordinates): seamless from block to block."""
    fy, fx = y / wavelength, x / wavelength
    iy, ix = np.floor(fy), np.floor(fx)
    ty, tx = (fy - iy).astype(np.float32), (fx - ix).astype(np.float32)
    sy, sx = ty * ty * (3 - 2 * ty), tx * tx * (3 - 2 * tx)
    y0, x0 = int(iy.min()), int(ix.min())
    gy, gx = np.meshgrid(np.arange(y0, int(iy.max()) + 2), np.arange(x0, int(ix.max()) + 2), indexing="ij")
    g = _hash01(gx, gy, salt).astype(np.float32)
    ry, rx = (iy - y0).astype(np.intp)[:, None], (ix - x0).astype(np.intp)[None, :]
    top = g[ry, rx] + (g[ry, rx + 1] - g[ry, rx]) * sx[None, :]
    bottom = g[ry + 1, rx] + (g[ry + 1, rx + 1] - g[ry + 1, rx]) * sx[None, :]
    return top + (bottom - top) * sy[:, None]


def _fbm(y: np.ndarray, x: np.ndarray, wavelengths: Sequence[float], exponent: float, salt: int, ridged: bool = False) -> np.ndarray:
    total = np.zeros((len(y), len(x)), np.float32)
    weight = 0.0
    for i, wl in enumerate(wavelengths):
        a = (wl / wavelengths[0]) ** exponent
        n = value_noise(y, x, wl, salt + i)
        total += a * ((1 - np.abs(2 * n - 1)) ** 2 if ridged else n)
        weight += a
    return total / weight


def dem_fields(y: np.ndarray, x: np.ndarray, seed: int = GEN_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Elevation (m, float32, no noise) and the void field (higher = more likely a hole) at global pixel coordinates ``y`` x ``x``.

    Multi-scale terrain: a regional fBm (wavelengths 8192..1024 px = 250..30 km at 30 m)
    sets lowlands and massifs; ridged fBm (2048..8 px) makes mountain ranges where the
    regional level is high; a gentler fBm (512..32 px) gives hills everywhere. About
    0..3000 m. The void field is an fBm of 128..32 px (irregular blobs), a little more
    likely in the mountains (as radar voids are).
    """
    s = seed % 1000 * 100
    reg = np.clip((_fbm(y, x, (8192, 4096, 2048, 1024), 0.7, s) - 0.25) / 0.5, 0, 1)
    ridges = _fbm(y, x, (2048, 1024, 512, 256, 128, 64, 32, 16, 8), 0.8, s + 20, ridged=True)
    hills = _fbm(y, x, (512, 256, 128, 64, 32), 0.9, s + 40)
    m = np.clip((reg - 0.15) / 0.45, 0, 1)
    m = m * m * (3 - 2 * m)
    elev = 20 + 700 * reg**1.3 + 150 * hills + 2900 * m * ridges**1.5
    voids = _fbm(y, x, (128, 64, 32), 0.6, s + 60) + 0.12 * m
    return elev.astype(np.float32), voids


def void_threshold(size: int, fraction: float = VOID_FRACTION) -> float:
    """The void-field level above which ``fraction`` of the raster is nodata (from a strided sample of the whole raster)."""
    stride = max(1, size // 512)
    c = np.arange(stride // 2, size, stride, dtype=np.float64)
    _, voids = dem_fields(c, c)
    return float(np.quantile(voids, 1 - fraction))


def synth_block(row_off: int, col_off: int, height: int, width: int, threshold: float, seed: int = GEN_SEED) -> np.ndarray:
    """One window of the synthetic DEM: elevation + 0.3 m noise (float32), -9999 in the holes. Deterministic per window."""
    y = np.arange(row_off, row_off + height, dtype=np.float64)
    x = np.arange(col_off, col_off + width, dtype=np.float64)
    elev, voids = dem_fields(y, x, seed)
    rng = np.random.default_rng([seed, row_off, col_off])
    elev += 0.3 * rng.standard_normal(elev.shape, dtype=np.float32)
    return np.where(voids > threshold, np.float32(NODATA), elev).astype(np.float32)


def input_path(work: Path, size: int) -> Path:
    """The cached input of ``size``."""
    return work / f"focal_dem_{size}.tif"


def input_is_valid(path: Path, size: int) -> bool:
    """True when ``path`` is a complete input generated by this version of the generator at ``size``."""
    if not path.exists():
        return False
    try:
        with rasterio.open(path) as ds:
            tags = ds.tags()
            return (tags.get("BENCH_GENERATOR") == GEN_VERSION and tags.get("BENCH_COMPLETE") == "yes" and ds.width == size
                    and ds.height == size and ds.count == 1 and ds.dtypes[0] == "float32" and ds.nodata == NODATA
                    and ds.block_shapes[0] == (BLOCK, BLOCK))  # fmt: skip
    except rasterio.errors.RasterioError:
        return False


def generate_input(path: Path, size: int) -> float:
    """Write the synthetic DEM block by block (little memory); return seconds. Written to a temporary name, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    t0 = time.perf_counter()
    threshold = void_threshold(size)
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "float32", "nodata": NODATA,
        "crs": "EPSG:32633", "transform": rasterio.transform.from_origin(300000.0, 5100000.0, PIXEL_M, PIXEL_M),
        "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK, "compress": "deflate", "predictor": 3,
        "num_threads": "ALL_CPUS", "bigtiff": "IF_SAFER",
    }  # fmt: skip
    with rasterio.Env(GDAL_CACHEMAX=256), rasterio.open(tmp, "w", **profile) as dst:
        dst.set_band_description(1, "elevation")
        dst.update_tags(BENCH_GENERATOR=GEN_VERSION, BENCH_SEED=str(GEN_SEED), BENCH_VOID_THRESHOLD=repr(threshold))
        dst.update_tags(1, units="m")
        for w in block_windows(size, size, BLOCK):
            dst.write(synth_block(int(w.row_off), int(w.col_off), int(w.height), int(w.width), threshold), 1, window=w)
        dst.update_tags(BENCH_COMPLETE="yes")
    os.replace(tmp, path)
    return time.perf_counter() - t0


def ensure_input(work: Path, size: int, regenerate: bool) -> tuple[Path, float | None]:
    """The cached input of ``size``, generated when missing, stale or ``regenerate``; (path, seconds spent generating or None)."""
    inp = input_path(work, size)
    if not regenerate and input_is_valid(inp, size):
        return inp, None
    remove(inp)
    print(f"generating {inp} ({size} x {size} float32 DEM) ...", flush=True)
    gen_s = generate_input(inp, size)
    print(f"  done in {gen_s:.1f} s, {(file_size(inp) or 0) / 1e6:.0f} MB", flush=True)
    return inp, gen_s


def input_summary(path: Path) -> dict[str, Any]:
    """Describe the input file for the report (nodata fraction and value range from a sample of its blocks)."""
    with rasterio.open(path) as ds:
        st = ds.tags(ns="IMAGE_STRUCTURE")
        sample = np.concatenate([ds.read(1, window=w).ravel() for w in sample_windows(ds.width, ds.height, BLOCK, n_random=40)])
        valid = sample != NODATA
        return {"path": str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path), "bytes": file_size(path),
                "width": ds.width, "height": ds.height, "bands": ds.count, "dtype": ds.dtypes[0], "block": list(ds.block_shapes[0]),
                "compression": st.get("COMPRESSION"), "predictor": st.get("PREDICTOR", "1"), "nodata": ds.nodata, "crs": str(ds.crs),
                "pixel_m": ds.res[0], "raw_bytes": ds.width * ds.height * 4, "generator": ds.tags().get("BENCH_GENERATOR"),
                "nodata_fraction_sampled": round(float(1 - valid.mean()), 4),
                "elevation_range_sampled_m": [round(float(sample[valid].min()), 1), round(float(sample[valid].max()), 1)] if valid.any() else None}  # fmt: skip


# =========================================================================== reference focal mean and output checks


def _box_sums(a: np.ndarray, k: int) -> np.ndarray:
    """Sums over every k x k window of ``a`` (valid positions only: shape minus k - 1), exactly, through a summed-area table."""
    s = np.zeros((a.shape[0] + 1, a.shape[1] + 1), dtype=np.float64 if a.dtype.kind == "f" else np.int64)
    s[1:, 1:] = a.cumsum(0).cumsum(1)
    return s[k:, k:] - s[:-k, k:] - s[k:, :-k] + s[:-k, :-k]


def focal_reference(src: Any, win: Window, k: int, domain: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The NaN-aware K x K mean over ``win`` (input pixel coordinates), pixels outside ``domain`` excluded.

    Reads ``win`` plus its halo (clipped to ``domain``) and returns (mean in float64, NaN where
    the window holds no valid pixel; valid-pixel count; whether the centre pixel is valid;
    whether the whole window lies inside ``domain``).
    """
    r = k // 2
    r0, c0, h, w = int(win.row_off), int(win.col_off), int(win.height), int(win.width)
    d_r0, d_c0 = int(domain.row_off), int(domain.col_off)
    d_r1, d_c1 = d_r0 + int(domain.height), d_c0 + int(domain.width)
    rr0, rr1 = max(d_r0, r0 - r), min(d_r1, r0 + h + r)
    cc0, cc1 = max(d_c0, c0 - r), min(d_c1, c0 + w + r)
    data = src.read(1, window=Window(cc0, rr0, cc1 - cc0, rr1 - rr0)).astype(np.float64)
    valid = (data != NODATA) & np.isfinite(data)
    vals = np.zeros((h + 2 * r, w + 2 * r), dtype=np.float64)
    cnts = np.zeros((h + 2 * r, w + 2 * r), dtype=np.int64)
    oy, ox = rr0 - (r0 - r), cc0 - (c0 - r)
    vals[oy : oy + data.shape[0], ox : ox + data.shape[1]] = np.where(valid, data, 0.0)
    cnts[oy : oy + data.shape[0], ox : ox + data.shape[1]] = valid
    sums, count = _box_sums(vals, k), _box_sums(cnts, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, sums / np.maximum(count, 1), np.nan)
    centre = valid[r0 - rr0 : r0 - rr0 + h, c0 - cc0 : c0 - cc0 + w]
    rows = np.arange(r0, r0 + h)[:, None]
    cols = np.arange(c0, c0 + w)[None, :]
    inside = (rows - r >= d_r0) & (rows + r < d_r1) & (cols - r >= d_c0) & (cols + r < d_c1)
    return mean, count, centre, inside


def _policy(kept: int, filled: int, kept_label: str, filled_label: str) -> str:
    if not kept and not filled:
        return "n/a"
    return kept_label if not filled else filled_label if not kept else f"mixed ({kept} nodata, {filled} with values)"


def check_output(out: Path, inp: Path, k: int, domain: Window, windows: Sequence[Window], tol: float) -> dict[str, Any]:
    """Compare an output with the NaN-aware reference on ``windows`` (output pixel coordinates); describe its format.

    ``domain`` is the part of the input the output covers (the whole raster, or a crop):
    pixels outside it count as missing, as they do for the approach that only saw the crop.
    The reference uses what is inside (scipy's and xarray-spatial's behaviour; tilewise's
    ``--edge partial``); nodata where a window leaves the raster (tilewise's default
    ``--edge nodata``) is recorded as the edge policy, not as an error. Likewise a nodata
    centre may be filled from its neighbours or kept as nodata (the holes policy).
    """
    res: dict[str, Any] = {"bytes": file_size(out), "tolerance_m": tol}
    with rasterio.open(inp) as src, rasterio.open(out) as dst:
        st = dst.tags(ns="IMAGE_STRUCTURE")
        nd = dst.nodata
        res.update({"dtype": dst.dtypes[0], "nodata": None if nd is None else ("nan" if math.isnan(nd) else nd),
                    "compression": st.get("COMPRESSION"), "predictor": st.get("PREDICTOR", "1"), "layout": st.get("LAYOUT", "GTiff"),
                    "block": list(dst.block_shapes[0]), "overviews": dst.overviews(1), "width": dst.width, "height": dst.height,
                    "same_grid": dst.width == int(domain.width) and dst.height == int(domain.height) and dst.crs == src.crs
                    and dst.transform.almost_equals(src.window_transform(domain))})  # fmt: skip
        tot = {"pixels_checked": 0, "compared": 0, "bad": 0, "window_not_all_valid": 0, "bad_where_window_all_valid": 0,
               "holes": 0, "holes_kept_nodata": 0, "holes_filled": 0, "edge_pixels": 0, "edge_nodata": 0, "edge_valued": 0,
               "lost": 0, "invented": 0}  # fmt: skip
        max_err = max_err_full = 0.0
        for w in windows:
            iw = Window(int(w.col_off) + int(domain.col_off), int(w.row_off) + int(domain.row_off), int(w.width), int(w.height))
            ref, count, centre, inside = focal_reference(src, iw, k, domain)
            got = dst.read(1, window=w).astype(np.float64)
            got_nd = np.isnan(got) | ((got == nd) if nd is not None and not math.isnan(nd) else False)
            ref_ok = count > 0
            cmp = ref_ok & ~got_nd
            err = np.abs(got - np.where(ref_ok, ref, 0.0))
            full = count == k * k
            if cmp.any():
                max_err = max(max_err, float(err[cmp].max()))
            if (cmp & full).any():
                max_err_full = max(max_err_full, float(err[cmp & full].max()))
            bad = cmp & (err > tol)
            hole = ~centre & ref_ok & inside  # a nodata centre that has valid neighbours (inside the raster)
            edge = centre & ~inside  # a valid pixel whose window leaves the raster
            tot["pixels_checked"] += got.size
            tot["compared"] += int(cmp.sum())
            tot["bad"] += int(bad.sum())
            tot["window_not_all_valid"] += int((~full).sum())
            tot["bad_where_window_all_valid"] += int((bad & full).sum())
            tot["holes"] += int((~centre).sum())
            tot["holes_kept_nodata"] += int((hole & got_nd).sum())
            tot["holes_filled"] += int((hole & ~got_nd).sum())
            tot["edge_pixels"] += int((~inside).sum())
            tot["edge_nodata"] += int((edge & got_nd).sum())
            tot["edge_valued"] += int((edge & ~got_nd).sum())
            tot["lost"] += int((centre & ref_ok & inside & got_nd).sum())
            tot["invented"] += int((~ref_ok & ~got_nd).sum())
    res.update({"windows": len(windows), **tot, "max_abs_err": max_err, "max_abs_err_full_windows": max_err_full,
                "bad_fraction": tot["bad"] / tot["pixels_checked"] if tot["pixels_checked"] else None,
                "holes_policy": _policy(tot["holes_kept_nodata"], tot["holes_filled"], "kept as nodata", "filled"),
                "edge_policy": _policy(tot["edge_nodata"], tot["edge_valued"], "nodata", "values"),
                "nodata_ok": tot["lost"] == 0 and tot["invented"] == 0, "correct": tot["bad"] == 0 and tot["lost"] == 0 and tot["invented"] == 0})  # fmt: skip
    return res


# =========================================================================== workers (each runs in its own process)


def crop_window(size: int, crop: int) -> Window:
    """The centred ``crop`` x ``crop`` window of a ``size`` raster (block-aligned offset); the whole raster when crop is 0 or >= size."""
    if crop <= 0 or crop >= size:
        return Window(0, 0, size, size)
    off = (size - crop) // 2 // BLOCK * BLOCK
    return Window(off, off, crop, crop)


def _read(inp: str, crop: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The (cropped) band as float32 and the input's profile updated to the crop's grid."""
    with rasterio.open(inp) as src:
        w = crop_window(src.width, crop)
        a = src.read(1, window=w)
        profile = dict(src.profile)
        profile.update(width=int(w.width), height=int(w.height), transform=src.window_transform(w))
    return a, profile


def nanaware_uniform_mean(a: np.ndarray, k: int) -> np.ndarray:
    """NaN-aware K x K mean with two scipy uniform filters (sum of valid / count of valid); NaN where no valid pixel."""
    from scipy import ndimage

    valid = (a != NODATA) & np.isfinite(a)
    s = ndimage.uniform_filter(np.where(valid, a, np.float32(0)), k, mode="constant")
    c = ndimage.uniform_filter(valid.astype(np.float32), k, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        out = s / c
    out[c < 0.5 / (k * k)] = np.nan
    return out.astype(np.float32, copy=False)


def worker_peer(name: str, inp: str, out: str, k_s: str, crop_s: str) -> None:
    """One of the peers, file to file: read (a crop of) the band, compute, write a float32 GeoTIFF."""
    k, crop = int(k_s), int(crop_s)
    t0 = time.perf_counter()
    if name == "tutorial_convolve" or name.startswith("scipy_"):
        from scipy import ndimage
    elif name.startswith("xrspatial_"):
        import xarray as xr
        from xrspatial import focal
        from xrspatial.convolution import custom_kernel
    else:
        raise ValueError(name)
    t1 = time.perf_counter()
    dem, profile = _read(inp, crop)
    t2 = time.perf_counter()
    out_nodata: float = float("nan")
    if name == "tutorial_convolve":
        kernel = np.ones((k, k)) / k**2
        result = ndimage.convolve(dem, kernel, mode="constant", cval=-9999)
        out_nodata = NODATA  # the tutorial keeps the input's profile, nodata tag included
    elif name == "scipy_uniform_filter":
        result = ndimage.uniform_filter(dem, k, mode="constant")
        out_nodata = NODATA
    elif name == "scipy_uniform_nanaware":
        result = nanaware_uniform_mean(dem, k)
    elif name == "xrspatial_focal_mean":
        if k != 3:
            raise SystemExit("xrspatial.focal.mean has a fixed 3 x 3 window")
        dem[dem == NODATA] = np.nan
        result = focal.mean(xr.DataArray(dem, dims=("y", "x"))).data
    else:  # xrspatial_focal_apply
        dem[dem == NODATA] = np.nan
        result = focal.apply(xr.DataArray(dem, dims=("y", "x")), custom_kernel(np.ones((k, k)))).data
    t3 = time.perf_counter()
    profile.update(driver="GTiff", count=1, dtype="float32", nodata=out_nodata, **PEER_CODEC)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(result.astype(np.float32, copy=False), 1)
    t4 = time.perf_counter()
    report_phases(import_s=t1 - t0, read_s=t2 - t1, compute_s=t3 - t2, write_s=t4 - t3)


def worker_encode(inp: str, out: str, kind: str, k_s: str) -> None:
    """Encode-only: write a precomputed float32 focal mean as the peers' tiled GTiff or tilewise's COG (ZSTD-1), all cores.

    ``kind`` ``cog_pre``: the COG with its overview levels computed beforehand too (untimed), so only encoding is timed.
    """
    t0 = time.perf_counter()
    src_path = Path(inp)
    with rasterio.open(inp) as src:
        arr = cached_array(src_path.with_name(f"{src_path.stem}.mean{int(k_s)}.npy"), src_path, lambda: nanaware_uniform_mean(src.read(1), int(k_s)))
        base = {"width": src.width, "height": src.height, "count": 1, "dtype": "float32", "nodata": np.nan, "crs": src.crs,
                "transform": src.transform}  # fmt: skip
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
        if kind == "gtiff":
            t1 = time.perf_counter()
            with rasterio.open(out, "w", driver="GTiff", **base, **PEER_CODEC, num_threads="ALL_CPUS") as dst:
                for w in block_windows(base["width"], base["height"], BLOCK):
                    r, c, h, wd = int(w.row_off), int(w.col_off), int(w.height), int(w.width)
                    dst.write(arr[r : r + h, c : c + wd], 1, window=w)
            t2 = time.perf_counter()
        elif kind in ("cog", "cog_pre"):
            with rasterio.open("focal_mem", "w", driver="MEM", **base) as mem:
                mem.write(arr, 1)
                del arr
                if kind == "cog_pre":  # the overview levels computed beforehand, untimed: the copy only encodes
                    build_cog_overviews(mem, BLOCK)
                t1 = time.perf_counter()
                rasterio.shutil.copy(mem, out, driver="COG", COMPRESS="ZSTD", LEVEL="1", PREDICTOR="FLOATING_POINT", BLOCKSIZE=str(BLOCK),
                                     OVERVIEWS="AUTO", RESAMPLING="AVERAGE", NUM_THREADS="ALL_CPUS", BIGTIFF="IF_SAFER")  # fmt: skip
                t2 = time.perf_counter()
        else:
            raise ValueError(kind)
    report_phases(setup_s=t1 - t0, work_s=t2 - t1)


WORKERS: dict[str, Callable[..., None]] = {
    "peer": worker_peer,
    "decode": lambda inp, workers: worker_decode(inp, int(workers)),
    "encode": worker_encode,
}


# =========================================================================== the driver


def tilewise_focal_help() -> dict[str, Any]:
    """Whether ``tilewise focal`` exists here (``--help`` succeeds) and which of the flags the benchmark uses it has."""
    h = tilewise_help("focal")
    return {**h, "no_overviews": "--no-overviews" in h["text"]}


def tilewise_command(name: str, inp: Path, out: Path, k: int, extra: Sequence[str]) -> list[str]:
    """``tilewise focal IN -o OUT --stat mean --size K`` (+ ``--overwrite`` when it has it, ``--no-overviews`` for that row)."""
    h = tilewise_focal_help()
    flags = ["--overwrite"] if h["overwrite"] else []
    if name == "tilewise_no_overviews":
        flags.append("--no-overviews")
    return [*python_cmd(), "-m", "tilewise.cli.main", "focal", str(inp), "-o", str(out), "--stat", "mean", "--size", str(k), *flags, *extra]


def choose_crop(name: str, size: int, k: int, args: argparse.Namespace) -> int:
    """The crop edge for an O(K²) approach (0: the whole raster): the largest of size, size/2, ... (>= 512) whose compute fits the budget."""
    if name not in COST_MODEL:
        return 0
    if args.crop != "auto":
        edge = int(args.crop)
        return 0 if edge <= 0 or edge >= size or k == 3 else edge
    a, b = COST_MODEL[name]
    per_px = a + b * k * k
    candidates = [size, *(1 << n for n in range(size.bit_length(), 8, -1) if BLOCK <= (1 << n) < size)]
    edge = next((c for c in candidates if c * c * per_px <= args.crop_budget_s), candidates[-1])
    return 0 if edge >= size else edge


def _noisy(m: Measurement) -> bool:
    return m.other_cpu_s > NOISY_LOAD * m.wall_s


def measure(label: str, cmd: list[str], env: dict[str, str] | None, cleanup: Sequence[Path], inp: Path, args: argparse.Namespace,
            key: Callable[[Measurement], float], stderr_times: bool = False,
            after: Callable[[Measurement], None] | None = None,
            repeats: int | None = None) -> tuple[Measurement, list[Measurement], list[tuple[float, float]], list[float]]:  # fmt: skip
    """Run ``cmd`` ``repeats`` (default ``--repeats``) times undisturbed by other processes (at most twice as many attempts); return the median run and all."""
    repeats = args.repeats if repeats is None else repeats
    runs: list[Measurement] = []
    waits: list[tuple[float, float]] = []
    syncs: list[float] = []
    while len(runs) < 2 * repeats and sum(1 for r in runs if not _noisy(r)) < repeats:
        for p in cleanup:
            remove(p)
        os.sync()  # no dirty pages of the previous command left to slow this one down
        warm_page_cache(inp)
        waited, load = wait_for_quiet(args.quiet_wait)
        print(f"[{label}] run {len(runs) + 1} (for {repeats} undisturbed): {shlex.join(cmd)}", flush=True)
        runs.append(run_measured(cmd, env=env, cwd=REPO_ROOT, timeout_s=args.timeout, stderr_times=stderr_times))
        waits.append((round(waited, 1), round(load, 2)))
        t_sync = time.perf_counter()
        os.sync()
        syncs.append(time.perf_counter() - t_sync)
        if after is not None and runs[-1].ok:
            after(runs[-1])
        if not runs[-1].ok:
            break
        if _noisy(runs[-1]):
            print(f"  disturbed: other processes used {runs[-1].other_cpu_s / runs[-1].wall_s:.2f} cores during the run", flush=True)
    clean = [r for r in runs if not _noisy(r)] or runs
    m = runs[-1] if not runs[-1].ok else sorted(clean, key=key)[(len(clean) - 1) // 2]
    return m, runs, waits, syncs


def _record(name: str, m: Measurement, runs: list[Measurement], waits: list[tuple[float, float]], syncs: list[float]) -> dict[str, Any]:
    return {"status": "ok" if m.ok else "failed", "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **m.as_dict(),
            "sync_after_s": round(syncs[runs.index(m)], 3), "notes": NOTES[name], "repeats": len(runs),
            "runs": [{"wall_s": round(r.wall_s, 3), "peak_rss_gb": round(r.peak_rss_bytes / GB, 3), "phases": r.phases,
                      "cores_used": r.as_dict()["cores_used"], "other_load_cores": r.as_dict()["other_load_cores"],
                      "waited_for_idle_s": w[0], "load_before": w[1]} for r, w in zip(runs, waits, strict=True)],
            "noisy": _noisy(m)}  # fmt: skip


def run_limit_part(name: str, inp: Path, work: Path, ks: Sequence[int], args: argparse.Namespace) -> dict[str, Any]:
    """Measure one part of the machine limit in its own process."""
    script = str(Path(__file__).resolve())
    out = work / f"focal_out_{name}.tif"
    if name == "decode":
        cmd = [*python_cmd(), script, "--worker", "decode", str(inp), str(usable_cores())]
    else:
        kind = {"encode_gtiff_zstd": "gtiff", "encode_cog_zstd": "cog", "encode_cog_zstd_pre": "cog_pre"}[name]
        cmd = [*python_cmd(), script, "--worker", "encode", str(inp), str(out), kind, str(min(ks))]
    m, runs, waits, syncs = measure(name, cmd, None, [out], inp, args, key=lambda r: r.phases.get("work_s", r.wall_s))
    rec = _record(name, m, runs, waits, syncs)
    if not m.ok:
        rec["error"] = (m.stderr_tail or m.stdout_tail).strip()[-2000:]
    elif name != "decode":
        rec["output"] = {"bytes": file_size(out), "k": min(ks)}
    remove(out)
    return rec


def run_tool(name: str, k: int, inp: Path, size: int, work: Path, args: argparse.Namespace, n_windows: int | None = None,
             goal_row: bool = True) -> dict[str, Any]:  # fmt: skip
    """Measure one approach at one K in its own process and check its output (``goal_row`` False: never --goal-repeats)."""
    script = str(Path(__file__).resolve())
    out = work / f"focal_out_{name}_k{k}.tif"
    cleanup = [out]
    env: dict[str, str] | None = None
    how = None
    crop = 0
    if name in TILEWISE_ROWS:
        h = tilewise_focal_help()
        if not h["ok"]:
            last = h["text"].strip().splitlines()[-1] if h["text"].strip() else "no output"
            return {"status": "unavailable", "error": f"`tilewise focal --help` failed ({last}); the command does not exist yet here",
                    "notes": NOTES[name]}  # fmt: skip
        if name == "tilewise_no_overviews" and not h["no_overviews"]:
            return {"status": "unavailable", "error": "`tilewise focal` has no --no-overviews flag", "notes": NOTES[name]}
        env, how = tilewise_env()
        cmd = tilewise_command(name, inp, out, k, shlex.split(args.tilewise_args))
        cleanup.append(out.with_name(f".{out.name}.tilewise"))  # its work directory (tiles, manifest)
    else:
        crop = choose_crop(name, size, k, args)
        cmd = [*python_cmd(), script, "--worker", "peer", name, str(inp), str(out), str(k), str(crop)]
    workdir = out.with_name(f".{out.name}.tilewise")

    def phases(m: Measurement) -> None:
        if name in TILEWISE_ROWS:
            m.phases.update(tilewise_phases(workdir, m))

    # The rows a goal compares run --goal-repeats times (the median counts): their ratio crossed its line run to run.
    repeats = max(args.repeats, args.goal_repeats) if goal_row and (name, k) in GOAL_ROWS else args.repeats
    m, runs, waits, syncs = measure(f"{name} K={k}", cmd, env, cleanup, inp, args, key=lambda r: r.wall_s,
                                    stderr_times=name in TILEWISE_ROWS, after=phases, repeats=repeats)  # fmt: skip
    rec = _record(name, m, runs, waits, syncs)
    domain = crop_window(size, crop)
    rec.update({"k": k, "crop": int(domain.width) if crop else None, "pixels": int(domain.width) * int(domain.height)})
    if how:
        rec["invocation"] = how
    if not m.ok:
        rec["error"] = (m.stderr_tail or m.stdout_tail).strip()[-2000:]
    elif out.exists():
        edge = int(domain.width)
        windows = sample_windows(edge, edge, BLOCK, n_random=args.n_windows if n_windows is None else n_windows)
        rec["output"] = check_output(out, inp, k, domain, windows, args.tol)
    else:
        rec["status"], rec["error"] = "failed", f"exit status 0 but no output at {out}"
    if not args.keep_outputs:
        for p in cleanup:
            remove(p)
    return rec


# =========================================================================== summary, report, plot


def summarize(data: dict[str, Any]) -> dict[str, Any]:
    """Derived numbers: Mpix/s, limits, ratios to tilewise and to the limits, the targets."""
    full_px = data["pixels"]
    lim_res = data.get("limit", {})

    def part_s(name: str) -> float | None:
        r = lim_res.get(name)
        return r.get("phases", {}).get("work_s") if r and r.get("status") == "ok" else None

    dec = part_s("decode")
    limits: dict[str, Any] = {"decode_s": dec}
    for key, (part, _label) in LIMITS.items():
        enc = part_s(part)
        limits[f"{part}_s"] = enc
        limits[f"{key}_s"] = dec + enc if dec and enc else None
        limits[f"{key}_mpix_s"] = full_px / limits[f"{key}_s"] / 1e6 if limits[f"{key}_s"] else None
    per_k: dict[str, Any] = {}
    for ks, tools in sorted(data.get("results", {}).items(), key=lambda kv: int(kv[0])):
        rows: dict[str, Any] = {}
        tw = tools.get("tilewise", {})
        tw_rate = full_px / tw["wall_s"] / 1e6 if tw.get("status") == "ok" else None
        for name in TOOLS:
            r = tools.get(name)
            if not r:
                continue
            if r.get("status") != "ok":
                rows[name] = {"status": r.get("status"), "error": r.get("error")}
                continue
            px = r.get("pixels", full_px)
            rate = px / r["wall_s"] / 1e6
            comp = r.get("phases", {}).get("compute_s")
            lim_rate = limits.get(f"{LIMIT_OF[name]}_mpix_s")
            o = r.get("output", {})
            rows[name] = {
                "status": "ok", "wall_s": r["wall_s"], "pixels": px, "crop": r.get("crop"), "mpix_s": rate,
                "compute_mpix_s": px / comp / 1e6 if comp else None, "est_full_wall_s": full_px / rate / 1e6 if r.get("crop") else None,
                "peak_gb": r["peak_rss_bytes"] / GB, "tilewise_x": tw_rate / rate if tw_rate else None,
                "limit": LIMIT_OF[name], "pct_of_limit": 100 * rate / lim_rate if lim_rate and not r.get("crop") else None,
                "max_abs_err": o.get("max_abs_err"), "max_abs_err_full_windows": o.get("max_abs_err_full_windows"),
                "bad": o.get("bad"), "bad_fraction": o.get("bad_fraction"), "window_not_all_valid": o.get("window_not_all_valid"),
                "pixels_checked": o.get("pixels_checked"), "holes_policy": o.get("holes_policy"), "edge_policy": o.get("edge_policy"),
                "lost": o.get("lost"), "invented": o.get("invented"), "nodata_ok": o.get("nodata_ok"),
                "correct": o.get("correct"), "noisy": bool(r.get("noisy")), "other_load_cores": r.get("other_load_cores"),
            }  # fmt: skip
        per_k[ks] = rows
    return {"limits": limits, "per_k": per_k, "targets": targets(data, per_k)}


def targets(data: dict[str, Any], per_k: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, for each tilewise row that ran (``met`` None when a needed row is missing)."""

    def row(k: int, name: str) -> dict[str, Any]:
        r = per_k.get(str(k), {}).get(name, {})
        return r if r.get("status") == "ok" else {}

    out: dict[str, Any] = {}
    for tw in TILEWISE_ROWS:
        if not any(row(int(k), tw) for k in per_k):
            continue
        t: dict[str, Any] = {}
        a, b = row(3, tw), row(101, tw)
        v = b["wall_s"] / a["wall_s"] if a and b else None
        t["k101_vs_k3_cost"] = {"target": TARGETS["k101_vs_k3_cost"], "value": v, "met": None if v is None else v <= TARGETS["k101_vs_k3_cost"],
                                "detail": "cost per pixel at K=101 / at K=3 (wall clock, same raster)"}  # fmt: skip
        a, b = row(3, tw), row(3, "xrspatial_focal_mean")
        v = a["mpix_s"] / b["mpix_s"] if a and b else None
        t["vs_xrspatial_k3"] = {"target": TARGETS["vs_xrspatial_k3"], "value": v, "met": None if v is None else v >= TARGETS["vs_xrspatial_k3"],
                                "detail": "Mpix/s at K=3 / xrspatial_focal_mean's"}  # fmt: skip
        a, b = row(51, tw), row(51, "tutorial_convolve")
        v = a["mpix_s"] / b["mpix_s"] if a and b else None
        t["vs_convolve_k51"] = {"target": TARGETS["vs_convolve_k51"], "value": v, "met": None if v is None else v >= TARGETS["vs_convolve_k51"],
                                "detail": "Mpix/s at K=51 / tutorial_convolve's" + (" (its crop rate)" if b.get("crop") else "")}  # fmt: skip
        mc = data.get("memory_check", {}).get(tw, {})
        kk = mc.get("k")
        big = row(kk, tw) if kk is not None else {}
        if mc.get("status") == "ok" and big:
            small_gb = mc["peak_rss_bytes"] / GB
            v = big["peak_gb"] / small_gb
            t["memory_growth"] = {"target": TARGETS["memory_growth"], "value": v, "met": v <= TARGETS["memory_growth"],
                                  "detail": f"peak at {data['size']}² ({big['peak_gb']:.2f} GB) / peak at {mc['size']}² ({small_gb:.2f} GB), "
                                            f"K={kk}; raster {data['pixels'] * 4 / GB:.2f} GB raw float32"}  # fmt: skip
        else:
            t["memory_growth"] = {"target": TARGETS["memory_growth"], "value": None, "met": None,
                                  "detail": "needs the memory check (a tilewise run on a smaller input at the largest K)"}  # fmt: skip
        out[tw] = t
    return out


def _met(t: dict[str, Any]) -> str:
    return "not measured" if t.get("met") is None else ("**met**" if t["met"] else "**not met**")


TARGET_LABELS = {
    "k101_vs_k3_cost": f"cost per pixel at K = 101 within {TARGETS['k101_vs_k3_cost']}× of K = 3",
    "vs_xrspatial_k3": f"≥ {TARGETS['vs_xrspatial_k3']}× xarray-spatial focal.mean at K = 3",
    "vs_convolve_k51": f"≥ {TARGETS['vs_convolve_k51']:g}× the tutorial's convolve at K = 51",
    "memory_growth": f"peak memory bounded by the tile size, not the raster (peak grows ≤ {TARGETS['memory_growth']}× from the memory check's smaller raster)",
}


def render_markdown(data: dict[str, Any]) -> str:
    """The human report (``focal.md``) from the JSON data."""
    s = data["summary"]
    lim, per_k = s["limits"], s["per_k"]
    m, size, inp = data["machine"], data["size"], data.get("input", {})
    res = data.get("results", {})
    out: list[str] = [f"# Focal mean benchmark, {size} × {size} ({data['pixels'] / 1e6:.0f} Mpix)", ""]
    out.append(f"Run {m['date_utc']} on {m['cpu_model']} ({m['logical_cores']} logical cores, {m['ram_gb']} GB RAM"
               f"{', ' + m['hypervisor'] + ' VM' if m.get('hypervisor') else ''}), commit {m.get('repo_commit')}. Regenerate with "
               f"`.venv/bin/python bench/focal_bench.py --size {size} --k {','.join(sorted(res, key=int)) or '3'}` (see bench/README.md).")  # fmt: skip
    out.append("")
    if inp:
        out.append(f"Input: `{inp.get('path')}`, {inp['width']} × {inp['height']} float32 DEM ({inp.get('pixel_m')} m, {inp.get('crs')}), "
                   f"{inp.get('compression')} predictor {inp.get('predictor')}, {inp['block'][0]} × {inp['block'][1]} tiles, "
                   f"{(inp.get('bytes') or 0) / 1e6:.0f} MB ({(inp.get('bytes') or 0) / inp['raw_bytes']:.0%} of raw), nodata "
                   f"{inp.get('nodata'):g} (a tag, as in the tutorial) over {100 * inp.get('nodata_fraction_sampled', 0):.1f} % of the pixels "
                   f"in irregular holes, elevations {inp.get('elevation_range_sampled_m')} m. Peers write {PEER_CODEC_LABEL}; "
                   "tilewise writes its default, a ZSTD-1 COG with overviews.")  # fmt: skip
        out.append("")
    tg = s["targets"]
    out += ["## Verdict", ""]
    if tg:
        head = ["target", *tg]
        trows = []
        for key, label in TARGET_LABELS.items():
            cells = []
            for tw in tg:
                t = tg[tw][key]
                val = "n/a" if t["value"] is None else f"{t['value']:.2f}×"
                cells.append(f"{val}: {_met(t)} ({t['detail']})")
            trows.append([label, *cells])
        out += [md_table(head, trows, "l" * len(head)), ""]
    else:
        reason = next((r.get("error") for tools in res.values() for n, r in tools.items() if n == "tilewise" and r.get("error")), None)
        out += [f"tilewise was not measured: {reason or 'not run'}.", ""]
    for ks, rows in per_k.items():
        k = int(ks)
        out += [f"## K = {k}", ""]
        head = ["tool", "wall s", "pixels", "Mpix/s", "compute-only Mpix/s", "peak GB", "tilewise ×", "% of limit", "max abs err m (full windows)",
                "pixels off by > tol", "nodata centres", "window leaves raster"]  # fmt: skip
        table = []
        for name in TOOLS:
            r = rows.get(name)
            if r is None:
                continue
            label = f"**{name}**" if name in TILEWISE_ROWS else name
            if r.get("status") != "ok":
                table.append([label, r.get("status", "not run"), "", "", "", "", "", "", "", "", "", ""])
                continue
            if r.get("noisy"):
                label += f" (disturbed: {r['other_load_cores']:.2f} cores used by others)"
            crop = r.get("crop")
            px = f"{crop}² crop" if crop else f"{size}²"
            rate = fmt(r["mpix_s"], 2 if r["mpix_s"] < 10 else 1) + (" †" if crop else "")
            comp = fmt(r["compute_mpix_s"], 2 if (r["compute_mpix_s"] or 0) < 10 else 1)
            err = "n/a" if r["max_abs_err"] is None else f"{r['max_abs_err']:.3g} ({r['max_abs_err_full_windows']:.2g})"
            bad = "n/a" if r["bad"] is None else f"{r['bad']} of {r['pixels_checked']} ({100 * (r['bad_fraction'] or 0):.2f} %)"
            if r.get("lost"):
                bad += f"; {r['lost']} valid pixels written as nodata"
            if r.get("invented"):
                bad += f"; {r['invented']} values where no valid pixel"
            table.append([label, fmt(r["wall_s"], 1), px, rate, comp, fmt(r["peak_gb"], 2), fmt(r["tilewise_x"], 1, "×"),
                          fmt(r["pct_of_limit"], 0, " %"), err, bad, r.get("holes_policy") or "", r.get("edge_policy") or ""])  # fmt: skip
        out += [md_table(head, table, "lrlrrrrrrrll"), ""]
        rates = {n: r["mpix_s"] for n in TOOLS if (r := rows.get(n)) is not None and r.get("status") == "ok"}
        out += [winner_line(rates, what=f"at K = {k} (by Mpix/s file to file; crop rows at their crop's rate)", higher_is_better=True,
                            unit="Mpix/s"), ""]  # fmt: skip
        crops = [(n, r) for n, r in rows.items() if r.get("status") == "ok" and r.get("crop")]
        if crops:
            out.append("† on a centred crop (the whole raster would take too long: O(K²)); Mpix/s is the crop's file-to-file rate, an "
                       "extrapolation to the full raster: " + "; ".join(f"{n} {r['crop']}² → est. {r['est_full_wall_s']:.0f} s for {size}²"
                                                                            for n, r in crops) + ".")  # fmt: skip
            out.append("")
    out += ["## Machine limit for the same bytes", ""]
    lrows = [[f"decode ({usable_cores_label(data)} processes)", fmt(lim["decode_s"], 2), ""]]
    for key, (part, label) in LIMITS.items():
        lrows.append([f"{part}", fmt(lim[f"{part}_s"], 2), ""])
        lrows.append([f"limit, {label} (decode + {part})", fmt(lim[f"{key}_s"], 2), fmt(lim[f"{key}_mpix_s"], 1)])
    out += [md_table(["part", "s", "Mpix/s"], lrows), ""]
    out.append("*% of limit* compares a full-raster row with decode + encode of the same bytes (peers and `tilewise_no_overviews`: "
               "the GTiff ZSTD-1 limit; `tilewise`: the COG ZSTD-1 limit with the overview levels computed beforehand, like the "
               "mean itself, so that only encoding is timed); the limit has no focal computation at all. In the COG ZSTD-1 + "
               "overviews limit GDAL's COG driver also computes the overview levels (single-threaded), for reference.")  # fmt: skip
    out.append("")
    out += ["## How to read this", ""]
    out.append(f"*Mpix/s* = pixels / wall clock, file to file (process start to exit: interpreter start-up, imports, JIT compilation, "
               f"read, compute, write). *compute-only* = pixels / the worker's own compute phase (peers only; for xarray-spatial it "
               f"includes numba's JIT compilation, ~0.6 s), comparable with the "
               f"in-memory numbers measured beforehand ({'; '.join(f'{k}: {v}' for k, v in PREVIOUS.items())}; 2 cores). *tilewise ×* = "
               f"tilewise's Mpix/s at this K / the row's. *peak GB* = the largest sum of RSS over the process tree (50 ms samples). "
               f"Outputs are checked on {_n_windows(res)} 512 × 512 windows (corners, centre, random) against a NaN-aware mean computed "
               f"in float64 on the window plus its halo (pixels outside the raster or crop excluded): *max abs err* over pixels that "
               f"have a value in both (in brackets: only pixels whose whole window is valid), *pixels off by > tol* (tol = "
               f"{data.get('settings', {}).get('tol', 0.01)} m). *nodata centres*: whether a nodata pixel with valid neighbours is filled "
               f"with their mean or kept as nodata (both are NaN-aware policies). *window leaves raster*: whether valid pixels closer than "
               f"K/2 to the raster's (or crop's) edge get the mean of the part inside (scipy, xarray-spatial, tilewise `--edge partial`) "
               f"or nodata (tilewise's default `--edge nodata`); the reference uses the part inside, and nodata there is not counted as "
               f"an error.")  # fmt: skip
    out.append("")
    tut = [(int(ks), rows["tutorial_convolve"]) for ks, rows in per_k.items() if rows.get("tutorial_convolve", {}).get("status") == "ok"]
    if tut:
        out.append("**The tutorial's convolve is wrong near nodata**: it averages the -9999 nodata value (and, with cval=-9999, the "
                   "outside of the raster) into every window that touches a hole or the edge, and gives holes values. Pixels off by "
                   "more than the tolerance: " + "; ".join(f"K = {k}: {100 * (r['bad_fraction'] or 0):.1f} % of the checked pixels "
                   f"({r['bad']}; {r['window_not_all_valid']} have a window that is not all valid)" for k, r in tut) +
                   ". `scipy_uniform_filter` has the same bug (and averages zeros in at the edges).")  # fmt: skip
        out.append("")
    out += ["## Approaches", "", md_table(["approach", "what"], [[n, NOTES[n]] for n in (*TOOLS, *LIMIT_PARTS)], "ll"), ""]
    out.append(f"Each row ran {_repeats(data)} time(s) (the two rows of the xarray-spatial goal, tilewise and xrspatial_focal_mean at "
               "K = 3, `--goal-repeats` times, the others `--repeats` times; more when other processes disturbed a run); the median run is shown. Before each "
               "run: `sync`, the input read once (page cache), and a wait until other processes leave the CPUs idle (`--quiet-wait`).")  # fmt: skip
    mc = data.get("memory_check")
    if mc:
        out.append("")
        for tw, r in mc.items():
            if r.get("status") == "ok":
                out.append(f"Memory check: {tw} on a {r['size']}² input (K = {r['k']}): {r['wall_s']:.1f} s, peak {r['peak_rss_gb']:.2f} GB.")
    plot = data.get("plot")
    if plot:
        out += ["", f"![Mpix/s vs K]({plot})"]
    return "\n".join(out) + "\n"


def usable_cores_label(data: dict[str, Any]) -> str:
    """How many decode processes the limit used."""
    return str(data.get("machine", {}).get("usable_cores", "?"))


def _n_windows(res: dict[str, Any]) -> str:
    ns = sorted({r.get("output", {}).get("windows") for tools in res.values() for r in tools.values() if r.get("output")} - {None})
    return "/".join(str(n) for n in ns) or "n/a"


def _repeats(data: dict[str, Any]) -> str:
    counts = sorted({r.get("repeats", 1) for tools in data.get("results", {}).values() for r in tools.values() if r.get("status") == "ok"})
    return "/".join(str(c) for c in counts) or "0"


def render_plot(data: dict[str, Any], path: Path) -> bool:
    """Mpix/s vs K per tool (log y), crop rates as hollow markers; False when matplotlib is missing or nothing to plot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    per_k = data["summary"]["per_k"]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    plotted = False
    for i, name in enumerate(TOOLS):
        pts = [(int(ks), rows[name]) for ks, rows in per_k.items() if rows.get(name, {}).get("status") == "ok"]
        if not pts:
            continue
        pts.sort(key=lambda p: p[0])
        color = f"C{i}"
        ks = [k for k, _ in pts]
        rates = [r["mpix_s"] for _, r in pts]
        lw = 2.5 if name in TILEWISE_ROWS else 1.5
        ax.plot(ks, rates, "-", color=color, lw=lw, label=name)
        for k, r in pts:
            ax.plot([k], [r["mpix_s"]], "o", color=color, mfc="white" if r.get("crop") else color, ms=7)
        plotted = True
    if not plotted:
        plt.close(fig)
        return False
    lim = data["summary"]["limits"]
    for key, (_part, label) in LIMITS.items():
        if lim.get(f"{key}_mpix_s"):
            ax.axhline(lim[f"{key}_mpix_s"], color="grey", ls={"gtiff_zstd": "--", "cog_zstd": ":"}.get(key, "-."), lw=1, label=f"machine limit, {label}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    allk = sorted(int(k) for k in per_k)
    ax.set_xticks(allk)
    ax.set_xticklabels([str(k) for k in allk])
    ax.minorticks_off()
    ax.set_xlabel("K (window edge, pixels)")
    ax.set_ylabel("Mpix/s, file to file (log)")
    m = data["machine"]
    ax.set_title(f"Focal mean, {data['size']}² float32 DEM, {m['logical_cores']} cores\n(hollow markers: rate on a centred crop, extrapolated)",
                 fontsize=10)  # fmt: skip
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# =========================================================================== command line


def parse_ks(spec: str) -> list[int]:
    """``3,15,51`` -> [3, 15, 51] (odd, >= 3)."""
    ks = sorted({int(t) for t in spec.split(",") if t.strip()})
    bad = [k for k in ks if k < 3 or k % 2 == 0]
    if bad or not ks:
        raise SystemExit(f"--k needs odd window edges >= 3, got {spec!r}")
    return ks


def selected(only: str | None, skip: str | None) -> list[str]:
    """Expand ``--only``/``--skip`` (names or groups: limit, peers, tilewise, all) into names, in run order."""

    def expand(spec: str) -> set[str]:
        names: set[str] = set()
        for tok in (t.strip() for t in spec.split(",") if t.strip()):
            if tok in GROUPS:
                names.update(GROUPS[tok])
            elif tok in ALL:
                names.add(tok)
            else:
                raise SystemExit(f"unknown approach {tok!r}; choose from {', '.join((*ALL, *GROUPS))}")
        return names

    chosen = expand(only) if only else set(ALL)
    if skip:
        chosen -= expand(skip)
    return [n for n in ALL if n in chosen]


def results_paths(results_dir: Path, size: int) -> tuple[Path, Path, Path]:
    """``focal.json/.md/.png`` at full size, ``focal_<size>.*`` otherwise (quick checks don't overwrite the real report)."""
    stem = BENCHMARK if size == FULL_SIZE else f"{BENCHMARK}_{size}"
    return results_dir / f"{stem}.json", results_dir / f"{stem}.md", results_dir / f"{stem}.png"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command line of the benchmark."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=FULL_SIZE, help=f"Input edge in pixels (default {FULL_SIZE}; e.g. 2048 for a quick check).")
    p.add_argument("--k", default=",".join(map(str, DEFAULT_KS)), help="Comma-separated window edges K (odd; default 3,15,51,101).")
    p.add_argument("--only", default=None, help=f"Comma-separated approaches or groups to run ({', '.join(ALL)}; groups: {', '.join(GROUPS)}).")
    p.add_argument("--skip", default=None, help="Comma-separated approaches or groups not to run.")
    p.add_argument("--work-dir", type=Path, default=WORK_DIR, help="Where the input is cached and outputs are written (default bench/work).")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="Where focal.json/.md/.png go (default bench/results).")
    p.add_argument("--fresh", action="store_true", help="Start a new JSON instead of merging into the existing one.")
    p.add_argument("--regenerate", action="store_true", help="Regenerate the input even if a valid cached one exists.")
    p.add_argument("--keep-outputs", action="store_true", help="Keep each approach's output file in the work directory.")
    p.add_argument("--clean", action="store_true", help="Delete the cached input(s) (and the work directory if empty) at the end.")
    p.add_argument("--goal-repeats", type=int, default=3,
                   help="Undisturbed runs of the two rows of the xarray-spatial goal (tilewise and xrspatial_focal_mean at K = 3); default 3.")
    p.add_argument("--repeats", "--repeat", type=int, default=1,
                   help="Undisturbed runs per row (at most twice as many attempts); the median is reported, all are in the JSON (default 1).")  # fmt: skip
    p.add_argument("--quiet-wait", type=float, default=300.0,
                   help="Before each run, wait up to this many seconds for other processes to leave the CPUs idle (default 300; 0: don't wait).")  # fmt: skip
    p.add_argument("--prefault-gb", type=float, default=8.0,
                   help="Touch this much memory once before measuring (VM first-touch cost; default 8, 0 to skip).")  # fmt: skip
    p.add_argument("--timeout", type=float, default=1800.0, help="Seconds one run may take before it is killed (default 1800).")
    p.add_argument("--crop", default="auto",
                   help="Crop edge for the O(K²) approaches (tutorial_convolve, xrspatial_focal_apply) at K > 3: 'auto' (from --crop-budget-s), "
                        "or pixels (0: never crop).")  # fmt: skip
    p.add_argument("--crop-budget-s", type=float, default=40.0,
                   help="With --crop auto: the largest estimated compute time of an O(K²) approach on the whole raster; above it, a "
                        "centred crop of size/2, size/4, ... is used (default 40).")  # fmt: skip
    p.add_argument("--tol", type=float, default=0.01, help="Metres by which an output pixel may differ from the reference (default 0.01).")
    p.add_argument("--n-windows", type=int, default=24, help="Random 512x512 windows in the output check, besides the fixed ones (default 24).")
    p.add_argument("--tilewise-args", default="", help="Extra arguments for `tilewise focal`, e.g. '--executor threads'.")
    p.add_argument("--mem-check-size", type=int, default=None,
                   help="Also run tilewise (default settings) at the largest K on a SIZE x SIZE input, for the memory target "
                        "(default size/4; 0 to skip).")  # fmt: skip
    p.add_argument("--report-only", action="store_true", help="Only re-render the Markdown report and the plot from the JSON.")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("worker_args", nargs="*", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def finish_report(data: dict[str, Any], json_path: Path, md_path: Path, png_path: Path) -> None:
    """Summarize, plot, and write the JSON and the Markdown."""
    data["summary"] = summarize(data)
    data["plot"] = png_path.name if render_plot(data, png_path) else None
    write_json(json_path, data)
    md_path.write_text(render_markdown(data), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected rows, merge into the JSON report, render the Markdown report and the plot."""
    args = parse_args(argv)
    if args.worker:
        WORKERS[args.worker](*args.worker_args)
        return 0
    json_path, md_path, png_path = results_paths(args.results_dir, args.size)
    if args.report_only:
        report = load_json(json_path)
        if report is None:
            raise SystemExit(f"no report at {json_path}")
        finish_report(report, json_path, md_path, png_path)
        print(f"wrote {md_path} and {png_path}")
        return 0
    if args.worker_args:
        raise SystemExit(f"unexpected arguments: {args.worker_args}")
    names = selected(args.only, args.skip)
    ks = parse_ks(args.k)
    size = args.size
    if size % BLOCK:
        print(f"note: size {size} is not a multiple of {BLOCK}; edge blocks are partial", file=sys.stderr)

    machine = machine_info()
    machine["xarray_spatial"] = _module_version("xrspatial")
    machine["scipy"] = _module_version("scipy")
    machine["numba"] = _module_version("numba")
    old = None if args.fresh else load_json(json_path)
    if old is not None and old.get("size") != size:
        old = None
    data: dict[str, Any] = old or {"benchmark": BENCHMARK, "size": size, "pixels": size * size, "results": {}, "limit": {}}
    data.setdefault("limit", {})
    data.setdefault("results", {})
    for k, rows in data["results"].items():  # rows an older run measured at a K this version no longer runs them at
        for name, only in ONLY_K.items():
            if int(k) not in only:
                rows.pop(name, None)
    warnings = []
    if old is not None and old.get("machine", {}).get("cpu_model") != machine["cpu_model"]:
        warnings.append(f"results merged from different machines: {old['machine'].get('cpu_model')} and {machine['cpu_model']}")
    data["machine"] = machine
    data["machine_warnings"] = sorted(set(data.get("machine_warnings", [])) | set(warnings))
    data["settings"] = {"tol": args.tol, "crop": args.crop, "crop_budget_s": args.crop_budget_s, "peer_codec": PEER_CODEC_LABEL,
                        "tilewise_args": args.tilewise_args, "nodata": NODATA}  # fmt: skip

    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    inp, gen_s = ensure_input(work, size, args.regenerate)
    if gen_s is not None:
        data["input_generation_s"] = round(gen_s, 1)
    data["input"] = input_summary(inp)
    if "tilewise" in names or "tilewise_no_overviews" in names:
        h = tilewise_focal_help()
        print("tilewise focal: " + ("available" if h["ok"] else "NOT available (`tilewise focal --help` failed): its rows are skipped"), flush=True)
    if args.prefault_gb > 0:
        import psutil

        gb = min(args.prefault_gb, 0.7 * psutil.virtual_memory().available / GB)
        pf = prefault_memory(gb)
        print(f"touched {gb:.1f} GB of memory once in {pf:.1f} s (first-touch cost of the VM, paid before measuring)", flush=True)
        data["prefault"] = {"gb": round(gb, 1), "seconds": round(pf, 1)}

    def report(rec: dict[str, Any], label: str) -> None:
        line = f"[{label}] {rec['status']}"
        if rec["status"] == "ok":
            px = rec.get("pixels", size * size)
            line += f": wall {rec['wall_s']:.2f} s, {px / rec['wall_s'] / 1e6:.2f} Mpix/s" + (f" (crop {rec['crop']}²)" if rec.get("crop") else "")
            line += f", peak {rec['peak_rss_gb']:.2f} GB, cores {rec['cores_used']}"
            if rec.get("phases"):
                line += f", phases {rec['phases']}"
            o = rec.get("output")
            if o and "max_abs_err" in o:
                line += (f", max|err| {o['max_abs_err']:.3g} m, {o['bad']} px > tol, holes: {o['holes_policy']}, edges: {o['edge_policy']}, "
                         f"lost {o['lost']}, invented {o['invented']}")  # fmt: skip
        elif rec.get("error"):
            line += ": " + rec["error"].strip().splitlines()[-1]
        print(line, flush=True)

    for name in (n for n in names if n in LIMIT_PARTS):
        rec = run_limit_part(name, inp, work, ks, args)
        rec["repo_commit"] = machine["repo_commit"]
        data["limit"][name] = rec
        report(rec, name)
        finish_report(data, json_path, md_path, png_path)  # after every row, so an interrupted run keeps what it measured
    for k in ks:
        for name in (n for n in names if n in TOOLS):
            if name in ONLY_K and k not in ONLY_K[name]:
                continue
            rec = run_tool(name, k, inp, size, work, args)
            rec["repo_commit"] = machine["repo_commit"]
            data["results"].setdefault(str(k), {})[name] = rec
            report(rec, f"{name} K={k}")
            finish_report(data, json_path, md_path, png_path)
    mc_size = size // 4 if args.mem_check_size is None else args.mem_check_size
    if "tilewise" in names and mc_size > 0 and tilewise_focal_help()["ok"]:
        small, _ = ensure_input(work, mc_size, args.regenerate)
        rec = run_tool("tilewise", max(ks), small, mc_size, work, args, n_windows=4, goal_row=False)
        rec.update({"size": mc_size, "repo_commit": machine["repo_commit"]})
        data.setdefault("memory_check", {})["tilewise"] = rec
        report(rec, f"tilewise K={max(ks)} at {mc_size}² (memory check)")
        if args.clean:
            remove(small)
    finish_report(data, json_path, md_path, png_path)
    print(f"wrote {json_path}, {md_path} and {png_path}")
    if args.clean:
        remove(inp)
        with contextlib.suppress(OSError):
            work.rmdir()
    return 0


def _module_version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version({"xrspatial": "xarray-spatial"}.get(module, module))
    except Exception:
        return None


if __name__ == "__main__":
    sys.exit(main())
