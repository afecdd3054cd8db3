#!/usr/bin/env python3
"""NDVI benchmark: tilewise against what users do today, and against the machine's limit.

One run measures, on the same machine and the same generated input (a
16384 x 16384, 2-band uint16 GeoTIFF, 512 x 512 tiles, DEFLATE, nodata 0 with a
nodata region), every way of writing a float32 NDVI GeoTIFF (DEFLATE, floating
point predictor, 512 x 512 tiles, nodata tagged):

``tutorial``
    rasterio ``read(1)``/``read(2)`` whole bands, float64 numpy, one big write.
``rioxarray_dask``
    ``rioxarray.open_rasterio(chunks=2048, masked=True)``, dask's threaded scheduler,
    ``.rio.to_raster(..., lock=threading.Lock())``.
``gdal_calc``
    Debian's ``gdal_calc.py`` (system GDAL, ``/usr/bin/python3``).
``tilewise``
    ``tilewise ndvi IN -o OUT --red 1 --nir 2 --compress deflate --predictor 3`` (a COG;
    DEFLATE like the others, for like-for-like).
``tilewise_default``
    ``tilewise ndvi IN -o OUT --red 1 --nir 2``: tilewise's defaults, a COG with ZSTD
    level 1 and the floating-point predictor (what the issue's targets are about).
``decode`` / ``encode_gtiff`` / ``encode_cog`` / ``encode_cog_pre`` / ``encode_gtiff_zstd`` / ``encode_cog_zstd`` / ``encode_cog_zstd_pre``
    The machine limit for the same bytes: decoding every block of the input with 2
    processes, and encoding a precomputed float32 NDVI array as a tiled GeoTIFF and
    as a COG with overviews with ``NUM_THREADS=ALL_CPUS``, with DEFLATE (level 6) and
    with ZSTD level 1 (both with predictor 3). limit = decode + encode of the same bytes.
    The ``_pre`` parts are the strict COG limits tilewise is judged by: the overview
    levels are computed beforehand too, so only encoding is timed; without ``_pre``,
    GDAL's COG driver also computes them (single-threaded) inside the timed section.

Each approach runs in its own process; the wall clock and the peak memory of the
whole process tree (sum of RSS sampled every 50 ms) are recorded, and each
output is checked against the tutorial's NDVI on a sample of windows.

Usage (from the repository root)::

    .venv/bin/python bench/ndvi_bench.py                 # everything, full size (~15 min)
    .venv/bin/python bench/ndvi_bench.py --size 4096     # quick check -> results/ndvi_4096.*
    .venv/bin/python bench/ndvi_bench.py --only tilewise # re-measure one row, merged into the JSON
    .venv/bin/python bench/ndvi_bench.py --report-only   # re-render ndvi.md from ndvi.json
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shlex
import shutil
import sys
import threading
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
    wait_for_quiet,
    warm_page_cache,
    winner_line,
    write_json,
)

BENCHMARK = "ndvi"
FULL_SIZE = 16384
BLOCK = 512
IN_NODATA = 0
GEN_VERSION = "tilewise-bench-ndvi-input-v1"
GEN_SEED = 20240611
#: Output nodata for the approaches that can take NaN (float32 NDVI); gdal_calc cannot (see NOTES).
OUT_NODATA = float("nan")
GDAL_CALC_NODATA = -9999.0

APPROACHES = ("tutorial", "rioxarray_dask", "gdal_calc", "tilewise", "tilewise_default")
TILEWISE_ROWS = ("tilewise_default", "tilewise")
LIMIT_PARTS = ("decode", "encode_gtiff", "encode_cog", "encode_cog_pre", "encode_gtiff_zstd", "encode_cog_zstd", "encode_cog_zstd_pre")
#: The machine limits: name -> (encode part added to decode, label).
LIMITS = {
    "gtiff": ("encode_gtiff", "GTiff DEFLATE-6"),
    "cog": ("encode_cog", "COG DEFLATE-6 + overviews"),
    "gtiff_zstd": ("encode_gtiff_zstd", "GTiff ZSTD-1"),
    "cog_zstd": ("encode_cog_zstd", "COG ZSTD-1 + overviews"),
    # The strict limits: the overview levels computed beforehand (untimed), as the NDVI itself is, so the
    # timed section only encodes. GDAL computing them inside its COG encode (the limits above) is ~4.5 s
    # of single-threaded averaging that tilewise does in parallel.
    "cog_pre": ("encode_cog_pre", "COG DEFLATE-6 + precomputed overviews"),
    "cog_zstd_pre": ("encode_cog_zstd_pre", "COG ZSTD-1 + precomputed overviews"),
}
#: Which limit each approach is compared to (the one writing the same bytes), and a second one for reference.
LIMIT_OF = {"tutorial": ("gtiff", None), "rioxarray_dask": ("gtiff", None), "gdal_calc": ("gtiff", None),
            "tilewise": ("cog_pre", "cog"), "tilewise_default": ("cog_zstd_pre", "cog_zstd")}  # fmt: skip
#: The encode parts: name -> (kind, codec) for worker_encode.
ENCODE_PARTS = {"encode_gtiff": ("gtiff", "deflate"), "encode_cog": ("cog", "deflate"), "encode_cog_pre": ("cog_pre", "deflate"),
                "encode_gtiff_zstd": ("gtiff", "zstd"), "encode_cog_zstd": ("cog", "zstd"), "encode_cog_zstd_pre": ("cog_pre", "zstd")}  # fmt: skip
ALL = LIMIT_PARTS + APPROACHES
#: The rows the NDVI goals are measured by (1.5x rioxarray_dask; 85 % of the strict ZSTD-1 COG limit): these run
#: --repeat times, the others (the loose limit beside it too) once unless --repeat-all (which keeps `make bench`
#: within its time budget).
GOAL_ROWS = ("decode", "encode_cog_zstd_pre", "rioxarray_dask", "tilewise_default")
GROUPS = {"limit": LIMIT_PARTS, "approaches": APPROACHES, "all": ALL}

#: Measured before on this kind of machine (2-core VM), for context in the report.
PREVIOUS = {"tutorial": "6.7 Mpix/s, 8.2 GB peak", "rioxarray_dask": "18.9 Mpix/s, 1.4 GB peak", "gdal_calc": "12.7 Mpix/s"}
#: Other processes' load (cores) above which a run counts as disturbed.
NOISY_LOAD = 0.25
TARGETS = {"vs_rioxarray_dask": 1.5, "pct_of_limit": 85.0, "peak_gb": 1.0}

NOTES = {
    "tutorial": ("rasterio read(1)/read(2) of whole bands, .astype(float64), NDVI in float64 numpy, nodata (0 in either band) set to NaN, "
                 "one dst.write() of the float32 result. The one change from a typical tutorial: the output profile asks for "
                 "DEFLATE + PREDICTOR=3 + 512 tiles + nodata=NaN so that it is comparable; no NUM_THREADS (users don't set it), "
                 "so compression is single-threaded."),
    "rioxarray_dask": ("rioxarray.open_rasterio(chunks={'band': -1, 'x': 2048, 'y': 2048}, masked=True), (nir - red)/(nir + red) as float32, "
                       "attrs replaced by long_name='ndvi' (the inherited long_name=('red', 'nir') makes to_raster fail), "
                       "rio.write_nodata(NaN), rio.to_raster(tiled=True, blockxsize=512, blockysize=512, lock=threading.Lock(), "
                       "compress='DEFLATE', predictor=3, dtype='float32') on dask's default threaded scheduler (2 threads); "
                       "no NUM_THREADS."),
    "gdal_calc": ("Debian's gdal_calc.py (system GDAL, /usr/bin/python3), --calc '(B.astype(float32)-A)/(B.astype(float32)+A)', "
                  f"--type=Float32, --NoDataValue={GDAL_CALC_NODATA:g} (NaN is not usable: gdal_calc blends nodata as "
                  "keep*result + NDV*mask, so a NaN NDV would turn every pixel NaN; and for the same reason the nodata pixels, "
                  "where 0/0 = NaN, come out NaN, not -9999), "
                  "--co TILED=YES BLOCKXSIZE=512 BLOCKYSIZE=512 COMPRESS=DEFLATE PREDICTOR=3. Input A and B are the same file opened twice."),
    "tilewise": "tilewise ndvi with default settings (processes executor, usable cores, 1024 tiles, COG with AVERAGE overviews) "
                "plus --compress deflate --predictor 3 (DEFLATE level 6 like the other approaches; its default is ZSTD level 1).",
    "tilewise_default": "tilewise ndvi with default settings, no compression flags: processes executor, usable cores, 1024 tiles, "
                        "COG, ZSTD level 1, floating-point predictor, AVERAGE overviews computed by tilewise and copied by the COG driver.",
    "decode": "Every 512x512 block of both bands read with rasterio (block-aligned windows), 2 worker processes, data discarded.",
    "encode_gtiff": "A float32 NDVI array computed beforehand (untimed) written as a tiled GTiff, DEFLATE, PREDICTOR=3, 512 tiles, "
                    "NUM_THREADS=ALL_CPUS, one 512x512 block per write.",
    "encode_cog": "The same array copied (untimed) into a MEM dataset, then GDAL's COG driver: DEFLATE, PREDICTOR=FLOATING_POINT, "
                  "BLOCKSIZE=512, OVERVIEWS=AUTO, RESAMPLING=AVERAGE, NUM_THREADS=ALL_CPUS, GDAL_NUM_THREADS=ALL_CPUS.",
    "encode_gtiff_zstd": "As encode_gtiff, with ZSTD level 1 (ZSTD_LEVEL=1) instead of DEFLATE: the plain-GTiff bytes of tilewise's default.",
    "encode_cog_zstd": "As encode_cog, with COMPRESS=ZSTD, LEVEL=1 (PREDICTOR=FLOATING_POINT, AVERAGE overviews): "
                       "the same bytes as tilewise's default output.",
    "encode_cog_pre": "As encode_cog, with the AVERAGE overview levels (factors 2 to 32) built beforehand in the MEM dataset "
                      "(untimed, like the NDVI array); the COG driver copies them (OVERVIEWS=AUTO uses the source's): encoding alone.",
    "encode_cog_zstd_pre": "As encode_cog_zstd, with the overview levels built beforehand (untimed), as in encode_cog_pre.",
}  # fmt: skip


# =========================================================================== the input


def _hash01(ix: np.ndarray, iy: np.ndarray, salt: int) -> np.ndarray:
    """A cheap integer hash of two int64 grids, mapped to [0, 1) (per-field random values)."""
    h = ix.astype(np.int64).view(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    h ^= iy.astype(np.int64).view(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
    h ^= np.uint64(salt * 0x165667B19E3779F9 & 0xFFFFFFFFFFFFFFFF)
    h ^= h >> np.uint64(29)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(32)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def synth_block(row_off: int, col_off: int, height: int, width: int, size: int, seed: int = GEN_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Red and NIR digital numbers (uint16, reflectance x 10000) of one window of the synthetic scene.

    A Sentinel-2-like landscape: fields (~1 x 0.6 km at 10 m) with warped borders,
    each with its own vegetation cover and soil brightness, a regional gradient,
    row texture inside fields, a meandering river, multiplicative + additive sensor
    noise, and a swath edge (both bands = 0, nodata) cutting off the lower-right
    corner (~7 % of the scene, including whole empty blocks). Deterministic per window.
    """
    y = np.arange(row_off, row_off + height, dtype=np.float64)[:, None]
    x = np.arange(col_off, col_off + width, dtype=np.float64)[None, :]
    xw = x + 18.0 * np.sin(y / 97.0) + 9.0 * np.sin((x + y) / 41.0)
    yw = y + 14.0 * np.cos(x / 83.0)
    fx, fy = np.floor(xw / 96.0), np.floor(yw / 64.0)
    veg, soil = _hash01(fx, fy, 1), _hash01(fx, fy, 2)
    region = 0.5 + 0.5 * np.sin(2 * np.pi * x / (0.37 * size)) * np.cos(2 * np.pi * y / (0.29 * size))
    cover = np.clip(0.75 * veg + 0.25 * region + 0.06 * np.sin(x / 3.0 + 6.0 * veg) * np.cos(y / 11.0), 0.0, 1.0)
    red = cover * 350.0 + (1.0 - cover) * (1000.0 + 1000.0 * soil)
    nir = cover * 4200.0 + (1.0 - cover) * (2000.0 + 1000.0 * soil)
    river_y = 0.55 * size + 0.06 * size * np.sin(2 * np.pi * x / (0.45 * size))
    water = np.abs(y - river_y) < 25.0 + 10.0 * np.sin(x / 300.0)
    red = np.where(water, 300.0, red)
    nir = np.where(water, 150.0, nir)
    rng = np.random.default_rng([seed, row_off, col_off])
    shape = (height, width)
    red = red * (1.0 + 0.012 * rng.standard_normal(shape, dtype=np.float32)) + 6.0 * rng.standard_normal(shape, dtype=np.float32)
    nir = nir * (1.0 + 0.012 * rng.standard_normal(shape, dtype=np.float32)) + 6.0 * rng.standard_normal(shape, dtype=np.float32)
    nodata = (x + 0.3 * y) > 1.1 * size
    red_dn = np.where(nodata, IN_NODATA, np.clip(np.rint(red), 1, 65535)).astype(np.uint16)
    nir_dn = np.where(nodata, IN_NODATA, np.clip(np.rint(nir), 1, 65535)).astype(np.uint16)
    return red_dn, nir_dn


