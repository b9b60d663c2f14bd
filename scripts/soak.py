#!/usr/bin/env python3
"""Soak and concurrency check of one Extractor: memory stays flat over many calls, and one
Extractor shared by many threads gives exactly the results of serial calls."""
from __future__ import annotations

import gc
import json
import os
import sys
import tempfile
import threading
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import CliError, Parser, run  # noqa: E402

import numpy as np  # noqa: E402

EXAMPLES = """\
examples:
  # 10,000 calls + 8 threads x 200 calls on x0.25 @ 128x64 (a random-weights bundle is exported first)
  python scripts/soak.py
  # your own bundle, OpenVINO, longer
  python scripts/soak.py --bundle bundles/x025_r05_openvino --calls 100000 --json soak.json
"""


def build_parser() -> Parser:
    p = Parser(description="Soak an Extractor (RSS at start/end, calls/s) and check that sharing it between threads "
               "gives results identical to serial calls.", epilog=EXAMPLES)
    p.add_argument("--bundle", metavar="DIR", help="bundle to run (default: export OSNet x0.25 @ 128x64 with random "
                   "weights for --runtime into a temporary directory; needs torch)")
    p.add_argument("--runtime", choices=["onnxruntime", "openvino", "tensorrt"], default=None,
                   help="runtime (default: the bundle's; onnxruntime when exporting)")
    p.add_argument("--calls", type=int, default=10_000, help="soak: number of Extractor calls (default 10000)")
    p.add_argument("--max-crops", type=int, default=4, help="soak: crops per call, 1..N at random (default 4)")
    p.add_argument("--workers", type=int, default=8, help="concurrency: threads sharing one Extractor (default 8)")
    p.add_argument("--calls-per-worker", type=int, default=200, help="concurrency: calls per thread (default 200)")
    p.add_argument("--threads", type=int, default=None, help="the runtime's own intra-op threads (default: its choice)")
    p.add_argument("--no-soak", action="store_true", help="only the concurrency check")
    p.add_argument("--no-concurrency", action="store_true", help="only the soak")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    return p


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def input_pool(n: int, seed: int = 0, max_crops: int = 4) -> list:
    """Varied Extractor inputs: lists of 1..max_crops crops of different sizes, single crops,
    (N,H,W,3) batches and (frame, boxes) pairs, so every input path is exercised."""
    from osnet_edge.samples import synthetic_crops

    rng = np.random.default_rng(seed)
    crops = synthetic_crops(32, seed=seed, min_h=24, max_h=200)
    frame = np.ascontiguousarray(np.tile(crops[0], (4, 6, 1))[:480, :640])
    pool = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            pool.append(("crops", [crops[j] for j in rng.integers(0, len(crops), int(rng.integers(1, max_crops + 1)))]))
        elif kind == 1:
            pool.append(("crops", crops[int(rng.integers(0, len(crops)))][::-1]))  # a negative-stride view
        elif kind == 2:
            k = int(rng.integers(1, max_crops + 1))
            pool.append(("crops", np.stack([crops[int(rng.integers(0, len(crops)))][:24, :12]] * k)))
        else:
            x1, y1 = int(rng.integers(-20, 500)), int(rng.integers(-20, 300))
            boxes = [[x1, y1, x1 + int(rng.integers(10, 200)), y1 + int(rng.integers(20, 400))]]
            pool.append(("frame", (frame, np.array(boxes * int(rng.integers(1, max_crops + 1))))))
    return pool


def _call(ext, item) -> np.ndarray:
    kind, value = item
    return ext(value) if kind == "crops" else ext.from_frame(*value)


def concurrency_check(ext, workers: int = 8, calls_per_worker: int = 200, seed: int = 0) -> dict:
    """``workers`` threads share ``ext`` for ``calls_per_worker`` calls each; every result is compared
    with the serial result for the same input. Returns max abs diff, mismatches and calls/s."""
    pool = input_pool(32, seed)
    reference = [_call(ext, item) for item in pool]
    t0 = time.perf_counter()
    for item in pool:
        _call(ext, item)
    serial_per_call = (time.perf_counter() - t0) / len(pool)
    worst = [0.0] * workers
    mismatches = [0] * workers
    errors: list[BaseException] = []
    start = threading.Barrier(workers)

    def work(w: int) -> None:
        try:
            start.wait()
            for c in range(calls_per_worker):
                i = (w * 7 + c) % len(pool)
                out = _call(ext, pool[i])
                if out.shape != reference[i].shape:
                    mismatches[w] += 1
                    continue
                diff = float(np.abs(out - reference[i]).max()) if out.size else 0.0
                worst[w] = max(worst[w], diff)
                mismatches[w] += diff != 0.0
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} worker thread(s) failed: {errors[0]!r}") from errors[0]
    calls = workers * calls_per_worker
    return {"workers": workers, "calls": calls, "max_abs_diff": max(worst), "mismatched_calls": sum(mismatches),
            "seconds": seconds, "calls_per_s": calls / seconds, "serial_calls_per_s": 1.0 / serial_per_call}


