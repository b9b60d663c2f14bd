#!/usr/bin/env python3
"""INT8 vs FP32 on real data: cosine fidelity and retrieval (rank-1 / mAP) per runtime x resolution x protocol.

Exports an FP32 reference bundle and one INT8 bundle per backend (calibrated on
cuhk03/detected/train only), embeds the evaluation protocols (cuhk03-val, cuhk01-test) with the
torch-free Extractor and reports, for each INT8 bundle: cosine INT8 vs FP32 (mean / 1st
percentile / min over all query+gallery images), rank-1 and mAP FP32-vs-FP32, INT8-vs-INT8 and
INT8 queries against an FP32 gallery (a camera's INT8 embeddings against a server's FP32 gallery).
The TensorRT bundle's QDQ ONNX runs under ONNX Runtime CPU (the arithmetic TensorRT runs).
"""
from __future__ import annotations

import json
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import CliError, Parser, run  # noqa: E402

TARGETS = {"cosine_mean": 0.995, "cosine_p1": 0.98, "max_drop_points": 0.5}


def build_parser() -> Parser:
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=None, help="torchreid checkpoint (default: shared x0.25 MSMT17)")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--res", type=float, nargs="+", default=[1.0, 0.5])
    p.add_argument("--backend", nargs="+", default=["onnxruntime", "openvino", "tensorrt"],
                   choices=["onnxruntime", "openvino", "tensorrt"])
    p.add_argument("--protocol", nargs="+", default=["cuhk03-val", "cuhk01-test"])
    p.add_argument("--calib-size", type=int, default=300)
    p.add_argument("--method", default=None, help="calibration method / NNCF preset (backend default)")
    p.add_argument("--no-distill", action="store_true", help="plain PTQ (no quantization-aware distillation)")
    p.add_argument("--distill-steps", type=int, default=None)
    p.add_argument("--min-cosine", type=float, default=None, help="mixed-precision target (off by default)")
    p.add_argument("--work", default="/tmp/osnet_edge_int8_fidelity", help="where bundles are written")
    p.add_argument("--json", default=None, help="write all rows here")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import numpy as np

    from osnet_edge.calibration import CalibrationSet
    from osnet_edge.data import EVAL_PROTOCOLS, assert_disjoint, shared_data_dir
    from osnet_edge.export import export_bundle
    from osnet_edge.extractor import Extractor
    from osnet_edge.metrics import rank_metrics
    from osnet_edge.models import input_size
    from osnet_edge.preprocess import read_image
    from osnet_edge.quantize import cpu_int8_flags, fidelity_report

    data = shared_data_dir()
    if data is None:
        raise CliError("shared data not found (../shared/data or $OSNET_EDGE_DATA)")
    weights = args.weights or str(data / "weights" / "torchreid" / "osnet_x0_25_msmt17.pth")
    calib_dir = data / "cuhk03" / "detected" / "train"
    protocols = {name: EVAL_PROTOCOLS[name](data) for name in args.protocol}
    crops = {}
    for name, (q, g) in protocols.items():
        crops[name] = [read_image(s.path) for s in q + g]
    rows = []
    print(f"CPU flags relevant to INT8: {', '.join(cpu_int8_flags())}")
    for res in args.res:
        hw = input_size(res)
        calib = CalibrationSet.from_folder(calib_dir, input_size=hw, max_images=args.calib_size)
        for name, (q, g) in protocols.items():
            assert_disjoint(calib.samples, q + g)
        out_fp32 = os.path.join(args.work, f"fp32_r{res}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_bundle(out_fp32, width=args.width, res=res, weights=weights, target="onnxruntime")
        ref = {}
        with Extractor(out_fp32) as ext:
            for name in protocols:
                ref[name] = ext(crops[name])
        for backend in args.backend:
            out = os.path.join(args.work, f"int8_{backend}_r{res}")
            opts = {"distill": not args.no_distill}
            if args.distill_steps is not None:
                opts["distill_steps"] = args.distill_steps
            if args.min_cosine is not None:
                opts["min_cosine"] = args.min_cosine
            t0 = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                bundle = export_bundle(out, width=args.width, res=res, weights=weights, target=backend,
                                       precision="int8", calibration=calib, calib_method=args.method, **opts)
            export_s = time.perf_counter() - t0
            for w in caught:
                if "SLOWER" in str(w.message):
                    print(f"  warning: {w.message}")
            qrep = bundle.manifest["quantization"]
            runtime = "onnxruntime" if backend == "tensorrt" else backend
            with Extractor(out, runtime=runtime) as ext:
                for name, (q, g) in protocols.items():
                    feats = ext(crops[name])
                    nq = len(q)
                    ids = dict(q_pids=np.array([s.pid for s in q]), g_pids=np.array([s.pid for s in g]),
                               q_camids=np.array([s.camid for s in q]), g_camids=np.array([s.camid for s in g]))
                    f32 = rank_metrics(ref[name][:nq], ref[name][nq:], **ids)
                    i8 = rank_metrics(feats[:nq], feats[nq:], **ids)
                    cross = rank_metrics(feats[:nq], ref[name][nq:], **ids)
                    fid = fidelity_report(feats, ref[name])
                    row = {"backend": backend, "res": res, "input": f"{hw[0]}x{hw[1]}", "protocol": name,
                           **{k: round(v, 5) for k, v in fid.items() if k != "num_images"},
                           "num_images": fid["num_images"],
                           "fp32_rank1": round(f32["rank1"], 2), "fp32_mAP": round(f32["mAP"], 2),
                           "int8_rank1": round(i8["rank1"], 2), "int8_mAP": round(i8["mAP"], 2),
                           "cross_rank1": round(cross["rank1"], 2), "cross_mAP": round(cross["mAP"], 2),
                           "method": bundle.manifest["calibration"]["method"],
                           "kept_fp32": len(qrep.get("kept_fp32") or []),
                           "holdout_cosine_mean": round(qrep["fidelity"]["cosine_mean"], 5),
                           "holdout_cosine_p1": round(qrep["fidelity"]["cosine_p1"], 5),
                           "latency": qrep.get("latency"), "export_s": round(export_s, 1)}
                    drops = [f32["rank1"] - i8["rank1"], f32["mAP"] - i8["mAP"],
                             f32["rank1"] - cross["rank1"], f32["mAP"] - cross["mAP"]]
                    row["meets_targets"] = bool(fid["cosine_mean"] >= TARGETS["cosine_mean"]
                                                and fid["cosine_p1"] >= TARGETS["cosine_p1"]
                                                and max(drops) <= TARGETS["max_drop_points"])
                    rows.append(row)
                    print(f"{backend:11s} r{res} {name:11s} cos {row['cosine_mean']:.4f} p1 {row['cosine_p1']:.4f} "
                          f"min {row['cosine_min']:.4f} | R1 fp32 {row['fp32_rank1']:.2f} int8 {row['int8_rank1']:.2f} "
                          f"x {row['cross_rank1']:.2f} | mAP fp32 {row['fp32_mAP']:.2f} int8 {row['int8_mAP']:.2f} "
                          f"x {row['cross_mAP']:.2f} | {'OK' if row['meets_targets'] else 'MISS'} "
                          f"({row['method']}, {row['kept_fp32']} fp32 layers, export {export_s:.0f}s)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu_flags": cpu_int8_flags(), "targets": TARGETS, "rows": rows}, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    run(main)