def input_is_valid(path: Path, size: int) -> bool:
    """True when ``path`` is a complete input generated by this version of the generator at ``size``."""
    if not path.exists():
        return False
    try:
        with rasterio.open(path) as ds:
            tags = ds.tags()
            return (tags.get("BENCH_GENERATOR") == GEN_VERSION and tags.get("BENCH_COMPLETE") == "yes" and ds.width == size
                    and ds.height == size and ds.count == 2 and ds.dtypes == ("uint16", "uint16") and ds.block_shapes[0] == (BLOCK, BLOCK))  # fmt: skip
    except rasterio.errors.RasterioError:
        return False


def generate_input(path: Path, size: int) -> float:
    """Write the synthetic input block by block (little memory); return seconds. Written to a temporary name, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    t0 = time.perf_counter()
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": 2, "dtype": "uint16", "nodata": IN_NODATA,
        "crs": "EPSG:32633", "transform": rasterio.transform.from_origin(300000.0, 5100000.0, 10.0, 10.0),
        "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK, "compress": "deflate", "interleave": "pixel",
        "num_threads": "ALL_CPUS", "bigtiff": "IF_SAFER",
    }  # fmt: skip
    with rasterio.Env(GDAL_CACHEMAX=256), rasterio.open(tmp, "w", **profile) as dst:
        dst.set_band_description(1, "red")
        dst.set_band_description(2, "nir")
        dst.update_tags(BENCH_GENERATOR=GEN_VERSION, BENCH_SEED=str(GEN_SEED))
        for w in block_windows(size, size, BLOCK):
            red, nir = synth_block(int(w.row_off), int(w.col_off), int(w.height), int(w.width), size)
            dst.write(np.stack([red, nir]), window=w)
        dst.update_tags(BENCH_COMPLETE="yes")
    os.replace(tmp, path)
    return time.perf_counter() - t0


def input_summary(path: Path) -> dict[str, Any]:
    """Describe the input file for the report."""
    with rasterio.open(path) as ds:
        st = ds.tags(ns="IMAGE_STRUCTURE")
        return {"path": str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path), "bytes": file_size(path),
                "width": ds.width, "height": ds.height, "bands": ds.count, "dtype": ds.dtypes[0], "block": list(ds.block_shapes[0]),
                "compression": st.get("COMPRESSION"), "interleave": st.get("INTERLEAVE"), "nodata": ds.nodata, "crs": str(ds.crs),
                "raw_bytes": ds.width * ds.height * ds.count * 2, "generator": ds.tags().get("BENCH_GENERATOR")}  # fmt: skip


# =========================================================================== the reference NDVI and output checks


def ndvi_reference(red: np.ndarray, nir: np.ndarray) -> np.ndarray:
    """The tutorial's NDVI: float64 arithmetic, nodata (0 in either band) as NaN, cast to float32."""
    r, n = red.astype(np.float64), nir.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (n - r) / (n + r)
    out[(red == IN_NODATA) | (nir == IN_NODATA)] = np.nan
    return out.astype(np.float32)


