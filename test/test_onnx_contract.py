"""The models' run-time I/O contract (training/onnx_contract.py): uint8 NHWC input and the
detector's pooled output, on a small exported torch net; the manifest's stride rule; the upgrade
of float32 NCHW weights (training/upgrade_weights.py --io-contract); the shipped weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mitosis_analysis.inference import to_model_input
from mitosis_analysis.manifest import Manifest, sha256_file
from training.onnx_contract import (
    DETECTOR_OUTPUT_STRIDE,
    UINT8_NHWC,
    block_max,
    contract_parity,
    with_output_stride,
    with_uint8_nhwc_input,
)

ROOT = Path(__file__).resolve().parents[1]


def _copy(model):
    return type(model).FromString(model.SerializeToString())


def _session(model):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def small_map_net(tmp_path_factory):
    """A random conv net, float32 N x 3 x H x W in [0, 1] -> N x H x W, exported as the exporter does
    (dynamic batch and spatial axes); the torch module and the ONNX model."""
    import onnx

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 3, padding=1),
                              torch.nn.Flatten(0, 1)).eval()
    path = tmp_path_factory.mktemp("contract") / "net.onnx"
    with torch.no_grad():
        torch.onnx.export(net, (torch.rand(1, 3, 32, 32),), str(path), dynamo=False, input_names=["image"],
                          output_names=["map"], opset_version=17,
                          dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                                        "map": {0: "batch", 1: "height", 2: "width"}})
    return net, onnx.load(str(path))


def test_uint8_nhwc_input_gives_the_float_graph_on_the_same_pixels(small_map_net):
    net, model = small_map_net
    float_session = _session(model)
    converted = with_uint8_nhwc_input(_copy(model))
    session = _session(converted)
    assert session.get_inputs()[0].type == "tensor(uint8)"
    pixels = np.random.default_rng(1).integers(0, 256, (2, 40, 56, 3), dtype=np.uint8)
    (got,) = session.run(None, {"image": pixels})
    (old,) = float_session.run(None, {"image": to_model_input(pixels)})
    with torch.no_grad():
        expected = net(torch.from_numpy(to_model_input(pixels))).numpy()
    assert got.shape == (2, 40, 56)
    assert np.abs(got - old).max() <= 1e-6 and np.abs(got - expected).max() <= 1e-5
    with pytest.raises(ValueError, match="not 3"):  # a second rewrite is refused
        with_uint8_nhwc_input(converted)


def test_output_stride_gives_the_block_maxima(small_map_net):
    net, model = small_map_net
    pooled = with_output_stride(with_uint8_nhwc_input(_copy(model)), "map", 4)
    session = _session(pooled)
    for shape in [(2, 36, 44), (1, 30, 42)]:  # the second is not a multiple of 4: floor, as block_max
        pixels = np.random.default_rng(shape[1]).integers(0, 256, (*shape, 3), dtype=np.uint8)
        (got,) = session.run(None, {"image": pixels})
        with torch.no_grad():
            full = net(torch.from_numpy(to_model_input(pixels))).numpy()
        assert got.shape == (shape[0], shape[1] // 4, shape[2] // 4)
        assert np.abs(got - block_max(full, 4)).max() <= 1e-5

    def reference(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(x)).numpy()

    assert contract_parity(session, reference, [(1, 32, 32), (3, 64, 48)], stride=4) <= 1e-5
    assert contract_parity(session, lambda x: reference(x) + 1, [(1, 32, 32)], stride=4) == pytest.approx(1, abs=1e-5)
    with pytest.raises(ValueError, match="shape"):
        contract_parity(session, reference, [(1, 32, 32)], stride=1)


def test_block_max():
    maps = np.arange(2 * 5 * 9, dtype=np.float32).reshape(2, 5, 9)
    assert block_max(maps, 2).shape == (2, 2, 4)
    assert block_max(maps, 2)[1, 1, 3] == maps[1, 3, 7]
    np.testing.assert_array_equal(block_max(maps, 1), maps)


def test_the_manifest_refuses_a_tile_size_not_a_multiple_of_the_output_stride():
    from pydantic import ValidationError

    shipped = json.loads((ROOT / "weights" / "manifest.json").read_text())
    shipped["detector"]["output_stride"] = 4
    shipped["plan"]["tile_size"] = 510
    with pytest.raises(ValidationError, match="not a multiple of the detector's output_stride 4"):
        Manifest.model_validate(shipped)
    shipped["plan"]["tile_size"] = 384
    assert Manifest.model_validate(shipped).plan.tile_size == 384


def test_the_shipped_weights_take_uint8_and_pool_the_detector_map():
    import onnxruntime as ort

    weights = ROOT / "weights"
    manifest = Manifest.load(weights)
    entries = {"detector": manifest.detector, "classifier": manifest.classifier, "verifier": manifest.verifier}
    for role, entry in entries.items():
        assert entry is not None and entry.input_format == UINT8_NHWC, role
        assert sha256_file(weights / entry.file) == entry.sha256, role
        session = ort.InferenceSession(str(weights / entry.file), providers=["CPUExecutionProvider"])
        assert session.get_inputs()[0].type == "tensor(uint8)", role
    assert manifest.detector.output_stride == DETECTOR_OUTPUT_STRIDE
    assert manifest.classifier.output_stride == manifest.verifier.output_stride == 1
    assert manifest.plan.tile_size % DETECTOR_OUTPUT_STRIDE == 0
    assert "--io-contract" in manifest.provenance.notes


def test_upgrade_io_contract_converts_float_weights_once(tmp_path):
    from synthetic_models import write_weights
    from training import upgrade_weights
    from training.export import ExportError

    weights = write_weights(tmp_path / "weights", verification=0.5)
    before = Manifest.load(weights)
    manifest, diffs = upgrade_weights.upgrade_io_contract(weights)
    assert set(diffs) == {"detector", "classifier", "verifier"} and max(diffs.values()) <= 1e-5
    assert Manifest.load(weights) == manifest
    assert {manifest.detector.input_format, manifest.classifier.input_format, manifest.verifier.input_format} == {
        UINT8_NHWC}
    assert manifest.detector.output_stride == DETECTOR_OUTPUT_STRIDE
    assert manifest.detector.sha256 != before.detector.sha256 and manifest.thresholds == before.thresholds
    assert manifest.provenance.notes.endswith(".") and "--io-contract" in manifest.provenance.notes
    with pytest.raises(ExportError, match="nothing to upgrade"):
        upgrade_weights.upgrade_io_contract(weights)
