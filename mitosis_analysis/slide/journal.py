"""The run journal: what a slide run has finished, so that an interrupted run resumes.

``journal.jsonl`` in the output folder holds one JSON object per line: first a header that
identifies the run (slide fingerprint, weights, settings, region plan), then one record per
finished region (its candidates, in working-grid pixels) or per region that could not be read.
Every record is appended with flush + fsync, so a crash leaves at most one torn last line, which
is ignored (and cut off) when the run resumes. The file is locked while a run holds it, so two
runs never write into the same folder at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..candidates import Candidate
from ..errors import InputError

JOURNAL_FILE = "journal.jsonl"


@dataclass
class RegionRecord:
    index: int
    tiles: int  # tiles inferred
    candidates: list[Candidate] = field(default_factory=list)
    error: str | None = None  # set when the region could not be read (and was skipped)


def slide_fingerprint(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of the size and the first and last MiB of the file: cheap, and it survives a move."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(chunk))
        if size > chunk:
            f.seek(max(chunk, size - chunk))
            h.update(f.read(chunk))
    return h.hexdigest()


class Journal:
    """Open (or create) the journal of ``folder`` for a run described by ``header``.

    A journal of another run (different header) is refused unless ``restart`` is set, in which
    case it is emptied.
    """

    def __init__(self, folder: Path, header: dict, restart: bool = False):
        self.path = Path(folder) / JOURNAL_FILE
        header = json.loads(json.dumps(header))  # the form it has once read back (lists, not tuples)
        try:
            self._file = open(self.path, "a+b")
        except OSError as exc:
            raise InputError(f"cannot write the journal {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise InputError(f"another run is writing into {folder} (its journal is locked)") from None
        self.records: dict[int, RegionRecord] = {}
        self.resumed = False
        stored_header, records, good_bytes = self._load()
        if restart or stored_header is None:
            self._truncate(0)
            self._append({"kind": "header", **header})
        elif stored_header != header:
            self.close()
            raise InputError(
                f"{folder} holds an unfinished or finished run of another slide or other settings; "
                "use another output folder or --restart"
            )
        else:
            self._truncate(good_bytes)  # drop a torn last line
            self.records = records
            self.resumed = bool(records)

    def _load(self) -> tuple[dict | None, dict[int, RegionRecord], int]:
        self._file.seek(0)
        header, records, good = None, {}, 0
        for line in self._file.read().splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                entry = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                break
            if header is None:
                if entry.get("kind") != "header":
                    break
                header = {k: v for k, v in entry.items() if k != "kind"}
            elif entry.get("kind") == "region":
                records[entry["index"]] = RegionRecord(
                    index=entry["index"],
                    tiles=entry["tiles"],
                    candidates=[Candidate(x=c[0], y=c[1], score=c[2], area=c[3], atypical_logit=c[4],
                                          verification_logit=c[5] if len(c) > 5 else None)
                                for c in entry["candidates"]],
                    error=entry.get("error"),
                )
            good += len(line)
        return header, records, good

    def _truncate(self, size: int) -> None:
        self._file.truncate(size)
        self._file.seek(0, os.SEEK_END)

    def _append(self, entry: dict) -> None:
        self._file.write((json.dumps(entry, separators=(",", ":")) + "\n").encode())
        self._file.flush()
        os.fsync(self._file.fileno())

    def record(self, record: RegionRecord) -> None:
        self._append({
            "kind": "region",
            "index": record.index,
            "tiles": record.tiles,
            "candidates": [[c.x, c.y, c.score, c.area, c.atypical_logit, c.verification_logit] for c in record.candidates],
            **({"error": record.error} if record.error else {}),
        })
        self.records[record.index] = record

    def close(self) -> None:
        if not self._file.closed:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
