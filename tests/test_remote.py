"""Inputs read in place over HTTP (and S3 through GDAL): ranged reads only, identical bytes, faults retried, clear errors.

Everything runs on 127.0.0.1. The server (this file run as a script) honours single
``Range: bytes=a-b`` requests, sends an ETag and Last-Modified, logs every request
(method, path, Range, status, bytes sent) and injects faults on demand: a 503 answer,
a connection reset before the answer, or an answer cut off half way. Paths under
``/private/`` answer 403. It runs in a process of its own: GDAL (through rasterio)
may hold the GIL while it waits on HTTP, so a server thread in a reading process
could not answer. With ``AWS_S3_ENDPOINT`` pointing at it (path-style, unsigned) it
also serves ``s3://BUCKET/KEY``, whose reads are ranged GETs of ``/BUCKET/KEY``.

The inputs are Cloud-Optimized GeoTIFFs in 512-pixel DEFLATE blocks: a 2048 x 2048
two-band uint16 scene and five dated 2048 x 2048 float32 rasters, ~10 MB each, so a
whole-file GET would show in the byte counts.
"""

from __future__ import annotations

import email.utils
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from tests.conftest import two_band_scene, write_raster
from tilewise.errors import InputError
from tilewise.rasterfile import copy_raster
from tilewise.remote import HTTP_ENV, gdal_name, http_url, is_remote, open_error, remote_env, remote_identity, url_name

# --------------------------------------------------------------------------- the server


