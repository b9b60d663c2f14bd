"""The ``osnet-edge`` command: one module per subcommand, each with ``build_parser()`` and ``main(argv)``.

``scripts/<name>.py`` in a checkout are thin wrappers of the same modules. Only the chosen command's
module is imported, and each imports torch (or a runtime) only when it needs it, so ``osnet-edge
--help``, ``osnet-edge info`` and ``osnet-edge build-engine`` work on a camera without torch; a
command that needs a missing package fails with one line naming the extra to install.
"""
from __future__ import annotations

import difflib
import importlib
import sys
import textwrap
from typing import NamedTuple, Sequence

from .common import PROG, run


class Command(NamedTuple):
    module: str
    summary: str
    needs_torch: bool


# In pipeline order: host side (torch) first, then the device, then measurement.
COMMANDS: dict[str, Command] = {
    "adapt": Command("adapt", "adapt a torchreid checkpoint to a smaller input resolution on your person crops", True),
    "export": Command("export", "export OSNet (torchreid weights) to a verified bundle for one runtime", True),
    "info": Command("info", "what a bundle is (model, weights, precision, runtime, fidelity) and its files checked",
                    False),
    "build-engine": Command("build_engine", "build and cache a TensorRT bundle's engine on this GPU", False),
    "evaluate": Command("evaluate", "rank-1/5/10 and mAP of a bundle, a checkpoint or a foreign model", False),
    "profile": Command("profile", "params, mult-adds and latency per width x resolution x runtime x precision x "
                                  "batch, or latency of given bundles", False),
    "report": Command("report", "latency / accuracy trade-off report for this machine (Markdown, CSV, plots)", False),
    "setup": Command("setup", "make the isolated venv of a vendor toolchain (rknn: rknn-toolkit2 for --target rknn)",
                     False),
    "tune": Command("tune", "on the camera: time a bundle's variants (fp32 / int8) and keep the fastest meeting its "
                            "fidelity target here", False),
    "int8-fidelity": Command("int8_fidelity", "INT8 vs FP32 cosine and rank-1 / mAP per runtime, resolution and "
                                              "protocol", True),
    "track": Command("track", "track people through frames + MOT det.txt with a BoxMOT tracker using a bundle as its "
                              "re-ID model (BoxMOT needs torch: osnet_edge[trackers])", True),
}


# How the help names a device runtime; one not listed here shows its registry name (never left out).
RUNTIME_TITLES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "tensorrt": "TensorRT", "litert": "LiteRT",
                  "rknn": "RKNN"}


def _device_runtimes() -> tuple[list[str], list[str]]:
    """(titles, pip extras) of the device runtimes, read from the runtime registry (osnet_edge.runtimes), so
    the help lists every runtime there is; extras are those the installed metadata declares, when it is readable."""
    from importlib import metadata

    from osnet_edge.runtimes import DEVICE_RUNTIMES

    try:
        declared = set(metadata.metadata("osnet_edge").get_all("Provides-Extra") or [])
    except metadata.PackageNotFoundError:  # a checkout on sys.path, not installed
        declared = set()
    extras = [name for name in DEVICE_RUNTIMES if not declared or name in declared]
    return [RUNTIME_TITLES.get(name, name) for name in DEVICE_RUNTIMES], extras


def help_text() -> str:
    from osnet_edge import __version__

    titles, extras = _device_runtimes()
    width = max(map(len, COMMANDS)) + 2
    lines = [f"usage: {PROG} [--version] [-h] COMMAND [--debug] [ARGS ...]", "",
             textwrap.fill(f"osnet_edge {__version__}: OSNet person re-identification on cameras. torchreid "
                           "checkpoints -> verified bundles -> the torch-free Extractor on "
                           f"{', '.join(titles[:-1])} or {titles[-1]}.", 100), "",
             "commands:"]
    lines += [f"  {name:<{width}}{cmd.summary}{' *' if cmd.needs_torch else ''}" for name, cmd in COMMANDS.items()]
    lines += ["", textwrap.fill(
        f"{PROG} COMMAND --help explains a command's flags, with examples; --debug shows the traceback of an error. "
        "Commands marked * run on the host and need torch (pip install 'osnet_edge[export]'); the others run on a "
        f"camera with only its runtime's extra ({' / '.join(f'osnet_edge[{e}]' for e in extras)}), except where a "
        "flag needs torch (evaluate --weights, profile --no-latency, profile and report when they export bundles; "
        "profile BUNDLE ... times existing bundles without torch).", 100)]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``osnet-edge COMMAND ARGS``: run one command (exits with its code)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = args[:1] == ["--debug"]  # also accepted before the command
    if debug:
        args = args[1:]
    if not args or args[0] in ("-h", "--help"):
        print(help_text())
        return 0
    if args[0] == "--version":
        from osnet_edge import __version__

        print(f"{PROG} {__version__}")
        return 0
    name, rest = args[0], args[1:] + (["--debug"] if debug else [])
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; choose from {', '.join(COMMANDS)}"
        print(f"error: unknown command {name!r}{hint} (see {PROG} --help)", file=sys.stderr)
        return 2
    module_name = f"{__name__}.{COMMANDS[name].module}"
    # imported inside run(): even a failing import ends in one 'error: ...' line
    run(lambda command_argv: importlib.import_module(module_name).main(command_argv), rest)
    return 0  # not reached: run() exits with the command's code


__all__ = ["COMMANDS", "main", "help_text"]
