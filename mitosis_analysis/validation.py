"""The edge: every untrusted value of an input folder is checked here, before anything decodes it.

* ``inputs.json`` is read with a size limit and parsed into pydantic models (``InputsEntry``), so
  a slug that is a list, a number as a name or a document nested 100,000 deep is one ``error:``
  line, not a traceback;
* paths: an image is read only when it is a regular file inside the input folder once every
  symlink is resolved (``contained_file``); ``relative_path`` and image names may not climb out
  (``..``, absolute paths, separators in names);
* sizes: the size an image *declares* (TIFF tags, MHA header) is checked against the pixel
  budget (``Settings.max_image_pixels``) before a byte of pixel data is decoded
  (``check_pixel_budget``); the TIFF IFD chain is walked independently of the decoder, so a chain
  that loops or points past the end of the file (a truncated stack) is refused (``tiff_ifd_chain``);
  an MHA header is parsed here and only local (``ElementDataFile = LOCAL``), 2-D or 3-D, budgeted
  images reach SimpleITK (``mha_header``).

Messages show names through ``shown`` so that a file name holding a newline stays on one line.
"""

from __future__ import annotations

import json
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError

from .errors import InputError

MAX_INPUTS_JSON_BYTES = 1 << 20  # inputs.json lists a handful of interfaces; 1 MiB is generous
MAX_MHA_HEADER_BYTES = 1 << 16


def shown(value: object) -> str:
    """A name or path for a one-line message: control characters (newlines ...) escaped."""
    text = str(value)
    if text.isprintable():
        return text
    return repr(text)[1:-1]


# --------------------------------------------------------------------------- inputs.json


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class InterfaceValue(_Loose):
    slug: StrictStr
    relative_path: StrictStr | None = None


class ImageValue(_Loose):
    name: StrictStr | None = None


class InputsEntry(_Loose):
    interface: InterfaceValue
    image: ImageValue | None = None


def read_inputs_json(path: Path) -> list[InputsEntry]:
    """The entries of ``inputs.json`` (one object or a list of them), validated."""
    name = shown(path)
    try:
        if path.stat().st_size > MAX_INPUTS_JSON_BYTES:
            raise InputError(f"{name} is larger than {MAX_INPUTS_JSON_BYTES >> 10} KiB; refused")
        raw = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{name} is not valid JSON: {shown(exc)}") from None
    except RecursionError:
        raise InputError(f"{name} is nested too deeply to be an inputs.json") from None
    except OSError as exc:
        raise InputError(f"cannot read {name}: {exc.strerror}") from None
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise InputError(f"{name} lists no inputs")
    entries = []
    for i, item in enumerate(raw):
        try:
            entries.append(InputsEntry.model_validate(item))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(x) for x in err["loc"]) or "entry"
            raise InputError(f"{name}: entry {i}: {where}: {shown(err['msg'])}") from None
        except RecursionError:
            raise InputError(f"{name}: entry {i} is nested too deeply") from None
    return entries


def relative_folder(root: Path, relative: str, what: str) -> Path:
    """``root / relative`` for a relative POSIX path that stays inside ``root`` (no ``..``, not
    absolute, no empty or control-character parts)."""
    parts = PurePosixPath(relative).parts
    if (
        not relative
        or relative.startswith(("/", "\\"))
        or PurePosixPath(relative).is_absolute()
        or any(p in ("..", "") or "\\" in p or not p.isprintable() for p in parts)
    ):
        raise InputError(f"{what} {shown(relative)!s} is not a relative path inside the input folder; refused")
    return Path(root).joinpath(*parts)


