"""The MIDOG 2025 leaderboard figures, computed the way the official evaluation containers do.

Track 1: DeepMicroscopy/MIDOG25_T1_evaluation_docker, ``evaluate.py`` (commit 8577851).
Track 2: DeepMicroscopy/MIDOG25_T2_evaluation_docker, ``evaluate.py`` (commit 2d1b108, where
``confidence`` is P(atypical)). Written from a reading of that code, not copied; the parity test
(``test/test_official_parity.py``) pins these functions to numbers the official code produced.

Track 1, per group of images (all; each tumour domain; each ROI type):

* ``precision``, ``recall``, F1: TP/FP/FN of "mitotic figure" points by ``score_detection`` at
  7.5 um, summed over the images, with the official ``1e-6`` in the denominators (and in F1's
  numerator: an empty group has F1 1.0 there).
* ``AP``: ``map_50`` of torchmetrics' ``MeanAveragePrecision`` (pycocotools backend) with every
  point, named either way, as a square box of +-0.01125 mm, scored by its probability: COCO's
  box matching at IoU >= 0.5 (not a distance), 101 recall levels ``np.arange(0, 1.01, 0.01)``,
  boxes, scores and the result in float32 as torchmetrics holds them. ``-1.0`` without ground truth.
* ``froc_auc``: area (trapezoids on 50 points over 0...8) under recall against mean false
  positives per image, recall measured at 40 thresholds spaced linearly between the smallest and
  the largest probability of the group's points (every point, named either way). ``None`` (the
  official NaN) when the group has no point at all.

The official code lists all three ROI types whether or not any image has them; so does this.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError
from .detection import MATCH_RADIUS_MM, DetectionCase, count_matches, domain_order, threshold_sweep

EPS = 1e-6
ROI_TYPES = ("hotspot", "challenging", "random")
BOX_HALF_SIDE_MM = 0.01125  # the official "bbox_size": IoU 0.5 at 7.5 um of horizontal offset
RECALL_LEVELS = np.arange(0, 1.01, 0.01)  # exactly the official rec_thresholds (not linspace)
FROC_MAX_FP = 8
FROC_THRESHOLDS = 40
FROC_GRID = 50


# --------------------------------------------------------------------------- Track 1


def _f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).astype(np.float32).astype(np.float64)


def _boxes_xywh(points_mm: np.ndarray) -> np.ndarray:
    """(n, 2) centres -> (n, 4) x, y, w, h of the official square boxes, with the float32 rounding
    of ``torch.Tensor`` (corners) and of torchmetrics' xyxy -> xywh conversion (width, height)."""
    p = np.asarray(points_mm, dtype=np.float64).reshape(-1, 2)
    x1, y1 = np.float32(p[:, 0] - BOX_HALF_SIDE_MM), np.float32(p[:, 1] - BOX_HALF_SIDE_MM)
    x2, y2 = np.float32(p[:, 0] + BOX_HALF_SIDE_MM), np.float32(p[:, 1] + BOX_HALF_SIDE_MM)
    return np.stack([x1, y1, x2 - x1, y2 - y1], axis=1).astype(np.float64)


def _box_iou(dt: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU matrix (len(dt), len(gt)) of xywh boxes, as pycocotools' bbIou computes it."""
    if len(dt) == 0 or len(gt) == 0:
        return np.zeros((len(dt), len(gt)))
    w = np.minimum(dt[:, None, 0] + dt[:, None, 2], gt[None, :, 0] + gt[None, :, 2]) - np.maximum(dt[:, None, 0], gt[None, :, 0])
    h = np.minimum(dt[:, None, 1] + dt[:, None, 3], gt[None, :, 1] + gt[None, :, 3]) - np.maximum(dt[:, None, 1], gt[None, :, 1])
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)
    union = (dt[:, 2] * dt[:, 3])[:, None] + (gt[:, 2] * gt[:, 3])[None, :] - inter
    return inter / union


