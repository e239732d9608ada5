"""Ablation runs and their table (training/ablation.py), and the optional-matplotlib helper
(training/plots.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from training import ablation
from training import plots
from training import train_classifier as tc
from training import train_detector as td

# what each detector variant must switch on: (teacher-student, consistency > 0, adversarial > 0)
DETECTOR_INGREDIENTS = {
    "full": (True, True, True),
    "no-teacher-student": (False, True, True),
    "no-consistency": (True, False, True),
    "no-adversarial": (True, True, False),
    "plain": (False, False, False),
}


def test_variants_cover_every_ingredient():
    assert set(ablation.VARIANTS["detector"]) == set(DETECTOR_INGREDIENTS)
    assert set(ablation.VARIANTS["classifier"]) == {"plain", "adversarial"}


@pytest.mark.parametrize("variant", sorted(DETECTOR_INGREDIENTS))
def test_detector_command_is_a_valid_training_command(variant, tmp_path):
    run_dir = tmp_path / f"detector-{variant}"
    cmd = ablation.command("detector", variant, run_dir, 7, ["--window", "128"])
    assert cmd[:3] == [sys.executable, "-m", "training.train_detector"]
    args = td.parse_args(cmd[3:])  # the training script accepts it
    assert args.run_dir == run_dir and args.checkpoint == run_dir / "detector.pt"
    assert args.epochs == 7 and args.window == 128  # extra arguments reach every run
    teacher, consistency, adversarial = DETECTOR_INGREDIENTS[variant]
    assert args.teacher_student is teacher
    assert args.consistency == (ablation.CONSISTENCY if consistency else 0.0)
    assert args.adversarial == (ablation.ADVERSARIAL if adversarial else 0.0)
    assert args.seed == 0  # paired runs: same seed


@pytest.mark.parametrize("variant, adversarial", [("plain", 0.0), ("adversarial", ablation.ADVERSARIAL)])
def test_classifier_command_is_a_valid_training_command(variant, adversarial, tmp_path, monkeypatch):
    captured = {}

    def fake_train(cfg, data_dir, out_dir, checkpoint_path, command=""):
        captured.update(cfg=cfg, out=out_dir, checkpoint=checkpoint_path)

    monkeypatch.setattr(tc, "train", fake_train)
    run_dir = tmp_path / f"classifier-{variant}"
    cmd = ablation.command("classifier", variant, run_dir, 5, ["--width", "32"])
    assert cmd[:3] == [sys.executable, "-m", "training.train_classifier"]
    assert tc.main(cmd[3:]) == 0
    assert captured["out"] == run_dir and captured["checkpoint"] == run_dir / "classifier.pt"
    cfg = captured["cfg"]
    assert cfg.epochs == 5 and cfg.width == 32 and cfg.adversarial == adversarial


def _detector_metrics(run_dir: Path, epochs: int, best_epoch: int, score: float) -> None:
    run_dir.mkdir(parents=True)
    history = [{"epoch": e, "val_score": score * e / best_epoch} for e in range(1, epochs + 1)]
    best = {"epoch": best_epoch, "val_score": score, "val_recall_at_5fp": score / 2, "val_recall_at_20fp": 0.75,
            "threshold": 0.4}
    (run_dir / "metrics.json").write_text(json.dumps({"history": history, "best": best}))


def _classifier_metrics(run_dir: Path, auroc: float) -> None:
    run_dir.mkdir(parents=True)
    figures = {"auroc": auroc, "balanced_accuracy": 0.7, "sensitivity": 0.6, "specificity": 0.8}
    metrics = {"epochs_run": 3, "selected_epoch": 2, "product_views": 4,
               "validation": {"views_1": {**figures, "auroc": 0.0}, "views_4": figures},
               "test": {"views_1": {**figures, "auroc": 0.0}, "views_4": {**figures, "auroc": auroc - 0.1}}}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


def test_table_collects_detector_and_classifier_rows(tmp_path, capsys):
    _detector_metrics(tmp_path / "detector-plain", 4, 3, 0.25)
    _detector_metrics(tmp_path / "detector-full", 5, 4, 0.5)
    _classifier_metrics(tmp_path / "classifier-adversarial", 0.9)
    (tmp_path / "detector-no-consistency").mkdir()  # a run without metrics (unfinished): skipped
    assert ablation.table(tmp_path, evaluate=False) == 0

    rows = json.loads((tmp_path / "ablation.json").read_text())
    assert list(rows) == ["detector-full", "detector-plain", "classifier-adversarial"]  # in VARIANTS order
    assert rows["detector-full"] == {"epochs": 5, "best_epoch": 4, "val_score": 0.5, "val_recall_at_5fp": 0.25,
                                     "val_recall_at_20fp": 0.75}
    assert rows["classifier-adversarial"] == {
        "epochs": 3, "best_epoch": 2, "val_auroc": 0.9, "val_balanced_accuracy": 0.7,
        "test_auroc": pytest.approx(0.8), "test_balanced_accuracy": 0.7, "test_sensitivity": 0.6,
        "test_specificity": 0.8}  # the product's number of views, not views_1

    md = (tmp_path / "ablation.md").read_text().splitlines()
    assert md[:4] == [
        "| detector run | epochs | best_epoch | val_score | val_recall_at_5fp | val_recall_at_20fp |",
        "| --- | --- | --- | --- | --- | --- |",
        "| detector-full | 5 | 4 | 0.500 | 0.250 | 0.750 |",
        "| detector-plain | 4 | 3 | 0.250 | 0.125 | 0.750 |",
    ]
    assert md[4] == ""
    assert md[5].startswith("| classifier run | epochs | best_epoch | val_auroc |")
    assert md[6].count("---") == 9
    assert md[7] == "| classifier-adversarial | 3 | 2 | 0.900 | 0.700 | 0.800 | 0.700 | 0.600 | 0.800 |"
    assert "| detector-full |" in capsys.readouterr().out


def test_table_with_pipeline_evaluation(tmp_path, monkeypatch):
    _detector_metrics(tmp_path / "detector-full", 2, 2, 0.5)
    calls = []

    def fake_run(cmd, cwd, check, stdout):
        calls.append(cmd)
        out = Path(cmd[cmd.index("--out") + 1])
        split = cmd[cmd.index("--split") + 1]
        out.mkdir(parents=True, exist_ok=True)
        recall = {"val": 0.5, "test": 0.4}[split]
        (out / f"{split}_metrics.json").write_text(json.dumps({"recall_at_fp_per_mm2": {"5": recall, "10": recall + 0.1}}))

    monkeypatch.setattr(ablation.subprocess, "run", fake_run)
    assert ablation.main(["table", "--out", str(tmp_path), "--evaluate"]) == 0
    assert [c[c.index("--split") + 1] for c in calls] == ["val", "test"]
    assert all(c[c.index("--checkpoint") + 1] == str(tmp_path / "detector-full" / "detector.pt") for c in calls)
    assert all(c[1:3] == ["-m", "training.evaluate_detector"] for c in calls)
    row = json.loads((tmp_path / "ablation.json").read_text())["detector-full"]
    assert row["val_pipeline_recall_at_5fp"] == 0.5 and row["test_pipeline_recall_at_10fp"] == pytest.approx(0.5)


def test_table_without_runs_is_an_error(tmp_path):
    assert ablation.table(tmp_path, evaluate=False) == 2
    assert not (tmp_path / "ablation.md").exists()


class _FakeProcess:
    def __init__(self, cmd, returncode):
        self.cmd, self.returncode = cmd, returncode

    def poll(self):
        return self.returncode


def test_run_starts_every_variant_and_reports_failures(tmp_path, monkeypatch):
    started = []

    def fake_popen(cmd, cwd, stdout, stderr, env):
        started.append(cmd)
        stdout.close()
        assert env["OMP_NUM_THREADS"] == "1"
        failing = float(cmd[cmd.index("--adversarial") + 1]) > 0  # the adversarial runs "fail"
        return _FakeProcess(cmd, 1 if failing else 0)

    monkeypatch.setattr(ablation.subprocess, "Popen", fake_popen)
    monkeypatch.setattr(ablation.time, "sleep", lambda s: None)
    assert ablation.run("detector", tmp_path, 3, 2, ["plain"], []) == 0
    assert ablation.run("classifier", tmp_path, 3, 2, ["plain", "adversarial"], ["--width", "8"]) == 1  # one failed
    assert [c[3:] for c in started] == [ablation.command(m, v, tmp_path / f"{m}-{v}", 3, x)[3:] for m, v, x in
                                        (("detector", "plain", []), ("classifier", "plain", ["--width", "8"]),
                                         ("classifier", "adversarial", ["--width", "8"]))]
    for name in ("detector-plain", "classifier-plain", "classifier-adversarial"):
        assert (tmp_path / name / "command.txt").read_text().startswith("-m training.")
        assert (tmp_path / name / "stdout.log").exists()


def test_main_passes_arguments_after_the_separator_to_every_run(tmp_path, monkeypatch):
    captured = {}
    monkeypatch.setattr(ablation, "run", lambda *a: captured.setdefault("args", a) and 0)
    assert ablation.main(["run", "classifier", "--epochs", "2", "--out", str(tmp_path), "--", "--width", "32"]) == 0
    model, out, epochs, parallel, variants, extra = captured["args"]
    assert (model, out, epochs, variants, extra) == ("classifier", tmp_path, 2, ["plain", "adversarial"], ["--width", "32"])
    with pytest.raises(SystemExit):
        ablation.main(["run", "detector", "--epochs", "1", "--variants", "full", "bogus"])


def test_plots_are_optional(tmp_path, monkeypatch, capsys):
    plt = plots.pyplot(tmp_path / "a.png")
    if plt is None:
        pytest.skip("matplotlib is not installed")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    plots.save(fig, tmp_path / "sub" / "a.png")
    assert (tmp_path / "sub" / "a.png").stat().st_size > 0 and not list(tmp_path.rglob("*.tmp*"))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    assert plots.pyplot(tmp_path / "b.png") is None
    assert "b.png not drawn" in capsys.readouterr().err
