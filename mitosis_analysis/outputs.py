"""The challenge's output documents (pydantic schemas) and atomic JSON writing."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Literal, Sequence

from pydantic import BaseModel, Field

from .candidates import Candidate
from .errors import InputError
from .settings import POINT_NAME_MITOSIS, POINT_NAME_REJECTED


class Version(BaseModel):
    major: int = 1
    minor: int = 0


class Point(BaseModel):
    name: Literal["mitotic figure", "non-mitotic figure"]
    point: tuple[float, float, float]  # x_mm, y_mm, 0
    probability: float = Field(ge=0.0, le=1.0)
    atypical_probability: float | None = Field(default=None, ge=0.0, le=1.0)


class MultiplePoints(BaseModel):
    """Track 1: ``mitotic-figures.json``."""

    name: Literal["Points of interest"] = "Points of interest"
    type: Literal["Multiple points"] = "Multiple points"
    points: list[Point]
    version: Version = Version()


class CropClass(BaseModel):
    """Track 2: one entry of ``multiple-mitotic-figure-classification.json``.

    ``confidence`` is the probability of the *predicted* class, as the MIDOG 2025 Track 2
    evaluator reads it (P(atypical) = confidence if class is "atypical" else 1 - confidence);
    ``atypical_probability`` states P(atypical) directly for other consumers.
    """

    model_config = {"populate_by_name": True}

    class_: Literal["normal", "atypical"] = Field(alias="class")
    confidence: float = Field(ge=0.0, le=1.0)
    atypical_probability: float = Field(ge=0.0, le=1.0)


def points_document(
    candidates: Sequence[Candidate], spacing_mm: tuple[float, float], detection_threshold: float
) -> MultiplePoints:
    """Candidates (px) -> challenge points (mm). Those under the threshold are kept as
    "non-mitotic figure" so that FROC/AP can use them."""
    sx, sy = spacing_mm
    points = [
        Point(
            name=POINT_NAME_MITOSIS if c.score >= detection_threshold else POINT_NAME_REJECTED,
            point=(c.x * sx, c.y * sy, 0.0),
            probability=_unit(c.score),
            atypical_probability=None if c.p_atypical is None else _unit(c.p_atypical),
        )
        for c in sorted(candidates, key=lambda c: (-c.score, c.y, c.x))
    ]
    return MultiplePoints(points=points)


def classification_document(p_atypical: Sequence[float], threshold: float) -> list[CropClass]:
    """One entry per crop: "atypical" when P(atypical) reaches ``threshold``."""
    entries = []
    for p in map(_unit, p_atypical):
        atypical = p >= threshold
        entries.append(CropClass(
            class_="atypical" if atypical else "normal",
            confidence=p if atypical else 1.0 - p,
            atypical_probability=p,
        ))
    return entries


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
    return float(min(1.0, max(0.0, p)))
