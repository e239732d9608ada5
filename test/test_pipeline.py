"""End-to-end numeric pipeline on synthetic images with the hand-written ONNX models:
the points must land exactly where the figures were drawn."""

import numpy as np
import pytest

from mitosis_analysis.pipeline import analyse_roi, classify_stack, detect_candidates, mitosis_logit_map
from mitosis_analysis.decision import logit, sigmoid
from mitosis_analysis.readers import RoiImage
from synthetic_models import BACKGROUND, roi_with_figures

# Figures: in a tile centre, on tile borders (x = 256, 512, y = 768), near the image edge, and a
# pair 20 px (5 um) apart which must collapse to one point.
FIGURES = [(100.0, 100.0), (256.0, 300.0), (512.0, 512.0), (700.0, 768.0), (1015.0, 8.0), (400.0, 900.0)]
PAIR = [(800.0, 200.0), (820.0, 200.0)]


def test_points_exact_across_tile_borders(models, settings):
    image = roi_with_figures(1000, 1024, FIGURES)
    cands = detect_candidates(image, models, settings)
    found = sorted((round(c.x, 2), round(c.y, 2)) for c in cands)
    assert len(found) == len(FIGURES)
    for (fx, fy), (x, y) in zip(sorted(FIGURES), found):
        assert abs(fx - x) < 0.05 and abs(fy - y) < 0.05


def test_figure_cut_by_the_image_corner_is_found_inside(models, settings):
    image = roi_with_figures(512, 600, [(598.0, 1.0)])
    (c,) = detect_candidates(image, models, settings)
    assert 594 < c.x <= 599 and 0 <= c.y < 4


def test_duplicates_within_radius_collapse(models, settings):
    image = roi_with_figures(512, 1024, PAIR)
    assert len(detect_candidates(image, models, settings)) == 1
    far = roi_with_figures(512, 1024, [(800.0, 200.0), (840.0, 200.0)])  # 10 um apart
    assert len(detect_candidates(far, models, settings)) == 2


def test_blank_glass_gives_no_candidates(models, settings):
    image = np.empty((700, 900, 3), np.uint8)
    image[:] = BACKGROUND
    from mitosis_analysis.pipeline import GLASS_LOGIT

    assert np.all(mitosis_logit_map(image, models, settings) == GLASS_LOGIT)
    assert detect_candidates(image, models, settings) == []


def test_small_image_is_padded(models, settings):
    image = roi_with_figures(100, 150, [(50.0, 60.0)])
    (c,) = detect_candidates(image, models, settings)
    assert (c.x, c.y) == pytest.approx((50, 60), abs=0.05)


def test_spacing_mismatch_resamples_and_maps_back(models, settings, tmp_path):
    # the same figure at 0.5 um/px: drawn at half the coordinates and half the radius
    image = roi_with_figures(600, 600, [(200.0, 150.0)], radius=4.0)
    roi = RoiImage(image, (0.0005, 0.0005), False, tmp_path / "half.tif")
    (c,) = analyse_roi(roi, models, settings)
    assert (c.x, c.y) == pytest.approx((200, 150), abs=0.3)


def test_classifier_probability_reaches_candidates(models, settings):
    image = roi_with_figures(512, 512, [(256.0, 256.0)])
    roi = RoiImage(image, (0.00025, 0.00025), False, None)
    (c,) = analyse_roi(roi, models, settings)
    crop = image[192:320, 192:320]
    assert c.atypical_logit == pytest.approx(float(logit(crop[..., 1].mean() / 255)), abs=1e-3)


def test_classify_stack_page_order(models, settings):
    crops = np.zeros((3, 128, 128, 3), np.uint8)
    crops[:, :, :, 1] = np.array([0, 128, 255], np.uint8)[:, None, None]
    np.testing.assert_allclose(sigmoid(classify_stack(crops, models, settings)), [0, 128 / 255, 1], atol=1e-5)


def test_the_verifier_decides_which_candidates_are_mitotic_figures(tmp_path):
    """Stage 2: the detector proposes both dark disks; the verifier (central 8 x 8 px darker than
    0.2 mean RGB) accepts the darker one only. Its logit is what the decision and the written
    probability are made on."""
    from mitosis_analysis.decision import decide_detections
    from mitosis_analysis.inference import load_models
    from mitosis_analysis.settings import Settings
    from synthetic_models import write_weights

    weights = write_weights(tmp_path / "w", verification=0.5)
    settings = Settings(weights_dir=weights, device="cpu")
    models = load_models(settings)
    image = roi_with_figures(512, 512, [(150.0, 150.0)], nucleus=(20, 20, 20))  # mean 0.08: accepted
    image[(np.mgrid[0:512, 0:512][1] - 350) ** 2 + (np.mgrid[0:512, 0:512][0] - 300) ** 2 <= 36] = (70, 70, 70)  # 0.27
    roi = RoiImage(image, (0.00025, 0.00025), False, None)
    cands = sorted(analyse_roi(roi, models, settings), key=lambda c: c.x)
    assert len(cands) == 2 and all(c.verification_logit is not None for c in cands)
    assert cands[0].verification_logit == pytest.approx(40 * (0.2 - 20 / 255), abs=1e-3)
    assert cands[1].verification_logit == pytest.approx(40 * (0.2 - 70 / 255), abs=1e-3)
    detections = decide_detections(cands, models.manifest.thresholds)
    assert [(round(d.x), d.is_mitosis) for d in detections] == [(150, True), (350, False)]
    assert detections[1].probability == pytest.approx(1 / (1 + np.exp(-40 * (0.2 - 70 / 255))), rel=1e-3)
    assert cands[0].atypical_logit is not None and cands[1].atypical_logit is None  # only figures classified

    # the evaluation on crop mosaics judges what the product decides (stage 2), or stage 1 alone
    from training.evaluate_detector import detect_with_pipeline

    points, margins, threshold = detect_with_pipeline(image, weights)
    order = np.argsort(points[:, 0])
    t = models.manifest.thresholds.verification_logit
    assert margins[order] == pytest.approx([c.verification_logit - t for c in cands], abs=1e-6) and threshold == 0
    _, stage1, threshold1 = detect_with_pipeline(image, weights, verify=False)
    assert stage1[np.argsort(points[:, 0])] == pytest.approx([c.score for c in cands], abs=1e-6)
    assert threshold1 == models.manifest.thresholds.detection_logit


