"""Binary-mask helpers shared by the slide tissue mask and the training teacher's nucleus masks:
Otsu's threshold, a disk structuring element, small-object removal. Pure numpy/scipy."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def otsu_threshold(values: np.ndarray, bins: int = 256, value_range: tuple[float, float] | None = None) -> float:
    """Otsu's threshold: the cut that maximises the between-class variance of ``values``, from a
    ``bins``-bin histogram over ``value_range`` (default: the values' own range; a constant array
    returns its value)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = value_range if value_range is not None else (float(values.min()), float(values.max()))
    if hi <= lo:
        return float(lo)
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = (w0 * w1 * (mean0 - mean1) ** 2)[:-1]
    # Between two well separated modes the criterion is flat: take the middle of the plateau.
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))
    return float(edges[1:][best].mean())


def disk(radius: float) -> np.ndarray:
    """Boolean disk of ``radius`` pixels, (2 ceil(radius) + 1) pixels square."""
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return xx**2 + yy**2 <= radius**2


def remove_small_objects(mask: np.ndarray, min_area_px: int) -> np.ndarray:
    """``mask`` without its 4-connected components smaller than ``min_area_px`` pixels."""
    labels, n = ndimage.label(mask)
    if n == 0 or min_area_px <= 1:
        return mask.copy()
    areas = np.bincount(labels.ravel())
    keep = areas >= min_area_px
    keep[0] = False
    return keep[labels]
