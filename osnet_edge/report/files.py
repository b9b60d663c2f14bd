"""Writing a report folder: report.md, report.csv, report.json and the PNG plots."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .markdown import render_markdown
from .plots import plot_tradeoff
from .recommendation import DEFAULT_ACCURACY_TOL, tradeoff_points
from .results import ReportData, config_label, protocols_in, setting_key


def report_csv_rows(data: ReportData) -> list[dict]:
    """Latency rows joined with accuracy (per protocol) and fidelity, one per latency row."""
    acc = {}
    for a in data.accuracy:
        if a.get("role", "grid") == "grid":
            acc.setdefault(setting_key(a), {}).update({f"{a['protocol']}_rank1": round(a["rank1"], 2),
                                                       f"{a['protocol']}_mAP": round(a["mAP"], 2)})
    fid = {setting_key(f): round(f["cosine_mean"], 5) for f in data.fidelity}
    out = []
    for r in data.rows:
        row = {"config": config_label(r), **{k: v for k, v in r.items() if k != "bundle"}}
        row.update(acc.get(setting_key(r), {}))
        row["cosine_vs_fp32"] = fid.get(setting_key(r))
        out.append(row)
    return out


def write_report(data: ReportData, out_dir: str | os.PathLike, budget_ms: float | None = None,
                 budget_stat: str = "p90", accuracy_tol: float = DEFAULT_ACCURACY_TOL) -> dict[str, Path]:
    """report.md, report.csv, report.json and the PNG plots in ``out_dir``; returns their paths."""
    from ..machine import machine_summary
    from ..profiler import rows_to_csv

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    plots: dict[str, str] = {}
    batches = sorted({int(r["batch"]) for r in data.rows if r.get("mode") == "extractor"})
    cpu = machine_summary(dict(data.machine)).split(", flags")[0]
    if batches:
        pts = tradeoff_points(data, batches[0], y="mAP") if data.accuracy else []
        if pts:
            protocols = protocols_in(data.accuracy)
            paths["plot_map"] = plot_tradeoff(
                pts, out / "tradeoff_map.png", f"mAP (%), mean of {', '.join(protocols)}",
                "Latency vs accuracy (higher and further left is better)", cpu)
            plots["Latency vs mAP"] = "tradeoff_map.png"
        pts = tradeoff_points(data, batches[0], y="macs")
        if pts:
            for p in pts:
                p["y"] = p["y"] / 1e6
            paths["plot_macs"] = plot_tradeoff(
                pts, out / "tradeoff_macs.png", "mult-adds per image (M, log scale)",
                "Latency vs model size (mult-adds: a proxy where accuracy is unknown)", cpu, log_y=True)
            plots["Latency vs mult-adds"] = "tradeoff_macs.png"
    md = render_markdown(data, budget_ms, budget_stat, plots, accuracy_tol)
    paths["md"] = out / "report.md"
    paths["md"].write_text(md, encoding="utf-8")
    paths["csv"] = out / "report.csv"
    paths["csv"].write_text(rows_to_csv(report_csv_rows(data)) if data.rows else "", encoding="utf-8")
    paths["json"] = out / "report.json"
    paths["json"].write_text(json.dumps(data.to_json(), indent=1, default=_json_default), encoding="utf-8")
    return paths


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
