"""training/real_fields.py on small synthetic fields: paint never survives, H fields are
resampled to 0.25 um/px, crop windows near the ignore region are refused, caches are reused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from training import real_fields as rf

YELLOW = (255, 250, 10)


def _write_dataset(root, size_a=200, size_h=(220, 216)):
    """One A field (clean, one mitosis) and one H field (mitosis painted yellow) of slide 03."""
    icpr = root / "icpr2012"
    for sub in ("images/A", "images/H", "csv/A", "csv/H"):
        (icpr / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    a = (rng.random((size_a, size_a, 3)) * 60 + 150).astype(np.uint8)
    Image.fromarray(a).save(icpr / "images/A/A03_01.jpg", quality=95)
    h = (rng.random((size_h[1], size_h[0], 3)) * 60 + 150).astype(np.uint8)
    pixels = [(x, y) for x in range(100, 110) for y in range(50, 58)]
    for x, y in pixels:
        h[y, x] = YELLOW
    Image.fromarray(h).save(icpr / "images/H/H03_01.jpg", quality=95)
    line = ",".join(f"{x},{y}" for x, y in pixels) + "\n"
    (icpr / "csv/H/H03_01.csv").write_text(line)
    (icpr / "csv/A/A03_01.csv").write_text(line)
    mitosis = {"id": 0, "centroid": [104.5, 53.5], "bbox": [100, 50, 109, 57], "n_pixels": len(pixels)}
    fields = [
        {"file": "images/A/A03_01.jpg", "csv": "csv/A/A03_01.csv", "field": "A03_01", "scanner": "A",
         "slide": "A03", "spacing_um": {"x": 0.2456, "y": 0.2456}, "mitoses": [mitosis]},
        {"file": "images/H/H03_01.jpg", "csv": "csv/H/H03_01.csv", "field": "H03_01", "scanner": "H",
         "slide": "H03", "spacing_um": {"x": 0.2273, "y": 0.22753}, "mitoses": [mitosis]},
    ]
    (icpr / "annotations.json").write_text(json.dumps({"fields": fields}))
    return root


def test_fields_slides_and_scanners(tmp_path):
    data = _write_dataset(tmp_path)
    fields = rf.icpr_fields(data)
    assert [(f.name, f.scanner, f.slide) for f in fields] == [("A03_01", "A", "03"), ("H03_01", "H", "03")]
    assert fields[0].mitoses.tolist() == [[104.5, 53.5]]


def test_h_field_is_resampled_masked_and_free_of_paint(tmp_path):
    data = _write_dataset(tmp_path)
    h = rf.icpr_fields(data)[1]
    cache = tmp_path / "cache"
    loaded = rf.load_field(h, cache)
    # 220 x 216 px at 0.2273 / 0.22753 um -> 0.25 um/px
    assert loaded.pixels.shape == (round(216 * 0.22753 / 0.25), round(220 * 0.2273 / 0.25), 3)
    assert loaded.spacing_um == 0.25 and len(loaded.mitoses) == 0  # negatives only
    assert not rf.yellow_loose(loaded.pixels).any()  # the paint never reaches a model
    # the painted figure (native 100-109, 50-57) lies inside the ignore region after resampling
    centre = rf.to_new_pixels([[104.5, 53.5]], (220 / loaded.pixels.shape[1], 216 / loaded.pixels.shape[0]))
    assert rf.in_ignore(loaded.ignore, centre).all()
    assert rf.in_ignore(loaded.ignore, [[5.0, 5.0]]).tolist() == [False]
    # windows touching the region are refused, distant ones are fine
    ok = rf.windows_clear(loaded.ignore, np.array([[centre[0, 0] + 20, centre[0, 1]], [20.0, 170.0]]), 32)
    assert ok.tolist() == [False, True]
    # cached: the second load reads the same arrays
    assert (cache / "icpr2012" / "H03_01.npz").is_file()
    again = rf.load_field(h, cache)
    assert np.array_equal(again.pixels, loaded.pixels) and np.array_equal(again.ignore, loaded.ignore)


def test_a_field_is_kept_at_its_own_spacing(tmp_path):
    data = _write_dataset(tmp_path)
    loaded = rf.load_field(rf.icpr_fields(data)[0], None)
    assert loaded.pixels.shape == (200, 200, 3) and loaded.ignore is None
    assert abs(loaded.radius_px - 7.5 / 0.2456) < 1e-9


def test_ignore_mask_dilates_listed_pixels_and_yellow():
    rgb = np.full((60, 60, 3), 200, np.uint8)
    rgb[40, 40] = YELLOW
    mask = rf.ignore_mask(rgb, [np.array([[10, 10]])], dilation_px=6)
    assert mask[10, 16] and not mask[10, 17]  # 6 px around a listed pixel
    assert mask[46, 40] and not mask[47, 40]  # and around a yellow one
    filled = rf.fill_ignored(rgb, mask)
    assert not rf.yellow_loose(filled).any()


def test_windows_clear_without_mask_and_at_borders():
    assert rf.windows_clear(None, np.zeros((3, 2)), 16).all()
    mask = np.zeros((50, 50), bool)
    mask[0, 0] = True
    assert rf.windows_clear(mask, np.array([[2.0, 2.0], [30.0, 30.0]]), 8).tolist() == [False, True]


def test_reflect_pad_keeps_the_centre():
    crops = np.arange(2 * 50 * 50 * 3, dtype=np.uint32).reshape(2, 50, 50, 3).astype(np.uint8)
    padded = rf.reflect_pad(crops, 72)
    assert padded.shape == (2, 72, 72, 3)
    assert np.array_equal(padded[:, 11:61, 11:61], crops)


def test_csv_pixels_parses_contest_lines(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("1,2,3,4\n\n5,6,\n")
    out = rf.csv_pixels(path)
    assert [o.tolist() for o in out] == [[[1, 2], [3, 4]], [[5, 6]]]


def test_f1_sweep_uses_the_challenge_matcher():
    truth = [np.array([[10.0, 10.0], [100.0, 100.0]])]
    xy = [np.array([[12.0, 10.0], [200.0, 200.0]])]
    s = [np.array([0.9, 0.4])]
    counts = rf.f1_sweep(truth, xy, s, [5.0], np.array([0.0, 0.5, 1.0]))
    assert [(c.tp, c.fp, c.fn) for c in counts] == [(1, 1, 1), (1, 0, 1), (0, 0, 2)]


def test_weights_parity_of_a_set_with_itself_is_exact(tmp_path):
    """training.weights_parity on a small field: the same weights twice decide identically."""
    from conftest import ROOT
    from training.weights_parity import compare

    data = _write_dataset(tmp_path)
    report = compare(ROOT / "weights", ROOT / "weights", data)
    assert report["fields"] == 1
    assert report["against_truth"]["before"] == report["against_truth"]["after"]
    for agreement in report["after_vs_before"].values():
        assert agreement["fp"] == 0 and agreement["fn"] == 0


# --- real-tissue windows for the detector (training/field_windows.py) ---------------------------


def test_field_labels_mark_a_mitoses_and_ignore_h_paint(tmp_path):
    from training import field_windows as fw
    from training import labels as L

    data = _write_dataset(tmp_path)
    a, h = (rf.load_field(f, tmp_path / "cache") for f in rf.icpr_fields(data))
    labels, points = fw.field_labels(a)
    assert labels[54, 104] == L.MITOSIS and points[54, 104] == L.MITOSIS  # centroid (104.5, 53.5), rounded
    assert (labels == L.MITOSIS).sum() > 0 and (labels == L.IGNORE).sum() == 0
    labels, points = fw.field_labels(h)
    assert not (labels == L.MITOSIS).any()  # H: negatives only
    assert np.array_equal(labels == L.IGNORE, h.ignore) and (points[h.ignore] == L.IGNORE).all()


def test_field_windows_hold_mitoses_or_stay_clear_of_the_ignore_region(tmp_path, monkeypatch):
    from training import field_windows as fw
    from training import labels as L

    data = _write_dataset(tmp_path)
    fields = fw.load_fields(data, tmp_path / "cache")
    assert [f.name for f in fields] == ["A03_01", "H03_01"]
    rng = np.random.default_rng(0)
    positive = fw.FieldWindows(fields, 64, positive_fraction=1.0, margin=16).sample(20, rng)
    assert positive["image"].shape == (20, 64, 64, 3) and positive["labels"].shape == (20, 64, 64)
    for lab, pts in zip(positive["labels"], positive["points"]):
        rows, cols = np.nonzero(pts == L.MITOSIS)  # the 3 x 3 centre: at least margin - 1 px inside
        assert len(rows) == 9 and rows.min() >= 15 and rows.max() <= 48 and cols.min() >= 15 and cols.max() <= 48
        assert (lab[rows, cols] == L.MITOSIS).all()  # the figure's region is labelled around its centre
    uniform = fw.FieldWindows(fields, 64, positive_fraction=0.0).sample(200, rng)
    assert not (uniform["labels"] == L.IGNORE).any()  # no H window touches the painted region
    assert (uniform["labels"] == L.MITOSIS).any(axis=(1, 2)).sum() < 200
    with pytest.raises(ValueError, match="smaller than the window"):
        fw.FieldWindows(fields, 256)
    # slides can be held out; label maps are cached and read back
    assert fw.load_fields(data, tmp_path / "cache", exclude_slides=("03",)) == []
    def no_labelling(*_args):
        raise AssertionError("label maps should come from the cache")

    monkeypatch.setattr(fw, "field_labels", no_labelling)
    again = fw.load_fields(data, tmp_path / "cache")
    assert all(np.array_equal(x.labels, y.labels) for x, y in zip(fields, again))


def test_real_windows_join_the_batch_outside_the_domain_loss(tmp_path):
    import torch

    from training import adversarial, augment
    from training import field_windows as fw
    from training import train_detector as td

    fields = fw.load_fields(_write_dataset(tmp_path), tmp_path / "cache")
    windows = fw.FieldWindows(fields, 64, positive_fraction=1.0)
    batch = {"image": torch.zeros(2, 3, 64, 64), "labels": torch.zeros(2, 64, 64, dtype=torch.uint8),
             "points": torch.full((2, 64, 64), 255, dtype=torch.uint8), "domains": torch.ones(2, 64, 64, dtype=torch.uint8)}
    batch["strong"] = batch["image"].clone()
    g = augment.generator(0)
    out = td.with_real_windows(batch, windows, 3, np.random.default_rng(0), g, augment.AugmentConfig(),
                               augment.AugmentConfig.strong())
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "image": (5, 3, 64, 64), "labels": (5, 64, 64), "points": (5, 64, 64), "domains": (5, 64, 64), "strong": (5, 3, 64, 64)}
    assert (out["domains"][:2] == 1).all() and (out["domains"][2:] == adversarial.IGNORE).all()
    assert ((out["labels"][2:] == 2).flatten(1).any(1)).all()  # every real window holds its mitosis
    assert out["image"][2:].abs().sum() > 0 and not torch.equal(out["strong"][2:], out["image"][2:])
