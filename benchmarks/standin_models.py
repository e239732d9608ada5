"""Trivial stand-in models with the shipped weights' exact I/O contract, for timing the non-model work.

``write_standin_weights(shipped_dir, out_dir)`` reads the shipped ``manifest.json`` (and, where the
files are readable, the declared inputs and outputs of the shipped ONNX graphs) at run time and
writes, into ``out_dir``, one tiny ONNX graph per model plus a manifest that is the shipped one with
only ``file``/``sha256``/``parameters`` and the provenance changed. Kept from the shipped manifest:
spacing, the inference plan (tile size and overlap, crop size, classifier views, ...), the
thresholds, and per model the input and output names, ``input_format`` ("float32-nchw" or
"uint8-nhwc"), ``input_size`` and the detector's ``output_stride`` (1, 4, ... any s). The graphs
declare the same input/output element types and shapes as the shipped graphs (copied from them
when they agree with the manifest, else derived from it), so the product loads and feeds them
exactly as it feeds the real models (``inference.load_models``).

What the graphs compute (cheap: a slice, a mean, an affine map; no convolution), calibrated on
``synthetic_roi.py``'s image so that the pipeline does realistic work downstream:

* detector: ``logit = floor + K * (GREEN_CANDIDATE - green)``, ``green`` = the green channel in
  [0, 1] at the centre pixel of each s x s block (s = ``output_stride``; s = 1: every pixel), so
  the output is N x H/s x W/s as the contract says (the real detector max-pools its blocks; one
  strided Slice is far cheaper and finds the same figures). ``K`` puts the manifest's detection
  threshold at ``GREEN_DETECTION``. A low logit on pink tissue and nuclei (below the candidate
  floor), a bump on each very dark mitosis-like figure (about one per 100 x 100 um: a few hundred
  candidates on a MIDOG-sized ROI, not thousands, not zero).
* verifier (when the shipped weights have one): ``logit = thr + K * (GRAY_VERIFIED - mean gray of
  the central 16 x 16 px)``: only large dark figures fill the window, so a fraction of the
  candidates become "mitotic figures" (and are then classified).
* classifier: ``p = sigmoid(thr + K * (GRAY_ATYPICAL - mean gray of the crop))``.

Speed is all these are for: nothing they say about the image means anything.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from training.onnx_contract import FLOAT32_NCHW, UINT8_NHWC  # noqa: E402  (the contract's one place)

OPSET = 17
IR_VERSION = 8

# Levels (0..1) in the synthetic ROI. Green channel: pink tissue ~0.6, nuclei >= ~0.26, the dark
# mitosis-like figures ~0.08 at their centre. Gray (mean RGB): nuclei >= ~0.4, figures ~0.2.
GREEN_CANDIDATE = 0.17  # detector logit = candidate floor at this green level
GREEN_DETECTION = 0.07  # detector logit = detection threshold here (decides when there is no verifier)
GRAY_VERIFIED = 0.36  # verifier logit = verification threshold at this window mean
VERIFIER_WINDOW = 16  # px, central window of the verifier's crop
GRAY_ATYPICAL = 0.76  # classifier P(atypical) = 0.5 (its threshold) at this crop mean
SLOPE = 40.0  # logits per unit of gray (verifier, classifier)


def _const(name: str, value: float):
    from onnx import TensorProto, helper

    return helper.make_node("Constant", [], [name], value=helper.make_tensor(name + "_t", TensorProto.FLOAT, [], [value]))


def _ints(name: str, values: list[int]):
    from onnx import TensorProto, helper

    return helper.make_node("Constant", [], [name],
                            value=helper.make_tensor(name + "_t", TensorProto.INT64, [len(values)], values))


def _declared(shipped_dir: Path, entry: dict) -> tuple[list | None, list | None]:
    """(input dims, output dims) the shipped graph declares for the manifest's names, or None."""
    import onnx

    try:
        model = onnx.load(str(shipped_dir / entry["file"]), load_external_data=False)
    except Exception:  # being replaced, missing, external data: derive from the manifest instead
        return None, None

    def dims(values, name):
        for v in values:
            if v.name == name:
                t = v.type.tensor_type
                return t.elem_type, [d.dim_param or d.dim_value or "dim" for d in t.shape.dim]
        return None

    return dims(model.graph.input, entry.get("input_name", "image")), dims(model.graph.output, entry["output_name"])


