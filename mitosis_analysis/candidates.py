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
    """Components of ``probability >= floor`` with at least ``min_area`` pixels.

    Each component is measured inside its own bounding box, so time and memory follow the
    components' size rather than the map's (a 7215 x 5412 map: two int32/bool maps, nothing more).
    """
    labels, n = ndimage.label(probability >= floor)
    candidates = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        inside = labels[box] == index
        area = int(np.count_nonzero(inside))
        if area < min_area:
            continue
        p = np.where(inside, probability[box], 0.0).astype(np.float64)
        total = p.sum()
        rows, cols = p.sum(axis=1), p.sum(axis=0)
        candidates.append(Candidate(
            x=float(box[1].start + (cols * np.arange(len(cols))).sum() / total),
            y=float(box[0].start + (rows * np.arange(len(rows))).sum() / total),
            score=float(p.max()),
            area=area,
        ))
    return candidates


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
