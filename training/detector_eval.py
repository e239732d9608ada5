"""Detection metrics of the detector on mosaics of AMi-Br crops.

The crops (128 x 128, each centred on a mitosis) are tiled side by side into large images; the ground
truth is every annotated mitosis inside each crop (``training/labels.py``). A model's mitosis map
goes through the product's post-processing (connected components -> centroid and score ->
non-maximum suppression at 7.5 um), and detections are matched greedily, best score first, to
unmatched ground-truth points within 7.5 um. The result is a sweep over the score threshold:
recall and false detections per mm^2 of *crop area* (the mosaic's empty cells do not count).

Caveat that every figure from here must carry: the crops are centred on mitoses and hold mostly
ordinary nuclei and stroma, so their negatives are far easier than a real ROI's (apoptotic bodies,
lymphocytes, pyknotic nuclei), and FP/mm^2 here underestimates the FP rate on real ROIs.

Post-processing is the product's own (``candidates_from_map``; ``TorchDetector`` runs a PyTorch
checkpoint through ``mitosis_analysis.pipeline`` unchanged), so in-training validation and the
final evaluation measure what the container does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from types import SimpleNamespace

import numpy as np
from scipy.spatial import cKDTree

from mitosis_analysis.candidates import map_candidates
from mitosis_analysis.inference import to_model_input
from mitosis_analysis.manifest import InferencePlan
from training.export import DEFAULT_CANDIDATE_FLOOR_LOGIT as CANDIDATE_FLOOR_LOGIT
from training import data, labels, plots

SPACING_MM = 0.00025
MATCH_RADIUS_MM = 0.0075


# --- mosaics ------------------------------------------------------------------------------------


@dataclass
class Mosaic:
    image: np.ndarray  # H x W x 3 uint8
    gt_points: np.ndarray  # (n, 2) x, y in mosaic pixels
    n_crops: int
    crop_size: int

    @property
    def crop_area_mm2(self) -> float:
        return self.n_crops * (self.crop_size * SPACING_MM) ** 2


def build_mosaic(images: np.ndarray, points: Sequence[np.ndarray], cols: int | None = None,
                 fill: int = 255, multiple: int = 32) -> Mosaic:
    """Crops (N x s x s x 3) side by side, row-major, ``cols`` per row; empty cells and the padding
    to a multiple of ``multiple`` px are ``fill`` (white, like glass). ``points[i]`` are crop i's
    ground-truth points in crop pixels."""
    n, s = images.shape[0], images.shape[1]
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    height = math.ceil(rows * s / multiple) * multiple
    width = math.ceil(cols * s / multiple) * multiple
    mosaic = np.full((height, width, 3), fill, dtype=np.uint8)
    gts = []
    for i in range(n):
        r, c = divmod(i, cols)
        mosaic[r * s : (r + 1) * s, c * s : (c + 1) * s] = images[i]
        gts.append(np.asarray(points[i], dtype=float).reshape(-1, 2) + [c * s, r * s])
    return Mosaic(mosaic, np.concatenate(gts) if gts else np.zeros((0, 2)), n, s)


def crop_mosaic(crops: Sequence, annotations: dict, cols: int | None = None) -> Mosaic:
    """The evaluation mosaic of AMi-Br crops (``training.data.Crop``): ground truth = every
    annotated mitosis inside each crop (``labels.crop_points``; ``annotations`` from
    ``labels.slide_annotations``)."""
    points = [labels.crop_points(c, annotations)[0] for c in crops]
    return build_mosaic(data.load_crops(crops), points, cols=cols)


# --- the product's post-processing ---------------------------------------------------------------


def candidates_from_map(logits: np.ndarray, plan: InferencePlan | None = None,
                        floor_logit: float = CANDIDATE_FLOOR_LOGIT) -> tuple[np.ndarray, np.ndarray]:
    """The product's own steps (``mitosis_analysis.candidates``) on one mitosis logit map: local
    maxima at or above the floor -> centroid and peak logit -> suppression within 7.5 um.
    Returns (xy, logit), sorted by descending logit."""
    plan = plan or InferencePlan()
    kept = map_candidates(logits, floor_logit, 1, plan.centroid_radius_mm / SPACING_MM,
                          plan.suppression_radius_mm / SPACING_MM)
    return (np.array([[c.x, c.y] for c in kept], dtype=float).reshape(-1, 2),
            np.array([c.score for c in kept], dtype=float))


class TorchDetector:
    """A PyTorch detector with the interface ``mitosis_analysis.pipeline`` expects of its models
    (``mitosis_logit`` on uint8 tiles, ``manifest.spacing_mm``, ``manifest.plan``), so that a checkpoint is
    evaluated through exactly the product's tiling, stitching and post-processing."""

    def __init__(self, net, spacing_mm: float = SPACING_MM, plan: InferencePlan | None = None,
                 floor_logit: float = CANDIDATE_FLOOR_LOGIT, output_stride: int = 1):
        import torch

        self._torch = torch
        self.net = net.eval()
        self.output_stride = output_stride  # as the exported graph will pool (training/onnx_contract.py)
        # thresholds: only the floor matters for candidates; the detection threshold is what is chosen
        self.manifest = SimpleNamespace(
            spacing_mm=spacing_mm, plan=plan or InferencePlan(),
            thresholds=SimpleNamespace(candidate_floor_logit=floor_logit, detection_logit=np.inf),
        )

    def mitosis_logit(self, tiles: np.ndarray) -> np.ndarray:
        from model import mitosis_logit

        from training.onnx_contract import block_max

        x = self._torch.from_numpy(to_model_input(tiles))
        with self._torch.no_grad():
            return block_max(mitosis_logit(self.net(x)).numpy(), self.output_stride)


