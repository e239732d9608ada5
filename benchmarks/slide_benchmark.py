#!/usr/bin/env python
"""Whole-slide mode on a large generated slide: time per slide area and per tissue area, and
peak memory, to show that memory stays bounded whatever the slide size.

1. A slide of ``--size`` x ``--size`` px at 0.25 um/px (default 100,000 x 100,000, i.e.
   25 x 25 mm) is written as a tiled JPEG pyramidal BigTIFF (``mitosis_analysis.slide.synthetic``):
   tile by tile from a generator, glass tiles encoded once, so generation holds one tile in
   memory. It is glass except for ``--patches`` square tissue patches of ``--patch-size`` px,
   scattered over the slide with a fixed seed, each holding a few dark "figures", so that a CPU
   run takes minutes while the reader, the tissue mask and the region plan face the full slide.
2. The product's command runs on it in a child process exactly as a user runs it:
   ``python -m mitosis_analysis slide SLIDE --output DIR``.

Printed (and saved with ``--json``): wall time of the run; seconds per cm^2 of slide and per mm^2
of tissue; tiles inferred and tiles/s; peak RSS of the run (``ru_maxrss`` of that child from
``os.wait4``; the slide mode starts no processes of its own, only one reader thread, so this is
the whole process tree) and of the generator. The slide is reused on a second call with the same
parameters (``--regenerate`` to force).

Examples:
  python benchmarks/slide_benchmark.py                                 # 100k x 100k, CPU
  python benchmarks/slide_benchmark.py --size 20000 --patches 4        # quick look
  python benchmarks/slide_benchmark.py --device cuda --json out/slide_bench_gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def generate(path: Path, size: int, patches: int, patch_size: int) -> None:
    from mitosis_analysis.slide.synthetic import SyntheticSlide, write_slide_tiff

    write_slide_tiff(path, SyntheticSlide.patches(size, patches, patch_size), pyramid="pages", compression="jpeg")


def run_child(command: list[str]) -> tuple[int, float, int, list[str]]:
    """(exit code, wall seconds, peak RSS in bytes, stderr lines) of a child process; its stderr
    is passed through as it comes. The RSS is the child's own ``ru_maxrss`` (``os.wait4``)."""
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in child.stderr:
        sys.stderr.write(line)
        sys.stderr.flush()
        lines.append(line.rstrip("\n"))
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, time.perf_counter() - start, usage.ru_maxrss * 1024, lines  # Linux: KiB


def stage_seconds(lines: list[str]) -> dict[str, float]:
    """The run's per-stage seconds from its ``regions: tiling 1.2 s, inference 3.4 s, ...`` line."""
    for line in lines:
        if line.startswith("regions: "):
            pairs = (item.strip().rsplit(" ", 2) for item in line[len("regions: "):].split(","))
            return {name: float(value) for name, value, _ in pairs}
    return {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100_000, help="slide side in px at 0.25 um/px (default 100000)")
    parser.add_argument("--patches", type=int, default=12, help="tissue patches (default 12)")
    parser.add_argument("--patch-size", type=int, default=1024, help="side of a tissue patch in px (default 1024)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mitosis-slide-benchmark"),
                        help="where the slide and the outputs go (default /tmp/mitosis-slide-benchmark)")
    parser.add_argument("--regenerate", action="store_true", help="write the slide even if it exists")
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    parser.add_argument("--reader", choices=["auto", "openslide", "tifffile"], default="auto")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--_generate", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._generate is not None:  # child: write the slide
        generate(args._generate, args.size, args.patches, args.patch_size)
        return 0

    args.workdir.mkdir(parents=True, exist_ok=True)
    slide = args.workdir / f"slide_{args.size}_{args.patches}x{args.patch_size}.tif"
    generation = None
    if args.regenerate or not slide.is_file():
        tmp = slide.with_suffix(".tif.partial")
        print(f"generating {slide} ...", file=sys.stderr, flush=True)
        rc, seconds, rss, _ = run_child([sys.executable, __file__, "--_generate", str(tmp), "--size", str(args.size),
                                      "--patches", str(args.patches), "--patch-size", str(args.patch_size)])
        if rc:
            print(f"error: slide generation failed (exit {rc})", file=sys.stderr)
            return rc
        os.replace(tmp, slide)
        generation = {"seconds": round(seconds, 1), "peak_rss_mib": round(rss / 2**20, 1)}
        print(f"generated in {seconds:.1f} s, peak RSS {rss / 2**20:.0f} MiB, "
              f"{slide.stat().st_size / 2**20:.0f} MiB on disk",
              file=sys.stderr, flush=True)

    out = args.workdir / "out"
    command = [sys.executable, "-m", "mitosis_analysis", "slide", str(slide), "--output", str(out), "--restart",
               "--device", args.device, "--reader", args.reader]
    if args.batch_size:
        command += ["--batch-size", str(args.batch_size)]
    print("$ " + " ".join(command), file=sys.stderr, flush=True)
    rc, seconds, rss, lines = run_child(command)
    if rc:
        print(f"error: the slide run failed (exit {rc})", file=sys.stderr)
        return rc
    summary = json.loads((out / "summary.json").read_text())
    w, h = summary["level0_size_px"]
    sx, sy = summary["level0_spacing_mm"]
    slide_cm2 = w * sx * h * sy / 100.0
    tissue_mm2 = summary["tissue_area_mm2"]
    tiles = summary["tiles_inferred"]
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "command": " ".join(command),
        "slide": {"path": str(slide), "size_px": [w, h], "area_cm2": round(slide_cm2, 3),
                  "file_mib": round(slide.stat().st_size / 2**20, 1), "patches": args.patches,
                  "patch_size_px": args.patch_size},
        "generation": generation,
        "tissue_area_mm2": round(tissue_mm2, 4),
        "regions_with_tissue": summary["regions_with_tissue"], "regions_total": summary["regions_total"],
        "tiles_inferred": tiles,
        "mitotic_figures": summary["mitotic_figures"], "candidates": summary["candidates"],
        "weights_trained": summary["weights_trained"],
        "wall_seconds": round(seconds, 1),
        "seconds_per_cm2_slide": round(seconds / slide_cm2, 2),
        "seconds_per_mm2_tissue": round(seconds / tissue_mm2, 1) if tissue_mm2 else None,
        "tiles_per_second": round(tiles / seconds, 2),
        "stage_seconds": stage_seconds(lines),
        "peak_rss_mib": round(rss / 2**20, 1),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
