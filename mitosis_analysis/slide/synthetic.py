"""Generated slides for tests and benchmarks: tiled pyramidal TIFFs written tile by tile.

A ``SyntheticSlide`` is glass with rectangles of pink tissue and dark disks ("figures") at known
level-0 positions; ``write_slide_tiff`` renders it one tile at a time (memory: one tile), every
pyramid level from the same description. Glass tiles are encoded once and repeated, so even a
100,000 x 100,000 px slide of mostly glass is written in about a minute. Pyramid levels go either
in the main IFD chain (``pyramid="pages"``, what openslide's generic-TIFF reader expects) or in
SubIFDs (``"subifds"``, OME style; openslide then sees level 0 only, tifffile sees all).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

import numpy as np

GLASS_RGB = (235, 230, 235)
TISSUE_RGB = (200, 120, 180)
FIGURE_RGB = (30, 20, 60)


@dataclass(frozen=True)
class SyntheticSlide:
    width: int
    height: int
    tissue: tuple[tuple[int, int, int, int], ...] = ()  # (x0, y0, x1, y1) level-0 px, half-open
    figures: tuple[tuple[float, float], ...] = ()  # disk centres (x, y), level-0 px
    figure_radius: float = 6.0
    spacing_mm: float = 0.00025
    texture: bool = True  # mottle the tissue a little (so JPEG and the tissue test see real texture)
    _figures: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_figures", np.asarray(self.figures, dtype=np.float64).reshape(-1, 2))

    @classmethod
    def patches(cls, size: int, count: int, patch_size: int, seed: int = 0) -> "SyntheticSlide":
        """A ``size`` px square glass with ``count`` non-overlapping square tissue patches of
        ``patch_size`` px at seeded random places, five figures in each (the benchmarks' scene)."""
        rng = np.random.default_rng(seed)
        tissue: list[tuple[int, int, int, int]] = []
        figures: list[tuple[float, float]] = []
        while len(tissue) < count:
            x0, y0 = (int(v) for v in rng.integers(0, size - patch_size, 2))
            box = (x0, y0, x0 + patch_size, y0 + patch_size)
            if any(b[0] < box[2] and box[0] < b[2] and b[1] < box[3] and box[1] < b[3] for b in tissue):
                continue
            tissue.append(box)
            figures += [(float(x0 + fx), float(y0 + fy)) for fx, fy in rng.uniform(40, patch_size - 40, (5, 2))]
        return cls(size, size, tissue=tuple(tissue), figures=tuple(figures))

    def render(self, x: int, y: int, width: int, height: int, downsample: int = 1) -> np.ndarray | None:
        """Pixels of the level with ``downsample`` at its (x, y); None when the block is all glass."""
        d = downsample
        bx0, by0, bx1, by1 = x * d, y * d, (x + width) * d, (y + height) * d
        rects = [r for r in self.tissue if r[0] < bx1 and r[2] > bx0 and r[1] < by1 and r[3] > by0]
        if not rects:
            return None
        X = (np.arange(x, x + width) + 0.5) * d - 0.5
        Y = (np.arange(y, y + height) + 0.5) * d - 0.5
        inside = np.zeros((height, width), bool)
        for x0, y0, x1, y1 in rects:
            inside |= ((Y >= y0) & (Y < y1))[:, None] & ((X >= x0) & (X < x1))[None, :]
        out = np.empty((height, width, 3), np.uint8)
        out[:] = GLASS_RGB
        tissue = np.empty((height, width, 3), np.float32)
        tissue[:] = TISSUE_RGB
        if self.texture:
            mottle = 12.0 * np.sin(Y / 9.0)[:, None] * np.cos(X / 13.0)[None, :]
            tissue += mottle[..., None]
        out[inside] = np.clip(tissue[inside], 0, 255).astype(np.uint8)
        r = self.figure_radius
        near = self._figures[
            (self._figures[:, 0] > bx0 - r - d) & (self._figures[:, 0] < bx1 + r + d)
            & (self._figures[:, 1] > by0 - r - d) & (self._figures[:, 1] < by1 + r + d)
        ]
        for fx, fy in near:
            disk = ((Y[:, None] - fy) ** 2 + (X[None, :] - fx) ** 2) <= r * r
            out[disk] = FIGURE_RGB
        return out


def write_slide_tiff(
    path: Path,
    slide: SyntheticSlide,
    *,
    tile: int = 256,
    min_level_side: int = 1024,
    pyramid: Literal["pages", "subifds", "none"] = "pages",
    compression: Literal["jpeg", "zlib", "none"] = "jpeg",
    quality: int = 90,
) -> Path:
    """Write ``slide`` as a tiled pyramidal TIFF (BigTIFF), one tile in memory at a time.

    Levels halve the size until the long side is at most ``min_level_side``."""
    import tifffile

    levels = [1]
    while pyramid != "none" and max(slide.width, slide.height) // (levels[-1] * 2) >= min_level_side:
        levels.append(levels[-1] * 2)
    px_per_cm = 10.0 / slide.spacing_mm
    glass = np.empty((tile, tile, 3), np.uint8)
    glass[:] = GLASS_RGB
    if compression == "jpeg":
        import imagecodecs

        encode = lambda a: imagecodecs.jpeg_encode(a, level=quality)  # noqa: E731
        kwargs = dict(compression="jpeg", photometric="ycbcr", subsampling=(2, 2))
    else:
        encode = None
        kwargs = dict(compression=None if compression == "none" else compression, photometric="rgb")
    glass_tile = encode(glass) if encode else glass

    def tiles(d: int, w: int, h: int) -> Iterator[bytes | np.ndarray]:
        for ty in range(0, h, tile):
            for tx in range(0, w, tile):
                block = slide.render(tx, ty, tile, tile, d)
                yield glass_tile if block is None else (encode(block) if encode else block)

    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for k, d in enumerate(levels):
            w, h = -(-slide.width // d), -(-slide.height // d)
            extra = {}
            if pyramid == "subifds":
                extra = {"subifds": len(levels) - 1} if k == 0 else {"subfiletype": 1}
            elif k:
                extra = {"subfiletype": 1}
            tw.write(
                tiles(d, w, h), shape=(h, w, 3), dtype=np.uint8, tile=(tile, tile),
                resolution=(px_per_cm / d, px_per_cm / d), resolutionunit="CENTIMETER", **kwargs, **extra,
            )
    return Path(path)
