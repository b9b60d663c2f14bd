#!/usr/bin/env python3
"""Market-1501 rank-1 / mAP of an rknn bundle in rknn-toolkit2's x86 simulator vs the FP32 bundle it came from.

All 3,368 queries against bounding_box_test (15,913 images after torchreid's junk rule): FP32 (ONNX Runtime),
rknn queries vs rknn gallery, and rknn queries vs an FP32 gallery (a camera that embeds with the NPU, matched
against a gallery embedded on a server). The simulator is slow (about 5-25 crops/s on two cores), so features
are computed in chunks and cached under --work (a rerun resumes); queries first, then the gallery in a seeded
random order. With --minutes reached before the gallery is done, rknn-vs-rknn is reported on the deterministic
subset embedded so far (the first K gallery images of that order, all queries) next to FP32 on the same subset,
and the JSON says so: never a full-gallery claim. Evaluation only: nothing here calibrates or tunes.

  python scripts/bench/rknn_market.py --bundle B_RKNN --fp32-bundle B_FP32 --work runs/rknn_market --json out.json
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # scripts/, for _cli
from _cli import Parser, run  # noqa: E402

CHUNK = 128


def build_parser() -> Parser:
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True, help="rknn bundle (runs on rknn-sim)")
    p.add_argument("--fp32-bundle", required=True, help="the FP32 onnxruntime bundle of the same weights")
    p.add_argument("--data", default=None, help="Market-1501 root (default ../shared/data/market1501)")
    p.add_argument("--work", required=True, help="feature cache folder (a rerun resumes from it)")
    p.add_argument("--minutes", type=float, default=None, help="stop embedding after this long and report")
    p.add_argument("--seed", type=int, default=0, help="seed of the gallery order (the subset when stopped early)")
    p.add_argument("--json", default=None, help="write the results here")
    return p


def _embed_chunks(ext, samples, work: Path, tag: str, deadline: float | None) -> int:
    """Embed ``samples`` chunk by chunk into work/<tag>_<i>.npy; returns how many are done."""
    import cv2

    done = 0
    for i in range(0, len(samples), CHUNK):
        path = work / f"{tag}_{i // CHUNK:05d}.npy"
        chunk = samples[i:i + CHUNK]
        if not path.exists():
            if deadline is not None and time.time() > deadline:
                return done
            start = time.perf_counter()
            feats = ext([cv2.imread(s.path) for s in chunk])
            np.save(path.with_suffix(".tmp.npy"), feats)
            os.replace(path.with_suffix(".tmp.npy"), path)
            rate = len(chunk) / (time.perf_counter() - start)
            print(f"  {tag}: {i + len(chunk)}/{len(samples)} ({rate:.1f} crops/s)", flush=True)
        done += len(chunk)
    return done


def _load_chunks(work: Path, tag: str, n: int) -> np.ndarray:
    parts = [np.load(work / f"{tag}_{i // CHUNK:05d}.npy") for i in range(0, n, CHUNK)]
    return np.concatenate(parts)[:n] if parts else np.zeros((0, 512), np.float32)


def _rank(qf, gf, query, gallery) -> dict:
    from osnet_edge.metrics import rank_metrics

    r = rank_metrics(qf, gf, [s.pid for s in query], [s.pid for s in gallery], [s.camid for s in query],
                     [s.camid for s in gallery])
    return {k: (round(float(v), 2) if isinstance(v, float) else v) for k, v in r.items()}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from osnet_edge import Extractor
    from osnet_edge.data import read_market1501, shared_data_dir

    root = Path(args.data) if args.data else (shared_data_dir() or Path("../shared/data")) / "market1501"
    split = read_market1501(root)
    query, gallery = split["query"], split["gallery"]
    order = np.random.default_rng(args.seed).permutation(len(gallery))
    gallery = [gallery[i] for i in order]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + 60 * args.minutes if args.minutes else None
    t0 = time.perf_counter()
    with Extractor(args.fp32_bundle) as ext:
        print(f"fp32 ({ext.runtime}): embedding {len(query)} queries and {len(gallery)} gallery images", flush=True)
        _embed_chunks(ext, query, work, "fp32_q", None)
        _embed_chunks(ext, gallery, work, "fp32_g", None)
    with Extractor(args.bundle, runtime="rknn-sim") as ext:
        print(f"rknn ({ext.runtime}, rebuilt in {ext._runtime.rebuild.get('build_seconds')} s)", flush=True)
        n_q = _embed_chunks(ext, query, work, "rknn_q", deadline)
        n_g = _embed_chunks(ext, gallery, work, "rknn_g", deadline) if n_q == len(query) else 0
    fq, fg = _load_chunks(work, "fp32_q", len(query)), _load_chunks(work, "fp32_g", len(gallery))
    out = {"bundle": str(args.bundle), "fp32_bundle": str(args.fp32_bundle), "gallery_seed": args.seed,
           "fp32": _rank(fq, fg, query, gallery), "rknn_queries_done": n_q, "rknn_gallery_done": n_g,
           "seconds": round(time.perf_counter() - t0, 1)}
    if n_q == len(query):
        rq = _load_chunks(work, "rknn_q", n_q)
        out["rknn_query_vs_fp32_gallery"] = _rank(rq, fg, query, gallery)
        if n_g:
            sub = gallery[:n_g]
            key = "rknn" if n_g == len(gallery) else "rknn_subset"
            out[key] = _rank(rq, _load_chunks(work, "rknn_g", n_g), query, sub)
            if n_g < len(gallery):
                out["fp32_subset"] = _rank(fq, fg[:n_g], query, sub)
                out["subset"] = (f"first {n_g} of {len(gallery)} gallery images in the order of "
                                 f"numpy default_rng({args.seed}).permutation, all queries")
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    run(main)
