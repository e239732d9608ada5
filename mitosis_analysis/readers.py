"""Read images into RGB uint8 arrays with their pixel spacing in millimetres.

One reader per format behind one function (TIAToolbox style): ``read_roi`` for Track 1 regions
(TIFF via tifffile, MHA via SimpleITK, slide formats via openslide) and ``read_stack`` for
Track 2 crop stacks. Conversions (grayscale, RGBA, 16-bit, other crop sizes) are done with a
warning; unreadable, truncated or empty images raise ``InputError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import InputError
from .log import warn
from .resample import resample
from .settings import ROI_SUFFIXES, SLIDE_SUFFIXES, Settings
from .validation import IfdChain, MhaHeader, check_pixel_budget, mha_header, shown, tiff_ifd_chain


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
        finite = np.isfinite(a)
        bad = int(a.size - np.count_nonzero(finite))
        if bad == a.size:
            raise InputError(f"{name}: floating-point image without a single finite value; refused")
        lo, hi = float(a[finite].min()), float(a[finite].max())
        scale = 255.0 if hi <= 1.0 else 1.0
        warn(f"{name}: floating-point image, converted to 8 bit (values taken as {'0..1' if scale > 1 else '0..255'})")
        if bad:
            warn(f"{name}: {bad} NaN/infinite values clipped to the finite range ({lo:g}..{hi:g}, NaN as {lo:g})")
            a = np.nan_to_num(a, nan=lo, posinf=hi, neginf=lo)
        return np.clip(a * scale, 0, 255).round().astype(np.uint8)
    raise InputError(f"{name}: unsupported pixel type {a.dtype}")


def palette_to_rgb(indices: np.ndarray, colormap: np.ndarray, name: str) -> np.ndarray:
    """Palette (colour-mapped) pixels -> RGB uint8 through the TIFF colour map (3 x 2**bits,
    16-bit entries)."""
    if colormap is None or indices.ndim != 2:
        raise InputError(f"{name}: palette image without a usable colour map; refused")
    cmap = np.asarray(colormap)
    if cmap.ndim != 2 or cmap.shape[0] != 3 or int(indices.max(initial=0)) >= cmap.shape[1]:
        raise InputError(f"{name}: palette image whose indices exceed its colour map; refused")
    top = 65535.0 if cmap.max(initial=0) > 255 else 255.0  # 16-bit entries, as the spec says; some writers use 8
    warn(f"{name}: palette image, converted to RGB through its colour map")
    lut = np.clip(cmap.T.astype(np.float64) * (255.0 / top), 0, 255).round().astype(np.uint8)
    return lut[indices]


def miniswhite_to_minisblack(pixels: np.ndarray, name: str) -> np.ndarray:
    """MINISWHITE (0 is white) -> MINISBLACK, so that the usual conversions apply."""
    warn(f"{name}: MINISWHITE image (0 = white), inverted")
    if pixels.dtype == np.bool_:
        return ~pixels
    if np.issubdtype(pixels.dtype, np.integer):
        return np.iinfo(pixels.dtype).max - pixels
    return (1.0 if float(np.nanmax(pixels)) <= 1.0 else 255.0) - pixels


def cmyk_to_rgb(pixels: np.ndarray, name: str) -> np.ndarray:
    """CMYK (ink coverage, 0 = no ink) -> RGB uint8: R = (1 - C)(1 - K), etc. Extra samples after
    K are dropped."""
    if np.issubdtype(pixels.dtype, np.integer):
        top = float(np.iinfo(pixels.dtype).max)
    else:
        top = 1.0
    ink = np.clip(pixels[..., :4].astype(np.float32) / top, 0.0, 1.0)
    warn(f"{name}: CMYK image, converted to RGB")
    rgb = (1.0 - ink[..., :3]) * (1.0 - ink[..., 3:4]) * 255.0
    return rgb.round().astype(np.uint8)


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
#
# Every reader checks what the file *declares* (validation.py: IFD chain, pixel budget, MHA
# header) before it decodes a byte of pixel data, and converts pixels as their tags say.


def read_roi(path: Path, settings: Settings) -> RoiImage:
    """Read a Track 1 region of interest (TIFF, MHA, or any slide format openslide reads)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image not found: {shown(path)}")
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        pixels, spacing = _read_tiff(path, settings)
    elif suffix == ".mha":
        pixels, spacing = _read_mha_roi(path, settings)
    elif suffix in SLIDE_SUFFIXES:
        pixels, spacing = _read_openslide(path, settings)
    else:
        raise InputError(
            f"{shown(path.name)}: unsupported image format {shown(suffix)!r} (expected one of {ROI_SUFFIXES + SLIDE_SUFFIXES})"
        )
    name = shown(path.name)
    pixels = to_rgb_uint8(pixels, name)
    spacing_mm, assumed = checked_spacing(spacing, settings, name)
    return RoiImage(pixels=pixels, spacing_mm=spacing_mm, spacing_assumed=assumed, path=path)


