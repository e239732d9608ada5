"""``mitosis-analysis cohort SLIDES --output DIR``: every slide of a cohort through the slide mode,
on local worker processes or a Dask cluster, and one table of the results."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import InputError
from ..manifest import Manifest
from ..settings import Settings
from ..slide.run import SlideOptions
from .run import run_cohort
from .slides import COHORT_SUFFIXES, read_slide_list


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SlideOptions()
    parser.add_argument("slides", type=Path,
                        help="a CSV file with a 'slide' column (paths; optional 'id' column) or a folder of slides "
                             f"({', '.join(COHORT_SUFFIXES)})")
    parser.add_argument("--output", type=Path, required=True,
                        help="output folder: slides/<id>/ (each slide's results), logs/<id>.log, cohort.csv, "
                             "cohort.parquet, cohort.png")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="local worker processes (default: one per GPU, else one per CPU core)")
    parser.add_argument("--scheduler", default=os.environ.get("MITOSIS_COHORT_SCHEDULER"), metavar="ADDRESS",
                        help="address of a running Dask scheduler (tcp://host:8786) whose workers run the slides "
                             "instead of local ones; they must see the slides and --output at the same paths "
                             "(default: $MITOSIS_COHORT_SCHEDULER, else local workers)")
    parser.add_argument("--restart", action="store_true",
                        help="run every slide again from scratch (default: keep finished slides, resume the others)")
    parser.add_argument("--reader", choices=["auto", "openslide", "tifffile"], default=defaults.reader,
                        help="slide reader (default auto)")
    parser.add_argument("--hotspot-area", type=float, default=defaults.hotspot_area_mm2, metavar="MM2",
                        help=f"area of the square hotspot window in mm^2 (default {defaults.hotspot_area_mm2:g})")
    parser.add_argument("--region-size", type=int, default=defaults.region_size, metavar="PX",
                        help=f"side of a streamed region in pixels at 0.25 um/px (default {defaults.region_size})")
    parser.add_argument("--weights", type=Path, default=None,
                        help="weights folder, seen by every worker at this path (default: $MITOSIS_WEIGHTS_DIR, "
                             "else each worker's installed weights, checked to be the same)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="inference device (default auto)")
    parser.add_argument("--batch-size", type=int, default=None, help="tiles per inference batch")


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env(weights_dir=args.weights, device=args.device, batch_size=args.batch_size)
    weights_given = args.weights is not None or "MITOSIS_WEIGHTS_DIR" in os.environ
    if weights_given:
        settings = settings.model_copy(update={"weights_dir": Path(settings.weights_dir).resolve()})
    options = SlideOptions(region_size=args.region_size, hotspot_area_mm2=args.hotspot_area, reader=args.reader,
                           restart=args.restart, progress=False)
    tile_size = Manifest.load(settings.weights_dir).plan.tile_size
    if options.region_size < tile_size or options.hotspot_area_mm2 <= 0:
        raise InputError(f"--region-size must be at least the tile size ({tile_size}) and --hotspot-area positive")
    if args.workers is not None and args.workers < 1:
        raise InputError("--workers must be at least 1")
    slides = read_slide_list(args.slides)
    rows = run_cohort(slides, args.output, settings, options, workers=args.workers, scheduler=args.scheduler,
                      weights_given=weights_given)
    return 1 if any(r["status"] != "done" for r in rows) else 0
