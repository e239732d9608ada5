"""Reinhard colour normalisation: an image's tissue colour statistics matched to a reference.

Reinhard et al., "Color transfer between images", IEEE CG&A 2001: in Ruderman's l-alpha-beta
space (log cone responses, decorrelated for natural images) each channel of the tissue pixels is
shifted and scaled to the reference's mean and standard deviation. Here the scale is limited to
``GAIN_LIMITS`` so that a nearly uniform field (a faint eosin wash, say) is not stretched into
noise. Statistics are taken on the product's tissue test (``tissue.tissue_mask``), every
``step``-th pixel. Pure numpy; images are H x W x 3 uint8 RGB.

Not applied by the product: measured at inference on the ICPR 2012 fields (``verifier_heldout
--stain``), it lifts the detector alone but not the two stages (training/README.md, issue #10).
The reference is the detector's own training data (``amibr_reference``).

Written here rather than taken from a library: torchstain's Reinhard needs OpenCV (not in this
project's environments) and has no gain limit; TIAToolbox's would bring a large dependency for
thirty lines of numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mitosis_analysis.tissue import tissue_mask

_RGB_TO_LMS = np.array([[0.3811, 0.5783, 0.0402], [0.1967, 0.7244, 0.0782], [0.0241, 0.1288, 0.8444]])
_LOG_LMS_TO_LAB = np.diag([1 / np.sqrt(3), 1 / np.sqrt(6), 1 / np.sqrt(2)]) @ np.array(
    [[1.0, 1.0, 1.0], [1.0, 1.0, -2.0], [1.0, -1.0, 0.0]])
_LAB_TO_LOG_LMS = np.linalg.inv(_LOG_LMS_TO_LAB)
_LMS_TO_RGB = np.linalg.inv(_RGB_TO_LMS)

GAIN_LIMITS = (0.67, 1.5)


@dataclass(frozen=True)
class LabStatistics:
    """Mean and standard deviation of l, alpha, beta over tissue pixels."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> (..., 3) float64 l-alpha-beta (RGB values below 1 count as 1)."""
    x = np.maximum(np.asarray(rgb, dtype=np.float64), 1.0) / 255.0
    return np.log10(x @ _RGB_TO_LMS.T) @ _LOG_LMS_TO_LAB.T


def from_lab(lab: np.ndarray) -> np.ndarray:
    """Inverse of ``to_lab``, rounded and clipped to uint8."""
    rgb = 255.0 * (10.0 ** (lab @ _LAB_TO_LOG_LMS.T)) @ _LMS_TO_RGB.T
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def lab_statistics(rgb: np.ndarray, step: int = 4) -> LabStatistics | None:
    """Statistics of the tissue pixels of ``rgb`` (every ``step``-th row and column); None when
    there is no tissue to measure (blank glass: nothing to normalise)."""
    sample = rgb[::step, ::step].reshape(-1, 3)
    tissue = sample[tissue_mask(sample[None])[0]]
    if len(tissue) < 2:
        return None
    lab = to_lab(tissue)
    return LabStatistics(tuple(map(float, lab.mean(axis=0))), tuple(map(float, lab.std(axis=0))))


def reinhard(rgb: np.ndarray, source: LabStatistics, reference: LabStatistics, rows: int = 256) -> np.ndarray:
    """``rgb`` with ``source`` statistics moved onto ``reference``'s (scale per channel limited to
    ``GAIN_LIMITS``), processed ``rows`` rows at a time so that the float working copy stays small."""
    gain = np.clip(np.divide(reference.std, np.maximum(source.std, 1e-6)), *GAIN_LIMITS)
    shift = np.asarray(reference.mean) - np.asarray(source.mean) * gain
    out = np.empty_like(rgb)
    for y in range(0, rgb.shape[0], rows):
        out[y : y + rows] = from_lab(to_lab(rgb[y : y + rows]) * gain + shift)
    return out


def normalise(rgb: np.ndarray, reference: LabStatistics | None) -> np.ndarray:
    """``rgb`` with its own tissue statistics moved onto ``reference``'s; unchanged without tissue
    or without a reference (normalisation off)."""
    if reference is None:
        return rgb
    source = lab_statistics(rgb)
    return rgb if source is None else reinhard(rgb, source, reference)


def normalise_groups(images: np.ndarray, groups, reference: LabStatistics) -> np.ndarray:
    """Crops (N x h x w x 3) normalised group by group (e.g. by slide), each group on the
    statistics of all its crops together, as an ROI is normalised on its own."""
    groups = np.asarray([str(g) for g in groups])
    out = images.copy()
    for g in np.unique(groups):
        k = np.flatnonzero(groups == g)
        source = lab_statistics(images[k].reshape(1, -1, 3), step=1)
        if source is not None:
            out[k] = reinhard(images[k].reshape(-1, images.shape[2], 3), source, reference).reshape(images[k].shape)
    return out


def amibr_reference(data_dir, n: int = 400, seed: int = 0) -> LabStatistics:
    """Tissue statistics of ``n`` crops drawn (seeded) from AMi-Br's published training split, the
    detector's training data, pooled."""
    from training import data as amibr

    train, _ = amibr.published_split(data_dir)
    pick = np.random.default_rng(seed).choice(len(train), min(n, len(train)), replace=False)
    crops = amibr.load_crops([train[i] for i in sorted(pick)])
    return lab_statistics(crops.reshape(1, -1, 3), step=1)
