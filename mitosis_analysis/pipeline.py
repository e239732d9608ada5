"""The two tracks end to end, on arrays: read -> tile -> infer -> stitch -> points -> classify.

Stage 1 proposes candidates (``detect_candidates``); stage 2, when the weights have a verifier,
scores each on a crop around it (``verify_candidates``); the mitotic figures then get P(atypical)
(``classify_candidates``). Whether a candidate is a mitotic figure is ``decision.is_mitosis``.

All functions here take pixels and return candidates; reading files and writing JSON is done by
the callers (``commands/process.py``, the slide mode, the benchmark). Coordinates are in pixels of
the image passed in, pixel centres at integer positions.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .candidates import Candidate, find_candidates, suppress_duplicates
from .classify import classify_crops, extract_crops
from .decision import is_mitosis, logit
from .inference import Models
from .readers import RoiImage, resize_bilinear
from .log import warn
from .settings import Settings
from .stitching import Stitcher
from .tiling import iter_batches, pad_to_tile, tile_grid
from .timing import StageTimer
from .tissue import tissue_fraction
from .validation import check_pixel_budget, shown


# The logit given to pixels that no inferred tile covers (blank glass): far below any floor.
GLASS_LOGIT = -30.0


def mitosis_logit_map(
    pixels: np.ndarray, models: Models, settings: Settings, timer: StageTimer | None = None
) -> np.ndarray:
    """H x W float32 mitosis logit, tiles blended with Gaussian weights (the manifest's plan).

    Tiles with (almost) no tissue are not inferred and take no part in the blending; pixels that
    no inferred tile covers get ``GLASS_LOGIT``.
    """
    timer = timer or StageTimer()
    plan = models.manifest.plan
    height, width = pixels.shape[:2]
    tile = plan.tile_size
    with timer.stage("tiling"):
        padded = pad_to_tile(pixels, tile)
        tiles = tile_grid(padded.shape[0], padded.shape[1], tile, plan.stride())
        stitcher = Stitcher(padded.shape[0], padded.shape[1], tile)
    for batch_tiles, batch in iter_batches(padded, tiles, tile, settings.batch_size):
        with timer.stage("tiling"):
            keep = np.array([tissue_fraction(t) >= plan.min_tissue_fraction for t in batch])
        if not keep.any():
            continue
        with timer.stage("inference"):
            logits = models.mitosis_logit(batch[keep])
        with timer.stage("stitching"):
            stitcher.add([t for t, k in zip(batch_tiles, keep) if k], logits)
    with timer.stage("stitching"):
        return stitcher.result(height, width, empty=GLASS_LOGIT)


def detect_candidates(
    pixels: np.ndarray, models: Models, settings: Settings, timer: StageTimer | None = None
) -> list[Candidate]:
    """Scored candidates (local maxima of the mitosis logit at or above the manifest's floor),
    duplicates within the suppression radius removed. ``pixels`` must be at the models' spacing."""
    timer = timer or StageTimer()
    manifest = models.manifest
    logits = mitosis_logit_map(pixels, models, settings, timer)
    with timer.stage("postprocessing"):
        candidates = find_candidates(logits, manifest.thresholds.candidate_floor_logit,
                                     manifest.plan.centroid_radius_mm / manifest.spacing_mm)
        return suppress_duplicates(candidates, manifest.plan.suppression_radius_mm / manifest.spacing_mm)


def classify_candidates(
    pixels: np.ndarray, candidates: list[Candidate], models: Models, settings: Settings,
    timer: StageTimer | None = None,
) -> list[Candidate]:
    """Candidates with ``atypical_logit`` from a crop centred on each (``pixels`` at model spacing).

    Only the candidates that reach the detection threshold (the "mitotic figures") are classified,
    unless the plan's ``classify_all_candidates``: the others stay ``atypical_logit=None``. Atypia
    is a property of mitoses, and a noisy ROI can hold thousands of low-score candidates.
    """
    timer = timer or StageTimer()
    plan = models.manifest.plan
    thresholds = models.manifest.thresholds
    chosen = [i for i, c in enumerate(candidates) if plan.classify_all_candidates or is_mitosis(c, thresholds)]
    with timer.stage("classification"):
        centres = np.array([[candidates[i].x, candidates[i].y] for i in chosen], np.float64).reshape(-1, 2)
        z = classify_stack(extract_crops(pixels, centres, plan.crop_size), models, settings)
    result = list(candidates)
    for i, zi in zip(chosen, z):
        result[i] = replace(result[i], atypical_logit=float(zi))
    return result


def verify_candidates(
    pixels: np.ndarray, candidates: list[Candidate], models: Models, settings: Settings,
    timer: StageTimer | None = None,
) -> list[Candidate]:
    """Stage 2, when the weights have a verifier: ``verification_logit`` of every candidate from a
    crop centred on it (``pixels`` at model spacing). Without a verifier, candidates pass unchanged."""
    if models.verifier is None or not candidates:
        return list(candidates)
    timer = timer or StageTimer()
    with timer.stage("verification"):
        centres = np.array([[c.x, c.y] for c in candidates], np.float64)
        crops = extract_crops(pixels, centres, models.manifest.verifier.input_size)
        z = np.concatenate([models.verification_logit(crops[i : i + settings.classifier_batch_size])
                            for i in range(0, len(crops), settings.classifier_batch_size)])
    return [replace(c, verification_logit=float(zi)) for c, zi in zip(candidates, z)]


def analyse_roi(roi: RoiImage, models: Models, settings: Settings, timer: StageTimer | None = None) -> list[Candidate]:
    """Track 1 on one ROI: candidates with scores and P(atypical), in the ROI's own pixels.

    An ROI whose spacing differs from the models' by more than the tolerance is resampled to the
    models' spacing first (said on stderr) and the points are mapped back.
    """
    timer = timer or StageTimer()
    pixels, scale = at_model_spacing(roi, models.manifest.spacing_mm, models.manifest.plan.spacing_tolerance,
                                    settings.max_image_pixels)
    candidates = detect_candidates(pixels, models, settings, timer)
    candidates = verify_candidates(pixels, candidates, models, settings, timer)
    candidates = classify_candidates(pixels, candidates, models, settings, timer)
    if scale != (1.0, 1.0):
        candidates = [_rescaled(c, scale) for c in candidates]
    return candidates


def classify_stack(crops: np.ndarray, models: Models, settings: Settings) -> np.ndarray:
    """Atypical logit per crop (N x S x S x 3 uint8; float64): the mean P(atypical) over the
    plan's flip views, batched, as a logit. Track 2's stacks and Track 1's crops alike."""
    p = classify_crops(models.atypical_probability, crops, settings.classifier_batch_size,
                       models.manifest.plan.classifier_views)
    return logit(p)


def at_model_spacing(roi: RoiImage, model_spacing_mm: float, tolerance: float,
                     max_pixels: int) -> tuple[np.ndarray, tuple[float, float]]:
    """The ROI's pixels at the models' spacing, and the (x, y) factors from model pixels back to
    ROI pixels (1.0 when no resampling was needed)."""
    fx, fy = (model_spacing_mm / s for s in roi.spacing_mm)  # ROI px per model px
    if abs(fx - 1) <= tolerance and abs(fy - 1) <= tolerance:
        return roi.pixels, (1.0, 1.0)
    h, w = roi.shape
    shape = (max(1, round(h / fy)), max(1, round(w / fx)))
    # an ROI tagged at a coarse spacing would be blown up to a size no pipeline run can hold
    check_pixel_budget(
        shape[1], shape[0], max_pixels,
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
