"""Whole-slide access one region at a time, at the models' pixel spacing.

Two backends behind one interface (``SlideSource``):

* ``OpenSlideSource``: every format openslide reads (svs, ndpi, mrxs, scn, generic tiled TIFF
  whose pyramid levels are in the main IFD chain, ...);
* ``TiffSource``: plain and pyramidal TIFF through tifffile (tiled or stripped, pyramids stored
  as SubIFDs or as reduced-resolution pages). Only the tiles or strips that a region touches are
  read and decoded, so a region costs memory in proportion to its own size.

``SlideView`` puts a pyramid level under the working grid (pixels at the models' spacing): the
level whose spacing is within the tolerance of the target is read as it is; when none is, the
coarsest level finer than the target is read and resampled (bilinear). ``thumbnail`` reads a
low-resolution picture of the whole slide block by block (for the tissue mask and the overview).

Pixel coordinates follow the package's convention: pixel centres at integer positions.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import InputError
from ..log import warn
from ..readers import checked_spacing, first_line, tiff_spacing_mm
from ..settings import Settings

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8")
Backend = Literal["auto", "openslide", "tifffile"]
WHITE = 255


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


# --------------------------------------------------------------------------- openslide


class OpenSlideSource(SlideSource):
    backend = "openslide"

    def __init__(self, path: Path, settings: Settings):
        import openslide

        self.path = Path(path)
        self._openslide = openslide
        self._slide = self._open()
        props = self._slide.properties
        mpp = (props.get(openslide.PROPERTY_NAME_MPP_X), props.get(openslide.PROPERTY_NAME_MPP_Y))
        given = (float(mpp[0]) / 1000, float(mpp[1]) / 1000) if all(mpp) else None
        spacing0, self.spacing_assumed = checked_spacing(given, settings, self.path.name)
        w0, h0 = self._slide.dimensions
        if w0 == 0 or h0 == 0:
            raise InputError(f"{self.path.name}: slide has no pixels")
        self.levels = [
            Level(w, h, (spacing0[0] * w0 / w, spacing0[1] * h0 / h)) for w, h in self._slide.level_dimensions
        ]

    def _open(self):
        try:
            return self._openslide.OpenSlide(str(self.path))
        except (self._openslide.OpenSlideError, self._openslide.OpenSlideUnsupportedFormatError) as exc:
            raise InputError(f"{self.path.name}: cannot open slide ({first_line(exc)})") from None

    def read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        self._check_box(level, x, y, width, height)
        w0 = self.levels[0].width / self.levels[level].width
        h0 = self.levels[0].height / self.levels[level].height
        location = (int(round(x * w0)), int(round(y * h0)))  # openslide wants level-0 coordinates
        try:
            rgba = np.asarray(self._slide.read_region(location, level, (width, height)))
        except self._openslide.OpenSlideError as exc:
            # openslide's errors are sticky: the handle refuses every later call, so reopen it
            self._slide.close()
            self._slide = self._open()
            raise SlideReadError(first_line(exc)) from None
        return _composite_on_white(rgba)

    def close(self) -> None:
        self._slide.close()


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """openslide returns (un-premultiplied) RGBA; unscanned areas are transparent -> glass white."""
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    if np.all(alpha == 255):
        return np.ascontiguousarray(rgb)
    a = alpha.astype(np.float32) / 255.0
    return np.ascontiguousarray((rgb * a + WHITE * (1.0 - a)).round().astype(np.uint8))


# --------------------------------------------------------------------------- tifffile


class TiffSource(SlideSource):
    backend = "tifffile"

    def __init__(self, path: Path, settings: Settings):
        import tifffile

        self.path = Path(path)
        try:
            self._tif = tifffile.TiffFile(self.path)
        except Exception as exc:  # tifffile raises many types for damaged files
            raise InputError(f"{self.path.name}: cannot read TIFF ({first_line(exc)})") from None
        try:
            series = self._tif.series[0] if self._tif.series else None
            pages = [lv.keyframe for lv in series.levels] if series is not None else []
        except Exception as exc:
            self._tif.close()
            raise InputError(f"{self.path.name}: cannot read TIFF ({first_line(exc)})") from None
        try:
            if not pages:
                raise InputError(f"{self.path.name}: TIFF has no image")
            for page in pages:
                self._check_page(page)
        except InputError:
            self._tif.close()
            raise
        self._pages = pages
        spacing0, self.spacing_assumed = checked_spacing(tiff_spacing_mm(pages[0]), settings, self.path.name)
        w0, h0 = pages[0].imagewidth, pages[0].imagelength
        self.levels = [
            Level(p.imagewidth, p.imagelength, (spacing0[0] * w0 / p.imagewidth, spacing0[1] * h0 / p.imagelength))
            for p in pages
        ]

    def _check_page(self, page) -> None:
        name = self.path.name
        if page.imagewidth == 0 or page.imagelength == 0:
            raise InputError(f"{name}: image has no pixels ({page.imagewidth}x{page.imagelength})")
        if page.dtype != np.uint8:
            raise InputError(f"{name}: slide mode reads 8-bit images only (this one is {page.dtype})")
        if page.samplesperpixel not in (1, 3, 4) or page.imagedepth != 1:
            raise InputError(f"{name}: unsupported layout ({page.samplesperpixel} samples, depth {page.imagedepth})")
        if page.samplesperpixel > 1 and page.planarconfig != 1:
            raise InputError(f"{name}: planar (separate-plane) TIFF is not supported in slide mode")

    def read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        self._check_box(level, x, y, width, height)
        page = self._pages[level]
        rows, cols = page.chunked[0], page.chunked[1]
        ch, cw = page.chunks[0], page.chunks[1]
        r0, r1 = y // ch, min(rows, (y + height - 1) // ch + 1)
        c0, c1 = x // cw, min(cols, (x + width - 1) // cw + 1)
        indices = [r * cols + c for r in range(r0, r1) for c in range(c0, c1)]
        spp = page.samplesperpixel
        out = np.full((height, width, spp), WHITE, np.uint8)
        offsets, counts = page.dataoffsets, page.databytecounts
        fh = self._tif.filehandle
        past_end = [i for i in indices if counts[i] and offsets[i] + counts[i] > fh.size]
        if past_end:  # a truncated file: these tiles are missing, not glass
            raise SlideReadError(f"file is truncated: {len(past_end)} of its tiles lie past its end")
        try:
            segments = fh.read_segments([offsets[i] for i in indices], [counts[i] for i in indices], indices)
            for data, index in segments:
                if not data:
                    continue  # sparse TIFF: tile never written, leave it as glass
                tile, _, shape = page.decode(data, index, jpegtables=page.jpegtables, jpegheader=page.jpegheader)
                tile = np.asarray(tile).reshape(shape[-3:]) if tile is not None else None
                if tile is None:
                    continue
                ty, tx = (index // cols) * ch, (index % cols) * cw
                self._paste(out, tile, ty - y, tx - x)
        except SlideReadError:
            raise
        except Exception as exc:  # decoders raise assorted types on damaged data
            raise SlideReadError(first_line(exc)) from None
        if spp == 1:
            return np.repeat(out, 3, axis=-1)
        return np.ascontiguousarray(out[..., :3])

    @staticmethod
    def _paste(out: np.ndarray, tile: np.ndarray, dy: int, dx: int) -> None:
        th, tw = tile.shape[:2]
        oy0, ox0 = max(0, dy), max(0, dx)
        oy1, ox1 = min(out.shape[0], dy + th), min(out.shape[1], dx + tw)
        if oy1 > oy0 and ox1 > ox0:
            out[oy0:oy1, ox0:ox1] = tile[oy0 - dy : oy1 - dy, ox0 - dx : ox1 - dx].reshape(oy1 - oy0, ox1 - ox0, -1)

    def close(self) -> None:
        self._tif.close()


# --------------------------------------------------------------------------- opening


def open_slide(path: Path, settings: Settings, backend: Backend = "auto") -> SlideSource:
    """Open ``path`` with the requested backend. ``auto``: TIFF files go to tifffile unless
    openslide recognises a vendor format in them (Aperio, Philips, Ventana, ...); every other
    slide format goes to openslide."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"slide not found: {path}")
    suffix = path.suffix.lower()
    if backend == "auto":
        backend = "tifffile" if suffix in TIFF_SUFFIXES and not _openslide_vendor(path) else "openslide"
    if backend == "tifffile":
        if suffix not in TIFF_SUFFIXES:
            raise InputError(f"{path.name}: the tifffile reader reads TIFF only (got {suffix!r})")
        return TiffSource(path, settings)
    return OpenSlideSource(path, settings)


