"""Domain-adversarial training (Ganin & Lempitsky, ICML 2015; Ganin et al., JMLR 2016).

A small domain classifier reads the network's features through a gradient-reversal layer: it
learns to tell the acquisition domains apart (``training.data.DOMAINS``: the three MIDOG21
scanners and TUPAC16), while the reversed gradient pushes the features to carry no domain
information. The head is a training-time device only: it is neither saved in the checkpoint's
``state_dict`` nor exported.

:class:`DomainHead` takes either pooled features (N x C) or feature maps (N x C x h x w, one domain
prediction per position, for the detector whose training mosaics mix crops of several domains).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

IGNORE = 255


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, strength: float) -> torch.Tensor:  # noqa: D102
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        return -ctx.strength * grad, None


def reverse_gradient(x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Identity forward; the gradient is multiplied by ``-strength`` on the way back."""
    return _ReverseGradient.apply(x, float(strength))


def ramp(progress: float, gamma: float = 10.0) -> float:
    """Ganin's schedule of the reversal strength: 0 at the start of training, -> 1 at the end
    (``2 / (1 + exp(-gamma * progress)) - 1``, ``progress`` in [0, 1])."""
    p = min(max(progress, 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


class DomainHead(nn.Module):
    """Two-layer domain classifier (1 x 1 convolutions, so it also runs per position on maps)."""

    def __init__(self, in_channels: int, n_domains: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_channels, hidden, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, n_domains, 1))

    def forward(self, features: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        """Domain logits: N x D for N x C features, N x D x h x w for maps."""
        pooled = features.ndim == 2
        x = reverse_gradient(features[:, :, None, None] if pooled else features, strength)
        logits = self.net(x)
        return logits[:, :, 0, 0] if pooled else logits


def domain_loss(logits: torch.Tensor, domains: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the domain logits (N x D or N x D x h x w) against domain indices (N or
    N x h x w; ``IGNORE`` skipped)."""
    return F.cross_entropy(logits, domains.long(), ignore_index=IGNORE)
