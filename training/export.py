"""Export the detector and the classifier (and the stage-2 verifier, when ``<checkpoints>/verifier.pt``
exists) to ONNX and write ``weights/manifest.json``.

Usage (what ``./export.sh`` runs)::

    python -m training.export [--checkpoints training/checkpoints] [--weights weights]
                              [--tolerance 1e-4] [--opset 17] [--only classifier]

``--only KIND`` exports that model alone into weights that hold the others (their files, entries,
thresholds and records are kept; the manifest's notes say what was replaced and when).

For each model kind it takes ``<checkpoints>/<kind>.pt`` when present (a ``torch.save`` dict with
keys ``arch``, ``config``, ``state_dict``, ``threshold``, ``metrics`` and optionally ``command``,
``data``, ``created``), otherwise a random-initialised model (seed 0) so that the product can be
built and tested before training; the manifest says which (``provenance.trained``).

Each graph is given the run-time I/O contract (``training/onnx_contract.py``): input uint8
N x H x W x 3, and the detector's mitosis logit max-pooled over ``DETECTOR_OUTPUT_STRIDE`` blocks.
It is then checked against PyTorch with ONNX Runtime (CPU) on random pixels of two batch sizes
(and, for the detector, two spatial sizes; against the block maxima of PyTorch's logit map); the
export fails when the max absolute difference exceeds ``--tolerance``. Files are written
atomically (temp file + ``os.replace``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script as well as with -m
    sys.path.insert(0, str(REPO_ROOT))

import model as models
from mitosis_analysis.manifest import InferencePlan, Manifest, sha256_file
from mitosis_analysis.outputs import write_bytes_atomic
from mitosis_analysis.settings import (
    CLASSIFIER_FILE,
    DETECTOR_FILE,
    MANIFEST_FILE,
    SEGMENTATION_CLASSES,
    Settings,
)
from training.onnx_contract import DETECTOR_OUTPUT_STRIDE, UINT8_NHWC, contract_parity, with_contract

MAX_ONNX_BYTES = 30 * 1024 * 1024
# Operating thresholds as logits when a checkpoint carries none (0 = probability 0.5).
DEFAULT_THRESHOLD_LOGITS = {"detector": 0.0, "classifier": 0.0}
# Candidates below this mitosis logit are not reported (probability 0.1, the floor used so far).
DEFAULT_CANDIDATE_FLOOR_LOGIT = -2.1972245773362196
FILES = {"detector": DETECTOR_FILE, "classifier": CLASSIFIER_FILE}
# Input shapes of the parity check: (batch, height, width). The detector is checked at two sizes
# to prove the spatial axes are dynamic; 32-multiples as the product uses.
PARITY_SHAPES: dict[str, list[tuple[int, int, int]]] = {
    "detector": [(1, 512, 512), (3, 256, 384)],
    "classifier": [(1, 128, 128), (5, 128, 128)],
    "verifier": [(1, 64, 64), (7, 64, 64)],
}


def output_stride(kind: str) -> int:
    """What the exported graph pools its output over (the detector's map; 1 for the others)."""
    return DETECTOR_OUTPUT_STRIDE if kind == "detector" else 1


class ExportError(RuntimeError):
    pass


@dataclass
class Exported:
    kind: str
    path: Path
    net: nn.Module
    trained: bool
    threshold: float
    parameters: int
    max_abs_diff: float
    checkpoint: dict = field(default_factory=dict)


def load_model(kind: str, checkpoint_path: Path) -> tuple[nn.Module, dict, bool]:
    """The model from its checkpoint if there is one, else random-initialised (seed 0)."""
    if checkpoint_path.is_file():
        ckpt = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        missing = {"arch", "config", "state_dict"} - set(ckpt)
        if missing:
            raise ExportError(f"checkpoint {checkpoint_path} lacks keys {sorted(missing)}")
        net = models.build(kind, arch=ckpt["arch"], **ckpt["config"])
        net.load_state_dict(ckpt["state_dict"])
        return net.eval(), ckpt, True
    torch.manual_seed(0)
    return models.build(kind).eval(), {}, False


def export_onnx(kind: str, net: nn.Module, path: Path, opset: int) -> None:
    """``net`` (float32 N x 3 x H x W input) to ``path`` as an ONNX graph with the run-time I/O
    contract (``onnx_contract.with_contract``)."""
    wrapped = models.for_export(kind, net)
    _, height, width = PARITY_SHAPES[kind][0]
    dummy = torch.rand(1, 3, height, width)
    output_name = models.OUTPUT_NAMES[kind]
    dynamic = {"image": {0: "batch"}, output_name: {0: "batch"}}
    if kind == "detector":
        dynamic = {"image": {0: "batch", 2: "height", 3: "width"},
                   output_name: {0: "batch", 1: "height", 2: "width"}}
    tmp = path.with_name(path.name + ".tmp")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # the legacy exporter: no onnxscript here
        torch.onnx.export(
            wrapped, (dummy,), str(tmp), dynamo=False, input_names=["image"], output_names=[output_name],
            dynamic_axes=dynamic, opset_version=opset, do_constant_folding=True,
        )
    import onnx

    onnx.save(with_contract(onnx.load(str(tmp)), output_name, output_stride(kind)), str(tmp))
    onnx.checker.check_model(str(tmp))
    size = tmp.stat().st_size
    if size > MAX_ONNX_BYTES:
        tmp.unlink()
        raise ExportError(f"{path.name} is {size / 2**20:.1f} MiB > 30 MiB")
    os.replace(tmp, path)


def parity(kind: str, net: nn.Module, path: Path, seed: int = 0) -> float:
    """Max |ORT - PyTorch| over random uint8 pixels of the PARITY_SHAPES: the graph is fed the
    bytes, PyTorch the same pixels / 255 (NCHW); the detector is compared with the block maxima of
    PyTorch's logit map (``onnx_contract.contract_parity``)."""
    import onnxruntime as ort

    wrapped = models.for_export(kind, net)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # small inputs: threads only add contention
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])

    def reference(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return wrapped(torch.from_numpy(x)).numpy()

    try:
        return contract_parity(session, reference, PARITY_SHAPES[kind], output_stride(kind), seed)
    except ValueError as exc:
        raise ExportError(f"{kind}: ONNX Runtime vs PyTorch: {exc}") from None


def checkpoint_threshold_logit(ckpt: dict, kind: str, views: int | None = None) -> float:
    """The operating threshold of a checkpoint as a logit (``threshold_logit``, or the logit of a
    probability-valued ``threshold`` of older checkpoints). For a classifier run with ``views``
    flip views, the threshold chosen for that many views (``thresholds_by_views``); a checkpoint
    that has none for it is refused unless it was tuned for ``views`` itself."""
    from mitosis_analysis.decision import logit

    if kind == "classifier" and views is not None and ckpt:
        by_views = ckpt.get("thresholds_by_views") or {}
        if str(views) in by_views:
            return float(logit(float(by_views[str(views)])))
        tuned_for = (ckpt.get("metrics") or {}).get("product_views")
        if tuned_for is not None and tuned_for != views:
            raise ExportError(f"the classifier checkpoint has no threshold for {views} flip views "
                              f"(tuned for {tuned_for}; thresholds_by_views: {sorted(by_views) or 'none'})")
    if "threshold_logit" in ckpt:
        return float(ckpt["threshold_logit"])
    if "threshold" in ckpt:
        return float(logit(float(ckpt["threshold"])))
    return DEFAULT_THRESHOLD_LOGITS[kind]


def softmax_detector_to_logit(graph_model, mitosis_channel: int = models.MITOSIS_CHANNEL):
    """An exported detector whose output is the 4-class ``Softmax`` (weights exported before the
    logit contract) -> the same graph ending in ``mitosis_logit`` = z_mitosis - logsumexp(z_others)
    of the softmax's input, as ``model.mitosis_logit`` computes it for new exports. Used once by
    ``training/upgrade_weights.py``; the class logits themselves are untouched."""
    import onnx
    from onnx import TensorProto, helper

    g = graph_model.graph
    (output,) = g.output
    (softmax,) = [n for n in g.node if output.name in n.output]
    if softmax.op_type != "Softmax":
        raise ExportError(f"detector output {output.name!r} is made by {softmax.op_type}, not Softmax")
    z = softmax.input[0]
    others = [c for c in range(4) if c != mitosis_channel]
    g.node.remove(softmax)
    g.node.extend([
        helper.make_node("Constant", [], ["mitosis_index"],
                         value=helper.make_tensor("mi", TensorProto.INT64, [], [mitosis_channel])),
        helper.make_node("Constant", [], ["other_indices"],
                         value=helper.make_tensor("oi", TensorProto.INT64, [len(others)], others)),
        helper.make_node("Gather", [z, "mitosis_index"], ["z_mitosis"], axis=1),
        helper.make_node("Gather", [z, "other_indices"], ["z_others"], axis=1),
        helper.make_node("ReduceLogSumExp", ["z_others"], ["lse_others"], axes=[1], keepdims=0),
        helper.make_node("Sub", ["z_mitosis", "lse_others"], [models.OUTPUT_NAMES["detector"]]),
    ])
    g.output.remove(output)
    g.output.append(helper.make_tensor_value_info(models.OUTPUT_NAMES["detector"], TensorProto.FLOAT,
                                                  ["batch", "height", "width"]))
    onnx.checker.check_model(graph_model)
    return graph_model


def normalisation(net: nn.Module) -> dict:
    return {name: [round(float(v), 6) for v in getattr(net, name).flatten()] for name in ("mean", "std")}


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    # "-dirty" when the code that defines or trains the models differs from that commit
    status = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "model", "training",
                             "export.sh"], capture_output=True, text=True, timeout=10, check=False)
    return out.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def model_entry(e: Exported, opset: int) -> dict:
    entry = {
        "file": e.path.name,
        "sha256": sha256_file(e.path),
        "input_format": UINT8_NHWC,
        "output_name": models.OUTPUT_NAMES[e.kind],
        "output_stride": output_stride(e.kind),
        "input_size": 512 if e.kind == "detector" else InferencePlan().crop_size,
        "normalisation": normalisation(e.net),
        "parameters": e.parameters,
        "opset": opset,
    }
    if e.kind == "detector":
        entry["classes"] = list(SEGMENTATION_CLASSES)
    return entry


