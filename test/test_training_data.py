"""AMi-Br loading and splits (training/data.py) and the augmentations (training/augment.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training import augment as aug
from training import data as amibr

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ami-br"
needs_data = pytest.mark.skipif(not (DATA / amibr.TABLE_FILE).is_file(), reason=f"AMi-Br not found at {DATA}")


# --- table and splits on the real data ----------------------------------------------------------


@pytest.fixture(scope="module")
def table() -> list[amibr.Crop]:
    return amibr.load_table(DATA)


@needs_data
def test_table_matches_published_counts(table):
    assert len(table) == 3720
    assert sum(c.atypical for c in table) == 832
    assert all(c.path.is_file() for c in table[:: 97])
    # the hardness flag follows the votes
    assert all(c.hard == (0 < sum(c.votes) < 3) for c in table)


@needs_data
def test_published_split_counts_and_disjoint(table):
    train, test = amibr.published_split(DATA, table)
    assert (len(train), len(test)) == (amibr.N_TRAIN, amibr.N_TEST) == (2894, 826)
    keys = lambda crops: {(c.dataset, c.uid) for c in crops}  # noqa: E731
    assert not keys(train) & keys(test)
    assert keys(train) | keys(test) == keys(table)
    # the published split is patient-level: no slide on both sides
    assert not {c.slide_key for c in train} & {c.slide_key for c in test}


@needs_data
def test_validation_is_split_by_slide(table):
    train, _ = amibr.published_split(DATA, table)
    fit, val = amibr.split_by_slide(train, val_fraction=0.15, seed=0)
    assert len(fit) + len(val) == len(train)
    assert not {c.slide_key for c in fit} & {c.slide_key for c in val}
    assert 0.15 * len(train) <= len(val) <= 0.25 * len(train)
    assert sum(c.atypical for c in val) >= 0.15 * sum(c.atypical for c in train)
    # seeded: same seed same split, another seed another split
    assert [c.uid for c in amibr.split_by_slide(train, 0.15, seed=0)[1]] == [c.uid for c in val]
    assert {c.slide_key for c in amibr.split_by_slide(train, 0.15, seed=1)[1]} != {c.slide_key for c in val}


@needs_data
def test_load_crops_shape(table):
    images = amibr.load_crops(table[:3])
    assert images.shape == (3, 128, 128, 3) and images.dtype == np.uint8
    assert images.std() > 5  # real histology, not a blank


def _crop(dataset: str, slide: str, uid: int, atypical: bool) -> amibr.Crop:
    votes = (atypical, atypical, False) if uid % 3 == 0 else (atypical,) * 3
    return amibr.Crop(dataset, uid, slide, 0, 0, votes, atypical, Path(f"{uid}.jpg"))  # type: ignore[arg-type]


def test_split_by_slide_groups_by_dataset_and_slide():
    # the same slide name in two datasets is two slides
    crops = [_crop(ds, f"s{i % 10}", k, k % 4 == 0) for k, (ds, i) in
             enumerate((ds, i) for ds in ("A", "B") for i in range(60))]
    fit, val = amibr.split_by_slide(crops, 0.2, seed=3)
    assert val and fit
    assert not {c.slide_key for c in fit} & {c.slide_key for c in val}
    with pytest.raises(ValueError):
        amibr.split_by_slide(crops, 1.5)


def test_missing_table_is_a_clear_error(tmp_path):
    with pytest.raises(amibr.DataError, match="not found"):
        amibr.load_table(tmp_path)


def test_inconsistent_majority_is_rejected(tmp_path):
    header = ",slide,dataset,uid,x,y,expert1_label,expert2_label,expert1_atypical,expert2_atypical,expert3_atypical,majority_atypical\n"
    (tmp_path / amibr.TABLE_FILE).write_text(header + "0,a.tiff,MIDOG21,1,5,5,x,y,True,True,False,False\n")
    with pytest.raises(amibr.DataError, match="majority"):
        amibr.load_table(tmp_path, check_files=False)


# --- augmentations ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A real crop when the data are there, else a synthetic H&E-like image."""
    if (DATA / amibr.TABLE_FILE).is_file():
        return amibr.load_crop(amibr.load_table(DATA, check_files=False)[0].path)
    rng = np.random.default_rng(0)
    base = np.array([200, 140, 200], np.float64) * rng.uniform(0.5, 1.0, (128, 128, 1))
    return np.clip(base + rng.normal(0, 10, (128, 128, 3)), 0, 255).astype(np.uint8)


