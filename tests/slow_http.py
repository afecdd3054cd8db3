"""A deliberately slow HTTP file server: one "disk" that serves one range request at a time.

Run as a script (``python tests/slow_http.py ROOT BYTES_PER_S LATENCY_S``) it prints its
port and serves ROOT until killed. Every GET waits for the disk lock, sleeps
``LATENCY_S + bytes / BYTES_PER_S``, then answers (``Range: bytes=a-b`` honoured), so
the total read bandwidth is fixed however many clients read at once. It runs in a
process of its own: GDAL (through rasterio) may hold the GIL while it waits on HTTP,
so a server thread in the reading process could not answer.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def make_server(root: Path, bytes_per_s: float, latency_s: float) -> ThreadingHTTPServer:
    """A server on 127.0.0.1 (port chosen by the system) serving ``root`` through one throttled disk."""
    disk = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            path = (root / self.path.split("?")[0].lstrip("/")).resolve()
            if root not in path.parents or not path.is_file():
                self.send_error(404)
                return
            size = path.stat().st_size
            start, end, status = 0, size - 1, 200
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "").strip())
            if m:
                start, status = int(m.group(1)), 206
                end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
            n = max(0, end - start + 1)
            data = b""
            if body:
                with disk:
                    time.sleep(latency_s + n / bytes_per_s)
                with open(path, "rb") as fh:
                    fh.seek(start)
                    data = fh.read(n)
            self.send_response(status)
            self.send_header("Content-Length", str(n))
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if body:
                self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    return server


if __name__ == "__main__":
    srv = make_server(Path(sys.argv[1]).resolve(), float(sys.argv[2]), float(sys.argv[3]))
    print(srv.server_address[1], flush=True)
    srv.serve_forever()
