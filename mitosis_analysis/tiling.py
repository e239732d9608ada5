"""Sliding-window tiling: where the tiles go, how they are cut, and how they are weighted.

Tiles are ``tile`` x ``tile`` pixels; their start positions are spread evenly between the first
and the last possible position so that the step never exceeds ``stride`` (nnU-Net's rule), which
covers every pixel and leaves the overlap at least ``1 - stride/tile``. With a detector whose map is
pooled over s x s blocks, starts (and the padded image's sides) are multiples of s, so that every
tile's map lands on one common grid. Images smaller than a tile, or whose sides are not multiples of
s, are padded by reflection (``padded_shape``; only the tiles that reach past the image are padded,
as they are cut, never the whole image); predictions in the padding are cropped away.
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


def tile_starts(length: int, tile: int, stride: int, align: int = 1) -> list[int]:
    """Start offsets along one axis of ``length`` pixels (``length >= tile``), multiples of
    ``align`` (``length`` and ``tile`` must be multiples of it; the step stays <= ``stride``)."""
    if length < tile:
        raise ValueError(f"axis of {length} px is shorter than the tile ({tile} px): pad first")
    if length % align or tile % align:
        raise ValueError(f"axis of {length} px and tile of {tile} px must be multiples of {align}: pad first")
    if length == tile:
        return [0]
    span, step = (length - tile) // align, max(1, stride // align)
    n = math.ceil(span / step) + 1
    return [round(i * span / (n - 1)) * align for i in range(n)]


def tile_grid(height: int, width: int, tile: int, stride: int, align: int = 1) -> list[Tile]:
    """Row-major tiles covering a ``height`` x ``width`` image (its ``padded_shape``)."""
    return [Tile(y, x) for y in tile_starts(height, tile, stride, align)
            for x in tile_starts(width, tile, stride, align)]


def padded_shape(height: int, width: int, tile: int, align: int = 1) -> tuple[int, int]:
    """The image's sides padded at the bottom/right to at least ``tile`` and to multiples of ``align``."""
    return max(tile, -(-height // align) * align), max(tile, -(-width // align) * align)


def iter_batches(
    image: np.ndarray, tiles: Sequence[Tile], tile: int, batch_size: int, align: int = 1
) -> Iterator[tuple[list[Tile], np.ndarray]]:
    """Yield (tiles, N x tile x tile x C uint8 array) batches, each in its own array (a batch may
    still be in the model while the next one is cut). Tiles lie on the image padded to its
    ``padded_shape``: the part of a tile past the image is filled by reflection about the last
    row/column (by repeating it when the image is thinner than the padding), as ``np.pad`` would
    pad the whole image."""
    h, w = image.shape[:2]
    ph, pw = padded_shape(h, w, tile, align)
    mode = "reflect" if ph - h < h and pw - w < w else "edge"
    for start in range(0, len(tiles), batch_size):
        chunk = list(tiles[start : start + batch_size])
        batch = np.empty((len(chunk), tile, tile, image.shape[2]), dtype=image.dtype)
        for i, t in enumerate(chunk):
            part = image[t.y : t.y + tile, t.x : t.x + tile]
            if part.shape[:2] == (tile, tile):
                batch[i] = part
            else:
                pad = ((0, tile - part.shape[0]), (0, tile - part.shape[1]), (0, 0))
                batch[i] = np.pad(part, pad, mode=mode)
        yield chunk, batch



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
