"""Plots: latency against accuracy (or mult-adds), one marker per runtime / precision, the Pareto frontier."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

PRECISION_COLOURS = {"fp32": "#1f77b4", "fp16": "#2ca02c", "bf16": "#9467bd", "int8": "#ff7f0e"}
RUNTIME_MARKERS = {"onnxruntime": "o", "openvino": "s", "tensorrt": "^", "litert": "D"}
PEER_COLOUR = "#555555"


def plot_tradeoff(points: Sequence[Mapping], path: str | os.PathLike, y_label: str, title: str,
                  subtitle: str = "", log_y: bool = False) -> Path:
    """Latency (x) vs accuracy or mult-adds (y), one marker per runtime/precision, Pareto frontier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    if not points:
        raise ValueError("nothing to plot")
    fig, ax = plt.subplots(figsize=(10, 6.5), dpi=120)
    xs = [p["latency_ms_p50"] for p in points]
    log_x = max(xs) / max(min(xs), 1e-6) > 8
    seen = {}
    for p in points:
        if p["peer"]:
            marker, colour, key = "*", PEER_COLOUR, "peer (foreign model)"
            size = 170
        else:
            marker = RUNTIME_MARKERS.get(p["runtime"], "D")
            colour = PRECISION_COLOURS.get(p["precision"], "#d62728")
            key, size = f"{p['runtime']} {p['precision']}", 70
        edge = "black" if p.get("frontier") else "none"
        ax.scatter(p["latency_ms_p50"], p["y"], marker=marker, c=colour, s=size, edgecolors=edge,
                   linewidths=1.3, zorder=3, alpha=0.9)
        seen.setdefault(key, (marker, colour, size))
    front = sorted((p for p in points if p.get("frontier")), key=lambda p: p["latency_ms_p50"])
    if front:
        fx = [p["latency_ms_p50"] for p in front]
        fy = [p["y"] for p in front]
        ax.step(fx, fy, where="post", linestyle="--", color="black", linewidth=1.1, alpha=0.6, zorder=2)
    if log_x:
        ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    for axis, is_log in ((ax.xaxis, log_x), (ax.yaxis, log_y)):
        if is_log:
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(f"{v:g}")[0] in "25" else ""))
    ax.margins(x=0.08, y=0.08)
    ax.set_xlabel("latency per call, p50 (ms), batch %d, end to end through the Extractor" % points[0]["batch"])
    ax.set_ylabel(y_label)
    ax.grid(True, which="both", alpha=0.25)
    handles = [Line2D([], [], marker=m, color=c, linestyle="none", markersize=9 if m != "*" else 13, label=k)
               for k, (m, c, _) in sorted(seen.items(), key=lambda kv: (kv[0].startswith("peer"), kv[0]))]
    handles.append(Line2D([], [], linestyle="--", color="black", alpha=0.6,
                          label="Pareto frontier (outlined points)"))
    ncol = min(len(handles), 4)
    rows = math.ceil(len(handles) / ncol)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=9, frameon=False)
    ax.set_title(title + (f"\n{subtitle}" if subtitle else ""), fontsize=11)
    fig.tight_layout(rect=(0, 0.035 * rows + 0.01, 1, 1))
    _place_labels(fig, ax, points)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _box_distance(box: tuple[float, float, float, float], x: float, y: float) -> float:
    """Distance from a point to a rectangle (x0, y0, x1, y1); 0 inside it."""
    dx = max(box[0] - x, 0.0, x - box[2])
    dy = max(box[1] - y, 0.0, y - box[3])
    return math.hypot(dx, dy)


def _place_labels(fig: Any, ax: Any, points: Sequence[Mapping]) -> None:
    """Label points without overlaps: per point try offsets around it, keep the first whose text box
    hits no marker nor earlier label and stays inside the axes. A model's label is written once
    per cluster (its runtimes/precisions usually sit close together)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    to_display = ax.transData.transform
    inside = ax.get_window_extent(renderer)
    centres = [to_display((p["latency_ms_p50"], p["y"])) for p in points]
    occupied = [(cx - 7, cy - 7, cx + 7, cy + 7) for cx, cy in centres]
    labelled: list[tuple[str, Any]] = []
    candidates = [(6, 5, "left", "bottom"), (6, -5, "left", "top"), (-6, 5, "right", "bottom"),
                  (-6, -5, "right", "top"), (0, 10, "center", "bottom"), (0, -10, "center", "top"),
                  (10, 16, "left", "bottom"), (10, -16, "left", "top"), (-10, 16, "right", "bottom"),
                  (-10, -16, "right", "top"), (0, 24, "center", "bottom"), (0, -24, "center", "top")]
    order = sorted(range(len(points)), key=lambda i: (not points[i].get("frontier"), points[i]["latency_ms_p50"]))
    for i in order:
        p, (cx, cy) = points[i], centres[i]
        if any(lbl == p["label"] and abs(cx - px) < 45 and abs(cy - py) < 18 for lbl, (px, py) in labelled):
            continue
        style = dict(fontsize=8.5, color=PEER_COLOUR if p["peer"] else "#222222",
                     fontweight="bold" if p.get("frontier") else "normal")
        chosen = None
        for dx, dy, ha, va in candidates:
            text = ax.annotate(p["label"], (p["latency_ms_p50"], p["y"]), textcoords="offset points",
                               xytext=(dx, dy), ha=ha, va=va, **style)
            bb = text.get_window_extent(renderer)
            box = (bb.x0 - 2, bb.y0 - 1, bb.x1 + 2, bb.y1 + 1)
            fits = inside.x0 <= box[0] and box[2] <= inside.x1 and inside.y0 <= box[1] and box[3] <= inside.y1
            clash = any(box[0] < o[2] and o[0] < box[2] and box[1] < o[3] and o[1] < box[3] for o in occupied)
            # the label must sit closer to its own point than to any other, or it reads as another's
            own = _box_distance(box, cx, cy)
            ambiguous = any(_box_distance(box, ox, oy) < 1.5 * own + 4
                            for j, (ox, oy) in enumerate(centres) if j != i)
            if fits and not clash and not ambiguous:
                chosen = box
                break
            text.remove()
        if chosen is None:  # crowded: fall back to the first position
            dx, dy, ha, va = candidates[0]
            bb = ax.annotate(p["label"], (p["latency_ms_p50"], p["y"]), textcoords="offset points",
                             xytext=(dx, dy), ha=ha, va=va, **style).get_window_extent(renderer)
            chosen = (bb.x0, bb.y0, bb.x1, bb.y1)
        occupied.append(chosen)
        labelled.append((p["label"], (cx, cy)))
