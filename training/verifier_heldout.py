"""Held-out figures of two-stage detection *through the product* on the ICPR 2012 scanner A fields,
leave one slide out.

    python -m training.verifier_heldout [--runs training/runs/verifier] [--out training/runs/verifier/heldout.json]

For each slide ``s`` of ``SLIDES``: the verifier trained without it (``<runs>/loso_<s>/verifier.pt``)
is exported to ONNX and installed (``export_verifier.install_verifier``) into a copy of
``weights/``, at the threshold its training slides chose (``result.json``,
``chosen_on_training_slides``) and the stage-1 floor it was trained to judge; then the product's
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
from training.runtime import write_json  # noqa: E402

RUNS_DIR = REPO_ROOT / "training" / "runs" / "verifier"


def fold_weights(run: Path, shipped: Path, into: Path) -> Manifest:
    """A copy of the shipped weights with the verifier of ``run`` installed (its chosen threshold)."""
    result = json.loads((run / "result.json").read_text())
    shutil.copytree(shipped, into)
    for extra in into.glob("verifier.*"):
        extra.unlink()
    manifest = Manifest.load(into)
    if manifest.verifier is not None:  # start from the one-stage weights
        raise SystemExit(f"{shipped}: remove the shipped verifier first (use the one-stage weights as --weights)")
    onnx = Path(tempfile.mkdtemp()) / "verifier.onnx"
    description, ckpt = export_verifier.export_checkpoint(run / "verifier.pt", onnx, timing=False)
    floor = float(result["args"]["verify_floor"])
    views = int(ckpt.get("views", 1))
    threshold = float(result["chosen_on_training_slides"]["threshold"])
    return export_verifier.install_verifier(into, onnx, description, threshold, floor, views=views)


def evaluate(weights: Path, runs: Path, data: Path, slides: tuple[str, ...]) -> dict:
    fields = [f for f in rf.icpr_fields(data, scanners=("A",))]
    report: dict = {"per_slide": {}, "fields": {}}
    pooled = {"one_stage": DetectionCounts(), "two_stage": DetectionCounts()}
    baseline = Manifest.load(weights)
    with tempfile.TemporaryDirectory() as tmp:
        for s in slides:
            manifest = fold_weights(runs / f"loso_{s}", weights, Path(tmp) / f"weights_{s}")
            settings = Settings(weights_dir=Path(tmp) / f"weights_{s}", device="cpu")
            models = load_models(settings)
            slide = {"one_stage": DetectionCounts(), "two_stage": DetectionCounts()}
            for field in (f for f in fields if f.slide == s):
                t0 = time.perf_counter()
                loaded = rf.load_field(field, None)
                candidates = verify_candidates(loaded.pixels, detect_candidates(loaded.pixels, models, settings),
                                               models, settings)
                radius = loaded.radius_px
                counts = {}
                for name, thresholds in (("one_stage", baseline.thresholds), ("two_stage", manifest.thresholds)):
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
    args = parser.parse_args(argv)
    report = evaluate(args.weights, args.runs, args.data, tuple(args.slides))
    print(json.dumps({"pooled": report["pooled"], "per_slide": report["per_slide"]}, indent=1))
    if args.out:
        write_json(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
