"""A block cache on disk for remote inputs (``--cache DIR``): fetched blocks are kept for re-runs.

Within one task GDAL's own caches (``VSI_CACHE``, the per-process range cache) keep a
block from being fetched twice. Across runs (a rerun after a crash, the same inputs
with another statistic or tile size) this cache keeps the decoded blocks: a window of
a remote raster is assembled from the file's internal blocks, and only the blocks
not yet in the cache are read, in one read of their block-aligned envelope, so GDAL
still fetches them as merged, parallel ranges.

Each file's blocks live in ``DIR/<key>/`` where the key hashes the file's name and
identity (size and ETag or Last-Modified): a changed object gets a new key, so a
stale block is never used. Files whose identity is unknown (``(0, 0)``) are not
cached. Blocks are written through a temporary name and a rename, so workers sharing
the folder (and a kill at any moment) never see half a block. The folder is not
pruned: delete it when the inputs are no longer needed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tilewise.grid import Window
from tilewise.remote import is_remote

_DIR: Path | None = None
# A file stored in strips is cached in bands of about this many rows (whole strips).
STRIP_ROWS = 256


def use_cache(folder: str | None) -> None:
    """Set the cache folder of this process's remote reads (None: no disk cache).

    Called by each task before it reads, like :func:`tilewise.remote.use_s3_endpoint`,
    so that the folder reaches workers of every executor.
    """
    global _DIR
    _DIR = Path(folder) if folder else None


def cache_for(path: str, identity: tuple[int, int], warped: bool) -> Path | None:
    """The cache folder of one remote file, or None when reads of it are not cached."""
    if _DIR is None or warped or identity == (0, 0) or not is_remote(path):
        return None
    key = hashlib.sha256(f"{path}\0{identity[0]}\0{identity[1]}".encode()).hexdigest()[:24]
    return _DIR / key


def read_blocks(ds: Any, folder: Path, indexes: Sequence[int], window: Window, masks: Sequence[bool]) -> tuple[np.ndarray, np.ndarray | None]:
    """Read ``window`` (inside the raster) of bands ``indexes`` through the block cache in ``folder``.

    Parameters
    ----------
    ds
        The open rasterio dataset.
    folder
        The file's cache folder (:func:`cache_for`).
    indexes
        1-based bands, read together.
    window
        The window to return; it lies inside the raster.
    masks
        Per band: whether its GDAL mask is needed too (``BandRef.use_mask``).

    Returns
    -------
    tuple[numpy.ndarray, numpy.ndarray | None]
        The values (bands, rows, cols) in the file's type, and the masks (> 0 is
        valid) of the bands that asked for them, else None.
    """
    bh, bw = ds.block_shapes[indexes[0] - 1]
    if bw >= ds.width and bh < STRIP_ROWS:
        bh *= max(1, STRIP_ROWS // bh)  # strips: cache a band of whole strips per file, not one file per row
    r0, r1 = window.row_off // bh, (window.row_end - 1) // bh
    c0, c1 = window.col_off // bw, (window.col_end - 1) // bw
    want_masks = any(masks)
    tag = "-".join(str(i) for i in indexes)
    names = {(r, c): folder / f"b{tag}_{r}_{c}.npy" for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)}
    mnames = {k: p.with_name(p.stem + "_mask.npy") for k, p in names.items()}
    missing = [k for k in names if not names[k].exists() or (want_masks and not mnames[k].exists())]
    fetched: dict[tuple[int, int], tuple[np.ndarray, np.ndarray | None]] = {}
    if missing:
        # One read of the missing blocks' envelope: GDAL fetches them as merged ranges in parallel.
        mr0, mr1 = min(k[0] for k in missing), max(k[0] for k in missing)
        mc0, mc1 = min(k[1] for k in missing), max(k[1] for k in missing)
        env = Window(mr0 * bh, mc0 * bw, min((mr1 + 1) * bh, ds.height) - mr0 * bh, min((mc1 + 1) * bw, ds.width) - mc0 * bw)
        data = ds.read(list(indexes), window=env.to_rasterio())
        mdata = ds.read_masks(list(indexes), window=env.to_rasterio()) if want_masks else None
        folder.mkdir(parents=True, exist_ok=True)
        for r, c in missing:
            sl = (slice(None), slice((r - mr0) * bh, (r - mr0 + 1) * bh), slice((c - mc0) * bw, (c - mc0 + 1) * bw))
            block = np.ascontiguousarray(data[sl])
            mblock = np.ascontiguousarray(mdata[sl]) if mdata is not None else None
            _save(names[(r, c)], block)
            if mblock is not None:
                _save(mnames[(r, c)], mblock)
            fetched[(r, c)] = (block, mblock)
    out = np.empty((len(indexes), window.height, window.width), dtype=ds.dtypes[indexes[0] - 1])
    mout = np.empty(out.shape, dtype=np.uint8) if want_masks else None
    for (r, c), p in names.items():
        if (r, c) in fetched:
            block, mblock = fetched[(r, c)]
        else:
            block = np.load(p)
            mblock = np.load(mnames[(r, c)]) if want_masks else None
        # The part of this block inside the window, and where it goes in the result.
        top, left = max(window.row_off, r * bh), max(window.col_off, c * bw)
        bottom, right = min(window.row_end, r * bh + block.shape[1]), min(window.col_end, c * bw + block.shape[2])
        src = (slice(None), slice(top - r * bh, bottom - r * bh), slice(left - c * bw, right - c * bw))
        dst = (slice(None), slice(top - window.row_off, bottom - window.row_off), slice(left - window.col_off, right - window.col_off))
        out[dst] = block[src]
        if mout is not None and mblock is not None:
            mout[dst] = mblock[src]
    return out, mout


def _save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full or read-only cache only costs the fetch next time
