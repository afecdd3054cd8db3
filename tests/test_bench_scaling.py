"""``tilewise bench scaling``: the table, scaling.json, scaling.png and the verdict.

The end-to-end tests run a small NDVI job (1024² two-band input, 16 tiles) at 1 and 2
workers; one of them reads its input through GDAL's ``/vsicurl/`` from a deliberately
slow local HTTP server (``tests/slow_http.py``: one "disk" that serves one range
request at a time at a fixed bandwidth), where the verdict must be I/O-bound. The
verdict rules themselves are checked on made-up measurements.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import two_band_scene, write_raster
from tilewise.cli.main import main
from tilewise.errors import UsageError
from tilewise.scaling import RunMeasure, parse_workers, relocated, verdict

LABELS = ("CPU-bound", "I/O-bound (decode)", "I/O-bound (disk)", "overhead-bound")
HEADER = ("workers", "wall s", "speedup", "effic.", "CPU cores", "read", "compute", "write", "peak MB")


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1024x1024 two-band uint16 GeoTIFF (red=1, nir=2), DEFLATE, 256-pixel blocks."""
    folder = tmp_path_factory.mktemp("scaling-input")
    return write_raster(folder / "scene.tif", two_band_scene(1024, 1024), nodata=0, blocksize=256)


def ndvi_job_file(path: Path, input_path: str, output: Path) -> Path:
    path.write_text(f'command = "ndvi"\ninputs = ["{input_path}"]\noutput = "{output}"\nred = 1\nnir = 2\ntile_size = 256\n', encoding="utf-8")
    return path


def check_report(out_dir: Path, stdout: str, workers: list[int]) -> dict[str, Any]:
    """The table and verdict on stdout, and the JSON and PNG in ``out_dir``; returns the JSON."""
    lines = stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:1] == ["workers"])
    for word in HEADER:
        assert word in lines[head]
    rows = [lines[head + 1 + i].split() for i in range(len(workers))]
    assert [int(r[0]) for r in rows] == workers
    assert float(rows[0][2]) == pytest.approx(1.0)  # speedup of the first row
    verdict_line = next(line for line in lines if line.startswith("verdict: "))
    assert any(verdict_line.startswith(f"verdict: {label} - ") for label in LABELS), verdict_line

    data = json.loads((out_dir / "scaling.json").read_text(encoding="utf-8"))
    assert data["job"]["command"] == "ndvi" and data["job"]["tiles"] == 16 and data["job"]["pixels"] == 1024 * 1024
    assert data["usable_cores"] >= 1 and data["machine"]["gdal"]
    assert [r["workers"] for r in data["runs"]] == workers
    for r in data["runs"]:
        for key in ("wall_s", "cpu_s", "peak_rss_bytes", "speedup", "efficiency", "busy", "read_s", "compute_s", "write_s", "bytes_written"):
            assert r[key] > 0, key
        assert r["tiles"] == 16 and r["pixels"] == 1024 * 1024
        assert r["bytes_read"] == 1024 * 1024 * 2 * 2  # both uint16 bands, each block decoded once
        assert r["output_bytes"] > 0 and r["tile_bytes"] > 0
        assert sum(r["shares"].values()) == pytest.approx(1.0, abs=1e-3)
        assert r["setup_s"] + r["tiles_s"] + r["finish_s"] + r["close_s"] <= r["wall_s"] + 0.05
        assert 1 <= r["worker_processes"] <= r["workers"]
    assert data["runs"][0]["speedup"] == pytest.approx(1.0)
    v = data["verdict"]
    assert v["label"] in LABELS and v["summary"] and v["reasons"]
    assert verdict_line == f"verdict: {v['label']} - {v['summary']}"
    for key in ("speedup", "efficiency", "busy", "cpu_per_worker", "shares", "usable_cores"):
        assert key in v["evidence"]

    import matplotlib.image

    png = matplotlib.image.imread(out_dir / "scaling.png")
    assert png.ndim == 3 and png.shape[0] >= 300 and png.shape[1] >= 600
    assert png[..., :3].std() > 0.05  # something is drawn
    return data


def test_scaling_on_ndvi_job(capsys: pytest.CaptureFixture[str], tmp_path: Path, scene: Path) -> None:
    out_tif = tmp_path / "ndvi.tif"
    job = ndvi_job_file(tmp_path / "ndvi.toml", str(scene), out_tif)
    work = tmp_path / "scratch"
    code, out, err = cli(capsys, "bench", "scaling", str(job), "--workers", "2,1", "--out", str(tmp_path / "rep"), "--work", str(work), "--keep")
    assert code == 0, err
    check_report(tmp_path / "rep", out, [1, 2])
    assert "running 1 worker(s)" in err and "running 2 worker(s)" in err  # progress on stderr
    assert not out_tif.exists()  # the job's own output is never written
    for n in (1, 2):  # --keep: each worker count's fresh output stays in DIR/w{N}/
        assert (work / f"w{n}" / "ndvi.tif").is_file()
    assert f"outputs kept in: {work}" in out


