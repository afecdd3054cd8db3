"""Resolving raster paths and band choices into :class:`BandRef` s.

A ``BandRef`` is everything a worker needs to read one band of one input: the
GDAL name, the 1-based band index, how to mask it and how to scale it. Resolving
checks the file once, up front, so bad input fails before any work starts.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from tilewise.errors import InputError, UsageError
from tilewise.grid import Grid
from tilewise.rasterfile import check_readable, grid_of, open_read
from tilewise.remote import is_remote, remote_identity

# Names users give red and NIR bands in band descriptions (Sentinel-2 and generic).
BAND_ALIASES: dict[str, tuple[str, ...]] = {
    "red": ("red", "b04", "b4", "sr_b4"),
    "nir": ("nir", "b08", "b8", "nir08", "sr_b5"),
}

RESAMPLINGS = ("nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode", "min", "max", "med", "q1", "q3")


@dataclass(frozen=True, slots=True)
class BandRef:
    """One band of one raster, resolved and checked.

    Attributes
    ----------
    path
        The GDAL dataset name (a file path, ``netcdf:file.nc:var``, a ``/vsi...`` path).
    band
        1-based band index.
    label
        How messages name this input, e.g. ``"red (scene.tif band 3)"``.
    grid
        The band's native grid.
    dtype
        The band's data type name.
    nodata
        The value that marks masked pixels, or None.
    use_mask
        True when masking comes from a GDAL per-dataset mask instead of ``nodata``.
    scale, offset
        Physical value = stored value * scale + offset (GDAL convention).
    block_shape
        The file's block (tile or strip) shape, used to align tiles.
    identity
        (size, mtime_ns) of the file, so a changed input is detected on resume.
    warp_to
        When set, the band is resampled onto this grid with ``resampling``.
    origin
        (row, col) in the band's grid of the job grid's pixel (0, 0): a map sheet's
        place in the mosaic it is read from; (0, 0) otherwise.
    """

    path: str
    band: int
    label: str
    grid: Grid
    dtype: str
    nodata: float | None
    use_mask: bool
    scale: float = 1.0
    offset: float = 0.0
    block_shape: tuple[int, int] = (0, 0)
    identity: tuple[int, int] = (0, 0)
    warp_to: Grid | None = None
    resampling: str = "nearest"
    origin: tuple[int, int] = (0, 0)
    description: str = field(default="", compare=False)

    @property
    def out_grid(self) -> Grid:
        """The grid this band is read on (the target grid when warped)."""
        return self.warp_to if self.warp_to is not None else self.grid

    def with_scaling(self, scale: float | None, offset: float | None) -> BandRef:
        """Return a copy with user-given scale/offset replacing the file's."""
        return replace(self, scale=self.scale if scale is None else scale, offset=self.offset if offset is None else offset)


def file_identity(path: str) -> tuple[int, int]:
    """Return what identifies an input's contents, so that a changed input changes a job's fingerprint.

    (size, mtime_ns) of a local file; (size, version) of a remote one, from its ETag or
    Last-Modified (:func:`tilewise.remote.remote_identity`); (0, 0) for other GDAL names.
    """
    if is_remote(path):
        return remote_identity(path)
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0)
    return (st.st_size, st.st_mtime_ns)


def split_band_spec(spec: str) -> tuple[str, str | None]:
    """Split ``PATH[:BAND]`` into the path and the band part.

    Only a trailing ``:<digits>`` or ``:B<name>`` on an existing-looking path is
    taken as a band, so ``netcdf:file.nc:red`` and Windows drives stay intact.
    """
    m = re.fullmatch(r"(.+?):(\d+)", spec)
    if m and not Path(spec).exists():
        return m.group(1), m.group(2)
    return spec, None