def make_server(root: Path) -> ThreadingHTTPServer:
    """A range-honouring file server for ``root`` on 127.0.0.1 that logs requests and injects faults.

    Control (not logged): ``GET /_log`` returns the log as JSON; ``POST /_reset``
    clears log and faults; ``POST /_faults`` with a JSON object sets them:
    ``every`` (fault every Nth ranged GET, each (path, range) at most once, so GDAL's
    retry of it succeeds), ``modes`` (a cycle of ``"503"``, ``"reset"``,
    ``"truncate"``), ``limit`` (at most this many faults), ``latency`` (seconds
    before each answer).
    """
    lock = threading.Lock()
    log: list[dict[str, Any]] = []
    faults: dict[str, Any] = {}
    seen: set[tuple[str, str]] = set()
    counter = [0]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers: GDAL reuses connections

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(n) or b"{}")
            with lock:
                if self.path == "/_reset":
                    log.clear()
                    faults.clear()
                elif self.path == "/_faults":
                    faults.clear()
                    faults.update(body)
                seen.clear()
                counter[0] = 0
            self._answer(200, b"{}")

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            if self.path == "/_log":
                with lock:
                    data = json.dumps(log).encode()
                self._answer(200, data)
                return
            self._serve(body=True)

        def _answer(self, status: int, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self, status: int, nbytes: int, fault: str = "") -> None:
            with lock:
                log.append({"method": self.command, "path": self.path, "range": self.headers.get("Range"), "status": status, "bytes": nbytes,
                            "fault": fault})  # fmt: skip

        def _fault(self) -> str:
            """The fault to inject into this request, or ""."""
            rng = self.headers.get("Range")
            with lock:
                every = int(faults.get("every", 0))
                if not every or self.command != "GET" or rng is None or len(seen) >= int(faults.get("limit", 1 << 30)):
                    return ""
                counter[0] += 1
                key = (self.path, rng)
                if counter[0] % every or key in seen:
                    return ""
                seen.add(key)
                modes = faults.get("modes", ["503"])
                return str(modes[(len(seen) - 1) % len(modes)])

        def _reset_connection(self) -> None:
            # SO_LINGER 0: closing sends a TCP reset, "Connection reset by peer" to the client.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.rfile.close()
            self.connection.close()

        def _serve(self, body: bool) -> None:
            latency = float(faults.get("latency", 0.0))
            if latency:
                time.sleep(latency)
            rel = self.path.split("?")[0].lstrip("/")
            path = (root / rel).resolve()
            if rel.startswith("private/"):
                self._record(403, 0)
                self.send_error(403)
                return
            if root not in path.parents or not path.is_file():
                self._record(404, 0)
                self.send_error(404)
                return
            fault = self._fault()
            if fault == "503":
                self._record(503, 0, fault)
                self.send_error(503)
                return
            if fault == "reset":
                self._record(0, 0, fault)
                self._reset_connection()
                return
            st = path.stat()
            size = st.st_size
            start, end, status = 0, size - 1, 200
            rng = self.headers.get("Range")
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", (rng or "").strip())
            if m:
                start, status = int(m.group(1)), 206
                end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
                if start >= size:
                    self._record(416, 0)
                    self.send_error(416)
                    return
            n = end - start + 1
            data = b""
            if body:
                with open(path, "rb") as fh:
                    fh.seek(start)
                    data = fh.read(n)
            self.send_response(status)
            self.send_header("Content-Length", str(n))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", f'"{size:x}-{st.st_mtime_ns:x}"')
            self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if not body:
                self._record(status, 0)
                return
            if fault == "truncate":
                self.wfile.write(data[: n // 2])
                self._record(status, n // 2, fault)
                self._reset_connection()
                return
            self.wfile.write(data)
            self._record(status, n)

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client hanging up (after an injected fault, or a cancelled read) is not news

    return Server(("127.0.0.1", 0), Handler)


def serve(root: str) -> None:
    """Run the server on ``root`` until killed, after printing its port (the test starts it in a process of its own)."""
    srv = make_server(Path(root).resolve())
    print(srv.server_address[1], flush=True)
    srv.serve_forever()


# --------------------------------------------------------------------------- the tests

CLI = [sys.executable, "-m", "tilewise"]
SIZE = 2048
BLOCK = 512
CHUNK = 16384  # GDAL's /vsicurl/ download granularity
DATES = ["20210115", "20210215", "20210315", "20210415", "20210515"]
PATTERN = "t_%Y%m%d.tif"
# GDAL backs off from this delay; the user's variable wins over tilewise's default of 1 s.
FAST_RETRY = {"GDAL_HTTP_RETRY_DELAY": "0.05"}


@dataclass
class Server:
    root: Path
    port: int

    def url(self, rel: str) -> str:
        return f"http://127.0.0.1:{self.port}/{rel}"

    def _post(self, what: str, body: dict[str, Any]) -> None:
        req = urllib.request.Request(self.url(what), data=json.dumps(body).encode(), method="POST")
        urllib.request.urlopen(req, timeout=10).read()

    def reset(self) -> None:
        self._post("_reset", {})

    def faults(self, **kw: Any) -> None:
        self._post("_faults", kw)

    def log(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(self.url("_log"), timeout=10) as resp:
            return list(json.loads(resp.read()))


def write_cog(path: Path, data: np.ndarray, nodata: float, predictor: int, block: int = BLOCK) -> Path:
    """A COG in ``block``-pixel DEFLATE blocks (with the overviews the COG driver adds); shared with the S3 and STAC tests."""
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = path.with_suffix(".plain.tif")
    write_raster(plain, data, nodata=nodata, blocksize=block)
    copy_raster(plain, path, "COG", {"BLOCKSIZE": block, "COMPRESS": "DEFLATE", "PREDICTOR": predictor})
    plain.unlink()
    return path


def dated_field(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    field = (20 + 5 * np.sin(xx / 40 + i) + 3 * np.cos(yy / 60) + rng.normal(0, 0.5, (SIZE, SIZE))).astype(np.float32)
    field = np.round(field, 2)
    field[rng.random((SIZE, SIZE)) < 0.05] = -9999.0
    return field


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("served")
    write_cog(root / "scene.tif", two_band_scene(SIZE, SIZE, seed=3), nodata=0, predictor=2)
    for i, d in enumerate(DATES):
        write_cog(root / "stack" / f"t_{d}.tif", dated_field(i), nodata=-9999.0, predictor=3)
    (root / "private").mkdir()
    os.link(root / "scene.tif", root / "private" / "scene.tif")
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from tests.test_remote import serve; serve(sys.argv[1])", str(root)],
                            cwd=repo, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    try:
        yield Server(root, port)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.glob(f"{out.name}*")) + sorted(p.name for p in out.parent.glob(f".{out.name}.*") if p.is_file())


def ndvi(src: str, out: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli("-q", "ndvi", src, "--red", "1", "--nir", "2", "-o", str(out), "--workers", "2", *extra, env=env)


def mean(srcs: list[str], out: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli("-q", "reduce", *srcs, "--date-pattern", PATTERN, "-o", str(out), "--workers", "2", *extra, env=env)


def stack_urls(server: Server) -> list[str]:
    return [server.url(f"stack/t_{d}.tif") for d in DATES]


def block_bytes(path: Path, window: tuple[int, int, int, int] | None = None) -> int:
    """Bytes of the full-resolution blocks that (row0, col0, row1, col1) touches (all blocks when None)."""
    r0, c0, r1, c1 = window or (0, 0, SIZE, SIZE)
    total = 0
    with rasterio.open(path) as ds:
        for r in range(r0 // BLOCK, (r1 - 1) // BLOCK + 1):
            for c in range(c0 // BLOCK, (c1 - 1) // BLOCK + 1):
                total += int(ds.get_tag_item(f"BLOCK_SIZE_{c}_{r}", "TIFF", bidx=1))
    return total


def block_spans(path: Path, window: tuple[int, int, int, int]) -> list[tuple[int, int]]:
    """Byte spans [start, end) of the file holding the full-resolution blocks that ``window`` touches, adjacent ones joined."""
    r0, c0, r1, c1 = window
    spans: list[tuple[int, int]] = []
    with rasterio.open(path) as ds:
        for r in range(r0 // BLOCK, (r1 - 1) // BLOCK + 1):
            for c in range(c0 // BLOCK, (c1 - 1) // BLOCK + 1):
                off = int(ds.get_tag_item(f"BLOCK_OFFSET_{c}_{r}", "TIFF", bidx=1))
                spans.append((off, off + int(ds.get_tag_item(f"BLOCK_SIZE_{c}_{r}", "TIFF", bidx=1))))
    joined: list[tuple[int, int]] = []
    for s, t in sorted(spans):
        if joined and s <= joined[-1][1] + 8:  # blocks one after another (a few bytes of padding between)
            joined[-1] = (joined[-1][0], max(t, joined[-1][1]))
        else:
            joined.append((s, t))
    return joined


def check_ranged_only(log: list[dict[str, Any]]) -> None:
    """Every GET of a raster asked for a range and got a partial answer: never a whole-file GET."""
    gets = [e for e in log if e["method"] == "GET" and not e["fault"]]
    assert gets
    whole = [e for e in gets if e["range"] is None or e["status"] != 206]
    assert not whole, f"GETs without a honoured Range: {whole[:3]}"


@pytest.fixture(scope="module")
def local_ndvi(server: Server, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    out = tmp_path_factory.mktemp("local_ndvi") / "ndvi.tif"
    r = ndvi(str(server.root / "scene.tif"), out)
    assert r.returncode == 0, r.stderr
    return out.read_bytes()


@pytest.fixture(scope="module")
def local_mean(server: Server, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    out = tmp_path_factory.mktemp("local_mean") / "mean.tif"
    r = mean([str(server.root / "stack")], out)
    assert r.returncode == 0, r.stderr
    return out.read_bytes()


# --------------------------------------------------------------------------- names and settings


def test_remote_names_and_gdal_names() -> None:
    for p in ("https://h/a.tif", "http://h:8080/a.tif?sig=x", "s3://b/k.tif", "/vsicurl/https://h/a.tif", "/vsis3/b/k.tif",
              "/vsizip//vsicurl/https://h/a.zip/b.tif", 'NETCDF:"/vsis3/b/k.nc":tas', "zip+https://h/a.zip!/b.tif", "gs://b/k.tif"):  # fmt: skip
        assert is_remote(p), p
    for p in ("/data/a.tif", "a.tif", "/vsimem/x.tif", "/vsizip/local.zip/b.tif", 'NETCDF:"era5.nc":t2m', "C:/data/a.tif"):
        assert not is_remote(p), p
    assert gdal_name("s3://bucket/dir/k.tif") == "/vsis3/bucket/dir/k.tif"
    assert gdal_name("https://h/a.tif?sig=1&x=2") == "/vsicurl/https://h/a.tif?sig=1&x=2"
    assert gdal_name("/data/a.tif") == "/data/a.tif" and gdal_name("/vsis3/b/k") == "/vsis3/b/k"
    assert http_url("/vsizip//vsicurl/https://h/a.zip/b.tif") == "https://h/a.zip"
    assert http_url("/vsicurl?use_head=no&url=http%3A%2F%2Fh%2Fx.tif") == "http://h/x.tif"
    assert http_url("s3://b/k") is None
    assert url_name("https://h/d/t_20210115.tif?X-Amz-Signature=abc") == "t_20210115.tif"


def test_user_environment_overrides_the_http_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert remote_env() == {k: v for k, v in HTTP_ENV.items() if k not in os.environ}
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "9")
    monkeypatch.setenv("VSI_CACHE", "FALSE")
    env = remote_env()
    assert "GDAL_HTTP_MAX_RETRY" not in env and "VSI_CACHE" not in env  # GDAL reads the user's variables then
    assert env["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"


def test_remote_identity_follows_the_object(server: Server) -> None:
    path = server.root / "stack" / f"t_{DATES[0]}.tif"
    url = server.url(f"stack/t_{DATES[0]}.tif")
    before = remote_identity(url)
    assert before[0] == path.stat().st_size and before[1] != 0
    assert remote_identity("/vsicurl/" + url) == before
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same bytes, rewritten: a new ETag
    try:
        assert remote_identity(url) != before
    finally:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert remote_identity(url) == before
    with pytest.raises(InputError, match=r"t_19990101\.tif.*not found \(HTTP 404\)"):
        remote_identity(server.url("stack/t_19990101.tif"))


def test_an_archive_member_is_identified_by_its_remote_archive(server: Server, tmp_path: Path) -> None:
    small = write_raster(tmp_path / "small.tif", np.arange(64 * 64, dtype=np.uint16).reshape(64, 64), blocksize=None)
    with zipfile.ZipFile(server.root / "small.zip", "w") as z:
        z.write(small, "small.tif")
    name = "/vsizip//vsicurl/" + server.url("small.zip") + "/small.tif"
    assert is_remote(name) and http_url(name) == server.url("small.zip")
    assert remote_identity(name)[0] == (server.root / "small.zip").stat().st_size
    r = run_cli("info", name)
    assert r.returncode == 0 and "64 x 64" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("detail, expected", [
    ("AWS_SECRET_ACCESS_KEY and AWS_NO_SIGN_REQUEST configuration options not defined, and /root/.aws/credentials not filled", "no credentials to read"),
    ("HTTP response code on https://b.s3.amazonaws.com/k.tif: 404", "not found (HTTP 404)"),
    ("<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>", "refused (HTTP 403)"),
    ("CURL error: Could not resolve host: b.s3.amazonaws.com", "cannot reach"),
])  # fmt: skip
def test_s3_open_failures_are_explained(detail: str, expected: str) -> None:
    err = open_error("s3://b/k.tif", detail)
    assert expected in err.message and "'s3://b/k.tif'" in err.message and err.hint


# --------------------------------------------------------------------------- identical bytes, ranged reads


def test_ndvi_from_a_url_is_identical_and_reads_only_ranges(server: Server, local_ndvi: bytes, tmp_path: Path) -> None:
    server.reset()
    out = tmp_path / "ndvi.tif"
    r = ndvi(server.url("scene.tif"), out)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == local_ndvi
    log = server.log()
    check_ranged_only(log)
    served = sum(e["bytes"] for e in log)
    needed = block_bytes(server.root / "scene.tif")
    ratio = served / needed
    print(f"\nndvi over HTTP: {served} bytes served for {needed} bytes of blocks ({ratio:.3f}x, file {server.root.joinpath('scene.tif').stat().st_size})")
    assert ratio < 1.1  # each block fetched once; the rest is the header read by each process


def test_stack_mean_from_urls_is_identical(server: Server, local_mean: bytes, tmp_path: Path) -> None:
    server.reset()
    out = tmp_path / "mean.tif"
    r = mean(stack_urls(server), out)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == local_mean
    log = server.log()
    check_ranged_only(log)
    served = sum(e["bytes"] for e in log)
    needed = sum(block_bytes(server.root / "stack" / f"t_{d}.tif") for d in DATES)
    print(f"\nmean of {len(DATES)} dates over HTTP: {served} bytes served for {needed} bytes of blocks ({served / needed:.3f}x)")
    assert served / needed < 1.1


def test_a_window_reads_only_its_blocks(server: Server, tmp_path: Path) -> None:
    # A box of 600 x 700 pixels from (row 900, col 300): 2 x 2 of the 16 full-resolution blocks of each date.
    t = rasterio.transform.from_origin(300000.0, 5600000.0, 10.0, 10.0)  # conftest.write_raster's default grid
    r0, c0, r1, c1 = 900, 300, 1500, 1000
    left, top = t * (c0, r0)
    right, bottom = t * (c1, r1)
    box = f"{left},{bottom},{right},{top}"
    local = tmp_path / "local.tif"
    assert mean([str(server.root / "stack")], local, "--bbox", box).returncode == 0
    server.reset()
    out = tmp_path / "box.tif"
    r = mean(stack_urls(server), out, "--bbox", box)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == local.read_bytes()
    log = server.log()
    check_ranged_only(log)
    for d in DATES:  # no byte outside the header and the box's blocks (give or take GDAL's 16 KiB download chunks)
        spans = block_spans(server.root / "stack" / f"t_{d}.tif", (r0, c0, r1, c1))
        for e in log:
            if e["method"] == "GET" and e["path"].endswith(f"t_{d}.tif") and e["bytes"]:
                a, b = (int(v) for v in e["range"].split("=")[1].split("-"))
                assert b < 65536 or any(lo - CHUNK <= a and b < hi + CHUNK for lo, hi in spans), (e, spans)
    served = sum(e["bytes"] for e in log)
    needed = sum(block_bytes(server.root / "stack" / f"t_{d}.tif", (r0, c0, r1, c1)) for d in DATES)
    files = sum((server.root / "stack" / f"t_{d}.tif").stat().st_size for d in DATES)
    print(f"\n--bbox over HTTP: {served} bytes served for {needed} bytes of the 4 blocks per date ({served / needed:.3f}x; files {files})")
    # The tiles' edges fall on the files' block edges (not on the box's corner), so no block is fetched
    # by two tiles: only the headers (read once per process) come on top of the blocks.
    assert served / needed < 1.1 and served < files / 2


# --------------------------------------------------------------------------- faults


def test_503s_and_resets_are_retried_by_gdal(server: Server, local_ndvi: bytes, tmp_path: Path) -> None:
    server.reset()
    server.faults(every=3, modes=["503", "reset"])
    out = tmp_path / "ndvi.tif"
    r = ndvi(server.url("scene.tif"), out, "--retries", "0", env=FAST_RETRY)  # no tile retries: GDAL's own retries must do it
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == local_ndvi
    log = server.log()
    hit = [e for e in log if e["fault"]]
    assert {e["fault"] for e in hit} == {"503", "reset"} and len(hit) >= 3
    got = [tuple(int(v) for v in o["range"].split("=")[1].split("-")) for o in log if o["status"] == 206 and not o["fault"]]
    for e in hit:  # the bytes each failed request asked for were fetched again (the same range, or GDAL's chunks of it)
        a, b = (int(v) for v in e["range"].split("=")[1].split("-"))
        covered = a
        for lo, hi in sorted(got):
            if lo <= covered <= hi:
                covered = hi + 1
        assert covered > b, e
    check_ranged_only(log)


def test_an_answer_cut_short_fails_the_read_and_the_tile_retry_recovers(server: Server, local_ndvi: bytes, tmp_path: Path) -> None:
    # GDAL does not retry a transfer that ends early (only 429/5xx, resets and timeouts): the
    # read fails with a short block, the tile fails and tilewise runs it again.
    server.reset()
    server.faults(every=2, modes=["truncate"], limit=2)
    out = tmp_path / "ndvi.tif"
    r = run_cli("ndvi", server.url("scene.tif"), "--red", "1", "--nir", "2", "-o", str(out), "--workers", "2", "--retries", "2", env=FAST_RETRY)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == local_ndvi
    assert [e["fault"] for e in server.log() if e["fault"]] == ["truncate", "truncate"]


@pytest.mark.parametrize("rel, status", [("missing/scene.tif", 404), ("private/scene.tif", 403)])
def test_missing_or_forbidden_url_is_one_clear_error(server: Server, rel: str, status: int, tmp_path: Path) -> None:
    out = tmp_path / "ndvi.tif"
    url = server.url(rel)
    r = ndvi(url, out)
    assert r.returncode == 2, r.stderr
    errors = error_lines(r.stderr)
    assert len(errors) == 1 and url in errors[0] and f"HTTP {status}" in errors[0] and " - " in errors[0], r.stderr
    assert "Traceback" not in r.stderr
    assert leftovers(out) == []


def test_stack_member_missing_or_url_folder_is_one_clear_error(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "mean.tif"
    missing = server.url("stack/t_20210615.tif")
    r = mean([*stack_urls(server), missing], out)
    assert r.returncode == 2 and len(error_lines(r.stderr)) == 1 and missing in r.stderr and "HTTP 404" in r.stderr, r.stderr
    folder = server.url("stack/")
    r = mean([folder], out)
    assert r.returncode == 2, r.stderr
    errors = error_lines(r.stderr)
    assert len(errors) == 1 and folder in errors[0] and "cannot be listed" in errors[0], r.stderr
    assert leftovers(out) == []


def test_unreachable_server_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/scene.tif"
    r = ndvi(url, tmp_path / "ndvi.tif")
    assert r.returncode == 2, r.stderr
    errors = error_lines(r.stderr)
    assert len(errors) == 1 and url in errors[0] and "cannot reach" in errors[0], r.stderr


# --------------------------------------------------------------------------- resume


def test_a_remote_input_changed_between_crash_and_resume_is_refused(server: Server, local_ndvi: bytes, tmp_path: Path) -> None:
    src = server.root / "scene.tif"
    out = tmp_path / "ndvi.tif"
    args = [*CLI, "-q", "ndvi", server.url("scene.tif"), "--red", "1", "--nir", "2", "-o", str(out), "--workers", "1", "--tile-size", "512"]
    records = tmp_path / ".ndvi.tif.tilewise" / "manifest" / "records-main.jsonl"
    server.reset()
    server.faults(latency=0.15)  # 16 tiles of one block each: a few seconds, time to kill it part way
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not records.exists() or records.read_text().count('"kind": "tile"') < 3):
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    server.reset()
    assert not out.exists() and records.read_text().count('"kind": "tile"') >= 3

    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the object is rewritten: same size, a new ETag
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2, r.stderr
        errors = error_lines(r.stderr)
        assert len(errors) == 1 and "unfinished run of a different job" in errors[0] and "--overwrite" in errors[0], r.stderr
        assert not out.exists()
    finally:
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))

    # The object as it was: the run resumes, skipping the recorded tiles, and ends as an uninterrupted run.
    r = subprocess.run([*args[:3], *args[4:]], capture_output=True, text=True, timeout=300)  # without -q: the summary says what was skipped
    assert r.returncode == 0, r.stderr
    m = re.search(r"(\d+) already done", r.stdout + r.stderr)
    assert m and int(m.group(1)) >= 3, r.stdout + r.stderr
    assert out.read_bytes() == local_ndvi


# --------------------------------------------------------------------------- s3:// through GDAL


def test_s3_keys_read_through_gdal(server: Server, local_mean: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The loopback server as an unsigned, path-style S3 endpoint: s3://stack/KEY is GET /stack/KEY.
    s3 = {"AWS_S3_ENDPOINT": f"127.0.0.1:{server.port}", "AWS_HTTPS": "NO", "AWS_VIRTUAL_HOSTING": "FALSE", "AWS_NO_SIGN_REQUEST": "YES"}
    server.reset()
    out = tmp_path / "mean.tif"
    r = mean([f"s3://stack/t_{d}.tif" for d in DATES], out, env=s3)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == local_mean
    check_ranged_only(server.log())

    for k, v in s3.items():
        monkeypatch.setenv(k, v)
    path = server.root / "stack" / f"t_{DATES[0]}.tif"
    ident = remote_identity(f"s3://stack/t_{DATES[0]}.tif")  # through GDAL's own request: the object's size and ETag
    assert ident[0] == path.stat().st_size and ident[1] != 0

    missing = "s3://stack/t_20210615.tif"
    r = mean([*[f"s3://stack/t_{d}.tif" for d in DATES], missing], out, "--overwrite", env=s3)
    assert r.returncode == 2 and len(error_lines(r.stderr)) == 1 and missing in r.stderr, r.stderr


def test_cache_keeps_fetched_blocks_for_reruns(server: Server, local_mean: bytes, local_ndvi: bytes, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    server.reset()
    out = tmp_path / "mean.tif"
    r = mean(stack_urls(server), out, "--cache", str(cache))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == local_mean
    first = server.log()
    check_ranged_only(first)
    needed = sum(block_bytes(server.root / "stack" / f"t_{d}.tif") for d in DATES)
    assert sum(e["bytes"] for e in first) / needed < 1.1  # the cache reads no more than a run without it
    # A re-run with another tile size (other windows, same blocks): no block is fetched again, only each file's header.
    server.reset()
    again = tmp_path / "mean_again.tif"
    r = mean(stack_urls(server), again, "--cache", str(cache), "--tile-size", "384")
    assert r.returncode == 0, r.stderr
    assert again.read_bytes() == local_mean
    served = sum(e["bytes"] for e in server.log())
    print(f"\ncache: first run {sum(e['bytes'] for e in first)} bytes, re-run {served} bytes, blocks {needed} bytes")
    assert served < 0.05 * needed
    # Another job over other files shares the folder; ndvi with cached bands still equals the local run.
    for _ in range(2):
        o = tmp_path / "ndvi.tif"
        r = ndvi(server.url("scene.tif"), o, "--cache", str(cache), "--overwrite")
        assert r.returncode == 0, r.stderr
        assert o.read_bytes() == local_ndvi


def test_the_cache_never_serves_a_changed_object(server: Server, tmp_path: Path) -> None:
    # The cache key holds the object's identity (size, ETag): a rewritten object is fetched again.
    name = "stack/cached_20210101.tif"
    src = server.root / name
    write_cog(src, dated_field(7), nodata=-9999.0, predictor=3)
    cache = tmp_path / "cache"
    r = run_cli("-q", "reduce", server.url(name), "--date-pattern", "cached_%Y%m%d.tif", "-o", str(tmp_path / "a.tif"), "--cache", str(cache))
    assert r.returncode == 0, r.stderr
    write_cog(src, dated_field(8), nodata=-9999.0, predictor=3)
    r = run_cli("-q", "reduce", server.url(name), "--date-pattern", "cached_%Y%m%d.tif", "-o", str(tmp_path / "b.tif"), "--cache", str(cache))
    assert r.returncode == 0, r.stderr
    with rasterio.open(tmp_path / "b.tif") as ds:
        got = ds.read(1)
    expected = dated_field(8)
    np.testing.assert_array_equal(np.where(expected == -9999.0, np.nan, expected), got)
    assert len(list(cache.iterdir())) == 2


def test_focal_mosaic_of_remote_sheets_equals_the_local_sheets(server: Server, tmp_path: Path) -> None:
    # Two adjacent map sheets served over HTTP: the mosaic's VRT names them by URL, seams computed with the neighbour's pixels.
    from affine import Affine

    from tests.conftest import write_raster

    field = dated_field(5)[:512, :768]
    names = []
    (server.root / "sheets").mkdir(exist_ok=True)
    for i, (c0, c1) in enumerate(((0, 384), (384, 768))):
        plain = tmp_path / f"sheet{i}.plain.tif"
        write_raster(plain, np.ascontiguousarray(field[:, c0:c1]), nodata=-9999.0, blocksize=128,
                     transform=Affine(10.0, 0.0, 300000.0 + 10.0 * c0, 0.0, -10.0, 5600000.0))  # fmt: skip
        copy_raster(plain, server.root / "sheets" / f"sheet{i}.tif", "COG", {"BLOCKSIZE": 128, "COMPRESS": "DEFLATE"})
        names.append(f"sheets/sheet{i}.tif")
    local = tmp_path / "local"
    r = run_cli("-q", "focal", *[str(server.root / n) for n in names], "--size", "9", "--mosaic", "-o", f"{local}/", "--tile-size", "128")
    assert r.returncode == 0, r.stderr
    server.reset()
    remote = tmp_path / "remote"
    r = run_cli("-q", "focal", *[server.url(n) for n in names], "--size", "9", "--mosaic", "-o", f"{remote}/", "--tile-size", "128")
    assert r.returncode == 0, r.stderr
    for i in range(2):
        with rasterio.open(local / f"sheet{i}_mean_9x9.tif") as a, rasterio.open(remote / f"sheet{i}_mean_9x9.tif") as b:
            np.testing.assert_array_equal(a.read(), b.read())
    check_ranged_only(server.log())


def test_cache_reads_a_masked_member_as_the_direct_read_does(server: Server, tmp_path: Path) -> None:
    # A member without nodata whose validity is its GDAL mask: through the block cache the mask,
    # not the values under it, decides which pixels count.
    from tests.conftest import write_raster

    field = dated_field(3)[:256, :384].astype(np.float32)
    keep = np.random.default_rng(5).random(field.shape) > 0.2
    field[~keep] = 1e6  # garbage under the mask: it must never reach the mean
    (server.root / "masked").mkdir(exist_ok=True)
    path = write_raster(server.root / "masked" / "masked_20210101.tif", field[np.newaxis], nodata=None, blocksize=128)
    with rasterio.open(path, "r+") as ds:
        ds.write_mask(np.where(keep, 255, 0).astype(np.uint8))
    args = ("-q", "reduce", "--date-pattern", "masked_%Y%m%d.tif", "--stat", "mean", "--tile-size", "128")
    r = run_cli(*args, str(path), "-o", str(tmp_path / "local.tif"))
    assert r.returncode == 0, r.stderr
    r = run_cli(*args, server.url("masked/masked_20210101.tif"), "-o", str(tmp_path / "cached.tif"), "--cache", str(tmp_path / "cache"))
    assert r.returncode == 0, r.stderr
    with rasterio.open(tmp_path / "local.tif") as a, rasterio.open(tmp_path / "cached.tif") as b:
        local, cached = a.read(1), b.read(1)
    np.testing.assert_array_equal(cached, local)
    np.testing.assert_array_equal(cached, np.where(keep, field, np.nan))
    assert any((tmp_path / "cache").iterdir())  # the blocks did go through the cache


def test_cache_of_a_striped_file_keeps_bands_of_strips(server: Server, tmp_path: Path) -> None:
    # A GeoTIFF in one-row strips: cached in bands of whole strips (not one file per row), output unchanged.
    from tests.conftest import write_raster

    field = dated_field(3)[:600, :500]
    write_raster(server.root / "stack" / "strips_20210105.tif", field, nodata=-9999.0, blocksize=None)
    with rasterio.open(server.root / "stack" / "strips_20210105.tif") as ds:
        assert ds.block_shapes[0][0] < 16  # strips, as GDAL writes them untiled
    args = ["-q", "reduce", server.url("stack/strips_20210105.tif"), "--date-pattern", "strips_%Y%m%d.tif", "--tile-size", "128"]
    r = run_cli(*args, "-o", str(tmp_path / "plain.tif"))
    assert r.returncode == 0, r.stderr
    cache = tmp_path / "cache"
    for name in ("a.tif", "b.tif"):
        r = run_cli(*args, "-o", str(tmp_path / name), "--cache", str(cache))
        assert r.returncode == 0, r.stderr
        assert (tmp_path / name).read_bytes() == (tmp_path / "plain.tif").read_bytes()
    files = [p for p in cache.rglob("*.npy")]
    assert len(files) == 3, files  # 600 rows of full-width strips in bands of 256 rows
