"""The one resampler: every change of pixel spacing in the package goes through ``resample``.

Pillow's resampling does it (``Image.resize`` with a source ``box``): a separable bilinear filter
whose support widens with the reduction factor, so shrinking is antialiased (no aliasing of
nuclear texture when a 0.125 um/px slide is read at 0.25 um/px), and the box may be fractional, so
a region of a large image is resampled exactly as the whole image would be (tiles and regions of a
slide agree at their seams). Pixel centres follow the package's convention: output pixel i covers
the source interval [x0 + i s, x0 + (i + 1) s) of the box.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def resample(pixels: np.ndarray, shape: tuple[int, int],
             box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """``pixels`` (H x W x C uint8) -> ``shape`` (rows, cols) x C uint8.

    ``box`` = (x0, y0, x1, y1): the source area mapped onto the output, in pixel-edge coordinates
    (default: the whole image). A box reaching past the image is served by repeating its edge."""
    h, w = pixels.shape[:2]
    x0, y0, x1, y1 = box if box is not None else (0.0, 0.0, float(w), float(h))
    pad = ((max(0, -math.floor(y0)), max(0, math.ceil(y1) - h)), (max(0, -math.floor(x0)), max(0, math.ceil(x1) - w)))
    if any(p for pair in pad for p in pair):
        pixels = np.pad(pixels, (*pad, (0, 0)), mode="edge")
        x0, x1, y0, y1 = x0 + pad[1][0], x1 + pad[1][0], y0 + pad[0][0], y1 + pad[0][0]
    size, area = (shape[1], shape[0]), (x0, y0, x1, y1)
    if pixels.shape[2] == 3:  # one call for RGB
        return _resized(pixels, size, area)
    return np.stack([_resized(pixels[..., c], size, area) for c in range(pixels.shape[2])], axis=-1)


def _resized(pixels: np.ndarray, size: tuple[int, int], box: tuple[float, float, float, float]) -> np.ndarray:
    image = Image.fromarray(np.ascontiguousarray(pixels))
    return np.array(image.resize(size, Image.Resampling.BILINEAR, box=box), np.uint8)
