"""Stage 2 of detection: a verifier that tells a mitotic figure from a look-alike (apoptotic body,
lymphocyte, pyknotic or dark nucleus) on a small crop centred on a stage-1 candidate.

Input: ``image`` float32 N x 3 x S x S (S = 64 by default: 16 um at 0.25 um/px), RGB in [0, 1];
mean/std normalisation happens inside the graph. Output: ``logit`` of shape (N,), one logit per
crop (mitosis vs not); the product compares it with the threshold that comes with the weights.

Design (sized to run on every candidate on a CPU, trained from scratch): stride-2 stem, three
stages of one residual block each (widths w, 2w, 4w at 1/2, 1/4, 1/8 resolution), global average
+ max pooling of the last stage, dropout, one linear head. Width 16: about 0.1 M parameters and
about 12 M multiply-adds per 64 px crop.
"""

from __future__ import annotations

import torch
from torch import nn

from .classifier import ResidualBlock, _conv_bn
from .ensemble import MeanEnsemble

ARCH = "verifier-resnet-v1"
ENSEMBLE_ARCH = "verifier-ensemble-v1"
DEFAULT_MEAN = (0.70, 0.55, 0.70)
DEFAULT_STD = (0.15, 0.18, 0.13)
INPUT_SIZE = 64
OUTPUT_NAME = "logit"


class Verifier(nn.Module):
    def __init__(self, width: int = 16, dropout: float = 0.2, input_size: int = INPUT_SIZE,
                 mean: tuple[float, float, float] = DEFAULT_MEAN, std: tuple[float, float, float] = DEFAULT_STD) -> None:
        super().__init__()
        self.input_size = int(input_size)
        widths = (width, 2 * width, 4 * width)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        layers: list[nn.Module] = [_conv_bn(3, widths[0], stride=2), ResidualBlock(widths[0])]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [_conv_bn(c_in, c_out, stride=2), ResidualBlock(c_out)]
        self.body = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * widths[-1], 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Mitosis logit per crop, shape (N,)."""
        x = self.body((image - self.mean) / self.std)
        features = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
        return self.head(self.dropout(features)).reshape(image.shape[0])


class VerifierEnsemble(MeanEnsemble):
    """The mean logit of several :class:`Verifier` members (configs), as one module; ``input_size`` is
    theirs (they must share it)."""

    def __init__(self, members: list[dict]) -> None:
        super().__init__([build_verifier(**dict(m)) for m in members])
        sizes = {m.input_size for m in self.members}
        if len(sizes) != 1:
            raise ValueError(f"ensemble members take different input sizes: {sorted(sizes)}")
        self.input_size = sizes.pop()


def build_verifier(arch: str = ARCH, **config) -> nn.Module:
    """The verifier from the ``config`` stored in a checkpoint: keyword arguments of
    :class:`Verifier` for ``ARCH``; for ``ENSEMBLE_ARCH``, ``members``: a list of member configs
    (each with its own ``arch``)."""
    if arch == ENSEMBLE_ARCH:
        return VerifierEnsemble(config["members"])
    if arch != ARCH:
        raise ValueError(f"unknown verifier arch {arch!r}; this code builds {(ARCH, ENSEMBLE_ARCH)!r}")
    for key in ("mean", "std"):
        if key in config:
            config[key] = tuple(float(v) for v in config[key])
    return Verifier(**config)
