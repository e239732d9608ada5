"""Parity with the official MIDOG 2025 evaluations on a small fixed case.

How the expected numbers were produced (once, 2026-12-01): the aggregation code paths of
DeepMicroscopy/MIDOG25_T1_evaluation_docker ``evaluate.py`` (commit 8577851: ``score_detection``,
torchmetrics ``MeanAveragePrecision`` ``map_50`` with pycocotools, ``calc_froc_score``) and of
DeepMicroscopy/MIDOG25_T2_evaluation_docker ``evaluate.py`` (commit 2d1b108, confidence =
P(atypical); scikit-learn's metrics) were run on exactly the case below, fed directly instead of
through the platform's ``predictions.json``, with torchmetrics 1.x, pycocotools 2.0.11,
scikit-learn 1.9.1, grand-challenge-metrics 0.6.0 (its ``score_detection`` is evalutils'),
torch 2.13 CPU and torchvision 0.28 (its CUDA-only custom-op registration skipped: the box
code used here is pure Python). The official NaN (FROC of a group without points, AUROC of a
domain with one class) is ``None`` here. No code of theirs is in this repository.

The case exercises what differs between the metrics: a prediction 7.0 um away on the diagonal
is a true positive at 7.5 um but not at IoU 0.5 of the +-11.25 um boxes (AP), one at 7.4 um in y
is both, one at 7.6 um is neither; a duplicate, an image without ground truth, an image without
predictions, ties in probability, "non-mitotic figure" points (in AP and FROC, not in F1), and
an ROI type without images (the official code still reports it).
"""

import numpy as np
import pytest

from mitosis_analysis.evaluate.detection import DetectionCase
from mitosis_analysis.evaluate.official import track1_aggregates, track2_aggregates


def P(x, y, name="mitotic figure", p=0.9):
    return {"name": name, "point": [x, y, 0], "probability": p}


um = 0.001
gt = {
 "a.tiff": {"annotations": [[0.10, 0.10, 0], [0.30, 0.20, 0], [0.50, 0.50, 0], [0.80, 0.10, 0]], "tumor domain": 0, "roi type": "hotspot"},
 "b.tiff": {"annotations": [[0.20, 0.20, 0], [0.40, 0.40, 0], [0.60, 0.25, 0]], "tumor domain": 0, "roi type": "challenging"},
 "c.tiff": {"annotations": [[1.00, 1.00, 0], [1.20, 1.00, 0]], "tumor domain": 1, "roi type": "hotspot"},
 "d.tiff": {"annotations": [], "tumor domain": 1, "roi type": "challenging"},
 "e.tiff": {"annotations": [[0.05, 0.05, 0]], "tumor domain": 1, "roi type": "hotspot"},
}
pred = {
 "a.tiff": [P(0.10, 0.10, p=0.95),                      # exact
            P(0.30 + 6*um, 0.20, p=0.80),                # 6 um in x: TP by distance and by IoU (0.58)
            P(0.50 + 4.95*um, 0.50 + 4.95*um, p=0.85),   # 7.0 um diagonal: TP by distance, IoU 0.44 < 0.5
            P(0.90, 0.90, p=0.70),                       # far: FP
            P(0.80 + 2*um, 0.10, "non-mitotic figure", 0.30),  # under threshold, near a figure
            P(0.10 + 1*um, 0.10, p=0.60)],               # duplicate of the first: FP
 "b.tiff": [P(0.20, 0.20 + 7.4*um, p=0.85),              # 7.4 um: TP by distance, IoU 0.50..?
            P(0.40, 0.40, "non-mitotic figure", 0.45),
            P(0.61, 0.25, "non-mitotic figure", 0.45),   # tie in probability, 10 um away: never TP
            P(0.70, 0.70, p=0.55)],
 "c.tiff": [P(1.00, 1.00, p=0.99), P(1.20 + 7.6*um, 1.00, p=0.90)],  # 7.6 um: FP by distance
 "d.tiff": [P(0.30, 0.30, p=0.65), P(0.35, 0.30, "non-mitotic figure", 0.20)],
 "e.tiff": [],
}
labels = [
 {"image": "s1.tiff", "labels": ["normal", "atypical", "normal", "atypical", "normal"], "tumordomains": [1, 1, 2, 2, 2]},
 {"image": "s2.tiff", "labels": ["atypical", "normal", "normal"], "tumordomains": [1, 3, 3]},
]
classifications = {
 "s1.tiff": [{"class": "normal", "confidence": 0.2}, {"class": "atypical", "confidence": 0.7}, {"class": "atypical", "confidence": 0.55},
             {"class": "normal", "confidence": 0.45}, {"class": "normal", "confidence": 0.2}],
 "s2.tiff": [{"class": "atypical", "confidence": 0.9}, {"class": "normal", "confidence": 0.1}, {"class": "atypical", "confidence": 0.6}],
}

