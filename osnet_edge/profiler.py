"""Profiler: exact params / mult-adds per width x resolution (x variant), and latency.

Counting needs torch (it walks the model); it is imported lazily so that the latency side
can run on a device without torch.
"""
from __future__ import annotations

from typing import Iterable

COUNT_FIELDS = ("variant", "width", "res", "input_h", "input_w", "params", "macs")


def count_row(width: float, res: float, variant: str = "osnet") -> dict:
    """One row of the paper's Table 6: params and mult-adds of a configuration."""
    from ._counting import count_macs, count_params
    from .models import build_osnet, input_size

    model = build_osnet(width, variant)
    h, w = input_size(res)
    return {"variant": variant, "width": float(width), "res": float(res), "input_h": h, "input_w": w,
            "params": count_params(model), "macs": count_macs(model, (h, w))}


def count_grid(widths: Iterable[float], resolutions: Iterable[float],
               variants: Iterable[str] = ("osnet",)) -> list[dict]:
    """Rows for every variant x width x res, in that nesting order."""
    resolutions = list(resolutions)
    return [count_row(w, r, v) for v in variants for w in widths for r in resolutions]


def format_millions(n: int) -> str:
    return f"{n / 1e6:.1f}M"
