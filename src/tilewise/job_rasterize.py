"""Plan ``tilewise rasterize --like REF.tif``: polygon statistics onto an existing raster's grid, one COG.

The polygons are staged once into the work directory (in the reference's CRS),
then the ordinary tile engine runs a generating op over the reference grid, so
overviews, assembly, resume and every executor work as for any other job.
"""

from __future__ import annotations

import math
from pathlib import Path

from tilewise.errors import UsageError
from tilewise.grid import Grid
from tilewise.job import ItemPlan, Job, Plan, RasterizeSpec, check_nodata_fits, fingerprint
from tilewise.ops.rasterize import LIKE_BLOCK, PixelGrid, RasterizeOp, check_stats, properties_of
from tilewise.rasterfile import grid_of, open_read
from tilewise.sources.vector import StagingSpec
from tilewise.tiling import Tiling, choose_tile_shape

STAGED = "staged"
STAGED_STAMP = "staged.json"


def like_grid(path: str) -> Grid:
    """The grid of the reference raster (north-up, with a CRS)."""
    with open_read(path) as ds:
        grid = grid_of(ds)
        if ds.crs is None:
            raise UsageError(f"--like raster {path!r} has no CRS", "give a georeferenced raster")
    t = grid.transform
    if t.b != 0 or t.d != 0 or t.e >= 0:
        raise UsageError(f"--like raster {path!r} is not north-up (rotated or flipped)", f"warp it first: gdalwarp {path} north_up.tif")
    return grid


def plan_rasterize_like(job: Job, spec: RasterizeSpec) -> Plan:
    """Plan the tiles of the ``like`` raster's grid (the op stages the polygons when the run starts)."""
    assert spec.like is not None
    check_stats(spec.stats)
    from tilewise.rasterize_run import check_vectors, input_identities

    check_vectors(spec, exclude=str(job.workdir))
    grid = like_grid(spec.like)
    from tilewise.sources.raster import file_identity

    # The reference's identity and grid too: a raster replaced at the same path changes the job.
    identities = [{"vectors": input_identities(spec.vectors, exclude=job.workdir), "like": [spec.like, list(file_identity(spec.like)), grid.crs,
                   list(grid.transform)[:6], grid.height, grid.width]}]  # fmt: skip
    # Tiles are whole numbers of the op's blocks, so each block is computed once.
    th, tw = choose_tile_shape(grid, job.tile_size, [(LIKE_BLOCK, LIKE_BLOCK)])
    th = max(LIKE_BLOCK, math.ceil(th / LIKE_BLOCK) * LIKE_BLOCK)
    tw = max(LIKE_BLOCK, math.ceil(tw / LIKE_BLOCK) * LIKE_BLOCK)
    tiling = Tiling.for_grid(grid, th, tw, halo=0)
    items = [ItemPlan(0, Path(job.items[0].output), {}, grid, tiling)]
    fp = fingerprint(job, identities, items)
    assert grid.crs is not None
    workdir = job.workdir
    # Staged by the run that holds the work directory's lock (RasterizeOp.prepare), not here: planning stays free of side effects.
    staging = StagingSpec(tuple(spec.vectors), str(workdir / STAGED), str(workdir / STAGED_STAMP), fp, grid.crs, spec.id_column,
                          tuple(properties_of(spec.stats)), spec.layer, str(workdir))  # fmt: skip
    t = grid.transform
    op = RasterizeOp(spec.stats, staging.out_dir, PixelGrid(t.c, t.f, t.a, -t.e), grid.height, grid.width, staging=staging)
    nodata = job.output.nodata if job.output.nodata is not None else float("nan")
    check_nodata_fits(nodata, job.output.dtype)
    if job.output.dtype not in ("float32", "float64"):
        raise UsageError(f"--dtype {job.output.dtype} cannot hold coverage fractions and NaN", "rasterize writes float32 (default) or float64")
    return Plan(job, op, tuple(items), "float64", nodata, fp)
