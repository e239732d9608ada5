"""Would the decision gain from the stage-1 score beside the verifier's logit? Leave one slide out.

    python -m training.verifier_combine --runs training/runs/verifier_def [--out F]

Each fold ``<runs>/loso_<s>`` holds ``scores.npz`` (``train_verifier``: every scanner-A candidate
with its stage-1 probability and the fold's verifier logit). The score tried is
``z = logit + a * logit(stage1)``; per fold, ``a`` (from ``--weights``) and the threshold are
chosen by F1 on the fold's four *training* slides and applied to its held-out slide; counts are
pooled over the five held-out slides (micro F1, the project's matcher at 7.5 um). ``a = 0`` is the
verifier alone, as shipped. A selection experiment on cached candidates, not the product's run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from mitosis_analysis.decision import logit  # noqa: E402
from mitosis_analysis.evaluate.detection import DetectionCounts  # noqa: E402
from training import real_fields as rf  # noqa: E402
from training.runtime import report_json  # noqa: E402
from training.train_verifier import best, f1_by_threshold  # noqa: E402

THRESHOLDS = np.round(np.arange(-8.0, 16.0001, 0.25), 2)


def fold(run: Path, fields: list, slide: str, weights: list[float]) -> dict:
    z = dict(np.load(run / "scores.npz"))
    det = logit(np.clip(z["stage1"], 1e-6, 1 - 1e-6))
    train = [i for i, f in enumerate(fields) if f.slide != slide]
    test = [i for i, f in enumerate(fields) if f.slide == slide]
    out = {}
    for a in weights:
        scores = {**z, "combined": z["logit"] + a * det}
        t, on_train = best(THRESHOLDS, f1_by_threshold(fields, scores, train, THRESHOLDS, key="combined"))
        held = f1_by_threshold(fields, scores, test, [t], key="combined")[0]
        out[a] = {"threshold": t, "train": on_train, "heldout": held}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=rf.DATA_DIR)
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0, 2.0])
    parser.add_argument("--slides", nargs="+", default=list(rf.SLIDES), help="folds to pool (default all five)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    fields = rf.icpr_fields(args.data, ("A",))
    per_fold = {s: fold(args.runs / f"loso_{s}", fields, s, args.weights) for s in args.slides}
    report: dict = {"runs": str(args.runs), "weights": {}}
    for a in args.weights:
        pooled = sum((per_fold[s][a]["heldout"] for s in args.slides), DetectionCounts())
        report["weights"][str(a)] = {"pooled_heldout": pooled.as_dict(),
                                     "per_slide_f1": {s: per_fold[s][a]["heldout"].f1 for s in args.slides},
                                     "thresholds": {s: per_fold[s][a]["threshold"] for s in args.slides}}
    # a chosen per fold on its training slides too (the honest version of picking a)
    chosen = DetectionCounts()
    picks = {}
    for s in args.slides:
        a = max(args.weights, key=lambda w: (per_fold[s][w]["train"].f1 or 0.0, -w))
        picks[s] = a
        chosen = chosen + per_fold[s][a]["heldout"]
    report["a_chosen_on_training_slides"] = {"per_slide": picks, "pooled_heldout": chosen.as_dict()}
    report_json(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
