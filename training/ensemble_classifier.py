"""Combine trained classifier checkpoints into one ensemble checkpoint (mean P(atypical)).

    python -m training.ensemble_classifier --candidates RUN.pt [RUN.pt ...] --size 3 \\
        [--checkpoint training/checkpoints/classifier.pt] [--out training/runs/classifier-ensemble]

Every candidate must have been trained on the same validation split (``--split-seed``); the
ensemble of ``--size`` members is chosen among all combinations of the candidates by validation
AUROC (the product's flip views), and its operating threshold is the equal-error point on
validation (``classifier_eval.operating_threshold``), for 1, 2, 4 and 8 views (``thresholds_by_views``). The test split is predicted once,
for the report. Writes the checkpoint ``export.sh`` reads (arch ``ENSEMBLE_ARCH``, the members'
configs and weights in one ``state_dict``), and ``metrics.json`` + ``threshold_sweep.png`` in
``--out``. Members whose validation split differs are refused.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from mitosis_analysis.manifest import InferencePlan  # noqa: E402
from model.classifier import ENSEMBLE_ARCH, build_classifier  # noqa: E402
from training import classifier_eval as ev  # noqa: E402
from training import data as amibr  # noqa: E402
from training import runtime  # noqa: E402
from training.export import MAX_ONNX_BYTES  # noqa: E402
from training.train_classifier import VIEWS  # noqa: E402


def split_of(ckpt: dict) -> tuple:
    cfg = ckpt.get("train_config", {})
    return (cfg.get("holdout_domain", -1), cfg.get("val_fraction"), cfg.get("split_seed", 0),
            ckpt["metrics"]["splits"]["validation"])


def choose(p_val: dict[str, np.ndarray], y_val: np.ndarray, size: int,
           n_params: dict[str, int]) -> tuple[tuple[str, ...], float]:
    """The ``size``-subset of candidates (under the size limit) with the best validation AUROC."""
    best = None
    for combo in itertools.combinations(sorted(p_val), size):
        if 4 * sum(n_params[k] for k in combo) > MAX_ONNX_BYTES:  # float32 parameters
            continue
        score = ev.auroc(y_val, np.mean([p_val[k] for k in combo], axis=0))
        if best is None or score > best[1]:
            best = (combo, score)
    if best is None:
        raise SystemExit(f"error: no {size} candidates fit in {MAX_ONNX_BYTES / 2**20:.0f} MiB")
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--candidates", type=Path, nargs="+", required=True)
    p.add_argument("--size", type=int, default=3)
    p.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared/data/ami-br")
    p.add_argument("--checkpoint", type=Path, default=REPO_ROOT / "training/checkpoints/classifier.pt")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "training/runs/classifier-ensemble")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "python -m training.ensemble_classifier " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))

    members = {str(path): ev.load_checkpoint(path) for path in args.candidates}
    splits = {split_of(ckpt) for _, ckpt in members.values()}
    if len(splits) != 1:
        raise SystemExit(f"error: the candidates were validated on different splits: {sorted(map(str, splits))}")
    first = next(iter(members.values()))[1]
    fit, val, test, _ = amibr.run_splits(args.data, first["train_config"])
    if amibr.summary(val) != first["metrics"]["splits"]["validation"]:
        raise SystemExit("error: the validation split rebuilt here differs from the candidates' own")
    x_val, y_val, x_test, y_test = amibr.load_crops(val), amibr.labels(val), amibr.load_crops(test), amibr.labels(test)
    views = InferencePlan().classifier_views
    p_val = {k: ev.predict(net, x_val, n_views=views) for k, (net, _) in members.items()}
    n_params = {k: sum(t.numel() for t in net.parameters()) for k, (net, _) in members.items()}
    combo, val_auroc = choose(p_val, y_val, args.size, n_params)
    print(f"chosen on validation (AUROC {val_auroc:.4f} with {views} views): {', '.join(combo)}", file=sys.stderr)

    config = {"members": [{"arch": members[k][1]["arch"], **members[k][1]["config"]} for k in combo]}
    net = build_classifier(arch=ENSEMBLE_ARCH, **config)
    for i, k in enumerate(combo):
        net.members[i].load_state_dict(members[k][0].state_dict())
    net.eval()
    result = ev.evaluate_views(net, x_val, y_val, x_test, y_test, VIEWS)
    thresholds, val_metrics, test_metrics, probs = (result[k] for k in ("thresholds", "validation", "test", "probs"))
    for line in ev.views_summary(result):
        print(line, file=sys.stderr)
    metrics = {
        "members": list(combo), "member_commands": [members[k][1].get("command", "?") for k in combo],
        "selection": f"best validation AUROC over all {args.size}-member subsets of {len(members)} candidates",
        "candidates_val_auroc": {k: ev.auroc(y_val, v) for k, v in p_val.items()},
        "product_views": views, "threshold": thresholds[str(views)], "threshold_rule": ev.THRESHOLD_RULE,
        "validation": val_metrics, "test": test_metrics,
        "splits": {"fit": amibr.summary(fit), "validation": amibr.summary(val), "test": amibr.summary(test)},
        "parameters": sum(t.numel() for t in net.parameters()),
    }
    checkpoint = {
        "arch": ENSEMBLE_ARCH, "config": config, "state_dict": net.state_dict(),
        "threshold": thresholds[str(views)], "thresholds_by_views": thresholds, "metrics": metrics,
        "command": " && ".join(dict.fromkeys([*metrics["member_commands"], command])),
        "data": first.get("data", "AMi-Br"),
        "initialisation": "members trained from scratch (no pretrained weights)",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    runtime.save_checkpoint(checkpoint, args.checkpoint)
    runtime.write_json(metrics, args.out / "metrics.json")
    pv, pt = probs[views]
    ev.plot_threshold_sweep({f"validation, {views} views": (y_val, pv), f"test, {views} views": (y_test, pt)},
                            thresholds[str(views)], args.out / "threshold_sweep.png")
    print(f"wrote {args.checkpoint} and {args.out}/{{metrics.json,threshold_sweep.png}}", file=sys.stderr)
    print(json.dumps({"members": list(combo), "test": test_metrics[f"views_{views}"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
