"""Bring exported weights up to the current contracts, in place. Two separate steps, each run once:

1. ``upgrade`` (``python -m training.upgrade_weights``): weights exported before the logit
   contract (manifest format 1) to format 2. It refuses format 2.
2. ``upgrade_io_contract`` (``python -m training.upgrade_weights --io-contract``): float32 NCHW
   graphs to the run-time I/O contract of ``training/onnx_contract.py``. It refuses weights that
   already take uint8.

Step 1 changes, and nothing else:
- ``detector.onnx``: the final 4-class ``Softmax`` is replaced by the mitosis logit
  (``training.export.softmax_detector_to_logit``); the class logits are the same tensors.
- ``manifest.json``: thresholds become logits (``log(p / (1 - p))`` of the old probabilities; the
  old candidate floor 0.1 becomes its logit), the inference plan is written out (the values that
  were run-time settings before), hashes are updated, provenance keeps its record and says so.

Step 2 changes, and nothing else:
- every graph takes uint8 N x H x W x 3 (``with_uint8_nhwc_input``); the detector's mitosis logit
  is max-pooled over ``DETECTOR_OUTPUT_STRIDE`` blocks (``with_output_stride``). Each converted
  graph must give, on random pixels, what the old one gives on the same pixels / 255 (the
  detector: its block maxima) within ``IO_CONTRACT_TOLERANCE``, else nothing is written.
- ``manifest.json``: the models' sha256, ``input_format``, the detector's ``output_stride``, and a
  dated sentence in ``provenance.notes``.

Usage: ``python -m training.upgrade_weights [--weights weights] [--io-contract]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np

from mitosis_analysis.decision import logit
from mitosis_analysis.manifest import InferencePlan, Manifest, sha256_file
from mitosis_analysis.outputs import write_bytes_atomic
from mitosis_analysis.settings import MANIFEST_FILE
from training.export import (
    DEFAULT_CANDIDATE_FLOOR_LOGIT,
    PARITY_SHAPES,
    ExportError,
    output_stride,
    softmax_detector_to_logit,
)
from training.onnx_contract import DETECTOR_OUTPUT_STRIDE, FLOAT32_NCHW, UINT8_NHWC, contract_parity, with_contract

REPO_ROOT = Path(__file__).resolve().parent.parent
# Max |new graph - old graph| allowed by step 2 (the same arithmetic, only the input's layout and
# type move into the graph).
IO_CONTRACT_TOLERANCE = 1e-5


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


def upgrade_io_contract(weights: Path) -> tuple[Manifest, dict[str, float]]:
    """Step 2: every model in ``weights`` to uint8 NHWC input, the detector to output stride
    ``DETECTOR_OUTPUT_STRIDE``; the manifest with the new hashes and contract. Returns the new
    manifest and, per model, the max |new - old| on random pixels. All graphs are converted and
    checked before any file is written."""
    import onnx
    import onnxruntime as ort

    manifest = Manifest.load(weights)
    roles = [r for r in ("detector", "classifier", "verifier") if getattr(manifest, r) is not None]
    formats = {r: getattr(manifest, r).input_format for r in roles}
    if set(formats.values()) != {FLOAT32_NCHW} or manifest.detector.output_stride != 1:
        raise ExportError(f"{weights} is not all float32 NCHW at stride 1 (input formats {formats}, detector "
                          f"output stride {manifest.detector.output_stride}): nothing to upgrade")
    converted: dict[str, bytes] = {}
    diffs: dict[str, float] = {}
    for role in roles:
        entry = getattr(manifest, role)
        path = manifest.verified_path(weights, entry)
        old = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        stride = output_stride(role)
        converted[role] = with_contract(onnx.load(str(path)), entry.output_name, stride,
                                        entry.input_name).SerializeToString()
        session = ort.InferenceSession(converted[role], providers=["CPUExecutionProvider"])

        def reference(x: np.ndarray, old=old, entry=entry) -> np.ndarray:
            return old.run([entry.output_name], {entry.input_name: x})[0]

        # the export's parity shapes; crops at the model's own input size (its graph may fix it)
        shapes = [(n, h, w) if role == "detector" else (n, entry.input_size, entry.input_size)
                  for n, h, w in PARITY_SHAPES[role]]
        diffs[role] = contract_parity(session, reference, shapes, stride)
        print(f"{role}: uint8 NHWC input, output stride {stride}; max |new - "
              f"{'block max of old' if stride > 1 else 'old'}| = {diffs[role]:.2e} on random pixels "
              f"{shapes}", file=sys.stderr)
    worst = max(diffs, key=diffs.get)
    if not diffs[worst] <= IO_CONTRACT_TOLERANCE:
        raise ExportError(f"{worst}: converted graph differs from the old one by {diffs[worst]:.2e} "
                          f"> {IO_CONTRACT_TOLERANCE:.0e}; nothing written")

    new = json.loads(manifest.model_dump_json())
    for role in roles:
        write_bytes_atomic(weights / new[role]["file"], converted[role])
        new[role].update(sha256=sha256_file(weights / new[role]["file"]), input_format=UINT8_NHWC,
                         output_stride=output_stride(role))
    when = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    figures = ", ".join(f"{r} {d:.1e}" for r, d in diffs.items())
    new["provenance"]["notes"] = ((new["provenance"]["notes"] or "") + f" I/O contract upgraded on {when} by "
                                  "`python -m training.upgrade_weights --io-contract`: every model takes uint8 "
                                  f"N x H x W x 3 (layout and /255 in the graph), the detector's mitosis logit is "
                                  f"max-pooled over {DETECTOR_OUTPUT_STRIDE} x {DETECTOR_OUTPUT_STRIDE} blocks; "
                                  f"max |new - old| on random pixels: {figures}.").strip()
    upgraded = Manifest.model_validate(new)
    write_bytes_atomic(weights / MANIFEST_FILE, (upgraded.model_dump_json(indent=2) + "\n").encode())
    loaded = Manifest.load(weights)
    for role in roles:
        loaded.verified_path(weights, getattr(loaded, role))
    return loaded, diffs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=REPO_ROOT / "weights")
    parser.add_argument("--io-contract", action="store_true",
                        help="step 2: uint8 NHWC input for every model, detector output stride "
                             f"{DETECTOR_OUTPUT_STRIDE} (instead of step 1, format 1 -> 2)")
    args = parser.parse_args(argv)
    if args.io_contract:
        m, _ = upgrade_io_contract(args.weights)
        print(f"wrote {args.weights / MANIFEST_FILE}: detector output_stride {m.detector.output_stride}, "
              f"input_format {m.detector.input_format}", file=sys.stderr)
        return 0
    m = upgrade(args.weights)
    print(f"wrote {args.weights / 'manifest.json'}: thresholds {m.thresholds.model_dump()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ExportError as exc:
        print(f"upgrade failed: {exc}", file=sys.stderr)
        sys.exit(1)
