"""A synthetic H&E-like region of interest, for speed measurements only.

The image is composed in optical density the way H&E is (Beer-Lambert, Ruifrok & Johnston's
stain vectors): eosin everywhere there is tissue, haematoxylin in blob-shaped nuclei of realistic
size (about 6-14 um at 0.25 um/px), one compact very dark figure per 100 x 100 um (condensed
chromatin, as mitotic figures look; about 240 in a MIDOG++-sized ROI), a few lumens of bare
glass, and a little noise. It looks
enough like tissue that every tile passes the pipeline's tissue test (the worst case for speed)
and that compression ratios are of the order of real scans. Nothing in it is a real mitosis:
detection counts on it only say how much post-processing and classification work was done.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

# Optical density of one unit of each stain (Ruifrok & Johnston 2001), RGB.
HAEMATOXYLIN_OD = np.array([0.65, 0.70, 0.29], np.float32)
EOSIN_OD = np.array([0.07, 0.99, 0.11], np.float32)

MICROMETRES_PER_PIXEL = 0.25
PIXELS_PER_CM = round(1e4 / MICROMETRES_PER_PIXEL)  # TIFF resolution tag for 0.25 um/px
FIGURE_SPACING_PX = 400  # one dark, mitosis-like figure per 100 x 100 um


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], cell: int, sigma: float = 1.0) -> np.ndarray:
    """Random field varying over about ``cell`` pixels, scaled to zero mean and unit spread."""
    coarse = ndimage.gaussian_filter(
        rng.standard_normal((shape[0] // cell + 2, shape[1] // cell + 2)).astype(np.float32), sigma
    )
    fine = ndimage.zoom(coarse, cell, order=1, prefilter=False)[: shape[0], : shape[1]]
    return (fine - fine.mean()) / (fine.std() + 1e-6)


def synthetic_he_roi(height: int, width: int, seed: int = 0) -> np.ndarray:
    """H x W x 3 uint8 RGB image that looks like an H&E-stained tumour region."""
    rng = np.random.default_rng(seed)
    shape = (height, width)
    # Nuclei: blobs where a field varying over ~10 px is high; about 18 % of the area.
    nuclear = _smooth_field(rng, shape, cell=4, sigma=1.2)
    nuclei = np.clip((nuclear - 0.9) * 2.5, 0.0, 1.0)
    del nuclear
    # Tissue density varies slowly; lumens (bare glass) where it is lowest.
    density = _smooth_field(rng, shape, cell=64, sigma=1.5)
    tissue = np.clip((density + 1.6) * 1.5, 0.0, 1.0)
    haematoxylin = (0.15 + 1.1 * nuclei) * tissue
    _add_dark_figures(haematoxylin, rng)
    eosin = (0.35 + 0.12 * density) * tissue
    del density, nuclei, tissue
    optical_density = haematoxylin[..., None] * HAEMATOXYLIN_OD + eosin[..., None] * EOSIN_OD
    del haematoxylin, eosin
    optical_density += np.float32(0.02) * rng.standard_normal(optical_density.shape, dtype=np.float32)
    rgb = 255.0 * np.exp(-optical_density) - 8.0  # glass of a scan is never quite white
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _add_dark_figures(haematoxylin: np.ndarray, rng: np.random.Generator, spacing: int = FIGURE_SPACING_PX) -> None:
    """Stamp compact, very dark nuclei (condensed chromatin, as mitotic figures look) on a jittered
    grid, one per ``spacing`` x ``spacing`` px cell, so every ROI has some candidates to process."""
    h, w = haematoxylin.shape
    for cy in range(spacing // 2, h, spacing):
        for cx in range(spacing // 2, w, spacing):
            y = int(np.clip(cy + rng.integers(-spacing // 4, spacing // 4 + 1), 0, h - 1))
            x = int(np.clip(cx + rng.integers(-spacing // 4, spacing // 4 + 1), 0, w - 1))
            r = float(rng.uniform(5.0, 9.0))  # px: 2.5-4.5 um
            y0, y1, x0, x1 = max(0, int(y - r) - 1), min(h, int(y + r) + 2), max(0, int(x - r) - 1), min(w, int(x + r) + 2)
            yy, xx = np.mgrid[y0:y1, x0:x1]
            disk = np.clip(r + 0.5 - np.hypot(yy - y, xx - x), 0.0, 1.0)  # anti-aliased edge
            region = haematoxylin[y0:y1, x0:x1]
            np.maximum(region, 2.6 * disk, out=region)


def write_roi_tiff(path: Path, image: np.ndarray, compression: str = "jpeg",
                   spacing_um: float = MICROMETRES_PER_PIXEL) -> Path:
    """Write ``image`` as a tiled TIFF at ``spacing_um`` (default 0.25 um/px). ``compression``: jpeg
    (quality 90), deflate, lzw, zstd or none; tiled 256 x 256 as whole-slide scanners and
    grand-challenge's converter do."""
    import tifffile

    codecs = {
        "jpeg": ("jpeg", {"level": 90}),
        "deflate": ("zlib", {"level": 6}),
        "lzw": ("lzw", None),
        "zstd": ("zstd", None),
        "none": (None, None),
    }
    if compression not in codecs:
        raise ValueError(f"unknown compression {compression!r} (one of {sorted(codecs)})")
    codec, args = codecs[compression]
    tifffile.imwrite(
        path,
        image,
        photometric="rgb",
        tile=(256, 256),
        compression=codec,
        compressionargs=args,
        resolution=(1e4 / spacing_um, 1e4 / spacing_um),
        resolutionunit="CENTIMETER",
        bigtiff=image.nbytes > 2**31,
    )
    return Path(path)
