#!/usr/bin/env python3
"""Latency / accuracy trade-off report for this machine.

Thin wrapper of ``osnet-edge report`` (osnet_edge/cli/report.py): same flags, output and exit codes."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import run  # noqa: E402  (the checkout on sys.path, scripts/ off it)
from osnet_edge.cli.report import build_parser, main, measure  # noqa: E402,F401

if __name__ == "__main__":
    run(main)
