"""Real-tissue windows for the detector: label maps of the ICPR 2012 fields and random windows cut
from them, next to the AMi-Br mosaics (``train_detector --real-windows N``).

A crop mosaic is mostly mitoses; a real field is mostly look-alikes (apoptotic bodies, lymphocytes,
pyknotic and dark nuclei). Windows of whole fields show the detector that context.

Labels per field (``field_labels``), the classes of ``training/labels.py``:

- scanner A (restored, 0.2456 um/px, used at its own spacing as the product does): every mitosis of
  ``annotations.json`` labelled as in an AMi-Br crop (``labels.label_map``: the teacher's blob
  containing its centroid, cut to a 6 um disk), the teacher's nuclei, background elsewhere;
- scanner H (resampled to 0.25 um/px by ``real_fields.load_field``): mitoses are painted there, so
  the field gives negatives only; its windows are drawn again until they touch no pixel of the
  ignore region (``FieldWindows._uniform_origin``), so no painted or filled pixel reaches the model
  or the loss (their labels are ``IGNORE`` besides).

Windows (``FieldWindows.sample``): a share ``positive_fraction`` of them contain an A mitosis at a
uniform position at least ``margin`` px inside the window; the rest are uniform over all fields'
clean area. Label maps are cached under ``training/cache/`` keyed by the fields and the labelling
code, as the AMi-Br label maps are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training import labels as label_lib
from training import real_fields as rf
from training import runtime
from training import teacher as teacher_lib

MAX_TRIES = 50  # draws per H window before giving up on a clear one (a field is mostly clear)


@dataclass
class LabelledField:
    name: str
    slide: str
    pixels: np.ndarray  # H x W x 3 uint8
    labels: np.ndarray  # H x W uint8 (label_lib classes)
    points: np.ndarray  # H x W uint8 (class at annotated centres, IGNORE elsewhere)
    mitoses: np.ndarray  # (n, 2) x, y in ``pixels`` coordinates (empty for H)
    ignore: np.ndarray | None  # bool H x W (H fields), None for A


def field_labels(loaded: rf.LoadedField) -> tuple[np.ndarray, np.ndarray]:
    """(labels, points) of one loaded field; the ignore region (H) is ``IGNORE`` in both."""
    labels, points = label_lib.label_map(teacher_lib.nucleus_mask(loaded.pixels), loaded.mitoses, np.zeros((0, 2)),
                                         spacing_um=loaded.spacing_um)
    if loaded.ignore is not None:
        labels[loaded.ignore] = label_lib.IGNORE
        points[loaded.ignore] = label_lib.IGNORE
    return labels, points


def load_fields(data: Path, cache: Path, exclude_slides: tuple[str, ...] = ()) -> list[LabelledField]:
    """Every ICPR 2012 field (A and H) of the slides not excluded, with its label maps (cached)."""
    fields = [f for f in rf.icpr_fields(data) if f.slide not in exclude_slides]
    path = Path(cache) / f"field-labels-{runtime.cache_key((f.name for f in fields), label_lib, teacher_lib, rf, Path(__file__))}.npz"
    loaded = [rf.load_field(f, cache) for f in fields]
    if path.is_file():
        z = np.load(path)
        maps = [(z[f"labels_{f.name}"], z[f"points_{f.name}"]) for f in fields]
    else:
        maps = [field_labels(lf) for lf in loaded]
        runtime.save_npz(path, compressed=True, **{f"labels_{f.name}": m[0] for f, m in zip(fields, maps)},
                         **{f"points_{f.name}": m[1] for f, m in zip(fields, maps)})
    return [LabelledField(f.name, f.slide, lf.pixels, lab, pts, lf.mitoses, lf.ignore)
            for f, lf, (lab, pts) in zip(fields, loaded, maps)]


class FieldWindows:
    """Random ``window`` px windows of labelled fields (numpy, uint8)."""

    def __init__(self, fields: list[LabelledField], window: int, positive_fraction: float = 0.5, margin: int = 16):
        if not fields:
            raise ValueError("no fields to draw windows from")
        small = [f.name for f in fields if min(f.pixels.shape[:2]) < window]
        if small:
            raise ValueError(f"fields smaller than the window ({window} px): {small}")
        self.fields, self.window, self.margin = fields, int(window), int(margin)
        self.positive_fraction = float(positive_fraction)
        self.mitoses = [(i, xy) for i, f in enumerate(fields) for xy in f.mitoses]
        area = np.array([f.pixels.shape[0] * f.pixels.shape[1] for f in fields], dtype=float)
        self.field_p = area / area.sum()

    def _origin_at(self, f: LabelledField, xy: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
        """Top-left corner of a window holding ``xy`` at least ``margin`` px inside, clipped to the field."""
        h, w = f.pixels.shape[:2]
        lo, hi = self.margin, self.window - self.margin
        c = int(np.clip(round(xy[0]) - rng.integers(lo, hi), 0, w - self.window))
        r = int(np.clip(round(xy[1]) - rng.integers(lo, hi), 0, h - self.window))
        return r, c

    def _uniform_origin(self, f: LabelledField, rng: np.random.Generator) -> tuple[int, int]:
        h, w = f.pixels.shape[:2]
        for _ in range(MAX_TRIES):
            r, c = int(rng.integers(0, h - self.window + 1)), int(rng.integers(0, w - self.window + 1))
            if f.ignore is None or not f.ignore[r : r + self.window, c : c + self.window].any():
                return r, c
        raise RuntimeError(f"{f.name}: no window clear of the ignore region in {MAX_TRIES} draws")

    def sample(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``n`` windows: image (n x w x w x 3 uint8), labels and points (n x w x w uint8)."""
        w = self.window
        out = {"image": np.empty((n, w, w, 3), np.uint8), "labels": np.empty((n, w, w), np.uint8),
               "points": np.empty((n, w, w), np.uint8)}
        for k in range(n):
            if self.mitoses and rng.random() < self.positive_fraction:
                i, xy = self.mitoses[rng.integers(len(self.mitoses))]
                f = self.fields[i]
                r, c = self._origin_at(f, xy, rng)
            else:
                f = self.fields[rng.choice(len(self.fields), p=self.field_p)]
                r, c = self._uniform_origin(f, rng)
            out["image"][k] = f.pixels[r : r + w, c : c + w]
            out["labels"][k] = f.labels[r : r + w, c : c + w]
            out["points"][k] = f.points[r : r + w, c : c + w]
        return out
