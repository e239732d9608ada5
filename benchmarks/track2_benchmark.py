#!/usr/bin/env python
"""Track 2 throughput: crops per second of the container job on a multi-page TIFF stack.

Writes an N-page stack of 128 x 128 RGB crops (one page per crop, as the challenge's stacks are
stored) to a temporary folder and times, with the shipped weights (or ``--weights``), what
``process.py`` does for a Track 2 input: reading the stack page by page, classifying with the
manifest's ensemble and flip views, and writing the JSON. Prints the seconds of each part and
crops/s end to end; ``--profile`` adds the top of a cProfile of the whole job.

  python benchmarks/track2_benchmark.py                 # 1,000 pages, CPU
  python benchmarks/track2_benchmark.py --pages 10000 --device cuda
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))


def write_stack(path: Path, pages: int, size: int = 128, seed: int = 0) -> None:
    import tifffile

    rng = np.random.default_rng(seed)
    with tifffile.TiffWriter(path) as tif:
        for _ in range(pages):
            crop = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            tif.write(crop, photometric="rgb", contiguous=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)

    from mitosis_analysis.commands.process import run_job
    from mitosis_analysis.inference import load_models
    from mitosis_analysis.jobs import Job
    from mitosis_analysis.readers import read_stack
    from mitosis_analysis.settings import TRACK2, Settings

    settings = Settings.from_env(weights_dir=args.weights, device=args.device)
    models = load_models(settings)
    with tempfile.TemporaryDirectory() as tmp:
        stack = Path(tmp) / "stack.tif"
        t0 = time.perf_counter()
        write_stack(stack, args.pages)
        print(f"wrote {args.pages} pages in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        n = sum(len(chunk) for chunk in read_stack(stack, models.manifest.plan.crop_size, settings))
        read_s = time.perf_counter() - t0
        print(f"read alone: {n} crops in {read_s:.2f} s ({n / read_s:.0f} crops/s)")
        job = Job(TRACK2, stack, Path(TRACK2.output_file))
        if args.profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.enable()
        t0 = time.perf_counter()
        document, _ = run_job(job, models, settings)
        total = time.perf_counter() - t0
        if args.profile:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    views = models.manifest.plan.classifier_views
    print(
        f"track 2 job: {len(document)} crops in {total:.2f} s = {len(document) / total:.1f} crops/s "
        f"({views} flip views, provider {models.provider}, batch {settings.classifier_batch_size})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
