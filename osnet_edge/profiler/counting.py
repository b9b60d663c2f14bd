"""Exact parameter and mult-add counts of an OSNet (torch, host side).

Counts follow the paper's "mult-adds": multiply-accumulates of convolutions (incl.
depthwise and 1x1, the aggregation gate's FCs included) and linear layers for one image;
BN, activations, pooling and elementwise ops are not counted; the classifier is excluded.
With this rule Table 6 of the paper comes out to the printed 0.1M for all 16 rows.
torch is imported by the functions that walk a model, so the profiler imports without it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from torch import nn


def count_params(model: nn.Module) -> int:
    """Parameters of the deployed feature extractor (classifier excluded)."""
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith("classifier."))


def count_macs(model: nn.Module, input_hw: tuple[int, int]) -> int:
    """Multiply-accumulates of one image's eval forward at ``input_hw`` (classifier excluded)."""
    import torch
    from torch import nn

    total = 0

    def hook(mod: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            kh, kw = mod.kernel_size
            total += (out.numel() // out.shape[0]) * (mod.in_channels // mod.groups) * kh * kw
        else:
            total += mod.in_features * mod.out_features

    handles = [m.register_forward_hook(hook) for name, m in model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear)) and not name.startswith("classifier")]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, *input_hw))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return int(total)


def count_row(width: float, res: float, variant: str = "osnet") -> dict:
    """One row of the paper's Table 6: params and mult-adds of a configuration."""
    from ..models import build_osnet, input_size

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
