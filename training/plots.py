"""Matplotlib for the training plots, optional: a machine without it (a bare GPU box) still trains,
and says which plot it skipped; the numbers behind every plot are in the run's JSON files."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def pyplot(path: Path | str):
    """``matplotlib.pyplot`` (Agg backend), or None after a warning naming ``path`` when matplotlib
    is not installed."""
    try:
        import matplotlib
    except ImportError:
        print(f"warning: matplotlib is not installed; {path} not drawn", file=sys.stderr)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path | str, dpi: int = 110) -> None:
    """Write ``fig`` to ``path`` atomically and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    os.replace(tmp, path)
