"""The hotspot: the axis-aligned square of a given area holding the most points.

The grading protocols count mitoses in the densest 2 mm^2 of the tumour (WHO 5th ed.; about
10 high-power fields of 0.5 mm diameter, i.e. field number 20 at 40x, 10 x 0.196 mm^2). We use a
square of that area (side sqrt(2) mm = 1.414 mm) placed anywhere on the slide, edges included.

Exact search: some optimal square has a point on its left edge and a point on its top edge, so
trying every point as the left edge and sliding over the y-sorted points within reach finds the
maximum in O(n^2 log n) for n points (a few thousand mitoses at most on a slide). The square
reported is then centred on the points it holds (same count, and a position that does not hug
one point) and moved inside the slide when the slide is larger than the square.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Hotspot:
    x_mm: float  # left edge
    y_mm: float  # top edge
    side_mm: float
    count: int
    members: tuple[int, ...]  # indices of the points inside, ascending

    @property
    def area_mm2(self) -> float:
        return self.side_mm**2

    @property
    def centre_mm(self) -> tuple[float, float]:
        return self.x_mm + self.side_mm / 2, self.y_mm + self.side_mm / 2


def densest_square(
    points_mm: np.ndarray, area_mm2: float = 2.0, extent_mm: tuple[float, float] | None = None
) -> Hotspot | None:
    """The square of ``area_mm2`` with the most of the (x, y) ``points_mm`` (N x 2) inside
    (closed square); ``None`` when there are no points. ``extent_mm`` (width, height) of the slide
    keeps the square inside it where it fits. Ties go to the first square found scanning left
    edges from left to right."""
    if area_mm2 <= 0:
        raise ValueError(f"hotspot area must be positive, got {area_mm2}")
    pts = np.asarray(points_mm, dtype=np.float64).reshape(-1, 2)
    if len(pts) == 0:
        return None
    side = math.sqrt(area_mm2)
    eps = 1e-12 * max(1.0, float(np.abs(pts).max()))
    order = np.lexsort((pts[:, 1], pts[:, 0]))
    xs, ys = pts[order, 0], pts[order, 1]
    best, best_left, best_top = 0, 0, 0.0
    right = 0
    for left in range(len(xs)):
        if left and xs[left] == xs[left - 1]:
            continue  # same left edge as the previous point: same candidates
        right = max(right, left)
        while right < len(xs) and xs[right] <= xs[left] + side + eps:
            right += 1
        if right - left <= best:
            continue  # cannot beat the best even with every point in reach
        column = np.sort(ys[left:right])
        counts = np.searchsorted(column, column + side + eps, side="right") - np.arange(len(column))
        k = int(np.argmax(counts))
        if counts[k] > best:
            best, best_left, best_top = int(counts[k]), left, float(column[k])
    inside = _inside(pts, xs[best_left], best_top, side, eps)
    members = pts[inside]
    x0 = (members[:, 0].min() + members[:, 0].max()) / 2 - side / 2
    y0 = (members[:, 1].min() + members[:, 1].max()) / 2 - side / 2
    if extent_mm is not None:
        x0 = _fit(x0, side, extent_mm[0], members[:, 0])
        y0 = _fit(y0, side, extent_mm[1], members[:, 1])
    inside = _inside(pts, x0, y0, side, eps)
    return Hotspot(float(x0), float(y0), side, int(inside.sum()), tuple(int(i) for i in np.flatnonzero(inside)))


def count_in_square(points_mm: np.ndarray, x0: float, y0: float, side: float) -> int:
    """Points inside the closed square [x0, x0 + side] x [y0, y0 + side]."""
    pts = np.asarray(points_mm, dtype=np.float64).reshape(-1, 2)
    return int(_inside(pts, x0, y0, side, 0.0).sum())


def _inside(pts: np.ndarray, x0: float, y0: float, side: float, eps: float) -> np.ndarray:
    return (
        (pts[:, 0] >= x0 - eps) & (pts[:, 0] <= x0 + side + eps) & (pts[:, 1] >= y0 - eps) & (pts[:, 1] <= y0 + side + eps)
    )


def _fit(start: float, side: float, extent: float, members: np.ndarray) -> float:
    """Shift [start, start + side] into [0, extent] (when it fits) while still covering the
    members; leaves it where it is otherwise."""
    if side > extent:
        return start
    lo = max(0.0, members.max() - side)  # smallest start that still covers the members
    hi = min(extent - side, members.min())
    return float(min(max(start, lo), hi)) if lo <= hi else start