def plain_file_name(name: str, what: str) -> str:
    """A file name without folders (no separators, not ``.``/``..``, no control characters)."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name or not name.isprintable():
        raise InputError(f"{what} {shown(name)} is not a plain file name; refused")
    return name


# --------------------------------------------------------------------------- paths


def contained_file(path: Path, root: Path) -> Path:
    """``path`` if it is a regular file inside ``root`` once every symlink is resolved; otherwise
    ``InputError`` (a symlink leading out of the input folder, a device, a FIFO, a folder ...)."""
    path, root = Path(path), Path(root)
    try:
        real = path.resolve(strict=True)
        real_root = root.resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a symlink loop
        raise InputError(f"image not found: {shown(path)}") from None
    if real != real_root and real_root not in real.parents:
        raise InputError(f"{shown(path.name)} leads outside the input folder (to {shown(real)}); refused")
    mode = real.stat().st_mode
    if not stat.S_ISREG(mode):
        raise InputError(f"{shown(path.name)} is not a regular file; refused")
    return path


def contained_folder(folder: Path, root: Path) -> Path:
    """``folder`` if, symlinks resolved, it lies inside ``root`` (or is ``root``)."""
    real, real_root = Path(folder).resolve(), Path(root).resolve()
    if real != real_root and real_root not in real.parents:
        raise InputError(f"{shown(folder)} leads outside the input folder (to {shown(real)}); refused")
    return Path(folder)


# --------------------------------------------------------------------------- sizes


def check_pixel_budget(width: int, height: int, budget: int, what: str, depth: int = 1) -> None:
    """Refuse an image whose declared size exceeds ``budget`` pixels, before it is decoded."""
    pixels = int(width) * int(height) * max(1, int(depth))
    if pixels > budget:
        size = f"{width}x{height}" + (f"x{depth}" if depth > 1 else "")
        raise InputError(
            f"{what}: {size} px ({pixels / 1e6:.0f} Mpx) exceeds the pixel budget of {budget / 1e6:.0f} Mpx "
            "(MITOSIS_MAX_IMAGE_PIXELS); refused"
        )


@dataclass(frozen=True)
class IfdChain:
    offsets: tuple[int, ...]
    bigtiff: bool


def tiff_ifd_chain(path: Path, max_ifds: int) -> IfdChain:
    """Walk the main IFD chain of a TIFF without decoding anything: every IFD must lie inside the
    file, no IFD may be visited twice (a loop), and at most ``max_ifds`` are accepted. A chain
    whose next offset points past the end of the file is a truncated file."""
    name = shown(Path(path).name)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(16)
        if len(head) < 8 or head[:2] not in (b"II", b"MM"):
            raise InputError(f"{name}: cannot read TIFF (not a TIFF file)")
        bo = "<" if head[:2] == b"II" else ">"
        version = struct.unpack(bo + "H", head[2:4])[0]
        if version == 42:
            bigtiff, offset = False, struct.unpack(bo + "I", head[4:8])[0]
            count_fmt, count_size, entry_size, next_fmt = "H", 2, 12, "I"
        elif version == 43 and len(head) >= 16:
            bigtiff, offset = True, struct.unpack(bo + "Q", head[8:16])[0]
            count_fmt, count_size, entry_size, next_fmt = "Q", 8, 20, "Q"
        else:
            raise InputError(f"{name}: cannot read TIFF (unknown version {version})")
        next_size = struct.calcsize(next_fmt)
        seen: set[int] = set()
        offsets: list[int] = []
        while offset:
            if offset in seen:
                raise InputError(f"{name}: cannot read TIFF (its IFD chain loops back to offset {offset})")
            if offset + count_size > size:
                raise InputError(
                    f"{name}: cannot read TIFF (file is truncated: IFD {len(offsets)} at offset {offset} "
                    f"lies past its end, {size} bytes)"
                )
            if len(offsets) >= max_ifds:
                raise InputError(f"{name}: more than {max_ifds} pages (MITOSIS_MAX_STACK_PAGES); refused")
            seen.add(offset)
            offsets.append(offset)
            f.seek(offset)
            count = struct.unpack(bo + count_fmt, f.read(count_size))[0]
            end = offset + count_size + count * entry_size
            if end + next_size > size:
                raise InputError(f"{name}: cannot read TIFF (file is truncated inside IFD {len(offsets) - 1})")
            f.seek(end)
            offset = struct.unpack(bo + next_fmt, f.read(next_size))[0]
    if not offsets:
        raise InputError(f"{name}: cannot read TIFF (no image pages)")
    return IfdChain(tuple(offsets), bigtiff)


# --------------------------------------------------------------------------- MHA


@dataclass(frozen=True)
class MhaHeader:
    dims: tuple[int, ...]  # x, y[, z]
    channels: int
    element_type: str


MHA_TYPES = {
    "MET_UCHAR", "MET_CHAR", "MET_USHORT", "MET_SHORT", "MET_UINT", "MET_INT",
    "MET_FLOAT", "MET_DOUBLE", "MET_ULONG", "MET_LONG", "MET_ULONG_LONG", "MET_LONG_LONG",
}


def mha_header(path: Path, budget: int) -> MhaHeader:
    """Parse the text header of a MetaImage (.mha) and refuse what SimpleITK should not be given:
    pixel data in another file or device (only ``ElementDataFile = LOCAL``), more than 3
    dimensions, more than 4 channels, unknown element types, or more pixels than ``budget``."""
    name = shown(Path(path).name)
    fields: dict[str, str] = {}
    with open(path, "rb") as f:
        head = f.read(MAX_MHA_HEADER_BYTES)
    for raw_line in head.split(b"\n"):
        line = raw_line.decode("latin-1").strip()
        if "=" not in line:
            if line:
                raise InputError(f"{name}: cannot read MHA (malformed header line)")
            continue
        key, value = (s.strip() for s in line.split("=", 1))
        fields[key] = value
        if key == "ElementDataFile":
            break
    else:
        raise InputError(f"{name}: cannot read MHA (no ElementDataFile in the first {MAX_MHA_HEADER_BYTES >> 10} KiB)")
    if fields["ElementDataFile"] != "LOCAL":
        raise InputError(
            f"{name}: MHA pixel data must be in the file itself (ElementDataFile = LOCAL), "
            f"not in {shown(fields['ElementDataFile'])}; refused"
        )
    try:
        ndims = int(fields.get("NDims", "0"))
        dims = tuple(int(v) for v in fields.get("DimSize", "").split())
        channels = int(fields.get("ElementNumberOfChannels", "1"))
    except ValueError:
        raise InputError(f"{name}: cannot read MHA (non-numeric NDims, DimSize or ElementNumberOfChannels)") from None
    element_type = fields.get("ElementType", "")
    if ndims not in (2, 3) or len(dims) != ndims or any(d < 0 for d in dims):
        raise InputError(f"{name}: cannot read MHA (expected a 2-D or 3-D image, header says NDims {ndims}, DimSize {dims})")
    if 0 in dims:
        raise InputError(f"{name}: image has no pixels (DimSize {dims})")
    if not 1 <= channels <= 4:
        raise InputError(f"{name}: unsupported number of channels: {channels}")
    if element_type not in MHA_TYPES:
        raise InputError(f"{name}: unsupported MHA element type {shown(element_type)}")
    check_pixel_budget(dims[0], dims[1], budget, name, depth=dims[2] if ndims == 3 else 1)
    return MhaHeader(dims=dims, channels=channels, element_type=element_type)
