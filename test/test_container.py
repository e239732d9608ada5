"""The container: its dependencies, its sample cases, the output comparison, and (where docker or
podman works) ``./build.sh --cpu && ./test.sh --cpu`` end to end.

The end-to-end test is marked ``container`` (deselect with ``-m "not container"``); it is skipped,
with the reason, where no container engine is available.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from conftest import ROOT

import compare_outputs as co
import make_cases

CASES = ROOT / "test" / "cases"
CASE_NAMES = sorted(p.name for p in CASES.iterdir() if (p / "input").is_dir())


# --------------------------------------------------------------------------- requirements


def _requirements(path: Path) -> dict[str, str]:
    """{normalised distribution name (extras dropped): full requirement line}."""
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    reqs = {}
    for line in lines:
        if not line or line.startswith("#"):
            continue
        name = re.split(r"[\[=<>!~; ]", line, maxsplit=1)[0]
        reqs[_normalise(name)] = line
    return reqs


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_gpu_and_cpu_requirements_differ_only_in_onnxruntime():
    gpu = _requirements(ROOT / "requirements.txt")
    cpu = _requirements(ROOT / "requirements-cpu.txt")
    assert gpu.pop("onnxruntime-gpu").startswith("onnxruntime-gpu[cuda,cudnn]==")
    ort_cpu = cpu.pop("onnxruntime")
    assert gpu == cpu
    gpu_version = _requirements(ROOT / "requirements.txt")["onnxruntime-gpu"].split("==")[1]
    assert ort_cpu == f"onnxruntime=={gpu_version}", "both images must run the same ONNX Runtime version"
    assert all("==" in line for line in cpu.values()), "the image's dependencies are pinned"


def _imports_of(path: Path) -> set[str]:
    """Absolute module names imported anywhere in ``path`` (also inside functions)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    if path.name == "__init__.py":
        package = ".".join(path.relative_to(ROOT).parent.parts)
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
                names.add(module)
                names.update(f"{module}.{a.name}" for a in node.names)  # `from . import x`
            else:
                names.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                names.add(node.args[0].value)
    return names


def _module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def process_command_imports() -> tuple[set[str], set[Path]]:
    """Third-party top-level modules and repository files that ``process.py`` can import.

    Follows the repository's own modules from ``process.py`` and the ``process`` command (the
    CLI imports commands by name); other commands (evaluate, slide) are not part of the image's
    job and are not followed."""
    roots = [ROOT / "process.py", ROOT / "mitosis_analysis" / "commands" / "process.py"]
    seen: set[Path] = set()
    third_party: set[str] = set()
    todo = list(roots)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports_of(path):
            top = name.split(".")[0]
            if top == "mitosis_analysis":
                if name.startswith(("mitosis_analysis.evaluate", "mitosis_analysis.slide")):
                    continue
                parts = name.split(".")
                for k in range(1, len(parts) + 1):  # importing a.b.c runs a, a.b and a.b.c
                    f = _module_file(".".join(parts[:k]))
                    if f is not None:
                        todo.append(f)
            elif top not in sys.stdlib_module_names and top != "__future__":
                third_party.add(top)
    return third_party, seen


def test_requirements_cover_every_import_of_the_process_command():
    third_party, files = process_command_imports()
    assert {"numpy", "onnxruntime"} <= third_party  # the walk did find the pipeline
    provided = importlib.metadata.packages_distributions()
    required = set(_requirements(ROOT / "requirements-cpu.txt"))
    missing = {
        top: provided.get(top, ["?"])
        for top in third_party
        if not {_normalise(d) for d in provided.get(top, [])} & required
    }
    assert not missing, f"imported by process.py's code but not in requirements*.txt: {missing}"
    outside = [str(f.relative_to(ROOT)) for f in files if f.parts[len(ROOT.parts)] not in ("process.py", "mitosis_analysis")]
    assert not outside, f"the image copies only process.py and mitosis_analysis/, yet these are imported: {outside}"


def test_dockerignore_lets_in_only_what_the_image_copies():
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [ln for ln in lines if ln and not ln.startswith("#")]
    assert rules[0] == "*", "everything is excluded first"
    included = {ln[1:] for ln in rules if ln.startswith("!")}
    copied = set()
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            copied.update(s.rstrip("/") for s in line.split()[1:-1] if not s.startswith("--"))
    assert {"weights"} <= copied
    for source in copied - {"weights"}:
        assert source in included, f"Dockerfile copies {source} but .dockerignore leaves it out"
    assert not any(p.startswith(("training", "model", "test", ".venv")) for p in included)


