"""Track 1 metrics: mitotic figure detection scored by point matching.

Two matchings are used, each where the challenge (or the field) uses it:

* **Counting at the operating point** (precision, recall, F1 and the F1 threshold sweep):
  evalutils' ``score_detection`` from grand-challenge-metrics, exactly as the MIDOG evaluation
  containers call it. Per ground-truth figure, in ground-truth order, the *nearest* not yet used
  prediction within the radius becomes its true positive (distance ``<= radius``, inclusive);
  predictions left over are false positives, figures left over false negatives. Only points named
  "mitotic figure" take part. Counts are summed over all images before the ratios are taken
  (micro average), as the challenge aggregates.
* **Ranking metrics** (average precision, FROC): every point of every image with its
  ``probability``, "non-mitotic figure" points included (the MIDOG evaluation ranks all points by
  probability for its mAP). Per image, predictions are visited from the highest probability down
  and each takes the nearest still unmatched figure within the radius (COCO-style greedy
  matching), so a prediction's TP/FP status does not depend on the threshold and one ranked list
  gives the whole curve.

Ratios whose denominator is zero (precision without predictions, recall without figures) are
``None`` (JSON ``null``), not a made-up 0 or 1. The challenge adds 1e-6 to its denominators; the
difference is below the sixth decimal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from grand_challenge_metrics.scorers import score_detection

# MIDOG protocol: a detection within 7.5 um of a ground-truth figure is a hit.
MATCH_RADIUS_MM = 0.0075
# FROC operating points, false positives per image (1/8 ... 8, as in LUNA16 / the issue).
FROC_FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
# Recall levels of the 101-point interpolated AP (COCO, and the MIDOG mAP configuration).
AP_RECALL_LEVELS = np.linspace(0.0, 1.0, 101)
# Detection thresholds of the sweep plot / JSON.
SWEEP_THRESHOLDS = np.round(np.linspace(0.0, 1.0, 101), 2)
# The container's operating point on that axis: its probabilities are sigmoid(logit - threshold),
# so the shipped threshold (a logit in weights/manifest.json) is at probability 0.5 exactly.
OPERATING_POINT = 0.5


def domain_order(domain: str) -> tuple:
    """Sort key: numeric domains (MIDOG 0, 1, ... 10) numerically, then names alphabetically."""
    try:
        return (0, float(domain), domain)
    except ValueError:
        return (1, 0.0, domain)


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator) / float(denominator) if denominator > 0 else None


@dataclass(frozen=True)
class DetectionCounts:
    """True positives, false positives and false negatives; add them to aggregate (micro)."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: "DetectionCounts") -> "DetectionCounts":
        return DetectionCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float | None:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def as_dict(self) -> dict:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn,
                "precision": self.precision, "recall": self.recall, "f1": self.f1}


@dataclass(frozen=True)
class DetectionCase:
    """One image: ground-truth figures and the predicted points, all in mm.

    ``truth``: (n, 2) x, y of the figures. ``points``: (m, 2) x, y of every predicted point,
    ``probabilities``: (m,) their scores, ``is_mitosis``: (m,) True for "mitotic figure".
    """

    name: str
    truth: np.ndarray
    points: np.ndarray
    probabilities: np.ndarray
    is_mitosis: np.ndarray
    domain: str | None = None
    roi_type: str | None = None

    def __post_init__(self) -> None:
        m = len(self.points)
        if self.truth.shape[1:] != (2,) or self.points.shape[1:] != (2,):
            raise ValueError(f"{self.name}: points must be (n, 2) arrays")
        if self.probabilities.shape != (m,) or self.is_mitosis.shape != (m,):
            raise ValueError(f"{self.name}: probabilities / is_mitosis must have one entry per point")


def points_array(points: Sequence[Sequence[float]]) -> np.ndarray:
    """(n, 2) float array of x, y from any sequence of points (extra coordinates dropped)."""
    a = np.asarray(points, dtype=np.float64)
    return a.reshape(0, 2) if a.size == 0 else a[:, :2]


def count_matches(truth: np.ndarray, predictions: np.ndarray, radius: float = MATCH_RADIUS_MM) -> DetectionCounts:
    """TP/FP/FN of one image with the challenge's ``score_detection`` (inclusive radius)."""
    score = score_detection(
        ground_truth=[tuple(p) for p in points_array(truth)],
        predictions=[tuple(p) for p in points_array(predictions)],
        radius=radius,
    )
    return DetectionCounts(score.true_positives, score.false_positives, score.false_negatives)


