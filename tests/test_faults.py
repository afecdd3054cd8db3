"""Promises 2 and 5 under fire: faults injected into real runs of the ``tilewise`` command.

Nothing lost, nothing half-written: a run killed with ``kill -9`` (the whole process group)
at any moment and run again gives the bytes of an uninterrupted run, and no poll of the output
path ever finds a file there that is not the complete output. A lost worker is retried; a tile
that always fails is retried, reported by key and the others finish (or, with ``--fail-fast``,
the run stops early); a full disk, a damaged input and a second run on the same output get one
clear ``Error:`` line; an input changed between a crash and the rerun is detected.

All tests here are marked ``faults``; the kill campaign is also ``slow``. Set
``TILEWISE_FAULT_SEED`` to replay the campaign's kill moments.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import two_band_scene, write_raster
from tests.test_failures import damage_block

pytestmark = pytest.mark.faults

CLI = [sys.executable, "-m", "tilewise.cli.main"]
SIZE = 2048  # the kill campaign's input: 2048 x 2048, two uint16 bands in 256-pixel DEFLATE blocks


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


def workdir_of(out: Path) -> Path:
    return out.parent / f".{out.name}.tilewise"


def status_json(out: Path) -> dict:
    r = run_cli("status", str(out), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def leftovers(out: Path) -> list[str]:
    """Temporary files a run left beside the output (a finished run must leave none)."""
    return sorted(p.name for p in out.parent.glob(f".{out.name}.*") if p.is_file())


# ---------------------------------------------------------------- the jobs the faults hit


def ndvi_args(src: Path, out: Path, *extra: str) -> list[str]:
    return [*CLI, "-q", "ndvi", str(src), "--red", "1", "--nir", "2", "-o", str(out), "--tile-size", "256", "--compress", "deflate", *extra]


def focal_args(src: Path, out: Path, *extra: str) -> list[str]:
    # Tiles of 250 do not start on multiples of the overview factor 4: overviews are a phase of their own.
    return [*CLI, "-q", "focal", str(src), "--band", "2", "--stat", "mean", "--size", "9", "-o", str(out), "--tile-size", "250", *extra]


JOBS: dict[str, Callable[..., list[str]]] = {"ndvi": ndvi_args, "focal": focal_args}


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("faults")
    return write_raster(d / "scene.tif", two_band_scene(SIZE, SIZE, seed=11), nodata=0, blocksize=256)


@pytest.fixture(scope="module")
def references(scene: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Each job's output from one uninterrupted run on the serial (reference) executor."""
    d = tmp_path_factory.mktemp("ref")
    refs = {}
    for name, make in JOBS.items():
        out = d / f"{name}.tif"
        subprocess.run(make(scene, out, "--executor", "serial"), check=True, timeout=300)
        refs[name] = out.read_bytes()
    return refs


# ---------------------------------------------------------------- watching a run


class OutputWatch(threading.Thread):
    """Polls ``path`` every few ms: it must be absent or a complete file equal to ``reference``.

    Any other state (a file of another size, or of the right size with other bytes) is a
    complete-looking but partial output: a violation of promise 2.
    """

    def __init__(self, path: Path, reference: bytes, interval: float = 0.003) -> None:
        super().__init__(daemon=True)
        self.path, self.reference, self.interval = path, reference, interval
        self.polls = 0
        self.seen = 0  # polls that found the complete output
        self.violations: list[str] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        checked = None
        while not self._stop_event.is_set():
            self.polls += 1
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                checked = None
            else:
                sig = (st.st_ino, st.st_size, st.st_mtime_ns)
                if st.st_size != len(self.reference):
                    self.violations.append(f"{self.path.name} has {st.st_size} bytes, the complete output {len(self.reference)}")
                elif sig != checked:
                    try:
                        data = self.path.read_bytes()
                    except FileNotFoundError:
                        data = self.reference
                    if data != self.reference:
                        self.violations.append(f"{self.path.name} has the size of the output but other bytes")
                    checked = sig
                self.seen += 1
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)


@contextmanager
def watching(path: Path, reference: bytes) -> Iterator[OutputWatch]:
    watch = OutputWatch(path, reference)
    watch.start()
    try:
        yield watch
    finally:
        watch.stop()


