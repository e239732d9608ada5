"""ONNX Runtime sessions for the two models: provider choice, weight verification, batching.

``load_models`` reads ``weights/manifest.json``, refuses files whose sha256 differs, and opens
one session per model on the CUDA provider when a GPU is usable (else the CPU), saying which.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .log import log, warn
from .manifest import Manifest, ModelEntry
from .settings import Settings

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def to_model_input(batch: np.ndarray) -> np.ndarray:
    """N x H x W x 3 uint8 -> N x 3 x H x W float32 in [0, 1] (the models' input contract)."""
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32) * np.float32(1 / 255)


def select_providers(device: str) -> list[str]:
    """Providers to ask ONNX Runtime for: CUDA first when requested or available, CPU always."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return [CPU]
    if CUDA in available:
        if hasattr(ort, "preload_dlls"):
            try:  # CUDA/cuDNN libraries installed from PyPI wheels are found this way
                ort.preload_dlls()
            except Exception as exc:  # pragma: no cover - depends on the machine
                warn(f"could not preload CUDA libraries: {exc}")
        return [CUDA, CPU]
    if device == "cuda":
        raise InputError(f"device 'cuda' requested but this onnxruntime has no CUDA provider (available: {available})")
    return [CPU]


class OnnxModel:
    """One ONNX Runtime session with a single input and a single output of interest."""

    def __init__(self, path: Path, entry: ModelEntry, providers: list[str]):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:
            raise InputError(f"cannot load model {path.name}: {str(exc).splitlines()[0]}") from None
        self.input_name = entry.input_name
        self.output_name = entry.output_name
        names = {i.name for i in self.session.get_inputs()}, {o.name for o in self.session.get_outputs()}
        if self.input_name not in names[0] or self.output_name not in names[1]:
            raise InputError(f"model {path.name} lacks input {self.input_name!r} or output {self.output_name!r}")

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def __call__(self, batch_uint8: np.ndarray) -> np.ndarray:
        x = to_model_input(batch_uint8)
        return self.session.run([self.output_name], {self.input_name: x})[0]


@dataclass
class Models:
    detector: OnnxModel
    classifier: OnnxModel
    manifest: Manifest
    verifier: OnnxModel | None = None

    @property
    def provider(self) -> str:
        return self.detector.provider

    def mitosis_logit(self, tiles: np.ndarray) -> np.ndarray:
        """N x T x T x 3 uint8 tiles -> N x T x T float32 mitosis logit (log-odds against the rest)."""
        return np.asarray(self.detector(tiles), dtype=np.float32).reshape(len(tiles), *tiles.shape[1:3])

    def atypical_probability(self, crops: np.ndarray) -> np.ndarray:
        """N x S x S x 3 uint8 crops -> N float32 P(atypical)."""
        return np.asarray(self.classifier(crops), dtype=np.float32).reshape(len(crops))

    def verification_logit(self, crops: np.ndarray) -> np.ndarray:
        """N x V x V x 3 uint8 crops around candidates -> N float32 logit of "mitosis, not a look-alike"."""
        if self.verifier is None:
            raise RuntimeError("these weights have no verifier")
        return np.asarray(self.verifier(crops), dtype=np.float32).reshape(len(crops))


def load_models(settings: Settings) -> Models:
    """Verify the weights against their manifest and open both sessions."""
    weights = Path(settings.weights_dir)
    manifest = Manifest.load(weights)
    paths = {}
    roles = [("detector", manifest.detector), ("classifier", manifest.classifier)]
    if manifest.verifier is not None:
        roles.append(("verifier", manifest.verifier))
    for role, entry in roles:
        if settings.verify_weights:
            paths[role] = manifest.verified_path(weights, entry)
        else:
            paths[role] = weights / entry.file
            if not paths[role].is_file():
                raise InputError(f"model file missing: {paths[role]}")
    providers = select_providers(settings.device)
    models = Models(
        detector=OnnxModel(paths["detector"], manifest.detector, providers),
        classifier=OnnxModel(paths["classifier"], manifest.classifier, providers),
        manifest=manifest,
        verifier=None if manifest.verifier is None else OnnxModel(paths["verifier"], manifest.verifier, providers),
    )
    if providers[0] == CUDA and models.provider != CUDA:
        if settings.device == "cuda":
            raise InputError("device 'cuda' requested but ONNX Runtime could not start the CUDA provider")
        warn("CUDA provider could not be started; running on the CPU")
    trained = "trained" if manifest.provenance.trained else "UNTRAINED (random) weights"
    stages = "detector + verifier" if models.verifier is not None else "detector"
    log(f"models: {trained} ({stages}, atypical classifier), provider {models.provider}")
    return models