def _input_info(shipped_dir: Path, entry: dict, spatial: int | None, notes: list[str], role: str):
    """The graph input: the shipped graph's declaration when it agrees with the manifest's
    input_format, else derived from the manifest (spatial None: dynamic height and width)."""
    from onnx import TensorProto, helper

    fmt = entry.get("input_format", FLOAT32_NCHW)
    elem = TensorProto.UINT8 if fmt == UINT8_NHWC else TensorProto.FLOAT
    h, w = (spatial, spatial) if spatial else ("height", "width")
    derived = ["batch", h, w, 3] if fmt == UINT8_NHWC else ["batch", 3, h, w]
    shipped, _ = _declared(shipped_dir, entry)
    dims = derived
    if shipped is not None:
        channel_axis = 3 if fmt == UINT8_NHWC else 1
        ok = shipped[0] == elem and len(shipped[1]) == 4 and shipped[1][channel_axis] == 3
        if ok:
            dims = shipped[1]
        else:
            declared = f"{TensorProto.DataType.Name(shipped[0])} {shipped[1]}"
            notes.append(f"{role}: the shipped graph declares input {declared}, which disagrees with the manifest's "
                         f"input_format {fmt!r}; the stand-in follows the manifest")
    return helper.make_tensor_value_info(entry.get("input_name", "image"), elem, dims), fmt


def _crop_gray(x: str, fmt: str, nodes: list) -> tuple[str, float]:
    """Nodes computing the mean over everything but the batch of crops ``x`` (N values); returns
    (tensor name, scale that turns it into [0, 1])."""
    from onnx import TensorProto, helper

    scale = 1.0
    if fmt == UINT8_NHWC:
        nodes.append(helper.make_node("Cast", [x], [x + "_f"], to=TensorProto.FLOAT))
        x, scale = x + "_f", 1.0 / 255.0
    nodes.append(helper.make_node("ReduceMean", [x], ["gray"], axes=[1, 2, 3], keepdims=0))
    return "gray", scale


def _affine(src: str, dst: str, offset: float, slope: float, nodes: list) -> None:
    """dst = offset + slope * src."""
    from onnx import helper

    nodes += [_const(dst + "_k", slope), _const(dst + "_b", offset),
              helper.make_node("Mul", [src, dst + "_k"], [dst + "_m"]),
              helper.make_node("Add", [dst + "_m", dst + "_b"], [dst])]


def _model(nodes, name, inp, out):
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, name, [inp], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model


def detector_graph(shipped_dir: Path, entry: dict, floor: float, detection: float, notes: list[str]):
    """logit = floor + K * (GREEN_CANDIDATE - green) on the green channel, one pixel per s x s
    block (its centre; s = output_stride): one strided Slice, no pass over the full tile, so that
    the stand-in costs almost nothing (a channel mean of the full tile costs ~13 ms per batch of
    8 tiles in ONNX Runtime here, more than the stitching)."""
    from onnx import TensorProto, helper

    inp, fmt = _input_info(shipped_dir, entry, None, notes, "detector")
    s = int(entry.get("output_stride", 1))
    out_name = entry["output_name"]
    big = 2**62
    o = s // 2  # the centre pixel of each s x s block
    if fmt == UINT8_NHWC:  # N x H x W x 3 -> N x H/s x W/s x 1
        starts, ends, axes, steps, channel_axis = [o, o, 1], [big, big, 2], [1, 2, 3], [s, s, 1], 3
    else:  # N x 3 x H x W -> N x 1 x H/s x W/s
        starts, ends, axes, steps, channel_axis = [1, o, o], [2, big, big], [1, 2, 3], [1, s, s], 1
    nodes: list = [_ints("starts", starts), _ints("ends", ends), _ints("axes", axes), _ints("steps", steps),
                   helper.make_node("Slice", [inp.name, "starts", "ends", "axes", "steps"], ["green"])]
    green, scale = "green", 1.0
    if fmt == UINT8_NHWC:
        nodes.append(helper.make_node("Cast", ["green"], ["green_f"], to=TensorProto.FLOAT))
        green, scale = "green_f", 1.0 / 255.0
    k = (detection - floor) / (GREEN_CANDIDATE - GREEN_DETECTION)  # logits per unit of green
    _affine(green, "logit_c", floor + k * GREEN_CANDIDATE, -k * scale, nodes)
    nodes += [_ints("channel_axis", [channel_axis]),
              helper.make_node("Squeeze", ["logit_c", "channel_axis"], [out_name])]
    _, shipped_out = _declared(shipped_dir, entry)
    out_dims = shipped_out[1] if shipped_out and len(shipped_out[1]) == 3 else \
        ["batch", "height" if s == 1 else f"height_div{s}", "width" if s == 1 else f"width_div{s}"]
    out = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_dims)
    return _model(nodes, "standin_detector", inp, out)


