"""Real 40x fields for stage 2 (the verifier): ICPR 2012 fields (scanners A and H) and the
MITOS-ATYPIA-14 crops, with slide ids; and stage 1 (the product's detector) run on the fields.

Data are read at run time from ``../shared/data`` (never copied into the repository):

- ICPR 2012 scanner A (``icpr2012/images/A``): restored, clean; positives = the mitosis centroids
  of ``annotations.json``; used at its own 0.2456 um/px, as the product would (within its 10 %
  spacing tolerance, so no resampling).
- ICPR 2012 scanner H: mitoses still painted yellow. The field is resampled to 0.25 um/px, and an
  *ignore region* (every listed mitosis pixel and every pixel passing the loose yellow test,
  dilated by ``IGNORE_DILATION_PX`` native px) is filled from the nearest clean pixel before
  stage 1 sees the field. H gives negatives only: candidates inside the ignore region are dropped,
  and a training crop must not touch it (:func:`windows_clear`), so no painted or filled pixel
  ever reaches a model.
- MITOS-ATYPIA-14 (``mitos-atypia-14``): 50 x 50 mitosis crops (positives) and random crops
  (easy negatives), slide = ``Ann``.

Resampled fields are cached under ``training/cache/icpr2012/`` (ignored by git).

Stage 1 on all 70 fields (cached per field as JSON under ``training/cache/stage1/``)::

    python -m training.real_fields --floor 0.02

runs the product's ``mitosis_logit_map`` (weights/detector.onnx, CPU, one thread), then
``find_candidates`` at ``--floor`` and at the product's floor (both as probabilities here, applied
as logits), and ``suppress_duplicates`` at the plan's radius, and writes recall at the floor and
the baseline F1 per slide (``stage1_report.json``). Cached scores are peak probabilities,
sigmoid(peak logit).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.spatial import cKDTree

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from mitosis_analysis.decision import sigmoid  # noqa: E402
from mitosis_analysis.evaluate.detection import DetectionCounts, count_matches  # noqa: E402
from mitosis_analysis.resample import resample  # noqa: E402
from training.runtime import save_npz, write_json  # noqa: E402

DATA_DIR = REPO_ROOT.parent / "shared" / "data"
CACHE_DIR = REPO_ROOT / "training" / "cache"
MODEL_SPACING_UM = 0.25
MATCH_RADIUS_UM = 7.5
IGNORE_DILATION_PX = 8  # paint halo reaches about 5 px (README: at least 6)
SLIDES = ("00", "01", "02", "03", "04")


@dataclass(frozen=True)
class Field:
    name: str  # "A00_01"
    scanner: str  # "A" or "H"
    slide: str  # "00" ... "04" (A and H of one slide share it)
    path: Path
    csv: Path
    spacing_um: tuple[float, float]  # x, y
    mitoses: np.ndarray  # (n, 2) centroids x, y in native pixels


def icpr_fields(data_dir: Path | str = DATA_DIR, scanners: tuple[str, ...] = ("A", "H")) -> list[Field]:
    """The ICPR 2012 fields of ``annotations.json``, scanner A first, in file order."""
    root = Path(data_dir) / "icpr2012"
    with open(root / "annotations.json") as f:
        records = json.load(f)["fields"]
    out = []
    for scanner in scanners:
        for r in records:
            if r["scanner"] != scanner:
                continue
            pts = np.array([m["centroid"] for m in r["mitoses"]], dtype=float).reshape(-1, 2)
            out.append(Field(r["field"], scanner, r["slide"][1:], root / r["file"], root / r["csv"],
                             (float(r["spacing_um"]["x"]), float(r["spacing_um"]["y"])), pts))
    return out


def read_rgb(path: Path | str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def csv_pixels(path: Path | str) -> list[np.ndarray]:
    """The contest's label file: per mitosis, its listed pixels as (k, 2) int x, y."""
    out = []
    with open(path) as f:
        for line in f:
            values = [int(v) for v in line.replace(" ", "").strip().strip(",").split(",") if v]
            if values:
                out.append(np.array(values, dtype=np.int64).reshape(-1, 2))
    return out


def yellow_loose(rgb: np.ndarray) -> np.ndarray:
    """The README's loose paint test: R >= 200, G >= 190, B <= 150, min(R, G) - B >= 80."""
    r, g, b = (rgb[..., i].astype(np.int16) for i in range(3))
    return (r >= 200) & (g >= 190) & (b <= 150) & (np.minimum(r, g) - b >= 80)