def provenance(exported: dict[str, Exported], command: str) -> dict:
    trained = all(e.trained for e in exported.values())
    per_model = {}
    for kind, e in exported.items():
        ck = e.checkpoint
        per_model[kind] = {
            "trained": e.trained,
            "arch": ck.get("arch", "default config, random init (seed 0)"),
            "config": ck.get("config"),
            "training_command": ck.get("command"),
            "data": ck.get("data"),
            "checkpoint_created": ck.get("created"),
            "threshold": e.threshold,
            "metrics": ck.get("metrics"),
            "onnx_vs_pytorch_max_abs_diff": e.max_abs_diff,
        }
    commands = [command] + [f"{k}: {e.checkpoint['command']}" for k, e in exported.items()
                            if e.checkpoint.get("command")]
    data = "; ".join(sorted({str(e.checkpoint.get("data")) for e in exported.values() if e.trained}))
    untrained = [k for k, e in exported.items() if not e.trained]
    notes = None
    if untrained:
        notes = (f"UNTRAINED (random initialisation, seed 0): {', '.join(untrained)}; "
                 "its outputs are meaningless until a checkpoint is exported")
    return {
        "trained": trained,
        "command": " && ".join(commands),
        "data": data or "none (random initialisation)",
        "git_commit": git_commit(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "notes": notes,
        "metrics": per_model,
    }


def export_kind(kind: str, args: argparse.Namespace, views: int | None = None, path: Path | None = None) -> Exported:
    """One model from ``<checkpoints>/<kind>.pt`` (or random init) to ONNX at ``path`` (default:
    its file in ``args.weights``), parity-checked; its threshold for ``views`` flip views is
    settled before anything is written."""
    net, ckpt, trained = load_model(kind, args.checkpoints / f"{kind}.pt")
    threshold = checkpoint_threshold_logit(ckpt, kind, views)
    path = path or args.weights / FILES[kind]
    export_onnx(kind, net, path, args.opset)
    diff = parity(kind, net, path)
    source = args.checkpoints / f"{kind}.pt" if trained else "random init (no checkpoint)"
    print(f"{kind}: {source} -> {path} ({path.stat().st_size / 2**20:.2f} MiB); "
          f"max |ORT - PyTorch| = {diff:.2e} (tolerance {args.tolerance:.0e})", file=sys.stderr)
    if not diff <= args.tolerance:
        path.unlink()
        raise ExportError(f"{kind}: ONNX Runtime differs from PyTorch by {diff:.2e} > {args.tolerance:.0e}")
    return Exported(kind, path, net, trained, threshold, sum(p.numel() for p in net.parameters()), diff, ckpt)


THRESHOLD_KEYS = {"detector": "detection_logit", "classifier": "atypical_logit"}


def replace_one(kind: str, args: argparse.Namespace) -> Manifest:
    """Export only ``kind`` from its checkpoint (which must exist) into weights that already hold
    the others: its manifest entry, threshold and provenance record are replaced; every other
    model, threshold and record is kept as it was."""
    if not (args.checkpoints / f"{kind}.pt").is_file():
        raise ExportError(f"--only {kind}: no checkpoint {args.checkpoints / f'{kind}.pt'}")
    old = Manifest.load(args.weights)
    views = args.classifier_views or old.plan.classifier_views
    staged = args.weights / (FILES[kind] + ".staged")  # the shipped file stays until all checks pass
    try:
        e = export_kind(kind, args, views, staged)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    final = args.weights / FILES[kind]
    record = provenance({kind: e}, args.command)
    before = old.provenance.model_dump()
    metrics = {**(before.get("metrics") or {}), kind: record["metrics"][kind]}
    note = f"{record['created'][:10]}: {kind} replaced by `{args.command}` ({args.checkpoints / f'{kind}.pt'})."
    entry = {**model_entry(e, args.opset), "file": final.name}
    updated = Manifest.model_validate({
        **old.model_dump(),
        kind: entry,
        "thresholds": {**old.thresholds.model_dump(), THRESHOLD_KEYS[kind]: e.threshold},
        "plan": {**old.plan.model_dump(), "classifier_views": views},
        "provenance": {**before, "metrics": metrics, "git_commit": record["git_commit"], "created": record["created"],
                       "command": " && ".join(x for x in (before.get("command"), record["command"]) if x),
                       "notes": " ".join(x for x in (before.get("notes"), note) if x),
                       "trained": bool(before.get("trained")) and e.trained},
    })
    os.replace(staged, final)
    write_bytes_atomic(args.weights / MANIFEST_FILE, (updated.model_dump_json(indent=2) + "\n").encode())
    Manifest.load(args.weights).verified_path(args.weights, getattr(updated, kind))
    print(f"replaced the {kind} in {args.weights / MANIFEST_FILE}; the other models are unchanged", file=sys.stderr)
    return updated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", type=Path, default=REPO_ROOT / "training" / "checkpoints")
    parser.add_argument("--weights", type=Path, default=REPO_ROOT / "weights")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max |ORT - PyTorch| allowed")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--command", default="./export.sh", help="recorded in the manifest")
    parser.add_argument("--only", choices=sorted(THRESHOLD_KEYS), default=None,
                        help="export this model only; the weights' other models and their records are kept")
    parser.add_argument("--classifier-views", type=int, choices=(1, 2, 4, 8), default=None,
                        help="flip views the product averages (the plan's classifier_views); the classifier's "
                             "threshold is the checkpoint's for that many views (default: the plan's, 4 for new weights)")
    args = parser.parse_args(argv)
    args.weights.mkdir(parents=True, exist_ok=True)

    if args.only:
        replace_one(args.only, args)
        return 0
    plan = InferencePlan(**({"classifier_views": args.classifier_views} if args.classifier_views else {}))
    exported = {kind: export_kind(kind, args, plan.classifier_views) for kind in ("detector", "classifier")}

    manifest = Manifest.model_validate({
        "spacing_mm": Settings().default_spacing_mm,
        "plan": plan.model_dump(),
        "detector": model_entry(exported["detector"], args.opset),
        "classifier": model_entry(exported["classifier"], args.opset),
        "thresholds": {"detection_logit": exported["detector"].threshold,
                       "candidate_floor_logit": DEFAULT_CANDIDATE_FLOOR_LOGIT,
                       "atypical_logit": exported["classifier"].threshold},
        "provenance": provenance(exported, args.command),
    })
    write_bytes_atomic(args.weights / MANIFEST_FILE, (manifest.model_dump_json(indent=2) + "\n").encode())
    Manifest.load(args.weights)  # round trip through the product's reader
    for kind in exported:
        manifest.verified_path(args.weights, getattr(manifest, kind))
    print(f"wrote {args.weights / MANIFEST_FILE} (trained: detector={exported['detector'].trained}, "
          f"classifier={exported['classifier'].trained})", file=sys.stderr)
    verifier = args.checkpoints / "verifier.pt"
    if verifier.is_file():  # stage 2 (optional): its threshold and stage-1 floor come with the checkpoint
        from training import export_verifier

        description, ckpt = export_verifier.export_checkpoint(verifier, args.weights / export_verifier.VERIFIER_FILE,
                                                              args.opset, args.tolerance, timing=False)
        views = int(ckpt.get("views", 1))  # checkpoints before --views were thresholded on one view
        export_verifier.install_verifier(args.weights, args.weights / export_verifier.VERIFIER_FILE, description,
                                         ckpt["threshold"], ckpt["verify_floor"], views=views,
                                         detector_override_logit=ckpt.get("detector_override_logit"),
                                         note=f"Verifier {verifier} (threshold logit {ckpt['threshold']:g} on the "
                                              f"mean of {views} flip view(s), stage-1 floor {ckpt['verify_floor']:g}).")
        print(f"installed the verifier {verifier} into {args.weights}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ExportError as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        sys.exit(1)
