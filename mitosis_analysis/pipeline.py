"""The two tracks end to end, on arrays: read -> tile -> infer -> stitch -> points -> classify.

All functions here take pixels and return candidates; reading files and writing JSON is done by
the callers (``commands/process.py``, the slide mode, the benchmark). Coordinates are in pixels of
the image passed in, pixel centres at integer positions.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .candidates import Candidate, find_candidates, suppress_duplicates
from .classify import classify_crops, extract_crops
from .inference import Models
from .readers import RoiImage, resize_bilinear
from .log import warn
from .settings import Settings
from .stitching import Stitcher
from .tiling import iter_batches, pad_to_tile, tile_grid
from .timing import StageTimer
from .tissue import tissue_fraction
from .validation import check_pixel_budget, shown


def mitosis_probability_map(
    pixels: np.ndarray, models: Models, settings: Settings, timer: StageTimer | None = None
) -> np.ndarray:
    """H x W float32 probability of the mitosis class, tiles blended with Gaussian weights.

    Tiles with (almost) no tissue are skipped and count as probability 0.
    """
    timer = timer or StageTimer()
    height, width = pixels.shape[:2]
    tile = settings.tile_size
    with timer.stage("tiling"):
        padded = pad_to_tile(pixels, tile)
        tiles = tile_grid(padded.shape[0], padded.shape[1], tile, settings.stride())
        stitcher = Stitcher(padded.shape[0], padded.shape[1], tile)
    for batch_tiles, batch in iter_batches(padded, tiles, tile, settings.batch_size):
        with timer.stage("tiling"):
            keep = np.array([tissue_fraction(t) >= settings.min_tissue_fraction for t in batch])
        with timer.stage("inference"):
            probs = np.zeros(batch.shape[:3], np.float32)
            if keep.any():
                probs[keep] = models.mitosis_probability(batch[keep])
        with timer.stage("stitching"):
            stitcher.add(batch_tiles, probs)
    with timer.stage("stitching"):
        return stitcher.result(height, width)


def detect_candidates(
    pixels: np.ndarray, models: Models, settings: Settings, timer: StageTimer | None = None
) -> list[Candidate]:
    """Scored candidates (mitosis probability >= the floor), duplicates within the NMS radius
    removed. ``pixels`` must be at the models' spacing."""
    timer = timer or StageTimer()
    probability = mitosis_probability_map(pixels, models, settings, timer)
    with timer.stage("postprocessing"):
        candidates = find_candidates(probability, settings.candidate_floor, settings.min_candidate_area_px)
        radius_px = settings.nms_radius_mm / models.manifest.spacing_mm
        return suppress_duplicates(candidates, radius_px)


def classify_candidates(
    pixels: np.ndarray, candidates: list[Candidate], models: Models, settings: Settings,
    timer: StageTimer | None = None,
) -> list[Candidate]:
    """Candidates with ``p_atypical`` from a crop centred on each (``pixels`` at model spacing).

    Only the candidates that reach the detection threshold (the "mitotic figures") are classified,
    unless ``settings.classify_all_candidates``: the others stay ``p_atypical=None``. Atypia is a
    property of mitoses, and a synthetic or noisy ROI can hold thousands of low-score candidates.
    """
    timer = timer or StageTimer()
    threshold = 0.0 if settings.classify_all_candidates else models.manifest.thresholds.detection
    chosen = [i for i, c in enumerate(candidates) if c.score >= threshold]
    with timer.stage("classification"):
        centres = np.array([[candidates[i].x, candidates[i].y] for i in chosen], np.float64).reshape(-1, 2)
        p = classify_stack(extract_crops(pixels, centres, settings.crop_size), models, settings)
    result = list(candidates)
    for i, pi in zip(chosen, p):
        result[i] = replace(result[i], p_atypical=float(pi))
    return result


def analyse_roi(roi: RoiImage, models: Models, settings: Settings, timer: StageTimer | None = None) -> list[Candidate]:
    """Track 1 on one ROI: candidates with scores and P(atypical), in the ROI's own pixels.

    An ROI whose spacing differs from the models' by more than the tolerance is resampled to the
    models' spacing first (said on stderr) and the points are mapped back.
    """
    timer = timer or StageTimer()
    pixels, scale = at_model_spacing(roi, models.manifest.spacing_mm, settings)
    candidates = detect_candidates(pixels, models, settings, timer)
    candidates = classify_candidates(pixels, candidates, models, settings, timer)
    if scale != (1.0, 1.0):
        candidates = [_rescaled(c, scale) for c in candidates]
    return candidates


def classify_stack(crops: np.ndarray, models: Models, settings: Settings) -> np.ndarray:
    """P(atypical) per crop (N x S x S x 3 uint8), batched and with the flip TTA of ``settings``:
    Track 2's stacks and Track 1's crops around candidates alike."""
    return classify_crops(models.atypical_probability, crops, settings.classifier_batch_size, settings.classifier_tta)


def at_model_spacing(roi: RoiImage, model_spacing_mm: float, settings: Settings) -> tuple[np.ndarray, tuple[float, float]]:
    """The ROI's pixels at the models' spacing, and the (x, y) factors from model pixels back to
    ROI pixels (1.0 when no resampling was needed)."""
    fx, fy = (model_spacing_mm / s for s in roi.spacing_mm)  # ROI px per model px
    if abs(fx - 1) <= settings.spacing_tolerance and abs(fy - 1) <= settings.spacing_tolerance:
        return roi.pixels, (1.0, 1.0)
    h, w = roi.shape
    shape = (max(1, round(h / fy)), max(1, round(w / fx)))
    # an ROI tagged at a coarse spacing would be blown up to a size no pipeline run can hold
    check_pixel_budget(
        shape[1], shape[0], settings.max_image_pixels,
        f"{shown(roi.path.name)} at {roi.spacing_mm[0] * 1000:.3g} um/px, resampled to the models' "
        f"{model_spacing_mm * 1000:.3g} um/px",
    )
    warn(
        f"{shown(roi.path.name)}: spacing {roi.spacing_mm[0] * 1000:.3f} um/px differs from the models' "
        f"{model_spacing_mm * 1000:.3f} um/px; resampling {w}x{h} -> {shape[1]}x{shape[0]} px"
    )
    return resize_bilinear(roi.pixels, shape), (w / shape[1], h / shape[0])


def _rescaled(c: Candidate, scale: tuple[float, float]) -> Candidate:
    # pixel centres: model px i covers ROI px [i*s, (i+1)*s) whose centre is (i + 0.5) * s - 0.5
    return replace(c, x=(c.x + 0.5) * scale[0] - 0.5, y=(c.y + 0.5) * scale[1] - 0.5)
