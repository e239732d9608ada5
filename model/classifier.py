"""Atypical-vs-normal mitotic figure classifier: a compact multi-scale residual CNN.

Input: ``image`` float32 N x 3 x 128 x 128, RGB in [0, 1]; mean/std normalisation happens inside
the graph. ``forward`` returns ``p_atypical`` of shape (N,), the sigmoid of the atypical logit, which
is what ``export.sh`` exports to ONNX. Training uses :meth:`AtypicalClassifier.logits`, which also
returns the auxiliary *hardness* logit (do the three experts disagree about this figure?).
Test-time augmentation by flips is the product's business (``mitosis_analysis/classify.py``
averages P(atypical) over flip views), not the graph's.

Three backbones share that interface (``build_classifier(arch=...)``), compared by
leave-one-domain-out in ``training/classifier_lodo.py``:

- ``ARCH`` (``AtypicalClassifier``): stride-2 stem, four stages of one residual block each (widths
  w, 2w, 4w, 8w at 1/2 ... 1/16 resolution), and a multi-scale head: global average + max pooling
  of stages 2-4, concatenated, dropout, two linear heads (atypical, hardness). Width 16: 0.49 M
  parameters.
- ``RESNET_ARCH`` (``ResNetClassifier``): the plain ResNet layout of He et al. 2016 (7x7 stride-2
  stem, max pool, basic blocks ``depths`` per stage, widths w ... 8w; (2, 2, 2, 2) is ResNet-18's,
  (3, 4, 6, 3) ResNet-34's; w = 64 is the original width), global average pooling.
- ``CONVNEXT_ARCH`` (``ConvNeXtClassifier``): a small ConvNeXt (Liu et al. 2022): 4x4 patchify
  stem, stages of depthwise 7x7 + LayerNorm + inverted-bottleneck blocks with layer scale,
  LayerNorm + 2x2 stride-2 downsampling, global average pooling + LayerNorm.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .ensemble import MeanEnsemble

ARCH = "atypical-msresnet-v1"
RESNET_ARCH = "atypical-resnet-v1"
CONVNEXT_ARCH = "atypical-convnext-v1"
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
    """Two 3x3 conv-BN layers with a shortcut (ResNet basic block): the identity, or a strided
    1x1 conv-BN projection when ``stride`` or the width changes."""

    def __init__(self, channels: int, c_out: int | None = None, stride: int = 1) -> None:
        super().__init__()
        c_out = channels if c_out is None else c_out
        self.conv1 = nn.Conv2d(channels, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        nn.init.zeros_(self.bn2.weight)  # each block starts as its shortcut
        self.shortcut = nn.Identity()
        if stride != 1 or c_out != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(channels, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.shortcut(x) + self.bn2(self.conv2(y)), inplace=True)


class _TwoHeads(nn.Module):
    """What every classifier here shares: normalisation in the graph, pooled ``features`` of a
    backbone, dropout, the atypical and hardness heads, and ``forward`` = sigmoid(atypical)."""

    def _init_heads(self, features: int, dropout: float, mean, std, phases: int = 0) -> None:
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.dropout = nn.Dropout(dropout)
        self.atypical_head = nn.Linear(features, 1)
        self.hardness_head = nn.Linear(features, 1)
        # An auxiliary head for the experts' mitotic phase (``phases`` classes; 0: none). Training
        # only: ``forward`` and the exported graph never use it.
        self.phase_head = nn.Linear(features, phases) if phases else None

    def phase_logits(self, features: torch.Tensor) -> torch.Tensor:
        """N x phases logits of the auxiliary phase head from pooled ``features`` (see ``logits``)."""
        if self.phase_head is None:
            raise ValueError("this classifier was built without a phase head (phases=0)")
        return self.phase_head(self.dropout(features))

    def features(self, image: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

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


class AtypicalClassifier(_TwoHeads):
    def __init__(
        self,
        width: int = 16,
        dropout: float = 0.3,
        mean: tuple[float, float, float] = DEFAULT_MEAN,
        std: tuple[float, float, float] = DEFAULT_STD,
    ) -> None:
        super().__init__()
        widths = (width, 2 * width, 4 * width, 8 * width)
        self.stem = _conv_bn(3, widths[0], stride=2)
        stages = [nn.Sequential(ResidualBlock(widths[0]))]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            stages.append(nn.Sequential(_conv_bn(c_in, c_out, stride=2), ResidualBlock(c_out)))
        self.stages = nn.ModuleList(stages)
        # Multi-scale: stages 2-4 (1/4, 1/8, 1/16 resolution), average and max pooled.
        self.pooled_stages = (1, 2, 3)
        self._init_heads(2 * sum(widths[i] for i in self.pooled_stages), dropout, mean, std)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """Multi-scale pooled features, N x F, of RGB images in [0, 1]."""
        x = self.stem((image - self.mean) / self.std)
        pooled = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.pooled_stages:
                pooled.append(torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1))
        return torch.cat(pooled, dim=1)


class ResNetClassifier(_TwoHeads):
    """Plain ResNet (basic blocks): 7x7/2 stem + 3x3/2 max pool, ``depths`` blocks per stage at
    widths w, 2w, 4w, 8w (the first block of stages 2-4 strided, with a projection shortcut),
    global average pooling; ``phases`` > 0 adds the auxiliary phase head. ``stem_pool=False``
    drops the max pool: every stage at twice the resolution (a 128-px crop ends in 8x8 instead of
    4x4), about four times the arithmetic."""

    def __init__(
        self,
        width: int = 32,
        depths: tuple[int, ...] = (2, 2, 2, 2),
        dropout: float = 0.3,
        mean: tuple[float, float, float] = DEFAULT_MEAN,
        std: tuple[float, float, float] = DEFAULT_STD,
        stem_pool: bool = True,
        phases: int = 0,
    ) -> None:
        super().__init__()
        widths = [width * 2**i for i in range(len(depths))]
        pool = [nn.MaxPool2d(3, stride=2, padding=1)] if stem_pool else []
        self.stem = nn.Sequential(nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True), *pool)
        blocks, c_in = [], width
        for i, (c_out, depth) in enumerate(zip(widths, depths)):
            for j in range(depth):
                blocks.append(ResidualBlock(c_in, c_out, stride=2 if (i > 0 and j == 0) else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self._init_heads(c_in, dropout, mean, std, phases)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem((image - self.mean) / self.std)).mean(dim=(2, 3))


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of N x C x H x W."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 -> LayerNorm -> 1x1 (4x) -> GELU -> 1x1 -> layer scale, plus the input."""

    def __init__(self, channels: int, layer_scale: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = LayerNorm2d(channels, eps=1e-6)
        self.pw1 = nn.Conv2d(channels, 4 * channels, 1)
        self.pw2 = nn.Conv2d(4 * channels, channels, 1)
        self.gamma = nn.Parameter(torch.full((1, channels, 1, 1), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gamma * self.pw2(F.gelu(self.pw1(self.norm(self.dwconv(x)))))


class ConvNeXtClassifier(_TwoHeads):
    """A small ConvNeXt: 4x4/4 patchify stem + LayerNorm, ``depths`` blocks per stage at widths
    w, 2w, 4w, 8w, LayerNorm + 2x2/2 conv between stages, global average pooling + LayerNorm."""

    def __init__(
        self,
        width: int = 32,
        depths: tuple[int, ...] = (2, 2, 4, 2),
        dropout: float = 0.3,
        mean: tuple[float, float, float] = DEFAULT_MEAN,
        std: tuple[float, float, float] = DEFAULT_STD,
    ) -> None:
        super().__init__()
        widths = [width * 2**i for i in range(len(depths))]
        layers: list[nn.Module] = [nn.Conv2d(3, width, 4, stride=4), LayerNorm2d(width, eps=1e-6)]
        for i, (c, depth) in enumerate(zip(widths, depths)):
            if i > 0:
                layers += [LayerNorm2d(widths[i - 1], eps=1e-6), nn.Conv2d(widths[i - 1], c, 2, stride=2)]
            layers += [ConvNeXtBlock(c) for _ in range(depth)]
        self.body = nn.Sequential(*layers)
        self.head_norm = nn.LayerNorm(widths[-1], eps=1e-6)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self._init_heads(widths[-1], dropout, mean, std)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        return self.head_norm(self.body((image - self.mean) / self.std).mean(dim=(2, 3)))


class ClassifierEnsemble(MeanEnsemble):
    """Mean P(atypical) of several :class:`AtypicalClassifier` members (configs), as one module."""

    def __init__(self, members: list[dict]) -> None:
        super().__init__([build_classifier(**dict(m)) for m in members])


_BUILDERS = {ARCH: AtypicalClassifier, RESNET_ARCH: ResNetClassifier, CONVNEXT_ARCH: ConvNeXtClassifier}
ARCHS = tuple(_BUILDERS)


def build_classifier(arch: str = ARCH, **config) -> nn.Module:
    """The classifier from the ``config`` stored in a checkpoint: for a single-network ``arch``
    (``ARCHS``), keyword arguments of its class (width, depths, dropout, mean, std); for
    ``ENSEMBLE_ARCH``, ``members``: a list of member configs (each with its own ``arch``)."""
    if arch == ENSEMBLE_ARCH:
        return ClassifierEnsemble(config["members"])
    if arch not in _BUILDERS:
        raise ValueError(f"unknown classifier arch {arch!r}; this code builds {(*ARCHS, ENSEMBLE_ARCH)!r}")
    for key in ("mean", "std", "depths"):
        if key in config:
            config[key] = tuple(config[key])
    return _BUILDERS[arch](**config)
