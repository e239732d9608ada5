"""Track 2 metrics against hand-computed cases (1 = atypical = positive)."""

from __future__ import annotations

import numpy as np
import pytest

from mitosis_analysis.errors import InputError
from mitosis_analysis.evaluate.classification import BinaryCounts, auroc, confusion, evaluate_classification
from mitosis_analysis.evaluate.predictions import parse_classifications


def test_balanced_accuracy_hand_computed():
    c = confusion(np.array([1, 1, 0, 0, 0]), np.array([1, 0, 0, 0, 1]))
    assert c == BinaryCounts(tp=1, fp=1, fn=1, tn=2)
    assert c.sensitivity == 0.5 and c.specificity == pytest.approx(2 / 3)
    assert c.balanced_accuracy == pytest.approx(7 / 12)
    assert c.accuracy == pytest.approx(3 / 5)


def test_auroc_hand_computed():
    # positive-negative pairs ranked right: (.9,.5) (.9,.1) (.4,.1); wrong: (.4,.5) -> 3/4
    assert auroc(np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.5, 0.1])) == pytest.approx(0.75)
    # a tie between a positive and a negative counts one half: (1 + 0.5 + 0 + 1) / 4
    assert auroc(np.array([1, 1, 0, 0]), np.array([0.5, 0.4, 0.5, 0.1])) == pytest.approx(0.625)
    assert auroc(np.array([0, 0, 1]), np.array([0.1, 0.2, 0.3])) == 1.0
    assert auroc(np.array([0, 0, 1]), np.array([0.3, 0.2, 0.1])) == 0.0


def test_auroc_matches_sklearn_on_random_scores():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.uniform(size=200), 1)  # many ties
    assert auroc(y, s) == pytest.approx(sklearn_metrics.roc_auc_score(y, s))


def test_undefined_figures_are_none():
    c = confusion(np.array([0, 0]), np.array([0, 1]))
    assert c.sensitivity is None and c.balanced_accuracy is None and c.specificity == 0.5
    assert auroc(np.array([0, 0]), np.array([0.2, 0.7])) is None


def test_report_overall_per_domain_and_sweep():
    labels = np.array([1, 0, 0, 1, 0, 0])
    p = np.array([0.9, 0.2, 0.6, 0.4, 0.1, 0.3])
    predicted = (p >= 0.5).astype(int)
    domains = ["a", "a", "a", "b", "b", None]
    report = evaluate_classification(labels, p, predicted, domains, thresholds=np.array([0.0, 0.35, 0.5, 1.0]))
    assert report.overall.counts == BinaryCounts(tp=1, fp=1, fn=1, tn=3)
    assert report.overall.auroc == pytest.approx(7 / 8)  # .9 beats all 4 negatives, .4 beats .2 .1 .3
    assert set(report.per_domain) == {"a", "b"}  # figures without a domain only count overall
    assert report.per_domain["a"].counts == BinaryCounts(tp=1, fp=1, fn=0, tn=1)
    assert report.per_domain["b"].auroc == 1.0
    ba = [c.balanced_accuracy for c in report.sweep]
    # t=0: all atypical -> .5; t=.35: tp 2, fp 1 (.6) -> (1 + 3/4)/2; t=.5: (1/2 + 3/4)/2; t=1: .5
    assert ba == pytest.approx([0.5, 0.875, 0.625, 0.5])
    assert report.best == (0.35, pytest.approx(0.875))


def test_confidence_is_p_atypical_as_the_challenge_reads_it():
    out = [{"class": "normal", "confidence": 0.2}, {"class": "atypical", "confidence": 0.7}]
    p, cls = parse_classifications(out, "x")  # MIDOG25_T2_evaluation_docker since 2d1b108
    assert p == pytest.approx([0.2, 0.7]) and cls.tolist() == [0, 1]
    p, _ = parse_classifications(out, "x", confidence="predicted-class")  # the superseded reading
    assert p == pytest.approx([0.8, 0.7])


def test_an_integer_confidence_is_refused_as_the_challenge_refuses_it():
    with pytest.raises(InputError, match="not a float"):
        parse_classifications([{"class": "atypical", "confidence": 1}], "x")


@pytest.mark.parametrize("bad", [
    {"class": "mitosis", "confidence": 0.5},
    {"class": "normal"},
    {"class": "normal", "confidence": 1.5},
    {"class": "normal", "confidence": "high"},
])
def test_malformed_classification_is_an_input_error(bad):
    with pytest.raises(InputError):
        parse_classifications([bad], "x")
