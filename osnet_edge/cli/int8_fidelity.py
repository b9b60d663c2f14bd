"""INT8 vs FP32 on real data: cosine fidelity and retrieval (rank-1 / mAP) per runtime x resolution x protocol.

``osnet-edge int8-fidelity`` exports an FP32 reference bundle and one INT8 bundle per backend, calibrated only on the
protocol's agreed calibration split (Market-1501: bounding_box_train; CUHK: cuhk03/detected/train +
CUHK01 ids 0486-0971), checked disjoint from every evaluation image. Embeds the evaluation protocols
(default: market1501 when present, all 3,368 queries against bounding_box_test) with the torch-free
Extractor and reports, for each INT8 bundle: cosine INT8 vs FP32 (mean / 1st percentile / min over
all query+gallery images), rank-1 and mAP FP32-vs-FP32, INT8-vs-INT8 and INT8 queries against an
FP32 gallery (a camera's INT8 embeddings against a server's FP32 gallery). The TensorRT bundle's QDQ
ONNX runs under ONNX Runtime CPU (the arithmetic TensorRT runs). Embeddings are cached per bundle
content, so reruns and ``osnet-edge evaluate`` / ``report`` on the same bundles reuse them.
"""
from __future__ import annotations

import json
import os
import time
import warnings
from typing import Sequence

from .common import CliError, Parser

EXAMPLES = """\
examples:
  # the trained x0.25 at 256x128 on Market-1501, all three backends
  osnet-edge int8-fidelity --weights ../shared/data/weights/torchreid/osnet_x0_25_market1501.pth
  # an adapted 128x64 checkpoint (osnet-edge adapt), the cross-domain CUHK check
  osnet-edge int8-fidelity --weights x025_r05.pth --res 0.5
  osnet-edge int8-fidelity --protocol cuhk03-val cuhk01-test --res 1.0 0.5
"""


def targets_for(protocol: str, width: float, res: float) -> dict:
    """The agreed fidelity targets. Market-1501 (the benchmark issue): rank-1 and mAP within 0.2 point
    of FP32 for x0.25 at 256x128, 0.3 at reduced resolution and wider models, cosine mean >= 0.998 and
    1st percentile >= 0.995. CUHK sets (469 / 970 queries: one query is 0.1-0.2 point): 0.5 point,
    cosine 0.995 / 0.98."""
    if protocol == "market1501":
        return {"cosine_mean": 0.998, "cosine_p1": 0.995,
                "max_drop_points": 0.2 if (res == 1.0 and width <= 0.25) else 0.3}
    return {"cosine_mean": 0.995, "cosine_p1": 0.98, "max_drop_points": 0.5}


