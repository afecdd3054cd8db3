"""STAC sources for dated stacks: a static catalog and a STAC API, both on loopback only.

Six small dated COGs are served by the range server of ``tests/test_remote.py``. A
static catalog (a collection of item files whose asset hrefs are URLs on that server,
and a copy served by it with relative hrefs) and a tiny STAC API (``GET /``,
``GET /conformance``, ``GET``/``POST /search`` filtering by collections, datetime,
bbox and the query extension) are the sources. ``reduce --stac`` must give the bytes
of ``reduce`` over the same files on disk.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import urllib.parse
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.test_remote import write_cog as remote_cog
from tilewise.errors import InputError, UsageError
from tilewise.sources.stac import Query, parse_datetime, parse_query, resolve_stac, search_stac

CLI = [sys.executable, "-m", "tilewise"]
SIZE = 384
BLOCK = 128
DATES = ["2021-01-10", "2021-02-10", "2021-03-10", "2021-04-10", "2021-05-10", "2021-06-10"]
CLOUD = [5, 50, 10, 80, 15, 30]
# Items 0-3 lie in one box, 4-5 in another (their bbox metadata; the rasters share one grid).
BOXES = [[10.0, 45.0, 11.0, 46.0]] * 4 + [[20.0, 45.0, 21.0, 46.0]] * 2
CONFORMS = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/item-search#query",
]


def name_of(i: int) -> str:
    return f"t_{DATES[i].replace('-', '')}.tif"


def write_cog(path: Path, data: np.ndarray) -> None:
    remote_cog(path, data, -9999.0, 3, block=BLOCK)


def field(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    data = np.round(rng.normal(20 + i, 3, (SIZE, SIZE)), 2).astype(np.float32)
    data[rng.random((SIZE, SIZE)) < 0.05] = -9999.0
    return data


def item_json(i: int, href: str, collection: str = "t2m") -> dict[str, Any]:
    minx, miny, maxx, maxy = BOXES[i]
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [],
        "id": f"t2m-{DATES[i]}",
        "collection": collection,
        "bbox": BOXES[i],
        "geometry": {"type": "Polygon", "coordinates": [[[minx, miny], [maxx, miny], [maxx, maxy], [minx, maxy], [minx, miny]]]},
        "properties": {"datetime": f"{DATES[i]}T00:00:00Z", "eo:cloud_cover": CLOUD[i], "platform": "sat-a" if i % 2 == 0 else "sat-b"},
        "links": [],
        "assets": {"data": {"href": href, "type": "image/tiff; application=geotiff; profile=cloud-optimized", "roles": ["data"]},
                   "thumbnail": {"href": "thumb.png", "roles": ["thumbnail"]}},
    }  # fmt: skip


def write_catalog(folder: Path, href_of: Any) -> Path:
    """A static collection of the six items (plus one item of another collection, in a child catalog)."""
    folder.mkdir(parents=True, exist_ok=True)
    links = [{"rel": "root", "href": "./collection.json", "type": "application/json"}]
    for i in range(len(DATES)):
        item = item_json(i, href_of(i))
        item["links"] = [{"rel": "root", "href": "../collection.json"}, {"rel": "parent", "href": "../collection.json"},
                         {"rel": "collection", "href": "../collection.json"}]  # fmt: skip
        (folder / item["id"]).mkdir(exist_ok=True)
        (folder / item["id"] / f"{item['id']}.json").write_text(json.dumps(item))
        links.append({"rel": "item", "href": f"./{item['id']}/{item['id']}.json", "type": "application/geo+json"})
    coll = {
        "type": "Collection", "stac_version": "1.0.0", "id": "t2m", "description": "daily test fields", "license": "proprietary",
        "extent": {"spatial": {"bbox": [[10.0, 45.0, 21.0, 46.0]]}, "temporal": {"interval": [[f"{DATES[0]}T00:00:00Z", f"{DATES[-1]}T00:00:00Z"]]}},
        "links": links,
    }  # fmt: skip
    (folder / "collection.json").write_text(json.dumps(coll))
    return folder / "collection.json"


# --------------------------------------------------------------------------- a tiny STAC API


def _match(item: dict[str, Any], body: dict[str, Any]) -> bool:
    props = item["properties"]
    if body.get("collections") and item["collection"] not in body["collections"]:
        return False
    if body.get("datetime"):
        lo, _, hi = str(body["datetime"]).partition("/") if "/" in str(body["datetime"]) else (body["datetime"], "", body["datetime"])
        when = props["datetime"]
        if lo not in ("", "..") and when < lo:
            return False
        if hi not in ("", "..") and when > hi:
            return False
    if body.get("bbox"):
        b, ib = [float(v) for v in body["bbox"]], item["bbox"]
        if not (ib[0] <= b[2] and ib[2] >= b[0] and ib[1] <= b[3] and ib[3] >= b[1]):
            return False
    ops = {"lt": lambda a, b: a < b, "lte": lambda a, b: a <= b, "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b,
           "eq": lambda a, b: a == b, "neq": lambda a, b: a != b}  # fmt: skip
    for prop, conds in (body.get("query") or {}).items():
        if prop not in props:
            return False
        if not all(ops[op](props[prop], want) for op, want in conds.items()):
            return False
    return True


def make_api(items: list[dict[str, Any]], requests: list[dict[str, Any]], conforms: list[str], page: int | None = None) -> ThreadingHTTPServer:
    """A STAC API answering ``/``, ``/conformance`` and ``/search``; it applies the query extension only (a CQL2 filter is ignored).

    With ``page``, a search answers at most that many items and a ``next`` link (GET:
    the query string plus ``token``; POST: the body merged with ``token``), as STAC API
    servers page their results.
    """

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _json(self, data: dict[str, Any], status: int = 200) -> None:
            raw = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _root(self) -> str:
            return f"http://127.0.0.1:{self.server.server_address[1]}"

        def _search(self, body: dict[str, Any], get: bool = False) -> None:
            requests.append(body)
            hits = [it for it in items if _match(it, body)]
            links: list[dict[str, Any]] = []
            start = int(body.get("token") or 0)
            if page is not None:
                if start + page < len(hits):
                    nxt = start + page
                    if get:
                        url = urllib.parse.urlsplit(self.path)
                        q = [(k, v) for k, v in urllib.parse.parse_qsl(url.query) if k != "token"] + [("token", str(nxt))]
                        links.append({"rel": "next", "href": f"{self._root()}/search?{urllib.parse.urlencode(q)}", "method": "GET"})
                    else:
                        links.append({"rel": "next", "href": f"{self._root()}/search", "method": "POST", "body": {"token": nxt}, "merge": True})
                hits = hits[start : start + page]
            self._json({"type": "FeatureCollection", "features": hits, "links": links})

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            if url.path in ("/", ""):
                root = self._root()
                self._json({
                    "type": "Catalog", "stac_version": "1.0.0", "id": "loopback", "description": "test API", "conformsTo": conforms,
                    "links": [{"rel": "self", "href": root + "/", "type": "application/json"},
                              {"rel": "root", "href": root + "/", "type": "application/json"},
                              {"rel": "conformance", "href": root + "/conformance", "type": "application/json"},
                              {"rel": "search", "href": root + "/search", "type": "application/geo+json", "method": "GET"},
                              {"rel": "search", "href": root + "/search", "type": "application/geo+json", "method": "POST"}],
                })  # fmt: skip
            elif url.path == "/conformance":
                self._json({"conformsTo": conforms})
            elif url.path == "/search":
                q = urllib.parse.parse_qs(url.query)
                body: dict[str, Any] = {}
                if "collections" in q:
                    body["collections"] = q["collections"][0].split(",")
                if "datetime" in q:
                    body["datetime"] = q["datetime"][0]
                if "bbox" in q:
                    body["bbox"] = [float(v) for v in q["bbox"][0].split(",")]
                if "query" in q:
                    body["query"] = json.loads(q["query"][0])
                if "token" in q:
                    body["token"] = q["token"][0]
                self._search(body, get=True)
            else:
                self._json({"code": "NotFound"}, 404)

        def do_POST(self) -> None:
            if urllib.parse.urlsplit(self.path).path != "/search":
                self._json({"code": "NotFound"}, 404)
                return
            n = int(self.headers.get("Content-Length") or 0)
            self._search(json.loads(self.rfile.read(n) or b"{}"))

    class Server(ThreadingHTTPServer):
        daemon_threads = True

    return Server(("127.0.0.1", 0), Handler)


# --------------------------------------------------------------------------- fixtures


@dataclass
class Setup:
    root: Path
    files_port: int
    api_url: str
    api_requests: list[dict[str, Any]]
    filter_api_url: str  # conforms to the CQL2 filter extension instead of query, and ignores the filter it is sent
    catalog: Path  # a local collection whose asset hrefs are absolute loopback URLs
    served_catalog: str  # the same collection served over HTTP, with relative asset hrefs
    paged_api_url: str  # the API answering two items per page, with "next" links

    def url(self, rel: str) -> str:
        return f"http://127.0.0.1:{self.files_port}/{rel}"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("stac")
    served = root / "served"
    (served / "data").mkdir(parents=True)
    for i in range(len(DATES)):
        write_cog(served / "data" / name_of(i), field(i))
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from tests.test_remote import serve; serve(sys.argv[1])", str(served)],
                            cwd=repo, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    base = f"http://127.0.0.1:{port}"
    catalog = write_catalog(root / "catalog", lambda i: f"{base}/data/{name_of(i)}")
    write_catalog(served / "catalog", lambda i: f"../../data/{name_of(i)}")
    items = [item_json(i, f"{base}/data/{name_of(i)}") for i in range(len(DATES))]
    items.append(item_json(0, f"{base}/data/{name_of(0)}", collection="other") | {"id": "other-item"})
    requests: list[dict[str, Any]] = []
    api = make_api(items, requests, CONFORMS)
    filter_api = make_api(
        items, requests, [*CONFORMS[:2], "https://api.stacspec.org/v1.0.0-rc.2/item-search#filter", "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json"]
    )
    paged_api = make_api(items, [], CONFORMS, page=2)
    for srv in (api, filter_api, paged_api):
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield Setup(root, port, f"http://127.0.0.1:{api.server_address[1]}/", requests, f"http://127.0.0.1:{filter_api.server_address[1]}/",
                    catalog, f"{base}/catalog/collection.json", f"http://127.0.0.1:{paged_api.server_address[1]}/")  # fmt: skip
    finally:
        api.shutdown()
        filter_api.shutdown()
        paged_api.shutdown()
        proc.terminate()
        proc.wait(timeout=10)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GDAL_HTTP_RETRY_DELAY": "0.05"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300, env=env)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


@pytest.fixture(scope="module")
def local_mean(setup: Setup, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    out = tmp_path_factory.mktemp("local") / "mean.tif"
    files = [str(setup.root / "served" / "data" / name_of(i)) for i in range(len(DATES))]
    r = run_cli("-q", "reduce", *files, "--date-pattern", "t_%Y%m%d.tif", "-o", str(out), "--workers", "2")
    assert r.returncode == 0, r.stderr
    return out.read_bytes()


def ids(source: str, **kw: Any) -> list[str]:
    return [h.item_id for h in search_stac(source, asset="data", **kw)]


ALL = [f"t2m-{d}" for d in DATES]


# --------------------------------------------------------------------------- the tests


def test_query_and_datetime_text() -> None:
    assert parse_query("eo:cloud_cover<20") == Query("eo:cloud_cover", "<", 20.0, "eo:cloud_cover<20")
    assert parse_query("platform = 'sat-a'").value == "sat-a"
    assert parse_query("platform!=sat-b").op == "!="
    for bad in ("cloud", "<20", "eo:cloud_cover<", "a<<3", ""):
        with pytest.raises(UsageError, match="is not a filter"):
            parse_query(bad)
    assert parse_datetime("2021-02/2021-03") == (dt.datetime(2021, 2, 1), dt.datetime(2021, 4, 1))
    assert parse_datetime("../2021-01-10") == (None, dt.datetime(2021, 1, 11))
    assert parse_datetime("2021-06") == (dt.datetime(2021, 6, 1), dt.datetime(2021, 7, 1))
    with pytest.raises(UsageError, match="starts after it ends"):
        parse_datetime("2021-05/2021-01")
    with pytest.raises(UsageError, match="is not a date"):
        parse_datetime("yesterday/2021")


@pytest.mark.parametrize("kind", ["static", "served", "api", "paged api"])
def test_selection_by_datetime_bbox_and_property(setup: Setup, kind: str) -> None:
    source = {"static": str(setup.catalog), "served": setup.served_catalog, "api": setup.api_url, "paged api": setup.paged_api_url}[kind]
    assert ids(source, collection="t2m") == ALL
    assert ids(source, collection="t2m", datetime="2021-02/2021-04") == ALL[1:4]
    assert ids(source, collection="t2m", datetime="2021-05-10/..") == ALL[4:]
    assert ids(source, collection="t2m", bbox=(19.5, 44.0, 25.0, 47.0)) == ALL[4:]
    assert ids(source, collection="t2m", query=["eo:cloud_cover<20"]) == [ALL[0], ALL[2], ALL[4]]
    assert ids(source, collection="t2m", query=["eo:cloud_cover>=15", "platform=sat-a"]) == [ALL[4]]
    assert ids(source, collection="t2m", datetime="2021", bbox=(10, 45, 11, 46), query=["eo:cloud_cover<=50"]) == ALL[:3]
    members = resolve_stac(source, collection="t2m", datetime="2021-01", asset="data")
    assert members == [(dt.datetime(2021, 1, 10), setup.url(f"data/{name_of(0)}"))]  # relative hrefs resolved against the served item


def test_the_api_gets_the_filters_and_the_result_is_also_filtered_here(setup: Setup) -> None:
    setup.api_requests.clear()
    assert ids(setup.api_url, collection="t2m", query=["eo:cloud_cover<20", "platform!=sat-b"]) == [ALL[0], ALL[2], ALL[4]]
    sent = setup.api_requests[-1]
    assert sent["collections"] == ["t2m"]
    ids(setup.api_url, datetime="2021-2-1/2021-03")
    assert setup.api_requests[-1]["datetime"] == "2021-02-01T00:00:00Z/2021-03-31T23:59:59.999999Z"
    ids(setup.api_url, datetime="../2021-03-10T00:00:00Z")
    assert setup.api_requests[-1]["datetime"] == "../2021-03-10T00:00:00Z"
    assert sent["query"] == {"eo:cloud_cover": {"lt": 20.0}, "platform": {"neq": "sat-b"}}
    # Without --collection the API's other collection comes back too: only the datetime filter applies.
    assert "other-item" in ids(setup.api_url, datetime="2021-01-10")
    # An API with the filter extension is sent CQL2; this one ignores it, and the items are filtered here.
    setup.api_requests.clear()
    assert ids(setup.filter_api_url, collection="t2m", query=["eo:cloud_cover<20", "platform!=sat-b"]) == [ALL[0], ALL[2], ALL[4]]
    sent = setup.api_requests[-1]
    assert "query" not in sent
    assert sent["filter"] == {"op": "and", "args": [{"op": "<", "args": [{"property": "eo:cloud_cover"}, 20.0]},
                                                    {"op": "<>", "args": [{"property": "platform"}, "sat-b"]}]}  # fmt: skip


@pytest.mark.parametrize("kind", ["static", "api"])
def test_reduce_from_stac_is_identical_to_reduce_over_the_files(setup: Setup, local_mean: bytes, kind: str, tmp_path: Path) -> None:
    source = str(setup.catalog) if kind == "static" else setup.api_url
    out = tmp_path / "mean.tif"
    r = run_cli("-q", "reduce", "--stac", source, "--collection", "t2m", "--asset", "data", "--stat", "mean", "-o", str(out), "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == local_mean


def test_stats_from_stac_match_the_files(setup: Setup, tmp_path: Path) -> None:
    files = [str(setup.root / "served" / "data" / name_of(i)) for i in (0, 2, 4)]
    a, b = tmp_path / "local.csv", tmp_path / "stac.csv"
    r = run_cli("-q", "stats", *files, "--date-pattern", "t_%Y%m%d.tif", "-o", str(a), "--workers", "2")
    assert r.returncode == 0, r.stderr
    r = run_cli("-q", "stats", "--stac", str(setup.catalog), "--query", "eo:cloud_cover<20", "--asset", "data", "-o", str(b), "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert b.read_text() == a.read_text()  # the file column names the asset's file, as for a stack of URLs


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--datetime", "2019"], "no STAC items in .* match collection t2m; datetime 2019"),
        (["--query", "eo:cloud_cover<1"], "match collection t2m; query eo:cloud_cover<1"),
        (["--asset", "nir"], "no selected STAC item of .* has an asset 'nir' \\(their assets: data, thumbnail\\)"),
        (["--query", "cloud cover < 20"], "--query 'cloud cover < 20' is not a filter"),
        (["--datetime", "2021-13"], "--datetime '2021-13'"),
    ],
)
def test_bad_selections_are_one_line_errors(setup: Setup, args: list[str], expected: str, tmp_path: Path) -> None:
    asset = [] if "--asset" in args else ["--asset", "data"]
    out = tmp_path / "x.tif"
    r = run_cli("reduce", "--stac", str(setup.catalog), "--collection", "t2m", *asset, *args, "-o", str(out))
    assert r.returncode == 2, r.stderr
    lines = error_lines(r.stderr)
    assert len(lines) == 1, r.stderr
    import re

    assert re.search(expected, lines[0]), lines[0]
    assert not out.exists()


def test_unreachable_api_names_the_url(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    url = f"http://127.0.0.1:{port}/stac/"
    r = run_cli("reduce", "--stac", url, "--asset", "data", "-o", str(tmp_path / "x.tif"))
    assert r.returncode == 2, r.stderr
    lines = error_lines(r.stderr)
    assert len(lines) == 1 and url in lines[0], r.stderr
    with pytest.raises(InputError, match="cannot reach STAC source"):
        resolve_stac(url, asset="data")


def test_stac_options_are_checked_together(setup: Setup, tmp_path: Path) -> None:
    out = str(tmp_path / "x.tif")
    for args, expected in [
        (["--stac", str(setup.catalog)], "--stac needs --asset NAME"),
        (["--asset", "data"], "--asset is given without --stac"),
        (["--stac", str(setup.catalog), "--asset", "data", "--date-pattern", "t_%Y%m%d.tif"], "--date-pattern cannot be used with --stac"),
        (["--stac", str(setup.catalog), "--asset", "data", str(setup.catalog)], "cannot be combined"),
        (["--stac", str(setup.catalog), "--asset", "data", "--stac-bbox", "1,2,3"], "--stac-bbox '1,2,3'"),
    ]:
        r = run_cli("reduce", *args, "-o", out)
        assert r.returncode == 2, (args, r.stderr)
        lines = error_lines(r.stderr)
        assert len(lines) == 1 and expected in lines[0], (args, r.stderr)


def test_fingerprint_follows_the_items_and_jobs_without_stac_keep_theirs(setup: Setup, tmp_path: Path) -> None:
    import shutil

    from tilewise.api import job_from_options
    from tilewise.job_reduce import plan_reduce
    from tilewise.timeseries import reduce_job

    cat = tmp_path / "catalog"
    shutil.copytree(setup.catalog.parent, cat)
    job = job_from_options({"command": "reduce", "inputs": [], "output": str(tmp_path / "m.tif"), "stac": str(cat / "collection.json"),
                            "asset": "data", "collection": "t2m", "query": ["eo:cloud_cover<20"]})  # fmt: skip
    assert job.reduce is not None and job.reduce.stack.stac is not None
    first = plan_reduce(job, job.reduce).fingerprint
    assert plan_reduce(job, job.reduce).fingerprint == first
    item = cat / ALL[2] / f"{ALL[2]}.json"
    doc = json.loads(item.read_text())
    doc["properties"]["datetime"] = "2021-03-11T00:00:00Z"  # same file, another date
    item.write_text(json.dumps(doc))
    assert plan_reduce(job, job.reduce).fingerprint != first
    # A stack of files has no "stac" in its fingerprint payload (fingerprints from before STAC stay valid).
    files = [str(setup.root / "served" / "data" / name_of(i)) for i in range(2)]
    plain = reduce_job(files, str(tmp_path / "p.tif"), date_pattern="t_%Y%m%d.tif")
    assert "stac" not in plain.fingerprint_payload()["reduce"]["stack"]
    assert "stac" in job.fingerprint_payload()["reduce"]["stack"]


def test_items_on_other_grids_need_align(setup: Setup, tmp_path: Path) -> None:
    other = setup.root / "served" / "data" / "coarse_20210301.tif"
    if not other.exists():
        write_cog(other, field(9)[::2, ::2].copy())
    items = [item_json(0, setup.url(f"data/{name_of(0)}")), item_json(2, setup.url("data/coarse_20210301.tif")) | {"id": "coarse"}]
    fc = tmp_path / "items.json"
    fc.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    out = tmp_path / "m.tif"
    r = run_cli("reduce", "--stac", str(fc), "--asset", "data", "-o", str(out))
    assert r.returncode == 2, r.stderr
    lines = error_lines(r.stderr)
    assert len(lines) == 1 and "coarse is on a different grid than t2m-2021-01-10" in lines[0] and "--align" in lines[0], r.stderr
    r = run_cli("-q", "reduce", "--stac", str(fc), "--asset", "data", "--align", "nearest", "-o", str(out), "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert out.exists()


# --------------------------------------------------------------------------- STAC items as a mosaic (ndvi, calc) and target grids

TILE = 96
RES = 10.0
X0, Y0 = 300000.0, 5600000.0  # conftest.write_raster's default origin, EPSG:32632
# Four adjacent tiles (row, col) and a later one across the middle: where it overlaps them, the earlier (first) item wins.
MOSAIC = [("tile-00", "2021-06-01", 0, 0, 5), ("tile-01", "2021-06-02", 0, TILE, 15), ("tile-10", "2021-06-03", TILE, 0, 25),
          ("tile-11", "2021-06-04", TILE, TILE, 35), ("late", "2021-06-20", 64, 64, 45)]  # fmt: skip


@dataclass
class Tiles:
    folder: Path
    items: Path  # a FeatureCollection of the five items, hrefs on the loopback server
    red: list[Path]  # the local files, in date order
    nir: list[Path]
    features: list[dict[str, Any]]


def tile_data(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.integers(1, 6000, (TILE, TILE)).astype(np.uint16)
    data[rng.random((TILE, TILE)) < 0.05] = 0  # nodata holes: the next item shows through
    return data


def lonlat_bbox(path: Path) -> list[float]:
    import rasterio
    from rasterio.warp import transform_bounds

    with rasterio.open(path) as ds:
        return [round(v, 6) for v in transform_bounds(ds.crs, "EPSG:4326", *ds.bounds, densify_pts=21)]


def mosaic_item(item_id: str, date: str, cloud: int, assets: dict[str, str], bbox: list[float]) -> dict[str, Any]:
    minx, miny, maxx, maxy = bbox
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": "s2", "bbox": bbox,
            "geometry": {"type": "Polygon", "coordinates": [[[minx, miny], [maxx, miny], [maxx, maxy], [minx, maxy], [minx, miny]]]},
            "properties": {"datetime": f"{date}T10:00:00Z", "eo:cloud_cover": cloud},
            "links": [], "assets": {k: {"href": v, "type": "image/tiff"} for k, v in assets.items()}}  # fmt: skip


def feature_collection(path: Path, features: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


@pytest.fixture(scope="module")
def tiles(setup: Setup) -> Tiles:
    from affine import Affine

    from tests.conftest import write_raster

    folder = setup.root / "served" / "tiles"
    folder.mkdir(parents=True, exist_ok=True)
    red, nir, features = [], [], []
    for k, (item_id, date, r, c, cloud) in enumerate(MOSAIC):
        t = Affine(RES, 0.0, X0 + c * RES, 0.0, -RES, Y0 - r * RES)
        for band, files, seed in (("B04", red, 2 * k), ("B08", nir, 2 * k + 1)):
            p = write_raster(folder / f"{item_id}_{band}.tif", tile_data(100 + seed), nodata=0, transform=t, blocksize=64)
            files.append(p)
        hrefs = {"B04": setup.url(f"tiles/{item_id}_B04.tif"), "B08": setup.url(f"tiles/{item_id}_B08.tif"), "thumbnail": "thumb.png"}
        features.append(mosaic_item(item_id, date, cloud, hrefs, lonlat_bbox(red[-1])))
    return Tiles(folder, feature_collection(setup.root / "mosaic_items.json", features), red, nir, features)


def merged(files: list[Path]) -> tuple[np.ndarray, Any]:
    """The files merged with rasterio.merge's "first" method, in the order given (the reference, independent of tilewise)."""
    import rasterio
    from rasterio.merge import merge

    srcs = [rasterio.open(p) for p in files]
    try:
        arr, transform = merge(srcs, method="first")
    finally:
        for s in srcs:
            s.close()
    return arr[0], transform


