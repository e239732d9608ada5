"""Detector training: losses, mosaic sampling, teacher refinement, evaluation, a few-step smoke run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model.unet import LightUNet
from training import augment, losses
from training import detector_eval as ev
from training import labels as L
from training import train_detector as td

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "ami-br" / "AMI-BR.csv").is_file(), reason=f"no data at {DATA}")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models on a shared 2-core machine: one thread is ~50x faster than two fighting for it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def one_hot_logits(target: torch.Tensor, scale: float = 30.0) -> torch.Tensor:
    return torch.nn.functional.one_hot(target.long(), 4).permute(0, 3, 1, 2).float() * scale


def test_losses_vanish_on_perfect_logits_and_ignore_unlabelled_pixels():
    target = torch.randint(0, 4, (2, 16, 16))
    logits = one_hot_logits(target)
    points = torch.full((2, 16, 16), losses.IGNORE, dtype=torch.uint8)
    total, terms = losses.detector_loss(logits, target, points)
    assert float(total) < 1e-3 and terms["point"] == 0.0
    # wrong everywhere except at one annotated point -> the point loss sees only that pixel
    points[0, 3, 3] = target[0, 3, 3]
    wrong = one_hot_logits((target + 1) % 4)
    wrong[0, :, 3, 3] = logits[0, :, 3, 3]
    assert float(losses.point_cross_entropy(wrong, points)) < 1e-3
    assert float(losses.cross_entropy(wrong, target)) > 1.0


def test_focal_is_below_cross_entropy_and_dice_weights_rare_classes():
    target = torch.zeros(1, 32, 32, dtype=torch.long)
    target[0, 10:14, 10:14] = L.MITOSIS
    logits = torch.randn(1, 4, 32, 32)
    assert float(losses.focal(logits, target)) < float(losses.cross_entropy(logits, target))
    # missing the small mitosis costs more Dice than missing the same area of background
    good = one_hot_logits(target)
    miss_mitosis = good.clone()
    miss_mitosis[0, :, 10:14, 10:14] = one_hot_logits(torch.zeros(1, 4, 4, dtype=torch.long))[0]
    miss_background = good.clone()
    miss_background[0, :, 20:24, 20:24] = one_hot_logits(torch.full((1, 4, 4), L.NORMAL))[0]
    assert float(losses.adaptive_dice(miss_mitosis, target)) > 5 * float(losses.adaptive_dice(miss_background, target))


def synthetic_crops(n: int = 8, size: int = 128) -> td.LabelledCrops:
    """Pale crops with a dark disk (the 'mitosis') at a random place, labelled accordingly."""
    rng = np.random.default_rng(0)
    images = np.full((n, size, size, 3), (230, 200, 220), np.uint8)
    labels = np.zeros((n, size, size), np.uint8)
    points = np.full((n, size, size), L.IGNORE, np.uint8)
    mitoses = []
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        x, y = rng.integers(20, size - 20, 2)
        disk = (xx - x) ** 2 + (yy - y) ** 2 <= 8**2
        images[i][disk] = (60, 30, 90)
        labels[i][disk] = L.MITOSIS
        points[i, y, x] = L.MITOSIS
        mitoses.append(np.array([[x, y]], float))
    return td.LabelledCrops([None] * n, images, labels, points, mitoses)


def test_mosaic_samples_keep_image_and_labels_aligned():
    ds = synthetic_crops()
    rng = np.random.default_rng(1)
    for _ in range(5):
        image, lab, pts = td.mosaic_sample(ds, rng.permutation(len(ds))[:4], 160, rng, augment.AugmentConfig())
        assert image.shape == (160, 160, 3) and lab.shape == pts.shape == (160, 160)
        dark = image.mean(-1) < 120
        if (lab == L.MITOSIS).any():
            assert dark[lab == L.MITOSIS].mean() > 0.9
        assert not dark[lab == L.BACKGROUND].any()
        assert set(np.unique(pts[pts != L.IGNORE])) <= {L.MITOSIS}
        assert (lab[pts == L.MITOSIS] == L.MITOSIS).all()


def test_teacher_refinement_never_touches_annotations():
    teacher = LightUNet(channels=(8, 16)).eval()
    labels = torch.randint(0, 4, (2, 32, 32), dtype=torch.uint8)
    out = td.refine_with_teacher(teacher, torch.rand(2, 3, 32, 32), labels, confidence=0.5)
    fixed = (labels == L.MITOSIS) | (labels == L.HARD_NEGATIVE)
    assert torch.equal(out[fixed], labels[fixed])
    assert set(out[~fixed].unique().tolist()) <= {L.BACKGROUND, L.NORMAL}


def test_a_few_steps_reduce_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    ds = synthetic_crops(4, size=64)
    net = LightUNet(channels=(8, 16, 32))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    image = td.to_tensor(ds.images)
    target, points = torch.from_numpy(ds.labels), torch.from_numpy(ds.points)
    history = []
    for _ in range(25):
        loss, _ = losses.detector_loss(net(image), target, points)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    assert history[-1] < 0.5 * history[0]


def test_postprocessing_and_sweep():
    p = np.zeros((200, 300), np.float32)
    p[50:60, 50:60] = 0.9  # a true mitosis
    p[52:56, 70:75] = 0.5  # a weaker duplicate 20 px away: suppressed
    p[150:160, 250:260] = 0.3  # a false detection
    p[100:102, 100:102] = 0.95  # too small (4 px)
    pts, scores = ev.candidates_from_map(p)  # the product's floor 0.1, 12 px, 7.5 um = 30 px
    np.testing.assert_allclose(pts, [[54.5, 54.5], [254.5, 154.5]])
    s = ev.sweep(pts, scores, np.array([[55.0, 55.0], [10.0, 190.0]]), area_mm2=0.5)
    at_low, at_high = s.at(0.2), s.at(0.5)
    assert at_low["recall"] == 0.5 and at_low["fp_per_mm2"] == 2.0
    assert at_high["recall"] == 0.5 and at_high["fp_per_mm2"] == 0.0
    assert s.threshold_for_fp(0.0) == pytest.approx(0.31)


def test_mosaic_offsets_ground_truth():
    ds = synthetic_crops(5)
    m = ev.build_mosaic(ds.images, ds.mitoses, cols=2)
    assert m.image.shape == (384, 256, 3) and m.n_crops == 5
    np.testing.assert_array_equal(m.gt_points[3], ds.mitoses[3][0] + [128, 128])
    x, y = m.gt_points[4].astype(int)
    assert m.image[y, x].mean() < 120  # the dark disk is where the point says


def test_torch_detector_runs_through_the_product_pipeline():
    """A PyTorch net evaluated via TorchDetector gives what its own forward pass gives."""
    from mitosis_analysis.pipeline import mitosis_probability_map
    from mitosis_analysis.settings import Settings

    net = LightUNet(channels=(8, 16)).eval()
    image = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    settings = Settings(tile_size=128, min_tissue_fraction=0.0)
    tiled = mitosis_probability_map(image, ev.TorchDetector(net), settings)
    with torch.no_grad():
        whole = torch.softmax(net(torch.from_numpy(image.transpose(2, 0, 1)[None] / 255.0).float()), 1)[0, 2].numpy()
    np.testing.assert_allclose(tiled, whole, atol=1e-5)  # one tile: no blending involved


@needs_data
def test_training_smoke_run_writes_an_exportable_checkpoint(tmp_path):
    ckpt = tmp_path / "checkpoints" / "detector.pt"
    run = tmp_path / "run"
    args = ["--data", str(DATA), "--limit-crops", "16", "--max-steps", "2", "--batch-size", "2",
            "--window", "128", "--channels", "8", "16", "--checkpoint", str(ckpt), "--run-dir", str(run),
            "--threads", "1", "--consistency", "0.1"]
    assert td.main(args) == 0
    saved = torch.load(ckpt, weights_only=False)
    assert {"arch", "config", "state_dict", "threshold", "metrics"} <= set(saved)
    assert 0.0 <= saved["threshold"] <= 1.0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["history"] and (run / "curves.png").is_file()
    from training import export

    assert export.main(["--checkpoints", str(ckpt.parent), "--weights", str(tmp_path / "weights")]) == 0


def test_temperature_scales_the_logits_and_survives_a_state_dict_round_trip():
    torch.manual_seed(0)
    net = LightUNet(channels=(8, 16)).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        base = net(x)
        net.temperature.fill_(0.5)
        sharp = net(x)
    torch.testing.assert_close(sharp, 2 * base)
    copy = LightUNet(channels=(8, 16)).eval()
    copy.load_state_dict(net.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(copy(x), sharp)


def test_threshold_rules():
    s = ev.Sweep(thresholds=np.array([0.2, 0.5, 0.8]), recall=np.array([0.95, 0.9, 0.5]),
                 fp_per_mm2=np.array([100.0, 4.0, 0.0]), precision=np.array([0.9, 0.99, 1.0]), n_gt=100, area_mm2=1.0)
    assert ev.choose_threshold(s, "fp-budget", 5.0) == 0.5
    # on an ROI (10 mitoses / mm^2) 100 FP / mm^2 ruins F1 even at 0.95 recall
    f = ev.roi_f1(s, 10.0)
    assert f[1] > f[2] > f[0]
    assert ev.choose_threshold(s, "roi-f1") == 0.5
    with pytest.raises(ValueError):
        ev.choose_threshold(s, "magic")
