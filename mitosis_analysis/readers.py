"""Read images into RGB uint8 arrays with their pixel spacing in millimetres.

One reader per format behind one function (TIAToolbox style): ``read_roi`` for Track 1 regions
(TIFF via tifffile, MHA via SimpleITK, slide formats via openslide) and ``read_stack`` for
Track 2 crop stacks. Conversions (grayscale, RGBA, 16-bit, other crop sizes) are done with a
warning; unreadable, truncated or empty images raise ``InputError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .log import warn
from .settings import ROI_SUFFIXES, SLIDE_SUFFIXES, Settings


@dataclass(frozen=True)
class RoiImage:
    pixels: np.ndarray  # H x W x 3 uint8, RGB
    spacing_mm: tuple[float, float]  # (x, y) size of one pixel, mm
    spacing_assumed: bool
    path: Path

    @property
    def shape(self) -> tuple[int, int]:
        return self.pixels.shape[0], self.pixels.shape[1]


# --------------------------------------------------------------------------- pixel conversion


def to_rgb_uint8(array: np.ndarray, name: str) -> np.ndarray:
    """Return ``array`` as H x W x 3 uint8, warning about every conversion made."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # planar (C, H, W) storage
    if a.ndim == 2:
        warn(f"{name}: grayscale image, replicated to RGB")
        a = a[..., None]
    if a.ndim != 3:
        raise InputError(f"{name}: expected a 2-D colour image, got an array of shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"{name}: image has no pixels (shape {a.shape[:2]})")
    if a.dtype != np.uint8:
        a = _rescale_to_uint8(a, name)
    channels = a.shape[-1]
    if channels == 1:
        if array.ndim == 3:
            warn(f"{name}: single-channel image, replicated to RGB")
        a = np.repeat(a, 3, axis=-1)
    elif channels == 2:
        warn(f"{name}: grayscale+alpha image, alpha dropped and gray replicated to RGB")
        a = np.repeat(a[..., :1], 3, axis=-1)
    elif channels == 4:
        warn(f"{name}: RGBA image, alpha channel dropped")
        a = a[..., :3]
    elif channels != 3:
        raise InputError(f"{name}: unsupported number of channels: {channels}")
    return np.ascontiguousarray(a)


def _rescale_to_uint8(a: np.ndarray, name: str) -> np.ndarray:
    if a.dtype == np.bool_:
        warn(f"{name}: binary image, converted to 8 bit")
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.integer):
        bits = np.iinfo(a.dtype).bits
        warn(f"{name}: {bits}-bit image, scaled to 8 bit")
        top = float(np.iinfo(a.dtype).max)
        if bits > 8 and a.max(initial=0) <= 255:
            top = 255.0  # 8-bit values stored in a wider type
        return np.clip(a.astype(np.float32) * (255.0 / top), 0, 255).round().astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        hi = float(np.nanmax(a)) if a.size else 0.0
        scale = 255.0 if hi <= 1.0 else 1.0
        warn(f"{name}: floating-point image, converted to 8 bit (values taken as {'0..1' if scale > 1 else '0..255'})")
        return np.clip(np.nan_to_num(a) * scale, 0, 255).round().astype(np.uint8)
    raise InputError(f"{name}: unsupported pixel type {a.dtype}")


# --------------------------------------------------------------------------- spacing


def checked_spacing(
    spacing_mm: tuple[float, float] | None, settings: Settings, name: str
) -> tuple[tuple[float, float], bool]:
    """The spacing to use and whether it was assumed. Missing or implausible values (SimpleITK's
    default 1.0, a resolution tag of 1 dpi, ...) fall back to the default, said on stderr."""
    lo, hi = settings.plausible_spacing_mm
    if spacing_mm is not None and all(lo <= s <= hi for s in spacing_mm):
        return (float(spacing_mm[0]), float(spacing_mm[1])), False
    default = settings.default_spacing_mm
    given = "none" if spacing_mm is None else f"{spacing_mm[0]:g} x {spacing_mm[1]:g} mm"
    warn(f"{name}: pixel spacing {given} is missing or implausible; assuming {default * 1000:g} um/px")
    return (default, default), True


def tiff_spacing_mm(page) -> tuple[float, float] | None:
    tags = page.tags
    unit_tag = tags.get("ResolutionUnit")
    unit = int(unit_tag.value) if unit_tag is not None else 2
    mm_per_unit = {2: 25.4, 3: 10.0}.get(unit)
    if mm_per_unit is None:
        return None  # unit "none": the numbers carry no physical meaning
    spacing = []
    for key in ("XResolution", "YResolution"):
        tag = tags.get(key)
        if tag is None:
            return None
        num, den = tag.value if isinstance(tag.value, tuple) else (tag.value, 1)
        if not num or not den:
            return None
        spacing.append(mm_per_unit * den / num)
    return spacing[0], spacing[1]


# --------------------------------------------------------------------------- readers per format


