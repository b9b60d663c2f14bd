#!/usr/bin/env python3
"""Time a bundle's variants on this machine and record the fastest meeting its fidelity target.

Thin wrapper of ``osnet-edge tune`` (osnet_edge/cli/tune.py): same flags, output and exit codes."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import run  # noqa: E402  (the checkout on sys.path, scripts/ off it)
from osnet_edge.cli.tune import build_parser, main  # noqa: E402,F401

if __name__ == "__main__":
    run(main)
