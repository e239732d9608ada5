"""Atypical vs normal: crops around candidates and their classification, with flip TTA."""

from __future__ import annotations

from typing import Callable

import numpy as np

Classifier = Callable[[np.ndarray], np.ndarray]  # N x S x S x 3 uint8 -> N P(atypical)


def extract_crops(image: np.ndarray, centres_xy: np.ndarray, size: int) -> np.ndarray:
    """``size`` x ``size`` crops centred on each (x, y) (rounded to the nearest pixel); parts that
    fall outside the image are filled by reflection. Returns N x size x size x C uint8."""
    n = len(centres_xy)
    out = np.empty((n, size, size, image.shape[2]), image.dtype)
    if n == 0:
        return out
    half = size // 2
    padded = np.pad(image, ((size, size), (size, size), (0, 0)), mode="reflect" if min(image.shape[:2]) > size else "edge")
    for i, (x, y) in enumerate(np.asarray(centres_xy, dtype=np.float64)):
        r0 = int(np.floor(y + 0.5)) - half + size
        c0 = int(np.floor(x + 0.5)) - half + size
        out[i] = padded[r0 : r0 + size, c0 : c0 + size]
    return out


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


def classify_crops(classifier: Classifier, crops: np.ndarray, batch_size: int, n_views: int = 1) -> np.ndarray:
    """Mean P(atypical) over ``n_views`` flip views, computed in batches."""
    if len(crops) == 0:
        return np.zeros(0, np.float32)
    total = np.zeros(len(crops), np.float64)
    for view in tta_views(crops, n_views):
        for start in range(0, len(view), batch_size):
            total[start : start + batch_size] += classifier(view[start : start + batch_size])
    return (total / n_views).astype(np.float32)
