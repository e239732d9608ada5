"""Whole-slide analysis, streamed: regions read, inferred and released one after the other.

The working grid (the slide at the models' spacing) is cut into square regions of
``region_size`` px; each is read with a ``halo`` of context on every side, glass outside the
(dilated) tissue mask is blanked so the pipeline's own tissue test skips it, and the pipeline of
the ROI mode runs on it unchanged (``pipeline.analyse_region``: tiling, Gaussian stitching,
candidates, 7.5 um suppression, verifier, atypical classifier). A region keeps the
candidates that fall in its core widened by the suppression radius, so a figure on a region
border is found by both neighbours and the same suppression, run once more over the whole
slide, keeps one. Memory therefore depends on the region size, not on the slide size; the next
region is read in a background thread while the current one is inferred.

Finished regions go to the journal (``journal.py``): an interrupted run resumes where it
stopped. A region whose data cannot be decoded (damaged tile) is skipped with a warning, listed
in the summary and left out of the tissue area, so the density stays a true density; a slide of
which no tissue region can be read is an error.
"""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .. import __version__
from ..candidates import Candidate, suppress_duplicates
from ..decision import Detection, decide_detections
from ..errors import InputError
from ..inference import Models, load_models
from ..manifest import InferencePlan, Manifest
from ..log import log, warn
from ..outputs import check_writable
from ..pipeline import analyse_region
from ..settings import Settings
from ..source import SlideReadError, SlideView
from ..tiling import padded_shape, tile_grid
from ..timing import StageTimer
from .export import (
    LABEL_ATYPICAL,
    LABEL_MITOSIS,
    LABEL_REJECTED,
    Figure,
    SlideSummary,
    hotspot_summary,
    overview_png,
    points_csv,
    points_payload,
    qupath_geojson,
    remove_outputs,
    write_outputs,
)
from .hotspot import densest_square
from .journal import Journal, RegionRecord, slide_fingerprint
from .progress import Progress
from .reader import Backend, open_slide, thumbnail
from .tissue import TissueMask, tissue_mask

GLASS = 255


@dataclass(frozen=True)
class SlideOptions:
    """Knobs of the slide mode (the pipeline's own knobs are in ``Settings``)."""

    region_size: int = 2048  # core of a region, working px (0.26 mm^2 at 0.25 um/px)
    halo: int = 128  # context read around the core, working px
    hotspot_area_mm2: float = 2.0
    thumbnail_max_side: int = 2048  # px, long side of the tissue-mask / overview thumbnail
    thumbnail_min_spacing_mm: float = 0.004  # thumbnail pixels are never finer than 4 um
    reader: Backend = "auto"
    restart: bool = False  # forget the journal of an earlier run in the output folder
    progress: bool = True


@dataclass(frozen=True)
class Region:
    index: int
    core: tuple[int, int, int, int]  # x0, y0, x1, y1 (working px, half-open)
    box: tuple[int, int, int, int]  # core plus halo, clipped to the slide


def plan_regions(width: int, height: int, size: int, halo: int) -> list[Region]:
    """Row-major regions of ``size`` px covering a ``width`` x ``height`` grid."""
    if size <= 0 or halo < 0:
        raise ValueError(f"region size {size} and halo {halo} must be positive")
    regions = []
    for y0 in range(0, height, size):
        for x0 in range(0, width, size):
            x1, y1 = min(width, x0 + size), min(height, y0 + size)
            box = (max(0, x0 - halo), max(0, y0 - halo), min(width, x1 + halo), min(height, y1 + halo))
            regions.append(Region(len(regions), (x0, y0, x1, y1), box))
    return regions


def estimated_tiles(region: Region, mask: TissueMask, plan: InferencePlan, output_stride: int) -> int:
    """Tiles of ``region`` that the pipeline will infer (its grid: ``padded_shape``, starts on
    multiples of the detector's ``output_stride``), judged from the tissue mask."""
    x0, y0, x1, y1 = region.box
    tile = plan.tile_size
    tiles = tile_grid(*padded_shape(y1 - y0, x1 - x0, tile, output_stride), tile, plan.stride(), output_stride)
    return sum(
        mask.fraction(x0 + t.x, y0 + t.y, min(x1, x0 + t.x + tile), min(y1, y0 + t.y + tile)) >= plan.min_tissue_fraction
        for t in tiles
    )


class _CountingModels:
    """The models, counting the detector's tiles into the progress bar."""

    def __init__(self, models: Models, progress: Progress):
        self._models = models
        self._progress = progress
        self.tiles = 0

    def __getattr__(self, name: str):
        return getattr(self._models, name)

    def mitosis_logit(self, tiles: np.ndarray) -> np.ndarray:
        p = self._models.mitosis_logit(tiles)
        self.tiles += len(tiles)
        self._progress.advance(len(tiles))
        return p


