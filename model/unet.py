"""A light UNet for 4-class mitosis segmentation (background, normal nucleus, mitosis, hard negative).

Design goal: a 7215 x 5412 ROI tiled 512 x 512 with 50 % overlap (about 590 tiles) must run in about a
minute on two CPU cores through ONNX Runtime, so the network costs about 5.5k multiply-adds per input
pixel (``macs_per_pixel`` measures it):

    stem      3x3 conv, stride 2, 3 -> c0, then 3x3 c0 -> c0            (1/2 resolution, skip 0)
    encoder   per level: 3x3 conv stride 2 c_{i-1} -> c_i, 3x3 c_i -> c_i (1/4, 1/8, 1/16)
    decoder   FPN-like: upsample x2, 1x1 conv to the skip's width, add the skip, 3x3 conv
    head      1x1 conv c0 -> 4 at 1/2 resolution, bilinear upsampling to the input size in-graph

The decoder adds (rather than concatenates) skips: it halves the decoder's cost at little loss for
nuclei-sized objects. Every conv is followed by BatchNorm and ReLU (fused by ONNX Runtime).

Input: float32 N x 3 x H x W RGB in [0, 1]; H and W multiples of 16 (the product uses multiples
of 32). Mean/std normalisation happens inside the module, so the exported graph carries it.
``forward`` returns logits (N x 4 x H x W), divided by the calibration ``temperature`` buffer (1 until
calibrated on validation); ``model.for_export`` adds the softmax.
Pass ``return_features=True`` to also get the bottleneck features (for consistency losses).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

NUM_CLASSES = 4
# Mean/std of RGB in [0, 1] over H&E crops; applied in-graph, recorded in the manifest.
HE_MEAN = (0.70, 0.55, 0.72)
HE_STD = (0.17, 0.20, 0.15)


def conv_bn_relu(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class EncoderStage(nn.Sequential):
    """Downsample by two with a strided conv, then one more conv at the new resolution."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(conv_bn_relu(c_in, c_out, stride=2), conv_bn_relu(c_out, c_out))


class DecoderStage(nn.Module):
    """Upsample the coarser map, project it to the skip's width, add the skip, refine."""

    def __init__(self, c_coarse: int, c_skip: int):
        super().__init__()
        self.project = conv_bn_relu(c_coarse, c_skip, kernel=1)
        self.refine = conv_bn_relu(c_skip, c_skip)

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(self.project(coarse), size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.refine(up + skip)


def stride_for(channels: Sequence[int]) -> int:
    """Total downsampling of a :class:`LightUNet` with these ``channels`` (one level per entry)."""
    return 2 ** len(channels)


class LightUNet(nn.Module):
    """See the module docstring. ``channels`` are the widths at 1/2, 1/4, 1/8, 1/16 resolution."""

    def __init__(
        self,
        channels: Sequence[int] = (16, 32, 64, 128),
        num_classes: int = NUM_CLASSES,
        mean: Sequence[float] = HE_MEAN,
        std: Sequence[float] = HE_STD,
        dropout: float = 0.0,
    ):
        super().__init__()
        if len(channels) < 2:
            raise ValueError("LightUNet needs at least two levels")
        self.channels = tuple(int(c) for c in channels)
        self.num_classes = int(num_classes)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        c = self.channels
        self.stem = nn.Sequential(conv_bn_relu(3, c[0], stride=2), conv_bn_relu(c[0], c[0]))
        self.encoder = nn.ModuleList(EncoderStage(c[i - 1], c[i]) for i in range(1, len(c)))
        self.decoder = nn.ModuleList(DecoderStage(c[i], c[i - 1]) for i in range(len(c) - 1, 0, -1))
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Conv2d(c[0], num_classes, 1)
        # Calibration (temperature scaling, Guo et al. 2017): logits are divided by this. 1 while
        # training; set on validation before saving (training/train_detector.py).
        self.register_buffer("temperature", torch.ones(()))

    @property
    def stride(self) -> int:
        """Input sizes must be multiples of this."""
        return stride_for(self.channels)

    def forward(self, image: torch.Tensor, return_features: bool = False):
        x = (image - self.mean) / self.std
        skips = [self.stem(x)]
        for stage in self.encoder:
            skips.append(stage(skips[-1]))
        bottleneck = skips.pop()
        y = bottleneck
        for stage in self.decoder:
            y = stage(y, skips.pop())
        logits = self.head(self.dropout(y)) / self.temperature
        logits = F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)
        if return_features:
            return logits, bottleneck
        return logits


def build_detector(**config) -> LightUNet:
    """The detector named by ``config`` (the ``config`` stored in a checkpoint)."""
    arch = config.pop("arch", "light_unet")
    if arch != "light_unet":
        raise ValueError(f"unknown detector architecture {arch!r}")
    return LightUNet(**config)


def macs_per_pixel(model: nn.Module, size: int = 512) -> float:
    """Multiply-adds of the convolutions per input pixel, counted with forward hooks."""
    total = 0

    def hook(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total += output.numel() // output.shape[0] * k

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, size, size))
    finally:
        for h in handles:
            h.remove()
    return total / (size * size)
