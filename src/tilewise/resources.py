"""Default cluster resources estimated from the job, for options the user left out.

Memory comes from the bytes one worker holds for a tile (every input band, the
working arrays and the output, with a halo), time from the pixels a batch job
must process at a conservative rate. Users override any of them with the
``--mem-per-cpu``, ``--time`` ... options.
"""

from __future__ import annotations

import math

import numpy as np

from tilewise.executors.options import ClusterResources, ExecutorOptions
from tilewise.job import Plan

# A conservative per-core rate for reading, computing and writing a tile (Mpix/s): slow
# network file systems and JPEG 2000 inputs run at a few Mpix/s per core.
SAFE_MPIX_PER_S = 1.0
MIN_TIME_MIN = 10
MIN_MEM_MIB = 1024


def tile_bytes(plan: Plan) -> int:
    """Bytes one worker holds for the largest tile: inputs, float64 work arrays and the output."""
    best = 0
    work = np.dtype(plan.work_dtype).itemsize if plan.work_dtype else 8
    out = np.dtype(plan.job.output.dtype).itemsize
    for it in plan.items:
        t = it.tiling
        halo = 2 * plan.op.halo
        px = (t.tile_height + halo) * (t.tile_width + halo)
        best = max(best, px * (len(it.refs) * (work + 8) + 4 * 8 + out))
    return best


def estimate(plan: Plan, opts: ExecutorOptions, pixels_per_job: int, cpus: int | None = None) -> ClusterResources:
    """Fill the resources ``opts`` leaves unset for a batch job processing ``pixels_per_job`` pixels.

    Parameters
    ----------
    plan
        The planned job (tile sizes, inputs, dtypes).
    opts
        The executor options; values already set are kept.
    pixels_per_job
        Pixels one batch job (array element, dask or Parsl worker job) will process.
    cpus
        Cores per batch job when ``opts`` does not say.
    """
    return estimate_from(opts, pixels_per_job, tile_bytes(plan), cpus)


def estimate_from(opts: ExecutorOptions, pixels_per_job: int, bytes_per_tile: int, cpus: int | None = None) -> ClusterResources:
    """:func:`estimate` from the bytes a worker holds for one tile, for jobs without a raster plan (rasterize onto TMS tiles)."""
    res = opts.resources
    n_cpu = res.cpus_per_task or cpus or 1
    update: dict[str, object] = {}
    if res.cpus_per_task is None:
        update["cpus_per_task"] = n_cpu
    if res.mem is None and res.mem_per_cpu is None:
        # Two tiles per worker in flight, plus the interpreter and GDAL's block cache.
        mib = math.ceil((2 * bytes_per_tile + 512 * 2**20) / 2**20)
        update["mem_per_cpu"] = f"{max(MIN_MEM_MIB, 256 * math.ceil(mib / 256))}M"
    if res.time is None:
        minutes = 3 * pixels_per_job / (SAFE_MPIX_PER_S * 1e6 * n_cpu) / 60
        minutes = max(MIN_TIME_MIN, math.ceil(minutes / 10) * 10)
        update["time"] = f"{minutes // 60:02d}:{minutes % 60:02d}:00" if minutes < 24 * 60 else f"{minutes // 1440}-{minutes % 1440 // 60:02d}:00:00"
    return res.model_copy(update=update) if update else res