# --------------------------------------------------------------------------- sample cases


def test_sample_cases_are_complete_and_current():
    assert set(CASE_NAMES) == {c.name for c in make_cases.CASE_MAKERS}
    manifest_sha256 = hashlib.sha256((ROOT / "weights" / "manifest.json").read_bytes()).hexdigest()
    for name in CASE_NAMES:
        case = CASES / name
        assert any((case / "expected_output").iterdir()), name
        recorded = (case / make_cases.WEIGHTS_RECORD).read_text().split()[0]
        assert recorded == manifest_sha256, (
            f"{name}: expected outputs were made with other weights: run 'python test/make_cases.py'"
        )
    total = sum(p.stat().st_size for p in CASES.rglob("*") if p.is_file())
    assert total < 600 * 1024, f"sample cases take {total / 1024:.0f} KiB"


@pytest.mark.parametrize("name", CASE_NAMES)
def test_host_reproduces_the_expected_output_of_every_sample_case(name, tmp_path):
    """process.py on the host (CPU, the shipped weights) writes what the case expects: a change of
    the pipeline's numbers shows here, before the (slower) container test."""
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(ROOT / "process.py"), "--input", str(CASES / name / "input"),
                        "--output", str(out), "--device", "cpu"], capture_output=True, text=True, timeout=300,
                       env={k: v for k, v in os.environ.items() if not k.startswith("MITOSIS_")})
    assert r.returncode == 0, r.stderr[-2000:]
    problems = co.compare_dirs(CASES / name / "expected_output", out)
    assert not problems, f"{name}: " + "\n".join(problems) + "\n(re-run 'python test/make_cases.py' if intended)"


def test_sample_cases_follow_the_platform_layout():
    t1 = json.loads((CASES / "track1-roi/input/inputs.json").read_text())
    assert t1[0]["interface"]["slug"] == "histopathology-region-of-interest-cropout"
    image = CASES / "track1-roi/input" / t1[0]["interface"]["relative_path"] / t1[0]["image"]["name"]
    with tifffile.TiffFile(image) as tif:
        page = tif.pages[0]
        assert page.shape == (1024, 1024, 3)
        x_res = page.tags["XResolution"].value
        assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
        assert x_res[0] / x_res[1] == pytest.approx(40000)  # 0.25 um/px
    t2 = json.loads((CASES / "track2-stack/input/inputs.json").read_text())
    assert t2[0]["interface"]["slug"] == "stacked-histopathology-roi-cropouts"
    stack = CASES / "track2-stack/input" / t2[0]["interface"]["relative_path"] / t2[0]["image"]["name"]
    with tifffile.TiffFile(stack) as tif:
        assert len(tif.pages) >= 2 and all(p.shape == (128, 128, 3) for p in tif.pages)
    legacy = CASES / "legacy-midog21/input"
    assert not (legacy / "inputs.json").exists() and len(list(legacy.glob("*.tif*"))) == 1
    out = json.loads((CASES / "track2-stack/expected_output/multiple-mitotic-figure-classification.json").read_text())
    assert len(out) == len(tif.pages)


def test_sample_images_are_what_the_generator_makes(tmp_path, monkeypatch):
    """The committed images come from make_cases.py (synthetic), not from any real data."""
    monkeypatch.setattr(make_cases, "CASES", tmp_path)
    for case, make in make_cases.CASE_MAKERS.items():
        make(case)
        committed = sorted((CASES / case.name / "input").rglob("*.tif*"))
        regenerated = sorted(case.input_dir.rglob("*.tif*"))
        assert [p.relative_to(CASES / case.name / "input") for p in committed] == [
            p.relative_to(case.input_dir) for p in regenerated
        ]
        for a, b in zip(committed, regenerated):
            pa, pb = tifffile.imread(a).astype(np.int16), tifffile.imread(b).astype(np.int16)
            assert pa.shape == pb.shape
            assert np.abs(pa - pb).mean() < 1.0, f"{a} differs from what make_cases.py writes"
        truth = CASES / case.name / make_cases.GROUND_TRUTH
        if (tmp_path / case.name / make_cases.GROUND_TRUTH).exists():
            assert json.loads(truth.read_text()) == json.loads((tmp_path / case.name / make_cases.GROUND_TRUTH).read_text())