def match_by_score(
    truth: np.ndarray, points: np.ndarray, probabilities: np.ndarray, radius: float = MATCH_RADIUS_MM
) -> np.ndarray:
    """Greedy score-ordered matching of one image; True where a prediction is a true positive.

    Predictions are visited by decreasing probability (ties: input order); each takes the nearest
    unmatched figure within ``radius`` (inclusive). The result is in the input order of ``points``.
    """
    truth, points = points_array(truth), points_array(points)
    is_tp = np.zeros(len(points), dtype=bool)
    if len(truth) == 0 or len(points) == 0:
        return is_tp
    distance = np.sqrt(((points[:, None, :] - truth[None, :, :]) ** 2).sum(axis=-1))
    taken = np.zeros(len(truth), dtype=bool)
    for i in np.argsort(-np.asarray(probabilities, dtype=np.float64), kind="stable"):
        candidates = np.where(~taken & (distance[i] <= radius))[0]
        if len(candidates):
            j = candidates[np.argmin(distance[i, candidates])]
            taken[j] = True
            is_tp[i] = True
    return is_tp


@dataclass(frozen=True)
class RankedCurve:
    """Cumulative TP/FP at every distinct threshold, highest first (one row per threshold)."""

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    n_truth: int
    n_images: int

    @property
    def recall(self) -> np.ndarray:
        return self.tp / self.n_truth if self.n_truth else np.full(len(self.tp), np.nan)

    @property
    def precision(self) -> np.ndarray:
        return self.tp / np.maximum(self.tp + self.fp, 1)

    @property
    def fp_per_image(self) -> np.ndarray:
        return self.fp / max(self.n_images, 1)