def read(path: Path) -> tuple[np.ndarray, Any, Any]:
    import rasterio

    with rasterio.open(path) as ds:
        return ds.read(1), ds.transform, ds.crs


def test_ndvi_over_a_stac_mosaic_equals_ndvi_over_the_merged_files(setup: Setup, tiles: Tiles, tmp_path: Path) -> None:
    from tests.conftest import write_raster

    (red, t), (nir, t2) = merged(tiles.red), merged(tiles.nir)
    assert t == t2
    write_raster(tmp_path / "red.tif", red, nodata=0, transform=t)
    write_raster(tmp_path / "nir.tif", nir, nodata=0, transform=t)
    ref = tmp_path / "ref.tif"
    r = run_cli("-q", "ndvi", "--red", str(tmp_path / "red.tif"), "--nir", str(tmp_path / "nir.tif"), "-o", str(ref), "--workers", "2")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "ndvi.tif"
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(setup.url("_reset"), data=b"{}", method="POST"), timeout=10).read()
    r = run_cli("-q", "ndvi", "--stac", str(tiles.items), "--red", "B04", "--nir", "B08", "-o", str(out), "--workers", "2", "--tile-size", "64")
    assert r.returncode == 0, r.stderr
    with urllib.request.urlopen(setup.url("_log"), timeout=10) as resp:
        paths = [str(rec.get("path")) for rec in json.loads(resp.read())]
    assert any(p.endswith("_B04.tif") for p in paths)
    assert not [p for p in paths if p.endswith("/") or ".aux" in p or ".xml" in p], paths  # no folder listing, no sidecar probing
    got, want = read(out), read(ref)
    assert got[1] == want[1] and got[2] == want[2]
    assert got[0].shape == (2 * TILE, 2 * TILE)
    assert np.array_equal(got[0], want[0], equal_nan=True)
    assert out.read_bytes() == ref.read_bytes()  # the same grid, values and metadata: the same file
    # The Python API takes the same options.
    import tilewise

    api_out = tmp_path / "api.tif"
    tilewise.ndvi(output=str(api_out), stac=str(tiles.items), red="B04", nir="B08", workers=2, tile_size=64)
    assert np.array_equal(read(api_out)[0], want[0], equal_nan=True)
    # And a job file (tilewise run): the same options as keys.
    job = tmp_path / "job.toml"
    job_out = tmp_path / "job.tif"
    job.write_text(f'command = "ndvi"\nstac = "{tiles.items}"\nred = "B04"\nnir = "B08"\noutput = "{job_out}"\ntile_size = 64\n', encoding="utf-8")
    r = run_cli("-q", "run", str(job))
    assert r.returncode == 0, r.stderr
    assert job_out.read_bytes() == ref.read_bytes()