def analyse_slide(
    path: Path | str,
    output_dir: Path | str,
    settings: Settings | None = None,
    options: SlideOptions | None = None,
    models: Models | None = None,
) -> SlideSummary:
    """Analyse a whole slide and write its outputs (see ``export.py``) into ``output_dir``.

    Resumes an interrupted run found in ``output_dir`` (same slide, weights and settings).
    Raises ``InputError`` on bad input. Returns the summary that was written.
    """
    start = time.perf_counter()
    settings = settings or Settings.from_env()
    options = options or SlideOptions()
    path, output_dir = Path(path), Path(output_dir)
    with open_slide(path, settings, options.reader) as source:  # bad slides fail before the models load
        check_writable(output_dir)
        models = models or load_models(settings)
        if options.region_size < models.manifest.plan.tile_size:
            raise InputError(f"--region-size {options.region_size} is smaller than the weights' tile size "
                             f"({models.manifest.plan.tile_size})")
        view = SlideView(source, models.manifest.spacing_mm, models.manifest.plan.spacing_tolerance)
        thumb = thumbnail(source, options.thumbnail_max_side, options.thumbnail_min_spacing_mm)
        mask = tissue_mask(thumb.pixels, thumb.spacing_mm, view.spacing_mm)
        regions = plan_regions(view.width, view.height, options.region_size, options.halo)
        tissue_regions = [r for r in regions if mask.fraction(*r.core) > 0 or _unreadable(thumb, mask, r)]
        estimates = {r.index: estimated_tiles(r, mask, models.manifest.plan, models.output_stride)
                     for r in tissue_regions}
        lv = source.levels[0]
        log(
            f"{path.name}: {lv.width}x{lv.height} px at {lv.spacing_mm[0] * 1000:.4g} um/px ({source.backend}), "
            f"analysed at level {view.level} ({view.width}x{view.height} px at {view.spacing_mm[0] * 1000:.4g} um/px); "
            f"tissue {mask.area_mm2:.2f} mm^2 in {len(tissue_regions)} of {len(regions)} regions"
        )
        header = _run_header(path, source, view, mask, models, settings, options)
        with Journal(output_dir, header, restart=options.restart) as journal:
            remove_outputs(output_dir)
            if journal.resumed:
                log(f"resuming: {len(journal.records)} of {len(tissue_regions)} tissue regions already done")
            records = _infer_regions(view, tissue_regions, estimates, mask, journal, models, settings, options)
            # outputs are written while the journal is still locked: no other run interleaves
            return _finish(path, source, view, thumb, mask, regions, tissue_regions, records, models, settings,
                           options, output_dir, resumed=journal.resumed, seconds=time.perf_counter() - start)


def run_settings(manifest: Manifest, settings: Settings) -> dict:
    """What, besides the weights and the slide, decides what a run yields (JSON as read back)."""
    return json.loads(json.dumps({
        "plan": manifest.plan.model_dump(),
        "thresholds": manifest.thresholds.model_dump(),
        "default_spacing_mm": settings.default_spacing_mm,
    }))


def _run_header(path, source, view: SlideView, mask: TissueMask, models: Models, settings: Settings,
                options: SlideOptions) -> dict:
    """What identifies a run: a journal is only resumed by a run with the same header. The reader
    and the hotspot area are left out: neither changes what a region yields, so a finished run can
    be re-exported with another hotspot area without inferring again."""
    ignored = ("restart", "progress", "reader", "hotspot_area_mm2")
    slide_options = {k: v for k, v in asdict(options).items() if k not in ignored}
    return {
        "version": __version__,
        "slide": {"name": path.name, "fingerprint": slide_fingerprint(path), "backend": source.backend,
                  "level": view.level, "grid": [view.width, view.height]},
        "weights": models.manifest.weights_identity(),
        "settings": run_settings(models.manifest, settings),
        "options": slide_options,
        "tissue_mask": hashlib.sha256(np.packbits(mask.inference).tobytes()).hexdigest(),
    }


def _unreadable(thumb, mask: TissueMask, region: Region) -> bool:
    """Whether the thumbnail could not be read under ``region``: such a region is tried (and, if
    its tiles are damaged, listed as skipped) instead of being taken for glass."""
    if thumb.unreadable is None:
        return False
    return bool(replace(mask, inference=thumb.unreadable).cells(*region.core).any())


def _read_region(view: SlideView, region: Region) -> tuple[np.ndarray | None, str | None]:
    x0, y0, x1, y1 = region.box
    try:
        return view.read(x0, y0, x1 - x0, y1 - y0), None
    except SlideReadError as exc:
        return None, str(exc)


