"""Vector inputs for rasterizing: read any OGR layer (or GeoParquet), repair, de-duplicate, stage.

Staging reads the inputs in chunks (on the job's executor; the coordinator holds
the chunks' results, and the small per-feature arrays, not the layers),
reprojects the polygons to the target CRS, repairs invalid ones with
``make_valid`` (keeping their polygonal part), drops copies of the same polygon
found in several inputs (the Permafrost Discovery Gateway stages a polygon
crossing a tile edge into every tile it touches), and writes the result as a
folder of memory-mapped arrays (:class:`Staged`): the polygons' WKB, bounds,
centroids, property values and a tile index. Each rasterizing task then reads
only the features of its own tile. Every feature read is accounted for in
the :class:`StageReport`: kept, duplicate, repaired, or skipped with a reason.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tilewise.errors import InputError, TilewiseError, UsageError

VECTOR_SUFFIXES = (".gpkg", ".shp", ".geojson", ".json", ".fgb", ".gml", ".kml", ".sqlite", ".parquet", ".geoparquet")
PARQUET_SUFFIXES = (".parquet", ".geoparquet")
DEFAULT_ID_COLUMN = "staging_identifier"
CHUNK = 100_000
POLYGONAL = ("Polygon", "MultiPolygon")


@dataclass
class StageReport:
    """What staging did with every feature it read."""

    inputs: list[str]
    id_column: str | None  # None: copies were recognised by identical geometry
    read: int = 0
    kept: int = 0
    duplicates: int = 0
    repaired: int = 0
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line for the run's summary."""
        dup = f"{self.duplicates} duplicate(s) by {self.id_column or 'identical geometry'}"
        text = f"{self.read} feature(s) read from {len(self.inputs)} input(s): {self.kept} kept, {dup}, {self.repaired} repaired, {self.skipped} skipped"
        if self.skipped_examples:
            text += f" (e.g. {self.skipped_examples[0]})"
        return text


MapFn = Callable[[Callable[[Any], Any], Sequence[Any]], Iterator[tuple[int, Any]]]


def _guard(fn: Callable[[Any], Any], arg: Any) -> Any:
    try:
        return fn(arg)
    except Exception as exc:
        return exc


def expand_inputs(paths: Sequence[str], exclude: str | Path | None = None) -> list[str]:
    """Files as given, folders expanded to the vector files inside (sorted; hidden ones and ``exclude``, the output, left out)."""
    out: list[str] = []
    skip = Path(exclude).resolve() if exclude else None
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(str(f) for f in path.rglob("*") if f.is_file() and f.suffix.lower() in VECTOR_SUFFIXES
                           and not any(part.startswith(".") for part in f.relative_to(path).parts)
                           and not (skip is not None and (skip == f.resolve() or skip in f.resolve().parents)))  # fmt: skip
            if not found:
                raise InputError(f"folder {p!r} holds no vector files", f"give files or folders with {', '.join(VECTOR_SUFFIXES)} files")
            out.extend(found)
        elif path.exists() or p.startswith("/vsi"):
            out.append(p)
        else:
            raise InputError(f"vector input {p!r} does not exist", "check the path (GeoPackage, Shapefile, GeoJSON, FlatGeobuf or GeoParquet)")
    if not out:
        raise UsageError("no vector inputs given", "name one or more files or folders, e.g. tilewise rasterize polygons.gpkg -o tiles/")
    return out


def _is_parquet(path: str) -> bool:
    return path.lower().endswith(PARQUET_SUFFIXES)


@dataclass(frozen=True)
class LayerInfo:
    path: str
    layer: str | None
    crs: str
    fields: tuple[str, ...]
    count: int
    text_fields: tuple[str, ...] = ()


