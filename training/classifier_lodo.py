"""Leave-one-domain-out (LODO) for the atypical classifier: the selection criterion of every recipe.

    python -m training.classifier_lodo run --out training/runs/lodo/resnet18-w32 [--parallel 2] \
        -- --arch atypical-resnet-v1 --width 32 --epochs 30 --augment wide
    python -m training.classifier_lodo table training/runs/lodo/*
    python -m training.classifier_lodo rules training/runs/lodo/*   # held-out BA per threshold rule

``run`` trains one recipe (the arguments after ``--`` go to ``training.train_classifier``) four
times, each with one of AMi-Br's acquisition domains (``training.data.DOMAINS``: three MIDOG21
scanners, TUPAC16) held out entirely (``--holdout-domain``): the epoch and the operating
threshold are chosen on slide-held-out validation of the other three domains, so the held-out
domain is judged at a threshold it never influenced. Balanced accuracy is the criterion: it does
not move with the held-out domain's prevalence of atypical figures (18-28 % here), and the
threshold that maximises it on validation is prevalence-free in the same sense. Writes
``<out>/lodo.json`` with each fold's held-out BA / AUROC / sensitivity / specificity (product's
flip views) and their mean and spread.

``table`` prints one markdown row per recipe directory (its command, the mean and per-domain
held-out BA, the mean AUROC) and, where the folder holds one, the in-domain run's test-split
figures (``<out>/in-domain/metrics.json``, trained by ``--in-domain`` on the published split);
``--json FILE`` saves the recipes' summaries as one file.
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

from training import runtime  # noqa: E402
from training.ablation import launch  # noqa: E402
from training.data import DOMAINS  # noqa: E402

IN_DOMAIN = "in-domain"


def fold_name(domain: int) -> str:
    return f"holdout-{domain}"


def jobs(out: Path, extra: list[str], in_domain: bool) -> dict[str, tuple[list[str], Path]]:
    """The training commands of the four folds (and of the in-domain run)."""
    # The in-domain run first: it is the one a shipping decision waits on.
    names = {IN_DOMAIN: []} if in_domain else {}
    names.update({fold_name(d): ["--holdout-domain", str(d)] for d in range(len(DOMAINS))})
    result = {}
    for name, fold in names.items():
        run_dir = out / name
        cmd = [sys.executable, "-m", "training.train_classifier", "--out", str(run_dir),
               "--checkpoint", str(run_dir / "classifier.pt"), "--threads", "1", *extra, *fold]
        result[name] = (cmd, run_dir)
    return result


def held_out_figures(metrics: dict) -> dict:
    """The test-role figures (here: the held-out domain's) at the product's flip views."""
    return dict(metrics["test"][f"views_{metrics['product_views']}"])


def summarise(out: Path) -> dict:
    """``lodo.json`` of one recipe directory: per-fold held-out figures, mean and spread."""
    folds = {}
    for d, name in enumerate(DOMAINS):
        path = out / fold_name(d) / "metrics.json"
        if path.is_file():
            m = json.loads(path.read_text())
            folds[name] = {**held_out_figures(m), "selected_epoch": m["selected_epoch"], "epochs_run": m["epochs_run"]}
    if len(folds) != len(DOMAINS):
        missing = sorted(set(DOMAINS) - set(folds))
        raise FileNotFoundError(f"{out}: no finished fold for {', '.join(missing)}")
    ba = np.array([f["balanced_accuracy"] for f in folds.values()])
    au = np.array([f["auroc"] for f in folds.values()])
    command_file = out / fold_name(0) / "command.txt"
    command = command_file.read_text().strip() if command_file.is_file() else ""
    result = {"command": command, "folds": folds, "mean_balanced_accuracy": float(ba.mean()),
              "std_balanced_accuracy": float(ba.std(ddof=1)), "mean_auroc": float(au.mean()),
              "std_auroc": float(au.std(ddof=1))}
    in_domain = out / IN_DOMAIN / "metrics.json"
    if in_domain.is_file():
        result["in_domain_test"] = held_out_figures(json.loads(in_domain.read_text()))
    runtime.write_json(result, out / "lodo.json")
    return result


def table(dirs: list[Path], json_path: Path | None = None) -> list[str]:
    """Markdown rows of the recipes in ``dirs``; with ``json_path`` their summaries saved there too."""
    short = {name: name.replace("MIDOG21 ", "").replace("Hamamatsu ", "") for name in DOMAINS}
    lines = ["| recipe | LODO mean BA (sd) | " + " | ".join(short.values()) + " | LODO mean AUROC | in-domain test BA / AUROC |",
             "| --- " * (len(DOMAINS) + 4) + "|"]
    summaries = {}
    for out in dirs:
        s = summaries[out.name] = summarise(out)
        per = " | ".join(f"{s['folds'][name]['balanced_accuracy']:.3f}" for name in DOMAINS)
        test = s.get("in_domain_test")
        test_cell = f"{test['balanced_accuracy']:.3f} / {test['auroc']:.3f}" if test else "-"
        lines.append(f"| {out.name} | {s['mean_balanced_accuracy']:.3f} ({s['std_balanced_accuracy']:.3f}) | {per} | "
                     f"{s['mean_auroc']:.3f} | {test_cell} |")
    if json_path is not None:
        runtime.write_json(summaries, json_path)
    return lines


def threshold_rules(dirs: list[Path], data_dir: Path, json_path: Path | None = None) -> list[str]:
    """Each fold's held-out balanced accuracy at the threshold each rule of
    ``classifier_eval.THRESHOLD_RULES`` picks on that fold's validation (the product's views),
    re-predicted from the fold's checkpoint: markdown rows of the means (per-fold figures in
    ``json_path``)."""
    from training import classifier_eval as ev
    from training import data as amibr

    rules = list(ev.THRESHOLD_RULES)
    lines = ["| recipe | " + " | ".join(f"LODO mean BA, {r} threshold" for r in rules) + " | LODO mean AUROC |",
             "| --- " * (len(rules) + 2) + "|"]
    results = {}
    for out in dirs:
        folds = {}
        for d, name in enumerate(DOMAINS):
            path = out / fold_name(d) / "classifier.pt"
            if not path.is_file():
                raise FileNotFoundError(f"{out}: no finished fold for {name}")
            net, ckpt = ev.load_checkpoint(path)
            if ckpt["train_config"].get("holdout_domain") != d:
                raise ValueError(f"{path}: trained with holdout_domain "
                                 f"{ckpt['train_config'].get('holdout_domain')}, expected {d} ({name})")
            _, val, held, _ = amibr.run_splits(data_dir, ckpt["train_config"])
            views = ckpt["metrics"]["product_views"]
            p_val, p_held = (ev.predict(net, amibr.load_crops(c), n_views=views) for c in (val, held))
            y_val, y_held = amibr.labels(val), amibr.labels(held)
            folds[name] = {"auroc": ev.auroc(y_held, p_held), **{
                rule: ev.binary_metrics(y_held, p_held, pick(y_val, p_val)[0])["balanced_accuracy"]
                for rule, pick in ev.THRESHOLD_RULES.items()}}
        means = {key: float(np.mean([f[key] for f in folds.values()])) for key in [*rules, "auroc"]}
        results[out.name] = {"folds": folds, "means": means}
        lines.append(f"| {out.name} | " + " | ".join(f"{means[r]:.3f}" for r in rules) + f" | {means['auroc']:.3f} |")
    if json_path is not None:
        runtime.write_json(results, json_path)
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="action", required=True)
    r = sub.add_parser("run", help="train the four folds (and the in-domain run) of one recipe")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--parallel", type=int, default=2)
    r.add_argument("--in-domain", action="store_true", help="also train on the published split (test-split report)")
    t = sub.add_parser("table", help="one markdown row per recipe directory")
    t.add_argument("dirs", type=Path, nargs="+")
    t.add_argument("--json", type=Path, default=None, help="also save the recipes' summaries (lodo.json) here, as one file")
    u = sub.add_parser("rules", help="held-out BA of each fold at each threshold rule's validation threshold")
    u.add_argument("dirs", type=Path, nargs="+")
    u.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared/data/ami-br")
    u.add_argument("--json", type=Path, default=None, help="also save the per-fold figures here")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = p.parse_args(argv[: len(argv) - len(extra) - (1 if "--" in argv else 0)])
    if args.action == "run":
        failed = launch(jobs(args.out, extra, args.in_domain), args.parallel)
        if failed:
            print(f"error: folds failed: {', '.join(failed)} (see their stdout.log)", file=sys.stderr)
            return 1
        s = summarise(args.out)
        print(json.dumps({k: v for k, v in s.items() if k != "folds"}, indent=1))
        return 0
    try:
        if args.action == "rules":
            print("\n".join(threshold_rules(args.dirs, args.data, args.json)))
            return 0
        print("\n".join(table(args.dirs, args.json)))
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
