"""Progress bars only where a person watches them: on a terminal, never in logs or CI output.

tqdm redraws its bar with carriage returns; written to a file or a pipe that becomes one long
line of garbage per update. Every bar of the package goes through :func:`progress_bar`, which
draws only when asked (``progress=False`` / ``--no-progress`` still turn it off) and stderr
is a TTY. tqdm is optional (devices do not install it): without it the bar is silent.
"""
from __future__ import annotations

import sys
from typing import Any, Iterable, TextIO


def show_progress(requested: bool = True, stream: TextIO | None = None) -> bool:
    """True when a bar was requested and ``stream`` (default stderr) is a terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(requested) and callable(isatty) and bool(isatty())
    except ValueError:  # a closed stream
        return False


class _SilentBar:
    """Stand-in with the tqdm methods the package uses, for when tqdm is not installed."""

    disable = True

    def __init__(self, iterable: Iterable | None = None) -> None:
        self._iterable = iterable if iterable is not None else ()

    def __iter__(self):
        return iter(self._iterable)

    def __enter__(self) -> "_SilentBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int = 1) -> None: ...

    def set_postfix(self, *args: Any, **kwargs: Any) -> None: ...

    def set_postfix_str(self, *args: Any, **kwargs: Any) -> None: ...

    def set_description(self, *args: Any, **kwargs: Any) -> None: ...

    @staticmethod
    def write(message: str, file: TextIO | None = None, **kwargs: Any) -> None:
        print(message, file=file or sys.stderr)

    def close(self) -> None: ...


def progress_bar(iterable: Iterable | None = None, *, enabled: bool = True, **tqdm_options: Any) -> Any:
    """``tqdm(iterable, **tqdm_options)`` on stderr, disabled unless ``enabled`` and stderr is a TTY."""
    stream = tqdm_options.setdefault("file", sys.stderr)
    try:
        from tqdm import tqdm
    except ImportError:
        return _SilentBar(iterable)
    return tqdm(iterable, disable=not show_progress(enabled, stream), **tqdm_options)


__all__ = ["progress_bar", "show_progress"]
