#!/usr/bin/env python3
"""INT8 vs FP32 latency per runtime, measured in one run on this machine (CPU flags recorded).

For each width x resolution: FP32 and INT8 bundles for ONNX Runtime, OpenVINO and LiteRT
(full-integer, XNNPACK), and the TensorRT-style QDQ ONNX (timed under ONNX Runtime CPU, as a
stand-in: TensorRT itself needs a GPU).
Runs are interleaved (fp32, int8, fp32, int8, ...) so that load from other processes hits both
alike; the ratio within one run is the figure to trust on a shared machine. Latency does not
depend on distillation (same graph), so INT8 bundles here are plain PTQ.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # scripts/, for _cli
from _cli import Parser, calibration_dir, run  # noqa: E402


def build_parser() -> Parser:
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    p.add_argument("--runtime", nargs="+", default=["onnxruntime", "openvino", "litert", "tensorrt"],
                   choices=["onnxruntime", "openvino", "litert", "tensorrt"])
    p.add_argument("--res", type=float, nargs="+", default=[1.0, 0.5])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--threads", type=int, default=None, help="runtime threads (default: runtime's choice)")
    p.add_argument("--calib", default=None, help="calibration crops (default: shared cuhk03/detected/train)")
    p.add_argument("--calib-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per pair")
    p.add_argument("--budget-s", type=float, default=0.5, help="seconds of timing per round and model")
    p.add_argument("--work", default="/tmp/osnet_edge_bench_int8")
    p.add_argument("--json", default=None)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import numpy as np

    from osnet_edge.calibration import CalibrationSet
    from osnet_edge.export import export_bundle
    from osnet_edge.extractor import Extractor
    from osnet_edge.models import input_size
    from osnet_edge.quantize import cpu_int8_flags
    from osnet_edge.samples import synthetic_crops
    from osnet_edge.verify import time_call

    calib_dir = calibration_dir(args.calib, "cuhk03/detected/train")
    flags = cpu_int8_flags()
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; INT8-relevant flags: "
          f"{', '.join(flags) or 'none'}")
    rows = []
    pairs = {"onnxruntime": ("onnxruntime", "onnxruntime"), "openvino": ("openvino", "openvino"),
             "litert": ("litert", "litert"), "tensorrt(QDQ on ORT CPU)": ("tensorrt", "onnxruntime")}
    pairs = {k: v for k, v in pairs.items() if v[0] in args.runtime}
    for width in args.width:
        for res in args.res:
            hw = input_size(res)
            calib = CalibrationSet.from_folder(calib_dir, input_size=hw, max_images=args.calib_size)
            for label, (target, runtime) in pairs.items():
                paths = {}
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    for prec in ("fp32", "int8"):
                        out = os.path.join(args.work, f"x{width}_r{res}_{target}_{prec}")
                        kw = dict(calibration=calib, distill=False, measure_latency=False) if prec == "int8" else {}
                        export_bundle(out, width=width, res=res, target="onnxruntime" if (
                            prec == "fp32" and target == "tensorrt") else target, precision=prec, **kw)
                        paths[prec] = out
                exts = {p: Extractor(paths[p], runtime=runtime, threads=args.threads) for p in paths}
                try:
                    for batch in args.batch:
                        crops = synthetic_crops(batch, seed=2)
                        inputs = {p: e.model_input(crops) for p, e in exts.items()}
                        times = {"fp32": [], "int8": []}
                        for _ in range(args.rounds):
                            for p in ("fp32", "int8"):
                                t = time_call(lambda: exts[p].infer_raw(inputs[p]), warmup=3,
                                              min_time=args.budget_s, max_iters=2000)
                                times[p].append(float(np.median(t)))
                        fp32, int8 = float(np.median(times["fp32"])), float(np.median(times["int8"]))
                        row = {"runtime": label, "width": width, "res": res, "input": f"{hw[0]}x{hw[1]}",
                               "batch": batch, "threads": args.threads, "fp32_ms": round(fp32, 3),
                               "int8_ms": round(int8, 3), "speedup": round(fp32 / int8, 3)}
                        rows.append(row)
                        print(f"x{width} {hw[0]}x{hw[1]} b{batch} {label:24s} fp32 {fp32:7.2f} ms  int8 {int8:7.2f} ms  "
                              f"int8 speed-up x{fp32 / int8:.2f}{'  (INT8 SLOWER)' if int8 > fp32 else ''}",
                              flush=True)
                finally:
                    for e in exts.values():
                        e.close()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu_flags": flags, "cpu_count": os.cpu_count(), "rows": rows}, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    run(main)
