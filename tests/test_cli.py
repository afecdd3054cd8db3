"""The CLI: exit codes, one-line errors naming the bad value, no partial outputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tilewise
from tests.conftest import read_raster, write_raster
from tilewise.cli.main import main
from tilewise.errors import OutputError


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tilewise.cli.main", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def cli_inproc(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


@pytest.fixture
def other_grid(tmp_path: Path) -> Path:
    from affine import Affine

    return write_raster(tmp_path / "nir_20m.tif", np.ones((10, 10), np.uint16), blocksize=None,
                        transform=Affine(20.0, 0.0, 300000.0, 0.0, -20.0, 5600000.0))  # fmt: skip


def bad_cases(tmp_path: Path, scene: Path, other: Path) -> list[tuple[list[str], str]]:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    single = write_raster(tmp_path / "red.tif", np.ones((300, 500), np.uint16), blocksize=None)
    safe = tmp_path / "S2B_MSIL2A_20240101T000000_N0511_R008_T32ULA_20240101T000000.SAFE"
    (safe / "GRANULE").mkdir(parents=True)
    (safe / "MTD_MSIL2A.xml").write_text("<x/>")
    existing = tmp_path / "exists.tif"
    existing.write_bytes(b"x")
    out = str(tmp_path / "o.tif")
    return [
        (["ndvi", str(tmp_path / "missing.tif"), "--red", "1", "--nir", "2", "-o", out], "missing.tif"),
        (["ndvi", str(text), "--red", "1", "--nir", "2", "-o", out], "notes.txt"),
        (["ndvi", str(scene), "--red", "1", "--nir", "7", "-o", out], "band 7"),
        (["ndvi", "--red", str(single), "--nir", str(other), "-o", out], "nir_20m.tif"),
        (["ndvi", str(safe), "-o", out], "B0"),
        (["calc", "a +* 2", "-i", f"a={single}", "-o", out], "a +* 2"),
        (["calc", "a + zz", "-i", f"a={single}", "-o", out], "zz"),
        (["calc", "a + 1", "-i", f"a={single}", "-o", str(existing)], "exists.tif"),
        (["calc", "a + 1", "-i", f"a={single}", "-o", str(tmp_path / "no" / "such" / "dir" / "o.tif")], "no/such/dir"),
        (["ndvi", str(scene), "-o", out], "red"),
        (["calc", "a + 1", "-i", f"a={single}", "-o", out, "--dtype", "float16"], "float16"),
        (["calc", "a + 1", "-i", f"a={single}", "-o", out, "--executor", "magic"], "magic"),
        (["calc", "a + 1", "-i", f"a={single}", "-o", out, "--compress", "brotli"], "brotli"),
        (["calc", "a + 1", "-i", f"a={single}", "-o", out, "--tile-size", "2"], "--tile-size 2"),
        (["calc", "__import__('os')", "-i", f"a={single}", "-o", out], "__import__"),
    ]


def test_bad_inputs_exit_2_with_one_line(tmp_path: Path, scene_tif: Path, other_grid: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args, needle in bad_cases(tmp_path, scene_tif, other_grid):
        code, _out, err = cli_inproc(capsys, *args)
        lines = err.strip().splitlines()
        assert code == 2, (args, err)
        assert len(lines) == 1 and lines[0].startswith("Error: "), (args, err)
        assert needle in lines[0], (args, lines[0])
        assert "Traceback" not in err
        assert not (tmp_path / "o.tif").exists()


def test_unwritable_output_directory(tmp_path: Path, scene_tif: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import os

    if os.geteuid() == 0:
        pytest.skip("root can write anywhere; permission bits do not apply")
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    code, _, err = cli_inproc(capsys, "ndvi", str(scene_tif), "--red", "1", "--nir", "2", "-o", str(ro / "o.tif"))
    assert code == 2 and "not writable" in err


def test_readonly_filesystem_output(tmp_path: Path, scene_tif: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # As root, permission bits do not stop writes; /proc is a directory nobody can create files in.
    code, _, err = cli_inproc(capsys, "ndvi", str(scene_tif), "--red", "1", "--nir", "2", "-o", "/proc/tilewise-o.tif")
    assert code == 2 and err.startswith("Error: ") and "/proc" in err


def test_success_summary_and_info(tmp_path: Path, scene_tif: Path) -> None:
    r = run_cli("ndvi", str(scene_tif), "--red", "1", "--nir", "2", "-o", str(tmp_path / "n.tif"), "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert "NDVI: min" in r.stdout and "output:" in r.stdout
    assert "tiles 1/1 (100%)" in r.stderr  # plain progress lines when stderr is not a terminal
    png = tmp_path / "n.png"
    rq = run_cli("quicklook", str(tmp_path / "n.tif"), "-o", str(png), "--cmap", "YlGn")
    assert rq.returncode == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r2 = run_cli("info", str(tmp_path / "n.tif"), "--json")
    assert r2.returncode == 0 and '"float32"' in r2.stdout
    r3 = run_cli("status", str(tmp_path / "n.tif"))
    assert r3.returncode == 0 and "complete" in r3.stdout
    # Same command again: nothing to do, output untouched.
    before = (tmp_path / "n.tif").stat().st_mtime_ns
    r4 = run_cli("ndvi", str(scene_tif), "--red", "1", "--nir", "2", "-o", str(tmp_path / "n.tif"))
    assert r4.returncode == 0 and "already complete" in r4.stdout
    assert (tmp_path / "n.tif").stat().st_mtime_ns == before
    # A changed command over the same output is refused without --overwrite.
    r5 = run_cli("ndvi", str(scene_tif), "--red", "2", "--nir", "1", "-o", str(tmp_path / "n.tif"))
    assert r5.returncode == 2 and "exists" in r5.stderr and "--overwrite" in r5.stderr
    r6 = run_cli("ndvi", str(scene_tif), "--red", "2", "--nir", "1", "-o", str(tmp_path / "n.tif"), "--overwrite")
    assert r6.returncode == 0, r6.stderr
    a, _ = read_raster(tmp_path / "n.tif")
    assert np.nanmean(a) < 0  # red and NIR swapped


def test_batch_outputs_one_per_input(tmp_path: Path, scene_tif: Path) -> None:
    other = write_raster(tmp_path / "second.tif", read_raster(scene_tif)[0][::-1].copy(), nodata=0, blocksize=None)
    lst = tmp_path / "image_path_list.txt"
    lst.write_text(f"{scene_tif}\n{other}\n")
    r = run_cli("ndvi", "--from-list", str(lst), "--red", "1", "--nir", "2", "-o", str(tmp_path / "out") + "/", "--tile-size", "128")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.tif")) == ["scene_NDVI.tif", "second_NDVI.tif"]
    r2 = run_cli("status", str(tmp_path / "out"))
    assert "outputs 2/2" in r2.stdout


def test_job_file_equals_cli(tmp_path: Path, scene_tif: Path) -> None:
    from tilewise.api import load_job_file, normdiff_job

    f = tmp_path / "job.toml"
    f.write_text(f'command = "ndvi"\ninputs = ["{scene_tif}"]\nred = 1\nnir = 2\noutput = "{tmp_path / "j.tif"}"\ntile_size = 128\n')
    from_file = load_job_file(str(f))
    from_cli = normdiff_job([str(scene_tif)], str(tmp_path / "j.tif"), index="ndvi", a=2, b=1, tile_size=128)
    assert from_file == from_cli
    r = run_cli("-q", "run", str(f))
    assert r.returncode == 0, r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('command = "ndvi"\ninputs = ["x.tif"]\noutput = "o.tif"\ntile_sise = 5\n')
    r2 = run_cli("run", str(bad))
    assert r2.returncode == 2 and "tile_sise" in r2.stderr


def test_api_refuses_existing_output_without_leaving_a_workdir(tmp_path: Path, scene_tif: Path) -> None:
    out = tmp_path / "taken.tif"
    out.write_bytes(b"somebody else's file")
    with pytest.raises(OutputError, match="already exists"):
        tilewise.ndvi(str(scene_tif), str(out), red=1, nir=2, executor="serial")
    assert out.read_bytes() == b"somebody else's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif", "taken.tif"]


def test_explicit_tile_size_that_cuts_strips_gets_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # GDAL decodes a strip whole, so square tiles across a striped file decode each strip once per tile across.
    data = np.arange(2 * 64 * 200, dtype=np.uint16).reshape(2, 64, 200)
    striped = write_raster(tmp_path / "striped.tif", data, blocksize=None)
    tiled = write_raster(tmp_path / "tiled.tif", data, blocksize=64)
    for src, args, noted in [(striped, ["--tile-size", "64"], True), (striped, [], False), (tiled, ["--tile-size", "64"], False),
                             (striped, ["--tile-size", "256"], False)]:  # fmt: skip
        code, _out, err = cli_inproc(capsys, "ndvi", str(src), "--red", "1", "--nir", "2", "-o", str(tmp_path / "o.tif"), "--overwrite", *args)
        assert code == 0, err
        notes = [line for line in err.splitlines() if line.startswith("note: ")]
        assert bool(notes) == noted, (src.name, args, err)
        if noted:
            assert "striped.tif" in notes[0] and "into 4 tiles across" in notes[0] and "leave --tile-size out" in notes[0]
    code, _out, err = cli_inproc(capsys, "-q", "ndvi", str(striped), "--red", "1", "--nir", "2", "-o", str(tmp_path / "o.tif"),
                                 "--overwrite", "--tile-size", "64")  # fmt: skip
    assert code == 0 and "note:" not in err
