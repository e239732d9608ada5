"""Blend overlapping tile predictions into one map (Gaussian-weighted average, no seams)."""

from __future__ import annotations

import numpy as np

from .tiling import Tile, gaussian_weights


class Stitcher:
    """Accumulates ``sum(w * p)`` and ``sum(w)`` over tiles; ``result()`` is their ratio.

    Memory is two float32 maps of the padded image size, whatever the number of tiles.
    """

    def __init__(self, height: int, width: int, tile: int):
        self.tile = tile
        self.weights = gaussian_weights(tile)
        self.numerator = np.zeros((height, width), np.float32)
        self.denominator = np.zeros((height, width), np.float32)

    def add(self, tiles: list[Tile], predictions: np.ndarray) -> None:
        """Add N x tile x tile predictions for ``tiles``."""
        t, w = self.tile, self.weights
        for tile, p in zip(tiles, predictions):
            region = (slice(tile.y, tile.y + t), slice(tile.x, tile.x + t))
            self.numerator[region] += w * p
            self.denominator[region] += w

    def result(self, height: int, width: int, empty: float = 0.0) -> np.ndarray:
        """The blended map cropped to ``height`` x ``width`` (the unpadded image); pixels that no
        added tile covers (tiles left out as glass) get ``empty``."""
        num = self.numerator[:height, :width]
        den = self.denominator[:height, :width]
        covered = den > 0
        np.divide(num, den, out=num, where=covered)
        num[~covered] = empty
        return num