def build_parser() -> Parser:
    from osnet_edge.data import EVAL_PROTOCOLS

    p = Parser(command="int8-fidelity", description=__doc__.splitlines()[0], epilog=EXAMPLES)
    p.add_argument("--weights", default=None, help="torchreid (or adapted) checkpoint (default: the shared x0.25 "
                   "trained on the first protocol's data: Market-1501, else MSMT17)")
    p.add_argument("--width", type=float, default=None, help="width multiplier (default: read from the checkpoint)")
    p.add_argument("--res", type=float, nargs="+", default=None,
                   help="resolution multipliers (default: the checkpoint's adaptation resolution, else 1.0)")
    p.add_argument("--backend", nargs="+", default=["onnxruntime", "openvino", "tensorrt", "litert"],
                   choices=["onnxruntime", "openvino", "tensorrt", "litert"])
    p.add_argument("--protocol", nargs="+", default=None, choices=list(EVAL_PROTOCOLS),
                   help="evaluation protocols (default: market1501 when present, else the CUHK ones); all must "
                        "share one calibration split")
    p.add_argument("--calib-size", type=int, default=300)
    p.add_argument("--method", default=None, help="calibration method / NNCF preset (backend default)")
    p.add_argument("--no-distill", action="store_true", help="plain PTQ (no quantization-aware distillation)")
    p.add_argument("--distill-steps", type=int, default=None)
    p.add_argument("--min-cosine", type=float, default=None, help="mixed-precision target (off by default)")
    p.add_argument("--int8-placement", choices=["conv", "all"], default=None,
                   help="Q/DQ placement (see osnet-edge export); for litert: all = full-integer (default), "
                        "conv = partial-integer (gate MLP, products, sums, fc in float32)")
    p.add_argument("--work", default="runs/int8_fidelity", help="where bundles are written (default %(default)s)")
    p.add_argument("--cache", default=None, help="embedding cache (default ~/.cache/osnet_edge/features)")
    p.add_argument("--json", default=None, help="write all rows here")
    p.add_argument("--threads", type=int, default=None, help="inference and torch threads (default: the runtimes')")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from osnet_edge.calibration import CalibrationSet
    from osnet_edge.data import TRAIN_SPLITS, default_protocols, shared_data_dir
    from osnet_edge.export import export_bundle
    from osnet_edge.extractor import Extractor
    from osnet_edge.models import input_size
    from osnet_edge.models.weights import read_checkpoint_meta
    from osnet_edge.profiler import checkpoint_width
    from osnet_edge.quantize import cpu_int8_flags
    from osnet_edge.report import FeatureCache, bundle_identity, evaluate_embedder, protocol_set

    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    data = shared_data_dir()
    if data is None:
        raise CliError("shared data not found (../shared/data or $OSNET_EDGE_DATA)")
    names = args.protocol or default_protocols(data)
    if not names:
        raise CliError(f"no evaluation protocol's images found under {data}")
    splits = {TRAIN_SPLITS[n] for n in names}
    if len(splits) > 1:
        raise CliError(f"protocols {names} calibrate on different splits: run market1501 and the CUHK ones apart")
    default_ckpt = "osnet_x0_25_market1501.pth" if names[0] == "market1501" else "osnet_x0_25_msmt17.pth"
    weights = args.weights or str(data / "weights" / "torchreid" / default_ckpt)
    width = args.width or checkpoint_width(weights)
    adapted_res = (read_checkpoint_meta(weights).get("adaptation") or {}).get("res")
    resolutions = args.res or [adapted_res or 1.0]
    progress = not args.no_progress
    cache = FeatureCache(args.cache) if args.cache else FeatureCache.default()
    evalsets = [protocol_set(n, data) for n in names]
    calib_pool = splits.pop()(data)  # checked disjoint from every evaluation image
    tag = os.path.splitext(os.path.basename(weights))[0]

    def embed(bundle_dir: str, runtime: str | None = None) -> dict:
        out = {}
        with Extractor(bundle_dir, runtime=runtime, threads=args.threads) as ext:
            for es in evalsets:
                _, qf, gf = evaluate_embedder(ext, es, 64, cache, bundle_identity(ext.bundle, ext.runtime),
                                              progress=progress)
                out[es.name] = (qf, gf)
        return out

    rows = []
    print(f"CPU flags relevant to INT8: {', '.join(cpu_int8_flags())}")
    print(f"weights {weights} (x{width:g}); calibration pool: {len(calib_pool)} crops of "
          f"{'market1501/bounding_box_train' if names[0] == 'market1501' else 'the CUHK adaptation set'}")
    for res in resolutions:
        hw = input_size(res)
        calib = CalibrationSet.from_samples(calib_pool, input_size=hw, max_images=args.calib_size,
                                            source=f"{names[0]} calibration split")
        out_fp32 = os.path.join(args.work, f"{tag}_r{res:g}_fp32")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_bundle(out_fp32, width=width, res=res, weights=weights, target="onnxruntime", overwrite=True)
        ref = embed(out_fp32)
        for backend in args.backend:
            suffix = f"_{args.int8_placement}" if args.int8_placement else ""
            bundle, export_s = _export_int8(args, backend,
                                            os.path.join(args.work, f"{tag}_r{res:g}_int8_{backend}{suffix}"),
                                            width, res, weights, calib)
            feats = embed(str(bundle.path), runtime="onnxruntime" if backend == "tensorrt" else backend)
            for es in evalsets:
                rows.append(compare(es, ref[es.name], feats[es.name], backend, width, res, hw, bundle,
                                    bundle.manifest["quantization"], export_s))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"cpu_flags": cpu_int8_flags(), "weights": weights, "rows": rows}, f, indent=1)
        print(f"wrote {args.json}")
    return 0