def soak(ext, calls: int = 10_000, warmup: int = 300, samples: int = 20, seed: int = 0, max_crops: int = 4,
         progress: bool = True) -> dict:
    """``calls`` Extractor calls over a pool of varied inputs; RSS after ``warmup`` calls (start),
    at ``samples`` points along the way and at the end. Outputs are checked for NaN on the way."""
    pool = input_pool(64, seed, max_crops)
    for i in range(warmup):  # allocator pools, runtime arenas, caches reach their steady size
        _call(ext, pool[i % len(pool)])
    gc.collect()
    start = rss_mb()
    trace = [(0, start)]
    every = max(1, calls // samples)
    from osnet_edge.progress import progress_bar

    bar = progress_bar(total=calls, desc=f"soak ({ext.runtime})", unit="call", mininterval=1.0, enabled=progress)
    shown = 0
    crops = 0
    t0 = time.perf_counter()
    for c in range(1, calls + 1):
        out = _call(ext, pool[c % len(pool)])
        crops += len(out)
        if not np.isfinite(out).all():
            raise RuntimeError(f"call {c}: non-finite embedding")
        if c % every == 0 or c == calls:
            trace.append((c, rss_mb()))
            bar.update(c - shown)
            shown = c
            bar.set_postfix(rss_mb=f"{trace[-1][1]:.1f}")
    seconds = time.perf_counter() - t0
    bar.close()
    gc.collect()
    end = rss_mb()
    half = [r for c, r in trace if c >= calls // 2]
    return {"calls": calls, "crops": crops, "seconds": seconds, "calls_per_s": calls / seconds,
            "crops_per_s": crops / seconds, "rss_start_mb": start, "rss_end_mb": end,
            "rss_max_mb": max(r for _, r in trace), "rss_growth_mb": end - start,
            "rss_growth_second_half_mb": end - half[0], "rss_trace": trace}


def _export_default(runtime: str, out: str) -> str:
    try:
        from osnet_edge.export import export_bundle
    except ImportError as exc:
        raise CliError(f"without --bundle a test bundle is exported, which needs torch and onnx ({exc.name} "
                       "missing): pip install 'osnet_edge[export]', or pass --bundle DIR") from None
    print(f"exporting OSNet x0.25 @ 128x64 (random weights) for {runtime} ...", flush=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return str(export_bundle(out, width=0.25, res=0.5, target=runtime).path)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    for flag in ("calls", "max_crops", "workers", "calls_per_worker"):
        if getattr(args, flag) < 1:
            raise CliError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.bundle and not os.path.isdir(args.bundle):
        raise CliError(f"--bundle {args.bundle}: no such directory")
    try:
        import psutil  # noqa: F401
    except ImportError:
        raise CliError("soak.py measures memory with psutil: pip install psutil (osnet_edge[dev])") from None
    from osnet_edge import Extractor

    with tempfile.TemporaryDirectory(prefix="osnet_edge_soak_") as tmp:
        bundle = args.bundle or _export_default(args.runtime or "onnxruntime", os.path.join(tmp, "x025_r05"))
        with Extractor(bundle, runtime=args.runtime, threads=args.threads) as ext:
            print(f"{ext!r}  pid {os.getpid()}  RSS after load {rss_mb():.1f} MB")
            result = {"extractor": repr(ext), "runtime": ext.runtime, "threads": args.threads}
            if not args.no_concurrency:
                c = concurrency_check(ext, args.workers, args.calls_per_worker, args.seed)
                result["concurrency"] = c
                print(f"concurrency: {c['workers']} threads x {args.calls_per_worker} calls: max abs diff vs serial "
                      f"{c['max_abs_diff']:.3g}, {c['mismatched_calls']} mismatched calls; {c['calls_per_s']:.0f} "
                      f"calls/s shared (serial {c['serial_calls_per_s']:.0f} calls/s)")
            if not args.no_soak:
                s = soak(ext, args.calls, seed=args.seed, max_crops=args.max_crops, progress=sys.stderr.isatty())
                result["soak"] = s
                print(f"soak: {s['calls']} calls ({s['crops']} crops) in {s['seconds']:.1f} s = {s['calls_per_s']:.0f} "
                      f"calls/s, {s['crops_per_s']:.0f} crops/s; RSS start {s['rss_start_mb']:.1f} MB, end "
                      f"{s['rss_end_mb']:.1f} MB (growth {s['rss_growth_mb']:+.1f} MB, second half "
                      f"{s['rss_growth_second_half_mb']:+.1f} MB, max {s['rss_max_mb']:.1f} MB)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")
    failed = result.get("concurrency", {}).get("mismatched_calls", 0)
    if failed:
        raise CliError(f"{failed} concurrent calls differed from serial calls")
    return 0


if __name__ == "__main__":
    run(main)
