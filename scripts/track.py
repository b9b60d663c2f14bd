#!/usr/bin/env python3
"""Track people through frames + MOT det.txt with a BoxMOT tracker and an osnet_edge bundle as its re-ID model.

Thin wrapper of ``osnet-edge track`` (osnet_edge/cli/track.py): same flags, output and exit codes."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import run  # noqa: E402  (the checkout on sys.path, scripts/ off it)
from osnet_edge.cli.track import build_parser, main  # noqa: E402,F401

if __name__ == "__main__":
    run(main)
