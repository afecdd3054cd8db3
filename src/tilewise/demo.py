"""``make demo``: NDVI over several generated Sentinel-2 L2A scenes on the local cores.

Generates structurally faithful SAFE products (JP2 bands, MTD_MSIL2A.xml with
BOA_ADD_OFFSET), runs ``tilewise ndvi`` over the folder with the default
executor, prints a summary and writes a quicklook PNG per scene.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from affine import Affine

from tilewise.grid import Grid

SCENES = (
    ("2024-06-14T10:36:29", "T32ULA", "05.10", 0),
    ("2024-07-09T10:36:31", "T32ULA", "05.11", 1),
    ("2024-08-24T10:36:29", "T32ULB", "05.11", 2),
    ("2019-08-20T10:30:21", "T32ULB", "02.13", 3),  # an old baseline: no BOA_ADD_OFFSET
)


def make_scenes(folder: Path, size: int) -> list[Path]:
    """Write the demo's SAFE products into ``folder`` (skipping those already there)."""
    from tilewise.synthetic import scene_dns, write_safe

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for sensing, tile, baseline, seed in SCENES:
        existing = [p for p in folder.glob(f"*_N{baseline.replace('.', '')}_*{tile}*.SAFE") if sensing[:10].replace("-", "") in p.name]
        if existing:
            out.append(existing[0])
            continue
        offset = -1000 if baseline >= "04.00" else 0
        red, nir = scene_dns(size, size, seed=seed, add_offset=offset)
        x0 = 300000 + 10 * size * (seed % 2)
        grid = Grid("EPSG:32632", Affine(10.0, 0.0, x0, 0.0, -10.0, 5600000.0), size, size)
        out.append(write_safe(folder, {"B04": red, "B08": nir}, grid=grid, baseline=baseline, sensing=sensing, tile_id=tile))
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="demo-output")
    ap.add_argument("--size", type=int, default=2048, help="scene edge in pixels")
    args = ap.parse_args(argv)
    from tilewise.api import normdiff_job
    from tilewise.cli.main import format_summary
    from tilewise.cli.progress import ProgressPrinter
    from tilewise.errors import TilewiseError
    from tilewise.quicklook import quicklook
    from tilewise.runner import run_job

    root = Path(args.out)
    try:
        t0 = time.perf_counter()
        scenes = make_scenes(root / "scenes", args.size)
        print(f"{len(scenes)} Sentinel-2 L2A scenes ({args.size}x{args.size}) ready in {root / 'scenes'} ({time.perf_counter() - t0:.1f} s)")
        job = normdiff_job([str(root / "scenes")], str(root / "ndvi") + "/", index="ndvi")
        summary = run_job(job, overwrite=True, progress=ProgressPrinter(0))
        print(format_summary(summary, "NDVI"))
        looks = root / "quicklooks"
        looks.mkdir(exist_ok=True)
        for out in summary.outputs:
            png = quicklook(out, looks / (Path(out).stem + ".png"), cmap="YlGn", vmin=-0.2, vmax=0.9)
            print(f"quicklook: {png}")
    except TilewiseError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"\nResults are in {root.resolve()}/ (ndvi/*.tif, quicklooks/*.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