def ranked_curve(scores: np.ndarray, is_tp: np.ndarray, n_truth: int, n_images: int) -> RankedCurve:
    """Collapse a ranked list of (score, TP?) over all images into one point per distinct score."""
    scores = np.asarray(scores, dtype=np.float64)
    is_tp = np.asarray(is_tp, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    scores, is_tp = scores[order], is_tp[order]
    tp, fp = np.cumsum(is_tp), np.cumsum(~is_tp)
    # Last row of each run of equal scores: a threshold keeps all points with that score or not.
    last = np.r_[scores[1:] != scores[:-1], True] if len(scores) else np.zeros(0, dtype=bool)
    return RankedCurve(scores[last], tp[last], fp[last], int(n_truth), int(n_images))


def average_precision(curve: RankedCurve) -> float | None:
    """101-point interpolated AP (COCO / torchmetrics ``rec_thresholds=0:0.01:1``).

    ``None`` when there is no ground-truth figure; 0.0 when there are figures but no predictions.
    """
    if curve.n_truth == 0:
        return None
    if len(curve.tp) == 0:
        return 0.0
    recall, precision = curve.recall, curve.precision
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    index = np.searchsorted(recall, AP_RECALL_LEVELS, side="left")
    reached = index < len(recall)
    return float(np.where(reached, envelope[np.minimum(index, len(recall) - 1)], 0.0).mean())


def froc(curve: RankedCurve, fp_rates: Sequence[float] = FROC_FP_RATES) -> tuple[float | None, dict[str, float]]:
    """FROC score: mean sensitivity at the given false positives per image.

    Sensitivity at rate ``f`` is the highest sensitivity of any threshold whose mean number of
    false positives per image is ``<= f`` (0 if none; the last value if the predictions run out
    before ``f``, i.e. the curve stays flat). ``None`` without ground-truth figures.
    """
    if curve.n_truth == 0:
        return None, {}
    recall, fpi = np.r_[0.0, curve.recall], np.r_[0.0, curve.fp_per_image]
    sensitivity = {f"{f:g}": float(recall[fpi <= f + 1e-12].max()) for f in fp_rates}
    return float(np.mean(list(sensitivity.values()))), sensitivity


def threshold_sweep(
    cases: Sequence[DetectionCase], thresholds: np.ndarray = SWEEP_THRESHOLDS, radius: float = MATCH_RADIUS_MM
) -> list[DetectionCounts]:
    """Micro TP/FP/FN when every point with ``probability >= t`` counts as a mitotic figure.

    Names are ignored here: the sweep asks what a different detection threshold would give.
    Matching is ``score_detection``'s, so the sweep agrees with the headline F1 wherever the
    container's "mitotic figure" points are exactly those above the threshold.
    """
    totals = [DetectionCounts() for _ in thresholds]
    for case in cases:
        # A point farther than the radius from every figure is a false positive whatever else is
        # kept, and it never takes part in score_detection's matching: count those directly.
        near = _near_any(case.points, case.truth, radius)
        order = np.argsort(-case.probabilities[near], kind="stable")
        near_points, near_probs = case.points[near][order], case.probabilities[near][order]
        far_probs = case.probabilities[~near]
        cache: dict[int, DetectionCounts] = {}
        for k, t in enumerate(thresholds):
            kept = int(np.count_nonzero(near_probs >= t))
            if kept not in cache:
                cache[kept] = count_matches(case.truth, near_points[:kept], radius)
            far = int(np.count_nonzero(far_probs >= t))
            totals[k] = totals[k] + cache[kept] + DetectionCounts(fp=far)
    return totals


def _near_any(points: np.ndarray, truth: np.ndarray, radius: float) -> np.ndarray:
    """True for points within ``radius`` (inclusive) of at least one figure."""
    if len(points) == 0 or len(truth) == 0:
        return np.zeros(len(points), dtype=bool)
    distance = np.sqrt(((points[:, None, :] - truth[None, :, :]) ** 2).sum(axis=-1))
    return (distance <= radius * (1 + 1e-9)).any(axis=1)  # slack: a borderline point goes to score_detection


@dataclass(frozen=True)
class DetectionSummary:
    """Figures of one group of images (all, or one tumour domain)."""

    images: int
    figures: int
    predicted_mitoses: int
    counts: DetectionCounts
    average_precision: float | None
    froc: float | None
    froc_sensitivity: dict[str, float]

    def as_dict(self) -> dict:
        return {"images": self.images, "figures": self.figures, "predicted_mitoses": self.predicted_mitoses,
                **self.counts.as_dict(), "average_precision": self.average_precision,
                "froc": self.froc, "froc_sensitivity": self.froc_sensitivity}


def summarise(cases: Sequence[DetectionCase], per_image: Mapping[str, DetectionCounts],
              radius: float = MATCH_RADIUS_MM) -> DetectionSummary:
    counts = sum((per_image[c.name] for c in cases), DetectionCounts())
    scores = np.concatenate([c.probabilities for c in cases]) if cases else np.zeros(0)
    is_tp = (np.concatenate([match_by_score(c.truth, c.points, c.probabilities, radius) for c in cases])
             if cases else np.zeros(0, dtype=bool))
    n_truth = sum(len(c.truth) for c in cases)
    curve = ranked_curve(scores, is_tp, n_truth, len(cases))
    froc_score, sensitivity = froc(curve)
    return DetectionSummary(
        images=len(cases), figures=n_truth, predicted_mitoses=int(sum(c.is_mitosis.sum() for c in cases)),
        counts=counts, average_precision=average_precision(curve), froc=froc_score,
        froc_sensitivity=sensitivity,
    )


@dataclass(frozen=True)
class DetectionReport:
    radius_mm: float
    overall: DetectionSummary
    per_domain: dict[str, DetectionSummary]
    per_image: dict[str, DetectionCounts]
    domains: dict[str, str | None]
    sweep_thresholds: np.ndarray
    sweep: list[DetectionCounts] = field(repr=False)

    @property
    def best(self) -> tuple[float, float] | None:
        """(threshold, F1) of the sweep's best F1; the highest such threshold on ties."""
        f1 = np.array([c.f1 if c.f1 is not None else -1.0 for c in self.sweep])
        if len(f1) == 0 or f1.max() < 0:
            return None
        k = len(f1) - 1 - int(np.argmax(f1[::-1]))
        return float(self.sweep_thresholds[k]), float(f1[k])

    def at_operating_point(self) -> dict | None:
        """The sweep at probability 0.5, the container's shipped threshold."""
        k = np.flatnonzero(np.isclose(self.sweep_thresholds, OPERATING_POINT))
        return None if len(k) == 0 else {"threshold": OPERATING_POINT, **self.sweep[int(k[0])].as_dict()}

    def as_dict(self) -> dict:
        best = self.best
        return {
            "radius_mm": self.radius_mm,
            "overall": self.overall.as_dict(),
            "per_domain": {d: s.as_dict() for d, s in self.per_domain.items()},
            "per_image": {n: {"domain": self.domains[n], **c.as_dict()} for n, c in self.per_image.items()},
            "sweep": {
                "thresholds": [float(t) for t in self.sweep_thresholds],
                "precision": [c.precision for c in self.sweep],
                "recall": [c.recall for c in self.sweep],
                "f1": [c.f1 for c in self.sweep],
            },
            "best_threshold": None if best is None else {"threshold": best[0], "f1": best[1]},
            "operating_point": self.at_operating_point(),
        }


def evaluate_detection(
    cases: Sequence[DetectionCase], radius: float = MATCH_RADIUS_MM, thresholds: np.ndarray = SWEEP_THRESHOLDS
) -> DetectionReport:
    """All Track 1 figures: overall, per tumour domain, per image, and the threshold sweep."""
    per_image = {c.name: count_matches(c.truth, c.points[c.is_mitosis], radius) for c in cases}
    domains = sorted({c.domain for c in cases if c.domain is not None}, key=domain_order)
    return DetectionReport(
        radius_mm=radius,
        overall=summarise(cases, per_image, radius),
        per_domain={d: summarise([c for c in cases if c.domain == d], per_image, radius) for d in domains},
        per_image=per_image,
        domains={c.name: c.domain for c in cases},
        sweep_thresholds=np.asarray(thresholds, dtype=np.float64),
        sweep=threshold_sweep(cases, thresholds, radius),
    )
