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
from .manifest import UINT8_NHWC, Manifest, ModelEntry
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
    """One ONNX Runtime session with a single input and a single output of interest.

    On the GPU (``io_binding``, default there) runs go through IO binding with buffers kept per
    input shape: the input copied into a device buffer allocated once, the output left in a device
    buffer allocated once. On the CPU a plain ``run`` reads the batch where it lies (binding would
    add a copy). With ``fixed_batch`` (on the GPU) every batch is padded to that size, so the
    model sees one shape: cuDNN's algorithm search (ONNX Runtime's default, exhaustive) runs once
    per model, not once per odd last batch.
    """

    def __init__(self, path: Path, entry: ModelEntry, providers: list[str], fixed_batch: int | None = None,
                 io_binding: bool | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:
            raise InputError(f"cannot load model {path.name}: {str(exc).splitlines()[0]}") from None
        self.input_name = entry.input_name
        self.input_format = entry.input_format
        self.output_name = entry.output_name
        names = {i.name for i in self.session.get_inputs()}, {o.name for o in self.session.get_outputs()}
        if self.input_name not in names[0] or self.output_name not in names[1]:
            raise InputError(f"model {path.name} lacks input {self.input_name!r} or output {self.output_name!r}")
        self.fixed_batch = fixed_batch
        self._device = "cuda" if self.provider == CUDA else "cpu"
        self.io_binding = self._device == "cuda" if io_binding is None else io_binding
        self._bound: dict[tuple, tuple] = {}  # input shape -> (binding, input buffer, output buffer or None)

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def __call__(self, batch_uint8: np.ndarray) -> np.ndarray:
        """N x H x W x 3 uint8 in, the model's output out (fed as the graph's ``input_format``)."""
        n, size = len(batch_uint8), self.fixed_batch
        if size is None or n == size:
            return self._run(self._input(batch_uint8))
        parts = []
        for start in range(0, n, size):
            chunk = batch_uint8[start : start + size]
            padded = np.zeros((size, *chunk.shape[1:]), np.uint8)  # the last batch padded with black
            padded[: len(chunk)] = chunk
            parts.append(self._run(self._input(padded))[: len(chunk)])
        return np.concatenate(parts) if parts else self._run(self._input(batch_uint8))

    def _input(self, batch_uint8: np.ndarray) -> np.ndarray:
        if self.input_format == UINT8_NHWC:
            return np.ascontiguousarray(batch_uint8, dtype=np.uint8)
        return to_model_input(batch_uint8)

    def _run(self, x: np.ndarray) -> np.ndarray:
        import onnxruntime as ort

        if not self.io_binding:
            return self.session.run([self.output_name], {self.input_name: x})[0]
        key = (x.shape, x.dtype.str)
        if key not in self._bound:
            buffer = ort.OrtValue.ortvalue_from_shape_and_type(x.shape, x.dtype, self._device, 0)
            binding = self.session.io_binding()
            binding.bind_ortvalue_input(self.input_name, buffer)
            binding.bind_output(self.output_name, self._device)
            self._bound[key] = (binding, buffer, None)
        binding, buffer, output = self._bound[key]
        buffer.update_inplace(x)
        self.session.run_with_iobinding(binding)
        if output is None:  # first run of this shape: keep the output buffer ORT allocated
            output = binding.get_outputs()[0]
            binding.bind_ortvalue_output(self.output_name, output)
            self._bound[key] = (binding, buffer, output)
        # a CPU buffer's numpy() is a view that the next run overwrites; a GPU one is copied out
        return output.numpy().copy() if self._device == "cpu" else output.numpy()


@dataclass
class Models:
    detector: OnnxModel
    classifier: OnnxModel
    manifest: Manifest
    verifier: OnnxModel | None = None

    @property
    def provider(self) -> str:
        return self.detector.provider

    @property
    def output_stride(self) -> int:
        """Pixels per map pixel of the detector's output (its s x s block maxima)."""
        return self.manifest.detector.output_stride

    def mitosis_logit(self, tiles: np.ndarray) -> np.ndarray:
        """N x T x T x 3 uint8 tiles -> N x T/s x T/s float32 mitosis logit (log-odds against the
        rest), s = ``output_stride``."""
        s = self.output_stride
        shape = (len(tiles), tiles.shape[1] // s, tiles.shape[2] // s)
        return np.asarray(self.detector(tiles), dtype=np.float32).reshape(shape)

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
    # fixed batch shapes on the GPU only: on the CPU a padded batch is wasted work
    gpu = providers[0] == CUDA
    tiles, crops = (settings.batch_size, settings.classifier_batch_size) if gpu else (None, None)
    models = Models(
        detector=OnnxModel(paths["detector"], manifest.detector, providers, tiles),
        classifier=OnnxModel(paths["classifier"], manifest.classifier, providers, crops),
        manifest=manifest,
        verifier=None if manifest.verifier is None
        else OnnxModel(paths["verifier"], manifest.verifier, providers, crops),
    )
    if providers[0] == CUDA and models.provider != CUDA:
        if settings.device == "cuda":
            raise InputError("device 'cuda' requested but ONNX Runtime could not start the CUDA provider")
        warn("CUDA provider could not be started; running on the CPU")
    trained = "trained" if manifest.provenance.trained else "UNTRAINED (random) weights"
    stages = "detector + verifier" if models.verifier is not None else "detector"
    log(f"models: {trained} ({stages}, atypical classifier), provider {models.provider}")
    return models
