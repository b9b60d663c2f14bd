#!/usr/bin/env python3
"""Export OSNet as a deployable bundle for ONNX Runtime, OpenVINO or TensorRT.

Thin wrapper of ``osnet-edge export`` (osnet_edge/cli/export.py): same flags, output and exit codes."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import run  # noqa: E402  (the checkout on sys.path, scripts/ off it)
from osnet_edge.cli.export import build_parser, default_out, export, main  # noqa: E402,F401

if __name__ == "__main__":
    run(main)
