"""``osnet-edge tune``: on the camera, time a bundle's variants (e.g. fp32 and int8) and record the fastest that
meets the bundle's fidelity target for this machine; the Extractor then loads it. Torch-free."""
from __future__ import annotations

import json
from typing import Sequence

from .common import CliError, Parser

EXAMPLES = """\
examples:
  # on the camera, once after copying the bundle (exported with --variants int8)
  osnet-edge tune /opt/models/reid
  # the app's own settings: the choice is keyed by runtime, its version and the thread count
  osnet-edge tune /opt/models/reid --threads 2 --batch 8
  # look only: time and print, record nothing
  osnet-edge tune /opt/models/reid --dry-run --json
"""


def build_parser() -> Parser:
    p = Parser(command="tune", description="Time every variant a bundle carries (its primary model and those under "
               "variants/, e.g. fp32 + int8) on THIS machine, in interleaved rounds, and keep the fastest whose "
               "held-out fidelity (recorded at export) meets the bundle's target. The choice is written to "
               "BUNDLE/tuning/<machine key>.json (or $OSNET_EDGE_TUNING_CACHE when the bundle is read-only), keyed "
               "by CPU model and flags, architecture, runtime, its version and threads: a bundle copied to another "
               "CPU is tuned again there. Extractor(bundle) then loads the recorded variant.", epilog=EXAMPLES)
    p.add_argument("bundle", metavar="BUNDLE", help="bundle directory (written by osnet-edge export)")
    p.add_argument("--runtime", default=None, help="runtime to tune for (default: the bundle's)")
    p.add_argument("--threads", type=int, default=None, help="inference threads, as the app will use them "
                   "(default: the runtime's choice)")
    p.add_argument("--batch", type=int, default=1, help="crops per call, as the app sends them (default 1)")
    p.add_argument("--budget", type=float, default=6.0, metavar="S", help="seconds of timing in all (default 6)")
    p.add_argument("--dry-run", action="store_true", help="time and print; record nothing")
    p.add_argument("--json", action="store_true", help="print the record as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch < 1 or args.budget <= 0 or (args.threads is not None and args.threads < 1):
        raise CliError("--batch and --threads must be >= 1 and --budget > 0")
    from osnet_edge.bundle import load_bundle
    from osnet_edge.extractor import Extractor
    from osnet_edge.tuning import tune

    bundle = load_bundle(args.bundle)
    if len(bundle.variant_names) == 1:
        print(f"{args.bundle} carries one variant ({bundle.variant_names[0]}): nothing to choose; export with "
              "--variants (e.g. --precision fp32 --variants int8) to let the camera choose")
        return 0
    record = tune(bundle, lambda b, name: Extractor(b, runtime=args.runtime, threads=args.threads, variant=name),
                  runtime=args.runtime, threads=args.threads, batch=args.batch, budget_s=args.budget,
                  write=not args.dry_run)
    if args.json:
        print(json.dumps(record, indent=1))
        return 0
    m = record["machine"]
    print(f"machine: {m['cpu']} ({m['arch']}), {m['runtime']} {m['runtime_version']}, threads {m['threads'] or 'auto'}")
    target = record["fidelity_target"]
    print(f"fidelity target: cosine mean >= {target['cosine_mean']}, p1 >= {target.get('cosine_p1')}")
    for r in record["candidates"]:
        fid = "reference" if r["cosine_mean"] is None else f"cosine {r['cosine_mean']:.4f} / p1 {r['cosine_p1']:.4f}"
        mark = "  <- chosen" if r["variant"] == record["chosen"] else ""
        ok = "" if r["meets_target"] else "  (below target)"
        print(f"  {r['variant']:5s} {r['ms']:8.3f} ms at batch {record['batch']}  {fid}{ok}{mark}")
    where = record.get("path") or "not recorded (--dry-run)"
    print(f"chosen: {record['chosen']} -> {where}")
    return 0
