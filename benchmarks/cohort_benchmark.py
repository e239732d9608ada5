#!/usr/bin/env python
"""Cohort throughput against the number of local Dask workers, on generated slides.

1. ``--slides`` slides of ``--size`` x ``--size`` px at 0.25 um/px are written as tiled JPEG
   pyramidal TIFFs (``mitosis_analysis.slide.synthetic``), each glass with ``--patches`` square
   tissue patches of ``--patch-size`` px holding five dark "figures" each (fixed seeds), into
   ``--data`` (default ``out/cohort_bench/slides``; reused when already there).
2. For each worker count of ``--workers`` (default ``1 2``) the product's command runs from
   scratch in a child process exactly as a user runs it:
   ``python -m mitosis_analysis cohort SLIDES --output OUT --workers K --restart``.

Printed (and saved with ``--json``): per worker count, the wall time of the whole command
(cluster start-up included), slides per minute, mm^2 of tissue per minute (tissue area from the
cohort table), the mean time of one slide on its worker, and the speed-up over the first count.

Examples:
  python benchmarks/cohort_benchmark.py                                  # 8 slides, 1 and 2 workers, CPU
  python benchmarks/cohort_benchmark.py --workers 1 2 4 --slides 16 --json out/cohort_bench.json
  python benchmarks/cohort_benchmark.py --device cuda --workers 1 2      # one GPU per worker
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_slides(folder: Path, count: int, size: int, patches: int, patch_size: int) -> list[Path]:
    from mitosis_analysis.slide.synthetic import SyntheticSlide, write_slide_tiff

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"bench{i:03d}.tif"
        paths.append(path)
        if path.exists():
            continue
        write_slide_tiff(path, SyntheticSlide.patches(size, patches, patch_size, seed=i))
    return paths


def run_cohort(slides: Path, output: Path, workers: int, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "mitosis_analysis", "cohort", str(slides), "--output", str(output),
               "--workers", str(workers), "--restart", *extra]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.stderr.write(result.stderr)
        raise SystemExit(f"cohort run with {workers} worker(s) failed (exit {result.returncode})")
    with open(output / "cohort.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    tissue = sum(float(r["tissue_area_mm2"]) for r in rows)
    return {
        "workers": workers,
        "slides": len(rows),
        "wall_s": round(wall, 2),
        "slides_per_min": round(60 * len(rows) / wall, 2),
        "tissue_mm2": round(tissue, 3),
        "tissue_mm2_per_min": round(60 * tissue / wall, 3),
        "mean_slide_s": round(sum(float(r["wall_seconds"]) for r in rows) / len(rows), 2),
        "workers_used": sorted({r["worker"] for r in rows}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to measure (default 1 2)")
    parser.add_argument("--slides", type=int, default=8, help="number of generated slides (default 8)")
    parser.add_argument("--size", type=int, default=8000, help="slide side in px at 0.25 um/px (default 8000)")
    parser.add_argument("--patches", type=int, default=2, help="tissue patches per slide (default 2)")
    parser.add_argument("--patch-size", type=int, default=1024, help="tissue patch side in px (default 1024)")
    parser.add_argument("--data", type=Path, default=ROOT / "out" / "cohort_bench", help="folder for slides and runs")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    parser.add_argument("--weights", type=Path, default=None, help="weights folder (default: the package's)")
    parser.add_argument("--json", type=Path, default=None, help="also save the figures as JSON")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    make_slides(args.data / "slides", args.slides, args.size, args.patches, args.patch_size)
    print(f"{args.slides} slides of {args.size}x{args.size} px ({args.patches} tissue patches of "
          f"{args.patch_size} px each) ready in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    extra = ["--device", args.device] + (["--weights", str(args.weights)] if args.weights else [])
    results = []
    load_before = os.getloadavg()
    for k in args.workers:
        out = args.data / f"run-{k}"
        shutil.rmtree(out, ignore_errors=True)
        results.append(run_cohort(args.data / "slides", out, k, extra))
        print(f"{k} worker(s): {results[-1]['wall_s']} s", file=sys.stderr)

    load_after = os.getloadavg()
    base = results[0]["slides_per_min"]
    print(f"\ncohort throughput, {args.slides} generated slides, device {args.device}, "
          f"{len(os.sched_getaffinity(0))} CPU cores")
    print(f"{'workers':>7} {'wall s':>8} {'slides/min':>10} {'tissue mm2/min':>14} {'s/slide':>8} {'speed-up':>8}")
    for r in results:
        print(f"{r['workers']:>7} {r['wall_s']:>8.1f} {r['slides_per_min']:>10.2f} {r['tissue_mm2_per_min']:>14.3f} "
              f"{r['mean_slide_s']:>8.1f} {r['slides_per_min'] / base:>8.2f}")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}: other processes "
          "on the machine slow the runs down")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "command": "python benchmarks/cohort_benchmark.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {"cpu_cores": len(os.sched_getaffinity(0)), "platform": platform.platform(),
                        "python": platform.python_version(),
                        "load_average_1min_before_after": [round(load_before[0], 2), round(load_after[0], 2)]},
            "slides": {"count": args.slides, "size_px": args.size, "patches": args.patches,
                       "patch_size_px": args.patch_size},
            "device": args.device,
            "results": results,
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
