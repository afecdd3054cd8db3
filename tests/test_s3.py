"""s3:// inputs read from a real S3-compatible server on loopback (moto's server), with ``--s3-endpoint``.

The test starts ``python -m moto.server`` on 127.0.0.1 in a process of its own (GDAL's
own HTTP client must talk to it, so moto's in-process mocks would not do), creates a
bucket and uploads generated COGs with boto3, then turns on moto's request
authentication: from then on every request must be signed (AWS Signature V4) with an
access key of an IAM user moto knows and whose policy allows it. tilewise runs as a
subprocess with that key in its environment only, and ``--s3-endpoint`` naming the
server; GDAL signs its ranged GETs itself.

Skipped when moto is not installed, unless ``TILEWISE_REQUIRE_S3=1``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import two_band_scene
from tests.test_remote import write_cog as remote_cog
from tilewise.api import normdiff_job
from tilewise.remote import use_s3_endpoint

try:
    import boto3
    import moto.server  # noqa: F401  (the server the test starts)
except ImportError as exc:  # pragma: no cover - depends on the environment
    if os.environ.get("TILEWISE_REQUIRE_S3") == "1":
        raise
    pytest.skip(f"moto[server] is not installed ({exc}); pip install 'moto[server]' (or set TILEWISE_REQUIRE_S3=1 to fail instead)",
                allow_module_level=True)  # fmt: skip

CLI = [sys.executable, "-m", "tilewise"]
SIZE = 1024
BLOCK = 256
BUCKET = "course-data"
DATES = ["20210115", "20210215", "20210315", "20210415"]
PATTERN = "t_%Y%m%d.tif"
REGION = "us-east-1"
# Fail fast where a request is refused or missing: no retries with back-off in these tests.
FAST = {"GDAL_HTTP_RETRY_DELAY": "0.05", "GDAL_HTTP_MAX_RETRY": "1"}


@dataclass
class S3Server:
    root: Path  # the local copies of what was uploaded
    endpoint: str  # http://127.0.0.1:PORT
    key_id: str
    secret: str

    def env(self, **extra: str) -> dict[str, str]:
        """The CLI's environment: this server's credentials, and no other AWS settings of the machine."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ACCESS_KEY_ID=self.key_id, AWS_SECRET_ACCESS_KEY=self.secret, AWS_REGION=REGION, AWS_CONFIG_FILE=os.devnull,
                   AWS_SHARED_CREDENTIALS_FILE=os.devnull, **FAST)  # fmt: skip
        env.update(extra)
        return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_cog(path: Path, data: np.ndarray, nodata: float, predictor: int) -> Path:
    """A COG in 256-pixel DEFLATE blocks."""
    return remote_cog(path, data, nodata, predictor, block=BLOCK)


