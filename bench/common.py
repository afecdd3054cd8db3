"""Shared helpers for the tilewise benchmarks (``bench/*_bench.py``).

Nothing here imports tilewise: the benchmarks measure it from the outside, as a
command, next to the tools users would otherwise reach for.

What lives here:

* :func:`machine_info` -- CPU model, cores, RAM and library versions for the report;
* :func:`run_measured` -- run one command in its own process, timing wall clock and
  sampling the peak memory (sum of RSS) of its whole process tree every ~50 ms;
* :func:`block_windows` / :func:`sample_windows` -- block-aligned windows of a raster;
* :func:`write_json` / :func:`load_json` / :func:`md_table` -- report plumbing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from rasterio.enums import Resampling
from rasterio.windows import Window

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
WORK_DIR = BENCH_DIR / "work"
RESULTS_DIR = BENCH_DIR / "results"

#: Line prefix a worker process prints (once, on stdout) to report its own phase timings.
PHASES_PREFIX = "BENCH_PHASES "

GB = 1e9


# --------------------------------------------------------------------------- machine description


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _hypervisor() -> str | None:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if line.startswith("Hypervisor vendor:"):
            return line.split(":", 1)[1].strip()
    return None


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except Exception:
        return None
    return str(getattr(mod, "__version__", "?"))


def system_gdal_version() -> str | None:
    """Version of the system (Debian) GDAL Python bindings that ``gdal_calc.py`` uses, if installed."""
    try:
        out = subprocess.run(["/usr/bin/python3", "-c", "from osgeo import gdal; import numpy; print(gdal.__version__, numpy.__version__)"],
                             capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    gdal_v, np_v = out.stdout.split()
    return f"GDAL {gdal_v} (numpy {np_v}) under /usr/bin/python3"


def repo_commit() -> str | None:
    """The repository's commit and whether ``src/`` differs from it (read-only git commands), e.g. ``2a1cedb (src clean)``."""
    try:
        head = subprocess.run(["git", "--no-optional-locks", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=30, check=False)  # fmt: skip
        diff = subprocess.run(["git", "--no-optional-locks", "diff", "--quiet", "HEAD", "--", "src"], cwd=REPO_ROOT, capture_output=True,
                              timeout=30, check=False)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return f"{head.stdout.strip()} (src {'clean' if diff.returncode == 0 else 'modified'})"


def usable_cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def tilewise_env() -> tuple[dict[str, str], str]:
    """The environment that runs the working tree's tilewise (``src`` on PYTHONPATH: it may not be installed)."""
    env = dict(os.environ)
    src = str(REPO_ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env, f"python -m tilewise.cli.main with PYTHONPATH={src}"


_HELP: dict[str, dict[str, Any]] = {}


def tilewise_help(command: str) -> dict[str, Any]:
    """Whether ``tilewise COMMAND`` exists here (``--help`` succeeds) and its help text (cached)."""
    if command not in _HELP:
        env, _ = tilewise_env()
        try:
            p = subprocess.run([*python_cmd(), "-m", "tilewise.cli.main", command, "--help"], capture_output=True, text=True, env=env,
                               cwd=REPO_ROOT, timeout=120, check=False)  # fmt: skip
            ok, text = p.returncode == 0, p.stdout + p.stderr
        except (OSError, subprocess.SubprocessError) as e:
            ok, text = False, str(e)
        _HELP[command] = {"ok": ok, "text": text, "overwrite": "--overwrite" in text}
    return _HELP[command]


def machine_info() -> dict[str, Any]:
    """Describe the machine and the software stack the benchmark ran on."""
    import rasterio

    vm = psutil.virtual_memory()
    return {
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "cpu_model": _cpu_model(),
        "hypervisor": _hypervisor(),
        "logical_cores": psutil.cpu_count(logical=True),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gb": round(vm.total / GB, 1),
        "os": f"{platform.system()} {platform.release()}",
        "libc": " ".join(platform.libc_ver()),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "rasterio": rasterio.__version__,
        "gdal_rasterio": rasterio.__gdal_version__,
        "xarray": _version("xarray"),
        "rioxarray": _version("rioxarray"),
        "dask": _version("dask"),
        "psutil": psutil.__version__,
        "gdal_calc": system_gdal_version(),
        "repo_commit": repo_commit(),
    }


# --------------------------------------------------------------------------- measuring a command


@dataclass
class Measurement:
    """What :func:`run_measured` observed about one command."""

    cmd: list[str]
    returncode: int
    wall_s: float
    peak_rss_bytes: int
    cpu_s: float  # user + system seconds of the command and its (waited-for) children
    other_cpu_s: float  # busy CPU seconds on the machine not accounted to the command (noise from elsewhere)
    samples: int
    timed_out: bool = False
    stdout_tail: str = ""
    stderr_tail: str = ""
    phases: dict[str, float] = field(default_factory=dict)
    #: With ``stderr_times``: (seconds since the command started, line) for each stderr line, as it arrived.
    stderr_lines: list[tuple[float, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the command exited with status 0 within its time limit."""
        return self.returncode == 0 and not self.timed_out

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (the command is joined into one string)."""
        d = asdict(self)
        d["cmd"] = " ".join(self.cmd)
        d["peak_rss_gb"] = round(self.peak_rss_bytes / GB, 3)
        d["cores_used"] = round(self.cpu_s / self.wall_s, 2) if self.wall_s > 0 else None
        d["other_load_cores"] = round(self.other_cpu_s / self.wall_s, 2) if self.wall_s > 0 else None
        return d


def _tree_sample(proc: psutil.Process, cpu_seen: dict[tuple[int, float], float]) -> int:
    """Sum of the RSS of ``proc`` and all its descendants; records each one's CPU seconds so far in ``cpu_seen``.

    The CPU record catches descendants that ``getrusage(RUSAGE_CHILDREN)`` misses: processes
    that are never waited for by their parent (e.g. a multiprocessing forkserver and its workers).
    """
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        with contextlib.suppress(psutil.Error), p.oneshot():
            total += p.memory_info().rss
            t = p.cpu_times()
            cpu_seen[(p.pid, p.create_time())] = t.user + t.system
    return total


def _busy_cpu_s() -> float:
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    return sum(t) - idle


def _tail(path: Path, n: int = 4000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-n:].decode("utf-8", errors="replace")


def _parse_phases(stdout: str) -> dict[str, float]:
    for line in reversed(stdout.splitlines()):
        if line.startswith(PHASES_PREFIX):
            try:
                return {k: float(v) for k, v in json.loads(line[len(PHASES_PREFIX) :]).items()}
            except (ValueError, AttributeError):
                return {}
    return {}


def _pump_lines(pipe: Any, sink: Any, t0: float, lines: list[tuple[float, str]], keep: int = 200) -> None:
    """Copy ``pipe`` to ``sink`` line by line, noting when each line arrived (the first ``keep`` lines)."""
    for raw in iter(pipe.readline, b""):
        sink.write(raw)
        if len(lines) < keep:
            lines.append((round(time.perf_counter() - t0, 3), raw.decode("utf-8", errors="replace").rstrip()[:300]))
    sink.flush()


def run_measured(cmd: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
                 timeout_s: float = 3600.0, interval_s: float = 0.05, stderr_times: bool = False) -> Measurement:  # fmt: skip
    """Run ``cmd`` in its own process; time it and sample its process tree's memory.

    The wall clock covers process start to exit (interpreter start-up and imports
    included, as a user would see it). Peak memory is the largest sum of RSS over
    the process and all its descendants seen in samples taken every ``interval_s``
    seconds (shared pages of forked children count once per process, as RSS does).
    stdout/stderr go to temporary files; their tails are kept, and a line starting
    with :data:`PHASES_PREFIX` on stdout is parsed as the command's own phase timings.
    With ``stderr_times`` stderr goes through a pipe read by a thread that notes when
    each line arrived (for commands that print progress lines at phase boundaries).
    """
    cmd = [str(c) for c in cmd]
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
        with open(out_path, "wb") as out_fh, open(err_path, "wb") as err_fh:
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            busy0 = _busy_cpu_s()
            t0 = time.perf_counter()
            proc = psutil.Popen(cmd, stdout=out_fh, stderr=subprocess.PIPE if stderr_times else err_fh,
                                env=dict(env) if env is not None else None, cwd=cwd)  # fmt: skip
            lines: list[tuple[float, str]] = []
            pump = None
            if stderr_times:
                pump = threading.Thread(target=_pump_lines, args=(proc.stderr, err_fh, t0, lines), name="stderr-pump", daemon=True)
                pump.start()
            peak = 0
            samples = 0
            cpu_seen: dict[tuple[int, float], float] = {}
            stop = threading.Event()

            def sample() -> None:
                nonlocal peak, samples
                while not stop.is_set():
                    peak = max(peak, _tree_sample(proc, cpu_seen))
                    samples += 1
                    stop.wait(interval_s)

            sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
            sampler.start()
            timed_out = False
            try:
                returncode = proc.wait(timeout=timeout_s)
            except psutil.TimeoutExpired:
                timed_out = True
                for child in proc.children(recursive=True):
                    child.kill()
                proc.kill()
                returncode = proc.wait()
            wall = time.perf_counter() - t0
            stop.set()
            sampler.join()
            if pump is not None:
                pump.join(timeout=10)
                proc.stderr.close()
            busy1 = _busy_cpu_s()
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        # rusage counts every descendant that was waited for, exactly; the samples also see those that were not
        # (up to one sampling interval short each). Both cover the command, so the larger is the better estimate.
        cpu = max((ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime), sum(cpu_seen.values()))
        stdout = _tail(out_path, 20000)
        return Measurement(cmd=cmd, returncode=returncode, wall_s=wall, peak_rss_bytes=peak, cpu_s=cpu,
                           other_cpu_s=max(0.0, (busy1 - busy0) - cpu), samples=samples, timed_out=timed_out,
                           stdout_tail=stdout[-4000:], stderr_tail=_tail(err_path), phases=_parse_phases(stdout),
                           stderr_lines=lines)  # fmt: skip


def other_load(seconds: float = 2.0) -> float:
    """Busy cores on the machine over the next ``seconds`` (call it while nothing of ours runs)."""
    b0, t0 = _busy_cpu_s(), time.perf_counter()
    time.sleep(seconds)
    return (_busy_cpu_s() - b0) / (time.perf_counter() - t0)


def wait_for_quiet(max_wait_s: float, threshold_cores: float = 0.15, window_s: float = 2.0) -> tuple[float, float]:
    """Wait until other processes use less than ``threshold_cores`` over ``window_s`` seconds, at most ``max_wait_s``.

    Returns (seconds waited, load seen last). On a small shared machine a benchmark
    measured while something else runs (tests, type checks) is off by up to 2x.
    """
    t0 = time.perf_counter()
    said = False
    while True:
        load = other_load(window_s)
        waited = time.perf_counter() - t0
        if load < threshold_cores or waited >= max_wait_s:
            return waited, load
        if not said:
            print(f"  machine busy ({load:.2f} cores used by other processes); waiting up to {max_wait_s:.0f} s for it to be idle ...", flush=True)
            said = True


def report_phases(**phases: float) -> None:
    """Print a worker's phase timings (seconds) in the form :func:`run_measured` parses."""
    print(PHASES_PREFIX + json.dumps({k: round(v, 4) for k, v in phases.items()}), flush=True)


def warm_page_cache(path: Path, chunk: int = 16 << 20) -> float:
    """Read a file once so that every approach starts from the same (cached) state; return seconds."""
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as fh:
        while fh.read(chunk):
            pass
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- windows


def build_cog_overviews(ds: Any, block: int) -> None:
    """Build in ``ds`` the AVERAGE overview levels GDAL's COG driver makes with OVERVIEWS=AUTO (2, 4, ... until one fits a block).

    For the strict machine limits: the levels computed beforehand, the COG driver then only copies and
    encodes them. The factor rule is ``tilewise.overviews.overview_factors``'s, restated here so that a
    limit does not depend on the code it judges.
    """
    factors, f = [], 2
    while -(-ds.width // (f // 2)) > block or -(-ds.height // (f // 2)) > block:
        factors.append(f)
        f *= 2
    ds.build_overviews(factors, Resampling.average)


def block_windows(width: int, height: int, block: int) -> Iterator[Window]:
    """Block-aligned windows covering a ``width`` x ``height`` raster, row by row."""
    for row in range(0, height, block):
        for col in range(0, width, block):
            yield Window(col, row, min(block, width - col), min(block, height - row))


def sample_windows(width: int, height: int, block: int, n_random: int = 24, seed: int = 7,
                   must_include: Sequence[tuple[int, int]] = ()) -> list[Window]:  # fmt: skip
    """A reproducible sample of block windows: the four corners, the centre, ``must_include`` pixels' blocks, and random ones."""
    rows, cols = -(-height // block), -(-width // block)
    picks: list[tuple[int, int]] = [(0, 0), (0, cols - 1), (rows - 1, 0), (rows - 1, cols - 1), (rows // 2, cols // 2)]
    picks += [(min(r // block, rows - 1), min(c // block, cols - 1)) for r, c in must_include]
    rng = np.random.default_rng(seed)
    picks += [(int(r), int(c)) for r, c in zip(rng.integers(0, rows, n_random), rng.integers(0, cols, n_random), strict=True)]
    seen: set[tuple[int, int]] = set()
    out: list[Window] = []
    for r, c in picks:
        if (r, c) in seen:
            continue
        seen.add((r, c))
        row, col = r * block, c * block
        out.append(Window(col, row, min(block, width - col), min(block, height - row)))
    return out


# --------------------------------------------------------------------------- files and reports


def file_size(path: Path) -> int | None:
    """Size of ``path`` in bytes, or None when it does not exist."""
    try:
        return path.stat().st_size
    except OSError:
        return None


def remove(path: Path) -> None:
    """Remove a file or a directory tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def load_json(path: Path) -> dict[str, Any] | None:
    """Read a JSON report, or None when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A GitHub-flavoured Markdown table; ``align`` is one of l/r/c per column (default: first left, rest right)."""
    align = align or ("l" + "r" * (len(header) - 1))
    marks = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(marks[a] for a in align) + " |"]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    """Format a number for a report cell, ``n/a`` when missing."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}{suffix}"


def python_cmd() -> list[str]:
    """The interpreter running this script (the project's venv when run as documented)."""
    return [sys.executable]


def cached_array(cache: Path, source: Path, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """``compute()``, kept in ``cache`` (an ``.npy`` file) for the next call while it is newer than ``source``.

    The encode-only parts of the benchmarks encode a precomputed output (an NDVI, a focal mean);
    computing it takes longer than the timed encode (30 s for a 16384² focal mean), and it is the
    same array for every part and repeat, so it is computed once per input.
    """
    if cache.exists() and cache.stat().st_mtime >= source.stat().st_mtime:
        with contextlib.suppress(OSError, ValueError):
            return np.load(cache)
    arr = compute()
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, arr)
    os.replace(tmp, cache)
    return arr


def winner_line(values: Mapping[str, float], *, what: str = "", higher_is_better: bool = False, unit: str = "s") -> str:
    """One Markdown line naming the winner and every other row's ratio to it, e.g.

    ``**Winner**: `tilewise` (10.2 s); the others' time relative to it: `rioxarray_dask` 1.25x, ...``.
    ``values`` are wall times (lower is better) or rates (``higher_is_better``); the ratios are
    always "how many times longer than the winner" (time ÷ winner's time, or winner's rate ÷ rate).
    """
    ok = {k: v for k, v in values.items() if v is not None and v > 0}
    if not ok:
        return f"**Winner**{' ' + what if what else ''}: none measured."
    best = (max if higher_is_better else min)(ok, key=ok.__getitem__)
    b = ok[best]
    others = ", ".join(f"`{k}` {(b / v if higher_is_better else v / b):.2f}x" for k, v in ok.items() if k != best)
    return (f"**Winner**{' ' + what if what else ''}: `{best}` ({b:.3g} {unit}); the others' time relative to it: {others or 'no other rows'}.")