def check_output(out: Path, inp: Path, windows: Sequence[Window]) -> dict[str, Any]:
    """Compare an approach's output with the tutorial's NDVI on ``windows``; describe its format."""
    res: dict[str, Any] = {"bytes": file_size(out)}
    with rasterio.open(inp) as src, rasterio.open(out) as dst:
        st = dst.tags(ns="IMAGE_STRUCTURE")
        nd = dst.nodata
        res.update({"dtype": dst.dtypes[0], "nodata": None if nd is None else ("nan" if math.isnan(nd) else nd),
                    "compression": st.get("COMPRESSION"), "predictor": st.get("PREDICTOR", "1"), "layout": st.get("LAYOUT", "GTiff"),
                    "block": list(dst.block_shapes[0]), "overviews": dst.overviews(1), "same_grid": dst.width == src.width
                    and dst.height == src.height and dst.transform == src.transform and dst.crs == src.crs})  # fmt: skip
        max_diff = 0.0
        checked = ref_nodata = out_nodata_as_nan = out_nodata_as_value = 0
        ref_nodata_out_valid = out_nodata_ref_valid = 0
        for w in windows:
            red, nir = src.read(window=w)
            ref = ndvi_reference(red, nir)
            got = dst.read(1, window=w)
            got_nan = np.isnan(got)
            got_nd = got_nan | (got == nd) if nd is not None and not math.isnan(nd) else got_nan
            ref_nd = np.isnan(ref)
            valid = ~ref_nd & ~got_nd
            if valid.any():
                max_diff = max(max_diff, float(np.max(np.abs(got[valid].astype(np.float64) - ref[valid]))))
            checked += ref.size
            ref_nodata += int(ref_nd.sum())
            out_nodata_as_nan += int((ref_nd & got_nan).sum())
            out_nodata_as_value += int((ref_nd & got_nd & ~got_nan).sum())
            ref_nodata_out_valid += int((ref_nd & ~got_nd).sum())
            out_nodata_ref_valid += int((~ref_nd & got_nd).sum())
    res.update({"windows": len(windows), "pixels_checked": checked, "max_abs_diff": max_diff, "ref_nodata_pixels": ref_nodata,
                "nodata_written_as_nan": out_nodata_as_nan, "nodata_written_as_value": out_nodata_as_value,
                "ref_nodata_but_output_valid": ref_nodata_out_valid, "output_nodata_but_ref_valid": out_nodata_ref_valid,
                "nodata_ok": ref_nodata_out_valid == 0 and out_nodata_ref_valid == 0})  # fmt: skip
    return res


# =========================================================================== workers (each runs in its own process)