def resolve_band(path: str, band: int | str | None, label: str) -> BandRef:
    """Open ``path`` once and resolve one band of it.

    Parameters
    ----------
    path
        A raster GDAL can open.
    band
        A 1-based index, a band description (e.g. ``"B04"``), or None for a
        single-band file.
    label
        The input's name in messages (``"red"``, ``"t"``).
    """
    check_readable(path)
    with open_read(path) as ds:
        if ds.count == 0:
            subs = ", ".join(ds.subdatasets[:4])
            raise InputError(f"{path!r} has no raster bands", f"open one of its subdatasets, e.g. {subs}" if subs else None)
        idx = _band_index(ds.descriptions, ds.count, band, path, label)
        nodata = ds.nodatavals[idx - 1]
        flags = ds.mask_flag_enums[idx - 1]
        from rasterio.enums import MaskFlags

        use_mask = nodata is None and MaskFlags.per_dataset in flags
        blocks = ds.block_shapes[idx - 1]
        return BandRef(
            path=path,
            band=idx,
            label=f"{label} ({_short_path(path)} band {idx})",
            grid=grid_of(ds),
            dtype=ds.dtypes[idx - 1],
            nodata=None if nodata is None else float(nodata),
            use_mask=use_mask,
            scale=float(ds.scales[idx - 1]) if ds.scales[idx - 1] is not None else 1.0,
            offset=float(ds.offsets[idx - 1]) if ds.offsets[idx - 1] is not None else 0.0,
            block_shape=(int(blocks[0]), int(blocks[1])),
            identity=file_identity(path),
            description=ds.descriptions[idx - 1] or "",
        )


def find_band_by_alias(path: str, role: str) -> int | None:
    """Return the 1-based band whose description names ``role`` ("red"/"nir"), if exactly one does."""
    with open_read(path) as ds:
        # "B04", "red", "B04_red", "SR_B4 (red)": any word of the description may name the role.
        hits = [i + 1 for i, d in enumerate(ds.descriptions) if d and set(re.split(r"[^a-z0-9]+", d.lower())) & set(BAND_ALIASES[role])]
        return hits[0] if len(hits) == 1 else None


def align_bands(refs: dict[str, BandRef], resampling: str | None) -> dict[str, BandRef]:
    """Check that all bands share the first one's grid, or resample them onto it.

    Raises
    ------
    GridMismatchError
        When grids differ and ``resampling`` is None; the message names both inputs.
    """
    if resampling is not None and resampling not in RESAMPLINGS:
        raise UsageError(f"unknown resampling {resampling!r}", f"use one of: {', '.join(RESAMPLINGS)}")
    items = list(refs.items())
    first_name, first = items[0]
    out = {first_name: first}
    for name, ref in items[1:]:
        if first.grid.mismatch(ref.grid) is None:
            out[name] = ref
        elif resampling is None:
            first.grid.require_same(
                ref.grid, first.label, ref.label, f"pass --align bilinear (or another resampling) to resample it onto the grid of {first_name}"
            )
        else:
            if ref.grid.crs is None or first.grid.crs is None:
                raise InputError(f"{ref.label} cannot be aligned: it has no CRS", "assign a CRS with gdal_edit.py -a_srs first")
            out[name] = replace(ref, warp_to=first.grid, resampling=resampling)
    return out


def _band_index(descriptions: tuple[str | None, ...], count: int, band: int | str | None, path: str, label: str) -> int:
    if band is None:
        if count == 1:
            return 1
        raise UsageError(f"{path!r} has {count} bands; say which one is {label}", f"add :N to the path or the band option (1..{count})")
    if isinstance(band, str) and not band.strip().lstrip("-").isdigit():
        names = [d or "" for d in descriptions]
        for i, d in enumerate(names):
            if d.lower() == band.lower():
                return i + 1
        shown = ", ".join(f"{i + 1}={d}" for i, d in enumerate(names) if d) or "none"
        raise UsageError(f"{path!r} has no band named {band!r} (band names: {shown})", f"use a 1-based band index 1..{count}")
    idx = int(band)
    if not 1 <= idx <= count:
        raise UsageError(f"band {idx} is out of range for {path!r}, which has {count} band(s)", f"band indices are 1-based: use 1..{count}")
    return idx


def _short_path(path: str) -> str:
    return path if len(path) < 60 else "..." + path[-57:]
