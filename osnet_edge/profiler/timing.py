"""Latency: timed calls under a budget, p50 / p90 statistics, and latency rows of an embedder or a
bundle, measured end to end through the Extractor (``mode="extractor"``) or on the bare runtime
(``mode="runtime"``)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .rows import weights_label

MODES = ("extractor", "runtime")
# Runtime name -> PyPI distributions whose version is recorded with its rows.
RUNTIME_PACKAGES = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu"), "openvino": ("openvino",),
                    "tensorrt": ("tensorrt",), "litert": ("ai-edge-litert",)}


@dataclass(frozen=True)
class TimingBudget:
    """How long to time one row: ``warmup`` untimed calls, then calls until ``seconds`` have
    passed and at least ``min_iters`` were made, never more than ``max_iters``."""

    seconds: float = 0.75
    warmup: int = 3
    min_iters: int = 5
    max_iters: int = 500

    def __post_init__(self) -> None:
        if not self.seconds >= 0:
            raise ValueError(f"seconds must be >= 0, got {self.seconds!r}")
        for name in ("warmup", "min_iters", "max_iters"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative int, got {v!r}")
        if self.max_iters < max(1, self.min_iters):
            raise ValueError(f"max_iters ({self.max_iters}) must be >= min_iters ({self.min_iters}) and >= 1")


def time_calls(fn: Callable[[int], Any], budget: TimingBudget = TimingBudget()) -> np.ndarray:
    """Milliseconds of each timed ``fn(i)`` call (``i`` counts calls, so inputs can rotate)."""
    for i in range(budget.warmup):
        fn(i)
    times: list[float] = []
    start = time.perf_counter()
    i = budget.warmup
    while len(times) < budget.max_iters and (len(times) < max(1, budget.min_iters)
                                             or time.perf_counter() - start < budget.seconds):
        t0 = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t0) * 1e3)
        i += 1
    return np.asarray(times)


def latency_stats(times_ms: np.ndarray, batch: int) -> dict:
    """p50 / p90 / mean / min per call and images per second, batch / p50: the same statistic as
    the latency column printed beside it (a mean skewed by a few slow calls would contradict it)."""
    times_ms = np.asarray(times_ms, dtype=np.float64)
    if times_ms.size == 0:
        raise ValueError("no timings to summarise")
    p50 = float(np.percentile(times_ms, 50))
    return {"latency_ms_p50": round(p50, 4),
            "latency_ms_p90": round(float(np.percentile(times_ms, 90)), 4),
            "latency_ms_mean": round(float(times_ms.mean()), 4), "latency_ms_min": round(float(times_ms.min()), 4),
            "throughput_ips": round(batch * 1e3 / p50, 2) if p50 > 0 else float("inf"),
            "iterations": int(times_ms.size)}


def _batches_of(crops: Sequence[np.ndarray], batch: int, count: int = 4) -> list[list[np.ndarray]]:
    """Up to ``count`` different batches of ``batch`` crops, cycling through the pool (so the
    timed calls see varied crop sizes, as a camera does)."""
    if not crops:
        raise ValueError("no crops to time with")
    out = []
    for k in range(count):
        out.append([crops[(k * batch + j) % len(crops)] for j in range(batch)])
        if batch * (k + 1) >= len(crops):
            break
    return out


def measure_embedder(embedder: Any, crops: Sequence[np.ndarray], batches: Sequence[int] = (1,),
                     modes: Sequence[str] = MODES, budget: TimingBudget = TimingBudget()) -> list[dict]:
    """Time an Extractor (or anything with ``__call__``, ``model_input`` and ``infer_raw``,
    e.g. a :class:`osnet_edge.foreign.ForeignModel`) per batch size and mode.

    Returns partial rows: batch, mode and the latency statistics.
    """
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ValueError(f"modes must be among {MODES}, got {bad}")
    rows = []
    for batch in batches:
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch sizes must be positive ints, got {batch!r}")
        pool = _batches_of(crops, batch)
        for mode in modes:
            if mode == "extractor":
                times = time_calls(lambda i: embedder(pool[i % len(pool)]), budget)
            else:
                inputs = [embedder.model_input(b) for b in pool]
                times = time_calls(lambda i: embedder.infer_raw(inputs[i % len(inputs)]), budget)
            rows.append({"batch": batch, "mode": mode, **latency_stats(times, batch)})
    return rows


def runtime_version(runtime: str) -> str | None:
    from ..machine import package_versions

    versions = package_versions(RUNTIME_PACKAGES.get(runtime, (runtime,)))
    return next(iter(versions.values()), None)


def default_threads() -> int:
    """Physical cores: what ONNX Runtime and OpenVINO pick themselves; recorded explicitly."""
    from ..machine import physical_cores

    return physical_cores()


def measure_bundle(bundle: Any, crops: Sequence[np.ndarray], batches: Sequence[int] = (1,),
                   modes: Sequence[str] = MODES, threads: int | None = None, device: str = "cpu",
                   runtime: str | None = None, budget: TimingBudget = TimingBudget(),
                   machine: Mapping | None = None) -> list[dict]:
    """Latency rows (see ``LATENCY_FIELDS``) of one bundle, one per batch size x mode.

    ``threads`` is the count asked for (part of a row's key); ``threads_used`` what the runtime
    reports it runs with (ONNX Runtime's intra-op threads, OpenVINO's INFERENCE_NUM_THREADS)."""
    from ..extractor import Extractor
    from ..machine import row_machine_fields
    from ..runtimes.base import resolve_threads

    threads = resolve_threads(threads or default_threads())
    with Extractor(bundle, runtime=runtime, device=device, threads=threads, batch_size=max(batches)) as ext:
        m = ext.manifest["model"]
        base = {"variant": m["variant"], "width": float(m["width"]), "res": float(m["res"]),
                "input_h": ext.input_size[0], "input_w": ext.input_size[1], "params": m.get("params"),
                "macs": ext.bundle.mult_adds, "runtime": ext.runtime, "precision": ext.precision,
                "threads": threads, "threads_used": ext.threads, "device": device}
        extra = {"weights": weights_label(ext.manifest), "peer": False,
                 "runtime_version": runtime_version(ext.runtime), **row_machine_fields(machine),
                 "bundle": str(ext.bundle.path)}
        timed = measure_embedder(ext, crops, batches, modes, budget)
    return [{**base, **t, **extra} for t in timed]
