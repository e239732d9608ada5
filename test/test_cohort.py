"""Cohort mode: the slide list, a cohort of generated slides plus the real ../shared/data/slides on
a local Dask cluster of two workers (one broken slide among them), the rerun that retries only the
failed slide, the table in CSV and Parquet, and bad input."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, SHARED_DATA
from mitosis_analysis.errors import InputError
from mitosis_analysis.slide.synthetic import SyntheticSlide, write_slide_tiff

pytest.importorskip("distributed", reason="the cohort mode needs dask[distributed] (requirements-dev.txt)")
pytest.importorskip("pyarrow", reason="the cohort table needs pyarrow (requirements-dev.txt)")

from mitosis_analysis.cohort import read_slide_list  # noqa: E402
from mitosis_analysis.cohort.table import COHORT_CSV, COHORT_PARQUET, COHORT_PNG, COLUMNS  # noqa: E402

REAL_SLIDES = sorted((SHARED_DATA / "slides").glob("*.svs"))
# small generated slides: tissue with two figures each (the synthetic detector finds exactly those)
GENERATED = {
    f"gen{i}": SyntheticSlide(2200, 1600, tissue=((100, 100, 2100, 1500),),
                              figures=((600.0 + 200 * i, 500.0), (1500.0, 900.0)))
    for i in range(3)
}


def _cohort(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mitosis_analysis", "cohort", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def _rows(out: Path) -> dict[str, dict]:
    with open(out / COHORT_CSV, newline="") as f:
        return {r["slide"]: r for r in csv.DictReader(f)}


# --------------------------------------------------------------------------- slide list


def test_slide_list_from_a_folder(tmp_path):
    for name in ("b.svs", "a.tif", "c.ndpi", "notes.txt", "d.TIFF"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    slides = read_slide_list(tmp_path)
    assert [s.id for s in slides] == ["a", "b", "c", "d"]
    assert all(s.path.is_absolute() and s.path.parent == tmp_path.resolve() for s in slides)


def test_slide_list_from_a_csv(tmp_path):
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "cohort.csv").write_text(
        "slide,id,grade\n../x/case1.svs,,2\n/abs/path/case2.tiff,c2,3\n\n")
    slides = read_slide_list(tmp_path / "lists" / "cohort.csv")
    assert [(s.id, s.path, s.extra) for s in slides] == [
        ("case1", (tmp_path / "x" / "case1.svs").resolve(), {"grade": "2"}),
        ("c2", Path("/abs/path/case2.tiff"), {"grade": "3"}),
    ]


@pytest.mark.parametrize("content, message", [
    ("path\na.svs\n", "no 'slide' column"),
    ("slide\na/x.svs\nb/x.svs\n", "two slides share the id 'x'"),
    ("slide,id\na.svs,../evil\n", "not a safe folder name"),
    ("slide\n", "no slides in"),
])
def test_bad_slide_lists_are_refused(tmp_path, content, message):
    (tmp_path / "list.csv").write_text(content)
    with pytest.raises(InputError, match=message):
        read_slide_list(tmp_path / "list.csv")


def test_bad_input_is_one_line_and_writes_nothing(tmp_path):
    result = _cohort(str(tmp_path / "nope.csv"), "--output", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: slide list not found: {tmp_path / 'nope.csv'} "
                                                  "(give a CSV file or a folder of slides)"]
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- a cohort on two workers


@pytest.fixture(scope="module")
def cohort_run(tmp_path_factory, synthetic_weights):
    """Generated slides, the real slides and one broken file, listed in a CSV, on two workers."""
    root = tmp_path_factory.mktemp("cohort")
    (root / "slides").mkdir()
    for name, slide in GENERATED.items():
        write_slide_tiff(root / "slides" / f"{name}.tif", slide)
    (root / "slides" / "broken.svs").write_text("not a slide")
    lines = ["slide,id,case"] + [f"slides/{n}.tif,{n},{i}" for i, n in enumerate(GENERATED)]
    lines += [f"{p},,real" for p in REAL_SLIDES] + ["slides/broken.svs,broken,bad"]
    (root / "cohort.csv").write_text("\n".join(lines) + "\n")
    out = root / "out"
    result = _cohort(str(root / "cohort.csv"), "--output", str(out), "--workers", "2", "--weights",
                     str(synthetic_weights), "--device", "cpu", "--batch-size", "16")
    return root, out, result


def test_cohort_table_says_which_slides_failed_and_why(cohort_run):
    root, out, result = cohort_run
    assert result.returncode == 1, result.stderr  # one slide failed
    assert "on 2 local worker processes" in result.stdout
    assert "warning: 1 slide(s) failed (broken)" in result.stderr
    rows = _rows(out)
    assert list(rows) == [*GENERATED, *(p.stem for p in REAL_SLIDES), "broken"]  # slide list order
    broken = rows["broken"]
    assert broken["status"] == "failed" and "cannot open slide" in broken["reason"]
    assert broken["mitotic_figures"] == "" and broken["input_case"] == "bad"
    for name in GENERATED:
        row = rows[name]
        assert row["status"] == "done" and row["reason"] == "" and row["run"] == "this run"
        assert int(row["mitotic_figures"]) == 2 and int(row["hotspot_count"]) == 2
        assert float(row["tissue_area_mm2"]) == pytest.approx(2000 * 1400 * 0.00025**2, rel=0.05)
        assert float(row["mitotic_count_per_mm2"]) == pytest.approx(2 / float(row["analysed_tissue_area_mm2"]))
        assert float(row["atypical_fraction"]) in (0.0, 0.5, 1.0)
        assert row["spacing_assumed"] == "false" and row["resampled"] == "false"
        summary = json.loads((Path(row["output"]) / "summary.json").read_text())
        assert summary["mitotic_figures"] == 2 and Path(row["log"]).is_file()
    assert {rows[n]["worker"] for n in rows} <= {"0", "1"}


@pytest.mark.skipif(not REAL_SLIDES, reason="../shared/data/slides is not beside the checkout")
def test_real_slides_rows_are_truthful_about_their_spacing(cohort_run):
    """Neither real slide is at 0.25 um/px: CMU (0.499 um/px) is upsampled, TCGA (no MPP) gets the
    assumed 0.25 um/px; both runs finish and the table says so."""
    rows = _rows(cohort_run[1])
    for path in REAL_SLIDES:
        row = rows[path.stem]
        assert row["status"] == "done", row["reason"]
        assert float(row["tissue_area_mm2"]) > 0 and row["input_case"] == "real"
    if "cmu_small_region" in rows:
        assert rows["cmu_small_region"]["resampled"] == "true"
        assert float(rows["cmu_small_region"]["spacing_um"]) == pytest.approx(0.499)
    if "tcga-cr-7395-01a-01-ts1" in rows:
        assert rows["tcga-cr-7395-01a-01-ts1"]["spacing_assumed"] == "true"


def test_parquet_and_csv_hold_the_same_table(cohort_run):
    import pyarrow.parquet as pq

    out = cohort_run[1]
    table = pq.read_table(out / COHORT_PARQUET)
    assert table.column_names[: len(COLUMNS)] == list(COLUMNS)
    assert str(table.schema.field("mitotic_figures").type) == "int64"
    assert str(table.schema.field("spacing_assumed").type) == "bool"
    records = table.to_pylist()
    rows = _rows(out)
    assert [r["slide"] for r in records] == list(rows)
    for record in records:
        row = rows[record["slide"]]
        assert record["status"] == row["status"]
        assert (record["mitotic_figures"] is None) == (row["mitotic_figures"] == "")
        if record["mitotic_count_per_mm2"] is not None:
            assert record["mitotic_count_per_mm2"] == pytest.approx(float(row["mitotic_count_per_mm2"]), rel=1e-5)
    from PIL import Image

    assert Image.open(out / COHORT_PNG).size[0] >= 800


def test_rerun_retries_only_the_failed_slide(cohort_run, synthetic_weights):
    root, out, _ = cohort_run
    before = {n: (Path(r["output"]) / "summary.json").stat().st_mtime_ns
              for n, r in _rows(out).items() if r["status"] == "done"}
    (root / "slides" / "broken.svs").unlink()
    write_slide_tiff(root / "slides" / "broken.svs", GENERATED["gen0"])  # repaired (a TIFF under that name)
    result = _cohort(str(root / "cohort.csv"), "--output", str(out), "--workers", "2", "--weights",
                     str(synthetic_weights), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert f"{len(before)} of {len(before) + 1} slides finished by an earlier run" in result.stdout
    assert "[1/1] broken: done" in result.stdout
    rows = _rows(out)
    assert rows["broken"]["status"] == "done" and rows["broken"]["run"] == "this run"
    assert int(rows["broken"]["mitotic_figures"]) == 2
    for name, mtime in before.items():
        assert rows[name]["run"] == "earlier run" and rows[name]["wall_seconds"] == ""
        assert (Path(rows[name]["output"]) / "summary.json").stat().st_mtime_ns == mtime  # not run again


def test_a_finished_slide_with_other_weights_is_run_again(tmp_path, synthetic_weights):
    """The skip is only for the same slide, weights and settings."""
    from mitosis_analysis.cohort.run import finished_row
    from mitosis_analysis.manifest import Manifest
    from mitosis_analysis.settings import Settings
    from mitosis_analysis.slide import SlideOptions, analyse_slide

    path = write_slide_tiff(tmp_path / "s.tif", GENERATED["gen1"])
    (slide,) = read_slide_list(tmp_path)
    settings = Settings(weights_dir=synthetic_weights, device="cpu")
    options = SlideOptions(progress=False)
    analyse_slide(path, tmp_path / "out" / "slides" / "s", settings, options)
    m = Manifest.load(synthetic_weights)
    assert finished_row(slide, tmp_path / "out", settings, options, m)["status"] == "done"
    other_weights = m.model_copy(update={"detector": m.detector.model_copy(update={"sha256": "0" * 64})})
    assert finished_row(slide, tmp_path / "out", settings, options, other_weights) is None
    other_plan = m.model_copy(update={"plan": m.plan.model_copy(update={"classifier_views": 2})})
    assert finished_row(slide, tmp_path / "out", settings, options, other_plan) is None
    other = Settings(weights_dir=synthetic_weights, device="cpu", default_spacing_mm=0.0003)
    assert finished_row(slide, tmp_path / "out", other, options, m) is None
    assert finished_row(slide, tmp_path / "out", settings, SlideOptions(hotspot_area_mm2=1.0), m) is None


# --------------------------------------------------------------------------- the package


def test_weights_are_found_inside_the_installed_package(tmp_path, monkeypatch):
    from mitosis_analysis import settings as s

    assert s.default_weights_dir() == s.REPO_ROOT / "weights"  # a checkout: the repository's weights/
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "manifest.json").write_text("{}")
    monkeypatch.setattr(s, "PACKAGE_ROOT", tmp_path)
    assert s.Settings().weights_dir == tmp_path / "weights"  # installed: the package's own
    monkeypatch.setenv("MITOSIS_WEIGHTS_DIR", "/elsewhere")
    assert s.Settings.from_env().weights_dir == Path("/elsewhere")


@pytest.mark.skipif(os.environ.get("MITOSIS_SKIP_WHEEL") == "1", reason="MITOSIS_SKIP_WHEEL=1")
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    """The wheel carries the package, py.typed, the weights and the console command; installed in a
    fresh virtual environment, `mitosis-analysis` runs a cohort from another folder with the
    packaged weights. (Its dependencies come from this environment through a .pth file, so that
    the test needs no network; .ci/run does the full `pip install .`.)"""
    import sysconfig
    import zipfile

    from mitosis_analysis import __version__

    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("*.whl")
    assert wheel.name == f"mitosis_analysis-{__version__}-py3-none-any.whl"
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"mitosis_analysis/py.typed", "mitosis_analysis/weights/manifest.json",
            "mitosis_analysis/weights/detector.onnx", "mitosis_analysis/weights/classifier.onnx",
            "mitosis_analysis/cohort/run.py"} <= names
    assert not any(n.startswith(("training/", "test/", "model/")) for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MITOSIS_"))}
    command = venv / "bin" / "mitosis-analysis"
    version = subprocess.run([str(command), "--version"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert version.stdout.strip() == f"mitosis-analysis {__version__}", version.stderr
    helped = subprocess.run([str(command), "cohort", "--help"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert helped.returncode == 0 and "--scheduler" in helped.stdout, helped.stderr
    where = subprocess.run([str(py), "-c", "import mitosis_analysis.settings as s; print(s.Settings().weights_dir)"],
                           capture_output=True, text=True, cwd=tmp_path, env=env).stdout.strip()
    assert Path(where) == Path(site) / "mitosis_analysis" / "weights"

    (tmp_path / "slides").mkdir()
    small = SyntheticSlide(1400, 1100, tissue=((400, 300, 1000, 800),), figures=((700.0, 550.0),))
    write_slide_tiff(tmp_path / "slides" / "small.tif", small)
    run = subprocess.run([str(command), "cohort", "slides", "--output", "out", "--workers", "1", "--device", "cpu"],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = _rows(tmp_path / "out")
    assert rows["small"]["status"] == "done"
    assert "models: trained" in (tmp_path / "out" / "logs" / "small.log").read_text()


def test_cohort_on_a_running_scheduler_by_address(tmp_path, synthetic_weights):
    """--scheduler: the slides go to the workers of a Dask cluster that was started elsewhere
    (here a local one, reached by its tcp:// address like any remote scheduler)."""
    from distributed import LocalCluster

    for name in ("gen0", "gen2"):
        write_slide_tiff(tmp_path / f"{name}.tif", GENERATED[name])
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        result = _cohort(str(tmp_path), "--output", str(tmp_path / "out"), "--scheduler", cluster.scheduler_address,
                         "--weights", str(synthetic_weights), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert f"on the Dask cluster at {cluster.scheduler_address} (2 workers now)" in result.stdout
    rows = _rows(tmp_path / "out")
    assert [r["status"] for r in rows.values()] == ["done", "done"]
    assert all(int(r["mitotic_figures"]) == 2 for r in rows.values())


def crash_on_slide_named_crash(slide, output, settings, options, weights):
    """The cohort's task, except that the worker process dies on the slide with id 'crash'."""
    from mitosis_analysis.cohort.run import _run_checked

    if slide.id == "crash":
        os._exit(3)
    return _run_checked(slide, output, settings, options, weights)


def test_a_worker_that_dies_fails_its_slide_only(tmp_path, synthetic_weights, capsys):
    from mitosis_analysis.cohort import run_cohort
    from mitosis_analysis.settings import Settings
    from mitosis_analysis.slide import SlideOptions

    for name in ("gen0", "crash", "gen2"):
        write_slide_tiff(tmp_path / f"{name}.tif", GENERATED["gen1"])
    settings = Settings(weights_dir=synthetic_weights, device="cpu")
    rows = run_cohort(read_slide_list(tmp_path), tmp_path / "out", settings, SlideOptions(progress=False),
                      workers=2, task=crash_on_slide_named_crash)
    by_id = {r["slide"]: r for r in rows}
    assert [r["slide"] for r in rows] == ["crash", "gen0", "gen2"]
    assert by_id["crash"]["status"] == "failed" and "KilledWorker" in by_id["crash"]["reason"]
    assert by_id["gen0"]["status"] == by_id["gen2"]["status"] == "done"
    assert _rows(tmp_path / "out")["crash"]["status"] == "failed"
    assert "1 slide(s) failed (crash)" in capsys.readouterr().err
