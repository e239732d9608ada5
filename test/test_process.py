"""The container job end to end (``process.py``), good and bad inputs."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from conftest import ROOT, SHARED_DATA
from mitosis_analysis.cli import main
from mitosis_analysis.outputs import CropClass, MultiplePoints
from platform_contract import official_track1_errors, official_track2_errors, schema_errors
from synthetic_models import BACKGROUND, roi_with_figures

T1_SLUG, T1_DIR = "histopathology-region-of-interest-cropout", "images/histopathology-roi-cropout"
T2_SLUG, T2_DIR = "stacked-histopathology-roi-cropouts", "images/stacked-histopathology-roi-cropouts"
FIGURES = [(100.0, 120.0), (300.0, 260.0), (510.0, 90.0)]


def inputs_json(folder: Path, *entries):
    folder.mkdir(parents=True, exist_ok=True)
    doc = [{"interface": {"slug": slug, "kind": "Image", "relative_path": rel}, "image": {"name": name}}
           for slug, rel, name in entries]
    (folder / "inputs.json").write_text(json.dumps(doc))


def write_roi(path: Path, image=None, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = roi_with_figures(600, 640, FIGURES) if image is None else image
    kw.setdefault("resolution", (40000, 40000))
    kw.setdefault("resolutionunit", "CENTIMETER")
    tifffile.imwrite(path, image, **kw)


def track1_case(root: Path, image=None, **kw) -> Path:
    inp = root / "input"
    inputs_json(inp, (T1_SLUG, T1_DIR, "roi.tif"))
    write_roi(inp / T1_DIR / "roi.tif", image, **kw)
    return inp


def run(inp, out, weights, *extra) -> int:
    return main(["process", "--input", str(inp), "--output", str(out), "--weights", str(weights), "--device", "cpu", *extra])


def test_track1_points_in_mm(tmp_path, synthetic_weights):
    inp = track1_case(tmp_path)
    assert run(inp, tmp_path / "out", synthetic_weights) == 0
    doc = MultiplePoints.model_validate_json((tmp_path / "out" / "mitotic-figures.json").read_text())
    got = sorted((p.point[0], p.point[1]) for p in doc.points)
    want = sorted((x * 0.00025, y * 0.00025) for x, y in FIGURES)
    np.testing.assert_allclose(got, want, atol=0.00025 * 0.05)
    assert all(p.name == "mitotic figure" and p.probability > 0.9 and p.point[2] == 0 for p in doc.points)
    raw = json.loads((tmp_path / "out" / "mitotic-figures.json").read_text())
    assert raw["type"] == "Multiple points" and raw["version"] == {"major": 1, "minor": 0}
    assert all(set(p) == {"name", "point", "probability"} for p in raw["points"])  # the platform forbids more
    assert schema_errors(raw) == [] and official_track1_errors(raw) == []
    assert not (tmp_path / "out" / "mitotic-figures-details.json").exists()  # opt-in only


def test_details_file_is_opt_in_and_carries_p_atypical(tmp_path, synthetic_weights):
    inp = track1_case(tmp_path)
    assert run(inp, tmp_path / "out", synthetic_weights, "--details") == 0
    points = json.loads((tmp_path / "out" / "mitotic-figures.json").read_text())["points"]
    details = json.loads((tmp_path / "out" / "mitotic-figures-details.json").read_text())
    assert [d["point"] for d in details["points"]] == [p["point"] for p in points]
    assert all(d["atypical_probability"] is not None and d["logit"] > details["thresholds"]["detection_logit"]
               for d in details["points"])


def test_candidates_under_threshold_are_non_mitotic_points(tmp_path):
    from synthetic_models import write_weights

    weights = write_weights(tmp_path / "w", detection=0.999)
    # a grey-brown figure: mean gray 0.2745 -> logit 40 * (0.3 - 0.2745) = 1.02, under logit(0.999) = 6.91
    image = roi_with_figures(512, 512, [(200.0, 200.0)], nucleus=(90, 60, 60))
    inp = track1_case(tmp_path, image)
    assert run(inp, tmp_path / "out", weights, "--details") == 0
    (point,) = json.loads((tmp_path / "out" / "mitotic-figures.json").read_text())["points"]
    z, t = 40 * (0.3 - (90 + 60 + 60) / 3 / 255), np.log(0.999 / 0.001)
    assert point["name"] == "non-mitotic figure"
    assert point["probability"] == pytest.approx(1 / (1 + np.exp(-(z - t))), rel=1e-3)  # sigmoid(logit - threshold)
    (detail,) = json.loads((tmp_path / "out" / "mitotic-figures-details.json").read_text())["points"]
    assert detail["atypical_probability"] is None  # only mitotic figures are classified


def test_spacing_from_image_used_for_mm(tmp_path, synthetic_weights, capsys):
    inp = track1_case(tmp_path, resolution=(1, 1), resolutionunit="INCH")  # meaningless: assumed
    assert run(inp, tmp_path / "out", synthetic_weights) == 0
    assert "assuming 0.25 um/px" in capsys.readouterr().err


def test_track2_stack_classes_in_page_order(tmp_path, synthetic_weights):
    inp = tmp_path / "input"
    inputs_json(inp, (T2_SLUG, T2_DIR, "stack.tif"))
    (inp / T2_DIR).mkdir(parents=True)
    greens = [10, 250, 30, 200]
    tifffile.imwrite(inp / T2_DIR / "stack.tif", np.stack([np.full((128, 128, 3), (120, g, 150), np.uint8) for g in greens]))
    assert run(inp, tmp_path / "out", synthetic_weights) == 0
    doc = json.loads((tmp_path / "out" / "multiple-mitotic-figure-classification.json").read_text())
    assert [d["class"] for d in doc] == ["normal", "atypical", "normal", "atypical"]
    p = np.array(greens) / 255  # P(atypical) of the synthetic classifier; its threshold is 0.5
    # confidence = P(atypical) (MIDOG25_T2_evaluation_docker since 2d1b108), 0.5 at the threshold
    np.testing.assert_allclose([d["confidence"] for d in doc], p, atol=1e-4)
    assert all(set(d) == {"class", "confidence"} for d in doc)
    assert all((d["confidence"] >= 0.5) == (d["class"] == "atypical") for d in doc)
    assert official_track2_errors(doc, 4) == []  # the evaluator rejects ints, other keys are ignored
    [CropClass.model_validate(d) for d in doc]


def test_track2_confidence_is_centred_on_the_operating_threshold(tmp_path):
    """A threshold other than 0.5: confidence = sigmoid(logit(p) - logit(t)), atypical iff >= 0.5."""
    from synthetic_models import write_weights

    weights = write_weights(tmp_path / "w", atypical=0.2)
    inp = tmp_path / "input"
    inputs_json(inp, (T2_SLUG, T2_DIR, "stack.tif"))
    (inp / T2_DIR).mkdir(parents=True)
    greens = [25, 60, 230]  # P(atypical) 0.098, 0.235, 0.902
    tifffile.imwrite(inp / T2_DIR / "stack.tif", np.stack([np.full((128, 128, 3), (120, g, 150), np.uint8) for g in greens]))
    assert run(inp, tmp_path / "out", weights) == 0
    doc = json.loads((tmp_path / "out" / "multiple-mitotic-figure-classification.json").read_text())
    p = np.array(greens) / 255
    want = 1 / (1 + np.exp(-(np.log(p / (1 - p)) - np.log(0.2 / 0.8))))
    np.testing.assert_allclose([d["confidence"] for d in doc], want, atol=1e-4)
    assert [d["class"] for d in doc] == ["normal", "atypical", "atypical"]


@pytest.mark.skipif(not (SHARED_DATA / "samples" / "stack_5.tiff").is_file(), reason="../shared/data not beside the checkout")
def test_real_track2_input_with_shipped_weights(tmp_path):
    inp = tmp_path / "input"
    inputs_json(inp, (T2_SLUG, T2_DIR, "stack_5.tiff"))
    (inp / T2_DIR).mkdir(parents=True)
    shutil.copy(SHARED_DATA / "samples" / "stack_5.tiff", inp / T2_DIR / "stack_5.tiff")  # a symlink out of /input is refused
    assert run(inp, tmp_path / "out", ROOT / "weights") == 0
    doc = json.loads((tmp_path / "out" / "multiple-mitotic-figure-classification.json").read_text())
    assert len(doc) == 16 and all(d["class"] in ("normal", "atypical") and 0 <= d["confidence"] <= 1 for d in doc)


def test_legacy_folder_without_inputs_json(tmp_path, synthetic_weights):
    inp = tmp_path / "input"
    write_roi(inp / "001.tiff")
    assert run(inp, tmp_path / "out", synthetic_weights) == 0
    assert len(json.loads((tmp_path / "out" / "mitotic-figures.json").read_text())["points"]) == 3
    write_roi(inp / "002.tif", roi_with_figures(512, 512, [(50.0, 50.0)]))
    assert run(inp, tmp_path / "out2", synthetic_weights) == 0
    assert len(json.loads((tmp_path / "out2" / "001" / "mitotic-figures.json").read_text())["points"]) == 3
    assert len(json.loads((tmp_path / "out2" / "002" / "mitotic-figures.json").read_text())["points"]) == 1


def test_no_tissue_gives_valid_empty_json(tmp_path, synthetic_weights):
    blank = np.empty((700, 800, 3), np.uint8)
    blank[:] = BACKGROUND
    inp = track1_case(tmp_path, blank)
    assert run(inp, tmp_path / "out", synthetic_weights) == 0
    assert json.loads((tmp_path / "out" / "mitotic-figures.json").read_text())["points"] == []


@pytest.mark.parametrize("kind", ["grayscale", "rgba", "16bit"])
def test_converted_images_run_with_warning(tmp_path, synthetic_weights, capsys, kind):
    img = roi_with_figures(512, 512, [(200.0, 200.0)])
    img = {"grayscale": img.mean(-1).astype(np.uint8), "rgba": np.dstack([img, np.full(img.shape[:2], 255, np.uint8)]),
           "16bit": img.astype(np.uint16) * 257}[kind]
    inp = track1_case(tmp_path, img)
    assert run(inp, tmp_path / "out", synthetic_weights) == 0
    assert "warning:" in capsys.readouterr().err
    assert len(json.loads((tmp_path / "out" / "mitotic-figures.json").read_text())["points"]) == 1


# ----------------------------------------------------------------------------- bad input


def _corrupt(inp):
    (inp / T1_DIR / "roi.tif").write_bytes(b"II*\x00garbage" * 10)


def _truncate(inp):
    p = inp / T1_DIR / "roi.tif"
    write_roi(p, compression="zlib")
    p.write_bytes(p.read_bytes()[: p.stat().st_size * 2 // 3])


def _zero_pixels(inp):
    tifffile.imwrite(inp / T1_DIR / "roi.tif", np.zeros((0, 5, 3), np.uint8))


def _unknown_slug(inp):
    inputs_json(inp, ("some-other-interface", T1_DIR, "roi.tif"))


def _missing_image(inp):
    (inp / T1_DIR / "roi.tif").unlink()


def _no_inputs_no_image(inp):
    shutil.rmtree(inp)
    inp.mkdir()


def _second_job_bad(inp):
    inputs_json(inp, (T1_SLUG, T1_DIR, "roi.tif"), (T2_SLUG, T2_DIR, "stack.tif"))
    (inp / T2_DIR).mkdir(parents=True)
    (inp / T2_DIR / "stack.tif").write_bytes(b"not a tiff")


BAD_INPUTS = {
    "corrupt image": (_corrupt, "cannot read TIFF"),
    "truncated image": (_truncate, "truncated"),
    "0-pixel image": (_zero_pixels, "no pixels"),
    "unknown slug": (_unknown_slug, "unknown interface slug"),
    "listed image missing": (_missing_image, "listed image is missing"),
    "no inputs.json and no image": (_no_inputs_no_image, "no inputs.json and no image"),
    "second job bad, first good": (_second_job_bad, "stack.tif"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_one_line_nonzero_no_output(tmp_path, synthetic_weights, capsys, case):
    breaker, message = BAD_INPUTS[case]
    inp = track1_case(tmp_path)
    breaker(inp)
    out = tmp_path / "out"
    assert run(inp, out, synthetic_weights) != 0
    err_lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error:")]
    assert len(err_lines) == 1 and message in err_lines[0]
    assert not out.exists() or not any(out.rglob("*.json"))


def _weights_copy(tmp_path, synthetic_weights):
    w = tmp_path / "w"
    shutil.copytree(synthetic_weights, w)
    return w


@pytest.mark.parametrize("damage,message", [
    (lambda w: (w / "detector.onnx").unlink(), "model file missing"),
    (lambda w: (w / "manifest.json").unlink(), "manifest not found"),
    (lambda w: (w / "classifier.onnx").write_bytes((w / "classifier.onnx").read_bytes() + b"\0"), "does not match the manifest"),
    (lambda w: (w / "manifest.json").write_text("{}"), "invalid weights manifest"),
])
def test_missing_or_altered_weights_refused(tmp_path, synthetic_weights, capsys, damage, message):
    w = _weights_copy(tmp_path, synthetic_weights)
    damage(w)
    inp = track1_case(tmp_path)
    assert run(inp, tmp_path / "out", w) != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "mitotic-figures.json").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; covered by the read-only file case")
def test_unwritable_output_folder_permissions(tmp_path, synthetic_weights, capsys):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o500)
    assert run(track1_case(tmp_path), out, synthetic_weights) != 0
    assert "not writable" in capsys.readouterr().err


def test_unwritable_output_folder(tmp_path, synthetic_weights, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the output folder should be")
    assert run(track1_case(tmp_path), blocker / "out", synthetic_weights) != 0
    assert "not writable" in capsys.readouterr().err


def test_process_py_entrypoint_exit_code_and_stderr(tmp_path, synthetic_weights):
    inp = tmp_path / "empty"
    inp.mkdir()
    r = subprocess.run([sys.executable, str(ROOT / "process.py"), "--input", str(inp), "--output", str(tmp_path / "o"),
                        "--weights", str(synthetic_weights)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [f"error: no inputs.json and no image (.tif, .tiff, .mha) in {inp}"]
