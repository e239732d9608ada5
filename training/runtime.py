"""Where training runs and how it writes: the device, and atomic checkpoint/JSON writers (through
the product's ``write_bytes_atomic``, so that an interrupted run never leaves half a file)."""

from __future__ import annotations

import io
import os
import json
from pathlib import Path

import torch

from mitosis_analysis.outputs import write_bytes_atomic

REPO_ROOT = Path(__file__).resolve().parents[1]


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; anything else (``cpu``, ``cuda``, ``cuda:N``) as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_of(net: torch.nn.Module) -> torch.device:
    """The device a module's parameters live on."""
    return next(net.parameters()).device


def portable_path(path: Path | str) -> str:
    """``path`` as a checkpoint or manifest should record it: relative to the repository (so
    ``../shared/data/ami-br``, not this machine's absolute path) when it lies beside or inside the
    checkout, else as given."""
    path = Path(path)
    try:
        return os.path.relpath(path.resolve(), REPO_ROOT) if path.resolve().is_relative_to(REPO_ROOT.parent) else str(path)
    except ValueError:  # another drive (Windows)
        return str(path)


def save_checkpoint(obj, path: Path | str) -> None:
    """``torch.save`` into ``path`` atomically."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes_atomic(Path(path), buffer.getvalue())


def write_json(obj, path: Path | str) -> None:
    """JSON (indented) into ``path`` atomically."""
    write_bytes_atomic(Path(path), (json.dumps(obj, indent=2) + "\n").encode())


def report_json(obj, path: Path | str | None) -> None:
    """A report printed as JSON, and written to ``path`` (atomically) when one is given."""
    print(json.dumps(obj, indent=2))
    if path is not None:
        write_json(obj, path)
