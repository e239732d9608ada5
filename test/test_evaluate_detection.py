"""Track 1 metrics against hand-computed cases (coordinates in mm, radius 7.5 um)."""

from __future__ import annotations

import numpy as np
import pytest

from mitosis_analysis.evaluate.detection import (
    MATCH_RADIUS_MM,
    DetectionCase,
    DetectionCounts,
    average_precision,
    count_matches,
    evaluate_detection,
    froc,
    match_by_score,
    ranked_curve,
    threshold_sweep,
)

R = MATCH_RADIUS_MM


def pts(*xy) -> np.ndarray:
    return np.asarray(xy, dtype=np.float64).reshape(-1, 2)


def case(name, truth, points, probs=None, mitosis=None, domain=None) -> DetectionCase:
    points = pts(*points)
    probs = np.ones(len(points)) if probs is None else np.asarray(probs, dtype=np.float64)
    mitosis = np.ones(len(points), dtype=bool) if mitosis is None else np.asarray(mitosis, dtype=bool)
    return DetectionCase(name, pts(*truth), points, probs, mitosis, domain)


# --- counting with the challenge's score_detection -------------------------------------------


def test_empty_predictions_miss_every_figure():
    c = count_matches(pts((0.1, 0.1), (0.5, 0.5)), pts())
    assert c == DetectionCounts(tp=0, fp=0, fn=2)
    assert c.precision is None and c.recall == 0.0 and c.f1 == 0.0


def test_empty_ground_truth_makes_every_prediction_false():
    c = count_matches(pts(), pts((0.1, 0.1), (0.5, 0.5)))
    assert c == DetectionCounts(tp=0, fp=2, fn=0)
    assert c.recall is None and c.precision == 0.0 and c.f1 == 0.0


def test_nothing_at_all_is_undefined_not_perfect():
    c = count_matches(pts(), pts())
    assert c == DetectionCounts() and c.precision is None and c.recall is None and c.f1 is None


def test_two_predictions_on_one_target_are_one_tp_one_fp():
    c = count_matches(pts((1.0, 1.0)), pts((1.001, 1.0), (1.0, 1.002)))
    assert c == DetectionCounts(tp=1, fp=1, fn=0)
    assert c.precision == 0.5 and c.recall == 1.0 and c.f1 == pytest.approx(2 / 3)


def test_one_prediction_between_two_targets_hits_only_one():
    c = count_matches(pts((0.0, 0.0), (0.01, 0.0)), pts((0.005, 0.0)))
    assert c == DetectionCounts(tp=1, fp=0, fn=1)


@pytest.mark.parametrize(
    ("offset", "hit"),
    [
        ((R, 0.0), True),  # exactly on the radius: inclusive, as BallTree.query_radius
        ((0.0, -R), True),
        ((R - 1e-9, 0.0), True),  # just inside
        ((R + 1e-9, 0.0), False),  # just outside
        ((0.0045, 0.0059999), True),  # diagonal, 7.49992 um
        ((0.0045, 0.0060001), False),  # diagonal, 7.50008 um
    ],
)
def test_radius_boundary(offset, hit):
    c = count_matches(pts((0.0, 0.0)), pts(offset), R)
    assert c == (DetectionCounts(1, 0, 0) if hit else DetectionCounts(0, 1, 1))
    # the score-ordered matcher of AP/FROC uses the same inclusive radius
    assert match_by_score(pts((0.0, 0.0)), pts(offset), np.ones(1), R).tolist() == [hit]


def test_only_mitotic_figure_points_count_for_f1():
    report = evaluate_detection([case("a", [(0.0, 0.0)], [(0.0, 0.0), (1.0, 1.0)], [0.4, 0.9], [False, True])])
    assert report.overall.counts == DetectionCounts(tp=0, fp=1, fn=1)
    assert report.overall.predicted_mitoses == 1


def test_micro_average_sums_counts_over_images():
    perfect = case("a", [(0.0, 0.0)], [(0.0, 0.0)])
    poor = case("b", [(0.0, 0.0)], [(1.0, 1.0), (2.0, 2.0), (3.0, 3.0)])
    report = evaluate_detection([perfect, poor])
    assert report.per_image["a"].f1 == 1.0 and report.per_image["b"].f1 == 0.0
    assert report.overall.counts == DetectionCounts(tp=1, fp=3, fn=1)
    assert report.overall.counts.f1 == pytest.approx(2 / 6)  # not the per-image mean 0.5
    assert report.overall.counts.precision == 0.25 and report.overall.counts.recall == 0.5


def test_per_domain_partitions_the_images():
    cases = [case("a", [(0.0, 0.0)], [(0.0, 0.0)], domain="0"),
             case("b", [(0.0, 0.0)], [(1.0, 1.0)], domain="1"),
             case("c", [(0.0, 0.0), (1.0, 1.0)], [(1.0, 1.0)], domain="1")]
    report = evaluate_detection(cases)
    assert set(report.per_domain) == {"0", "1"}
    assert report.per_domain["0"].counts == DetectionCounts(1, 0, 0)
    assert report.per_domain["1"].counts == DetectionCounts(1, 1, 2)
    assert report.per_domain["1"].images == 2 and report.per_domain["1"].figures == 3
    assert report.overall.counts == DetectionCounts(2, 1, 2)


