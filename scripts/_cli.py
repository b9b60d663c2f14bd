"""Shared CLI plumbing: one-line errors (traceback only with --debug) and common checks."""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Callable, Sequence

# scripts/ run from a checkout without installing: make the package importable.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
# scripts/profile.py would shadow the standard library's `profile` (imported by cProfile, which
# torch.export uses): once _cli is imported, scripts/ leaves sys.path.
_SCRIPTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _SCRIPTS]


class CliError(Exception):
    """An expected failure with a message for the user (no traceback)."""


class Parser(argparse.ArgumentParser):
    """ArgumentParser that keeps examples in the epilog and adds --debug."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true", help="show full tracebacks on errors")

    def error(self, message: str) -> None:  # type: ignore[override]
        """Bad flags: one line (argparse's default prints the whole usage block first)."""
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line (multi-line messages, e.g. key lists, are joined)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines) or type(exc).__name__


def _show_own_warnings_as_lines() -> None:
    """osnet_edge's warnings (random weights, unadapted resolution, odd input size) print as one
    'warning: ...' line, like the errors; other libraries' warnings keep Python's format."""
    from osnet_edge.notices import OsnetEdgeWarning

    python_format = warnings.formatwarning
    if getattr(python_format, "osnet_edge", False):
        return

    def one_line(message, category, filename, lineno, line=None):
        if issubclass(category, OsnetEdgeWarning):
            return f"warning: {message}\n"
        return python_format(message, category, filename, lineno, line)

    one_line.osnet_edge = True  # type: ignore[attr-defined]
    warnings.formatwarning = one_line


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    """Run ``main``; turn expected exceptions into 'error: ...' on stderr and exit code 1."""
    _show_own_warnings_as_lines()
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
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:  # a bug, not a user error: still one line, the traceback on request
        if debug:
            raise
        print(f"error: internal error {type(exc).__name__}: {_one_line(exc)} (re-run with --debug for the "
              "traceback and please report it)", file=sys.stderr)
        sys.exit(1)
    sys.exit(code or 0)
