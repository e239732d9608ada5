"""Where training runs and how it writes: the device, atomic checkpoint/JSON/``.npz`` writers (so
that an interrupted run never leaves half a file), and the keys that tie a cache to the code that
made it."""

from __future__ import annotations

import hashlib
import io
import os
import json
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

import numpy as np
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


def adamw(params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on weights only: biases and normalisation scales (1-d) are not decayed."""
    params = list(params)
    return torch.optim.AdamW([{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
                              {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}], lr=lr)


def ema_of(net: torch.nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of ``net``'s weights and buffers (``update_parameters`` after
    each step; the average is ``.module``)."""
    return torch.optim.swa_utils.AveragedModel(
        net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay), use_buffers=True)


def portable_path(path: Path | str) -> str:
    """``path`` as a checkpoint or manifest should record it: relative to the repository (so
    ``../shared/data/ami-br``, not this machine's absolute path) when it lies beside or inside the
    checkout, else as given."""
    path = Path(path)
    # The path as given first (a ``../shared`` that is a symbolic link stays ``../shared``), then
    # with its links resolved (a checkout reached through a link).
    for candidate in (Path(os.path.abspath(path)), path.resolve()):
        try:
            if candidate.is_relative_to(REPO_ROOT.parent):
                return os.path.relpath(candidate, REPO_ROOT)
        except ValueError:  # another drive (Windows)
            break
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


def save_npz(path: Path | str, *, compressed: bool = False, **arrays) -> None:
    """``np.savez`` (``compressed``: ``np.savez_compressed``) into ``path`` atomically: a temporary
    file beside it, then ``os.replace``; the folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")
    try:
        (np.savez_compressed if compressed else np.savez)(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def cache_key(names: Iterable[str], *code: ModuleType | Path) -> str:
    """16 hex digits of the sha256 of ``names`` (one per line) and of the bytes of each source
    file in ``code`` (a module: its file): a cache named by it is never read by changed code."""
    h = hashlib.sha256("\n".join(names).encode())
    for source in code:
        h.update(Path(source.__file__ if isinstance(source, ModuleType) else source).read_bytes())
    return h.hexdigest()[:16]
