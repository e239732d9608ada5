"""Pool the leave-one-slide-out runs of ``train_verifier`` into one table (markdown + JSON).

    python -m training.verifier_report --runs training/runs/verifier --variants loso noH noaug seed1
    python -m training.verifier_report --variants loso ctx96 --views 1 8 --ensemble loso ctx96

For each variant (run folders ``<variant>_00`` ... ``<variant>_04``): held-out F1 per fold at the
threshold chosen on that fold's training slides, the pooled (micro over the 35 A fields) F1 at those
thresholds, and, for reference only, the oracle: the best single threshold over the pooled held-out
scores. Matching: the project's ``count_matches`` at 7.5 um (30.5 px at 0.2456 um/px).
``--views n ...`` adds rows for the mean logit over n flip views (the product's ``plan.verifier_views``);
``--ensemble A B`` adds the variant ``A+B``: the mean of A's and B's logits on each fold's candidates,
thresholded on that fold's training slides like a run (written as run folders ``A+B_<slide>``).

    python -m training.verifier_report --amibr lodo_d0 lodo_d1 lodo_d2 lodo_d3 [--amibr-views 4] [--detector-override 10]

instead tabulates runs' figures on their AMi-Br evaluation mosaics (``train_verifier --holdout-domain``:
the held-out domain; else the test split): recall and false detections per mm^2 of the two stages
and of stage 1 alone.
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
from training.train_verifier import best, evaluate, f1_by_threshold  # noqa: E402


def pooled_scores(runs: list[Path], fields: list[rf.Field]) -> dict:
    """Each fold's held-out candidates with that fold's logits, concatenated."""
    parts = []
    for run in runs:
        holdout = json.loads((run / "result.json").read_text())["holdout"]
        z = np.load(run / "scores.npz")
        keep = np.array([fields[i].slide == holdout for i in z["field"]], dtype=bool)
        parts.append({k: z[k][keep] for k in z.files})
    common = set.intersection(*(set(p) for p in parts))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k in common}


def fold_result(run: Path, views: int | None) -> dict:
    """A run's ``result.json``; with ``views``, its evaluation of the mean logit over that many flip views."""
    r = json.loads((run / "result.json").read_text())
    if views is None:
        return r
    if str(views) not in r.get("by_views", {}):
        raise SystemExit(f"{run}: no scores with {views} flip views (runs before --views scored one view only)")
    return {**r["by_views"][str(views)], "train_seconds": r["train_seconds"]}


def variant_summary(runs: list[Path], fields: list[rf.Field], views: int | None = None) -> dict:
    """Per fold and pooled held-out figures of one variant; ``views``: of the mean logit over that
    many flip views (None: the logit each run was thresholded on)."""
    folds, pooled = {}, DetectionCounts()
    for run in runs:
        r = fold_result(run, views)
        h = r["heldout"]
        for c in h["per_field"].values():
            pooled = pooled + DetectionCounts(c["tp"], c["fp"], c["fn"])
        folds[r["holdout"]] = {"threshold": r["chosen_on_training_slides"]["threshold"], **h["at_chosen"],
                               "oracle_threshold": h["oracle"]["threshold"], "oracle_f1": h["oracle"]["f1"],
                               "at_logit_0_f1": h["at_logit_0"]["f1"], "train_seconds": r["train_seconds"]}
    scores = pooled_scores(runs, fields)
    if views is not None:
        scores["logit"] = scores[f"logit_views_{views}"]
    thresholds = np.round(np.arange(-6.0, 8.0001, 0.25), 2)
    held = set(folds)  # the held-out slides
    all_fields = [i for i, f in enumerate(fields) if f.slide in held]
    sweep = f1_by_threshold(fields, scores, all_fields, thresholds)
    oracle_t, oracle = best(thresholds, sweep)
    zero = sweep[int(np.argmin(np.abs(thresholds)))]
    # The out-of-fold rule: each held-out slide judged at the threshold that is best on the other
    # slides' out-of-fold scores (each scored by the run that did not see it). A fold's own training
    # slides are scored by a network trained on their negatives; out-of-fold scores are not, and they
    # are what a shipped verifier's threshold would be chosen on (best F1 on all five slides). Slide s's
    # labels still reach the threshold of fold s through the other runs' training: a mild leak.
    oof, oof_thresholds = DetectionCounts(), {}
    for s in sorted(held):
        others = [i for i in all_fields if fields[i].slide != s]
        mine = [i for i in all_fields if fields[i].slide == s]
        if not others:
            continue
        oof_thresholds[s], _ = best(thresholds, f1_by_threshold(fields, scores, others, thresholds))
        oof = oof + f1_by_threshold(fields, scores, mine, [oof_thresholds[s]])[0]
    return {"folds": folds, "pooled_at_chosen": pooled.as_dict(), "pooled_at_logit_0": zero.as_dict(),
            "pooled_at_out_of_fold_threshold": {"thresholds": oof_thresholds, **oof.as_dict()},
            "pooled_oracle": {"threshold": oracle_t, **oracle.as_dict()},
            "stage1_recall_at_verify_floor": f1_by_threshold(fields, scores, all_fields, [-1e9])[0].as_dict()}


