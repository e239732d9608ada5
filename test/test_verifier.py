"""Stage 2: the verifier model, its ONNX export, its crops, its sampling and threshold choice, and
the colour/JPEG augmentations it trains with."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import model
from mitosis_analysis.classify import extract_crops, mean_over_views, tta_views
from mitosis_analysis.evaluate.detection import DetectionCounts
from model.verifier import INPUT_SIZE, Verifier
from training import augment as aug
from training import export_verifier
from training import real_fields as rf
from training import train_verifier as tv


def test_verifier_gives_one_logit_per_crop_and_is_small():
    net = model.build("verifier").eval()
    with torch.no_grad():
        out = net(torch.rand(5, 3, INPUT_SIZE, INPUT_SIZE))
    assert out.shape == (5,) and out.dtype == torch.float32
    assert sum(p.numel() for p in net.parameters()) < 300_000  # runs on every candidate on a CPU
    assert model.OUTPUT_NAMES["verifier"] == "logit"
    with pytest.raises(ValueError):
        model.build("verifier", arch="resnet50")


def test_normalisation_is_in_the_graph():
    a = Verifier(mean=(0.5, 0.5, 0.5), std=(1.0, 1.0, 1.0)).eval()
    b = Verifier(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)).eval()
    b.load_state_dict({k: v for k, v in a.state_dict().items() if k not in ("mean", "std")}, strict=False)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x - 0.5))


def test_onnx_export_matches_pytorch_with_a_dynamic_batch(tmp_path):
    import onnxruntime as ort

    torch.manual_seed(1)
    net = Verifier().eval()
    path = tmp_path / "verifier.onnx"
    diff = export_verifier.export_verifier(net, path)
    assert diff <= 1e-4
    from mitosis_analysis.inference import to_model_input

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logit"]
    for n in (1, 3, 64):
        pixels = np.random.default_rng(n).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)  # uint8 NHWC in
        (got,) = session.run(None, {"image": pixels})
        with torch.no_grad():
            expected = net(torch.from_numpy(to_model_input(pixels))).numpy()
        assert got.shape == (n,)
        np.testing.assert_allclose(got, expected, atol=1e-4)
    assert export_verifier.ms_per_crop(path, threads=1, batch=4, repeats=2) > 0


def _member(path, seed: int, verify_floor: float = 0.2, views: int = 4):
    torch.manual_seed(seed)
    net = Verifier(width=4).eval()
    torch.save({"arch": "verifier-resnet-v1", "config": {"width": 4, "input_size": INPUT_SIZE},
                "state_dict": net.state_dict(), "threshold": 1.0, "verify_floor": verify_floor, "views": views,
                "command": f"train seed {seed}"}, path)
    return net


def test_an_ensemble_of_verifiers_exports_as_one_graph_of_their_mean_logit(tmp_path):
    """Several checkpoints -> one ONNX graph whose logit is the members' mean (what the product then
    averages over flip views); --save-checkpoint keeps it, with the threshold, for ./export.sh."""
    import onnxruntime as ort

    nets = [_member(tmp_path / f"m{i}.pt", i) for i in range(2)]
    out = tmp_path / "verifier.onnx"
    description, ckpt = export_verifier.export_checkpoint([tmp_path / "m0.pt", tmp_path / "m1.pt"], out, timing=False)
    assert ckpt["arch"] == "verifier-ensemble-v1" and ckpt["views"] == 4 and ckpt["verify_floor"] == 0.2
    assert description["input_size"] == INPUT_SIZE and description["onnx_vs_pytorch_max_abs_diff"] <= 1e-4
    pixels = np.random.default_rng(0).integers(0, 256, (5, INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
    (got,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"image": pixels})
    x = aug.to_float(torch.from_numpy(pixels))
    with torch.no_grad():
        expected = torch.stack([n(x) for n in nets]).mean(0).numpy()
        assert not np.allclose(nets[0](x).numpy(), expected, atol=1e-3)  # the members do differ
    np.testing.assert_allclose(got, expected, atol=1e-4)

    saved = tmp_path / "ensemble.pt"
    assert export_verifier.main(["--checkpoint", str(tmp_path / "m0.pt"), str(tmp_path / "m1.pt"), "--out",
                                 str(tmp_path / "again.onnx"), "--threshold", "3.5", "--detector-override", "10",
                                 "--save-checkpoint", str(saved)]) == 0
    reloaded, again = export_verifier.load(saved)
    assert again["threshold"] == 3.5 and again["views"] == 4 and again["command"] == "train seed 0 ; train seed 1"
    assert again["detector_override_logit"] == 10.0  # ./export.sh installs it with the threshold
    with torch.no_grad():
        np.testing.assert_allclose(reloaded(x).numpy(), expected, atol=1e-6)


def test_an_ensemble_refuses_members_trained_for_another_floor(tmp_path):
    _member(tmp_path / "a.pt", 0, verify_floor=0.2)
    _member(tmp_path / "b.pt", 1, verify_floor=0.1)
    with pytest.raises(export_verifier.export.ExportError, match="verify_floor"):
        export_verifier.load([tmp_path / "a.pt", tmp_path / "b.pt"])


def test_verifier_crops_are_centred_on_the_candidate():
    """Training (train_verifier) and the product (pipeline.verify_candidates) cut the verifier's
    crops with the same function: the candidate's rounded pixel at the crop's centre."""
    image = np.zeros((100, 120, 3), np.uint8)
    image[40, 70] = 255
    crops = extract_crops(image, np.array([[70.2, 39.8], [3.0, 3.0]]), 16)
    assert crops.shape == (2, 16, 16, 3) and crops.dtype == np.uint8
    assert crops[0, 8, 8, 0] == 255 and crops[0].sum() == 3 * 255
    assert extract_crops(image, np.zeros((0, 2)), 16).shape == (0, 16, 16, 3)


def _pool():
    source = np.array(["icpr_pos"] * 4 + ["amibr_pos"] * 6 + ["cand_A"] * 10 + ["cand_H"] * 10 + ["ma_neg"] * 3)
    slide = np.array(["00", "01", "00", "01"] + [""] * 6 + ["00"] * 5 + ["01"] * 5 + ["00"] * 5 + ["01"] * 5 + [""] * 3)
    return {"images": np.zeros((len(source), tv.POOL_SIZE, tv.POOL_SIZE, 3), np.uint8), "source": source,
            "slide": slide, "label": np.isin(source, tv.POSITIVE_SOURCES).astype(np.float32)}


def test_sampling_is_balanced_and_respects_the_held_out_slide_and_weights():
    pool = _pool()
    allowed = pool["slide"] != "01"
    weights = dict(tv.SOURCE_WEIGHTS, cand_H=0.0)
    idx = tv.sample(pool, allowed, weights, 400, np.random.default_rng(0))
    assert len(idx) == 400 and pool["label"][idx].sum() == 200
    assert set(pool["slide"][idx]) <= {"00", ""}  # nothing of the held-out slide
    assert "cand_H" not in set(pool["source"][idx])  # weight 0 removes a source


def test_ema_returns_the_moving_average_of_the_weights(monkeypatch):
    """--ema D: the network returned (scored, saved) is the exponential moving average of the
    weights along training; --ema 0 returns the last weights, as before."""
    pool = _pool()
    pool["images"] = np.random.default_rng(0).integers(0, 256, pool["images"].shape, dtype=np.uint8)
    args = SimpleNamespace(seed=0, width=4, input_size=tv.INPUT_SIZE, lr=1e-2, weight=[], drop=[], steps=3, batch=8,
                           no_aug=True, gamma=0.0, ema=0.0)
    allowed = np.ones(len(pool["source"]), bool)
    seen = []
    monkeypatch.setattr(tv, "print", lambda *a, **k: None, raising=False)
    real_step = torch.optim.AdamW.step

    def step_and_record(self, *a, **k):
        out = real_step(self, *a, **k)
        seen.append([p.detach().clone() for group in self.param_groups for p in group["params"]])
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", step_and_record)
    plain = tv.train(pool, allowed, args)
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), seen[-1]))  # the last weights
    seen.clear()
    averaged = tv.train(pool, allowed, SimpleNamespace(**{**vars(args), "ema": 0.5}))
    expected = seen[0]  # the first update copies, each later one moves halfway
    for later in seen[1:]:
        expected = [0.5 * e + 0.5 * w for e, w in zip(expected, later)]
    for got, want in zip(averaged.parameters(), expected):
        torch.testing.assert_close(got, want)
    assert not averaged.training


def test_random_window_jitters_within_the_pool_crop():
    images = np.random.default_rng(0).integers(0, 255, (3, 72, 72, 3), dtype=np.uint8)
    out = tv.random_window(images, 64, np.random.default_rng(0))
    assert out.shape == (3, 64, 64, 3)
    assert np.array_equal(tv.centre_window(images, 64), images[:, 4:68, 4:68])


def test_best_threshold_takes_the_middle_of_a_plateau():
    t = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    counts = [DetectionCounts(1, 9, 0), DetectionCounts(5, 1, 0), DetectionCounts(5, 1, 0), DetectionCounts(5, 1, 0),
              DetectionCounts(0, 0, 5)]
    assert tv.best(t, counts)[0] == 2.0


def test_far_from():
    assert rf.far_from(np.array([[0.0, 0.0], [10.0, 0.0]]), np.array([[0.0, 3.0]]), 5.0).tolist() == [False, True]
    assert rf.far_from(np.array([[0.0, 0.0]]), np.zeros((0, 2)), 5.0).tolist() == [True]


def test_hue_saturation_identity_grayscale_and_wide_augment():
    x = torch.rand(3, 3, 16, 16)
    torch.testing.assert_close(aug.hue_saturation(x, torch.zeros(3), torch.ones(3)), x)
    gray = aug.hue_saturation(x, torch.full((3,), 1.0), torch.zeros(3))
    torch.testing.assert_close(gray[:, 0], gray[:, 1])
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    torch.testing.assert_close((gray * luma).sum(1), (x * luma).sum(1), atol=1e-5, rtol=0)  # luma kept
    y = aug.augment(x, aug.AugmentConfig.wide(), aug.generator(0))
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    # the older recipes draw the same numbers as before (hue/gray off)
    a = aug.augment(x, aug.AugmentConfig(), aug.generator(3))
    b = aug.augment(x, aug.AugmentConfig(p_hsv=0.0, p_gray=0.0), aug.generator(3))
    torch.testing.assert_close(a, b)


def test_jpeg_reencode_changes_only_chosen_images():
    images = np.random.default_rng(0).integers(0, 255, (4, 24, 24, 3), dtype=np.uint8)
    same = aug.jpeg_reencode(images, (30, 40), 0.0, np.random.default_rng(0))
    assert np.array_equal(same, images)
    changed = aug.jpeg_reencode(images, (30, 40), 1.0, np.random.default_rng(0))
    assert changed.shape == images.shape and changed.dtype == np.uint8
    assert all(not np.array_equal(changed[i], images[i]) for i in range(4))


def test_evaluate_and_report_on_the_real_fields_with_perfect_scores(tmp_path):
    """Ground-truth points scored high and far decoys scored low: F1 1 at the chosen threshold,
    on the held-out slide and pooled by the report."""
    from conftest import SHARED_DATA
    from training import verifier_report

    if not (SHARED_DATA / "icpr2012" / "annotations.json").is_file():
        pytest.skip("ICPR 2012 data not available")
    fields = rf.icpr_fields(SHARED_DATA, ("A",))
    rows = []
    for i, f in enumerate(fields):
        decoys = np.array([[5.0, 5.0], [2000.0, 5.0]])
        rows += [(i, x, y, 0.9, 5.0) for x, y in f.mitoses] + [(i, x, y, 0.9, -5.0) for x, y in decoys]
    a = np.array(rows)
    scores = {"field": a[:, 0].astype(int), "xy": a[:, 1:3], "stage1": a[:, 3], "logit": a[:, 4],
              "logit_views_8": -a[:, 4]}  # 8 flip views: every decoy above every mitosis
    result = tv.evaluate(scores, SHARED_DATA, "02")
    result["by_views"] = {"8": tv.evaluate(scores, SHARED_DATA, "02", key="logit_views_8")}
    assert result["heldout"]["at_chosen"]["f1"] == 1.0
    assert -5.0 < result["chosen_on_training_slides"]["threshold"] <= 5.0
    run = tmp_path / "loso_02"
    run.mkdir()
    np.savez(run / "scores.npz", **scores)
    (run / "result.json").write_text(__import__("json").dumps({**result, "train_seconds": 1.0}))
    summary = verifier_report.variant_summary([run], fields)
    assert summary["pooled_at_chosen"]["f1"] == 1.0 and summary["pooled_oracle"]["f1"] == 1.0
    assert summary["pooled_at_out_of_fold_threshold"]["thresholds"] == {}  # one fold: no other slide to choose on
    run01 = tmp_path / "loso_01"
    run01.mkdir()
    np.savez(run01 / "scores.npz", **scores)
    (run01 / "result.json").write_text(__import__("json").dumps({**tv.evaluate(scores, SHARED_DATA, "01"),
                                                                 "train_seconds": 1.0}))
    two = verifier_report.variant_summary([run01, run], fields)
    assert set(two["pooled_at_out_of_fold_threshold"]["thresholds"]) == {"01", "02"}
    assert two["pooled_at_out_of_fold_threshold"]["f1"] == 1.0
    assert "| loso |" in verifier_report.markdown({"loso": summary})
    inverted = verifier_report.variant_summary([run], fields, views=8)
    assert summary["pooled_at_chosen"]["fp"] == 0 and inverted["pooled_at_chosen"]["fp"] > 0
    assert inverted["pooled_oracle"]["f1"] < 1.0
    with pytest.raises(SystemExit, match="no scores with 4 flip views"):
        verifier_report.variant_summary([run], fields, views=4)
    other = tmp_path / "other_02"  # an ensemble member that is sure of the mitoses only
    other.mkdir()
    one_view = {k: v for k, v in scores.items() if k != "logit_views_8"}
    np.savez(other / "scores.npz", **{**one_view, "logit": np.where(a[:, 4] > 0, 20.0, 0.0)})
    (other / "result.json").write_text((run / "result.json").read_text())
    name = verifier_report.ensemble_runs(tmp_path, ["loso", "other"], SHARED_DATA)
    merged = dict(np.load(tmp_path / "loso+other_02" / "scores.npz"))
    np.testing.assert_allclose(merged["logit"], np.where(a[:, 4] > 0, 12.5, -2.5))
    assert "logit_views_8" not in merged  # only what every member scored
    ensemble = verifier_report.variant_summary([tmp_path / f"{name}_02"], fields)
    assert name == "loso+other" and ensemble["pooled_at_chosen"]["f1"] == 1.0


def test_logits_by_views_average_the_product_views():
    """train_verifier scores held-out candidates as the product does with plan.verifier_views:
    the mean logit over the first n dihedral views."""
    torch.manual_seed(0)
    net = Verifier(width=4).eval()
    crops = np.random.default_rng(1).integers(0, 256, (3, INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
    by_views = tv.logits_by_views(net, crops)
    assert sorted(by_views) == [1, 2, 4, 8]
    np.testing.assert_allclose(by_views[1], tv.logits_of(net, crops), rtol=1e-6)
    each = [tv.logits_of(net, v) for v in tta_views(crops, 8)]
    product = mean_over_views(lambda x: tv.logits_of(net, x), crops, 2, 8)  # what verify_candidates takes
    np.testing.assert_allclose(by_views[8], product, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(by_views[8], np.mean(each, axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(by_views[4], np.mean(each[:4], axis=0), rtol=1e-5, atol=1e-6)


def test_a_trained_verifier_installs_into_weights_and_the_product_uses_it(tmp_path, synthetic_weights):
    """export_verifier.install_verifier (what ./export.sh and --install-into do): the file, its
    manifest entry, the verification threshold and the stage-1 floor; then the product verifies."""
    import shutil

    from mitosis_analysis.decision import logit
    from mitosis_analysis.inference import load_models
    from mitosis_analysis.manifest import Manifest
    from mitosis_analysis.pipeline import analyse_roi
    from mitosis_analysis.readers import RoiImage
    from mitosis_analysis.settings import Settings

    torch.manual_seed(0)
    net = Verifier(width=4)
    checkpoint = tmp_path / "verifier.pt"
    torch.save({"arch": "verifier-resnet-v1", "config": {"width": 4, "input_size": INPUT_SIZE},
                "state_dict": net.state_dict(), "threshold": 1.5, "verify_floor": 0.2}, checkpoint)
    weights = tmp_path / "weights"
    shutil.copytree(synthetic_weights, weights)
    description, ckpt = export_verifier.export_checkpoint(checkpoint, tmp_path / "out" / "verifier.onnx", timing=False)
    installed = export_verifier.install_verifier(weights, tmp_path / "out" / "verifier.onnx", description,
                                                 ckpt["threshold"], ckpt["verify_floor"], note="test", views=8,
                                                 detector_override_logit=9.0)
    manifest = Manifest.load(weights)
    assert manifest == installed
    assert manifest.verifier.output_name == "logit" and manifest.verifier.input_size == INPUT_SIZE
    assert manifest.verifier.input_format == "uint8-nhwc"  # beside float32 NCHW synthetic models
    assert manifest.thresholds.verification_logit == 1.5 and manifest.thresholds.detector_override_logit == 9.0
    assert manifest.plan.verifier_views == 8  # the threshold was chosen on the mean of 8 flip views
    assert manifest.thresholds.candidate_floor_logit == pytest.approx(float(logit(0.2)))
    assert manifest.provenance.notes.endswith("test")
    settings = Settings(weights_dir=weights, device="cpu")
    models = load_models(settings)
    rng = np.random.default_rng(0)
    pixels = np.clip(rng.normal(200, 20, (256, 256, 3)), 0, 255).astype(np.uint8)
    pixels[100:112, 100:112] = 30  # a dark blob: a candidate of the synthetic detector
    candidates = analyse_roi(RoiImage(pixels, (0.00025, 0.00025), False, tmp_path / "roi.tif"), models, settings)
    assert candidates and all(c.verification_logit is not None for c in candidates)
    for c in candidates:  # the logit of each candidate: the mean over the 8 flip views of its crop
        views = tta_views(extract_crops(pixels, np.array([[c.x, c.y]]), INPUT_SIZE), 8)
        expected = np.mean([models.verification_logit(v)[0] for v in views])
        assert c.verification_logit == pytest.approx(expected, abs=1e-5)
        assert abs(models.verification_logit(views[0])[0] - expected) > 1e-4  # the views do differ
    crops = np.stack([pixels[100 - 26:100 + 38, 100 - 26:100 + 38]])  # any 64 px crop: the graph runs
    assert models.verification_logit(crops).shape == (1,)


def test_a_held_out_fold_of_an_ensemble_reads_its_members_checkpoints(tmp_path):
    import json

    from training.verifier_heldout import fold_checkpoints

    (tmp_path / "loso_00").mkdir()
    (tmp_path / "loso_00" / "result.json").write_text(json.dumps({"holdout": "00"}))
    (tmp_path / "a+b_00").mkdir()
    (tmp_path / "a+b_00" / "result.json").write_text(json.dumps({"holdout": "00", "members": ["r/a_00", "r/b_00"]}))
    assert fold_checkpoints(tmp_path / "loso_00") == [tmp_path / "loso_00" / "verifier.pt"]
    assert fold_checkpoints(tmp_path / "a+b_00") == [Path("r/a_00/verifier.pt"), Path("r/b_00/verifier.pt")]


def test_training_mask_keeps_the_evaluation_crops_out():
    """AMi-Br crops (and their mined candidates) train only when ``data.evaluation_split`` puts them in
    training: never the test split, nor a held-out domain; the held-out ICPR slide never; the rest
    (MITOS-ATYPIA-14, row -1) always."""
    from conftest import AMIBR, SHARED_DATA, needs_amibr  # noqa: F401
    from training import data as amibr

    if not (AMIBR / amibr.TABLE_FILE).is_file():
        pytest.skip(f"AMi-Br not found at {AMIBR}")
    table = amibr.load_table(AMIBR)
    train, test = amibr.published_split(AMIBR, table)
    row = {c.name: i for i, c in enumerate(table)}
    a_train, a_test = row[train[0].name], row[test[0].name]
    other = next(c for c in train if c.domain != train[0].domain)
    pool = {"slide": np.array(["00", "01", "", "", "", ""]),
            "amibr": np.array([-1, -1, a_train, a_test, row[other.name], -1])}
    assert tv.training_mask(pool, SHARED_DATA, "01").tolist() == [True, False, True, False, True, True]
    held = tv.training_mask(pool, SHARED_DATA, None, holdout_domain=train[0].domain)
    assert held.tolist() == [True, True, False, False, True, True]



def test_amibr_report_tabulates_both_stages_and_the_mean_recall(tmp_path):
    import json

    from training import verifier_report

    def figures(recall, fp, t):
        return {"evaluated_on": "held-out domain X", "threshold": t, "recall_at_5fp_per_mm2": recall - 0.1,
                "at_threshold": {"recall": recall, "fp_per_mm2": fp}, "stage1_recall_at_verify_floor": 0.99}

    for name, (r2, r1) in {"lodo_d0": (0.7, 0.9), "lodo_d1": (0.5, 0.8)}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text(json.dumps(
            {"amibr": {"4": figures(r2, 12.5, 4.0)}, "amibr_stage1_alone": figures(r1, 3.0, 7.6)}))
    summary = verifier_report.amibr_summary([tmp_path / "lodo_d0", tmp_path / "lodo_d1"], 4)
    assert summary["mean_recall_at_threshold"] == pytest.approx({"two_stages": 0.6, "stage1_alone": 0.85})
    table = verifier_report.amibr_markdown(summary)
    assert "| lodo_d1 | held-out domain X | 0.500 / 12.5 (4.00) | 0.400 | 0.800 / 3.0 (7.60) | 0.700 |" in table
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "result.json").write_text("{}")
    with pytest.raises(SystemExit, match="no AMi-Br figures"):
        verifier_report.amibr_summary([tmp_path / "old"], 4)


def test_amibr_report_judges_the_override_as_the_product_decides(tmp_path, monkeypatch):
    """--detector-override: a candidate the verifier rejects counts when its detector logit reaches the
    override (``decision.decision_margin``), on the run's own mosaic."""
    import json

    from training import crop_mosaics
    from training import detector_eval as ev
    from training import verifier_report

    mosaic = ev.build_mosaic(np.zeros((2, 128, 128, 3), np.uint8), [np.array([[64.0, 64.0]])] * 2, cols=2)
    monkeypatch.setattr(crop_mosaics, "evaluation_mosaic", lambda data, d: ([], mosaic, f"domain {d}"))
    run = tmp_path / "lodo_d1"
    run.mkdir()
    stage1 = 1 / (1 + np.exp(-np.array([12.0, 5.0])))  # a sure detection on each mitosis, and an unsure one
    np.savez(run / "amibr_scores.npz", xy=np.array([[64.0, 64.0], [192.0, 64.0]]), stage1=stage1,
             logit_views_4=np.array([1.0, 1.0]), evaluated_on=np.array("domain 1"))
    figures = {"evaluated_on": "domain 1", "threshold": 4.0, "recall_at_5fp_per_mm2": 0.0,
               "at_threshold": {"recall": 0.0, "fp_per_mm2": 0.0}, "stage1_recall_at_verify_floor": 1.0}
    (run / "result.json").write_text(json.dumps({"args": {"holdout_domain": 1}, "amibr": {"4": figures},
                                                 "amibr_stage1_alone": figures}))
    plain = verifier_report.amibr_summary([run], 4)
    assert plain["runs"]["lodo_d1"]["two_stages"]["at_threshold"]["recall"] == 0.0  # the verifier rejects both
    summary = verifier_report.amibr_summary([run], 4, tmp_path, detector_override=10.0)
    two = summary["runs"]["lodo_d1"]["two_stages"]
    assert two["at_threshold"]["recall"] == 0.5 and two["at_threshold"]["fp_per_mm2"] == 0.0
    assert two["detector_override_logit"] == 10.0 and two["threshold"] == 4.0


