"""Command-line options shared by ``osnet-edge profile`` and ``osnet-edge report`` (argparse
only, no side effects) and the defaults they fall back to (the shared data's checkpoints and
calibration crops)."""
from __future__ import annotations

import os
import sys
from typing import Any, Sequence

import numpy as np

from ..runtimes import DEVICE_RUNTIMES
from .bundles import CalibrationProvider
from .grid import load_crop_folder
from .points import WeightsMap, checkpoint_width
from .timing import MODES, TimingBudget


def parse_weights_arg(text: str) -> tuple[float | None, str]:
    """'CKPT' or 'WIDTH=CKPT' -> (width or None, path)."""
    width, sep, path = text.partition("=")
    if not sep:
        return None, text
    try:
        return float(width), path
    except ValueError:
        raise ValueError(f"--weights {text!r}: expected CKPT or WIDTH=CKPT (e.g. 0.25=osnet_x0_25_msmt17.pth)") from None


def parse_weights_for_arg(text: str) -> tuple[float | None, float | None, str]:
    """'RES=CKPT', 'WIDTH@RES=CKPT' or just 'CKPT' (resolution then read from its adaptation
    record) -> (width or None, res or None, path)."""
    spec, sep, path = text.partition("=")
    if not sep:
        return None, None, text
    width, at, res = spec.rpartition("@")
    try:
        return (float(width) if at else None), float(res), path
    except ValueError:
        raise ValueError(f"--weights-for {text!r}: expected RES=CKPT, WIDTH@RES=CKPT or an adapted CKPT "
                         "(e.g. 0.5=adapted_r05.pth)") from None


def adapted_resolution(path: str | os.PathLike) -> tuple[float, float]:
    """(width, res) recorded in an adapted checkpoint's 'adaptation' entry (osnet_edge.adapt)."""
    from ..models.weights import read_checkpoint_meta

    record = read_checkpoint_meta(path).get("adaptation") or {}
    if "res" not in record:
        raise ValueError(f"{path} has no adaptation record saying its resolution: use --weights-for RES={path}")
    width = record.get("width")
    return (float(width) if width is not None else checkpoint_width(path)), float(record["res"])


def default_checkpoints() -> dict[float, str]:
    """The trained torchreid checkpoints in ../shared/data, when present: x0.25 trained on
    Market-1501 when its benchmark data is there (the paper's Table 6 setting), else x0.25 MSMT17;
    x0.5 MSMT17."""
    from ..data import protocol_available, shared_data_dir

    root = shared_data_dir()
    if root is None:
        return {}
    folder = root / "weights" / "torchreid"
    market = protocol_available("market1501", root) and (folder / "osnet_x0_25_market1501.pth").is_file()
    candidates = {0.25: folder / ("osnet_x0_25_market1501.pth" if market else "osnet_x0_25_msmt17.pth"),
                  0.5: folder / "osnet_x0_5_msmt17.pth"}
    return {w: str(p) for w, p in candidates.items() if p.is_file()}


def default_calibration_dir() -> str | None:
    """The agreed calibration crops in ../shared/data, when present: Market-1501's
    bounding_box_train (its identities are disjoint from the test set), else cuhk03/detected/train."""
    from ..data import shared_data_dir

    root = shared_data_dir()
    if root is None:
        return None
    for folder in (root / "market1501" / "bounding_box_train", root / "cuhk03" / "detected" / "train"):
        if folder.is_dir():
            return str(folder)
    return None


def weights_map_from_args(weights: Sequence[str] | None, weights_for: Sequence[str] | None) -> WeightsMap:
    """--weights / --weights-for values (widths read from the checkpoints when not given).

    ``weights=None`` means the default (the shared x0.25 checkpoint when present); the
    single value 'none' means random weights everywhere.
    """
    by_width: dict[float, str] = {}
    if weights is None:
        by_width = default_checkpoints()
    else:
        for text in weights:
            if text.lower() == "none":
                continue
            width, path = parse_weights_arg(text)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"--weights: checkpoint not found: {path}")
            by_width[width if width is not None else checkpoint_width(path)] = path
    by_width_res = {}
    for text in weights_for or []:
        width, res, path = parse_weights_for_arg(text)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--weights-for: checkpoint not found: {path}")
        if res is None:
            width, res = adapted_resolution(path)
        by_width_res[(width if width is not None else checkpoint_width(path), res)] = path
    return WeightsMap(by_width, by_width_res)


