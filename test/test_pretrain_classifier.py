"""Pretraining the classifier's trunk (training/pretrain_classifier.py): the contrastive loss, and a
checkpoint that ``train_classifier --init`` takes with only the trunk trained."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from model.classifier import RESNET_ARCH, build_classifier
from training import data as amibr
from training import pretrain_classifier as pc
from training import train_verifier as tv
from training.train_classifier import load_init


def test_nt_xent_is_low_for_matching_views_and_chance_for_random_ones():
    torch.manual_seed(0)
    z = torch.eye(8)
    assert pc.nt_xent(z, z, temperature=0.05) < 1e-6
    # unrelated views: about log(2N - 1), each anchor's positive no likelier than the 14 negatives
    losses = [float(pc.nt_xent(torch.randn(8, 64), torch.randn(8, 64), temperature=1e4)) for _ in range(5)]
    assert np.allclose(losses, math.log(15), atol=1e-3)
    # swapping the two views changes nothing; shuffling the pairing makes it worse
    a, b = torch.randn(16, 32), torch.randn(16, 32)
    b = a + 0.1 * b
    assert float(pc.nt_xent(a, b, 0.2)) == pytest.approx(float(pc.nt_xent(b, a, 0.2)), abs=1e-6)
    assert float(pc.nt_xent(a, b[torch.randperm(16)], 0.2)) > float(pc.nt_xent(a, b, 0.2)) + 1


def _pool(n: int = 24, size: int = tv.pool_size(pc.CROP)) -> dict:
    rng = np.random.default_rng(0)
    source = np.array([pc.ICPR_SOURCES[i % len(pc.ICPR_SOURCES)] for i in range(n)])
    return {"images": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), "source": source,
            "label": np.isin(source, tv.POSITIVE_SOURCES).astype(np.float32)}


@pytest.mark.parametrize("task", pc.TASKS)
def test_pretrained_checkpoint_trains_the_trunk_only_and_loads_for_init(task, tmp_path):
    args = SimpleNamespace(task=task, seed=3, threads=1, width=8, steps=2, minutes=None, batch_size=8, lr=1e-2,
                           weight_decay=0.05, temperature=0.2, rrc_min_scale=0.5, precision="fp32")
    net, history = pc.pretrain(_pool(), args, log=lambda _: None)
    assert len(history) == 2 and all(np.isfinite(h["loss"]) for h in history)
    torch.manual_seed(args.seed)  # pretrain builds its network right after seeding
    fresh = build_classifier(RESNET_ARCH, width=8, dropout=0.3, phases=len(amibr.PHASES))
    for name, p in fresh.named_parameters():
        changed = not torch.equal(p, dict(net.named_parameters())[name])
        assert changed != name.split(".")[0].endswith("_head"), name
    path = tmp_path / "classifier.pt"
    torch.save(pc.checkpoint_of(net, args, history, 24, "test"), path)
    start = load_init(path, phase_weight=0.5)
    build_classifier(start["arch"], **start["config"]).load_state_dict(start["state_dict"])  # strict
