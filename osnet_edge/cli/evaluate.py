"""``osnet-edge evaluate``: rank-1/5/10 and mAP (Market-1501 protocol, cosine distance) of a bundle, a torch
checkpoint or a foreign model."""
from __future__ import annotations

import argparse
import json
from typing import Any, Sequence

from osnet_edge.data import EVAL_PROTOCOLS  # torch-free, light

from .common import CliError, Parser

EXAMPLES = """\
examples:
  # the benchmark of record (paper Table 6): Market-1501 as distributed, query vs bounding_box_test
  osnet-edge evaluate --bundle bundles/osnet_x0_25_r1_0_onnxruntime_fp32 --data ../shared/data/market1501
  osnet-edge evaluate --bundle bundles/x025 --protocol market1501     # the same, on the shared data
  # the torch reference of the same checkpoint, and the CUHK cross-domain protocols
  osnet-edge evaluate --weights osnet_x0_25_market1501.pth --res 1.0 --protocol market1501
  osnet-edge evaluate --bundle bundles/x025 --protocol cuhk03-val cuhk01-test
  # a foreign peer: Open Model Zoo IR (BGR 0-255 input) or a third-party ONNX (RGB ImageNet-normalised)
  osnet-edge evaluate --foreign person-reidentification-retail-0287.xml --input-format bgr255 --protocol cuhk03-val
"""


def build_parser() -> Parser:
    p = Parser(command="evaluate", description="Evaluate person re-ID embeddings with the Market-1501 protocol (torchreid's): gallery "
               "images of the query's identity from the query's own camera are ignored, queries without a "
               "match are skipped. Prints rank-1/5/10 and mAP in percent. Embeddings are cached per model "
               "content, preprocessing and image set, so a rerun (or report.py / int8_fidelity.py on the same "
               "bundle) skips the slow part.", epilog=EXAMPLES)
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--bundle", metavar="DIR", help="an osnet_edge bundle (runs on the torch-free Extractor)")
    model.add_argument("--weights", metavar="CKPT", help="a torchreid checkpoint, run in torch (the reference)")
    model.add_argument("--foreign", metavar="PATH", help="a foreign embedding model: .onnx (ONNX Runtime) or "
                       ".xml (OpenVINO IR)")
    p.add_argument("--runtime", help="--bundle: runtime to use (default: the bundle's)")
    p.add_argument("--device", default="cpu", help="--bundle: runtime device (default cpu)")
    p.add_argument("--width", type=float, help="--weights: width multiplier (default: read from the checkpoint)")
    p.add_argument("--res", type=float, default=1.0, help="--weights: resolution multiplier (default 1.0 = 256x128)")
    p.add_argument("--variant", choices=["osnet", "ibn", "ain"], default="osnet", help="--weights: architecture")
    p.add_argument("--interpolation", choices=["linear", "pil", "area"], default=None,
                   help="--weights: resize used before the torch model (default: the Extractor's, linear); "
                        "bundles use the one recorded in their manifest (export --interpolation)")
    p.add_argument("--allow-unsafe-pickle", action="store_true",
                   help="--weights: full unpickling of legacy checkpoints (can execute code: trusted files only)")
    p.add_argument("--input-format", choices=["bgr255", "rgb_imagenet"], default=None,
                   help="--foreign: what the model expects: bgr255 (Open Model Zoo: mean/scale inside) or "
                        "rgb_imagenet (torchreid-style exports). Default: bgr255 for .xml, rgb_imagenet for .onnx")
    p.add_argument("--metric", choices=["cosine", "euclidean"], default="cosine",
                   help="--weights: cosine (default, what the Extractor's normalised embeddings give) or squared "
                        "euclidean on the raw features (torchreid's default metric, used by the paper's Table 6)")
    data = p.add_argument_group("data (one of)")
    data.add_argument("--data", metavar="DIR", help="a Market-1501-layout folder with query/ and bounding_box_test/ "
                      "(e.g. ../shared/data/market1501); with --protocol: the shared data root (default ../shared/data)")
    data.add_argument("--protocol", nargs="+", choices=list(EVAL_PROTOCOLS),
                      help="the agreed evaluation protocols on the shared data (default, with no data option: "
                           "market1501 when present, else the CUHK protocols)")
    data.add_argument("--query", metavar="DIR", help="query folder (Market-1501, CUHK03 or CUHK01 file names)")
    data.add_argument("--gallery", metavar="DIR", help="gallery folder (with --query)")
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: the runtime's)")
    p.add_argument("--batch-size", type=int, default=64, help="crops per inference call (default 64)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--cache", metavar="DIR", default=None,
                   help="embedding cache folder (default $OSNET_EDGE_CACHE/features or ~/.cache/osnet_edge/features)")
    p.add_argument("--no-cache", action="store_true", help="always embed afresh, write no cache")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def eval_sets(args: argparse.Namespace) -> list:
    from osnet_edge.data import default_protocols, shared_data_dir
    from osnet_edge.report import folder_set, market1501_set, protocol_set

    if args.protocol:
        root = args.data or shared_data_dir()
        if root is None:
            raise FileNotFoundError("--protocol needs the shared data: pass --data ROOT or set OSNET_EDGE_DATA")
        return [protocol_set(name, root) for name in args.protocol]
    if args.query or args.gallery:
        if not (args.query and args.gallery):
            raise CliError("--query and --gallery go together")
        return [folder_set(args.query, args.gallery)]
    if args.data:
        return [market1501_set(args.data)]
    root = shared_data_dir()
    names = default_protocols(root) if root is not None else []
    if not names:
        raise CliError("no evaluation data: pass --data DIR (Market-1501 layout), --protocol NAME or --query/--gallery")
    return [protocol_set(name, root) for name in names]


