"""Slide mode end to end on generated pyramidal TIFFs: exact points across region borders with
the hand-written models, both readers, no tissue, a corrupt tile, resume after an interruption,
the CLI, and one run with the real weights."""

import csv
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mitosis_analysis.errors import InputError
from mitosis_analysis.slide import SlideOptions, analyse_slide
from mitosis_analysis.slide.export import GEOJSON, OUTPUT_FILES, POINTS_CSV, POINTS_JSON, SUMMARY_JSON
from mitosis_analysis.slide.journal import JOURNAL_FILE, Journal
from mitosis_analysis.slide.synthetic import SyntheticSlide, write_slide_tiff

ROOT = Path(__file__).resolve().parents[1]
REGION = 1024  # small regions so that a small slide has borders to cross

# on a region border (x = 1024), on a corner of four regions, near the slide edge, and a pair
# 20 px (5 um) apart across a border that must collapse to one figure
FIGURES = [(600.0, 500.0), (1024.0, 900.0), (2048.0, 1024.0), (1700.0, 1350.0), (2140.0, 300.0)]
PAIR = [(1014.0, 1300.0), (1034.0, 1300.0)]
SLIDE = SyntheticSlide(2200, 1600, tissue=((100, 100, 2200, 1500),), figures=tuple(FIGURES + PAIR))
OPTIONS = SlideOptions(region_size=REGION, progress=False)


@pytest.fixture(scope="module")
def lossless_slide(tmp_path_factory):
    return write_slide_tiff(tmp_path_factory.mktemp("slide") / "lossless.tif", SLIDE, compression="zlib")


@pytest.fixture(scope="module")
def module_models(synthetic_weights):
    from mitosis_analysis.inference import load_models
    from mitosis_analysis.settings import Settings

    settings = Settings(weights_dir=synthetic_weights, device="cpu", batch_size=4)
    return settings, load_models(settings)


@pytest.fixture(scope="module")
def tifffile_run(lossless_slide, module_models, tmp_path_factory):
    settings, models = module_models
    out = tmp_path_factory.mktemp("run")
    summary = analyse_slide(lossless_slide, out, settings, replace(OPTIONS, reader="tifffile"), models)
    return summary, out


def _points(folder: Path) -> list[dict]:
    return json.loads((folder / POINTS_JSON).read_text())["points"]


class InterruptingModels:
    """The models, with a Ctrl-C after ``calls`` detector batches."""

    def __init__(self, models, calls: int):
        self._models, self.calls = models, calls

    def __getattr__(self, name):
        return getattr(self._models, name)

    def mitosis_logit(self, tiles):
        self.calls -= 1
        if self.calls < 0:
            raise KeyboardInterrupt
        return self._models.mitosis_logit(tiles)


class CountingModels(InterruptingModels):
    def __init__(self, models):
        super().__init__(models, 10**9)
        self.tiles = 0

    def mitosis_logit(self, tiles):
        self.tiles += len(tiles)
        return self._models.mitosis_logit(tiles)


# --------------------------------------------------------------------------- exact results


def test_figures_found_once_at_exact_positions_across_region_borders(tifffile_run):
    summary, out = tifffile_run
    points = _points(out)
    found = np.array([(p["x_px"], p["y_px"]) for p in points])
    assert len(found) == len(FIGURES) + 1, found
    for ex, ey in FIGURES:
        assert np.hypot(found[:, 0] - ex, found[:, 1] - ey).min() < 0.05, (ex, ey, found)
    pair = [np.hypot(found[:, 0] - ex, found[:, 1] - ey).min() < 0.05 for ex, ey in PAIR]
    assert sum(pair) == 1  # one of the two, whichever scored higher
    assert summary.mitotic_figures == len(found) == summary.candidates
    assert summary.regions_total == 6 and summary.regions_with_tissue == 6 and not summary.regions_skipped
    assert summary.tissue_area_mm2 == pytest.approx(2100 * 1400 * 0.00025**2, rel=0.03)
    assert summary.mitotic_count_per_mm2 == pytest.approx(summary.mitotic_figures / summary.analysed_tissue_area_mm2)
    assert summary.hotspot.count == len(found)  # the slide (0.55 x 0.4 mm) is smaller than 2 mm^2