RANDOM_OPS = [
    lambda im, rng: aug.augment(im, rng=rng),
    lambda im, rng: aug.augment(im, aug.AugmentConfig.strong(), rng=rng),
    lambda im, rng: aug.random_hed_jitter(im, rng=rng),
    lambda im, rng: aug.random_brightness_contrast(im, rng=rng),
    lambda im, rng: aug.random_blur_or_sharpen(im, p=0.5, rng=rng),
    lambda im, rng: aug.random_dihedral(im, rng=rng)[0],
]


@pytest.mark.parametrize("op", RANDOM_OPS)
@pytest.mark.parametrize("as_float", [False, True])
def test_augment_keeps_shape_dtype_range_and_is_seeded(image, op, as_float):
    im = image.astype(np.float32) / 255.0 if as_float else image
    for seed in range(4):
        out = op(im, seed)
        assert out.shape == im.shape and out.dtype == im.dtype
        assert out.min() >= 0 and out.max() <= (1.0 if as_float else 255)
        np.testing.assert_array_equal(out, op(im, seed))  # same seed, same result
    assert np.isfinite(out).all()


def test_augment_changes_the_image(image):
    outs = [aug.augment_photometric(image, aug.AugmentConfig.strong(), rng=s) for s in range(5)]
    assert all(np.abs(o.astype(int) - image).mean() > 1 for o in outs)


def test_hed_round_trip_and_identity_jitter(image):
    x = image.astype(np.float32) / 255.0
    np.testing.assert_allclose(aug.hed_to_rgb(aug.rgb_to_hed(image)), np.maximum(x, 1 / 255), atol=1e-4)
    same = aug.hed_jitter(image, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    assert np.abs(same.astype(int) - image).max() <= 1


def test_hed_jitter_on_haematoxylin_darkens_nuclei_channel(image):
    more_h = aug.hed_jitter(image, (1.3, 1.0, 1.0), (0.0, 0.0, 0.0))
    assert aug.rgb_to_hed(more_h)[..., 0].mean() > aug.rgb_to_hed(image)[..., 0].mean()
    assert more_h.astype(float).mean() < image.astype(float).mean()


def test_dihedral_moves_masks_with_the_image(image):
    mask = (image[..., 0] > 128).astype(np.uint8)
    heat = image[..., 1].astype(np.float32)
    for seed in range(8):
        im, m, h = aug.random_dihedral(image, mask, heat, rng=seed)
        np.testing.assert_array_equal(m, (im[..., 0] > 128).astype(np.uint8))
        np.testing.assert_array_equal(h, im[..., 1].astype(np.float32))
    # the 8 symmetries are distinct on a generic image, and k=0/no flip is the identity
    views = {aug.dihedral(image, k, f).tobytes() for k in range(4) for f in (False, True)}
    assert len(views) == 8
    np.testing.assert_array_equal(aug.dihedral(image, 0, False), image)


def test_focus_and_contrast_ops(image):
    assert aug.gaussian_blur(image, 1.5).astype(float).std() < image.astype(float).std()
    assert aug.sharpen(image, 1.0).astype(float).std() > image.astype(float).std()
    np.testing.assert_array_equal(aug.sharpen(image, 0.0), image)
    np.testing.assert_array_equal(aug.brightness_contrast(image, 0.0, 1.0), image)


def test_bad_images_are_rejected():
    with pytest.raises(ValueError, match="H x W x 3"):
        aug.augment(np.zeros((8, 8), np.uint8), rng=0)
    with pytest.raises(ValueError, match="uint8 or floating"):
        aug.augment(np.zeros((8, 8, 3), np.int32), rng=0)