def _prefetched(view: SlideView, regions: Sequence[Region]) -> Iterator[tuple[Region, np.ndarray | None, str | None]]:
    """(region, pixels, error) in order; the next region is read while the caller works."""
    if not regions:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="slide-reader") as pool:
        future = pool.submit(_read_region, view, regions[0])
        for i, region in enumerate(regions):
            pixels, error = future.result()
            future = pool.submit(_read_region, view, regions[i + 1]) if i + 1 < len(regions) else None
            yield region, pixels, error
            del pixels


def _infer_regions(view: SlideView, tissue_regions: list[Region], estimates: dict[int, int], mask: TissueMask,
                   journal: Journal, models: Models, settings: Settings, options: SlideOptions) -> list[RegionRecord]:
    todo = [r for r in tissue_regions if r.index not in journal.records]
    done_tiles = sum(rec.tiles for rec in journal.records.values())
    progress = Progress(done_tiles + sum(estimates[r.index] for r in todo), done_tiles, enabled=options.progress)
    counting = _CountingModels(models, progress)
    margin = models.manifest.plan.suppression_radius_mm / view.spacing_mm[0]
    timer = StageTimer()
    try:
        for region, pixels, error in _prefetched(view, todo):
            if error is not None:
                x0, y0, x1, y1 = region.core
                warn(f"region {region.index} ({x0}, {y0})-({x1}, {y1}) px of the analysis grid is unreadable "
                     f"({error}); skipped and left out of the tissue area")
                progress.correct_total(-estimates[region.index])
                journal.record(RegionRecord(region.index, 0, [], error))
                continue
            before = counting.tiles
            candidates = _region_candidates(region, pixels, mask, counting, settings, margin, timer)
            inferred = counting.tiles - before
            progress.correct_total(inferred - estimates[region.index])
            journal.record(RegionRecord(region.index, inferred, candidates))
    except KeyboardInterrupt:
        progress.finish()
        log(f"interrupted: {len(journal.records)} of {len(tissue_regions)} tissue regions are in {journal.path}; "
            "run the same command again to resume")
        raise
    progress.finish()
    if timer.seconds:
        log(f"regions: {timer.summary()}")
    records = [journal.records[r.index] for r in tissue_regions]
    failed = [rec for rec in records if rec.error]
    if records and len(failed) == len(records):
        raise InputError(f"{view.source.path.name}: no tissue region could be read ({failed[0].error}); "
                         "use --restart once the file is repaired")
    return records


def _region_candidates(region: Region, pixels: np.ndarray, mask: TissueMask, models: Models,
                       settings: Settings, margin: float, timer: StageTimer) -> list[Candidate]:
    """Candidates of one region (``pipeline.analyse_region``, as a Track 1 ROI), in working-grid
    pixels, those in the region's core widened by ``margin`` only."""
    bx0, by0, bx1, by1 = region.box
    if not pixels.flags.writeable:
        pixels = pixels.copy()
    pixels[~mask.upsampled(bx0, by0, bx1 - bx0, by1 - by0)] = GLASS
    cx0, cy0, cx1, cy1 = region.core

    def in_core(c: Candidate) -> bool:
        return cx0 - margin <= c.x + bx0 < cx1 + margin and cy0 - margin <= c.y + by0 < cy1 + margin

    return [c.moved(bx0, by0) for c in analyse_region(pixels, models, settings, timer, keep=in_core)]


