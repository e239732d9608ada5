"""What to do for an input folder: one job per (interface, image), from ``inputs.json``.

grand-challenge writes ``inputs.json`` as a list of interface values, each with
``interface.slug`` and ``interface.relative_path`` (the folder of its image) and ``image.name``.
Without ``inputs.json`` (MIDOG 2021/2022 containers) every image directly in the folder is a
Track 1 case.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .settings import INPUTS_JSON, INTERFACES, ROI_SUFFIXES, SLIDE_SUFFIXES, TRACK1, Interface


@dataclass(frozen=True)
class Job:
    interface: Interface
    image: Path
    output: Path  # relative to the output folder


def plan_jobs(input_dir: Path) -> list[Job]:
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise InputError(f"input folder not found: {input_dir}")
    manifest = input_dir / INPUTS_JSON
    if manifest.is_file():
        return _jobs_from_inputs_json(input_dir, manifest)
    images = sorted(p for p in input_dir.iterdir() if p.is_file() and p.suffix.lower() in ROI_SUFFIXES + SLIDE_SUFFIXES)
    if not images:
        raise InputError(f"no {INPUTS_JSON} and no image (.tif, .tiff, .mha) in {input_dir}")
    if len(images) == 1:
        return [Job(TRACK1, images[0], Path(TRACK1.output_file))]
    # several legacy cases: one output folder per image, named after it
    return [Job(TRACK1, p, Path(p.stem) / TRACK1.output_file) for p in images]


def _jobs_from_inputs_json(input_dir: Path, path: Path) -> list[Job]:
    try:
        entries = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from None
    if isinstance(entries, dict):
        entries = [entries]
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{path} lists no inputs")
    jobs = []
    for entry in entries:
        interface_info = entry.get("interface") if isinstance(entry, dict) else None
        slug = interface_info.get("slug") if isinstance(interface_info, dict) else None
        if slug not in INTERFACES:
            known = ", ".join(INTERFACES)
            raise InputError(f"{path}: unknown interface slug {slug!r} (this container reads: {known})")
        interface = INTERFACES[slug]
        folder = input_dir / (interface_info.get("relative_path") or interface.image_dir)
        name = (entry.get("image") or {}).get("name") if isinstance(entry.get("image"), dict) else None
        jobs.append(Job(interface, _find_image(folder, name), Path(interface.output_file)))
    outputs = [j.output for j in jobs]
    if len(set(outputs)) != len(outputs):
        raise InputError(f"{path}: the same interface is listed twice")
    return jobs


def _find_image(folder: Path, name: str | None) -> Path:
    if not folder.is_dir():
        raise InputError(f"listed image folder is missing: {folder}")
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in ROI_SUFFIXES)
    if name:
        named = [p for p in images if p.name == name or p.stem == Path(name).stem]
        if named:
            return named[0]
    if len(images) == 1:
        return images[0]
    if not images:
        raise InputError(f"listed image is missing: no .tif, .tiff or .mha in {folder}")
    raise InputError(f"{len(images)} images in {folder} and inputs.json does not say which one to use")
