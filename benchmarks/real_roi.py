"""A Track 1-sized region of real tissue for the benchmark: ICPR 2012 scanner A fields.

The synthetic ROI (``synthetic_roi.py``) puts a dark figure every 100 um, so the verifier and the
classifier see thousands of candidates, far more than a real 2 mm^2 ROI holds; the work after the
detector, and so the end-to-end time with the real models, then measures the synthetic image. This
mosaic is real 40x breast tissue (Aperio, 0.2456 um/px, within the models' spacing tolerance, so
read as it is): the contest's 2084 x 2084 fields side by side, row by row, cut to the size asked.
It is read from ``../shared/data`` at run time and written to a temporary folder only.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def icpr_mosaic(height: int, width: int, data_dir: Path | None = None) -> tuple[np.ndarray, float]:
    """(``height`` x ``width`` x 3 uint8 mosaic of scanner A fields, its spacing in um/px)."""
    from training import real_fields as rf

    fields = rf.icpr_fields(data_dir or rf.DATA_DIR, scanners=("A",))
    if not fields:
        raise FileNotFoundError(f"no ICPR 2012 fields under {data_dir or rf.DATA_DIR}")
    out = np.empty((height, width, 3), np.uint8)
    k = 0
    for y in range(0, height, 2084):
        for x in range(0, width, 2084):
            field = rf.read_rgb(fields[k % len(fields)].path)
            h, w = min(height - y, field.shape[0]), min(width - x, field.shape[1])
            out[y : y + h, x : x + w] = field[:h, :w]
            k += 1
    return out, float(np.mean(fields[0].spacing_um))