# --- ranking: score-ordered matching, AP, FROC ------------------------------------------------


def test_score_order_decides_which_duplicate_is_the_hit():
    truth = pts((0.0, 0.0))
    # the nearer point has the lower score: it is the duplicate, whatever the input order
    assert match_by_score(truth, pts((0.0, 0.001), (0.0, 0.006)), np.array([0.3, 0.8])).tolist() == [False, True]
    assert match_by_score(truth, pts((0.0, 0.006), (0.0, 0.001)), np.array([0.8, 0.3])).tolist() == [True, False]


def test_tied_scores_form_one_threshold():
    curve = ranked_curve(np.array([0.5, 0.9, 0.5]), np.array([True, True, False]), n_truth=2, n_images=1)
    assert curve.thresholds.tolist() == [0.9, 0.5]
    assert curve.tp.tolist() == [1, 2] and curve.fp.tolist() == [0, 1]


def hand_cases():
    """Image 1: figure g1, points .9 on g1, .8 far. Image 2: g2, g3, points .7 on g2, .6 and .5 far,
    .4 on g3. Ranked: TP FP TP FP FP TP over 3 figures and 2 images."""
    one = case("one", [(0.0, 0.0)], [(0.0, 0.001), (0.5, 0.5)], [0.9, 0.8])
    two = case("two", [(0.0, 0.0), (1.0, 1.0)], [(0.001, 0.0), (0.3, 0.3), (0.7, 0.7), (1.0, 1.002)],
               [0.7, 0.6, 0.5, 0.4])
    return [one, two]


def test_average_precision_hand_computed():
    report = evaluate_detection(hand_cases())
    # precision/recall per threshold: (1, 1/3) (.5, 1/3) (2/3, 2/3) (.5, 2/3) (.4, 2/3) (.5, 1);
    # interpolated precision at the 101 recall levels: 1 for 0..0.33 (34 levels),
    # 2/3 for 0.34..0.66 (33), 1/2 for 0.67..1 (34).
    assert report.overall.average_precision == pytest.approx((34 + 33 * 2 / 3 + 34 * 0.5) / 101)


def test_froc_hand_computed():
    report = evaluate_detection(hand_cases())
    # FP/image after each threshold: 0, .5, .5, 1, 1.5, 1.5; sensitivity 1/3, 1/3, 2/3, 2/3, 2/3, 1
    expected = {"0.125": 1 / 3, "0.25": 1 / 3, "0.5": 2 / 3, "1": 2 / 3, "2": 1.0, "4": 1.0, "8": 1.0}
    assert report.overall.froc_sensitivity == pytest.approx(expected)
    assert report.overall.froc == pytest.approx(5 / 7)


def test_ap_uses_non_mitotic_points_but_f1_does_not():
    c = case("a", [(0.0, 0.0)], [(0.0, 0.0)], [0.2], [False])
    report = evaluate_detection([c])
    assert report.overall.counts == DetectionCounts(0, 0, 1)
    assert report.overall.average_precision == 1.0 and report.overall.froc == 1.0


def test_ranking_metrics_without_figures_or_predictions():
    empty = ranked_curve(np.zeros(0), np.zeros(0, dtype=bool), n_truth=3, n_images=2)
    assert average_precision(empty) == 0.0
    assert froc(empty)[0] == 0.0
    no_truth = ranked_curve(np.array([0.9]), np.array([False]), n_truth=0, n_images=1)
    assert average_precision(no_truth) is None and froc(no_truth) == (None, {})


# --- threshold sweep ---------------------------------------------------------------------------


def test_threshold_sweep_and_best_threshold():
    c = case("a", [(0.0, 0.0)], [(0.0, 0.0), (1.0, 1.0)], [0.9, 0.3], [True, False])
    thresholds = np.array([0.2, 0.5, 0.9, 0.95])
    sweep = threshold_sweep([c], thresholds)
    assert sweep == [DetectionCounts(1, 1, 0), DetectionCounts(1, 0, 0), DetectionCounts(1, 0, 0),
                     DetectionCounts(0, 0, 1)]
    report = evaluate_detection([c], thresholds=thresholds)
    assert report.best == (0.9, 1.0)
    assert report.as_dict()["sweep"]["f1"] == [pytest.approx(2 / 3), 1.0, 1.0, 0.0]


def test_sweep_agrees_with_headline_f1_when_names_follow_the_threshold():
    rng = np.random.default_rng(0)
    cases = []
    for i in range(4):
        truth = rng.uniform(0, 0.2, size=(6, 2))
        points = np.vstack([truth[:4] + rng.normal(0, 0.003, size=(4, 2)), rng.uniform(0, 0.2, size=(5, 2))])
        probs = rng.uniform(0.1, 1.0, size=len(points))
        cases.append(DetectionCase(f"im{i}", truth, points, probs, probs >= 0.5))
    report = evaluate_detection(cases)
    k = int(np.flatnonzero(report.sweep_thresholds == 0.5)[0])
    assert report.sweep[k] == report.overall.counts
