"""The classifier backbones compared by leave-one-domain-out: one interface, exportable to ONNX,
the ResNet layouts they claim; random resized crops; the LODO folds and their summary; exporting
the classifier alone into existing weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import AMIBR, needs_amibr
from mitosis_analysis.manifest import Manifest, sha256_file
from model.classifier import ARCH, ARCHS, CONVNEXT_ARCH, RESNET_ARCH, build_classifier
from training import augment as aug
from training import classifier_lodo as lodo
from training import data as amibr
from training import export

SMALL = {ARCH: {"width": 8}, RESNET_ARCH: {"width": 8}, CONVNEXT_ARCH: {"width": 8, "depths": (1, 1, 1, 1)}}


@pytest.mark.parametrize("arch", ARCHS)
def test_every_backbone_has_the_classifier_interface(arch):
    torch.manual_seed(0)
    net = build_classifier(arch=arch, **SMALL[arch]).eval()
    x = torch.rand(4, 3, 128, 128)
    with torch.no_grad():
        p = net(x)
        logit, hard, features = net.logits(x, return_features=True)
        p_one = net(x[1:2])
    assert p.shape == logit.shape == hard.shape == (4,)
    torch.testing.assert_close(p, torch.sigmoid(logit))
    assert features.shape == (4, net.atypical_head.in_features)
    torch.testing.assert_close(p_one, p[1:2], atol=1e-5, rtol=0)  # no batch coupling in eval mode
    assert "mean" in net.state_dict() and "std" in net.state_dict()  # normalisation in the graph


def test_resnet_layouts_are_resnet_18_and_34():
    r18 = build_classifier(arch=RESNET_ARCH, width=64, depths=(2, 2, 2, 2))
    r34 = build_classifier(arch=RESNET_ARCH, width=64, depths=(3, 4, 6, 3))
    n18 = sum(p.numel() for p in r18.blocks.parameters()) + sum(p.numel() for p in r18.stem.parameters())
    n34 = sum(p.numel() for p in r34.blocks.parameters()) + sum(p.numel() for p in r34.stem.parameters())
    # torchvision's resnet18 / resnet34 without the 1000-class fc: 11,176,512 and 21,284,672
    assert (n18, n34) == (11_176_512, 21_284_672)
    assert len(r18.blocks) == 8 and len(r34.blocks) == 16
    with torch.no_grad():
        assert r18.blocks(r18.stem(torch.rand(1, 3, 128, 128))).shape == (1, 512, 4, 4)  # 1/32 resolution


@pytest.mark.parametrize("arch", [RESNET_ARCH, CONVNEXT_ARCH])
def test_new_backbones_export_to_onnx_within_tolerance(arch, tmp_path):
    torch.manual_seed(0)
    net = build_classifier(arch=arch, **SMALL[arch]).eval()
    path = tmp_path / "classifier.onnx"
    export.export_onnx("classifier", net, path, 17)
    assert export.parity("classifier", net, path) < 1e-4


def test_checkpoint_configs_rebuild_the_same_network():
    net = build_classifier(arch=CONVNEXT_ARCH, width=8, depths=[1, 2, 1, 1])  # lists, as JSON stores them
    again = build_classifier(arch=CONVNEXT_ARCH, width=8, depths=(1, 2, 1, 1))
    assert {k: v.shape for k, v in net.state_dict().items()} == {k: v.shape for k, v in again.state_dict().items()}


def test_random_resized_crop():
    g = aug.generator(0)
    ramp = torch.linspace(0, 1, 128).expand(4, 3, 128, 128).contiguous()  # columns 0 ... 1
    assert aug.random_resized_crop(ramp, 1.0, g) is ramp  # off
    out = aug.random_resized_crop(ramp, 0.5, g)
    assert out.shape == ramp.shape and bool(((out >= 0) & (out <= 1)).all())
    span = out[:, 0, 64].amax(dim=1) - out[:, 0, 64].amin(dim=1)
    assert bool((span < 0.999).all()) and bool((span > np.sqrt(0.5 * 3 / 4) - 0.02).all())  # a window, magnified
    flat = torch.full((2, 3, 64, 64), 0.3)
    torch.testing.assert_close(aug.random_resized_crop(flat, 0.3, g), flat)


def test_mixup_blends_images_and_targets_with_one_weight():
    images = torch.stack([torch.full((3, 8, 8), v) for v in (0.0, 1.0, 0.5)])
    y, h = torch.tensor([0.0, 1.0, 1.0]), torch.tensor([1.0, 0.0, 0.0])
    perm = torch.tensor([1, 0, 2])
    mixed, (ym, hm), lam = aug.mix_pairs(images, (y, h), "mixup", 0.75, perm)
    assert lam == 0.75
    torch.testing.assert_close(mixed[:, 0, 0, 0], torch.tensor([0.25, 0.75, 0.5]))
    torch.testing.assert_close(ym, torch.tensor([0.25, 0.75, 1.0]))
    torch.testing.assert_close(hm, torch.tensor([0.75, 0.25, 0.0]))
    same, targets, one = aug.mix_pairs(images, (y,), "none", 0.6, perm)
    assert same is images and targets[0] is y and one == 1.0


def test_cutmix_pastes_the_partners_box_and_weights_by_its_area():
    images = torch.stack([torch.zeros(3, 10, 10), torch.ones(3, 10, 10)])
    y = torch.tensor([0.0, 1.0])
    mixed, (ym,), lam = aug.mix_pairs(images, (y,), "cutmix", 0.9, torch.tensor([1, 0]), box=(2, 7, 0, 4))
    assert lam == pytest.approx(1 - 20 / 100)
    assert float(mixed[0].sum()) == 3 * 20 and float(mixed[0, :, 2:7, 0:4].min()) == 1.0  # the box, nothing else
    torch.testing.assert_close(ym, torch.tensor([0.2, 0.8]))
    with pytest.raises(ValueError, match="unknown mix mode"):
        aug.mix_pairs(images, (y,), "mosaic", 0.9, torch.tensor([1, 0]))


@pytest.mark.parametrize("mode", ["mixup", "cutmix"])
def test_random_mix_keeps_each_sample_mostly_itself(mode):
    rng = np.random.default_rng(0)
    images = torch.stack([torch.full((3, 32, 32), float(i)) for i in range(6)])
    y = torch.arange(6, dtype=torch.float32)
    for _ in range(20):
        mixed, (ym,), lam = aug.random_mix(images, (y,), mode, 0.4, rng)
        assert 0.5 <= lam <= 1.0
        if mode == "cutmix":  # the sample's own pixels: the weight exactly (1 where paired with itself)
            own = (mixed == images).float().mean(dim=(1, 2, 3))
            assert all(o == pytest.approx(lam, abs=1e-6) or o == 1.0 for o in own.tolist())
        torch.testing.assert_close(mixed.mean(dim=(1, 2, 3)), ym)  # constant images: pixels mix like targets


def test_train_config_refuses_unknown_mix_and_augment(capsys):
    from training import train_classifier as tc

    with pytest.raises(ValueError, match="--mix 'mosaic'"):
        tc.TrainConfig(mix="mosaic")
    with pytest.raises(ValueError, match="--precision 'fp16': one of fp32, bf16"):
        tc.TrainConfig(precision="fp16")
    with pytest.raises(ValueError, match="--sampling 'natural': one of balanced, shuffle"):
        tc.TrainConfig(sampling="natural")
    with pytest.raises(ValueError, match="--stem-pool 0: 1, or 0 with --arch atypical-resnet-v1"):
        tc.TrainConfig(stem_pool=0)  # the default arch has no max pool to drop
    assert tc.main(["--augment", "widest"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: --augment 'widest': one of default, wide, light"]


def test_resnet_without_stem_pool_keeps_twice_the_resolution():
    pooled = build_classifier(arch=RESNET_ARCH, width=8)
    unpooled = build_classifier(arch=RESNET_ARCH, width=8, stem_pool=False)
    assert pooled.state_dict().keys() == unpooled.state_dict().keys()  # same weights, no pool
    with torch.no_grad():
        x = torch.rand(1, 3, 128, 128)
        assert pooled.blocks(pooled.stem(x)).shape == (1, 64, 4, 4)
        assert unpooled.blocks(unpooled.stem(x)).shape == (1, 64, 8, 8)


def test_light_augmentation_jitters_colour_but_never_stain_or_focus():
    light = aug.AugmentConfig.light()
    assert light.p_hed == 0.0 and light.p_blur == 0.0 and light.p_gray == 0.0 and light.dihedral
    g = aug.generator(0)
    flat = torch.full((64, 3, 8, 8), 0.5)
    flat[:, 0] = 0.6  # a pinkish flat image: hue and saturation have something to move
    out = aug.augment_photometric(flat, light, g)
    per_image = out.flatten(2)
    assert float((per_image.amax(2) - per_image.amin(2)).max()) < 1e-6  # no blur/sharpen texture, no spatial change
    assert float((out - flat).abs().amax(dim=(1, 2, 3)).min()) < 1e-6  # some images left alone (p = 0.8 each)
    assert float((out - flat).abs().amax()) > 0.05  # and others clearly jittered


def _crop(dataset: str, slide: str, uid: int, atypical: bool = False) -> amibr.Crop:
    return amibr.Crop(dataset, uid, slide, 0, 0, (atypical,) * 3, atypical, Path(f"{uid}.jpg"))


def test_leave_domain_out_holds_out_every_crop_of_the_domain():
    train = [_crop("MIDOG21", "003.tiff", 1), _crop("MIDOG21", "120.tiff", 2), _crop("TUPAC16", "7", 3)]
    test = [_crop("MIDOG21", "010.tiff", 4), _crop("TUPAC16", "8", 5)]
    kept, held = amibr.leave_domain_out(train, test, 0)  # Hamamatsu XR: slides 001-050
    assert [c.uid for c in kept] == [2, 3] and [c.uid for c in held] == [1, 4]
    kept, held = amibr.leave_domain_out(train, test, amibr.DOMAINS.index("TUPAC16"))
    assert [c.uid for c in kept] == [1, 2] and [c.uid for c in held] == [3, 5]
    with pytest.raises(ValueError, match="domain"):
        amibr.leave_domain_out(train, test, 4)


def _fake_fold(run_dir: Path, ba: float, auroc: float) -> None:
    run_dir.mkdir(parents=True)
    figures = {"balanced_accuracy": ba, "auroc": auroc, "sensitivity": ba, "specificity": ba}
    (run_dir / "metrics.json").write_text(json.dumps(
        {"product_views": 4, "selected_epoch": 3, "epochs_run": 5, "test": {"views_4": figures}}))


def test_lodo_folds_summary_and_table(tmp_path):
    out = tmp_path / "recipe"
    jobs = lodo.jobs(out, ["--arch", RESNET_ARCH], in_domain=True)
    assert len(jobs) == len(amibr.DOMAINS) + 1
    assert next(iter(jobs)) == lodo.IN_DOMAIN  # started first: the shipping decision waits on it
    for d in range(len(amibr.DOMAINS)):
        cmd, run_dir = jobs[lodo.fold_name(d)]
        assert cmd[-2:] == ["--holdout-domain", str(d)] and "--arch" in cmd and run_dir == out / lodo.fold_name(d)
    assert "--holdout-domain" not in jobs[lodo.IN_DOMAIN][0]
    with pytest.raises(FileNotFoundError, match="no finished fold"):
        lodo.summarise(out)
    for d, ba in enumerate((0.7, 0.8, 0.75, 0.85)):
        _fake_fold(out / lodo.fold_name(d), ba, ba + 0.1)
    _fake_fold(out / lodo.IN_DOMAIN, 0.81, 0.9)
    s = lodo.summarise(out)
    assert s["mean_balanced_accuracy"] == pytest.approx(0.775) and s["mean_auroc"] == pytest.approx(0.875)
    assert s["std_balanced_accuracy"] == pytest.approx(np.std([0.7, 0.8, 0.75, 0.85], ddof=1))
    assert s["in_domain_test"]["balanced_accuracy"] == 0.81
    assert json.loads((out / "lodo.json").read_text())["folds"]["TUPAC16"]["balanced_accuracy"] == 0.85
    row = lodo.table([out], tmp_path / "all.json")[-1]
    assert json.loads((tmp_path / "all.json").read_text())["recipe"]["mean_auroc"] == pytest.approx(0.875)
    assert row.startswith("| recipe | 0.775 (0.065) | 0.700 | 0.800 | 0.750 | 0.850 | 0.875 | 0.810 / 0.900 |")


def test_export_only_the_classifier_keeps_the_other_models(tmp_path):
    weights = tmp_path / "weights"
    assert export.main(["--checkpoints", str(tmp_path / "none"), "--weights", str(weights)]) == 0
    before = Manifest.load(weights)
    torch.manual_seed(3)
    net = build_classifier(arch=RESNET_ARCH, width=8)
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    torch.save({"arch": RESNET_ARCH, "config": {"width": 8}, "state_dict": net.state_dict(), "threshold": 0.3,
                "metrics": {"test": {"ba": 0.8}}, "command": "train the resnet", "data": "d"}, ckpts / "classifier.pt")
    # the detector checkpoint in that folder must not be touched by --only classifier
    assert export.main(["--checkpoints", str(ckpts), "--weights", str(weights), "--only", "classifier",
                        "--command", "./export.sh --only classifier"]) == 0
    after = Manifest.load(weights)
    assert after.detector == before.detector and sha256_file(weights / "detector.onnx") == before.detector.sha256
    assert after.classifier.sha256 != before.classifier.sha256
    assert after.classifier.parameters == sum(p.numel() for p in net.parameters())
    assert after.thresholds.atypical_logit == pytest.approx(np.log(0.3 / 0.7))
    assert after.thresholds.detection_logit == before.thresholds.detection_logit
    record = after.provenance.metrics["classifier"]
    assert record["arch"] == RESNET_ARCH and record["training_command"] == "train the resnet"
    assert after.provenance.metrics["detector"] == before.provenance.metrics["detector"]
    assert "classifier replaced" in after.provenance.notes and "train the resnet" in after.provenance.command
    with pytest.raises(export.ExportError, match="no checkpoint"):
        export.main(["--checkpoints", str(tmp_path / "none"), "--weights", str(weights), "--only", "detector"])


def test_export_takes_the_threshold_for_the_plans_flip_views(tmp_path):
    weights = tmp_path / "weights"
    assert export.main(["--checkpoints", str(tmp_path / "none"), "--weights", str(weights)]) == 0
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    net = build_classifier(arch=RESNET_ARCH, width=8)
    ckpt = {"arch": RESNET_ARCH, "config": {"width": 8}, "state_dict": net.state_dict(), "threshold": 0.4,
            "thresholds_by_views": {"1": 0.2, "2": 0.3, "4": 0.4, "8": 0.45}, "metrics": {"product_views": 4}}
    torch.save(ckpt, ckpts / "classifier.pt")
    assert export.main(["--checkpoints", str(ckpts), "--weights", str(weights), "--only", "classifier",
                        "--classifier-views", "2"]) == 0
    after = Manifest.load(weights)
    assert after.plan.classifier_views == 2 and after.thresholds.atypical_logit == pytest.approx(np.log(0.3 / 0.7))
    assert export.main(["--checkpoints", str(ckpts), "--weights", str(weights), "--only", "classifier"]) == 0
    assert Manifest.load(weights).plan.classifier_views == 2  # the plan's views are kept when not given
    # a checkpoint tuned for 4 views only cannot be run with 8
    del ckpt["thresholds_by_views"]
    torch.save(ckpt, ckpts / "classifier.pt")
    with pytest.raises(export.ExportError, match="no threshold for 8 flip views"):
        export.main(["--checkpoints", str(ckpts), "--weights", str(weights), "--only", "classifier",
                     "--classifier-views", "8"])
    assert Manifest.load(weights).plan.classifier_views == 2  # nothing written: the weights still verify
    Manifest.load(weights).verified_path(weights, Manifest.load(weights).classifier)
    assert sorted(f.name for f in weights.iterdir()) == ["classifier.onnx", "detector.onnx", "manifest.json"]


@needs_amibr
def test_lodo_threshold_rules_rescore_each_fold_from_its_checkpoint(tmp_path, capsys):
    from training import classifier_eval as ev
    from training.train_classifier import TrainConfig

    out = tmp_path / "recipe"
    for d in range(len(amibr.DOMAINS)):
        torch.manual_seed(d)
        net = build_classifier(arch=RESNET_ARCH, width=8)
        (out / lodo.fold_name(d)).mkdir(parents=True)
        torch.save({"arch": RESNET_ARCH, "config": {"width": 8}, "state_dict": net.state_dict(),
                    "train_config": {**TrainConfig().__dict__, "holdout_domain": d}, "metrics": {"product_views": 1},
                    "threshold": 0.5},
                   out / lodo.fold_name(d) / "classifier.pt")
    rows = lodo.threshold_rules([out], AMIBR, tmp_path / "rules.json")
    assert rows[0] == "| recipe | LODO mean BA, max-ba threshold | LODO mean BA, equal-error threshold | LODO mean AUROC |"
    saved = json.loads((tmp_path / "rules.json").read_text())["recipe"]
    assert list(saved["folds"]) == list(amibr.DOMAINS)
    # one fold by hand: TUPAC16 held out, thresholds from the other domains' validation slides
    net, _ = ev.load_checkpoint(out / lodo.fold_name(3) / "classifier.pt")
    kept, held = amibr.leave_domain_out(*amibr.published_split(AMIBR), 3)
    _, val = amibr.split_by_slide(kept, 0.15, 0)
    p_val, p_held = (ev.predict(net, amibr.load_crops(c)) for c in (val, held))
    t, _ = ev.equal_error_threshold(amibr.labels(val), p_val)
    assert saved["folds"]["TUPAC16"]["equal-error"] == pytest.approx(
        ev.binary_metrics(amibr.labels(held), p_held, t)["balanced_accuracy"])
    assert saved["means"]["auroc"] == pytest.approx(np.mean([f["auroc"] for f in saved["folds"].values()]))
    with pytest.raises(FileNotFoundError, match="no finished fold"):
        lodo.threshold_rules([tmp_path / "empty"], AMIBR)
    # the evaluation CLI scores a fold on its own held-out domain, not on the published test split
    ev.main(["--checkpoint", str(out / lodo.fold_name(3) / "classifier.pt"), "--data", str(AMIBR), "--views", "1"])
    report = json.loads(capsys.readouterr().out)
    assert report["evaluated_on"].startswith("held-out domain TUPAC16")
    assert report["summary"] == amibr.summary(held)
    assert report["views_1"]["auroc"] == pytest.approx(saved["folds"]["TUPAC16"]["auroc"])
    # a fold directory holding another fold's checkpoint is refused, not silently re-scored
    (out / lodo.fold_name(0) / "classifier.pt").replace(out / lodo.fold_name(0) / "x.pt")
    (out / lodo.fold_name(1) / "classifier.pt").rename(out / lodo.fold_name(0) / "classifier.pt")
    with pytest.raises(ValueError, match="holdout_domain 1, expected 0"):
        lodo.threshold_rules([out], AMIBR)
