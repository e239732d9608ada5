import numpy as np
import pytest

from mitosis_analysis.candidates import Candidate, find_candidates, suppress_duplicates
from mitosis_analysis.classify import classify_crops, extract_crops, tta_views


BACKGROUND = -10.0  # logit of plain tissue


def blob(shape, cx, cy, r, value=5.0, background=BACKGROUND):
    """A disk of constant logit ``value`` (a plateau of maxima) on a flat background."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return np.where((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r, value, background).astype(np.float32)


def cone(shape, cx, cy, peak, slope=1.0):
    """A single sharp maximum ``peak`` at (cx, cy), falling linearly with distance."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (peak - slope * np.hypot(xx - cx, yy - cy)).astype(np.float32)


def test_plateaus_give_one_candidate_at_their_centre_with_exact_score_and_area():
    z = np.maximum(blob((100, 120), 30, 40, 5, 4.0), blob((100, 120), 90.5, 70.5, 3, 1.5))
    cands = sorted(find_candidates(z, floor=0.0), key=lambda c: c.x)
    assert len(cands) == 2
    assert (cands[0].x, cands[0].y, cands[0].score) == pytest.approx((30, 40, 4.0))
    assert (cands[1].x, cands[1].y, cands[1].score) == pytest.approx((90.5, 70.5, 1.5))
    assert cands[0].area == np.count_nonzero(blob((100, 120), 30, 40, 5) > 0)


def test_two_maxima_in_one_region_are_two_candidates():
    # one region above the floor (the cones overlap), two peaks 40 px (10 um) apart
    z = np.maximum(cone((80, 160), 50, 40, 6.0, 0.2), cone((80, 160), 90, 40, 5.0, 0.2))
    cands = sorted(find_candidates(z, floor=0.0, centroid_radius=3.0), key=lambda c: c.x)
    assert len(cands) == 2 and cands[0].area == cands[1].area  # same region
    assert (cands[0].x, cands[0].y, cands[0].score) == pytest.approx((50, 40, 6.0), abs=1e-6)
    assert (cands[1].x, cands[1].y, cands[1].score) == pytest.approx((90, 40, 5.0), abs=1e-6)


def test_centroid_is_probability_weighted_within_the_radius():
    z = np.full((10, 12), BACKGROUND, np.float32)
    z[5, 2], z[5, 3] = 3.0, 1.0  # one region; peak at x=2
    z[5, 9] = 2.0  # another region, beyond the centroid radius of the first peak
    w2, w3 = 1 / (1 + np.exp(-3.0)), 1 / (1 + np.exp(-1.0))
    cands = sorted(find_candidates(z, floor=0.5, centroid_radius=2.0), key=lambda c: c.x)
    assert len(cands) == 2
    assert cands[0].x == pytest.approx((2 * w2 + 3 * w3) / (w2 + w3)) and cands[0].y == 5 and cands[0].area == 2
    assert (cands[1].x, cands[1].y, cands[1].score) == (9.0, 5.0, 2.0)


def test_floor_filters_and_an_empty_map_has_no_candidates():
    z = np.maximum(blob((50, 50), 10, 10, 4, 3.0), blob((50, 50), 40, 40, 1, 1.0))
    assert len(find_candidates(z, floor=3.5)) == 0
    assert len(find_candidates(z, floor=2.0)) == 1
    assert len(find_candidates(z, floor=0.5)) == 2
    assert find_candidates(np.full((8, 8), BACKGROUND, np.float32), 0.0) == []


def test_suppression_keeps_best_within_radius_only():
    a = Candidate(0, 0, 0.9, 10)
    b = Candidate(29.9, 0, 0.95, 10)  # closer than 30 to a: a goes
    c = Candidate(60, 0, 0.5, 10)  # 30.1 from b: stays
    d = Candidate(200, 200, 0.1, 10)
    kept = suppress_duplicates([a, b, c, d], radius=30.0)
    assert kept == [b, c, d]


def test_suppression_radius_is_strict_and_order_free():
    a, b = Candidate(0, 0, 0.8, 1), Candidate(30, 0, 0.7, 1)  # exactly on the radius: distinct
    assert len(suppress_duplicates([a, b], 30.0)) == 2
    cands = [Candidate(float(i), 0.0, 0.5 + i / 100, 1) for i in range(10)]
    assert suppress_duplicates(cands, 5.0) == suppress_duplicates(cands[::-1], 5.0)


def test_chain_suppression_is_greedy_not_transitive():
    # b suppresses a and c; a and c are 2r apart, but c is gone because b (the best) covers it
    a, b, c = Candidate(0, 0, 0.5, 1), Candidate(8, 0, 0.9, 1), Candidate(16, 0, 0.4, 1)
    assert suppress_duplicates([a, b, c], 10.0) == [b]
    # a chain where the best is at the end: the middle one goes, the far one stays
    a, b, c = Candidate(0, 0, 0.9, 1), Candidate(8, 0, 0.5, 1), Candidate(16, 0, 0.4, 1)
    assert suppress_duplicates([a, b, c], 10.0) == [a, c]


def test_extract_crops_centred_and_reflected_at_borders():
    img = np.arange(200 * 300, dtype=np.int64).reshape(200, 300)
    img3 = np.stack([img % 251, img % 241, img % 239], -1).astype(np.uint8)
    crops = extract_crops(img3, np.array([[150.0, 100.0], [0.0, 0.0]]), 128)
    np.testing.assert_array_equal(crops[0], img3[36:164, 86:214])
    assert crops[1].shape == (128, 128, 3)
    np.testing.assert_array_equal(crops[1][64:, 64:], img3[:64, :64])  # the in-image quadrant


def test_tta_views_are_the_dihedral_group():
    x = np.random.default_rng(1).integers(0, 255, (2, 8, 8, 3), dtype=np.uint8)
    views = tta_views(x, 8)
    assert len({v.tobytes() for v in views}) == 8
    # an orientation-blind classifier gives the same answer with or without TTA
    mean_cls = lambda c: c.reshape(len(c), -1).mean(1) / 255
    np.testing.assert_allclose(classify_crops(mean_cls, x, 1, 8), classify_crops(mean_cls, x, 4, 1), rtol=1e-6)
