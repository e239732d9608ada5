"""Every fixed fact of the pipeline, in one place.

Interface slugs, folder and file names follow the grand-challenge MIDOG containers; the
numeric defaults follow the challenge protocol (0.25 um/px, 7.5 um matching radius) and the
product's tiling. Operating thresholds and everything they were tuned under (tiling, candidate
extraction, suppression radius, classifier views) are *not* here: they belong to the trained
weights and live in ``weights/manifest.json`` (``manifest.InferencePlan``, ``manifest.Thresholds``).

Every run-time field can be overridden from the environment with the prefix ``MITOSIS_``
(e.g. ``MITOSIS_BATCH_SIZE=16``, ``MITOSIS_DEVICE=cpu``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import InputError

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

# Labels of the detector's four segmentation classes (training channels; the exported graph
# reduces them to one mitosis logit, see manifest.py).
SEGMENTATION_CLASSES = ("background", "normal nucleus", "mitosis", "hard negative")
MITOSIS_CHANNEL = SEGMENTATION_CLASSES.index("mitosis")

POINT_NAME_MITOSIS = "mitotic figure"
POINT_NAME_REJECTED = "non-mitotic figure"
DETAILS_FILE = "mitotic-figures-details.json"  # opt-in extra Track 1 output (Settings.write_details)


class Settings(BaseModel):
    """Run-time knobs. Defaults are the product's; the environment may override them.

    What the operating thresholds were tuned under (tiling, candidate extraction, suppression
    radius, classifier views) is *not* here: it is the inference plan of the weights
    (``manifest.InferencePlan``), and ``MITOSIS_*`` variables naming it are refused.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    weights_dir: Path = Field(default_factory=default_weights_dir)
    # Pixel spacing assumed when an image carries none (or a meaningless 1.0), in mm.
    default_spacing_mm: float = Field(default=0.00025, gt=0)
    # Spacings outside this range are treated as "not given" (SimpleITK writes 1.0 by default).
    plausible_spacing_mm: tuple[float, float] = (0.00005, 0.005)
    batch_size: int = Field(default=8, ge=1, le=1024)
    classifier_batch_size: int = Field(default=64, ge=1, le=4096)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    verify_weights: bool = True
    # Track 1: also write ``mitotic-figures-details.json`` (P(atypical) and logits per point), an
    # extra file that is not a grand-challenge socket. Off by default.
    write_details: bool = False
    # --- Input safety (issue #12; README "Bad input"). Checked against what a file *declares*,
    # before anything is decoded. A MIDOG ROI is 7215 x 5412 = 39 Mpx (1.51 GiB peak RSS end to
    # end); a 64 Mpx ROI (8000 x 8000) peaked at 2.42 GiB (benchmarks/benchmark.py --sizes
    # 8000x8000 --repeat 1), under a 4 GiB container.
    # Most pixels of one image (a Track 1 ROI, a Track 2 page, an ROI after resampling to the
    # models' spacing), width x height (x depth).
    max_image_pixels: int = Field(default=64_000_000, ge=1)
    # Most pages (IFDs) of a TIFF, and most crops of a Track 2 stack.
    max_stack_pages: int = Field(default=100_000, ge=1)
    # Most pixels of an MHA stack, which SimpleITK reads whole (256 Mpx = 15,600 crops of 128^2).
    max_stack_pixels: int = Field(default=256_000_000, ge=1)
    # Crops of a Track 2 stack read and classified at a time (memory stays flat with the stack).
    stack_chunk_pages: int = Field(default=1024, ge=1)

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        """Defaults, then ``MITOSIS_*`` environment variables, then explicit overrides.

        A malformed value, or a variable naming a setting of the weights' inference plan, is an
        ``InputError`` (one line, exit 2)."""
        from .manifest import InferencePlan, Thresholds

        values: dict = {}
        env_names: dict[str, str] = {}
        planned = set(InferencePlan.model_fields) | set(Thresholds.model_fields) | set(_RETIRED)
        for key, raw in sorted(os.environ.items()):
            if not key.startswith("MITOSIS_"):
                continue
            name = key[len("MITOSIS_"):].lower()
            if name in cls.model_fields:
                values[name] = raw
                env_names[name] = key
            elif name in planned:
                raise InputError(
                    f"{key}: {_RETIRED.get(name) or _plan_key(name)} is part of the weights' inference plan "
                    "(weights/manifest.json, 'plan' and 'thresholds'), which the environment cannot change"
                )
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            name = str(first["loc"][0]) if first["loc"] else "?"
            where = env_names.get(name, f"--{name.replace('_', '-')}" if name in overrides else name)
            shown = repr(values.get(name)).replace("\n", " ")
            raise InputError(f"{where}={shown}: {first['msg']}") from None



def _plan_key(name: str) -> str:
    from .manifest import InferencePlan

    return f"plan.{name}" if name in InferencePlan.model_fields else f"thresholds.{name}"


# Former settings that are now part of the inference plan (name -> what to say).
_RETIRED = {
    "tile_size": "plan.tile_size", "tile_overlap": "plan.tile_overlap", "nms_radius_mm": "plan.suppression_radius_mm",
    "crop_size": "plan.crop_size", "classify_all_candidates": "plan.classify_all_candidates",
    "candidate_floor": "thresholds.candidate_floor_logit", "min_candidate_area_px": "plan.centroid_radius_mm",
    "min_tissue_fraction": "plan.min_tissue_fraction", "spacing_tolerance": "plan.spacing_tolerance",
    "classifier_tta": "plan.classifier_views",
}
