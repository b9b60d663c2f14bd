"""Post-export checks: the bundle against its torch reference, and a quick latency figure."""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, D) arrays (normalised inside; zero rows give 0)."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a * b).sum(axis=1)


def agreement(test: np.ndarray, ref: np.ndarray) -> dict:
    """Cosine mean / min / 1st percentile and max abs diff of L2-normalised embeddings."""
    cos = cosine_rows(test, ref)
    tn = test / np.maximum(np.linalg.norm(test, axis=1, keepdims=True), 1e-12)
    rn = ref / np.maximum(np.linalg.norm(ref, axis=1, keepdims=True), 1e-12)
    return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
            "cosine_p1": float(np.percentile(cos, 1)), "max_abs_diff": float(np.abs(tn - rn).max()),
            "num_images": int(len(cos))}


def time_call(fn, warmup: int = 5, min_time: float = 0.5, max_iters: int = 1000, min_iters: int = 10) -> np.ndarray:
    """Run ``fn`` after ``warmup`` calls until ``min_time`` seconds and ``min_iters`` calls; ms per call."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < max_iters and (len(times) < min_iters or time.perf_counter() - start < min_time):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return np.asarray(times)


def reference_check(extractor, crops: Sequence[np.ndarray]) -> dict | None:
    """Extractor embeddings vs the torch model the bundle came from (None without torch/weights)."""
    try:
        from osnet_edge.runtimes.torch import TorchRuntime
        ref_rt = TorchRuntime(extractor.bundle)
    except Exception:
        return None
    feats = extractor(crops)
    ref = ref_rt.infer(extractor.model_input(list(crops)))
    return agreement(feats, ref)
