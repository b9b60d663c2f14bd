"""``osnet-edge profile``: params, mult-adds and latency of OSNet per width x resolution x variant x runtime x
precision x batch, or the latency of bundles that already exist (``osnet-edge profile BUNDLE ...``: device side
only, so a camera without torch times what the host exported)."""
from __future__ import annotations

import json
from typing import Sequence

from .common import CliError, Parser, check_model_sizes

EXAMPLES = """\
examples:
  # on a camera (no torch): time bundles the host exported, batch 1 and 8 (bundle paths come first)
  osnet-edge profile bundles/x0.25_r0.5_onnxruntime_fp32 bundles/x0.25_r0.5_litert_fp32 --batch 1 8
  # the paper's Table 6 (counts only, no runtime needed)
  osnet-edge profile --width 1.0 0.75 0.5 0.25 --res 1.0 0.75 0.5 0.25 --no-latency --json table6.json
  # latency of x0.25 at two resolutions on ONNX Runtime and OpenVINO, fp32 and int8, batch 1 and 8
  osnet-edge profile --width 0.25 --res 1.0 0.5 --runtime onnxruntime openvino \\
      --precision fp32 int8 --batch 1 8 --json runs/latency.json --csv runs/latency.csv
  # rerun the same command after an interruption: rows already in --json are skipped
"""


# Options that choose or build the grid's configurations: a given bundle already fixes them. Their defaults
# are applied after parsing, so that bundle paths can refuse them when they were given.
GRID_ONLY = ("width", "res", "variant", "precision", "weights", "weights_for", "calib", "work")


def build_parser() -> Parser:
    from osnet_edge.profiler import add_grid_arguments

    p = Parser(command="profile", description="Profile OSNet configurations: exact params and mult-adds (the paper's counting: "
               "conv + linear multiply-accumulates of one image, classifier excluded) and latency per runtime, "
               "precision and batch, measured end to end through the Extractor and on the bare runtime. "
               "Given BUNDLE paths, times those bundles as they are (no torch needed).",
               epilog=EXAMPLES)
    p.add_argument("bundles", nargs="*", metavar="BUNDLE",
                   help="bundle folders to time as they are, each on its own runtime (or --runtime); "
                        "--width/--res/--variant/--precision/--weights/--calib/--work do not apply to them")
    add_grid_arguments(p)
    p.grid_defaults = {dest: p.get_default(dest) for dest in GRID_ONLY + ("runtime",)}
    p.set_defaults(**{dest: None for dest in GRID_ONLY + ("runtime",)})
    p.add_argument("--no-latency", action="store_true", help="counts only (needs no runtime)")
    p.add_argument("--json", metavar="PATH", help="write the rows as a JSON list (latency: appended as they "
                   "finish; a rerun skips rows already there)")
    p.add_argument("--csv", metavar="PATH", help="write the rows as CSV")
    p.add_argument("--fresh", action="store_true", help="ignore rows already in --json/--csv (re-measure)")
    return p


def print_table(rows: list[dict]) -> None:
    cols = [("variant", "{}"), ("width", "{:g}"), ("res", "{:g}"), ("input", "{}"), ("params", "{}"),
            ("mult-adds", "{}")]
    lines = [[fmt.format(v) for (_, fmt), v in zip(cols, (
        r["variant"], r["width"], r["res"], f"{r['input_h']}x{r['input_w']}", f"{r['params'] / 1e6:.1f}M",
        f"{r['macs'] / 1e6:.1f}M"))] for r in rows]
    widths = [max(len(c[0]), *(len(l[i]) for l in lines)) for i, c in enumerate(cols)]
    print("  ".join(c[0].rjust(w) for c, w in zip(cols, widths)))
    for l in lines:
        print("  ".join(v.rjust(w) for v, w in zip(l, widths)))


def parse_args(argv: Sequence[str] | None) -> object:
    """The command's options; grid options get their defaults only when no BUNDLE path was given."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.bundles:
        given = [f"--{dest.replace('_', '-')}" for dest in GRID_ONLY if getattr(args, dest) is not None]
        if args.no_latency:
            given.append("--no-latency")
        if given:
            raise CliError(f"{', '.join(given)}: not with BUNDLE paths (a bundle fixes its model, precision and "
                           "weights; profile it as it is, or drop the paths to profile a grid)")
        if args.runtime is not None and len(args.runtime) != 1:
            raise CliError("--runtime with BUNDLE paths: give one runtime to run every bundle on (default: each "
                           "bundle's own)")
        return args
    for dest, default in parser.grid_defaults.items():
        if getattr(args, dest) is None:
            setattr(args, dest, default)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.bundles:
        return profile_given_bundles(args)
    check_model_sizes(args.width, args.res)
    if args.no_latency:
        from osnet_edge.profiler import count_grid

        try:  # counting walks the torch model
            rows = count_grid(args.width, args.res, args.variant)
        except ImportError as exc:
            raise CliError(f"counting needs torch ({exc}): pip install -c constraints.txt 'osnet_edge[export]'") from None
        print_table(rows)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=2)
            print(f"wrote {args.json}")
        if args.csv:
            import csv
            with open(args.csv, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
            print(f"wrote {args.csv}")
        return 0

    from osnet_edge.machine import machine_summary
    from osnet_edge.profiler import (RowStore, budget_from_args, calibration_from_args, crops_from_args, grid_points,
                                     profile_grid, weights_map_from_args)

    points = grid_points(args.width, args.res, args.runtime, args.precision, args.variant)
    crops, crop_source = crops_from_args(args)
    store = RowStore(args.json, args.csv, resume=not args.fresh)
    print(f"machine: {machine_summary()}")
    print(f"timing: {len(points)} configs x batch {args.batch} x mode {args.mode}, {args.budget_s:g} s per row "
          f"after {args.warmup} warm-up calls, inputs: {crop_source}")
    result = profile_grid(points, crops, args.work, batches=args.batch, modes=args.mode, threads=args.threads,
                          device=args.device, weights=weights_map_from_args(args.weights, args.weights_for),
                          calibration=calibration_from_args(args), budget=budget_from_args(args),
                          store=store, progress=not args.no_progress)
    return _finish(args, result)


def profile_given_bundles(args) -> int:
    """Latency of existing bundles on this machine: the device side only (Extractor + runtime, no torch)."""
    from osnet_edge.machine import machine_summary
    from osnet_edge.profiler import RowStore, budget_from_args, bundle_row_key, crops_from_args, profile_bundles

    crops, crop_source = crops_from_args(args)
    store = RowStore(args.json, args.csv, resume=not args.fresh, key_of=bundle_row_key)
    print(f"machine: {machine_summary()}")
    print(f"timing: {len(args.bundles)} bundle(s) x batch {args.batch} x mode {args.mode}, {args.budget_s:g} s per "
          f"row after {args.warmup} warm-up calls, inputs: {crop_source}")
    result = profile_bundles(args.bundles, crops, batches=args.batch, modes=args.mode, threads=args.threads,
                             device=args.device, runtime=args.runtime[0] if args.runtime else None,
                             budget=budget_from_args(args), store=store)
    return _finish(args, result)


def _finish(args, result) -> int:
    """Print the rows and what was skipped; fail when nothing could be measured."""
    from osnet_edge.profiler import format_latency_table

    if result.rows:
        print(format_latency_table(result.rows))
    for s in result.skipped:
        print(f"skipped {s['config']}: {s['reason']}")
    for path in (args.json, args.csv):
        if path:
            print(f"wrote {path}")
    if not result.rows:
        raise CliError("no configuration could be measured (see the skipped lines above)")
    return 0
