"""``osnet-edge setup rknn``: make the isolated venv in which rknn-toolkit2 converts and simulates rknn bundles."""
from __future__ import annotations

import os
from typing import Sequence

from .common import CliError, Parser

EXAMPLES = """\
examples:
  # the venv under ~/.cache/osnet_edge (x86-64 Linux, Python 3.6-3.12), with the minimal torch stand-in
  osnet-edge setup rknn
  # with the real CPU torch 2.4.0 where PyTorch's CPU index is reachable
  osnet-edge setup rknn --torch-index https://download.pytorch.org/whl/cpu --force
  # just check an existing venv
  osnet-edge setup rknn --check
"""
TOOLCHAINS = ("rknn",)


def build_parser() -> Parser:
    p = Parser(command="setup", description="Create (or check) the isolated environment of a vendor toolchain that "
               "cannot share ours. rknn: rknn-toolkit2 2.5.0 with its pins (numpy 1.26.4, onnx 1.18.0, protobuf "
               "4.25.4) for --target rknn and the rknn-sim runtime.", epilog=EXAMPLES)
    p.add_argument("toolchain", choices=TOOLCHAINS, help="which toolchain: rknn")
    p.add_argument("--venv", metavar="DIR", default=None,
                   help="where the venv goes (default $OSNET_EDGE_RKNN_VENV or ~/.cache/osnet_edge/rknn-toolkit2-"
                        "2.5.0-pyXY); set OSNET_EDGE_RKNN_VENV to the same DIR for export and rknn-sim")
    p.add_argument("--python", metavar="EXE", default=None,
                   help="the Python the venv is made from (3.6-3.12; default this one)")
    p.add_argument("--torch-index", metavar="URL", default=os.environ.get("OSNET_EDGE_RKNN_TORCH_INDEX"),
                   help="install the real torch 2.4.0 from this index (e.g. https://download.pytorch.org/whl/cpu) "
                        "instead of the minimal stand-in the toolkit's import needs (default: stand-in)")
    p.add_argument("--force", action="store_true", help="rebuild the venv even if it exists")
    p.add_argument("--check", action="store_true", help="only check the existing venv")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from osnet_edge.toolchains.rknn import RknnToolchainError, check_venv, create_venv

    try:
        if args.check:
            facts = check_venv(args.venv)
            print(f"rknn venv OK: {facts['venv']}: rknn-toolkit2 {facts['toolkit_version']}, torch "
                  f"{facts['torch_version']}{' (stand-in)' if facts['torch_standin'] else ''}, numpy {facts['numpy']}, "
                  f"onnx {facts['onnx']}, Python {facts['python']}")
            return 0
        create_venv(args.venv, python=args.python, torch_index=args.torch_index, force=args.force,
                    log=lambda m: print(m, flush=True))
    except RknnToolchainError as exc:
        raise CliError(str(exc)) from None
    return 0