def dated_field(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    field = np.round((20 + 5 * np.sin(xx / 40 + i) + 3 * np.cos(yy / 60) + rng.normal(0, 0.5, (SIZE, SIZE))).astype(np.float32), 2)
    field[rng.random((SIZE, SIZE)) < 0.05] = -9999.0
    return field


def _wait_for(endpoint: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with code {proc.returncode}")
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=2).read()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("moto_server did not answer within 60 s")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    root = tmp_path_factory.mktemp("s3_objects")
    write_cog(root / "scene.tif", two_band_scene(SIZE, SIZE, seed=5), nodata=0, predictor=2)
    for i, d in enumerate(DATES):
        write_cog(root / "stack" / f"t_{d}.tif", dated_field(i), nodata=-9999.0, predictor=3)

    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=server_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        _wait_for(endpoint, proc)
        # Set-up, while moto accepts any request: a bucket, the objects, and an IAM user with a key.
        dummy: dict[str, Any] = {"endpoint_url": endpoint, "region_name": REGION, "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        client = boto3.client("s3", **dummy)
        client.create_bucket(Bucket=BUCKET)
        for path in sorted(root.rglob("*.tif")):
            client.upload_file(str(path), BUCKET, path.relative_to(root).as_posix())
        iam = boto3.client("iam", **dummy)
        iam.create_user(UserName="student")
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(UserName="student", PolicyName="read", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="student")["AccessKey"]
        # From now on every request must be signed with a key moto knows, and allowed by its policy.
        req = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=10).read()
        yield S3Server(root, endpoint, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def run_cli(*args: str, env: dict[str, str], timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


def ndvi(s3: S3Server, src: str, out: Path, *extra: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli("-q", "ndvi", src, "--red", "1", "--nir", "2", "-o", str(out), "--workers", "2", *extra, env=s3.env(**env))


def mean(s3: S3Server, srcs: list[str], out: Path, *extra: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli("-q", "reduce", *srcs, "--date-pattern", PATTERN, "-o", str(out), "--workers", "2", *extra, env=s3.env(**env))


# --------------------------------------------------------------------------- the tests


def test_ndvi_from_s3_is_identical_to_the_local_run(s3: S3Server, tmp_path: Path) -> None:
    local = tmp_path / "local.tif"
    r = ndvi(s3, str(s3.root / "scene.tif"), local)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "s3.tif"
    r = ndvi(s3, f"s3://{BUCKET}/scene.tif", out, "--s3-endpoint", s3.endpoint)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == local.read_bytes()
    # The endpoint is saved with the job (for resume and cluster workers) but is not in its fingerprint.
    r = ndvi(s3, f"s3://{BUCKET}/scene.tif", tmp_path / "kept.tif", "--s3-endpoint", s3.endpoint + "/", "--keep-tiles")
    assert r.returncode == 0, r.stderr
    saved = json.loads((tmp_path / ".kept.tif.tilewise" / "job.json").read_text())
    assert saved["job"]["s3_endpoint"] == s3.endpoint
    with_endpoint = normdiff_job([f"s3://{BUCKET}/scene.tif"], "x.tif", a=2, b=1, s3_endpoint=s3.endpoint)
    without = normdiff_job([f"s3://{BUCKET}/scene.tif"], "x.tif", a=2, b=1)
    use_s3_endpoint(None)
    assert with_endpoint.s3_endpoint == s3.endpoint and with_endpoint.fingerprint_payload() == without.fingerprint_payload()


def test_reduce_over_dated_s3_members_is_identical(s3: S3Server, tmp_path: Path) -> None:
    local = tmp_path / "local.tif"
    r = mean(s3, [str(s3.root / "stack" / f"t_{d}.tif") for d in DATES], local)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "s3.tif"
    r = mean(s3, [f"s3://{BUCKET}/stack/t_{d}.tif" for d in DATES], out, "--s3-endpoint", s3.endpoint)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == local.read_bytes()


def test_the_option_wins_over_a_stale_environment_endpoint(s3: S3Server, tmp_path: Path) -> None:
    # AWS_S3_ENDPOINT left in the environment (another store, unreachable here): --s3-endpoint is what the command asked for.
    stale = {"AWS_S3_ENDPOINT": f"127.0.0.1:{_free_port()}", "AWS_HTTPS": "YES"}
    out = tmp_path / "s3.tif"
    r = ndvi(s3, f"s3://{BUCKET}/scene.tif", out, "--s3-endpoint", s3.endpoint, **stale)
    assert r.returncode == 0, r.stderr
    # Without the option, GDAL's own settings apply (the environment's endpoint, path-style) as before.
    r = ndvi(s3, f"s3://{BUCKET}/scene.tif", tmp_path / "env.tif", AWS_S3_ENDPOINT=s3.endpoint.removeprefix("http://"), AWS_HTTPS="NO",
             AWS_VIRTUAL_HOSTING="FALSE")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "env.tif").read_bytes() == out.read_bytes()


def test_missing_key_is_one_error_naming_the_url(s3: S3Server, tmp_path: Path) -> None:
    missing = f"s3://{BUCKET}/stack/t_20210515.tif"
    out = tmp_path / "mean.tif"
    r = mean(s3, [*[f"s3://{BUCKET}/stack/t_{d}.tif" for d in DATES], missing], out, "--s3-endpoint", s3.endpoint)
    assert r.returncode == 2, r.stderr
    lines = error_lines(r.stderr)
    assert len(lines) == 1 and missing in lines[0] and "not found" in lines[0], r.stderr
    assert not out.exists()


@pytest.mark.parametrize("wrong", ["unknown key", "wrong secret"])
def test_wrong_credentials_are_one_error(s3: S3Server, tmp_path: Path, wrong: str) -> None:
    creds = {"AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG0"} if wrong == "unknown key" else {"AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    url = f"s3://{BUCKET}/scene.tif"
    out = tmp_path / "ndvi.tif"
    r = ndvi(s3, url, out, "--s3-endpoint", s3.endpoint, **creds)
    assert r.returncode == 2, r.stderr
    lines = error_lines(r.stderr)
    assert len(lines) == 1 and url in lines[0] and "refused" in lines[0] and "403" in lines[0], r.stderr
    assert not out.exists()


def test_a_bad_or_unreachable_endpoint_is_one_error(s3: S3Server, tmp_path: Path) -> None:
    r = ndvi(s3, f"s3://{BUCKET}/scene.tif", tmp_path / "x.tif", "--s3-endpoint", "127.0.0.1:9000")
    assert r.returncode == 2 and len(error_lines(r.stderr)) == 1 and "--s3-endpoint" in r.stderr, r.stderr
    url = f"s3://{BUCKET}/scene.tif"
    r = ndvi(s3, url, tmp_path / "x.tif", "--s3-endpoint", f"http://127.0.0.1:{_free_port()}")
    lines = error_lines(r.stderr)
    assert r.returncode == 2 and len(lines) == 1 and "cannot reach" in lines[0] and url in lines[0], r.stderr


def test_job_file_with_s3_endpoint(s3: S3Server, tmp_path: Path) -> None:
    local = tmp_path / "local.tif"
    r = ndvi(s3, str(s3.root / "scene.tif"), local)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "s3.tif"
    job = tmp_path / "job.toml"
    job.write_text(f'command = "ndvi"\ninputs = ["s3://{BUCKET}/scene.tif"]\nred = 1\nnir = 2\noutput = "{out}"\nworkers = 2\n'
                   f's3_endpoint = "{s3.endpoint}"\n', encoding="utf-8")  # fmt: skip
    r = run_cli("-q", "run", str(job), env=s3.env())
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == local.read_bytes()


def test_dask_workers_read_from_the_endpoint(s3: S3Server, tmp_path: Path) -> None:
    # Dask workers are processes of their own: the endpoint reaches them with each task, not through the environment.
    pytest.importorskip("distributed")
    local = tmp_path / "local.tif"
    r = ndvi(s3, str(s3.root / "scene.tif"), local)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "s3.tif"
    r = ndvi(s3, f"s3://{BUCKET}/scene.tif", out, "--s3-endpoint", s3.endpoint, "--executor", "dask")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == local.read_bytes()


def test_resume_reads_from_the_saved_endpoint(s3: S3Server, tmp_path: Path) -> None:
    out = tmp_path / "s3.tif"
    r = ndvi(s3, f"s3://{BUCKET}/scene.tif", out, "--s3-endpoint", s3.endpoint)
    assert r.returncode == 0, r.stderr
    expected = out.read_bytes()
    out.unlink()
    # No endpoint on the command line or in the environment: the saved job's is used to plan (open, identify) and run.
    r = run_cli("-q", "resume", str(out), env=s3.env())
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == expected


# --------------------------------------------------------------------------- outputs to S3


class DroppingProxy:
    """A TCP proxy on 127.0.0.1 in front of the S3 server that drops a connection whose request bytes contain ``drop`` (None: pass all)."""

    def __init__(self, target_port: int) -> None:
        import threading

        self.drop: bytes | None = None
        self.dropped = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.target = target_port
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while data := src.recv(65536):
                if upstream and self.drop is not None and self.drop in data:
                    self.dropped += 1
                    break  # the connection dies in the middle of the request
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.sock.close()


def _client(s3: S3Server) -> Any:
    return boto3.client("s3", endpoint_url=s3.endpoint, region_name=REGION, aws_access_key_id=s3.key_id, aws_secret_access_key=s3.secret)


def _object(s3: S3Server, key: str) -> bytes | None:
    try:
        return bytes(_client(s3).get_object(Bucket=BUCKET, Key=key)["Body"].read())
    except _client(s3).exceptions.NoSuchKey:
        return None


def test_ndvi_output_to_s3_is_the_local_output_uploaded(s3: S3Server, tmp_path: Path) -> None:
    local = tmp_path / "local.tif"
    assert ndvi(s3, str(s3.root / "scene.tif"), local).returncode == 0
    url = f"s3://{BUCKET}/results/ndvi.tif"
    args = ["-q", "ndvi", f"s3://{BUCKET}/scene.tif", "--red", "1", "--nir", "2", "-o", url, "--workers", "2", "--s3-endpoint", s3.endpoint]
    r = run_cli(*args, env=s3.env(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert _object(s3, "results/ndvi.tif") == local.read_bytes()
    # The staging copy is removed once uploaded; the work directory stays with the job's state.
    staged = tmp_path / ".tilewise-upload" / BUCKET / "results"
    assert not (staged / "ndvi.tif").exists() and (staged / ".ndvi.tif.tilewise" / "job.json").exists()
    status = run_cli("status", url, "--json", env=s3.env(), cwd=tmp_path)
    assert status.returncode == 0 and json.loads(status.stdout)["state"] == "complete", status.stdout + status.stderr
    # Rerun: the object under the key is still the one uploaded, so nothing is done.
    r = run_cli(*args[1:], env=s3.env(), cwd=tmp_path)
    assert r.returncode == 0 and "already complete" in r.stdout + r.stderr, r.stdout + r.stderr
    # Without its job state (another directory), an existing object is not replaced unless --overwrite.
    other = tmp_path / "other"
    other.mkdir()
    r = run_cli(*args, env=s3.env(), cwd=other)
    lines = error_lines(r.stderr)
    assert r.returncode != 0 and len(lines) == 1 and url in lines[0] and "--overwrite" in lines[0], r.stderr
    assert run_cli(*args, "--overwrite", env=s3.env(), cwd=other).returncode == 0
    assert _object(s3, "results/ndvi.tif") == local.read_bytes()


def test_a_batch_goes_to_an_s3_prefix(s3: S3Server, tmp_path: Path) -> None:
    local = tmp_path / "local"
    r = run_cli("-q", "focal", str(s3.root / "stack" / f"t_{DATES[0]}.tif"), str(s3.root / "stack" / f"t_{DATES[1]}.tif"), "--size", "5",
                "-o", f"{local}/", "--workers", "2", env=s3.env())  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = run_cli("-q", "focal", str(s3.root / "stack" / f"t_{DATES[0]}.tif"), str(s3.root / "stack" / f"t_{DATES[1]}.tif"), "--size", "5",
                "-o", f"s3://{BUCKET}/focal/", "--workers", "2", "--s3-endpoint", s3.endpoint, env=s3.env(), cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in local.glob("*.tif"))
    assert len(names) == 2
    for name in names:
        assert _object(s3, f"focal/{name}") == (local / name).read_bytes(), name


@pytest.mark.parametrize("part", ["single PUT", "multipart"])
def test_a_failed_upload_leaves_nothing_under_the_key_and_a_rerun_uploads(s3: S3Server, tmp_path: Path, part: str) -> None:
    local = tmp_path / "local.tif"
    extra = ["--compress", "none"] if part == "multipart" else []  # about 5.6 MB: two 5 MB-chunk parts
    assert ndvi(s3, str(s3.root / "scene.tif"), local, *extra).returncode == 0
    key = f"results/fail_{part.replace(' ', '_')}.tif"
    proxy = DroppingProxy(int(s3.endpoint.rsplit(":", 1)[1]))
    try:
        # Uploads die in the middle: the single PUT of the object, or the second part of a multipart upload.
        proxy.drop = b"PUT /" + f"{BUCKET}/{key}".encode() + (b"?partNumber=2" if part == "multipart" else b" ")
        args = ["-q", "ndvi", str(s3.root / "scene.tif"), "--red", "1", "--nir", "2", "-o", f"s3://{BUCKET}/{key}", "--workers", "2",
                "--s3-endpoint", f"http://127.0.0.1:{proxy.port}", *extra]  # fmt: skip
        env = s3.env(VSIS3_CHUNK_SIZE="5")
        r = run_cli(*args, env=env, cwd=tmp_path)
        lines = error_lines(r.stderr)
        assert r.returncode != 0 and len(lines) == 1 and f"s3://{BUCKET}/{key}" in lines[0] and "upload" in lines[0], r.stderr
        assert proxy.dropped >= 1
        assert _object(s3, key) is None  # never a half object under the final key
        assert not _client(s3).list_multipart_uploads(Bucket=BUCKET, Prefix=key).get("Uploads"), "the failed multipart upload was aborted"
        proxy.drop = None
        r = run_cli(*args, env=env, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert _object(s3, key) == local.read_bytes()
    finally:
        proxy.close()


@pytest.mark.parametrize(("output", "expected"), [
    ("https://example.org/out.tif", "only S3"),
    (f"s3://{BUCKET}", "not an S3 object URL"),
    (f"s3://{BUCKET}/a/../b.tif", "not an S3 object URL"),
    ("s3://no-such-bucket/out.tif", "bucket 'no-such-bucket'"),
])  # fmt: skip
def test_outputs_that_cannot_be_written_are_one_error(s3: S3Server, tmp_path: Path, output: str, expected: str) -> None:
    r = run_cli("-q", "ndvi", str(s3.root / "scene.tif"), "--red", "1", "--nir", "2", "-o", output, "--s3-endpoint", s3.endpoint,
                env=s3.env(), cwd=tmp_path)  # fmt: skip
    lines = error_lines(r.stderr)
    assert r.returncode != 0 and len(lines) == 1 and expected in lines[0], r.stderr
    assert not (tmp_path / ".tilewise-upload").exists() or not any((tmp_path / ".tilewise-upload").rglob("*.tif"))


def test_stats_reads_s3_members_and_uploads_its_table(s3: S3Server, tmp_path: Path) -> None:
    local = tmp_path / "local.csv"
    r = run_cli("-q", "stats", *[str(s3.root / "stack" / f"t_{d}.tif") for d in DATES], "--date-pattern", PATTERN, "-o", str(local), env=s3.env())
    assert r.returncode == 0, r.stderr
    r = run_cli("-q", "stats", *[f"s3://{BUCKET}/stack/t_{d}.tif" for d in DATES], "--date-pattern", PATTERN, "-o", f"s3://{BUCKET}/tables/t.csv",
                "--s3-endpoint", s3.endpoint, env=s3.env(), cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    # The file column names the member: its key's file name either way.
    assert _object(s3, "tables/t.csv") == local.read_bytes()
    assert not any((tmp_path / ".tilewise-upload").rglob("*.csv"))


def test_reduce_on_dask_uploads_from_the_workers(s3: S3Server, tmp_path: Path) -> None:
    # The COG is assembled and uploaded by a Dask worker: the endpoint travels with the task.
    pytest.importorskip("distributed")
    local = tmp_path / "local.tif"
    assert mean(s3, [str(s3.root / "stack" / f"t_{d}.tif") for d in DATES], local).returncode == 0
    r = run_cli("-q", "reduce", *[f"s3://{BUCKET}/stack/t_{d}.tif" for d in DATES], "--date-pattern", PATTERN, "-o", f"s3://{BUCKET}/mean.tif",
                "--workers", "2", "--executor", "dask", "--s3-endpoint", s3.endpoint, env=s3.env(), cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert _object(s3, "mean.tif") == local.read_bytes()


def test_stac_mosaic_of_s3_assets_reads_from_the_endpoint(s3: S3Server, tmp_path: Path) -> None:
    # A STAC item whose assets are s3:// keys: the mosaic's VRT names them /vsis3/, and --s3-endpoint reaches those reads.
    import rasterio
    from rasterio.warp import transform_bounds

    with rasterio.open(s3.root / "scene.tif") as ds:
        bands, bounds, crs = ds.read(), ds.bounds, ds.crs
    local = {}
    for i, name in enumerate(("red", "nir")):
        local[name] = write_cog(tmp_path / f"{name}.tif", bands[i], nodata=0, predictor=2)
        _client(s3).upload_file(str(local[name]), BUCKET, f"stac/{name}.tif")
    minx, miny, maxx, maxy = transform_bounds(crs, "EPSG:4326", *bounds)
    item = {"type": "Feature", "stac_version": "1.0.0", "stac_extensions": [], "id": "scene", "bbox": [minx, miny, maxx, maxy],
            "geometry": {"type": "Polygon", "coordinates": [[[minx, miny], [maxx, miny], [maxx, maxy], [minx, maxy], [minx, miny]]]},
            "properties": {"datetime": "2021-06-15T10:00:00Z"}, "links": [],
            "assets": {n: {"href": f"s3://{BUCKET}/stac/{n}.tif", "type": "image/tiff; application=geotiff"} for n in ("red", "nir")}}  # fmt: skip
    items = tmp_path / "items.json"
    items.write_text(json.dumps({"type": "FeatureCollection", "features": [item]}), encoding="utf-8")
    expected = tmp_path / "expected.tif"
    r = run_cli("-q", "ndvi", "--red", str(local["red"]), "--nir", str(local["nir"]), "-o", str(expected), env=s3.env())
    assert r.returncode == 0, r.stderr
    out = tmp_path / "stac.tif"
    r = run_cli("-q", "ndvi", "--stac", str(items), "--red", "red", "--nir", "nir", "-o", str(out), "--workers", "2",
                "--s3-endpoint", s3.endpoint, env=s3.env())  # fmt: skip
    assert r.returncode == 0, r.stderr
    with rasterio.open(out) as a, rasterio.open(expected) as b:
        assert a.transform == b.transform and a.shape == b.shape
        np.testing.assert_array_equal(a.read(), b.read())
