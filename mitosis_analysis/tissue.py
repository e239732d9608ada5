"""A cheap tissue test so that blank glass is never sent through the detector."""

from __future__ import annotations

import numpy as np

# A pixel is tissue when it is coloured (stain) or dark; blank glass is bright and grey.
MIN_SATURATION = 20  # max(RGB) - min(RGB), 0..255
MAX_BRIGHTNESS = 200  # mean(RGB) below this counts as tissue even when grey


def tissue_mask(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 -> H x W bool. Channel by channel in uint8/uint16 (no float image):
    max - min cannot wrap, and mean < 200 is sum < 600 exactly."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    spread = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)
    total = r.astype(np.uint16) + g + b
    return (spread > MIN_SATURATION) | (total < 3 * MAX_BRIGHTNESS)


def tile_tissue_fractions(rgb: np.ndarray, tiles, tile: int, step: int = 4) -> np.ndarray:
    """Tissue fraction of each tile (objects with ``.y``, ``.x``; ``tile`` px square) of the image.

    The mask is computed once, on every ``step``-th pixel of the image, and summed into an
    integral image, so each tile costs O(1) instead of a pass over its pixels."""
    mask = tissue_mask(rgb[::step, ::step])
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int32)  # < 2^31 cells up to 2^35 px
    table[1:, 1:] = mask.astype(np.int32).cumsum(axis=0, dtype=np.int32).cumsum(axis=1, dtype=np.int32)
    ys = np.array([t.y for t in tiles], np.int64)
    xs = np.array([t.x for t in tiles], np.int64)
    # the subsampled rows/columns i * step that fall in [start, start + tile)
    r0, r1 = -(-ys // step), np.minimum(-(-(ys + tile) // step), mask.shape[0])
    c0, c1 = -(-xs // step), np.minimum(-(-(xs + tile) // step), mask.shape[1])
    inside = table[r1, c1] - table[r0, c1] - table[r1, c0] + table[r0, c0]
    count = np.maximum((r1 - r0) * (c1 - c0), 1)
    return inside / count