def test_calc_with_two_assets_equals_numpy_on_the_merged_arrays(tiles: Tiles, tmp_path: Path) -> None:
    (red, t), (nir, _) = merged(tiles.red), merged(tiles.nir)
    out = tmp_path / "calc.tif"
    r = run_cli("-q", "calc", "nir * 2 - red", "--stac", str(tiles.items), "-i", "red=B04", "-i", "nir=B08", "-o", str(out), "--workers", "2")
    assert r.returncode == 0, r.stderr
    got, transform, _ = read(out)
    want = np.where((red != 0) & (nir != 0), nir.astype(np.float32) * np.float32(2) - red.astype(np.float32), np.nan).astype(np.float32)
    assert transform == t
    assert np.array_equal(got, want, equal_nan=True)


def test_selection_by_datetime_query_and_bbox_applies_to_the_mosaic(tiles: Tiles, tmp_path: Path) -> None:
    def run(*args: str) -> tuple[np.ndarray, Any, Any]:
        out = tmp_path / "sel.tif"
        r = run_cli("-q", "calc", "red", "--stac", str(tiles.items), "-i", "red=B04", "-o", str(out), "--overwrite", "--workers", "2", *args)
        assert r.returncode == 0, (args, r.stderr)
        return read(out)

    top, t, _ = run("--datetime", "2021-06-01/2021-06-02")  # the top row only
    want, _ = merged(tiles.red[:2])
    assert top.shape == (TILE, 2 * TILE) and t.c == X0 and t.f == Y0
    assert np.array_equal(top, np.where(want != 0, want, np.nan).astype(np.float32), equal_nan=True)
    low, t, _ = run("--query", "eo:cloud_cover>20")  # tile-10, tile-11 and the late item
    want, wt = merged(tiles.red[2:])
    assert low.shape == want.shape and t == wt
    assert np.array_equal(low, np.where(want != 0, want, np.nan).astype(np.float32), equal_nan=True)
    # A box inside tile-00: only that item is selected, and the output covers the box.
    b = tiles.features[0]["bbox"]
    box = [b[0] + 0.1 * (b[2] - b[0]), b[1] + 0.6 * (b[3] - b[1]), b[0] + 0.4 * (b[2] - b[0]), b[1] + 0.9 * (b[3] - b[1])]
    part, t, _ = run("--stac-bbox", ",".join(f"{v:.6f}" for v in box))
    assert 0 < part.shape[0] < TILE and 0 < part.shape[1] < TILE
    col, row = round((t.c - X0) / RES), round((Y0 - t.f) / RES)
    first = read(tiles.red[0])[0]
    window = first[row : row + part.shape[0], col : col + part.shape[1]]
    assert np.array_equal(part, np.where(window != 0, window, np.nan).astype(np.float32), equal_nan=True)