def test_synthetic_he_looks_like_he():
    rgb, centres = make_cases.synthetic_he(seed=0, height=256, width=256, nuclei_per_mpx=300, figures=2)
    background = np.median(rgb.mean(axis=-1))
    assert len(centres) == 2 and all(rgb[int(y), int(x)].mean() < background - 40 for x, y in centres)  # figures there
    assert rgb.dtype == np.uint8 and rgb.shape == (256, 256, 3)
    mean = rgb.reshape(-1, 3).mean(axis=0)
    assert mean[1] < mean[0] and mean[1] < mean[2], "eosin/haematoxylin: green is absorbed most"
    dark = rgb.mean(axis=-1) < 150
    assert 0.01 < dark.mean() < 0.5, "nuclei cover part of the field"


# --------------------------------------------------------------------------- compare_outputs


def _points_doc(*points):
    return {
        "name": "Points of interest",
        "type": "Multiple points",
        "points": [
            {"name": n, "point": [x, y, 0.0], "probability": p, "atypical_probability": 0.2} for n, x, y, p in points
        ],
        "version": {"major": 1, "minor": 0},
    }


EXPECTED_POINTS = _points_doc(
    ("mitotic figure", 0.100, 0.200, 0.91),
    ("non-mitotic figure", 0.1005, 0.2000, 0.40),  # 0.5 um from the first
    ("mitotic figure", 0.500, 0.050, 0.77),
)


def test_compare_accepts_the_same_points_in_another_order_and_within_tolerance():
    actual = copy.deepcopy(EXPECTED_POINTS)
    actual["points"].reverse()
    actual["points"][0]["point"][0] += 0.0009  # 0.9 um
    actual["points"][1]["probability"] += 0.0009
    assert co.compare_documents(EXPECTED_POINTS, actual) == []


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["points"][2]["point"].__setitem__(1, 0.0511), "no output point within 1 um"),
        (lambda d: d["points"][0].__setitem__("probability", 0.9115), "probability"),
        (lambda d: d["points"][0].__setitem__("name", "non-mitotic figure"), "name"),
        (lambda d: d["points"].pop(), "2 points, expected 3"),
        (lambda d: d["points"].append(copy.deepcopy(d["points"][0])), "is not expected"),
        (lambda d: d["points"][1].pop("atypical_probability"), "atypical_probability missing"),
        (lambda d: d.__setitem__("type", "Multiple boxes"), "type"),
    ],
)
def test_compare_reports_each_kind_of_difference(change, message):
    actual = copy.deepcopy(EXPECTED_POINTS)
    change(actual)
    problems = co.compare_documents(EXPECTED_POINTS, actual)
    assert problems and any(message in p for p in problems), problems


def test_compare_classifications_in_page_order():
    expected = [{"class": "normal", "confidence": 0.2}, {"class": "atypical", "confidence": 0.8}]
    assert co.compare_documents(expected, [{"class": "normal", "confidence": 0.2005}, dict(expected[1])]) == []
    assert any("page 1: class" in p for p in co.compare_documents(expected, [expected[0], {"class": "normal", "confidence": 0.8}]))
    assert any("confidence" in p for p in co.compare_documents(expected, [expected[0], {"class": "atypical", "confidence": 0.802}]))
    assert any("expected 2" in p for p in co.compare_documents(expected, expected[:1]))
    assert co.compare_documents(expected, list(reversed(expected)))  # order matters: pages


def test_compare_dirs_reports_missing_extra_and_invalid_files(tmp_path):
    exp, act = tmp_path / "exp", tmp_path / "act"
    exp.mkdir(), act.mkdir()
    (exp / "mitotic-figures.json").write_text(json.dumps(EXPECTED_POINTS))
    assert co.compare_dirs(exp, act) == ["missing output file: mitotic-figures.json"]
    (act / "mitotic-figures.json").write_text(json.dumps(EXPECTED_POINTS)[:-5])
    (act / "other.json").write_text("[]")
    problems = co.compare_dirs(exp, act)
    assert "unexpected output file: other.json" in problems
    assert any("mitotic-figures.json: not valid JSON" in p for p in problems)
    (act / "other.json").unlink()
    (act / "mitotic-figures.json").write_text(json.dumps(EXPECTED_POINTS))
    assert co.compare_dirs(exp, act) == []
    assert co.main([str(exp), str(act)]) == 0


