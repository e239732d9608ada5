"""Every fixed fact of the pipeline, in one place.

Interface slugs, folder and file names follow the grand-challenge MIDOG containers; the
numeric defaults follow the challenge protocol (0.25 um/px, 7.5 um matching radius) and the
product's tiling (512 px tiles, 50 % overlap). Operating thresholds are *not* here: they
belong to the trained weights and live in ``weights/manifest.json`` (see ``manifest.py``).

Every field can be overridden from the environment with the prefix ``MITOSIS_``
(e.g. ``MITOSIS_BATCH_SIZE=16``, ``MITOSIS_DEVICE=cpu``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PACKAGE_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_ROOT.parent


def default_weights_dir() -> Path:
    """Where the weights are when neither ``--weights`` nor ``MITOSIS_WEIGHTS_DIR`` says: inside
    the installed package (``pip install .`` puts ``weights/`` there as package data), else
    ``weights/`` of the repository checkout."""
    packaged = PACKAGE_ROOT / "weights"
    return packaged if (packaged / MANIFEST_FILE).is_file() else REPO_ROOT / "weights"


class Interface(BaseModel):
    """One grand-challenge input interface and the output it produces."""

    model_config = ConfigDict(frozen=True)

    slug: str
    image_dir: str  # relative to the input folder
    output_file: str  # relative to the output folder


TRACK1 = Interface(
    slug="histopathology-region-of-interest-cropout",
    image_dir="images/histopathology-roi-cropout",
    output_file="mitotic-figures.json",
)
TRACK2 = Interface(
    slug="stacked-histopathology-roi-cropouts",
    image_dir="images/stacked-histopathology-roi-cropouts",
    output_file="multiple-mitotic-figure-classification.json",
)
INTERFACES = {i.slug: i for i in (TRACK1, TRACK2)}
INPUTS_JSON = "inputs.json"

ROI_SUFFIXES = (".tif", ".tiff", ".mha")
SLIDE_SUFFIXES = (".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide")

DETECTOR_FILE = "detector.onnx"
CLASSIFIER_FILE = "classifier.onnx"
MANIFEST_FILE = "manifest.json"

# Labels of the four segmentation classes, index = channel of the detector output.
SEGMENTATION_CLASSES = ("background", "normal nucleus", "mitosis", "hard negative")
MITOSIS_CHANNEL = SEGMENTATION_CLASSES.index("mitosis")

POINT_NAME_MITOSIS = "mitotic figure"
POINT_NAME_REJECTED = "non-mitotic figure"


class Settings(BaseModel):
    """Run-time knobs. Defaults are the product's; the environment may override them."""

    model_config = ConfigDict(frozen=True)

    weights_dir: Path = Field(default_factory=default_weights_dir)
    # Pixel spacing assumed when an image carries none (or a meaningless 1.0), in mm.
    default_spacing_mm: float = 0.00025
    # Spacings outside this range are treated as "not given" (SimpleITK writes 1.0 by default).
    plausible_spacing_mm: tuple[float, float] = (0.00005, 0.005)
    tile_size: int = 512
    tile_overlap: float = Field(default=0.5, ge=0.0, lt=1.0)
    batch_size: int = Field(default=8, ge=1)
    # Two detections closer than this are the same figure (challenge matching radius).
    nms_radius_mm: float = 0.0075
    crop_size: int = 128
    classifier_batch_size: int = 64
    # Classify every candidate, not only those that reach the detection threshold.
    classify_all_candidates: bool = False
    # Candidates below this mitosis probability are not even reported as "non-mitotic figure".
    candidate_floor: float = 0.1
    # Connected components smaller than this (in pixels at the model spacing) are noise.
    min_candidate_area_px: int = 12
    # Tiles with less tissue than this fraction are not inferred (their probability is 0).
    min_tissue_fraction: float = 0.01
    # Images whose spacing differs from the models' by more than this are resampled.
    spacing_tolerance: float = 0.1
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Test-time augmentation of the classifier by flips (1 = off, 2, 4 or 8 views).
    classifier_tta: Literal[1, 2, 4, 8] = 4
    verify_weights: bool = True

    def stride(self) -> int:
        """Largest step between tile starts for the requested overlap (512 px, 50 % -> 256)."""
        return max(1, round(self.tile_size * (1.0 - self.tile_overlap)))

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        """Defaults, then ``MITOSIS_*`` environment variables, then explicit overrides."""
        values: dict = {}
        for name in cls.model_fields:
            raw = os.environ.get(f"MITOSIS_{name.upper()}")
            if raw is not None:
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)
