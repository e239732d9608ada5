"""GPU smoke test, for a GPU CI runner: ``pytest -m gpu test/test_gpu.py``.

Skipped (with the reason) where onnxruntime has no CUDA provider or no GPU answers. Checks that
the CUDA provider is really used, and that its points and probabilities match the CPU's.
"""

import shutil
import subprocess

import numpy as np
import pytest

from conftest import ROOT
from mitosis_analysis.inference import CUDA, load_models
from mitosis_analysis.pipeline import analyse_roi, classify_stack
from mitosis_analysis.readers import RoiImage
from mitosis_analysis.settings import Settings

pytestmark = pytest.mark.gpu


def _cuda_ready() -> str | None:
    import onnxruntime as ort

    if CUDA not in ort.get_available_providers():
        return f"onnxruntime {ort.__version__} has no CUDA provider (install onnxruntime-gpu)"
    if not shutil.which("nvidia-smi") or subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode:
        return "no NVIDIA GPU answers nvidia-smi"
    return None


@pytest.fixture(scope="module")
def both_devices():
    reason = _cuda_ready()
    if reason:
        pytest.skip(reason)
    cpu = load_models(Settings(weights_dir=ROOT / "weights", device="cpu"))
    gpu = load_models(Settings(weights_dir=ROOT / "weights", device="cuda"))
    return cpu, gpu


def test_cuda_provider_is_used(both_devices):
    _, gpu = both_devices
    assert gpu.detector.session.get_providers()[0] == CUDA
    assert gpu.classifier.session.get_providers()[0] == CUDA


def test_gpu_matches_cpu(both_devices):
    cpu, gpu = both_devices
    rng = np.random.default_rng(0)
    # H&E-like texture: pink background with dark blobs, 1500 x 1300 px
    image = np.empty((1300, 1500, 3), np.uint8)
    image[:] = (205, 130, 185)
    yy, xx = np.mgrid[0:1300, 0:1500]
    for cx, cy in rng.uniform(20, 1280, (40, 2)):
        image[(xx - cx) ** 2 + (yy - cy) ** 2 <= rng.uniform(4, 9) ** 2] = rng.integers(20, 90, 3)
    image = np.clip(image.astype(int) + rng.integers(-12, 12, image.shape), 0, 255).astype(np.uint8)
    roi = RoiImage(image, (0.00025, 0.00025), False, ROOT / "synthetic.tif")
    s = Settings(weights_dir=ROOT / "weights")
    a = sorted(analyse_roi(roi, cpu, s), key=lambda c: (c.y, c.x))
    b = sorted(analyse_roi(roi, gpu, s), key=lambda c: (c.y, c.x))
    floor = cpu.manifest.thresholds.candidate_floor_logit
    confident = lambda cs: [c for c in cs if c.score > floor + 0.05]  # away from the floor (logits)
    assert len(confident(a)) == len(confident(b))
    for ca, cb in zip(confident(a), confident(b)):
        assert np.hypot(ca.x - cb.x, ca.y - cb.y) * 0.25 < 1.0  # within 1 um
        assert abs(ca.score - cb.score) < 1e-2  # logits
        # only candidates at or above the detection threshold are classified (atypical_logit None otherwise)
        assert (ca.atypical_logit is None) == (cb.atypical_logit is None)
        if ca.atypical_logit is not None:
            assert abs(ca.atypical_logit - cb.atypical_logit) < 1e-2
    crops = rng.integers(0, 256, (32, 128, 128, 3), dtype=np.uint8)
    np.testing.assert_allclose(classify_stack(crops, cpu, s), classify_stack(crops, gpu, s), atol=1e-2)  # logits
