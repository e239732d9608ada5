"""The atypical classifier: model contract, metrics, loss/sampling pieces and a few-step training run."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from conftest import AMIBR, needs_amibr
from model.classifier import ARCH, build_classifier
from training import classifier_eval as ev
from training import data as amibr
from training import train_classifier as tc



def test_model_contract():
    torch.manual_seed(0)
    net = build_classifier(arch=ARCH, width=8).eval()
    x = torch.rand(5, 3, 128, 128)
    with torch.no_grad():
        p = net(x)
        logit, hard = net.logits(x)
        p_one = net(x[2:3])
    assert p.shape == (5,) and p.dtype == torch.float32
    assert ((p >= 0) & (p <= 1)).all()
    torch.testing.assert_close(p, torch.sigmoid(logit))
    assert hard.shape == (5,)
    torch.testing.assert_close(p_one, p[2:3], atol=1e-5, rtol=0)  # no batch coupling in eval mode
    # default model stays small enough for git and per-candidate CPU inference (ONNX < 30 MB)
    assert sum(q.numel() for q in build_classifier().parameters()) < 2_000_000


def test_normalisation_is_in_graph():
    net = build_classifier(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)).eval()
    assert torch.equal(net.mean.flatten(), torch.tensor([0.5, 0.5, 0.5]))
    assert "mean" in net.state_dict() and "std" in net.state_dict()


def test_unknown_arch_is_rejected():
    with pytest.raises(ValueError, match="arch"):
        build_classifier(arch="resnet-999")


def test_metrics():
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8, 0.3])
    # pairs (pos, neg) ranked correctly: 0.8 beats all 3, 0.3 beats 0.1 only -> 4/6
    assert ev.auroc(y, p) == pytest.approx(4 / 6)
    assert ev.auroc(y, np.full(5, 0.5)) == pytest.approx(0.5)
    m = ev.binary_metrics(y, p, 0.5)
    assert (m["sensitivity"], m["specificity"]) == (0.5, 1.0)
    assert m["balanced_accuracy"] == pytest.approx(0.75)
    thr, ba = ev.best_threshold(y, p)
    assert ba == pytest.approx(ev.binary_metrics(y, p, thr)["balanced_accuracy"])
    assert ba == pytest.approx(max(ev.binary_metrics(y, p, t)["balanced_accuracy"] for t in np.linspace(0, 1, 101)))
    thr, ba = ev.best_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.7, 0.9]))
    assert ba == 1.0 and 0.2 < thr < 0.7


def test_equal_error_threshold_balances_sensitivity_and_specificity():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.3, 0.6, 0.2, 0.1, 0.05])
    # balanced accuracy peaks at 0.875 twice (t = 0.25: sens 1, spec 3/4; t = 0.65: sens 3/4, spec 1);
    # only between 0.3 and 0.6 are sensitivity and specificity equal (3/4 each)
    assert ev.best_threshold(y, p) == (pytest.approx(0.65), 0.875)
    thr, ba = ev.equal_error_threshold(y, p)
    assert thr == pytest.approx(0.45) and ba == 0.75
    m = ev.binary_metrics(y, p, thr)
    assert m["sensitivity"] == m["specificity"] == 0.75
    # the same scores with three times the normal crops (prevalence 50 % -> 25 %): the same threshold
    y3, p3 = np.concatenate([y, np.zeros(8, int)]), np.concatenate([p, np.tile(p[4:], 2)])
    assert ev.equal_error_threshold(y3, p3) == (thr, ba)
    assert ev.operating_threshold is ev.equal_error_threshold and ev.THRESHOLD_RULE == "equal-error"
    thr, ba = ev.equal_error_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.7, 0.9]))
    assert ba == 1.0 and 0.2 < thr < 0.7  # separable: sens = spec = 1 between the classes


def test_focal_loss_and_balanced_sampling():
    logit = torch.tensor([-2.0, 0.5, 3.0])
    target = torch.tensor([0.0, 1.0, 1.0])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logit, target)
    torch.testing.assert_close(tc.focal_loss(logit, target, 0.0), bce)
    assert tc.focal_loss(logit, target, 2.0) < bce  # easy examples are down-weighted
    y = np.array([1] * 10 + [0] * 90)
    idx = tc.balanced_indices(y, 20000, np.random.default_rng(0))
    assert abs(y[idx].mean() - 0.5) < 0.02


def test_lr_schedule():
    f = [tc.lr_factor(s, 100, 10) for s in range(100)]
    assert f[9] == pytest.approx(1.0) and f[0] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f[10:], f[11:])) and f[-1] < 0.01


def test_predict_matches_product_tta():
    torch.manual_seed(0)
    net = build_classifier(width=8).eval()
    crops = np.random.default_rng(0).integers(0, 256, (3, 128, 128, 3), dtype=np.uint8)
    p1 = ev.predict(net, crops, 1)
    with torch.no_grad():
        direct = net(torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255).numpy()
    np.testing.assert_allclose(p1, direct, atol=1e-5)
    # two views = mean over the identity and the left-right flip
    p_flip = ev.predict(net, crops[:, :, ::-1].copy(), 1)
    np.testing.assert_allclose(ev.predict(net, crops, 2), (p1 + p_flip) / 2, atol=1e-5)


@needs_amibr
def test_few_step_training_writes_a_usable_checkpoint(tmp_path, capsys):
    cfg = tc.TrainConfig(epochs=2, batch_size=8, width=8, limit=48, threads=1, seed=0)
    ckpt_path = tmp_path / "checkpoints" / "classifier.pt"
    out = tmp_path / "run"
    initial = build_classifier(width=8)
    ckpt = tc.train(cfg, AMIBR, out, ckpt_path, command="pytest", log=lambda m: None)

    saved = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    assert {"arch", "config", "state_dict", "threshold", "metrics"} <= set(saved)
    assert saved["arch"] == ARCH and 0.0 <= saved["threshold"] <= 1.0
    net = build_classifier(arch=saved["arch"], **saved["config"])
    net.load_state_dict(saved["state_dict"])  # the config rebuilds exactly this model
    assert not torch.equal(net.stem[0].weight, initial.stem[0].weight)  # it trained
    for split in ("validation", "test"):
        m = saved["metrics"][split][f"views_{saved['metrics']['product_views']}"]
        assert 0.0 <= m["balanced_accuracy"] <= 1.0 and np.isfinite(m["auroc"])
    assert saved["metrics"]["test"]["views_1"]["n"] == 48
    assert len(ckpt["history"]) == 2
    for name in ("metrics.json", "history.json", "curves.png", "threshold_sweep.png"):
        assert (out / name).stat().st_size > 0
    assert not list(tmp_path.rglob("*.tmp*"))  # atomic writes leave no temp files

    # a warm restart starts from those weights and says so
    again = tc.train(tc.TrainConfig(epochs=1, batch_size=8, limit=48, init=str(ckpt_path)), AMIBR, out,
                     tmp_path / "restart.pt", log=lambda m: None)
    assert again["config"] == saved["config"] and "warm restart" in again["initialisation"]
    # the data is recorded as a path relative to the checkout, never this machine's absolute path
    assert saved["data"].startswith("AMi-Br (../shared/data/ami-br): published training split,")

    # a warm restart that cannot work is refused at start-up, before any crop is read, with one error line
    for init, flags, message in [(ckpt_path, ["--phase-weight", "0.5", "--arch", "atypical-resnet-v1"], "no phase head"),
                                 (tmp_path / "missing.pt", [], "cannot read a checkpoint")]:
        rc = tc.main(["--data", str(tmp_path / "no-data"), "--out", str(tmp_path / "x"), "--init", str(init), *flags])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.startswith("error: --init") and message in err and len(err.splitlines()) == 1


def test_logits_can_return_the_pooled_features_the_heads_read():
    from training.adversarial import DomainHead

    torch.manual_seed(0)
    net = build_classifier(arch=ARCH, width=8).eval()
    x = torch.rand(3, 3, 128, 128)
    with torch.no_grad():
        logit, hard, features = net.logits(x, return_features=True)
        plain = net.logits(x)
    assert len(plain) == 2
    assert features.shape == (3, net.atypical_head.in_features) == (3, net.hardness_head.in_features)
    torch.testing.assert_close(features, net.features(x))
    torch.testing.assert_close(logit, plain[0])
    torch.testing.assert_close(hard, plain[1])
    torch.testing.assert_close(logit, net.atypical_head(features).squeeze(1))  # eval: dropout is the identity
    # the features are un-dropped in training mode too (the domain head sees all of them)
    net.train()
    torch.manual_seed(1)
    _, _, f_train = net.logits(x, return_features=True)
    assert (f_train != 0).float().mean() > 0.9
    head = DomainHead(net.atypical_head.in_features, len(amibr.DOMAINS))
    assert head(f_train).shape == (3, 4)


@needs_amibr
def test_few_step_adversarial_training_feeds_the_domain_head(tmp_path, monkeypatch):
    from training import adversarial

    seen = []
    real_domain_loss = adversarial.domain_loss

    def spy(logits, domains):
        seen.append((tuple(logits.shape), domains.clone()))
        return real_domain_loss(logits, domains)

    monkeypatch.setattr(adversarial, "domain_loss", spy)
    cfg = tc.TrainConfig(epochs=1, batch_size=8, width=8, limit=48, threads=1, seed=0, adversarial=0.1, device="cpu",
                         precision="bf16")  # the domain head runs under autocast too
    ckpt = tc.train(cfg, AMIBR, tmp_path / "run", tmp_path / "classifier.pt", log=lambda m: None)
    assert ckpt["train_config"]["adversarial"] == 0.1
    assert all(v.dtype == torch.float32 for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert seen and all(shape == (8, len(amibr.DOMAINS)) and d.shape == (8,) for shape, d in seen)
    assert set(torch.cat([d for _, d in seen]).tolist()) <= set(range(len(amibr.DOMAINS)))
    assert len({d for _, ds in seen for d in ds.tolist()}) > 1  # the fit crops come from several domains
    # the domain head is not part of the saved model
    assert set(ckpt["state_dict"]) == set(build_classifier(arch=ARCH, width=8).state_dict())
    assert np.isfinite(ckpt["history"][0]["train_loss"])


@needs_amibr
def test_phase_head_and_vote_targets_train_and_stay_out_of_the_graph(tmp_path, monkeypatch):
    from model.classifier import RESNET_ARCH

    seen = []
    real_ce = tc.F.cross_entropy

    def spy(logits, target, *args, **kwargs):
        seen.append((tuple(logits.shape), target.clone()))
        return real_ce(logits, target, *args, **kwargs)

    monkeypatch.setattr(tc.F, "cross_entropy", spy)
    cfg = tc.TrainConfig(epochs=1, batch_size=8, arch=RESNET_ARCH, width=8, limit=48, threads=1, seed=0,
                         phase_weight=0.5, target="votes", sampling="shuffle", augment="light", adversarial=0.0)
    ckpt = tc.train(cfg, AMIBR, tmp_path / "run", tmp_path / "classifier.pt", log=lambda m: None)
    assert seen and all(shape == (8, len(amibr.PHASES)) for shape, _ in seen)
    torch.testing.assert_close(torch.cat([t for _, t in seen]).sum(1), torch.ones(8 * len(seen)))  # distributions
    assert ckpt["config"]["phases"] == len(amibr.PHASES)
    net = build_classifier(arch=ckpt["arch"], **ckpt["config"])
    net.load_state_dict(ckpt["state_dict"])
    assert "phase_head.weight" in ckpt["state_dict"]
    graph = torch.jit.trace(net.eval(), torch.rand(1, 3, 128, 128))
    assert "phase_head" not in str(graph.inlined_graph)  # p_atypical alone; the export carries no phase head


@needs_amibr
def test_leave_one_domain_out_training_never_sees_the_held_out_domain(tmp_path, monkeypatch):
    from model.classifier import RESNET_ARCH

    loaded = []
    real_load = amibr.load_crops

    def spy(crops, *args, **kwargs):
        crops = list(crops)
        loaded.append(crops)
        return real_load(crops, *args, **kwargs)

    monkeypatch.setattr(amibr, "load_crops", spy)
    held_out = amibr.DOMAINS.index("MIDOG21 Aperio CS2")
    cfg = tc.TrainConfig(epochs=1, batch_size=8, arch=RESNET_ARCH, width=8, limit=48, threads=1, seed=0,
                         holdout_domain=held_out, augment="wide", rrc_min_scale=0.6, mix="cutmix")
    ckpt = tc.train(cfg, AMIBR, tmp_path / "run", tmp_path / "classifier.pt", log=lambda m: None)
    fit, val, test = loaded[:3]  # the order train() reads them in
    assert all(c.domain != held_out for c in fit + val)
    assert test and all(c.domain == held_out for c in test)
    assert "Aperio CS2" in ckpt["metrics"]["test_is"] and ckpt["arch"] == RESNET_ARCH
    assert "arch" not in ckpt["config"]  # the arch is the checkpoint's own key, as export.sh reads it
