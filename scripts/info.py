#!/usr/bin/env python3
"""What a bundle is, and its files checked against their sha256.

Thin wrapper of ``osnet-edge info`` (osnet_edge/cli/info.py): same flags, output and exit codes."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import run  # noqa: E402  (the checkout on sys.path, scripts/ off it)
from osnet_edge.cli.info import build_parser, describe, main  # noqa: E402,F401

if __name__ == "__main__":
    run(main)