def _read_tiff(path: Path, settings: Settings) -> tuple[np.ndarray, tuple[float, float] | None]:
    import tifffile

    name = shown(path.name)
    chain = tiff_ifd_chain(path, settings.max_stack_pages)
    try:
        with tifffile.TiffFile(path) as tif:
            pages = _pages(tif, chain, name)
            page = pages[0]
            # Further pages may be a pyramid level or thumbnail (NewSubfileType bit 0, reduced
            # resolution) or a mask (bit 2) of the same image; another full-resolution page would
            # be silently ignored: refuse.
            extra = [i for i, p in enumerate(pages[1:], 1) if not (p.subfiletype & 0b101)]
            if extra:
                raise InputError(
                    f"{name}: a Track 1 region is one image, this TIFF holds {len(extra) + 1} full-size pages "
                    "(a Track 2 stack?); refused"
                )
            if page.imagedepth > 1:
                raise InputError(f"{name}: a 3-D volume (depth {page.imagedepth}) is not a 2-D region; refused")
            pixels = decode_page(page, path, settings.max_image_pixels)
            spacing = tiff_spacing_mm(page)
    except InputError:
        raise
    except Exception as exc:  # tifffile raises many types for damaged files
        raise InputError(f"{name}: cannot read TIFF ({shown(first_line(exc))})") from None
    return pixels, spacing


def _pages(tif, chain: IfdChain, name: str) -> list:
    """tifffile's pages, which must be all the IFDs of the chain (tifffile stops quietly at a
    damaged IFD)."""
    pages = list(tif.pages)
    if len(pages) != len(chain.offsets):
        raise InputError(f"{name}: cannot read TIFF (page {len(pages)} of {len(chain.offsets)} is damaged)")
    return pages


def decode_page(page, path: Path, budget: int) -> np.ndarray:
    """One TIFF page's pixels, after its declared size was checked against ``budget``, converted
    as its photometric tag says: palette through the colour map, MINISWHITE inverted, CMYK to RGB.
    Other photometric interpretations are refused."""
    import tifffile

    name = shown(path.name)
    if 0 in page.shape:
        raise InputError(f"{name}: image has no pixels (shape {page.shape})")
    check_pixel_budget(page.imagewidth, page.imagelength, budget, name, depth=page.imagedepth)
    _check_complete(page, path)
    photometric = tifffile.PHOTOMETRIC
    kind = page.photometric
    if kind == photometric.YCBCR and page.compression not in JPEG_COMPRESSIONS:
        raise InputError(f"{name}: uncompressed YCbCr TIFF is not supported; refused")
    if kind not in (photometric.MINISBLACK, photometric.MINISWHITE, photometric.RGB, photometric.PALETTE,
                    photometric.SEPARATED, photometric.YCBCR):
        raise InputError(f"{name}: unsupported photometric interpretation {kind.name}; refused")
    pixels = page.asarray()
    if page.planarconfig == 2 and pixels.ndim == 3:
        pixels = np.moveaxis(pixels, 0, -1)  # separate planes -> H x W x S
    if kind == photometric.PALETTE:
        return palette_to_rgb(pixels, page.colormap, name)
    if kind == photometric.MINISWHITE:
        return miniswhite_to_minisblack(pixels, name)
    if kind == photometric.SEPARATED:
        inkset = page.tags.get("InkSet")
        if (inkset is not None and int(inkset.value) != 1) or pixels.ndim != 3 or pixels.shape[-1] < 4:
            raise InputError(f"{name}: separated (ink) image that is not CMYK; refused")
        return cmyk_to_rgb(pixels, name)
    return pixels


# Compressions whose decoder turns YCbCr into RGB (JPEG, old JPEG, JPEG 2000 variants)
JPEG_COMPRESSIONS = (6, 7, 33003, 33004, 33005, 33007, 34712, 34892)


def _check_complete(page, path: Path) -> None:
    """tifffile fills strips/tiles that lie past the end of the file with zeros; refuse instead."""
    size = path.stat().st_size
    if any(o + n > size for o, n in zip(page.dataoffsets, page.databytecounts)):
        raise InputError(f"{shown(path.name)}: cannot read TIFF (file is truncated: image data past its end)")


def _read_mha(path: Path, budget: int) -> tuple[np.ndarray, tuple[float, float] | None, MhaHeader]:
    import SimpleITK as sitk

    header = mha_header(path, budget)  # before SimpleITK sees the file
    try:
        image = sitk.ReadImage(str(path))
        pixels = sitk.GetArrayFromImage(image)
    except RuntimeError as exc:
        raise InputError(f"{shown(path.name)}: cannot read MHA ({shown(first_line(exc))})") from None
    spacing = tuple(image.GetSpacing()[:2])
    return pixels, spacing, header  # SimpleITK's spacing is already in mm by convention


