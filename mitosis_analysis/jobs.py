"""What to do for an input folder: one job per (interface, image), from ``inputs.json``.

grand-challenge writes ``inputs.json`` as a list of interface values, each with
``interface.slug`` and ``interface.relative_path`` (the folder of its image) and ``image.name``.
Without ``inputs.json`` (MIDOG 2021/2022 containers) every image directly in the folder is a
Track 1 case.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .log import warn
from .settings import INPUTS_JSON, INTERFACES, ROI_SUFFIXES, SLIDE_SUFFIXES, TRACK1, Interface
from .validation import (
    contained_file,
    contained_folder,
    plain_file_name,
    read_inputs_json,
    relative_folder,
    shown,
)


@dataclass(frozen=True)
class Job:
    interface: Interface
    image: Path
    output: Path  # relative to the output folder


def plan_jobs(input_dir: Path) -> list[Job]:
    """The jobs of an input folder; every image is a regular file inside ``input_dir``
    (``validation.contained_file``) and every output path a distinct path inside the output
    folder."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise InputError(f"input folder not found: {shown(input_dir)}")
    manifest = input_dir / INPUTS_JSON
    if manifest.exists() or manifest.is_symlink():
        return _jobs_from_inputs_json(input_dir, contained_file(manifest, input_dir))
    # anything named like an image but a folder: a device or a link leading out is refused below
    images = sorted(p for p in input_dir.iterdir() if p.suffix.lower() in ROI_SUFFIXES + SLIDE_SUFFIXES and not p.is_dir())
    if not images:
        raise InputError(f"no {INPUTS_JSON} and no image (.tif, .tiff, .mha) in {shown(input_dir)}")
    images = [contained_file(p, input_dir) for p in images]
    if len(images) == 1:
        return [Job(TRACK1, images[0], Path(TRACK1.output_file))]
    # several legacy cases: one output folder per image, named after its stem
    by_stem: dict[str, Path] = {}
    for p in images:
        stem = p.stem
        if stem in ("", ".", "..") or stem.startswith(".") or not stem.isprintable():
            raise InputError(f"{shown(p.name)}: its name gives no usable output folder (<stem>/{TRACK1.output_file}); rename it")
        other = by_stem.setdefault(stem.casefold(), p)
        if other is not p:
            raise InputError(
                f"{shown(other.name)} and {shown(p.name)} would share one output folder ({shown(stem)}/); "
                "rename one of them"
            )
    return [Job(TRACK1, p, Path(p.stem) / TRACK1.output_file) for p in images]


def _jobs_from_inputs_json(input_dir: Path, path: Path) -> list[Job]:
    jobs = []
    for i, entry in enumerate(read_inputs_json(path)):
        slug = entry.interface.slug
        if slug not in INTERFACES:
            known = ", ".join(INTERFACES)
            raise InputError(f"{shown(path)}: unknown interface slug {shown(repr(slug))} (this container reads: {known})")
        interface = INTERFACES[slug]
        relative = entry.interface.relative_path or interface.image_dir
        folder = relative_folder(input_dir, relative, f"{INPUTS_JSON} entry {i}: relative_path")
        name = entry.image.name if entry.image is not None else None
        if name:
            plain_file_name(name, f"{INPUTS_JSON} entry {i}: image name")
        jobs.append(Job(interface, _find_image(input_dir, folder, name), Path(interface.output_file)))
    outputs = [j.output for j in jobs]
    if len(set(outputs)) != len(outputs):
        raise InputError(f"{shown(path)}: the same interface is listed twice")
    return jobs


def _find_image(input_dir: Path, folder: Path, name: str | None) -> Path:
    """The listed image: the file of that exact name; else the one file of the same stem in another
    format (grand-challenge may convert uploads), said; else the folder's only image, said.
    Never a guess among several files."""
    if not folder.is_dir():
        raise InputError(f"listed image folder is missing: {shown(folder)}")
    contained_folder(folder, input_dir)
    if name and ((folder / name).exists() or (folder / name).is_symlink()):
        return contained_file(folder / name, input_dir)
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in ROI_SUFFIXES and p.is_file())
    if name:
        same_stem = [p for p in images if p.stem == Path(name).stem]
        if len(same_stem) > 1:
            listed = ", ".join(shown(p.name) for p in same_stem)
            raise InputError(f"listed image {shown(name)} is missing, and several files share its stem ({listed})")
        if same_stem:
            warn(f"listed image {shown(name)} is not in {shown(folder)}; reading {shown(same_stem[0].name)} (same name, other format)")
            return contained_file(same_stem[0], input_dir)
    if not images:
        what = shown(name) if name else "no .tif, .tiff or .mha"
        raise InputError(f"listed image is missing: {what} in {shown(folder)}")
    if len(images) == 1:
        if name:
            warn(f"listed image {shown(name)} is not in {shown(folder)}; reading the folder's only image, {shown(images[0].name)}")
        return contained_file(images[0], input_dir)
    if name:
        raise InputError(f"listed image is missing: {shown(name)} is not among the {len(images)} images of {shown(folder)}")
    raise InputError(f"{len(images)} images in {shown(folder)} and inputs.json does not say which one to use")
