"""The classifier ensemble: one module (and one exported graph) averaging its members, and the
validation-only choice of its members."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.classifier import ARCH, ENSEMBLE_ARCH, AtypicalClassifier, ClassifierEnsemble, build_classifier
from training import ensemble_classifier as ens
from training import export


def _members(n=3, width=8):
    torch.manual_seed(0)
    return [AtypicalClassifier(width=width).eval() for _ in range(n)]


def test_ensemble_is_the_mean_of_its_members():
    members = _members()
    config = {"members": [{"arch": ARCH, "width": 8} for _ in members]}
    net = build_classifier(arch=ENSEMBLE_ARCH, **config).eval()
    assert isinstance(net, ClassifierEnsemble)
    for i, m in enumerate(members):
        net.members[i].load_state_dict(m.state_dict())
    x = torch.rand(5, 3, 128, 128)
    with torch.no_grad():
        expected = torch.stack([m(x) for m in members]).mean(0)
        got = net(x)
    assert got.shape == (5,)
    torch.testing.assert_close(got, expected)
    # a state_dict round trip through the checkpoint format keeps the members apart
    again = build_classifier(arch=ENSEMBLE_ARCH, **config).eval()
    again.load_state_dict(net.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(again(x), got)


def test_an_empty_or_unknown_ensemble_is_refused():
    with pytest.raises(ValueError, match="at least one member"):
        build_classifier(arch=ENSEMBLE_ARCH, members=[])
    with pytest.raises(ValueError, match="unknown classifier arch"):
        build_classifier(arch="resnet-xxl")


def test_ensemble_exports_with_parity(tmp_path):
    members = _members(2)
    net = build_classifier(arch=ENSEMBLE_ARCH, members=[{"arch": ARCH, "width": 8}] * 2)
    for i, m in enumerate(members):
        net.members[i].load_state_dict(m.state_dict())
    ckpt_dir = tmp_path / "checkpoints"
    ckpt_dir.mkdir()
    torch.save({"arch": ENSEMBLE_ARCH, "config": {"members": [{"arch": ARCH, "width": 8}] * 2},
                "state_dict": net.state_dict(), "threshold": 0.42, "metrics": {}}, ckpt_dir / "classifier.pt")
    weights = tmp_path / "weights"
    assert export.main(["--checkpoints", str(ckpt_dir), "--weights", str(weights)]) == 0
    import onnxruntime as ort

    from mitosis_analysis.inference import to_model_input

    pixels = np.random.default_rng(0).integers(0, 256, (3, 128, 128, 3), dtype=np.uint8)  # the graph takes uint8 NHWC
    (p,) = ort.InferenceSession(str(weights / "classifier.onnx"), providers=["CPUExecutionProvider"]).run(None, {"image": pixels})
    with torch.no_grad():
        expected = net.eval()(torch.from_numpy(to_model_input(pixels))).numpy()
    np.testing.assert_allclose(p, expected, atol=1e-5)


def test_choose_takes_the_best_validation_auroc_within_the_size_limit():
    y = np.array([0, 0, 0, 1, 1, 1], dtype=np.float32)
    p = {
        "good": np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]),   # AUROC 1
        "noisy": np.array([0.1, 0.6, 0.3, 0.5, 0.8, 0.9]),  # AUROC 8/9
        "bad": np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1]),    # AUROC 0
    }
    small = {"good": 10, "noisy": 10, "bad": 10}
    combo, score = ens.choose(p, y, 2, small)
    assert set(combo) == {"good", "noisy"} and score == pytest.approx(1.0)
    # "good" too big to pair with anything: the best admissible pair wins
    big = {"good": export.MAX_ONNX_BYTES // 4, "noisy": 10, "bad": 10}
    combo, _ = ens.choose(p, y, 2, big)
    assert combo == ("bad", "noisy")
    with pytest.raises(SystemExit, match="fit in"):
        ens.choose(p, y, 3, big)
