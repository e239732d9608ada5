"""Augmentations for H&E crops and tiles: dihedral flips/rotations, HED stain jitter,
brightness/contrast, blur/sharpen.

Every function takes an image H x W x 3 (numpy, ``uint8`` in [0, 255] or floating in [0, 1]) and
returns an image of the same shape and dtype, clipped to the same range. Random functions take a
keyword ``rng`` (a ``numpy.random.Generator``, an ``int`` seed, or ``None`` for fresh entropy), so a
run is reproducible from one seed. Geometric functions apply to any array whose first two axes are
H, W (masks, heat maps) so that labels follow the image: draw the parameters once with
:func:`random_dihedral_params` and apply :func:`dihedral` to each array.

References: HED jitter after Tellez et al., "Whole-slide mitosis detection in H&E breast histology
using PHH3 as a reference to train distilled stain-invariant CNNs", IEEE TMI 2018; stain vectors
of Ruifrok & Johnston, Anal. Quant. Cytol. Histol. 2001 (as in ``skimage.color``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

RngLike = np.random.Generator | int | None

# Rows: optical-density vectors of haematoxylin, eosin and DAB (Ruifrok & Johnston).
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float64)
RGB_FROM_HED /= np.linalg.norm(RGB_FROM_HED, axis=1, keepdims=True)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)
# Darkest transmittance considered (avoids log(0) on black pixels).
_MIN_TRANSMITTANCE = 1.0 / 255.0


def as_rng(rng: RngLike) -> np.random.Generator:
    """A Generator from a Generator (returned as is), a seed, or None."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise ValueError(f"expected an H x W x 3 numpy image, got {shape}")
    if image.dtype != np.uint8 and not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"expected uint8 or floating pixels, got {image.dtype}")


def to_float(image: np.ndarray) -> np.ndarray:
    """float32 in [0, 1] from uint8 or floating pixels."""
    _check_image(image)
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return image.astype(np.float32, copy=False)


