"""Whole-slide files behind the package's one source interface (``source.SlideSource``).

Two backends:

* ``OpenSlideSource``: every format openslide reads (svs, ndpi, mrxs, scn, generic tiled TIFF
  whose pyramid levels are in the main IFD chain, ...);
* ``TiffSource``: plain and pyramidal TIFF through tifffile (tiled or stripped, pyramids stored
  as SubIFDs or as reduced-resolution pages). Only the tiles or strips that a region touches are
  read and decoded, so a region costs memory in proportion to its own size.

``source.SlideView`` puts them on the working grid (pixels at the models' spacing), as it does
a Track 1 ROI. ``thumbnail`` reads a low-resolution picture of the whole slide block by block (for
the tissue mask and the overview).

Pixel coordinates follow the package's convention: pixel centres at integer positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import InputError
from ..log import warn
from ..readers import checked_spacing, first_line, tiff_spacing_mm
from ..resample import resample
from ..settings import Settings
from ..source import Level, SlideReadError, SlideSource

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8")
Backend = Literal["auto", "openslide", "tifffile"]
WHITE = 255


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
    ``block`` level pixels at a time, each block shrunk by an integer factor (``resample``)."""
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
            out[y // k : y // k + math.ceil(h / k), x // k : x // k + math.ceil(w / k)] = _reduced(pixels, k)
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


def _reduced(pixels: np.ndarray, k: int) -> np.ndarray:
    """``pixels`` shrunk ``k`` times (antialiased); partial blocks at the right/bottom repeat the edge."""
    if k == 1:
        return pixels
    h, w = math.ceil(pixels.shape[0] / k), math.ceil(pixels.shape[1] / k)
    return resample(pixels, (h, w), (0.0, 0.0, float(w * k), float(h * k)))
