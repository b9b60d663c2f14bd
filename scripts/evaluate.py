#!/usr/bin/env python3
"""Rank-1/5/10 and mAP of a bundle, a torch checkpoint or a foreign model.

Thin wrapper of ``osnet-edge evaluate`` (osnet_edge/cli/evaluate.py): same flags, output and exit codes."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import run  # noqa: E402  (the checkout on sys.path, scripts/ off it)
from osnet_edge.cli.evaluate import build_parser, main  # noqa: E402,F401

if __name__ == "__main__":
    run(main)
