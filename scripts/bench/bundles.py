#!/usr/bin/env python3
"""Benchmark: latency of existing bundles and foreign models, end to end, one process each.

Every contender (an osnet_edge bundle on its runtime, or a foreign .onnx / OpenVINO .xml) is timed
in its own subprocess (an idle runtime's worker threads would skew the others on a 2-core machine),
round after round, so that machine noise hits all of them alike: compare the ratios of one run, with
the CPU flags printed beside them. The crop is a real Market-1501 query image (64x128, resized by
the Extractor) when the shared data is present, else a synthetic one.

Bundles are also timed as the bare runtime call on the prepared batch, so the Extractor's own
overhead (validation, resize, normalisation) shows as a percentage. ``BUNDLE@TREE`` runs that
bundle with the osnet_edge code of another checkout (e.g. a worktree of an older commit): the
"before" of a before/after comparison, timed in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # scripts/, for _cli
from _cli import CliError, Parser, run  # noqa: E402

EXAMPLES = """\
examples:
  python scripts/bench/bundles.py bundles/mkt_x025_r1_ort_fp32 bundles/mkt_x025_r1_ov_fp32 --threads 1
  python scripts/bench/bundles.py bundles/x025_int8 --foreign omz-0287-fp32 omz-0288-fp32 --json runs/latency.json
  # before/after: the first contender is the baseline every ratio refers to
  git worktree add ../base d2bec03
  python scripts/bench/bundles.py runs/base_ort@../base bundles/new_litert --batch 1 8 --threads 1
"""


def build_parser() -> Parser:
    p = Parser(description=__doc__.splitlines()[0], epilog=EXAMPLES)
    p.add_argument("bundles", nargs="*", metavar="BUNDLE", help="bundle directories (each on its own runtime); "
                   "BUNDLE@TREE runs it with the osnet_edge code of the checkout TREE. The first contender is the "
                   "baseline of the speed-up column")
    p.add_argument("--foreign", nargs="*", default=[], metavar="MODEL",
                   help="foreign models: a known peer name (omz-0287-fp32, ...: see osnet_edge.foreign.known_peers) "
                        "or an .onnx / .xml path")
    p.add_argument("--runtime", default=None, help="run the bundles on this runtime instead of their own "
                   "(e.g. onnxruntime for a TensorRT bundle's QDQ ONNX)")
    p.add_argument("--threads", type=int, default=1, help="inference threads (default 1)")
    p.add_argument("--batch", type=int, nargs="+", default=[1], help="batch sizes (default 1)")
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


def time_one(spec: dict, threads: int, seconds: float, batch: int) -> dict:
    """In the child: open the contender, warm it up, time calls of ``batch`` crops end to end (and,
    for bundles, the bare runtime call on the prepared batch)."""
    import numpy as np

    from osnet_edge.verify import time_call

    crop, _ = crop_for_timing()
    crops = [crop] * batch
    bare = None
    if spec["kind"] == "bundle":
        from osnet_edge.extractor import Extractor
        model = Extractor(spec["path"], runtime=spec.get("runtime"), threads=threads)
        label = f"{os.path.basename(os.path.normpath(spec['path']))} ({model.runtime}/{model.precision})"
        if spec.get("code"):
            label += f" [code {os.path.basename(os.path.normpath(spec['code']))}]"
        prepared = model.model_input(crops)
        bare = time_call(lambda: model.infer_raw(prepared), warmup=5, min_time=seconds / 2)
    else:
        from osnet_edge.foreign import ForeignModel
        model = ForeignModel(spec["path"], input_format=spec["input_format"], threads=threads)
        label = f"{spec['name']} ({model.runtime})"
    times = time_call(lambda: model(crops), warmup=5, min_time=seconds)
    close = getattr(model, "close", None)
    if close:
        close()
    return {"label": label, "times_ms": [float(t) for t in np.asarray(times)],
            "bare_ms": None if bare is None else [float(t) for t in np.asarray(bare)]}


def contenders(args) -> list[dict]:
    from osnet_edge.data import shared_data_dir
    from osnet_edge.foreign import known_peers

    specs = []
    for b in args.bundles:
        b, _, code = b.partition("@")
        if not os.path.isfile(os.path.join(b, "manifest.json")):
            raise CliError(f"{b}: not a bundle (no manifest.json)")
        if code and not os.path.isdir(os.path.join(code, "osnet_edge")):
            raise CliError(f"{b}@{code}: {code} is not an osnet_edge checkout (no osnet_edge/ inside)")
        specs.append({"kind": "bundle", "path": os.path.abspath(b), "runtime": args.runtime,
                      "code": os.path.abspath(code) if code else None})
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
        print(json.dumps(time_one(json.loads(args.one), args.threads, args.seconds, args.batch[0])))
        return 0
    import numpy as np

    from osnet_edge.machine import machine_summary

    specs = contenders(args)
    _, crop_desc = crop_for_timing()
    print(f"machine: {machine_summary()} | {args.threads} inference thread(s), batch {args.batch}, {crop_desc}",
          flush=True)
    keys = [(i, b) for b in args.batch for i in range(len(specs))]
    samples: dict = {k: [] for k in keys}
    bare: dict = {k: [] for k in keys}
    labels: dict[int, str] = {}
    for r in range(args.rounds):
        for i, b in keys:
            spec = specs[i]
            cmd = [sys.executable, os.path.abspath(__file__), "--one", json.dumps(spec), "--threads", str(args.threads),
                   "--seconds", str(args.seconds), "--batch", str(b)]
            env = dict(os.environ)
            if spec.get("code"):  # the other checkout's osnet_edge first on the path (its scripts are not used)
                env["PYTHONPATH"] = os.pathsep.join([spec["code"]] + [p for p in [env.get("PYTHONPATH")] if p])
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if out.returncode != 0:
                raise CliError(f"timing {spec['path']} failed: {out.stderr.strip().splitlines()[-1:]}")
            res = json.loads(out.stdout.strip().splitlines()[-1])
            labels[i] = res["label"]
            samples[(i, b)].extend(res["times_ms"])
            bare[(i, b)].extend(res["bare_ms"] or [])
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    rows = []
    for b in args.batch:
        base = float(np.median(samples[(0, b)]))
        print(f"batch {b}  (speed-up vs the first contender; extractor overhead = end to end vs bare runtime call)")
        for i in range(len(specs)):
            t = np.asarray(samples[(i, b)])
            p50 = float(np.median(t))
            bare_p50 = float(np.median(bare[(i, b)])) if bare[(i, b)] else None
            row = {"model": labels[i], "path": specs[i]["path"], "code": specs[i].get("code"), "batch": b,
                   "p50_ms": round(p50, 3), "p90_ms": round(float(np.percentile(t, 90)), 3), "calls": int(len(t)),
                   "throughput_ips": round(1000.0 * b / p50, 1), "speedup_vs_first": round(base / p50, 3),
                   "bare_p50_ms": None if bare_p50 is None else round(bare_p50, 3),
                   "extractor_overhead_pct": None if bare_p50 is None else round(100 * (p50 / bare_p50 - 1), 1)}
            rows.append(row)
            over = "" if bare_p50 is None else f"  bare {bare_p50:7.3f} ms (+{row['extractor_overhead_pct']:.1f} %)"
            print(f"  {labels[i]:64s} p50 {p50:8.3f} ms  x{row['speedup_vs_first']:5.2f}{over}  "
                  f"({row['throughput_ips']:.0f} img/s, {len(t)} calls)")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"machine": machine_summary(), "threads": args.threads, "crop": crop_desc, "rows": rows}, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    run(main)
