"""Atypical-vs-normal mitotic figure classifier: a compact multi-scale residual CNN.

Input: ``image`` float32 N x 3 x 128 x 128, RGB in [0, 1]; mean/std normalisation happens inside
the graph. ``forward`` returns ``p_atypical`` of shape (N,), the sigmoid of the atypical logit, which
is what ``export.sh`` exports to ONNX. Training uses :meth:`AtypicalClassifier.logits`, which also
returns the auxiliary *hardness* logit (do the three experts disagree about this figure?).
Test-time augmentation by flips is the product's business (``mitosis_analysis/classify.py``
averages P(atypical) over flip views), not the graph's.

Design (sized for CPU training and per-candidate CPU inference: width 16, 0.49 M parameters):
stride-2 stem, four stages of one residual block each (widths w, 2w, 4w, 8w at
1/2 ... 1/16 resolution), and a multi-scale head: global average + max pooling of stages 2-4,
concatenated, dropout, two linear heads (atypical, hardness).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

ARCH = "atypical-msresnet-v1"
ENSEMBLE_ARCH = "atypical-msresnet-ensemble-v1"
# Mean/std of RGB over the AMi-Br training crops (measured by training/train_classifier.py,
# which stores the values it used in the checkpoint's config).
DEFAULT_MEAN = (0.70, 0.55, 0.70)
DEFAULT_STD = (0.15, 0.18, 0.13)


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity shortcut (ResNet basic block)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn2.weight)  # each block starts as the identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(x + self.bn2(self.conv2(y)), inplace=True)


class AtypicalClassifier(nn.Module):
    def __init__(
        self,
        width: int = 16,
        dropout: float = 0.3,
        mean: tuple[float, float, float] = DEFAULT_MEAN,
        std: tuple[float, float, float] = DEFAULT_STD,
    ) -> None:
        super().__init__()
        widths = (width, 2 * width, 4 * width, 8 * width)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.stem = _conv_bn(3, widths[0], stride=2)
        stages = [nn.Sequential(ResidualBlock(widths[0]))]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            stages.append(nn.Sequential(_conv_bn(c_in, c_out, stride=2), ResidualBlock(c_out)))
        self.stages = nn.ModuleList(stages)
        # Multi-scale: stages 2-4 (1/4, 1/8, 1/16 resolution), average and max pooled.
        self.pooled_stages = (1, 2, 3)
        features = 2 * sum(widths[i] for i in self.pooled_stages)
        self.dropout = nn.Dropout(dropout)
        self.atypical_head = nn.Linear(features, 1)
        self.hardness_head = nn.Linear(features, 1)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """Multi-scale pooled features, N x F, of RGB images in [0, 1]."""
        x = self.stem((image - self.mean) / self.std)
        pooled = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.pooled_stages:
                pooled.append(torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1))
        return torch.cat(pooled, dim=1)

    def logits(self, image: torch.Tensor, return_features: bool = False):
        """(atypical logit, hardness logit), each of shape (N,), of one view; with
        ``return_features`` also the pooled features N x F (for domain-adversarial training)."""
        features = self.features(image)
        f = self.dropout(features)
        out = (self.atypical_head(f).squeeze(1), self.hardness_head(f).squeeze(1))
        return (*out, features) if return_features else out

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """p_atypical = sigmoid(atypical logit), shape (N,)."""
        return torch.sigmoid(self.logits(image)[0])


class ClassifierEnsemble(nn.Module):
    """Mean P(atypical) of several :class:`AtypicalClassifier` members, as one module (and so one
    exported graph). ``mean``/``std`` are the first member's (members trained on the same split
    share them; each member still normalises with its own buffers)."""

    def __init__(self, members: list[dict]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(build_classifier(**dict(m)) for m in members)
        self.register_buffer("mean", self.members[0].mean.clone())
        self.register_buffer("std", self.members[0].std.clone())

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """p_atypical averaged over the members, shape (N,)."""
        return torch.stack([m(image) for m in self.members]).mean(0)


def build_classifier(arch: str = ARCH, **config) -> nn.Module:
    """The classifier from the ``config`` stored in a checkpoint: for ``ARCH``, keyword arguments
    of :class:`AtypicalClassifier` (width, dropout, mean, std); for ``ENSEMBLE_ARCH``, ``members``:
    a list of member configs (each with its own ``arch``)."""
    if arch == ENSEMBLE_ARCH:
        return ClassifierEnsemble(config["members"])
    if arch != ARCH:
        raise ValueError(f"unknown classifier arch {arch!r}; this code builds {ARCH!r} and {ENSEMBLE_ARCH!r}")
    for key in ("mean", "std"):
        if key in config:
            config[key] = tuple(float(v) for v in config[key])
    return AtypicalClassifier(**config)