def add_grid_arguments(p: Any, budget_s: float = 0.75, widths: Sequence[float] = (1.0, 0.75, 0.5, 0.25),
                       resolutions: Sequence[float] = (1.0, 0.75, 0.5, 0.25),
                       runtimes: Sequence[str] | None = ("onnxruntime",),
                       precisions: Sequence[str] = ("fp32",)) -> None:
    """Grid, timing, weights and calibration options (argparse) shared by profile.py and report.py.

    ``runtimes=None``: default to every device runtime available on the machine."""
    def show(values):
        return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)

    p.add_argument("--width", type=float, nargs="+", default=list(widths),
                   help=f"width multipliers (default {show(widths)})")
    p.add_argument("--res", type=float, nargs="+", default=list(resolutions),
                   help=f"resolution multipliers on 256x128 (default {show(resolutions)})")
    p.add_argument("--variant", nargs="+", choices=["osnet", "ibn", "ain"], default=["osnet"],
                   help="architectures (default osnet)")
    p.add_argument("--runtime", nargs="+", default=list(runtimes) if runtimes else None,
                   choices=list(DEVICE_RUNTIMES),
                   help="runtimes to time (default " + (show(runtimes) if runtimes else "every one available here") + ")")
    p.add_argument("--precision", nargs="+", default=list(precisions), choices=["fp32", "fp16", "bf16", "int8"],
                   help=f"precisions (default {show(precisions)}); int8 needs calibration crops (--calib)")
    p.add_argument("--batch", type=int, nargs="+", default=[1], help="batch sizes (default 1)")
    p.add_argument("--mode", nargs="+", choices=list(MODES), default=list(MODES),
                   help="extractor: crops in, embeddings out (preprocessing included); runtime: the bare "
                        "inference call on a prepared batch (default both)")
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: physical cores)")
    p.add_argument("--device", default="cpu", help="runtime device: cpu (default), cuda (onnxruntime), GPU (openvino)")
    p.add_argument("--budget-s", type=float, default=budget_s, metavar="S",
                   help=f"timed seconds per row after warm-up (default {budget_s:g})")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls before timing (default 3)")
    p.add_argument("--max-iters", type=int, default=500, help="most timed calls per row (default 500)")
    p.add_argument("--min-iters", type=int, default=5, help="fewest timed calls per row (default 5)")
    p.add_argument("--work", default=os.path.join("runs", "profile"), metavar="DIR",
                   help="cache of exported bundles, reused by reruns (default runs/profile); a bundle "
                        "osnet-edge export wrote under bundles/ with the same name and network is used instead")
    p.add_argument("--weights", nargs="+", metavar="[WIDTH=]CKPT",
                   help="torchreid checkpoints; the width is read from the checkpoint unless given. Default: "
                        "../shared/data x0.25 MSMT17 for width 0.25 when present; other widths get random "
                        "weights (latency/counts/fidelity only). 'none': random weights everywhere")
    p.add_argument("--weights-for", nargs="+", metavar="[[WIDTH@]RES=]CKPT",
                   help="checkpoint for one resolution, e.g. a resolution-adapted one: 0.5=adapted_r05.pth (an "
                        "osnet_edge.adapt checkpoint alone: its recorded width/resolution). The report then shows "
                        "accuracy at that resolution before (per-width weights) and after adaptation")
    p.add_argument("--calib", metavar="DIR", default=None,
                   help="person crops to calibrate INT8 (default ../shared/data/cuhk03/detected/train when "
                        "present). Never your evaluation images")
    p.add_argument("--calib-size", type=int, default=300, metavar="N", help="calibration images (default 300)")
    p.add_argument("--crops", metavar="DIR", help="images to time with (default: synthetic person-like crops)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it is only drawn on a terminal)")


def budget_from_args(args: Any) -> TimingBudget:
    return TimingBudget(seconds=args.budget_s, warmup=args.warmup, min_iters=args.min_iters,
                        max_iters=args.max_iters)


def calibration_from_args(args: Any) -> CalibrationProvider:
    """--calib (default: the agreed calibration crops when present); says so when int8 cannot run."""
    folder = args.calib or default_calibration_dir()
    if "int8" in args.precision and folder is None:
        print("note: no --calib folder and ../shared/data/cuhk03/detected/train is absent: int8 rows are "
              "skipped (INT8 ranges must come from real person crops)", file=sys.stderr)
    return CalibrationProvider(folder, args.calib_size)


def crops_from_args(args: Any, default: Sequence[np.ndarray] | None = None,
                    default_source: str = "") -> tuple[list[np.ndarray], str]:
    """Timing inputs: --crops DIR, else ``default``, else 64 synthetic crops; and where they came from."""
    if args.crops:
        return load_crop_folder(args.crops, 64), args.crops
    if default:
        return list(default), default_source
    from ..samples import synthetic_crops

    return synthetic_crops(64, seed=0), "synthetic person-like crops (osnet_edge.samples)"
