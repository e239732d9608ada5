"""Losses of the detector: cross-entropy, class-ratio-weighted Dice, focal, point cross-entropy,
and a feature-consistency loss between a weak and a strong view.

All take logits N x C x H x W and integer targets N x H x W (``IGNORE`` = 255 is skipped).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = 255


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, target.long(), ignore_index=IGNORE)


def focal(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss (Lin et al. 2017): cross-entropy scaled by (1 - p_true)^gamma, mean over pixels."""
    target = target.long()
    valid = target != IGNORE
    safe = torch.where(valid, target, torch.zeros_like(target))
    logp = F.log_softmax(logits, dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
    loss = -((1 - logp.exp()) ** gamma) * logp
    return (loss * valid).sum() / valid.sum().clamp(min=1)


def adaptive_dice(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss per class over the batch, weighted by the inverse of each class's pixel share
    (classes absent from the batch get no weight), so that rare classes (mitosis) count as much as
    the background."""
    num_classes = logits.shape[1]
    target = target.long()
    valid = (target != IGNORE).unsqueeze(1)
    probs = torch.softmax(logits, dim=1) * valid
    onehot = F.one_hot(torch.where(valid.squeeze(1), target, torch.zeros_like(target)), num_classes)
    onehot = onehot.permute(0, 3, 1, 2).to(probs.dtype) * valid
    dims = (0, 2, 3)
    counts = onehot.sum(dims)
    dice = (2 * (probs * onehot).sum(dims) + eps) / (probs.sum(dims) + counts + eps)
    present = counts > 0
    weights = torch.where(present, 1.0 / counts.clamp(min=1), torch.zeros_like(counts))
    weights = weights / weights.sum().clamp(min=1e-12)
    return ((1 - dice) * weights).sum()


def point_cross_entropy(logits: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Cross-entropy only at annotated centres (``points`` is IGNORE elsewhere); 0 if there are none."""
    if not bool((points != IGNORE).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, points.long(), ignore_index=IGNORE)


def feature_consistency(weak: torch.Tensor, strong: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity of two views' feature maps (N x C x h x w), mean over positions."""
    return (1 - F.cosine_similarity(weak, strong, dim=1)).mean()


def detector_loss(logits: torch.Tensor, labels: torch.Tensor, points: torch.Tensor,
                  weights: dict[str, float] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the four supervised terms, and each term's value for logging."""
    w = {"ce": 1.0, "dice": 1.0, "focal": 1.0, "point": 1.0} | (weights or {})
    terms = {
        "ce": cross_entropy(logits, labels),
        "dice": adaptive_dice(logits, labels),
        "focal": focal(logits, labels),
        "point": point_cross_entropy(logits, points),
    }
    total = sum(w[k] * v for k, v in terms.items())
    return total, {k: float(v.detach()) for k, v in terms.items()}
