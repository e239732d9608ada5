"""From a mitosis logit map to scored candidate points, duplicates suppressed.

Candidates are the **local maxima** of the map inside the regions where it reaches the floor (the
regions only bound the search and each candidate's extent). A plateau of equal maxima counts once,
at its centre. Each candidate is placed at the probability-weighted centroid of its region's pixels
within ``centroid_radius`` of the peak (sub-pixel, and stable when the peak pixel is noisy) and
scored by the peak's logit. Of candidates closer than the suppression radius only the best-scoring
one is kept (greedy, as non-maximum suppression), so kept candidates are at least that far apart
and two figures in one region are two candidates.

Scores stay logits here: the threshold is applied by ``decision.py`` alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

_NEIGHBOURS = np.ones((3, 3), bool)


@dataclass(frozen=True)
class Candidate:
    x: float  # column of the centroid, px (pixel centres at integer coordinates)
    y: float  # row of the centroid, px
    score: float  # the detector's mitosis logit at the peak
    area: int  # pixels of the region (map >= floor) the candidate lies in
    atypical_logit: float | None = None
    verification_logit: float | None = None  # stage 2, when the weights have a verifier

    def moved(self, dx: float, dy: float) -> "Candidate":
        return replace(self, x=self.x + dx, y=self.y + dy)


def find_candidates(logits: np.ndarray, floor: float, centroid_radius: float = 12.0) -> list[Candidate]:
    """Local maxima of ``logits`` (H x W) that reach ``floor``, each with its centroid and peak.

    Each region of ``logits >= floor`` is measured inside its own bounding box, so time and memory
    follow the regions' size rather than the map's.
    """
    labels, _ = ndimage.label(logits >= floor)
    reach = int(np.ceil(centroid_radius))
    candidates = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        inside = labels[box] == index
        z = np.where(inside, logits[box], -np.inf).astype(np.float64)
        peaks = inside & (z == ndimage.maximum_filter(z, size=3, mode="constant", cval=-np.inf))
        groups, n = ndimage.label(peaks, structure=_NEIGHBOURS)
        if n == 0:
            continue
        area = int(np.count_nonzero(inside))
        weight = np.where(inside, 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50))), 0.0)
        centres = ndimage.center_of_mass(peaks, groups, range(1, n + 1))
        values = ndimage.maximum(z, groups, range(1, n + 1))
        for (py, px), value in zip(centres, values):
            cx, cy = _weighted_centroid(weight, px, py, centroid_radius, reach)
            candidates.append(Candidate(x=box[1].start + cx, y=box[0].start + cy, score=float(value), area=area))
    return candidates


def _weighted_centroid(weight: np.ndarray, px: float, py: float, radius: float, reach: int) -> tuple[float, float]:
    """Weighted centroid of ``weight`` within ``radius`` of (px, py), in the array's pixels."""
    r0, c0 = max(0, int(np.floor(py)) - reach), max(0, int(np.floor(px)) - reach)
    w = weight[r0 : int(np.ceil(py)) + reach + 1, c0 : int(np.ceil(px)) + reach + 1]
    rows = np.arange(r0, r0 + w.shape[0], dtype=np.float64)[:, None]
    cols = np.arange(c0, c0 + w.shape[1], dtype=np.float64)[None, :]
    w = np.where((rows - py) ** 2 + (cols - px) ** 2 <= radius * radius, w, 0.0)
    total = w.sum()
    if total <= 0:
        return px, py
    return float((w * cols).sum() / total), float((w * rows).sum() / total)


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