def coco_ap50(cases: Sequence[DetectionCase]) -> float:
    """``map_50`` of the official MeanAveragePrecision over ``cases`` (one update per image)."""
    scores, matched, n_truth = [], [], 0
    for case in cases:
        if len(case.truth) == 0 and len(case.points) == 0:
            continue  # pycocotools skips an image with neither
        s = _f32(case.probabilities)
        order = np.argsort(-s, kind="mergesort")
        iou = _box_iou(_boxes_xywh(case.points)[order], _boxes_xywh(case.truth))
        taken = np.zeros(len(case.truth), dtype=bool)
        hit = np.zeros(len(order), dtype=bool)
        for d in range(len(order)):
            best, m = 0.5, -1  # min(0.5, 1 - 1e-10)
            for g in range(len(case.truth)):
                if taken[g] or iou[d, g] < best:
                    continue
                best, m = iou[d, g], g
            if m >= 0:
                taken[m], hit[d] = True, True
        scores.append(s[order])
        matched.append(hit)
        n_truth += len(case.truth)
    if n_truth == 0:
        return -1.0
    s, hit = np.concatenate(scores), np.concatenate(matched)
    order = np.argsort(-s, kind="mergesort")
    tp = np.cumsum(hit[order]).astype(np.float64)
    fp = np.cumsum(~hit[order]).astype(np.float64)
    recall = tp / n_truth
    precision = tp / (fp + tp + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the precision envelope
    index = np.searchsorted(recall, RECALL_LEVELS, side="left")
    q = np.zeros(len(RECALL_LEVELS))
    reached = index < len(precision)
    q[reached] = precision[index[reached]]
    return float(np.float32(np.mean(q)))  # torchmetrics hands the mean over as a float32 tensor


def froc_auc(cases: Sequence[DetectionCase], radius: float = MATCH_RADIUS_MM) -> float | None:
    """The official FROC score of ``cases``; None where the official code gives NaN."""
    if not any(len(c.points) for c in cases):
        return None
    scores = np.concatenate([c.probabilities for c in cases])
    lo, hi = float(np.min(scores)), float(np.max(scores))
    thresholds = np.array([lo]) if lo == hi else np.linspace(lo, hi, FROC_THRESHOLDS)
    counts = threshold_sweep(cases, thresholds, radius)
    recall = np.array([c.tp / (c.tp + c.fn + EPS) for c in counts])
    fppi = np.array([c.fp / len(cases) for c in counts])
    order = np.argsort(fppi)
    grid = np.linspace(0, FROC_MAX_FP, FROC_GRID)
    curve = np.interp(grid, fppi[order], recall[order], left=0, right=recall[order][-1])
    return float(np.trapezoid(curve, grid))


def _counts(cases: Sequence[DetectionCase], radius: float) -> tuple[int, int, int]:
    tp = fp = fn = 0
    for c in cases:
        k = count_matches(c.truth, c.points[c.is_mitosis], radius)
        tp, fp, fn = tp + k.tp, fp + k.fp, fn + k.fn
    return tp, fp, fn


def _group(cases: Sequence[DetectionCase], radius: float) -> dict:
    tp, fp, fn = _counts(cases, radius)
    return {
        "precision": tp / (tp + fp + EPS),
        "recall": tp / (tp + fn + EPS),
        "f1": (2 * tp + EPS) / (2 * tp + fp + fn + EPS),
        "AP": coco_ap50(cases),
        "froc_auc": froc_auc(cases, radius),
    }


def check_official_ground_truth(cases: Sequence[DetectionCase]) -> None:
    """What the official evaluation refuses: an image without "tumor domain" or a valid "roi type"."""
    for c in cases:
        if c.domain is None:
            raise InputError(f"ground truth of {c.name} has no \"tumor domain\" (the official evaluation needs one)")
        if c.roi_type not in ROI_TYPES:
            raise InputError(f"ground truth of {c.name}: \"roi type\" {c.roi_type!r} is not one of {list(ROI_TYPES)}")


def track1_aggregates(cases: Sequence[DetectionCase], radius: float = MATCH_RADIUS_MM) -> dict:
    """The official Track 1 ``aggregates``: overall, ``tumor_<d>_*`` and ``roi_type_<t>_*``.

    Cases without a domain (or ROI type) take no part in the per-domain (per-type) keys; the
    official evaluation would refuse them (``check_official_ground_truth``)."""
    overall = _group(cases, radius)
    result = {"precision": overall["precision"], "recall": overall["recall"], "f1_score": overall["f1"],
              "froc_auc": overall["froc_auc"], "AP": overall["AP"]}
    for d in sorted({c.domain for c in cases if c.domain is not None}, key=domain_order):
        g = _group([c for c in cases if c.domain == d], radius)
        result.update({f"tumor_{d}_{k}": g[k] for k in ("precision", "recall", "f1", "AP", "froc_auc")})
    if any(c.roi_type is not None for c in cases):
        for t in ROI_TYPES:
            g = _group([c for c in cases if c.roi_type == t], radius)
            result.update({f"roi_type_{t}_{k}": g[k] for k in ("precision", "recall", "f1", "AP", "froc_auc")})
    return result


# --------------------------------------------------------------------------- Track 2


def _recall(y: np.ndarray, p: np.ndarray, positive: int) -> float:
    """scikit-learn's ``recall_score`` (0.0 when the class is absent, as its zero_division default)."""
    n = int(np.sum(y == positive))
    return float(np.sum((y == positive) & (p == positive)) / n) if n else 0.0


def track2_aggregates(labels: np.ndarray, p_atypical: np.ndarray, predicted: np.ndarray,
                      domains: Sequence[str | None] | None = None) -> dict:
    """The official Track 2 ``aggregates``: pooled figures and ``domain_<d>`` objects. Where the
    official code would fail (a class absent, so a ratio or the AUROC is undefined) the value is None."""
    from .classification import auroc, confusion

    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(p_atypical, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.int64)
    c = confusion(y, p)
    sens, spec = c.sensitivity, c.specificity
    result: dict = {
        "overall_sensitivity": sens,
        "overall_specificity": spec,
        "overall_balanced_accuracy": None if sens is None or spec is None else (sens + spec) / 2,
        "overall_roc_auc": auroc(y, s),
        "overall_accuracy": c.accuracy,
    }
    if domains is not None:
        d = np.asarray(["" if x is None else str(x) for x in domains], dtype=object)
        for name in sorted(set(d) - {""}, key=domain_order):
            m = d == name
            se, sp = _recall(y[m], p[m], 1), _recall(y[m], p[m], 0)
            result[f"domain_{name}"] = {
                "sensitivity": se, "specificity": sp, "balanced_accuracy": (se + sp) / 2,
                "accuracy": float(np.mean(y[m] == p[m])), "roc_auc": auroc(y[m], s[m]),
            }
    return result
