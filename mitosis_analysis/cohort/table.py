"""The cohort table (CSV and Parquet, one row per slide) and the cohort overview picture.

Columns, in order (``COLUMNS``); values are empty (CSV) or null (Parquet) where they do not apply,
e.g. the counts of a failed slide:

* ``slide`` (id), ``path``, ``status`` (``done`` | ``failed``), ``reason`` (why it failed);
* ``mitotic_figures``, ``mitotic_count_per_mm2`` (per mm^2 of analysed tissue),
  ``hotspot_count`` (figures in the densest square of ``hotspot_area_mm2``),
  ``hotspot_x_mm``/``hotspot_y_mm`` (its centre, slide mm from the top-left pixel),
  ``atypical_figures``, ``atypical_fraction``, ``tissue_area_mm2``, ``analysed_tissue_area_mm2``;
* ``spacing_um`` (level 0), ``spacing_assumed`` (no usable spacing in the file: 0.25 um/px was
  assumed), ``resampled`` (analysed at another spacing than scanned), ``regions_skipped``
  (unreadable regions);
* ``slide_seconds`` (the slide run's own time), ``wall_seconds`` (the task's time in this cohort
  run; empty for a slide finished by an earlier run), ``run`` (``this run`` | ``earlier run``),
  ``worker``, ``output`` (the slide's folder), ``log`` (what the slide mode said);
* then the slide list's own columns, prefixed ``input_``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from ..outputs import write_bytes_atomic

COHORT_CSV = "cohort.csv"
COHORT_PARQUET = "cohort.parquet"
COHORT_PNG = "cohort.png"

# column -> Arrow type name (string, int64, float64, bool)
COLUMNS: dict[str, str] = {
    "slide": "string", "path": "string", "status": "string", "reason": "string",
    "mitotic_figures": "int64", "mitotic_count_per_mm2": "float64",
    "hotspot_count": "int64", "hotspot_area_mm2": "float64", "hotspot_x_mm": "float64", "hotspot_y_mm": "float64",
    "atypical_figures": "int64", "atypical_fraction": "float64",
    "tissue_area_mm2": "float64", "analysed_tissue_area_mm2": "float64",
    "spacing_um": "float64", "spacing_assumed": "bool", "resampled": "bool", "regions_skipped": "int64",
    "slide_seconds": "float64", "wall_seconds": "float64", "run": "string", "worker": "string",
    "output": "string", "log": "string",
}


def columns_of(rows: Sequence[dict]) -> list[str]:
    extra = sorted({k for r in rows for k in r if k not in COLUMNS})
    return [*COLUMNS, *extra]


def table_csv(rows: Sequence[dict]) -> bytes:
    columns = columns_of(rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else _csv_value(row[c]) for c in columns])
    return out.getvalue().encode()


def _csv_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # round-trips exactly
    return str(value)


def table_parquet(rows: Sequence[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = columns_of(rows)
    types = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_()}
    schema = pa.schema([(c, types[COLUMNS.get(c, "string")]) for c in columns])
    table = pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in rows], schema=schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def overview_png(rows: Sequence[dict], title: str = "") -> bytes:
    """Left: the distribution of mitotic counts per mm^2 over the finished slides; right: each
    slide's hotspot count (failed slides marked), slides in table order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["status"] == "done"]
    densities = [r["mitotic_count_per_mm2"] for r in done if r.get("mitotic_count_per_mm2") is not None]
    shown = list(rows)[:200]
    height = min(40.0, max(4.0, 0.25 * len(shown) + 1.5))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, height), gridspec_kw={"width_ratios": [1, 1.2]})
    if densities:
        left.hist(densities, bins=min(30, max(5, len(densities))), color="#e67e22", edgecolor="white")
    else:
        left.text(0.5, 0.5, "no finished slide with tissue", ha="center", va="center", transform=left.transAxes)
    left.set_xlabel("mitotic figures per mm² of tissue")
    left.set_ylabel("slides")
    left.set_title(f"distribution over {len(densities)} slide(s)")
    labels = [r["slide"] for r in shown]
    counts = [r.get("hotspot_count") or 0 for r in shown]
    colours = ["#2e86de" if r["status"] == "done" else "#c0392b" for r in shown]
    y = range(len(shown))
    right.barh(list(y), counts, color=colours)
    right.set_yticks(list(y), labels, fontsize=8)
    right.invert_yaxis()
    for i, r in enumerate(shown):
        note = f"  {r.get('hotspot_count') or 0}" if r["status"] == "done" else "  failed"
        right.text(counts[i], i, note, va="center", color=colours[i], fontsize=8)
    area = next((r.get("hotspot_area_mm2") for r in done if r.get("hotspot_area_mm2")), None)
    right.set_xlabel(f"mitotic figures in the hotspot ({area:g} mm²)" if area else "mitotic figures in the hotspot")
    more = f" (first 200 of {len(rows)})" if len(rows) > len(shown) else ""
    right.set_title(f"hotspot per slide{more}")
    failed = sum(r["status"] != "done" for r in rows)
    fig.suptitle(f"{title}{len(rows)} slides: {len(rows) - failed} done, {failed} failed")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def write_tables(output: Path, rows: Sequence[dict]) -> list[Path]:
    """cohort.csv, cohort.parquet and cohort.png in ``output``, each atomically."""
    output = Path(output)
    files = [(COHORT_CSV, table_csv(rows)), (COHORT_PARQUET, table_parquet(rows)), (COHORT_PNG, overview_png(rows))]
    for name, data in files:
        write_bytes_atomic(output / name, data)
    return [output / name for name, _ in files]