def target(files: list[Path], crs: str, res: float) -> tuple[Any, int, int]:
    """The -tap grid covering ``files`` in ``crs`` at ``res`` (computed here, independently of tilewise)."""
    import math

    import rasterio
    from affine import Affine
    from rasterio.warp import transform_bounds

    boxes = []
    for p in files:
        with rasterio.open(p) as ds:
            boxes.append(transform_bounds(ds.crs, crs, *ds.bounds, densify_pts=21))
    x0, y0 = math.floor(min(b[0] for b in boxes) / res) * res, math.floor(min(b[1] for b in boxes) / res) * res
    x1, y1 = math.ceil(max(b[2] for b in boxes) / res) * res, math.ceil(max(b[3] for b in boxes) / res) * res
    return Affine(res, 0, x0, 0, -res, y1), round((y1 - y0) / res), round((x1 - x0) / res)


def warped(path: Path, crs: str, transform: Any, shape: tuple[int, int], resampling: str, dtype: str, tolerance: float = 0.0,
           fixed_scale: bool = False) -> np.ndarray:  # fmt: skip
    """``path`` reprojected with rasterio.warp.reproject; ``fixed_scale``: GDAL's XSCALE/YSCALE set to the ratio of the pixel sizes."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.warp import calculate_default_transform, reproject

    with rasterio.open(path) as ds:
        nd = ds.nodata
        out = np.full(shape, nd, dtype=dtype)
        extra = {}
        if fixed_scale:
            st, _, _ = calculate_default_transform(ds.crs, crs, ds.width, ds.height, *ds.bounds)
            extra = {"XSCALE": repr(abs(st.a) / abs(transform.a)), "YSCALE": repr(abs(st.e) / abs(transform.e))}
        reproject(rasterio.band(ds, 1), out, src_nodata=nd, dst_nodata=nd, dst_transform=transform, dst_crs=crs, resampling=Resampling[resampling],
                  tolerance=tolerance, **extra)  # fmt: skip
    return out


def test_items_warped_to_crs_and_resolution_match_rasterio_reproject(tiles: Tiles, tmp_path: Path) -> None:
    crs, res = "EPSG:32633", 15.0
    transform, h, w = target(tiles.red, crs, res)
    want = np.zeros((h, w), dtype=np.uint16)
    for p in tiles.red:  # first valid wins, in date order
        layer = warped(p, crs, transform, (h, w), "bilinear", "uint16", fixed_scale=True)
        want = np.where(want == 0, layer, want)
    out = tmp_path / "warped.tif"
    r = run_cli("-q", "calc", "red", "--stac", str(tiles.items), "-i", "red=B04", "--crs", crs, "--resolution", "15", "--align", "bilinear",
                "-o", str(out), "--workers", "2")  # fmt: skip
    assert r.returncode == 0, r.stderr
    got, t, got_crs = read(out)
    assert got_crs.to_epsg() == 32633 and got.shape == (h, w)
    assert all(abs(a - b) < 1e-6 for a, b in zip(t, transform, strict=True))
    ok_got, ok_want = ~np.isnan(got), want != 0
    assert (ok_got != ok_want).mean() < 0.01  # footprints agree but for edge pixels
    both = ok_got & ok_want
    assert both.mean() > 0.8
    assert np.abs(got[both] - want[both]).max() <= 1.0  # GDAL's warper through a VRT vs reproject: rounding of uint16 only
    assert (got[both] == want[both]).mean() > 0.9
    # Tiling invariance: other tiles and executor, the same bytes.
    other = tmp_path / "warped_serial.tif"
    r = run_cli("-q", "calc", "red", "--stac", str(tiles.items), "-i", "red=B04", "--crs", crs, "--resolution", "15", "--align", "bilinear",
                "-o", str(other), "--executor", "serial", "--tile-size", "32")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert other.read_bytes() == out.read_bytes()


def smooth(i: int, shape: tuple[int, int]) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    data = (20 + i + 5 * np.sin(xx / 40 + i) + 3 * np.cos(yy / 60)).astype(np.float32)
    data[np.random.default_rng(i).random(shape) < 0.02] = -9999.0
    return data


def test_reduce_from_stac_onto_crs_and_resolution_matches_reproject(tmp_path: Path) -> None:
    from affine import Affine

    from tests.conftest import write_raster

    # Three dated members on two grids (10 m, and 20 m shifted): smooth fields, so that warping differences stay small.
    grids = [Affine(10, 0, X0, 0, -10, Y0), Affine(20, 0, X0 + 55, 0, -20, Y0 - 35), Affine(10, 0, X0 + 300, 0, -10, Y0)]
    files, features = [], []
    for i, t in enumerate(grids):
        p = write_raster(tmp_path / f"t_2021070{i + 1}.tif", smooth(i, (120, 140)), nodata=-9999.0, transform=t, blocksize=64)
        files.append(p)
        features.append(mosaic_item(f"m{i}", f"2021-07-0{i + 1}", 5, {"data": str(p)}, lonlat_bbox(p)))
    fc = feature_collection(tmp_path / "members.json", features)
    crs, res = "EPSG:32633", 25.0
    transform, h, w = target(files, crs, res)
    layers = np.stack([warped(p, crs, transform, (h, w), "bilinear", "float32", tolerance=0.125) for p in files]).astype(np.float64)
    layers[layers == -9999.0] = np.nan
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = np.nanmean(layers, axis=0)
    out = tmp_path / "mean.tif"
    r = run_cli("-q", "reduce", "--stac", str(fc), "--asset", "data", "--crs", crs, "--resolution", "25", "--align", "bilinear",
                "-o", str(out), "--workers", "2", "--tile-size", "64")  # fmt: skip
    assert r.returncode == 0, r.stderr
    got, t, got_crs = read(out)
    assert got_crs.to_epsg() == 32633 and got.shape == (h, w)
    assert all(abs(a - b) < 1e-6 for a, b in zip(t, transform, strict=True))
    ok_got, ok_want = ~np.isnan(got), ~np.isnan(want)
    assert (ok_got != ok_want).mean() < 0.02
    both = ok_got & ok_want
    assert both.mean() > 0.5
    assert np.allclose(got[both], want[both], atol=0.1)  # the approximate transformer of GDAL's warper (1/8 pixel) on smooth fields
    # The same stack given as files is put on the same grid: the same bytes.
    by_files = tmp_path / "files.tif"
    r = run_cli("-q", "reduce", *map(str, files), "--date-pattern", "t_%Y%m%d.tif", "--crs", crs, "--resolution", "25", "--align", "bilinear",
                "-o", str(by_files), "--workers", "2", "--tile-size", "64")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert by_files.read_bytes() == out.read_bytes()
    # stats onto the same grid: each date's count of valid pixels is that of the reprojected member
    table = tmp_path / "s.csv"
    r = run_cli("-q", "stats", "--stac", str(fc), "--asset", "data", "--crs", crs, "--resolution", "25", "--align", "bilinear",
                "-o", str(table), "--workers", "2")  # fmt: skip
    assert r.returncode == 0, r.stderr
    counts = [int(line.split(",")[3]) for line in table.read_text().splitlines()[1:]]
    want_counts = [int((~np.isnan(layer)).sum()) for layer in layers]
    assert all(abs(a - b) <= 0.02 * b for a, b in zip(counts, want_counts, strict=True)), (counts, want_counts)


def test_target_grid_options_change_the_fingerprint_and_jobs_without_them_keep_theirs(setup: Setup, tiles: Tiles, tmp_path: Path) -> None:
    from tilewise.api import calc_job
    from tilewise.job import plan_job
    from tilewise.timeseries import reduce_job

    def fp(**kw: Any) -> str:
        job = calc_job("red", {"red": "B04"}, str(tmp_path / "c.tif"), stac=str(tiles.items), **kw)
        return plan_job(job).fingerprint

    base = fp()
    assert fp() == base
    assert fp(resolution=20) != base
    assert fp(crs="EPSG:32633", resolution=20) != fp(resolution=20)
    assert fp(datetime="2021-06-01/2021-06-02") != base
    # Jobs without STAC inputs or target grids serialize (and fingerprint) as before these fields existed.
    plain = calc_job("a", {"a": str(tiles.red[0])}, str(tmp_path / "p.tif")).fingerprint_payload()
    assert set(plain["items"][0]) == {"inputs", "output"} and "stac" not in plain["items"][0]["inputs"][0]
    files = [str(setup.root / "served" / "data" / name_of(i)) for i in range(2)]
    stack = reduce_job(files, str(tmp_path / "m.tif"), date_pattern="t_%Y%m%d.tif").fingerprint_payload()["reduce"]["stack"]
    assert not {"crs", "resolution", "resampling"} & set(stack)
    gridded = reduce_job(files, str(tmp_path / "m.tif"), date_pattern="t_%Y%m%d.tif", resolution="20", align="bilinear")
    assert gridded.fingerprint_payload()["reduce"]["stack"]["resolution"] == [20.0, 20.0]


def test_mosaic_bad_inputs_are_one_line_errors(setup: Setup, tiles: Tiles, tmp_path: Path) -> None:
    lacking = [dict(f) for f in tiles.features]
    lacking[1] = {**lacking[1], "assets": {"B04": lacking[1]["assets"]["B04"]}}
    fc_lacking = feature_collection(tmp_path / "lacking.json", lacking)
    other_crs = tmp_path / "utm33.tif"
    import rasterio
    from rasterio.warp import calculate_default_transform

    with rasterio.open(tiles.red[0]) as ds:
        t, w, h = calculate_default_transform(ds.crs, "EPSG:32633", ds.width, ds.height, *ds.bounds)
    from tests.conftest import write_raster

    write_raster(other_crs, tile_data(7)[:h, :w] if h <= TILE and w <= TILE else np.ones((h, w), np.uint16), nodata=0, crs="EPSG:32633",
                 transform=t)  # fmt: skip
    mixed = [*tiles.features[:2], mosaic_item("utm33", "2021-06-05", 5, {"B04": str(other_crs), "B08": str(other_crs)}, tiles.features[0]["bbox"])]
    fc_mixed = feature_collection(tmp_path / "mixed.json", mixed)
    items = str(tiles.items)
    out = tmp_path / "x.tif"
    cases = [
        (["ndvi", "--stac", items, "--red", "B04", "--nir", "B99"], "no selected STAC item of .* has an asset 'B99' \\(their assets: B04, B08, thumbnail\\)"),
        (["calc", "a", "--stac", str(fc_lacking), "-i", "a=B08"], "STAC item 'tile-01' has no asset 'B08' \\(its assets: B04\\)"),
        (["ndvi", "--stac", items, "--red", "B04", "--nir", "B08", "--resolution", "0"], "--resolution 0 is not positive"),
        (["ndvi", "--stac", items, "--red", "B04", "--nir", "B08", "--resolution", "ten"], "--resolution 'ten' is not a pixel size"),
        (["calc", "a", "--stac", items, "-i", "a=B04", "--crs", "EPSG:999999"], "--crs 'EPSG:999999' is not a CRS GDAL knows"),
        (["calc", "a", "--stac", items, "-i", "a=B04", "--crs", "EPSG:32633", "--align", "fuzzy"], "unknown resampling 'fuzzy'"),
        (["ndvi", "--stac", items, "--red", "B04"], "--stac needs --red ASSET and --nir ASSET"),
        (["ndvi", str(tiles.red[0]), "--red", "1", "--nir", "1", "--stac-bbox", "1,2,3,4"], "--stac-bbox is given without --stac"),
        (["calc", "a", "-i", f"a={tiles.red[0]}", "--crs", "EPSG:32633"], "--crs is given without --stac"),
        (["ndvi", "--stac", items, "--red", "B04", "--nir", "B08", "--datetime", "2020"], "no STAC items in .* match datetime 2020"),
        (["ndvi", "--stac", items, "--red", "B04", "--nir", "B08", str(tiles.red[0])], "give either INPUT files or --stac, not both"),
        (["calc", "a", "--stac", str(fc_mixed), "-i", "a=B04"], "the rasters are in several CRSs: .* \\(STAC item 'utm33' asset 'B04'\\) .*--crs"),
        (["reduce", "--stac", str(setup.catalog), "--asset", "data", "--resolution", "-5"], "--resolution -5 is not positive"),
        (["stats", "--stac", str(setup.catalog), "--asset", "data", "--crs", "nowhere"], "--crs 'nowhere' is not a CRS GDAL knows"),
    ]
    import re

    for args, expected in cases:
        target_out = str(tmp_path / "x.csv") if args[0] == "stats" else str(out)
        r = run_cli(*args, "-o", target_out)
        assert r.returncode == 2, (args, r.stderr)
        lines = error_lines(r.stderr)
        assert len(lines) == 1 and re.search(expected, lines[0]), (args, r.stderr)
        assert not out.exists()
