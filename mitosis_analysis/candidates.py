"""From a mitosis logit map to scored candidate points, duplicates suppressed.

Candidates are the **local maxima** of the map (3 x 3 neighbourhood) where it reaches the floor;
the regions of ``map >= floor`` bound each candidate's extent. A plateau of equal maxima counts
once, at its centre. Each candidate is placed at the probability-weighted centroid of its region's
pixels within ``centroid_radius`` of the peak (sub-pixel, and stable when the peak pixel is noisy)
and scored by the peak's logit. Of candidates closer than the suppression radius only the best-scoring
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

    Vectorised over the map (scipy.ndimage filters and labels, numpy gathers); the per-candidate
    work is a gather of its (2r+1)^2 neighbourhood, done for all candidates at once in chunks.
    """
    above = logits >= floor
    regions, _ = ndimage.label(above, structure=_NEIGHBOURS)
    z = np.where(above, logits, -np.inf)
    peaks = above & (z == ndimage.maximum_filter(z, size=3, mode="constant", cval=-np.inf))
    groups, n = ndimage.label(peaks, structure=_NEIGHBOURS)
    if n == 0:
        return []
    ys, xs = np.nonzero(peaks)
    g = groups[ys, xs]
    count = np.bincount(g, minlength=n + 1)[1:].astype(np.float64)
    cy = np.bincount(g, ys, minlength=n + 1)[1:] / count  # a plateau of equal maxima: its centre
    cx = np.bincount(g, xs, minlength=n + 1)[1:] / count
    first = np.zeros(n + 1, np.int64)
    first[g[::-1]] = np.arange(len(g))[::-1]  # one pixel of each group
    value = logits[ys[first[1:]], xs[first[1:]]].astype(np.float64)
    region = regions[ys[first[1:]], xs[first[1:]]]
    area = np.bincount(regions.ravel(), minlength=region.max() + 1)[region]
    wx, wy = _weighted_centroids(logits, regions, region, cx, cy, centroid_radius)
    return [Candidate(x=float(a), y=float(b), score=float(v), area=int(r)) for a, b, v, r in zip(wx, wy, value, area)]


def _weighted_centroids(logits: np.ndarray, regions: np.ndarray, region: np.ndarray, px: np.ndarray, py: np.ndarray,
                        radius: float, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Per peak: the centroid of sigmoid(logit) over the pixels of its own region within ``radius``
    of (px, py). All peaks at once: each gathers its (2r+1)^2 neighbourhood (chunks bound memory)."""
    reach = int(np.ceil(radius))
    oy, ox = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    h, w = logits.shape
    out_x, out_y = px.copy(), py.copy()
    for s in range(0, len(px), chunk):
        ry, rx = np.rint(py[s : s + chunk]).astype(np.int64), np.rint(px[s : s + chunk]).astype(np.int64)
        yy, xx = ry[:, None, None] + oy, rx[:, None, None] + ox
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        yc, xc = np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)
        near = (yy - py[s : s + chunk, None, None]) ** 2 + (xx - px[s : s + chunk, None, None]) ** 2 <= radius * radius
        keep = inside & near & (regions[yc, xc] == region[s : s + chunk, None, None])
        weight = np.where(keep, 1.0 / (1.0 + np.exp(-np.clip(logits[yc, xc].astype(np.float64), -50, 50))), 0.0)
        total = weight.sum(axis=(1, 2))
        ok = total > 0
        out_x[s : s + chunk][ok] = (weight * xx).sum(axis=(1, 2))[ok] / total[ok]
        out_y[s : s + chunk][ok] = (weight * yy).sum(axis=(1, 2))[ok] / total[ok]
    return out_x, out_y


def map_candidates(logits: np.ndarray, floor: float, stride: int, centroid_radius_px: float,
                   suppression_radius_px: float) -> list[Candidate]:
    """Candidates of a logit map whose pixels cover ``stride`` x ``stride`` image pixels (a
    detector pooling s x s blocks; 1: per pixel), in image pixels: ``find_candidates`` on the map,
    then ``suppress_duplicates``. Radii are in image pixels."""
    found = find_candidates(logits, floor, centroid_radius_px / stride)
    if stride != 1:  # map pixel i covers image pixels [i s, (i + 1) s): its centre is (i + 0.5) s - 0.5
        found = [replace(c, x=(c.x + 0.5) * stride - 0.5, y=(c.y + 0.5) * stride - 0.5, area=c.area * stride**2)
                 for c in found]
    return suppress_duplicates(found, suppression_radius_px)


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
