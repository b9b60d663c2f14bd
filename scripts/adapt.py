#!/usr/bin/env python3
"""Adapt an OSNet checkpoint to a smaller input resolution on your own person crops.

Thin wrapper of ``osnet-edge adapt`` (osnet_edge/cli/adapt.py): same flags, output and exit codes."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import run  # noqa: E402  (the checkout on sys.path, scripts/ off it)
from osnet_edge.cli.adapt import build_parser, main  # noqa: E402,F401

if __name__ == "__main__":
    run(main)