def test_install_into_records_what_trained_the_verifier(tmp_path, synthetic_weights):
    """export_verifier --install-into keeps the members' training commands and data in the manifest
    (every shipped model's command, data and figures travel with the weights)."""
    import shutil

    from mitosis_analysis.manifest import Manifest

    for i in range(2):
        _member(tmp_path / f"m{i}.pt", i)
    weights = tmp_path / "weights"
    shutil.copytree(synthetic_weights, weights)
    assert export_verifier.main(["--checkpoint", str(tmp_path / "m0.pt"), str(tmp_path / "m1.pt"), "--out",
                                 str(tmp_path / "v.onnx"), "--install-into", str(weights), "--threshold", "3.5"]) == 0
    recorded = Manifest.load(weights).provenance.metrics["verifier"]
    assert recorded["training_command"] == "train seed 0 ; train seed 1"
    assert recorded["arch"] == "verifier-ensemble-v1" and recorded["onnx_vs_pytorch_max_abs_diff"] <= 1e-4


def test_trunk_probe_weights_sources_as_the_verifier_samples_them():
    """training/trunk_probe.py: each half (positives, negatives) weighs 1 in all, split among its
    sources as train_verifier.SOURCE_WEIGHTS samples them; crops not allowed weigh nothing."""
    from training import train_verifier as tv
    from training.trunk_probe import source_weights

    source = np.array(["icpr_pos"] * 2 + ["amibr_pos"] * 4 + ["ma_pos"] + ["cand_A"] * 3 + ["cand_pos"] + ["ma_neg"])
    allowed = np.ones(len(source), bool)
    allowed[0] = False
    w = source_weights(source, allowed)
    positive = np.isin(source, tv.POSITIVE_SOURCES)
    assert w[0] == 0 and w[source == "cand_pos"].sum() == 0  # not allowed; a source sampled with weight 0
    assert w[positive].sum() == pytest.approx(1.0) and w[~positive].sum() == pytest.approx(1.0)
    total = tv.SOURCE_WEIGHTS["icpr_pos"] + tv.SOURCE_WEIGHTS["amibr_pos"] + tv.SOURCE_WEIGHTS["ma_pos"]
    assert w[1] == pytest.approx(tv.SOURCE_WEIGHTS["icpr_pos"] / total)  # the one allowed icpr_pos crop
    assert np.allclose(w[source == "amibr_pos"], tv.SOURCE_WEIGHTS["amibr_pos"] / total / 4)


