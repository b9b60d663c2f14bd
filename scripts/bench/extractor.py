#!/usr/bin/env python3
"""Benchmark: Extractor overhead over the bare runtime, and runtimes vs torch eager.

Batch 1, one realistic crop (resized by the Extractor), same weights and thread count
everywhere. Measurements are interleaved in rounds so that machine noise hits every
contender alike; report ratios measured in this one run, with the CPU flags.
"""
from __future__ import annotations

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # scripts/, for _cli
from _cli import Parser, run  # noqa: E402


def main(argv=None) -> int:
    p = Parser(description=__doc__)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--res", type=float, default=0.5)
    p.add_argument("--weights", default=None, help="torchreid checkpoint (default: ../shared x0.25 msmt17 if present)")
    p.add_argument("--threads", type=int, default=None, help="threads for every contender (default: all cores)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=1.0, help="time per contender per round")
    p.add_argument("--work", default=None, help="where to export bundles (default: a temp dir)")
    p.add_argument("--fuse-preprocess", action="store_true",
                   help="bundles with colour swap and normalisation in the graph (the Extractor only resizes)")
    p.add_argument("--runtime", nargs="+", default=["onnxruntime", "openvino"], choices=["onnxruntime", "openvino"],
                   help="runtimes to compare (one per process gives the cleanest figures on few cores: an idle "
                        "runtime's worker threads still take CPU from the one being timed)")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from osnet_edge import runtimes
    from osnet_edge.export import export_bundle
    from osnet_edge.extractor import Extractor
    from osnet_edge.machine import machine_summary
    from osnet_edge.runtimes.torch import TorchRuntime
    from osnet_edge.samples import synthetic_crops
    from osnet_edge.verify import time_call

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    default_w = os.path.join(repo, "..", "shared", "data", "weights", "torchreid", "osnet_x0_25_msmt17.pth")
    weights = args.weights or (default_w if args.width == 0.25 and os.path.isfile(default_w) else None)
    threads = args.threads or os.cpu_count()
    torch.set_num_threads(threads)
    work = args.work or tempfile.mkdtemp(prefix="osnet_bench_")
    crop = synthetic_crops(1, seed=7, min_h=200, max_h=200)[0]  # 200x~80: a typical detector crop
    print(f"machine: {machine_summary()} | {threads} threads")

    contenders = {}
    extractors = {}
    for rt in [r for r in args.runtime if r in runtimes.available()]:
        b = export_bundle(os.path.join(work, rt), args.width, args.res, target=rt, weights=weights,
                          fuse_preprocess=args.fuse_preprocess)
        ext = Extractor(b.path, threads=threads)
        prepared = ext.model_input([crop])
        extractors[rt] = ext
        contenders[f"{rt} bare runtime"] = (lambda e=ext, x=prepared: e.infer_raw(x))
        contenders[f"{rt} Extractor"] = (lambda e=ext: e(crop))
    any_bundle = next(iter(extractors.values())).bundle
    tr = TorchRuntime(any_bundle, threads=threads) if weights else None
    if tr is None:
        from osnet_edge.models import build_osnet
        tr = TorchRuntime(model=build_osnet(args.width), fused_preprocess=False, threads=threads)
    from osnet_edge.preprocess import preprocess

    first = next(iter(extractors.values()))
    x = torch.from_numpy(preprocess([crop], first.input_size, first.interpolation))  # torch takes float NCHW
    model = tr.model

    def torch_eager():
        with torch.inference_mode():
            model(x)

    contenders["torch eager"] = torch_eager
    samples = {k: [] for k in contenders}
    for _ in range(args.rounds):
        for name, fn in contenders.items():
            samples[name].append(time_call(fn, warmup=3, min_time=args.seconds))
    med = {k: float(np.median(np.concatenate(v))) for k, v in samples.items()}
    h, w = next(iter(extractors.values())).input_size
    print(f"x{args.width} @ {h}x{w}, batch 1, weights: {weights or 'random'}")
    for k, v in med.items():
        print(f"  {k:28s} p50 {v:7.3f} ms")
    best = None
    for rt in extractors:
        overhead = med[f"{rt} Extractor"] / med[f"{rt} bare runtime"] - 1
        speedup = med["torch eager"] / med[f"{rt} Extractor"]
        print(f"  {rt}: Extractor overhead over bare runtime {overhead * 100:+.1f} %  |  Extractor vs torch eager "
              f"{speedup:.1f}x faster")
        best = max(best or (0, ""), (speedup, rt))
    print(f"best CPU runtime: {best[1]} ({best[0]:.1f}x torch eager)")
    return 0


if __name__ == "__main__":
    run(main)
