"""Remote time-stack mean from a STAC catalog (issue 9): tilewise against odc-stac and stackstac with dask.

Generates (once, cached in bench/work/stac/) 30 dated Cloud-Optimized GeoTIFFs of
2048 x 2048 float32 (a smooth field with noise, a swath edge and clouds of nodata
-9999, DEFLATE with the floating-point predictor, 512-pixel blocks, overviews),
serves them from 127.0.0.1 with a server in its own process that honours Range
requests (single and multi-range), waits ``--latency`` (20 ms) before every answer
and counts requests and bytes, and writes a static STAC ItemCollection whose asset
hrefs point at the server, with the projection extension (``proj:epsg``,
``proj:transform``, ``proj:shape``) and ``raster:bands`` nodata, as a real catalog has.

Then each approach computes the per-pixel mean over time (nodata masked) and writes
a GeoTIFF, each in its own fresh process (no GDAL cache carries over), with the same
number of workers (usable cores), measuring wall time, peak memory of its process
tree (bench/common.run_measured) and the requests and bytes the server sent it:

* ``tilewise``: ``tilewise reduce --stac items.json --asset data --stat mean -o OUT``
  (default processes executor, workers = cores), run from the working tree;
* ``tilewise_512``: the same with ``--tile-size 512`` (a remote stack's default tile before commit 6ac238e, 1024 since);
* ``tilewise_threads``: the same with ``--executor threads``;
* ``odc_stac``: ``odc.stac.load(items, bands=['data'], chunks={'x': C, 'y': C})``, ``.where(!= nodata)``,
  ``.mean('time', skipna=True)``, dask's threaded scheduler (workers threads), ``.rio.to_raster``;
* ``odc_stac_cluster``: the same on a ``distributed.LocalCluster`` (workers processes x 1 thread);
* ``stackstac``: ``stackstac.stack(items, assets=['data'], chunksize=C, xy_coords='center')``, mean over time likewise;
* ``tilewise_io``, ``odc_stac_io``, ``stackstac_io``: tuned for latency, ``--io-workers`` (8) threads each
  (tilewise: ``--executor threads --workers 8 --tile-size 1024``);

"Needed bytes" are the compressed bytes of the full-resolution blocks that the output
window touches (here every block of every file), read from each COG's TIFF tags; each
approach's bytes served are reported as a ratio to them. The outputs are checked
against tilewise's: largest relative difference where both are valid, and pixels
valid in one but not the other.

    .venv/bin/python bench/stac_bench.py [--dates 30] [--latency 0.02] [--only tilewise,odc_stac]

Each approach runs --repeat (3) times and the median is reported (~3 min on 2 cores when idle).
Results: bench/results/stac.{json,md} (other counts, sizes or latencies: stac_<dates>x<size>_<ms>ms.*).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import (  # noqa: E402
    REPO_ROOT,
    machine_info,
    md_table,
    python_cmd,
    repo_commit,
    run_measured,
    tilewise_env,
    usable_cores,
    wait_for_quiet,
    write_json,
)

WORK = HERE / "work" / "stac"
RESULTS = HERE / "results"
BLOCK = 512
NODATA = -9999.0
ASSET = "data"
EPSG = 32632
ORIGIN = (300000.0, 5600000.0)
RES = 10.0
GEN_VERSION = "1"
APPROACHES = ("tilewise", "tilewise_512", "tilewise_threads", "odc_stac", "odc_stac_cluster", "stackstac", "tilewise_io", "odc_stac_io",
              "stackstac_io")
#: What a user tunes for latency-bound reads: more concurrent reads than cores (``--io-workers``), tilewise also 1024-px tiles.
IO_TILEWISE_ARGS = ["--executor", "threads", "--tile-size", "1024"]


# --------------------------------------------------------------------------- the data and the catalog


def dates(n: int) -> list[dt.date]:
    """``n`` acquisition dates, 12 days apart (a Sentinel-1-like revisit) from 2021-01-03."""
    return [dt.date(2021, 1, 3) + dt.timedelta(days=12 * i) for i in range(n)]


def field(i: int, size: int) -> np.ndarray:
    """Date ``i``: terrain-like base + seasonal offset + a date's own smooth anomaly and noise, 2 decimals; nodata swath and clouds."""
    from tilewise.synthetic import smooth_field

    base = smooth_field(size, size, seed=1, scale=256.0, noise=0.0) * np.float32(30.0)
    anomaly = smooth_field(size, size, seed=100 + i, scale=128.0, noise=0.05) * np.float32(4.0)
    data = base + anomaly + np.float32(10.0 * np.sin(2 * np.pi * i / 30))
    data = np.round(data, 2).astype(np.float32)
    # A swath edge (a strip along one side, 0-20 % of the width, side alternating) and clouds (~8 %).
    edge = int(size * 0.2 * ((i * 7) % 10) / 10)
    if edge:
        if i % 2:
            data[:, size - edge :] = NODATA
        else:
            data[:, :edge] = NODATA
    clouds = smooth_field(size, size, seed=200 + i, scale=96.0, noise=0.0)
    data[clouds > np.quantile(clouds, 0.92)] = NODATA
    return data


