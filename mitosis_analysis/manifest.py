"""The weights manifest: what the ONNX files are, how to feed them, and where they came from.

``export.sh`` writes ``weights/manifest.json``; ``process.py`` reads it and refuses weights whose
sha256 does not match. Operating thresholds live here because they belong to the weights.

Model I/O contract (both models):
  input  ``image``: float32, NCHW, RGB scaled to [0, 1]; normalisation (mean/std) happens inside
         the graph and is recorded here for information only.
  detector output ``probabilities``: float32 N x 4 x H x W softmax over SEGMENTATION_CLASSES.
  classifier output ``p_atypical``: float32 N, the probability that the crop is atypical.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import InputError
from .settings import MANIFEST_FILE, SEGMENTATION_CLASSES


class Normalisation(BaseModel):
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    applied: Literal["in-graph"] = "in-graph"


class ModelEntry(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    file: str
    sha256: str
    input_name: str = "image"
    output_name: str
    # Spatial size the model was trained on; the detector accepts any multiple of 32.
    input_size: int
    normalisation: Normalisation
    parameters: int | None = None
    opset: int | None = None
    classes: list[str] | None = None


class Thresholds(BaseModel):
    # A candidate whose mitosis score reaches this is a "mitotic figure".
    detection: float = Field(ge=0.0, le=1.0)
    # A figure whose P(atypical) reaches this is "atypical".
    atypical: float = Field(ge=0.0, le=1.0)


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
    format_version: Literal[1] = 1
    spacing_mm: float = Field(gt=0, description="pixel spacing the models were trained at, mm")
    detector: ModelEntry
    classifier: ModelEntry
    thresholds: Thresholds
    provenance: Provenance

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
