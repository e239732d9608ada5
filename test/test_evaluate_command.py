"""Ground-truth and prediction readers, and the ``evaluate`` command end to end on tmp files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from mitosis_analysis.cli import guarded
from mitosis_analysis.errors import InputError
from mitosis_analysis.evaluate import command
from mitosis_analysis.evaluate.groundtruth import load_detection_truth, parse_classification_truth, parse_midog
from mitosis_analysis.evaluate.predictions import collect, parse_mitotic_figures


def evaluate(argv: list[str]) -> int:
    """What ``python -m mitosis_analysis evaluate ...`` does, without importing the other commands."""
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return guarded(command.run, parser.parse_args(argv))


def write(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def figures(*points):
    """A container ``mitotic-figures.json``: (x, y, probability, name)."""
    return {"name": "Points of interest", "type": "Multiple points", "version": {"major": 1, "minor": 0},
            "points": [{"name": n, "point": [x, y, 0], "probability": p} for x, y, p, n in points]}


MF, NMF = "mitotic figure", "non-mitotic figure"


# --- readers ----------------------------------------------------------------------------------


def test_midog_ground_truth():
    gt = parse_midog({"007.tiff": {"annotations": [[0.1, 0.2, 0], [0.3, 0.4, 0]], "tumor domain": 0,
                                   "roi type": "hotspot"}, "8.tiff": {"annotations": []}}, "gt")
    assert gt["007.tiff"].points.tolist() == [[0.1, 0.2], [0.3, 0.4]]
    assert gt["007.tiff"].domain == "0" and gt["007.tiff"].roi_type == "hotspot"
    assert gt["8.tiff"].points.shape == (0, 2) and gt["8.tiff"].domain is None


def coco(bbox):
    return {"images": [{"id": 1, "file_name": "001.tiff", "tumor_type": "human breast cancer"},
                       {"id": 2, "file_name": "002.tiff"}],
            "categories": [{"id": 1, "name": "mitotic figure"}, {"id": 2, "name": "not mitotic figure"}],
            "annotations": [{"image_id": 1, "category_id": 1, "bbox": bbox},
                            {"image_id": 1, "category_id": 2, "bbox": [0, 0, 50, 50]}]}


def test_coco_ground_truth_box_centres_times_spacing(tmp_path):
    gt = load_detection_truth(write(tmp_path / "c.json", coco([100, 200, 150, 250])), 0.00025)
    assert gt["001.tiff"].points == pytest.approx(np.array([[125 * 0.00025, 225 * 0.00025]]))
    assert gt["001.tiff"].domain == "human breast cancer"
    assert gt["002.tiff"].points.shape == (0, 2)  # an image without figures is still ground truth
    xywh = load_detection_truth(write(tmp_path / "w.json", coco([100, 200, 50, 50])), {"001.tiff": 0.001,
                                                                                          "002.tiff": 0.001}, "xywh")
    assert xywh["001.tiff"].points == pytest.approx(np.array([[0.125, 0.225]]))
    with pytest.raises(InputError, match="xywh"):
        load_detection_truth(write(tmp_path / "bad.json", coco([100, 200, 50, 50])), 0.00025)
    with pytest.raises(InputError, match="no pixel spacing"):
        load_detection_truth(tmp_path / "c.json", {"001.tiff": 0.00025})


def test_classification_truth_formats():
    challenge = parse_classification_truth(
        [{"image": "stack_1.tiff", "labels": ["normal", "atypical"], "tumordomains": [1, 1]}], "gt")
    assert challenge["stack_1.tiff"].labels.tolist() == [0, 1] and challenge["stack_1.tiff"].domains == ["1", "1"]
    mapping = parse_classification_truth({"s.tiff": [0, 1, 1]}, "gt")
    assert mapping["s.tiff"].labels.tolist() == [0, 1, 1] and mapping["s.tiff"].domains == [None] * 3
    with pytest.raises(InputError, match="label"):
        parse_classification_truth({"s.tiff": ["mitosis"]}, "gt")
    with pytest.raises(InputError, match="tumordomains"):
        parse_classification_truth([{"image": "s", "labels": [0, 1], "tumordomains": [1]}], "gt")


def test_prediction_points_read_as_the_challenge_reads_them():
    pred = parse_mitotic_figures({"points": [{"name": MF, "point": [0.1, 0.2, 0], "probability": 0.9},
                                             {"name": NMF, "point": [1, 2, 0], "probability": 0.3}]}, "p")
    assert pred.is_mitosis.tolist() == [True, False] and pred.probabilities.tolist() == [0.9, 0.3]


@pytest.mark.parametrize("point, message", [
    ({"point": [0.1, 0.2, 0], "probability": 0.5}, "no \"name\""),  # MIDOG 2025 no longer accepts the 2021 format
    ({"name": MF, "point": [0.1, 0.2, 0]}, "no \"probability\""),
    ({"name": "mitosis", "point": [0.1, 0.2, 0], "probability": 0.5}, "not one of"),
    ({"name": MF, "point": [512, 300, 0], "probability": 0.5}, "pixels instead of millimetres"),
    ({"name": MF, "point": [-0.01, 0.2, 0], "probability": 0.5}, "outside"),
    ({"name": MF, "point": ["x", 0, 0], "probability": 0.5}, "finite number"),
])
def test_predictions_the_official_evaluation_refuses_are_refused(point, message):
    with pytest.raises(InputError, match=message):
        parse_mitotic_figures({"points": [point]}, "p")


def test_ground_truth_without_roi_type_is_refused_as_officially(inputs, capsys):
    i = inputs
    write(i["gt"], {"001.tiff": {"annotations": [[0.1, 0.1, 0]], "tumor domain": 0}})
    rc = evaluate(["--ground-truth", str(i["gt"]), "--predictions", str(i["preds"]), "--missing", "skip",
                   "-o", str(i["out"])])
    assert rc == 2 and "roi type" in capsys.readouterr().err and not i["out"].exists()


def test_prediction_files_are_matched_by_image_stem(tmp_path):
    write(tmp_path / "a.json", figures())
    write(tmp_path / "b" / "mitotic-figures.json", figures((0.1, 0.1, 0.9, MF)))
    write(tmp_path / "stray.json", figures())
    found, unclaimed = collect(tmp_path, ["a.tiff", "b.tiff", "c.tiff"], "mitotic-figures.json")
    assert set(found) == {"a.tiff", "b.tiff"} and len(found["b.tiff"]["points"]) == 1
    assert unclaimed == ["stray.json"]
    write(tmp_path / "a.tiff.json", figures())
    with pytest.raises(InputError, match="ambiguous"):
        collect(tmp_path, ["a.tiff"], "mitotic-figures.json")
    mapping = write(tmp_path / "all.json", {"a": figures(), "b.tiff": figures()})
    found, unclaimed = collect(mapping, ["a.tiff", "b.tiff", "c.tiff"], "mitotic-figures.json")
    assert set(found) == {"a.tiff", "b.tiff"} and unclaimed == []


# --- the command ------------------------------------------------------------------------------


@pytest.fixture()
def inputs(tmp_path):
    gt = write(tmp_path / "gt.json", {
        "001.tiff": {"annotations": [[0.1, 0.1, 0], [0.5, 0.5, 0]], "tumor domain": 0, "roi type": "hotspot"},
        "002.tiff": {"annotations": [[0.2, 0.2, 0]], "tumor domain": 1, "roi type": "random"},
    })
    preds = tmp_path / "pred"
    # 001: one hit (+ a duplicate of it), one miss; a rejected candidate on the missed figure
    write(preds / "001" / "mitotic-figures.json",
          figures((0.1, 0.101, 0.9, MF), (0.1, 0.098, 0.6, MF), (0.5, 0.5, 0.3, NMF)))
    write(preds / "002.json", figures((0.2, 0.2, 0.8, MF), (0.9, 0.9, 0.7, MF)))
    labels = write(tmp_path / "labels.json", [
        {"image": "stack_1.tiff", "labels": ["normal", "atypical", "normal"], "tumordomains": [1, 1, 1]},
        {"image": "stack_2.tiff", "labels": ["atypical"], "tumordomains": [2]},
    ])
    cls = tmp_path / "cls"
    # confidence = P(atypical), the MIDOG 2025 reading
    write(cls / "stack_1.json", [{"class": "normal", "confidence": 0.1}, {"class": "atypical", "confidence": 0.8},
                                 {"class": "atypical", "confidence": 0.6}])
    write(cls / "stack_2" / "multiple-mitotic-figure-classification.json", [{"class": "normal", "confidence": 0.3}])
    return {"gt": gt, "preds": preds, "labels": labels, "cls": cls, "out": tmp_path / "out"}


def test_command_end_to_end(inputs, capsys):
    i = inputs
    rc = evaluate(["--ground-truth", str(i["gt"]), "--predictions", str(i["preds"]), "--labels", str(i["labels"]),
                   "--classifications", str(i["cls"]), "-o", str(i["out"])])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "Track 1" in stdout and "Track 2" in stdout and "domain 1" in stdout and "f1_score" in stdout
    doc = json.loads((i["out"] / "metrics.json").read_text())
    agg = doc["aggregates"]  # the official key names and formulas (1e-6 in the denominators)
    assert list(doc)[0] == "aggregates"
    assert agg["f1_score"] == pytest.approx((4 + 1e-6) / (4 + 2 + 1 + 1e-6), abs=1e-12)
    assert agg["tumor_0_f1"] == pytest.approx((2 + 1e-6) / (2 + 1 + 1 + 1e-6), abs=1e-12)
    assert agg["roi_type_challenging_f1"] == 1.0 and agg["roi_type_challenging_AP"] == -1.0  # no image of the type
    assert agg["roi_type_challenging_froc_auc"] is None  # the official NaN
    assert 0 < agg["froc_auc"] <= 8 and 0 < agg["AP"] <= 1
    assert agg["overall_balanced_accuracy"] == 0.5 and agg["overall_roc_auc"] == pytest.approx(0.75)
    assert set(agg["domain_1"]) == {"sensitivity", "specificity", "balanced_accuracy", "accuracy", "roc_auc"}
    t1 = doc["track1"]
    # TP: both 0.1 duplicates -> 1 TP + 1 FP; 0.5 missed (NMF ignored); 002: 1 TP + 1 FP
    assert (t1["overall"]["tp"], t1["overall"]["fp"], t1["overall"]["fn"]) == (2, 2, 1)
    assert t1["overall"]["f1"] == pytest.approx(4 / 7)
    assert t1["per_domain"]["0"]["f1"] == pytest.approx(2 / 4) and t1["per_domain"]["1"]["f1"] == pytest.approx(2 / 3)
    assert t1["per_image"]["001.tiff"] == {"domain": "0", "tp": 1, "fp": 1, "fn": 1, "precision": 0.5,
                                           "recall": 0.5, "f1": 0.5}
    assert len(t1["sweep"]["thresholds"]) == len(t1["sweep"]["f1"]) == 101
    # threshold 0.3 admits the rejected point on the missed figure: TP 3, FP 2, FN 0
    assert t1["sweep"]["f1"][30] == pytest.approx(6 / 8)
    # above 0.7 only the .9 and .8 hits stay: TP 2, FP 0, FN 1 -> the best F1, highest threshold 0.8
    assert t1["best_threshold"] == {"threshold": 0.8, "f1": pytest.approx(4 / 5)}
    assert t1["operating_point"]["threshold"] == 0.5  # the container's threshold, marked
    assert t1["operating_point"]["f1"] == pytest.approx(t1["sweep"]["f1"][50])
    assert t1["sweep"]["f1"][71:81] == pytest.approx([4 / 5] * 10)
    t2 = doc["track2"]
    # P(atypical) = [.1, .8, .6 | .3]; classes [n a a | n] vs labels [n a n | a]
    assert (t2["overall"]["tp"], t2["overall"]["fp"], t2["overall"]["fn"], t2["overall"]["tn"]) == (1, 1, 1, 1)
    assert t2["overall"]["balanced_accuracy"] == 0.5
    assert t2["overall"]["auroc"] == pytest.approx(0.75)  # positives .8, .3 vs negatives .1, .6
    assert t2["per_domain"]["2"]["specificity"] is None
    png = (i["out"] / "threshold-sweep.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in i["out"].iterdir()) == ["metrics.json", "threshold-sweep.png"]


def test_missing_prediction_is_one_line_and_no_output(inputs, capsys):
    i = inputs
    (i["preds"] / "002.json").unlink()
    argv = ["--ground-truth", str(i["gt"]), "--predictions", str(i["preds"]), "-o", str(i["out"])]
    assert evaluate(argv) == InputError.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no prediction for 1 ground-truth image(s): 002.tiff")
    assert not i["out"].exists()
    # scored as empty, the missing image's figure becomes a false negative
    assert evaluate(argv + ["--missing", "empty"]) == 0
    doc = json.loads((i["out"] / "metrics.json").read_text())
    assert doc["track1"]["overall"]["fn"] == 2 and doc["track1"]["overall"]["images"] == 2
    assert evaluate(argv + ["--missing", "skip"]) == 0
    doc = json.loads((i["out"] / "metrics.json").read_text())
    assert doc["track1"]["overall"]["images"] == 1 and doc["track1"]["overall"]["fn"] == 1


def test_bad_input_is_one_line(inputs, capsys, tmp_path):
    i = inputs
    write(i["cls"] / "stack_2" / "multiple-mitotic-figure-classification.json", [])
    argv = ["--labels", str(i["labels"]), "--classifications", str(i["cls"]), "-o", str(i["out"])]
    assert evaluate(argv) == InputError.exit_code
    assert capsys.readouterr().err.strip() == "error: stack_2.tiff: 0 classifications but 1 labels"
    assert evaluate(["--ground-truth", str(i["gt"]), "-o", str(i["out"])]) == InputError.exit_code
    assert "needs both" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text("{")
    assert evaluate(["--ground-truth", str(tmp_path / "broken.json"), "--predictions", str(i["preds"]),
                     "-o", str(i["out"])]) == InputError.exit_code
    assert "not valid JSON" in capsys.readouterr().err
    assert not i["out"].exists()


def test_the_sample_case_scores_with_every_official_key(tmp_path, capsys):
    """`evaluate` on a bundled sample (ground truth = the drawn figures; the container's own output
    folder as predictions): all official Track 1 keys, consistent with the per-image counts."""
    case = Path(__file__).resolve().parent / "cases" / "track1-roi"
    assert evaluate(["--ground-truth", str(case / "ground_truth.json"), "--predictions", str(case / "expected_output"),
                     "-o", str(tmp_path / "out")]) == 0
    doc = json.loads((tmp_path / "out" / "metrics.json").read_text())
    agg, counts = doc["aggregates"], doc["track1"]["overall"]
    groups = ["", "tumor_0_"] + [f"roi_type_{t}_" for t in ("hotspot", "challenging", "random")]
    want = {f"{g}{k}" for g in groups for k in ("precision", "recall", "AP", "froc_auc")}
    want |= {"f1_score"} | {f"{g}f1" for g in groups[1:]}
    assert set(agg) == want
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    assert agg["f1_score"] == pytest.approx((2 * tp + 1e-6) / (2 * tp + fp + fn + 1e-6), abs=1e-12)
