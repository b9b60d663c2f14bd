#!/usr/bin/env python3
"""Params, mult-adds and latency of OSNet per width x resolution x runtime x precision x batch.

Thin wrapper of ``osnet-edge profile`` (osnet_edge/cli/profile.py): same flags, output and exit codes."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import run  # noqa: E402  (the checkout on sys.path, scripts/ off it)
from osnet_edge.cli.profile import build_parser, main, print_table  # noqa: E402,F401

if __name__ == "__main__":
    run(main)
