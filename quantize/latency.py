"""The quick INT8-vs-FP32 latency check at export (batch 1, this machine, interleaved) and its verdict."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from osnet_edge.notices import Int8SlowerWarning


def _time_ms(fn: Callable[[], Any], budget_s: float = 0.6) -> float:
    """Median ms of ``fn`` (a few warm-up calls, then ~budget_s of timing)."""
    from osnet_edge.verify import time_call

    return float(np.median(time_call(fn, warmup=3, min_time=budget_s, max_iters=300, min_iters=10)))


def compare_latency(backend_mod, fp32_onnx: str, model_dir: Path, sample: np.ndarray, budget_s: float = 0.6) -> dict:
    """INT8 vs FP32 latency at batch 1 on this machine, both on the backend's own runtime, interleaved."""
    f_fp32 = backend_mod.fp32_runner(fp32_onnx, threads=None)
    f_int8 = backend_mod.int8_runner(model_dir, threads=None)
    one = sample[:1]
    fp32_ms, int8_ms = [], []
    for _ in range(2):  # interleave so that load from other processes hits both alike
        fp32_ms.append(_time_ms(lambda: f_fp32(one), budget_s / 2))
        int8_ms.append(_time_ms(lambda: f_int8(one), budget_s / 2))
    fp32, int8 = float(np.median(fp32_ms)), float(np.median(int8_ms))
    return {"batch": 1, "fp32_ms": round(fp32, 3), "int8_ms": round(int8, 3),
            "speedup": round(fp32 / int8, 3) if int8 > 0 else None, "runtime": backend_mod.RUNTIME,
            "cpu_flags": cpu_int8_flags(), "note": "quick check at export; scripts/bench/int8.py for a full benchmark"}


def warn_if_int8_slower(latency: dict, backend: str) -> None:
    """The export-time latency check's verdict: INT8 that is slower than FP32 here is said loudly."""
    if latency.get("int8_ms") and latency.get("fp32_ms") and latency["int8_ms"] > latency["fp32_ms"]:
        warnings.warn(f"INT8 is SLOWER than FP32 on this machine for {backend} "
                      f"({latency['int8_ms']:.2f} vs {latency['fp32_ms']:.2f} ms at batch 1; CPU "
                      f"flags {', '.join(latency['cpu_flags']) or 'none'}): prefer the fp32/fp16 bundle "
                      "here unless the target device has INT8 acceleration", Int8SlowerWarning, stacklevel=3)


def cpu_int8_flags() -> list[str]:
    """The CPU features that decide INT8 speed (VNNI, AMX, AVX-512, AVX2), as /proc/cpuinfo lists them."""
    wanted = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16", "avx512_bf16",
              "fma", "asimddp", "i8mm")
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    have = set(line.split(":", 1)[1].split())
                    return [w for w in wanted if w in have]
    except OSError:
        pass
    return []
