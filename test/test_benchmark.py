"""The ROI benchmark runs end to end on a tiny ROI and reports consistent figures.

The run uses the hand-written models of ``synthetic_models.py`` (fast, and their dark-nucleus
detector finds candidates in the synthetic H&E image, so post-processing and classification do
real work); speed itself is not asserted.
"""

import importlib.util
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "benchmark.py"


def _load_benchmark_module():
    spec = importlib.util.spec_from_file_location("roi_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _load_benchmark_module()


@pytest.fixture(scope="module")
def report(tmp_path_factory, synthetic_weights):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    cmd = [sys.executable, str(SCRIPT), "--sizes", "600x600", "--repeat", "1", "--device", "cpu",
           "--batch-size", "4", "--classifier-crops", "16", "--fp16",
           "--weights", str(synthetic_weights), "--json", str(out)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "end to end" in proc.stdout
    return json.loads(out.read_text())


def test_report_has_every_figure_for_each_precision(report, bench):
    assert [(r["precision"], r["batch_size"]) for r in report["results"]] == [("fp32", 4), ("fp16", 4)]
    for r in report["results"]:
        assert "error" not in r
        assert (r["size"]["width"], r["size"]["height"]) == (600, 600)
        assert r["provider"] == "CPUExecutionProvider"
        s = r["seconds"]
        assert set(s["stages"]) == set(bench.STAGES)
        assert all(v >= 0 for v in s["stages"].values())
        assert s["stages"]["read"] > 0 and s["stages"]["inference"] > 0 and s["stages"]["write"] > 0
        # the stages and "other" add up to the end-to-end time, and the rates follow from it
        assert math.isclose(sum(s["stages"].values()) + s["other"], s["end_to_end"], rel_tol=1e-9)
        # the detector's worker thread overlaps the stitching: "other" may then be (slightly) negative
        assert s["other"] < 0.5 * s["end_to_end"] and (s["other"] >= 0 or s["stages_overlap"])
        assert s["runs"] == [s["end_to_end"]] and s["read_alone"] > 0
        assert math.isclose(r["mpx_per_s"]["end_to_end"], 0.36 / s["end_to_end"])
        assert math.isclose(r["mpx_per_s"]["inference"], 0.36 / s["stages"]["inference"])
        assert r["detector"]["tiles"] == 4  # 600 px: two 512 px tiles each way
        assert r["classifier"]["crops_per_s_batched"] > 0 and r["classifier"]["crops_per_s_single"] > 0
        assert r["candidates"] > 0  # the synthetic nuclei are dark enough for the hand-written detector
        assert 0 < r["rss_after_load_bytes"] <= r["peak_rss_bytes"] < 3 * 1024**3
        assert r["image"]["synthetic"] and r["image"]["file_bytes"] > 0


def test_fp16_detections_compared_with_fp32(report):
    (diff,) = report["fp16_vs_fp32"]
    fp32, fp16 = report["results"]
    cands = diff["all_candidates"]
    assert (cands["fp32"], cands["fp16"]) == (fp32["candidates"], fp16["candidates"])
    assert cands["difference"] == cands["fp16"] - cands["fp32"]
    assert 0 < cands["matched"] <= min(cands["fp32"], cands["fp16"])
    assert 0 <= cands["shift_um_mean"] <= cands["shift_um_max"] <= 7.5


def test_compare_detections_matches_points_one_to_one(bench):
    def doc(points):
        return {"points": [{"name": n, "point": [x, y, 0], "probability": p} for n, x, y, p in points]}

    reference = doc([("mitotic figure", 1.0, 1.0, 0.9), ("non-mitotic figure", 2.0, 2.0, 0.3)])
    other = doc([
        ("mitotic figure", 1.001, 1.0, 0.8),     # 1 um from the first point
        ("mitotic figure", 1.0, 1.002, 0.7),     # 2 um from it too, but it is taken
        ("non-mitotic figure", 2.0, 2.01, 0.3),  # 10 um away: beyond 7.5 um, unmatched
    ])
    d = bench.compare_detections(reference, other)
    assert d["all_candidates"] == {"fp32": 2, "fp16": 3, "difference": 1, "matched": 1,
                                   "shift_um_mean": pytest.approx(1.0), "shift_um_max": pytest.approx(1.0),
                                   "probability_diff_max": pytest.approx(0.1)}
    assert d["mitotic_figures"]["fp16"] == 2 and d["mitotic_figures"]["matched"] == 1


def test_match_points_prefers_the_closest_pairs(bench):
    a = np.array([[0.0, 0.0], [3.0, 0.0]])
    b = np.array([[2.0, 0.0], [3.5, 0.0]])
    # greedy by distance: (1, 1) at 0.5 first, then (0, 0) at 2.0
    assert sorted((i, j) for i, j, _ in bench.match_points(a, b, 2.5)) == [(0, 0), (1, 1)]
    assert bench.match_points(a, np.zeros((0, 2)), 1.0) == []


def test_bad_size_is_one_clear_error():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--sizes", "600by600"], check=False, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "size must be WIDTHxHEIGHT" in proc.stderr


def test_stand_in_mode_times_everything_but_the_model(tmp_path):
    """--stand-in: trivial graphs with the shipped weights' I/O contract, and the non-model work
    reported against read alone with its verdict (speed itself is not asserted)."""
    out = tmp_path / "standin.json"
    cmd = [sys.executable, str(SCRIPT), "--sizes", "1100x900", "--repeat", "1", "--device", "cpu",
           "--stand-in", "--classifier-crops", "16", "--json", str(out)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "non-model work" in proc.stdout
    (r,) = json.loads(out.read_text())["results"]
    nm = r["non_model"]
    assert r["stand_in"] and r["candidates"] > 0
    assert nm["work_seconds"] == max(nm["work_wall_seconds"], nm["work_stages_seconds"]) > 0
    assert math.isclose(nm["ratio_to_read_alone"], nm["work_seconds"] / nm["read_alone_seconds"])
    assert nm["passed"] == (nm["ratio_to_read_alone"] <= nm["target_ratio"] == 1.5)
    assert math.isclose(nm["non_model_with_read_seconds"], nm["wall_seconds"] - nm["model_seconds"])
