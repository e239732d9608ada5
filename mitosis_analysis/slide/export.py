"""What a slide run leaves in its output folder, and how each file is built.

* ``points.json`` / ``points.csv``: every candidate (level-0 pixels and mm, probability,
  atypical probability, label), best first;
* ``mitoses.geojson``: the mitotic figures as a GeoJSON FeatureCollection of Point annotations
  that QuPath imports (File > Import objects from file), classified "Mitotic figure" or
  "Atypical mitotic figure";
* ``overview.png``: the slide with the tissue outline, the figures and the hotspot;
* ``summary.json``: counts, density, hotspot, atypical fraction, run facts. Written last: a
  folder with ``summary.json`` holds a complete result, one without it does not.

Pixel coordinates in JSON/CSV are level-0 pixels with pixel centres at integer positions (as the
rest of the package); mm = px * spacing. QuPath puts the origin at the top-left corner of the
first pixel, so GeoJSON coordinates are px + 0.5.
"""

from __future__ import annotations

import csv
import io
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from pydantic import BaseModel

from ..outputs import write_bytes_atomic, write_json_atomic
from .hotspot import Hotspot

POINTS_JSON = "points.json"
POINTS_CSV = "points.csv"
GEOJSON = "mitoses.geojson"
OVERVIEW_PNG = "overview.png"
SUMMARY_JSON = "summary.json"
OUTPUT_FILES = (POINTS_JSON, POINTS_CSV, GEOJSON, OVERVIEW_PNG, SUMMARY_JSON)  # in writing order

LABEL_MITOSIS = "mitotic figure"
LABEL_ATYPICAL = "atypical mitotic figure"
LABEL_REJECTED = "non-mitotic figure"

QUPATH_CLASSES = {  # name, RGB colour
    LABEL_MITOSIS: ("Mitotic figure", (255, 140, 0)),
    LABEL_ATYPICAL: ("Atypical mitotic figure", (220, 0, 220)),
}
TISSUE_COLOUR = (0, 160, 0)
HOTSPOT_COLOUR = (0, 90, 255)
MIN_OVERVIEW_SIDE = 512


@dataclass(frozen=True)
class Figure:
    """One candidate on the slide."""

    x_px: float  # level 0, pixel centres at integers
    y_px: float
    x_mm: float
    y_mm: float
    probability: float
    atypical_probability: float | None
    label: str  # LABEL_MITOSIS, LABEL_ATYPICAL or LABEL_REJECTED

    @property
    def is_mitosis(self) -> bool:
        return self.label != LABEL_REJECTED


# --------------------------------------------------------------------------- summary


class HotspotSummary(BaseModel):
    shape: str = "square"
    area_mm2: float
    side_mm: float
    count: int  # mitotic figures inside
    atypical_count: int
    x_mm: float | None  # top-left corner, None when the slide has no mitotic figure
    y_mm: float | None
    centre_mm: tuple[float, float] | None
    x_px: float | None  # top-left corner, level-0 pixels
    y_px: float | None
    side_px: float | None


class SlideSummary(BaseModel):
    complete: bool = True
    slide: str
    reader: str
    level0_size_px: tuple[int, int]  # (width, height)
    level0_spacing_mm: tuple[float, float]
    spacing_assumed: bool
    analysis_level: int
    analysis_spacing_mm: tuple[float, float]
    resampled: bool
    tissue_area_mm2: float
    analysed_tissue_area_mm2: float  # tissue area minus regions that could not be read
    mitotic_figures: int
    mitotic_count_per_mm2: float | None  # per mm^2 of analysed tissue
    atypical_figures: int
    atypical_fraction: float | None  # atypical / mitotic figures
    hotspot: HotspotSummary
    candidates: int
    thresholds: dict[str, float | None]
    weights_trained: bool
    regions_total: int
    regions_with_tissue: int
    regions_skipped: list[dict]  # unreadable regions: box (level-0 px) and reason
    tiles_inferred: int
    seconds: float
    resumed: bool


def hotspot_summary(hotspot: Hotspot | None, area_mm2: float, figures: Sequence[Figure],
                    level0_spacing_mm: tuple[float, float]) -> HotspotSummary:
    side = area_mm2**0.5
    if hotspot is None:
        return HotspotSummary(area_mm2=area_mm2, side_mm=side, count=0, atypical_count=0, x_mm=None, y_mm=None,
                              centre_mm=None, x_px=None, y_px=None, side_px=None)
    atypical = sum(figures[i].label == LABEL_ATYPICAL for i in hotspot.members)
    sx, sy = level0_spacing_mm
    return HotspotSummary(
        area_mm2=hotspot.area_mm2, side_mm=hotspot.side_mm, count=hotspot.count, atypical_count=atypical,
        x_mm=hotspot.x_mm, y_mm=hotspot.y_mm, centre_mm=hotspot.centre_mm,
        x_px=hotspot.x_mm / sx, y_px=hotspot.y_mm / sy, side_px=hotspot.side_mm / sx,
    )


# --------------------------------------------------------------------------- point files


