#!/usr/bin/env python3
"""grand-challenge entrypoint: ``process.py [--input DIR] [--output DIR]`` (defaults /input, /output).

Thin on purpose: the job lives in ``mitosis_analysis.commands.process``
(``python -m mitosis_analysis process`` is the same command).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mitosis_analysis.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["process", *sys.argv[1:]]))
