"""The slides of a cohort: from a CSV file or a folder, each with the id that names its outputs.

CSV: a header row with a ``slide`` column (the path; relative paths are relative to the CSV's
folder) and optionally an ``id`` column (default: the file name without its suffix). Further
columns are carried into the cohort table unchanged (case number, grade, ...).

Folder: every slide file directly in it (``.svs``, ``.ndpi``, ``.mrxs``, ..., ``.tif``,
``.tiff``), sorted by name; the id is the file name without its suffix.

A missing slide file is not an error of the cohort: its row fails with the reason, the others run.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..settings import SLIDE_SUFFIXES

COHORT_SUFFIXES = (*SLIDE_SUFFIXES, ".tif", ".tiff")
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass(frozen=True)
class CohortSlide:
    id: str  # names the slide's output folder: <output>/slides/<id>/
    path: Path  # absolute
    extra: dict[str, str] = field(default_factory=dict)  # other CSV columns, carried into the table


def read_slide_list(source: Path) -> list[CohortSlide]:
    """The cohort's slides from a CSV file or a folder; bad lists raise ``InputError``."""
    source = Path(source)
    if source.is_dir():
        slides = _from_folder(source)
    elif source.is_file():
        slides = _from_csv(source)
    else:
        raise InputError(f"slide list not found: {source} (give a CSV file or a folder of slides)")
    if not slides:
        raise InputError(f"no slides in {source} (slide files: {', '.join(COHORT_SUFFIXES)})")
    seen: dict[str, Path] = {}
    for s in slides:
        if not SAFE_ID.match(s.id):
            raise InputError(f"slide id {s.id!r} ({s.path.name}) is not a safe folder name "
                             "(letters, digits, '.', '_', '+', '-'; give an 'id' column)")
        if s.id in seen:
            raise InputError(f"two slides share the id {s.id!r}: {seen[s.id]} and {s.path} "
                             "(give a CSV with an 'id' column)")
        seen[s.id] = s.path
    return slides


def _from_folder(folder: Path) -> list[CohortSlide]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in COHORT_SUFFIXES)
    return [CohortSlide(p.stem, p.resolve()) for p in files]


def _from_csv(path: Path) -> list[CohortSlide]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the slide list {path}: {exc}") from None
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in (reader.fieldnames or [])]
    if "slide" not in columns:
        raise InputError(f"{path}: no 'slide' column in the header (found: {', '.join(columns) or 'nothing'})")
    slides = []
    for line, row in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
        if not any(row.values()):
            continue  # blank line
        if not row.get("slide"):
            raise InputError(f"{path}, line {line}: empty 'slide'")
        slide = Path(row["slide"]).expanduser()
        if not slide.is_absolute():
            slide = path.parent / slide
        extra = {k: v for k, v in row.items() if k not in ("slide", "id")}
        slides.append(CohortSlide(row.get("id") or slide.stem, slide.resolve(), extra))
    return slides