def test_output_files_agree(tifffile_run):
    summary, out = tifffile_run
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES + (JOURNAL_FILE,))
    points = _points(out)
    rows = list(csv.DictReader((out / POINTS_CSV).open()))
    assert len(rows) == len(points)
    for row, p in zip(rows, points):
        assert row["label"] == p["label"]
        assert float(row["x_mm"]) == pytest.approx(p["x_px"] * 0.00025, abs=1e-6)
        assert float(row["atypical_probability"]) == pytest.approx(p["atypical_probability"], abs=1e-6)
        assert p["label"] == ("atypical mitotic figure" if p["atypical_probability"] >= 0.5 else "mitotic figure")
    geo = json.loads((out / GEOJSON).read_text())
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) == summary.mitotic_figures
    for feature, p in zip(geo["features"], points):
        assert feature["geometry"]["type"] == "Point" and len(feature["id"]) == 36  # a UUID
        assert feature["geometry"]["coordinates"] == pytest.approx([p["x_px"] + 0.5, p["y_px"] + 0.5], abs=1e-3)
        props = feature["properties"]
        assert props["objectType"] == "annotation"
        assert props["classification"]["name"] in ("Mitotic figure", "Atypical mitotic figure")
        assert len(props["classification"]["color"]) == 3
    stored = json.loads((out / SUMMARY_JSON).read_text())
    assert stored["complete"] is True and stored["mitotic_figures"] == summary.mitotic_figures
    assert stored["atypical_fraction"] == pytest.approx(summary.atypical_figures / summary.mitotic_figures)
    from PIL import Image

    assert Image.open(out / "overview.png").size[0] >= 512


def test_openslide_reader_gives_the_same_points(lossless_slide, module_models, tifffile_run, tmp_path):
    settings, models = module_models
    summary = analyse_slide(lossless_slide, tmp_path, settings, replace(OPTIONS, reader="openslide"), models)
    assert summary.reader == "openslide"
    a = np.array([(p["x_px"], p["y_px"]) for p in _points(tmp_path)])
    b = np.array([(p["x_px"], p["y_px"]) for p in _points(tifffile_run[1])])
    np.testing.assert_allclose(a, b, atol=1e-3)


def test_slide_without_tissue_gives_valid_empty_outputs(module_models, tmp_path):
    settings, models = module_models
    path = write_slide_tiff(tmp_path / "glass.tif", SyntheticSlide(1500, 1200))
    counting = CountingModels(models)
    summary = analyse_slide(path, tmp_path / "out", settings, OPTIONS, counting)
    assert counting.tiles == 0 and summary.tiles_inferred == 0
    assert summary.mitotic_figures == 0 and summary.tissue_area_mm2 == 0 and summary.regions_with_tissue == 0
    assert summary.mitotic_count_per_mm2 is None and summary.atypical_fraction is None
    assert summary.hotspot.count == 0 and summary.hotspot.x_mm is None
    assert json.loads((tmp_path / "out" / GEOJSON).read_text())["features"] == []
    assert _points(tmp_path / "out") == []
    assert (tmp_path / "out" / "overview.png").stat().st_size > 0


# --------------------------------------------------------------------------- damaged slides


