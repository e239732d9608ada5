"""Segmentation labels of the detector for AMi-Br crops.

Classes (index = channel, ``mitosis_analysis.settings.SEGMENTATION_CLASSES``):
0 background, 1 normal nucleus, 2 mitosis, 3 hard negative.

Per crop (128 x 128 px at 0.25 um/px, centred on its figure):

- mitosis: every annotated mitosis inside the crop (the crop's own figure, the other AMi-Br rows of
  the same slide, and for MIDOG21 slides the ``mitotic figure`` boxes of ``MIDOG++.json``) is the
  teacher's nucleus blob that contains it, cut to a disk of ``BLOB_MAX_RADIUS_UM``, or a disk of
  ``DISK_RADIUS_UM`` where no blob contains it;
- hard negative: the ``not mitotic figure`` boxes of ``MIDOG++.json`` inside the crop, the same way
  (skipped where they lie within the matching radius of a mitosis);
- normal nucleus: the classical teacher's mask (``training/teacher.py``) elsewhere;
- point targets: the annotated centres (a 3 x 3 px square) carry their class for the point loss;
  ``IGNORE`` elsewhere.

Coordinates: a crop centred at ROI pixel (x, y) covers ROI columns x - 64 ... x + 63, so the ROI
point (x, y) is crop pixel (64, 64).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .teacher import nucleus_mask

BACKGROUND, NORMAL, MITOSIS, HARD_NEGATIVE = 0, 1, 2, 3
IGNORE = 255
SPACING_UM = 0.25
DISK_RADIUS_UM = 3.0
BLOB_MAX_RADIUS_UM = 6.0
CENTRE_RADIUS_UM = 1.0  # always labelled around an annotated centre, blob or not
MATCH_RADIUS_UM = 7.5
MIDOGPP_FILE = "midogpp/MIDOG++.json"
MIDOGPP_MITOSIS, MIDOGPP_HARD_NEGATIVE = "mitotic figure", "not mitotic figure"


@dataclass
class SlideAnnotations:
    """Annotated points of one ROI (x, y in ROI pixels), float arrays of shape (n, 2)."""

    mitoses: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    hard_negatives: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))


def midogpp_points(path: Path | str) -> dict[str, SlideAnnotations]:
    """Box centres of ``MIDOG++.json`` per image file name (bbox = [x1, y1, x2, y2])."""
    with open(path) as f:
        coco = json.load(f)
    names = {img["id"]: img["file_name"] for img in coco["images"]}
    categories = {c["id"]: c["name"] for c in coco["categories"]}
    points: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for ann in coco["annotations"]:
        x1, y1, x2, y2 = ann["bbox"]
        points[names[ann["image_id"]]][categories[ann["category_id"]]].append(((x1 + x2) / 2, (y1 + y2) / 2))
    return {
        name: SlideAnnotations(
            np.asarray(p[MIDOGPP_MITOSIS], dtype=float).reshape(-1, 2),
            np.asarray(p[MIDOGPP_HARD_NEGATIVE], dtype=float).reshape(-1, 2),
        )
        for name, p in points.items()
    }


def slide_annotations(crops, midogpp: dict[str, SlideAnnotations] | None = None) -> dict[tuple[str, str], SlideAnnotations]:
    """All annotated points per (dataset, slide): AMi-Br rows (all of them, any split; slides never
    straddle the published split) plus MIDOG++ boxes for MIDOG21 slides."""
    rows: dict[tuple[str, str], list] = defaultdict(list)
    for c in crops:
        rows[c.slide_key].append((c.x, c.y))
    out = {}
    for key, pts in rows.items():
        ann = SlideAnnotations(np.asarray(pts, dtype=float).reshape(-1, 2))
        dataset, slide = key
        if midogpp is not None and dataset == "MIDOG21" and slide in midogpp:
            extra = midogpp[slide]
            ann = SlideAnnotations(np.concatenate([ann.mitoses, extra.mitoses]), extra.hard_negatives.copy())
        out[key] = ann
    return out


def data_annotations(crops, data_dir: Path | str) -> dict[tuple[str, str], SlideAnnotations]:
    """``slide_annotations`` of ``crops`` with the MIDOG++ boxes of the data folder (``MIDOGPP_FILE``)."""
    return slide_annotations(crops, midogpp_points(Path(data_dir) / MIDOGPP_FILE))


def points_in_crop(points: np.ndarray, centre: tuple[float, float], size: int = 128) -> np.ndarray:
    """ROI points -> crop pixel coordinates (x, y), keeping those inside the crop."""
    offset = np.asarray(centre, dtype=float) - size // 2
    local = np.asarray(points, dtype=float).reshape(-1, 2) - offset
    inside = np.all((local >= 0) & (local < size), axis=1)
    return local[inside]


def dedupe(points: np.ndarray, radius_px: float) -> np.ndarray:
    """Drop points closer than ``radius_px`` to an earlier one (same figure annotated twice)."""
    kept: list[np.ndarray] = []
    for p in np.asarray(points, dtype=float).reshape(-1, 2):
        if all(np.hypot(*(p - q)) >= radius_px for q in kept):
            kept.append(p)
    return np.asarray(kept, dtype=float).reshape(-1, 2)


def _disk_at(shape: tuple[int, int], xy: np.ndarray, radius: float) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (xx - xy[0]) ** 2 + (yy - xy[1]) ** 2 <= radius**2


def figure_region(blobs: np.ndarray, xy: np.ndarray, spacing_um: float = SPACING_UM) -> np.ndarray:
    """The region labelled for a figure at ``xy``: its blob within a disk of BLOB_MAX_RADIUS_UM,
    plus a small disk at the centre; a disk of DISK_RADIUS_UM where no blob contains the centre."""
    shape = blobs.shape
    col = int(np.clip(round(xy[0]), 0, shape[1] - 1))
    row = int(np.clip(round(xy[1]), 0, shape[0] - 1))
    blob_id = blobs[row, col]
    centre = _disk_at(shape, xy, CENTRE_RADIUS_UM / spacing_um)
    if blob_id == 0:
        return _disk_at(shape, xy, DISK_RADIUS_UM / spacing_um) | centre
    return ((blobs == blob_id) & _disk_at(shape, xy, BLOB_MAX_RADIUS_UM / spacing_um)) | centre


def label_map(
    nuclei: np.ndarray, mitoses: np.ndarray, hard_negatives: np.ndarray, spacing_um: float = SPACING_UM
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, point_targets), both uint8 H x W, from a nucleus mask and crop-pixel points."""
    blobs, _ = ndi.label(nuclei)
    labels = np.where(nuclei, NORMAL, BACKGROUND).astype(np.uint8)
    points = np.full(nuclei.shape, IGNORE, dtype=np.uint8)
    mitoses = np.asarray(mitoses, dtype=float).reshape(-1, 2)
    radius_px = MATCH_RADIUS_UM / spacing_um
    hard = [p for p in np.asarray(hard_negatives, dtype=float).reshape(-1, 2)
            if not len(mitoses) or np.min(np.hypot(*(mitoses - p).T)) >= radius_px]
    # Hard negatives first so that a mitosis overlapping one keeps its label.
    for cls, group in ((HARD_NEGATIVE, hard), (MITOSIS, mitoses)):
        for xy in group:
            labels[figure_region(blobs, xy, spacing_um)] = cls
            row, col = round(float(xy[1])), round(float(xy[0]))
            points[max(row - 1, 0) : row + 2, max(col - 1, 0) : col + 2] = cls
    return labels, points