def generate(folder: Path, n: int, size: int) -> list[Path]:
    """The dated COGs (cached: regenerated only when the stamp of this generator, count and size is missing)."""
    import rasterio
    from rasterio.shutil import copy
    from rasterio.transform import from_origin

    cogs = folder / "cogs"
    paths = [cogs / f"t_{d:%Y%m%d}.tif" for d in dates(n)]
    stamp = folder / f".complete-{GEN_VERSION}-{n}-{size}"
    if stamp.exists() and all(p.exists() for p in paths):
        return paths
    print(f"generating {n} dated {size} x {size} float32 COGs in {cogs} ...", flush=True)
    cogs.mkdir(parents=True, exist_ok=True)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "float32", "nodata": NODATA, "crs": f"EPSG:{EPSG}",
               "transform": from_origin(*ORIGIN, RES, RES), "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK}  # fmt: skip
    for i, p in enumerate(paths):
        plain = p.with_suffix(".plain.tif")
        with rasterio.open(plain, "w", **profile) as ds:
            ds.write(field(i, size), 1)
        with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
            copy(str(plain), str(p), driver="COG", BLOCKSIZE=BLOCK, COMPRESS="DEFLATE", PREDICTOR=3, NUM_THREADS="ALL_CPUS")
        plain.unlink()
    stamp.write_text("ok")
    return paths


def write_items(paths: list[Path], base_url: str, out: Path) -> dict[str, Any]:
    """A static STAC ItemCollection: one item per COG, its ``data`` asset's href on the server; projection and raster extensions."""
    import rasterio
    from rasterio.warp import transform_bounds

    features = []
    for p in paths:
        with rasterio.open(p) as ds:
            t, shape, bounds = ds.transform, [ds.height, ds.width], ds.bounds
            stats_size = p.stat().st_size
        w, s, e, n = transform_bounds(f"EPSG:{EPSG}", "EPSG:4326", *bounds, densify_pts=21)
        day = dt.datetime.strptime(p.stem[2:], "%Y%m%d").replace(tzinfo=dt.UTC)
        features.append({
            "type": "Feature", "stac_version": "1.0.0", "id": p.stem,
            "stac_extensions": ["https://stac-extensions.github.io/projection/v1.1.0/schema.json",
                                "https://stac-extensions.github.io/raster/v1.1.0/schema.json"],
            "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
            "bbox": [w, s, e, n],
            "properties": {"datetime": day.isoformat().replace("+00:00", "Z"), "proj:epsg": EPSG,
                           "proj:transform": [t.a, t.b, t.c, t.d, t.e, t.f], "proj:shape": shape},
            "links": [],
            "assets": {ASSET: {"href": f"{base_url}/cogs/{p.name}", "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                               "roles": ["data"], "file:size": stats_size,
                               "raster:bands": [{"nodata": NODATA, "data_type": "float32", "spatial_resolution": RES}]}},
        })  # fmt: skip
    doc = {"type": "FeatureCollection", "features": features}
    out.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return doc


