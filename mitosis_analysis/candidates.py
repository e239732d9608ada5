"""From a mitosis probability map to scored candidate points, duplicates suppressed.

Connected components of ``p >= floor`` are candidates; each is placed at its probability-weighted
centroid and scored by its peak probability. Of candidates closer than the suppression radius
only the best-scoring one is kept (greedy, as non-maximum suppression).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree


@dataclass(frozen=True)
class Candidate:
    x: float  # column of the centroid, px (pixel centres at integer coordinates)
    y: float  # row of the centroid, px
    score: float  # peak mitosis probability in the component
    area: int  # pixels in the component
    p_atypical: float | None = None

    def moved(self, dx: float, dy: float) -> "Candidate":
        return replace(self, x=self.x + dx, y=self.y + dy)


def find_candidates(probability: np.ndarray, floor: float, min_area: int = 1) -> list[Candidate]:
    """Components of ``probability >= floor`` with at least ``min_area`` pixels."""
    mask = probability >= floor
    labels, n = ndimage.label(mask)
    if n == 0:
        return []
    index = np.arange(1, n + 1)
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    peaks = ndimage.maximum(probability, labels, index)
    centroids = ndimage.center_of_mass(probability, labels, index)
    return [
        Candidate(x=float(cx), y=float(cy), score=float(peak), area=int(area))
        for (cy, cx), peak, area in zip(centroids, peaks, areas)
        if area >= min_area
    ]


def suppress_duplicates(candidates: list[Candidate], radius: float) -> list[Candidate]:
    """Keep, of every group of candidates closer than ``radius`` (px), the highest-scoring one.

    Greedy in descending score: a candidate is dropped when a kept one lies within ``radius``.
    Ties are broken by position so the result does not depend on input order.
    """
    if len(candidates) < 2:
        return list(candidates)
    order = sorted(candidates, key=lambda c: (-c.score, c.y, c.x))
    points = np.array([[c.x, c.y] for c in order])
    tree = cKDTree(points)
    suppressed = np.zeros(len(order), bool)
    kept: list[Candidate] = []
    for i, cand in enumerate(order):
        if suppressed[i]:
            continue
        kept.append(cand)
        for j in tree.query_ball_point(points[i], r=radius):
            if j > i and np.hypot(*(points[j] - points[i])) < radius:
                suppressed[j] = True
    return kept