def test_compare_matching_is_one_to_one():
    # two expected points 0.4 um apart, one output point between them: one stays unmatched
    exp = _points_doc(("mitotic figure", 0.1, 0.1, 0.9), ("mitotic figure", 0.1004, 0.1, 0.9))
    act = _points_doc(("mitotic figure", 0.1002, 0.1, 0.9), ("mitotic figure", 0.3, 0.3, 0.9))
    problems = co.compare_documents(exp, act)
    assert any("no output point within 1 um" in p for p in problems)
    assert any("is not expected" in p for p in problems)


# --------------------------------------------------------------------------- end to end


def _engine_unavailable() -> str | None:
    forced = os.environ.get("MITOSIS_ENGINE")
    if forced == "docker" or (not forced and shutil.which("docker")):
        if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
            return None
        if forced == "docker":
            return "MITOSIS_ENGINE=docker but no docker engine answers ('docker info' fails)"
    if shutil.which("podman"):
        return None
    return ("no container engine: docker has no engine ('docker info' fails) and podman is not installed "
            "(as root: ./build.sh --install-podman)")


@pytest.mark.container
def test_container_reproduces_the_host_outputs_on_every_sample_case():
    """./build.sh --cpu && ./test.sh --cpu, as the platform runs the image (CPU variant)."""
    reason = _engine_unavailable()
    if reason and os.environ.get("MITOSIS_REQUIRE_CONTAINER"):
        pytest.fail(f"MITOSIS_REQUIRE_CONTAINER is set but {reason}")
    if reason:
        pytest.skip(reason)
    env = dict(os.environ, PYTHON=sys.executable)
    build = subprocess.run([str(ROOT / "build.sh"), "--cpu"], capture_output=True, text=True, env=env)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    test = subprocess.run([str(ROOT / "test.sh"), "--cpu", "--no-build"], capture_output=True, text=True, env=env)
    assert test.returncode == 0, test.stdout[-4000:] + test.stderr[-2000:]
    for name in CASE_NAMES:
        assert f"PASS {name}" in test.stdout, test.stdout


# --------------------------------------------------------------------------- the platform's contract


def test_sample_outputs_pass_the_platform_schema_and_the_official_input_checks():
    """Every expected output of the sample cases is what grand-challenge accepts for its socket
    (the "Multiple points" schema) and what the MIDOG 2025 evaluations read without refusing."""
    from platform_contract import official_track1_errors, official_track2_errors, schema_errors

    seen = set()
    for path in sorted(CASES.glob("*/expected_output/**/*.json")):
        doc = json.loads(path.read_text())
        if path.name == "mitotic-figures.json":
            assert schema_errors(doc) == [], path
            assert official_track1_errors(doc) == [], path
            assert doc["points"], f"{path}: a sample case without points tests little"
        elif path.name == "multiple-mitotic-figure-classification.json":
            with tifffile.TiffFile(next((path.parents[1] / "input").rglob("*.tif*"))) as tif:
                n_crops = len(tif.pages)
            assert official_track2_errors(doc, n_crops) == [], path
        seen.add(path.name)
    assert seen == {"mitotic-figures.json", "multiple-mitotic-figure-classification.json"}


def test_the_schema_check_catches_what_the_platform_refuses():
    from platform_contract import schema_errors

    good = {"name": "Points of interest", "type": "Multiple points", "version": {"major": 1, "minor": 0},
            "points": [{"name": "mitotic figure", "point": [0.1, 0.2, 0], "probability": 0.9}]}
    assert schema_errors(good) == []
    extra_key = json.loads(json.dumps(good))
    extra_key["points"][0]["atypical_probability"] = 0.1
    assert schema_errors(extra_key)  # additionalProperties: false on every point
    two_d = json.loads(json.dumps(good))
    two_d["points"][0]["point"] = [0.1, 0.2]
    assert schema_errors(two_d)