def read_roi(path: Path, settings: Settings) -> RoiImage:
    """Read a Track 1 region of interest (TIFF, MHA, or any slide format openslide reads)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        pixels, spacing = _read_tiff(path)
    elif suffix == ".mha":
        pixels, spacing = _read_mha(path)
    elif suffix in SLIDE_SUFFIXES:
        pixels, spacing = _read_openslide(path)
    else:
        raise InputError(f"{path.name}: unsupported image format {suffix!r} (expected one of {ROI_SUFFIXES + SLIDE_SUFFIXES})")
    pixels = to_rgb_uint8(pixels, path.name)
    spacing_mm, assumed = checked_spacing(spacing, settings, path.name)
    return RoiImage(pixels=pixels, spacing_mm=spacing_mm, spacing_assumed=assumed, path=path)


def _read_tiff(path: Path) -> tuple[np.ndarray, tuple[float, float] | None]:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.pages:
                raise InputError(f"{path.name}: cannot read TIFF (no image pages)")
            page = tif.pages[0]
            if 0 in page.shape:
                raise InputError(f"{path.name}: image has no pixels (shape {page.shape})")
            _check_complete(page, path)
            pixels = page.asarray()
            spacing = tiff_spacing_mm(page)
    except InputError:
        raise
    except Exception as exc:  # tifffile raises many types for damaged files
        raise InputError(f"{path.name}: cannot read TIFF ({first_line(exc)})") from None
    return pixels, spacing


def _check_complete(page, path: Path) -> None:
    """tifffile fills strips/tiles that lie past the end of the file with zeros; refuse instead."""
    size = path.stat().st_size
    if any(o + n > size for o, n in zip(page.dataoffsets, page.databytecounts)):
        raise InputError(f"{path.name}: cannot read TIFF (file is truncated: image data past its end)")


def _read_mha(path: Path) -> tuple[np.ndarray, tuple[float, float] | None]:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"{path.name}: cannot read MHA ({first_line(exc)})") from None
    pixels = sitk.GetArrayFromImage(image)
    if image.GetDimension() == 3 and pixels.shape[0] == 1:
        pixels = pixels[0]
    spacing = tuple(image.GetSpacing()[:2])
    return pixels, spacing  # SimpleITK's spacing is already in mm by convention


def _read_openslide(path: Path) -> tuple[np.ndarray, tuple[float, float] | None]:
    import openslide

    try:
        with openslide.OpenSlide(str(path)) as slide:
            w, h = slide.dimensions
            region = np.asarray(slide.read_region((0, 0), 0, (w, h)))
            props = slide.properties
            mpp = (props.get(openslide.PROPERTY_NAME_MPP_X), props.get(openslide.PROPERTY_NAME_MPP_Y))
    except openslide.OpenSlideError as exc:
        raise InputError(f"{path.name}: cannot read slide ({first_line(exc)})") from None
    spacing = (float(mpp[0]) / 1000, float(mpp[1]) / 1000) if all(mpp) else None
    return region, spacing


def read_stack(path: Path, crop_size: int) -> np.ndarray:
    """Read a Track 2 stack of crops as N x crop_size x crop_size x 3 uint8, in page order."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        pages = _read_tiff_pages(path)
    elif suffix == ".mha":
        pixels, _ = _read_mha(path)
        pages = _split_pages(pixels)
    else:
        raise InputError(f"{path.name}: unsupported stack format {suffix!r} (expected .tif, .tiff or .mha)")
    if not pages:
        raise InputError(f"{path.name}: stack has no pages")
    crops = [to_rgb_uint8(p, f"{path.name} page {i}") for i, p in enumerate(pages)]
    return np.stack([resize_crop(c, crop_size, f"{path.name} page {i}") for i, c in enumerate(crops)])


def _split_pages(pixels: np.ndarray) -> list[np.ndarray]:
    """Pages of an MHA stack: N x H x W x C or N x H x W (gray); a 2-D image is one page."""
    colour_2d = pixels.ndim == 3 and pixels.shape[-1] in (3, 4)
    if pixels.ndim == 4 or (pixels.ndim == 3 and not colour_2d):
        return list(pixels)
    return [pixels]


def _read_tiff_pages(path: Path) -> list[np.ndarray]:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            pages = []
            for page in tif.pages:
                if 0 in page.shape:
                    raise InputError(f"{path.name}: page {len(pages)} has no pixels")
                _check_complete(page, path)
                array = page.asarray()
                # A single page may itself hold the whole stack (N x H x W x C)
                pages.extend(array if array.ndim == 4 else [array])
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path.name}: cannot read TIFF ({first_line(exc)})") from None
    return pages


def resize_crop(crop: np.ndarray, size: int, name: str) -> np.ndarray:
    """Crops of another size are resized (bilinear) to ``size`` x ``size``, with a warning."""
    h, w = crop.shape[:2]
    if (h, w) == (size, size):
        return crop
    warn(f"{name}: crop of {w}x{h} px resized to {size}x{size}")
    return resize_bilinear(crop, (size, size))


def resize_bilinear(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize H x W x C uint8 to ``shape`` (rows, cols) with bilinear interpolation (pixel centres
    aligned, as OpenCV's INTER_LINEAR without antialiasing)."""
    from scipy import ndimage

    h, w = image.shape[:2]
    rows = (np.arange(shape[0]) + 0.5) * (h / shape[0]) - 0.5
    cols = (np.arange(shape[1]) + 0.5) * (w / shape[1]) - 0.5
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    out = np.empty((shape[0], shape[1], image.shape[2]), np.uint8)
    for c in range(image.shape[2]):
        out[..., c] = np.clip(
            ndimage.map_coordinates(image[..., c].astype(np.float32), [rr, cc], order=1, mode="nearest"), 0, 255
        ).round()
    return out


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type when empty), for one-line errors."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
