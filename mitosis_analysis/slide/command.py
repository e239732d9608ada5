"""``python -m mitosis_analysis slide PATH --output DIR``: whole-slide analysis."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from ..manifest import Manifest
from ..settings import Settings
from .run import SlideOptions, analyse_slide


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SlideOptions()
    parser.add_argument("slide", type=Path, help="slide file: svs, ndpi, mrxs, scn, ... (openslide) or TIFF")
    parser.add_argument("--output", type=Path, required=True,
                        help="output folder (created); also holds the run journal, journal.jsonl")
    parser.add_argument("--reader", choices=["auto", "openslide", "tifffile"], default=defaults.reader,
                        help="slide reader (default auto: tifffile for TIFF without a vendor format, else openslide)")
    parser.add_argument("--restart", action="store_true", help="ignore an earlier run's journal in the output folder")
    parser.add_argument("--hotspot-area", type=float, default=defaults.hotspot_area_mm2, metavar="MM2",
                        help=f"area of the square hotspot window in mm^2 (default {defaults.hotspot_area_mm2:g})")
    parser.add_argument("--region-size", type=int, default=defaults.region_size, metavar="PX",
                        help=f"side of a streamed region in pixels at 0.25 um/px (default {defaults.region_size})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--weights", type=Path, default=None, help="weights folder (default: weights/ of the repo)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="inference device (default auto)")
    parser.add_argument("--batch-size", type=int, default=None, help="tiles per inference batch")


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env(weights_dir=args.weights, device=args.device, batch_size=args.batch_size)
    options = SlideOptions(
        region_size=args.region_size, hotspot_area_mm2=args.hotspot_area, reader=args.reader,
        restart=args.restart, progress=not args.no_progress,
    )
    tile_size = Manifest.load(settings.weights_dir).plan.tile_size
    if options.region_size < tile_size or options.hotspot_area_mm2 <= 0:
        raise InputError(f"--region-size must be at least the tile size ({tile_size}) and --hotspot-area positive")
    analyse_slide(args.slide, args.output, settings, options)
    return 0
