"""Evaluation of the atypical classifier: predictions (with the product's flip TTA), balanced
accuracy / sensitivity / specificity / AUROC, the operating-threshold sweep, and plots.

Usage (the test split is for the final report only)::

    python -m training.classifier_eval --checkpoint training/checkpoints/classifier.pt \\
        --data ../shared/data/ami-br --split test --views 1 4 8

A leave-one-domain-out fold (``holdout_domain`` in its checkpoint) is scored on its own held-out
domain and validation slides, rebuilt by ``training.data.run_splits``. Prints one JSON object: for each number of flip views, the metrics at the checkpoint's threshold
(and the best threshold on that split, for information only: it must never be used to choose).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from scipy.stats import rankdata

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from mitosis_analysis.classify import classify_crops  # noqa: E402
from model.classifier import build_classifier  # noqa: E402
from training import data as amibr  # noqa: E402
from training import augment as aug  # noqa: E402
from training import plots, runtime  # noqa: E402

# --- metrics (pure) -----------------------------------------------------------------------------


def auroc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties)."""
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(p, dtype=np.float64))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """Sensitivity (atypical recall), specificity, balanced accuracy of ``p >= threshold``, and AUROC."""
    y = np.asarray(y).astype(bool)
    pred = np.asarray(p) >= threshold
    sens = float((pred & y).sum() / max(1, y.sum()))
    spec = float((~pred & ~y).sum() / max(1, (~y).sum()))
    return {
        "balanced_accuracy": (sens + spec) / 2,
        "sensitivity": sens,
        "specificity": spec,
        "auroc": auroc(y, p),
        "threshold": float(threshold),
        "n": int(len(y)),
        "n_atypical": int(y.sum()),
    }


def threshold_sweep(y: np.ndarray, p: np.ndarray, thresholds: np.ndarray) -> dict[str, np.ndarray]:
    """Sensitivity, specificity and balanced accuracy at each threshold (``p >= t`` is atypical)."""
    y = np.asarray(y).astype(bool)
    pred = np.asarray(p)[None, :] >= np.asarray(thresholds)[:, None]
    sens = (pred & y).sum(1) / max(1, y.sum())
    spec = (~pred & ~y).sum(1) / max(1, (~y).sum())
    return {"threshold": np.asarray(thresholds), "sensitivity": sens, "specificity": spec,
            "balanced_accuracy": (sens + spec) / 2}


def _candidate_thresholds(p: np.ndarray) -> np.ndarray:
    """0, the midpoints between consecutive distinct scores, and 1."""
    s = np.unique(np.asarray(p, dtype=np.float64))
    return np.concatenate([[0.0], (s[:-1] + s[1:]) / 2, [1.0]]) if len(s) > 1 else np.array([0.5])


