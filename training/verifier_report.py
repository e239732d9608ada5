"""Pool the leave-one-slide-out runs of ``train_verifier`` into one table (markdown + JSON).

    python -m training.verifier_report --runs training/runs/verifier --variants loso noH noaug seed1

For each variant (run folders ``<variant>_00`` ... ``<variant>_04``): held-out F1 per fold at the
threshold chosen on that fold's training slides, the pooled (micro over the 35 A fields) F1 at those
thresholds, and, for reference only, the oracle: the best single threshold over the pooled held-out
scores. Matching: the project's ``count_matches`` at 7.5 um (30.5 px at 0.2456 um/px).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from mitosis_analysis.evaluate.detection import DetectionCounts  # noqa: E402
from training import real_fields as rf  # noqa: E402
from training.runtime import write_json  # noqa: E402
from training.train_verifier import best, f1_by_threshold  # noqa: E402


def pooled_scores(runs: list[Path], fields: list[rf.Field]) -> dict:
    """Each fold's held-out candidates with that fold's logits, concatenated."""
    parts = []
    for run in runs:
        holdout = json.loads((run / "result.json").read_text())["holdout"]
        z = np.load(run / "scores.npz")
        keep = np.array([fields[i].slide == holdout for i in z["field"]], dtype=bool)
        parts.append({k: z[k][keep] for k in z.files})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def variant_summary(runs: list[Path], fields: list[rf.Field]) -> dict:
    folds, pooled = {}, DetectionCounts()
    for run in runs:
        r = json.loads((run / "result.json").read_text())
        h = r["heldout"]
        for c in h["per_field"].values():
            pooled = pooled + DetectionCounts(c["tp"], c["fp"], c["fn"])
        folds[r["holdout"]] = {"threshold": r["chosen_on_training_slides"]["threshold"], **h["at_chosen"],
                               "oracle_threshold": h["oracle"]["threshold"], "oracle_f1": h["oracle"]["f1"],
                               "at_logit_0_f1": h["at_logit_0"]["f1"], "train_seconds": r["train_seconds"]}
    scores = pooled_scores(runs, fields)
    thresholds = np.round(np.arange(-6.0, 8.0001, 0.25), 2)
    held = {json.loads((run / "result.json").read_text())["holdout"] for run in runs}
    all_fields = [i for i, f in enumerate(fields) if f.slide in held]
    sweep = f1_by_threshold(fields, scores, all_fields, thresholds)
    oracle_t, oracle = best(thresholds, sweep)
    zero = sweep[int(np.argmin(np.abs(thresholds)))]
    return {"folds": folds, "pooled_at_chosen": pooled.as_dict(), "pooled_at_logit_0": zero.as_dict(),
            "pooled_oracle": {"threshold": oracle_t, **oracle.as_dict()},
            "stage1_recall_at_verify_floor": f1_by_threshold(fields, scores, all_fields, [-1e9])[0].as_dict()}


def markdown(summary: dict) -> str:
    lines = ["| variant | F1 00 | F1 01 | F1 02 | F1 03 | F1 04 | pooled F1 (P / R) at chosen t | pooled F1 at logit 0 | oracle t: pooled F1 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, s in summary.items():
        per = [f"{s['folds'][k]['f1']:.3f} (t={s['folds'][k]['threshold']:g})" if k in s["folds"] else "-"
               for k in rf.SLIDES]
        p = s["pooled_at_chosen"]
        o = s["pooled_oracle"]
        lines.append(f"| {name} | " + " | ".join(per) + f" | {p['f1']:.3f} ({p['precision']:.3f} / {p['recall']:.3f}) | "
                     f"{s['pooled_at_logit_0']['f1']:.3f} | {o['threshold']:g}: {o['f1']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=REPO_ROOT / "training" / "runs" / "verifier")
    parser.add_argument("--variants", nargs="+", default=["loso"])
    parser.add_argument("--data", type=Path, default=rf.DATA_DIR)
    args = parser.parse_args(argv)
    fields = rf.icpr_fields(args.data, ("A",))
    summary = {}
    for variant in args.variants:
        runs = [args.runs / f"{variant}_{s}" for s in rf.SLIDES if (args.runs / f"{variant}_{s}" / "result.json").is_file()]
        if runs:
            summary[variant] = variant_summary(runs, fields)
    write_json(summary, args.runs / "summary.json")
    text = markdown(summary)
    (args.runs / "summary.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