def points_payload(figures: Sequence[Figure], slide: str, spacing_mm: tuple[float, float]) -> dict:
    return {
        "slide": slide,
        "coordinates": "level-0 pixels, pixel centres at integer positions; mm = px * spacing_mm",
        "spacing_mm": list(spacing_mm),
        "points": [
            {
                "label": f.label,
                "x_px": round(f.x_px, 3), "y_px": round(f.y_px, 3),
                "x_mm": round(f.x_mm, 6), "y_mm": round(f.y_mm, 6),
                "probability": round(f.probability, 6),
                "atypical_probability": None if f.atypical_probability is None else round(f.atypical_probability, 6),
            }
            for f in figures
        ],
    }


def points_csv(figures: Sequence[Figure]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["label", "x_px", "y_px", "x_mm", "y_mm", "probability", "atypical_probability"])
    for f in figures:
        writer.writerow([
            f.label, f"{f.x_px:.3f}", f"{f.y_px:.3f}", f"{f.x_mm:.6f}", f"{f.y_mm:.6f}", f"{f.probability:.6f}",
            "" if f.atypical_probability is None else f"{f.atypical_probability:.6f}",
        ])
    return out.getvalue()


def qupath_geojson(figures: Sequence[Figure], slide: str = "") -> dict:
    """Mitotic figures as QuPath point annotations (editable by the pathologist, counted per
    class in QuPath's annotation measurements). Feature ids are UUIDs, as QuPath reads them,
    derived from the slide name and the position so that a re-run gives the same ids."""
    features = []
    for f in (fig for fig in figures if fig.is_mitosis):
        name, colour = QUPATH_CLASSES[f.label]
        measurements = {"Mitosis probability": round(f.probability, 6)}
        if f.atypical_probability is not None:
            measurements["Atypical probability"] = round(f.atypical_probability, 6)
        features.append({
            "type": "Feature",
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"mitosis-analysis:{slide}:{f.x_px:.3f}:{f.y_px:.3f}")),
            "geometry": {"type": "Point", "coordinates": [round(f.x_px + 0.5, 3), round(f.y_px + 0.5, 3)]},
            "properties": {
                "objectType": "annotation",
                "classification": {"name": name, "color": list(colour)},
                "isLocked": False,
                "measurements": measurements,
            },
        })
    return {"type": "FeatureCollection", "features": features}


# --------------------------------------------------------------------------- overview picture


def overview_png(thumbnail: np.ndarray, tissue: np.ndarray, figures_xy: np.ndarray, labels: Sequence[str],
                 hotspot_box: tuple[float, float, float, float] | None) -> bytes:
    """PNG of ``thumbnail`` (H x W x 3) with the outline of ``tissue`` (bool, same grid or
    coarser), the figures (N x 2, thumbnail pixels) and the hotspot box (x0, y0, x1, y1)."""
    from PIL import Image, ImageDraw
    from scipy import ndimage

    h, w = thumbnail.shape[:2]
    rows = np.minimum((np.arange(h) * tissue.shape[0] / h).astype(int), tissue.shape[0] - 1)
    cols = np.minimum((np.arange(w) * tissue.shape[1] / w).astype(int), tissue.shape[1] - 1)
    mask = tissue[np.ix_(rows, cols)]
    outline = mask & ~ndimage.binary_erosion(mask, border_value=0)
    picture = thumbnail.copy()
    picture[ndimage.binary_dilation(outline)] = TISSUE_COLOUR
    zoom = max(1, -(-MIN_OVERVIEW_SIDE // max(h, w)))  # small slides are enlarged (nearest) to be legible
    image = Image.fromarray(picture)
    if zoom > 1:
        image = image.resize((w * zoom, h * zoom), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(image)
    r = max(4, round(max(h, w) * zoom / 400))
    for (x, y), label in zip(np.asarray(figures_xy).reshape(-1, 2), labels):
        x, y = (x + 0.5) * zoom - 0.5, (y + 0.5) * zoom - 0.5
        draw.ellipse((x - r, y - r, x + r, y + r), outline=QUPATH_CLASSES[label][1], width=max(1, r // 2))
    if hotspot_box is not None:
        draw.rectangle(tuple(v * zoom for v in hotspot_box), outline=HOTSPOT_COLOUR, width=max(2, r // 2))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


# --------------------------------------------------------------------------- writing


def remove_outputs(folder: Path) -> None:
    """Remove the outputs of an earlier run, summary first, so the folder never pairs a new
    journal with a complete-looking old result."""
    for name in reversed(OUTPUT_FILES):
        (Path(folder) / name).unlink(missing_ok=True)


def write_outputs(folder: Path, points: dict, csv_text: str, geojson: dict, png: bytes, summary: SlideSummary) -> None:
    """Each file atomically, ``summary.json`` last."""
    folder = Path(folder)
    write_json_atomic(folder / POINTS_JSON, points)
    write_bytes_atomic(folder / POINTS_CSV, csv_text.encode())
    write_json_atomic(folder / GEOJSON, geojson)
    write_bytes_atomic(folder / OVERVIEW_PNG, png)
    write_json_atomic(folder / SUMMARY_JSON, summary.model_dump(mode="json"))