class Probe:
    """What a run has left on disk so far: manifest lines, temporary files, the output."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.wd = workdir_of(out)
        self.records = self.wd / "manifest" / "records-main.jsonl"

    def lines(self) -> int:
        try:
            return self.records.read_bytes().count(b"\n")
        except FileNotFoundError:
            return 0

    def started(self) -> bool:
        return (self.wd / "job.json").exists()

    def partial(self) -> bool:
        """The output COG is being written (or a killed run left its temporary behind)."""
        return any(p.name.endswith(".partial") for p in self.out.parent.glob(f".{self.out.name}.*"))

    def tile_tmp(self) -> bool:
        """A tile file is being written."""
        try:
            return any(e.name.endswith(".tmp") for e in os.scandir(self.wd / "tiles" / "0"))
        except FileNotFoundError:
            return False

    def overview_phase(self) -> bool:
        return (self.wd / "mosaic" / "0.vrt").exists()

    def output(self) -> bool:
        return self.out.exists()


@dataclass
class Kill:
    landed: bool  # the run was still going when the signal was sent
    at_s: float
    lines: int  # manifest lines at the kill
    partial_left: bool  # a .partial output was left behind: the kill landed inside the COG write
    output_at_kill: bool


def run_and_kill(args: list[str], probe: Probe, when: Callable[[Probe], bool], delay: float, timeout: float = 120) -> Kill:
    """Start ``args`` in its own process group; ``delay`` s after ``when(probe)`` first holds, kill -9 the whole group."""
    proc = subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.perf_counter()
    fired: float | None = None
    try:
        while proc.poll() is None:
            now = time.perf_counter()
            if fired is None and when(probe):
                fired = now
            if (fired is not None and now - fired >= delay) or now - t0 > timeout:
                break
            time.sleep(0.0005)
        lines, output = probe.lines(), probe.output()
        landed = proc.poll() is None
        if landed:
            os.killpg(proc.pid, signal.SIGKILL)  # the coordinator, the forkserver and every worker, like a lost node
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    return Kill(landed, time.perf_counter() - t0, lines, probe.partial(), output)


@dataclass
class Profile:
    """Moments of an uninterrupted run (seconds from its start), to aim kills at phases."""

    full: float
    first_record: float
    assembly: float  # how long the .partial output exists
    tiles: int  # manifest lines of the tile phase
    overviews: float = 0.0  # start of the overview phase, when there is one
    events: dict[str, float] = field(default_factory=dict)


def profile_run(args: list[str], probe: Probe) -> Profile:
    ev: dict[str, float] = {}
    proc = subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t0 = time.perf_counter()
    while proc.poll() is None:
        t = time.perf_counter() - t0
        for name, seen in (("record", probe.lines() > 0), ("overviews", probe.overview_phase()), ("partial", probe.partial()), ("output", probe.output())):
            if seen and name not in ev:
                ev[name] = t
        time.sleep(0.001)
    _, err = proc.communicate()
    assert proc.returncode == 0, err
    full = time.perf_counter() - t0
    lines = probe.records.read_text().splitlines()
    tiles = sum('"kind": "tile"' in line for line in lines)
    asm = max(0.01, ev.get("output", full) - ev.get("partial", full))
    return Profile(full, ev.get("record", 0.0), asm, tiles, ev.get("overviews", 0.0), ev)


# ---------------------------------------------------------------- 1. kill -9 campaign


@dataclass
class Trial:
    job: str
    moment: str
    kills: list[Kill]
    identical: bool = False
    rerun_rc: int = -1
    violations: list[str] = field(default_factory=list)
    polls: int = 0
    note: str = ""

    @property
    def survived(self) -> bool:
        return self.identical and not self.violations and self.rerun_rc == 0


def _moments(job: str, prof: Profile, rng: random.Random) -> list[tuple[str, list[tuple[Callable[[Probe], bool], float]]]]:
    """Twelve kill moments per job: (name, [(trigger, delay after it)] - two entries kill the rerun too)."""
    now: Callable[[Probe], bool] = lambda p: True  # noqa: E731
    moments: list[tuple[str, list[tuple[Callable[[Probe], bool], float]]]] = [
        ("work directory just created", [(Probe.started, rng.uniform(0.0, 0.03))]),
        ("random moment", [(now, rng.uniform(0.1, 1.0) * prof.full)]),
        ("random moment", [(now, rng.uniform(0.1, 1.0) * prof.full)]),
        ("random moment", [(now, rng.uniform(0.1, 1.0) * prof.full)]),
    ]
    for _ in range(3):
        k = rng.randint(1, max(1, prof.tiles - 1))
        moments.append((f"manifest line {k} written", [(lambda p, k=k: p.lines() >= k, rng.uniform(0.0, 0.004))]))
    moments.append(("a tile file being written", [(Probe.tile_tmp, 0.0)]))
    moments.append(("inside the COG write", [(Probe.partial, rng.uniform(0.0, 0.9) * prof.assembly)]))
    if job == "focal":
        moments.append(("overview phase", [(Probe.overview_phase, rng.uniform(0.0, 0.05))]))
    else:
        moments.append(("inside the COG write", [(Probe.partial, rng.uniform(0.0, 0.9) * prof.assembly)]))
    moments.append(("output renamed into place, before its record", [(Probe.output, 0.0)]))
    k = rng.randint(1, max(1, prof.tiles // 2))
    moments.append((f"twice: manifest line {k}, then the rerun inside the COG write",
                    [(lambda p, k=k: p.lines() >= k, 0.0), (Probe.partial, rng.uniform(0.0, 0.9) * prof.assembly)]))  # fmt: skip
    return moments


@pytest.mark.slow
def test_kill_9_campaign(scene: Path, references: dict[str, bytes], tmp_path: Path) -> None:
    """kill -9 of the whole run at >= 20 moments across every phase; each rerun gives the reference bytes."""
    seed = int(os.environ.get("TILEWISE_FAULT_SEED", "20240607"))
    rng = random.Random(seed)
    t_start = time.perf_counter()
    trials: list[Trial] = []
    total_polls = 0
    for job, make in JOBS.items():
        ref = references[job]
        base = tmp_path / job
        base.mkdir()
        out = base / "o.tif"
        args = make(scene, out, "--workers", "2", "--executor", "processes")
        with watching(out, ref) as watch:
            prof = profile_run(args, Probe(out))
        assert out.read_bytes() == ref, f"{job}: the processes executor differs from the serial reference"
        assert not watch.violations, watch.violations
        for moment, kills in _moments(job, prof, rng):
            shutil.rmtree(workdir_of(out))
            out.unlink(missing_ok=True)
            trial = Trial(job, moment, [])
            with watching(out, ref) as watch:
                for when, delay in kills:
                    trial.kills.append(run_and_kill(args, Probe(out), when, delay))
                    if not trial.kills[-1].landed:
                        trial.note = "run ended before the kill"
                        break
                r = subprocess.run(args, capture_output=True, text=True, timeout=300)
                trial.rerun_rc = r.returncode
                if r.returncode != 0:
                    trial.note = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "rerun failed"
            trial.identical = out.exists() and out.read_bytes() == ref
            trial.violations, trial.polls = watch.violations, watch.polls
            total_polls += watch.polls
            wd = workdir_of(out)
            left = leftovers(out) + [str(p.relative_to(wd)) for sub in ("tiles", "ovr") for p in (wd / sub).rglob("*") if p.is_file()]
            if left:
                trial.violations.append(f"left behind after the rerun: {left}")
            trials.append(trial)
    elapsed = time.perf_counter() - t_start

    kills = [k for t in trials for k in t.kills if k.landed]
    survived = [t for t in trials if t.survived]
    print(f"\nkill -9 campaign (seed {seed}): {len(trials)} trials, {len(kills)} kills landed, {len(survived)} survived, "
          f"{total_polls} output polls, {elapsed:.1f} s")  # fmt: skip
    for t in trials:
        where = "; ".join(f"{k.at_s:.3f}s lines={k.lines}{' partial' if k.partial_left else ''}{' output' if k.output_at_kill else ''}"
                          for k in t.kills)  # fmt: skip
        print(f"  {t.job:5} {t.moment:55} {'ok  ' if t.survived else 'FAIL'} [{where}] {t.note} {'; '.join(t.violations)}")

    assert not [t for t in trials if not t.survived], "some trials lost or half-wrote output (see the table above)"
    assert len(kills) >= 20, f"only {len(kills)} kills landed before their run ended"
    assert any(k.partial_left for k in kills), "no kill landed inside the COG write"
    assert any(k.lines > 0 for k in kills) and any(k.lines == 0 for k in kills), "kills did not cover both before and after the first tile"


# ---------------------------------------------------------------- 2. a lost worker


def workers_of(pid: int) -> list[int]:
    """Worker processes of a run: the children of its multiprocessing forkserver."""
    import psutil

    out = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if any("multiprocessing.forkserver" in part for part in child.cmdline()) and child.ppid() != pid:
                out.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return out


def writer_of(pids: list[int], suffix: str) -> list[int]:
    import psutil

    hits = []
    for pid in pids:
        try:
            if any(f.path.endswith(suffix) for f in psutil.Process(pid).open_files()):
                hits.append(pid)
        except psutil.NoSuchProcess:
            continue
    return hits


@pytest.mark.parametrize("phase", ["tiles", "assembly"])
def test_lost_worker_is_retried(phase: str, scene: Path, references: dict[str, bytes], tmp_path: Path) -> None:
    pytest.importorskip("psutil")
    out = tmp_path / "o.tif"
    args = focal_args(scene, out, "--workers", "2", "--executor", "processes")
    args[args.index("-q")] = "-v"  # retry lines on stderr
    probe = Probe(out)
    killed: list[int] = []
    with watching(out, references["focal"]) as watch:
        proc = subprocess.Popen(args, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        try:
            while proc.poll() is None and time.time() < deadline and not killed:
                ready = (probe.lines() >= 2 and not probe.overview_phase()) if phase == "tiles" else probe.partial()
                if ready:
                    workers = workers_of(proc.pid)
                    victims = workers[:1] if phase == "tiles" else (writer_of(workers, ".partial") or workers)
                    for pid in victims:
                        os.kill(pid, signal.SIGKILL)
                    killed = victims
                time.sleep(0.001)
            lines_at_kill = probe.lines()
            _, stderr = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert killed, "no worker was found to kill before the run ended"
    assert proc.returncode == 0, stderr
    assert "WorkerLostError" in stderr and "retry:" in stderr, stderr
    assert out.read_bytes() == references["focal"]
    assert not watch.violations, watch.violations
    assert lines_at_kill < probe.lines()
    assert leftovers(out) == []


# ---------------------------------------------------------------- 3. a tile that always fails


@pytest.fixture
def damaged(tmp_path: Path) -> tuple[Path, bytes, tuple[int, int]]:
    """A 1024x1024 input whose band-1 block at rows 0:64, cols 0:64 (in tile r0000-c0000) is garbage; its pristine bytes and times."""
    src = write_raster(tmp_path / "in.tif", np.ascontiguousarray(two_band_scene(1024, 1024, seed=4)), nodata=0, blocksize=64)
    pristine = src.read_bytes()
    st = src.stat()
    damage_block(src, 0, 0)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))  # damaged in place, same size and time: the same job
    return src, pristine, (st.st_atime_ns, st.st_mtime_ns)


def fail_args(src: Path, out: Path, *extra: str) -> list[str]:
    return ["ndvi", str(src), "--red", "1", "--nir", "2", "-o", str(out), "--tile-size", "128", *extra]


def restore(src: Path, pristine: bytes, times: tuple[int, int]) -> None:
    src.write_bytes(pristine)
    os.utime(src, ns=times)


def clean_reference(src: Path, pristine: bytes, tmp_path: Path) -> bytes:
    good = tmp_path / "good" / src.name
    good.parent.mkdir()
    good.write_bytes(pristine)
    ref = tmp_path / "good" / "ref.tif"
    r = run_cli("-q", *fail_args(good, ref, "--executor", "serial"))
    assert r.returncode == 0, r.stderr
    return ref.read_bytes()


def test_failing_tile_is_retried_reported_and_the_others_finish(damaged: tuple[Path, bytes, tuple[int, int]], tmp_path: Path) -> None:
    src, pristine, times = damaged
    out = tmp_path / "o.tif"
    retries = 3
    r = run_cli("-v", *fail_args(src, out, "--retries", str(retries), "--executor", "processes", "--workers", "2", "--keep-going"))
    assert r.returncode == 1, r.stderr
    errors = error_lines(r.stderr)
    assert len(errors) == 1 and errors[0].startswith("Error: 1 of 64 tiles failed (first: 0/r0000-c0000:"), r.stderr
    assert "in.tif" in errors[0] and "rows 0:128, cols 0:128" in errors[0]
    assert r.stderr.count("retry: 0/r0000-c0000:") == retries  # the retry events
    assert not out.exists() and leftovers(out) == []
    records = [json.loads(line) for line in (workdir_of(out) / "manifest" / "records-main.jsonl").read_text().splitlines()]
    failed = [rec for rec in records if rec["kind"] == "failed"]
    assert [(rec["key"], rec["attempts"]) for rec in failed] == [("0/r0000-c0000", retries + 1)]
    st = status_json(out)
    assert st["state"] == "failed" and st["tiles_done"] == 63 and st["tiles_total"] == 64
    assert list(st["failed"]) == ["0/r0000-c0000"]
    assert "in.tif" in st["failed"]["0/r0000-c0000"] and f"(after {retries + 1} attempts)" in st["failed"]["0/r0000-c0000"]
    text = run_cli("status", str(out)).stdout
    assert "failed 0/r0000-c0000: InputError: cannot read" in text

    # Fixed (same size and time, as a copy with cp -p would be): the rerun runs only the failed tile.
    restore(src, pristine, times)
    r = run_cli(*fail_args(src, out, "--retries", str(retries)))
    assert r.returncode == 0, r.stderr
    assert "1 tile(s) run, 63 already done" in r.stdout
    assert out.read_bytes() == clean_reference(src, pristine, tmp_path)


def test_fail_fast_stops_scheduling_tiles(damaged: tuple[Path, bytes, tuple[int, int]], tmp_path: Path) -> None:
    src, pristine, times = damaged
    # Serial: units run in order, so what fail-fast skips is exact. The failing tile is in the first
    # unit (16 tiles); its retries go first, then the run stops: 15 tiles done, 48 never started.
    out = tmp_path / "serial.tif"
    t0 = time.perf_counter()
    r = run_cli(*fail_args(src, out, "--retries", "2", "--executor", "serial", "--fail-fast"))
    fast_s = time.perf_counter() - t0
    assert r.returncode == 1, r.stderr
    errors = error_lines(r.stderr)
    assert len(errors) == 1 and "0/r0000-c0000" in errors[0] and "--fail-fast" in errors[0], r.stderr
    st = status_json(out)
    assert st["state"] == "failed" and list(st["failed"]) == ["0/r0000-c0000"]
    assert st["tiles_done"] == 15 and f"{64 - 1 - 15} tiles not run" in errors[0]
    assert not out.exists() and leftovers(out) == []

    # The default keeps going: every other tile is done before exit 1.
    keep = tmp_path / "keep.tif"
    t0 = time.perf_counter()
    r = run_cli(*fail_args(src, keep, "--retries", "2", "--executor", "serial"))
    keep_s = time.perf_counter() - t0
    assert r.returncode == 1 and status_json(keep)["tiles_done"] == 63
    assert "--fail-fast" not in r.stderr
    print(f"\nfail-fast exit after {fast_s:.2f} s, keep-going after {keep_s:.2f} s")

    # Processes: the same stop (units already running finish and are recorded), no output.
    procs = tmp_path / "procs.tif"
    r = run_cli(*fail_args(src, procs, "--retries", "2", "--executor", "processes", "--workers", "2", "--fail-fast"))
    assert r.returncode == 1 and len(error_lines(r.stderr)) == 1, r.stderr
    assert list(status_json(procs)["failed"]) == ["0/r0000-c0000"]
    assert not procs.exists() and leftovers(procs) == []

    # After fixing the input, the same command finishes the job.
    restore(src, pristine, times)
    ref = clean_reference(src, pristine, tmp_path)
    for o, executor in ((out, "serial"), (procs, "processes")):
        r = run_cli(*fail_args(src, o, "--retries", "2", "--executor", executor, "--fail-fast"))
        assert r.returncode == 0, r.stderr
        assert o.read_bytes() == ref


# ---------------------------------------------------------------- 4. a full disk


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` at ``path`` (skip when this process may not mount); always unmounted after."""
    path.mkdir(parents=True, exist_ok=True)
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root (CAP_SYS_ADMIN); run as root or in a privileged container")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tilewise-faults", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({(r.stderr or r.stdout).strip() or 'mount failed'}): needs CAP_SYS_ADMIN")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(mount: Path, leave: int) -> Path:
    """Fill the file system at ``mount`` so that about ``leave`` bytes stay free."""
    filler = mount / "filler"
    free = shutil.disk_usage(mount).free
    with open(filler, "wb") as fh:
        fh.truncate(0)
        fh.write(b"\0" * max(0, free - leave))
    return filler


