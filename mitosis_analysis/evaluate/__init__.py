"""Scoring the container's outputs the way the MIDOG challenge does.

Track 1 (mitotic figure detection): :mod:`.detection`; Track 2 (atypical vs normal
classification): :mod:`.classification`. Readers for ground truth and prediction files live in
:mod:`.groundtruth` and :mod:`.predictions`; the terminal table, JSON and sweep plot in
:mod:`.report`; the ``evaluate`` command in :mod:`.command`.

The numeric modules are pure: arrays in, figures out, no files.
"""

from .classification import ClassificationReport, evaluate_classification
from .detection import MATCH_RADIUS_MM, DetectionCase, DetectionReport, evaluate_detection

__all__ = [
    "MATCH_RADIUS_MM",
    "ClassificationReport",
    "DetectionCase",
    "DetectionReport",
    "evaluate_classification",
    "evaluate_detection",
]
