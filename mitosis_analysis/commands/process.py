"""The container job: every input of ``/input`` processed, outputs written to ``/output``.

All jobs run before anything is written, and the outputs are written as one set (all files or
none, ``output_set.py``), so bad input, a full disk or an unwritable target never leaves a
partial set of outputs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ..inference import load_models
from ..jobs import Job, plan_jobs
from ..log import log
from ..decision import decide_crops, decide_detections
from ..output_set import output_targets, write_output_set
from ..outputs import (
    check_writable,
    classification_document,
    details_document,
    json_bytes,
    points_document,
    to_jsonable,
)
from ..pipeline import analyse_roi, classify_stack
from ..readers import read_roi, read_stack
from ..settings import DETAILS_FILE, TRACK1, Settings
from ..timing import StageTimer
from ..validation import shown


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
    output_targets(args.output, [job.output for job in jobs])  # refused before any work
    models = load_models(settings)
    documents: dict[Path, bytes] = {}
    for job in jobs:
        document, details = run_job(job, models, settings)
        documents[job.output] = json_bytes(document)
        if details is not None:
            documents[job.output.parent / DETAILS_FILE] = json_bytes(details)
    for path in write_output_set(args.output, documents):
        log(f"wrote {path}")
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
            f"{shown(job.image.name)}: {w}x{h} px at {roi.spacing_mm[0] * 1000:.4g} um/px, "
            f"{len(detections)} candidates, {sum(d.is_mitosis for d in detections)} mitotic figures ({timer.summary()})"
        )
        return to_jsonable(document), details
    # chunk by chunk: memory stays flat however many pages the stack has
    chunks = read_stack(job.image, models.manifest.plan.crop_size, settings)
    decisions = decide_crops(np.concatenate([classify_stack(chunk, models, settings) for chunk in chunks]), thresholds)
    n_atypical = sum(d.is_atypical for d in decisions)
    log(f"{shown(job.image.name)}: {len(decisions)} crops, {n_atypical} atypical ({time.perf_counter() - start:.2f} s)")
    return to_jsonable(classification_document(decisions)), None
