"""Presenting the figures: a terminal table, a JSON document and a PNG of the threshold sweeps.

Files are written atomically (temporary file in the same folder, then ``os.replace``), so a
failed run never leaves a half-written metrics file behind.
"""

from __future__ import annotations

import io
from pathlib import Path

from ..outputs import write_bytes_atomic
from .classification import ClassificationReport, ClassificationSummary
from .detection import DetectionReport, DetectionSummary


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def detection_table(report: DetectionReport) -> str:
    def row(label: str, s: DetectionSummary) -> list[str]:
        c = s.counts
        return [label, str(s.images), str(s.figures), str(c.tp), str(c.fp), str(c.fn), _fmt(c.precision),
                _fmt(c.recall), _fmt(c.f1), _fmt(s.average_precision), _fmt(s.froc)]

    rows = [row("all", report.overall)] + [row(f"domain {d}", s) for d, s in report.per_domain.items()]
    header = ["Track 1", "images", "figures", "TP", "FP", "FN", "precision", "recall", "F1", "AP", "FROC"]
    text = f"Track 1: mitotic figure detection (radius {report.radius_mm * 1000:g} um, micro average)\n"
    text += _table(header, rows)
    best = report.best
    if best is not None:
        text += f"\nbest F1 over the sweep: {best[1]:.4f} at detection threshold {best[0]:.2f}"
    return text


def classification_table(report: ClassificationReport) -> str:
    def row(label: str, s: ClassificationSummary) -> list[str]:
        c = s.counts
        return [label, str(s.figures), str(s.atypical), _fmt(c.sensitivity), _fmt(c.specificity),
                _fmt(c.balanced_accuracy), _fmt(c.accuracy), _fmt(s.auroc)]

    rows = [row("all", report.overall)] + [row(f"domain {d}", s) for d, s in report.per_domain.items()]
    header = ["Track 2", "figures", "atypical", "sensitivity", "specificity", "bal. acc.", "accuracy", "AUROC"]
    text = "Track 2: atypical vs normal mitotic figures (atypical = positive)\n" + _table(header, rows)
    best = report.best
    if best is not None:
        text += f"\nbest balanced accuracy over the sweep: {best[1]:.4f} at P(atypical) threshold {best[0]:.2f}"
    return text


def official_table(aggregates: dict) -> str:
    """The official leaderboard figures, flat (nested Track 2 domains as ``domain_<d>.<key>``)."""
    rows = []
    for key, value in aggregates.items():
        if isinstance(value, dict):
            rows += [[f"{key}.{k}", _fmt(v)] for k, v in value.items()]
        else:
            rows.append([key, _fmt(value)])
    return "Official MIDOG 2025 aggregates (metrics.json: aggregates)\n" + _table(["key", "value"], rows)


def format_tables(aggregates: dict, detection: DetectionReport | None,
                  classification: ClassificationReport | None) -> str:
    parts = [official_table(aggregates)] if aggregates else []
    if detection is not None:
        parts.append(detection_table(detection))
    if classification is not None:
        parts.append(classification_table(classification))
    return "\n\n".join(parts)


def metrics_document(
    aggregates: dict, detection: DetectionReport | None, classification: ClassificationReport | None, inputs: dict
) -> dict:
    """``aggregates`` first (the official key names and values; the official NaN is null), then
    the project's own views."""
    return {
        "aggregates": aggregates,
        "format_version": 2,
        "inputs": inputs,
        "track1": None if detection is None else detection.as_dict(),
        "track2": None if classification is None else classification.as_dict(),
    }


def _nan(values: list[float | None]) -> list[float]:
    return [float("nan") if v is None else v for v in values]


def write_sweep_plot(path: Path, detection: DetectionReport | None, classification: ClassificationReport | None) -> None:
    """F1 (with precision and recall) against the detection threshold; balanced accuracy (with
    sensitivity and specificity) against the P(atypical) threshold; the best points marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in (detection, classification) if p is not None]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.0 * len(panels), 4.5), squeeze=False)
    for ax, report in zip(axes[0], panels):
        t = report.sweep_thresholds
        if isinstance(report, DetectionReport):
            d = report.as_dict()["sweep"]
            ax.plot(t, _nan(d["f1"]), lw=2, label="F1")
            ax.plot(t, _nan(d["precision"]), lw=1, ls="--", label="precision")
            ax.plot(t, _nan(d["recall"]), lw=1, ls=":", label="recall")
            ax.set_xlabel("detection threshold (mitosis probability)")
            ax.set_title(f"Track 1: {report.overall.images} images, {report.overall.figures} figures")
            best, what = report.best, "F1"
        else:
            d = report.as_dict()["sweep"]
            ax.plot(t, _nan(d["balanced_accuracy"]), lw=2, label="balanced accuracy")
            ax.plot(t, _nan(d["sensitivity"]), lw=1, ls="--", label="sensitivity")
            ax.plot(t, _nan(d["specificity"]), lw=1, ls=":", label="specificity")
            ax.set_xlabel("P(atypical) threshold")
            ax.set_title(f"Track 2: {report.overall.figures} figures, {report.overall.atypical} atypical")
            best, what = report.best, "BA"
        ax.axvline(0.5, color="tab:green", lw=1.2, ls="-.", label="shipped operating point (0.5)")
        if best is not None:
            ax.axvline(best[0], color="grey", lw=0.8)
            ax.annotate(f"best {what} {best[1]:.3f} @ {best[0]:.2f}", (best[0], best[1]),
                        textcoords="offset points", xytext=(5, 5), fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=9)
    fig.tight_layout()
    png = io.BytesIO()
    try:
        fig.savefig(png, format="png", dpi=120)
    finally:
        plt.close(fig)
    write_bytes_atomic(path, png.getvalue())
