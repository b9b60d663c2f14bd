"""Re-ID retrieval metrics: cosine distance and the Market-1501 CMC / mAP protocol.

numpy only, so that accuracy can be measured on the device side (no torch). The ranking
protocol reproduces torchreid's ``eval_market1501`` (torchreid/metrics/rank.py) so that our
numbers are comparable with published torchreid numbers; it is vectorised and processed in
query chunks so that a 20k x 20k evaluation fits in bounded memory.
"""
from __future__ import annotations

import warnings
from typing import Iterable

import numpy as np

__all__ = ["cosine_distance", "euclidean_distance", "evaluate_rank", "rank_metrics"]

# Upper bound on the elements of one (query chunk x gallery) working array in evaluate_rank:
# 16M elements -> ~128 MB per int64 array, a handful of them alive at once.
_MAX_CHUNK_ELEMENTS = 1 << 24


def _l2_normalise(x: np.ndarray, name: str) -> np.ndarray:
    """Rows scaled to unit L2 norm in float32; all-zero rows stay zero (so distance 1, not NaN)."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, D), got shape {x.shape}")
    x = x.astype(np.float32, copy=True)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf features")
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    nonzero = norms > 0
    x[nonzero] /= norms[nonzero, None].astype(np.float32)
    x[~nonzero] = 0.0
    return x


def cosine_distance(qf: np.ndarray, gf: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """``1 - cos(q, g)`` for every query/gallery pair, float32 of shape (Q, G).

    Rows are L2-normalised here (callers need not); a zero feature row is treated as having
    distance 1 to everything instead of producing NaN. The product is written chunk by chunk
    straight into the result, so beyond the (Q, G) output only the two normalised feature
    copies are held — the result itself is 1.6 GB at 20k x 20k. Values are not clipped, so
    rounding can leave them a hair outside [0, 2].
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    q = _l2_normalise(qf, "qf")
    g = _l2_normalise(gf, "gf")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"feature dims differ: qf has {q.shape[1]}, gf has {g.shape[1]}")
    out = np.empty((q.shape[0], g.shape[0]), dtype=np.float32)
    gt = g.T
    for start in range(0, q.shape[0], chunk):
        block = out[start:start + chunk]
        np.matmul(q[start:start + chunk], gt, out=block)
        np.subtract(np.float32(1.0), block, out=block)
    return out


