"""What the platform and the official evaluations accept, written out for the tests.

``MULTIPLE_POINTS_SCHEMA``: grand-challenge's JSON schema of a "Multiple points" interface value,
as defined in comic/grand-challenge.org, ``app/grandchallenge/components/schemas.py``
(``INTERFACE_VALUE_SCHEMA["definitions"]["MPOI"]``, with its ``point-object`` and
``version-object`` definitions, read at commit 0766637), restated here. The platform validates
the ``mitotic-figures`` socket against it and refuses the job's output when it fails.

``official_track1_errors`` / ``official_track2_errors``: the input checks of the MIDOG 2025
evaluation containers (DeepMicroscopy/MIDOG25_T1_evaluation_docker ``evaluate.py``:
every point a dict with ``name``, ``probability`` and ``point``, the name one of the two allowed
values, coordinates within [-7.5 um, 10 mm]; DeepMicroscopy/MIDOG25_T2_evaluation_docker: a list
of dicts with ``class`` in {normal, atypical} and a ``confidence`` that is a Python float), as
messages instead of exceptions.
"""

from __future__ import annotations

import jsonschema

_NUMBER3 = {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3}

MULTIPLE_POINTS_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "definitions": {
        "point-object": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "type": {"enum": ["Point"]},
                "point": _NUMBER3,
                "probability": {"type": "number", "minimum": 0, "maximum": 1},
            },
            "required": ["point"],
            "additionalProperties": False,
        },
        "version-object": {
            "type": "object",
            "properties": {
                "major": {"type": "number", "minimum": 0, "multipleOf": 1.0},
                "minor": {"type": "number", "minimum": 0, "multipleOf": 1.0},
            },
            "required": ["major", "minor"],
            "additionalProperties": False,
        },
        "MPOI": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "type": {"enum": ["Multiple points"]},
                "points": {"type": "array", "items": {"allOf": [{"$ref": "#/definitions/point-object"}]}},
                "version": {"$ref": "#/definitions/version-object"},
            },
            "required": ["version", "type", "points"],
            "additionalProperties": False,
        },
    },
    "$ref": "#/definitions/MPOI",
}

MAX_DISTANCE_MM = 7.5e-3  # the T1 evaluation's MAXIMUM_MITOSIS_DETECTION_DISTANCE
VALID_NAMES = ("mitotic figure", "non-mitotic figure")


def schema_errors(document: object) -> list[str]:
    validator = jsonschema.Draft7Validator(MULTIPLE_POINTS_SCHEMA)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def official_track1_errors(document: object) -> list[str]:
    if not isinstance(document, dict) or "points" not in document:
        return ['no "points"']
    errors = []
    for i, p in enumerate(document["points"]):
        if not isinstance(p, dict):
            errors.append(f"point {i}: not a dict")
            continue
        for key in ("name", "probability", "point"):
            if key not in p:
                errors.append(f"point {i}: no {key!r}")
        if p.get("name") not in VALID_NAMES:
            errors.append(f"point {i}: name {p.get('name')!r}")
        xy = p.get("point", [0, 0])[:2]
        if min(xy) < -MAX_DISTANCE_MM or max(xy) > 10:
            errors.append(f"point {i}: coordinates {xy} outside [-7.5 um, 10 mm]")
    return errors


def official_track2_errors(document: object, n_crops: int) -> list[str]:
    if not isinstance(document, list):
        return ["not a list"]
    errors = [] if len(document) == n_crops else [f"{len(document)} entries for {n_crops} crops"]
    for i, d in enumerate(document):
        if not isinstance(d, dict) or "class" not in d or "confidence" not in d:
            errors.append(f"entry {i}: needs 'class' and 'confidence'")
        elif d["class"] not in ("normal", "atypical"):
            errors.append(f"entry {i}: class {d['class']!r}")
        elif not isinstance(d["confidence"], float):
            errors.append(f"entry {i}: confidence {d['confidence']!r} is not a float")
    return errors
