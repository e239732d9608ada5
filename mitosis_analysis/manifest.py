"""The weights manifest: what the ONNX files are, how to feed them, and where they came from.

``export.sh`` writes ``weights/manifest.json``; ``process.py`` reads it and refuses weights whose
sha256 does not match. The *inference plan* lives here too, as nnU-Net binds its plans to a model:
tiling, candidate extraction, suppression radius, classifier views and the operating thresholds
are what the thresholds were tuned under, so they travel with the weights and the environment
cannot change them (``settings.py`` holds only run-time knobs: device, batch sizes, paths).

Thresholds are **logits** (log-odds): the decisions are made in logit space, where scores do not
crowd against 1 and float16/float32 rounding cannot flip them. ``decision.py`` applies them, in
one place; the probabilities written out are ``sigmoid(logit - threshold)``, so every operating
threshold sits at probability 0.5.

Model I/O contract (every model):
  input  ``image``: ``input_format`` says which: "uint8-nhwc" (N x H x W x 3 RGB bytes, as the
         product holds tiles and crops; layout change and scaling happen inside the graph) or
         "float32-nchw" (RGB scaled to [0, 1]). Normalisation (mean/std) happens inside the graph
         and is recorded here for information only.
  detector output ``mitosis_logit``: float32 N x H/s x W/s with s = ``output_stride``: log-odds of
         the mitosis class against the three others, ``z_mitosis - logsumexp(z_others)`` of the
         4-class segmentation logits, max-pooled over s x s blocks in the graph (s = 1: per pixel).
  classifier output ``p_atypical``: float32 N, the probability that the crop is atypical (turned
         into a logit in float64 by ``decision.logit``).
  verifier (optional stage 2) output ``logit``: float32 N, mitosis vs look-alike on an
         ``input_size`` crop centred on a candidate.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import InputError
from .settings import MANIFEST_FILE, SEGMENTATION_CLASSES


class Normalisation(BaseModel):
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    applied: Literal["in-graph"] = "in-graph"

# The two input formats a graph may declare (``ModelEntry.input_format``).
FLOAT32_NCHW = "float32-nchw"
UINT8_NHWC = "uint8-nhwc"
InputFormat = Literal["float32-nchw", "uint8-nhwc"]


class ModelEntry(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    file: str
    sha256: str
    input_name: str = "image"
    input_format: InputFormat = FLOAT32_NCHW
    output_name: str
    # Detector: the output map is max-pooled over output_stride x output_stride blocks in the graph.
    output_stride: int = Field(default=1, ge=1, le=16)
    # Spatial size the model was trained on; the detector accepts any multiple of 32.
    input_size: int
    normalisation: Normalisation
    parameters: int | None = None
    opset: int | None = None
    classes: list[str] | None = None


class Thresholds(BaseModel):
    """Operating points, as logits (log-odds); applied only by ``decision.py``."""

    model_config = ConfigDict(extra="forbid")

    # A candidate whose mitosis logit reaches this is a "mitotic figure".
    detection_logit: float = Field(allow_inf_nan=False)
    # Candidates below this mitosis logit are not reported at all (not even "non-mitotic figure").
    candidate_floor_logit: float = Field(allow_inf_nan=False)
    # A crop whose atypical logit reaches this is "atypical".
    atypical_logit: float = Field(allow_inf_nan=False)
    # With a verifier (stage 2): a candidate is a "mitotic figure" when the verifier's logit on a
    # crop around it reaches this (the detector's logit then only proposes candidates).
    verification_logit: float | None = Field(default=None, allow_inf_nan=False)
    # With a verifier: a candidate whose *detector* logit reaches this is a "mitotic figure" whatever
    # the verifier says (the verifier, trained on few domains, rejects many confident detections in
    # others; None: the verifier alone decides).
    detector_override_logit: float | None = Field(default=None, allow_inf_nan=False)


class InferencePlan(BaseModel):
    """How the models are run: what the thresholds were tuned under (bound to the weights)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tile_size: int = Field(default=512, ge=32)
    tile_overlap: float = Field(default=0.5, ge=0.0, lt=1.0)
    # Two detections closer than this are the same figure (the challenge's matching radius).
    suppression_radius_mm: float = Field(default=0.0075, gt=0)
    # A candidate's position: the probability-weighted centroid of the map within this radius of
    # its peak (the figure's extent), instead of the peak pixel alone.
    centroid_radius_mm: float = Field(default=0.003, gt=0)
    # Tiles with less tissue than this fraction are not inferred.
    min_tissue_fraction: float = Field(default=0.01, ge=0.0, le=1.0)
    # Images whose spacing differs from the models' by more than this are resampled.
    spacing_tolerance: float = Field(default=0.1, ge=0.0)
    crop_size: int = Field(default=128, ge=8)
    # Test-time augmentation of the classifier by flips (1 = off, 2, 4 or 8 views).
    classifier_views: Literal[1, 2, 4, 8] = 4
    # Test-time augmentation of the verifier (stage 2): its logit averaged over this many flip views;
    # thresholds.verification_logit was chosen for this number.
    verifier_views: Literal[1, 2, 4, 8] = 1
    # Classify every candidate, not only the "mitotic figures".
    classify_all_candidates: bool = False

    def stride(self) -> int:
        """Largest step between tile starts for the overlap (512 px, 50 % -> 256)."""
        return max(1, round(self.tile_size * (1.0 - self.tile_overlap)))


