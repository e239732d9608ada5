#!/usr/bin/env python
"""Speed of the MIDOG 2025 reference architectures, with random weights, for a side-by-side.

The challenge's reference models cannot be downloaded, so their *architectures* are built with
random weights and timed on the same synthetic ROI as ``benchmark.py`` (speed only; their
outputs mean nothing):

  Track 1  torchvision FCOS, ResNeXt-101 32x8d FPN backbone, configured as the MIDOG 2025 Track 1
           reference container configures it (DeepMicroscopy/MIDOG25_T1_reference_docker:
           FPN on layers 1-4 with a max-pool level, one anchor per level of sizes 8-128 px,
           min_size = max_size = patch size so patches are not resized, score threshold 0.2,
           NMS 0.6, 300 detections per patch), run over the ROI in 1024 px patches with 0.4
           overlap (its patch origins: ``range(0, size, stride)`` clamped to the border), batches
           of 8, then class-wise NMS (IoU 0.3) over the whole ROI. Timed from the decoded ROI in
           memory to boxes on the host: reading the file is *not* included.
  Track 2  timm EfficientNetV2-M (``efficientnetv2_m``), 2 classes, 128 px crops resized to
           224 px, ImageNet normalisation; timed one crop at a time (as the reference container
           loops) and batched by 64.

torch, torchvision and timm are imported lazily: this file imports without them and says which
are missing. They are not in the product's environment (it runs on ONNX Runtime); on the GPU
machine they are. Compare with our pipeline by passing ``benchmark.py``'s JSON with ``--ours``.

Examples:
  python benchmarks/reference_models.py --device cuda --json out/reference_h100.json \\
      --ours out/bench_h100.json
  python benchmarks/reference_models.py --device cpu --size 2048x2048 --repeat 1 --crops 32
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

DETECTOR = {
    "architecture": "torchvision FCOS, ResNeXt-101 32x8d FPN (layers 1-4 + max-pool level)",
    "backbone": "resnext101_32x8d",
    "num_classes": 2,
    "patch_size": 1024,
    "overlap": 0.4,
    "batch_size": 8,
    "score_thresh": 0.2,
    "nms_thresh_patch": 0.6,
    "nms_thresh_roi": 0.3,
    "detections_per_img": 300,
    "topk_candidates": 1000,
}
CLASSIFIER = {
    "architecture": "timm efficientnetv2_m",
    "model_name": "efficientnetv2_m",
    "num_classes": 2,
    "input_size": 224,
    "crop_size": 128,
    "batch_size": 64,
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MissingLibraries(RuntimeError):
    pass


def require(*names: str) -> list:
    """Import ``names`` or raise ``MissingLibraries`` naming every one that is missing."""
    modules, missing = [], []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except Exception as exc:  # ImportError, or torchvision's operator errors beside a foreign torch
            missing.append(f"{name} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
    if missing:
        raise MissingLibraries(
            "the reference models need " + ", ".join(names) + "; not importable here: " + "; ".join(missing)
            + ". Run this script where torch, torchvision and timm are installed (the GPU machine), or "
            "install them in a separate environment (pip install torch torchvision timm numpy scipy)."
        )
    return modules


def resolve_device(torch, requested: str):
    if requested == "cuda" and not torch.cuda.is_available():
        raise MissingLibraries("device 'cuda' requested but torch sees no CUDA device")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(requested)


def synchronise(torch, device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- Track 1 reference


def build_reference_detector(torch, torchvision):
    """FCOS with a randomly initialised ResNeXt-101 32x8d FPN backbone, in eval mode."""
    from torchvision.models import resnet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.models.detection.fcos import FCOS
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    returned_layers = [1, 2, 3, 4]
    backbone = _resnet_fpn_extractor(
        resnet.__dict__[DETECTOR["backbone"]](weights=None),
        trainable_layers=5,
        returned_layers=returned_layers,
        extra_blocks=LastLevelMaxPool(),
    )
    sizes = ((8,), (16,), (32,), (64,), (128,))
    anchors = AnchorGenerator(tuple([sizes[0]] + [sizes[i] for i in returned_layers]), ((1.0,),) * 5)
    model = FCOS(
        backbone,
        DETECTOR["num_classes"],
        anchor_generator=anchors,
        min_size=DETECTOR["patch_size"],
        max_size=DETECTOR["patch_size"],
        score_thresh=DETECTOR["score_thresh"],
        nms_thresh=DETECTOR["nms_thresh_patch"],
        detections_per_img=DETECTOR["detections_per_img"],
        topk_candidates=DETECTOR["topk_candidates"],
    )
    return model.eval()


def reference_patch_origins(width: int, height: int, patch: int, overlap: float) -> list[tuple[int, int]]:
    """Patch origins (x, y) as the reference container computes them: starts every
    ``int(patch * (1 - overlap))`` px, each clamped so the patch ends at the border (this can
    repeat the last patch of an axis; the reference runs it twice, so do we)."""
    stride = int(patch * (1 - overlap))
    return [(min(x, width - patch), min(y, height - patch))
            for y in range(0, height, stride) for x in range(0, width, stride)]


def detect_roi(torch, torchvision, model, image: np.ndarray, device, max_patches: int | None = None) -> dict:
    """The reference's ROI loop: patches -> float tensors /255 -> FCOS in batches -> boxes shifted
    to ROI coordinates -> class-wise NMS over the ROI -> host. Returns counts."""
    h, w = image.shape[:2]
    p = DETECTOR["patch_size"]
    origins = reference_patch_origins(w, h, p, DETECTOR["overlap"])[:max_patches]
    boxes, scores, labels = [], [], []
    with torch.inference_mode():
        for start in range(0, len(origins), DETECTOR["batch_size"]):
            chunk = origins[start : start + DETECTOR["batch_size"]]
            batch = [torch.from_numpy(image[y : y + p, x : x + p] / 255.0).permute(2, 0, 1).float().to(device)
                     for x, y in chunk]
            for (x, y), pred in zip(chunk, model(batch)):
                if len(pred["boxes"]):
                    boxes.append(pred["boxes"] + torch.tensor([x, y, x, y], device=device, dtype=pred["boxes"].dtype))
                    scores.append(pred["scores"])
                    labels.append(pred["labels"])
        kept = []
        if boxes:
            b, s, lab = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
            for label in lab.unique():
                m = lab == label
                keep = torchvision.ops.nms(b[m], s[m], DETECTOR["nms_thresh_roi"])
                kept.append((b[m][keep].cpu().numpy(), s[m][keep].cpu().numpy()))
    synchronise(torch, device)
    return {"patches": len(origins), "boxes": sum(len(k[0]) for k in kept)}


def time_reference_detector(torch, torchvision, image: np.ndarray, device, repeat: int,
                            max_patches: int | None) -> dict:
    model = build_reference_detector(torch, torchvision).to(device)
    p = DETECTOR["patch_size"]
    warm = [torch.rand(3, p, p, device=device) for _ in range(DETECTOR["batch_size"] if device.type == "cuda" else 1)]
    with torch.inference_mode():
        model(warm)  # kernel selection and allocations out of the timing
    synchronise(torch, device)
    total = len(reference_patch_origins(image.shape[1], image.shape[0], p, DETECTOR["overlap"]))
    runs, counts = [], {}
    for _ in range(repeat):
        start = time.perf_counter()
        counts = detect_roi(torch, torchvision, model, image, device, max_patches)
        runs.append(time.perf_counter() - start)
    seconds = statistics.median(runs)
    complete = counts["patches"] == total
    megapixels = image.shape[0] * image.shape[1] / 1e6
    return {
        **DETECTOR,
        "parameters": sum(t.numel() for t in model.parameters()),
        "patches_per_roi": total,
        "patches_timed": counts["patches"],
        "boxes_after_nms": counts["boxes"],
        "runs": runs,
        # Only a run over every patch is a measured ROI time; a partial one is extrapolated.
        "seconds_per_roi": seconds if complete else None,
        "seconds_per_roi_extrapolated": None if complete else seconds * total / counts["patches"],
        "patches_per_s": counts["patches"] / seconds,
        "mpx_per_s": megapixels / seconds if complete else None,
    }


# --------------------------------------------------------------------------- Track 2 reference


def build_reference_classifier(timm):
    return timm.create_model(CLASSIFIER["model_name"], pretrained=False, num_classes=CLASSIFIER["num_classes"]).eval()


def classify_crops(torch, model, crops: np.ndarray, device, batch_size: int) -> float:
    """Crops/s of the reference classifier: uint8 crops -> float -> 224 px bilinear -> ImageNet
    normalisation -> softmax -> P(class 1) on the host, ``batch_size`` crops per forward pass."""
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    size = CLASSIFIER["input_size"]
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(crops), batch_size):
            x = torch.from_numpy(crops[i : i + batch_size]).to(device).permute(0, 3, 1, 2).float() / 255.0
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            p = torch.softmax(model((x - mean) / std), dim=1)[:, 1]
            p.cpu().numpy()  # the reference reads every result back (one .item() per crop)
    synchronise(torch, device)
    return len(crops) / (time.perf_counter() - start)


def time_reference_classifier(torch, timm, crops: np.ndarray, device, single_crops: int) -> dict:
    model = build_reference_classifier(timm).to(device)
    warm = crops[: CLASSIFIER["batch_size"]]
    classify_crops(torch, model, warm, device, CLASSIFIER["batch_size"])
    classify_crops(torch, model, warm[:2], device, 1)
    return {
        **CLASSIFIER,
        "parameters": sum(t.numel() for t in model.parameters()),
        "crops_per_s_single": classify_crops(torch, model, crops[:single_crops], device, 1),
        "crops_single_measured": min(single_crops, len(crops)),
        "crops_per_s_batched": classify_crops(torch, model, crops, device, CLASSIFIER["batch_size"]),
        "crops_batched_measured": len(crops),
    }


# --------------------------------------------------------------------------- comparison and CLI


def compare_with_ours(reference: dict, ours_path: Path) -> dict:
    """Ratios of our figures (benchmark.py's JSON, same ROI size, best batch size) to the reference's."""
    ours = json.loads(Path(ours_path).read_text())
    size = reference["size"]
    same = [r for r in ours["results"] if "error" not in r and r["precision"] == "fp32"
            and (r["size"]["width"], r["size"]["height"]) == (size["width"], size["height"])]
    if not same:
        return {"error": f"no fp32 result for {size['width']}x{size['height']} in {ours_path}"}
    best = min(same, key=lambda r: r["seconds"]["end_to_end"])
    stages = best["seconds"]["stages"]
    detection_s = sum(stages[k] for k in ("tiling", "inference", "stitching", "postprocessing"))
    out = {"ours": str(ours_path), "our_provider": best["provider"], "our_batch_size": best["batch_size"],
           "same_device_kind": _device_kind(best["provider"]) == reference["device"]}
    det = reference.get("detector")
    if det:
        # a reference ROI time extrapolated from part of the patches gives ratios marked as such
        ref_s, tag = ((det["seconds_per_roi"], "") if det["seconds_per_roi"] is not None
                      else (det["seconds_per_roi_extrapolated"], "_extrapolated"))
        out[f"detector_roi_throughput_ratio_end_to_end{tag}"] = ref_s / best["seconds"]["end_to_end"]
        out[f"detector_roi_throughput_ratio_detection_only{tag}"] = ref_s / detection_s
    cls = reference.get("classifier")
    if cls:
        ours_batched = best["classifier"]["crops_per_s_batched"]
        out["classifier_batched_ratio"] = ours_batched / cls["crops_per_s_batched"]
        out["classifier_batched_ratio_with_our_tta"] = ours_batched / best["classifier"]["pipeline_tta_views"] / cls["crops_per_s_batched"]
        out["classifier_single_ratio"] = best["classifier"]["crops_per_s_single"] / cls["crops_per_s_single"]
    return out


def _device_kind(provider: str) -> str:
    return "cuda" if provider == "CUDAExecutionProvider" else "cpu"


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, got {text!r}") from None
    if w < DETECTOR["patch_size"] or h < DETECTOR["patch_size"]:
        raise argparse.ArgumentTypeError(f"size must be at least {DETECTOR['patch_size']} px each way, got {text!r}")
    return w, h


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--size", type=parse_size, default=(7215, 5412), metavar="WxH", help="ROI size (default 7215x5412)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--models", nargs="+", choices=["detector", "classifier"], default=["detector", "classifier"])
    p.add_argument("--repeat", type=int, default=3, help="timed ROI runs of the detector; the median is reported")
    p.add_argument("--crops", type=int, default=512, help="crops for the batched classifier (default 512)")
    p.add_argument("--single-crops", type=int, default=128, help="crops classified one at a time (default 128)")
    p.add_argument("--max-patches", type=int, default=None,
                   help="time only the first N patches (smoke tests; the ROI time is then extrapolated and said so)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--ours", type=Path, default=None, help="benchmark.py --json output to compare with")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="save the figures to this JSON file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        names = ["torch", "torchvision"] + (["timm"] if "classifier" in args.models else [])
        modules = dict(zip(names, require(*names)))
        torch, torchvision = modules["torch"], modules["torchvision"]
        device = resolve_device(torch, args.device)
    except MissingLibraries as exc:
        print(f"reference_models: {exc}", file=sys.stderr)
        return 3
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from synthetic_roi import synthetic_he_roi

    width, height = args.size
    image = synthetic_he_roi(height, width, seed=0)
    report = {
        "benchmark": "MIDOG 2025 reference architectures, random weights (benchmarks/reference_models.py)",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name] + (sys.argv[1:] if argv is None else argv)),
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "versions": {n: getattr(m, "__version__", "?") for n, m in modules.items()},
        "size": {"width": width, "height": height, "megapixels": width * height / 1e6},
    }
    if "detector" in args.models:
        det = time_reference_detector(torch, torchvision, image, device, args.repeat, args.max_patches)
        report["detector"] = det
        if det["seconds_per_roi"] is not None:
            print(f"reference detector ({det['architecture']}) on {device.type}, {width}x{height}: "
                  f"{det['seconds_per_roi']:.2f} s per ROI (median of {len(det['runs'])}), {det['patches_per_roi']} "
                  f"patches of {det['patch_size']} px, {det['patches_per_s']:.2f} patches/s, {det['mpx_per_s']:.2f} Mpx/s")
        else:
            print(f"reference detector on {device.type}: {det['patches_timed']} of {det['patches_per_roi']} patches "
                  f"timed, {det['patches_per_s']:.3f} patches/s; ROI time EXTRAPOLATED "
                  f"{det['seconds_per_roi_extrapolated']:.1f} s (not a measurement)")
    if "classifier" in args.models:
        rng = np.random.default_rng(0)
        s = CLASSIFIER["crop_size"]
        ys = rng.integers(0, height - s, args.crops)
        xs = rng.integers(0, width - s, args.crops)
        crops = np.stack([image[y : y + s, x : x + s] for y, x in zip(ys, xs)])
        cls = time_reference_classifier(torch, modules["timm"], crops, device, args.single_crops)
        report["classifier"] = cls
        print(f"reference classifier ({cls['architecture']} at {cls['input_size']} px) on {device.type}: "
              f"{cls['crops_per_s_single']:.1f} crops/s one at a time ({cls['crops_single_measured']} crops), "
              f"{cls['crops_per_s_batched']:.1f} crops/s batched by {cls['batch_size']} ({cls['crops_batched_measured']} crops)")
    if args.ours is not None:
        report["comparison"] = cmp = compare_with_ours(report, args.ours)
        for key, value in cmp.items():
            print(f"  {key}: {value:.2f}" if isinstance(value, float) else f"  {key}: {value}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(f".{args.json.name}.tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        tmp.replace(args.json)
        print(f"figures saved to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
