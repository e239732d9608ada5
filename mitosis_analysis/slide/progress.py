"""A progress bar on stderr: tiles done / total, rate and time left.

On a terminal the bar is redrawn in place; otherwise (logs, CI) one line is written every
``interval_s`` seconds so that logs stay short. The total may be corrected on the way (it is an
estimate from the tissue mask until each region has been inferred).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    def __init__(self, total: int, done: int = 0, *, enabled: bool = True, stream: TextIO | None = None,
                 interval_s: float = 30.0, width: int = 30):
        self.total, self.done = total, done
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval_s = interval_s if not self.tty else 0.2
        self.width = width
        self._start = time.monotonic()
        self._start_done = done
        self._last = -float("inf")

    def advance(self, n: int) -> None:
        self.done += n
        self._maybe_draw()

    def correct_total(self, delta: int) -> None:
        self.total = max(self.done, self.total + delta)

    def eta_s(self) -> float | None:
        elapsed = time.monotonic() - self._start
        rate = (self.done - self._start_done) / elapsed if elapsed > 0 else 0.0
        return (self.total - self.done) / rate if rate > 0 else None

    def line(self) -> str:
        frac = self.done / self.total if self.total else 1.0
        filled = int(round(frac * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        eta = self.eta_s()
        left = "--:--" if eta is None else format_duration(eta)
        return f"[{bar}] {self.done}/{self.total} tiles {frac:4.0%}  {left} left"

    def _maybe_draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < self.interval_s):
            return
        self._last = now
        end = "" if self.tty else "\n"
        prefix = "\r" if self.tty else ""
        line = self.line()
        if self.tty:
            line = line.ljust(len(line) + 4)  # overwrite what a longer previous line left
        print(f"{prefix}{line}", end=end, file=self.stream, flush=True)

    def finish(self) -> None:
        self.total = self.done if self.total < self.done else self.total
        self._maybe_draw(force=True)
        if self.enabled and self.tty:
            print(file=self.stream, flush=True)
