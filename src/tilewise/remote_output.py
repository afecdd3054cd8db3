"""Outputs in an S3 (or S3-compatible) object store: staged locally, uploaded atomically.

A job whose ``-o`` is ``s3://BUCKET/KEY.tif`` (or ``s3://BUCKET/PREFIX/`` for a
batch) runs exactly like a local one, with its tiles, work directory and assembled
COG under a local staging folder that mirrors the URL
(``.tilewise-upload/BUCKET/KEY.tif`` in the current directory). Each finished COG
is then uploaded with GDAL's ``/vsis3/`` writer and removed locally. S3 makes an
object visible under its key only when its upload completes (a single PUT, or the
completion of a multipart upload), so a failed or killed upload never leaves a
half object under the final key; a failed multipart upload is also aborted, so its
parts are not kept (and billed) by the store.

The manifest records each uploaded object's size and ETag: a rerun treats the
output as done while the object under the key is still that one.
"""

from __future__ import annotations

import ctypes
import re
from pathlib import Path, PurePosixPath

from tilewise.errors import OutputError, UsageError
from tilewise.remote import gdal_name, is_remote, load_gdal, object_identity, remote_env

# Local folder (relative to the directory the job is started from) mirroring s3://BUCKET/KEY.
STAGING = ".tilewise-upload"
_S3 = re.compile(r"^(?:s3://|/vsis3/)", re.IGNORECASE)
_FIX = "give s3://BUCKET/KEY.tif for one output, or s3://BUCKET/PREFIX/ for many inputs"


def staged_output(output: str) -> tuple[str, str | None]:
    """Split an ``-o`` value into the local path the job writes and the URL it uploads to.

    Parameters
    ----------
    output
        A local path, or ``s3://BUCKET/KEY`` (``/vsis3/BUCKET/KEY``); a trailing
        ``/`` names a prefix for a batch's outputs.

    Returns
    -------
    tuple[str, str | None]
        ``(output, None)`` for a local path; for S3 the staging path
        (``.tilewise-upload/BUCKET/KEY``, keeping a trailing ``/``) and the
        normalised ``s3://BUCKET/KEY``.

    Raises
    ------
    UsageError
        A remote output that is not S3 (http URLs are read-only), or an S3 URL
        without a bucket and key, or with ``.``/``..``/empty path segments.
    """
    if not output or not is_remote(output):
        return output, None
    m = _S3.match(output)
    if m is None:
        raise UsageError(f"output {output!r} cannot be written: of remote locations only S3 (s3://) takes outputs", f"write to a local path, or {_FIX}")
    rest = output[m.end():]
    trailing = rest.endswith("/")
    bucket, _, key = rest.rstrip("/").partition("/")
    parts = key.split("/")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.\-_]{1,254}", bucket) or not key or any(p in ("", ".", "..") for p in parts):
        raise UsageError(f"output {output!r} is not an S3 object URL", _FIX)
    local = str(Path(STAGING, bucket, *parts)) + ("/" if trailing else "")
    return local, f"s3://{bucket}/{key}" + ("/" if trailing else "")


def url_of(local: str | Path) -> str:
    """The ``s3://`` URL a staged local output is uploaded to (the inverse of :func:`staged_output`).

    Parameters
    ----------
    local
        A path under the staging folder, as :func:`staged_output` made it (or a
        file of a batch below such a folder).

    Returns
    -------
    str
        ``s3://BUCKET/KEY``.
    """
    rel = PurePosixPath(Path(local).as_posix()).relative_to(STAGING)
    return f"s3://{rel.as_posix()}"


def remote_version(url: str) -> tuple[int, int] | None:
    """(size, ETag hash) of the object at ``url``, or None when there is none (or it cannot be asked for).

    Parameters
    ----------
    url
        ``s3://BUCKET/KEY``.

    Returns
    -------
    tuple[int, int] | None
        The object's identity, as :func:`tilewise.remote.remote_identity` gives it.
    """
    return object_identity(gdal_name(url))


def check_bucket(url: str) -> None:
    """Fail early, before any work, when the bucket of ``url`` cannot be reached or does not exist.

    Raises
    ------
    OutputError
        The bucket is missing, access to it is refused, or the store cannot be reached.
    """
    bucket = url[5:].split("/", 1)[0]
    gdal = _vsi()
    import rasterio

    with rasterio.Env(**remote_env()):
        gdal.CPLErrorReset()
        # VSIStatL on the bucket lists it (one request): refused or missing shows up here.
        buf = ctypes.create_string_buffer(256)
        rc = gdal.VSIStatL(f"/vsis3/{bucket}".encode(), buf)
        msg = _last_error(gdal)
    if rc != 0:
        detail = f" ({msg})" if msg else ""
        raise OutputError(f"cannot write to {url!r}: bucket {bucket!r} cannot be reached or does not exist{detail}",
                          "check the bucket name, the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE) "
                          "and --s3-endpoint")  # fmt: skip


def upload(local: Path, url: str) -> tuple[int, int]:
    """Upload the file ``local`` to ``url`` atomically; return the new object's (size, ETag hash).

    GDAL's ``/vsis3/`` writer sends a file under its chunk size
    (``VSIS3_CHUNK_SIZE``, 50 MB) in one PUT and a larger one as a multipart upload
    that is completed only after every part arrived; either way the object appears
    under its key whole or not at all. After a failure the pending multipart
    uploads of the key are aborted.

    Raises
    ------
    OutputError
        The upload failed; the message names the URL and GDAL's reason.
    """
    gdal = _vsi()
    import rasterio

    target = gdal_name(url)
    with rasterio.Env(**remote_env()):
        gdal.CPLErrorReset()
        rc = gdal.VSICopyFile(str(local).encode(), target.encode(), None, ctypes.c_uint64(local.stat().st_size), None, None, None)
        msg = _last_error(gdal)
        if rc != 0:
            gdal.VSIAbortPendingUploads(target.encode())
    if rc != 0:
        raise OutputError(f"uploading the output to {url!r} failed ({msg or 'no reason given'}); nothing was written under that key",
                          "check the connection, credentials and permissions, then rerun the same command: only the upload is repeated")  # fmt: skip
    version = remote_version(url)
    if version is None or version[0] != local.stat().st_size:
        raise OutputError(f"the object uploaded to {url!r} cannot be found, or has another size, after the upload",
                          "check the store, then rerun the same command")  # fmt: skip
    return version


_LIB: ctypes.CDLL | None = None


def _vsi() -> ctypes.CDLL:
    """GDAL's VSI functions this module calls, with their C signatures."""
    global _LIB
    if _LIB is None:
        gdal = load_gdal()
        gdal.VSICopyFile.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        gdal.VSICopyFile.restype = ctypes.c_int
        gdal.VSIAbortPendingUploads.argtypes = [ctypes.c_char_p]
        gdal.VSIAbortPendingUploads.restype = ctypes.c_int
        gdal.VSIStatL.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
        gdal.VSIStatL.restype = ctypes.c_int
        gdal.CPLGetLastErrorMsg.restype = ctypes.c_char_p
        gdal.CPLGetLastErrorMsg.argtypes = []
        gdal.CPLErrorReset.restype = None
        gdal.CPLErrorReset.argtypes = []
        _LIB = gdal
    return _LIB


def _last_error(gdal: ctypes.CDLL) -> str:
    text = (gdal.CPLGetLastErrorMsg() or b"").decode("utf-8", "replace").strip()
    return " ".join(text.split())[:300]
