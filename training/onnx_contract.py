"""The models' run-time I/O contract, applied to an exported ONNX graph (one implementation, used by
``training/export.py``, ``training/export_verifier.py``, ``training/upgrade_weights.py`` and the
tests' synthetic models).

- ``with_uint8_nhwc_input``: the graph takes the tiles and crops as the product holds them, uint8
  N x H x W x 3 RGB, and does the layout change and the scaling to [0, 1] itself (Transpose on the
  bytes, Cast, Mul by float32(1/255): bit-identical to ``inference.to_model_input``). Four times
  fewer bytes cross to the device, and no float copy of each batch is made in Python.
- ``with_output_stride``: the detector's N x H x W mitosis logit is max-pooled over s x s blocks
  in the graph, so the map that is copied back, blended and searched for candidates is s^2 times
  smaller. A max keeps every peak's logit (the thresholds keep their meaning); the candidate's
  position is then refined to sub-block precision by the weighted centroid (``candidates.py``).

``manifest.ModelEntry.input_format`` and ``output_stride`` record what a graph expects and gives.
``with_contract`` applies both; ``contract_parity`` checks a converted graph against the float
NCHW reference (PyTorch at export, the old graph at upgrade) on the same pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from mitosis_analysis.manifest import FLOAT32_NCHW, UINT8_NHWC  # noqa: F401  (re-exported for training)

# What the detector's map is pooled over in the shipped weights and in fresh exports (the plan's
# tile size must be a multiple of it).
DETECTOR_OUTPUT_STRIDE = 4


def _rename_input_uses(graph, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def _rename_output_producer(graph, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new


def _dims(value_info) -> list:
    return [d.dim_param if d.dim_param else d.dim_value for d in value_info.type.tensor_type.shape.dim]


def with_uint8_nhwc_input(model, input_name: str = "image"):
    """``model`` (float32 N x 3 x H x W input in [0, 1] named ``input_name``) -> the same graph
    taking uint8 N x H x W x 3 under the same name. Modifies and returns ``model``."""
    import onnx
    from onnx import TensorProto, helper

    g = model.graph
    (old,) = [i for i in g.input if i.name == input_name]
    n, c, h, w = _dims(old)
    if c != 3:
        raise ValueError(f"input {input_name!r} has {c} channels, not 3 (already NHWC?)")
    inner = f"{input_name}_float_nchw"
    _rename_input_uses(g, input_name, inner)
    prefix = [
        helper.make_node("Transpose", [input_name], [f"{input_name}_u8_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Cast", [f"{input_name}_u8_nchw"], [f"{input_name}_f_nchw"], to=TensorProto.FLOAT),
        helper.make_node("Constant", [], [f"{input_name}_scale"],
                         value=helper.make_tensor("scale", TensorProto.FLOAT, [], [np.float32(1 / 255)])),
        helper.make_node("Mul", [f"{input_name}_f_nchw", f"{input_name}_scale"], [inner]),
    ]
    nodes = prefix + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    g.input.remove(old)
    g.input.insert(0, helper.make_tensor_value_info(input_name, TensorProto.UINT8, [n, h, w, 3]))
    onnx.checker.check_model(model)
    return model


def with_output_stride(model, output_name: str, stride: int):
    """``model`` whose output ``output_name`` is N x H x W -> the same graph giving its s x s block
    maxima, N x H/s x W/s (floor). Modifies and returns ``model``; stride 1 returns it unchanged."""
    import onnx
    from onnx import TensorProto, helper

    if stride == 1:
        return model
    if stride < 1:
        raise ValueError(f"output stride {stride} < 1")
    g = model.graph
    (old,) = [o for o in g.output if o.name == output_name]
    full = f"{output_name}_full"
    _rename_output_producer(g, output_name, full)
    _rename_input_uses(g, output_name, full)
    g.node.extend([
        helper.make_node("Constant", [], [f"{output_name}_axis"],
                         value=helper.make_tensor("axis", TensorProto.INT64, [1], [1])),
        helper.make_node("Unsqueeze", [full, f"{output_name}_axis"], [f"{output_name}_n1hw"]),
        helper.make_node("MaxPool", [f"{output_name}_n1hw"], [f"{output_name}_pooled"],
                         kernel_shape=[stride, stride], strides=[stride, stride]),
        helper.make_node("Squeeze", [f"{output_name}_pooled", f"{output_name}_axis"], [output_name]),
    ])
    n = _dims(old)[0]
    g.output.remove(old)
    g.output.append(helper.make_tensor_value_info(output_name, TensorProto.FLOAT,
                                                  [n, f"height_div{stride}", f"width_div{stride}"]))
    onnx.checker.check_model(model)
    return model


def block_max(maps: np.ndarray, stride: int) -> np.ndarray:
    """N x H x W -> N x H/s x W/s block maxima (floor), what ``with_output_stride`` computes in the
    graph; for parity checks."""
    n, h, w = maps.shape
    hs, ws = h // stride, w // stride
    return maps[:, : hs * stride, : ws * stride].reshape(n, hs, stride, ws, stride).max(axis=(2, 4))


def with_contract(model, output_name: str, stride: int = 1, input_name: str = "image"):
    """Both rewrites: uint8 N x H x W x 3 input, output pooled over ``stride`` (1 for the
    classifier and the verifier, whose output is one value per crop). Modifies and returns ``model``."""
    return with_output_stride(with_uint8_nhwc_input(model, input_name), output_name, stride)


def contract_parity(session, reference: Callable[[np.ndarray], np.ndarray], shapes: Sequence[tuple[int, int, int]],
                    stride: int = 1, seed: int = 0) -> float:
    """Max |``session`` - ``block_max(reference, stride)``| over random uint8 pixels of each
    (batch, height, width) in ``shapes``: ``session`` (an ONNX Runtime session of a converted
    graph) is fed the bytes N x H x W x 3, ``reference`` the same pixels as the product fed the
    float graphs (``inference.to_model_input``: N x 3 x H x W float32, / 255). Stride 1 compares
    the outputs as they are. ValueError when the shapes differ."""
    from mitosis_analysis.inference import to_model_input

    name = session.get_inputs()[0].name
    rng = np.random.default_rng(seed)
    worst = 0.0
    for n, h, w in shapes:
        pixels = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
        expected = np.asarray(reference(to_model_input(pixels)), dtype=np.float32)
        if stride > 1:
            expected = block_max(expected, stride)
        (got,) = session.run(None, {name: pixels})
        if got.shape != expected.shape:
            raise ValueError(f"output shape {got.shape} != reference {expected.shape}")
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst
