"""Small files that lie: TIFFs and MHAs declaring huge images, looping IFD chains, cut stacks.

Each is a few KiB to a few hundred KiB, written into a test's tmp_path; none may ever be decoded.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import tifffile


def shared_tile_bomb(path: Path, side: int = 100_000, tile: int = 256) -> Path:
    """A tiled deflate RGB TIFF of ``side`` x ``side`` px whose tiles all point at one tiny
    compressed blob (a classic TIFF, hand-written: tifffile would write every tile)."""
    blob = zlib.compress(bytes(tile * tile * 3), 9)
    n = (-(-side // tile)) ** 2
    entries = [  # tag, type, count, value (LONG arrays stored out of line)
        (256, 4, 1, side), (257, 4, 1, side), (258, 3, 3, None), (259, 3, 1, 8), (262, 3, 1, 2),
        (277, 3, 1, 3), (284, 3, 1, 1), (322, 3, 1, tile), (323, 3, 1, tile), (324, 4, n, None), (325, 4, n, None),
    ]
    ifd_offset = 8
    ifd_size = 2 + 12 * len(entries) + 4
    bps_offset = ifd_offset + ifd_size
    offsets_offset = bps_offset + 6
    counts_offset = offsets_offset + 4 * n
    blob_offset = counts_offset + 4 * n
    out = bytearray(b"II*\x00" + struct.pack("<I", ifd_offset))
    out += struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        if tag == 258:
            value = bps_offset
        elif tag == 324:
            value = offsets_offset
        elif tag == 325:
            value = counts_offset
        if typ == 3 and count == 1:
            out += struct.pack("<HHIHH", tag, typ, count, value, 0)
        else:
            out += struct.pack("<HHII", tag, typ, count, value)
    out += struct.pack("<I", 0)
    out += struct.pack("<3H", 8, 8, 8)
    out += struct.pack(f"<{n}I", *([blob_offset] * n))
    out += struct.pack(f"<{n}I", *([len(blob)] * n))
    out += blob
    Path(path).write_bytes(bytes(out))
    return Path(path)


def _tag_value_offset(path: Path, page: int, tag: str) -> tuple[int, str]:
    with tifffile.TiffFile(path) as tif:
        t = tif.pages[page].tags[tag]
        return t.valueoffset, tif.byteorder + {3: "H", 4: "I", 16: "Q"}[int(t.dtype)]


def patch_tag(path: Path, page: int, tag: str, value: int) -> None:
    """Overwrite a one-value integer tag of ``page`` in place (e.g. ImageWidth)."""
    offset, fmt = _tag_value_offset(path, page, tag)
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack(fmt, value))


def declared_huge_page(path: Path, pages: int = 3, huge_page: int = 1, side: int = 40_000) -> Path:
    """A Track 2 stack of 128 x 128 crops, one of whose pages declares ``side`` x ``side`` px."""
    tifffile.imwrite(path, np.zeros((pages, 128, 128, 3), np.uint8), compression="zlib")
    patch_tag(path, huge_page, "ImageWidth", side)
    patch_tag(path, huge_page, "ImageLength", side)
    return Path(path)


def ifd_offsets(path: Path) -> list[int]:
    with tifffile.TiffFile(path) as tif:
        return [p.offset for p in tif.pages]


def looping_stack(path: Path, pages: int = 4) -> Path:
    """A stack whose last IFD's next-IFD pointer leads back to its second IFD (a cycle)."""
    tifffile.imwrite(path, np.zeros((pages, 128, 128, 3), np.uint8))
    offsets = ifd_offsets(path)
    with tifffile.TiffFile(path) as tif:
        n_tags = len(tif.pages[-1].tags)
    data = bytearray(Path(path).read_bytes())
    pos = offsets[-1] + 2 + 12 * n_tags
    assert struct.unpack("<I", data[pos : pos + 4]) == (0,)
    data[pos : pos + 4] = struct.pack("<I", offsets[1])
    Path(path).write_bytes(bytes(data))
    return Path(path)


def stack_cut_before_last_ifd(path: Path, pages: int = 5) -> Path:
    """A stack cut one byte before its last IFD: every page but the last is intact."""
    stack = np.stack([np.full((128, 128, 3), 40 * i, np.uint8) for i in range(pages)])
    tifffile.imwrite(path, stack)
    last = ifd_offsets(path)[-1]
    Path(path).write_bytes(Path(path).read_bytes()[: last - 1])
    return Path(path)


def mha(path: Path, dims: tuple[int, ...], *, channels: int = 1, data_file: str = "LOCAL",
        payload: bytes | None = None, compressed: bool = True, spacing: float = 0.00025) -> Path:
    """A MetaImage written by hand: whatever header is asked for, with a tiny payload."""
    if payload is None:
        payload = zlib.compress(bytes(1024)) if compressed else bytes(int(np.prod(dims)) * channels)
    header = [
        "ObjectType = Image", f"NDims = {len(dims)}", "BinaryData = True", "BinaryDataByteOrderMSB = False",
        f"CompressedData = {compressed}", f"CompressedDataSize = {len(payload)}" if compressed else None,
        f"ElementSpacing = {' '.join([str(spacing)] * len(dims))}", f"DimSize = {' '.join(map(str, dims))}",
        f"ElementNumberOfChannels = {channels}", "ElementType = MET_UCHAR", f"ElementDataFile = {data_file}",
    ]
    text = "\n".join(h for h in header if h) + "\n"
    Path(path).write_bytes(text.encode() + (payload if data_file == "LOCAL" else b""))
    return Path(path)
