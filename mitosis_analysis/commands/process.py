"""The container job: every input of ``/input`` processed, outputs written to ``/output``.

All jobs run before anything is written, so bad input never leaves a partial set of outputs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..inference import load_models
from ..jobs import Job, plan_jobs
from ..log import log
from ..decision import decide_crops, decide_detections
from ..outputs import (
    check_writable,
    classification_document,
    details_document,
    points_document,
    to_jsonable,
    write_json_atomic,
)
from ..pipeline import analyse_roi, classify_stack
from ..readers import read_roi, read_stack
from ..settings import DETAILS_FILE, TRACK1, Settings
from ..timing import StageTimer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", type=Path, default=Path("/input"), help="input folder (default /input)")
    parser.add_argument("--output", type=Path, default=Path("/output"), help="output folder (default /output)")
    parser.add_argument("--weights", type=Path, default=None, help="weights folder (default: weights/ of the repo)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="inference device (default auto)")
    parser.add_argument("--batch-size", type=int, default=None, help="tiles per inference batch")
    parser.add_argument("--details", action="store_true", default=None,
                        help=f"Track 1: also write {DETAILS_FILE} beside each mitotic-figures.json (P(atypical) "
                             "and logits of every point; not a grand-challenge socket, so off by default)")


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env(weights_dir=args.weights, device=args.device, batch_size=args.batch_size,
                                 write_details=args.details)
    jobs = plan_jobs(args.input)
    check_writable(args.output)
    models = load_models(settings)
    documents = [(job, run_job(job, models, settings)) for job in jobs]
    for job, (document, details) in documents:
        write_json_atomic(args.output / job.output, document)
        log(f"wrote {args.output / job.output}")
        if details is not None:
            write_json_atomic(args.output / job.output.parent / DETAILS_FILE, details)
    return 0


def run_job(job: Job, models, settings: Settings) -> tuple[object, object | None]:
    """The socket document of one job, and the opt-in details document (Track 1) or None."""
    start = time.perf_counter()
    thresholds = models.manifest.thresholds
    if job.interface == TRACK1:
        timer = StageTimer()
        with timer.stage("read"):
            roi = read_roi(job.image, settings)
        h, w = roi.shape
        detections = decide_detections(analyse_roi(roi, models, settings, timer), thresholds)
        document = points_document(detections, roi.spacing_mm)
        details = details_document(detections, roi.spacing_mm, thresholds.model_dump()) if settings.write_details else None
        log(
            f"{job.image.name}: {w}x{h} px at {roi.spacing_mm[0] * 1000:.4g} um/px, "
            f"{len(detections)} candidates, {sum(d.is_mitosis for d in detections)} mitotic figures ({timer.summary()})"
        )
        return to_jsonable(document), details
    crops = read_stack(job.image, models.manifest.plan.crop_size)
    decisions = decide_crops(classify_stack(crops, models, settings), thresholds)
    n_atypical = sum(d.is_atypical for d in decisions)
    log(f"{job.image.name}: {len(crops)} crops, {n_atypical} atypical ({time.perf_counter() - start:.2f} s)")
    return to_jsonable(classification_document(decisions)), None