def worker_tutorial(inp: str, out: str) -> None:
    """What users copy from tutorials: whole arrays, float64, one write."""
    t0 = time.perf_counter()
    with rasterio.open(inp) as src:
        red = src.read(1)
        nir = src.read(2)
        profile = src.profile
    t1 = time.perf_counter()
    nodata = (red == 0) | (nir == 0)
    red = red.astype("float64")
    nir = nir.astype("float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        ndvi = (nir - red) / (nir + red)
    ndvi[nodata] = np.nan
    t2 = time.perf_counter()
    # The tutorial writes with the input's profile; only the output format is changed so it is comparable.
    profile.update(count=1, dtype="float32", nodata=np.nan, compress="deflate", predictor=3, tiled=True, blockxsize=512, blockysize=512)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(ndvi.astype("float32"), 1)
    t3 = time.perf_counter()
    report_phases(read_s=t1 - t0, compute_s=t2 - t1, write_s=t3 - t2)


def worker_rioxarray_dask(inp: str, out: str) -> None:
    """rioxarray + dask: lazy chunks, threaded scheduler, locked writes."""
    import rioxarray
    import xarray

    t0 = time.perf_counter()
    da = rioxarray.open_rasterio(inp, chunks={"band": -1, "x": 2048, "y": 2048}, masked=True)
    assert isinstance(da, xarray.DataArray)
    red = da.sel(band=1)
    nir = da.sel(band=2)
    ndvi = ((nir - red) / (nir + red)).astype("float32")
    # xarray keeps the input's attrs through the arithmetic, including long_name = ("red", "nir") from the band
    # descriptions, and rio.to_raster then refuses to write 1 band with 2 names: users have to drop it.
    ndvi.attrs = {"long_name": "ndvi"}
    ndvi.rio.write_nodata(np.nan, encoded=False, inplace=True)
    t1 = time.perf_counter()
    ndvi.rio.to_raster(out, tiled=True, blockxsize=512, blockysize=512, lock=threading.Lock(), compress="DEFLATE", predictor=3, dtype="float32")
    t2 = time.perf_counter()
    report_phases(graph_s=t1 - t0, compute_and_write_s=t2 - t1)


_decode_ds: Any = None


def _decode_rows(args: tuple[str, int, int]) -> int:
    """Decode every block of one block row (both bands); return the number of pixels read."""
    global _decode_ds
    path, row, size = args
    if _decode_ds is None:
        _decode_ds = rasterio.open(path)
    n = 0
    for col in range(0, size, BLOCK):
        w = Window(col, row, min(BLOCK, size - col), min(BLOCK, size - row))
        n += _decode_ds.read(window=w).shape[-1] * int(w.height)
    return n


def worker_decode(inp: str, workers: int) -> None:
    """Decode-only: read every block of both bands with ``workers`` processes, discarding data."""
    from concurrent.futures import ProcessPoolExecutor

    with rasterio.open(inp) as ds:
        size = ds.width
        assert ds.height == size
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as ex:
        pixels = sum(ex.map(_decode_rows, [(inp, row, size) for row in range(0, size, BLOCK)]))
    t1 = time.perf_counter()
    assert pixels == size * size, pixels
    report_phases(work_s=t1 - t0)


def _ndvi_array(inp: str) -> np.ndarray:
    """The NDVI of the whole input as one float32 array, computed strip by strip (the encode benchmarks' untimed setup)."""
    with rasterio.open(inp) as src:
        arr = np.empty((src.height, src.width), dtype=np.float32)
        for row in range(0, src.height, BLOCK):
            w = Window(0, row, src.width, min(BLOCK, src.height - row))
            red, nir = src.read(window=w)
            arr[row : row + int(w.height)] = ndvi_reference(red, nir)
        return arr


def worker_encode(inp: str, out: str, kind: str, codec: str = "deflate") -> None:
    """Encode-only: write a precomputed float32 NDVI as a tiled GTiff or a COG, with all cores, DEFLATE (level 6) or ZSTD level 1.

    ``kind`` ``cog_pre``: a COG whose overview levels are computed beforehand too (untimed), so only encoding is timed.
    """
    if codec not in ("deflate", "zstd"):
        raise ValueError(codec)
    gtiff_codec = {"compress": "deflate"} if codec == "deflate" else {"compress": "zstd", "zstd_level": 1}
    cog_codec = {"COMPRESS": "DEFLATE"} if codec == "deflate" else {"COMPRESS": "ZSTD", "LEVEL": "1"}
    t0 = time.perf_counter()
    with rasterio.open(inp) as src:
        grid = {"crs": src.crs, "transform": src.transform, "width": src.width, "height": src.height}
    src_path = Path(inp)
    arr = cached_array(src_path.with_name(f"{src_path.stem}.ndvi.npy"), src_path, lambda: _ndvi_array(inp))
    base = {"width": grid["width"], "height": grid["height"], "count": 1, "dtype": "float32", "nodata": np.nan,
            "crs": grid["crs"], "transform": grid["transform"]}  # fmt: skip
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
        if kind == "gtiff":
            t1 = time.perf_counter()
            profile = {**base, "driver": "GTiff", "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK, **gtiff_codec,
                       "predictor": 3, "num_threads": "ALL_CPUS", "bigtiff": "IF_SAFER"}  # fmt: skip
            with rasterio.open(out, "w", **profile) as dst:
                for w in block_windows(grid["width"], grid["height"], BLOCK):
                    r, c, h, wd = int(w.row_off), int(w.col_off), int(w.height), int(w.width)
                    dst.write(arr[r : r + h, c : c + wd], 1, window=w)
            t2 = time.perf_counter()
        elif kind in ("cog", "cog_pre"):
            with rasterio.open("ndvi_mem", "w", driver="MEM", **base) as mem:
                mem.write(arr, 1)
                del arr
                if kind == "cog_pre":  # the overview levels computed beforehand, untimed: the copy only encodes
                    build_cog_overviews(mem, BLOCK)
                t1 = time.perf_counter()
                rasterio.shutil.copy(mem, out, driver="COG", **cog_codec, PREDICTOR="FLOATING_POINT", BLOCKSIZE=str(BLOCK),
                                     OVERVIEWS="AUTO", RESAMPLING="AVERAGE", NUM_THREADS="ALL_CPUS", BIGTIFF="IF_SAFER")  # fmt: skip
                t2 = time.perf_counter()
        else:
            raise ValueError(kind)
    report_phases(setup_s=t1 - t0, work_s=t2 - t1)


WORKERS: dict[str, Callable[..., None]] = {
    "tutorial": worker_tutorial,
    "rioxarray_dask": worker_rioxarray_dask,
    "decode": lambda inp, workers: worker_decode(inp, int(workers)),
    "encode": worker_encode,
}


# =========================================================================== the driver


#: Compression flags per tilewise row: ``tilewise`` matches the other approaches' DEFLATE; ``tilewise_default`` passes none.
TILEWISE_FLAGS = {"tilewise": ("--compress", "deflate", "--predictor", "3"), "tilewise_default": ()}


def tilewise_command(inp: Path, out: Path, flags: Sequence[str], extra: Sequence[str]) -> tuple[list[str], dict[str, str], str]:
    """The tilewise command line and environment: the working tree's ``src`` via ``python -m`` (it may not be installed)."""
    env = dict(os.environ)
    src = str(REPO_ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [*python_cmd(), "-m", "tilewise.cli.main", "ndvi", str(inp), "-o", str(out), "--red", "1", "--nir", "2", *flags, *extra]
    return cmd, env, f"python -m tilewise.cli.main with PYTHONPATH={src}"


def gdal_calc_command(inp: Path, out: Path) -> list[str] | None:
    """The gdal_calc.py command line, or None when gdal_calc.py is not installed."""
    exe = shutil.which("gdal_calc.py") or ("/usr/bin/gdal_calc.py" if Path("/usr/bin/gdal_calc.py").exists() else None)
    if exe is None:
        return None
    return [exe, "-A", str(inp), "--A_band=1", "-B", str(inp), "--B_band=2", "--calc=(B.astype(float32)-A)/(B.astype(float32)+A)",
            "--type=Float32", f"--NoDataValue={GDAL_CALC_NODATA:g}", "--co", "TILED=YES", "--co", "BLOCKXSIZE=512", "--co", "BLOCKYSIZE=512",
            "--co", "COMPRESS=DEFLATE", "--co", "PREDICTOR=3", f"--outfile={out}"]  # fmt: skip


def system_env() -> dict[str, str]:
    """The environment for system tools: without the venv's Python/GDAL settings."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "GDAL_DATA", "PROJ_LIB", "PROJ_DATA")}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    return env


def run_one(name: str, inp: Path, work: Path, windows: Sequence[Window], args: argparse.Namespace) -> dict[str, Any]:
    """Measure one approach (or limit part) in its own process and check its output."""
    script = str(Path(__file__).resolve())
    out = work / f"out_{name}.tif"
    cleanup = [out]
    env: dict[str, str] | None = None
    how = None
    writes_output = True
    if name == "tutorial" or name == "rioxarray_dask":
        cmd = [*python_cmd(), script, "--worker", name, str(inp), str(out)]
    elif name == "decode":
        cmd, writes_output = [*python_cmd(), script, "--worker", "decode", str(inp), "2"], False
    elif name in ENCODE_PARTS:
        kind, codec = ENCODE_PARTS[name]
        cmd = [*python_cmd(), script, "--worker", "encode", str(inp), str(out), kind, codec]
    elif name == "gdal_calc":
        calc = gdal_calc_command(inp, out)
        if calc is None:
            return {"status": "unavailable", "error": "gdal_calc.py not found (apt-get install -y gdal-bin python3-gdal)", "notes": NOTES[name]}
        cmd, env = calc, system_env()
    elif name in TILEWISE_ROWS:
        cmd, env, how = tilewise_command(inp, out, TILEWISE_FLAGS[name], shlex.split(args.tilewise_args))
        cleanup.append(out.with_name(f".{out.name}.tilewise"))  # its work directory (tiles, manifest)
    else:
        raise ValueError(name)
    runs: list[Measurement] = []
    syncs: list[float] = []
    waits: list[tuple[float, float]] = []
    # Up to twice --repeat attempts, to get --repeat runs not disturbed by other processes.
    repeat = args.repeat if (args.repeat_all or name in GOAL_ROWS) else 1
    while len(runs) < 2 * repeat and sum(1 for r in runs if not _noisy(r)) < repeat:
        for p in cleanup:
            remove(p)
        os.sync()  # no dirty pages of the previous command left to slow this one down
        warm_page_cache(inp)
        waited, load = wait_for_quiet(args.quiet_wait)
        print(f"[{name}] run {len(runs) + 1} (for {repeat} undisturbed): {shlex.join(cmd)}", flush=True)
        runs.append(run_measured(cmd, env=env, cwd=REPO_ROOT, timeout_s=args.timeout, stderr_times=name in TILEWISE_ROWS))
        waits.append((round(waited, 1), round(load, 2)))
        t_sync = time.perf_counter()
        os.sync()
        syncs.append(time.perf_counter() - t_sync)
        if name in TILEWISE_ROWS and runs[-1].ok:
            runs[-1].phases.update(tilewise_phases(out.with_name(f".{out.name}.tilewise"), runs[-1]))
        if not runs[-1].ok:
            break
        if _noisy(runs[-1]):
            print(f"  disturbed: other processes used {runs[-1].other_cpu_s / runs[-1].wall_s:.2f} cores during the run", flush=True)
    # The reported run is the median one (by the timed section for the limit parts, by wall clock otherwise).
    key: Callable[[Measurement], float] = (lambda r: r.phases.get("work_s", r.wall_s)) if name in LIMIT_PARTS else (lambda r: r.wall_s)
    # Runs during which other processes kept more than NOISY_LOAD cores busy are only used when all runs were like that.
    clean = [r for r in runs if not _noisy(r)] or runs
    m = runs[-1] if not runs[-1].ok else sorted(clean, key=key)[(len(clean) - 1) // 2]
    rec: dict[str, Any] = {"status": "ok" if m.ok else "failed", "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **m.as_dict(),
                           "sync_after_s": round(syncs[runs.index(m)], 3), "notes": NOTES[name], "repeats": len(runs),
                           "runs": [{"wall_s": round(r.wall_s, 3), "peak_rss_gb": round(r.peak_rss_bytes / GB, 3), "phases": r.phases,
                                     "cores_used": r.as_dict()["cores_used"], "other_load_cores": r.as_dict()["other_load_cores"],
                                     "waited_for_idle_s": w[0], "load_before": w[1]} for r, w in zip(runs, waits, strict=True)],
                           "noisy": _noisy(m)}  # fmt: skip
    if how:
        rec["invocation"] = how
    if not m.ok:
        rec["error"] = (m.stderr_tail or m.stdout_tail).strip()[-2000:]
    elif writes_output:
        if out.exists():
            rec["output"] = check_output(out, inp, windows)
            if name in TILEWISE_ROWS:
                rec["workdir_bytes_after"] = _tree_bytes(out.with_name(f".{out.name}.tilewise"))
        else:
            rec["status"], rec["error"] = "failed", f"exit status 0 but no output at {out}"
    if not args.keep_outputs:
        for p in cleanup:
            remove(p)
    return rec


def _noisy(m: Measurement) -> bool:
    return m.other_cpu_s > NOISY_LOAD * m.wall_s


def tilewise_phases(workdir: Path, m: Measurement) -> dict[str, float]:
    """Where tilewise's time went.

    Wall-clock phases from the times its progress lines arrived on stderr (``N of N tiles to run``
    after start-up and planning, ``computing overviews`` when the tiles are done, ``writing N
    output(s)`` when the overviews are done) and the COG assembly's seconds from the manifest in
    its work directory: ``startup_s``, ``tiles_s``, ``overviews_s``, ``assemble_cog_s`` and
    ``finish_s`` (the rest, to process exit) add up to the wall clock. Also the work summed over
    the workers (worker-seconds, so up to workers x the phase): the tiles' read/compute/write and
    the overview regions' seconds.
    """
    import json
    import re

    out: dict[str, float] = {}
    sums = {"read_s": 0.0, "compute_s": 0.0, "write_s": 0.0}
    tiles = regions = 0
    ovr_s = 0.0
    for f in sorted((workdir / "manifest").glob("records-*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("kind") == "output" and "seconds" in rec:
                out["assemble_cog_s"] = float(rec["seconds"])
            elif rec.get("kind") == "tile":
                tiles += 1
                for k in sums:
                    sums[k] += float(rec.get(k) or 0.0)
            elif rec.get("kind") == "overview":
                regions += 1
                ovr_s += float(rec.get("seconds") or 0.0)

    def first(pattern: str) -> float | None:
        return next((t for t, text in m.stderr_lines if re.search(pattern, text)), None)

    t_start, t_ovr, t_write = first(r"tiles to run"), first(r"^computing overviews"), first(r"^writing \d+ output")
    if t_start is not None and t_write is not None and "assemble_cog_s" in out:
        out["startup_s"] = t_start
        out["tiles_s"] = (t_ovr if t_ovr is not None else t_write) - t_start
        out["overviews_s"] = t_write - t_ovr if t_ovr is not None else 0.0
        out["finish_s"] = max(0.0, m.wall_s - t_write - out["assemble_cog_s"])
    if tiles:
        out.update({f"tiles_{k.removesuffix('_s')}_sum_s": v for k, v in sums.items()})
        out["tiles"] = float(tiles)
    if regions:
        out["overviews_sum_s"] = ovr_s
        out["overview_regions"] = float(regions)
    order = ("startup_s", "tiles_s", "overviews_s", "assemble_cog_s", "finish_s")
    return {k: round(v, 4) for k, v in [*((k, out[k]) for k in order if k in out), *((k, v) for k, v in out.items() if k not in order)]}


def prefault_memory(gb: float) -> float:
    """Allocate and touch ``gb`` GB once, then free it; return seconds.

    On this kind of VM the first touch of guest memory that has not been used since boot
    (or was handed back to the host) costs ~2 s/GB instead of ~0.15 s/GB; without this the
    first memory-hungry approach pays it and the others don't.
    """
    t0 = time.perf_counter()
    n = int(gb * GB) // 8
    if n > 0:
        a = np.empty(n, dtype=np.float64)
        a[::512] = 1.0  # one write per 4 KiB page
        del a
    return time.perf_counter() - t0


def _tree_bytes(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def summarize(data: dict[str, Any]) -> dict[str, Any]:
    """Derived numbers: Mpix/s, the machine limits, ratios to rioxarray_dask and to the limits, the tilewise targets."""
    pixels = data["pixels"]
    res = data.get("results", {})

    def mpix(seconds: float | None) -> float | None:
        return pixels / seconds / 1e6 if seconds else None

    def part_s(name: str) -> float | None:
        r = res.get(name)
        if not r or r.get("status") != "ok":
            return None
        return r.get("phases", {}).get("work_s")

    dec = part_s("decode")
    limits: dict[str, Any] = {"decode_s": dec}
    for lim, (part, _label) in LIMITS.items():
        enc = part_s(part)
        limits[f"{part}_s"] = enc
        limits[f"{lim}_s"] = dec + enc if dec and enc else None
        limits[f"{lim}_mpix_s"] = mpix(limits[f"{lim}_s"])
    dask = res.get("rioxarray_dask")
    dask_rate = mpix(dask["wall_s"]) if dask and dask.get("status") == "ok" else None
    rows: dict[str, Any] = {}
    for name in APPROACHES:
        r = res.get(name)
        if not r or r.get("status") != "ok":
            rows[name] = {"status": r.get("status") if r else "not run"}
            continue
        rate = mpix(r["wall_s"])
        assert rate is not None
        main, ref = LIMIT_OF[name]

        def pct(lim: str | None, rate: float = rate) -> float | None:
            return 100 * rate / limits[f"{lim}_mpix_s"] if lim and limits[f"{lim}_mpix_s"] else None

        rows[name] = {
            "status": "ok", "wall_s": r["wall_s"], "mpix_s": rate, "peak_gb": r["peak_rss_bytes"] / GB,
            "vs_rioxarray_dask": rate / dask_rate if dask_rate else None,
            "limit": main, "pct_of_limit": pct(main), "ref_limit": ref, "pct_of_ref_limit": pct(ref),
            "max_abs_diff": r.get("output", {}).get("max_abs_diff"), "nodata_ok": r.get("output", {}).get("nodata_ok"),
            "noisy": bool(r.get("noisy")), "other_load_cores": r.get("other_load_cores"),
        }  # fmt: skip
    targets: dict[str, Any] = {}
    for name in TILEWISE_ROWS:
        tw = rows.get(name, {})
        if tw.get("status") != "ok":
            continue
        vs, pct_l = tw["vs_rioxarray_dask"], tw["pct_of_limit"]  # tilewise writes a COG: compared with the COG limit of its codec
        targets[name] = {
            "vs_rioxarray_dask": {"target": TARGETS["vs_rioxarray_dask"], "value": vs, "met": vs is not None and vs >= TARGETS["vs_rioxarray_dask"]},
            "pct_of_limit": {"target": TARGETS["pct_of_limit"], "value": pct_l, "limit": tw["limit"],
                             "met": pct_l is not None and pct_l >= TARGETS["pct_of_limit"]},
            "peak_gb": {"target": TARGETS["peak_gb"], "value": tw["peak_gb"], "met": tw["peak_gb"] <= TARGETS["peak_gb"]},
        }  # fmt: skip
    return {"limits": limits, "rows": rows, "tilewise_targets": targets}


def render_markdown(data: dict[str, Any]) -> str:
    """The human report (``ndvi.md``) from the JSON data."""
    s = data["summary"]
    lim, rows, res = s["limits"], s["rows"], data.get("results", {})
    m = data["machine"]
    size = data["size"]
    inp = data.get("input", {})
    out: list[str] = [f"# NDVI benchmark, {size} × {size} ({data['pixels'] / 1e6:.0f} Mpix)", ""]
    out.append(f"Run {m['date_utc']} on {m['cpu_model']} ({m['logical_cores']} logical cores, {m['ram_gb']} GB RAM"
               f"{', ' + m['hypervisor'] + ' VM' if m.get('hypervisor') else ''}). Regenerate with "
               f"`.venv/bin/python bench/ndvi_bench.py{'' if size == FULL_SIZE else f' --size {size}'}` (see bench/README.md).")  # fmt: skip
    out.append("")
    header = ["approach", "wall s", "Mpix/s", "peak memory GB", "ratio vs rioxarray_dask", "% of machine limit",
              "compared to limit (same bytes)", "max abs diff vs reference"]  # fmt: skip
    table = []
    for name in APPROACHES:
        r = rows.get(name, {})
        if r.get("status") != "ok":
            table.append([name, r.get("status", "not run"), "", "", "", "", "", ""])
            continue
        which = LIMITS[r["limit"]][1]
        if r.get("ref_limit"):
            which += f" (vs {LIMITS[r['ref_limit']][1]}: {fmt(r['pct_of_ref_limit'], 0, ' %')})"
        diff = "n/a" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.2g}"
        if r["nodata_ok"] is False:
            diff += " (nodata mismatch!)"
        label = f"**{name}**" if name in TILEWISE_ROWS else name
        if r.get("noisy"):
            label += f" (disturbed: other processes used {r['other_load_cores']:.2f} cores)"
        table.append([label, fmt(r["wall_s"], 1), fmt(r["mpix_s"], 1), fmt(r["peak_gb"], 2), fmt(r["vs_rioxarray_dask"], 2, "×"),
                      fmt(r["pct_of_limit"], 0, " %"), which, diff])  # fmt: skip
    for key, (part, label) in LIMITS.items():
        table.append([f"machine limit, {label} (decode + {part})", fmt(lim[f"{key}_s"], 1), fmt(lim[f"{key}_mpix_s"], 1), "", "",
                      "100 %" if lim[f"{key}_s"] else "", "", ""])  # fmt: skip
    out += [md_table(header, table, "lrrrrrlr"), ""]
    when = "; ".join(f"{n} {res[n].get('measured_at', '?')[:16].replace('T', ' ')}" for n in (*APPROACHES, *LIMIT_PARTS) if n in res)
    out.append(f"Each approach ran {_repeats(res)} time(s) in a row (the rows the goals are measured by, {', '.join(GOAL_ROWS)}, "
               "--repeat times, the others once; more when other processes disturbed a run: those runs are "
               f"left out); the table shows the median run. *Mpix/s* = {size}² / wall clock "
               "(process start to exit, imports included). *Peak memory*: largest sum of RSS of the "
               "process tree, sampled every 50 ms, in GB (10⁹ B). *% of machine limit*: Mpix/s over the Mpix/s of the limit named in "
               "the next column, the one writing the same bytes: decoding the input alone + encoding the same output alone "
               "(GTiff DEFLATE-6 for the approaches writing a plain tiled GeoTIFF; COG DEFLATE-6 with overviews for `tilewise`, "
               "which is run with `--compress deflate --predictor 3`; COG ZSTD-1 with overviews for `tilewise_default`, tilewise's "
               "default output). For the COGs the limit is the strict one, whose overview levels are computed beforehand like the "
               "NDVI array, so that only encoding is timed; the looser one, in which GDAL's COG driver also computes the overview "
               "levels (single-threaded), is given beside it. *Max abs diff*: over valid pixels of the sampled windows against the tutorial's NDVI "
               "(float64, cast to float32), recomputed from the input; nodata must agree (NaN or the tagged nodata value).")  # fmt: skip
    out.append("")
    out.append(f"Measured at (rows are merged from several runs): {when}.")
    out.append("")
    out.append("Measured before on this kind of machine, for context: " + "; ".join(f"{k} {v}" for k, v in PREVIOUS.items()) + ".")
    out.append("")
    out += render_verdict(data)
    out += ["## Machine limit", ""]
    lrows = []
    for part in LIMIT_PARTS:
        r = res.get(part)
        if not r:
            lrows.append([part, "not run", "", "", "", "", ""])
            continue
        if r.get("status") != "ok":
            lrows.append([part, r.get("status"), "", "", "", "", ""])
            continue
        w = r["phases"].get("work_s")
        size_mb = r.get("output", {}).get("bytes")
        lrows.append([part, fmt(w, 2), fmt(data["pixels"] / w / 1e6 if w else None, 1), fmt(r.get("cores_used"), 2),
                      fmt(r["peak_rss_bytes"] / GB, 2), fmt(size_mb / 1e6, 0) if size_mb else "", r["notes"]])  # fmt: skip
    lhead = ["part", "seconds (timed section)", "Mpix/s", "cores used (whole process)", "peak GB", "output MB", "how"]
    out += [md_table(lhead, lrows, "lrrrrrl"), ""]
    out.append("Each limit adds decode and one encode (each already uses both cores): "
               + "; ".join(f"{label} = decode + {part}" for part, label in LIMITS.values())
               + ". The timed sections exclude interpreter start-up and, for the encoders, computing the NDVI array beforehand; "
               "the approaches' wall clocks include their start-up.")  # fmt: skip
    out.append("")
    out += ["## Details per approach", ""]
    drows = []
    for name in (*APPROACHES, *LIMIT_PARTS):
        r = res.get(name)
        if not r or r.get("status") != "ok":
            continue
        o = r.get("output", {})
        ph = ", ".join(f"{k.removesuffix('_s')} {v:.1f}" if k.endswith("_s") else f"{k} {v:g}" for k, v in r.get("phases", {}).items())
        fmt_desc = (f"{o.get('layout')}, {o.get('compression')}, pred {o.get('predictor')}, {o.get('block', ['?'])[0]} tiles, "
                    f"nodata {o.get('nodata')}, ovr {o.get('overviews')}") if o else ""  # fmt: skip
        nod = ""
        if o:
            nod = f"{o['nodata_written_as_nan']} NaN + {o['nodata_written_as_value']} value / {o['ref_nodata_pixels']}"
            if not o["nodata_ok"]:
                nod += f" (MISMATCH: {o['ref_nodata_but_output_valid']} should be nodata, {o['output_nodata_but_ref_valid']} should be valid)"
        walls = [x["wall_s"] for x in r.get("runs", [])] or [r["wall_s"]]
        spread = f"{len(walls)}: {min(walls):.1f}–{max(walls):.1f}"
        if name in LIMIT_PARTS:
            works = [x["phases"].get("work_s", 0.0) for x in r.get("runs", [])] or [r["phases"].get("work_s", 0.0)]
            spread += f" (timed {min(works):.2f}–{max(works):.2f})"
        drows.append([name, spread, ph, fmt(r.get("cores_used"), 2), fmt(r.get("other_load_cores"), 2), fmt(r.get("sync_after_s"), 1),
                      fmt(o["bytes"] / 1e6, 0) if o.get("bytes") else "", fmt_desc, nod])  # fmt: skip
    dhead = ["approach", "runs: wall s min–max", "phases of the median run (s)", "cores used", "other load (cores)", "sync after (s)",
             "output MB", "output format", "nodata pixels in sample"]  # fmt: skip
    out += [md_table(dhead, drows, "lllrrrrll"), ""]
    out.append("*cores used* = CPU seconds of the process tree / wall. *other load* = busy CPU seconds on the machine not "
               "accounted to the measured command, per second of wall (noise from other work on the machine). *sync after*: "
               "time of an `os.sync()` right after the command (dirty output pages it left for the kernel to write; not included in wall).")  # fmt: skip
    out.append("")
    out += ["## Commands and notes", ""]
    for name in (*APPROACHES, *LIMIT_PARTS):
        r = res.get(name)
        if not r:
            continue
        commit = f", repo {r['repo_commit']}" if r.get("repo_commit") else ""
        out.append(f"- **{name}** ({r.get('status')}, {r.get('measured_at', '')}{commit}): {r.get('notes', '')}")
        if r.get("cmd"):
            out.append(f"  `{r['cmd']}`")
        if r.get("status") != "ok" and r.get("error"):
            err = r["error"].strip().splitlines()
            out.append("  Error (last lines):")
            out.append("")
            out.append("  ```")
            out += [f"  {line}" for line in err[-12:]]
            out.append("  ```")
    out.append("")
    out += ["## Input", ""]
    if inp:
        out.append(f"`{inp['path']}`: {inp['width']} × {inp['height']}, {inp['bands']} bands {inp['dtype']} (red, NIR), {inp['block'][0]} × "
                   f"{inp['block'][1]} tiles, {inp['compression']}, interleave {inp['interleave']}, nodata {inp['nodata']:g}, {inp['crs']}; "
                   f"{inp['bytes'] / 1e6:.0f} MB on disk ({100 * inp['bytes'] / inp['raw_bytes']:.0f} % of raw). Synthetic Sentinel-2-like "
                   "scene (fields with warped borders, regional gradient, row texture, a river, multiplicative + additive noise) with a "
                   "swath edge of nodata (both bands 0) over ~7 % of the scene. Generated block by block by `synth_block` in "
                   f"ndvi_bench.py ({inp['generator']}), read from the page cache in every measurement.")  # fmt: skip
        out.append("")
    if data.get("prefault"):
        pf = data["prefault"]
        out += [f"Before measuring, {pf['gb']} GB of memory was touched once ({pf['seconds']} s): on this VM the first touch of guest "
                "memory costs ~2 s/GB (vs ~0.15 s/GB afterwards) and freed memory goes back to that state after a while, which makes "
                "the memory-hungry tutorial vary most between runs.", ""]  # fmt: skip
    out += ["## Machine", ""]
    keys = ["date_utc", "cpu_model", "hypervisor", "logical_cores", "physical_cores", "usable_cores", "ram_gb", "os", "libc", "python",
            "numpy", "rasterio", "gdal_rasterio", "xarray", "rioxarray", "dask", "psutil", "gdal_calc", "repo_commit"]  # fmt: skip
    out += [md_table(["", ""], [[k, m.get(k)] for k in keys], "ll"), ""]
    if data.get("machine_warnings"):
        out += [f"Warning: {w}" for w in data["machine_warnings"]] + [""]
    return "\n".join(out)


def _limit_spread(res: dict[str, Any], part: str) -> tuple[float, float] | None:
    """Lowest and highest decode + ``part`` over the limit parts' runs (timed sections), or None."""
    works = []
    for name in ("decode", part):
        r = res.get(name, {})
        w = [x["phases"].get("work_s") for x in r.get("runs", []) if x.get("phases", {}).get("work_s")]
        if not w:
            return None
        works.append(w)
    return min(works[0]) + min(works[1]), max(works[0]) + max(works[1])


def _met(t: dict[str, Any]) -> str:
    return "met" if t["met"] else "**NOT met**"


def render_verdict(data: dict[str, Any]) -> list[str]:
    """The "Verdict" section: each target for each tilewise row, with the numbers, and where tilewise's time goes."""
    s = data["summary"]
    lim, rows, res, tg = s["limits"], s["rows"], data.get("results", {}), s.get("tilewise_targets", {})
    out = ["## Verdict", ""]
    walls = {n: res[n]["wall_s"] for n in APPROACHES if res.get(n, {}).get("status") == "ok"}
    out += [winner_line(walls, what="(wall clock, file to file)"), ""]
    measured = [n for n in TILEWISE_ROWS if n in tg]
    if not measured:
        return [*out, "Not measured: no tilewise row ran successfully (`--only tilewise,tilewise_default`).", ""]
    out.append("The issue's targets are for tilewise *with default settings* (`tilewise_default`: a ZSTD-1 COG with overviews): "
               f"≥ {TARGETS['vs_rioxarray_dask']}× rioxarray_dask, ≥ {TARGETS['pct_of_limit']:.0f} % of the machine limit for the same "
               f"bytes (the strict limit: overview levels computed beforehand), peak memory ≤ {TARGETS['peak_gb']:g} GB. The DEFLATE row "
               "(`tilewise`) is held to the same targets against its own strict limit (COG DEFLATE-6, overviews computed beforehand).")  # fmt: skip
    out.append("")
    dask = rows.get("rioxarray_dask", {})
    head = ["target", *(f"{n} ({LIMITS[rows[n]['limit']][1]})" for n in measured)]
    def cell(n: str, target: str, digits: int, unit: str) -> str:
        t = tg[n][target]
        where = f" of {LIMITS[t['limit']][1]}" if "limit" in t else ""
        return f"{fmt(t['value'], digits, unit)}{where}: {_met(t)}"

    trows = [[f"≥ {TARGETS['vs_rioxarray_dask']}× rioxarray_dask", *(cell(n, "vs_rioxarray_dask", 3, "×") for n in measured)],
             [f"≥ {TARGETS['pct_of_limit']:.0f} % of the machine limit for the same bytes", *(cell(n, "pct_of_limit", 1, " %") for n in measured)],
             [f"peak memory ≤ {TARGETS['peak_gb']:g} GB", *(cell(n, "peak_gb", 2, " GB") for n in measured)]]  # fmt: skip
    out += [md_table(head, trows, "l" * len(head)), ""]
    for n in measured:
        r, t = rows[n], tg[n]
        key = r["limit"]
        lim_s = lim[f"{key}_s"]
        n_met = sum(1 for x in t.values() if x["met"])
        parts = [f"**{n} meets {n_met} of {len(t)} targets**: {r['wall_s']:.2f} s, {r['mpix_s']:.1f} Mpix/s"]
        if dask.get("status") == "ok":
            need = dask["wall_s"] / TARGETS["vs_rioxarray_dask"]
            parts.append(f"{t['vs_rioxarray_dask']['value']:.3f}× rioxarray_dask ({dask['wall_s']:.2f} s; "
                         f"{TARGETS['vs_rioxarray_dask']}× needs ≤ {need:.2f} s: {_met(t['vs_rioxarray_dask'])})")  # fmt: skip
        if lim_s:
            need = lim_s / (TARGETS["pct_of_limit"] / 100)
            parts.append(f"{t['pct_of_limit']['value']:.1f} % of the {LIMITS[key][1]} limit ({lim_s:.2f} s = decode "
                         f"{lim['decode_s']:.2f} + {LIMITS[key][0]} {lim[LIMITS[key][0] + '_s']:.2f}; {TARGETS['pct_of_limit']:.0f} % needs "
                         f"≤ {need:.2f} s: {_met(t['pct_of_limit'])})")  # fmt: skip
        parts.append(f"peak {r['peak_gb']:.2f} GB ({_met(t['peak_gb'])})")
        line = ", ".join(parts) + "."
        spread = _limit_spread(res, LIMITS[key][0])
        if spread:
            walls = [x["wall_s"] for x in res[n].get("runs", [])] or [r["wall_s"]]
            lo, hi = 100 * spread[0] / max(walls), 100 * spread[1] / min(walls)
            line += (f" Run to run, the limit's timed sections span {spread[0]:.1f}–{spread[1]:.1f} s and {n}'s wall "
                     f"{min(walls):.2f}–{max(walls):.2f} s, so its % of the limit is {lo:.0f}–{hi:.0f} %"
                     + (" (borderline: the target lies inside that range)." if lo < TARGETS["pct_of_limit"] <= hi else "."))  # fmt: skip
        enc_bytes = res.get(LIMITS[key][0], {}).get("output", {}).get("bytes")
        own_bytes = res[n].get("output", {}).get("bytes")
        if enc_bytes and own_bytes:
            line += f" Output {own_bytes / 1e6:.0f} MB vs {enc_bytes / 1e6:.0f} MB from {LIMITS[key][0]}."
        out.append(line)
        out.append("")
    if "tilewise_default" in measured and dask.get("status") == "ok":
        out.append("Note that the comparison with rioxarray_dask is not like for like: rioxarray_dask writes a plain tiled GTiff "
                   "(DEFLATE-6, no overviews), tilewise a COG with overviews (1/3 more pixels to encode); its ratio to its own "
                   "GTiff limit is in the table above.")  # fmt: skip
        out.append("")
    prow = []
    for n in measured:
        ph = res[n].get("phases", {})
        if "tiles_s" not in ph:
            continue
        prow.append([n, fmt(res[n]["wall_s"], 1), fmt(ph["startup_s"], 1),
                     f"{ph['tiles_s']:.1f} ({ph.get('tiles', 0):.0f} tiles; worker-s read {ph.get('tiles_read_sum_s', 0):.1f}, "
                     f"compute {ph.get('tiles_compute_sum_s', 0):.1f}, write {ph.get('tiles_write_sum_s', 0):.1f})",
                     f"{ph['overviews_s']:.1f} ({ph.get('overview_regions', 0):.0f} regions; {ph.get('overviews_sum_s', 0):.1f} worker-s)",
                     fmt(ph["assemble_cog_s"], 1), fmt(ph["finish_s"], 1)])  # fmt: skip
    if prow:
        out += ["### Where tilewise's time goes", ""]
        head = ["row (median run)", "wall s", "start-up s", "tiles s", "overviews s", "COG assembly s", "finish s"]
        out += [md_table(head, prow, "lrrllrr"), ""]
        out.append("Wall-clock phases from when tilewise's progress lines arrived on stderr (start-up = imports and planning, until "
                   "`N of N tiles to run`; tiles = reading and decoding the input, NDVI, writing uncompressed 512-blocked intermediate "
                   "tiles, until `computing overviews`; overviews = the AVERAGE overview levels computed in parallel, until "
                   "`writing 1 output(s)`), the COG assembly's seconds from the manifest (GDAL's COG driver encoding the "
                   "full-resolution tiles and copying tilewise's overview levels), and finish = the rest until the process exited. "
                   "Worker-seconds are summed over both workers.")  # fmt: skip
        out.append("")
    for n in measured:
        ph = res[n].get("phases", {})
        key = rows[n]["limit"]
        part = LIMITS[key][0]
        dec, enc = lim["decode_s"], lim[f"{part}_s"]
        if "tiles_s" not in ph or not dec or not enc:
            continue
        gap = res[n]["wall_s"] - (dec + enc)
        out.append(f"**{n}** vs its limit ({LIMITS[key][1]}, {dec + enc:.1f} s): {gap:+.1f} s, made of "
                   f"start-up + finish {ph['startup_s'] + ph['finish_s']:.1f} s (not in the limit's timed sections), "
                   f"tiles − decode {ph['tiles_s'] - dec:+.1f} s ({ph['tiles_s']:.1f} vs {dec:.1f}: the NDVI and the intermediate "
                   f"tiles' writes on top of decoding), overviews {ph['overviews_s']:+.1f} s ("
                   + ("the limit computed them beforehand, untimed" if part.endswith("_pre") else "the limit computes them inside its encode")
                   + "), "
                   f"and COG assembly − {part} {ph['assemble_cog_s'] - enc:+.1f} s ({ph['assemble_cog_s']:.1f} vs {enc:.1f}"
                   + ("; faster than the limit's encode because GDAL's COG driver copies tilewise's precomputed overviews "
                      "instead of computing them itself" if ph["assemble_cog_s"] < enc and not part.endswith("_pre") else "") + ").")  # fmt: skip
        out.append("")
    return out


def _repeats(res: dict[str, Any]) -> str:
    counts = sorted({r.get("repeats", 1) for r in res.values() if r.get("status") == "ok"})
    return "/".join(str(c) for c in counts) or "0"


def selected(only: str | None, skip: str | None) -> list[str]:
    """Expand ``--only``/``--skip`` (names or groups: limit, approaches, all) into approach names, in run order."""

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


def results_paths(results_dir: Path, size: int) -> tuple[Path, Path]:
    """``ndvi.json``/``ndvi.md`` at full size, ``ndvi_<size>.*`` otherwise (quick checks don't overwrite the real report)."""
    stem = BENCHMARK if size == FULL_SIZE else f"{BENCHMARK}_{size}"
    return results_dir / f"{stem}.json", results_dir / f"{stem}.md"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command line of the benchmark."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=FULL_SIZE, help=f"Input edge in pixels (default {FULL_SIZE}; e.g. 4096 for a quick check).")
    p.add_argument("--only", default=None, help=f"Comma-separated approaches or groups to run ({', '.join(ALL)}; groups: limit, approaches, all).")
    p.add_argument("--skip", default=None, help="Comma-separated approaches or groups not to run.")
    p.add_argument("--work-dir", type=Path, default=WORK_DIR, help="Where the input is cached and outputs are written (default bench/work).")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="Where ndvi.json / ndvi.md go (default bench/results).")
    p.add_argument("--fresh", action="store_true", help="Start a new JSON instead of merging into the existing one.")
    p.add_argument("--regenerate", action="store_true", help="Regenerate the input even if a valid cached one exists.")
    p.add_argument("--keep-outputs", action="store_true", help="Keep each approach's output file in the work directory.")
    p.add_argument("--clean", action="store_true", help="Delete the cached input (and the work directory if empty) at the end.")
    p.add_argument("--repeat", type=int, default=3,
                   help=f"Undisturbed runs of each row the goals are measured by ({', '.join(GOAL_ROWS)}; at most twice as many attempts);"
                        " the median is reported, all are in the JSON (default 3). Other rows run once.")  # fmt: skip
    p.add_argument("--repeat-all", action="store_true", help="Repeat every row --repeat times, not only the goal rows.")
    p.add_argument("--quiet-wait", type=float, default=300.0,
                   help="Before each run, wait up to this many seconds for other processes to leave the CPUs idle (default 300).")  # fmt: skip
    p.add_argument("--prefault-gb", type=float, default=12.0,
                   help="Touch this much memory once before measuring (VM first-touch cost; default 12, 0 to skip).")  # fmt: skip
    p.add_argument("--timeout", type=float, default=3600.0, help="Seconds one approach may run before it is killed (default 3600).")
    p.add_argument("--n-windows", type=int, default=24, help="Random 512x512 windows in the output check, besides the fixed ones (default 24).")
    p.add_argument("--tilewise-args", default="", help="Extra arguments for `tilewise ndvi`, e.g. '--executor threads'.")
    p.add_argument("--report-only", action="store_true", help="Only re-render the Markdown report from the JSON.")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("worker_args", nargs="*", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected approaches, merge into the JSON report, and render the Markdown one."""
    args = parse_args(argv)
    if args.worker:
        WORKERS[args.worker](*args.worker_args)
        return 0
    json_path, md_path = results_paths(args.results_dir, args.size)
    if args.report_only:
        report = load_json(json_path)
        if report is None:
            raise SystemExit(f"no report at {json_path}")
        report["summary"] = summarize(report)
        write_json(json_path, report)
        md_path.write_text(render_markdown(report), encoding="utf-8")
        print(f"wrote {md_path}")
        return 0
    if args.worker_args:
        raise SystemExit(f"unexpected arguments: {args.worker_args}")
    names = selected(args.only, args.skip)
    size = args.size
    if size % BLOCK:
        print(f"note: size {size} is not a multiple of {BLOCK}; edge blocks are partial", file=sys.stderr)

    machine = machine_info()
    old = None if args.fresh else load_json(json_path)
    if old is not None and old.get("size") != size:
        old = None
    data: dict[str, Any] = old or {"benchmark": BENCHMARK, "size": size, "pixels": size * size, "results": {}}
    warnings = []
    if old is not None and old.get("machine", {}).get("cpu_model") != machine["cpu_model"]:
        warnings.append(f"results merged from different machines: {old['machine'].get('cpu_model')} and {machine['cpu_model']}")
    data["machine"] = machine
    data["machine_warnings"] = sorted(set(data.get("machine_warnings", [])) | set(warnings))

    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    inp = work / f"ndvi_input_{size}.tif"
    if args.regenerate or not input_is_valid(inp, size):
        remove(inp)
        print(f"generating {inp} ({size} x {size}, 2 bands uint16) ...", flush=True)
        gen_s = generate_input(inp, size)
        print(f"  done in {gen_s:.1f} s, {(file_size(inp) or 0) / 1e6:.0f} MB", flush=True)
        data["input_generation_s"] = round(gen_s, 1)
    data["input"] = input_summary(inp)
    if args.prefault_gb > 0:
        import psutil

        gb = min(args.prefault_gb, 0.7 * psutil.virtual_memory().available / GB)
        pf = prefault_memory(gb)
        print(f"touched {gb:.1f} GB of memory once in {pf:.1f} s (first-touch cost of the VM, paid before measuring)", flush=True)
        data["prefault"] = {"gb": round(gb, 1), "seconds": round(pf, 1)}
    windows = sample_windows(size, size, BLOCK, n_random=args.n_windows,
                             must_include=[(size - 1, int(0.8 * size)), (size // 2, int(0.95 * size)), (int(0.55 * size), int(0.3 * size))])  # fmt: skip

    for name in names:
        rec = run_one(name, inp, work, windows, args)
        rec["repo_commit"] = machine["repo_commit"]
        data["results"][name] = rec
        line = f"[{name}] {rec['status']}"
        if rec["status"] == "ok":
            line += f": wall {rec['wall_s']:.1f} s, {size * size / rec['wall_s'] / 1e6:.1f} Mpix/s, peak {rec['peak_rss_gb']:.2f} GB, cores {rec['cores_used']}"
            if rec.get("phases"):
                line += f", phases {rec['phases']}"
            if rec.get("output"):
                line += f", max|diff| {rec['output']['max_abs_diff']:.3g}, nodata ok {rec['output']['nodata_ok']}"
        elif rec.get("error"):
            line += ": " + rec["error"].strip().splitlines()[-1]
        print(line, flush=True)
        data["summary"] = summarize(data)
        write_json(json_path, data)  # after every approach, so an interrupted run keeps what it measured
    data["summary"] = summarize(data)
    write_json(json_path, data)
    md_path.write_text(render_markdown(data), encoding="utf-8")
    print(f"wrote {json_path} and {md_path}")
    if args.clean:
        remove(inp)
        with contextlib.suppress(OSError):
            work.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
