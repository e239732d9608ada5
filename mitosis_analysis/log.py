"""Messages for the user go to stderr, one line each; stdout stays free for data."""

from __future__ import annotations

import sys


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    log(f"warning: {message}")