def layer_info(path: str, layer: str | None = None) -> LayerInfo:
    """Open one input's layer and check it can be rasterized (has a CRS, polygon or unknown geometry type)."""
    if _is_parquet(path):
        import pyarrow.parquet as pq

        try:
            meta = pq.read_metadata(path)
            schema = pq.read_schema(path)
        except Exception as exc:
            raise InputError(f"cannot read GeoParquet {path!r} ({type(exc).__name__}: {exc})", "check it is a GeoParquet file") from None
        import json

        geo = json.loads((schema.metadata or {}).get(b"geo", b"{}"))
        col = geo.get("primary_column", "geometry")
        crs = (geo.get("columns", {}).get(col, {}) or {}).get("crs", "OGC:CRS84")  # GeoParquet: a missing crs means OGC:CRS84
        if crs is None:
            raise InputError(f"{path!r} has no CRS", "write the GeoParquet with a CRS (geopandas: gdf.set_crs(...).to_parquet(...))")
        crs_text = json.dumps(crs) if isinstance(crs, dict) else str(crs)
        fields = tuple(n for n in schema.names if n != col)
        return LayerInfo(path, None, crs_text, fields, int(meta.num_rows))
    import pyogrio

    try:
        info = pyogrio.read_info(path, layer=layer)
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        what = f"layer {layer!r} of {path!r}" if layer else f"{path!r}"
        raise InputError(f"cannot open {what} as a vector layer ({msg})", "give a GeoPackage, Shapefile, GeoJSON, FlatGeobuf or GeoParquet file") from None
    gtype = str(info.get("geometry_type") or "")
    base = gtype.replace(" Z", "").replace(" M", "").replace("3D ", "").replace("25D", "")
    if base and base not in ("Unknown", "GeometryCollection", *POLYGONAL):
        raise UsageError(f"{path!r} holds {gtype} geometries, and rasterize counts and covers polygons",
                         "buffer points or lines into polygons first (e.g. geopandas: gdf.buffer(d)), or give a polygon layer")  # fmt: skip
    crs = info.get("crs")
    if not crs:
        raise InputError(f"{path!r} has no CRS", "assign one, e.g. ogr2ogr -a_srs EPSG:4326 fixed.gpkg input.shp (a Shapefile needs its .prj)")
    fields = tuple(str(f) for f in info.get("fields", ()))
    text = tuple(f for f, d in zip(fields, info.get("dtypes", ()), strict=False) if str(d) == "object")
    return LayerInfo(path, layer, str(crs), fields, int(info.get("features") or 0), text)


@dataclass(frozen=True)
class ChunkJob:
    """One chunk of one input to stage: what to read and how to clean it (picklable, run by any executor)."""

    info: LayerInfo
    part: int  # Parquet row group, or chunk number of CHUNK features (-1: the whole layer)
    columns: tuple[str, ...]
    id_column: str | None
    properties: tuple[str, ...]
    crs: str  # target CRS (WKT)


def chunk_jobs(infos: Sequence[LayerInfo], id_column: str | None, properties: Sequence[str], crs: str) -> list[ChunkJob]:
    """The chunks every input is read in, in input order."""
    cols = (*([id_column] if id_column else []), *properties)
    jobs = []
    for info in infos:
        if _is_parquet(info.path):
            import pyarrow.parquet as pq

            parts = range(pq.ParquetFile(info.path).num_row_groups)
        else:
            parts = range(math.ceil(info.count / CHUNK)) if info.count > 0 else range(-1, 0)  # unknown count: one read
        jobs += [ChunkJob(info, p, cols, id_column, tuple(properties), crs) for p in parts]
    return jobs


def _read_chunk(job: ChunkJob) -> Any:
    import geopandas as gpd

    info = job.info
    if _is_parquet(info.path):
        import pyarrow.parquet as pq

        df = gpd.GeoDataFrame.from_arrow(pq.ParquetFile(info.path).read_row_group(job.part))
        return df[[*job.columns, df.geometry.name]]
    import pyogrio

    window = {} if job.part < 0 else {"skip_features": job.part * CHUNK, "max_features": CHUNK}
    try:
        return pyogrio.read_dataframe(info.path, layer=info.layer, columns=list(job.columns), fid_as_index=True, **window)
    except Exception as exc:
        raise InputError(f"cannot read features of {info.path!r} ({str(exc).splitlines()[0]})", "check the file is complete and readable") from None