def _export_int8(args, backend: str, out: str, width: float, res: float, weights: str, calib) -> tuple:
    """One INT8 bundle as the command's flags ask; (bundle, export seconds). INT8-slower notices are printed."""
    from osnet_edge.export import export_bundle
    from osnet_edge.notices import Int8SlowerWarning

    opts = {"distill": not args.no_distill}
    if args.distill_steps is not None:
        opts["distill_steps"] = args.distill_steps
    if args.min_cosine is not None:
        opts["min_cosine"] = args.min_cosine
    if args.int8_placement is not None:
        opts["placement"] = args.int8_placement
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bundle = export_bundle(out, width=width, res=res, weights=weights, target=backend, precision="int8",
                               calibration=calib, calib_method=args.method, overwrite=True, **opts)
    for w in caught:
        if issubclass(w.category, Int8SlowerWarning):
            print(f"  warning: {w.message}")
    return bundle, time.perf_counter() - t0


def compare(es, ref, feats, backend, width, res, hw, bundle, qrep, export_s) -> dict:
    """One row: cosine INT8 vs FP32 and rank-1 / mAP FP32, INT8-vs-INT8 and INT8-query-vs-FP32-gallery."""
    import numpy as np

    from osnet_edge.metrics import rank_metrics
    from osnet_edge.quantize import fidelity_report

    (rq, rg), (iq, ig) = ref, feats
    ids = dict(q_pids=es.q_pids, g_pids=es.g_pids, q_camids=es.q_camids, g_camids=es.g_camids)
    f32, i8, cross = rank_metrics(rq, rg, **ids), rank_metrics(iq, ig, **ids), rank_metrics(iq, rg, **ids)
    fid = fidelity_report(np.concatenate([iq, ig]), np.concatenate([rq, rg]))
    target = targets_for(es.name, width, res)
    row = {"backend": backend, "width": width, "res": res, "input": f"{hw[0]}x{hw[1]}", "protocol": es.name,
           **{k: round(v, 5) for k, v in fid.items() if k != "num_images"}, "num_images": fid["num_images"],
           "fp32_rank1": round(f32["rank1"], 2), "fp32_mAP": round(f32["mAP"], 2),
           "int8_rank1": round(i8["rank1"], 2), "int8_mAP": round(i8["mAP"], 2),
           "cross_rank1": round(cross["rank1"], 2), "cross_mAP": round(cross["mAP"], 2),
           "method": bundle.manifest["calibration"]["method"],
           "kept_fp32": len(qrep.get("kept_fp32") or []),
           "placement": qrep.get("placement") or (qrep.get("distillation") or {}).get("placement"),
           "distill_steps": (qrep.get("distillation") or {}).get("steps"),
           "holdout_cosine_mean": round(qrep["fidelity"]["cosine_mean"], 5),
           "holdout_cosine_p1": round(qrep["fidelity"]["cosine_p1"], 5),
           "latency": qrep.get("latency"), "export_s": round(export_s, 1), "targets": target}
    drops = [f32["rank1"] - i8["rank1"], f32["mAP"] - i8["mAP"], f32["rank1"] - cross["rank1"], f32["mAP"] - cross["mAP"]]
    row["max_drop"] = round(max(drops), 2)
    row["meets_targets"] = bool(fid["cosine_mean"] >= target["cosine_mean"] and fid["cosine_p1"] >= target["cosine_p1"]
                                and max(drops) <= target["max_drop_points"])
    print(f"{backend:11s} r{res:g} {es.name:11s} cos {row['cosine_mean']:.4f} p1 {row['cosine_p1']:.4f} "
          f"min {row['cosine_min']:.4f} | R1 fp32 {row['fp32_rank1']:.2f} int8 {row['int8_rank1']:.2f} "
          f"x {row['cross_rank1']:.2f} | mAP fp32 {row['fp32_mAP']:.2f} int8 {row['int8_mAP']:.2f} "
          f"x {row['cross_mAP']:.2f} | {'OK' if row['meets_targets'] else 'MISS'} (max drop {row['max_drop']:.2f}, "
          f"target {target['max_drop_points']}; {row['method']}, {row['kept_fp32']} fp32 layers, export {export_s:.0f}s)",
          flush=True)
    return row
