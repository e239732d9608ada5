"""The classical nucleus teacher: Macenko haematoxylin channel -> Gaussian blur -> Otsu -> opening.

It gives the detector's "normal nucleus" pseudo-masks (and the blobs that mitosis labels snap to).
Pure numpy/scipy functions on H x W x 3 uint8 RGB.

Macenko et al., "A method for normalizing histology slides for quantitative analysis", ISBI 2009:
the stain vectors are the extreme angles (robust percentiles) of the tissue's optical densities
projected on the plane of their two main directions. Where a crop has too little tissue for that,
the Ruifrok-Johnston haematoxylin vector is used.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from mitosis_analysis.morphology import disk, otsu_threshold, remove_small_objects

# Ruifrok & Johnston (Anal. Quant. Cytol. Histol. 2001) optical-density vectors, unit length.
RUIFROK_H = np.array([0.65, 0.70, 0.29]) / np.linalg.norm([0.65, 0.70, 0.29])
RUIFROK_E = np.array([0.07, 0.99, 0.11]) / np.linalg.norm([0.07, 0.99, 0.11])


def optical_density(rgb: np.ndarray, background: float = 255.0) -> np.ndarray:
    """-log(I / I0) per channel, float64 H x W x 3 (I clipped to >= 1)."""
    return -np.log(np.maximum(rgb.astype(np.float64), 1.0) / background)


def macenko_stain_vectors(
    rgb: np.ndarray, od_threshold: float = 0.3, percentile: float = 1.0, min_pixels: int = 200
) -> np.ndarray:
    """Rows (H, E) unit optical-density vectors of ``rgb`` (2 x 3); Ruifrok's where tissue is scarce.

    Tissue pixels are those whose total optical density exceeds ``od_threshold`` (rather than
    Macenko's per-channel cut, which drops eosin-only pixels whose red OD is faint)."""
    od = optical_density(rgb).reshape(-1, 3)
    tissue = od[od.sum(axis=1) > od_threshold]
    if len(tissue) < min_pixels:
        return np.stack([RUIFROK_H, RUIFROK_E])
    _, eigvecs = np.linalg.eigh(np.cov(tissue.T))
    plane = eigvecs[:, 1:3]  # the two largest directions
    plane = plane * np.sign(plane.sum(axis=0, keepdims=True) + 1e-12)  # point into positive OD
    projected = tissue @ plane
    angle = np.arctan2(projected[:, 1], projected[:, 0])
    lo, hi = np.percentile(angle, [percentile, 100.0 - percentile])
    v1 = plane @ np.array([np.cos(lo), np.sin(lo)])
    v2 = plane @ np.array([np.cos(hi), np.sin(hi)])
    # Haematoxylin is the bluer vector: larger red-channel optical density than eosin.
    h, e = (v1, v2) if v1[0] > v2[0] else (v2, v1)
    vectors = np.stack([h, e])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    if not np.all(np.isfinite(vectors)) or np.any(vectors.sum(axis=1) <= 0):
        return np.stack([RUIFROK_H, RUIFROK_E])
    return vectors


def haematoxylin(rgb: np.ndarray, **macenko) -> np.ndarray:
    """Haematoxylin concentration (optical density units), float32 H x W, clipped at 0."""
    vectors = macenko_stain_vectors(rgb, **macenko)
    od = optical_density(rgb).reshape(-1, 3)
    concentrations, *_ = np.linalg.lstsq(vectors.T, od.T, rcond=None)
    return np.clip(concentrations[0], 0.0, None).reshape(rgb.shape[:2]).astype(np.float32)


def nucleus_mask(
    rgb: np.ndarray,
    blur_sigma: float = 1.0,
    opening_radius: float = 2.0,
    min_area: int = 30,
    min_contrast: float = 0.05,
) -> np.ndarray:
    """Boolean H x W mask of nuclei: H channel, blur, Otsu, opening, holes filled, small blobs dropped.

    A crop whose haematoxylin hardly varies (spread below ``min_contrast`` OD) has no nuclei.
    """
    h = ndi.gaussian_filter(haematoxylin(rgb), blur_sigma)
    if float(np.percentile(h, 99) - np.percentile(h, 1)) < min_contrast:
        return np.zeros(h.shape, dtype=bool)
    mask = h > otsu_threshold(h)
    mask = ndi.binary_opening(mask, structure=disk(opening_radius))
    mask = ndi.binary_fill_holes(mask)
    return remove_small_objects(mask, min_area)