def _finish(path: Path, source, view: SlideView, thumb, mask: TissueMask, regions: list[Region],
            tissue_regions: list[Region], records: list[RegionRecord], models: Models, settings: Settings,
            options: SlideOptions, output_dir: Path, resumed: bool, seconds: float) -> SlideSummary:
    radius_px = models.manifest.plan.suppression_radius_mm / view.spacing_mm[0]
    candidates = suppress_duplicates([c for rec in records for c in rec.candidates], radius_px)
    figures = figures_on_level0(decide_detections(candidates, models.manifest.thresholds), view)
    mitoses = [f for f in figures if f.is_mitosis]
    lv0 = source.levels[0]
    extent_mm = (lv0.width * lv0.spacing_mm[0], lv0.height * lv0.spacing_mm[1])
    hotspot = densest_square(np.array([[f.x_mm, f.y_mm] for f in mitoses]), options.hotspot_area_mm2, extent_mm)

    by_index = {r.index: r for r in regions}
    skipped = [by_index[rec.index] for rec in records if rec.error]
    skipped_area = sum(_tissue_area_in(mask, r.core) for r in skipped)
    analysed_area = max(0.0, mask.area_mm2 - skipped_area)
    n_atypical = sum(f.label == LABEL_ATYPICAL for f in mitoses)
    errors = {rec.index: rec.error for rec in records if rec.error}
    summary = SlideSummary(
        slide=str(path), reader=source.backend,
        level0_size_px=(lv0.width, lv0.height), level0_spacing_mm=lv0.spacing_mm,
        spacing_assumed=source.spacing_assumed, analysis_level=view.level, analysis_spacing_mm=view.spacing_mm,
        resampled=view.resampled, tissue_area_mm2=mask.area_mm2, analysed_tissue_area_mm2=analysed_area,
        mitotic_figures=len(mitoses),
        mitotic_count_per_mm2=len(mitoses) / analysed_area if analysed_area > 0 else None,
        atypical_figures=n_atypical, atypical_fraction=n_atypical / len(mitoses) if mitoses else None,
        hotspot=hotspot_summary(hotspot, options.hotspot_area_mm2, mitoses, lv0.spacing_mm),
        candidates=len(figures),
        thresholds=models.manifest.thresholds.model_dump(),
        weights_trained=models.manifest.provenance.trained,
        regions_total=len(regions), regions_with_tissue=len(tissue_regions),
        regions_skipped=[{"box_px": _box_level0(view, r.core), "reason": errors[r.index]} for r in skipped],
        tiles_inferred=sum(rec.tiles for rec in records), seconds=round(seconds, 3), resumed=resumed,
    )
    # the overview: thumbnail pixels from level-0 pixels (centres at integers on both grids)
    tx = (np.array([f.x_px for f in mitoses]) + 0.5) * lv0.spacing_mm[0] / thumb.spacing_mm[0] - 0.5
    ty = (np.array([f.y_px for f in mitoses]) + 0.5) * lv0.spacing_mm[1] / thumb.spacing_mm[1] - 0.5
    box = None
    if hotspot is not None:
        (tsx, tsy), (x0, y0), side = thumb.spacing_mm, (hotspot.x_mm, hotspot.y_mm), hotspot.side_mm
        box = (x0 / tsx, y0 / tsy, (x0 + side) / tsx, (y0 + side) / tsy)
    png = overview_png(thumb.pixels, mask.tissue, np.stack([tx, ty], axis=1) if mitoses else np.zeros((0, 2)),
                       [f.label for f in mitoses], box)
    write_outputs(output_dir, points_payload(figures, path.name, lv0.spacing_mm), points_csv(figures),
                  qupath_geojson(figures, path.name), png, summary)
    density = "n/a" if summary.mitotic_count_per_mm2 is None else f"{summary.mitotic_count_per_mm2:.3g}/mm^2"
    where = "" if hotspot is None else f" at ({hotspot.centre_mm[0]:.2f}, {hotspot.centre_mm[1]:.2f}) mm"
    log(f"{path.name}: {len(mitoses)} mitotic figures ({n_atypical} atypical) in {analysed_area:.2f} mm^2 of tissue "
        f"({density}); hotspot {summary.hotspot.count} in {options.hotspot_area_mm2:g} mm^2{where}; "
        f"{summary.tiles_inferred} tiles, {seconds:.1f} s; wrote {output_dir}")
    return summary


def figures_on_level0(detections: Sequence[Detection], view: SlideView) -> list[Figure]:
    """Decided detections (working grid, best first) -> figures in level-0 pixels and mm."""
    if not detections:
        return []
    xs, ys = view.to_level0(np.array([d.x for d in detections]), np.array([d.y for d in detections]))
    sx, sy = view.source.levels[0].spacing_mm
    figures = []
    for d, x, y in zip(detections, xs, ys):
        label = LABEL_ATYPICAL if d.is_atypical else LABEL_MITOSIS if d.is_mitosis else LABEL_REJECTED
        figures.append(Figure(float(x), float(y), float(x) * sx, float(y) * sy, d.probability,
                              d.atypical_probability, label))
    return figures


def _tissue_area_in(mask: TissueMask, box: tuple[int, int, int, int]) -> float:
    """Tissue area (mm^2) of the mask cells whose centre lies in the working-grid ``box``."""
    sx, sy = mask.scale
    x0, y0, x1, y1 = box
    cols = np.arange(mask.tissue.shape[1])
    rows = np.arange(mask.tissue.shape[0])
    in_x = ((cols + 0.5) * sx >= x0) & ((cols + 0.5) * sx < x1)
    in_y = ((rows + 0.5) * sy >= y0) & ((rows + 0.5) * sy < y1)
    return float(mask.tissue[np.ix_(in_y, in_x)].sum()) * mask.spacing_mm[0] * mask.spacing_mm[1]


def _box_level0(view: SlideView, box: tuple[int, int, int, int]) -> list[float]:
    s0 = view.source.levels[0].spacing_mm
    fx, fy = view.spacing_mm[0] / s0[0], view.spacing_mm[1] / s0[1]
    return [round(box[0] * fx, 1), round(box[1] * fy, 1), round(box[2] * fx, 1), round(box[3] * fy, 1)]