def test_stain_modes_route_normalised_pixels_to_the_named_stages():
    from training.verifier_heldout import STAIN_MODES, stage_inputs

    raw, norm = np.zeros((2, 2, 3), np.uint8), np.ones((2, 2, 3), np.uint8)
    got = {m: tuple(x is norm for x in stage_inputs(raw, norm, m)) for m in STAIN_MODES}
    assert got == {"none": (False, False), "detector": (True, False), "verifier": (False, True), "all": (True, True)}
    with pytest.raises(ValueError):
        stage_inputs(raw, norm, "both")


def test_a_verifier_trained_on_normalised_pixels_is_not_installed_for_the_product(tmp_path, synthetic_weights):
    """train_verifier --stain records its reference; the product feeds raw pixels, so installing it
    is refused (only verifier_heldout, which normalises, may), and members must agree on it."""
    import shutil

    from training import export

    _member(tmp_path / "raw.pt", 0)
    _member(tmp_path / "stain.pt", 1)
    ckpt = torch.load(tmp_path / "stain.pt", weights_only=False)
    torch.save({**ckpt, "stain_reference": {"method": "reinhard", "mean": [0.0] * 3, "std": [1.0] * 3}},
               tmp_path / "stain.pt")
    weights = tmp_path / "weights"
    shutil.copytree(synthetic_weights, weights)
    description, _ = export_verifier.export_checkpoint(tmp_path / "stain.pt", tmp_path / "v.onnx", timing=False)
    with pytest.raises(export.ExportError, match="stain-normalised"):
        export_verifier.install_verifier(weights, tmp_path / "v.onnx", description, 1.0, 0.2)
    assert export_verifier.install_verifier(weights, tmp_path / "v.onnx", description, 1.0, 0.2,
                                            normalised_input=True).verifier is not None
    with pytest.raises(export.ExportError, match="stain_reference"):
        export_verifier.ensemble([tmp_path / "raw.pt", tmp_path / "stain.pt"])
