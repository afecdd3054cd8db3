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


def make_api(items: list[dict[str, Any]], requests: list[dict[str, Any]], conforms: list[str]) -> ThreadingHTTPServer:
    """A STAC API answering ``/``, ``/conformance`` and ``/search``; it applies the query extension only (a CQL2 filter is ignored)."""

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

        def _search(self, body: dict[str, Any]) -> None:
            requests.append(body)
            hits = [it for it in items if _match(it, body)]
            self._json({"type": "FeatureCollection", "features": hits, "links": []})

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
                self._search(body)
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
    for srv in (api, filter_api):
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield Setup(root, port, f"http://127.0.0.1:{api.server_address[1]}/", requests, f"http://127.0.0.1:{filter_api.server_address[1]}/",
                    catalog, f"{base}/catalog/collection.json")  # fmt: skip
    finally:
        api.shutdown()
        filter_api.shutdown()
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


@pytest.mark.parametrize("kind", ["static", "served", "api"])
def test_selection_by_datetime_bbox_and_property(setup: Setup, kind: str) -> None:
    source = {"static": str(setup.catalog), "served": setup.served_catalog, "api": setup.api_url}[kind]
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
        (["--asset", "nir"], "STAC item 't2m-2021-01-10' has no asset 'nir' \\(its assets: data, thumbnail\\)"),
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
