"""``osnet-edge export``: OSNet (torchreid weights) as a deployable bundle for ONNX Runtime, OpenVINO, TensorRT or LiteRT."""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from typing import Any, Sequence

from .common import CliError, Parser, check_model_sizes
from .export_rknn import add_rknn_flags, check_rknn_flags, rknn_options

EXAMPLES = """\
examples:
  # the headline: x0.25 at half resolution (128x64) for TensorRT (engine built on the device)
  osnet-edge export --width 0.25 --res 0.5 --target tensorrt
  # a torchreid checkpoint to ONNX Runtime, checked against the torch model
  osnet-edge export --width 0.25 --res 0.5 --target onnxruntime \\
      --weights osnet_x0_25_msmt17.pth --out bundles/x025_r05
  # LiteRT (TFLite + XNNPACK) for an ARM camera; the camera installs only osnet_edge[litert]
  osnet-edge export --width 0.25 --res 0.5 --target litert --weights adapted_r05.pth
  # INT8 for OpenVINO, calibrated on your own person crops
  osnet-edge export --width 0.25 --target openvino --precision int8 \\
      --weights osnet_x0_25_msmt17.pth --calib crops/ --calib-size 300
"""


def build_parser() -> Parser:
    p = Parser(command="export", description="Export OSNet (torchreid weights) to a bundle: model files for one runtime + "
               "manifest.json with sha256 checksums, written atomically. Afterwards the bundle is loaded "
               "in the torch-free Extractor, compared with the torch model and timed.", epilog=EXAMPLES)
    p.add_argument("--width", type=float, default=1.0,
                   help="width multiplier: torchreid's 1.0, 0.75, 0.5, 0.25 (trained checkpoints exist); other widths "
                        "with whole channels build untrained (default 1.0)")
    p.add_argument("--res", type=float, default=1.0,
                   help="resolution multiplier on 256x128, 0.25 to 1: 1.0, 0.75 (192x96), 0.5 (128x64), 0.25 (64x32); "
                        "multiples of 0.125 give sizes divisible by 16 (default 1.0)")
    p.add_argument("--variant", choices=["osnet", "ibn", "ain"], default="osnet",
                   help="osnet (plain), ibn (OSNet-IBN) or ain (OSNet-AIN) (default osnet)")
    p.add_argument("--target", choices=["onnxruntime", "openvino", "tensorrt", "litert", "rknn"], default="onnxruntime",
                   help="runtime the bundle is for: onnxruntime, openvino, tensorrt, litert (TFLite + XNNPACK, "
                        "the CPU runtime of ARM cameras) or rknn (Rockchip NPU, see --rknn-platform) (default "
                        "onnxruntime)")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8"], default="fp32",
                   help="fp32; fp16 (host-converted ONNX / fp16 IR / fp16 tflite weights); bf16 (OpenVINO on CPUs "
                        "with bf16); int8 (needs --calib) (default fp32)")
    p.add_argument("--variants", nargs="+", default=[], metavar="PRECISION",
                   help="more precisions of the same target in the same bundle (e.g. --precision fp32 --variants "
                        "int8): whether INT8 is faster depends on the camera's CPU, so the camera picks the fastest "
                        "that meets the fidelity target with osnet-edge tune (the primary loads until then)")
    p.add_argument("--weights", metavar="PATH", help="torchreid checkpoint (.pth / .pth.tar), e.g. from the torchreid "
                   "model zoo: osnet_x0_25_market1501.pth, osnet_x0_25_msmt17.pth. Without it a RANDOMLY initialised "
                   "model is exported: only good for testing the pipeline. At --res < 1 use weights adapted to that "
                   "resolution (osnet-edge adapt)")
    p.add_argument("--allow-unsafe-pickle", action="store_true",
                   help="load a legacy checkpoint with full unpickling (can execute code: trusted files only)")
    p.add_argument("--calib", metavar="DIR", help="folder of person crops (jpg/png, searched recursively; "
                   "Market-1501 layout understood) to calibrate INT8. Never use your evaluation images")
    p.add_argument("--calib-size", type=int, default=300, metavar="N",
                   help="calibration images sampled across identities/cameras (default 300)")
    p.add_argument("--calib-method", default=None, metavar="M",
                   help="activation ranges: minmax | entropy | percentile | mse (ONNX backends; default minmax), "
                        "for openvino an NNCF preset: mixed | performance, for litert minmax or dynamic "
                        "(dynamic-range: int8 weights, activation ranges measured per call)")
    p.add_argument("--int8-placement", choices=["conv", "all", "auto"], default=None,
                   help="INT8 Q/DQ placement. onnxruntime, openvino: conv = spatial convolutions only (default), "
                        "all = every op the quantizer knows, auto = quantize with each, time each against FP32 on "
                        "this machine and keep the fastest that meets the fidelity target (cosine mean 0.998 / "
                        "p1 0.995, or --min-cosine); the table goes into the manifest. auto quantizes twice. "
                        "litert: all = full-integer (default), conv = partial-integer (the gates' MLP, products, "
                        "sums and fc stay float32)")
    p.add_argument("--distill-steps", type=int, default=None, metavar="N",
                   help="INT8 with --weights: steps of quantization-aware distillation before PTQ (default 150: "
                        "measured as good as 400-600; 0 = plain PTQ)")
    p.add_argument("--device", default="auto", metavar="DEV",
                   help="where quantization-aware distillation trains: auto (CUDA when torch sees a GPU), cpu, "
                        "cuda or cuda:N (default auto; float32 simulation on either)")
    p.add_argument("--min-cosine", type=float, default=None, metavar="X",
                   help="INT8: keep the most sensitive layers in fp32 until mean cosine vs fp32 >= X (default: "
                        "0.999 for trained weights below 256x128, else off; 0 = off)")
    p.add_argument("--out", metavar="DIR", help="bundle directory (default bundles/<variant>_x<w>_r<res>_<target>_<precision>, "
                   "e.g. bundles/osnet_x0_25_r0_5_onnxruntime_fp32; osnet-edge profile reuses it)")
    p.add_argument("--fuse-preprocess", action="store_true",
                   help="the graph takes uint8 BGR NHWC and does BGR->RGB, /255, mean/std itself")
    p.add_argument("--max-batch", type=int, default=64, help="largest batch the runtime is set up for (default 64)")
    p.add_argument("--interpolation", choices=["linear", "pil", "area"], default="linear",
                   help="crop resize on the device (default linear: measured as accurate as PIL, 10x faster)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset, >= 17 (default 18)")
    p.add_argument("--threads", type=int, default=None, help="threads for the post-export check")
    p.add_argument("--no-verify", action="store_true", help="skip the post-export Extractor check and timing")
    p.add_argument("--force", action="store_true", help="replace an existing --out directory")
    add_rknn_flags(p)
    return p