def stage_chunk(job: ChunkJob) -> dict[str, Any]:
    """Read, reproject, repair and normalize one chunk; return its polygons (WKB), keys, centroids, bounds and values."""
    import shapely
    from pyproj import CRS

    info = job.info
    df = _read_chunk(job)
    out: dict[str, Any] = {"read": len(df), "repaired": 0, "skipped": 0, "examples": []}
    if df.crs is None:
        raise InputError(f"{info.path!r} has no CRS", "assign one, e.g. ogr2ogr -a_srs EPSG:4326 fixed.gpkg input.shp")
    kinds = shapely.get_type_id(df.geometry.values)
    bad = ~np.isin(kinds, (-1, 3, 6, 7))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UsageError(f"feature {df.index[i]} of {info.path!r} is a {df.geometry.values[i].geom_type}, and rasterize counts and covers polygons",
                         "buffer points or lines into polygons first (e.g. geopandas: gdf.buffer(d)), or drop them")  # fmt: skip
    target = CRS.from_user_input(job.crs)
    if not target.equals(df.crs):
        df = df.to_crs(target)
    geoms, repaired, empty = _polygonal(np.asarray(df.geometry.values))
    out["repaired"] = int((repaired & ~empty).sum())
    if empty.any():
        out["skipped"] = int(empty.sum())
        for i in np.flatnonzero(empty)[:3]:
            g = df.geometry.values[i]
            why = "empty" if shapely.is_empty(g) or shapely.is_missing(g) else "no polygonal part after repair"
            out["examples"].append(f"{Path(info.path).name} feature {df.index[i]}: {why}")
    keep = ~empty
    # Normalized (ring starts and orientation fixed): the same polygon gives the same bytes from any input.
    geoms = shapely.normalize(geoms[keep])
    wkb = shapely.to_wkb(geoms)
    digests = [hashlib.blake2b(b, digest_size=16).digest() for b in wkb]
    if job.id_column:
        # A feature without an id is recognised by its geometry, not taken for a copy of every other one without.
        ids = df[job.id_column].values[keep]
        out["ids"] = [("geometry", d) if i is None or (isinstance(i, float) and math.isnan(i)) else ("id", i) for i, d in zip(ids, digests, strict=True)]
    else:
        out["ids"] = digests
    cent = shapely.centroid(geoms)
    out.update(wkb=wkb, cx=shapely.get_x(cent), cy=shapely.get_y(cent), bounds=shapely.bounds(geoms),
               props=[_numeric(df[p][keep], p, info.path) for p in job.properties])  # fmt: skip
    return out


def choose_id_column(infos: Sequence[LayerInfo], id_column: str | None) -> str | None:
    """The column that identifies copies: the one asked for (in every input), else staging_identifier when all have it."""
    if id_column:
        for info in infos:
            if id_column not in info.fields:
                raise UsageError(f"--id-column {id_column!r} is not a field of {info.path!r}", f"fields there: {', '.join(info.fields[:12]) or 'none'}")
        return id_column
    if infos and all(DEFAULT_ID_COLUMN in i.fields for i in infos):
        return DEFAULT_ID_COLUMN
    return None


def check_properties(infos: Sequence[LayerInfo], properties: Sequence[str]) -> None:
    """Refuse a property that some input lacks."""
    for prop in properties:
        for info in infos:
            if prop not in info.fields:
                import difflib

                close = difflib.get_close_matches(prop, info.fields, n=1)
                guess = f"did you mean {close[0]!r}? " if close else ""
                raise UsageError(f"property {prop!r} is not a field of {info.path!r}", f"{guess}fields there: {', '.join(info.fields[:12]) or 'none'}")
            if prop in info.text_fields:  # text holding numbers ("2") is fine; check a sample now rather than fail midway
                import pyogrio

                sample = pyogrio.read_dataframe(info.path, layer=info.layer, columns=[prop], max_features=100, read_geometry=False)
                _numeric(sample[prop], prop, info.path)