# --- matching and sweep -------------------------------------------------------------------------


def greedy_match(points: np.ndarray, scores: np.ndarray, gt: np.ndarray, radius: float) -> np.ndarray:
    """True where a detection (taken best score first) matches a still-unmatched ground-truth point
    within ``radius``. Because the order is by score, the matching at any threshold is a prefix of
    this one, so one pass gives the whole sweep."""
    order = np.argsort(-scores, kind="stable")
    hit = np.zeros(len(points), dtype=bool)
    if len(gt) == 0 or len(points) == 0:
        return hit
    tree = cKDTree(gt)
    taken = np.zeros(len(gt), dtype=bool)
    for i in order:
        candidates = tree.query_ball_point(points[i], radius)
        free = [j for j in candidates if not taken[j]]
        if free:
            j = min(free, key=lambda k: np.hypot(*(gt[k] - points[i])))
            taken[j] = True
            hit[i] = True
    return hit


@dataclass
class Sweep:
    thresholds: np.ndarray
    recall: np.ndarray
    fp_per_mm2: np.ndarray
    precision: np.ndarray
    n_gt: int
    area_mm2: float

    def at(self, threshold: float) -> dict:
        i = int(np.argmin(np.abs(self.thresholds - threshold)))
        return {"threshold": float(self.thresholds[i]), "recall": float(self.recall[i]),
                "fp_per_mm2": float(self.fp_per_mm2[i]), "precision_on_crops": float(self.precision[i]),
                "f1_on_crops": f1(self.precision[i], self.recall[i]),
                "expected_roi_f1": float(roi_f1(self)[i]), "n_gt": self.n_gt, "area_mm2": self.area_mm2}

    def recall_at_fp(self, fp_per_mm2: float) -> float:
        ok = self.fp_per_mm2 <= fp_per_mm2
        return float(self.recall[ok].max()) if ok.any() else 0.0

    def threshold_for_fp(self, fp_per_mm2: float) -> float:
        """The lowest threshold (highest recall) whose FP/mm^2 stays within ``fp_per_mm2``."""
        ok = self.fp_per_mm2 <= fp_per_mm2
        return float(self.thresholds[ok].min()) if ok.any() else float(self.thresholds.max())

    def best_f1_threshold(self) -> float:
        scores = [f1(p, r) for p, r in zip(self.precision, self.recall)]
        return float(self.thresholds[int(np.argmax(scores))])

    def to_dict(self) -> dict:
        return {"thresholds": self.thresholds.tolist(), "recall": self.recall.tolist(),
                "fp_per_mm2": self.fp_per_mm2.tolist(), "precision": self.precision.tolist(),
                "n_gt": self.n_gt, "area_mm2": self.area_mm2}


# Mitotic figures per mm^2 over the 553 MIDOG++ ROIs (11,937 figures in 1,184 mm^2 at 0.25 um/px):
# the density a real ROI has, against ~1,000 per mm^2 in a mosaic of AMi-Br crops.
ROI_MITOSIS_DENSITY_PER_MM2 = 10.1


