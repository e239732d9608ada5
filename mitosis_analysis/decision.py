"""The decisions, made once: logits and the manifest's thresholds -> labels and probabilities.

Every operating threshold of the product is a logit (``manifest.Thresholds``) and is applied here
and nowhere else. Outputs, the slide mode and the evaluation only format what this module decides.

The probability written for a decision is ``sigmoid(logit - threshold)``: monotone in the model's
logit (rankings, AUROC, AP and FROC are those of the model) and exactly 0.5 at the operating
threshold, so "mitotic figure" / "atypical" is the same statement as "probability >= 0.5".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .candidates import Candidate
from .manifest import Thresholds

# float32 probabilities closer to 0 or 1 than this carry no more information; their logits are
# clipped to +-LOGIT_LIMIT (|logit| 16.6 = 1 - 6e-8, the float32 resolution next to 1).
PROBABILITY_EPS = 6e-8
LOGIT_LIMIT = float(np.log((1 - PROBABILITY_EPS) / PROBABILITY_EPS))


def logit(p: np.ndarray | float) -> np.ndarray:
    """log(p / (1 - p)) in float64, ``p`` clipped away from 0 and 1 (see ``PROBABILITY_EPS``)."""
    q = np.clip(np.asarray(p, dtype=np.float64), PROBABILITY_EPS, 1.0 - PROBABILITY_EPS)
    return np.log(q) - np.log1p(-q)


def sigmoid(z: np.ndarray | float) -> np.ndarray:
    """1 / (1 + exp(-z)) in float64, without overflow for large |z|."""
    z = np.asarray(z, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -z))


def centred_probability(z: np.ndarray | float, threshold_logit: float) -> np.ndarray:
    """The probability written out: ``sigmoid(z - threshold)``, 0.5 at the operating threshold."""
    return sigmoid(np.asarray(z, dtype=np.float64) - threshold_logit)


@dataclass(frozen=True)
class Detection:
    """A decided Track 1 point, in the pixels of the image it was found in."""

    x: float
    y: float
    logit: float  # the logit it was judged on: the verifier's (stage 2) or the detector's
    probability: float  # centred_probability(logit, detection threshold)
    is_mitosis: bool
    atypical_logit: float | None = None
    atypical_probability: float | None = None  # centred on the atypical threshold; None if unclassified
    is_atypical: bool = False


def detection_logit(c: Candidate, thresholds: Thresholds) -> tuple[float, float]:
    """(the logit a candidate is judged on, the threshold it must reach). Without a verifier: the
    detector's. With one: the verifier's (stage 2; the detector only proposes), except that a
    candidate the verifier rejects but whose detector logit reaches ``detector_override_logit`` is
    judged on the detector's logit and that threshold. So a candidate is a mitotic figure exactly when
    its logit reaches its threshold, and the written probability (``centred_probability``) is >= 0.5
    exactly then."""
    if thresholds.verification_logit is None:
        return c.score, thresholds.detection_logit
    if c.verification_logit is None:
        raise ValueError("a candidate was not verified although the weights have a verifier")
    override = thresholds.detector_override_logit
    if c.verification_logit < thresholds.verification_logit and override is not None and c.score >= override:
        return c.score, override
    return c.verification_logit, thresholds.verification_logit


def decision_margin(c: Candidate, thresholds: Thresholds) -> float:
    """How far a candidate's judged logit lies above its threshold (>= 0: a mitotic figure): one
    scale for sweeping the product's decision whichever logit judges each candidate."""
    z, t = detection_logit(c, thresholds)
    return z - t


def is_mitosis(c: Candidate, thresholds: Thresholds) -> bool:
    z, t = detection_logit(c, thresholds)
    return z >= t


def decide_detections(candidates: Sequence[Candidate], thresholds: Thresholds) -> list[Detection]:
    """Candidates -> decided points, best first (ties by position: independent of input order)."""
    judged = [(c, *detection_logit(c, thresholds)) for c in candidates]
    judged.sort(key=lambda j: (-j[1], j[0].y, j[0].x))
    detections = []
    for c, z, t in judged:
        is_mitosis = z >= t
        p_atyp = None if c.atypical_logit is None else float(centred_probability(c.atypical_logit, thresholds.atypical_logit))
        detections.append(Detection(
            x=c.x, y=c.y, logit=z,
            probability=float(centred_probability(z, t)),
            is_mitosis=is_mitosis,
            atypical_logit=c.atypical_logit,
            atypical_probability=p_atyp,
            is_atypical=bool(is_mitosis and c.atypical_logit is not None and c.atypical_logit >= thresholds.atypical_logit),
        ))
    return detections


@dataclass(frozen=True)
class CropDecision:
    """A decided Track 2 crop."""

    atypical_logit: float
    probability: float  # P(atypical), centred on the operating threshold
    is_atypical: bool


def decide_crops(atypical_logits: np.ndarray, thresholds: Thresholds) -> list[CropDecision]:
    z = np.asarray(atypical_logits, dtype=np.float64)
    p = centred_probability(z, thresholds.atypical_logit)
    return [CropDecision(float(zi), float(pi), bool(zi >= thresholds.atypical_logit)) for zi, pi in zip(z, p)]
