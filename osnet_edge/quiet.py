"""One way to silence third-party converters (torch.onnx, onnxslim, litert-torch, ai-edge-quantizer, ORT's
quantizer, NNCF): they print progress bars, per-tensor histograms and log lines that would bury the
export's own steps. Standard library only, so the device side may use it too."""
from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import threading
import warnings
from typing import Iterator, Sequence

# fd 2 is the process's: two threads swapping it at once could leave it pointing at the other's file.
_FD2_LOCK = threading.RLock()


@contextlib.contextmanager
def native_stderr_silenced(keep: list[str] | None = None) -> Iterator[None]:
    """File descriptor 2 away from the terminal: C++ parts (absl, XLA, TFLite) write there past Python's
    sys.stderr. With ``keep``, what they wrote is appended to it on exit (to report it when the call failed).

    Process-wide while inside (another thread's stderr is swallowed too), so keep the block short; threads
    entering it wait for each other."""
    with _FD2_LOCK:
        try:
            saved = os.dup(2)
        except OSError:  # no usable fd 2 (embedded interpreter): nothing to silence
            yield
            return
        sink = tempfile.TemporaryFile() if keep is not None else open(os.devnull, "wb")
        try:
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if keep is not None:
                sink.seek(0)
                keep.append(sink.read().decode("utf-8", "replace"))
            sink.close()


@contextlib.contextmanager
def converter_output_silenced(loggers: Sequence[str] = (), stderr: bool = False,
                              native_stderr: bool = False) -> Iterator[None]:
    """Inside: Python warnings ignored, sys.stdout captured, the named loggers ("" = root) at ERROR;
    with ``stderr`` sys.stderr is captured too, with ``native_stderr`` fd 2 as well. Errors still raise."""
    named = [logging.getLogger(n or None) for n in loggers]
    levels = [lg.level for lg in named]
    for lg in named:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")
            stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
            if stderr:
                stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
            if native_stderr:
                stack.enter_context(native_stderr_silenced())
            yield
    finally:
        for lg, level in zip(named, levels):
            lg.setLevel(level)