def from_float(image: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Back to ``like``'s dtype and range, clipped (uint8 is rounded)."""
    image = np.clip(image, 0.0, 1.0)
    if like.dtype == np.uint8:
        return np.rint(image * 255.0).astype(np.uint8)
    return image.astype(like.dtype, copy=False)


# --- geometry -----------------------------------------------------------------------------------


def dihedral(array: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """One of the 8 symmetries of the square on the first two axes: optional left-right flip,
    then ``k`` counter-clockwise quarter turns. Works for images, masks and heat maps."""
    if flip:
        array = array[:, ::-1]
    return np.ascontiguousarray(np.rot90(array, k % 4, axes=(0, 1)))


def random_dihedral_params(rng: RngLike = None) -> tuple[int, bool]:
    """(k, flip) uniformly over the 8 symmetries."""
    g = as_rng(rng)
    return int(g.integers(4)), bool(g.integers(2))


def random_dihedral(image: np.ndarray, *others: np.ndarray, rng: RngLike = None) -> tuple[np.ndarray, ...]:
    """The same random symmetry applied to ``image`` and to every array in ``others``."""
    k, flip = random_dihedral_params(rng)
    return tuple(dihedral(a, k, flip) for a in (image, *others))


# --- colour -------------------------------------------------------------------------------------


def rgb_to_hed(image: np.ndarray) -> np.ndarray:
    """Stain concentrations (H, E, D) as optical density, float32 H x W x 3."""
    od = -np.log(np.maximum(to_float(image), _MIN_TRANSMITTANCE))
    return (od @ HED_FROM_RGB).astype(np.float32)


def hed_to_rgb(hed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_hed`: float32 RGB in [0, 1]."""
    return np.clip(np.exp(-(hed @ RGB_FROM_HED)), 0.0, 1.0).astype(np.float32)


def hed_jitter(
    image: np.ndarray, alpha: tuple[float, float, float], beta: tuple[float, float, float]
) -> np.ndarray:
    """Scale (``alpha``) and shift (``beta``, optical density) each stain concentration."""
    hed = rgb_to_hed(image)
    hed = hed * np.asarray(alpha, dtype=np.float32) + np.asarray(beta, dtype=np.float32)
    return from_float(hed_to_rgb(hed), image)


def random_hed_jitter(
    image: np.ndarray, sigma: float = 0.05, bias: float = 0.05, rng: RngLike = None
) -> np.ndarray:
    """HED jitter with alpha ~ U(1 - sigma, 1 + sigma) and beta ~ U(-bias, bias) per stain."""
    g = as_rng(rng)
    alpha = tuple(g.uniform(1.0 - sigma, 1.0 + sigma, 3))
    beta = tuple(g.uniform(-bias, bias, 3))
    return hed_jitter(image, alpha, beta)  # type: ignore[arg-type]


def brightness_contrast(image: np.ndarray, brightness: float, contrast: float) -> np.ndarray:
    """``(x - mean) * contrast + mean + brightness`` per image (mean over all pixels and channels)."""
    x = to_float(image)
    mean = float(x.mean())
    return from_float((x - mean) * contrast + mean + brightness, image)


def random_brightness_contrast(
    image: np.ndarray, brightness: float = 0.1, contrast: float = 0.2, rng: RngLike = None
) -> np.ndarray:
    """Brightness shift ~ U(-brightness, brightness), contrast factor ~ U(1 - contrast, 1 + contrast)."""
    g = as_rng(rng)
    return brightness_contrast(image, float(g.uniform(-brightness, brightness)), float(g.uniform(1 - contrast, 1 + contrast)))


# --- focus --------------------------------------------------------------------------------------


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Isotropic Gaussian blur of each channel (sigma in pixels)."""
    x = to_float(image)
    return from_float(gaussian_filter(x, sigma=(sigma, sigma, 0), mode="reflect"), image)


def sharpen(image: np.ndarray, amount: float, sigma: float = 1.0) -> np.ndarray:
    """Unsharp mask: ``x + amount * (x - blur(x, sigma))``."""
    x = to_float(image)
    blurred = gaussian_filter(x, sigma=(sigma, sigma, 0), mode="reflect")
    return from_float(x + amount * (x - blurred), image)


def random_blur_or_sharpen(
    image: np.ndarray,
    p: float = 0.3,
    blur_sigma: tuple[float, float] = (0.3, 1.2),
    sharpen_amount: tuple[float, float] = (0.2, 1.0),
    rng: RngLike = None,
) -> np.ndarray:
    """With probability ``p`` each: blur (sigma drawn from ``blur_sigma``) or sharpen; else unchanged."""
    g = as_rng(rng)
    u = g.random()
    if u < p:
        return gaussian_blur(image, float(g.uniform(*blur_sigma)))
    if u < 2 * p:
        return sharpen(image, float(g.uniform(*sharpen_amount)))
    return image


# --- composition --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths of :func:`augment`; ``strong()`` gives the stronger view for consistency losses."""

    dihedral: bool = True
    hed_sigma: float = 0.05
    hed_bias: float = 0.05
    p_hed: float = 0.8
    brightness: float = 0.08
    contrast: float = 0.15
    p_brightness_contrast: float = 0.5
    p_blur: float = 0.15  # and the same probability of sharpening

    @classmethod
    def strong(cls) -> "AugmentConfig":
        return cls(hed_sigma=0.1, hed_bias=0.1, p_hed=1.0, brightness=0.15, contrast=0.3,
                   p_brightness_contrast=0.8, p_blur=0.3)


def augment_photometric(image: np.ndarray, config: AugmentConfig = AugmentConfig(), rng: RngLike = None) -> np.ndarray:
    """Stain, brightness/contrast and focus changes (labels are unaffected)."""
    _check_image(image)
    g = as_rng(rng)
    if g.random() < config.p_hed:
        image = random_hed_jitter(image, config.hed_sigma, config.hed_bias, rng=g)
    if g.random() < config.p_brightness_contrast:
        image = random_brightness_contrast(image, config.brightness, config.contrast, rng=g)
    return random_blur_or_sharpen(image, p=config.p_blur, rng=g)


def augment(image: np.ndarray, config: AugmentConfig = AugmentConfig(), rng: RngLike = None) -> np.ndarray:
    """A random symmetry (if ``config.dihedral``) followed by :func:`augment_photometric`.

    For label maps that must follow the geometry, call :func:`random_dihedral` yourself and then
    :func:`augment_photometric` on the image only.
    """
    _check_image(image)
    g = as_rng(rng)
    if config.dihedral:
        (image,) = random_dihedral(image, rng=g)
    return augment_photometric(image, config, rng=g)
