"""Low-resolution tissue mask of a whole slide: Otsu on saturation, small holes filled.

H&E stains colour the tissue and leave the glass grey-white, so the saturation of a thumbnail
separates the two; the Otsu threshold adapts to the stain, a floor (``MIN_SATURATION``) keeps an
empty slide empty (Otsu always splits, even pure glass). Specks smaller than a few cells are
dropped, holes smaller than ``max_hole_mm2`` are filled, and the mask used for inference is
dilated by ``margin_mm`` so that no figure on the tissue border is cut off. All functions are
pure (arrays in, arrays out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..morphology import disk, otsu_threshold, remove_small_objects

# Saturation (max - min) / max below which a pixel is glass whatever Otsu says.
MIN_SATURATION = 0.08


@dataclass(frozen=True)
class TissueMask:
    """Tissue on a coarse grid over the slide's working grid.

    ``tissue``: the tissue itself (area reported); ``inference``: ``tissue`` dilated by the
    margin (pixels that are analysed). ``scale`` = working pixels per mask pixel (x, y).
    """

    tissue: np.ndarray  # H x W bool
    inference: np.ndarray  # H x W bool
    spacing_mm: tuple[float, float]  # (x, y) size of one mask pixel
    scale: tuple[float, float]

    @property
    def area_mm2(self) -> float:
        return float(self.tissue.sum()) * self.spacing_mm[0] * self.spacing_mm[1]

    def cells(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """The inference mask cells overlapping the working-grid box [x0, x1) x [y0, y1)."""
        sx, sy = self.scale
        c0, c1 = int(x0 // sx), max(int(x0 // sx) + 1, math.ceil(x1 / sx))
        r0, r1 = int(y0 // sy), max(int(y0 // sy) + 1, math.ceil(y1 / sy))
        return self.inference[r0:r1, c0:c1]

    def fraction(self, x0: int, y0: int, x1: int, y1: int) -> float:
        cells = self.cells(x0, y0, x1, y1)
        return float(cells.mean()) if cells.size else 0.0

    def upsampled(self, x0: int, y0: int, width: int, height: int) -> np.ndarray:
        """The inference mask on the working-grid box (nearest neighbour), ``height`` x ``width``."""
        sx, sy = self.scale
        rows = np.minimum(((np.arange(y0, y0 + height) + 0.5) / sy).astype(np.int64), self.inference.shape[0] - 1)
        cols = np.minimum(((np.arange(x0, x0 + width) + 0.5) / sx).astype(np.int64), self.inference.shape[1] - 1)
        return self.inference[np.ix_(rows, cols)]


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation (max - min) / max in [0, 1], 0 for black pixels."""
    hi = rgb.max(axis=-1).astype(np.float32)
    lo = rgb.min(axis=-1).astype(np.float32)
    return np.divide(hi - lo, hi, out=np.zeros_like(hi), where=hi > 0)


def fill_small_holes(mask: np.ndarray, max_area_px: int) -> np.ndarray:
    """Fill background components enclosed by tissue (not touching the border) smaller than
    ``max_area_px``."""
    holes, n = ndimage.label(~mask)
    if n == 0:
        return mask.copy()
    areas = np.bincount(holes.ravel())
    border = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
    fill = areas < max_area_px
    fill[0] = False
    fill[border] = False
    return mask | fill[holes]


def tissue_mask(
    rgb: np.ndarray,
    spacing_mm: tuple[float, float],
    working_spacing_mm: tuple[float, float],
    *,
    min_object_mm2: float = 0.002,
    max_hole_mm2: float = 0.05,
    margin_mm: float = 0.025,
) -> TissueMask:
    """Tissue mask of a thumbnail ``rgb`` whose pixels are ``spacing_mm`` wide."""
    pixel_mm2 = spacing_mm[0] * spacing_mm[1]
    s = saturation(rgb)
    threshold = max(otsu_threshold(s, value_range=(0.0, 1.0)), MIN_SATURATION)
    mask = s > threshold
    mask = remove_small_objects(mask, max(1, round(min_object_mm2 / pixel_mm2)))
    mask = fill_small_holes(mask, max(1, round(max_hole_mm2 / pixel_mm2)))
    radius = max(1, math.ceil(margin_mm / min(spacing_mm)))
    inference = ndimage.binary_dilation(mask, structure=disk(radius)) if mask.any() else mask.copy()
    scale = (spacing_mm[0] / working_spacing_mm[0], spacing_mm[1] / working_spacing_mm[1])
    return TissueMask(tissue=mask, inference=inference, spacing_mm=spacing_mm, scale=scale)