def _openslide_vendor(path: Path) -> bool:
    try:
        import openslide

        vendor = openslide.OpenSlide.detect_format(str(path))
    except Exception:
        return False
    return vendor not in (None, "generic-tiff")


# --------------------------------------------------------------------------- working grid


class SlideView:
    """The slide on the working grid: pixels at ``target_spacing_mm`` (within the tolerance).

    ``level`` is the pyramid level read; ``scale`` = level pixels per working pixel (x, y);
    1.0 when the level is used as it is.
    """

    def __init__(self, source: SlideSource, target_spacing_mm: float, tolerance: float):
        self.source = source
        self.level, resample = choose_level(source.levels, target_spacing_mm, tolerance)
        lv = source.levels[self.level]
        if resample:
            self.spacing_mm = (target_spacing_mm, target_spacing_mm)
            self.scale = (target_spacing_mm / lv.spacing_mm[0], target_spacing_mm / lv.spacing_mm[1])
            self.width = max(1, round(lv.width / self.scale[0]))
            self.height = max(1, round(lv.height / self.scale[1]))
            direction = "downsampling" if min(self.scale) >= 1 else "UPSAMPLING (the slide is coarser than the models)"
            warn(
                f"{source.path.name}: no level within {tolerance:.0%} of {target_spacing_mm * 1000:g} um/px; "
                f"{direction} level {self.level} ({lv.spacing_mm[0] * 1000:.4g} um/px)"
            )
        else:
            self.spacing_mm = lv.spacing_mm
            self.scale = (1.0, 1.0)
            self.width, self.height = lv.width, lv.height

    @property
    def resampled(self) -> bool:
        return self.scale != (1.0, 1.0)

    def read(self, x: int, y: int, width: int, height: int) -> np.ndarray:
        """``height`` x ``width`` x 3 uint8 of the working grid, box inside the grid."""
        if not self.resampled:
            return self.source.read(self.level, x, y, width, height)
        lv = self.source.levels[self.level]
        sx, sy = self.scale
        # level coordinates of the working pixel centres: u = (i + 0.5) * s - 0.5
        cols = (np.arange(x, x + width) + 0.5) * sx - 0.5
        rows = (np.arange(y, y + height) + 0.5) * sy - 0.5
        lx0 = max(0, int(math.floor(cols[0])))
        ly0 = max(0, int(math.floor(rows[0])))
        lx1 = min(lv.width, int(math.ceil(cols[-1])) + 2)
        ly1 = min(lv.height, int(math.ceil(rows[-1])) + 2)
        block = self.source.read(self.level, lx0, ly0, lx1 - lx0, ly1 - ly0)
        return _bilinear_at(block, rows - ly0, cols - lx0)

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


