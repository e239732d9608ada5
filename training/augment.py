"""Augmentations for batches of H&E images, in PyTorch (CPU or GPU): dihedral flips/rotations,
HED stain jitter, brightness/contrast, hue/saturation and grayscale blending, blur/sharpen; and
JPEG re-encoding (on uint8 arrays, with Pillow).

Images are float tensors N x 3 x H x W with RGB in [0, 1]; every function returns a new tensor of
the same shape, clipped to [0, 1]. Each sample of a batch gets its own random parameters, drawn
from a ``torch.Generator`` (on the images' device) so that a run is reproducible from one seed.
Geometric functions apply to any tensor whose last two axes are H, W (label maps N x H x W, heat
maps), so that labels follow the image: draw the parameters once with
:func:`random_dihedral_params` and apply :func:`dihedral` to each tensor.

Working on whole batches on the training device keeps the GPU busy: on a CPU core the same
transforms cost about 2.5 ms per 128 px crop when done image by image.

References: HED jitter after Tellez et al., "Whole-slide mitosis detection in H&E breast histology
using PHH3 as a reference to train distilled stain-invariant CNNs", IEEE TMI 2018; stain vectors
of Ruifrok & Johnston, Anal. Quant. Cytol. Histol. 2001 (as in ``skimage.color``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

# Rows: optical-density vectors of haematoxylin, eosin and DAB (Ruifrok & Johnston).
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float64)
RGB_FROM_HED /= np.linalg.norm(RGB_FROM_HED, axis=1, keepdims=True)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)
# Darkest transmittance considered (avoids log(0) on black pixels).
_MIN_TRANSMITTANCE = 1.0 / 255.0


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A seeded generator on ``device`` (random draws must live where the images are)."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(getattr(images, "shape", ())) or type(images).__name__
        raise ValueError(f"expected an N x 3 x H x W tensor of RGB images, got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"expected floating pixels in [0, 1], got {images.dtype}")


def to_float(images_nhwc: torch.Tensor) -> torch.Tensor:
    """N x H x W x 3 uint8 -> N x 3 x H x W float32 in [0, 1]."""
    return images_nhwc.permute(0, 3, 1, 2).float().div_(255.0)


def _uniform(n: int, low: float, high: float, g: torch.Generator, device, *shape: int) -> torch.Tensor:
    return low + (high - low) * torch.rand((n, *shape), generator=g, device=device)


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    """(N,) -> N x 1 x 1 x 1, to broadcast over images."""
    return values.view(-1, 1, 1, 1)


# --- geometry -----------------------------------------------------------------------------------


def dihedral(x: torch.Tensor, k: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """One of the 8 symmetries of the square per sample, on the last two axes: optional
    left-right flip, then ``k`` counter-clockwise quarter turns (``k``, ``flip``: shape (N,)).
    Works for images (N x C x H x W) and maps (N x H x W); H must equal W."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"dihedral symmetries need square images, got {tuple(x.shape[-2:])}")
    out = torch.where(_broadcast(flip, x), x.flip(-1), x)
    turned = [out] + [torch.rot90(out, r, dims=(-2, -1)) for r in (1, 2, 3)]
    result = turned[0].clone()
    for r in (1, 2, 3):
        result = torch.where(_broadcast(k % 4 == r, x), turned[r], result)
    return result


def _broadcast(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *([1] * (like.ndim - 1)))


