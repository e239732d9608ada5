"""Tiny hand-written ONNX models with known behaviour, for exact-coordinate tests.

detector:  mitosis logit = SHARPNESS * (DARK - mean(RGB)) per pixel (P(mitosis) = its sigmoid), so a
           dark disk on a pink background becomes one plateau of maxima centred on the disk.
           Same I/O contract as the real detector (manifest.py: ``mitosis_logit``, N x H x W).
classifier: P(atypical) = mean of the green channel over the crop (so tests can steer it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from mitosis_analysis.decision import logit
from mitosis_analysis.manifest import sha256_file

DARK = 0.3  # mean RGB (0..1) under which a pixel is "mitosis"
SHARPNESS = 40.0
IR_VERSION = 8  # opset 17; readable by every onnxruntime the product supports


def _const(name: str, value: float):
    return helper.make_node("Constant", [], [name], value=helper.make_tensor(name + "_t", TensorProto.FLOAT, [], [value]))


def detector_model() -> onnx.ModelProto:
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["gray"], axes=[1], keepdims=0),
        _const("dark", DARK),
        _const("k", SHARPNESS),
        helper.make_node("Sub", ["dark", "gray"], ["d"]),
        helper.make_node("Mul", ["d", "k"], ["mitosis_logit"]),
    ]
    graph = helper.make_graph(
        nodes, "synthetic_detector",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("mitosis_logit", TensorProto.FLOAT, ["N", "H", "W"])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)


def classifier_model() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Constant", [], ["green_idx"], value=helper.make_tensor("gi", TensorProto.INT64, [1], [1])),
        helper.make_node("Gather", ["image", "green_idx"], ["green"], axis=1),
        helper.make_node("ReduceMean", ["green"], ["p_atypical"], axes=[1, 2, 3], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "synthetic_classifier",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 128, 128])],
        [helper.make_tensor_value_info("p_atypical", TensorProto.FLOAT, ["N"])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)


VERIFIER_SIZE = 32
VERIFIER_DARK = 0.2  # mean RGB of the central 8 x 8 px under which the verifier says "mitosis"


def verifier_model() -> onnx.ModelProto:
    """logit = SHARPNESS * (VERIFIER_DARK - mean RGB of the crop's central 8 x 8 px)."""
    c0, c1 = VERIFIER_SIZE // 2 - 4, VERIFIER_SIZE // 2 + 4
    nodes = [
        helper.make_node("Constant", [], ["starts"], value=helper.make_tensor("s", TensorProto.INT64, [2], [c0, c0])),
        helper.make_node("Constant", [], ["ends"], value=helper.make_tensor("e", TensorProto.INT64, [2], [c1, c1])),
        helper.make_node("Constant", [], ["axes"], value=helper.make_tensor("a", TensorProto.INT64, [2], [2, 3])),
        helper.make_node("Slice", ["image", "starts", "ends", "axes"], ["centre"]),
        helper.make_node("ReduceMean", ["centre"], ["gray"], axes=[1, 2, 3], keepdims=0),
        _const("vdark", VERIFIER_DARK),
        _const("vk", SHARPNESS),
        helper.make_node("Sub", ["vdark", "gray"], ["vd"]),
        helper.make_node("Mul", ["vd", "vk"], ["logit"]),
    ]
    graph = helper.make_graph(
        nodes, "synthetic_verifier",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, VERIFIER_SIZE, VERIFIER_SIZE])],
        [helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["N"])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)


def write_weights(folder: Path, detection: float = 0.5, atypical: float = 0.5, floor: float = 0.1,
                  verification: float | None = None, input_format: str = "float32-nchw", output_stride: int = 1,
                  **plan) -> Path:
    """Write the models and a valid manifest into ``folder``; returns ``folder``. The thresholds
    are given as probabilities (the manifest stores their logits); ``verification`` adds the
    synthetic stage-2 verifier with that threshold; ``input_format`` and ``output_stride`` give
    the graphs the I/O contract of ``training/onnx_contract.py`` (as the shipped weights have);
    ``plan`` overrides fields of the inference plan."""
    from training.onnx_contract import UINT8_NHWC, with_output_stride, with_uint8_nhwc_input

    folder.mkdir(parents=True, exist_ok=True)
    entries = {}
    models = [("detector", detector_model(), "mitosis_logit", 512), ("classifier", classifier_model(), "p_atypical", 128)]
    if verification is not None:
        models.append(("verifier", verifier_model(), "logit", VERIFIER_SIZE))
    for role, model, out, size in models:
        path = folder / f"{role}.onnx"
        if input_format == UINT8_NHWC:
            model = with_uint8_nhwc_input(model)
        if role == "detector":
            model = with_output_stride(model, out, output_stride)
        onnx.save(model, path)
        entries[role] = {
            "file": path.name, "sha256": sha256_file(path), "output_name": out, "input_size": size,
            "normalisation": {"mean": [0, 0, 0], "std": [1, 1, 1]}, "input_format": input_format,
        }
    entries["detector"]["classes"] = ["background", "normal nucleus", "mitosis", "hard negative"]
    entries["detector"]["output_stride"] = output_stride
    manifest = {
        "format_version": 2, "spacing_mm": 0.00025, **entries, "plan": plan,
        "thresholds": {"detection_logit": float(logit(detection)), "candidate_floor_logit": float(logit(floor)),
                       "atypical_logit": float(logit(atypical)),
                       "verification_logit": None if verification is None else float(logit(verification))},
        "provenance": {"trained": False, "command": "test/synthetic_models.py", "data": "none"},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


# ----------------------------------------------------------------------------- synthetic images

BACKGROUND = (235, 230, 235)  # glass
TISSUE = (200, 120, 180)  # eosin-pink, mean 0.65: far above DARK
NUCLEUS = (30, 20, 60)  # mean 0.14: far below DARK


def roi_with_figures(height: int, width: int, centres_xy, radius: float = 6.0, nucleus=NUCLEUS) -> np.ndarray:
    """Pink tissue with dark disks of ``radius`` px centred on each (x, y)."""
    image = np.empty((height, width, 3), np.uint8)
    image[:] = TISSUE
    yy, xx = np.mgrid[0:height, 0:width]
    for cx, cy in centres_xy:
        image[(xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2] = nucleus
    return image
