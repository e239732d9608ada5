"""The challenge's output documents (pydantic schemas) and atomic JSON writing."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field

from .decision import CropDecision, Detection
from .errors import InputError
from .settings import POINT_NAME_MITOSIS, POINT_NAME_REJECTED


class Version(BaseModel):
    model_config = ConfigDict(extra="forbid")

    major: int = 1
    minor: int = 0


class Point(BaseModel):
    """One point of a grand-challenge "Multiple points" value. The platform's schema
    (``INTERFACE_VALUE_SCHEMA``, definition ``point-object``) forbids any other key."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["mitotic figure", "non-mitotic figure"]
    point: tuple[float, float, float]  # x_mm, y_mm, 0
    probability: float = Field(ge=0.0, le=1.0)


class MultiplePoints(BaseModel):
    """Track 1: ``mitotic-figures.json`` (grand-challenge kind "Multiple points", ``MPOI``)."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["Points of interest"] = "Points of interest"
    type: Literal["Multiple points"] = "Multiple points"
    points: list[Point]
    version: Version = Version()


class CropClass(BaseModel):
    """Track 2: one entry of ``multiple-mitotic-figure-classification.json``.

    ``confidence`` is P(atypical), as the MIDOG 2025 Track 2 evaluation reads it since its commit
    2d1b108 (2025-07-27, "confidence is now only the confidence for atypical"), centred on the
    operating threshold (``decision.py``): class "atypical" exactly when confidence >= 0.5.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    class_: Literal["normal", "atypical"] = Field(alias="class")
    confidence: float = Field(ge=0.0, le=1.0)


class PointDetails(BaseModel):
    """One point of the opt-in ``mitotic-figures-details.json`` (not a socket file)."""

    name: Literal["mitotic figure", "non-mitotic figure"]
    point: tuple[float, float, float]
    probability: float
    logit: float
    atypical_probability: float | None
    atypical_logit: float | None
    atypical: bool


def points_document(detections: Sequence[Detection], spacing_mm: tuple[float, float]) -> MultiplePoints:
    """Decided detections (px) -> challenge points (mm). Candidates under the threshold stay as
    "non-mitotic figure" so that the challenge's FROC and AP can use them."""
    sx, sy = spacing_mm
    return MultiplePoints(points=[
        Point(name=POINT_NAME_MITOSIS if d.is_mitosis else POINT_NAME_REJECTED,
              point=(float(d.x * sx), float(d.y * sy), 0.0), probability=_unit(d.probability))
        for d in detections
    ])


def details_document(detections: Sequence[Detection], spacing_mm: tuple[float, float], thresholds: dict) -> dict:
    """The opt-in extra Track 1 file: every point with its logits and P(atypical)."""
    sx, sy = spacing_mm
    points = [
        PointDetails(
            name=POINT_NAME_MITOSIS if d.is_mitosis else POINT_NAME_REJECTED,
            point=(float(d.x * sx), float(d.y * sy), 0.0), probability=_unit(d.probability), logit=d.logit,
            atypical_probability=None if d.atypical_probability is None else _unit(d.atypical_probability),
            atypical_logit=d.atypical_logit, atypical=d.is_atypical,
        ).model_dump()
        for d in detections
    ]
    return {"thresholds": thresholds, "points": points}


def classification_document(decisions: Sequence[CropDecision]) -> list[CropClass]:
    """One entry per crop, in stack order."""
    return [CropClass(class_="atypical" if d.is_atypical else "normal", confidence=_unit(d.probability))
            for d in decisions]


def to_jsonable(document: BaseModel | list[BaseModel]) -> object:
    if isinstance(document, list):
        return [d.model_dump(by_alias=True, exclude_none=True) for d in document]
    return document.model_dump(by_alias=True, exclude_none=True)


def json_bytes(payload: object) -> bytes:
    """The bytes of an output JSON document (indented, no NaN)."""
    return (json.dumps(payload, indent=2, allow_nan=False) + "\n").encode()


def write_json_atomic(path: Path, payload: object) -> None:
    """Write JSON next to ``path`` and rename it into place: readers never see half a file."""
    write_bytes_atomic(path, json_bytes(payload))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` next to ``path`` and rename it into place: readers never see half a file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise InputError(f"cannot write to output folder {path.parent}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(folder: Path) -> None:
    """Fail early (before any inference) when ``folder`` cannot receive output files."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise InputError(f"output folder {folder} is not writable: {exc.strerror}") from None


def _unit(p: float) -> float:
    """A Python float in [0, 1] (the Track 2 evaluation rejects anything but a float)."""
    return float(min(1.0, max(0.0, float(p))))
