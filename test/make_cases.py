#!/usr/bin/env python3
"""Make the container's sample cases in ``test/cases/`` and their expected outputs.

    python test/make_cases.py            # images (if missing) + expected outputs of every case
    python test/make_cases.py --images   # also rewrite the images (they are deterministic)

Every image is synthetic: an H&E-like rendering (Beer-Lambert mixing of haematoxylin and eosin
optical densities) of a seeded random tissue with nuclei and a few dense, dark figures.
Nothing comes from ``../shared``. Cases, each laid out as the platform mounts ``/input``:

  track1-roi/     inputs.json (histopathology-region-of-interest-cropout) + a 1024x1024 ROI,
                  tiled JPEG TIFF at 0.25 um/px (the models' spacing)
  track2-stack/   inputs.json (stacked-histopathology-roi-cropouts) + a multi-page TIFF of
                  8 crops of 128x128 px (deflate, as the platform's stacks)
  legacy-midog21/ no inputs.json, one TIFF directly in the folder (MIDOG 2021/2022 style) at
                  0.23 um/px, so the container also resamples and maps points back

The expected outputs are what ``process.py`` writes on the host (CPU) for that input with the
current ``weights/``; ``test.sh`` checks that the container reproduces them. The sha256 of
``weights/manifest.json`` is recorded beside them: when the weights change, re-run this script.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
CASES = REPO / "test" / "cases"
GROUND_TRUTH = "ground_truth.json"
WEIGHTS_RECORD = "weights-manifest.sha256"

# Ruifrok & Johnston's stain vectors (optical density per unit stain, RGB), normalised.
HAEMATOXYLIN = np.array([0.650, 0.704, 0.286])
EOSIN = np.array([0.072, 0.990, 0.105])

TRACK1_SLUG = "histopathology-region-of-interest-cropout"
TRACK1_DIR = "images/histopathology-roi-cropout"
TRACK2_SLUG = "stacked-histopathology-roi-cropouts"
TRACK2_DIR = "images/stacked-histopathology-roi-cropouts"


# --------------------------------------------------------------------------- synthetic tissue


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field with correlation length ~sigma px."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-12)


def stamp_ellipses(
    rng: np.random.Generator,
    density: np.ndarray,
    count: int,
    radius_px: tuple[float, float],
    strength: tuple[float, float],
    ragged: float,
) -> list[tuple[float, float]]:
    """Add ``count`` filled, randomly oriented ellipses of stain to ``density`` (in place) and
    return the (x, y) centres of those stamped.

    ``ragged`` > 0 makes the outline irregular (clumped chromatin of a mitotic figure)."""
    h, w = density.shape
    centres = []
    for _ in range(count):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        a = rng.uniform(*radius_px)
        b = a * rng.uniform(0.6, 1.0)
        angle = rng.uniform(0, np.pi)
        r = int(np.ceil(a * (1 + ragged))) + 2
        y0, y1 = max(0, int(cy) - r), min(h, int(cy) + r + 1)
        x0, x1 = max(0, int(cx) - r), min(w, int(cx) + r + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        dy, dx = yy - cy, xx - cx
        u = dx * np.cos(angle) + dy * np.sin(angle)
        v = -dx * np.sin(angle) + dy * np.cos(angle)
        rho = np.hypot(u / a, v / b)
        if ragged:
            theta = np.arctan2(v, u)
            phases = rng.uniform(0, 2 * np.pi, 3)
            rho = rho / (1 + ragged * sum(np.sin(k * theta + p) for k, p in zip((3, 5, 7), phases)) / 3)
        inside = rho <= 1.0
        texture = 0.8 + 0.4 * rng.random(inside.sum())
        density[y0:y1, x0:x1][inside] += rng.uniform(*strength) * texture
        centres.append((cx, cy))
    return centres


def render_he(haematoxylin: np.ndarray, eosin: np.ndarray) -> np.ndarray:
    """Stain densities -> RGB uint8 by Beer-Lambert: I = 255 * exp(-(cH * H + cE * E))."""
    od = haematoxylin[..., None] * HAEMATOXYLIN + eosin[..., None] * EOSIN
    return np.clip(255.0 * np.exp(-od), 0, 255).round().astype(np.uint8)


def synthetic_he(seed: int, height: int, width: int, nuclei_per_mpx: float, figures: int
                 ) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """An H&E-like field: eosin-stained stroma with lumina, haematoxylin nuclei, dark figures;
    returns the RGB image and the (x, y) px centres of the figures.

    Sizes are for 0.25 um/px (nuclei 6-10 um across, figures 7-11 um)."""
    rng = np.random.default_rng(seed)
    shape = (height, width)
    stroma = 0.45 + 0.12 * smooth_noise(rng, shape, 24) + 0.05 * smooth_noise(rng, shape, 3)
    lumen = ndimage.gaussian_filter((smooth_noise(rng, shape, 60) > 1.3).astype(float), 4)
    eosin = np.clip(stroma, 0.05, None) * (1 - 0.9 * lumen)
    haematoxylin = np.zeros(shape)
    stamp_ellipses(rng, haematoxylin, round(nuclei_per_mpx * height * width / 1e6), (12, 20), (0.35, 0.6), 0.0)
    centres = stamp_ellipses(rng, haematoxylin, figures, (14, 22), (1.1, 1.5), 0.35)
    haematoxylin = ndimage.gaussian_filter(haematoxylin, 1.2) * (1 - 0.9 * lumen)
    return render_he(haematoxylin, eosin), centres


def write_ground_truth(case: "Case", image: str, centres_px, spacing_um: float) -> None:
    """``<case>/ground_truth.json`` in the MIDOG 2025 evaluation's format: the drawn "figures" (not
    real mitoses: they let ``evaluate`` and the official aggregates run on the sample)."""
    mm = spacing_um / 1000
    write_json(CASES / case.name / GROUND_TRUTH, {image: {
        "annotations": [[x * mm, y * mm, 0] for x, y in centres_px], "tumor domain": 0, "roi type": "hotspot"}})


# --------------------------------------------------------------------------- writing cases


def resolution_tags(spacing_um: float) -> dict:
    """tifffile keywords for a pixel spacing, as scanners write it (pixels per centimetre)."""
    per_cm = 1e4 / spacing_um
    return {"resolution": (per_cm, per_cm), "resolutionunit": tifffile.RESUNIT.CENTIMETER}


def write_roi_tiff(path: Path, rgb: np.ndarray, spacing_um: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(
        path, rgb, photometric="rgb", tile=(256, 256), compression="jpeg",
        compressionargs={"level": 85}, **resolution_tags(spacing_um),
    )


def write_stack_tiff(path: Path, crops: np.ndarray, spacing_um: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tifffile.TiffWriter(path) as tif:
        for crop in crops:
            tif.write(crop, photometric="rgb", compression="zlib", **resolution_tags(spacing_um))


def inputs_json(slug: str, relative_path: str, image_name: str) -> list[dict]:
    """``inputs.json`` as grand-challenge writes it for one image interface."""
    return [
        {
            "file": None,
            "image": {"name": image_name},
            "value": None,
            "interface": {
                "slug": slug,
                "kind": "Image",
                "super_kind": "Image",
                "relative_path": relative_path,
                "example_value": None,
            },
        }
    ]


@dataclass(frozen=True)
class Case:
    name: str
    description: str

    @property
    def input_dir(self) -> Path:
        return CASES / self.name / "input"

    @property
    def expected_dir(self) -> Path:
        return CASES / self.name / "expected_output"


def make_track1(case: Case) -> None:
    rgb, centres = synthetic_he(seed=1, height=1024, width=1024, nuclei_per_mpx=220, figures=6)
    image = "c5b2c0a4-roi.tif"  # the platform names images by a UUID
    write_roi_tiff(case.input_dir / TRACK1_DIR / image, rgb, spacing_um=0.25)
    write_ground_truth(case, image, centres, 0.25)
    write_json(case.input_dir / "inputs.json", inputs_json(TRACK1_SLUG, TRACK1_DIR, image))


def make_track2(case: Case) -> None:
    field, _ = synthetic_he(seed=2, height=512, width=256, nuclei_per_mpx=260, figures=10)
    crops = np.stack([field[y : y + 128, x : x + 128] for y in range(0, 512, 128) for x in range(0, 256, 128)])
    image = "7e0d5f1e-stack.tiff"
    write_stack_tiff(case.input_dir / TRACK2_DIR / image, crops, spacing_um=0.25)
    write_json(case.input_dir / "inputs.json", inputs_json(TRACK2_SLUG, TRACK2_DIR, image))


def make_legacy(case: Case) -> None:
    rgb, centres = synthetic_he(seed=3, height=768, width=896, nuclei_per_mpx=220, figures=5)
    write_roi_tiff(case.input_dir / "042.tiff", rgb, spacing_um=0.23)
    write_ground_truth(case, "042.tiff", centres, 0.23)


CASE_MAKERS = {
    Case("track1-roi", "Track 1: 1024x1024 ROI, 0.25 um/px, inputs.json"): make_track1,
    Case("track2-stack", "Track 2: 8 crops of 128x128 px, inputs.json"): make_track2,
    Case("legacy-midog21", "MIDOG 2021 style: no inputs.json, 896x768 ROI at 0.23 um/px"): make_legacy,
}


# --------------------------------------------------------------------------- expected outputs


def write_json(path: Path, document: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_process(input_dir: Path, output_dir: Path, python: str = sys.executable) -> None:
    """Run ``process.py`` on the host CPU; raise with its stderr when it fails."""
    env = dict(os.environ, MITOSIS_DEVICE="cpu")
    result = subprocess.run(
        [python, str(REPO / "process.py"), "--input", str(input_dir), "--output", str(output_dir)],
        env=env, capture_output=True, text=True,
    )
    sys.stderr.write(result.stderr)
    if result.returncode != 0:
        raise SystemExit(f"process.py failed on {input_dir} (exit {result.returncode})")


def make_expected(case: Case, manifest_sha256: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run_process(case.input_dir, Path(tmp))
        if case.expected_dir.exists():
            shutil.rmtree(case.expected_dir)
        shutil.copytree(tmp, case.expected_dir)
    (CASES / case.name / WEIGHTS_RECORD).write_text(f"{manifest_sha256}  weights/manifest.json\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", action="store_true", help="rewrite the input images too")
    parser.add_argument("cases", nargs="*", help="case names (default: all)")
    args = parser.parse_args(argv)
    known = {c.name: c for c in CASE_MAKERS}
    unknown = [n for n in args.cases if n not in known]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; known: {sorted(known)}")
    manifest = REPO / "weights" / "manifest.json"
    if not manifest.is_file():
        raise SystemExit(f"{manifest} is missing: run ./export.sh first")
    manifest_sha256 = sha256_file(manifest)
    for case, make in CASE_MAKERS.items():
        if args.cases and case.name not in args.cases:
            continue
        if args.images or not case.input_dir.exists():
            if case.input_dir.exists():
                shutil.rmtree(case.input_dir)
            make(case)
        make_expected(case, manifest_sha256)
        size = sum(p.stat().st_size for p in case.input_dir.rglob("*") if p.is_file())
        print(f"{case.name}: {case.description}; input {size / 1024:.0f} KiB; expected outputs written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
