#!/usr/bin/env python3
"""INT8 vs FP32 on real data: cosine fidelity and rank-1 / mAP.

Thin wrapper of ``osnet-edge int8-fidelity`` (osnet_edge/cli/int8_fidelity.py): same flags, output and exit codes."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import run  # noqa: E402  (the checkout on sys.path, scripts/ off it)
from osnet_edge.cli.int8_fidelity import build_parser, main, targets_for  # noqa: E402,F401

if __name__ == "__main__":
    run(main)
