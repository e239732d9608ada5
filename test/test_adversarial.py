"""Domain-adversarial pieces (training/adversarial.py): gradient reversal, its schedule, the domain
head and its loss."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from training import adversarial as adv


@pytest.mark.parametrize("strength", [0.0, 0.3, 1.0, 2.5])
def test_reverse_gradient_is_identity_forward_and_flips_scaled_gradients(strength):
    torch.manual_seed(0)
    x = torch.randn(3, 5, requires_grad=True)
    w = torch.randn(3, 5)
    y = adv.reverse_gradient(x, strength)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    # without reversal d/dx sum(x * w) = w
    torch.testing.assert_close(x.grad, -strength * w, rtol=0, atol=0)


def test_reversal_flips_the_gradient_of_a_whole_network():
    torch.manual_seed(0)
    x = torch.randn(4, 6)
    layer = torch.nn.Linear(6, 3)
    target = torch.tensor([0, 2, 1, 1])

    def grads(reverse: bool):
        feats = x.clone().requires_grad_(True)
        h = adv.reverse_gradient(feats, 0.7) if reverse else feats
        layer.zero_grad()
        F.cross_entropy(layer(h), target).backward()
        return feats.grad, layer.weight.grad.clone()

    g_plain, w_plain = grads(False)
    g_rev, w_rev = grads(True)
    torch.testing.assert_close(g_rev, -0.7 * g_plain)
    torch.testing.assert_close(w_rev, w_plain)  # the head itself learns normally


def test_ramp_schedule():
    assert adv.ramp(0.0) == 0.0
    assert adv.ramp(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1) and adv.ramp(1.0) > 0.999
    values = [adv.ramp(p / 20) for p in range(21)]
    assert all(a < b for a, b in zip(values, values[1:]))  # strictly increasing
    assert 0.0 < adv.ramp(0.1) < 0.8  # a real ramp, not a step
    assert adv.ramp(-1.0) == 0.0 and adv.ramp(2.0) == adv.ramp(1.0)  # progress is clipped to [0, 1]
    assert adv.ramp(0.5, gamma=1.0) < adv.ramp(0.5)


def test_domain_head_shapes():
    torch.manual_seed(0)
    head = adv.DomainHead(12, 4, hidden=8)
    assert head(torch.randn(5, 12)).shape == (5, 4)
    assert head(torch.randn(2, 12, 3, 7)).shape == (2, 4, 3, 7)
    # a pooled vector gives the same logits as a 1 x 1 map (the same 1 x 1 convolutions)
    f = torch.randn(5, 12)
    torch.testing.assert_close(head(f), head(f[:, :, None, None])[:, :, 0, 0])


def test_domain_head_reverses_gradients_into_the_features():
    torch.manual_seed(0)
    head = adv.DomainHead(6, 4, hidden=8)
    domains = torch.tensor([0, 3, 1])
    f1 = torch.randn(3, 6, requires_grad=True)
    f2 = f1.detach().clone().requires_grad_(True)
    adv.domain_loss(head(f1, 0.5), domains).backward()
    F.cross_entropy(head.net(f2[:, :, None, None])[:, :, 0, 0], domains).backward()  # no reversal
    torch.testing.assert_close(f1.grad, -0.5 * f2.grad)
    assert f1.grad.abs().sum() > 0


def test_domain_loss_ignores_ignore_positions():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3, 3, requires_grad=True)
    domains = torch.randint(0, 4, (2, 3, 3), dtype=torch.uint8)
    domains[0, 0] = adv.IGNORE
    domains[1, :, 2] = adv.IGNORE
    keep = domains != adv.IGNORE
    loss = adv.domain_loss(logits, domains)
    expected = F.cross_entropy(logits.permute(0, 2, 3, 1)[keep], domains[keep].long())
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert (logits.grad.permute(0, 2, 3, 1)[~keep] == 0).all()
    assert (logits.grad.permute(0, 2, 3, 1)[keep] != 0).any()
    # changing the logits at ignored positions changes nothing
    other = logits.detach().clone()
    other.permute(0, 2, 3, 1)[~keep] = 100.0
    torch.testing.assert_close(adv.domain_loss(other, domains), loss.detach())
    # pooled form: N x D logits against N indices
    pooled = torch.randn(4, 4)
    labels = torch.tensor([1, adv.IGNORE, 3, 0])
    torch.testing.assert_close(adv.domain_loss(pooled, labels),
                               F.cross_entropy(pooled[[0, 2, 3]], torch.tensor([1, 3, 0])))