def test_the_detector_override_accepts_what_the_verifier_rejects_only_when_the_detector_is_sure():
    """``thresholds.detector_override_logit``: a candidate is a mitotic figure when the verifier accepts
    it or the detector's logit reaches the override; the written probability is >= 0.5 exactly then."""
    from mitosis_analysis.candidates import Candidate
    from mitosis_analysis.decision import decide_detections, decision_margin
    from mitosis_analysis.manifest import Thresholds

    t = Thresholds(detection_logit=7.0, candidate_floor_logit=-1.0, atypical_logit=0.0, verification_logit=4.0,
                   detector_override_logit=10.0)
    cands = [Candidate(x=0, y=0, score=12.0, area=20, verification_logit=1.0),   # sure detector, verifier says no: yes
             Candidate(x=1, y=0, score=9.0, area=20, verification_logit=1.0),    # detector not sure enough: no
             Candidate(x=2, y=0, score=-1.0, area=20, verification_logit=5.0),   # the verifier accepts: yes
             Candidate(x=3, y=0, score=12.0, area=20, verification_logit=6.0)]   # both: judged by the verifier
    decided = {d.x: d for d in decide_detections(cands, t)}
    assert [decided[x].is_mitosis for x in range(4)] == [True, False, True, True]
    assert [decision_margin(c, t) for c in cands] == [2.0, -3.0, 1.0, 2.0]
    assert all((d.probability >= 0.5) == d.is_mitosis for d in decided.values())
    assert not decide_detections(cands[:1], t.model_copy(update={"detector_override_logit": None}))[0].is_mitosis


def test_fixed_batches_and_io_binding_give_the_plain_session_output(synthetic_weights):
    """What the GPU path does (IO binding, buffers reused per shape, batches padded to one fixed
    size) gives, on the CPU provider, exactly what a plain ``session.run`` gives; and a result
    handed out is not overwritten by the next run."""
    from mitosis_analysis.inference import OnnxModel, to_model_input
    from mitosis_analysis.manifest import Manifest

    manifest = Manifest.load(synthetic_weights)
    path = synthetic_weights / manifest.detector.file
    tiles = np.random.default_rng(3).integers(0, 256, (5, manifest.plan.tile_size, manifest.plan.tile_size, 3),
                                              dtype=np.uint8)
    plain = OnnxModel(path, manifest.detector, ["CPUExecutionProvider"], io_binding=True)
    fixed = OnnxModel(path, manifest.detector, ["CPUExecutionProvider"], fixed_batch=2, io_binding=True)
    x = tiles if manifest.detector.input_format == "uint8-nhwc" else to_model_input(tiles)
    expected = plain.session.run([manifest.detector.output_name], {manifest.detector.input_name: x})[0]
    first = plain(tiles[:2])
    kept = first.copy()
    plain(tiles[2:4])  # same shape: same buffers
    assert np.array_equal(first, kept)
    assert np.array_equal(fixed(tiles), expected)  # 2 + 2 + 1 padded to 2
    assert np.array_equal(plain(tiles), expected)


@pytest.fixture(scope="module")
def stride4(tmp_path_factory):
    """The synthetic models with the shipped weights' I/O contract: uint8 NHWC, stride 4."""
    from mitosis_analysis.inference import load_models
    from mitosis_analysis.settings import Settings
    from synthetic_models import write_weights

    folder = write_weights(tmp_path_factory.mktemp("stride4"), classifier_views=1, input_format="uint8-nhwc",
                           output_stride=4)
    settings = Settings(weights_dir=folder, device="cpu", batch_size=4)
    return load_models(settings), settings


def test_stride_4_detector_finds_the_figures_within_a_pixel(stride4, models, settings):
    """Max-pooled 4x4 maps: the same figures as at stride 1, with the same peak logit; the map is
    16x smaller. A blob's pooled footprint is rounded out to whole blocks, so its centroid moves
    by at most 1.5 px per axis (2.2 px, 0.53 um: 7 % of the 7.5 um match radius)."""
    models4, settings4 = stride4
    image = roi_with_figures(1000, 1024, FIGURES + [(3.0, 997.0)])
    full = sorted(detect_candidates(image, models, settings), key=lambda c: (c.x, c.y))
    pooled = sorted(detect_candidates(image, models4, settings4), key=lambda c: (c.x, c.y))
    assert len(pooled) == len(full) == len(FIGURES) + 1
    for a, b in zip(full, pooled):
        assert max(abs(a.x - b.x), abs(a.y - b.y)) <= 1.5 + 1e-6, (a, b)
        assert b.score == pytest.approx(a.score, abs=1e-4)
    assert mitosis_logit_map(image, models4, settings4).shape == (250, 256)


def test_stride_4_roi_at_another_spacing_maps_back(stride4, tmp_path):
    models4, settings4 = stride4
    image = roi_with_figures(600, 600, [(200.0, 150.0)], radius=4.0)
    (c,) = analyse_roi(RoiImage(image, (0.0005, 0.0005), False, tmp_path / "half.tif"), models4, settings4)
    assert (c.x, c.y) == pytest.approx((200, 150), abs=0.6)
