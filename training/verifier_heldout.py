"""Held-out figures of two-stage detection *through the product* on the ICPR 2012 scanner A fields,
leave one slide out.

    python -m training.verifier_heldout [--runs training/runs/verifier] [--out training/runs/verifier/heldout.json]
    python -m training.verifier_heldout --variant loso+seed1 --views 4 --threshold-rule out-of-fold ...

For each slide ``s`` of ``SLIDES``: the verifier trained without it (``<runs>/<variant>_<s>/verifier.pt``;
for an ensemble made by ``verifier_report --ensemble``, its members' checkpoints as one graph)
is exported to ONNX and installed (``export_verifier.install_verifier``) into a copy of
``weights/``, with ``--views`` flip views (default: the checkpoint's), at the threshold its training
slides chose (``result.json``, ``chosen_on_training_slides``; ``--threshold-rule out-of-fold``: the
threshold best on the other slides' out-of-fold scores, ``verifier_report``) and the stage-1 floor
it was trained to judge; then the product's
own stage 1 (``pipeline.detect_candidates``) and stage 2 (``pipeline.verify_candidates``) run on
every A field of slide ``s`` at its own 0.2456 um/px, and ``decision.decide_detections`` says which
candidates are mitotic figures. The same candidates decided by the shipped weights alone (the
detector's logit at ``thresholds.detection_logit``) give the one-stage baseline. Matching: the
project's ``count_matches`` at 7.5 um; micro (pooled) over the fields, and per slide.

Data are read from ``../shared/data`` at run time; nothing is written into the repository.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from mitosis_analysis.decision import decide_detections  # noqa: E402
from mitosis_analysis.evaluate.detection import DetectionCounts, count_matches  # noqa: E402
from mitosis_analysis.inference import load_models  # noqa: E402
from mitosis_analysis.manifest import Manifest  # noqa: E402
from mitosis_analysis.pipeline import detect_candidates, verify_candidates  # noqa: E402
from mitosis_analysis.settings import Settings  # noqa: E402
from training import export_verifier  # noqa: E402
from training import real_fields as rf  # noqa: E402
from training import stain as stain_lib  # noqa: E402
from training.runtime import write_json  # noqa: E402

RUNS_DIR = REPO_ROOT / "training" / "runs" / "verifier"
STAIN_MODES = ("none", "detector", "verifier", "all")


def fold_checkpoints(run: Path) -> list[Path]:
    """The checkpoint of a run folder, or its members' (an ensemble folder of ``verifier_report``)."""
    result = json.loads((run / "result.json").read_text())
    return [Path(m) / "verifier.pt" for m in result["members"]] if "members" in result else [run / "verifier.pt"]


def fold_weights(run: Path, shipped: Path, into: Path, threshold: float | None = None,
                 views: int | None = None) -> Manifest:
    """A copy of the shipped weights with the verifier of ``run`` installed at ``threshold`` (default:
    the one its training slides chose for ``views`` flip views, default the checkpoint's)."""
    result = json.loads((run / "result.json").read_text())
    shutil.copytree(shipped, into)
    for extra in into.glob("verifier.*"):
        extra.unlink()
    manifest = Manifest.load(into)
    if manifest.verifier is not None:  # start from the one-stage weights
        raise SystemExit(f"{shipped}: remove the shipped verifier first (use the one-stage weights as --weights)")
    onnx = Path(tempfile.mkdtemp()) / "verifier.onnx"
    description, ckpt = export_verifier.export_checkpoint(fold_checkpoints(run), onnx, timing=False)
    floor = float(ckpt["verify_floor"])
    views = views or int(ckpt.get("views", 1))
    if threshold is None:
        chosen = result["by_views"][str(views)] if str(views) in result.get("by_views", {}) else result
        threshold = float(chosen["chosen_on_training_slides"]["threshold"])
    return export_verifier.install_verifier(into, onnx, description, threshold, floor, views=views,
                                            normalised_input=True)


def fold_thresholds(runs: Path, variant: str, data: Path, views: int | None, rule: str) -> dict[str, float | None]:
    """Per slide: the threshold to judge it at (None: the one its fold's training slides chose)."""
    if rule == "chosen":
        return {s: None for s in rf.SLIDES}
    from training.verifier_report import variant_summary

    folds = [runs / f"{variant}_{s}" for s in rf.SLIDES if (runs / f"{variant}_{s}" / "result.json").is_file()]
    summary = variant_summary(folds, rf.icpr_fields(data, ("A",)), views)
    found = summary["pooled_at_out_of_fold_threshold"]["thresholds"]
    missing = [s for s in rf.SLIDES if s not in found]
    if missing:
        raise SystemExit(f"error: out-of-fold thresholds need every slide's run ({variant}_<slide>); "
                         f"none for {', '.join(missing)}")
    return found