def _as_1d(a, n: int, name: str, expected: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{name} must be 1-D of length {n} ({expected}), got shape {a.shape}")
    return a


def evaluate_rank(distmat: np.ndarray, q_pids, g_pids, q_camids, g_camids,
                  max_rank: int = 50, chunk: int = 1024) -> tuple[np.ndarray, float]:
    """Market-1501 protocol CMC and mAP, as torchreid's ``eval_market1501``.

    For each query the gallery is sorted by ascending distance; gallery samples with the
    query's pid *and* camid are removed (same-camera re-detections are not re-ID); queries
    left without any true match are skipped. Returns ``(cmc, mAP)``: cmc is float32 of
    length ``min(max_rank, G)`` with values in [0, 1] averaged over valid queries, mAP a
    float in [0, 1].

    Ties: the sort is ``np.argsort(..., kind="stable")``, i.e. equal distances keep gallery
    index order. torchreid calls plain ``np.argsort`` (introsort, not stable beyond tiny
    rows), whose tie order is unspecified; the two agree whenever no distances tie.

    Where torchreid would crash (a valid query with fewer than ``max_rank`` kept gallery
    samples makes its per-query cmc arrays ragged), the cmc simply stays 1 past the end,
    which is the natural continuation (the match was already found).

    Queries are processed ``chunk`` rows at a time (fewer for very large galleries), so the
    working memory stays bounded (a full 20k x 20k int64 argsort would be 3.2 GB).
    """
    distmat = np.asarray(distmat)
    if distmat.ndim != 2:
        raise ValueError(f"distmat must be 2-D (num_query, num_gallery), got shape {distmat.shape}")
    num_q, num_g = distmat.shape
    if num_q == 0 or num_g == 0:
        raise ValueError(f"distmat must have at least one query and one gallery sample, got {distmat.shape}")
    q_pids = _as_1d(q_pids, num_q, "q_pids", "one per distmat row")
    q_camids = _as_1d(q_camids, num_q, "q_camids", "one per distmat row")
    g_pids = _as_1d(g_pids, num_g, "g_pids", "one per distmat column")
    g_camids = _as_1d(g_camids, num_g, "g_camids", "one per distmat column")
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if num_g < max_rank:
        warnings.warn(f"number of gallery samples is quite small ({num_g}); max_rank reduced "
                      f"from {max_rank} to {num_g}", stacklevel=2)
        max_rank = num_g

    rows = max(1, min(chunk, _MAX_CHUNK_ELEMENTS // num_g))
    # first_hit_counts[r] = number of valid queries whose first true match is at rank r (0-based)
    first_hit_counts = np.zeros(max_rank, dtype=np.int64)
    all_ap: list[np.ndarray] = []
    num_valid_q = 0
    for start in range(0, num_q, rows):
        d = distmat[start:start + rows]
        if np.isnan(d).any():
            raise ValueError("distmat contains NaN")
        qp = q_pids[start:start + rows, None]
        qc = q_camids[start:start + rows, None]
        order = np.argsort(d, axis=1, kind="stable")
        match = g_pids[order] == qp
        same_cam = g_camids[order] == qc
        keep = ~(match & same_cam)           # drop same pid + same camera
        valid = match & ~same_cam            # true matches among the kept samples
        del order, same_cam, match
        num_rel = valid.sum(axis=1)
        has_match = num_rel > 0
        if not has_match.any():
            continue
        # 1-based rank of each kept sample once the removed ones are gone
        kept_rank = np.cumsum(keep, axis=1, dtype=np.int32)
        hits_so_far = np.cumsum(valid, axis=1, dtype=np.int32)
        r, c = np.nonzero(valid)
        precision = hits_so_far[r, c] / kept_rank[r, c].astype(np.float64)
        ap = np.bincount(r, weights=precision, minlength=d.shape[0])[has_match] / num_rel[has_match]
        all_ap.append(ap)
        first_col = np.argmax(valid[has_match], axis=1)
        first_rank = kept_rank[np.nonzero(has_match)[0], first_col] - 1
        first_hit_counts += np.bincount(first_rank[first_rank < max_rank], minlength=max_rank)
        num_valid_q += int(has_match.sum())

    if num_valid_q == 0:
        raise ValueError("no query has a valid match in the gallery (every query identity is "
                         "absent from the gallery or only seen by the query's own camera)")
    cmc = (np.cumsum(first_hit_counts) / num_valid_q).astype(np.float32)
    mAP = float(np.mean(np.concatenate(all_ap)))
    return cmc, mAP


def euclidean_distance(qf: np.ndarray, gf: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Squared Euclidean distances (Q, G) of raw (unnormalised) features: torchreid's default
    ``metric='euclidean'``, which the paper's conference-version tables used."""
    qf = np.asarray(qf, np.float64)
    gf = np.asarray(gf, np.float64)
    if qf.ndim != 2 or gf.ndim != 2 or qf.shape[1] != gf.shape[1]:
        raise ValueError(f"expected (Q, D) and (G, D) features, got {qf.shape} and {gf.shape}")
    g2 = (gf ** 2).sum(1)
    out = np.empty((len(qf), len(gf)), np.float32)
    for s in range(0, len(qf), chunk):
        q = qf[s:s + chunk]
        out[s:s + chunk] = (q ** 2).sum(1)[:, None] + g2[None, :] - 2.0 * q @ gf.T
    return out


def rank_metrics(qf: np.ndarray, gf: np.ndarray, q_pids, g_pids, q_camids, g_camids,
                 ranks: Iterable[int] = (1, 5, 10), metric: str = "cosine") -> dict:
    """Distance + Market-1501 protocol in one call, as percentages (0-100).

    ``metric``: "cosine" (the product's: embeddings are L2-normalised) or "euclidean" (squared,
    on the features as given). Returns ``{"rank1": .., "rank5": .., "rank10": .., "mAP": ..,
    "num_query": Q, "num_gallery": G}`` (one ``rank<k>`` key per requested rank). A rank beyond
    the gallery size reports the CMC at the last rank (every valid query is matched by then).
    """
    ranks = [int(k) for k in ranks]
    if not ranks or min(ranks) < 1:
        raise ValueError(f"ranks must be positive integers, got {ranks}")
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    distmat = cosine_distance(qf, gf) if metric == "cosine" else euclidean_distance(qf, gf)
    num_q, num_g = distmat.shape
    # capping max_rank at G avoids evaluate_rank's small-gallery warning; handled below
    cmc, mAP = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids,
                             max_rank=min(max(ranks), num_g))
    out: dict = {f"rank{k}": 100.0 * float(cmc[min(k, len(cmc)) - 1]) for k in ranks}
    out["mAP"] = 100.0 * mAP
    out["num_query"] = int(num_q)
    out["num_gallery"] = int(num_g)
    return out