def crop_graph(shipped_dir: Path, entry: dict, role: str, offset: float, notes: list[str],
               window: int | None = None, probability: bool = False):
    """Verifier (logit of the central window's gray) or classifier (sigmoid of the crop's gray)."""
    from onnx import TensorProto, helper

    size = int(entry["input_size"])
    inp, fmt = _input_info(shipped_dir, entry, size, notes, role)
    nodes: list = []
    x = inp.name
    if window is not None and window < size:
        c0, c1 = size // 2 - window // 2, size // 2 - window // 2 + window
        axes = [1, 2] if fmt == UINT8_NHWC else [2, 3]
        nodes += [_ints("starts", [c0, c0]), _ints("ends", [c1, c1]), _ints("axes", axes),
                  helper.make_node("Slice", [x, "starts", "ends", "axes"], ["centre"])]
        x = "centre"
    gray, scale = _crop_gray(x, fmt, nodes)
    out_name = entry["output_name"]
    gray_at_threshold = GRAY_ATYPICAL if probability else GRAY_VERIFIED
    target = "z" if probability else out_name
    _affine(gray, target, offset + SLOPE * gray_at_threshold, -SLOPE * scale, nodes)
    if probability:
        nodes.append(helper.make_node("Sigmoid", ["z"], [out_name]))
    _, shipped_out = _declared(shipped_dir, entry)
    out_dims = shipped_out[1] if shipped_out and len(shipped_out[1]) == 1 else ["batch"]
    out = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_dims)
    return _model(nodes, f"standin_{role}", inp, out)


def write_standin_weights(shipped_dir: Path, out_dir: Path) -> dict:
    """Write stand-in models and their manifest into ``out_dir``; returns a description of the
    contract they follow (for the benchmark's report)."""
    import onnx

    from mitosis_analysis.manifest import Manifest, sha256_file

    shipped_dir, out_dir = Path(shipped_dir), Path(out_dir)
    Manifest.load(shipped_dir)  # the shipped manifest must be valid (a clear InputError if not)
    manifest = json.loads((shipped_dir / "manifest.json").read_text())
    thresholds = manifest["thresholds"]
    notes: list[str] = []
    models = {"detector": detector_graph(shipped_dir, manifest["detector"], thresholds["candidate_floor_logit"],
                                         thresholds["detection_logit"], notes)}
    if manifest.get("verifier"):
        models["verifier"] = crop_graph(shipped_dir, manifest["verifier"], "verifier",
                                        thresholds["verification_logit"], notes, window=VERIFIER_WINDOW)
    # the classifier outputs a probability: the pipeline takes its logit, judged against atypical_logit
    models["classifier"] = crop_graph(shipped_dir, manifest["classifier"], "classifier",
                                      thresholds["atypical_logit"], notes, probability=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    contract = {}
    for role, model in models.items():
        entry = manifest[role]
        file = f"standin_{role}.onnx"
        onnx.save(model, str(out_dir / file))
        entry.update(file=file, sha256=sha256_file(out_dir / file), parameters=0, opset=OPSET)
        io = model.graph
        contract[role] = {
            "input": {"name": io.input[0].name, "elem_type": onnx.TensorProto.DataType.Name(io.input[0].type.tensor_type.elem_type),
                      "dims": [d.dim_param or d.dim_value for d in io.input[0].type.tensor_type.shape.dim]},
            "output": {"name": io.output[0].name,
                       "dims": [d.dim_param or d.dim_value for d in io.output[0].type.tensor_type.shape.dim]},
            "input_format": entry.get("input_format", FLOAT32_NCHW),
            "input_size": entry["input_size"],
            **({"output_stride": entry.get("output_stride", 1)} if role == "detector" else {}),
            "nodes": [n.op_type for n in io.node if n.op_type != "Constant"],
        }
    manifest["provenance"] = {
        "trained": False,
        "command": "benchmarks/standin_models.py (benchmark.py --stand-in)",
        "data": "none",
        "notes": f"trivial stand-ins with the I/O contract of {shipped_dir / 'manifest.json'}; speed only",
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    Manifest.load(out_dir)  # what the product will read
    return {"shipped_manifest": str(shipped_dir / "manifest.json"), "plan": manifest["plan"],
            "thresholds": thresholds, "models": contract, "notes": notes}


if __name__ == "__main__":  # python benchmarks/standin_models.py OUT_DIR [SHIPPED_DIR]
    out = Path(sys.argv[1])
    shipped = Path(sys.argv[2]) if len(sys.argv) > 2 else REPO_ROOT / "weights"
    print(json.dumps(write_standin_weights(shipped, out), indent=2))
