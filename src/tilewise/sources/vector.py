"""Vector inputs for rasterizing: read any OGR layer (or GeoParquet), repair, de-duplicate, stage.

Staging reads the inputs in chunks (memory bounded by the chunk, not the layer),
reprojects the polygons to the target CRS, repairs invalid ones with
``make_valid`` (keeping their polygonal part), drops copies of the same polygon
found in several inputs (the Permafrost Discovery Gateway stages a polygon
crossing a tile edge into every tile it touches), and appends the result to one
GeoPackage with a spatial index. Each rasterizing task then reads only the
features of its own tile from that file. Every feature read is accounted for in
the :class:`StageReport`: kept, duplicate, repaired, or skipped with a reason.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tilewise.errors import InputError, UsageError

VECTOR_SUFFIXES = (".gpkg", ".shp", ".geojson", ".json", ".fgb", ".gml", ".kml", ".sqlite", ".parquet", ".geoparquet")
PARQUET_SUFFIXES = (".parquet", ".geoparquet")
DEFAULT_ID_COLUMN = "staging_identifier"
STAGED_LAYER = "staged"
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


def expand_inputs(paths: Sequence[str]) -> list[str]:
    """Files as given, folders expanded to the vector files inside (sorted); missing paths are an error."""
    out: list[str] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(str(f) for f in path.rglob("*") if f.is_file() and f.suffix.lower() in VECTOR_SUFFIXES)
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


def _chunks(info: LayerInfo, columns: list[str]) -> Iterator[Any]:
    """The layer's features as GeoDataFrames of at most CHUNK rows."""
    import geopandas as gpd

    if _is_parquet(info.path):
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(info.path)
        for i in range(pf.num_row_groups):
            table = pf.read_row_group(i)
            df = gpd.GeoDataFrame.from_arrow(table)
            yield df[[*columns, df.geometry.name]]
        return
    import pyogrio

    done = 0
    total = info.count
    while True:
        try:
            df = pyogrio.read_dataframe(info.path, layer=info.layer, columns=columns, skip_features=done, max_features=CHUNK, fid_as_index=True)
        except Exception as exc:
            raise InputError(f"cannot read features of {info.path!r} ({str(exc).splitlines()[0]})", "check the file is complete and readable") from None
        if len(df) == 0:
            return
        yield df
        done += len(df)
        if total and done >= total:
            return


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


def check_inputs(paths: Sequence[str], *, layer: str | None = None, id_column: str | None = None, properties: Sequence[str] = ()) -> list[LayerInfo]:
    """Open every input's layer and check CRS, geometry type, id column and properties, before any work starts."""
    infos = [layer_info(p, layer) for p in expand_inputs(paths)]
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


def content_hash(wkb: Sequence[bytes]) -> tuple[list[bytes], np.ndarray]:
    """Digests of normalized WKB (for identical-geometry duplicates) and a 63-bit order key from them."""
    digests = [hashlib.blake2b(b, digest_size=16).digest() for b in wkb]
    order = np.array([int.from_bytes(d[:8], "little") >> 1 for d in digests], dtype=np.int64)
    return digests, order


