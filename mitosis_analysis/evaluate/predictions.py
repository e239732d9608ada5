"""Prediction readers and how prediction files are matched to ground-truth images.

``--predictions`` / ``--classifications`` is either

* a **folder**. For a ground-truth image ``NAME`` (e.g. ``007.tiff``, stem ``007``) the
  prediction is the first of these that exists, and it is an error if more than one does:
  ``<folder>/007.json``, ``<folder>/007.tiff.json``, ``<folder>/007/<output file>``,
  ``<folder>/007.tiff/<output file>``, where ``<output file>`` is the container's
  ``mitotic-figures.json`` (Track 1) or ``multiple-mitotic-figure-classification.json`` (Track 2).
  The second layout is what running the container once per image into ``<folder>/<stem>/``
  produces. With a single ground-truth image, ``<folder>/<output file>`` (the container's output
  folder itself) is taken too.
* a **JSON file** mapping image names (or stems) to the content of those files:
  ``{"007.tiff": {"type": "Multiple points", "points": [...]}, ...}``.

Track 1 files are read, and refused, as the MIDOG 2025 evaluation reads and refuses them (see
``parse_mitotic_figures``). Track 2 files are lists of ``{"class": "normal"|"atypical",
"confidence": c}`` with ``c`` = P(atypical) (the MIDOG 2025 reading since 2025-07-27);
``confidence="predicted-class"`` reads the superseded convention (confidence of the predicted
class: P(atypical) = c for "atypical", 1 - c for "normal").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import InputError
from ..settings import POINT_NAME_MITOSIS, POINT_NAME_REJECTED, TRACK1, TRACK2
from .detection import MATCH_RADIUS_MM
from .groundtruth import CLASS_IDS, load_json

ConfidenceMeaning = Literal["predicted-class", "p-atypical"]
VALID_POINT_NAMES = (POINT_NAME_MITOSIS, POINT_NAME_REJECTED)
MAX_COORDINATE_MM = 10.0  # the Track 1 evaluation refuses larger coordinates


def stem(name: str) -> str:
    return Path(name).stem if Path(name).suffix else name


def candidate_paths(folder: Path, name: str, output_file: str) -> list[Path]:
    """Where the prediction of image ``name`` may lie in ``folder`` (see module doc)."""
    names = dict.fromkeys([stem(name), name])  # ordered, without duplicates
    return [folder / f"{n}.json" for n in names] + [folder / n / output_file for n in names]


def collect(source: Path, names: Iterable[str], output_file: str) -> tuple[dict[str, Any], list[str]]:
    """Parsed prediction per ground-truth image found, and the prediction keys/files no image claims.

    Images without a prediction are simply absent from the result; the caller decides.
    """
    source = Path(source)
    names = list(names)
    found: dict[str, Any] = {}
    if source.is_file():
        obj = load_json(source, "predictions")
        if not isinstance(obj, Mapping):
            raise InputError(f"{source}: expected a mapping {{image_name: prediction}}")
        used = set()
        for name in names:
            keys = [k for k in dict.fromkeys([name, stem(name)]) if k in obj]
            if len(keys) > 1:
                raise InputError(f"{source}: both {keys[0]!r} and {keys[1]!r} are given; keep one")
            if keys:
                found[name] = obj[keys[0]]
                used.add(keys[0])
        return found, sorted(set(obj) - used)
    if not source.is_dir():
        raise InputError(f"predictions not found: {source}")
    used_paths = set()
    for name in names:
        hits = [p for p in candidate_paths(source, name, output_file) if p.is_file()]
        if not hits and len(names) == 1 and (source / output_file).is_file():
            hits = [source / output_file]  # one image: the container's output folder itself
        if len(hits) > 1:
            raise InputError(f"ambiguous predictions for {name}: {hits[0]} and {hits[1]}")
        if hits:
            found[name] = load_json(hits[0], "prediction")
            used_paths.add(hits[0].resolve())
    present = [*source.glob("*.json"), *source.glob(f"*/{output_file}")]
    unclaimed = sorted(str(p.relative_to(source)) for p in present if p.resolve() not in used_paths)
    return found, unclaimed


def _finite(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class DetectionPrediction:
    points: np.ndarray  # (m, 2) x, y in mm
    probabilities: np.ndarray  # (m,)
    is_mitosis: np.ndarray  # (m,) bool: named "mitotic figure"


def parse_mitotic_figures(obj: Any, source: str) -> DetectionPrediction:
    """A Track 1 output (``mitotic-figures.json``, "Multiple points") as arrays.

    Read as the MIDOG 2025 Track 1 evaluation reads it, and refused where it refuses: every point a
    mapping with ``name`` ("mitotic figure" or "non-mitotic figure"), ``probability`` and
    ``point``, coordinates in mm within [-7.5 um, 10 mm] (pixel coordinates are the usual cause)."""
    if not isinstance(obj, Mapping) or not isinstance(obj.get("points"), list):
        raise InputError(f"{source}: expected {{\"type\": \"Multiple points\", \"points\": [...]}}")
    xy, prob, mitosis = [], [], []
    for i, p in enumerate(obj["points"]):
        where = f"{source}: point {i}"
        if not isinstance(p, Mapping):
            raise InputError(f"{where}: expected {{\"name\", \"point\", \"probability\"}}")
        for key in ("name", "probability", "point"):
            if key not in p:
                raise InputError(f"{where}: no \"{key}\" (the MIDOG 2025 evaluation refuses such points)")
        if p["name"] not in VALID_POINT_NAMES:
            raise InputError(f"{where}: name {p['name']!r} is not one of {list(VALID_POINT_NAMES)}")
        if not isinstance(p["point"], list) or len(p["point"]) < 2:
            raise InputError(f"{where}: expected \"point\": [x_mm, y_mm, 0]")
        x, y = _finite(p["point"][0], where), _finite(p["point"][1], where)
        if min(x, y) < -MATCH_RADIUS_MM or max(x, y) > MAX_COORDINATE_MM:
            raise InputError(f"{where}: coordinates ({x}, {y}) outside [-0.0075, {MAX_COORDINATE_MM}] mm: "
                             "pixels instead of millimetres?")
        xy.append((x, y))
        mitosis.append(p["name"] == POINT_NAME_MITOSIS)
        prob.append(_finite(p["probability"], where))
    return DetectionPrediction(
        points=np.asarray(xy, dtype=np.float64).reshape(-1, 2),
        probabilities=np.asarray(prob, dtype=np.float64),
        is_mitosis=np.asarray(mitosis, dtype=bool),
    )


def parse_classifications(
    obj: Any, source: str, confidence: ConfidenceMeaning = "p-atypical"
) -> tuple[np.ndarray, np.ndarray]:
    """A Track 2 output as (P(atypical), predicted class 1 = atypical), one entry per crop.

    ``confidence`` is P(atypical), as the MIDOG 2025 Track 2 evaluation reads it since its commit
    2d1b108 (2025-07-27); ``"predicted-class"`` reads it as the superseded commit 0b35ad1 did
    (the confidence of the predicted class). As the evaluation, a confidence that is not a JSON
    float (``1`` rather than ``1.0``) is refused."""
    if not isinstance(obj, list):
        raise InputError(f"{source}: expected a list of {{\"class\", \"confidence\"}}")
    scores, classes = [], []
    for i, entry in enumerate(obj):
        where = f"{source}: entry {i}"
        if not isinstance(entry, Mapping) or entry.get("class") not in CLASS_IDS or "confidence" not in entry:
            raise InputError(f"{where}: expected {{\"class\": \"normal\"|\"atypical\", \"confidence\": number}}")
        if not isinstance(entry["confidence"], float):
            raise InputError(f"{where}: confidence {entry['confidence']!r} is not a float (the MIDOG 2025 evaluation refuses it)")
        c = _finite(entry["confidence"], where)
        if not 0.0 <= c <= 1.0:
            raise InputError(f"{where}: confidence {c} is outside [0, 1]")
        cls = CLASS_IDS[entry["class"]]
        classes.append(cls)
        scores.append(c if confidence == "p-atypical" or cls == 1 else 1.0 - c)
    return np.asarray(scores, dtype=np.float64), np.asarray(classes, dtype=np.int64)


TRACK1_FILE = TRACK1.output_file
TRACK2_FILE = TRACK2.output_file