def random_dihedral_params(n: int, g: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(k, flip) per sample, uniform over the 8 symmetries."""
    k = torch.randint(0, 4, (n,), generator=g, device=device)
    flip = torch.randint(0, 2, (n,), generator=g, device=device).bool()
    return k, flip


def random_dihedral(x: torch.Tensor, *others: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    """The same random symmetry per sample applied to ``x`` and to every tensor in ``others``."""
    k, flip = random_dihedral_params(x.shape[0], g, x.device)
    return tuple(dihedral(t, k, flip) for t in (x, *others))


def random_resized_crop(images: torch.Tensor, min_scale: float, g: torch.Generator,
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """Per image, a random window of ``min_scale`` ... 1 of the area with an aspect ratio in
    ``ratio`` (log-uniform), placed at random inside the image, resampled (bilinear) back to the
    full size: scale and shape jitter plus a shift. ``min_scale`` = 1 returns the images."""
    _check_images(images)
    if min_scale >= 1.0:
        return images
    n, dev = images.shape[0], images.device
    area = _uniform(n, min_scale, 1.0, g, dev)
    log_ratio = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), g, dev)
    sx = (area * torch.exp(log_ratio)).sqrt().clamp(max=1.0)  # window width / image width
    sy = (area / torch.exp(log_ratio)).sqrt().clamp(max=1.0)
    tx = (1 - sx) * _uniform(n, -1.0, 1.0, g, dev)  # centre, in [-1, 1] units, window inside
    ty = (1 - sy) * _uniform(n, -1.0, 1.0, g, dev)
    theta = torch.zeros(n, 2, 3, dtype=images.dtype, device=dev)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, tx, sy, ty
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False).clamp(0.0, 1.0)


# --- colour -------------------------------------------------------------------------------------


def _matrix(m: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(m, dtype=like.dtype, device=like.device)


def rgb_to_hed(images: torch.Tensor) -> torch.Tensor:
    """Stain concentrations (H, E, D) as optical density, N x 3 x H x W."""
    od = -torch.log(images.clamp(min=_MIN_TRANSMITTANCE))
    return torch.einsum("nchw,cd->ndhw", od, _matrix(HED_FROM_RGB, images))


def hed_to_rgb(hed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hed`: RGB in [0, 1]."""
    return torch.exp(-torch.einsum("ndhw,dc->nchw", hed, _matrix(RGB_FROM_HED, hed))).clamp(0.0, 1.0)


def hed_jitter(images: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Scale (``alpha``, N x 3) and shift (``beta``, N x 3, optical density) each stain."""
    _check_images(images)
    hed = rgb_to_hed(images) * alpha[:, :, None, None] + beta[:, :, None, None]
    return hed_to_rgb(hed)


def brightness_contrast(images: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
    """``(x - mean) * contrast + mean + brightness`` per image (mean over pixels and channels)."""
    _check_images(images)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return ((images - mean) * _per_sample(contrast) + mean + _per_sample(brightness)).clamp(0.0, 1.0)


# YIQ: luma Y and the two chroma axes I, Q; a hue change is a rotation of (I, Q), a saturation
# change a scaling of it (grayscale = scale 0).
_YIQ_FROM_RGB = np.array([[0.299, 0.587, 0.114], [0.5959, -0.2746, -0.3213], [0.2115, -0.5227, 0.3112]])
_RGB_FROM_YIQ = np.linalg.inv(_YIQ_FROM_RGB)


def hue_saturation(images: torch.Tensor, hue: torch.Tensor, saturation: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by ``hue`` radians and scale the saturation by ``saturation`` (both (N,)),
    in YIQ space; luma is unchanged. ``saturation = 0`` gives the grayscale image."""
    _check_images(images)
    n = images.shape[0]
    cos, sin = torch.cos(hue) * saturation, torch.sin(hue) * saturation
    chroma = torch.zeros(n, 3, 3, dtype=images.dtype, device=images.device)
    chroma[:, 0, 0] = 1.0
    chroma[:, 1, 1], chroma[:, 1, 2], chroma[:, 2, 1], chroma[:, 2, 2] = cos, -sin, sin, cos
    m = _matrix(_RGB_FROM_YIQ, images) @ chroma @ _matrix(_YIQ_FROM_RGB, images)  # N x 3 x 3
    return torch.einsum("nij,njhw->nihw", m, images).clamp(0.0, 1.0)


def jpeg_reencode(images: np.ndarray, quality: tuple[int, int], p: float, rng: np.random.Generator) -> np.ndarray:
    """N x H x W x 3 uint8: each image re-encoded as JPEG (4:2:0) with probability ``p``, at a
    quality drawn uniformly from ``quality`` (inclusive)."""
    import io

    from PIL import Image

    out = images.copy()
    for i in np.flatnonzero(rng.random(len(images)) < p):
        buffer = io.BytesIO()
        Image.fromarray(images[i]).save(buffer, format="JPEG", quality=int(rng.integers(quality[0], quality[1] + 1)))
        buffer.seek(0)
        with Image.open(buffer) as im:
            out[i] = np.asarray(im.convert("RGB"))
    return out


# --- focus --------------------------------------------------------------------------------------


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Isotropic Gaussian blur with a ``sigma`` (px) per image; reflected borders."""
    _check_images(images)
    sigma = torch.as_tensor(sigma, dtype=images.dtype, device=images.device).expand(images.shape[0])
    radius = max(1, int(math.ceil(3 * float(sigma.max()))))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (offsets[None] / sigma.clamp(min=1e-3)[:, None]) ** 2)
    kernel = kernel / kernel.sum(1, keepdim=True)  # N x K
    n, c, h, w = images.shape
    kernel = kernel.repeat_interleave(c, 0)  # one kernel per (image, channel): grouped convolution
    x = images.reshape(1, n * c, h, w)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=n * c)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel[:, None, :, None], groups=n * c)
    return x.reshape(n, c, h, w).clamp(0.0, 1.0)  # the normalised kernel's rounding can reach 1 + 2e-7


def sharpen(images: torch.Tensor, amount: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Unsharp mask per image: ``x + amount * (x - blur(x, sigma))``."""
    blurred = gaussian_blur(images, torch.full((images.shape[0],), sigma, device=images.device))
    return (images + _per_sample(amount) * (images - blurred)).clamp(0.0, 1.0)


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
    blur_sigma: tuple[float, float] = (0.3, 1.2)
    sharpen_amount: tuple[float, float] = (0.2, 1.0)
    # Hue rotation (radians, +-) and saturation scale (1 +-) with probability p_hsv; blending
    # towards grayscale by a fraction in gray_blend with probability p_gray. Off by default (the
    # detector and classifier recipes predate them; ``wide()`` turns them on).
    hue: float = 0.0
    saturation: float = 0.0
    p_hsv: float = 0.0
    p_gray: float = 0.0
    gray_blend: tuple[float, float] = (0.3, 1.0)
    # Random resized crop (``random_resized_crop``): smallest area fraction kept; 1 = off.
    rrc_min_scale: float = 1.0

    @classmethod
    def wide(cls) -> "AugmentConfig":
        """Stain and colour changes wide enough for other labs and scanners (the verifier's)."""
        return cls(hed_sigma=0.15, hed_bias=0.1, p_hed=0.9, brightness=0.12, contrast=0.25,
                   p_brightness_contrast=0.7, p_blur=0.2, blur_sigma=(0.3, 1.5), hue=0.15, saturation=0.3,
                   p_hsv=0.6, p_gray=0.1)

    @classmethod
    def light(cls) -> "AugmentConfig":
        """Symmetries and a colour jitter only (no stain jitter, no blur): the recipe of a plain
        ImageNet-style baseline, torchvision's ``ColorJitter(0.2, 0.2, 0.2, 0.05)`` in spirit."""
        return cls(p_hed=0.0, brightness=0.2, contrast=0.2, p_brightness_contrast=0.8, p_blur=0.0,
                   hue=0.05 * 2 * math.pi, saturation=0.2, p_hsv=0.8)

    @classmethod
    def strong(cls) -> "AugmentConfig":
        return cls(hed_sigma=0.1, hed_bias=0.1, p_hed=1.0, brightness=0.15, contrast=0.3,
                   p_brightness_contrast=0.8, p_blur=0.3)


def augment_photometric(images: torch.Tensor, config: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Stain, brightness/contrast and focus changes, each drawn per image (labels are unaffected):
    HED jitter with probability ``p_hed`` (alpha ~ U(1 +- hed_sigma), beta ~ U(+- hed_bias) per
    stain), brightness/contrast with probability ``p_brightness_contrast``, hue/saturation with
    probability ``p_hsv`` and grayscale blending with probability ``p_gray`` (only when either is
    > 0, so older recipes draw the same random numbers), then blur or sharpen,
    each with probability ``p_blur``."""
    _check_images(images)
    n, dev = images.shape[0], images.device
    identity = torch.ones(n, 3, device=dev), torch.zeros(n, 3, device=dev)
    use = _uniform(n, 0, 1, g, dev) < config.p_hed
    alpha = torch.where(use[:, None], _uniform(n, 1 - config.hed_sigma, 1 + config.hed_sigma, g, dev, 3), identity[0])
    beta = torch.where(use[:, None], _uniform(n, -config.hed_bias, config.hed_bias, g, dev, 3), identity[1])
    x = torch.where(_per_sample(use), hed_jitter(images, alpha, beta), images)
    use = _uniform(n, 0, 1, g, dev) < config.p_brightness_contrast
    brightness = torch.where(use, _uniform(n, -config.brightness, config.brightness, g, dev), 0.0)
    contrast = torch.where(use, _uniform(n, 1 - config.contrast, 1 + config.contrast, g, dev), 1.0)
    x = brightness_contrast(x, brightness, contrast)
    if config.p_hsv > 0 or config.p_gray > 0:
        use = _uniform(n, 0, 1, g, dev) < config.p_hsv
        hue = torch.where(use, _uniform(n, -config.hue, config.hue, g, dev), 0.0)
        sat = torch.where(use, _uniform(n, 1 - config.saturation, 1 + config.saturation, g, dev), 1.0)
        gray = _uniform(n, 0, 1, g, dev) < config.p_gray
        sat = sat * torch.where(gray, 1.0 - _uniform(n, *config.gray_blend, g, dev), 1.0)
        x = hue_saturation(x, hue, sat)
    u = _uniform(n, 0, 1, g, dev)
    blur, sharp = u < config.p_blur, (u >= config.p_blur) & (u < 2 * config.p_blur)
    sigma = _uniform(n, *config.blur_sigma, g, dev)
    amount = _uniform(n, *config.sharpen_amount, g, dev)
    if bool(blur.any()):
        x = torch.where(_per_sample(blur), gaussian_blur(x, torch.where(blur, sigma, 1e-3)), x)
    if bool(sharp.any()):
        x = torch.where(_per_sample(sharp), sharpen(x, torch.where(sharp, amount, 0.0)), x)
    return x


def augment(images: torch.Tensor, config: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """A random symmetry per image (if ``config.dihedral``), a random resized crop (if
    ``config.rrc_min_scale`` < 1), then :func:`augment_photometric`.

    For label maps that must follow the geometry, call :func:`random_dihedral` yourself and then
    :func:`augment_photometric` on the images only."""
    _check_images(images)
    if config.dihedral:
        (images,) = random_dihedral(images, g=g)
    images = random_resized_crop(images, config.rrc_min_scale, g)
    return augment_photometric(images, config, g)


# --- mixing pairs of samples (mixup, cutmix) ----------------------------------------------------

MIX_MODES = ("none", "mixup", "cutmix")


def mix_pairs(images: torch.Tensor, targets: tuple[torch.Tensor, ...], mode: str, lam: float,
              perm: torch.Tensor, box: tuple[int, int, int, int] | None = None,
              ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], float]:
    """Each image mixed with ``images[perm]``: ``mixup`` blends the pixels (weight ``lam`` on the
    image itself, Zhang et al. 2018); ``cutmix`` pastes the partner's pixels inside ``box`` = (y0,
    y1, x0, x1) (Yun et al. 2019), and the weight becomes the area left, exactly. Soft ``targets``
    (per-sample floats) are mixed with the same weight, which is returned; ``none`` returns the
    inputs and 1."""
    if mode == "none":
        return images, targets, 1.0
    if mode == "mixup":
        mixed = lam * images + (1.0 - lam) * images[perm]
    elif mode == "cutmix":
        if box is None:
            raise ValueError("cutmix needs a box")
        y0, y1, x0, x1 = box
        mixed = images.clone()
        mixed[..., y0:y1, x0:x1] = images[..., y0:y1, x0:x1][perm]  # gather the box only
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (images.shape[-2] * images.shape[-1])
    else:
        raise ValueError(f"unknown mix mode {mode!r}; one of {MIX_MODES}")
    return mixed, tuple(lam * t + (1.0 - lam) * t[perm] for t in targets), lam


def random_mix(images: torch.Tensor, targets: tuple[torch.Tensor, ...], mode: str, alpha: float,
               rng: np.random.Generator) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], float]:
    """:func:`mix_pairs` with one weight per batch drawn from Beta(alpha, alpha) and folded to >= 0.5
    (each sample stays mostly itself, so per-sample labels such as its domain still hold), a random
    pairing, and for ``cutmix`` a box of area 1 - weight, centred at random and clipped."""
    if mode == "none":
        return images, targets, 1.0
    lam = float(rng.beta(alpha, alpha))
    lam = max(lam, 1.0 - lam)
    perm = torch.from_numpy(rng.permutation(images.shape[0])).to(images.device)
    box = None
    if mode == "cutmix":
        h, w = images.shape[-2:]
        ch, cw = int(round(h * math.sqrt(1 - lam))), int(round(w * math.sqrt(1 - lam)))
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        box = (max(cy - ch // 2, 0), min(cy + ch - ch // 2, h), max(cx - cw // 2, 0), min(cx + cw - cw // 2, w))
    return mix_pairs(images, targets, mode, lam, perm, box)