class Provenance(BaseModel):
    trained: bool
    command: str
    data: str
    initialisation: str = "random (from scratch; no pretrained weights)"
    git_commit: str | None = None
    created: str | None = None
    notes: str | None = None
    metrics: dict | None = None


class Manifest(BaseModel):
    format_version: Literal[2] = 2
    spacing_mm: float = Field(gt=0, description="pixel spacing the models were trained at, mm")
    detector: ModelEntry
    classifier: ModelEntry
    # Stage 2 (optional): mitosis vs look-alike on a crop around each candidate, output ``logit``.
    verifier: ModelEntry | None = None
    plan: InferencePlan = InferencePlan()
    thresholds: Thresholds
    provenance: Provenance

    @model_validator(mode="after")
    def _verifier_has_a_threshold(self) -> "Manifest":
        if (self.verifier is None) != (self.thresholds.verification_logit is None):
            raise ValueError("a verifier and thresholds.verification_logit go together")
        if self.verifier is None and self.thresholds.detector_override_logit is not None:
            raise ValueError("thresholds.detector_override_logit needs a verifier")
        if self.plan.tile_size % self.detector.output_stride:
            raise ValueError(f"plan.tile_size {self.plan.tile_size} is not a multiple of the detector's "
                             f"output_stride {self.detector.output_stride}")
        return self

    @classmethod
    def load(cls, weights_dir: Path) -> "Manifest":
        path = Path(weights_dir) / MANIFEST_FILE
        if not path.is_file():
            raise InputError(f"weights manifest not found: {path} (run ./export.sh)")
        try:
            manifest = cls.model_validate_json(path.read_bytes())
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InputError(f"invalid weights manifest {path}: {where}: {first['msg']}") from None
        if manifest.detector.classes is not None and tuple(manifest.detector.classes) != SEGMENTATION_CLASSES:
            raise InputError(f"detector classes {manifest.detector.classes} != {list(SEGMENTATION_CLASSES)}")
        return manifest

    def weights_identity(self) -> dict[str, str | None]:
        """The sha256 of each model: two runs used the same weights when these are equal."""
        return {"detector": self.detector.sha256, "classifier": self.classifier.sha256,
                "verifier": None if self.verifier is None else self.verifier.sha256}

    def verified_path(self, weights_dir: Path, entry: ModelEntry) -> Path:
        """Path of a model file after checking that it exists and its sha256 matches."""
        path = Path(weights_dir) / entry.file
        if not path.is_file():
            raise InputError(f"model file missing: {path}")
        digest = sha256_file(path)
        if digest != entry.sha256:
            raise InputError(
                f"model file {path} does not match the manifest "
                f"(sha256 {digest[:12]}… != {entry.sha256[:12]}…): refusing altered weights"
            )
        return path


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
