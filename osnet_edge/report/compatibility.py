"""Embedding compatibility for mixed fleets: can queries from one runtime / precision search a
gallery embedded by another? Cosine agreement on the same images and cross-retrieval mAP."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..metrics import cosine_distance, evaluate_rank
from .evaluation import EvalSet
from .results import config_label, point_base


def compatibility_matrices(models: Mapping[tuple, Sequence[Any]], bundles: Mapping[Any, Any],
                           evalsets: Sequence[EvalSet], features: Mapping[tuple, tuple[np.ndarray, np.ndarray]],
                           fidelity_features: Mapping[Any, np.ndarray], fidelity_images: int,
                           weights: Callable[[float, float], str | None]) -> list[dict]:
    """One matrix per model measured in two or more settings: cosine and cross-retrieval mAP on the
    first protocol where every setting was evaluated; without labelled data, cosine only on the
    fidelity images of one model (a trained one first)."""
    multi = {k: sorted(m, key=lambda p: (p.runtime, p.precision != "fp32", p.precision))
             for k, m in models.items() if len(m) >= 2}
    out = []
    for members in multi.values():
        if evalsets and all((p, evalsets[0].name) in features for p in members):
            out.append(_labelled_matrix(members, evalsets[0], features, bundles))
    if not out and multi:
        key = sorted(multi, key=lambda k: weights(k[1], k[2]) is None)[0]
        members = [p for p in multi[key] if p in fidelity_features]
        if len(members) >= 2:
            cos = [[float(np.mean(_row_cos(fidelity_features[a], fidelity_features[b]))) for b in members]
                   for a in members]
            out.append({"model": _model_name(members, bundles, "; no labelled data: cosine only"),
                        "members": [f"{p.runtime}/{p.precision}" for p in members], "cosine": cos,
                        "cross_map": None, "protocol": None, "images": fidelity_images})
    return out


def _labelled_matrix(members: Sequence[Any], es: EvalSet, features: Mapping[tuple, tuple[np.ndarray, np.ndarray]],
                     bundles: Mapping[Any, Any]) -> dict:
    feats = {p: features[(p, es.name)] for p in members}
    cos = [[float(np.mean(_row_cos(np.vstack(feats[a]), np.vstack(feats[b])))) for b in members]
           for a in members]
    cross = [[100.0 * evaluate_rank(cosine_distance(feats[a][0], feats[b][1]), es.q_pids, es.g_pids,
                                    es.q_camids, es.g_camids, max_rank=min(50, len(es.gallery)))[1]
              for b in members] for a in members]
    return {"model": _model_name(members, bundles), "members": [f"{p.runtime}/{p.precision}" for p in members],
            "cosine": cos, "cross_map": cross, "protocol": es.name, "images": len(es)}


def _model_name(members: Sequence[Any], bundles: Mapping[Any, Any], note: str = "") -> str:
    """'x0.25@0.5 (osnet_x0_25_msmt17)': the configuration and its weights."""
    from ..profiler import weights_label

    return f"{config_label(point_base(members[0], None))} ({weights_label(bundles[members[0]].manifest)}{note})"


def _row_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from ..verify import cosine_rows

    return cosine_rows(a, b)
