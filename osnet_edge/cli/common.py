"""Shared CLI plumbing: one-line errors (traceback only with --debug), the parser every command
uses, and checks several commands share. Imports nothing heavy: commands load torch themselves."""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Callable, Iterable, Sequence

PROG = "osnet-edge"
# A missing import -> the extra that installs it (named in the one-line error).
EXTRA_OF_MODULE = {"torch": "export", "onnx": "export", "onnxscript": "export", "onnxslim": "export",
                   "onnxruntime": "onnxruntime", "openvino": "openvino", "nncf": "quantize",
                   "onnxconverter_common": "quantize", "matplotlib": "report", "tensorrt": "tensorrt",
                   "pycuda": "tensorrt", "psutil": "dev"}


class CliError(Exception):
    """An expected failure with a message for the user (no traceback)."""


class Parser(argparse.ArgumentParser):
    """ArgumentParser of one ``osnet-edge`` command: examples in the epilog, --debug, one-line errors.

    ``command`` names it (``prog`` becomes ``osnet-edge <command>``), so ``osnet-edge export --help``
    and ``python scripts/export.py --help`` print the same text."""

    def __init__(self, *args, command: str | None = None, **kwargs) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        if command is not None:
            kwargs.setdefault("prog", f"{PROG} {command}")
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true", help="show full tracebacks on errors")

    def error(self, message: str) -> None:  # type: ignore[override]
        """Bad flags: one line (argparse's default prints the whole usage block first)."""
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def check_model_sizes(widths: Iterable[float], resolutions: Iterable[float]) -> None:
    """--width / --res before anything else (no torch import, no other warning first): a bad
    value names the valid ones; a resolution giving an odd input size warns."""
    from osnet_edge.sizes import check_resolution, check_width

    try:
        for width in widths:
            check_width(width)
        for res in resolutions:
            check_resolution(res)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line (multi-line messages, e.g. key lists, are joined)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines) or type(exc).__name__


def _with_install_hint(exc: ImportError, message: str) -> str:
    """A missing optional package gets the pip extra that installs it, unless the message names one."""
    missing = (getattr(exc, "name", None) or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(missing)
    if extra is None or "pip install" in message:
        return message
    return f"{message}: this command needs {missing}: pip install 'osnet_edge[{extra}]'"


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
    except BrokenPipeError:  # the reader went away (osnet-edge info ... | head): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        sys.exit(1)
    except (CliError, ValueError, TypeError, FileNotFoundError, FileExistsError, ImportError,
            RuntimeError, OSError) as exc:
        if debug:
            raise
        message = _one_line(exc)
        if isinstance(exc, ImportError):
            message = _with_install_hint(exc, message)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:  # a bug, not a user error: still one line, the traceback on request
        if debug:
            raise
        print(f"error: internal error {type(exc).__name__}: {_one_line(exc)} (re-run with --debug for the "
              "traceback and please report it)", file=sys.stderr)
        sys.exit(1)
    sys.exit(code or 0)