@pytest.mark.parametrize("where", ["tiles", "cog", "cog-end"])
def test_disk_full_gives_one_clear_error_then_resumes(where: str, tmp_path: Path) -> None:
    """A full disk while tiles are written, early in the COG write, or near its end (where GDAL
    can report success for a file cut short): one error line, nothing at the output path, and
    after freeing space the same command resumes to the reference bytes."""
    size = 1024
    src = write_raster(tmp_path / "in.tif", two_band_scene(size, size, seed=5), nodata=0, blocksize=256)
    ref_out = tmp_path / "ref.tif"
    args = ["ndvi", str(src), "--red", "1", "--nir", "2", "--tile-size", "256", "--executor", "processes", "--workers", "2"]
    r = run_cli("-q", *args, "-o", str(ref_out))
    assert r.returncode == 0, r.stderr
    ref = ref_out.read_bytes()
    tiles_bytes = size * size * 4 + (size // 2) ** 2 * 4  # float32 tiles and their factor-2 overview pieces
    with tmpfs(tmp_path / "mnt", "24m") as mnt:
        out = mnt / "ndvi.tif"
        # Room for a few tiles only, or for every tile but not the output.
        leave = {"tiles": tiles_bytes // 3, "cog": tiles_bytes + len(ref) // 3, "cog-end": tiles_bytes + len(ref) * 9 // 10}[where]
        filler = fill(mnt, leave)
        with watching(out, ref) as watch:
            r = run_cli("-q", *args, "-o", str(out))
            assert r.returncode == 1, r.stderr
            errors = error_lines(r.stderr)
            assert len(errors) == 1, r.stderr
            msg = errors[0]
            assert "no space left on device writing" in msg and str(mnt) in msg, msg
            assert "free there" in msg and "this job needs up to" in msg and "bytes)" in msg, msg
            assert "rerun the same command to resume" in msg
            assert not out.exists() and leftovers(out) == []
            if where != "tiles":
                assert "ndvi.tif" in msg and status_json(out)["tiles_done"] == 16, msg
            filler.unlink()
            r = run_cli(*args, "-o", str(out))
            assert r.returncode == 0, r.stderr
            if where != "tiles":
                assert "0 tile(s) run, 16 already done" in r.stdout
        assert out.read_bytes() == ref
        assert not watch.violations, watch.violations
        assert leftovers(out) == []
    print(f"\ndisk full ({where}): {msg}")


def test_a_cog_cut_short_is_never_renamed_into_place(tmp_path: Path) -> None:
    """GDAL's COG driver can return success for a file a full disk cut short; the check before the rename catches it."""
    from tilewise.assemble import check_complete
    from tilewise.errors import OutputError
    from tilewise.rasterfile import open_read

    src = write_raster(tmp_path / "in.tif", two_band_scene(700, 900, seed=9), nodata=0, blocksize=256)
    out = tmp_path / "o.tif"
    r = run_cli("-q", "ndvi", str(src), "--red", "1", "--nir", "2", "-o", str(out), "--tile-size", "256")
    assert r.returncode == 0, r.stderr
    from tilewise.grid import Grid

    with open_read(str(out)) as ds:
        grid = Grid(None, ds.transform, ds.height, ds.width)
    check_complete(out, grid, 1)
    data = out.read_bytes()
    for cut in (200, 4096, len(data) // 2, len(data) - 8):
        part = tmp_path / f"cut{cut}.tif"
        part.write_bytes(data[:cut])
        with pytest.raises(OutputError, match="is incomplete"):
            check_complete(part, grid, 1)


# ---------------------------------------------------------------- 5. damaged inputs


def test_truncated_geotiff_names_file_and_window(tmp_path: Path) -> None:
    src = write_raster(tmp_path / "cut.tif", two_band_scene(512, 512, seed=6), nodata=0, blocksize=128)
    os.truncate(src, src.stat().st_size // 2)  # header intact, the last blocks gone
    out = tmp_path / "o.tif"
    r = run_cli("-q", *fail_args(src, out, "--retries", "0"))
    assert r.returncode == 1, r.stderr
    errors = error_lines(r.stderr)
    assert len(errors) == 1 and "cut.tif" in errors[0] and "window rows" in errors[0], r.stderr
    st = status_json(out)
    assert st["failed"] and all("cut.tif" in e and "window rows" in e and "truncated or damaged" in e for e in st["failed"].values())
    assert 0 < st["tiles_done"] < 16
    assert not out.exists() and leftovers(out) == []


def test_geotiff_cut_inside_its_header_names_the_file(tmp_path: Path) -> None:
    src = write_raster(tmp_path / "stub.tif", two_band_scene(512, 512, seed=6), nodata=0, blocksize=128)
    os.truncate(src, 100)  # GDAL cannot even open it
    out = tmp_path / "o.tif"
    r = run_cli("-q", *fail_args(src, out))
    assert r.returncode == 2, r.stderr
    errors = error_lines(r.stderr)
    assert len(errors) == 1 and "stub.tif" in errors[0] and "is not a raster GDAL can read" in errors[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists() and leftovers(out) == []


def test_jp2_with_a_damaged_tile_names_file_and_window(tmp_path: Path) -> None:
    import rasterio
    from affine import Affine

    if "JP2OpenJPEG" not in {d for d in rasterio.drivers.raster_driver_extensions().values()}:
        pytest.skip("GDAL here has no JP2OpenJPEG driver")
    src = tmp_path / "scene.jp2"
    with rasterio.open(src, "w", driver="JP2OpenJPEG", width=512, height=512, count=2, dtype="uint16", crs="EPSG:32632", nodata=0,
                       transform=Affine(10.0, 0.0, 300000.0, 0.0, -10.0, 5600000.0), QUALITY=100, REVERSIBLE="YES",
                       BLOCKXSIZE=512, BLOCKYSIZE=128) as ds:  # fmt: skip
        ds.write(two_band_scene(512, 512, seed=8))
    data = bytearray(src.read_bytes())
    sot = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0x90]  # start of each JPEG 2000 tile
    assert len(sot) == 4, "expected four 128-row codestream tiles"
    data[sot[2] + 500 : sot[2] + 5500] = b"\xff" * 5000  # garbage inside the third tile's packets (rows 256:384)
    src.write_bytes(bytes(data))
    out = tmp_path / "o.tif"
    r = run_cli("-q", *fail_args(src, out, "--retries", "1"))
    assert r.returncode == 1, r.stderr
    errors = error_lines(r.stderr)
    assert len(errors) == 1 and "scene.jp2" in errors[0] and "rows 256:384" in errors[0], r.stderr
    st = status_json(out)
    assert sorted(st["failed"]) == [f"0/r0002-c{c:04d}" for c in range(4)]
    assert all("scene.jp2" in e and "rows 256:384" in e for e in st["failed"].values())
    assert st["tiles_done"] == 12
    assert not out.exists() and leftovers(out) == []


# ---------------------------------------------------------------- 6. two runs on one output


def test_second_run_on_same_output_is_refused(scene: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.tif"
    # Thousands of tiny tiles on one process: the first run surely outlives the second's start.
    slow = ndvi_args(scene, out, "--executor", "serial")
    slow[slow.index("--tile-size") + 1] = "16"
    proc = subprocess.Popen(slow, start_new_session=True)
    lock = workdir_of(out) / "lock"
    deadline = time.time() + 60
    while time.time() < deadline and not (lock.exists() and lock.stat().st_size > 0):
        time.sleep(0.02)
    r = subprocess.run(ndvi_args(scene, out), capture_output=True, text=True, timeout=120)
    still_running = proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert still_running, "the first run ended before the check; the test needs a slower first run"
    assert r.returncode == 2
    errors = error_lines(r.stderr)
    assert len(errors) == 1 and "another tilewise run" in errors[0] and f"pid {proc.pid}" in errors[0] and os.uname().nodename in errors[0]
    assert not out.exists()


# ---------------------------------------------------------------- 7. an input changed between a crash and the rerun


def test_input_changed_after_a_crash_is_detected(tmp_path: Path) -> None:
    src = write_raster(tmp_path / "in.tif", two_band_scene(1024, 1024, seed=1), nodata=0, blocksize=128)
    out = tmp_path / "o.tif"
    args = [*CLI, "-q", "ndvi", str(src), "--red", "1", "--nir", "2", "-o", str(out), "--tile-size", "128", "--workers", "2"]
    kill = run_and_kill(args, Probe(out), lambda p: p.lines() >= 10, 0.0)
    assert kill.landed and not out.exists()

    # Same bytes, a new modification time: a different input as far as the job can tell.
    os.utime(src)
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and len(error_lines(r.stderr)) == 1, r.stderr
    assert "unfinished run of a different job" in r.stderr and "--overwrite" in r.stderr

    # New contents: refused too, then accepted with --overwrite; the output is that of a fresh run.
    write_raster(src, two_band_scene(1024, 1024, seed=2), nodata=0, blocksize=128)
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    errors = error_lines(r.stderr)
    assert len(errors) == 1 and "unfinished run of a different job" in errors[0] and "--overwrite" in errors[0]
    assert not out.exists()
    r = subprocess.run([*args, "--overwrite"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr

    fresh_dir = tmp_path / "fresh"
    fresh_dir.mkdir()
    shutil.copy2(src, fresh_dir / "in.tif")
    fresh = fresh_dir / "o.tif"
    fresh_args = [a if a not in (str(src), str(out)) else str(fresh_dir / Path(a).name) for a in args]
    subprocess.run(fresh_args, check=True, timeout=300)
    assert out.read_bytes() == fresh.read_bytes()


def test_an_uncompressed_tile_cut_short_is_refused(tmp_path: Path) -> None:
    """Tiles are written by GDAL itself (no copy in memory), then checked to hold all their blocks: a
    file shorter than that (a full disk GDAL did not report) raises instead of being recorded as done."""
    import rasterio
    from affine import Affine

    from tilewise.errors import OutputError
    from tilewise.grid import Grid
    from tilewise.io import write_array
    from tilewise.rasterfile import write_raster_direct

    grid = Grid("EPSG:32633", Affine(30.0, 0.0, 0.0, 0.0, -30.0, 0.0), 700, 900)
    data = np.arange(2 * 700 * 900, dtype=np.float32).reshape(2, 700, 900)
    size = write_array(tmp_path / "t.tif", data, grid, -9999.0, ["a", "b"])
    assert size >= 2 * 2 * 2 * 512 * 512 * 4  # 2 x 2 blocks of 512 per band, edge blocks whole
    profile = {"driver": "GTiff", "width": 900, "height": 700, "count": 2, "dtype": "float32", "tiled": True, "blockxsize": 512, "blockysize": 512,
               "crs": grid.crs, "transform": grid.transform}
    with pytest.raises(OutputError, match="cut short"):
        write_raster_direct(tmp_path / "short.tif", lambda ds: ds.write(data), size + 1, **profile)
    with rasterio.open(tmp_path / "t.tif") as ds:
        assert (ds.read() == data).all() and ds.descriptions == ("a", "b")


def test_outputs_are_flushed_to_disk_while_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The COG is flushed to the disk while GDAL writes it (so its fsync before the rename waits little):
    the flushing thread syncs the file being written, stops with the write, and leaves its bytes alone."""
    from tilewise import rasterfile

    if not hasattr(os, "fdatasync"):
        pytest.skip("os.fdatasync is not on this platform; outputs are only fsynced at the end")
    synced: list[int] = []
    real = os.fdatasync

    def spy(fd: int) -> None:
        synced.append(os.fstat(fd).st_size)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", spy)
    path = tmp_path / "growing.bin"
    with rasterfile.flushing(path, every=0.02), open(path, "wb") as fh:
        for i in range(20):
            fh.write(bytes([i]) * 4096)
            fh.flush()
            time.sleep(0.01)
    after = len(synced)
    time.sleep(0.1)
    assert after >= 2 and len(synced) == after  # synced while written, and no more afterwards
    assert path.read_bytes() == b"".join(bytes([i]) * 4096 for i in range(20))
    with rasterfile.flushing(tmp_path / "never-created.bin", every=0.01):  # nothing to flush: no error
        time.sleep(0.05)
