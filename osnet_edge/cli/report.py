"""``osnet-edge report``: the latency / accuracy trade-off report for this machine (report.md, report.csv,
PNG plots)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from osnet_edge.data import EVAL_PROTOCOLS  # light, torch-free

from .common import CliError, Parser

EXAMPLES = """\
examples:
  # the CPU report: 3 widths x 2 resolutions x ONNX Runtime / OpenVINO x FP32 / INT8, with accuracy
  # (trained x0.25, shared data), fidelity, compatibility matrix and the Open Model Zoo peers
  osnet-edge report --width 1.0 0.5 0.25 --res 1.0 0.5 --runtime onnxruntime openvino \\
      --precision fp32 int8 --out reports/cpu
  # what fits 5 ms per crop? (re-renders from the measured rows, nothing is re-measured)
  osnet-edge report --from reports/cpu/report.json --budget-ms 5 --out reports/cpu
  # show an adapted half-resolution checkpoint next to the 256x128-trained one
  osnet-edge report --width 0.25 --res 1.0 0.5 --weights-for 0.5=runs/adapt/x025_r05.pth --out reports/adapt
"""


def build_parser() -> Parser:
    from osnet_edge.profiler import add_grid_arguments

    p = Parser(command="report", description="Measure a grid of OSNet configurations (width x resolution x runtime x precision) on "
               "this machine and write a trade-off report: the paper's Table 6 with latency and throughput, "
               "accuracy (rank-1/mAP) where labelled data and trained weights exist, fidelity to FP32, a Pareto "
               "plot, an embedding compatibility matrix and foreign peers measured on the same images.",
               epilog=EXAMPLES)
    add_grid_arguments(p, budget_s=0.5, widths=(1.0, 0.5, 0.25), resolutions=(1.0, 0.5), runtimes=None,
                       precisions=("fp32", "int8"))
    p.add_argument("--out", required=True, metavar="DIR", help="report folder (report.md, report.csv, report.json, "
                   "PNGs, rows.json with the latency rows; a rerun resumes from them)")
    p.add_argument("--from", dest="from_json", metavar="JSON",
                   help="render from a report.json or a profile.py --json rows file instead of measuring")
    p.add_argument("--budget-ms", type=float, metavar="X", help="recommend the most accurate configuration whose "
                   "latency per call (batch = smallest measured, end to end) fits X ms")
    p.add_argument("--budget-stat", choices=["p50", "p90"], default="p90",
                   help="which latency must fit the budget (default p90: 9 calls in 10 meet it)")
    p.add_argument("--accuracy-tol", type=float, default=0.5, metavar="MAP",
                   help="--budget-ms: mAP points within which configurations count as equally accurate, the faster "
                        "then wins (default 0.5)")
    p.add_argument("--data", metavar="DIR", help="shared data root with market1501/, cuhk03/, cuhk01/ (default "
                   "../shared/data when present; without labelled data the report shows fidelity instead of accuracy)")
    p.add_argument("--protocol", nargs="+", choices=list(EVAL_PROTOCOLS),
                   help="evaluation protocols (default: those present under --data; market1501, the benchmark of "
                        "record, first, the CUHK sets as the cross-domain check). Embeddings are cached under --work")
    p.add_argument("--no-accuracy", action="store_true", help="skip accuracy (latency, counts, fidelity only)")
    peers = p.add_mutually_exclusive_group()
    peers.add_argument("--peers", dest="peers", action="store_true", default=None,
                       help="measure foreign peers (Open Model Zoo IRs, third-party ONNX) found under --data "
                            "(default on when the data folder is present)")
    peers.add_argument("--no-peers", dest="peers", action="store_false")
    p.add_argument("--fidelity-images", type=int, default=128, metavar="N",
                   help="images for the fidelity-to-FP32 check (default 128)")
    p.add_argument("--fresh", action="store_true", help="re-measure latency rows already in OUT/rows.json")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from osnet_edge.report import ReportData, write_report

    out = Path(args.out)
    if args.from_json:
        path = Path(args.from_json)
        if not path.is_file():
            raise FileNotFoundError(f"--from: {path} not found")
        data = ReportData.from_json(json.loads(path.read_text(encoding="utf-8")))
    else:
        data = measure(args, out, argv)
    if args.accuracy_tol < 0:
        raise ValueError(f"--accuracy-tol must be >= 0, got {args.accuracy_tol}")
    paths = write_report(data, out, args.budget_ms, args.budget_stat, args.accuracy_tol)
    print(f"hardware: {data.machine.get('cpu')}; {len(data.rows)} latency rows, {len(data.accuracy)} accuracy "
          f"results, {len(data.skipped)} configurations not measured")
    for kind, path in paths.items():
        print(f"wrote {path}")
    if args.budget_ms is not None:
        md = paths["md"].read_text(encoding="utf-8")
        rec = next((l for l in md.splitlines() if l.startswith("**Recommended") or l.startswith("**No osnet_edge")), None)
        if rec:
            print(rec.replace("**", ""))
    return 0


def measure(args: argparse.Namespace, out: Path, argv: Sequence[str]) -> Any:
    """Measure the grid, accuracy, fidelity, compatibility and peers (the report's data)."""
    from osnet_edge import runtimes
    from osnet_edge.data import shared_data_dir
    from osnet_edge.profiler import (RowStore, budget_from_args, calibration_from_args, crops_from_args,
                                     grid_points, weights_map_from_args)
    from osnet_edge.report import available_protocols, protocol_set, run_report

    data_root = Path(args.data) if args.data else shared_data_dir()
    if args.data and not data_root.is_dir():
        raise FileNotFoundError(f"--data folder not found: {data_root}")
    runtime_names = args.runtime or [r for r in runtimes.available() if r in runtimes.DEVICE_RUNTIMES]
    if not runtime_names:
        raise CliError("no runtime available here: pip install 'osnet_edge[onnxruntime]' or '[openvino]'")
    protocols = [] if args.no_accuracy else (args.protocol or available_protocols(data_root))
    if args.protocol:
        missing = [p for p in args.protocol if p not in available_protocols(data_root)]
        if missing:
            raise FileNotFoundError(f"protocol data not found under {data_root}: {', '.join(missing)}")
    real = None
    if protocols:
        q = protocol_set(protocols[0], data_root).query[:64]
        from osnet_edge.preprocess import read_image
        real = [img for img in (read_image(s.path) for s in q) if img is not None]
    crops, crop_source = crops_from_args(args, real, f"{len(real or [])} {protocols[0]} query images" if protocols else "")
    points = grid_points(args.width, args.res, runtime_names, args.precision, args.variant)
    weights = weights_map_from_args(args.weights, args.weights_for)
    peers = args.peers if args.peers is not None else data_root is not None
    print(f"report: {len(points)} configurations x batch {args.batch}; accuracy on "
          f"{', '.join(protocols) or 'nothing (no labelled data)'}; peers {'on' if peers else 'off'}", file=sys.stderr)
    store = RowStore(out / "rows.json", None, resume=not args.fresh)
    return run_report(points, crops, args.work, weights=weights, calibration=calibration_from_args(args),
                      budget=budget_from_args(args), batches=args.batch, modes=args.mode, threads=args.threads,
                      device=args.device, data_root=data_root if (protocols or peers) else None,
                      protocols=protocols, peers=peers, store=store, progress=not args.no_progress,
                      fidelity_images=args.fidelity_images,
                      settings={"crops": crop_source, "command": " ".join(["osnet-edge report", *argv])})
