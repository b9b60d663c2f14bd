#!/usr/bin/env python3
"""Params, mult-adds (and latency) of OSNet per width x resolution multiplier x variant."""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import CliError, Parser, run  # noqa: E402

EXAMPLES = """\
examples:
  # the paper's Table 6 (counts only, no runtime needed)
  python scripts/profile.py --width 1.0 0.75 0.5 0.25 --res 1.0 0.75 0.5 0.25 --no-latency --json table6.json
"""


def build_parser() -> Parser:
    p = Parser(description="Profile OSNet configurations: exact params and mult-adds (the paper's counting: "
               "conv + linear multiply-accumulates of one image, classifier excluded).", epilog=EXAMPLES)
    p.add_argument("--width", type=float, nargs="+", default=[1.0, 0.75, 0.5, 0.25], help="width multipliers")
    p.add_argument("--res", type=float, nargs="+", default=[1.0, 0.75, 0.5, 0.25],
                   help="resolution multipliers on 256x128")
    p.add_argument("--variant", nargs="+", choices=["osnet", "ibn", "ain"], default=["osnet"])
    p.add_argument("--no-latency", action="store_true", help="counts only (needs no runtime)")
    p.add_argument("--json", metavar="PATH", help="write the rows as a JSON list")
    p.add_argument("--csv", metavar="PATH", help="write the rows as CSV")
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


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from osnet_edge.profiler import count_grid
    except ImportError as exc:
        raise CliError(f"counting needs torch ({exc}): pip install -c constraints.txt 'osnet_edge[export]'") from None
    rows = count_grid(args.width, args.res, args.variant)
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


if __name__ == "__main__":
    run(main)
