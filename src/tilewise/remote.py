"""Inputs read in place over the network: HTTP(S) URLs and S3 objects, through GDAL.

GDAL reads a remote Cloud-Optimized GeoTIFF with HTTP range requests (``/vsicurl/``,
``/vsis3/``), so a tile fetches only the blocks its window needs. This module knows
which names are remote (:func:`is_remote`), how GDAL spells them (:func:`gdal_name`),
the GDAL settings remote reads use (:data:`HTTP_ENV`, :func:`remote_env`), how a
remote object is identified so that a change between a crash and a resume is seen
(:func:`remote_identity`), and how a failed open is explained (:func:`open_error`).
It opens no raster itself: :mod:`tilewise.rasterfile` does, with these settings.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import http.client
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tilewise.errors import InputError

# Network file systems of GDAL, and URL schemes rasterio turns into them.
_VSI_NETWORK = re.compile(r"/vsi(curl|s3|gs|az|adls|oss|swift|webhdfs)(_streaming)?[/?]")
_URL = re.compile(r"(?:^|[^A-Za-z0-9+])(?:[a-z0-9]+\+)*(https?|ftp|s3|gs)://", re.IGNORECASE)
_ARCHIVE = re.compile(r"^/vsi(?:zip|tar|gzip|7z|rar)/\{?(.+?\.(?:zip|tar|tgz|tar\.gz|gz|7z|rar))\}?(?:/|$)", re.IGNORECASE)

# GDAL settings for remote reads, each one a default the user's own environment
# variable of the same name replaces (see remote_env). Checked against GDAL 3.10's
# documentation of /vsicurl/ and its configuration options.
HTTP_ENV: dict[str, str] = {
    # Never list the "folder" of a remote file on open. Over HTTP a listing is a GET of
    # the folder URL (often a 403, a 404 or a large HTML page), on S3 a LIST request,
    # once per file opened: only to look for sidecars (.aux.xml, .ovr, .msk). A remote
    # raster must carry its metadata inside, as a COG does. (Local files keep the
    # listing: rasterfile never applies these settings to them.)
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    # When one read needs several blocks, fetch their byte ranges in parallel requests
    # (multiplexed on one connection under HTTP/2). This is GDAL's own default, named
    # so that SINGLE_GET (one multipart request) or SERIAL stay a visible override.
    "GDAL_HTTP_MULTIRANGE": "YES",
    # Blocks stored back to back (a row of COG tiles, the bands of a pixel-interleaved
    # tile) are fetched as one range instead of one request each.
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    # HTTP/2 when the server offers it through TLS (https://, negotiated by ALPN, with
    # a fallback to HTTP/1.1); plain http:// stays HTTP/1.1. "2" would also try an h2c
    # upgrade on plain HTTP, which some servers and proxies mishandle; GDAL's own
    # default uses HTTP/2 only on Google Compute Engine.
    "GDAL_HTTP_VERSION": "2TLS",
    # Retry a request answered HTTP 429, 502, 503 or 504, or cut by a connection reset
    # (both checked in tests/test_remote.py), up to 5 times. The delay starts at
    # GDAL_HTTP_RETRY_DELAY seconds and GDAL roughly doubles it each time (with jitter):
    # ~1+2+4+8+16 s at worst, enough to ride out a throttled or restarting server. An
    # answer cut short is not retried by GDAL: the read fails and tilewise retries the tile.
    "GDAL_HTTP_MAX_RETRY": "5",
    "GDAL_HTTP_RETRY_DELAY": "1",
    # Give up connecting after 30 s, and drop a transfer that moved under 1 byte/s for
    # 60 s, instead of waiting forever on a stalled connection (the read fails and the
    # tile is retried); no total time limit, so a slow but moving large range completes.
    "GDAL_HTTP_CONNECTTIMEOUT": "30",
    "GDAL_HTTP_LOW_SPEED_TIME": "60",
    "GDAL_HTTP_LOW_SPEED_LIMIT": "1",
    # A read cache per open handle, for the many small reads GDAL makes of one file
    # (TIFF directories, tile offset arrays) and the blocks a kept handle reads again.
    # Bounded at 16 MiB per handle (GDAL's default is 25 MB): a worker thread keeps at
    # most rasterfile.KEPT_HANDLES handles, so at most 128 MiB.
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": str(16 * 1024 * 1024),
    # GDAL's process-wide cache of downloaded ranges, which outlives a handle: a time
    # stack's file, reopened for each tile, finds its header here instead of fetching it
    # again. GDAL's default is 16 MiB; 64 MiB holds the headers of hundreds of COGs.
    "CPL_VSIL_CURL_CACHE_SIZE": str(64 * 1024 * 1024),
}

_CREDENTIALS = ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (AWS_NO_SIGN_REQUEST=YES for a public bucket; "
                "--s3-endpoint URL for an S3-compatible store such as MinIO or Allas)")  # fmt: skip

_UNREACHABLE = "check the host name and port (--s3-endpoint for an S3 store) and any proxy (https_proxy, GDAL_HTTP_PROXY)"

# S3 error codes and messages (AWS, MinIO, Ceph, moto) of a request refused for its credentials.
_S3_REFUSED = (r"AccessDenied|Forbidden|InvalidAccessKeyId|SignatureDoesNotMatch|InvalidToken|ExpiredToken|signature we calculated does not match|"
               r"Access Key Id you provided does not exist|security token included in the request is invalid")  # fmt: skip

HEAD_TIMEOUT_S = 10.0
HEAD_ATTEMPTS = 3


def is_remote(path: str) -> bool:
    """Return True when ``path`` names data GDAL reads over the network.

    Parameters
    ----------
    path
        A path or GDAL dataset name: ``http(s)://``, ``s3://``, ``gs://``, a
        ``/vsicurl/``, ``/vsis3/`` (...) name, or an archive or driver name around
        one of those (``/vsizip//vsicurl/https://...``, ``NETCDF:"/vsis3/b/k.nc":v``).

    Returns
    -------
    bool
        False for local files, ``/vsimem/`` and local archives.
    """
    path = str(path)
    return bool(_VSI_NETWORK.search(path) or _URL.search(path))


def gdal_name(path: str) -> str:
    """Return the GDAL name of ``path``: ``s3://b/k`` → ``/vsis3/b/k``, ``https://...`` → ``/vsicurl/https://...``.

    Parameters
    ----------
    path
        A path or URL. ``gs://b/k`` becomes ``/vsigs/b/k``; anything else (local
        paths, names already in GDAL form) is returned unchanged.

    Returns
    -------
    str
        The name to give GDAL. A URL's query string (a signature) is kept.
    """
    low = path.lower()
    if low.startswith(("http://", "https://", "ftp://")):
        return "/vsicurl/" + path
    if low.startswith("s3://"):
        return "/vsis3/" + path[5:]
    if low.startswith("gs://"):
        return "/vsigs/" + path[5:]
    return path


def remote_env() -> dict[str, str]:
    """The GDAL settings for opening and reading a remote path: :data:`HTTP_ENV` less what the user set.

    An environment variable the user set (``GDAL_HTTP_MAX_RETRY=10``,
    ``VSI_CACHE=FALSE``) wins: GDAL reads it when tilewise passes no value for it.
    The S3 endpoint of the job (:func:`use_s3_endpoint`) is added: its host and
    scheme replace ``AWS_S3_ENDPOINT`` and ``AWS_HTTPS`` of the environment (the
    option is the more specific request), ``AWS_VIRTUAL_HOSTING=FALSE`` is a default.

    Returns
    -------
    dict[str, str]
        Options for ``rasterio.Env``.
    """
    env = {k: v for k, v in HTTP_ENV.items() if k not in os.environ}
    if _S3_ENDPOINT is not None:
        env.update({k: v for k, v in s3_endpoint_env(_S3_ENDPOINT).items() if k != "AWS_VIRTUAL_HOSTING" or k not in os.environ})
    return env


def endpoint_env() -> dict[str, str]:
    """The S3 endpoint settings alone (:func:`use_s3_endpoint`), for local files that name ``/vsis3/`` sources (a STAC mosaic's VRT).

    They only concern ``/vsis3/`` requests, so they are harmless for other local files.
    """
    if _S3_ENDPOINT is None:
        return {}
    return {k: v for k, v in s3_endpoint_env(_S3_ENDPOINT).items() if k != "AWS_VIRTUAL_HOSTING" or k not in os.environ}


# The S3 endpoint of the job this process works on (Job.s3_endpoint), or None: GDAL's own
# settings (AWS_S3_ENDPOINT of the environment, else AWS) apply.
_S3_ENDPOINT: str | None = None


def check_s3_endpoint(url: str) -> str:
    """Check an S3 endpoint URL (``--s3-endpoint``) and return it normalised (no trailing slash).

    Parameters
    ----------
    url
        ``http(s)://host[:port]``, e.g. ``https://a3s.fi`` or ``http://127.0.0.1:9000``.

    Returns
    -------
    str
        The URL with a lower-case scheme and no trailing ``/``.

    Raises
    ------
    ValueError
        The URL has no http(s) scheme or host, or has a path, query or credentials.
    """
    text = str(url).strip()
    parts = urllib.parse.urlsplit(text)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = -1
    if scheme not in ("http", "https") or not parts.hostname or port == -1 or parts.path.strip("/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"--s3-endpoint {text!r} is not an endpoint URL; give http(s)://HOST[:PORT], e.g. --s3-endpoint https://a3s.fi")
    return f"{scheme}://{parts.netloc}"


def s3_endpoint_env(url: str) -> dict[str, str]:
    """The GDAL options that send ``/vsis3/`` requests to the S3-compatible store at ``url``.

    Parameters
    ----------
    url
        An endpoint URL accepted by :func:`check_s3_endpoint`.

    Returns
    -------
    dict[str, str]
        ``AWS_S3_ENDPOINT`` (host[:port]), ``AWS_HTTPS`` (YES for https, NO for http)
        and ``AWS_VIRTUAL_HOSTING=FALSE`` (path-style requests: ``host/bucket/key``,
        which every S3-compatible store answers, with no DNS name per bucket).
    """
    parts = urllib.parse.urlsplit(check_s3_endpoint(url))
    return {"AWS_S3_ENDPOINT": parts.netloc, "AWS_HTTPS": "YES" if parts.scheme == "https" else "NO", "AWS_VIRTUAL_HOSTING": "FALSE"}


def use_s3_endpoint(url: str | None) -> None:
    """Set the S3 endpoint this process's remote reads use (None: GDAL's own settings).

    Called where a job is planned (:func:`tilewise.job.plan_job`, in every process
    that plans it) and by each task before it reads (tasks carry the endpoint to
    workers of any executor), so the value reaches processes, Dask and SLURM workers.

    Parameters
    ----------
    url
        An endpoint URL (:func:`check_s3_endpoint`), or None.
    """
    global _S3_ENDPOINT
    _S3_ENDPOINT = check_s3_endpoint(url) if url else None


def vrt_source_name(path: str) -> str:
    """The name a VRT (a local file) reads ``path`` by: an absolute path, or for http(s) a ``/vsicurl?`` name with options.

    A VRT's reads do not get the HTTP settings of remote inputs (:func:`remote_env`).
    The options a ``/vsicurl?`` name carries stand in for the ones that matter: no
    listing of the remote folder and no probing for sidecar files on open
    (``empty_dir``), and retries of 429/5xx answers. They are constants, so the VRT
    (an input's identity) does not depend on the environment.

    Parameters
    ----------
    path
        A local path, a URL (:func:`is_remote`) or a GDAL name.

    Returns
    -------
    str
        The ``SourceFilename`` to write into the VRT.
    """
    if not is_remote(path):
        return path if path.startswith("/vsi") else os.path.abspath(path)
    name = gdal_name(path)
    if name.startswith("/vsicurl/") and name[9:].lower().startswith(("http://", "https://")):
        return f"/vsicurl?empty_dir=yes&max_retry=5&retry_delay=1&url={urllib.parse.quote(name[9:], safe='')}"
    return name


def http_url(path: str) -> str | None:
    """The http(s) URL that ``path`` reads (the archive's URL for an archive member), or None.

    Parameters
    ----------
    path
        A URL or GDAL name (``/vsicurl/https://...``, ``/vsicurl?url=...``,
        ``/vsizip//vsicurl/https://host/a.zip/b.tif``).

    Returns
    -------
    str or None
        None for S3 and the other object stores, and for local paths.
    """
    inner = _archive_of(path)
    low = inner.lower()
    for prefix in ("/vsicurl/", "/vsicurl_streaming/"):
        if low.startswith(prefix):
            inner, low = inner[len(prefix) :], low[len(prefix) :]
    if low.startswith("/vsicurl?"):
        urls = urllib.parse.parse_qs(inner.split("?", 1)[1]).get("url")
        return urls[0] if urls else None
    m = re.match(r"(?:[a-z0-9]+\+)*(https?://.*)", inner, re.IGNORECASE)
    if m is None:
        return None
    url = m.group(1)
    return url.split("!", 1)[0] if "!" in url and re.match(r"[a-z0-9]+\+", inner, re.IGNORECASE) else url


def url_name(path: str) -> str:
    """The last component of a path or URL without its query string (``.../b04.tif?sig=...`` → ``b04.tif``).

    Parameters
    ----------
    path
        A path or URL.

    Returns
    -------
    str
        What a date pattern or a message uses as the file name.
    """
    if is_remote(path):
        path = path.split("?", 1)[0].split("#", 1)[0]
    return os.path.basename(path.rstrip("/")) or path


def remote_identity(path: str) -> tuple[int, int]:
    """Return (size, version) of a remote object, so that a changed object changes a job's fingerprint.

    For http(s) a HEAD request (a one-byte ranged GET where HEAD is refused) gives
    ``Content-Length`` and the ``ETag`` (else ``Last-Modified``), the version being
    a 48-bit hash of that validator. For S3 and the other object stores GDAL's own
    request (``VSIGetFileMetadata(..., "HEADERS")``, made with GDAL's credentials
    and endpoint settings) gives the same. Where neither can be had the
    identity is ``(0, 0)``: the object is then not checked on resume (see docs/remote.md).

    Parameters
    ----------
    path
        A remote path (:func:`is_remote`).

    Returns
    -------
    tuple[int, int]
        (size in bytes or -1 when not told, validator hash or 0 when the server sends none).

    Raises
    ------
    InputError
        The server answered 404 (gone since it was opened) or could not be reached
        after retries.
    """
    url = http_url(path)
    if url is not None:
        headers = _http_headers(url, path)
        if headers is None:  # refused to a bare request: the credentials are GDAL's (GDAL_HTTP_HEADERS, .netrc)
            headers = _gdal_headers("/vsicurl/" + url)
    else:
        headers = _gdal_headers(gdal_name(_archive_of(path)))
    if not headers:
        return (0, 0)
    return _identity_of(headers)


def object_identity(name: str) -> tuple[int, int] | None:
    """(size, validator hash) of the object at a GDAL network name (``/vsis3/...``) from GDAL's own HEAD request, or None when there is none.

    Parameters
    ----------
    name
        A GDAL name (:func:`gdal_name`).

    Returns
    -------
    tuple[int, int] | None
        As :func:`remote_identity`; None for a missing object or no answer.
    """
    headers = _gdal_headers(name)
    return _identity_of(headers) if headers else None


def open_error(path: str, detail: str) -> InputError:
    """Explain why GDAL could not open the remote ``path``: missing, forbidden, unreachable or not a raster.

    For http(s) a HEAD request tells which; for S3 GDAL's message is read.

    Parameters
    ----------
    path
        The name the user gave.
    detail
        GDAL's error message.

    Returns
    -------
    InputError
        One line naming ``path``, with a hint how to fix it.
    """
    url = http_url(path)
    status: int | None = None
    reason = ""
    m = re.search(r"(?:HTTP (?:response|error) code|Error code)[^\n]*?[:\s](\d{3})\b", detail, re.IGNORECASE)
    if url is not None:
        try:
            _request(url, "HEAD")
            status = int(m.group(1)) if m else None  # HEAD is fine: GDAL's own requests may still have failed
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = _reason(exc)
    else:  # S3 and the other object stores: GDAL's message tells
        status = int(m.group(1)) if m else None
        # Refusals first: "The AWS Access Key Id you provided does not exist in our records" is a 403.
        if status is None and re.search(_S3_REFUSED, detail, re.IGNORECASE):
            status = 403
        if status is None and re.search(r"NoSuchKey|NoSuchBucket|does not exist|Not Found", detail):
            status = 404
        if status is None and re.search(r"not defined|credentials not filled|no credentials", detail, re.IGNORECASE):
            return InputError(f"no credentials to read input {path!r}", _CREDENTIALS)
        if status is None and re.search(r"CURL error|Could not resolve|Failed to connect|timed out", detail, re.IGNORECASE):
            reason = detail.replace("CURL error: ", "")
    return _status_error(path, status, reason, detail)


# --------------------------------------------------------------------------- helpers


def _status_error(path: str, status: int | None, reason: str, detail: str) -> InputError:
    """The one-line error for a remote input answered ``status`` (or unreachable for ``reason``)."""
    creds = (
        "check the URL is public or its signature has not expired; a private server needs GDAL_HTTP_HEADERS, GDAL_HTTP_USERPWD or a .netrc entry"
        if http_url(path) is not None
        else _CREDENTIALS
    )
    if status in (404, 410):
        return InputError(f"input {path!r} was not found (HTTP {status})", "check the URL (names are case-sensitive); name a file, not a folder")
    if status in (401, 403):
        return InputError(f"access to input {path!r} was refused (HTTP {status})", creds)
    if status is not None and status >= 500:
        return InputError(f"input {path!r}: the server kept answering HTTP {status}", "try again later, or allow more retries with GDAL_HTTP_MAX_RETRY=10")
    if reason:
        return InputError(f"cannot reach input {path!r} ({reason})", _UNREACHABLE)
    return InputError(
        f"{path!r} is not a raster GDAL can read ({detail})",
        "check that the URL points at a raster file (a GeoTIFF/COG), not a web page or a folder, and that the server answers HTTP range requests",
    )


def _archive_of(path: str) -> str:
    """The archive a ``/vsizip/`` (``/vsitar/`` ...) name reads from, or ``path`` itself."""
    m = _ARCHIVE.match(path)
    return m.group(1) if m else path


def _request(url: str, method: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    """One request (the body is not read); the response headers, lower-cased. HTTP errors raise ``HTTPError``."""
    req = urllib.request.Request(url, method=method, headers={"User-Agent": "tilewise", **(headers or {})})
    with urllib.request.urlopen(req, timeout=HEAD_TIMEOUT_S) as resp:
        return {k.lower(): v for k, v in resp.headers.items()}


def _http_headers(url: str, path: str) -> dict[str, str] | None:
    """HEAD ``url``, retrying 5xx and dropped connections; None when a bare request is refused (401/403)."""
    delay = 0.25
    for attempt in range(HEAD_ATTEMPTS):
        last = attempt == HEAD_ATTEMPTS - 1
        try:
            try:
                return _request(url, "HEAD")
            except urllib.error.HTTPError as exc:
                if exc.code not in (401, 403, 405, 501):
                    raise
            # HEAD refused (not allowed, or a URL signed for GET only): a one-byte GET tells the same.
            return _request(url, "GET", {"Range": "bytes=0-0"})
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                return None
            if exc.code in (404, 410):
                raise _status_error(path, exc.code, "", "") from None
            if (exc.code < 500 and exc.code != 429) or last:
                raise InputError(f"cannot check input {path!r}: HTTP {exc.code} to a HEAD request", "try again later") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            if last:
                raise InputError(f"cannot reach input {path!r} ({_reason(exc)})", _UNREACHABLE) from None
        time.sleep(delay)
        delay *= 2
    return None  # pragma: no cover - the loop returns or raises


def _reason(exc: BaseException) -> str:
    inner = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(inner, socket.timeout | TimeoutError):
        return f"no answer within {HEAD_TIMEOUT_S:g} s"
    text = getattr(inner, "strerror", None) or str(inner) or type(inner).__name__
    return str(text).strip().splitlines()[0][:200]


def _identity_of(headers: dict[str, str]) -> tuple[int, int]:
    h = {k.lower(): v for k, v in headers.items()}
    # GDAL's /vsis3/ asks with a ranged GET: Content-Length is then the range's, Content-Range has the size.
    total = h.get("content-range", "").rpartition("/")[2].strip()
    size = total if total.isdigit() else h.get("content-length", "")
    validator = h.get("etag") or h.get("last-modified") or ""
    version = int.from_bytes(hashlib.sha256(validator.encode()).digest()[:6], "big") if validator else 0
    return (int(size) if size.strip().isdigit() else -1, version)


_GDAL: ctypes.CDLL | None = None


def _gdal_headers(name: str) -> dict[str, str] | None:
    """The HTTP headers of GDAL's HEAD request for a ``/vsis3/`` (``/vsicurl/`` ...) name, or None.

    Calls ``VSIGetFileMetadata(name, "HEADERS")`` in the GDAL library rasterio
    loaded, so GDAL's credentials, endpoint, proxy and header settings apply.
    """
    global _GDAL
    try:
        if _GDAL is None:
            _GDAL = load_gdal()
            _GDAL.VSIGetFileMetadata.restype = ctypes.POINTER(ctypes.c_char_p)
            _GDAL.VSIGetFileMetadata.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]
            _GDAL.CSLDestroy.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
            _GDAL.CSLDestroy.restype = None
        import rasterio

        with rasterio.Env(**remote_env()):
            lst = _GDAL.VSIGetFileMetadata(name.encode(), b"HEADERS", None)
        if not lst:
            return None
        out: dict[str, str] = {}
        try:
            i = 0
            while lst[i] is not None:
                key, _, value = (lst[i] or b"").decode("utf-8", "replace").partition("=")
                out[key.strip().lower()] = value.strip()
                i += 1
        finally:
            _GDAL.CSLDestroy(lst)
        return out or None
    except (OSError, AttributeError):
        return None


def load_gdal() -> ctypes.CDLL:
    """The GDAL library rasterio uses (already loaded: opening it again shares its state), for the few C calls rasterio does not wrap."""
    import rasterio  # loads GDAL

    candidates: list[str] = []
    try:
        with open("/proc/self/maps", encoding="utf-8") as fh:
            candidates += sorted({line.split()[-1] for line in fh if "libgdal" in line and line.split()[-1].startswith("/")})
    except OSError:
        pass
    here = Path(rasterio.__file__).parent
    for folder in (here.parent / "rasterio.libs", here / ".dylibs"):
        candidates += sorted(str(p) for p in folder.glob("libgdal*"))
    found = ctypes.util.find_library("gdal")
    if found:
        candidates.append(found)
    for c in candidates:
        try:
            return ctypes.CDLL(c)
        except OSError:
            continue
    raise OSError("the GDAL library was not found")