def identity_of(args: argparse.Namespace, model: Any) -> str:
    """Cache key of what embeds: the bundle's files on its runtime, or the checkpoint / foreign
    file with everything that changes its embeddings."""
    from osnet_edge.report import bundle_identity, file_identity, foreign_identity

    if args.bundle:
        return bundle_identity(model.bundle, model.runtime)
    if args.weights:
        raw = "|raw" if args.metric == "euclidean" else ""
        return file_identity(args.weights,
                             f"torch|{model.width}|{model.input_size}|{args.variant}|{model.interpolation}{raw}")
    return foreign_identity(model)


def open_model(args: argparse.Namespace) -> tuple[Any, str]:
    """The embedder and a line describing it."""
    if args.bundle:
        from osnet_edge.extractor import Extractor

        ext = Extractor(args.bundle, runtime=args.runtime, device=args.device, threads=args.threads,
                        batch_size=args.batch_size)
        return ext, repr(ext)
    if args.weights:
        try:
            from osnet_edge.report import TorchReference
            ref = TorchReference(args.weights, args.width, args.res, args.variant, args.threads,
                                 interpolation=args.interpolation, allow_unsafe_pickle=args.allow_unsafe_pickle)
        except ModuleNotFoundError as exc:
            raise CliError(f"--weights needs torch ({exc}): pip install 'osnet_edge[export]'") from None
        return ref, ref.name
    from osnet_edge.foreign import ForeignModel

    fmt = args.input_format or ("bgr255" if args.foreign.endswith(".xml") else "rgb_imagenet")
    model = ForeignModel(args.foreign, input_format=fmt, threads=args.threads)
    return model, f"{model.name} ({model.runtime}, {fmt}, {model.input_size[0]}x{model.input_size[1]} -> {model.dim}-d)"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.metric != "cosine" and not args.weights:
        raise CliError("--metric euclidean needs --weights: bundles and foreign models give L2-normalised embeddings, "
                       "on which euclidean ranks exactly as cosine")
    if args.interpolation and not args.weights:
        raise CliError("--interpolation applies to --weights; a bundle resizes as its manifest says "
                       "(export it with --interpolation)")
    from osnet_edge.report import FeatureCache, evaluate_embedder

    sets = eval_sets(args)
    model, description = open_model(args)
    print(f"model: {description}")
    cache = None if args.no_cache else (FeatureCache(args.cache) if args.cache else FeatureCache.default())
    identity = identity_of(args, model) if cache is not None else None
    results = []
    try:
        for es in sets:
            embedder = model.raw if args.metric == "euclidean" else model
            metrics, _, _ = evaluate_embedder(embedder, es, args.batch_size, cache=cache, identity=identity,
                                              progress=not args.no_progress, metric=args.metric)
            results.append({"data": es.name, "metric": args.metric, **metrics})
            print(f"{es.name}: {metrics['num_query']} query, {metrics['num_gallery']} gallery | "
                  f"rank-1 {metrics['rank1']:.1f}  rank-5 {metrics['rank5']:.1f}  rank-10 {metrics['rank10']:.1f}  "
                  f"mAP {metrics['mAP']:.1f}")
    finally:
        close = getattr(model, "close", None)
        if close:
            close()
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"model": description, "results": results}, f, indent=2)
        print(f"wrote {args.json}")
    return 0
