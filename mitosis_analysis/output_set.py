"""All outputs of a run, or none: every file written to a temporary name first, then renamed.

``write_output_set`` writes each file next to its target (same file system, so the rename is
atomic) and fsyncs it; only when every temporary file is complete are they renamed into place.
If a write fails (full disk, a folder where a file should go, permissions), the temporary files
are removed; if a rename fails, the files already renamed are removed again and any file they
replaced is put back. Targets must lie inside the output folder.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import InputError
from .validation import shown


def output_targets(folder: Path, relatives: list[Path]) -> list[Path]:
    """The absolute targets of ``relatives`` in ``folder``, refused when one would leave the
    folder, two coincide, or a target is an existing folder. Call before any work is done."""
    folder = Path(folder)
    root = folder.resolve()
    targets = []
    for rel in relatives:
        rel = Path(rel)
        target = folder / rel
        resolved = target.resolve()
        if rel.is_absolute() or ".." in rel.parts or root not in resolved.parents:
            raise InputError(f"output {shown(rel)} would be written outside the output folder; refused")
        if target.is_dir():
            raise InputError(f"cannot write {shown(target)}: it is a folder")
        targets.append(target)
    if len({t.resolve() for t in targets}) != len(targets):
        raise InputError("two outputs would be written to the same file; refused")
    return targets


def write_output_set(folder: Path, files: dict[Path, bytes]) -> list[Path]:
    """Write ``{relative path: bytes}`` into ``folder``: all of them, or (on failure) none, then
    ``InputError``. Returns the written paths."""
    targets = output_targets(folder, list(files))
    data = list(files.values())
    created: list[Path] = []  # folders made here, removed again on failure
    temps: list[Path] = []
    try:
        for target, payload in zip(targets, data):
            _make_parents(target.parent, created)
            temps.append(_write_temp(target, payload))
    except OSError as exc:
        _discard(temps, created)
        raise InputError(f"cannot write {shown(target)}: {exc.strerror or exc}; no output written") from None
    done: list[tuple[Path, Path | None]] = []  # (target, backup of what it replaced)
    try:
        for target, temp in zip(targets, temps):
            backup = None
            if target.exists() or target.is_symlink():
                backup = target.with_name(f".{target.name}.{os.getpid()}.bak")
                os.replace(target, backup)
            done.append((target, backup))
            os.replace(temp, target)
    except OSError as exc:
        for t, backup in reversed(done):
            if backup is not None:
                os.replace(backup, t)
            else:
                t.unlink(missing_ok=True)
        _discard(temps, created)
        raise InputError(f"cannot write {shown(target)}: {exc.strerror or exc}; no output written") from None
    for _, backup in done:
        if backup is not None:
            backup.unlink(missing_ok=True)
    return targets


def _make_parents(folder: Path, created: list[Path]) -> None:
    missing = []
    p = folder
    while not p.exists():
        missing.append(p)
        p = p.parent
    for p in reversed(missing):
        p.mkdir()
        created.append(p)


def _write_temp(target: Path, payload: bytes) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def _discard(temps: list[Path], created: list[Path]) -> None:
    for t in temps:
        t.unlink(missing_ok=True)
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            pass
