"""export.sh's Python side (training/export.py) and the model registry (model/)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import model
from mitosis_analysis.inference import to_model_input
from mitosis_analysis.manifest import Manifest, sha256_file
from model.unet import LightUNet, macs_per_pixel
from training import export
from training.onnx_contract import DETECTOR_OUTPUT_STRIDE, UINT8_NHWC, block_max


def test_detector_shapes_and_cost():
    net = model.build("detector").eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, 64, 96))
    assert out.shape == (2, 4, 64, 96)
    # the CPU budget of the product: about 5-6k multiply-adds per input pixel
    assert 4000 < macs_per_pixel(net, 128) < 6000


def test_registry_rejects_unknown_kinds_and_archs():
    with pytest.raises(ValueError):
        model.build("segmenter")
    with pytest.raises(ValueError):
        model.build("detector", arch="resnet")


def test_export_wrappers_give_the_product_contract():
    net = model.build("detector")
    det = model.for_export("detector", net)
    cls = model.for_export("classifier", model.build("classifier"))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        z = det(x)
        p = torch.softmax(net(x).double(), dim=1)[:, 2]
        q = cls(torch.rand(3, 3, 128, 128))
    assert z.shape == (1, 64, 64)  # the mitosis logit: log-odds of mitosis against the other classes
    torch.testing.assert_close(z.double(), torch.log(p / (1 - p)), atol=1e-4, rtol=0)
    assert q.shape == (3,) and bool(((q >= 0) & (q <= 1)).all())


def test_legacy_softmax_detector_is_converted_to_the_logit_contract(tmp_path):
    """training.upgrade_weights' graph surgery gives the logit of the old softmax output."""
    import onnx
    import onnxruntime as ort

    net = model.build("detector").eval()
    path = tmp_path / "legacy.onnx"
    with torch.no_grad():
        torch.onnx.export(torch.nn.Sequential(net, torch.nn.Softmax(dim=1)), (torch.rand(1, 3, 64, 64),), str(path),
                          dynamo=False, input_names=["image"], output_names=["probabilities"],
                          dynamic_axes={"image": {0: "batch", 2: "h", 3: "w"}}, opset_version=17)
    x = np.random.default_rng(0).random((2, 3, 64, 96), dtype=np.float32)
    (p,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    converted = export.softmax_detector_to_logit(onnx.load(str(path)))
    session = ort.InferenceSession(converted.SerializeToString(), providers=["CPUExecutionProvider"])
    (z,) = session.run(["mitosis_logit"], {"image": x})
    assert z.shape == (2, 64, 96)
    pm = p[:, 2].astype(np.float64)
    np.testing.assert_allclose(z, np.log(pm / (1 - pm)), atol=1e-3)


@pytest.fixture()
def small_detector_checkpoint(tmp_path):
    torch.manual_seed(1)
    net = LightUNet(channels=(8, 16))
    ckpt_dir = tmp_path / "checkpoints"
    ckpt_dir.mkdir()
    torch.save({"arch": "light_unet", "config": {"channels": [8, 16]}, "state_dict": net.state_dict(),
                "threshold": 0.37, "metrics": {"validation": {"recall": 0.5}}, "command": "train it",
                "data": "test data"}, ckpt_dir / "detector.pt")
    return ckpt_dir


def test_export_random_init_writes_a_valid_manifest(tmp_path):
    weights = tmp_path / "weights"
    assert export.main(["--checkpoints", str(tmp_path / "none"), "--weights", str(weights)]) == 0
    manifest = Manifest.load(weights)
    assert manifest.provenance.trained is False
    assert manifest.spacing_mm == 0.00025
    for entry in (manifest.detector, manifest.classifier):
        assert sha256_file(weights / entry.file) == entry.sha256
        assert (weights / entry.file).stat().st_size < export.MAX_ONNX_BYTES
    assert manifest.provenance.metrics["detector"]["onnx_vs_pytorch_max_abs_diff"] <= 1e-4
    # the run-time I/O contract: uint8 NHWC input, the detector's map pooled over 4 x 4 blocks
    assert manifest.detector.input_format == manifest.classifier.input_format == UINT8_NHWC
    assert (manifest.detector.output_stride, manifest.classifier.output_stride) == (DETECTOR_OUTPUT_STRIDE, 1)

    import onnxruntime as ort

    rng = np.random.default_rng(0)
    session = ort.InferenceSession(str(weights / "detector.onnx"), providers=["CPUExecutionProvider"])
    (z,) = session.run(None, {"image": rng.integers(0, 256, (3, 96, 160, 3), dtype=np.uint8)})
    assert z.shape == (3, 96 // 4, 160 // 4)  # dynamic batch and spatial axes
    assert np.isfinite(z).all()
    session = ort.InferenceSession(str(weights / "classifier.onnx"), providers=["CPUExecutionProvider"])
    (q,) = session.run(None, {"image": rng.integers(0, 256, (7, 128, 128, 3), dtype=np.uint8)})
    assert q.shape == (7,)


def test_export_records_the_checkpoint(tmp_path, small_detector_checkpoint):
    weights = tmp_path / "weights"
    assert export.main(["--checkpoints", str(small_detector_checkpoint), "--weights", str(weights)]) == 0
    manifest = json.loads((weights / "manifest.json").read_text())
    assert manifest["thresholds"]["detection_logit"] == pytest.approx(np.log(0.37 / 0.63))  # a probability, as a logit
    assert manifest["format_version"] == 2 and manifest["plan"]["tile_size"] == 512
    det = manifest["provenance"]["metrics"]["detector"]
    assert det["trained"] is True and det["config"] == {"channels": [8, 16]}
    assert det["metrics"] == {"validation": {"recall": 0.5}}
    assert manifest["provenance"]["trained"] is False  # the classifier is still untrained
    assert "train it" in manifest["provenance"]["command"]
    # the exported graph is the checkpoint's network (not a fresh one)
    net = LightUNet(channels=(8, 16)).eval()
    net.load_state_dict(torch.load(small_detector_checkpoint / "detector.pt")["state_dict"])
    pixels = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    import onnxruntime as ort

    session = ort.InferenceSession(str(weights / "detector.onnx"), providers=["CPUExecutionProvider"])
    (p,) = session.run(None, {"image": pixels})
    with torch.no_grad():
        expected = model.mitosis_logit(net(torch.from_numpy(to_model_input(pixels)))).numpy()
    np.testing.assert_allclose(p, block_max(expected, DETECTOR_OUTPUT_STRIDE), atol=1e-5)


def test_export_fails_above_the_tolerance_and_leaves_no_manifest(tmp_path):
    weights = tmp_path / "weights"
    with pytest.raises(export.ExportError, match="differs from PyTorch"):
        export.main(["--checkpoints", str(tmp_path / "none"), "--weights", str(weights), "--tolerance", "-1"])
    assert not (weights / "manifest.json").exists() and not (weights / "detector.onnx").exists()


def test_bad_checkpoint_is_refused(tmp_path):
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    torch.save({"state_dict": {}}, ckpt / "detector.pt")
    with pytest.raises(export.ExportError, match="lacks keys"):
        export.main(["--checkpoints", str(ckpt), "--weights", str(tmp_path / "w")])
