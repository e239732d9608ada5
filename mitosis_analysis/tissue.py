"""A cheap tissue test so that blank glass is never sent through the detector."""

from __future__ import annotations

import numpy as np

# A pixel is tissue when it is coloured (stain) or dark; blank glass is bright and grey.
MIN_SATURATION = 20  # max(RGB) - min(RGB), 0..255
MAX_BRIGHTNESS = 200  # mean(RGB) below this counts as tissue even when grey


def tissue_mask(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 -> H x W bool."""
    hi = rgb.max(axis=-1).astype(np.int16)
    lo = rgb.min(axis=-1).astype(np.int16)
    return ((hi - lo) > MIN_SATURATION) | (rgb.mean(axis=-1) < MAX_BRIGHTNESS)


def tissue_fraction(rgb: np.ndarray, step: int = 4) -> float:
    """Fraction of tissue pixels, measured on every ``step``-th pixel (fast, plenty for a tile)."""
    return float(tissue_mask(rgb[::step, ::step]).mean()) if rgb.size else 0.0
