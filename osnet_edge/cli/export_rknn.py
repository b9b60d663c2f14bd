"""The ``osnet-edge export --target rknn`` flags (Rockchip NPU), kept beside the export command that uses them."""
from __future__ import annotations

import argparse
from typing import Any

from .common import CliError

PLATFORMS = ("rk3588", "rk3576", "rk3566", "rk3568", "rk3562", "rv1106", "rv1103")  # = quantize.rknn.PLATFORMS


def add_rknn_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("rknn (Rockchip NPU; conversion in the venv of 'osnet-edge setup rknn')")
    g.add_argument("--rknn-platform", choices=PLATFORMS, default=None,
                   help="the SoC the .rknn is compiled for (required with --target rknn); fp16 on the rk* chips only")
    g.add_argument("--rknn-method", choices=("channel", "layer"), default="channel",
                   help="INT8 weight scales per output channel (default) or per layer")
    g.add_argument("--rknn-hybrid", type=int, default=0, metavar="N",
                   help="hybrid quantization: keep the N layers that lose most (the toolkit's accuracy analysis) "
                        "in float16 (default 0)")
    g.add_argument("--rknn-qad", choices=("auto", "on", "off"), default="auto",
                   help="quantization-aware distillation before the toolkit's INT8 (auto: with trained weights)")


def check_rknn_flags(args: argparse.Namespace) -> None:
    """--target rknn flag combinations and the toolkit venv, before any work."""
    given = args.rknn_platform or args.rknn_hybrid or args.rknn_method != "channel" or args.rknn_qad != "auto"
    if args.target != "rknn":
        if given:
            raise CliError("--rknn-* flags apply to --target rknn only")
        return
    if not args.rknn_platform:
        raise CliError(f"--target rknn needs --rknn-platform ({' | '.join(PLATFORMS)})")
    if args.rknn_platform.startswith("rv") and args.precision != "int8":
        raise CliError(f"{args.rknn_platform} runs INT8 only with rknn-toolkit2: use --precision int8")
    if args.rknn_hybrid < 0:
        raise CliError("--rknn-hybrid must be >= 0")
    if not args.calib:
        raise CliError("--target rknn needs --calib DIR (person crops): INT8 calibrates on them and the simulator's "
                       "fidelity, fp16 too, is measured on held-out crops from the same folder")
    from osnet_edge.toolchains.rknn import RknnToolchainError, check_venv

    try:
        check_venv()
    except RknnToolchainError as exc:
        raise CliError(str(exc)) from None


def rknn_options(args: argparse.Namespace) -> dict[str, Any]:
    """export_bundle keyword options of the rknn target."""
    if args.target != "rknn":
        return {}
    return {"rknn_platform": args.rknn_platform, "rknn_method": args.rknn_method, "rknn_hybrid": args.rknn_hybrid,
            "distill": {"auto": "auto", "on": True, "off": False}[args.rknn_qad]}