def ensemble_runs(runs_dir: Path, members: list[str], data: Path) -> str:
    """Materialise the ensemble of ``members`` (variants with a run per slide): for each held-out
    slide, the mean of the members' logits on the same candidates (for each number of flip views
    scored), evaluated as a run would be (threshold chosen on the fold's training slides), written
    to ``<runs_dir>/<a>+<b>_<slide>/``. Returns the ensemble's variant name."""
    name = "+".join(members)
    for s in rf.SLIDES:
        runs = [runs_dir / f"{m}_{s}" for m in members]
        if not all((r / "result.json").is_file() for r in runs):
            continue
        parts = [dict(np.load(r / "scores.npz")) for r in runs]
        for other, run in zip(parts[1:], runs[1:]):
            if not (np.array_equal(other["field"], parts[0]["field"]) and np.allclose(other["xy"], parts[0]["xy"])):
                raise SystemExit(f"{run}: not scored on the same candidates as {runs[0]}")
        logit_keys = [k for k in parts[0] if k.startswith("logit") and all(k in p for p in parts)]
        scores = {**{k: parts[0][k] for k in ("field", "xy", "stage1")},
                  **{k: np.mean([p[k] for p in parts], axis=0) for k in logit_keys}}
        results = [json.loads((r / "result.json").read_text()) for r in runs]
        result = evaluate(scores, data, results[0]["holdout"])
        result["by_views"] = {k.rsplit("_", 1)[1]: evaluate(scores, data, results[0]["holdout"], key=k)
                              for k in logit_keys if k.startswith("logit_views_")}
        result["train_seconds"] = sum(r["train_seconds"] for r in results)
        result["members"] = [str(r) for r in runs]
        out = runs_dir / f"{name}_{s}"
        out.mkdir(parents=True, exist_ok=True)
        np.savez(out / "scores.npz", **scores)
        write_json(result, out / "result.json")
    return name


def amibr_summary(runs: list[Path], views: int, data: Path = rf.DATA_DIR, detector_override: float | None = None) -> dict:
    """Each run's figures on its AMi-Br evaluation mosaic (the test split, or its held-out domain):
    the two stages at the run's threshold for ``views`` flip views, and stage 1 alone at the shipped
    detection threshold (``train_verifier.evaluate_amibr``); with the mean recall over the runs. With
    ``detector_override``, the two stages are judged as the product judges them with
    ``thresholds.detector_override_logit`` (``decision.decision_margin``)."""
    rows = {}
    for run in runs:
        r = json.loads((run / "result.json").read_text())
        if "amibr" not in r or "amibr_stage1_alone" not in r:
            raise SystemExit(f"{run}: no AMi-Br figures (runs before 2026-12-03 were not judged on AMi-Br)")
        two = r["amibr"][str(views)]
        if detector_override is not None:
            two = _with_override(run, r, views, two["threshold"], detector_override, data)
        rows[run.name] = {"two_stages": two, "stage1_alone": r["amibr_stage1_alone"]}
    mean = {k: float(np.mean([row[k]["at_threshold"]["recall"] for row in rows.values()])) for k in ("two_stages", "stage1_alone")}
    return {"views": views, "detector_override_logit": detector_override, "runs": rows, "mean_recall_at_threshold": mean}


def _with_override(run: Path, result: dict, views: int, threshold: float, override: float, data: Path) -> dict:
    from mitosis_analysis.candidates import Candidate
    from mitosis_analysis.decision import decision_margin
    from mitosis_analysis.manifest import Thresholds
    from training import crop_mosaics
    from training.train_verifier import evaluate_amibr

    z = dict(np.load(run / "amibr_scores.npz"))
    _crops, mosaic, _what = crop_mosaics.evaluation_mosaic(data, int(result["args"].get("holdout_domain", -1)))
    t = Thresholds(detection_logit=0.0, candidate_floor_logit=0.0, atypical_logit=0.0,
                   verification_logit=threshold, detector_override_logit=override)
    scores = crop_mosaics.stage1_logits(z["stage1"])
    margins = np.array([decision_margin(Candidate(x=0.0, y=0.0, score=float(s), area=0, verification_logit=float(v)), t)
                        for s, v in zip(scores, z[f"logit_views_{views}"])])
    return {**evaluate_amibr(z, mosaic, 0.0, margins), "threshold": threshold, "detector_override_logit": override}


