"""Reinhard colour normalisation (training/stain.py) on synthetic H&E-like images."""

from __future__ import annotations

import numpy as np
import pytest

from training import stain


def he_like(rng: np.random.Generator, tint: tuple[float, float, float], size: int = 96) -> np.ndarray:
    """Pink background with purple nuclei and a strip of white glass, scaled by ``tint`` per channel."""
    rgb = np.empty((size, size, 3))
    rgb[:] = (230, 150, 190)
    yy, xx = np.mgrid[:size, :size]
    for y, x in rng.integers(8, size - 8, (12, 2)):
        rgb[(yy - y) ** 2 + (xx - x) ** 2 <= 25] = (90, 60, 150)
    rgb = rgb * np.asarray(tint) + rng.normal(0, 6, rgb.shape)
    rgb[:, :10] = 245  # glass: left out of the statistics
    return np.clip(rgb, 0, 255).astype(np.uint8)


def test_lab_round_trip_is_exact_to_one_grey_level():
    rgb = np.random.default_rng(0).integers(1, 256, (40, 40, 3)).astype(np.uint8)
    assert np.abs(stain.from_lab(stain.to_lab(rgb)).astype(int) - rgb).max() <= 1


def test_reinhard_moves_tissue_statistics_onto_the_reference():
    rng = np.random.default_rng(1)
    reference = stain.lab_statistics(he_like(rng, (1.0, 1.0, 1.0)), step=1)
    shifted = he_like(rng, (1.08, 0.8, 0.9))  # redder, less green: another scanner's look
    source = stain.lab_statistics(shifted, step=1)
    assert np.abs(np.subtract(source.mean, reference.mean)).max() > 0.05
    out = stain.reinhard(shifted, source, reference, rows=7)  # rows: chunking must not matter
    np.testing.assert_array_equal(out, stain.reinhard(shifted, source, reference))
    tissue = stain.tissue_mask(shifted)  # the pixels the statistics were taken on
    after = stain.to_lab(out[tissue])
    np.testing.assert_allclose(after.mean(axis=0), reference.mean, atol=0.005)
    np.testing.assert_allclose(after.std(axis=0), reference.std, rtol=0.05)
    assert out.dtype == np.uint8 and out.shape == shifted.shape


def test_reinhard_identity_and_limited_gain():
    rng = np.random.default_rng(2)
    rgb = he_like(rng, (1.0, 1.0, 1.0))
    s = stain.lab_statistics(rgb, step=1)
    assert np.abs(stain.reinhard(rgb, s, s).astype(int) - rgb).max() <= 1
    flat = stain.LabStatistics(s.mean, tuple(v / 100 for v in s.std))  # a nearly uniform field
    out = stain.lab_statistics(stain.reinhard(rgb, s, flat), step=1)
    assert np.all(np.asarray(out.std) >= np.asarray(s.std) * stain.GAIN_LIMITS[0] * 0.9)


def test_no_tissue_no_statistics():
    assert stain.lab_statistics(np.full((64, 64, 3), 245, np.uint8)) is None


@pytest.mark.parametrize("step", [1, 4])
def test_statistics_ignore_glass(step):
    rng = np.random.default_rng(3)
    rgb = he_like(rng, (1.0, 1.0, 1.0))
    with_glass = np.concatenate([rgb, np.full((96, 200, 3), 245, np.uint8)], axis=1)
    a, b = stain.lab_statistics(rgb, step), stain.lab_statistics(with_glass, step)
    np.testing.assert_allclose(a.mean, b.mean, atol=0.01)


def test_groups_are_normalised_each_on_its_own_statistics():
    rng = np.random.default_rng(4)
    reference = stain.lab_statistics(he_like(rng, (1.0, 1.0, 1.0)), step=1)
    red = np.stack([he_like(rng, (1.1, 0.8, 0.9), 48) for _ in range(3)])
    blue = np.stack([he_like(rng, (0.85, 0.9, 1.1), 48) for _ in range(2)])
    crops = np.concatenate([red, blue])
    out = stain.normalise_groups(crops, ["r", "r", "r", "b", "b"], reference)
    assert out.shape == crops.shape and out.dtype == np.uint8
    for k in (slice(0, 3), slice(3, 5)):
        pixels = out[k].reshape(-1, 3)[stain.tissue_mask(crops[k].reshape(1, -1, 3))[0]]
        np.testing.assert_allclose(stain.to_lab(pixels).mean(axis=0), reference.mean, atol=0.01)
    # a group of one crop is normalised on that crop's own statistics
    np.testing.assert_array_equal(stain.normalise_groups(crops[:1], ["r"], reference)[0],
                                  stain.reinhard(crops[0], stain.lab_statistics(crops[:1].reshape(1, -1, 3), step=1), reference))


def test_no_reference_means_no_normalisation():
    rgb = he_like(np.random.default_rng(5), (1.0, 1.0, 1.0))
    assert stain.normalise(rgb, None) is rgb