@dataclass
class CropLabels:
    labels: np.ndarray  # uint8 H x W, class per pixel
    points: np.ndarray  # uint8 H x W, class at annotated centres, IGNORE elsewhere
    mitoses: np.ndarray  # (n, 2) crop-pixel x, y of annotated mitoses
    hard_negatives: np.ndarray  # (m, 2)


def crop_points(crop, annotations: dict[tuple[str, str], SlideAnnotations], size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(mitoses, hard negatives) inside one AMi-Br crop (``training.data.Crop``), crop pixels x, y;
    the crop's own figure first, double annotations of one figure merged."""
    ann = annotations.get(crop.slide_key, SlideAnnotations())
    own = np.array([[size // 2, size // 2]], dtype=float)
    others = points_in_crop(ann.mitoses, (crop.x, crop.y), size)
    mitoses = dedupe(np.concatenate([own, others]), radius_px=MATCH_RADIUS_UM / SPACING_UM / 2)
    return mitoses, points_in_crop(ann.hard_negatives, (crop.x, crop.y), size)


def crop_labels(rgb: np.ndarray, crop, annotations: dict[tuple[str, str], SlideAnnotations]) -> CropLabels:
    """Labels of one AMi-Br crop (``training.data.Crop``) from its pixels and the slide's annotations."""
    mitoses, hard = crop_points(crop, annotations, rgb.shape[0])
    labels, points = label_map(nucleus_mask(rgb), mitoses, hard)
    return CropLabels(labels, points, mitoses, hard)
