"""Export the stage-2 verifier to ONNX (through ``training.export``'s exporter and parity check),
time it on the CPU with ONNX Runtime, and write a JSON description beside it.

    python -m training.export_verifier --checkpoint training/runs/verifier/final/verifier.pt \\
        --out training/checkpoints/verifier.onnx [--copy-to /work/verifier-export] [--facts facts.json]

Several ``--checkpoint`` files make one graph of their mean logit (``model.verifier.VerifierEnsemble``;
``ensemble``).

The graph: input ``image`` uint8 N x 64 x 64 x 3 RGB (dynamic batch; the run-time I/O contract of
``training/onnx_contract.py``: scaling and normalisation in the graph), output ``logit`` (N,). The
export fails when ONNX Runtime and PyTorch (on the same pixels / 255) differ by more than
``--tolerance`` on random pixels. ``--facts`` (JSON) is merged into the description (the
measured figures and the threshold rule from the leave-one-slide-out runs).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import model as models  # noqa: E402
from mitosis_analysis.decision import logit  # noqa: E402
from mitosis_analysis.inference import to_model_input  # noqa: E402
from mitosis_analysis.manifest import Manifest, ModelEntry, sha256_file  # noqa: E402
from mitosis_analysis.settings import MANIFEST_FILE  # noqa: E402
from model.verifier import ENSEMBLE_ARCH  # noqa: E402
from training import export  # noqa: E402
from training.onnx_contract import FLOAT32_NCHW, UINT8_NHWC  # noqa: E402
from training.runtime import save_checkpoint, write_json  # noqa: E402

KIND = "verifier"
VERIFIER_FILE = "verifier.onnx"


def load(checkpoint: Path | list[Path]) -> tuple[torch.nn.Module, dict]:
    """The verifier of a checkpoint, or of several as one ensemble (``ensemble``)."""
    paths = [checkpoint] if isinstance(checkpoint, (str, Path)) else list(checkpoint)
    ckpt = ensemble(paths) if len(paths) > 1 else torch.load(paths[0], map_location="cpu", weights_only=False)
    net = models.build(KIND, arch=ckpt["arch"], **ckpt["config"])
    net.load_state_dict(ckpt["state_dict"])
    return net.eval(), ckpt


def ensemble(paths: list[Path]) -> dict:
    """One checkpoint (``ENSEMBLE_ARCH``) for the mean logit of the verifiers in ``paths``: they must
    have been trained to judge the same stage-1 floor and be scored with the same flip views; the
    threshold is left to the caller (the members' were chosen for a single network)."""
    ckpts = [torch.load(p, map_location="cpu", weights_only=False) for p in paths]
    for key in ("verify_floor", "views", "stain_reference"):
        values = {json.dumps(c.get(key), sort_keys=True) for c in ckpts}
        if len(values) != 1:
            raise export.ExportError(f"ensemble members differ in {key}: {sorted(map(str, values))}")
    config = {"members": [{"arch": c["arch"], **c["config"]} for c in ckpts]}
    net = models.build(KIND, arch=ENSEMBLE_ARCH, **config)
    for member, c in zip(net.members, ckpts):
        member.load_state_dict(c["state_dict"])
    return {"arch": ENSEMBLE_ARCH, "config": config, "state_dict": net.state_dict(), "threshold": None,
            "verify_floor": ckpts[0].get("verify_floor"), "views": ckpts[0].get("views", 1),
            "stain_reference": ckpts[0].get("stain_reference"),
            "command": " ; ".join(str(c.get("command")) for c in ckpts), "data": ckpts[0].get("data"),
            "created": max(str(c.get("created")) for c in ckpts), "members": [str(p) for p in paths]}


def export_verifier(net: torch.nn.Module, path: Path, opset: int = 17, tolerance: float = 1e-4) -> float:
    """Write the ONNX graph to ``path``; the max |ORT - PyTorch|, or ExportError above ``tolerance``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    export.export_onnx(KIND, net, path, opset)
    diff = export.parity(KIND, net, path)
    if not diff <= tolerance:
        path.unlink()
        raise export.ExportError(f"verifier: ONNX Runtime differs from PyTorch by {diff:.2e} > {tolerance:.0e}")
    return diff


VERIFIER_PROVENANCE = ("arch", "training_command", "data", "created", "parameters", "onnx_vs_pytorch_max_abs_diff")


def install_verifier(weights_dir: Path, onnx_path: Path, description: dict, threshold_logit: float,
                     verify_floor: float, note: str = "", metrics: dict | None = None, views: int = 1,
                     detector_override_logit: float | None = None, normalised_input: bool = False) -> Manifest:
    """Add the verifier to the weights in ``weights_dir``: the ONNX file copied in, a ``verifier``
    entry in the manifest, ``thresholds.verification_logit`` (chosen for the mean logit over
    ``views`` flip views, which becomes ``plan.verifier_views``) and the candidate floor raised to
    ``verify_floor`` (the stage-1 probability the verifier was trained to judge: candidates below
    it are neither verified nor reported), and ``thresholds.detector_override_logit`` (None: the
    verifier alone decides). The manifest is validated before it is written.

    A verifier trained on stain-normalised pixels (``train_verifier --stain``) is refused unless
    ``normalised_input``: the product feeds it raw pixels (only ``verifier_heldout --stain``
    normalises its input)."""
    if description.get("stain_reference") and not normalised_input:
        raise export.ExportError("this verifier was trained on stain-normalised pixels (train_verifier --stain); "
                                 "the product does not normalise, so it cannot be installed")
    weights_dir = Path(weights_dir)
    manifest = Manifest.load(weights_dir)
    target = weights_dir / VERIFIER_FILE
    if Path(onnx_path).resolve() != target.resolve():
        shutil.copyfile(onnx_path, target)
    entry = ModelEntry(file=VERIFIER_FILE, sha256=sha256_file(target), input_name=description["input_name"],
                       input_format=description.get("input_format", FLOAT32_NCHW),
                       output_name=description["output_name"], input_size=description["input_size"],
                       normalisation=description["normalisation"], parameters=description.get("parameters"),
                       opset=description.get("opset"))
    thresholds = manifest.thresholds.model_copy(update={
        "verification_logit": float(threshold_logit), "candidate_floor_logit": float(logit(verify_floor)),
        "detector_override_logit": None if detector_override_logit is None else float(detector_override_logit)})
    notes = " ".join(x for x in (manifest.provenance.notes, note) if x)
    all_metrics = {**(manifest.provenance.metrics or {}), **(metrics or {})} or None
    updated = Manifest.model_validate({**manifest.model_dump(), "verifier": entry.model_dump(),
                                       "thresholds": thresholds.model_dump(),
                                       "plan": {**manifest.plan.model_dump(), "verifier_views": views},
                                       "provenance": {**manifest.provenance.model_dump(), "notes": notes,
                                                      "metrics": all_metrics}})
    write_json(json.loads(updated.model_dump_json()), weights_dir / MANIFEST_FILE)
    return updated


def ms_per_crop(path: Path, threads: int, batch: int = 64, size: int = 64, repeats: int = 20) -> float:
    """Median wall time per crop (ms) of ONNX Runtime (CPU, ``threads`` intra-op threads) at ``batch``
    (random pixels in the graph's input format: uint8 NHWC, or float32 NCHW of older exports)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    x = pixels if session.get_inputs()[0].type == "tensor(uint8)" else to_model_input(pixels)
    for _ in range(3):
        session.run(None, {"image": x})
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.run(None, {"image": x})
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1000 / batch


def export_checkpoint(checkpoint: Path | list[Path], out: Path, opset: int = 17, tolerance: float = 1e-4,
                      timing: bool = True) -> tuple[dict, dict]:
    """Export a verifier checkpoint (several: their ensemble) to ``out`` (parity-checked); its
    description and the checkpoint."""
    net, ckpt = load(checkpoint)
    diff = export_verifier(net, out, opset, tolerance)
    description = {
        "file": out.name,
        "sha256": sha256_file(out),
        "arch": ckpt["arch"],
        "config": ckpt["config"],
        "parameters": sum(p.numel() for p in net.parameters()),
        "opset": opset,
        "input_name": "image",
        "input_format": UINT8_NHWC,
        "input": "uint8 N x S x S x 3 RGB, S = input_size; dynamic batch axis",
        "input_size": int(net.input_size),
        "spacing_um": 0.25,
        "normalisation": {**export.normalisation(net), "applied": "in-graph"},
        "output_name": models.OUTPUT_NAMES[KIND],
        "output": "mitosis logit per crop, shape (N,)",
        "onnx_vs_pytorch_max_abs_diff": diff,
        "training_command": ckpt.get("command"),
        "data": ckpt.get("data"),
        "created": ckpt.get("created"),
        "verify_floor_used_in_training": ckpt.get("verify_floor"),
        "stain_reference": ckpt.get("stain_reference"),
    }
    if timing:
        description["ms_per_crop_batch64_onnxruntime_cpu"] = {f"{t}_threads": round(ms_per_crop(out, t, size=int(net.input_size)), 4)
                                                              for t in (1, 2)}
    return description, ckpt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, nargs="+", required=True,
                        help="a verifier checkpoint; several: one graph of their mean logit")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "training" / "checkpoints" / "verifier.onnx")
    parser.add_argument("--copy-to", type=Path, default=None)
    parser.add_argument("--facts", type=Path, default=None, help="JSON merged into the description")
    parser.add_argument("--install-into", type=Path, default=None, metavar="WEIGHTS_DIR",
                        help="also add the verifier to these weights (manifest entry, threshold, floor)")
    parser.add_argument("--threshold", type=float, default=None, help="verification logit threshold (with --install-into)")
    parser.add_argument("--views", type=int, default=None, choices=(1, 2, 4, 8),
                        help="flip views the threshold was chosen for (plan.verifier_views; default: the checkpoint's)")
    parser.add_argument("--verify-floor", type=float, default=None,
                        help="stage-1 probability floor (with --install-into; default: the checkpoint's)")
    parser.add_argument("--detector-override", type=float, default=None, metavar="LOGIT",
                        help="thresholds.detector_override_logit: a candidate whose detector logit reaches this is a "
                             "mitotic figure whatever the verifier says (default: the checkpoint's, else none)")
    parser.add_argument("--heldout", type=Path, default=None,
                        help="report of training.verifier_heldout, kept in the manifest's provenance (with --install-into)")
    parser.add_argument("--save-checkpoint", type=Path, default=None, metavar="PT",
                        help="also write the checkpoint exported (several: their ensemble), with --threshold, "
                             "--views and --verify-floor in it: what ./export.sh reads as training/checkpoints/verifier.pt")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    description, ckpt = export_checkpoint(args.checkpoint, args.out, args.opset, args.tolerance)
    if args.facts:
        with open(args.facts) as f:
            description.update(json.load(f))
    write_json(description, args.out.with_suffix(".json"))
    print(f"{args.out}: max |ORT - PyTorch| {description['onnx_vs_pytorch_max_abs_diff']:.2e}; ms/crop at batch 64 "
          f"{description['ms_per_crop_batch64_onnxruntime_cpu']}", file=sys.stderr)
    floor = args.verify_floor if args.verify_floor is not None else ckpt.get("verify_floor")
    views = args.views or int(ckpt.get("views", 1))
    override = args.detector_override if args.detector_override is not None else ckpt.get("detector_override_logit")
    if args.install_into:
        if args.threshold is None:
            raise export.ExportError("--install-into needs --threshold")
        # what trained the shipped verifier (its members' commands and data), kept with the weights
        metrics = {"verifier": {k: description.get(k) for k in VERIFIER_PROVENANCE}}
        if args.heldout:
            report = json.loads(args.heldout.read_text())
            metrics |= {"verifier_leave_one_slide_out_icpr2012_A": {
                "command": report.get("command", "python -m training.verifier_heldout"), "pooled": report["pooled"],
                "per_slide": report["per_slide"]}}
        install_verifier(args.install_into, args.out, description, args.threshold, floor,
                         note=f"Verifier {' + '.join(map(str, args.checkpoint))} installed by "
                              "`python -m training.export_verifier` "
                              f"(threshold logit {args.threshold:g} on the mean of {views} flip view(s), "
                              f"stage-1 floor {floor:g}"
                              + (f", detector override logit {override:g}" if override is not None else "") + ").",
                         metrics=metrics, views=views, detector_override_logit=override)
        print(f"installed into {args.install_into}", file=sys.stderr)
    if args.save_checkpoint:
        threshold = args.threshold if args.threshold is not None else ckpt.get("threshold")
        if threshold is None:
            raise export.ExportError("--save-checkpoint of an ensemble needs --threshold")
        saved = {**ckpt, "threshold": float(threshold), "views": views, "verify_floor": floor,
                 "detector_override_logit": override}
        args.save_checkpoint.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(saved, args.save_checkpoint)
        print(f"saved {args.save_checkpoint}", file=sys.stderr)
    if args.copy_to:
        args.copy_to.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.out, args.copy_to / args.out.name)
        shutil.copyfile(args.out.with_suffix(".json"), args.copy_to / args.out.with_suffix(".json").name)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except export.ExportError as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        sys.exit(1)