def stage_inputs(raw: np.ndarray, normalised: np.ndarray, stain: str) -> tuple[np.ndarray, np.ndarray]:
    """(stage 1's pixels, stage 2's pixels) under a ``STAIN_MODES`` mode."""
    if stain not in STAIN_MODES:
        raise ValueError(f"stain mode {stain!r}: one of {', '.join(STAIN_MODES)}")
    return (normalised if stain in ("detector", "all") else raw, normalised if stain in ("verifier", "all") else raw)


def evaluate(weights: Path, runs: Path, data: Path, slides: tuple[str, ...], variant: str = "loso",
             views: int | None = None, rule: str = "chosen", detector_override: float | None = None,
             stain: str = "none") -> dict:
    """The table of the module's docstring. ``stain`` (``STAIN_MODES``): Reinhard normalisation
    of each field onto the AMi-Br training crops' colours (``training.stain``) before stage 1
    (``detector``), stage 2 (``verifier``: for verifiers trained with ``train_verifier --stain``)
    or both (``all``)."""
    fields = [f for f in rf.icpr_fields(data, scanners=("A",))]
    reference = None if stain == "none" else stain_lib.amibr_reference(data / "ami-br")
    judged_at = fold_thresholds(runs, variant, data, views, rule)
    report: dict = {"variant": variant, "views": views, "threshold_rule": rule, "detector_override_logit": detector_override,
                    "stain": stain, "per_slide": {}, "fields": {}}
    pooled = {"one_stage": DetectionCounts(), "two_stage": DetectionCounts()}
    baseline = Manifest.load(weights)
    with tempfile.TemporaryDirectory() as tmp:
        for s in slides:
            manifest = fold_weights(runs / f"{variant}_{s}", weights, Path(tmp) / f"weights_{s}", judged_at[s], views)
            two_stage = manifest.thresholds.model_copy(update={"detector_override_logit": detector_override})
            settings = Settings(weights_dir=Path(tmp) / f"weights_{s}", device="cpu")
            models = load_models(settings)
            slide = {"one_stage": DetectionCounts(), "two_stage": DetectionCounts()}
            for field in (f for f in fields if f.slide == s):
                t0 = time.perf_counter()
                loaded = rf.load_field(field, None)
                normalised = stain_lib.normalise(loaded.pixels, reference)
                to_detector, to_verifier = stage_inputs(loaded.pixels, normalised, stain)
                candidates = verify_candidates(to_verifier, detect_candidates(to_detector, models, settings),
                                               models, settings)
                radius = loaded.radius_px
                counts = {}
                for name, thresholds in (("one_stage", baseline.thresholds), ("two_stage", two_stage)):
                    chosen = [d for d in decide_detections(candidates, thresholds) if d.is_mitosis]
                    points = np.array([[d.x, d.y] for d in chosen]).reshape(-1, 2)
                    counts[name] = count_matches(loaded.mitoses, points, radius)
                    slide[name] = slide[name] + counts[name]
                report["fields"][field.name] = {k: v.as_dict() for k, v in counts.items()}
                print(f"{field.name}: {len(candidates)} candidates; one stage {counts['one_stage'].as_dict()}; "
                      f"two stages {counts['two_stage'].as_dict()} ({time.perf_counter() - t0:.1f} s)", flush=True)
            report["per_slide"][s] = {"verification_logit": manifest.thresholds.verification_logit,
                                      **{k: v.as_dict() for k, v in slide.items()}}
            for k in pooled:
                pooled[k] = pooled[k] + slide[k]
    report["pooled"] = {k: v.as_dict() for k, v in pooled.items()}
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=rf.DATA_DIR)
    parser.add_argument("--runs", type=Path, default=RUNS_DIR)
    parser.add_argument("--weights", type=Path, default=REPO_ROOT / "weights", help="one-stage weights (no verifier)")
    parser.add_argument("--slides", nargs="+", default=list(rf.SLIDES))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--variant", default="loso", help="run folders <runs>/<variant>_<slide>")
    parser.add_argument("--views", type=int, default=None, choices=(1, 2, 4, 8),
                        help="flip views of the verifier (plan.verifier_views; default: the checkpoint's)")
    parser.add_argument("--threshold-rule", choices=("chosen", "out-of-fold"), default="chosen",
                        help="chosen: each fold's training slides; out-of-fold: best on the other slides' held-out scores")
    parser.add_argument("--detector-override", type=float, default=None, metavar="LOGIT",
                        help="thresholds.detector_override_logit of the two-stage weights (default: none)")
    parser.add_argument("--stain", choices=STAIN_MODES, default="none",
                        help="Reinhard colour normalisation onto the AMi-Br training crops before stage 1 (detector), "
                             "stage 2 (verifier) or both (all); the product applies none")
    args = parser.parse_args(argv)
    report = evaluate(args.weights, args.runs, args.data, tuple(args.slides), args.variant, args.views,
                      args.threshold_rule, args.detector_override, args.stain)
    report["command"] = "python -m training.verifier_heldout " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    print(json.dumps({"pooled": report["pooled"], "per_slide": report["per_slide"]}, indent=1))
    if args.out:
        write_json(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
