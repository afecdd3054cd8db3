"""The same CPU-bound job on every executor: the tutorial's executor table (issue: one job, every engine).

Generates (once, cached in bench/work/) a synthetic DEM, writes a focal-median job file,
starts a single-node SLURM on loopback (scripts/slurm/up.sh; stopped again at the end) and runs ``tilewise bench executors`` on serial, processes,
dask, parsl, a SLURM array and GNU parallel. Results: bench/results/executors.{json,md}.

    .venv/bin/python bench/executors_bench.py [--size 8192] [--workers N] [--stat median --window 11]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from common import machine_info, wait_for_quiet  # noqa: E402
from focal_bench import ensure_input  # noqa: E402

RESULTS = HERE / "results"
WORK = HERE / "work"


def _slurm_up(state: Path) -> dict[str, str]:
    """Start (or find) the loopback SLURM; return the environment pointing at it."""
    r = subprocess.run([str(REPO / "scripts" / "slurm" / "up.sh"), str(state)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"cannot start SLURM for the benchmark (exit {r.returncode}): {r.stderr.strip().splitlines()[-1:]}")
    conf = r.stdout.strip().splitlines()[-1].split("=", 1)[1]
    return {**os.environ, "SLURM_CONF": conf}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=8192, help="DEM edge in pixels (default 8192: over a minute of serial work for an 11x11 median)")
    ap.add_argument("--stat", default="median")
    ap.add_argument("--window", type=int, default=11)
    ap.add_argument("--workers", type=int, default=None, help="cores per parallel executor (default: usable cores)")
    ap.add_argument("--executors", default="serial,processes,dask,parsl,slurm,gnu-parallel")
    args = ap.parse_args()

    dem, _ = ensure_input(WORK, args.size, regenerate=False)
    out = WORK / "executors"
    out.mkdir(parents=True, exist_ok=True)
    job = out / "job.toml"
    job.write_text(f'command = "focal"\ninputs = ["{dem}"]\noutput = "{out / "focal.tif"}"\nstat = "{args.stat}"\nsize = {args.window}\n',
                   encoding="utf-8")  # fmt: skip
    state = Path(tempfile.gettempdir()) / "tilewise-bench-slurm"  # the benchmark's own cluster, stopped at the end
    env = _slurm_up(state) if "slurm" in args.executors else dict(os.environ)
    try:
        waited, load = wait_for_quiet(120.0)
        print(f"machine quiet after {waited:.0f} s (other load {load:.2f} cores)", flush=True)
        cmd = [sys.executable, "-m", "tilewise", "bench", "executors", str(job), "--executors", args.executors, "--partition", "debug",
               "--out", str(out / "report")]  # fmt: skip
        if args.workers:
            cmd += ["--workers", str(args.workers)]
        subprocess.run(cmd, check=True, env=env)
    finally:
        if "slurm" in args.executors:
            subprocess.run([str(REPO / "scripts" / "slurm" / "down.sh"), str(state)], check=False)
    result = json.loads((out / "report" / "executors.json").read_text(encoding="utf-8"))
    result["bench_machine"] = machine_info()
    result["workload"] = {"command": f"tilewise focal --stat {args.stat} --size {args.window}", "input": f"{args.size} x {args.size} float32 DEM"}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "executors.json").write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    md = (out / "report" / "executors.md").read_text(encoding="utf-8")
    md = md.replace("# tilewise bench executors: focal", f"# Executors: focal {args.stat} {args.window}x{args.window} on a {args.size}² DEM")
    (RESULTS / "executors.md").write_text(md, encoding="utf-8")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
