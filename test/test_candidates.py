import numpy as np
import pytest

from mitosis_analysis.candidates import Candidate, find_candidates, suppress_duplicates
from mitosis_analysis.classify import classify_crops, extract_crops, tta_views


def blob(shape, cx, cy, r, value=0.9):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return np.where((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r, value, 0.0).astype(np.float32)


def test_centroids_scores_and_areas_are_exact():
    p = blob((100, 120), 30, 40, 5, 0.9) + blob((100, 120), 90.5, 70.5, 3, 0.6)
    cands = sorted(find_candidates(p, floor=0.5), key=lambda c: c.x)
    assert len(cands) == 2
    assert (cands[0].x, cands[0].y, cands[0].score) == pytest.approx((30, 40, 0.9))
    assert (cands[1].x, cands[1].y, cands[1].score) == pytest.approx((90.5, 70.5, 0.6))
    assert cands[0].area == np.count_nonzero(blob((100, 120), 30, 40, 5))


def test_centroid_is_probability_weighted():
    p = np.zeros((10, 10), np.float32)
    p[5, 2], p[5, 3] = 0.9, 0.3
    (c,) = find_candidates(p, floor=0.2)
    assert c.x == pytest.approx((2 * 0.9 + 3 * 0.3) / 1.2) and c.y == 5 and c.area == 2


def test_floor_and_min_area_filter():
    p = blob((50, 50), 10, 10, 4, 0.9) + blob((50, 50), 40, 40, 1, 0.9)
    assert len(find_candidates(p, floor=0.95)) == 0
    assert len(find_candidates(p, floor=0.5, min_area=10)) == 1
    assert find_candidates(np.zeros((8, 8), np.float32), 0.1) == []


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
