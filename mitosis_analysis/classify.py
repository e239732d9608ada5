"""Atypical vs normal: crops around candidates and their classification, with flip TTA."""

from __future__ import annotations

from typing import Callable

import numpy as np

Classifier = Callable[[np.ndarray], np.ndarray]  # N x S x S x 3 uint8 -> N P(atypical)


def extract_crops(image: np.ndarray, centres_xy: np.ndarray, size: int) -> np.ndarray:
    """``size`` x ``size`` crops centred on each (x, y) (rounded to the nearest pixel); parts that
    fall outside the image are filled by reflection about the border pixel (by repeating it when
    the image is not larger than a crop), as ``np.pad`` of the whole image would fill them; only
    the crops that reach past the border are indexed that way. Returns N x size x size x C uint8."""
    n = len(centres_xy)
    out = np.empty((n, size, size, image.shape[2]), image.dtype)
    h, w = image.shape[:2]
    mirror = min(h, w) > size
    half = size // 2
    for i, (x, y) in enumerate(np.asarray(centres_xy, dtype=np.float64).reshape(-1, 2)):
        r0, c0 = int(np.floor(y + 0.5)) - half, int(np.floor(x + 0.5)) - half
        if 0 <= r0 and r0 + size <= h and 0 <= c0 and c0 + size <= w:
            out[i] = image[r0 : r0 + size, c0 : c0 + size]
        else:
            out[i] = image[np.ix_(_inside(r0, size, h, mirror), _inside(c0, size, w, mirror))]
    return out


def _inside(start: int, size: int, n: int, mirror: bool) -> np.ndarray:
    """Indices start .. start + size - 1 folded into [0, n): mirrored about the border pixels
    (``np.pad``'s "reflect", for overshoots shorter than the axis) or clamped ("edge")."""
    i = np.arange(start, start + size)
    if not mirror:
        return np.clip(i, 0, n - 1)
    i = np.abs(i)
    return np.where(i > n - 1, 2 * (n - 1) - i, i)


# Flip views for test-time augmentation: (flip rows, flip columns, transpose)
_VIEWS = [(False, False, False), (False, True, False), (True, False, False), (True, True, False),
          (False, False, True), (False, True, True), (True, False, True), (True, True, True)]


def tta_views(crops: np.ndarray, n_views: int) -> list[np.ndarray]:
    """The first ``n_views`` of the 8 dihedral views of N x S x S x C crops."""
    views = []
    for flip_r, flip_c, transpose in _VIEWS[:n_views]:
        v = crops.transpose(0, 2, 1, 3) if transpose else crops
        if flip_r:
            v = v[:, ::-1]
        if flip_c:
            v = v[:, :, ::-1]
        views.append(np.ascontiguousarray(v))
    return views


def mean_over_views(score: Callable[[np.ndarray], np.ndarray], crops: np.ndarray, batch_size: int,
                    n_views: int = 1) -> np.ndarray:
    """Mean of ``score`` (one value per crop) over ``n_views`` flip views, computed in batches."""
    if len(crops) == 0:
        return np.zeros(0, np.float32)
    total = np.zeros(len(crops), np.float64)
    for view in tta_views(crops, n_views):
        for start in range(0, len(view), batch_size):
            total[start : start + batch_size] += score(view[start : start + batch_size])
    return (total / n_views).astype(np.float32)


def classify_crops(classifier: Classifier, crops: np.ndarray, batch_size: int, n_views: int = 1) -> np.ndarray:
    """Mean P(atypical) over ``n_views`` flip views, computed in batches."""
    return mean_over_views(classifier, crops, batch_size, n_views)
