"""Paired training runs that measure what each ingredient adds, and their table.

    python -m training.ablation run detector --epochs 60 --out training/runs/ablation [--parallel 5]
    python -m training.ablation run classifier --epochs 150 --out training/runs/ablation -- --width 32
    python -m training.ablation table --out training/runs/ablation [--evaluate]

``run`` trains every variant of a model (same seed, data, epochs; only the named ingredient
differs; arguments after ``--`` go to every run) as concurrent subprocesses: each gets ``<out>/<model>-<variant>/`` with its checkpoint,
``metrics.json`` and ``stdout.log``. ``table`` collects the validation figures every run selected
its epoch by; ``--evaluate`` also runs each detector checkpoint through the product pipeline on the
validation and test mosaics (``training.evaluate_detector``) and reads each classifier's test
figures from its ``metrics.json``. Writes ``<out>/ablation.json`` and ``<out>/ablation.md``.
Choices are made on validation; the test columns are for the report.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from training import runtime

REPO_ROOT = Path(__file__).resolve().parent.parent

CONSISTENCY = 0.2
ADVERSARIAL = 0.1
# variant -> (teacher-student, consistency weight, adversarial weight); "full" holds every
# ingredient, each other variant drops one, "plain" drops them all. Every ingredient is spelt out
# on the command line, so the runs do not depend on the training scripts' defaults.
DETECTOR_RECIPES = {
    "full": (True, CONSISTENCY, ADVERSARIAL),
    "no-teacher-student": (False, CONSISTENCY, ADVERSARIAL),
    "no-consistency": (True, 0.0, ADVERSARIAL),
    "no-adversarial": (True, CONSISTENCY, 0.0),
    "plain": (False, 0.0, 0.0),
}
VARIANTS = {
    "detector": {
        name: ["--teacher-student" if teacher else "--no-teacher-student",
               "--consistency", str(consistency), "--adversarial", str(adversarial)]
        for name, (teacher, consistency, adversarial) in DETECTOR_RECIPES.items()
    },
    "classifier": {
        "plain": ["--adversarial", "0.0"],
        "adversarial": ["--adversarial", str(ADVERSARIAL)],
    },
}
MODULES = {"detector": "training.train_detector", "classifier": "training.train_classifier"}
CHECKPOINT = {"detector": "detector.pt", "classifier": "classifier.pt"}


def command(model: str, variant: str, run_dir: Path, epochs: int, extra: list[str]) -> list[str]:
    out = ["--run-dir", str(run_dir)] if model == "detector" else ["--out", str(run_dir)]
    return [sys.executable, "-m", MODULES[model], *out, "--checkpoint", str(run_dir / CHECKPOINT[model]),
            "--epochs", str(epochs), *VARIANTS[model][variant], *extra]


def launch(jobs: dict[str, tuple[list[str], Path]], parallel: int) -> list[str]:
    """Run ``name -> (command, run_dir)`` as at most ``parallel`` concurrent subprocesses (one
    thread each), each logging to ``<run_dir>/stdout.log`` with its command in ``command.txt``;
    returns the names that failed."""
    procs: list[tuple[str, subprocess.Popen, float]] = []
    pending = list(jobs)
    failed = []
    env = dict(os.environ, OMP_NUM_THREADS="1")
    while pending or procs:
        while pending and len(procs) < parallel:
            name = pending.pop(0)
            cmd, run_dir = jobs[name]
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "command.txt").write_text(" ".join(cmd[1:]) + "\n")
            with open(run_dir / "stdout.log", "w") as log:  # the child keeps its own handle
                procs.append((name, subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env),
                              time.time()))
            print(f"started {name}", file=sys.stderr, flush=True)
        for item in list(procs):
            name, proc, t0 = item
            if proc.poll() is not None:
                procs.remove(item)
                status = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
                print(f"{name}: {status} after {(time.time() - t0) / 60:.1f} min", file=sys.stderr, flush=True)
                if proc.returncode != 0:
                    failed.append(name)
        time.sleep(2)
    return failed


def run(model: str, out: Path, epochs: int, parallel: int, variants: list[str], extra: list[str]) -> int:
    jobs = {}
    for variant in variants:
        run_dir = out / f"{model}-{variant}"
        jobs[f"{model}-{variant}"] = (command(model, variant, run_dir, epochs, extra), run_dir)
    return 1 if launch(jobs, parallel) else 0


def detector_row(run_dir: Path, evaluate: bool) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    best = metrics["best"]
    row = {"epochs": len(metrics["history"]), "best_epoch": best["epoch"], "val_score": best["val_score"],
           "val_recall_at_5fp": best["val_recall_at_5fp"], "val_recall_at_20fp": best["val_recall_at_20fp"]}
    if evaluate:
        for split in ("val", "test"):
            subprocess.run([sys.executable, "-m", "training.evaluate_detector", "--split", split,
                            "--checkpoint", str(run_dir / "detector.pt"), "--out", str(run_dir / "eval")],
                           cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL)
            result = json.loads((run_dir / "eval" / f"{split}_metrics.json").read_text())
            row[f"{split}_pipeline_recall_at_5fp"] = result["recall_at_fp_per_mm2"]["5"]
            row[f"{split}_pipeline_recall_at_10fp"] = result["recall_at_fp_per_mm2"]["10"]
    return row


def classifier_row(run_dir: Path) -> dict:
    m = json.loads((run_dir / "metrics.json").read_text())
    views = f"views_{m['product_views']}"
    val, test = m["validation"][views], m["test"][views]
    return {"epochs": m["epochs_run"], "best_epoch": m["selected_epoch"],
            "val_auroc": val["auroc"], "val_balanced_accuracy": val["balanced_accuracy"],
            "test_auroc": test["auroc"], "test_balanced_accuracy": test["balanced_accuracy"],
            "test_sensitivity": test["sensitivity"], "test_specificity": test["specificity"]}


def table(out: Path, evaluate: bool) -> int:
    rows = {}
    for model, variants in VARIANTS.items():
        for variant in variants:
            run_dir = out / f"{model}-{variant}"
            if not (run_dir / "metrics.json").exists():
                continue
            rows[f"{model}-{variant}"] = (detector_row(run_dir, evaluate) if model == "detector"
                                          else classifier_row(run_dir))
    if not rows:
        print(f"error: no finished runs under {out}", file=sys.stderr)
        return 2
    runtime.write_json(rows, out / "ablation.json")
    lines = []
    for model in VARIANTS:
        mine = {k: v for k, v in rows.items() if k.startswith(model + "-")}
        if not mine:
            continue
        keys = list(next(iter(mine.values())))
        lines += [f"| {model} run | " + " | ".join(keys) + " |", "| --- " * (len(keys) + 1) + "|"]
        for name, row in mine.items():
            lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
        lines.append("")
    (out / "ablation.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="action", required=True)
    r = sub.add_parser("run", help="train the variants of one model concurrently")
    r.add_argument("model", choices=sorted(VARIANTS))
    r.add_argument("--out", type=Path, default=REPO_ROOT / "training" / "runs" / "ablation")
    r.add_argument("--epochs", type=int, required=True)
    r.add_argument("--parallel", type=int, default=5)
    r.add_argument("--variants", nargs="+", default=None, help="default: all of the model's variants")
    t = sub.add_parser("table", help="collect the finished runs into ablation.json / ablation.md")
    t.add_argument("--out", type=Path, default=REPO_ROOT / "training" / "runs" / "ablation")
    t.add_argument("--evaluate", action="store_true", help="also run detectors through the product pipeline")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []  # after --: for every training run
    args = p.parse_args(argv[: len(argv) - len(extra) - (1 if "--" in argv else 0)])
    if args.action == "run":
        variants = args.variants or list(VARIANTS[args.model])
        unknown = sorted(set(variants) - set(VARIANTS[args.model]))
        if unknown:
            p.error(f"unknown {args.model} variants: {', '.join(unknown)}")
        return run(args.model, args.out, args.epochs, args.parallel, variants, extra)
    return table(args.out, args.evaluate)


if __name__ == "__main__":
    sys.exit(main())
