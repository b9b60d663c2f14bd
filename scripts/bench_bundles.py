#!/usr/bin/env python3
"""Benchmark: batch-1 latency of existing bundles and foreign models, end to end, one process each.

Every contender (an osnet_edge bundle on its runtime, or a foreign .onnx / OpenVINO .xml) is timed
in its own subprocess (an idle runtime's worker threads would skew the others on a 2-core machine),
round after round, so that machine noise hits all of them alike: compare the ratios of one run, with
the CPU flags printed beside them. The crop is a real Market-1501 query image (64x128, resized by
the Extractor) when the shared data is present, else a synthetic one.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import CliError, Parser, run  # noqa: E402

EXAMPLES = """\
examples:
  python scripts/bench_bundles.py bundles/mkt_x025_r1_ort_fp32 bundles/mkt_x025_r1_ov_fp32 --threads 1
  python scripts/bench_bundles.py bundles/x025_int8 --foreign omz-0287-fp32 omz-0288-fp32 --json runs/latency.json
"""


def build_parser() -> Parser:
    p = Parser(description=__doc__.splitlines()[0], epilog=EXAMPLES)
    p.add_argument("bundles", nargs="*", metavar="BUNDLE", help="bundle directories (each on its own runtime)")
    p.add_argument("--foreign", nargs="*", default=[], metavar="MODEL",
                   help="foreign models: a known peer name (omz-0287-fp32, ...: see osnet_edge.foreign.known_peers) "
                        "or an .onnx / .xml path")
    p.add_argument("--runtime", default=None, help="run the bundles on this runtime instead of their own "
                   "(e.g. onnxruntime for a TensorRT bundle's QDQ ONNX)")
    p.add_argument("--threads", type=int, default=1, help="inference threads (default 1)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=2.0, help="timed seconds per contender per round")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--one", metavar="SPEC", help=argparse.SUPPRESS)  # internal: time one contender (child process)
    return p


def crop_for_timing():
    """A real Market-1501 query crop when the shared data is here (what cameras send: ~64x128)."""
    from osnet_edge.data import protocol_available, shared_data_dir
    from osnet_edge.preprocess import read_image
    from osnet_edge.samples import synthetic_crops

    root = shared_data_dir()
    if root is not None and protocol_available("market1501", root):
        folder = root / "market1501" / "query"
        return read_image(str(folder / sorted(os.listdir(folder))[0])), "Market-1501 query crop (64x128)"
    return synthetic_crops(1, seed=7, min_h=128, max_h=128)[0], "synthetic crop (128 px high)"


def time_one(spec: dict, threads: int, seconds: float) -> dict:
    """In the child: open the contender, warm it up, time batch-1 calls end to end."""
    import numpy as np

    from osnet_edge.verify import time_call

    crop, _ = crop_for_timing()
    if spec["kind"] == "bundle":
        from osnet_edge.extractor import Extractor
        model = Extractor(spec["path"], runtime=spec.get("runtime"), threads=threads)
        label = f"{os.path.basename(os.path.normpath(spec['path']))} ({model.runtime}/{model.precision})"
    else:
        from osnet_edge.foreign import ForeignModel
        model = ForeignModel(spec["path"], input_format=spec["input_format"], threads=threads)
        label = f"{spec['name']} ({model.runtime})"
    times = time_call(lambda: model([crop]), warmup=5, min_time=seconds)
    close = getattr(model, "close", None)
    if close:
        close()
    return {"label": label, "times_ms": [float(t) for t in np.asarray(times)]}


def contenders(args) -> list[dict]:
    from osnet_edge.data import shared_data_dir
    from osnet_edge.foreign import known_peers

    specs = []
    for b in args.bundles:
        if not os.path.isfile(os.path.join(b, "manifest.json")):
            raise CliError(f"{b}: not a bundle (no manifest.json)")
        specs.append({"kind": "bundle", "path": b, "runtime": args.runtime})
    peers = known_peers(shared_data_dir()) if shared_data_dir() is not None else {}
    for f in args.foreign:
        if f in peers:
            specs.append({"kind": "foreign", **peers[f]})
        elif os.path.isfile(f):
            fmt = "bgr255" if f.endswith(".xml") else "rgb_imagenet"
            specs.append({"kind": "foreign", "path": f, "input_format": fmt, "name": os.path.basename(f)})
        else:
            raise CliError(f"--foreign {f}: neither a known peer ({', '.join(peers) or 'none here'}) nor a file")
    if not specs:
        raise CliError("nothing to time: give bundle directories and/or --foreign models")
    return specs


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.one:
        print(json.dumps(time_one(json.loads(args.one), args.threads, args.seconds)))
        return 0
    import numpy as np

    from osnet_edge.machine import machine_summary

    specs = contenders(args)
    _, crop_desc = crop_for_timing()
    print(f"machine: {machine_summary()} | {args.threads} inference thread(s), batch 1, {crop_desc}", flush=True)
    samples: dict[int, list] = {i: [] for i in range(len(specs))}
    labels: dict[int, str] = {}
    for r in range(args.rounds):
        for i, spec in enumerate(specs):
            cmd = [sys.executable, os.path.abspath(__file__), "--one", json.dumps(spec), "--threads", str(args.threads),
                   "--seconds", str(args.seconds)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                raise CliError(f"timing {spec['path']} failed: {out.stderr.strip().splitlines()[-1:]}")
            res = json.loads(out.stdout.strip().splitlines()[-1])
            labels[i] = res["label"]
            samples[i].extend(res["times_ms"])
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    rows = []
    for i in range(len(specs)):
        t = np.asarray(samples[i])
        rows.append({"model": labels[i], "path": specs[i]["path"], "p50_ms": round(float(np.median(t)), 3),
                     "p90_ms": round(float(np.percentile(t, 90)), 3), "calls": int(len(t)),
                     "throughput_ips": round(1000.0 / float(np.median(t)), 1)})
        print(f"  {labels[i]:60s} p50 {rows[-1]['p50_ms']:8.3f} ms  p90 {rows[-1]['p90_ms']:8.3f} ms  "
              f"({rows[-1]['throughput_ips']:.0f} img/s at p50, {len(t)} calls)")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"machine": machine_summary(), "threads": args.threads, "crop": crop_desc, "rows": rows}, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    run(main)
