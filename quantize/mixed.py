"""Accuracy-aware mixed precision: the most noise-adding layers kept in fp32, doubling their number until
the fidelity target holds (at most a fraction of the layers), the all-INT8 model kept when that does not help."""
from __future__ import annotations

from .fidelity import fidelity_report, meets, score, short


def mixed_precision(mod, attempt, source_onnx, calib, method, per_channel, excluded, fidelity, reference,
                     min_cos, min_p1, max_kept_fraction, history, backend_options):
    """Keep the most noise-adding layers in fp32, doubling their number until the target holds."""
    from .sensitivity import layer_sensitivity

    ranking = layer_sensitivity(str(source_onnx), calib, symmetric=mod.ACTIVATION_SCHEME == "int8 symmetric",
                                per_channel=per_channel, exclude=excluded,
                                placement=backend_options.get("placement", "conv"))
    candidates = [r["node"] for r in ranking if r["node"] not in excluded]
    limit = max(1, int(max_kept_fraction * len(ranking)))
    best = None
    k, step = 1, 0
    while True:
        step += 1
        keep = excluded + candidates[:k]
        work, info, emb = attempt(keep, f"mp{step}")
        fid = fidelity_report(emb, reference)
        history.append({"kept_fp32": len(keep), **short(fid)})
        if best is None or score(fid, min_cos, min_p1) > score(best[3], min_cos, min_p1):
            best = (work, info, emb, fid, keep)
        if meets(fid, min_cos, min_p1) or k >= min(limit, len(candidates)):
            break
        k = min(k * 2, limit, len(candidates))
    if score(fidelity, min_cos, min_p1) >= score(best[3], min_cos, min_p1):
        best = (None, None, None, fidelity, excluded)  # keeping layers in fp32 did not help: all-int8 stays
    work, info, emb, fid, keep = best
    mixed = {"kept_fp32": keep, "sensitivity_top": ranking[:min(20, len(ranking))],
             "ranking_method": "per-layer added quantization noise (1 - cosine of each layer output, "
                               "int8 vs fp32, minus that of its input), measured with ONNX Runtime QDQ",
             "attempts": step}
    return work, info, emb, fid, mixed
