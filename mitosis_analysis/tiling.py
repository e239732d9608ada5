"""Sliding-window tiling: where the tiles go, how they are cut, and how they are weighted.

Tiles are ``tile`` x ``tile`` pixels; their start positions are spread evenly between the first
and the last possible position so that the step never exceeds ``stride`` (nnU-Net's rule), which
covers every pixel and leaves the overlap at least ``1 - stride/tile``. Images smaller than a tile
are padded by reflection (``pad_to_tile``); predictions in the padding are cropped away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator, Sequence

import numpy as np


@dataclass(frozen=True)
class Tile:
    y: int  # top row in the (padded) image
    x: int  # left column


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets along one axis of ``length`` pixels (``length >= tile``)."""
    if length < tile:
        raise ValueError(f"axis of {length} px is shorter than the tile ({tile} px): pad first")
    if length == tile:
        return [0]
    n = math.ceil((length - tile) / stride) + 1
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def tile_grid(height: int, width: int, tile: int, stride: int) -> list[Tile]:
    """Row-major tiles covering a ``height`` x ``width`` image (already padded to >= tile)."""
    return [Tile(y, x) for y in tile_starts(height, tile, stride) for x in tile_starts(width, tile, stride)]


def pad_to_tile(image: np.ndarray, tile: int) -> np.ndarray:
    """Pad H x W x C at the bottom/right by reflection so both sides are at least ``tile``."""
    h, w = image.shape[:2]
    pad_h, pad_w = max(0, tile - h), max(0, tile - w)
    if not pad_h and not pad_w:
        return image
    mode = "reflect" if pad_h < h and pad_w < w else "edge"  # reflect needs pad < size
    return np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode=mode)


def iter_batches(
    image: np.ndarray, tiles: Sequence[Tile], tile: int, batch_size: int
) -> Iterator[tuple[list[Tile], np.ndarray]]:
    """Yield (tiles, N x tile x tile x C uint8 array) batches; one batch buffer is reused."""
    buffer = np.empty((batch_size, tile, tile, image.shape[2]), dtype=image.dtype)
    for start in range(0, len(tiles), batch_size):
        chunk = list(tiles[start : start + batch_size])
        for i, t in enumerate(chunk):
            buffer[i] = image[t.y : t.y + tile, t.x : t.x + tile]
        yield chunk, buffer[: len(chunk)]


@lru_cache(maxsize=8)
def gaussian_weights(tile: int, sigma_scale: float = 1.0 / 8) -> np.ndarray:
    """tile x tile blending weights: a Gaussian centred on the tile, sigma = tile * sigma_scale,
    scaled to max 1 and floored at the smallest non-zero value so that borders never divide by 0.
    Predictions near a tile's border (least context) thus count least, which removes seams."""
    sigma = tile * sigma_scale
    axis = np.arange(tile, dtype=np.float64) - (tile - 1) / 2.0
    g = np.exp(-(axis**2) / (2 * sigma**2))
    w = np.outer(g, g)
    w /= w.max()
    w = np.maximum(w, w[w > 0].min())
    w = w.astype(np.float32)
    w.setflags(write=False)
    return w