def test_scaling_removes_its_scratch_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path, scene: Path) -> None:
    job = ndvi_job_file(tmp_path / "ndvi.toml", str(scene), tmp_path / "out" / "ndvi.tif")
    (tmp_path / "out").mkdir()
    code, out, err = cli(capsys, "-q", "bench", "scaling", str(job), "--workers", "1", "--executor", "threads", "--out", str(tmp_path / "rep"), "--no-plot")
    assert code == 0, err
    assert err == "" and "verdict: " in out  # -q: no progress lines, the results still
    data = json.loads((tmp_path / "rep" / "scaling.json").read_text(encoding="utf-8"))
    assert data["executor"] == "threads" and [r["workers"] for r in data["runs"]] == [1]
    assert data["verdict"]["label"] in LABELS and data["verdict"]["evidence"]["efficiency"] is None
    assert not (tmp_path / "rep" / "scaling.png").exists()
    assert list((tmp_path / "out").iterdir()) == []  # the temporary scratch folder beside the output is gone


@pytest.fixture
def slow_server(tmp_path: Path, scene: Path) -> Iterator[str]:
    """``scene`` served over HTTP at 1.5 MB/s through one throttled disk; yields its /vsicurl/ name."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "scene.tif").write_bytes(scene.read_bytes())
    server = subprocess.Popen([sys.executable, str(Path(__file__).with_name("slow_http.py")), str(root), "1.5e6", "0.005"],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        yield f"/vsicurl/http://127.0.0.1:{port}/scene.tif"
    finally:
        server.kill()
        server.wait()


def test_throttled_input_is_io_bound(capsys: pytest.CaptureFixture[str], tmp_path: Path, slow_server: str) -> None:
    job = ndvi_job_file(tmp_path / "slow.toml", slow_server, tmp_path / "ndvi.tif")
    code, out, err = cli(capsys, "bench", "scaling", str(job), "--workers", "1,2", "--out", str(tmp_path / "rep"))
    assert code == 0, err
    data = check_report(tmp_path / "rep", out, [1, 2])
    v = data["verdict"]
    assert v["label"] == "I/O-bound (disk)", out
    assert "verdict: I/O-bound (disk) - reading takes" in out
    assert v["evidence"]["shares"]["read"] > 0.6
    assert v["evidence"]["cpu_per_worker"] < 0.5
    assert v["evidence"]["efficiency"] < 0.75  # one disk: a second worker does not help


def test_bad_options_are_one_line_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path, scene: Path) -> None:
    job = ndvi_job_file(tmp_path / "ndvi.toml", str(scene), tmp_path / "ndvi.tif")
    (tmp_path / "a-file").write_text("x")
    cases = ((["--workers", "1,0"], "0 is not positive"), (["--workers", "1,x"], "'x'"), (["--executor", "serial"], "serial"),
             (["--repeats", "0"], "--repeats"), (["--out", str(tmp_path / "a-file" / "rep")], "a-file"))  # fmt: skip
    for args, named in cases:
        code, out, err = cli(capsys, "bench", "scaling", str(job), "--out", str(tmp_path / "rep"), *args)
        assert code == 2 and err.startswith("Error: ") and named in err and len(err.strip().splitlines()) == 1, err
        assert out == "" and not (tmp_path / "rep").exists()
    code, _out, err = cli(capsys, "bench", "scaling", str(tmp_path / "missing.toml"))
    assert code == 2 and "missing.toml" in err


# ---------------------------------------------------------------- units


def test_parse_workers() -> None:
    assert parse_workers("4, 1,2,2") == [1, 2, 4]
    for bad in ("", "0", "-1", "two", ","):
        with pytest.raises(UsageError):
            parse_workers(bad)


def test_relocated_moves_outputs_and_sets_workers(tmp_path: Path, scene: Path) -> None:
    from tilewise.api import job_from_options

    single = job_from_options({"command": "ndvi", "inputs": [str(scene)], "output": str(tmp_path / "a" / "n.tif"), "red": 1, "nir": 2})
    moved = relocated(single, tmp_path / "w3", "threads", 3)
    assert moved.items[0].output == str(tmp_path / "w3" / "n.tif") and moved.output_root == moved.items[0].output
    assert (moved.executor.name, moved.executor.workers) == ("threads", 3)
    assert moved.workdir == tmp_path / "w3" / ".n.tif.tilewise"
    other = write_raster(tmp_path / "other.tif", two_band_scene(64, 64), nodata=0)
    batch = job_from_options({"command": "ndvi", "inputs": [str(scene), str(other)], "output": str(tmp_path / "outdir") + "/", "red": 1, "nir": 2})
    moved = relocated(batch, tmp_path / "w1", "processes", 1)
    assert moved.output_root == str(tmp_path / "w1" / "outdir")
    assert [it.output for it in moved.items] == [str(tmp_path / "w1" / "outdir" / "scene_NDVI.tif"), str(tmp_path / "w1" / "outdir" / "other_NDVI.tif")]
    assert moved.fingerprint_payload()["items"][0]["inputs"] == batch.fingerprint_payload()["items"][0]["inputs"]


def measure(workers: int, wall: float, read: float, compute: float, write: float, cpu_tiles: float, tiles_s: float | None = None,
            other: float = 0.0) -> RunMeasure:  # fmt: skip
    tiles_s = wall * 0.9 if tiles_s is None else tiles_s
    return RunMeasure(workers=workers, wall_s=wall, process_wall_s=wall + 0.5, cpu_s=cpu_tiles + 0.2, cpu_tiles_s=cpu_tiles, peak_rss_bytes=1,
                      tiles=64, pixels=64 << 20, read_s=read, compute_s=compute, write_s=write, assemble_s=0.1, bytes_read=1, tile_bytes=1,
                      output_bytes=1, setup_s=0.02, tiles_s=tiles_s, finish_s=wall - tiles_s - 0.03, close_s=0.01, worker_processes=workers,
                      other_cores=other)  # fmt: skip


def test_verdict_rules() -> None:
    # Compute keeps every core busy and the job scales: CPU-bound.
    v = verdict([measure(1, 10.0, 1.0, 7.0, 1.5, 9.0), measure(4, 2.7, 1.0, 7.2, 1.6, 9.4)], cores=4)
    assert (v.label, v.scales_well) == ("CPU-bound", True) and "computing" in v.summary
    # Reads dominate, workers barely use their CPU, read time per tile grows: waiting on storage.
    v = verdict([measure(1, 10.0, 8.5, 0.3, 0.8, 2.0), measure(4, 9.0, 33.0, 0.3, 0.9, 2.2)], cores=4)
    assert (v.label, v.kind, v.scales_well) == ("I/O-bound (disk)", "io-disk", False)
    assert v.evidence["read_per_tile_growth"] > 3 and any("read time per tile" in r for r in v.reasons)
    # Reads dominate with busy CPUs and poor scaling: decoding.
    v = verdict([measure(1, 10.0, 7.0, 0.5, 2.0, 9.0), measure(4, 5.0, 14.0, 0.6, 3.0, 16.0)], cores=4)
    assert v.label == "I/O-bound (decode)"
    # Decoding that scales is CPU work like any other.
    v = verdict([measure(1, 10.0, 7.0, 0.5, 2.0, 9.0), measure(4, 2.8, 7.2, 0.5, 2.0, 9.6)], cores=4)
    assert v.label == "CPU-bound" and "decoding" in v.summary
    # Tiles take a small part of the wall time: fixed phases dominate.
    v = verdict([measure(1, 2.0, 0.3, 0.2, 0.3, 0.8), measure(4, 1.8, 0.3, 0.2, 0.3, 0.9)], cores=4)
    assert v.label == "overhead-bound" and "inside tiles" in v.summary
    # Workers inside tiles but neither on the CPU nor in reads/writes: waiting on each other.
    v = verdict([measure(1, 10.0, 0.5, 8.5, 0.5, 9.0), measure(4, 9.0, 0.5, 31.0, 0.5, 8.5)], cores=4)
    assert v.label == "overhead-bound" and "GIL" in v.summary
    # More workers than cores, and a busy machine: both are said.
    v = verdict([measure(1, 10.0, 1.0, 7.0, 1.5, 9.0), measure(8, 5.5, 2.0, 35.0, 3.0, 9.5, other=0.8)], cores=2)
    assert v.label == "CPU-bound" and any("2 usable core(s)" in r for r in v.reasons) and any("other processes" in r for r in v.reasons)
    # A single worker count: no speedup, still a verdict.
    v = verdict([measure(2, 5.0, 1.0, 7.0, 1.5, 8.5)], cores=2)
    assert v.label == "CPU-bound" and v.evidence["efficiency"] is None and v.scales_well is None
