"""``osnet-edge build-engine``: pre-build a tensorrt bundle's engine on the device (at provisioning, not at
first frame)."""
from __future__ import annotations

import argparse
import time
from typing import Any, Sequence

from .common import CliError, Parser

EXAMPLES = """\
examples:
  # on the Jetson / GPU host that will run it: build and cache next to the bundle
  osnet-edge build-engine bundles/osnet_x0_25_r0_5_tensorrt_fp16
  # the bundle lives on a read-only partition: cache the engine elsewhere
  osnet-edge build-engine /opt/models/reid --cache-dir /var/cache/osnet_edge
  # (then run with Extractor(..., cache_dir=...) or OSNET_EDGE_ENGINE_CACHE=/var/cache/osnet_edge)
  # also time the engine (model only, no preprocessing) at batch 1, 8 and the bundle's max batch
  osnet-edge build-engine bundles/osnet_x0_25_r0_5_tensorrt_fp16 --bench
"""


def build_parser() -> Parser:
    p = Parser(command="build-engine", description="Build the TensorRT engine of a bundle exported with --target tensorrt on this GPU "
               "(strongly typed, from the bundle's ONNX) and cache it, keyed by GPU, compute capability, TensorRT "
               "version and ONNX checksum. An engine already cached for this device is checked and reused.",
               epilog=EXAMPLES)
    p.add_argument("bundle", metavar="BUNDLE", help="bundle directory (exported with --target tensorrt)")
    p.add_argument("--cache-dir", metavar="DIR", default=None,
                   help="engine cache directory (default: $OSNET_EDGE_ENGINE_CACHE, else BUNDLE/engines)")
    p.add_argument("--workspace-mib", type=int, default=None, metavar="MIB",
                   help="builder workspace limit in MiB (default: the bundle's build.workspace_mib)")
    p.add_argument("--device", default="cuda", help="GPU to build for: cuda or cuda:N (default cuda)")
    p.add_argument("--force", action="store_true", help="rebuild even if a valid engine is cached")
    p.add_argument("--bench", action="store_true",
                   help="time engine inference (random input, model only) at batch 1, 8 and max batch")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.workspace_mib is not None and args.workspace_mib < 1:
        raise CliError(f"--workspace-mib must be >= 1, got {args.workspace_mib}")
    from osnet_edge.bundle import load_bundle
    from osnet_edge.runtimes.tensorrt import prepare_engine

    bundle = load_bundle(args.bundle)
    t0 = time.perf_counter()
    record = prepare_engine(bundle, device=args.device, cache_dir=args.cache_dir,
                            workspace_mib=args.workspace_mib, force=args.force)
    total = time.perf_counter() - t0
    k = record.key
    print(f"GPU: {record.gpu.name} (compute capability {k.compute_capability}), TensorRT {k.tensorrt_version}")
    print(f"profile: batch {k.min_batch}..{k.max_batch} (opt {k.opt_batch}), precision {bundle.precision} "
          "(from the ONNX, strongly typed)")
    if record.built:
        print(f"built in {record.build_seconds:.1f} s ({record.reason}); engine {record.size / 1e6:.2f} MB")
    else:
        print(f"valid engine already cached ({record.size / 1e6:.2f} MB); checked and loaded in {total:.1f} s "
              "(--force rebuilds it)")
    print(f"engine: {record.path}")
    if args.bench:
        bench(bundle, args)
    return 0


def bench(bundle: Any, args: argparse.Namespace) -> None:
    """Engine latency per batch (host->device copy, inference, device->host copy)."""
    import numpy as np

    from osnet_edge.runtimes.tensorrt import TensorRtRuntime
    from osnet_edge.verify import time_call

    runtime = TensorRtRuntime(bundle, device=args.device, cache_dir=args.cache_dir, workspace_mib=args.workspace_mib)
    try:
        s = runtime.settings
        rng = np.random.default_rng(0)
        for n in sorted({1, min(8, s.max_batch), s.max_batch}):
            x = (rng.integers(0, 256, (n, *s.sample_shape)).astype(np.uint8) if s.input_dtype == "uint8"
                 else rng.standard_normal((n, *s.sample_shape)).astype(np.float32))
            t = time_call(lambda: runtime.infer(x), warmup=10, min_time=1.0)
            p50 = float(np.median(t))
            print(f"batch {n:>3}: p50 {p50:.3f} ms  p90 {np.percentile(t, 90):.3f} ms  {n / p50 * 1e3:,.0f} images/s")
    finally:
        runtime.close()
