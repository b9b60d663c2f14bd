"""Analysis: the Pareto frontier, INT8 against FP32, and the configuration to recommend for a latency budget."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from .results import ReportData, config_label, model_key, setting_key

# mAP points within which the budget recommendation calls two configurations equally accurate.
DEFAULT_ACCURACY_TOL = 0.5


def pareto_front(points: Sequence[tuple[float, float]], y_tol: float = 0.0) -> list[int]:
    """Indices of the points no other point beats: lower-or-equal x (latency) AND higher-or-equal y
    (accuracy), strictly better in one. Returned in increasing x.

    ``y_tol``: accuracies closer than this count as equal (the same network on two runtimes
    differs in the last float digits; the faster one should win, not both stay).
    """
    if y_tol < 0:
        raise ValueError(f"y_tol must be >= 0, got {y_tol}")
    pts = [(float(x), float(y)) for x, y in points]
    front = []
    for i, (x, y) in enumerate(pts):
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        dominated = any((x2 <= x and y2 >= y - y_tol) and (x2 < x or y2 > y + y_tol)
                        for j, (x2, y2) in enumerate(pts) if j != i and math.isfinite(x2) and math.isfinite(y2))
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (pts[i][0], -pts[i][1]))


def int8_comparisons(rows: Sequence[Mapping]) -> list[dict]:
    """INT8 vs FP32 of the same model, runtime, batch, mode, threads and device (p50).

    ``beats`` is False where INT8 is not faster: worth flagging, since INT8 costs accuracy and
    only pays off on hardware with fast int8 paths (VNNI / AMX / DP4A / tensor cores).
    """
    def key(r):
        return (*model_key(r), r.get("runtime"), r.get("batch"), r.get("mode"), r.get("threads"), r.get("device"))

    fp32 = {key(r): r for r in rows if r.get("precision") == "fp32"}
    out = []
    for r in rows:
        if r.get("precision") != "int8" or key(r) not in fp32:
            continue
        f = fp32[key(r)]
        speedup = f["latency_ms_p50"] / r["latency_ms_p50"] if r["latency_ms_p50"] > 0 else float("inf")
        out.append({"config": config_label(r), "runtime": r["runtime"], "batch": r["batch"], "mode": r["mode"],
                    "fp32_ms": f["latency_ms_p50"], "int8_ms": r["latency_ms_p50"], "speedup": round(speedup, 3),
                    "beats": r["latency_ms_p50"] < f["latency_ms_p50"]})
    return out


def int8_accuracy_cost(accuracy: Sequence[Mapping]) -> list[dict]:
    """mAP of INT8 minus FP32 (mean over protocols) per model and runtime, where both were evaluated."""
    mean = mean_accuracy(accuracy)
    out = []
    for key, value in mean.items():
        *model, runtime, precision = key
        fp32 = mean.get((*model, runtime, "fp32"))
        if precision == "int8" and fp32 is not None:
            label = config_label(dict(zip(("variant", "width", "res", "peer"), model)))
            out.append({"config": label, "runtime": runtime, "delta_map": round(value - fp32, 2)})
    return out


def mean_accuracy(accuracy: Sequence[Mapping], metric: str = "mAP") -> dict[tuple, float]:
    """Setting key -> ``metric`` averaged over the protocols measured (grid role only)."""
    acc: dict[tuple, list[float]] = {}
    for a in accuracy:
        if a.get("role", "grid") != "grid":
            continue
        acc.setdefault(setting_key(a), []).append(float(a[metric]))
    return {k: float(np.mean(v)) for k, v in acc.items()}


def tradeoff_points(data: ReportData, batch: int | None = None, mode: str = "extractor",
                    y: str = "mAP") -> list[dict]:
    """Plot / recommendation candidates: one per model x runtime x precision at one batch size.

    ``y="mAP"`` (or "rank1"): mean over the protocols measured; configurations without it
    (random weights, no labelled data) are left out. ``y="macs"``: mult-adds (peers have none).
    """
    rows = [r for r in data.rows if r.get("mode") == mode]
    if not rows:
        return []
    batch = batch or min(int(r["batch"]) for r in rows)
    acc = mean_accuracy(data.accuracy, y) if y != "macs" else {}
    out = []
    for r in rows:
        if int(r["batch"]) != batch:
            continue
        value = r.get("macs") if y == "macs" else acc.get(setting_key(r))
        if value is None:
            continue
        out.append({"label": config_label(r), "runtime": r["runtime"], "precision": r["precision"],
                    "peer": bool(r.get("peer")), "latency_ms_p50": r["latency_ms_p50"],
                    "latency_ms_p90": r["latency_ms_p90"], "y": float(value), "batch": batch,
                    "weights": r.get("weights")})
    for i in pareto_front([(p["latency_ms_p50"], p["y"]) for p in out], y_tol=0.05 if y != "macs" else 0.0):
        out[i]["frontier"] = True
    return out


def recommend(candidates: Sequence[Mapping], budget_ms: float, stat: str = "p90",
              metric_name: str = "mAP", y_tol: float = 0.05) -> dict:
    """The most accurate osnet_edge configuration whose ``stat`` latency fits ``budget_ms``.

    Accuracies within ``y_tol`` count as equal (one network on two runtimes differs only in
    float rounding) and then the faster one wins. Every other candidate gets the reason it
    lost; peers are judged by the same rule and reported beside the choice (not chosen: they
    are what the user would deploy instead, so the report says when one is better). An INT8
    configuration measured slower than the FP32 of the same model on the same runtime is never
    chosen: on CPUs without fast int8 paths it only costs accuracy.
    """
    if not budget_ms > 0:
        raise ValueError(f"budget must be a positive number of milliseconds, got {budget_ms!r}")
    if stat not in ("p50", "p90"):
        raise ValueError(f"stat must be 'p50' or 'p90', got {stat!r}")
    lat = f"latency_ms_{stat}"
    own = [c for c in candidates if not c.get("peer")]
    fp32 = {(c["label"], c["runtime"]): c[lat] for c in own if c["precision"] == "fp32"}
    slower_int8 = {id(c) for c in own if c["precision"] == "int8"
                   and c[lat] >= fp32.get((c["label"], c["runtime"]), float("inf"))}
    fits = [c for c in own if c[lat] <= budget_ms and id(c) not in slower_int8]
    choice = None
    if fits:
        best = max(c["y"] for c in fits)
        choice = min((c for c in fits if c["y"] >= best - y_tol), key=lambda c: (c[lat], -c["y"]))
    reasons = []
    for c in own:
        if c is choice:
            continue
        name = f"{c['label']} {c['runtime']}/{c['precision']}"
        if id(c) in slower_int8:
            why = (f"INT8 slower than FP32 on this machine: {stat} {c[lat]:.2f} ms >= "
                   f"{fp32[(c['label'], c['runtime'])]:.2f} ms (no accuracy to gain)")
        elif choice is None or c[lat] > budget_ms:
            why = f"over budget: {stat} {c[lat]:.2f} ms > {budget_ms:g} ms"
        elif c["y"] < choice["y"] - y_tol:
            why = f"less accurate: {metric_name} {c['y']:.1f} < {choice['y']:.1f}"
        else:
            within = f" within {y_tol:g}" if y_tol else ""
            why = (f"as accurate ({metric_name} {c['y']:.1f}{within}) but slower: {stat} {c[lat]:.2f} ms >= "
                   f"{choice[lat]:.2f} ms")
        reasons.append({"config": name, "reason": why})
    peers_better = [c for c in candidates if c.get("peer") and c[lat] <= budget_ms
                    and (choice is None or c["y"] > choice["y"] + y_tol)]
    return {"budget_ms": budget_ms, "stat": stat, "metric": metric_name, "choice": choice, "reasons": reasons,
            "peers_better": sorted(peers_better, key=lambda c: -c["y"])}
