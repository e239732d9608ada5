"""Where pixels come from: one interface for an array, a TIFF and a whole slide (TIAToolbox's
virtual-reader idea), read at the models' pixel spacing.

``SlideSource`` is a pyramid of RGB levels that reads boxes; ``ArraySource`` puts an image already
in memory (a Track 1 ROI) behind it, the slide mode's ``OpenSlideSource`` and ``TiffSource``
(``slide/reader.py``) put files behind it. ``SlideView`` is the working grid every analysis runs
on: a source at the models' spacing, the level within the tolerance read as it is, otherwise the
coarsest finer level (or level 0) resampled by ``resample.resample``. ROIs and slides thus share
the level choice, the resampler and the mapping of points back to level-0 pixels.

Pixel coordinates follow the package's convention: pixel centres at integer positions.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .log import warn
from .resample import resample


class SlideReadError(Exception):
    """A region could not be decoded (damaged tile); the slide itself is still usable."""


@dataclass(frozen=True)
class Level:
    width: int
    height: int
    spacing_mm: tuple[float, float]  # (x, y) size of one pixel of this level, mm


class SlideSource(ABC):
    """A pyramid of RGB levels; level 0 is the finest."""

    backend: str
    path: Path
    levels: list[Level]
    spacing_assumed: bool

    @abstractmethod
    def read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """``height`` x ``width`` x 3 uint8 RGB of ``level`` with top-left pixel (x, y); the box
        must lie inside the level. Raises ``SlideReadError`` when the data are damaged."""

    def close(self) -> None:  # noqa: B027 - optional for backends without resources
        pass

    def __enter__(self) -> "SlideSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_box(self, level: int, x: int, y: int, width: int, height: int) -> None:
        lv = self.levels[level]
        if width <= 0 or height <= 0 or x < 0 or y < 0 or x + width > lv.width or y + height > lv.height:
            raise ValueError(f"box {x},{y} {width}x{height} outside level {level} ({lv.width}x{lv.height})")


class ArraySource(SlideSource):
    """An image in memory as a one-level source (a Track 1 ROI; a region cut from anything)."""

    backend = "array"

    def __init__(self, pixels: np.ndarray, spacing_mm: tuple[float, float], path: Path | str | None = None,
                 spacing_assumed: bool = False):
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
            raise ValueError(f"expected H x W x 3 uint8 pixels, got {pixels.dtype} {pixels.shape}")
        self.pixels = pixels
        self.path = Path(path if path is not None else "image")
        self.spacing_assumed = spacing_assumed
        self.levels = [Level(pixels.shape[1], pixels.shape[0], (float(spacing_mm[0]), float(spacing_mm[1])))]

    def read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        self._check_box(level, x, y, width, height)
        return self.pixels[y : y + height, x : x + width]


# --------------------------------------------------------------------------- working grid


class SlideView:
    """The slide on the working grid: pixels at ``target_spacing_mm`` (within the tolerance).

    ``level`` is the pyramid level read; ``scale`` = level pixels per working pixel (x, y);
    1.0 when the level is used as it is.
    """

    def __init__(self, source: SlideSource, target_spacing_mm: float, tolerance: float, announce: bool = True):
        """``announce``: say on stderr when the level is resampled (else the caller calls
        ``announce`` once it has accepted the view, so that a refusal is the only line)."""
        self.source = source
        self.tolerance = tolerance
        self.level, resampled = choose_level(source.levels, target_spacing_mm, tolerance)
        lv = source.levels[self.level]
        if resampled:
            self.spacing_mm = (target_spacing_mm, target_spacing_mm)
            self.scale = (target_spacing_mm / lv.spacing_mm[0], target_spacing_mm / lv.spacing_mm[1])
            self.width = max(1, round(lv.width / self.scale[0]))
            self.height = max(1, round(lv.height / self.scale[1]))
        else:
            self.spacing_mm = lv.spacing_mm
            self.scale = (1.0, 1.0)
            self.width, self.height = lv.width, lv.height
        if announce:
            self.announce()

    def announce(self) -> None:
        """The warning that the level is resampled (nothing when it is read as it is)."""
        if not self.resampled:
            return
        lv = self.source.levels[self.level]
        direction = "downsampling" if min(self.scale) >= 1 else "UPSAMPLING (the image is coarser than the models)"
        warn(
            f"{self.source.path.name}: no level within {self.tolerance:.0%} of the models' "
            f"{self.spacing_mm[0] * 1000:g} um/px; {direction} level {self.level} "
            f"({lv.spacing_mm[0] * 1000:.4g} um/px, {lv.width}x{lv.height} px) to {self.width}x{self.height} px"
        )

    @property
    def resampled(self) -> bool:
        return self.scale != (1.0, 1.0)

    def read(self, x: int, y: int, width: int, height: int) -> np.ndarray:
        """``height`` x ``width`` x 3 uint8 of the working grid, box inside the grid. A resampled
        box is read with a margin of level pixels around it, so that boxes agree at their seams."""
        if not self.resampled:
            return self.source.read(self.level, x, y, width, height)
        lv = self.source.levels[self.level]
        sx, sy = self.scale
        u0, u1, v0, v1 = x * sx, (x + width) * sx, y * sy, (y + height) * sy  # pixel edges on the level
        mx, my = math.ceil(max(sx, 1.0)) + 1, math.ceil(max(sy, 1.0)) + 1  # the filter's reach
        lx0, ly0 = max(0, math.floor(u0) - mx), max(0, math.floor(v0) - my)
        lx1, ly1 = min(lv.width, math.ceil(u1) + mx), min(lv.height, math.ceil(v1) + my)
        block = self.source.read(self.level, lx0, ly0, lx1 - lx0, ly1 - ly0)
        return resample(block, (height, width), (u0 - lx0, v0 - ly0, u1 - lx0, v1 - ly0))

    def to_level0(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Working-grid pixel coordinates -> level-0 pixel coordinates (centres at integers)."""
        s0 = self.source.levels[0].spacing_mm
        fx, fy = self.spacing_mm[0] / s0[0], self.spacing_mm[1] / s0[1]
        return (np.asarray(x) + 0.5) * fx - 0.5, (np.asarray(y) + 0.5) * fy - 0.5


def choose_level(levels: list[Level], target_mm: float, tolerance: float) -> tuple[int, bool]:
    """(level, resample?): the level closest to the target (in log scale) when within the
    tolerance; otherwise the coarsest level finer than the target (to be downsampled), or level 0
    (to be upsampled) when every level is coarser."""
    def ratio(lv: Level) -> float:
        return max(lv.spacing_mm) / target_mm

    closest = min(range(len(levels)), key=lambda i: abs(math.log(ratio(levels[i]))))
    if all(abs(s / target_mm - 1) <= tolerance for s in levels[closest].spacing_mm):
        return closest, False
    finer = [i for i, lv in enumerate(levels) if ratio(lv) < 1]
    return (max(finer, key=lambda i: ratio(levels[i])) if finer else 0), True
