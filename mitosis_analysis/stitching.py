"""Blend overlapping tile predictions into one map (Gaussian-weighted average, no seams)."""

from __future__ import annotations

import numpy as np

from .tiling import Tile, gaussian_weights


class Stitcher:
    """Accumulates ``sum(w * p)`` and ``sum(w)`` over tiles; ``result()`` is their ratio.

    Maps may be coarser than the image by ``stride`` (a detector pooling s x s blocks): tile
    positions are then multiples of it, and the map is (height / s) x (width / s). Memory is two
    float32 maps of that size, whatever the number of tiles.
    """

    def __init__(self, height: int, width: int, tile: int, stride: int = 1):
        self.stride = stride
        self.tile = tile // stride
        self.weights = gaussian_weights(self.tile)
        self.numerator = np.zeros((height // stride, width // stride), np.float32)
        self.denominator = np.zeros_like(self.numerator)
        self._product = np.empty_like(self.weights)

    def add(self, tiles: list[Tile], predictions: np.ndarray) -> None:
        """Add N x tile/s x tile/s predictions for ``tiles`` (positions in image pixels)."""
        t, s, w = self.tile, self.stride, self.weights
        for tile, p in zip(tiles, predictions):
            region = (slice(tile.y // s, tile.y // s + t), slice(tile.x // s, tile.x // s + t))
            self.numerator[region] += np.multiply(w, p, out=self._product)
            self.denominator[region] += w

    def result(self, height: int, width: int, empty: float = 0.0) -> np.ndarray:
        """The blended map cropped to the unpadded image (``height`` x ``width`` px: map pixels
        ``ceil(height / s)`` x ``ceil(width / s)``); map pixels that no added tile covers (tiles
        left out as glass) get ``empty``."""
        s = self.stride
        num = self.numerator[: -(-height // s), : -(-width // s)]
        den = self.denominator[: -(-height // s), : -(-width // s)]
        covered = den > 0
        np.divide(num, den, out=num, where=covered)
        num[~covered] = empty
        return num
