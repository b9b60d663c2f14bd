#!/usr/bin/env python3
"""Extractor vs torch reference for every target x width x res (x precision): cosine, max abs diff.

Uses real person crops (../shared/data cuhk03 val) and the real x0.25 checkpoint when present;
other widths use seeded random weights (no trained checkpoint ships here). Prints a Markdown table.
"""
from __future__ import annotations

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import Parser, run  # noqa: E402


def main(argv=None) -> int:
    p = Parser(description=__doc__)
    p.add_argument("--width", type=float, nargs="+", default=[1.0, 0.25])
    p.add_argument("--res", type=float, nargs="+", default=[1.0, 0.5])
    p.add_argument("--target", nargs="+", default=["onnxruntime", "openvino"])
    p.add_argument("--precision", nargs="+", default=["fp32", "fp16"])
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--data", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                  "..", "shared", "data"))
    args = p.parse_args(argv)

    import glob

    import torch

    from osnet_edge.export import TARGET_PRECISIONS, export_bundle
    from osnet_edge.extractor import Extractor
    from osnet_edge.models import build_osnet, load_torchreid_weights
    from osnet_edge.preprocess import read_image
    from osnet_edge.runtimes.torch import TorchRuntime
    from osnet_edge.samples import synthetic_crops
    from osnet_edge.verify import agreement

    paths = sorted(glob.glob(os.path.join(args.data, "cuhk03", "detected", "val", "*.jpg")))[: args.images]
    crops = [read_image(p) for p in paths] if paths else synthetic_crops(args.images, seed=11)
    ckpt = os.path.join(args.data, "weights", "torchreid", "osnet_x0_25_msmt17.pth")
    print(f"{len(crops)} {'real cuhk03-val' if paths else 'synthetic'} crops")
    print("| target | precision | width | res | weights | cosine min | cosine mean | max abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    work = tempfile.mkdtemp(prefix="osnet_fid_")
    for width in args.width:
        torch.manual_seed(0)
        model = build_osnet(width).eval()
        src = "random (seed 0)"
        if width == 0.25 and os.path.isfile(ckpt):
            load_torchreid_weights(model, ckpt)
            src = "osnet_x0_25_msmt17"
        for res in args.res:
            for target in args.target:
                for prec in args.precision:
                    if prec not in TARGET_PRECISIONS[target] or prec == "int8":
                        continue
                    b = export_bundle(os.path.join(work, f"{target}_{width}_{res}_{prec}"), res=res, target=target,
                                      precision=prec, model=model)
                    rt = "onnxruntime" if target == "tensorrt" else target
                    with Extractor(b.path, runtime=rt) as ext:
                        feats = ext(crops)
                        ref = TorchRuntime(model=model, fused_preprocess=False).infer(ext.model_input(crops))
                    a = agreement(feats, ref)
                    print(f"| {target} | {prec} | {width:g} | {res:g} | {src} | {a['cosine_min']:.7f} | "
                          f"{a['cosine_mean']:.7f} | {a['max_abs_diff']:.2e} |", flush=True)
    return 0


if __name__ == "__main__":
    run(main)