EXPECTED = {
    "track1": {
        "precision": 0.499999950000005,
        "recall": 0.499999950000005,
        "f1_score": 0.5000000249999987,
        "froc_auc": 5.331611295243702,
        "AP": 0.431327760219574,
        "tumor_0_precision": 0.57142848979593,
        "tumor_0_recall": 0.57142848979593,
        "tumor_0_f1": 0.5714286020408141,
        "tumor_0_AP": 0.5,
        "tumor_0_froc_auc": 5.428213659002737,
        "tumor_1_precision": 0.33333322222225925,
        "tumor_1_recall": 0.33333322222225925,
        "tumor_1_f1": 0.3333334444444259,
        "tumor_1_AP": 0.3366336524486542,
        "tumor_1_froc_auc": 2.6666657777780736,
        "roi_type_hotspot_precision": 0.57142848979593,
        "roi_type_hotspot_recall": 0.57142848979593,
        "roi_type_hotspot_f1": 0.5714286020408141,
        "roi_type_hotspot_AP": 0.4445544481277466,
        "roi_type_hotspot_froc_auc": 4.496697162100917,
        "roi_type_challenging_precision": 0.33333322222225925,
        "roi_type_challenging_recall": 0.33333322222225925,
        "roi_type_challenging_f1": 0.3333334444444259,
        "roi_type_challenging_AP": 0.5,
        "roi_type_challenging_froc_auc": 4.916283242538378,
        "roi_type_random_precision": 0.0,
        "roi_type_random_recall": 0.0,
        "roi_type_random_f1": 1.0,
        "roi_type_random_AP": -1.0,
        "roi_type_random_froc_auc": None
    },
    "track2": {
        "overall_sensitivity": 0.6666666666666666,
        "overall_specificity": 0.6,
        "overall_balanced_accuracy": 0.6333333333333333,
        "overall_roc_auc": 0.8666666666666667,
        "overall_accuracy": 0.625,
        "domain_1": {
            "sensitivity": 1.0,
            "specificity": 1.0,
            "balanced_accuracy": 1.0,
            "accuracy": 1.0,
            "roc_auc": 1.0
        },
        "domain_2": {
            "sensitivity": 0.0,
            "specificity": 0.5,
            "balanced_accuracy": 0.25,
            "accuracy": 0.3333333333333333,
            "roc_auc": 0.5
        },
        "domain_3": {
            "sensitivity": 0.0,
            "specificity": 0.5,
            "balanced_accuracy": 0.25,
            "accuracy": 0.5,
            "roc_auc": None
        }
    }
}


def cases():
    out = []
    for name, g in gt.items():
        pts = pred[name]
        out.append(DetectionCase(
            name=name, truth=np.array([a[:2] for a in g["annotations"]], float).reshape(-1, 2),
            points=np.array([p["point"][:2] for p in pts], float).reshape(-1, 2),
            probabilities=np.array([p["probability"] for p in pts], float),
            is_mitosis=np.array([p["name"] == "mitotic figure" for p in pts], bool),
            domain=str(g["tumor domain"]), roi_type=g["roi type"]))
    return out


def assert_same(ours: dict, official: dict):
    assert list(ours) == list(official)  # the official key names, in the official order
    for key, want in official.items():
        got = ours[key]
        if isinstance(want, dict):
            assert_same(got, want)
        elif want is None:
            assert got is None, key
        else:
            assert got == pytest.approx(want, rel=1e-12, abs=1e-12), key


def test_track1_aggregates_match_the_official_evaluation():
    assert_same(track1_aggregates(cases()), EXPECTED["track1"])


def test_track2_aggregates_match_the_official_evaluation():
    y, s, p, d = [], [], [], []
    for rec in labels:
        res = classifications[rec["image"]]
        y += [int(v == "atypical") for v in rec["labels"]]
        s += [r["confidence"] for r in res]  # P(atypical), as the official code reads it since 2d1b108
        p += [int(r["class"] == "atypical") for r in res]
        d += [str(v) for v in rec["tumordomains"]]
    assert_same(track2_aggregates(np.array(y), np.array(s), np.array(p), d), EXPECTED["track2"])


def test_ap_matches_by_box_overlap_not_by_distance():
    """The diagonal 7.0 um prediction is an F1 hit but no AP hit: AP < 1 although F1 = 1."""
    one = DetectionCase("x", np.array([[0.5, 0.5]]), np.array([[0.5 + 0.00495, 0.5 + 0.00495]]),
                        np.array([0.9]), np.array([True]), "0", "hotspot")
    agg = track1_aggregates([one])
    assert agg["f1_score"] == pytest.approx(1.0) and agg["AP"] == 0.0
