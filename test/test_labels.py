"""Detector labels (training/labels.py) and the classical nucleus teacher (training/teacher.py)."""

from __future__ import annotations

import json

import numpy as np

from conftest import SHARED_DATA, needs_amibr
from training import labels as L
from training import teacher as T


# Haematoxylin and eosin optical-density vectors used to synthesise stained images.
H_TRUE = np.array([0.62, 0.74, 0.26]) / np.linalg.norm([0.62, 0.74, 0.26])
E_TRUE = np.array([0.10, 0.95, 0.30]) / np.linalg.norm([0.10, 0.95, 0.30])


def synthetic_he(size: int = 128, nuclei=((40, 40, 9), (90, 70, 11), (30, 100, 7)), seed: int = 0):
    """Beer-Lambert H&E image: eosin everywhere, haematoxylin disks (x, y, r). Returns (rgb, mask)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    h = np.zeros((size, size))
    for x, y, r in nuclei:
        h[(xx - x) ** 2 + (yy - y) ** 2 <= r**2] = 0.9
    e = np.where(h > 0, 0.0, 0.25 + 0.05 * rng.random((size, size)))  # pure stains: Macenko's premise
    od = h[..., None] * H_TRUE + e[..., None] * E_TRUE + 0.01 * rng.random((size, size, 3))
    rgb = np.clip(255 * np.exp(-od), 0, 255).astype(np.uint8)
    return rgb, h > 0


def test_macenko_finds_the_haematoxylin_vector():
    rgb, _ = synthetic_he()
    h, e = T.macenko_stain_vectors(rgb)
    assert np.degrees(np.arccos(np.clip(h @ H_TRUE, -1, 1))) < 8
    assert h @ H_TRUE > e @ H_TRUE


def test_haematoxylin_is_high_in_nuclei_only():
    rgb, truth = synthetic_he()
    h = T.haematoxylin(rgb)
    assert h[truth].mean() > 4 * h[~truth].mean()


def test_nucleus_mask_recovers_synthetic_nuclei():
    rgb, truth = synthetic_he()
    mask = T.nucleus_mask(rgb)
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.8


def test_nucleus_mask_of_blank_glass_is_empty():
    assert not T.nucleus_mask(np.full((64, 64, 3), 240, np.uint8)).any()


def test_opening_removes_specks():
    rgb, _ = synthetic_he(nuclei=((40, 40, 10), (100, 100, 1)))
    mask = T.nucleus_mask(rgb)
    assert mask[40, 40] and not mask[95:106, 95:106].any()


def test_points_in_crop_uses_the_centre_convention():
    pts = np.array([[1000, 2000], [1000 - 64, 2000 - 64], [1000 + 64, 2000], [1000 + 63, 2000 + 63]])
    local = L.points_in_crop(pts, centre=(1000, 2000), size=128)
    np.testing.assert_array_equal(local, [[64, 64], [0, 0], [127, 127]])


def test_mitosis_takes_its_blob_clipped_to_a_disk():
    nuclei = np.zeros((128, 128), bool)
    nuclei[50:70, 50:70] = True  # a nucleus around the centre
    nuclei[0:128, 0:6] = True  # a long blob far away stays normal
    labels, points = L.label_map(nuclei, np.array([[60.0, 60.0]]), np.zeros((0, 2)))
    assert (labels[50:70, 50:70] == L.MITOSIS).all()
    assert (labels[:, 0:6] == L.NORMAL).all()
    assert labels[80, 80] == L.BACKGROUND
    assert points[60, 60] == L.MITOSIS and (points != L.IGNORE).sum() == 9


def test_big_blob_is_cut_to_the_blob_radius():
    nuclei = np.ones((128, 128), bool)  # teacher merged everything into one blob
    labels, _ = L.label_map(nuclei, np.array([[64.0, 64.0]]), np.zeros((0, 2)))
    radius_px = L.BLOB_MAX_RADIUS_UM / L.SPACING_UM
    area = (labels == L.MITOSIS).sum()
    assert abs(area - np.pi * radius_px**2) < 0.05 * np.pi * radius_px**2
    assert labels[0, 0] == L.NORMAL


def test_mitosis_without_blob_is_a_3um_disk():
    labels, _ = L.label_map(np.zeros((128, 128), bool), np.array([[64.0, 64.0]]), np.zeros((0, 2)))
    radius_px = L.DISK_RADIUS_UM / L.SPACING_UM
    assert abs((labels == L.MITOSIS).sum() - np.pi * radius_px**2) < 0.1 * np.pi * radius_px**2
    assert labels[64, 64 + int(radius_px) + 2] == L.BACKGROUND


def test_hard_negatives_are_labelled_unless_on_a_mitosis():
    mitoses = np.array([[64.0, 64.0]])
    hard = np.array([[20.0, 20.0], [70.0, 64.0]])  # the second is within 7.5 um of the mitosis
    labels, points = L.label_map(np.zeros((128, 128), bool), mitoses, hard)
    assert labels[20, 20] == L.HARD_NEGATIVE and points[20, 20] == L.HARD_NEGATIVE
    assert labels[64, 70] == L.MITOSIS


def test_dedupe_merges_double_annotations():
    pts = np.array([[10.0, 10.0], [12.0, 11.0], [60.0, 60.0]])
    np.testing.assert_array_equal(L.dedupe(pts, radius_px=15), [[10, 10], [60, 60]])


def test_midogpp_points_and_slide_annotations(tmp_path):
    coco = {
        "images": [{"id": 1, "file_name": "001.tiff"}],
        "categories": [{"id": 1, "name": "mitotic figure"}, {"id": 2, "name": "not mitotic figure"}],
        "annotations": [
            {"bbox": [100, 200, 150, 250], "category_id": 1, "image_id": 1},
            {"bbox": [300, 300, 350, 350], "category_id": 2, "image_id": 1},
        ],
    }
    path = tmp_path / "m.json"
    path.write_text(json.dumps(coco))
    mpp = L.midogpp_points(path)
    np.testing.assert_array_equal(mpp["001.tiff"].mitoses, [[125, 225]])
    np.testing.assert_array_equal(mpp["001.tiff"].hard_negatives, [[325, 325]])

    class C:  # the fields of training.data.Crop that labels use
        def __init__(self, dataset, slide, x, y):
            self.dataset, self.slide, self.x, self.y = dataset, slide, x, y
            self.slide_key = (dataset, slide)

    ann = L.slide_annotations([C("MIDOG21", "001.tiff", 10, 10), C("TUPAC16", "001.tiff", 5, 5)], mpp)
    assert len(ann[("MIDOG21", "001.tiff")].mitoses) == 2 and len(ann[("MIDOG21", "001.tiff")].hard_negatives) == 1
    assert len(ann[("TUPAC16", "001.tiff")].mitoses) == 1 and len(ann[("TUPAC16", "001.tiff")].hard_negatives) == 0


@needs_amibr
def test_real_crops_get_a_mitosis_at_the_centre_and_some_nuclei():
    from training import data

    table = data.load_table(SHARED_DATA / "ami-br")
    ann = L.slide_annotations(table, L.midogpp_points(SHARED_DATA / L.MIDOGPP_FILE))
    for crop in table[::900]:
        rgb = data.load_crop(crop.path)
        cl = L.crop_labels(rgb, crop, ann)
        assert cl.labels[64, 64] == L.MITOSIS and cl.points[64, 64] == L.MITOSIS
        share = np.bincount(cl.labels.ravel(), minlength=4) / cl.labels.size
        assert 0.005 < share[L.MITOSIS] < 0.2
        assert share[L.NORMAL] < 0.6
