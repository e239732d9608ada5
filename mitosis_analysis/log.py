"""Messages for the user, one line each, through ``logging`` (logger ``mitosis_analysis``).

Informational lines go to **stdout**, warnings and errors to **stderr**: grand-challenge marks
every stderr line of a job as a warning, so only what deserves that goes there. Data files are
never written to stdout. The streams are looked up when a line is written (``sys.stdout`` may be
replaced, e.g. by pytest or a caller), and other programs may attach their own handlers.
"""

from __future__ import annotations

import logging
import sys

LOGGER = logging.getLogger("mitosis_analysis")


class _SplitStreamHandler(logging.Handler):
    """INFO and below to stdout, WARNING and above to stderr; flushed at once."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


if not LOGGER.handlers:
    _handler = _SplitStreamHandler()
    _handler.setFormatter(logging.Formatter("%(message)s"))
    LOGGER.addHandler(_handler)
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False


def log(message: str) -> None:
    LOGGER.info(message)


def warn(message: str) -> None:
    LOGGER.warning(f"warning: {message}")


def error(message: str) -> None:
    LOGGER.error(f"error: {message}")
