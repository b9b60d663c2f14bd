"""BatchNorm at a new resolution: AdaBN / "precise BN" re-estimation of the running statistics."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..preprocess import Normalizer
from ..progress import progress_bar
from .views import ViewSet, clean_views, render_batch


def _to_input(batch_bgr: np.ndarray, device: str = "cpu", normalize: Normalizer = Normalizer()) -> torch.Tensor:
    """Inference input: channels-last makes no-grad forwards ~2x faster on CPU (oneDNN)."""
    return torch.from_numpy(normalize(batch_bgr)).to(device).contiguous(memory_format=torch.channels_last)


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, images: Sequence[np.ndarray], hw: tuple[int, int],
                   batch_size: int = 64, views: Optional[ViewSet] = None, progress: bool = False,
                   device: str = "cpu") -> nn.Module:
    """Re-estimate every BatchNorm's running statistics on ``images`` at input size ``hw``.

    AdaBN (Li et al., 2016) / "precise BN": the statistics a 256x128-trained network keeps
    are wrong at 128x64; a forward pass in train mode with a cumulative average (momentum
    None) over the clean adaptation crops fixes them without touching any weight. The
    model (already on ``device``) is left in eval mode. Batches are drawn in a seeded random order: crops
    listed by identity (Market-1501's file names) would give batches of 3-4 people whose variances, averaged,
    underestimate the population's (measured: 0.47 rank-1 at 128x64).
    """
    if not images:
        raise ValueError("recalibrate_bn needs at least one image")
    views = views if views is not None else clean_views(len(images))
    bns = batchnorms(model)
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    order = np.random.default_rng(0).permutation(len(images))
    starts = range(0, len(images), batch_size)
    starts = progress_bar(starts, enabled=progress, desc=f"BN statistics @ {hw[0]}x{hw[1]}", leave=False)
    for s in starts:
        idx = [int(i) for i in order[s:s + batch_size]]
        if len(idx) < 2 and s > 0:  # a batch of one cannot give BatchNorm1d statistics
            continue
        model(_to_input(render_batch(images, views, idx, hw), device))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    return model.eval()


def bn_subset(images: Sequence[np.ndarray], limit: int) -> list:
    """At most ``limit`` images, evenly spaced: BN statistics settle long before 13k crops
    (precise BN uses a few thousand), and every pass over the data costs minutes on a CPU."""
    if limit <= 0 or len(images) <= limit:
        return list(images)
    return [images[int(i)] for i in np.linspace(0, len(images) - 1, limit).round()]
