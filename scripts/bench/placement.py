#!/usr/bin/env python3
"""Benchmark: INT8 latency per quantization placement vs FP32, per runtime, in one interleaved run.

Candidates (plain PTQ, random weights: latency does not depend on the weights): ONNX Runtime QDQ with the
``conv`` placement (default: spatial convolutions only) and ``all`` (every op ORT quantizes); OpenVINO
with those two placements converted to IR, and NNCF's ``performance`` and ``mixed`` presets. Prints each
one's speed-up over its runtime's FP32 at batch 1 and 8 and its PTQ cosine on held-out crops: the table
that says whether any INT8 placement pays on this CPU (docs/speed.md).
"""
from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # scripts/, for _cli
from _cli import Parser, calibration_dir, run  # noqa: E402

CANDIDATES = {"ort fp32": ("onnxruntime", "fp32", {}),
              "ort int8 conv": ("onnxruntime", "int8", {"placement": "conv"}),
              "ort int8 all": ("onnxruntime", "int8", {"placement": "all"}),
              "ov fp32": ("openvino", "fp32", {}),
              "ov int8 conv (QDQ)": ("openvino", "int8", {"placement": "conv"}),
              "ov int8 all (QDQ)": ("openvino", "int8", {"placement": "all"}),
              "ov int8 nncf performance": ("openvino", "int8", {"method": "performance"}),
              "ov int8 nncf mixed": ("openvino", "int8", {"method": "mixed"})}


def build_parser() -> Parser:
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--res", type=float, default=1.0)
    p.add_argument("--calib", default=None, help="calibration crops (default: shared market1501/bounding_box_train)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--budget-s", type=float, default=0.4, help="timed seconds per contender and round")
    p.add_argument("--work", default="/tmp/osnet_edge_bench_placement")
    p.add_argument("--json", default=None)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import numpy as np

    from osnet_edge.calibration import CalibrationSet
    from osnet_edge.export import export_bundle
    from osnet_edge.extractor import Extractor
    from osnet_edge.machine import machine_summary
    from osnet_edge.models import input_size
    from osnet_edge.samples import synthetic_crops
    from osnet_edge.verify import time_call

    calib_dir = calibration_dir(args.calib, "market1501/bounding_box_train")
    hw = input_size(args.res)
    calib = CalibrationSet.from_folder(calib_dir, input_size=hw, max_images=64)
    work = Path(args.work) / f"x{args.width:g}_r{args.res:g}"
    print(f"machine: {machine_summary()} | {args.threads} thread(s), x{args.width:g} @ {hw[0]}x{hw[1]}", flush=True)
    exts, cosine = {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, (target, precision, opts) in CANDIDATES.items():
            opts = dict(opts)
            method = opts.pop("method", None)
            kw = dict(calibration=calib, distill=False, measure_latency=False, calib_method=method,
                      fidelity_images=32, **opts) if precision == "int8" else {}
            bundle = export_bundle(work / name.replace(" ", "_").replace("(", "").replace(")", ""), width=args.width,
                                   res=args.res, target=target, precision=precision, **kw)
            cosine[name] = ((bundle.manifest.get("quantization") or {}).get("fidelity") or {}).get("cosine_mean")
            exts[name] = Extractor(bundle.path, threads=args.threads)
    p50: dict = {}
    for batch in (1, 8):
        crops = synthetic_crops(batch, seed=2)
        inputs = {k: e.model_input(crops) for k, e in exts.items()}
        times: dict = {k: [] for k in exts}
        for _ in range(args.rounds):
            for k, e in exts.items():
                t = time_call(lambda: e.infer_raw(inputs[k]), warmup=3, min_time=args.budget_s, max_iters=2000)
                times[k].append(float(np.median(t)))
        for k in exts:
            p50.setdefault(k, {})[batch] = float(np.median(times[k]))
    rows = []
    for k in exts:
        fp32 = p50["ort fp32" if k.startswith("ort") else "ov fp32"]
        row = {"candidate": k, "b1_ms": round(p50[k][1], 3), "b8_ms": round(p50[k][8], 3),
               "speedup_b1": round(fp32[1] / p50[k][1], 3), "speedup_b8": round(fp32[8] / p50[k][8], 3),
               "ptq_cosine": cosine[k]}
        rows.append(row)
        cos = "" if cosine[k] is None else f"  PTQ cosine {cosine[k]:.4f}"
        print(f"  {k:26s} b1 {row['b1_ms']:7.3f} ms (x{row['speedup_b1']:.2f})  b8 {row['b8_ms']:7.3f} ms "
              f"(x{row['speedup_b8']:.2f}){cos}")
    for e in exts.values():
        e.close()
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"machine": machine_summary(), "width": args.width, "res": args.res, "rows": rows}, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    run(main)
