"""``evaluate``: score Track 1 and/or Track 2 predictions against ground truth.

Example::

    python -m mitosis_analysis evaluate \\
        --ground-truth ground_truth.json --predictions runs/track1/ \\
        --labels labels.json --classifications runs/track2/ \\
        --output eval/

prints a table, and writes ``eval/metrics.json`` and ``eval/threshold-sweep.png``. ``metrics.json``
starts with ``aggregates``: the MIDOG 2025 leaderboard figures under the official key names and
computed as the official evaluation containers compute them (``official.py``); the project's own
views follow (``track1``/``track2``: per image, per domain, FROC sensitivities at fixed rates,
threshold sweeps). With the challenge's ``ground_truth.json`` format, images without "tumor domain"
or a valid "roi type" are refused, as the official evaluation refuses them. File formats and how prediction files
are matched to images: see :mod:`.groundtruth` and :mod:`.predictions`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..log import log, warn
from ..settings import Settings
from .classification import ClassificationReport, evaluate_classification
from .detection import MATCH_RADIUS_MM, DetectionCase, DetectionReport, evaluate_detection
from .groundtruth import is_coco, load_classification_truth, load_detection_truth, load_json, load_spacings
from .official import check_official_ground_truth, track1_aggregates, track2_aggregates
from .predictions import TRACK1_FILE, TRACK2_FILE, collect, parse_classifications, parse_mitotic_figures
from ..outputs import write_json_atomic
from .report import format_tables, metrics_document, write_sweep_plot

METRICS_FILE = "metrics.json"
SWEEP_FILE = "threshold-sweep.png"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    t1 = parser.add_argument_group("Track 1 (detection)")
    t1.add_argument("--ground-truth", type=Path, metavar="JSON",
                    help="MIDOG evaluation ground_truth.json, or MIDOG++-style COCO JSON (then see --spacing)")
    t1.add_argument("--predictions", type=Path, metavar="PATH",
                    help=f"folder of <image stem>.json or <image stem>/{TRACK1_FILE}, or one JSON {{image: output}}")
    spacing = t1.add_mutually_exclusive_group()
    spacing.add_argument("--spacing", type=float, metavar="MM",
                         help="COCO only: pixel spacing in mm/px for all images (default: %(default)s from settings)")
    spacing.add_argument("--spacing-file", type=Path, metavar="JSON",
                         help="COCO only: {image_name: mm_per_px} for images of different spacing")
    t1.add_argument("--coco-bbox", choices=("xyxy", "xywh"), default="xyxy",
                    help="COCO box layout (MIDOG++ stores [x1, y1, x2, y2]; default: %(default)s)")
    t1.add_argument("--radius-mm", type=float, default=MATCH_RADIUS_MM,
                    help="matching radius in mm (challenge: %(default)s = 7.5 um)")
    t2 = parser.add_argument_group("Track 2 (atypical classification)")
    t2.add_argument("--labels", type=Path, metavar="JSON",
                    help='[{"image": ..., "labels": ["normal"|"atypical"|0|1, ...], "tumordomains": [...]}, ...]')
    t2.add_argument("--classifications", type=Path, metavar="PATH",
                    help=f"folder of <stack stem>.json or <stack stem>/{TRACK2_FILE}, or one JSON {{stack: output}}")
    t2.add_argument("--confidence", choices=("p-atypical", "predicted-class"), default="p-atypical",
                    help='meaning of "confidence": P(atypical) (MIDOG 2025 evaluation since 2025-07-27, default) '
                         'or the confidence of the predicted class (its superseded reading)')
    parser.add_argument("--missing", choices=("error", "skip", "empty"), default="error",
                        help="an image with ground truth but no prediction: stop (default), leave it out "
                             "(as the challenge does), or score it as predicting nothing (Track 1 only)")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="DIR",
                        help=f"folder for {METRICS_FILE} and {SWEEP_FILE}")


def _missing(names: list[str], policy: str, what: str, allow_empty: bool) -> None:
    if not names:
        return
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    if policy == "error" or (policy == "empty" and not allow_empty):
        raise InputError(f"no {what} for {len(names)} ground-truth image(s): {shown} (see --missing)")
    warn(f"no {what} for {len(names)} image(s), {'left out' if policy == 'skip' else 'scored as empty'}: {shown}")


def _unclaimed(keys: list[str], what: str) -> None:
    if keys:
        shown = ", ".join(keys[:3]) + (" ..." if len(keys) > 3 else "")
        warn(f"{len(keys)} {what} match no ground-truth image and are ignored: {shown}")


def detection_cases(args: argparse.Namespace) -> list[DetectionCase]:
    spacing = load_spacings(args.spacing_file) if args.spacing_file else (
        args.spacing if args.spacing is not None else Settings.from_env().default_spacing_mm)
    truth = load_detection_truth(args.ground_truth, spacing, args.coco_bbox)
    official_format = not is_coco(load_json(args.ground_truth, "ground truth"))
    found, unclaimed = collect(args.predictions, truth, TRACK1_FILE)
    _unclaimed(unclaimed, "prediction file(s)/key(s)")
    _missing([n for n in truth if n not in found], args.missing, "prediction", allow_empty=True)
    cases = []
    for name, gt in truth.items():
        if name in found:
            pred = parse_mitotic_figures(found[name], f"prediction for {name}")
        elif args.missing == "empty":
            pred = parse_mitotic_figures({"points": []}, name)
        else:
            continue
        cases.append(DetectionCase(name=name, truth=gt.points, points=pred.points, probabilities=pred.probabilities,
                                   is_mitosis=pred.is_mitosis, domain=gt.domain, roi_type=gt.roi_type))
    if not cases:
        raise InputError("Track 1: no image has both ground truth and predictions")
    if official_format:
        check_official_ground_truth(cases)
    return cases


def classification_inputs(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    truth = load_classification_truth(args.labels)
    found, unclaimed = collect(args.classifications, truth, TRACK2_FILE)
    _unclaimed(unclaimed, "classification file(s)/key(s)")
    _missing([n for n in truth if n not in found], args.missing, "classification", allow_empty=False)
    labels, scores, classes, domains = [], [], [], []
    for name, gt in truth.items():
        if name not in found:
            continue
        s, c = parse_classifications(found[name], f"classification for {name}", args.confidence)
        if len(s) != len(gt.labels):
            raise InputError(f"{name}: {len(s)} classifications but {len(gt.labels)} labels")
        labels.append(gt.labels), scores.append(s), classes.append(c), domains.extend(gt.domains)
    if not labels:
        raise InputError("Track 2: no stack has both labels and classifications")
    return np.concatenate(labels), np.concatenate(scores), np.concatenate(classes), domains


def run(args: argparse.Namespace) -> int:
    track1 = args.ground_truth is not None or args.predictions is not None
    track2 = args.labels is not None or args.classifications is not None
    if not (track1 or track2):
        raise InputError("nothing to evaluate: give --ground-truth/--predictions and/or --labels/--classifications")
    if track1 and (args.ground_truth is None or args.predictions is None):
        raise InputError("Track 1 needs both --ground-truth and --predictions")
    if track2 and (args.labels is None or args.classifications is None):
        raise InputError("Track 2 needs both --labels and --classifications")
    if not args.radius_mm > 0:
        raise InputError(f"--radius-mm must be positive, got {args.radius_mm}")
    if args.spacing is not None and not args.spacing > 0:
        raise InputError(f"--spacing must be positive, got {args.spacing}")
    if args.output.exists() and not args.output.is_dir():
        raise InputError(f"--output {args.output} exists and is not a folder")

    detection: DetectionReport | None = None
    classification: ClassificationReport | None = None
    aggregates: dict = {}
    if track1:
        cases = detection_cases(args)
        log(f"Track 1: scoring {len(cases)} image(s)")
        detection = evaluate_detection(cases, radius=args.radius_mm)
        aggregates.update(track1_aggregates(cases, radius=args.radius_mm))
    if track2:
        labels, scores, classes, domains = classification_inputs(args)
        log(f"Track 2: scoring {len(labels)} figure(s)")
        classification = evaluate_classification(labels, scores, classes, domains)
        aggregates.update(track2_aggregates(labels, scores, classes, domains))

    inputs = {
        "ground_truth": None if args.ground_truth is None else str(args.ground_truth),
        "predictions": None if args.predictions is None else str(args.predictions),
        "labels": None if args.labels is None else str(args.labels),
        "classifications": None if args.classifications is None else str(args.classifications),
        "confidence": args.confidence if track2 else None,
        "missing": args.missing,
    }
    try:
        write_sweep_plot(args.output / SWEEP_FILE, detection, classification)
        write_json_atomic(args.output / METRICS_FILE, metrics_document(aggregates, detection, classification, inputs))
    except OSError as exc:
        raise InputError(f"cannot write to {args.output}: {exc.strerror or exc}") from None
    print(format_tables(aggregates, detection, classification))
    log(f"wrote {args.output / METRICS_FILE} and {args.output / SWEEP_FILE}")
    return 0
