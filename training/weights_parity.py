"""Do two sets of weights decide alike on real tissue? The product's stages 1 and 2
(``pipeline.detect_candidates``, ``pipeline.verify_candidates``, ``decision.decide_detections``)
on every ICPR 2012 scanner A field, once per set of weights: each set's micro counts against the
contest's mitoses (7.5 um, ``count_matches``), and how many of one set's mitotic figures the
other finds within 1 um and within 7.5 um.

    python -m training.weights_parity --before /tmp/weights_backup --after weights [--out F]

Made for changes meant to keep decisions (a new I/O contract, an output stride, fp16): the
fields are the shipped weights' training fields, so the counts compare the two sets, they are not
held-out figures. Data are read from ``../shared/data`` at run time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from mitosis_analysis.decision import decide_detections  # noqa: E402
from mitosis_analysis.evaluate.detection import DetectionCounts, count_matches  # noqa: E402
from mitosis_analysis.inference import load_models  # noqa: E402
from mitosis_analysis.pipeline import detect_candidates, verify_candidates  # noqa: E402
from mitosis_analysis.settings import Settings  # noqa: E402
from training import real_fields as rf  # noqa: E402
from training.runtime import report_json  # noqa: E402


def mitotic_figures(pixels: np.ndarray, models, settings: Settings) -> np.ndarray:
    """(n, 2) x, y of the product's mitotic figures on ``pixels`` (no atypia classification)."""
    candidates = verify_candidates(pixels, detect_candidates(pixels, models, settings), models, settings)
    chosen = [d for d in decide_detections(candidates, models.manifest.thresholds) if d.is_mitosis]
    return np.array([[d.x, d.y] for d in chosen], np.float64).reshape(-1, 2)


def compare(before: Path, after: Path, data: Path, limit: int | None = None) -> dict:
    sets = {name: Settings(weights_dir=w, device="cpu") for name, w in (("before", before), ("after", after))}
    models = {name: load_models(s) for name, s in sets.items()}
    fields = rf.icpr_fields(data, scanners=("A",))[:limit]
    counts = {name: DetectionCounts() for name in sets}
    agree = {"within_1um": DetectionCounts(), "within_7.5um": DetectionCounts()}
    for field in fields:
        loaded = rf.load_field(field, None)
        found = {name: mitotic_figures(loaded.pixels, models[name], sets[name]) for name in sets}
        for name in sets:
            counts[name] = counts[name] + count_matches(loaded.mitoses, found[name], loaded.radius_px)
        # "after" scored against "before": TP = figures both sets give, FP/FN = figures only one gives
        agree["within_1um"] = agree["within_1um"] + count_matches(found["before"], found["after"], 1 / loaded.spacing_um)
        agree["within_7.5um"] = agree["within_7.5um"] + count_matches(found["before"], found["after"], loaded.radius_px)
        print(f"{field.name}: before {len(found['before'])}, after {len(found['after'])} figures", flush=True)
    return {"fields": len(fields), "before": str(before), "after": str(after),
            "against_truth": {k: v.as_dict() for k, v in counts.items()},
            "after_vs_before": {k: v.as_dict() for k, v in agree.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, default=REPO_ROOT / "weights")
    parser.add_argument("--data", type=Path, default=rf.DATA_DIR)
    parser.add_argument("--limit", type=int, default=None, help="first N fields only")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    report = compare(args.before, args.after, args.data, args.limit)
    report_json(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
