"""The two tracks end to end, on arrays: read -> tile -> infer -> stitch -> points -> classify.

Stage 1 proposes candidates (``detect_candidates``); stage 2, when the weights have a verifier,
scores each on a crop around it (``verify_candidates``); the mitotic figures then get P(atypical)
(``classify_candidates``). Whether a candidate is a mitotic figure is ``decision.is_mitosis``.

All functions here take pixels and return candidates; reading files and writing JSON is done by
the callers (``commands/process.py``, the slide mode, the benchmark). Coordinates are in pixels of
the image passed in, pixel centres at integer positions.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Callable, Iterator

import numpy as np

from .candidates import Candidate, map_candidates
from .classify import classify_crops, extract_crops, mean_over_views
from .decision import is_mitosis, logit
from .inference import Models
from .readers import RoiImage
from .settings import Settings
from .source import ArraySource, SlideView
from .stitching import Stitcher
from .tiling import iter_batches, padded_shape, tile_grid
from .timing import StageTimer
from .tissue import tile_tissue_fractions
from .validation import check_pixel_budget, shown


# The logit given to pixels that no inferred tile covers (blank glass): far below any floor.
GLASS_LOGIT = -30.0


def mitosis_logit_map(
    pixels: np.ndarray, models: Models, settings: Settings, timer: StageTimer | None = None
) -> np.ndarray:
    """The mitosis logit over the image, tiles blended with Gaussian weights (the manifest's plan):
    float32 ceil(H / s) x ceil(W / s) for a detector whose map is pooled over s x s blocks
    (``Models.output_stride``; s = 1: per pixel). Map pixel (i, j) covers image rows
    [i s, (i + 1) s) and columns [j s, (j + 1) s).

    Tiles with (almost) no tissue (one mask per image, ``tile_tissue_fractions``) are not inferred
    and take no part in the blending; map pixels that no inferred tile covers get ``GLASS_LOGIT``.
    The model runs on a worker thread (ONNX Runtime releases the GIL), one batch ahead of the
    stitching, as nnU-Net's predictor overlaps its GPU with the CPU.
    """
    timer = timer or StageTimer()
    plan = models.manifest.plan
    stride = models.output_stride
    height, width = pixels.shape[:2]
    tile = plan.tile_size
    with timer.stage("tiling"):
        ph, pw = padded_shape(height, width, tile, stride)
        tiles = tile_grid(ph, pw, tile, plan.stride(), stride)
        keep = tile_tissue_fractions(pixels, tiles, tile) >= plan.min_tissue_fraction
        tiles = [t for t, k in zip(tiles, keep) if k]
        stitcher = Stitcher(ph, pw, tile, stride)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="detector") as model_thread:
        pending: deque = deque()
        for batch_tiles, batch in _timed_batches(timer, iter_batches(pixels, tiles, tile, settings.batch_size, stride)):
            pending.append((batch_tiles, model_thread.submit(_timed, timer, models.mitosis_logit, batch)))
            if len(pending) > 1:
                _stitch(stitcher, *pending.popleft(), timer)
        while pending:
            _stitch(stitcher, *pending.popleft(), timer)
    with timer.stage("stitching"):
        return stitcher.result(height, width, empty=GLASS_LOGIT)


def _timed_batches(timer: StageTimer, batches: Iterator) -> Iterator:
    """``batches``, the time spent cutting each counted as tiling."""
    while True:
        with timer.stage("tiling"):
            item = next(batches, None)
        if item is None:
            return
        yield item


def _timed(timer: StageTimer, model, batch: np.ndarray) -> np.ndarray:
    with timer.stage("inference"):
        return model(batch)


def _stitch(stitcher: Stitcher, tiles: list, logits: Future, timer: StageTimer) -> None:
    result = logits.result()
    with timer.stage("stitching"):
        stitcher.add(tiles, result)


def candidates_from_map(logits: np.ndarray, floor_logit: float, models: Models) -> list[Candidate]:
    """Candidates of the detector's logit map (``mitosis_logit_map``) at or above ``floor_logit``,
    in image pixels, duplicates within the suppression radius removed (the manifest's plan)."""
    manifest = models.manifest
    return map_candidates(logits, floor_logit, models.output_stride, manifest.plan.centroid_radius_mm / manifest.spacing_mm,
                          manifest.plan.suppression_radius_mm / manifest.spacing_mm)


def detect_candidates(
    pixels: np.ndarray, models: Models, settings: Settings, timer: StageTimer | None = None
) -> list[Candidate]:
    """Scored candidates (local maxima of the mitosis logit at or above the manifest's floor),
    duplicates within the suppression radius removed. ``pixels`` must be at the models' spacing."""
    timer = timer or StageTimer()
    logits = mitosis_logit_map(pixels, models, settings, timer)
    with timer.stage("postprocessing"):
        return candidates_from_map(logits, models.manifest.thresholds.candidate_floor_logit, models)


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
    crop centred on it (``pixels`` at model spacing), the mean over ``plan.verifier_views`` flip
    views. Without a verifier, candidates pass unchanged."""
    if models.verifier is None or not candidates:
        return list(candidates)
    timer = timer or StageTimer()
    with timer.stage("verification"):
        centres = np.array([[c.x, c.y] for c in candidates], np.float64)
        crops = extract_crops(pixels, centres, models.manifest.verifier.input_size)
        z = mean_over_views(models.verification_logit, crops, settings.classifier_batch_size,
                            models.manifest.plan.verifier_views)
    return [replace(c, verification_logit=float(zi)) for c, zi in zip(candidates, z)]


def analyse_region(pixels: np.ndarray, models: Models, settings: Settings, timer: StageTimer | None = None,
                   keep: Callable[[Candidate], bool] | None = None) -> list[Candidate]:
    """The engine both modes run on a box of the working grid (``pixels`` at the models' spacing):
    candidates (``detect_candidates``), those that ``keep`` accepts (default all) verified and
    classified; coordinates in the box's pixels. A Track 1 ROI is one box; a slide is many."""
    timer = timer or StageTimer()
    candidates = detect_candidates(pixels, models, settings, timer)
    if keep is not None:
        candidates = [c for c in candidates if keep(c)]
    candidates = verify_candidates(pixels, candidates, models, settings, timer)
    return classify_candidates(pixels, candidates, models, settings, timer)


def analyse_roi(roi: RoiImage, models: Models, settings: Settings, timer: StageTimer | None = None) -> list[Candidate]:
    """Track 1 on one ROI: candidates with scores and P(atypical), in the ROI's own pixels.

    The ROI is a one-level source on the working grid (``source.SlideView``, as a slide is): one
    whose spacing differs from the models' by more than the tolerance is resampled first (said on
    stderr) and the points are mapped back.
    """
    view = roi_view(roi, models.manifest.spacing_mm, models.manifest.plan.spacing_tolerance, settings.max_image_pixels)
    candidates = analyse_region(view.read(0, 0, view.width, view.height), models, settings, timer)
    if not view.resampled or not candidates:
        return candidates
    xs, ys = view.to_level0(np.array([c.x for c in candidates]), np.array([c.y for c in candidates]))
    return [replace(c, x=float(x), y=float(y)) for c, x, y in zip(candidates, xs, ys)]


def classify_stack(crops: np.ndarray, models: Models, settings: Settings) -> np.ndarray:
    """Atypical logit per crop (N x S x S x 3 uint8; float64): the mean P(atypical) over the
    plan's flip views, batched, as a logit. Track 2's stacks and Track 1's crops alike."""
    p = classify_crops(models.atypical_probability, crops, settings.classifier_batch_size,
                       models.manifest.plan.classifier_views)
    return logit(p)


def roi_view(roi: RoiImage, model_spacing_mm: float, tolerance: float, max_pixels: int) -> SlideView:
    """The ROI on the working grid, refused when resampling would blow it up past the pixel budget."""
    view = SlideView(ArraySource(roi.pixels, roi.spacing_mm, roi.path, roi.spacing_assumed), model_spacing_mm,
                     tolerance, announce=False)
    if view.resampled:  # an ROI tagged at a coarse spacing would be blown up to a size no run can hold
        check_pixel_budget(
            view.width, view.height, max_pixels,
            f"{shown(roi.path.name)} at {roi.spacing_mm[0] * 1000:.3g} um/px, resampled to the models' "
            f"{model_spacing_mm * 1000:.3g} um/px",
        )
    view.announce()
    return view
