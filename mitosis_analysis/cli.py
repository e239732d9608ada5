"""Command line: ``python -m mitosis_analysis <command> [options]``.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``.
Only the chosen command's module is imported, so the container (which has no plotting or
training dependencies) runs ``process`` without the others' requirements.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import InputError
from .log import error
from .validation import shown

# command -> (module, one-line help)
COMMANDS = {
    "process": ("mitosis_analysis.commands.process", "run the challenge container job on an input folder"),
    "evaluate": ("mitosis_analysis.evaluate.command", "score predictions against ground truth (Track 1 / Track 2)"),
    "slide": ("mitosis_analysis.slide.command", "whole-slide mode: count mitoses, find the hotspot, export for QuPath"),
    "cohort": ("mitosis_analysis.cohort.command", "many slides through the slide mode on Dask workers, one table"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = argparse.ArgumentParser(
        prog="mitosis-analysis",
        description="Mitosis detection and atypical classification (MIDOG Track 1 and 2).",
        epilog="commands:\n" + "\n".join(f"  {k:<10} {h}" for k, (_, h) in COMMANDS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("command", choices=COMMANDS, help="see below; '<command> --help' for its options")
    top.add_argument("--version", action="version", version=f"mitosis-analysis {__version__}")
    if not argv or argv[0] not in COMMANDS:
        top.parse_args(argv[:1] or ["--help"])  # prints usage / help and exits
    name, rest = argv[0], argv[1:]
    module_name, help_ = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = OneLineErrorParser(prog=f"mitosis-analysis {name}", description=help_)
    module.add_arguments(parser)
    return guarded(module.run, parser.parse_args(rest))


class OneLineErrorParser(argparse.ArgumentParser):
    """A bad option (``--batch-size x``) is one ``error:`` line and exit code 2, as bad input is."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {shown(message)} (see '{self.prog} --help')\n")
        sys.exit(2)


def guarded(fn, *args) -> int:
    """Run ``fn``; bad input becomes one line on stderr and a non-zero exit code."""
    try:
        return int(fn(*args) or 0)
    except InputError as exc:
        error(shown(str(exc)))
        return exc.exit_code
    except OSError as exc:  # the machine, not the code: a full disk, an I/O error on the input
        where = f": {exc.filename}" if exc.filename else ""
        error(shown(f"{exc.strerror or exc}{where}"))
        return 2
    except RecursionError:
        error("input nested too deeply")
        return 2
    except KeyboardInterrupt:
        error("interrupted")
        return 130
    except MemoryError:
        error("out of memory")
        return 3


if __name__ == "__main__":
    sys.exit(main())
