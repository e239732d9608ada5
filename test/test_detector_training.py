"""Detector training: losses, mosaic sampling, teacher refinement, evaluation, a few-step smoke run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SHARED_DATA, needs_amibr
from model.unet import LightUNet
from training import augment, losses
from training import detector_eval as ev
from training import labels as L
from training import train_detector as td



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


def synthetic_crops(n: int = 8, size: int = 128, domains=None) -> td.LabelledCrops:
    """Pale crops with a dark disk (the 'mitosis') at a random place, labelled accordingly; crop i
    has domain ``domains[i]`` (default: i % 4)."""
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
    doms = np.arange(n) % 4 if domains is None else np.asarray(domains)
    return td.LabelledCrops([None] * n, images, labels, points, mitoses, doms.astype(np.int64))


def noise_crops(n: int = 8, size: int = 32) -> td.LabelledCrops:
    """Random pixels, label and point maps (every crop and every symmetry of it is distinct);
    crop i has domain i, so the domain map says which crop each mosaic pixel came from."""
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, (n, size, size), dtype=np.uint8)
    points = np.where(rng.random((n, size, size)) < 0.05, labels, L.IGNORE).astype(np.uint8)
    return td.LabelledCrops([None] * n, images, labels, points, [np.zeros((0, 2))] * n, np.arange(n))


# photometric changes off: mosaic pixels are the crops' own pixels (up to a float rounding)
NO_PHOTOMETRIC = augment.AugmentConfig(p_hed=0.0, p_brightness_contrast=0.0, p_blur=0.0)
SYMMETRIES = [(k, f) for k in range(4) for f in (False, True)]


def _symmetry(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    return torch.rot90(x.flip(-1) if flip else x, k, dims=(-2, -1))


def test_tile_2x2_places_quadrants_in_row_major_order():
    s = 3
    x = torch.arange(8 * 2 * s * s).reshape(8, 2, s, s)  # 2 mosaics of 4 tiles, 2 channels
    out = td._tile_2x2(x)
    assert out.shape == (2, 2, 2 * s, 2 * s)
    for b in range(2):
        assert torch.equal(out[b, :, :s, :s], x[4 * b])
        assert torch.equal(out[b, :, :s, s:], x[4 * b + 1])
        assert torch.equal(out[b, :, s:, :s], x[4 * b + 2])
        assert torch.equal(out[b, :, s:, s:], x[4 * b + 3])
    maps = x[:, 0]  # no channel axis: label maps
    assert torch.equal(td._tile_2x2(maps), out[:, 0])
    # a broadcast (expanded) per-crop value tiles into constant quadrants
    dom = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7], dtype=torch.uint8)[:, None, None].expand(-1, s, s)
    tiled = td._tile_2x2(dom)
    assert torch.equal(tiled[1, :s, s:], torch.full((s, s), 5, dtype=torch.uint8))
    assert torch.equal(tiled[1, s:, :s], torch.full((s, s), 6, dtype=torch.uint8))


def test_device_crops_hold_the_labelled_crops():
    ds = synthetic_crops(4, size=64, domains=[3, 0, 2, 1])
    dev = td.DeviceCrops.of(ds, torch.device("cpu"))
    assert len(dev) == 4 and dev.images.dtype == torch.uint8 and dev.images.shape == (4, 64, 64, 3)
    assert torch.equal(dev.labels, torch.from_numpy(ds.labels)) and torch.equal(dev.points, torch.from_numpy(ds.points))
    assert dev.domains.tolist() == [3, 0, 2, 1]


def test_mosaic_batch_keeps_images_labels_points_and_domains_aligned():
    ds = synthetic_crops(8, domains=np.arange(8))  # one domain per crop
    dev = td.DeviceCrops.of(ds, torch.device("cpu"))
    g = augment.generator(1)
    rng = np.random.default_rng(1)
    for config in (augment.AugmentConfig(), augment.AugmentConfig.strong()):
        for _ in range(3):
            groups = torch.from_numpy(np.stack([rng.permutation(8)[:4] for _ in range(3)]))
            batch = td.mosaic_batch(dev, groups, 160, g, config)
            image, lab, pts, dom = batch["image"], batch["labels"], batch["points"], batch["domains"]
            assert image.shape == (3, 3, 160, 160) and image.dtype == torch.float32
            assert lab.shape == pts.shape == dom.shape == (3, 160, 160)
            assert lab.dtype == pts.dtype == torch.uint8
            assert image.min() >= 0 and image.max() <= 1 + 1e-6
            dark = image.mean(1) < 120 / 255
            mitosis = lab == L.MITOSIS
            assert mitosis.any()  # 160 of 256 px: at least one of the four disks is in view
            assert dark[mitosis].float().mean() > 0.8  # (blur softens the disks' edges)
            assert not dark[lab == L.BACKGROUND].any()
            assert set(pts[pts != L.IGNORE].tolist()) <= {L.MITOSIS}
            assert (lab[pts == L.MITOSIS] == L.MITOSIS).all()
            for b in range(3):
                # every pixel shows one of the group's crops, each crop's area a rectangle
                assert set(dom[b].unique().tolist()) <= {int(ds.domains[i]) for i in groups[b]}
                for d in dom[b].unique():
                    rows, cols = torch.nonzero(dom[b] == d, as_tuple=True)
                    h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
                    assert h * w == len(rows) and h <= 128 and w <= 128


def test_mosaic_batch_shows_each_crop_where_its_domain_says():
    s, window = 32, 40
    ds = noise_crops(8, s)
    dev = td.DeviceCrops.of(ds, torch.device("cpu"))
    image_f = augment.to_float(dev.images)
    groups = torch.tensor([[0, 1, 2, 3], [7, 5, 6, 4], [2, 0, 4, 6]])
    g = augment.generator(0)
    used = set()
    for _ in range(4):
        batch = td.mosaic_batch(dev, groups, window, g, NO_PHOTOMETRIC)
        for b in range(len(groups)):
            dom = batch["domains"][b]
            # the window starts at (y0, x0) of the 2s x 2s mosaic; the seams are at s - y0, s - x0
            seam_y = int((dom[:, 0] != dom[0, 0]).nonzero()[0]) if (dom[:, 0] != dom[0, 0]).any() else window
            seam_x = int((dom[0] != dom[0, 0]).nonzero()[0]) if (dom[0] != dom[0, 0]).any() else window
            y0, x0 = s - seam_y, s - seam_x
            assert 0 <= y0 <= 2 * s - window and 0 <= x0 <= 2 * s - window
            for q, crop in enumerate(groups[b].tolist()):
                r, c = divmod(q, 2)
                # the part of quadrant q inside the window, in mosaic and in window coordinates
                my0, my1 = max(r * s, y0), min((r + 1) * s, y0 + window)
                mx0, mx1 = max(c * s, x0), min((c + 1) * s, x0 + window)
                if my0 >= my1 or mx0 >= mx1:
                    continue
                win = (slice(my0 - y0, my1 - y0), slice(mx0 - x0, mx1 - x0))
                tile = (slice(my0 - r * s, my1 - r * s), slice(mx0 - c * s, mx1 - c * s))
                assert (dom[win] == crop).all()
                matches = [(k, f) for k, f in SYMMETRIES
                           if torch.allclose(batch["image"][b][(slice(None), *win)],
                                             _symmetry(image_f[crop], k, f)[(slice(None), *tile)], atol=1e-6)]
                assert len(matches) == 1, (b, q, matches)  # the crop's pixels, under one symmetry
                k, f = matches[0]
                used.add((k, f))
                # ... and its labels and points under the same symmetry
                assert torch.equal(batch["labels"][b][win], _symmetry(dev.labels[crop], k, f)[tile])
                assert torch.equal(batch["points"][b][win], _symmetry(dev.points[crop], k, f)[tile])
    assert len(used) >= 6  # symmetries are drawn per crop


def test_mosaic_batch_is_seeded():
    dev = td.DeviceCrops.of(synthetic_crops(8), torch.device("cpu"))
    groups = torch.arange(8).reshape(2, 4)
    a = td.mosaic_batch(dev, groups, 128, augment.generator(4), augment.AugmentConfig())
    b = td.mosaic_batch(dev, groups, 128, augment.generator(4), augment.AugmentConfig())
    c = td.mosaic_batch(dev, groups, 128, augment.generator(5), augment.AugmentConfig())
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["image"], c["image"])


def test_batches_use_every_crop_once_per_epoch():
    ds = noise_crops(12, 32)  # crop i has domain i
    dev = td.DeviceCrops.of(ds, torch.device("cpu"))
    g = augment.generator(0)
    out = list(td.batches(dev, 2, 64, np.random.default_rng(0), g, NO_PHOTOMETRIC, augment.AugmentConfig.strong()))
    assert [len(b["image"]) for b in out] == [2, 1]  # 12 crops: 3 mosaics
    # window = the whole mosaic: all four crops are in view
    seen = torch.cat([b["domains"].unique() for b in out]).tolist()
    assert sorted(seen) == list(range(12))
    for b in out:
        assert b["strong"].shape == b["image"].shape and not torch.equal(b["strong"], b["image"])
        assert b["strong"].min() >= 0 and b["strong"].max() <= 1 + 1e-6
    assert "strong" not in next(td.batches(dev, 2, 64, np.random.default_rng(0), g, NO_PHOTOMETRIC))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_mosaic_batches_on_the_gpu():
    s = 32
    ds = noise_crops(8, s)
    dev = td.DeviceCrops.of(ds, torch.device("cuda"))
    g = augment.generator(0, "cuda")
    out = list(td.batches(dev, 2, 2 * s, np.random.default_rng(0), g, NO_PHOTOMETRIC, augment.AugmentConfig.strong()))
    assert len(out) == 1 and all(t.is_cuda for t in out[0].values())
    batch = out[0]
    # the whole mosaic in view: each quadrant is one crop under one symmetry, labels alike
    image_f = augment.to_float(dev.images)
    for b in range(2):
        for r in range(2):
            for c in range(2):
                quadrant = (slice(r * s, (r + 1) * s), slice(c * s, (c + 1) * s))
                crop = int(batch["domains"][b][quadrant][0, 0])
                assert (batch["domains"][b][quadrant] == crop).all()
                match = [(k, f) for k, f in SYMMETRIES if torch.allclose(
                    batch["image"][b][(slice(None), *quadrant)], _symmetry(image_f[crop], k, f), atol=1e-6)]
                assert len(match) == 1
                assert torch.equal(batch["labels"][b][quadrant], _symmetry(dev.labels[crop], *match[0]))
    assert sorted(batch["domains"].unique().tolist()) == list(range(8))


def test_domains_at_samples_the_centre_of_each_cell():
    n, h, w, stride = 2, 32, 48, 8
    values = torch.arange(n * h * w).reshape(n, h, w)
    out = td.domains_at(values, stride)
    assert out.shape == (n, h // stride, w // stride)
    for i in range(h // stride):
        for j in range(w // stride):
            assert torch.equal(out[:, i, j], values[:, i * stride + stride // 2, j * stride + stride // 2])
    # on a mosaic domain map: the quadrant of each cell, matching the bottleneck's grid
    quadrants = torch.tensor([[0, 1], [2, 3]]).repeat_interleave(64, 0).repeat_interleave(64, 1)[None]
    net = LightUNet(channels=(8, 16, 32)).eval()
    with torch.no_grad():
        _, bottleneck = net(torch.rand(1, 3, 128, 128), return_features=True)
    cells = td.domains_at(quadrants, net.stride)
    assert cells.shape[-2:] == bottleneck.shape[-2:] == (16, 16)
    assert torch.equal(cells[0], torch.tensor([[0, 1], [2, 3]]).repeat_interleave(8, 0).repeat_interleave(8, 1))


def _fake_crops(n: int) -> list:
    from training import data

    return [data.Crop("MIDOG21", k, f"{1 + 60 * (k % 3):03d}.tiff", 64, 64, (False,) * 3, False, Path(f"{k}.jpg"))
            for k in range(n)]


def test_label_crops_writes_and_reads_the_cache(tmp_path, monkeypatch):
    from training import data

    calls = []

    def fake_load(crops):
        return np.stack([np.full((16, 16, 3), 10 * c.uid, np.uint8) for c in crops])

    def fake_labels(image, crop, annotations):
        calls.append(crop.uid)
        labels = np.full((16, 16), crop.uid % 4, np.uint8)
        points = np.full((16, 16), L.IGNORE, np.uint8)
        points[crop.uid, crop.uid] = L.MITOSIS
        mitoses = np.array([[crop.uid, 1.5]] * (crop.uid % 3), float).reshape(-1, 2)  # 0, 1 or 2 of them
        return L.CropLabels(labels, points, mitoses, np.zeros((0, 2)))

    monkeypatch.setattr(data, "load_crops", fake_load)
    monkeypatch.setattr(L, "crop_labels", fake_labels)
    crops = _fake_crops(5)
    cache = tmp_path / "cache"
    first = td.label_crops(crops, {}, cache)
    assert calls == [0, 1, 2, 3, 4]
    files = list(cache.glob("labels-*.npz"))
    assert len(files) == 1 and not list(cache.glob("*.tmp*"))
    second = td.label_crops(crops, {}, cache)
    assert calls == [0, 1, 2, 3, 4]  # read from the cache: not labelled again
    for ds in (first, second):
        assert ds.crops == crops and len(ds) == 5
        assert ds.domains.tolist() == [0, 1, 2, 0, 1]  # slides 001, 061, 121
        np.testing.assert_array_equal(ds.images, fake_load(crops))
    np.testing.assert_array_equal(second.labels, first.labels)
    np.testing.assert_array_equal(second.points, first.points)
    assert second.labels.dtype == first.labels.dtype == np.uint8
    assert [m.shape for m in second.mitoses] == [(0, 2), (1, 2), (2, 2), (0, 2), (1, 2)]
    for a, b in zip(first.mitoses, second.mitoses):
        np.testing.assert_array_equal(a, b)
    # other crops, another cache file; no cache dir, no file
    td.label_crops(crops[:3], {}, cache)
    assert len(list(cache.glob("labels-*.npz"))) == 2 and calls[-3:] == [0, 1, 2]
    td.label_crops(crops, {}, None)
    assert len(calls) == 13 and len(list(tmp_path.rglob("*.npz"))) == 2


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
    z = np.full((200, 300), -10.0, np.float32)  # mitosis logits
    z[50:60, 50:60] = 5.0  # a true mitosis
    z[52:56, 70:75] = 2.0  # a weaker duplicate 20 px away: suppressed
    z[150:160, 250:260] = 0.0  # a false detection
    z[100:102, 100:102] = -3.0  # under the floor (logit -2.2 = probability 0.1)
    pts, scores = ev.candidates_from_map(z)  # the product's floor, centroid radius and 7.5 um = 30 px
    np.testing.assert_allclose(pts, [[54.5, 54.5], [254.5, 154.5]])
    np.testing.assert_allclose(scores, [5.0, 0.0])
    s = ev.sweep(pts, scores, np.array([[55.0, 55.0], [10.0, 190.0]]), area_mm2=0.5)
    at_low, at_high = s.at(-1.0), s.at(2.0)
    assert at_low["recall"] == 0.5 and at_low["fp_per_mm2"] == 2.0
    assert at_high["recall"] == 0.5 and at_high["fp_per_mm2"] == 0.0
    assert s.threshold_for_fp(0.0) == pytest.approx(0.05)  # the first grid logit above the false one


def test_mosaic_offsets_ground_truth():
    ds = synthetic_crops(5)
    m = ev.build_mosaic(ds.images, ds.mitoses, cols=2)
    assert m.image.shape == (384, 256, 3) and m.n_crops == 5
    np.testing.assert_array_equal(m.gt_points[3], ds.mitoses[3][0] + [128, 128])
    x, y = m.gt_points[4].astype(int)
    assert m.image[y, x].mean() < 120  # the dark disk is where the point says


def test_torch_detector_runs_through_the_product_pipeline():
    """A PyTorch net evaluated via TorchDetector gives what its own forward pass gives."""
    from mitosis_analysis.manifest import InferencePlan
    from mitosis_analysis.pipeline import mitosis_logit_map
    from mitosis_analysis.settings import Settings

    net = LightUNet(channels=(8, 16)).eval()
    image = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    plan = InferencePlan(tile_size=128, min_tissue_fraction=0.0)
    tiled = mitosis_logit_map(image, ev.TorchDetector(net, plan=plan), Settings())
    with torch.no_grad():
        z = net(torch.from_numpy(image.transpose(2, 0, 1)[None] / 255.0).float())[0].double()
        p = torch.softmax(z, 0)[2]
        whole = torch.log(p / (1 - p)).numpy()  # the mitosis logit, computed the long way
    np.testing.assert_allclose(tiled, whole, atol=1e-5)  # one tile: no blending involved


@needs_amibr
def test_training_smoke_run_writes_an_exportable_checkpoint(tmp_path, monkeypatch):
    from training import adversarial

    seen = []  # (logits shape, domain targets) of every domain-loss call
    real_domain_loss = adversarial.domain_loss

    def spy(logits, domains):
        seen.append((tuple(logits.shape), domains.clone()))
        return real_domain_loss(logits, domains)

    monkeypatch.setattr(adversarial, "domain_loss", spy)
    mosaics = []  # the training batches
    real_mosaic_batch = td.mosaic_batch

    def mosaic_spy(*args, **kwargs):
        mosaics.append(real_mosaic_batch(*args, **kwargs))
        return mosaics[-1]

    monkeypatch.setattr(td, "mosaic_batch", mosaic_spy)
    ckpt = tmp_path / "checkpoints" / "detector.pt"
    run = tmp_path / "run"
    cache = tmp_path / "label-cache"
    args = ["--data", str(SHARED_DATA), "--limit-crops", "16", "--max-steps", "2", "--batch-size", "2",
            "--window", "128", "--channels", "8", "16", "--checkpoint", str(ckpt), "--run-dir", str(run),
            "--threads", "1", "--consistency", "0.2", "--adversarial", "0.1", "--device", "cpu",
            "--label-cache", str(cache)]
    assert td.main(args) == 0
    saved = torch.load(ckpt, weights_only=False)
    assert {"arch", "config", "state_dict", "threshold", "metrics"} <= set(saved)
    assert 0.0 <= saved["threshold"] <= 1.0
    # the domain head is a training device only: the checkpoint holds the detector alone
    assert set(saved["state_dict"]) == set(LightUNet(channels=(8, 16)).state_dict())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["history"] and (run / "curves.png").is_file()
    record = metrics["history"][-1]
    assert record["step"] == 2 and np.isfinite(record["consistency"]) and np.isfinite(record["domain"])
    # one domain-loss call per step, per bottleneck position, against the batch's domain map
    assert len(seen) == len(mosaics) == 2
    for (shape, domains), batch in zip(seen, mosaics):
        assert shape == (2, 4, 32, 32) and domains.shape == (2, 32, 32)
        assert torch.equal(domains, td.domains_at(batch["domains"], 4))
        assert set(domains.unique().tolist()) <= set(range(4))
    assert len(list(cache.glob("labels-*.npz"))) == 2  # train and validation label maps, cached
    # a second run over the same crops reads the cached maps instead of labelling again
    def no_labelling(*_args):
        raise AssertionError("label maps should come from the cache")

    monkeypatch.setattr(L, "crop_labels", no_labelling)
    again = [a if a != str(run) else str(tmp_path / "run2") for a in args]
    assert td.main(again[: again.index("--max-steps") + 1] + ["1"] + again[again.index("--max-steps") + 2 :]) == 0
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


def test_a_window_that_is_not_a_multiple_of_the_stride_is_refused(capsys):
    with pytest.raises(SystemExit):
        td.parse_args(["--window", "200"])
    assert "multiple of the network's stride 16" in capsys.readouterr().err
    assert td.parse_args(["--window", "208", "--channels", "8", "16", "32", "64"]).window == 208


@needs_amibr
def test_training_with_real_windows_feeds_them_to_every_step(tmp_path, monkeypatch):
    """--real-windows N: every step's batch has the mosaics plus N field windows (outside the domain
    loss), the held-out ICPR slides are passed on, and the checkpoint says what it was trained on."""
    from training import adversarial
    from training import field_windows as fw

    rng = np.random.default_rng(0)
    labels = np.zeros((160, 160), np.uint8)
    labels[70:90, 70:90] = L.MITOSIS
    field = fw.LabelledField("A02_01", "02", rng.integers(0, 255, (160, 160, 3), dtype=np.uint8), labels,
                             np.full((160, 160), L.IGNORE, np.uint8), np.array([[80.0, 80.0]]), None)
    asked = []

    def fake_fields(data, cache, exclude_slides=()):
        asked.append(tuple(exclude_slides))
        return [field]

    monkeypatch.setattr(fw, "load_fields", fake_fields)
    seen = []
    real_domain_loss = adversarial.domain_loss
    monkeypatch.setattr(adversarial, "domain_loss", lambda lg, d: seen.append(d.clone()) or real_domain_loss(lg, d))
    ckpt = tmp_path / "detector.pt"
    args = ["--data", str(SHARED_DATA), "--limit-crops", "16", "--max-steps", "2", "--batch-size", "2",
            "--window", "128", "--channels", "8", "16", "--checkpoint", str(ckpt), "--run-dir", str(tmp_path / "run"),
            "--threads", "1", "--device", "cpu", "--label-cache", str(tmp_path / "cache"),
            "--real-windows", "3", "--icpr-holdout", "00", "01"]
    assert td.main(args) == 0
    assert asked == [("00", "01")]
    assert len(seen) == 2 and all(d.shape == (5, 32, 32) for d in seen)  # 2 mosaics + 3 windows per step
    assert all((d[2:] == adversarial.IGNORE).all() and (d[:2] < 4).all() for d in seen)
    assert "ICPR 2012 fields" in torch.load(ckpt, weights_only=False)["data"]
