#!/usr/bin/env python3
"""Put Leaflet's dist files where tilewise's web viewer finds them (run by ``make`` set-up).

Fetches the pinned Leaflet release from the npm registry (``npm pack`` when npm is
installed, else a plain HTTPS download), checks the tarball against the pinned
sha512 integrity (also checked against the registry's ``dist.integrity`` when
downloaded here), and extracts ``dist/leaflet.js``, ``dist/leaflet.css``,
``dist/images/*.png`` and the licence into ``{sys.prefix}/share/tilewise/leaflet``
(the venv running this script). Nothing is done when that folder already holds
this version.

Leaflet is never copied into the repository. Without network access this prints
one warning and exits 0: the viewer then loads Leaflet from the unpkg CDN.

Usage: ``python scripts/fetch_leaflet.py [--dest DIR] [--force]``
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import posixpath
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

VERSION = "1.9.4"
# The registry's dist.integrity of leaflet@1.9.4 (npm versions are immutable).
INTEGRITY = "sha512-nxS1ynzJOmOlHp+iL3FyWqK89GtNL8U8rvlMOsQdTTssxZwCXh8N2NB3GDQOL+YR3XnWyZAxwQixURb+FA74PA=="
REGISTRY = "https://registry.npmjs.org"
TIMEOUT_S = 60
MARKER = ".leaflet-version"


class NetworkError(Exception):
    """The registry could not be reached (not an error for the set-up)."""


class IntegrityError(Exception):
    """What was fetched is not the pinned release."""


def default_dest() -> Path:
    """``{sys.prefix}/share/tilewise/leaflet``: where ``tilewise.webtiles.leaflet_dir`` looks."""
    return Path(sys.prefix) / "share" / "tilewise" / "leaflet"


def installed(dest: Path) -> bool:
    """Whether ``dest`` already holds this Leaflet version's files."""
    try:
        marker = (dest / MARKER).read_text().strip()
    except OSError:
        return False
    return marker == VERSION and (dest / "leaflet.js").is_file() and (dest / "leaflet.css").is_file() and (dest / "images").is_dir()


def check_integrity(data: bytes, integrity: str = INTEGRITY) -> None:
    """Raise IntegrityError unless ``data`` matches an SRI string ``sha512-<base64>``."""
    algo, _, expected = integrity.partition("-")
    if algo != "sha512":
        raise IntegrityError(f"unexpected integrity algorithm {algo!r} (want sha512)")
    actual = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if actual != expected:
        raise IntegrityError(f"tarball sha512 {actual} does not match the expected {expected}")


def fetch_with_npm(npm: str) -> bytes:
    """``npm pack leaflet@VERSION`` in a temporary folder; the tarball's bytes."""
    with tempfile.TemporaryDirectory(prefix="tilewise-leaflet-") as tmp:
        cmd = [npm, "pack", f"leaflet@{VERSION}", "--loglevel=error", "--fetch-retries=1", "--fetch-timeout=30000"]
        try:
            proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=3 * TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise NetworkError("npm pack timed out") from None
        tarballs = sorted(Path(tmp).glob("*.tgz"))
        if proc.returncode != 0 or len(tarballs) != 1:
            errors = [line.removeprefix("npm error").strip() for line in proc.stderr.splitlines() if line.startswith("npm error")]
            raise NetworkError(f"npm pack failed ({errors[0] if errors else f'exit status {proc.returncode}'})")
        return tarballs[0].read_bytes()


def _get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            data: bytes = resp.read()
            return data
    except (urllib.error.URLError, OSError) as exc:  # URLError, HTTPError, timeouts, resets
        raise NetworkError(f"cannot download {url} ({getattr(exc, 'reason', exc)})") from None


def fetch_with_urllib() -> bytes:
    """Download the tarball from the registry and check it against the registry's integrity."""
    meta = json.loads(_get(f"{REGISTRY}/leaflet/{VERSION}"))
    integrity = meta.get("dist", {}).get("integrity")
    if integrity != INTEGRITY:
        raise IntegrityError(f"the registry's integrity for leaflet@{VERSION} is {integrity!r}, not the pinned {INTEGRITY!r}")
    data = _get(meta["dist"].get("tarball") or f"{REGISTRY}/leaflet/-/leaflet-{VERSION}.tgz")
    check_integrity(data, integrity)
    return data


def _wanted(name: str) -> str | None:
    """The path under dest for a tarball member, or None to leave it out."""
    if name.startswith("/") or "\\" in name:
        return None
    norm = posixpath.normpath(name)
    if norm != name.rstrip("/") or norm.startswith("..") or "/../" in f"/{norm}/":
        return None
    if norm == "package/LICENSE":
        return "LICENSE"
    if norm in ("package/dist/leaflet.js", "package/dist/leaflet.css"):
        return norm.removeprefix("package/dist/")
    head, _, base = norm.rpartition("/")
    if head == "package/dist/images" and base.endswith(".png") and base not in (".", ".."):
        return f"images/{base}"
    return None


def extract(data: bytes, staging: Path) -> list[str]:
    """Write the wanted regular files of the tarball under ``staging``; their relative paths.

    Only a fixed set of names is taken and only regular files (no links, devices or
    folders from the archive), so nothing can land outside ``staging``.
    """
    written = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar:
            rel = _wanted(member.name)
            if rel is None or not member.isfile():
                continue
            src = tar.extractfile(member)
            if src is None:
                continue
            out = staging / rel
            if staging.resolve() not in out.resolve().parents:
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(src.read())
            out.chmod(0o644)
            written.append(rel)
    missing = {"leaflet.js", "leaflet.css"} - set(written)
    if missing or not any(r.startswith("images/") for r in written):
        raise IntegrityError(f"the tarball lacks {sorted(missing) or ['dist/images']}")
    return written


def install(data: bytes, dest: Path) -> None:
    """Extract into a fresh folder beside ``dest`` and swap it in."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    old = None
    try:
        extract(data, staging)
        (staging / MARKER).write_text(VERSION + "\n")
        staging.chmod(0o755)
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", dir=dest.parent))
            os.replace(dest, old / "leaflet")
        os.replace(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Fetch and install Leaflet unless already there; 0 also when offline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=default_dest(), help="target folder (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="fetch even when the folder already holds this version")
    parser.add_argument("--no-npm", action="store_true", help="download with Python even when npm is installed")
    args = parser.parse_args(argv)
    dest: Path = args.dest

    if installed(dest) and not args.force:
        return 0
    npm = None if args.no_npm else shutil.which("npm")
    try:
        if npm:
            try:
                data = fetch_with_npm(npm)
            except NetworkError as npm_exc:
                try:
                    data = fetch_with_urllib()
                except NetworkError as exc:
                    raise NetworkError(f"{npm_exc}; {exc}") from None
        else:
            data = fetch_with_urllib()
        check_integrity(data)
        install(data, dest)
    except NetworkError as exc:
        print(f"warning: Leaflet {VERSION} not fetched ({exc}); the web viewer will load it from the unpkg CDN", file=sys.stderr)
        return 0
    except IntegrityError as exc:
        print(f"error: Leaflet {VERSION} download rejected: {exc}", file=sys.stderr)
        return 1
    print(f"Leaflet {VERSION} installed in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
