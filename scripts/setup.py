#!/usr/bin/env python3
"""Make the isolated venv of a vendor toolchain (rknn: rknn-toolkit2).

Thin wrapper of ``osnet-edge setup`` (osnet_edge/cli/setup.py): same flags, output and exit codes."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import run  # noqa: E402  (the checkout on sys.path, scripts/ off it)
from osnet_edge.cli.setup import build_parser, main  # noqa: E402,F401

if __name__ == "__main__":
    run(main)