def default_out(a: argparse.Namespace) -> str:
    from osnet_edge.bundle import default_bundle_name

    return os.path.join("bundles", default_bundle_name(a.variant, a.width, a.res, a.target, a.precision))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_model_sizes([args.width], [args.res])
    if args.weights:
        return export(args)
    from osnet_edge.notices import RandomWeightsWarning

    with warnings.catch_warnings():  # said once, below, as a WARNING line: not again by export and load
        warnings.simplefilter("ignore", RandomWeightsWarning)
        return export(args)


def _require_packages(args: argparse.Namespace) -> None:
    """Fail before any work, naming the extra, when this host lacks what the target needs."""
    import importlib.util

    needed = {"openvino": "openvino", "tensorrt": None, "onnxruntime": None, "litert": "litert_torch",
              "rknn": "onnxruntime"}[args.target]
    if "int8" in (args.precision, *args.variants) and args.target != "rknn":
        needed = {"openvino": "nncf", "onnxruntime": "onnxruntime", "tensorrt": "onnxruntime",
                  "litert": "ai_edge_quantizer"}[args.target]
    elif args.target == "litert" and args.precision == "fp16":
        needed = "ai_edge_quantizer"
    if needed and importlib.util.find_spec(needed) is None:
        extra = "litert-export" if args.target == "litert" else "quantize"
        raise CliError(f"--target {args.target} --precision {args.precision} needs {needed} on this host: "
                       f"pip install -c constraints.txt 'osnet_edge[{extra}]'")