def _corrupt_tile_at(path: Path, x: int, y: int) -> None:
    """Overwrite the start of the level-0 tile holding (x, y) with zeros (no JPEG marker left)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        index = (y // page.tilelength) * page.chunked[1] + x // page.tilewidth
        offset = page.dataoffsets[index]
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(bytes(16))


@pytest.mark.parametrize("reader", ["tifffile", "openslide"])
def test_corrupt_tile_skips_its_region_with_a_warning(module_models, tmp_path, capsys, reader):
    settings, models = module_models
    path = write_slide_tiff(tmp_path / "damaged.tif", SLIDE)  # JPEG tiles
    _corrupt_tile_at(path, 1700, 1350)  # region (1, 1) of the 2 x 3 grid, one figure in its core
    summary = analyse_slide(path, tmp_path / "out", settings, replace(OPTIONS, reader=reader), models)
    assert "warning: region 4 " in capsys.readouterr().err
    (skipped,) = summary.regions_skipped
    assert skipped["box_px"] == [1024, 1024, 2048, 1600]
    found = {(round(p["x_px"]), round(p["y_px"])) for p in _points(tmp_path / "out")}
    assert (1700, 1350) not in found and (600, 500) in found and len(found) == 5
    assert summary.analysed_tissue_area_mm2 < summary.tissue_area_mm2
    assert summary.mitotic_count_per_mm2 == pytest.approx(summary.mitotic_figures / summary.analysed_tissue_area_mm2)


def test_slide_whose_tissue_is_all_unreadable_is_an_error(module_models, tmp_path):
    settings, models = module_models
    small = SyntheticSlide(2048, 2048, tissue=((300, 300, 700, 700),))  # level 1 (intact) feeds the mask
    path = write_slide_tiff(tmp_path / "bad.tif", small)
    for y in range(256, 768, 256):
        for x in range(256, 768, 256):
            _corrupt_tile_at(path, x, y)
    with pytest.raises(InputError, match="no tissue region could be read"):
        analyse_slide(path, tmp_path / "out", settings, OPTIONS, models)
    assert not (tmp_path / "out" / SUMMARY_JSON).exists()


# --------------------------------------------------------------------------- resume


def test_interrupted_run_resumes_without_redoing_regions(lossless_slide, module_models, tifffile_run, tmp_path):
    settings, models = module_models
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        analyse_slide(lossless_slide, out, settings, OPTIONS, InterruptingModels(models, calls=12))
    assert not (out / SUMMARY_JSON).exists() and not (out / POINTS_JSON).exists()
    lines = (out / JOURNAL_FILE).read_text().splitlines()
    finished = [json.loads(line) for line in lines[1:]]
    assert 1 <= len(finished) < 6
    done_tiles = sum(r["tiles"] for r in finished)
    with open(out / JOURNAL_FILE, "ab") as f:
        f.write(b'{"kind":"region","index":5,"til')  # torn last line: a crash mid-write
    counting = CountingModels(models)
    summary = analyse_slide(lossless_slide, out, settings, OPTIONS, counting)
    assert summary.resumed
    assert counting.tiles == summary.tiles_inferred - done_tiles > 0  # finished regions not redone
    assert _points(out) == _points(tifffile_run[1])
    # a finished run re-run with another hotspot area: nothing inferred, same points
    again = CountingModels(models)
    summary = analyse_slide(lossless_slide, out, settings, replace(OPTIONS, hotspot_area_mm2=0.01), again)
    assert again.tiles == 0 and _points(out) == _points(tifffile_run[1])
    assert summary.hotspot.area_mm2 == pytest.approx(0.01) and summary.hotspot.count < summary.mitotic_figures


def test_journal_of_another_run_is_refused_unless_restart(lossless_slide, module_models, tifffile_run, tmp_path):
    settings, models = module_models
    out = tifffile_run[1]
    other = replace(OPTIONS, halo=64)
    with pytest.raises(InputError, match="another slide or other settings"):
        analyse_slide(lossless_slide, out, settings, other, models)
    assert (out / SUMMARY_JSON).exists()  # the refused run touched nothing
    fresh = tmp_path / "copy"
    fresh.mkdir()
    (fresh / JOURNAL_FILE).write_bytes((out / JOURNAL_FILE).read_bytes())
    summary = analyse_slide(lossless_slide, fresh, settings, replace(other, restart=True), models)
    assert not summary.resumed and summary.mitotic_figures == tifffile_run[0].mitotic_figures


def test_journal_is_locked_while_a_run_holds_it(tmp_path):
    with Journal(tmp_path, {"a": 1}):
        with pytest.raises(InputError, match="another run"):
            Journal(tmp_path, {"a": 1})
    with Journal(tmp_path, {"a": 1}) as journal:
        assert not journal.resumed


# --------------------------------------------------------------------------- command line


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mitosis_analysis", "slide", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_cli_bad_input_is_one_line(tmp_path):
    result = _cli(str(tmp_path / "nope.svs"), "--output", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: slide not found: {tmp_path / 'nope.svs'}"]
    assert not (tmp_path / "out").exists()


def test_cli_with_the_real_weights(tmp_path):
    """The shipped ONNX models on a small slide: a complete, self-consistent set of outputs."""
    small = SyntheticSlide(1400, 1100, tissue=((400, 300, 1000, 800),), figures=((700.0, 550.0),))
    path = write_slide_tiff(tmp_path / "small.tif", small)
    result = _cli(str(path), "--output", str(tmp_path / "out"), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "tiles" in result.stderr and "wrote" in result.stdout  # progress on stderr, information on stdout
    assert "warning" not in result.stderr
    summary = json.loads((tmp_path / "out" / SUMMARY_JSON).read_text())
    points = _points(tmp_path / "out")
    assert summary["candidates"] == len(points)
    assert summary["mitotic_figures"] == sum(p["label"] != "non-mitotic figure" for p in points)
    assert 0 < summary["tiles_inferred"] <= 20 and summary["regions_with_tissue"] == 1  # 5 x 4 tiles at most
    assert all(0 <= p["probability"] <= 1 for p in points)
    assert np.isclose(summary["level0_spacing_mm"][0], 0.00025)


def test_regions_cover_the_grid_once_with_clipped_halos():
    from mitosis_analysis.slide.run import plan_regions

    regions = plan_regions(2200, 1600, REGION, 128)
    cover = np.zeros((1600, 2200), int)
    for r in regions:
        x0, y0, x1, y1 = r.core
        cover[y0:y1, x0:x1] += 1
        bx0, by0, bx1, by1 = r.box
        assert (bx0, by0) == (max(0, x0 - 128), max(0, y0 - 128))
        assert (bx1, by1) == (min(2200, x1 + 128), min(1600, y1 + 128))
    assert (cover == 1).all() and [r.index for r in regions] == list(range(6))


def test_finer_slide_is_resampled_and_points_come_back_in_its_pixels(module_models, tmp_path):
    """A slide scanned at 0.125 um/px without a pyramid: analysed at 0.25 um/px, reported in its
    own (level-0) pixels."""
    settings, models = module_models
    fine = SyntheticSlide(2400, 1800, tissue=((200, 200, 2200, 1600),), figures=((1200.0, 800.0), (2050.0, 400.0)),
                          figure_radius=12.0, spacing_mm=0.000125)
    path = write_slide_tiff(tmp_path / "fine.tif", fine, pyramid="none", compression="zlib")
    summary = analyse_slide(path, tmp_path / "out", settings, OPTIONS, models)
    assert summary.resampled and summary.analysis_spacing_mm == pytest.approx((0.00025, 0.00025))
    assert summary.level0_spacing_mm == pytest.approx((0.000125, 0.000125))
    found = sorted((p["x_px"], p["y_px"]) for p in _points(tmp_path / "out"))
    assert np.allclose(found, [(1200, 800), (2050, 400)], atol=0.6), found
    assert [p["x_mm"] for p in sorted(_points(tmp_path / "out"), key=lambda p: p["x_px"])] == pytest.approx(
        [1200 * 0.000125, 2050 * 0.000125], abs=1e-4)


def test_roi_mode_and_slide_mode_are_one_engine(tifffile_run, module_models):
    """The same pixels as a Track 1 ROI (one box of the working grid) and as a slide (regions of
    1024 px with halos): the same figures at the same positions, the same scores."""
    from mitosis_analysis.decision import decide_detections
    from mitosis_analysis.pipeline import analyse_roi
    from mitosis_analysis.readers import RoiImage

    settings, models = module_models
    roi = RoiImage(SLIDE.render(0, 0, SLIDE.width, SLIDE.height), (0.00025, 0.00025), False, Path("roi.tif"))
    as_roi = [d for d in decide_detections(analyse_roi(roi, models, settings), models.manifest.thresholds)
              if d.is_mitosis]
    as_slide = _points(tifffile_run[1])
    assert len(as_roi) == len(as_slide) == len(FIGURES) + 1
    for p in as_slide:
        d = min(as_roi, key=lambda d: np.hypot(d.x - p["x_px"], d.y - p["y_px"]))
        assert np.hypot(d.x - p["x_px"], d.y - p["y_px"]) < 0.05
        assert d.probability == pytest.approx(p["probability"], abs=1e-4)
