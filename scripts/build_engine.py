#!/usr/bin/env python3
"""Pre-build a tensorrt bundle's engine on the device.

Thin wrapper of ``osnet-edge build-engine`` (osnet_edge/cli/build_engine.py): same flags, output and exit codes."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import run  # noqa: E402  (the checkout on sys.path, scripts/ off it)
from osnet_edge.cli.build_engine import build_parser, main  # noqa: E402,F401

if __name__ == "__main__":
    run(main)
