"""The mean of several networks' outputs as one module (and so one exported graph): the classifier's
and the verifier's ensembles."""

from __future__ import annotations

import torch
from torch import nn


class MeanEnsemble(nn.Module):
    """Mean output of ``members`` (each normalising with its own buffers). ``mean``/``std`` are the
    first member's (members trained on the same split share them): what the exporter records."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.register_buffer("mean", self.members[0].mean.clone())
        self.register_buffer("std", self.members[0].std.clone())

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """The members' outputs averaged, shape (N,)."""
        return torch.stack([m(image) for m in self.members]).mean(0)
