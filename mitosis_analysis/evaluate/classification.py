"""Track 2 metrics: atypical (positive, 1) versus normal (0) mitotic figures.

As the MIDOG 2025 Track 2 evaluation: sensitivity, specificity and balanced accuracy from the
predicted classes pooled over all stacks, AUROC from P(atypical), and the same per tumour domain.
Ratios with an empty denominator (sensitivity without atypical figures ...) are ``None``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .detection import domain_order

SWEEP_THRESHOLDS = np.round(np.linspace(0.0, 1.0, 101), 2)


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator) / float(denominator) if denominator > 0 else None


@dataclass(frozen=True)
class BinaryCounts:
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def sensitivity(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def specificity(self) -> float | None:
        return _ratio(self.tn, self.tn + self.fp)

    @property
    def balanced_accuracy(self) -> float | None:
        sens, spec = self.sensitivity, self.specificity
        return None if sens is None or spec is None else (sens + spec) / 2.0

    @property
    def accuracy(self) -> float | None:
        return _ratio(self.tp + self.tn, self.tp + self.fp + self.fn + self.tn)

    def as_dict(self) -> dict:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn,
                "sensitivity": self.sensitivity, "specificity": self.specificity,
                "balanced_accuracy": self.balanced_accuracy, "accuracy": self.accuracy}


def confusion(labels: np.ndarray, predicted: np.ndarray) -> BinaryCounts:
    """Counts of a binary prediction (1 = atypical) against labels."""
    y, p = np.asarray(labels, dtype=bool), np.asarray(predicted, dtype=bool)
    if y.shape != p.shape:
        raise ValueError(f"{len(y)} labels but {len(p)} predictions")
    return BinaryCounts(tp=int(np.sum(y & p)), fp=int(np.sum(~y & p)), fn=int(np.sum(y & ~p)), tn=int(np.sum(~y & ~p)))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks (``scipy.stats.rankdata``)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)
    return (last - (counts - 1) / 2.0)[inverse]


def auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U, ties count one half); ``None`` if one class is absent."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = average_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


@dataclass(frozen=True)
class ClassificationSummary:
    figures: int
    atypical: int
    counts: BinaryCounts
    auroc: float | None

    def as_dict(self) -> dict:
        return {"figures": self.figures, "atypical": self.atypical, **self.counts.as_dict(), "auroc": self.auroc}


def summarise(labels: np.ndarray, p_atypical: np.ndarray, predicted: np.ndarray) -> ClassificationSummary:
    return ClassificationSummary(
        figures=len(labels), atypical=int(np.sum(labels)),
        counts=confusion(labels, predicted), auroc=auroc(labels, p_atypical),
    )


@dataclass(frozen=True)
class ClassificationReport:
    overall: ClassificationSummary
    per_domain: dict[str, ClassificationSummary]
    sweep_thresholds: np.ndarray
    sweep: list[BinaryCounts]

    @property
    def best(self) -> tuple[float, float] | None:
        """(threshold, balanced accuracy) of the sweep's best BA; the lowest such threshold on ties."""
        ba = np.array([c.balanced_accuracy if c.balanced_accuracy is not None else -1.0 for c in self.sweep])
        if len(ba) == 0 or ba.max() < 0:
            return None
        k = int(np.argmax(ba))
        return float(self.sweep_thresholds[k]), float(ba[k])

    def as_dict(self) -> dict:
        best = self.best
        return {
            "overall": self.overall.as_dict(),
            "per_domain": {d: s.as_dict() for d, s in self.per_domain.items()},
            "sweep": {
                "thresholds": [float(t) for t in self.sweep_thresholds],
                "balanced_accuracy": [c.balanced_accuracy for c in self.sweep],
                "sensitivity": [c.sensitivity for c in self.sweep],
                "specificity": [c.specificity for c in self.sweep],
            },
            "best_threshold": None if best is None else {"threshold": best[0], "balanced_accuracy": best[1]},
        }


def evaluate_classification(
    labels: np.ndarray,
    p_atypical: np.ndarray,
    predicted: np.ndarray,
    domains: Sequence[str | None] | None = None,
    thresholds: np.ndarray = SWEEP_THRESHOLDS,
) -> ClassificationReport:
    """All Track 2 figures for pooled figures (one entry per classified crop).

    ``labels``: 1 atypical / 0 normal; ``p_atypical``: the scores behind AUROC and the sweep;
    ``predicted``: the classes the algorithm output (1 atypical), scored as they are;
    ``domains``: tumour domain per figure (or None). The sweep classifies ``p_atypical >= t``.
    """
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(p_atypical, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.int64)
    if not (len(y) == len(s) == len(p)):
        raise ValueError("labels, scores and predictions must have the same length")
    per_domain: dict[str, ClassificationSummary] = {}
    if domains is not None:
        d = np.asarray([str(x) if x is not None else "" for x in domains], dtype=object)
        for name in sorted(set(d) - {""}, key=domain_order):
            m = d == name
            per_domain[name] = summarise(y[m], s[m], p[m])
    thresholds = np.asarray(thresholds, dtype=np.float64)
    return ClassificationReport(
        overall=summarise(y, s, p),
        per_domain=per_domain,
        sweep_thresholds=thresholds,
        sweep=[confusion(y, s >= t) for t in thresholds],
    )
