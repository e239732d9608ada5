"""One slide of a cohort, as a worker runs it: the slide mode, its messages into a log file, and
the cohort table's row (``status`` "done" or "failed" with the reason) whatever happens.

Runs in a Dask worker process (local or on another machine), so everything it needs travels in
its arguments; the models are loaded once per worker process and reused for its next slides.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import traceback
from dataclasses import replace
from pathlib import Path

from ..errors import InputError
from ..settings import Settings
from .slides import CohortSlide

SLIDES_DIR = "slides"  # <output>/slides/<id>/: the slide mode's folder of each slide
LOGS_DIR = "logs"  # <output>/logs/<id>.log: what the slide mode said

_MODELS: dict[str, object] = {}  # settings (JSON) -> Models, per worker process


def slide_folder(output: Path, slide: CohortSlide) -> Path:
    return Path(output) / SLIDES_DIR / slide.id


def log_file(output: Path, slide: CohortSlide) -> Path:
    return Path(output) / LOGS_DIR / f"{slide.id}.log"


def _models(settings: Settings):
    from ..inference import load_models

    key = settings.model_dump_json()
    if key not in _MODELS:
        _MODELS.clear()  # one set of models per worker
        _MODELS[key] = load_models(settings)
    return _MODELS[key]


def run_slide(slide: CohortSlide, output: str, settings: Settings, options) -> dict:
    """Analyse one slide into ``<output>/slides/<id>/``; return its row of the cohort table.

    Never raises for a bad slide: the row says ``failed`` and why (the first line of the error),
    and the log file holds the rest."""
    from ..slide.run import analyse_slide

    output_dir = Path(output)
    folder = slide_folder(output_dir, slide)
    log_path = log_file(output_dir, slide)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    worker = _worker_name()
    with (open(log_path, "a", encoding="utf-8") as log, contextlib.redirect_stderr(log),
          contextlib.redirect_stdout(log)):  # information (stdout) and warnings (stderr) alike
        print(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} {slide.path} on {worker}", file=log, flush=True)
        try:
            models = _models(settings)
            summary = analyse_slide(slide.path, folder, settings, replace(options, progress=False), models)
            row = row_from_summary(slide, output_dir, json.loads(summary.model_dump_json()))
        except InputError as exc:
            print(f"error: {exc}", file=log)
            row = failed_row(slide, output_dir, str(exc))
        except MemoryError:
            print("error: out of memory", file=log)
            row = failed_row(slide, output_dir, "out of memory")
        except Exception as exc:  # noqa: BLE001 - one slide's crash must not stop the cohort
            traceback.print_exc(file=log)
            first = str(exc).splitlines()[0] if str(exc) else ""
            row = failed_row(slide, output_dir, f"{type(exc).__name__}: {first} (traceback in {log_path})")
        log.flush()
    row.update(wall_seconds=round(time.perf_counter() - start, 3), worker=worker, run="this run")
    return row


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


def row_from_summary(slide: CohortSlide, output: Path, summary: dict) -> dict:
    """A ``done`` row from a slide's ``summary.json`` content."""
    hotspot = summary.get("hotspot") or {}
    centre = hotspot.get("centre_mm") or (None, None)
    spacing = summary.get("level0_spacing_mm") or (None, None)
    return {
        **base_row(slide, output),
        "status": "done",
        "reason": "",
        "mitotic_figures": summary.get("mitotic_figures"),
        "mitotic_count_per_mm2": summary.get("mitotic_count_per_mm2"),
        "hotspot_count": hotspot.get("count"),
        "hotspot_area_mm2": hotspot.get("area_mm2"),
        "hotspot_x_mm": centre[0],
        "hotspot_y_mm": centre[1],
        "atypical_figures": summary.get("atypical_figures"),
        "atypical_fraction": summary.get("atypical_fraction"),
        "tissue_area_mm2": summary.get("tissue_area_mm2"),
        "analysed_tissue_area_mm2": summary.get("analysed_tissue_area_mm2"),
        "spacing_um": None if spacing[0] is None else round(spacing[0] * 1000, 6),
        "spacing_assumed": summary.get("spacing_assumed"),
        "resampled": summary.get("resampled"),
        "regions_skipped": len(summary.get("regions_skipped") or []),
        "slide_seconds": summary.get("seconds"),
    }


def failed_row(slide: CohortSlide, output: Path, reason: str) -> dict:
    return {**base_row(slide, output), "status": "failed", "reason": reason}


def base_row(slide: CohortSlide, output: Path) -> dict:
    return {
        "slide": slide.id,
        "path": str(slide.path),
        "output": str(slide_folder(output, slide)),
        "log": str(log_file(output, slide)),
        **{f"input_{k}": v for k, v in slide.extra.items()},
    }