def stage_vectors(paths: Sequence[str], out_path: str | Path, *, crs: str, id_column: str | None = None, properties: Sequence[str] = (),
                  layer: str | None = None) -> tuple[StageReport, np.ndarray]:  # fmt: skip
    """Stage vector inputs into one GeoPackage in ``crs``, and list the features' bounds.

    Parameters
    ----------
    paths
        Vector files or folders of them (see :func:`expand_inputs`).
    out_path
        The GeoPackage to write (replaced atomically).
    crs
        Target CRS (WKT or any pyproj input), e.g. the TMS CRS.
    id_column
        Field identifying copies of one polygon across inputs; None picks
        ``staging_identifier`` when every input has it, else identical geometry.
    properties
        Numeric fields to keep (as float64 columns ``p0``, ``p1``, ...).
    layer
        Layer name for multi-layer inputs (default: the first layer).

    Returns
    -------
    report, bounds
        The :class:`StageReport` and the kept features' bounds, (n, 4) float64.

    Notes
    -----
    The staged layer holds, per feature: the geometry, its centroid ``cx, cy`` and an
    order key ``key`` from the geometry's content, so a tile's features can be put in
    the same order whatever the inputs they came from.
    """
    import geopandas as gpd
    import pyogrio
    import shapely
    from pyproj import CRS

    files = expand_inputs(paths)
    infos = [layer_info(p, layer) for p in files]
    idc = choose_id_column(infos, id_column)
    check_properties(infos, properties)
    target = CRS.from_user_input(crs)
    report = StageReport(inputs=files, id_column=idc)
    seen: set[Any] = set()
    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp.gpkg")
    tmp.unlink(missing_ok=True)
    all_bounds: list[np.ndarray] = []
    written = False
    columns = [*([idc] if idc else []), *properties]
    try:
        for info in infos:
            for df in _chunks(info, columns):
                report.read += len(df)
                if df.crs is None:
                    raise InputError(f"{info.path!r} has no CRS", "assign one, e.g. ogr2ogr -a_srs EPSG:4326 fixed.gpkg input.shp")
                kinds = shapely.get_type_id(df.geometry.values)
                bad = ~np.isin(kinds, (-1, 3, 6, 7))
                if bad.any():
                    i = int(np.flatnonzero(bad)[0])
                    raise UsageError(f"feature {df.index[i]} of {info.path!r} is a {df.geometry.values[i].geom_type}, "
                                     "and rasterize counts and covers polygons",
                                     "buffer points or lines into polygons first (e.g. geopandas: gdf.buffer(d)), or drop them")  # fmt: skip
                if not target.equals(df.crs):
                    df = df.to_crs(target)
                geoms, repaired, empty = _polygonal(np.asarray(df.geometry.values))
                report.repaired += int((repaired & ~empty).sum())
                if empty.any():
                    report.skipped += int(empty.sum())
                    for i in np.flatnonzero(empty)[: max(0, 3 - len(report.skipped_examples))]:
                        g = df.geometry.values[i]
                        why = "empty" if shapely.is_empty(g) or shapely.is_missing(g) else "no polygonal part after repair"
                        report.skipped_examples.append(f"{Path(info.path).name} feature {df.index[i]}: {why}")
                keep = ~empty
                geoms = shapely.normalize(geoms[keep])
                wkb = shapely.to_wkb(geoms)
                digests, order = content_hash(list(wkb))
                ids: list[Any] = list(df[idc].values[keep]) if idc else digests
                first = np.zeros(len(ids), dtype=bool)
                for i, key in enumerate(ids):
                    if key not in seen:
                        seen.add(key)
                        first[i] = True
                report.duplicates += int((~first).sum())
                if not first.any():
                    continue
                geoms = geoms[first]
                cent = shapely.centroid(geoms)
                data: dict[str, Any] = {"cx": shapely.get_x(cent), "cy": shapely.get_y(cent), "key": order[first]}
                for j, prop in enumerate(properties):
                    data[f"p{j}"] = _numeric(df[prop][keep][first], prop, info.path)
                gdf = gpd.GeoDataFrame(data, geometry=geoms, crs=target)
                pyogrio.write_dataframe(gdf, tmp, layer=STAGED_LAYER, driver="GPKG", append=written, geometry_type="Unknown")
                written = True
                report.kept += len(gdf)
                all_bounds.append(shapely.bounds(geoms))
        if report.read == 0:
            raise UsageError(f"the vector input(s) hold no features ({', '.join(Path(f).name for f in files[:3])})", "give layers with polygons")
        if report.kept == 0:
            raise UsageError(f"none of the {report.read} feature(s) is a usable polygon ({'; '.join(report.skipped_examples)})",
                             "check the geometries (empty or degenerate)")  # fmt: skip
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return report, np.concatenate(all_bounds) if all_bounds else np.zeros((0, 4))


def read_staged(path: str, bounds: tuple[float, float, float, float], n_properties: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The staged features whose bounding box meets ``bounds``, in content order.

    Returns
    -------
    geoms, cx, cy, props
        Shapely geometries, centroid coordinates, and (n_properties, n) float64 values.
    """
    import pyogrio
    import shapely

    cols = ["cx", "cy", "key", *[f"p{j}" for j in range(n_properties)]]
    _, _, wkb, fields = pyogrio.raw.read(path, layer=STAGED_LAYER, bbox=bounds, columns=cols)
    if wkb is None or len(wkb) == 0:
        e = np.zeros(0)
        return np.zeros(0, dtype=object), e, e, np.zeros((n_properties, 0))
    cx, cy, key = (np.asarray(f, dtype=np.float64) if i < 2 else np.asarray(f, dtype=np.int64) for i, f in enumerate(fields[:3]))
    # The same order for the same polygons whichever inputs (and file order) they came from: sums then add up identically.
    order = np.lexsort((key, cx, cy))
    geoms = shapely.from_wkb(np.asarray(wkb, dtype=object)[order])
    props = np.array([np.asarray(f, dtype=np.float64)[order] for f in fields[3:]]).reshape(n_properties, len(order))
    return geoms, cx[order], cy[order], props
