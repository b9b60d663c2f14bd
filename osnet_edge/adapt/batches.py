"""Training batches: random, or P identities x K crops for the triplet loss."""
from __future__ import annotations

import numpy as np

from .config import AdaptConfig
from .data import AdaptationData


def _random_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n)
    num = max(1, n // batch_size)
    if n < batch_size:
        return [order]
    return [order[i * batch_size:(i + 1) * batch_size] for i in range(num)]


def _pk_batches(labels: np.ndarray, batch_size: int, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """P identities x K crops per batch (torchreid's RandomIdentitySampler); ids with fewer
    than K crops are sampled with replacement."""
    groups: dict[int, list[np.ndarray]] = {}
    for pid in np.unique(labels):
        idx = rng.permutation(np.nonzero(labels == pid)[0])
        if len(idx) < k:
            idx = rng.choice(idx, k, replace=True)
        groups[int(pid)] = [idx[i:i + k] for i in range(0, len(idx) - k + 1, k)]
    p = batch_size // k
    available = [pid for pid in groups if groups[pid]]
    if len(available) < 2:
        raise ValueError("triplet loss needs at least 2 identities in the adaptation data")
    p = min(p, len(available))
    batches = []
    while len(available) >= p:
        chosen = rng.choice(available, p, replace=False)
        batch = []
        for pid in chosen:
            batch.append(groups[int(pid)].pop())
            if not groups[int(pid)]:
                available.remove(int(pid))
        batches.append(np.concatenate(batch))
    return batches


def batches_for(data: AdaptationData, cfg: AdaptConfig, rng: np.random.Generator) -> list[np.ndarray]:
    if "triplet" in cfg.losses and data.labels is not None:
        return _pk_batches(data.labels, cfg.batch_size, cfg.instances_per_id, rng)
    return _random_batches(len(data), cfg.batch_size, rng)