def ignore_mask(rgb: np.ndarray, mitosis_pixels: list[np.ndarray], dilation_px: int = IGNORE_DILATION_PX) -> np.ndarray:
    """Listed mitosis pixels and loose-yellow pixels, dilated by ``dilation_px`` (Euclidean)."""
    seed = yellow_loose(rgb)
    h, w = seed.shape
    for px in mitosis_pixels:
        ok = (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
        seed[px[ok, 1], px[ok, 0]] = True
    if not seed.any():
        return seed
    return ndimage.distance_transform_edt(~seed) <= dilation_px


def fill_ignored(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``rgb`` with the masked pixels replaced by their nearest unmasked pixel."""
    if not mask.any():
        return rgb.copy()
    _, (rows, cols) = ndimage.distance_transform_edt(mask, return_indices=True)
    return rgb[rows, cols]


def resample_to(rgb: np.ndarray, spacing_um: tuple[float, float], target_um: float = MODEL_SPACING_UM):
    """(pixels at ``target_um``, (sx, sy) factors native px per new px)."""
    h, w = rgb.shape[:2]
    shape = (max(1, round(h * spacing_um[1] / target_um)), max(1, round(w * spacing_um[0] / target_um)))
    return resample(rgb, shape), (w / shape[1], h / shape[0])


def to_new_pixels(xy: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """Native pixel coordinates -> resampled ones (pixel centres at integers, as the pipeline)."""
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    return (xy + 0.5) / np.asarray(scale) - 0.5


@dataclass
class LoadedField:
    field: Field
    pixels: np.ndarray  # H x W x 3 uint8; H fields: resampled and ignore region filled
    mitoses: np.ndarray  # (n, 2) in ``pixels`` coordinates (empty for H: negatives only)
    ignore: np.ndarray | None  # bool H x W (H fields), None for A
    spacing_um: float  # of ``pixels`` (A: 0.2456, H: 0.25)

    @property
    def radius_px(self) -> float:
        return MATCH_RADIUS_UM / self.spacing_um


def load_field(field: Field, cache_dir: Path | str | None = CACHE_DIR) -> LoadedField:
    """A field ready for stage 1 and crop extraction (see the module docstring); H fields are
    resampled, masked and filled once and cached as ``.npz`` under ``cache_dir/icpr2012``."""
    if field.scanner == "A":
        return LoadedField(field, read_rgb(field.path), field.mitoses.copy(), None, field.spacing_um[0])
    cache = Path(cache_dir) / "icpr2012" / f"{field.name}.npz" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        z = np.load(cache)
        return LoadedField(field, z["pixels"], np.zeros((0, 2)), z["ignore"], MODEL_SPACING_UM)
    rgb = read_rgb(field.path)
    mask = ignore_mask(rgb, csv_pixels(field.csv))
    filled = fill_ignored(rgb, mask)
    pixels, _ = resample_to(filled, field.spacing_um)
    ignore, _ = resample_to(mask[..., None].astype(np.uint8) * 255, field.spacing_um)
    ignore = ignore[..., 0] > 0  # any touch of the native mask counts
    if cache is not None:
        save_npz(cache, pixels=pixels, ignore=ignore)
    return LoadedField(field, pixels, np.zeros((0, 2)), ignore, MODEL_SPACING_UM)


def windows_clear(mask: np.ndarray | None, centres_xy: np.ndarray, size: int) -> np.ndarray:
    """True where a ``size`` x ``size`` window centred on the point (as ``extract_crops`` rounds
    it) touches no masked pixel; all True without a mask."""
    centres_xy = np.asarray(centres_xy, dtype=float).reshape(-1, 2)
    if mask is None or not mask.any():
        return np.ones(len(centres_xy), dtype=bool)
    half = size // 2
    integral = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    h, w = mask.shape
    r = np.floor(centres_xy[:, 1] + 0.5).astype(int)
    c = np.floor(centres_xy[:, 0] + 0.5).astype(int)
    r0, r1 = np.clip(r - half, 0, h), np.clip(r - half + size, 0, h)
    c0, c1 = np.clip(c - half, 0, w), np.clip(c - half + size, 0, w)
    total = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
    return total == 0


# --- MITOS-ATYPIA-14 ------------------------------------------------------------------------------


def mitos_atypia(data_dir: Path | str = DATA_DIR) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(crops N x 50 x 50 x 3 uint8, label (N,) 1 = mitosis / 0 = random, slide (N,) str)."""
    root = Path(data_dir) / "mitos-atypia-14"
    with open(root / "index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    crops = np.stack([read_rgb(root / r["file"]) for r in rows])
    labels = np.array([r["label"] == "mitosis" for r in rows], dtype=np.int64)
    return crops, labels, np.array([r["slide"] for r in rows])


def reflect_pad(crops: np.ndarray, size: int) -> np.ndarray:
    """N x s x s x 3 -> N x size x size x 3, centred, padded by reflection (``size >= s``)."""
    s = crops.shape[1]
    before = (size - s) // 2
    after = size - s - before
    if before == 0 and after == 0:
        return crops
    if max(before, after) >= s:  # reflection needs a pad smaller than the image
        return np.pad(crops, ((0, 0), (before, after), (before, after), (0, 0)), mode="symmetric")
    return np.pad(crops, ((0, 0), (before, after), (before, after), (0, 0)), mode="reflect")


# --- stage 1 ----------------------------------------------------------------------------------------


def cpu_models(threads: int = 1):
    """The product's models on the CPU, the detector session limited to ``threads`` threads."""
    import onnxruntime as ort

    from mitosis_analysis.inference import load_models
    from mitosis_analysis.settings import Settings

    settings = Settings.from_env(device="cpu")
    models = load_models(settings)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    path = models.manifest.verified_path(Path(settings.weights_dir), models.manifest.detector)
    models.detector.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    return models, settings


def stage1(pixels: np.ndarray, models, settings, floors: tuple[float, ...]) -> dict[float, np.ndarray]:
    """The product's stage 1 on one field: per floor (a probability), (n, 3) x, y, peak probability
    of the candidates after suppression (sorted by descending score)."""
    from mitosis_analysis.decision import logit
    from mitosis_analysis.pipeline import candidates_from_map, mitosis_logit_map

    logits = mitosis_logit_map(pixels, models, settings)
    out = {}
    for floor in floors:
        kept = candidates_from_map(logits, float(logit(floor)), models)
        out[floor] = np.array([[c.x, c.y, sigmoid(c.score)] for c in kept], dtype=float).reshape(-1, 3)
    return out


def candidates_path(name: str, cache_dir: Path | str = CACHE_DIR) -> Path:
    return Path(cache_dir) / "stage1" / f"{name}.json"


def load_candidates(name: str, floor: float, cache_dir: Path | str = CACHE_DIR) -> np.ndarray:
    """Cached stage-1 candidates of one field at ``floor``: (n, 3) x, y, score."""
    with open(candidates_path(name, cache_dir)) as f:
        record = json.load(f)
    return np.asarray(record["candidates"][f"{floor:g}"], dtype=float).reshape(-1, 3)


def cached_floors(name: str, cache_dir: Path | str = CACHE_DIR) -> list[float]:
    """The floors at which a field's stage-1 candidates are cached."""
    with open(candidates_path(name, cache_dir)) as f:
        return sorted(float(k) for k in json.load(f)["candidates"])


def far_from(points: np.ndarray, truth: np.ndarray, radius: float) -> np.ndarray:
    """True for points farther than ``radius`` from every truth point."""
    points, truth = np.asarray(points, float).reshape(-1, 2), np.asarray(truth, float).reshape(-1, 2)
    if len(truth) == 0 or len(points) == 0:
        return np.ones(len(points), dtype=bool)
    d, _ = cKDTree(truth).query(points, k=1)
    return d > radius


def in_ignore(ignore: np.ndarray | None, xy: np.ndarray) -> np.ndarray:
    """True where a point's (rounded) pixel lies in the ignore region."""
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    if ignore is None:
        return np.zeros(len(xy), dtype=bool)
    h, w = ignore.shape
    r = np.clip(np.floor(xy[:, 1] + 0.5).astype(int), 0, h - 1)
    c = np.clip(np.floor(xy[:, 0] + 0.5).astype(int), 0, w - 1)
    return ignore[r, c]


def f1_sweep(truths: list[np.ndarray], cands: list[np.ndarray], scores: list[np.ndarray], radius: list[float],
             thresholds: np.ndarray) -> list[DetectionCounts]:
    """Micro TP/FP/FN over fields when candidates with score >= t are the detections (the
    project's matcher, ``count_matches``, per field)."""
    out = []
    for t in thresholds:
        total = DetectionCounts()
        for truth, xy, s, r in zip(truths, cands, scores, radius):
            total = total + count_matches(truth, xy[s >= t], r)
        out.append(total)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="stage 1 on the ICPR 2012 fields, cached; baseline figures")
    parser.add_argument("--data", type=Path, default=DATA_DIR)
    parser.add_argument("--cache", type=Path, default=CACHE_DIR)
    parser.add_argument("--floor", type=float, default=0.02)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    models, settings = cpu_models(args.threads)
    product_floor = round(float(sigmoid(models.manifest.thresholds.candidate_floor_logit)), 6)
    floors = (args.floor, product_floor)
    fields = icpr_fields(args.data)
    for field in fields:
        path = candidates_path(field.name, args.cache)
        if path.is_file():
            continue
        t0 = time.perf_counter()
        loaded = load_field(field, args.cache)
        found = stage1(loaded.pixels, models, settings, floors)
        seconds = time.perf_counter() - t0
        write_json({"field": field.name, "scanner": field.scanner, "slide": field.slide,
                    "spacing_um": loaded.spacing_um, "shape": list(loaded.pixels.shape[:2]),
                    "seconds": round(seconds, 2),
                    "candidates": {f"{f:g}": np.round(c, 6).tolist() for f, c in found.items()}}, path)
        print(f"{field.name}: {len(found[args.floor])} candidates at {args.floor:g} "
              f"({len(found[product_floor])} at {product_floor:g}), {seconds:.1f} s", flush=True)
    shipped = float(sigmoid(models.manifest.thresholds.detection_logit))
    write_json(stage1_report(fields, args.floor, product_floor, shipped, args.cache), args.cache / "stage1_report.json")
    print(json.dumps(json.load(open(args.cache / "stage1_report.json"))["summary"], indent=1))
    return 0


def stage1_report(fields: list[Field], floor: float, product_floor: float, shipped: float, cache: Path) -> dict:
    """Recall of the candidates at ``floor`` on the A fields, candidates per field (A and H), and
    the baseline F1 (product floor) per slide at the shipped threshold and at the best one."""
    a_fields = [f for f in fields if f.scanner == "A"]
    radius = [MATCH_RADIUS_UM / f.spacing_um[0] for f in a_fields]
    low = [load_candidates(f.name, floor, cache) for f in a_fields]
    prod = [load_candidates(f.name, product_floor, cache) for f in a_fields]
    truths = [f.mitoses for f in a_fields]
    recall = sum((count_matches(t, c[:, :2], r) for t, c, r in zip(truths, low, radius)), DetectionCounts())
    per_h = [len(load_candidates(f.name, floor, cache)) for f in fields if f.scanner == "H"]
    scores = np.concatenate([c[:, 2] for c in prod])
    thresholds = np.unique(np.r_[shipped, np.quantile(scores, np.linspace(0, 1, 301)) if len(scores) else []])
    report: dict = {"floor": floor, "product_floor": product_floor, "shipped_threshold": shipped,
                    "radius_px_A": radius[0], "per_slide": {}}

    def sweep(idx):
        counts = f1_sweep([truths[i] for i in idx], [prod[i][:, :2] for i in idx], [prod[i][:, 2] for i in idx],
                          [radius[i] for i in idx], thresholds)
        f1 = np.array([c.f1 or 0.0 for c in counts])
        k = int(np.argmax(f1))
        at = counts[int(np.searchsorted(thresholds, shipped))]
        return {"fields": len(idx), "mitoses": int(sum(len(truths[i]) for i in idx)),
                "shipped": at.as_dict(), "best": {"threshold": float(thresholds[k]), **counts[k].as_dict()}}

    for s in SLIDES:
        report["per_slide"][s] = sweep([i for i, f in enumerate(a_fields) if f.slide == s])
    report["summary"] = {
        "stage1_recall_at_floor_A": recall.as_dict(),
        "candidates_per_A_field_mean": float(np.mean([len(c) for c in low])),
        "candidates_per_H_field_mean": float(np.mean(per_h)) if per_h else None,
        "baseline_all_A": sweep(list(range(len(a_fields)))),
        "baseline_per_slide_f1_shipped": {s: report["per_slide"][s]["shipped"]["f1"] for s in SLIDES},
        "baseline_per_slide_f1_best": {s: report["per_slide"][s]["best"]["f1"] for s in SLIDES},
    }
    return report


if __name__ == "__main__":
    sys.exit(main())
