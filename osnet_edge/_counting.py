"""Exact parameter and mult-add counts of an OSNet (torch, host side).

Counts follow the paper's "mult-adds": multiply-accumulates of convolutions (incl.
depthwise and 1x1, the aggregation gate's FCs included) and linear layers for one image;
BN, activations, pooling and elementwise ops are not counted; the classifier is excluded.
With this rule Table 6 of the paper comes out to the printed 0.1M for all 16 rows.
"""
from __future__ import annotations

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    """Parameters of the deployed feature extractor (classifier excluded)."""
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith("classifier."))


@torch.no_grad()
def count_macs(model: nn.Module, input_hw: tuple[int, int]) -> int:
    """Multiply-accumulates of one image's eval forward at ``input_hw`` (classifier excluded)."""
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
        model(torch.zeros(1, 3, *input_hw))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return int(total)