def best_threshold(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """(threshold, balanced accuracy) maximising balanced accuracy; candidates are midpoints between
    consecutive distinct scores; among equal optima the one closest to the median optimum wins."""
    candidates = _candidate_thresholds(p)
    ba = threshold_sweep(y, p, candidates)["balanced_accuracy"]
    best = np.flatnonzero(ba >= ba.max() - 1e-12)
    i = best[len(best) // 2]
    return float(candidates[i]), float(ba[i])


def equal_error_threshold(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """(threshold, balanced accuracy) where sensitivity and specificity are closest to equal (the
    ROC curve's equal-error point); among equally close candidates the best balanced accuracy, then
    the middle one. Like the maximum of balanced accuracy it does not depend on the prevalence, but
    it sits where the ROC curve crosses the diagonal sens = spec instead of at the argmax of a flat,
    noisy curve: chosen on validation it carried better to held-out domains (training/README.md)."""
    candidates = _candidate_thresholds(p)
    sweep = threshold_sweep(y, p, candidates)
    gap = np.abs(sweep["sensitivity"] - sweep["specificity"])
    close = np.flatnonzero(gap <= gap.min() + 1e-12)
    ba = sweep["balanced_accuracy"][close]
    best = close[ba >= ba.max() - 1e-12]
    i = best[len(best) // 2]
    return float(candidates[i]), float(sweep["balanced_accuracy"][i])


# Threshold rules compared by ``classifier_lodo rules``; THRESHOLD_RULE sets every shipped
# classifier's operating threshold on validation (``evaluate_views``).
THRESHOLD_RULES = {"max-ba": best_threshold, "equal-error": equal_error_threshold}
THRESHOLD_RULE = "equal-error"
operating_threshold = THRESHOLD_RULES[THRESHOLD_RULE]


# --- prediction ---------------------------------------------------------------------------------


def torch_classifier(net: torch.nn.Module, batch_size: int = 128):
    """A ``mitosis_analysis.classify.Classifier`` (N x S x S x 3 uint8 -> P(atypical)) from a module."""
    net = net.eval()
    device = runtime.device_of(net)

    def classify(crops: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for start in range(0, len(crops), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(crops[start : start + batch_size])).to(device)
                x = aug.to_float(x).contiguous(memory_format=torch.channels_last)
                out.append(net(x).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    return classify


def predict(net: torch.nn.Module, crops: np.ndarray, n_views: int = 1, batch_size: int = 128) -> np.ndarray:
    """P(atypical) of N x S x S x 3 uint8 crops, averaged over ``n_views`` flip views exactly as the
    product does it (``mitosis_analysis.classify.classify_crops``)."""
    return classify_crops(torch_classifier(net, batch_size), crops, batch_size, n_views)


def evaluate_views(net: torch.nn.Module, x_val: np.ndarray, y_val: np.ndarray, x_test: np.ndarray,
                   y_test: np.ndarray, views: Sequence[int]) -> dict:
    """For each number of flip views: the operating threshold (``operating_threshold`` on
    validation: the equal-error point) and the metrics there on validation and on test. Returns ``thresholds``
    (``{"n": t}``), ``validation`` and ``test`` (``{"views_n": metrics}``) and ``probs``
    (``{n: (p_val, p_test)}``); :func:`views_summary` turns it into log lines."""
    out = {"thresholds": {}, "validation": {}, "test": {}, "probs": {}}
    for n in views:
        p_val, p_test = predict(net, x_val, n_views=n), predict(net, x_test, n_views=n)
        t, _ = operating_threshold(y_val, p_val)
        out["thresholds"][str(n)] = t
        out["validation"][f"views_{n}"] = binary_metrics(y_val, p_val, t)
        out["test"][f"views_{n}"] = binary_metrics(y_test, p_test, t)
        out["probs"][n] = (p_val, p_test)
    return out


def views_summary(result: dict) -> list[str]:
    """One line per number of views of an :func:`evaluate_views` result."""
    lines = []
    for n in result["probs"]:
        v, t = result["validation"][f"views_{n}"], result["test"][f"views_{n}"]
        lines.append(f"{n} view(s): val BA {v['balanced_accuracy']:.4f} AUROC {v['auroc']:.4f} | test BA "
                     f"{t['balanced_accuracy']:.4f} sens {t['sensitivity']:.4f} spec {t['specificity']:.4f} "
                     f"AUROC {t['auroc']:.4f} @ {v['threshold']:.3f}")
    return lines


# --- plots --------------------------------------------------------------------------------------


def plot_threshold_sweep(curves: dict[str, tuple[np.ndarray, np.ndarray]], threshold: float, path: Path) -> None:
    """Sensitivity, specificity and balanced accuracy against the threshold, one panel per split."""
    plt = plots.pyplot(path)
    if plt is None:
        return

    t = np.linspace(0, 1, 201)
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4), squeeze=False)
    for ax, (name, (y, p)) in zip(axes[0], curves.items()):
        s = threshold_sweep(y, p, t)
        for key in ("sensitivity", "specificity", "balanced_accuracy"):
            ax.plot(t, s[key], label=key.replace("_", " "))
        ax.axvline(threshold, color="k", ls="--", lw=1, label=f"operating threshold {threshold:.3f}")
        ax.set(title=f"{name} (AUROC {auroc(y, p):.3f})", xlabel="threshold on P(atypical)", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower center", fontsize=8)
    fig.tight_layout()
    plots.save(fig, path)


def plot_training_curves(history: Sequence[dict], path: Path) -> None:
    """Training loss, validation loss, validation AUROC and balanced accuracy per epoch."""
    plt = plots.pyplot(path)
    if plt is None:
        return

    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(epochs, [h["train_loss"] for h in history], label="train loss (focal + hardness)")
    a.plot(epochs, [h["val_bce"] for h in history], label="validation BCE")
    a.set(xlabel="epoch", title="losses")
    b.plot(epochs, [h["val_auroc"] for h in history], label="validation AUROC")
    b.plot(epochs, [h["val_best_ba"] for h in history], label="validation best balanced accuracy")
    b.set(xlabel="epoch", title="validation (EMA weights, no TTA)", ylim=(0.4, 1.0))
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    plots.save(fig, path)


# --- command line -------------------------------------------------------------------------------


def load_checkpoint(path: Path) -> tuple[torch.nn.Module, dict]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    net = build_classifier(arch=ckpt["arch"], **ckpt["config"])
    net.load_state_dict(ckpt["state_dict"])
    return net.eval().to(memory_format=torch.channels_last), ckpt


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, default=REPO_ROOT / "training/checkpoints/classifier.pt")
    ap.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared/data/ami-br")
    ap.add_argument("--split", choices=("test", "val", "fit"), default="test",
                    help="test = the run's evaluation crops: the published test split, or for a "
                         "leave-one-domain-out fold its held-out domain")
    ap.add_argument("--views", type=int, nargs="+", default=[1, 4, 8], choices=(1, 2, 4, 8))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        if not args.checkpoint.is_file():
            raise amibr.DataError(f"checkpoint not found: {args.checkpoint}")
        net, ckpt = load_checkpoint(args.checkpoint)
        fit, val, test, evaluated_on = amibr.run_splits(args.data, ckpt.get("train_config", {}))
        crops = {"fit": fit, "val": val, "test": test}[args.split]
        images, y = amibr.load_crops(crops), amibr.labels(crops)
    except amibr.DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    thresholds = ckpt.get("thresholds_by_views", {})
    result = {"checkpoint": str(args.checkpoint), "split": args.split, "summary": amibr.summary(crops)}
    if args.split == "test":
        result["evaluated_on"] = evaluated_on
    for n in args.views:
        p = predict(net, images, n)
        thr = float(thresholds.get(str(n), ckpt["threshold"]))
        m = binary_metrics(y, p, thr)
        m["best_threshold_on_this_split"], m["best_balanced_accuracy_on_this_split"] = best_threshold(y, p)
        result[f"views_{n}"] = m
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