def roi_f1(s: Sweep, density_per_mm2: float = ROI_MITOSIS_DENSITY_PER_MM2) -> np.ndarray:
    """F1 per threshold expected on an ROI with ``density_per_mm2`` mitoses, from the measured
    recall and false detections per mm^2 (F1 on a crop mosaic would reward far too many false
    detections: its mitoses are ~100x denser than an ROI's). Optimistic in so far as FP/mm^2
    measured on crops is."""
    tp = s.recall * density_per_mm2
    fn = (1 - s.recall) * density_per_mm2
    return 2 * tp / np.maximum(2 * tp + s.fp_per_mm2 + fn, 1e-12)


def choose_threshold(s: Sweep, rule: str = "roi-f1", fp_budget_per_mm2: float = 5.0) -> float:
    """The operating threshold by ``rule``: "roi-f1" (max of ``roi_f1``) or "fp-budget" (the lowest
    threshold within ``fp_budget_per_mm2``)."""
    if rule == "roi-f1":
        return float(s.thresholds[int(np.argmax(roi_f1(s)))])
    if rule == "fp-budget":
        return s.threshold_for_fp(fp_budget_per_mm2)
    raise ValueError(f"unknown threshold rule {rule!r}")


def f1(precision: float, recall: float) -> float:
    return float(2 * precision * recall / (precision + recall)) if precision + recall > 0 else 0.0


# Mitosis logits -2.2 (probability 0.1, the candidate floor) ... 16 by 0.05: the whole useful range,
# evenly in logit space (scores no longer crowd against a probability of 1).
DEFAULT_THRESHOLDS = np.round(np.arange(-2.2, 16.0 + 1e-9, 0.05), 4)


def sweep(points: np.ndarray, scores: np.ndarray, gt: np.ndarray, area_mm2: float,
          thresholds: np.ndarray | None = None, radius_px: float = MATCH_RADIUS_MM / SPACING_MM) -> Sweep:
    thresholds = DEFAULT_THRESHOLDS if thresholds is None else np.asarray(thresholds)
    hit = greedy_match(points, scores, gt, radius_px)
    tp = np.array([(hit & (scores >= t)).sum() for t in thresholds], dtype=float)
    n_det = np.array([(scores >= t).sum() for t in thresholds], dtype=float)
    fp = n_det - tp
    recall = tp / max(len(gt), 1)
    precision = np.where(n_det > 0, tp / np.maximum(n_det, 1), 1.0)
    return Sweep(thresholds, recall, fp / area_mm2, precision, len(gt), area_mm2)


def merge_detections(parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], spacing: float = 1e6):
    """Several mosaics' (points, scores, gt) as one problem (offset so that nothing crosses over)."""
    pts, scs, gts = [], [], []
    for k, (p, s, g) in enumerate(parts):
        pts.append(np.asarray(p).reshape(-1, 2) + k * spacing)
        scs.append(np.asarray(s).reshape(-1))
        gts.append(np.asarray(g).reshape(-1, 2) + k * spacing)
    return np.concatenate(pts), np.concatenate(scs), np.concatenate(gts)


def partial_froc(s: Sweep, fp_rates: Sequence[float] = (2.5, 5.0, 10.0, 20.0)) -> float:
    """Mean recall at the given FP/mm^2 rates: the model-selection score on validation."""
    return float(np.mean([s.recall_at_fp(r) for r in fp_rates]))


def plot_sweep(s: Sweep, path, title: str, chosen: float | None = None) -> None:
    plt = plots.pyplot(path)
    if plt is None:
        return

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].plot(s.thresholds, s.recall, label="recall")
    axes[0].plot(s.thresholds, s.precision, label="precision")
    ax2 = axes[0].twinx()
    ax2.plot(s.thresholds, s.fp_per_mm2, color="tab:red", label="FP / mm²")
    ax2.set_yscale("log")
    ax2.set_ylabel("false detections per mm² of crop area")
    axes[0].set_xlabel("mitosis score threshold")
    axes[0].set_xscale("logit")
    axes[0].legend(loc="lower left")
    axes[1].plot(s.fp_per_mm2, s.recall, marker=".")
    axes[1].set_xscale("symlog", linthresh=1)
    axes[1].axvline(5, color="grey", ls="--", lw=0.8)
    axes[1].axhline(0.9, color="grey", ls="--", lw=0.8)
    axes[1].set_xlabel("false detections per mm² (crop area)")
    axes[1].set_ylabel(f"recall within 7.5 µm (n={s.n_gt})")
    if chosen is not None:
        m = s.at(chosen)
        axes[0].axvline(chosen, color="k", lw=0.8)
        axes[1].plot([m["fp_per_mm2"]], [m["recall"]], "k*", ms=12, label=f"threshold {chosen:.6g}")
        axes[1].legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    plots.save(fig, path)