def _bilinear_at(block: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Sample ``block`` (H x W x C uint8) at the grid rows x cols (floats) bilinearly."""
    from scipy import ndimage

    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    out = np.empty((len(rows), len(cols), block.shape[2]), np.uint8)
    for c in range(block.shape[2]):
        out[..., c] = np.clip(
            ndimage.map_coordinates(block[..., c].astype(np.float32), [rr, cc], order=1, mode="nearest"), 0, 255
        ).round()
    return out


# --------------------------------------------------------------------------- thumbnail


@dataclass(frozen=True)
class Thumbnail:
    pixels: np.ndarray  # H x W x 3 uint8
    spacing_mm: tuple[float, float]  # (x, y) size of one thumbnail pixel, mm
    # H x W bool: thumbnail pixels whose block could not be read (shown as glass); the regions
    # under them are tried anyway, so that their damage is reported rather than taken for glass
    unreadable: np.ndarray | None = None


def thumbnail(source: SlideSource, max_side: int, min_spacing_mm: float, block: int = 2048) -> Thumbnail:
    """The whole slide as a small picture: its long side at most ``max_side`` px and its pixels no
    finer than ``min_spacing_mm``. Read from the coarsest level that is fine enough, ``block`` x
    ``block`` level pixels at a time, each block averaged down by an integer factor."""
    s0 = source.levels[0].spacing_mm
    extent = max(source.levels[0].width * s0[0], source.levels[0].height * s0[1])
    wanted = max(min_spacing_mm, extent / max_side)
    fine_enough = [i for i, lv in enumerate(source.levels) if max(lv.spacing_mm) <= wanted]
    level = max(fine_enough) if fine_enough else 0
    lv = source.levels[level]
    k = max(1, math.ceil(wanted / max(lv.spacing_mm) - 1e-9))
    out_w, out_h = math.ceil(lv.width / k), math.ceil(lv.height / k)
    out = np.empty((out_h, out_w, 3), np.uint8)
    unreadable = np.zeros((out_h, out_w), bool)
    step = max(k, block // k * k)
    failures: list[tuple[int, int, int, int, str]] = []
    for y in range(0, lv.height, step):
        for x in range(0, lv.width, step):
            w, h = min(step, lv.width - x), min(step, lv.height - y)
            pixels = _read_or_split(source, level, x, y, w, h, failures)
            out[y // k : y // k + math.ceil(h / k), x // k : x // k + math.ceil(w / k)] = _block_mean(pixels, k)
    for fx, fy, fw, fh, _ in failures:
        unreadable[fy // k : math.ceil((fy + fh) / k), fx // k : math.ceil((fx + fw) / k)] = True
    if failures:
        warn(
            f"{source.path.name}: {len(failures)} thumbnail blocks of level {level} unreadable ({failures[0][4]}); "
            "shown as glass, the regions under them are tried"
        )
    return Thumbnail(out, (lv.spacing_mm[0] * k, lv.spacing_mm[1] * k), unreadable if unreadable.any() else None)


def _read_or_split(source: SlideSource, level: int, x: int, y: int, w: int, h: int,
                   failures: list, min_side: int = 256) -> np.ndarray:
    """``source.read``; a block that cannot be read is split in four and retried down to
    ``min_side`` px, so that one damaged tile does not blank a whole block. Unreadable parts are
    glass, recorded in ``failures`` as (x, y, w, h, reason)."""
    try:
        return source.read(level, x, y, w, h)
    except SlideReadError as exc:
        if max(w, h) <= min_side:
            failures.append((x, y, w, h, str(exc)))
            return np.full((h, w, 3), WHITE, np.uint8)
    out = np.empty((h, w, 3), np.uint8)
    hw, hh = max(1, w // 2), max(1, h // 2)
    for sy, sh in ((0, hh), (hh, h - hh)):
        for sx, sw in ((0, hw), (hw, w - hw)):
            if sw > 0 and sh > 0:
                out[sy : sy + sh, sx : sx + sw] = _read_or_split(source, level, x + sx, y + sy, sw, sh, failures, min_side)
    return out


def _block_mean(pixels: np.ndarray, k: int) -> np.ndarray:
    """Average ``k`` x ``k`` blocks; partial blocks at the right/bottom are edge-padded."""
    if k == 1:
        return pixels
    h, w = pixels.shape[:2]
    ph, pw = math.ceil(h / k) * k, math.ceil(w / k) * k
    if (ph, pw) != (h, w):
        pixels = np.pad(pixels, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
    blocks = pixels.reshape(ph // k, k, pw // k, k, 3).astype(np.float32)
    return blocks.mean(axis=(1, 3)).round().astype(np.uint8)
