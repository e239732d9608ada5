"""Hostile and careless inputs (issue #12): nothing read outside the input folder, nothing written
outside the output folder, no file that declares a huge image gets decoded, no silent data loss,
pixels converted as their tags say, and one ``error:`` line (exit 2, no output) for the rest."""

import errno
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import tifffile

import hostile_files as hf
from conftest import ROOT
from mitosis_analysis.errors import InputError
from mitosis_analysis.output_set import output_targets, write_output_set
from mitosis_analysis.readers import read_roi, read_stack, to_rgb_uint8
from mitosis_analysis.settings import Settings
from synthetic_models import roi_with_figures
from test_process import FIGURES, T1_DIR, T1_SLUG, T2_DIR, T2_SLUG, inputs_json, run, track1_case, write_roi

T1_OUT, T2_OUT = "mitotic-figures.json", "multiple-mitotic-figure-classification.json"
S = Settings()


def refused(capsys, rc: int, message: str, *outputs: Path) -> str:
    """Exit 2, exactly one stderr line, ``error: ...`` holding ``message``, no output file."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 2, err
    assert len(errors) == 1 and message in errors[0], err
    assert "Traceback" not in err
    for out in outputs:
        assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()], list(out.rglob("*"))
    return errors[0]


def track2_case(root: Path, stack: np.ndarray | None = None, name: str = "stack.tif") -> Path:
    inp = root / "input"
    inputs_json(inp, (T2_SLUG, T2_DIR, name))
    (inp / T2_DIR).mkdir(parents=True, exist_ok=True)
    if stack is not None:
        tifffile.imwrite(inp / T2_DIR / name, stack)
    return inp


def points(out: Path, rel: str = T1_OUT) -> list[dict]:
    return json.loads((out / rel).read_text())["points"]


# ============================================================= reading outside the input folder


@pytest.mark.parametrize("relative", ["../outside", "/etc", "images/../../outside", "images/./../../outside"])
def test_relative_path_leading_out_of_the_input_is_refused(tmp_path, synthetic_weights, capsys, relative):
    write_roi(tmp_path / "outside" / "roi.tif")
    inp = tmp_path / "input"
    inputs_json(inp, (T1_SLUG, relative, "roi.tif"))
    refused(capsys, run(inp, tmp_path / "out", synthetic_weights), "not a relative path inside the input folder",
            tmp_path / "out")


@pytest.mark.parametrize("name", ["../roi.tif", "/tmp/roi.tif", "sub/roi.tif", ".."])
def test_image_name_with_folders_is_refused(tmp_path, synthetic_weights, capsys, name):
    inp = track1_case(tmp_path)
    inputs_json(inp, (T1_SLUG, T1_DIR, name))
    refused(capsys, run(inp, tmp_path / "out", synthetic_weights), "not a plain file name", tmp_path / "out")


def test_image_symlink_out_of_the_input_is_refused(tmp_path, synthetic_weights, capsys):
    write_roi(tmp_path / "elsewhere" / "secret.tif")
    inp = track1_case(tmp_path)
    (inp / T1_DIR / "roi.tif").unlink()
    os.symlink(tmp_path / "elsewhere" / "secret.tif", inp / T1_DIR / "roi.tif")
    refused(capsys, run(inp, tmp_path / "out", synthetic_weights), "leads outside the input folder", tmp_path / "out")


def test_symlinked_folder_and_inputs_json_out_of_the_input_are_refused(tmp_path, synthetic_weights, capsys):
    other = track1_case(tmp_path / "other")
    inp = tmp_path / "input"
    (inp / "images").mkdir(parents=True)
    os.symlink(other / T1_DIR, inp / T1_DIR)
    inputs_json(inp, (T1_SLUG, T1_DIR, "roi.tif"))
    refused(capsys, run(inp, tmp_path / "out", synthetic_weights), "leads outside the input folder", tmp_path / "out")
    (inp / "inputs.json").unlink()
    os.symlink(other / "inputs.json", inp / "inputs.json")
    refused(capsys, run(inp, tmp_path / "out", synthetic_weights), "leads outside the input folder", tmp_path / "out")


def test_legacy_image_symlink_out_of_the_input_is_refused(tmp_path, synthetic_weights, capsys):
    write_roi(tmp_path / "elsewhere" / "secret.tif")
    inp = tmp_path / "input"
    inp.mkdir()
    os.symlink(tmp_path / "elsewhere" / "secret.tif", inp / "001.tif")
    refused(capsys, run(inp, tmp_path / "out", synthetic_weights), "leads outside the input folder", tmp_path / "out")


def test_legacy_device_named_like_an_image_is_refused(tmp_path, synthetic_weights, capsys):
    inp = tmp_path / "input"
    write_roi(inp / "001.tif")
    os.symlink("/dev/zero", inp / "002.tif")
    refused(capsys, run(inp, tmp_path / "out", synthetic_weights), "002.tif leads outside the input folder",
            tmp_path / "out")


def test_symlink_inside_the_input_is_read(tmp_path, synthetic_weights):
    inp = track1_case(tmp_path)
    (inp / T1_DIR / "roi.tif").rename(inp / "real.tif")
    os.symlink(inp / "real.tif", inp / T1_DIR / "roi.tif")
    assert run(inp, tmp_path / "out", synthetic_weights) == 0
    assert len(points(tmp_path / "out")) == 3


def test_fifo_is_not_a_regular_file(tmp_path, synthetic_weights, capsys):
    inp = track1_case(tmp_path)
    (inp / T1_DIR / "roi.tif").unlink()
    os.mkfifo(inp / T1_DIR / "roi.tif")  # reading it would block forever
    refused(capsys, run(inp, tmp_path / "out", synthetic_weights), "not a regular file", tmp_path / "out")


@pytest.mark.parametrize("data_file", ["/dev/zero", "../../../secret.raw", "roi.raw", "LIST"])
def test_mha_whose_pixels_live_elsewhere_is_refused(tmp_path, synthetic_weights, capsys, data_file):
    (tmp_path / "secret.raw").write_bytes(bytes(64 * 64 * 3))
    inp = tmp_path / "input"
    inputs_json(inp, (T1_SLUG, T1_DIR, "roi.mha"))
    (inp / T1_DIR).mkdir(parents=True)
    (inp / T1_DIR / "roi.raw").write_bytes(bytes(64 * 64 * 3))
    hf.mha(inp / T1_DIR / "roi.mha", (64, 64), channels=3, data_file=data_file, compressed=False)
    refused(capsys, run(inp, tmp_path / "out", synthetic_weights), "ElementDataFile = LOCAL", tmp_path / "out")


# ============================================================= writing outside / losing results


@pytest.mark.parametrize("odd", ["..tif", "...tif", ".hidden.tif"])
def test_legacy_stem_that_is_no_folder_name_is_refused(tmp_path, synthetic_weights, capsys, odd):
    inp = tmp_path / "input"
    write_roi(inp / "001.tif")
    write_roi(inp / odd)
    out = tmp_path / "deep" / "out"
    refused(capsys, run(inp, out, synthetic_weights), "no usable output folder", out)
    assert not list(tmp_path.rglob(T1_OUT))  # nothing next to (or above) the output folder


def test_legacy_images_sharing_a_stem_are_refused(tmp_path, synthetic_weights, capsys):
    inp = tmp_path / "input"
    write_roi(inp / "a.tif")
    write_roi(inp / "a.tiff", roi_with_figures(512, 512, [(50.0, 50.0)]))
    refused(capsys, run(inp, tmp_path / "out", synthetic_weights), "would share one output folder", tmp_path / "out")


@pytest.mark.parametrize("rel", ["../x.json", "/tmp/x.json", "a/../../x.json"])
def test_output_targets_stay_in_the_output_folder(tmp_path, rel):
    with pytest.raises(InputError, match="outside the output folder"):
        output_targets(tmp_path / "out", [Path(rel)])
    with pytest.raises(InputError, match="same file"):
        output_targets(tmp_path / "out", [Path("a.json"), Path("./a.json")])


# ============================================================= bombs and memory blow-ups


def _bomb_roi(inp: Path) -> None:
    hf.shared_tile_bomb(inp / T1_DIR / "roi.tif")


def _bomb_mha_roi(inp: Path) -> None:
    inputs_json(inp, (T1_SLUG, T1_DIR, "roi.mha"))
    (inp / T1_DIR / "roi.tif").unlink()
    hf.mha(inp / T1_DIR / "roi.mha", (30_000, 30_000), channels=3)


def _bomb_stack_page(inp: Path) -> None:
    inputs_json(inp, (T2_SLUG, T2_DIR, "stack.tif"))
    (inp / T2_DIR).mkdir(parents=True)
    hf.declared_huge_page(inp / T2_DIR / "stack.tif")


def _bomb_mha_stack(inp: Path) -> None:
    inputs_json(inp, (T2_SLUG, T2_DIR, "stack.mha"))
    (inp / T2_DIR).mkdir(parents=True)
    hf.mha(inp / T2_DIR / "stack.mha", (128, 128, 1_000_000), channels=3)


def _looping_stack(inp: Path) -> None:
    inputs_json(inp, (T2_SLUG, T2_DIR, "stack.tif"))
    (inp / T2_DIR).mkdir(parents=True)
    hf.looping_stack(inp / T2_DIR / "stack.tif")


def _looping_roi(inp: Path) -> None:
    hf.looping_stack(inp / T1_DIR / "roi.tif", pages=2)


def _coarse_spacing(inp: Path) -> None:
    # 2048^2 px tagged 4.9 um/px: 0.25 um/px would make it 40,141^2 px
    write_roi(inp / T1_DIR / "roi.tif", np.full((2048, 2048, 3), 230, np.uint8),
              resolution=(10 / 0.0049, 10 / 0.0049), compression="zlib")


BOMBS = {
    "TIFF tiles sharing one blob (100,000^2)": (_bomb_roi, "exceeds the pixel budget"),
    "MHA of 30,000^2": (_bomb_mha_roi, "exceeds the pixel budget"),
    "40,000^2 page in a stack": (_bomb_stack_page, "exceeds the pixel budget"),
    "MHA stack of a million crops": (_bomb_mha_stack, "exceeds the pixel budget"),
    "stack whose IFD chain loops": (_looping_stack, "IFD chain loops"),
    "ROI whose IFD chain loops": (_looping_roi, "IFD chain loops"),
    "2048^2 ROI at 4.9 um/px": (_coarse_spacing, "resampled to the models'"),
}


@pytest.mark.parametrize("case", BOMBS)
def test_declared_huge_images_are_refused_before_decoding(tmp_path, synthetic_weights, capsys, case):
    make, message = BOMBS[case]
    inp = track1_case(tmp_path)
    make(inp)
    refused(capsys, run(inp, tmp_path / "out", synthetic_weights), message, tmp_path / "out")


def test_coarse_spacing_refusal_is_the_only_line(tmp_path, synthetic_weights, capsys):
    """The budget check comes before the resampling is announced: the refusal is the one line."""
    inp = track1_case(tmp_path)
    _coarse_spacing(inp)
    rc = run(inp, tmp_path / "out", synthetic_weights)
    err = capsys.readouterr().err
    assert rc == 2 and [line for line in err.splitlines() if line.strip()] == [
        line for line in err.splitlines() if line.startswith("error:")], err


def test_bomb_is_refused_within_a_2_gib_address_space(tmp_path, synthetic_weights):
    """The shared-tile bomb declares 30 GB of pixels: the container job refuses it in a process
    that could not even hold one 40,000^2 page."""
    inp = track1_case(tmp_path)
    _bomb_roi(inp)
    limit = 2 << 30

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    r = subprocess.run([sys.executable, str(ROOT / "process.py"), "--input", str(inp), "--output", str(tmp_path / "o"),
                        "--weights", str(synthetic_weights), "--device", "cpu"],
                       capture_output=True, text=True, preexec_fn=cap, timeout=120)
    assert r.returncode == 2, r.stderr
    assert [line for line in r.stderr.splitlines() if line.startswith("error:")] == [
        "error: roi.tif: 100000x100000 px (10000 Mpx) exceeds the pixel budget of 64 Mpx "
        "(MITOSIS_MAX_IMAGE_PIXELS); refused"
    ]
    assert not (tmp_path / "o" / T1_OUT).exists()


def test_pixel_budget_is_a_setting(tmp_path, synthetic_weights, capsys, monkeypatch):
    inp = track1_case(tmp_path)  # 640 x 600 px
    monkeypatch.setenv("MITOSIS_MAX_IMAGE_PIXELS", str(640 * 600 - 1))
    refused(capsys, run(inp, tmp_path / "out", synthetic_weights), "640x600 px", tmp_path / "out")
    monkeypatch.setenv("MITOSIS_MAX_IMAGE_PIXELS", str(640 * 600))
    assert run(inp, tmp_path / "out", synthetic_weights) == 0


def test_stack_page_count_is_capped(tmp_path):
    tifffile.imwrite(tmp_path / "s.tif", np.zeros((5, 8, 8, 3), np.uint8))
    with pytest.raises(InputError, match="more than 4 pages"):
        read_stack(tmp_path / "s.tif", 128, Settings(max_stack_pages=4))


# ============================================================= silent data loss


def test_stack_cut_before_an_ifd_is_refused(tmp_path, synthetic_weights, capsys):
    inp = track2_case(tmp_path)
    hf.stack_cut_before_last_ifd(inp / T2_DIR / "stack.tif")
    with tifffile.TiffFile(inp / T2_DIR / "stack.tif") as tif:
        assert len(tif.pages) == 4  # what tifffile alone would have given: 4 of 5, quietly
    refused(capsys, run(inp, tmp_path / "out", synthetic_weights), "file is truncated", tmp_path / "out")


def test_multipage_tiff_as_track1_roi_is_refused(tmp_path, synthetic_weights, capsys):
    inp = track1_case(tmp_path)
    image = roi_with_figures(600, 640, FIGURES)
    tifffile.imwrite(inp / T1_DIR / "roi.tif", np.stack([image, image]))
    refused(capsys, run(inp, tmp_path / "out", synthetic_weights), "2 full-size pages", tmp_path / "out")
    with tifffile.TiffWriter(inp / T1_DIR / "roi.tif") as w:  # pages flagged "page of a multi-page image"
        for _ in range(3):
            w.write(image, subfiletype=2)
    refused(capsys, run(inp, tmp_path / "out", synthetic_weights), "3 full-size pages", tmp_path / "out")


def test_pyramid_pages_of_an_roi_are_not_extra_images(tmp_path, synthetic_weights):
    inp = track1_case(tmp_path)
    image = roi_with_figures(600, 640, FIGURES)
    with tifffile.TiffWriter(inp / T1_DIR / "roi.tif") as w:
        w.write(image, resolution=(40000, 40000), resolutionunit="CENTIMETER")
        w.write(image[::2, ::2], subfiletype=1)
    assert run(inp, tmp_path / "out", synthetic_weights) == 0
    assert len(points(tmp_path / "out")) == 3


def test_missing_listed_image_falls_back_only_to_the_only_image_and_says_so(tmp_path, synthetic_weights, capsys):
    inp = track1_case(tmp_path)
    (inp / T1_DIR / "roi.tif").rename(inp / T1_DIR / "0b6e-uuid.tif")  # the platform's own file name
    assert run(inp, tmp_path / "out", synthetic_weights) == 0
    assert "listed image roi.tif is not in" in capsys.readouterr().err
    write_roi(inp / T1_DIR / "another.tif")
    refused(capsys, run(inp, tmp_path / "out2", synthetic_weights), "listed image is missing: roi.tif", tmp_path / "out2")


def test_exact_name_beats_a_same_stem_file_of_another_format(tmp_path, synthetic_weights, capsys):
    inp = track1_case(tmp_path)  # roi.tif: 3 figures
    blank = sitk.GetImageFromArray(np.full((256, 256, 3), 230, np.uint8), isVector=True)
    blank.SetSpacing((0.00025, 0.00025))
    sitk.WriteImage(blank, str(inp / T1_DIR / "roi.mha"))  # sorts first, no figure
    assert run(inp, tmp_path / "out", synthetic_weights) == 0
    assert len(points(tmp_path / "out")) == 3
    (inp / T1_DIR / "roi.tif").rename(inp / T1_DIR / "roi.tiff")
    inputs_json(inp, (T1_SLUG, T1_DIR, "roi.png"))  # neither exists: two same-stem candidates
    refused(capsys, run(inp, tmp_path / "out2", synthetic_weights), "several files share its stem", tmp_path / "out2")


def test_stack_read_in_chunks_keeps_every_page_in_order(tmp_path):
    tifffile.imwrite(tmp_path / "s.tif", np.stack([np.full((128, 128, 3), i, np.uint8) for i in range(7)]))
    chunks = list(read_stack(tmp_path / "s.tif", 128, Settings(stack_chunk_pages=3)))
    assert [len(c) for c in chunks] == [3, 3, 1]
    assert [int(p[0, 0, 0]) for p in np.concatenate(chunks)] == list(range(7))


def test_truncated_tiled_slide_lists_its_unreadable_regions(synthetic_weights, tmp_path):
    from mitosis_analysis.inference import load_models
    from mitosis_analysis.slide import SlideOptions, analyse_slide
    from mitosis_analysis.slide.synthetic import SyntheticSlide, write_slide_tiff

    settings = Settings(weights_dir=synthetic_weights, device="cpu", batch_size=4)
    slide = SyntheticSlide(2200, 1600, tissue=((100, 100, 2200, 1500),), figures=((300.0, 250.0), (1700.0, 1350.0)))
    path = write_slide_tiff(tmp_path / "whole.tif", slide, compression="zlib")
    cut = tmp_path / "cut.tif"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size * 6 // 10])
    options = SlideOptions(region_size=512, progress=False, reader="tifffile")
    summary = analyse_slide(cut, tmp_path / "out", settings, options, load_models(settings))
    assert summary.regions_skipped and all("truncated" in r["reason"] for r in summary.regions_skipped)
    boxes = [r["box_px"] for r in summary.regions_skipped]
    assert any(x0 <= 1700 < x1 and y0 <= 1350 < y1 for x0, y0, x1, y1 in boxes)  # the lost figure's region
    assert summary.mitotic_figures == 1  # the intact top-left region is still analysed


# ============================================================= wrong pixels


def _rgb(h=48, w=64, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_cmyk_is_converted_to_rgb(tmp_path, capsys):
    rgb = _rgb()
    k = 255 - rgb.max(axis=-1)
    cmy = np.where(k[..., None] < 255, (255 - rgb.astype(float) - k[..., None]) / np.maximum(1, 255 - k[..., None]) * 255, 0)
    cmyk = np.dstack([cmy.round().astype(np.uint8), k.astype(np.uint8)])
    tifffile.imwrite(tmp_path / "c.tif", cmyk, photometric="separated")
    got = read_roi(tmp_path / "c.tif", S).pixels
    assert np.abs(got.astype(int) - rgb).max() <= 1
    assert "CMYK image, converted to RGB" in capsys.readouterr().err


def test_palette_is_converted_through_its_colour_map(tmp_path, capsys):
    rng = np.random.default_rng(2)
    colours = rng.integers(0, 256, (256, 3), dtype=np.uint16)
    index = rng.integers(0, 256, (40, 50), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "p.tif", index, photometric="palette", colormap=(colours * 257).T)
    np.testing.assert_array_equal(read_roi(tmp_path / "p.tif", S).pixels, colours[index].astype(np.uint8))
    assert "palette image" in capsys.readouterr().err


def test_miniswhite_is_inverted(tmp_path, capsys):
    gray = _rgb()[..., 0]
    tifffile.imwrite(tmp_path / "w.tif", 255 - gray, photometric="miniswhite")
    np.testing.assert_array_equal(read_roi(tmp_path / "w.tif", S).pixels, np.repeat(gray[..., None], 3, -1))
    assert "MINISWHITE" in capsys.readouterr().err


def test_float_image_with_nan_and_inf_keeps_its_range(capsys):
    rgb = _rgb()
    f = rgb.astype(np.float32) / 255
    f[0, 0, 0], f[1, 1, 1], f[2, 2, 2] = np.nan, np.inf, -np.inf
    got = to_rgb_uint8(f, "x")
    mask = np.ones(rgb.shape, bool)
    mask[0, 0, 0] = mask[1, 1, 1] = mask[2, 2, 2] = False
    np.testing.assert_array_equal(got[mask], rgb[mask])
    assert "3 NaN/infinite values" in capsys.readouterr().err
    with pytest.raises(InputError, match="without a single finite value"):
        to_rgb_uint8(np.full((4, 4, 3), np.nan, np.float32), "x")


def test_cmyk_roi_yields_the_figures_of_its_rgb_twin(tmp_path, synthetic_weights):
    rgb = roi_with_figures(600, 640, FIGURES)
    inp = track1_case(tmp_path)
    cmyk = np.dstack([255 - rgb, np.zeros(rgb.shape[:2], np.uint8)])  # K = 0: C, M, Y = 255 - R, G, B
    write_roi(inp / T1_DIR / "roi.tif", cmyk, photometric="separated")
    assert run(inp, tmp_path / "out", synthetic_weights) == 0
    assert len(points(tmp_path / "out")) == 3


def test_3d_mha_volume_is_not_taken_for_rgb(tmp_path, synthetic_weights, capsys):
    inp = tmp_path / "input"
    inputs_json(inp, (T1_SLUG, T1_DIR, "roi.mha"))
    (inp / T1_DIR).mkdir(parents=True)
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 64, 64), np.uint8)), str(inp / T1_DIR / "roi.mha"))
    refused(capsys, run(inp, tmp_path / "out", synthetic_weights), "3-D volume of 3 slices", tmp_path / "out")


def test_3d_gray_mha_stack_is_pages(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.stack([np.full((128, 128), i, np.uint8) for i in range(3)])),
                    str(tmp_path / "s.mha"))
    out = np.concatenate(list(read_stack(tmp_path / "s.mha", 128, S)))
    assert out.shape == (3, 128, 128, 3) and [int(p[0, 0, 0]) for p in out] == [0, 1, 2]


# ============================================================= one line, not a traceback


def _entry(**override):
    entry = {"interface": {"slug": T1_SLUG, "relative_path": T1_DIR}, "image": {"name": "roi.tif"}}
    for key, value in override.items():
        entry[key] = value
    return entry


MALFORMED = {
    "slug is a list": ([_entry(interface={"slug": [T1_SLUG], "relative_path": T1_DIR})], "interface.slug"),
    "image name is a number": ([_entry(image={"name": 7})], "image.name"),
    "relative path is a number": ([_entry(interface={"slug": T1_SLUG, "relative_path": 3})], "relative_path"),
    "interface is a string": ([_entry(interface=T1_SLUG)], "interface"),
    "entry is a number": ([1], "entry 0"),
    "empty list": ([], "lists no inputs"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_inputs_json_values_are_one_line(tmp_path, synthetic_weights, capsys, case):
    doc, message = MALFORMED[case]
    inp = track1_case(tmp_path)
    (inp / "inputs.json").write_text(json.dumps(doc))
    refused(capsys, run(inp, tmp_path / "out", synthetic_weights), message, tmp_path / "out")


def test_inputs_json_nested_100000_deep_is_one_line(tmp_path, synthetic_weights, capsys):
    inp = track1_case(tmp_path)
    (inp / "inputs.json").write_text("[" * 100_000 + "]" * 100_000)
    refused(capsys, run(inp, tmp_path / "out", synthetic_weights), "nested too deeply", tmp_path / "out")


@pytest.mark.parametrize("args,env,message", [
    (["--batch-size", "0"], {}, "--batch-size=0: Input should be greater than or equal to 1"),
    (["--batch-size", "x"], {}, "invalid int value"),
    ([], {"MITOSIS_BATCH_SIZE": "abc"}, "MITOSIS_BATCH_SIZE='abc': Input should be a valid integer"),
    ([], {"MITOSIS_MAX_IMAGE_PIXELS": "-5"}, "MITOSIS_MAX_IMAGE_PIXELS='-5': Input should be greater"),
    ([], {"MITOSIS_TILE_SIZE": "256"}, "MITOSIS_TILE_SIZE: plan.tile_size is part of the weights' inference plan"),
    ([], {"MITOSIS_DETECTION_LOGIT": "0"}, "MITOSIS_DETECTION_LOGIT: thresholds.detection_logit is part"),
    ([], {"MITOSIS_CLASSIFIER_TTA": "1"}, "MITOSIS_CLASSIFIER_TTA: plan.classifier_views is part of the weights' inference plan"),
])
def test_bad_options_and_settings_are_one_line(tmp_path, synthetic_weights, args, env, message):
    inp = track1_case(tmp_path)
    r = subprocess.run([sys.executable, str(ROOT / "process.py"), "--input", str(inp), "--output", str(tmp_path / "o"),
                        "--weights", str(synthetic_weights), "--device", "cpu", *args],
                       capture_output=True, text=True, env={**os.environ, **env}, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], r.stderr
    assert not (tmp_path / "o" / T1_OUT).exists()


def test_input_safety_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("MITOSIS_MAX_STACK_PAGES", "12")
    assert Settings.from_env().max_stack_pages == 12
    monkeypatch.setenv("MITOSIS_MAX_STACK_PAGES", "0")
    with pytest.raises(InputError, match="MITOSIS_MAX_STACK_PAGES='0'"):
        Settings.from_env()


def test_output_target_that_is_a_folder_is_refused_before_work(tmp_path, synthetic_weights, capsys):
    (tmp_path / "out" / T1_OUT).mkdir(parents=True)
    refused(capsys, run(track1_case(tmp_path), tmp_path / "out", synthetic_weights), "it is a folder")


def _two_sockets(tmp_path: Path) -> Path:
    inp = track1_case(tmp_path)
    track2_case(tmp_path, np.full((2, 128, 128, 3), 100, np.uint8))
    inputs_json(inp, (T1_SLUG, T1_DIR, "roi.tif"), (T2_SLUG, T2_DIR, "stack.tif"))
    return inp


def test_full_disk_leaves_no_half_written_file(tmp_path, synthetic_weights, capsys, monkeypatch):
    inp = _two_sockets(tmp_path)
    real_fsync, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 2:  # the second output: no space left
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    out = tmp_path / "out"
    refused(capsys, run(inp, out, synthetic_weights), "No space left on device", out)
    assert len(calls) == 2


def test_second_socket_unwritable_removes_the_first(tmp_path, synthetic_weights, capsys, monkeypatch):
    inp = _two_sockets(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / T1_OUT).write_text("an earlier result")
    real_replace = os.replace

    def replace_(src, dst):
        if Path(dst).name == T2_OUT:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_)
    refused(capsys, run(inp, out, synthetic_weights), "no output written")
    assert sorted(p.name for p in out.iterdir()) == [T1_OUT]  # no temp, no new file, no T2 file
    assert (out / T1_OUT).read_text() == "an earlier result"  # what was there is put back


def test_output_set_writes_all(tmp_path):
    written = write_output_set(tmp_path / "o", {Path("a.json"): b"1", Path("d/b.json"): b"2"})
    assert [p.read_bytes() for p in written] == [b"1", b"2"]
    assert sorted(p.name for p in (tmp_path / "o").rglob("*")) == ["a.json", "b.json", "d"]


def test_file_name_with_a_newline_gives_one_line(tmp_path, synthetic_weights, capsys):
    inp = tmp_path / "input"
    inp.mkdir()
    (inp / "bad\nname.tif").write_bytes(b"II*\x00 not really a tiff")
    line = refused(capsys, run(inp, tmp_path / "out", synthetic_weights), "bad\\nname.tif", tmp_path / "out")
    assert "cannot read TIFF" in line
    inputs_json(inp, (T1_SLUG, T1_DIR, "x\ny.tif"))
    refused(capsys, run(inp, tmp_path / "out", synthetic_weights), "x\\ny.tif is not a plain file name")


@pytest.mark.parametrize("byteorder", ["<", ">"])
@pytest.mark.parametrize("bigtiff", [False, True])
def test_ifd_chain_walk_reads_every_tiff_flavour_and_catches_its_truncation(tmp_path, byteorder, bigtiff):
    stack = np.stack([np.full((128, 128, 3), 30 * i, np.uint8) for i in range(4)])
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, stack, byteorder=byteorder, bigtiff=bigtiff)
    out = np.concatenate(list(read_stack(path, 128, S)))
    assert [int(p[0, 0, 0]) for p in out] == [0, 30, 60, 90]
    last = hf.ifd_offsets(path)[-1]
    path.write_bytes(path.read_bytes()[: last + 4])  # cut inside the last IFD
    with pytest.raises(InputError, match="truncated"):
        read_stack(path, 128, S)
