"""Embedding and rank-1 / mAP of a torch model (or any embedder) on the agreed evaluation protocols."""
from __future__ import annotations

import os
from functools import lru_cache
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models import input_size
from ..preprocess import preprocess, read_image

PathLike = Union[str, "os.PathLike[str]"]


@torch.no_grad()
def embed(model: nn.Module, crops: Sequence[np.ndarray], hw: tuple[int, int], batch_size: int = 128) -> np.ndarray:
    """(N, 512) L2-normalised embeddings with the Extractor's preprocessing, model in eval mode."""
    was_training = model.training
    model.eval()
    out = []
    for s in range(0, len(crops), batch_size):
        x = torch.from_numpy(preprocess(crops[s:s + batch_size], hw)).contiguous(memory_format=torch.channels_last)
        out.append(F.normalize(model(x), dim=1).numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, 512), np.float32)


@lru_cache(maxsize=4)
def _protocol_images(name: str, root: Optional[str]) -> tuple:
    from ..data import EVAL_PROTOCOLS

    query, gallery = EVAL_PROTOCOLS[name](root)
    samples = query + gallery
    images = [read_image(s.path) for s in samples]
    if any(img is None for img in images):
        raise ValueError(f"unreadable images in protocol {name}")
    return (images, np.array([s.pid for s in samples]), np.array([s.camid for s in samples]), len(query))


def evaluate(model_or_embed: Union[nn.Module, Callable[[list], np.ndarray]], res: float = 1.0,
             root: Optional[PathLike] = None, protocols: Optional[Sequence[str]] = None) -> dict:
    """Rank-1/5/10 and mAP (percent) on the agreed evaluation protocols of the shared data
    (default: Market-1501 when present, else the CUHK protocols: :func:`osnet_edge.data.default_protocols`).

    ``model_or_embed``: a torch model (run at ``res`` with the Extractor's preprocessing) or
    any callable crops -> embeddings (an Extractor, a ForeignModel).
    """
    from ..metrics import rank_metrics

    from ..data import default_protocols

    out = {}
    for name in protocols if protocols is not None else default_protocols(root):
        images, pids, camids, nq = _protocol_images(name, None if root is None else str(root))
        if isinstance(model_or_embed, nn.Module):
            feats = embed(model_or_embed, images, input_size(res))
        else:
            feats = np.asarray(model_or_embed(images), dtype=np.float32)
        out[name] = rank_metrics(feats[:nq], feats[nq:], pids[:nq], pids[nq:], camids[:nq], camids[nq:])
    return out