def amibr_markdown(summary: dict) -> str:
    lines = ["| run | evaluated on | two stages: recall / FP per mm^2 (t) | two stages: recall at 5 FP/mm^2 "
             "| stage 1 alone: recall / FP per mm^2 (t) | stage 1 alone: recall at 5 FP/mm^2 |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, row in summary["runs"].items():
        cells = []
        for k in ("two_stages", "stage1_alone"):
            a = row[k]
            cells.append(f"{a['at_threshold']['recall']:.3f} / {a['at_threshold']['fp_per_mm2']:.1f} ({a['threshold']:.2f})")
            cells.append(f"{a['recall_at_5fp_per_mm2']:.3f}")
        lines.append(f"| {name} | {row['two_stages']['evaluated_on']} | " + " | ".join(cells) + " |")
    m = summary["mean_recall_at_threshold"]
    lines.append(f"| mean recall | | {m['two_stages']:.3f} | | {m['stage1_alone']:.3f} | |")
    return "\n".join(lines)


def _f1_p_r(counts: dict) -> str:
    """'F1 (P / R)' of DetectionCounts.as_dict(); '-' where a ratio is undefined (nothing detected or to detect)."""
    if None in (counts["f1"], counts["precision"], counts["recall"]):
        return "-"
    return f"{counts['f1']:.3f} ({counts['precision']:.3f} / {counts['recall']:.3f})"


def markdown(summary: dict) -> str:
    lines = ["| variant | F1 00 | F1 01 | F1 02 | F1 03 | F1 04 | pooled F1 (P / R) at chosen t "
             "| pooled F1 (P / R) at out-of-fold t | pooled F1 at logit 0 | oracle t: pooled F1 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, s in summary.items():
        per = [f"{s['folds'][k]['f1']:.3f} (t={s['folds'][k]['threshold']:g})" if k in s["folds"] else "-"
               for k in rf.SLIDES]
        p = s["pooled_at_chosen"]
        o = s["pooled_oracle"]
        lines.append(f"| {name} | " + " | ".join(per) + f" | {_f1_p_r(p)} | {_f1_p_r(s['pooled_at_out_of_fold_threshold'])} | "
                     f"{s['pooled_at_logit_0']['f1']:.3f} | {o['threshold']:g}: {o['f1']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=REPO_ROOT / "training" / "runs" / "verifier")
    parser.add_argument("--variants", nargs="+", default=["loso"])
    parser.add_argument("--views", nargs="+", type=int, default=None,
                        help="also rows for the mean logit over these numbers of flip views (1, 2, 4, 8)")
    parser.add_argument("--ensemble", nargs="+", action="append", default=[], metavar="VARIANT",
                        help="also the mean logit of these variants' runs, fold by fold (repeatable)")
    parser.add_argument("--amibr", nargs="+", default=[], metavar="RUN",
                        help="instead: the AMi-Br table of these run folders (names under --runs), e.g. lodo_d0 lodo_d1")
    parser.add_argument("--amibr-views", type=int, default=4, choices=(1, 2, 4, 8))
    parser.add_argument("--detector-override", type=float, default=None, metavar="LOGIT",
                        help="with --amibr: judge the two stages with this thresholds.detector_override_logit")
    parser.add_argument("--data", type=Path, default=rf.DATA_DIR)
    args = parser.parse_args(argv)
    if args.amibr:
        summary = amibr_summary([args.runs / r for r in args.amibr], args.amibr_views, args.data, args.detector_override)
        write_json(summary, args.runs / "amibr_summary.json")
        print(amibr_markdown(summary))
        return 0
    fields = rf.icpr_fields(args.data, ("A",))
    summary = {}
    ensembles = [ensemble_runs(args.runs, members, args.data) for members in args.ensemble]
    for variant in args.variants + ensembles:
        runs = [args.runs / f"{variant}_{s}" for s in rf.SLIDES if (args.runs / f"{variant}_{s}" / "result.json").is_file()]
        if runs:
            summary[variant] = variant_summary(runs, fields)
            for n in args.views or ():
                summary[f"{variant}, {n} views"] = variant_summary(runs, fields, n)
    write_json(summary, args.runs / "summary.json")
    text = markdown(summary)
    (args.runs / "summary.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