def _check_flags(args: argparse.Namespace) -> str:
    """Flag combinations and paths checked before any work; returns the output folder."""
    from osnet_edge.export import TARGET_PRECISIONS

    bad = [v for v in args.variants if v not in TARGET_PRECISIONS[args.target] or v == args.precision]
    if bad:
        raise CliError(f"--variants {' '.join(bad)}: each must be another precision of --target {args.target} "
                       f"({', '.join(TARGET_PRECISIONS[args.target])}), not the primary --precision")
    if args.precision not in TARGET_PRECISIONS[args.target]:  # before any work (export_bundle says the same)
        raise CliError(f"--target {args.target} supports --precision {', '.join(TARGET_PRECISIONS[args.target])}, "
                       f"not {args.precision}")
    if args.target == "litert" and args.min_cosine is not None:
        raise CliError("--min-cosine (mixed precision) exists for the ONNX targets only; for litert, "
                       "--int8-placement conv keeps the gates, products, sums and fc in float32")
    if args.int8_placement is not None and (args.precision != "int8"
                                            or args.target not in ("onnxruntime", "openvino", "litert")):
        raise CliError("--int8-placement applies to --precision int8 on --target onnxruntime, openvino or litert")
    if args.target == "litert" and args.calib_method == "dynamic" and args.int8_placement is not None:
        raise CliError("--calib-method dynamic (dynamic-range) has no --int8-placement: its int8 ops are fixed")
    if args.target == "litert" and args.int8_placement == "auto":
        raise CliError("--int8-placement for litert is all (full-integer, default) or conv (partial-integer)")
    check_rknn_flags(args)
    if args.distill_steps is not None and args.distill_steps < 0:
        raise CliError(f"--distill-steps must be >= 0, got {args.distill_steps}")
    try:
        from osnet_edge.adapt.device import resolve_device
        args.device = resolve_device(args.device)
    except (TypeError, ValueError) as exc:
        raise CliError(f"--device: {exc}") from None
    if args.weights and not os.path.isfile(args.weights):
        raise CliError(f"--weights {args.weights}: no such file")
    if args.calib and not os.path.isdir(args.calib):
        raise CliError(f"--calib {args.calib}: no such directory")
    if "int8" in (args.precision, *args.variants) and not args.calib:
        raise CliError("--precision int8 needs --calib DIR (person crops to calibrate on); "
                       "osnet_edge never calibrates on random data")
    out = args.out or default_out(args)
    if os.path.exists(out) and not args.force:
        raise CliError(f"{out} exists; pass --force to replace it or choose another --out")
    return out


def _calibration(args: argparse.Namespace, hw: tuple[int, int]) -> Any:
    """The CalibrationSet for --precision int8 (None otherwise), refused when it holds evaluation images."""
    # rknn fp16: held-out crops for the simulator's fidelity
    if "int8" not in (args.precision, *args.variants) and args.target != "rknn":
        return None
    from osnet_edge.calibration import CalibrationSet
    from osnet_edge.data import assert_disjoint_from_protocols, refuse_evaluation_folder, shared_data_dir

    try:  # never calibrate on evaluation images: a known layout by its path, then the shared protocols' files
        refuse_evaluation_folder(args.calib)
    except ValueError as exc:
        raise CliError(f"--calib {exc}") from None
    calibration = CalibrationSet.from_folder(args.calib, input_size=hw, max_images=args.calib_size,
                                             interpolation=args.interpolation)
    try:
        assert_disjoint_from_protocols(calibration.samples, shared_data_dir())
    except ValueError as exc:
        raise CliError(f"--calib includes evaluation images: {exc}") from None
    return calibration


def _print_summary(bundle: Any, args: argparse.Namespace, hw: tuple[int, int], elapsed: float) -> None:
    size = sum(f.stat().st_size for f in bundle.path.iterdir() if f.is_file())
    m = bundle.manifest["model"]
    print(f"bundle: {bundle.path}  ({size / 1e6:.2f} MB, {', '.join(sorted(bundle.manifest['files']))}) "
          f"in {elapsed:.1f} s")
    print(f"model: {m['variant']} x{m['width']} @ {hw[0]}x{hw[1]}  params {m['params'] / 1e6:.3f}M  "
          f"mult-adds {bundle.mult_adds / 1e6:.1f}M  -> {args.target}/{args.precision}")
    q = bundle.manifest.get("quantization") or {}
    if q.get("fidelity"):
        f = q["fidelity"]
        print(f"int8 fidelity (INT8 vs FP32 embeddings on {f.get('num_images')} held-out person crops, the "
              f"accuracy figure): cosine mean {f['cosine_mean']:.4f} p1 {f['cosine_p1']:.4f}")
    search = q.get("placement_search")
    if search:
        for r in search["candidates"]:
            mark = "  <- chosen" if r["placement"] == search["chosen"] else ""
            print(f"  placement {r['placement']:5s} cosine {r['cosine_mean']:.4f} / p1 {r['cosine_p1']:.4f}  int8 "
                  f"{r['int8_ms']} ms vs fp32 {r['fp32_ms']} ms (x{r['speedup']}){mark}")
    if args.target == "tensorrt":
        print("TensorRT: the engine is built on the device at first load (engines are not portable between "
              "GPUs or TensorRT versions) and cached next to the bundle. To pre-build at provisioning: "
              f"osnet-edge build-engine {bundle.path}")


