"""Shared CLI plumbing: one-line errors (traceback only with --debug) and common checks."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

# scripts/ run from a checkout without installing: make the package importable.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


class CliError(Exception):
    """An expected failure with a message for the user (no traceback)."""


class Parser(argparse.ArgumentParser):
    """ArgumentParser that keeps examples in the epilog and adds --debug."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true", help="show full tracebacks on errors")


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    """Run ``main``; turn expected exceptions into 'error: ...' on stderr and exit code 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        code = main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except (CliError, ValueError, TypeError, FileNotFoundError, FileExistsError, ImportError,
            RuntimeError, OSError) as exc:
        if debug:
            raise
        msg = str(exc).strip() or type(exc).__name__
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(1)
    sys.exit(code or 0)