def _read_mha_roi(path: Path, settings: Settings) -> tuple[np.ndarray, tuple[float, float] | None]:
    pixels, spacing, header = _read_mha(path, settings.max_image_pixels)
    if len(header.dims) == 3:
        if header.dims[2] != 1:
            raise InputError(
                f"{shown(path.name)}: a 3-D volume of {header.dims[2]} slices is not a 2-D region; refused"
            )
        pixels = pixels[0]
    if header.channels == 1 and pixels.ndim == 2:
        return pixels, spacing
    return pixels.reshape(header.dims[1], header.dims[0], header.channels), spacing


def _read_openslide(path: Path, settings: Settings) -> tuple[np.ndarray, tuple[float, float] | None]:
    import openslide

    try:
        with openslide.OpenSlide(str(path)) as slide:
            w, h = slide.dimensions
            check_pixel_budget(w, h, settings.max_image_pixels, shown(path.name))
            region = np.asarray(slide.read_region((0, 0), 0, (w, h)))
            props = slide.properties
            mpp = (props.get(openslide.PROPERTY_NAME_MPP_X), props.get(openslide.PROPERTY_NAME_MPP_Y))
    except openslide.OpenSlideError as exc:
        raise InputError(f"{shown(path.name)}: cannot read slide ({shown(first_line(exc))})") from None
    spacing = (float(mpp[0]) / 1000, float(mpp[1]) / 1000) if all(mpp) else None
    return region, spacing


def read_stack(path: Path, crop_size: int, settings: Settings) -> Iterator[np.ndarray]:
    """A Track 2 stack of crops, in page order, as chunks of at most ``settings.stack_chunk_pages``
    crops (n x crop_size x crop_size x 3 uint8; ``crop_size`` is the weights' plan), so that memory does not grow with the stack.
    Structure (IFD chain, page count, MHA header) is checked before the first chunk is made."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image not found: {shown(path)}")
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        chain = tiff_ifd_chain(path, settings.max_stack_pages)
        pages = _tiff_stack_pages(path, chain, settings)
    elif suffix == ".mha":
        header = mha_header(path, settings.max_stack_pixels)
        check_pixel_budget(header.dims[0], header.dims[1], settings.max_image_pixels, f"{shown(path.name)} (one page)")
        pixels, _, header = _read_mha(path, settings.max_stack_pixels)
        pages = iter(_split_pages(pixels, header))
    else:
        raise InputError(f"{shown(path.name)}: unsupported stack format {shown(suffix)!r} (expected .tif, .tiff or .mha)")
    return _chunks(pages, path, crop_size, settings)


def _chunks(pages: Iterator[np.ndarray], path: Path, size: int, settings: Settings) -> Iterator[np.ndarray]:
    name, chunk = shown(path.name), []
    n = 0
    for page in pages:
        label = f"{name} page {n}"
        chunk.append(resize_crop(to_rgb_uint8(page, label), size, label))
        n += 1
        if len(chunk) == settings.stack_chunk_pages:
            yield np.stack(chunk)
            chunk = []
    if chunk:
        yield np.stack(chunk)
    elif n == 0:
        raise InputError(f"{name}: stack has no pages")


def _split_pages(pixels: np.ndarray, header: MhaHeader) -> list[np.ndarray]:
    """Pages of an MHA stack, from its header: x, y, z with channels -> z pages of y x x (x c)."""
    x, y = header.dims[:2]
    z = header.dims[2] if len(header.dims) == 3 else 1
    shape = (z, y, x) if header.channels == 1 else (z, y, x, header.channels)
    return list(pixels.reshape(shape))


def _tiff_stack_pages(path: Path, chain: IfdChain, settings: Settings) -> Iterator[np.ndarray]:
    import tifffile

    name = shown(path.name)
    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:
        raise InputError(f"{name}: cannot read TIFF ({shown(first_line(exc))})") from None
    tif.pages.cache = False  # page objects are dropped once read: memory stays flat
    tif.pages.useframes = False

    def pages() -> Iterator[np.ndarray]:
        with tif:
            for index in range(len(chain.offsets)):
                try:
                    page = tif.pages[index]
                    if page.offset != chain.offsets[index]:
                        raise InputError(f"{name}: cannot read TIFF (page {index} is damaged)")
                    array = decode_page(page, path, settings.max_image_pixels)
                except InputError:
                    raise
                except Exception as exc:
                    raise InputError(f"{name}: cannot read TIFF page {index} ({shown(first_line(exc))})") from None
                # A single page may itself hold a stack (N x H x W x C)
                yield from (array if array.ndim == 4 else [array])

    return pages()


def resize_crop(crop: np.ndarray, size: int, name: str) -> np.ndarray:
    """Crops of another size are resized (``resample``) to ``size`` x ``size``, with a warning."""
    h, w = crop.shape[:2]
    if (h, w) == (size, size):
        return crop
    warn(f"{name}: crop of {w}x{h} px resized to {size}x{size}")
    return resample(crop, (size, size))


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type when empty), for one-line errors."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
