"""Ground-truth readers for both tracks. Every problem becomes one ``InputError`` line.

Track 1, two formats (told apart by their content):

* **MIDOG evaluation format** (the challenge's ``ground_truth.json``)::

      {"007.tiff": {"annotations": [[x_mm, y_mm, 0], ...], "tumor domain": 0, "roi type": "hotspot"}, ...}

  Coordinates in mm from the image origin; "tumor domain" and "roi type" are optional.
* **MIDOG++-style COCO** (``MIDOG++.json``): ``images`` (``file_name``, ``id``, optional
  ``tumor_type`` used as the domain), ``categories`` (the one named "mitotic figure" is the
  target; "not mitotic figure" hard negatives are ignored) and ``annotations`` with pixel boxes,
  ``[x1, y1, x2, y2]`` as MIDOG++ stores them (or COCO's ``[x, y, w, h]``). A figure is the box
  centre times the pixel spacing (mm/px), one value for all images or one per image.

Track 2, the MIDOG 2025 Track 2 format (a list, one record per stack)::

    [{"image": "stack_1.tiff", "labels": ["normal", "atypical", ...], "tumordomains": [1, 1, ...]}, ...]

or a mapping ``{"stack_1.tiff": ["normal", ...]}`` / ``{"stack_1.tiff": {"labels": [...],
"tumordomains": [...]}}``. Labels are "normal"/"atypical" or 0/1 (1 = atypical); domains optional.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import InputError

MITOSIS_CATEGORY = "mitotic figure"
CLASS_IDS = {"normal": 0, "atypical": 1}

BBoxFormat = Literal["xyxy", "xywh"]


def load_json(path: Path, what: str) -> Any:
    """Parsed JSON of ``path``; a missing or malformed file is an ``InputError``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{what} {path} is not valid JSON: {exc}") from None


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _domain(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class DetectionTruth:
    """Ground-truth mitotic figures of one image: (n, 2) x, y in mm."""

    name: str
    points: np.ndarray
    domain: str | None = None
    roi_type: str | None = None


def is_coco(obj: Any) -> bool:
    return isinstance(obj, Mapping) and {"images", "annotations", "categories"} <= obj.keys()


def parse_midog(obj: Any, source: str) -> dict[str, DetectionTruth]:
    """The challenge's ``{image_name: {"annotations": [[x, y, z], ...], ...}}``."""
    if not isinstance(obj, Mapping) or not obj:
        raise InputError(f"{source}: expected a non-empty object {{image_name: {{\"annotations\": ...}}}}")
    truth = {}
    for name, entry in obj.items():
        if not isinstance(entry, Mapping) or not isinstance(entry.get("annotations"), list):
            raise InputError(f"{source}: entry {name!r} has no \"annotations\" list")
        points = []
        for i, p in enumerate(entry["annotations"]):
            where = f"{source}: {name} annotation {i}"
            if not isinstance(p, (list, tuple)) or len(p) < 2:
                raise InputError(f"{where}: expected [x_mm, y_mm, 0], got {p!r}")
            points.append((_number(p[0], where), _number(p[1], where)))
        truth[name] = DetectionTruth(
            name=name, points=np.asarray(points, dtype=np.float64).reshape(-1, 2),
            domain=_domain(entry.get("tumor domain")), roi_type=_domain(entry.get("roi type")),
        )
    return truth


def parse_coco(
    obj: Mapping, source: str, spacing_mm: float | Mapping[str, float], bbox: BBoxFormat = "xyxy"
) -> dict[str, DetectionTruth]:
    """MIDOG++-style COCO: centres of the "mitotic figure" boxes, pixels times spacing."""
    targets = [c.get("id") for c in obj["categories"] if isinstance(c, Mapping) and c.get("name") == MITOSIS_CATEGORY]
    if not targets:
        raise InputError(f"{source}: no category named {MITOSIS_CATEGORY!r}")
    images: dict[Any, Mapping] = {}
    for im in obj["images"]:
        if not isinstance(im, Mapping) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise InputError(f"{source}: every image needs an \"id\" and a \"file_name\"")
        images[im["id"]] = im

    def spacing_of(name: str) -> float:
        value = spacing_mm.get(name) if isinstance(spacing_mm, Mapping) else spacing_mm
        if value is None:
            raise InputError(f"{source}: no pixel spacing given for image {name}")
        if not value > 0:
            raise InputError(f"pixel spacing of {name} must be positive, got {value}")
        return float(value)

    points: dict[Any, list[tuple[float, float]]] = {k: [] for k in images}
    for i, ann in enumerate(obj["annotations"]):
        where = f"{source}: annotation {i}"
        if not isinstance(ann, Mapping) or ann.get("category_id") not in targets:
            continue
        if ann.get("image_id") not in images:
            raise InputError(f"{where}: unknown image_id {ann.get('image_id')!r}")
        box = ann.get("bbox")
        if not isinstance(box, list) or len(box) != 4:
            raise InputError(f"{where}: expected a bbox of 4 numbers, got {box!r}")
        a, b, c, d = (_number(v, where) for v in box)
        if bbox == "xyxy":
            if c < a or d < b:
                raise InputError(f"{where}: bbox {box} is not [x1, y1, x2, y2] (try --coco-bbox xywh)")
            cx, cy = (a + c) / 2.0, (b + d) / 2.0
        else:
            cx, cy = a + c / 2.0, b + d / 2.0
        points[ann["image_id"]].append((cx, cy))
    truth = {}
    for key, im in images.items():
        name = im["file_name"]
        if name in truth:
            raise InputError(f"{source}: image {name} listed twice")
        px = np.asarray(points[key], dtype=np.float64).reshape(-1, 2)
        truth[name] = DetectionTruth(name=name, points=px * spacing_of(name), domain=_domain(im.get("tumor_type")))
    return truth


def load_detection_truth(
    path: Path, spacing_mm: float | Mapping[str, float], bbox: BBoxFormat = "xyxy"
) -> dict[str, DetectionTruth]:
    """Track 1 ground truth from either format; ``spacing_mm`` is used for COCO only."""
    obj = load_json(path, "ground truth")
    if is_coco(obj):
        return parse_coco(obj, str(path), spacing_mm, bbox)
    return parse_midog(obj, str(path))


def load_spacings(path: Path) -> dict[str, float]:
    """``{image_name: mm_per_px}`` for COCO ground truth whose images differ in spacing."""
    obj = load_json(path, "spacing file")
    if not isinstance(obj, Mapping):
        raise InputError(f"{path}: expected {{image_name: spacing_mm}}")
    return {str(k): _number(v, f"{path}: {k}") for k, v in obj.items()}


@dataclass(frozen=True)
class ClassificationTruth:
    """Labels (1 = atypical) of one stack's crops, in stack order, and their tumour domains."""

    name: str
    labels: np.ndarray
    domains: list[str | None]


def _label(value: Any, where: str) -> int:
    if isinstance(value, str) and value.lower() in CLASS_IDS:
        return CLASS_IDS[value.lower()]
    if not isinstance(value, bool) and value in (0, 1):
        return int(value)
    raise InputError(f"{where}: label must be \"normal\"/\"atypical\" or 0/1, got {value!r}")


def _classification_entry(name: str, labels: Any, domains: Any, source: str) -> ClassificationTruth:
    if not isinstance(labels, list):
        raise InputError(f"{source}: {name}: \"labels\" must be a list")
    y = np.asarray([_label(v, f"{source}: {name} label {i}") for i, v in enumerate(labels)], dtype=np.int64)
    if domains is None:
        doms: list[str | None] = [None] * len(y)
    elif isinstance(domains, list) and len(domains) == len(y):
        doms = [_domain(d) for d in domains]
    else:
        raise InputError(f"{source}: {name}: \"tumordomains\" must be a list as long as \"labels\" ({len(y)})")
    return ClassificationTruth(name=name, labels=y, domains=doms)


def parse_classification_truth(obj: Any, source: str) -> dict[str, ClassificationTruth]:
    truth: dict[str, ClassificationTruth] = {}
    if isinstance(obj, list):
        for i, rec in enumerate(obj):
            if not isinstance(rec, Mapping) or not isinstance(rec.get("image"), str):
                raise InputError(f"{source}: record {i} needs \"image\" and \"labels\"")
            if rec["image"] in truth:
                raise InputError(f"{source}: image {rec['image']} listed twice")
            truth[rec["image"]] = _classification_entry(rec["image"], rec.get("labels"), rec.get("tumordomains"), source)
    elif isinstance(obj, Mapping):
        for name, entry in obj.items():
            if isinstance(entry, Mapping):
                truth[name] = _classification_entry(name, entry.get("labels"), entry.get("tumordomains"), source)
            else:
                truth[name] = _classification_entry(name, entry, None, source)
    else:
        raise InputError(f"{source}: expected a list of {{\"image\", \"labels\"}} records or a mapping")
    if not truth:
        raise InputError(f"{source}: no images")
    return truth


def load_classification_truth(path: Path) -> dict[str, ClassificationTruth]:
    return parse_classification_truth(load_json(path, "labels"), str(path))
