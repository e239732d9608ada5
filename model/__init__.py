"""PyTorch model definitions used by ``training/`` and ``export.sh``.

Two model kinds, each built from the ``config`` dict stored in its checkpoint:

``build_detector(**config)``   -> module: image N x 3 x H x W in [0, 1] -> logits N x 4 x H x W
``build_classifier(**config)`` -> module: image N x 3 x 128 x 128 in [0, 1] -> P(atypical) (N,)
                                  (``model/classifier.py``: the sigmoid is part of its ``forward``)
``build_verifier(**config)``   -> module: image N x 3 x 64 x 64 in [0, 1] -> mitosis logit (N,)
                                  (``model/verifier.py``: stage 2, exported as is)

Both normalise (mean/std, buffers named ``mean`` and ``std``) inside the module.
``for_export(kind, module)`` wraps a module so that it produces exactly what the product consumes
(``mitosis_analysis/manifest.py``): the mitosis logit (N x H x W, log-odds of the mitosis class
against the three others) for the detector, P(atypical) of shape (N,) for the classifier.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .classifier import build_classifier
from .unet import build_detector
from .verifier import build_verifier

BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "detector": build_detector,
    "classifier": build_classifier,
    "verifier": build_verifier,
}
OUTPUT_NAMES = {"detector": "mitosis_logit", "classifier": "p_atypical", "verifier": "logit"}
MITOSIS_CHANNEL = 2  # index of "mitosis" in mitosis_analysis.settings.SEGMENTATION_CLASSES


def build(kind: str, **config) -> nn.Module:
    """The model of ``kind`` ("detector" or "classifier") described by ``config``."""
    try:
        builder = BUILDERS[kind]
    except KeyError:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {sorted(BUILDERS)}") from None
    return builder(**dict(config))


def mitosis_logit(logits: torch.Tensor) -> torch.Tensor:
    """N x 4 x H x W class logits -> N x H x W log-odds of mitosis against the other three:
    ``z_mitosis - logsumexp(z_others)`` = ``log(p_mitosis / (1 - p_mitosis))`` of their softmax,
    without ever forming a probability that could saturate at 1."""
    others = [c for c in range(logits.shape[1]) if c != MITOSIS_CHANNEL]
    return logits[:, MITOSIS_CHANNEL] - torch.logsumexp(logits[:, others], dim=1)


class DetectorForExport(nn.Module):
    """Class logits -> the mitosis logit map (what the product's decisions are made on)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return mitosis_logit(self.net(image))


class ClassifierForExport(nn.Module):
    """P(atypical), shape (N,) (the classifier's forward already applies the sigmoid)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image).reshape(image.shape[0])


def for_export(kind: str, net: nn.Module) -> nn.Module:
    if kind == "verifier":  # its forward already gives the logit of shape (N,)
        return net.eval()
    wrapper = {"detector": DetectorForExport, "classifier": ClassifierForExport}[kind]
    return wrapper(net).eval()


__all__ = ["BUILDERS", "OUTPUT_NAMES", "build", "build_classifier", "build_detector", "build_verifier", "for_export",
           "mitosis_logit"]
