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
from ..output_set import output_targets, write_output_set
from ..outputs import (
    check_writable,
    classification_document,
    json_bytes,
    points_document,
    to_jsonable,
)
from ..pipeline import analyse_roi, classify_stack
from ..readers import read_roi, read_stack
from ..settings import TRACK1, Settings
from ..timing import StageTimer
from ..validation import shown


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", type=Path, default=Path("/input"), help="input folder (default /input)")
    parser.add_argument("--output", type=Path, default=Path("/output"), help="output folder (default /output)")
    parser.add_argument("--weights", type=Path, default=None, help="weights folder (default: weights/ of the repo)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="inference device (default auto)")
    parser.add_argument("--batch-size", type=int, default=None, help="tiles per inference batch")


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env(weights_dir=args.weights, device=args.device, batch_size=args.batch_size)
    jobs = plan_jobs(args.input)
    check_writable(args.output)
    output_targets(args.output, [job.output for job in jobs])  # refused before any work
    models = load_models(settings)
    documents = {job.output: json_bytes(run_job(job, models, settings)) for job in jobs}
    for path in write_output_set(args.output, documents):
        log(f"wrote {path}")
    return 0


def run_job(job: Job, models, settings: Settings) -> object:
    start = time.perf_counter()
    thresholds = models.manifest.thresholds
    if job.interface == TRACK1:
        timer = StageTimer()
        with timer.stage("read"):
            roi = read_roi(job.image, settings)
        h, w = roi.shape
        candidates = analyse_roi(roi, models, settings, timer)
        document = points_document(candidates, roi.spacing_mm, thresholds.detection)
        n_mitoses = sum(p.name == "mitotic figure" for p in document.points)
        log(
            f"{shown(job.image.name)}: {w}x{h} px at {roi.spacing_mm[0] * 1000:.4g} um/px, "
            f"{len(candidates)} candidates, {n_mitoses} mitotic figures ({timer.summary()})"
        )
    else:
        # chunk by chunk: memory stays flat however many pages the stack has
        p = np.concatenate([classify_stack(chunk, models, settings) for chunk in read_stack(job.image, settings)])
        document = classification_document(p, thresholds.atypical)
        n_atypical = sum(d.class_ == "atypical" for d in document)
        log(f"{shown(job.image.name)}: {len(p)} crops, {n_atypical} atypical ({time.perf_counter() - start:.2f} s)")
    return to_jsonable(document)