def export(args: argparse.Namespace) -> int:
    from osnet_edge.bundle import COMPATIBLE_RUNTIMES
    try:
        from osnet_edge.export import export_bundle
        import onnx  # noqa: F401  (imported lazily by the export: fail here, naming the extra)
    except ImportError as exc:
        raise CliError(f"export needs torch and onnx ({exc.name} missing): "
                       "pip install -c constraints.txt 'osnet_edge[export]'") from None
    from osnet_edge.models import input_size

    _require_packages(args)
    out = _check_flags(args)
    hw = input_size(args.res)
    calibration = _calibration(args, hw)
    if not args.weights:
        from osnet_edge.notices import random_weights_advice
        print(f"WARNING: no --weights: exporting a RANDOMLY INITIALISED model: {random_weights_advice()}",
              file=sys.stderr)
    t0 = time.perf_counter()
    quant = rknn_options(args)
    if args.min_cosine is not None:
        quant["min_cosine"] = args.min_cosine
    if args.int8_placement is not None:
        quant["placement"] = args.int8_placement
    if "int8" in (args.precision, *args.variants):
        quant["distill_device"] = args.device
        if args.distill_steps is not None:
            quant["distill_steps"] = args.distill_steps
    bundle = export_bundle(out, width=args.width, res=args.res, variant=args.variant, target=args.target,
                           precision=args.precision, variants=args.variants, weights=args.weights,
                           fuse_preprocess=args.fuse_preprocess,
                           max_batch=args.max_batch, calibration=calibration, calib_method=args.calib_method,
                           interpolation=args.interpolation, opset=args.opset,
                           allow_unsafe_pickle=args.allow_unsafe_pickle, overwrite=True,
                           on_step=lambda m: print(f"  {m}", flush=True), **quant)
    _print_summary(bundle, args, hw, time.perf_counter() - t0)
    if not args.no_verify:
        verify(bundle, args, COMPATIBLE_RUNTIMES[args.target])
    return 0


def verify(bundle: Any, args: argparse.Namespace, runtimes_for_target: Sequence[str]) -> None:
    """Load the bundle in the Extractor on a runtime present here; compare with torch; time it."""
    import numpy as np

    from osnet_edge import runtimes
    from osnet_edge.extractor import Extractor
    from osnet_edge.samples import synthetic_crops
    from osnet_edge.verify import reference_check, time_call

    here = [r for r in runtimes_for_target if r in runtimes.available()]
    if not here:
        print(f"check skipped: none of {list(runtimes_for_target)} is installed here")
        return
    rt = here[0]
    crops = synthetic_crops(32, seed=1)
    with Extractor(bundle.path, runtime=rt, threads=args.threads) as ext:
        note = " (the exact network TensorRT will build)" if args.target == "tensorrt" else ""
        check = reference_check(ext, crops)
        if check and bundle.precision == "int8":
            print(f"loads and runs on {rt}{note}; vs FP32 torch on {check['num_images']} synthetic noise crops: "
                  f"cosine min {check['cosine_min']:.3f} (INT8 ranges fit person crops, not noise: this is a "
                  "wiring check, the held-out fidelity above is the accuracy figure)")
        elif check:
            print(f"check vs torch on {check['num_images']} synthetic crops ({rt}{note}): cosine min "
                  f"{check['cosine_min']:.6f}, max abs diff {check['max_abs_diff']:.2e}")
        else:
            print("check vs torch skipped: no reference weights (random model)")
        if rt == "rknn-sim":  # the x86 simulator's speed says nothing about the NPU's
            print("rknn-sim: the rebuild reproduced the export's simulator rows on the probe crops; not timed")
            return
        one = crops[:1]
        t = time_call(lambda: ext(one), min_time=1.0)
        threads = ext.threads if ext.threads is not None else "the runtime's choice"
        print(f"latency ({rt}, batch 1, end to end incl. preprocessing, threads={threads}): "
              f"p50 {np.median(t):.2f} ms  p90 {np.percentile(t, 90):.2f} ms  (synthetic crops; "
              "osnet-edge profile for a full grid)")
