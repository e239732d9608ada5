"""Evaluate a detector checkpoint on a mosaic of AMi-Br crops, through the product's pipeline.

    python -m training.evaluate_detector --split test [--checkpoint training/checkpoints/detector.pt]
                                         [--out training/runs/detector-eval] [--engine pipeline|local]

The crops of the split are tiled side by side (row-major, ``--cols`` per row, white elsewhere) into
one image; the ground truth is every annotated mitosis inside each crop (``training/labels.py``).
The checkpoint is exported to ONNX (``training/export.py``) in ``<out>/weights`` and run by the
product's own Track 1 detection (``mitosis_analysis.pipeline.detect_candidates``: 512 px tiles, 50 %
overlap, blending, components, centroids, NMS at 7.5 um) with ``--engine pipeline`` (default); or
with ``--engine local``, the PyTorch checkpoint through the same pipeline (no export). With
``--weights DIR``, exported weights are judged as the product decides (``--stage 2``, default: the
verifier's logit and threshold when the weights have one) or by their detector alone (``--stage 1``). Output: ``<out>/<split>_metrics.json`` (sweep and the figures at the checkpoint's
threshold, chosen on validation) and ``<out>/<split>_sweep.png``.

Caveat: the crops are centred on mitoses and hold mostly ordinary nuclei and stroma; real ROIs
hold far more look-alikes, so FP/mm^2 here is optimistic for real ROIs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from training import data
from training import detector_eval as ev
from training import labels as label_lib
from training import export, runtime


def split_crops(data_dir: Path, split: str, val_fraction: float = 0.15, seed: int = 0):
    amibr = data_dir / "ami-br"
    table = data.load_table(amibr)
    train, test = data.published_split(amibr, table)
    if split == "test":
        return table, test
    train, val = data.split_by_slide(train, val_fraction, seed=seed)
    return table, {"val": val, "train": train}[split]


def detect_with_pipeline(image: np.ndarray, weights_dir: Path, verify: bool = True) -> tuple[np.ndarray, np.ndarray, float]:
    """(points, scores, threshold) of what the product decides on ``image`` with ``weights_dir``:
    without a verifier, or with ``verify=False`` (stage 1 alone), the detector's logits and threshold;
    with one, each candidate's ``decision.decision_margin`` (its judged logit minus its threshold:
    the verifier's, or the detector's where the detector override applies) and threshold 0."""
    from mitosis_analysis.decision import decision_margin
    from mitosis_analysis.inference import load_models
    from mitosis_analysis.pipeline import detect_candidates, verify_candidates
    from mitosis_analysis.settings import Settings

    settings = Settings(weights_dir=weights_dir, device="cpu")
    models = load_models(settings)
    candidates = detect_candidates(image, models, settings)
    points = np.array([[c.x, c.y] for c in candidates], dtype=float).reshape(-1, 2)
    thresholds = models.manifest.thresholds
    if not verify or thresholds.verification_logit is None:
        return points, np.array([c.score for c in candidates], dtype=float), thresholds.detection_logit
    candidates = verify_candidates(image, candidates, models, settings)
    return points, np.array([decision_margin(c, thresholds) for c in candidates], dtype=float), 0.0


def detect_locally(image: np.ndarray, checkpoint: dict) -> tuple[np.ndarray, np.ndarray]:
    """The PyTorch checkpoint through the product's pipeline (no export needed)."""
    from mitosis_analysis.pipeline import detect_candidates
    from mitosis_analysis.settings import Settings
    from model import build_detector

    net = build_detector(**checkpoint["config"])
    net.load_state_dict(checkpoint["state_dict"])
    candidates = detect_candidates(image, ev.TorchDetector(net), Settings())
    points = np.array([[c.x, c.y] for c in candidates], dtype=float).reshape(-1, 2)
    return points, np.array([c.score for c in candidates], dtype=float)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    p.add_argument("--checkpoint", type=Path, default=REPO_ROOT / "training" / "checkpoints" / "detector.pt")
    p.add_argument("--split", choices=("test", "val"), default="test")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "training" / "runs" / "detector-eval")
    p.add_argument("--engine", choices=("pipeline", "local"), default="pipeline")
    p.add_argument("--weights", type=Path, default=None,
                   help="evaluate these exported weights (ONNX + manifest) through the pipeline instead of a "
                        "checkpoint; --choose-threshold then only prints the threshold to put in the manifest")
    p.add_argument("--stage", type=int, choices=(1, 2), default=2,
                   help="with --weights: 2 = what the product decides (the verifier's logits and threshold when the "
                        "weights have one), 1 = the detector's candidates alone")
    p.add_argument("--cols", type=int, default=None, help="crops per mosaic row (default: square)")
    p.add_argument("--threads", type=int, default=None, help="PyTorch threads (--engine local)")
    p.add_argument("--choose-threshold", choices=("roi-f1", "fp-budget"), default=None,
                   help="(validation only) pick the operating threshold by this rule and store it in the checkpoint")
    args = p.parse_args(argv)
    if args.choose_threshold and args.split != "val":
        p.error("--choose-threshold is for the validation split only: the test split chooses nothing")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.weights is not None:
        from mitosis_analysis.manifest import Manifest

        manifest = Manifest.load(args.weights)
        if args.choose_threshold and manifest.verifier is not None and args.stage == 2:
            p.error("--choose-threshold picks the detector's threshold, but these weights are judged by their "
                    "verifier (stage 2): add --stage 1")
        checkpoint = {}  # the threshold is the product's: detect_with_pipeline's
    else:
        checkpoint = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    table, crops = split_crops(args.data, args.split)
    annotations = label_lib.data_annotations(table, args.data)
    mosaic = ev.crop_mosaic(crops, annotations, cols=args.cols)
    print(f"{args.split}: {data.summary(crops)}; mosaic {mosaic.image.shape[1]}x{mosaic.image.shape[0]} px, "
          f"{len(mosaic.gt_points)} annotated mitoses, crop area {mosaic.crop_area_mm2:.4f} mm^2", file=sys.stderr)

    t0 = time.time()
    if args.weights is not None:
        det_points, scores, checkpoint["threshold_logit"] = detect_with_pipeline(mosaic.image, args.weights,
                                                                                  verify=args.stage == 2)
    elif args.engine == "pipeline":
        pass  # training.export is imported at the top

        weights = args.out / "weights"
        ckpt_dir = args.checkpoint.parent
        export.main(["--checkpoints", str(ckpt_dir), "--weights", str(weights),
                     "--command", "training/evaluate_detector.py (evaluation copy)"])
        t0 = time.time()
        det_points, scores, _ = detect_with_pipeline(mosaic.image, weights, verify=False)  # the checkpoint's threshold
    else:
        det_points, scores = detect_locally(mosaic.image, checkpoint)
    seconds = time.time() - t0

    sweep = ev.sweep(det_points, scores, mosaic.gt_points, mosaic.crop_area_mm2)
    candidates = {rule: ev.choose_threshold(sweep, rule) for rule in ("roi-f1", "fp-budget")}
    if args.choose_threshold and args.weights is not None:
        chosen = candidates[args.choose_threshold]
        print(f"{args.choose_threshold} on validation: detection_logit {chosen:.4f} {sweep.at(chosen)}", file=sys.stderr)
        checkpoint["threshold_logit"] = chosen
    elif args.choose_threshold:
        chosen = candidates[args.choose_threshold]
        checkpoint["threshold_logit"] = chosen
        checkpoint.pop("threshold", None)  # older checkpoints: a probability
        step = f"python -m training.evaluate_detector --split val --choose-threshold {args.choose_threshold}"
        if step not in checkpoint.get("command", ""):
            checkpoint["command"] = f"{checkpoint.get('command', '')} && {step}".lstrip(" &")
        checkpoint.setdefault("metrics", {})["threshold_rule"] = (
            f"{args.choose_threshold} on the validation mosaic through the product pipeline")
        checkpoint.setdefault("metrics", {})["threshold_selection"] = {
            "rule": args.choose_threshold, "threshold": chosen, "engine": args.engine,
            "split": "val (slide-held-out part of the training split)", "at_threshold": sweep.at(chosen),
            "alternatives": {r: sweep.at(t) for r, t in candidates.items()},
            "roi_mitosis_density_per_mm2": ev.ROI_MITOSIS_DENSITY_PER_MM2,
        }
        runtime.save_checkpoint(checkpoint, args.checkpoint)
        print(f"threshold {chosen:.6f} ({args.choose_threshold} on validation) stored in {args.checkpoint}",
              file=sys.stderr)
    threshold = export.checkpoint_threshold_logit(checkpoint, "detector")
    at = sweep.at(threshold)
    result = {
        "split": args.split, "engine": args.engine, "stage": args.stage if args.weights is not None else 1, "checkpoint": str(args.checkpoint),
        "command": "python -m training.evaluate_detector " + " ".join(argv if argv is not None else sys.argv[1:]),
        "n_crops": mosaic.n_crops, "n_annotated_mitoses": len(mosaic.gt_points),
        "crop_area_mm2": mosaic.crop_area_mm2, "mosaic_px": list(mosaic.image.shape[:2]),
        "detection_seconds": seconds, "n_candidates": len(scores),
        "threshold_from_validation": threshold, "at_threshold": at,
        "best_f1_on_crops": sweep.at(sweep.best_f1_threshold()),
        "thresholds_by_rule_on_this_split": {r: sweep.at(t) for r, t in candidates.items()},
        "recall_at_fp_per_mm2": {str(r): sweep.recall_at_fp(r) for r in (1, 2.5, 5, 10, 20, 50)},
        "caveat": "crops centred on mitoses: negatives easier than in real ROIs; FP/mm^2 is optimistic",
        "sweep": sweep.to_dict(),
    }
    runtime.write_json(result, args.out / f"{args.split}_metrics.json")
    ev.plot_sweep(sweep, args.out / f"{args.split}_sweep.png",
                  f"AMi-Br {args.split} mosaic ({mosaic.n_crops} crops, {len(mosaic.gt_points)} mitoses), "
                  f"engine {args.engine}", threshold)
    print(json.dumps({k: result[k] for k in ("at_threshold", "recall_at_fp_per_mm2", "detection_seconds")},
                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