def needed_bytes(paths: list[Path]) -> dict[str, int]:
    """Compressed bytes of the full-resolution blocks the output window (the whole grid) touches, summed over files; and file sizes."""
    import rasterio

    blocks = files = 0
    for p in paths:
        with rasterio.open(p) as ds:
            for (r, c), _ in ds.block_windows(1):
                blocks += int(ds.get_tag_item(f"BLOCK_SIZE_{c}_{r}", "TIFF", bidx=1))
        files += p.stat().st_size
    return {"blocks": blocks, "files": files}


# --------------------------------------------------------------------------- the server (its own process)


def serve(root: Path, latency: float) -> None:
    """A range-honouring (single and multi-range) file server on 127.0.0.1 that sleeps ``latency`` s per request and counts.

    Control: ``GET /_stats`` gives the counters (requests by method, bytes of payload sent,
    the ranges asked for per path) as JSON; ``POST /_reset`` clears them. Prints its port.
    """
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    lock = threading.Lock()
    stats: dict[str, Any] = {}

    def reset() -> None:
        stats.clear()
        stats.update(requests=0, heads=0, gets=0, ranged_gets=0, multi_range_gets=0, whole_gets=0, bytes=0, wire_bytes=0, errors=0, log=[])

    reset()
    range_re = re.compile(r"(\d*)-(\d*)")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections
        # TCP_NODELAY: headers and body go out in separate writes; with Nagle's algorithm and the client's
        # delayed ACK a small answer would wait ~40 ms more, on top of the injected latency.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(n)
            if self.path == "/_reset":
                with lock:
                    reset()
            self._plain(200, b"{}")

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            if self.path == "/_stats":
                with lock:
                    data = json.dumps(stats).encode()
                self._plain(200, data)
                return
            self._serve(body=True)

        def _plain(self, status: int, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _count(self, kind: str, payload: int, wire: int, ranges: list[tuple[int, int]]) -> None:
            with lock:
                stats["requests"] += 1
                stats[kind] += 1
                stats["bytes"] += payload
                stats["wire_bytes"] += wire
                stats["log"].append([self.command, self.path.split("?")[0], ranges])

        def _serve(self, body: bool) -> None:
            time.sleep(latency)
            rel = self.path.split("?")[0].lstrip("/")
            path = (root / rel).resolve()
            if root not in path.parents or not path.is_file():
                with lock:
                    stats["errors"] += 1  # an answered request like any other (it waited the latency too)
                    stats["requests"] += 1
                self.send_error(404)
                return
            st = path.stat()
            size = st.st_size
            etag = f'"{size:x}-{st.st_mtime_ns:x}"'
            ranges: list[tuple[int, int]] = []
            header = (self.headers.get("Range") or "").strip()
            if header.startswith("bytes="):
                for part in header[6:].split(","):
                    m = range_re.fullmatch(part.strip())
                    if not m or (not m.group(1) and not m.group(2)):
                        ranges = []
                        break
                    if m.group(1):
                        a, b = int(m.group(1)), min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
                    else:  # suffix range: the last N bytes
                        a, b = max(0, size - int(m.group(2))), size - 1
                    if a < size and a <= b:
                        ranges.append((a, b))
                if header and not ranges:
                    with lock:
                        stats["errors"] += 1
                        stats["requests"] += 1
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return

            def read(a: int, b: int) -> bytes:
                with open(path, "rb") as fh:
                    fh.seek(a)
                    return fh.read(b - a + 1)

            if not ranges:  # the whole file
                data = read(0, size - 1) if body else b""
                self.send_response(200)
                self.send_header("Content-Type", "image/tiff")
                self.send_header("Content-Length", str(size))
                parts = [data]
                kind = "whole_gets" if body else "heads"
            elif len(ranges) == 1:
                a, b = ranges[0]
                data = read(a, b) if body else b""
                self.send_response(206)
                self.send_header("Content-Type", "image/tiff")
                self.send_header("Content-Range", f"bytes {a}-{b}/{size}")
                self.send_header("Content-Length", str(b - a + 1))
                parts = [data]
                kind = "ranged_gets" if body else "heads"
            else:  # multipart/byteranges
                sep = b"tilewise-bench-boundary"
                parts = []
                for a, b in ranges:
                    parts.append(b"\r\n--" + sep + b"\r\nContent-Type: image/tiff\r\n" + f"Content-Range: bytes {a}-{b}/{size}\r\n\r\n".encode())
                    parts.append(read(a, b) if body else b"")
                parts.append(b"\r\n--" + sep + b"--\r\n")
                self.send_response(206)
                self.send_header("Content-Type", "multipart/byteranges; boundary=" + sep.decode())
                self.send_header("Content-Length", str(sum(len(x) for x in parts)))
                kind = "multi_range_gets" if body else "heads"
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", self.date_time_string(int(st.st_mtime)))
            self.end_headers()
            wire = 0
            if body:
                for x in parts:
                    self.wfile.write(x)
                    wire += len(x)
            payload = sum(b - a + 1 for a, b in ranges) if ranges else (size if body else 0)
            if body:
                with lock:
                    stats["gets"] += 1
            self._count(kind, payload if body else 0, wire, ranges)

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client hanging up is not news

    srv = Server(("127.0.0.1", 0), Handler)
    print(srv.server_address[1], flush=True)
    srv.serve_forever()


class ServerProcess:
    """The server in a process of its own (a reading process's GIL must not slow it down)."""

    def __init__(self, root: Path, latency: float) -> None:
        self.proc = subprocess.Popen([*python_cmd(), str(Path(__file__).resolve()), "--serve", str(root), "--latency", str(latency)],
                                     stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(self.url + "/_reset", data=b"{}", method="POST"), timeout=10).read()

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/_stats", timeout=30) as resp:
            return dict(json.loads(resp.read()))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def summarise(stats: dict[str, Any], needed: int) -> dict[str, Any]:
    """Request and byte counts of one run, and the bytes served twice or more (distinct bytes per file vs total)."""
    log = stats.pop("log", [])
    per_file: dict[str, list[tuple[int, int]]] = {}
    for method, path, ranges in log:
        if method == "GET":
            per_file.setdefault(path, []).extend((a, b + 1) for a, b in ranges)
    distinct = 0
    for spans in per_file.values():
        end = -1
        for a, b in sorted(spans):
            if b > end:
                distinct += b - max(a, end)
                end = b
    sizes = sorted(b - a + 1 for _, _, ranges in log for a, b in ranges)
    out = {k: v for k, v in stats.items() if k != "log"}
    out.update(distinct_bytes=distinct, files_read=len(per_file), bytes_over_needed=round(stats["bytes"] / needed, 4) if needed else None,
               median_range_kb=round(sizes[len(sizes) // 2] / 1024, 1) if sizes else None)  # fmt: skip
    return out


# --------------------------------------------------------------------------- the approaches (each run in its own process)

GDAL_CLOUD_ENV = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_HTTP_MULTIRANGE": "YES", "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES"}


def worker(name: str, items_path: Path, out: Path, workers: int, chunk: int) -> None:
    """Run one peer approach (called in a fresh process by ``--worker``); prints its phases."""
    from common import report_phases

    t0 = time.perf_counter()
    import dask
    import pystac
    import rioxarray  # noqa: F401  (the .rio accessor)

    items = pystac.ItemCollection.from_file(str(items_path))
    client = cluster = None
    if name.endswith("_cluster"):
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    else:
        dask.config.set(scheduler="threads", num_workers=workers)
    t_import = time.perf_counter()
    name = name.removesuffix("_io")
    if name.startswith("odc_stac"):
        import odc.stac

        ds = odc.stac.load(items, bands=[ASSET], chunks={"x": chunk, "y": chunk}, groupby="time")
        cube = ds[ASSET]
    elif name == "stackstac":
        import stackstac

        # The items as plain dicts (as pystac-client's items_as_dicts() gives them): pystac migrates proj:epsg to the
        # projection extension v2's proj:code, which stackstac 0.5 does not read; it would then derive a grid from the
        # lon/lat bbox (2196 x 2196, offset) and resample.
        dicts = json.loads(items_path.read_text(encoding="utf-8"))["features"]
        # xy_coords="center": stackstac's default labels pixels by their top-left corner, which rioxarray would write
        # half a pixel off.
        cube = stackstac.stack(dicts, assets=[ASSET], chunksize=chunk, dtype="float32", fill_value=np.float32(np.nan), rescale=False,
                               xy_coords="center")
        cube = cube.sel(band=ASSET)
    else:
        raise SystemExit(f"unknown approach {name}")
    mean = cube.where(cube != NODATA).mean("time", skipna=True).astype("float32")
    t_graph = time.perf_counter()
    result = mean.compute()
    t_compute = time.perf_counter()
    result = result.rio.write_nodata(np.nan, encoded=False)
    result.rio.to_raster(out, tiled=True, blockxsize=BLOCK, blockysize=BLOCK, compress="deflate", predictor=3)
    t_write = time.perf_counter()
    if client is not None:
        client.close()
        cluster.close()
    report_phases(imports=t_import - t0, graph=t_graph - t_import, compute=t_compute - t_graph, write=t_write - t_compute)


def command(name: str, items: Path, out: Path, workers: int, chunk: int, tilewise_args: str, io_workers: int) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of one approach (``*_io``: ``io_workers`` threads instead of ``workers``)."""
    if name.endswith("_io"):
        workers = io_workers
    if name.startswith("tilewise"):
        env, _ = tilewise_env()
        cmd = [*python_cmd(), "-m", "tilewise.cli.main", "reduce", "--stac", str(items), "--asset", ASSET, "--stat", "mean",
               "-o", str(out), "--overwrite", "--workers", str(workers)]  # fmt: skip
        if name == "tilewise_threads":
            cmd += ["--executor", "threads"]
        if name == "tilewise_io":
            cmd += IO_TILEWISE_ARGS
        if name == "tilewise_512":
            cmd += ["--tile-size", "512"]
        cmd += tilewise_args.split()
        return cmd, env
    cmd = [*python_cmd(), str(Path(__file__).resolve()), "--worker", name, "--items", str(items), "--out", str(out), "--workers", str(workers),
           "--chunk", str(chunk)]  # fmt: skip
    return cmd, dict(os.environ)


def tilewise_phases(lines: list[tuple[float, str]], wall: float) -> dict[str, float]:
    """tilewise's wall-clock phases from when its progress lines arrived: start-up + planning, tiles, assembly + finish."""
    start = next((t for t, line in lines if "tiles to run" in line), None)
    end = next((t for t, line in lines if line.startswith("writing")), None)
    if start is None or end is None:
        return {}
    return {"plan": round(start, 2), "tiles": round(end - start, 2), "finish": round(wall - end, 2)}


def compare(a: Path, ref: Path) -> dict[str, Any]:
    """``a`` against the reference output: same grid, largest relative difference where both valid, validity mismatches."""
    import rasterio

    with rasterio.open(a) as x, rasterio.open(ref) as y:
        same_grid = x.shape == y.shape and x.transform.almost_equals(y.transform) and x.crs == y.crs
        if not same_grid:
            return {"same_grid": False, "shape": list(x.shape), "ref_shape": list(y.shape)}
        p = x.read(1, masked=True).astype(np.float64).filled(np.nan)
        q = y.read(1, masked=True).astype(np.float64).filled(np.nan)
    vp, vq = ~np.isnan(p), ~np.isnan(q)
    both = vp & vq
    rel = np.abs(p[both] - q[both]) / np.maximum(np.abs(q[both]), 1e-12)
    return {"same_grid": True, "max_rel_diff": float(rel.max()) if rel.size else None, "valid_only_here": int((vp & ~vq).sum()),
            "valid_only_in_ref": int((~vp & vq).sum()), "valid_pixels": int(both.sum())}  # fmt: skip


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dates", type=int, default=30, help="number of dated COGs (default 30)")
    ap.add_argument("--size", type=int, default=2048, help="raster edge in pixels (default 2048)")
    ap.add_argument("--latency", type=float, default=0.02, help="seconds the server waits before each answer (default 0.02)")
    ap.add_argument("--only", default=",".join(APPROACHES), help=f"approaches to run, in order (default {','.join(APPROACHES)})")
    ap.add_argument("--workers", type=int, default=0, help="workers for every approach (default: usable cores)")
    ap.add_argument("--io-workers", type=int, default=8, help="threads of the *_io rows (default 8)")
    ap.add_argument("--chunk", type=int, default=1024, help="dask chunk edge of the peers (default 1024, tilewise's default tile)")
    ap.add_argument("--tilewise-args", default="", help="extra arguments for the tilewise rows, e.g. '--tile-size 2048'")
    ap.add_argument("--repeat", type=int, default=3, help="runs per approach; the median wall time is reported (default 3)")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--quiet-wait", type=float, default=30.0, help="wait up to this long for the machine to be idle before each run")
    ap.add_argument("--tag", default="", help="suffix of the result files (default: none at 30 x 2048 / 20 ms, else _<size>_<ms>ms)")
    ap.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--items", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(Path(args.serve).resolve(), args.latency)
        return 0
    if args.worker:
        worker(args.worker, Path(args.items), Path(args.out), args.workers, args.chunk)
        return 0

    sys.path.insert(0, str(REPO_ROOT / "src"))  # the generator (tilewise.synthetic) from the working tree
    workers = args.workers or usable_cores()
    folder = WORK / f"d{args.dates}_{args.size}"
    paths = generate(folder, args.dates, args.size)
    need = needed_bytes(paths)
    print(f"needed: {need['blocks'] / 1e6:.1f} MB of full-resolution blocks ({need['files'] / 1e6:.1f} MB of files)", flush=True)
    commit_at_start = repo_commit()
    server = ServerProcess(folder, args.latency)
    results: dict[str, Any] = {}
    outs = WORK / "out"
    outs.mkdir(parents=True, exist_ok=True)
    try:
        items = folder / "items.json"
        write_items(paths, server.url, items)
        for name in args.only.split(","):
            runs = []
            for _ in range(args.repeat):
                wait_for_quiet(args.quiet_wait)
                out = outs / f"{name}.tif"
                out.unlink(missing_ok=True)
                cmd, env = command(name, items, out, workers, args.chunk, args.tilewise_args, args.io_workers)
                server.reset()
                print(f"running {name} ...", flush=True)
                m = run_measured(cmd, env=env, cwd=REPO_ROOT, timeout_s=args.timeout, stderr_times=name.startswith("tilewise"))
                if name.startswith("tilewise"):
                    m.phases = tilewise_phases(m.stderr_lines, m.wall_s)
                net = summarise(server.stats(), need["blocks"])
                if not m.ok:
                    print(m.stderr_tail[-2000:], flush=True)
                run = {"wall_s": round(m.wall_s, 2), "peak_mb": round(m.peak_rss_bytes / 1e6, 1), "cpu_s": round(m.cpu_s, 1),
                       "other_load_cores": round(m.other_cpu_s / m.wall_s, 2) if m.wall_s else None, "ok": m.ok, "phases": m.phases,
                       "net": net, "cmd": " ".join(cmd)}  # fmt: skip
                print(f"  {run['wall_s']} s, {run['peak_mb']} MB, {net['requests']} requests, {net['bytes'] / 1e6:.1f} MB "
                      f"({net['bytes_over_needed']} x needed), phases {m.phases}", flush=True)  # fmt: skip
                runs.append(run)
            ok_runs = sorted((r for r in runs if r["ok"]), key=lambda r: r["wall_s"]) or runs
            results[name] = {**ok_runs[len(ok_runs) // 2], "runs": [r["wall_s"] for r in runs]}
    finally:
        server.stop()
    ref = outs / "tilewise.tif"
    for name, r in results.items():
        if name != "tilewise" and r["ok"] and ref.exists() and (outs / f"{name}.tif").exists():
            r["vs_tilewise"] = compare(outs / f"{name}.tif", ref)

    machine = machine_info()
    machine.update({k: _version(k) for k in ("odc.stac", "stackstac", "pystac", "distributed")})
    machine["repo_commit_at_start"] = commit_at_start  # src edited during the run: the rows may measure different code
    workload = {"dates": args.dates, "size": args.size, "dtype": "float32", "nodata": NODATA, "block": BLOCK, "compression": "DEFLATE, predictor 3",
                "cog": True, "latency_s": args.latency, "workers": workers, "io_workers": args.io_workers,
                "io_tilewise_args": " ".join(IO_TILEWISE_ARGS), "chunk": args.chunk, "tilewise_args": args.tilewise_args,
                "needed_bytes": need["blocks"], "file_bytes": need["files"]}  # fmt: skip
    report = {"machine": machine, "workload": workload, "results": results}
    tag = args.tag or ("" if (args.dates, args.size, args.latency) == (30, 2048, 0.02) else f"_{args.dates}x{args.size}_{round(args.latency * 1000)}ms")
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / f"stac{tag}.json", report)
    md = render(report)
    (RESULTS / f"stac{tag}.md").write_text(md, encoding="utf-8")
    print(md)
    return 0


def _version(module: str) -> str | None:
    try:
        mod = __import__(module, fromlist=["__version__"])
    except Exception:
        return None
    return str(getattr(mod, "__version__", "?"))


WHAT = {
    "tilewise": "`tilewise reduce --stac items.json --asset data --stat mean` (defaults: processes executor, workers = cores)",
    "tilewise_512": "the same with `--tile-size 512` (a remote stack's default tile before commit 6ac238e)",
    "tilewise_threads": "the same with `--executor threads`",
    "odc_stac": "`odc.stac.load(items, bands=['data'], chunks={'x': CHUNK, 'y': CHUNK})`, `.where(!= nodata).mean('time')`, dask threads",
    "odc_stac_cluster": "the same on a `distributed.LocalCluster` (workers processes x 1 thread)",
    "stackstac": "`stackstac.stack(items, assets=['data'], chunksize=CHUNK, xy_coords='center')`, mean likewise, dask threads",
    "tilewise_io": "tuned for latency: `--executor threads --workers IO_WORKERS --tile-size 1024`",
    "odc_stac_io": "tuned for latency: odc_stac with IO_WORKERS dask threads",
    "stackstac_io": "tuned for latency: stackstac with IO_WORKERS dask threads",
}


def render(report: dict[str, Any]) -> str:
    """The Markdown report: table with ratios to tilewise, bytes ratios, agreement, winner and verdict."""
    m, w, res = report["machine"], report["workload"], report["results"]
    tw = res.get("tilewise")
    rows = []
    for name, r in res.items():
        net = r["net"]
        speed = r["wall_s"] / tw["wall_s"] if tw and tw["ok"] and r["ok"] else None
        v = r.get("vs_tilewise") or {}
        if name == "tilewise":
            agree = "reference"
        elif v.get("same_grid"):
            agree = f"{v['max_rel_diff']:.1e}; {v['valid_only_here']}/{v['valid_only_in_ref']}"
        else:
            agree = "other grid" if v else ""
        reqs = f"{net['requests']} ({net['heads']} HEAD" + (f", {net['errors']} 4xx)" if net.get("errors") else ")")
        rows.append([name, f"{r['wall_s']:.1f}" if r["ok"] else "failed", f"{speed:.2f}x" if speed else "", f"{r['peak_mb']:.0f}",
                     reqs, f"{net['bytes'] / 1e6:.1f}", f"{net['bytes_over_needed']:.3f}",
                     f"{r['cpu_s']:.1f}", f"{r.get('other_load_cores') or 0:.2f}", agree])  # fmt: skip
    io = w.get("io_workers", "?")
    lines = [f"# Remote STAC stack mean: {w['dates']} dated {w['size']} x {w['size']} float32 COGs over loopback HTTP, "
             f"{w['latency_s'] * 1000:.0f} ms per request",
             "",
             f"Machine: {m.get('cpu_model', '?')}, {m.get('usable_cores', '?')} usable cores, {m.get('ram_gb', '?')} GB RAM; "
             f"{m.get('date_utc', '')}; tilewise {m.get('repo_commit')}; GDAL {m.get('gdal_rasterio')} (rasterio {m.get('rasterio')}), "
             f"odc-stac {m.get('odc.stac')}, stackstac {m.get('stackstac')}, dask {m.get('dask')}, xarray {m.get('xarray')}."
             + (f" **tilewise changed during the run** (at the start: {m['repo_commit_at_start']})."
                if m.get("repo_commit_at_start") not in (None, m.get("repo_commit")) else ""),
             "",
             f"Workload: {w['dates']} COGs, {w['block']}-px DEFLATE blocks (predictor 3) with overviews, nodata {w['nodata']:g}; "
             f"{w['workers']} workers for every approach (the `_io` rows: {io} threads); peers' dask chunks {w['chunk']} px"
             + (f"; tilewise extra args `{w['tilewise_args']}`" if w.get("tilewise_args") else "") + ". "
             f"Needed bytes (full-resolution blocks under the output window, all files): {w['needed_bytes'] / 1e6:.1f} MB "
             f"(files {w['file_bytes'] / 1e6:.1f} MB). Median of {max(len(r.get('runs', [])) for r in res.values()) if res else 0} run(s) per row.",
             "",
             md_table(["approach", "wall s", "time / tilewise", "peak MB", "requests", "MB served", "served / needed", "CPU s", "other load",
                       "vs tilewise: max rel. diff; valid only here / only in tilewise"], rows),
             "",
             *[f"* `{k}`: {WHAT.get(k, '').replace('IO_WORKERS', str(io)).replace('CHUNK', str(w['chunk']))}" for k in res],
             ""]  # fmt: skip
    phases = [f"`{k}` {r['phases']['plan']:.1f} + {r['phases']['tiles']:.1f} + {r['phases']['finish']:.1f}" for k, r in res.items()
              if k.startswith("tilewise") and r.get("phases", {}).get("plan") is not None]  # fmt: skip
    if phases:
        lines += ["tilewise's wall clock, start-up and planning (opening every member) + tiles + assembly and finish, in s: " + "; ".join(phases) + ".", ""]
    ok = {k: r for k, r in res.items() if r["ok"]}
    if not ok:
        return "\n".join(lines)

    def fastest(names: list[str]) -> str | None:
        names = [k for k in names if k in ok]
        return min(names, key=lambda k: ok[k]["wall_s"]) if names else None

    best = fastest([k for k in ok if not k.endswith("_io")])
    best_io = fastest([k for k in ok if k.endswith("_io")])
    lines.append(f"Winner at {w['workers']} workers: **{best}** ({ok[best]['wall_s']:.1f} s)" if best else "Winner: none")
    lines[-1] += (f"; with {io} threads each: **{best_io}** ({ok[best_io]['wall_s']:.1f} s)" if best_io else "") + "."
    peers = fastest([k for k in ok if not k.startswith("tilewise") and not k.endswith("_io")])
    peers_io = fastest([k for k in ok if not k.startswith("tilewise") and k.endswith("_io")])
    verdict = []
    for mine, other, what in (("tilewise", peers, "tilewise with default settings vs the fastest peer, same workers"),
                              ("tilewise_512", peers, "tilewise `--tile-size 512` vs the fastest peer, same workers"),
                              ("tilewise_io", peers_io, f"tuned for latency ({io} threads each)")):  # fmt: skip
        if mine in ok and other:
            sp = ok[other]["wall_s"] / ok[mine]["wall_s"]
            br = ok[mine]["net"]["bytes_over_needed"]
            verdict.append(f"* {what}: `{mine}` is {sp:.2f}x as fast as `{other}` (target >= 1.5x: {'met' if sp >= 1.5 else 'NOT met'}); "
                           f"bytes {br:.3f}x the needed (target <= 1.1x: {'met' if br <= 1.1 else 'NOT met'})")  # fmt: skip
    if verdict:
        lines += ["", "Verdict (issue 9: >= 1.5x faster, bytes <= 1.1x the needed):", "", *verdict]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
