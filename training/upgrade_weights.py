"""Bring weights exported before the logit contract (manifest format 1) to format 2, in place.

What changes, and nothing else:
- ``detector.onnx``: the final 4-class ``Softmax`` is replaced by the mitosis logit
  (``training.export.softmax_detector_to_logit``); the class logits are the same tensors.
- ``manifest.json``: thresholds become logits (``log(p / (1 - p))`` of the old probabilities; the
  old candidate floor 0.1 becomes its logit), the inference plan is written out (the values that
  were run-time settings before), hashes are updated, provenance keeps its record and says so.

Usage: ``python -m training.upgrade_weights [--weights weights]``. Run once; it refuses format 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from mitosis_analysis.decision import logit
from mitosis_analysis.manifest import InferencePlan, Manifest, sha256_file
from mitosis_analysis.outputs import write_bytes_atomic
from training.export import DEFAULT_CANDIDATE_FLOOR_LOGIT, ExportError, softmax_detector_to_logit

REPO_ROOT = Path(__file__).resolve().parent.parent


def upgrade(weights: Path) -> Manifest:
    import onnx
    import onnxruntime as ort

    path = weights / "manifest.json"
    old = json.loads(path.read_text())
    if old.get("format_version") != 1:
        raise ExportError(f"{path} is format {old.get('format_version')}, not 1: nothing to upgrade")
    detector = weights / old["detector"]["file"]
    if sha256_file(detector) != old["detector"]["sha256"]:
        raise ExportError(f"{detector} does not match its manifest")
    x = np.random.default_rng(0).random((2, 3, 256, 256), dtype=np.float32)
    before = ort.InferenceSession(str(detector), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    converted = softmax_detector_to_logit(onnx.load(str(detector)))
    write_bytes_atomic(detector, converted.SerializeToString())
    after = ort.InferenceSession(str(detector), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    # the new output must be the logit of the old mitosis probability wherever that is not saturated
    p = before[:, 2].astype(np.float64)
    ok = (p > 1e-6) & (p < 1 - 1e-6)
    worst = float(np.abs(after.astype(np.float64)[ok] - logit(p[ok])).max()) if ok.any() else 0.0
    print(f"detector: softmax -> mitosis_logit; max |logit - logit(old p)| = {worst:.2e} "
          f"over {int(ok.sum())} unsaturated pixels", file=sys.stderr)
    if worst > 1e-2:
        raise ExportError(f"converted detector differs from the old one by {worst:.2e} in logit")

    new = dict(old)
    new["format_version"] = 2
    new["detector"] = {**old["detector"], "sha256": sha256_file(detector), "output_name": "mitosis_logit"}
    new["plan"] = InferencePlan().model_dump()
    new["thresholds"] = {
        "detection_logit": float(logit(old["thresholds"]["detection"])),
        "candidate_floor_logit": DEFAULT_CANDIDATE_FLOOR_LOGIT,
        "atypical_logit": float(logit(old["thresholds"]["atypical"])),
    }
    prov = dict(old["provenance"])
    prov["notes"] = ((prov.get("notes") or "") + " Upgraded to manifest format 2 by "
                     "`python -m training.upgrade_weights`: detector graph ends in the mitosis logit, thresholds "
                     f"as logits (detection {old['thresholds']['detection']} -> {new['thresholds']['detection_logit']:.4f}, "
                     f"atypical {old['thresholds']['atypical']:.4f} -> {new['thresholds']['atypical_logit']:.4f}, "
                     f"candidate floor 0.1 -> {DEFAULT_CANDIDATE_FLOOR_LOGIT:.4f}).").strip()
    new["provenance"] = prov
    manifest = Manifest.model_validate(new)
    write_bytes_atomic(path, (manifest.model_dump_json(indent=2) + "\n").encode())
    Manifest.load(weights).verified_path(weights, manifest.detector)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=REPO_ROOT / "weights")
    args = parser.parse_args(argv)
    m = upgrade(args.weights)
    print(f"wrote {args.weights / 'manifest.json'}: thresholds {m.thresholds.model_dump()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ExportError as exc:
        print(f"upgrade failed: {exc}", file=sys.stderr)
        sys.exit(1)