def check_inputs(paths: Sequence[str], *, layer: str | None = None, id_column: str | None = None, properties: Sequence[str] = (),
                 exclude: str | None = None) -> list[LayerInfo]:  # fmt: skip
    """Open every input's layer and check CRS, geometry type, id column and properties, before any work starts."""
    infos = [layer_info(p, layer) for p in expand_inputs(paths, exclude)]
    choose_id_column(infos, id_column)
    check_properties(infos, properties)
    if all(i.count == 0 for i in infos):
        raise UsageError(f"the vector input(s) hold no features ({', '.join(Path(i.path).name for i in infos[:3])})", "give layers with polygons")
    return infos


def _numeric(values: Any, prop: str, path: str) -> np.ndarray:
    import pandas as pd

    if values.dtype == bool:
        return np.asarray(values, dtype=np.float64)
    num = pd.to_numeric(values, errors="coerce")
    bad = num.isna() & values.notna()
    if bad.any():
        example = values[bad].iloc[0]
        raise UsageError(f"property {prop!r} of {path!r} is not numeric (value {str(example)[:40]!r})", "aggregate a numeric field")
    return np.asarray(num, dtype=np.float64)


def _polygonal(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Repair invalid geometries and keep their polygonal part: (geoms, repaired mask, empty mask)."""
    import shapely

    valid = shapely.is_valid(geoms)
    repaired = ~valid & ~shapely.is_missing(geoms)
    out = geoms.copy()
    if repaired.any():
        fixed = shapely.make_valid(geoms[repaired])
        # make_valid may return a collection with lines or points beside the polygons: keep the polygons
        kinds = shapely.get_type_id(fixed)
        coll = kinds == 7
        if coll.any():
            fixed[coll] = [_polygon_part(g) for g in fixed[coll]]
        out[repaired] = fixed
    kinds = shapely.get_type_id(out)
    empty = shapely.is_missing(out) | shapely.is_empty(out) | ~np.isin(kinds, (3, 6))
    return out, repaired, empty


def _polygon_part(g: Any) -> Any:
    import shapely

    parts = [p for p in shapely.get_parts(g) if shapely.get_type_id(p) in (3, 6)]
    if not parts:
        return shapely.Polygon()
    return shapely.union_all(parts) if len(parts) > 1 else parts[0]


def stage_vectors(paths: Sequence[str], out_dir: str | Path, *, crs: str, id_column: str | None = None, properties: Sequence[str] = (),
                  layer: str | None = None, map_fn: MapFn | None = None, exclude: str | None = None) -> tuple[StageReport, np.ndarray]:  # fmt: skip
    """Stage vector inputs into a folder of arrays in ``crs``, and list the features' bounds.

    Parameters
    ----------
    paths
        Vector files or folders of them (see :func:`expand_inputs`).
    out_dir
        The staging folder to write (replaced atomically; see :class:`Staged`).
    crs
        Target CRS (WKT or any pyproj input), e.g. the TMS CRS.
    id_column
        Field identifying copies of one polygon across inputs; None picks
        ``staging_identifier`` when every input has it, else identical geometry.
    properties
        Numeric fields to keep.
    layer
        Layer name for multi-layer inputs (default: the first layer).
    exclude
        A folder left out when folders are searched (the job's output).
    map_fn
        Runs :func:`stage_chunk` over the chunks, yielding ``(index, result or exception)``
        in any order (an executor's ``map_unordered``); default: one after the other here.

    Returns
    -------
    report, bounds
        The :class:`StageReport` and the kept features' bounds, (n, 4) float64.
    """
    from pyproj import CRS

    files = expand_inputs(paths, exclude)
    infos = [layer_info(p, layer) for p in files]
    idc = choose_id_column(infos, id_column)
    check_properties(infos, properties)
    target = CRS.from_user_input(crs)
    report = StageReport(inputs=files, id_column=idc)
    seen: set[Any] = set()
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.staging")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    arrays: dict[str, list[np.ndarray]] = {"bounds": [], "cx": [], "cy": [], "sizes": [], **{f"p{j}": [] for j in range(len(properties))}}
    jobs = chunk_jobs(infos, idc, properties, target.to_wkt())
    results = map_fn(stage_chunk, jobs) if map_fn is not None and len(jobs) > 1 else ((i, _guard(stage_chunk, j)) for i, j in enumerate(jobs))
    waiting: dict[int, dict[str, Any]] = {}
    nxt = 0
    try:
        with open(tmp / "wkb.bin", "wb") as blob:
            for i, res in results:
                if isinstance(res, BaseException):
                    if isinstance(res, TilewiseError):
                        raise res
                    raise InputError(f"cannot stage {jobs[i].info.path!r} ({type(res).__name__}: {res})", "check the file is complete and readable")
                waiting[i] = res
                while nxt in waiting:  # chunks are taken in input order, so the first copy of a polygon is the one kept
                    ch = waiting.pop(nxt)
                    nxt += 1
                    report.read += ch["read"]
                    report.repaired += ch["repaired"]
                    report.skipped += ch["skipped"]
                    report.skipped_examples += ch["examples"][: max(0, 3 - len(report.skipped_examples))]
                    first = np.zeros(len(ch["ids"]), dtype=bool)
                    for k, key in enumerate(ch["ids"]):
                        if key not in seen:
                            seen.add(key)
                            first[k] = True
                    report.duplicates += int((~first).sum())
                    if not first.any():
                        continue
                    wkb = ch["wkb"][first]
                    for name in ("cx", "cy", "bounds"):
                        arrays[name].append(ch[name][first])
                    for j, values in enumerate(ch["props"]):
                        arrays[f"p{j}"].append(values[first])
                    arrays["sizes"].append(np.fromiter(map(len, wkb), dtype=np.int64, count=len(wkb)))
                    blob.write(b"".join(wkb))
                    report.kept += len(wkb)
        if report.read == 0:
            raise UsageError(f"the vector input(s) hold no features ({', '.join(Path(f).name for f in files[:3])})", "give layers with polygons")
        if report.kept == 0:
            raise UsageError(f"none of the {report.read} feature(s) is a usable polygon ({'; '.join(report.skipped_examples)})",
                             "check the geometries (empty or degenerate)")  # fmt: skip
        sizes = np.concatenate(arrays.pop("sizes"))
        np.save(tmp / "offsets.npy", np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))
        bounds = np.concatenate(arrays["bounds"])
        for name, parts in arrays.items():
            np.save(tmp / f"{name}.npy", np.concatenate(parts))
        with open(tmp / "meta.json", "w", encoding="utf-8") as fh:
            json.dump({"properties": list(properties), "count": report.kept, "crs": target.to_wkt()}, fh)
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report, bounds


class Staged:
    """Staged polygons (a folder :func:`stage_vectors` wrote), read by tiles and blocks.

    The folder holds the normalized WKB of every kept polygon (``wkb.bin`` with
    ``offsets.npy``), their bounds, centroids and property values, and optionally a
    tile index (which features meet each tile of a TMS level). Arrays are memory
    mapped, so a worker touches only the bytes of its own features.
    """

    @classmethod
    def open(cls, path: str | Path) -> Staged:
        """The staged folder at ``path``, opened once per process (and again when it was staged anew)."""
        p = Path(path)
        return _open_staged(str(p), (p / "meta.json").stat().st_mtime_ns)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with open(self.path / "meta.json", encoding="utf-8") as fh:
            self.meta = json.load(fh)
        self.n_properties = len(self.meta["properties"])

    def _load(self, name: str) -> np.ndarray:
        return np.load(self.path / f"{name}.npy", mmap_mode="r")

    def features(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Features by index, in content order: geometries, centroid x and y, and (n_properties, n) values.

        Content order (centroid y, then x, then the WKB bytes) is the same for the same
        polygons whichever inputs and files they came from, so sums add up identically.
        """
        import shapely

        ids = np.asarray(ids, dtype=np.int64)
        cx, cy = np.asarray(self._load("cx")[ids]), np.asarray(self._load("cy")[ids])
        off = self._load("offsets")
        starts, ends = np.asarray(off[ids]), np.asarray(off[ids + 1])
        blob = np.memmap(self.path / "wkb.bin", dtype=np.uint8, mode="r") if len(ids) else np.zeros(0, np.uint8)
        wkb = [blob[a:b].tobytes() for a, b in zip(starts, ends, strict=True)]
        order = np.lexsort((cx, cy))
        # Polygons with the very same centroid (copies, or rare coincidences): order them by their bytes.
        same = np.flatnonzero((np.diff(cy[order]) == 0) & (np.diff(cx[order]) == 0))
        if len(same):
            order = np.array(sorted(range(len(ids)), key=lambda i: (cy[i], cx[i], wkb[i])), dtype=np.int64)
        geoms = shapely.from_wkb(np.array([wkb[i] for i in order], dtype=object)) if len(ids) else np.zeros(0, dtype=object)
        props = np.array([np.asarray(self._load(f"p{j}")[ids])[order] for j in range(self.n_properties)]).reshape(self.n_properties, len(ids))
        return geoms, cx[order], cy[order], props

    def in_bounds(self, bounds: tuple[float, float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The features whose bounding box meets ``bounds`` (closed boxes), in content order."""
        b = self._load("bounds")
        hit = (b[:, 0] <= bounds[2]) & (b[:, 2] >= bounds[0]) & (b[:, 1] <= bounds[3]) & (b[:, 3] >= bounds[1])
        return self.features(np.flatnonzero(hit))

    def write_tile_index(self, tile_ids: np.ndarray, features: np.ndarray) -> None:
        """Record which features meet which tile (one row per pair, tile ids as the caller numbers them)."""
        order = np.lexsort((features, tile_ids))
        t, f = tile_ids[order], features[order]
        keys, starts = np.unique(t, return_index=True)
        for name, arr in (("tile_keys", keys), ("tile_starts", np.append(starts, len(t))), ("tile_features", f)):
            tmp = self.path / f".{name}.tmp.npy"
            np.save(tmp, arr.astype(np.int64))
            os.replace(tmp, self.path / f"{name}.npy")

    def in_tile(self, tile_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The features the tile index lists for ``tile_id``, in content order."""
        keys = self._load("tile_keys")
        i = int(np.searchsorted(keys, tile_id))
        if i >= len(keys) or keys[i] != tile_id:
            return self.features(np.zeros(0, dtype=np.int64))
        starts = self._load("tile_starts")
        return self.features(np.asarray(self._load("tile_features")[starts[i] : starts[i + 1]]))


@functools.lru_cache(maxsize=4)
def _open_staged(path: str, stamp: int) -> Staged:
    return Staged(path)


@dataclass(frozen=True)
class StagingSpec:
    """What :func:`stage_once` stages where, and the job fingerprint that says whether a staging there is current."""

    vectors: tuple[str, ...]
    out_dir: str
    stamp: str
    fingerprint: str
    crs: str
    id_column: str | None
    properties: tuple[str, ...]
    layer: str | None
    exclude: str | None


def stage_once(spec: StagingSpec) -> dict[str, Any]:
    """Stage unless a staging of this very job (same fingerprint) is there; return its report."""
    from tilewise.manifest import write_json_atomic

    try:
        saved = json.loads(Path(spec.stamp).read_text(encoding="utf-8"))
        if Path(spec.out_dir).exists() and saved.get("fingerprint") == spec.fingerprint:
            return dict(saved.get("report", {}))
    except (OSError, ValueError):
        pass
    Path(spec.out_dir).parent.mkdir(parents=True, exist_ok=True)
    report, _ = stage_vectors(spec.vectors, spec.out_dir, crs=spec.crs, id_column=spec.id_column, properties=spec.properties, layer=spec.layer,
                              exclude=spec.exclude)  # fmt: skip
    write_json_atomic(Path(spec.stamp), {"fingerprint": spec.fingerprint, "report": report.as_dict(), "line": report.describe()})
    return report.as_dict()
