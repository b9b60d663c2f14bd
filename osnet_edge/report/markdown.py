"""The report as Markdown: hardware, model size, latency, INT8, accuracy, fidelity, plots,
recommendation, compatibility, peers; one function per section."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from .evaluation import PROTOCOL_ORDER
from .recommendation import DEFAULT_ACCURACY_TOL, int8_accuracy_cost, int8_comparisons, recommend, tradeoff_points
from .results import ReportData, config_label, model_key, protocols_in, setting_key


def _fmt_ms(v: Any) -> str:
    return "—" if v is None else f"{v:.2f}"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def hardware_line(machine: Mapping) -> str:
    from ..machine import machine_summary

    versions = ", ".join(f"{k} {v}" for k, v in (machine.get("versions") or {}).items() if v)
    return machine_summary(dict(machine)) + (f". Versions: {versions}" if versions else "")


def _counts_table(rows: Sequence[Mapping]) -> str:
    seen, table = set(), []
    for r in rows:
        if r.get("peer") or model_key(r) in seen:
            continue
        seen.add(model_key(r))
        table.append(r)
    table.sort(key=lambda r: (r["variant"], -float(r["width"]), -float(r["res"])))
    return _md_table(["model", "width", "res", "input", "params", "mult-adds", "weights"],
                     [[r["variant"], f"{float(r['width']):g}", f"{float(r['res']):g}", f"{r['input_h']}x{r['input_w']}",
                       f"{r['params'] / 1e6:.1f}M" if r.get("params") else "—",
                       f"{r['macs'] / 1e6:.1f}M" if r.get("macs") else "—", r.get("weights") or "—"] for r in table])


def _latency_pivot(rows: Sequence[Mapping], mode: str, batch: int, value: str = "latency_ms_p50",
                   fmt: Callable[[Any], str] = _fmt_ms) -> str | None:
    sel = [r for r in rows if r["mode"] == mode and int(r["batch"]) == batch]
    if not sel:
        return None
    settings = []
    for r in sel:
        s = (r["runtime"], r["precision"])
        if s not in settings:
            settings.append(s)
    models = []
    for r in sel:
        if model_key(r) not in [m for m, _ in models]:
            models.append((model_key(r), r))
    models.sort(key=lambda m: (m[1].get("peer", False), m[1]["variant"], -float(m[1].get("width") or 0),
                               -float(m[1].get("res") or 0)))
    index = {(model_key(r), r["runtime"], r["precision"]): r for r in sel}
    body = []
    for key, r in models:
        macs = f"{r['macs'] / 1e6:.1f}M" if r.get("macs") else "—"
        body.append([config_label(r), f"{r['input_h']}x{r['input_w']}", macs]
                    + [fmt(index[(key, *s)][value]) if (key, *s) in index else "—" for s in settings])
    return _md_table(["config", "input", "mult-adds"] + [f"{rt} {p}" for rt, p in settings], body)


def _accuracy_table(data: ReportData) -> str:
    protocols = [p for p in PROTOCOL_ORDER if any(a["protocol"] == p for a in data.accuracy)]
    protocols += sorted({a["protocol"] for a in data.accuracy} - set(protocols))
    index = {(setting_key(a), a.get("role", "grid"), a["protocol"]): a for a in data.accuracy}
    settings: list[tuple[tuple, Mapping]] = []
    for a in data.accuracy:
        if a.get("role", "grid") == "grid" and setting_key(a) not in [k for k, _ in settings]:
            settings.append((setting_key(a), a))
    settings.sort(key=lambda s: (s[1].get("peer", False), -float(s[1].get("width") or 0), -float(s[1].get("res") or 0),
                                 s[1]["runtime"], s[1]["precision"]))
    body = []
    for key, a in settings:
        cells = [config_label(a), a["runtime"], a["precision"], a.get("weights") or "—"]
        for p in protocols:
            m = index.get((key, "grid", p))
            cells += [f"{m['rank1']:.1f}", f"{m['mAP']:.1f}"] if m else ["—", "—"]
        body.append(cells)
    header = ["config", "runtime", "precision", "weights"]
    for p in protocols:
        header += [f"{p} rank-1", f"{p} mAP"]
    return _md_table(header, body)


def _adaptation_table(data: ReportData) -> str | None:
    before = [a for a in data.accuracy if a.get("role") == "before-adaptation"]
    if not before:
        return None
    protocols = [p for p in PROTOCOL_ORDER if any(a["protocol"] == p for a in before)]
    body = []
    for key in sorted({(a["width"], a["res"], a["runtime"], a["precision"]) for a in before}, key=lambda k: (-k[0], -k[1])):
        for role, title in (("before-adaptation", "before (trained at 256x128)"), ("grid", "after adaptation")):
            sel = {a["protocol"]: a for a in data.accuracy if a.get("role", "grid") == role and not a.get("peer")
                   and (a["width"], a["res"], a["runtime"], a["precision"]) == key}
            if not sel:
                continue
            any_a = next(iter(sel.values()))
            cells = [f"x{key[0]:g}@{key[1]:g}", f"{key[2]}/{key[3]}", title, any_a.get("weights") or "—"]
            for p in protocols:
                cells += [f"{sel[p]['rank1']:.1f}", f"{sel[p]['mAP']:.1f}"] if p in sel else ["—", "—"]
            body.append(cells)
    header = ["config", "runtime", "stage", "weights"] + [h for p in protocols for h in (f"{p} rank-1", f"{p} mAP")]
    return _md_table(header, body)


def _fidelity_table(data: ReportData) -> str:
    body = [[config_label(f), f"{f['runtime']}/{f['precision']}", f["reference"], f"{f['cosine_mean']:.4f}",
             f"{f['cosine_min']:.4f}", f"{f['cosine_p1']:.4f}", f.get("weights") or "—"]
            for f in sorted(data.fidelity, key=lambda f: (-float(f["width"]), -float(f["res"]), f["runtime"], f["precision"]))]
    return _md_table(["config", "runtime/precision", "reference", "cosine mean", "cosine min", "cosine p1", "weights"],
                     body)


def _compat_tables(data: ReportData) -> list[str]:
    out = []
    for c in data.compat:
        members = c["members"]
        head = f"**{c['model']}** ({c['images']} images{', ' + c['protocol'] if c.get('protocol') else ''})"
        cos = _md_table(["cosine: A \\ B"] + members,
                        [[m] + [f"{v:.4f}" for v in row] for m, row in zip(members, c["cosine"])])
        parts = [head, "", "Cosine agreement (mean over the same images, embeddings from A vs from B):", "", cos]
        if c.get("cross_map"):
            parts += ["", f"Cross-retrieval mAP (%): query embeddings from the row, gallery from the column "
                          f"({c['protocol']}):", "",
                      _md_table(["query \\ gallery"] + members,
                                [[m] + [f"{v:.1f}" for v in row] for m, row in zip(members, c["cross_map"])])]
            worst = min(v for row in c["cross_map"] for v in row)
            diag = min(c["cross_map"][i][i] for i in range(len(members)))
            parts += ["", f"Worst mixed pair: {worst:.1f} mAP vs {diag:.1f} for the worst same-setting pair "
                          f"({'safe to mix' if diag - worst <= 1.0 else 'mixing costs up to %.1f mAP points' % (diag - worst)})."]
        out.append("\n".join(parts))
    return out



def render_markdown(data: ReportData, budget_ms: float | None = None, budget_stat: str = "p90",
                    plots: Mapping[str, str] | None = None, accuracy_tol: float = DEFAULT_ACCURACY_TOL) -> str:
    """The report as Markdown (tables + plot references + recommendation).

    ``accuracy_tol``: mAP points within which the recommendation treats two configurations as
    equally accurate (and takes the faster)."""
    own_rows = [r for r in data.rows if not r.get("peer")]
    batches = sorted({int(r["batch"]) for r in data.rows})
    first_batch = batches[0] if batches else 1
    pts = tradeoff_points(data, first_batch, y="mAP") if data.accuracy else []
    md = ["# osnet_edge trade-off report", ""]
    md += _header_section(data)
    md += ["## Model size (the paper's Table 6)", "", _counts_table(own_rows) if own_rows else "_no rows_", ""]
    md += _latency_section(data, batches)
    md += _int8_section(data)
    md += _accuracy_section(data, own_rows)
    md += _fidelity_section(data)
    md += _tradeoff_section(plots or {}, pts, first_batch)
    if budget_ms is not None:
        md += _recommendation_section(data, own_rows, pts, first_batch, budget_ms, budget_stat, accuracy_tol)
    md += _compatibility_section(data)
    md += _peers_and_skipped_sections(data)
    return "\n".join(md).rstrip() + "\n"


def _header_section(data: ReportData) -> list[str]:
    """Hardware, how it was measured (and how busy the machine was), how to read the numbers."""
    s = data.settings
    md = [f"**Hardware:** {hardware_line(data.machine)}.", ""]
    if s:
        bits = []
        if s.get("created"):
            bits.append(f"generated {s['created']}")
        if s.get("threads"):
            bits.append(f"{s['threads']} inference thread{'s' if s['threads'] != 1 else ''}")
        if s.get("budget_s") is not None:
            bits.append(f"{s['budget_s']:g} s timed per row after {s.get('warmup', 0)} warm-up calls")
        if s.get("crops"):
            bits.append(f"timing inputs: {s['crops']}")
        if s.get("device"):
            bits.append(f"device {s['device']}")
        md += ["Measured: " + "; ".join(bits) + ".", ""]
        loads = [v for v in (s.get("load_average"), s.get("load_average_after_timing")) if v is not None]
        cores = data.machine.get("physical_cores") or 1
        if loads:
            busy = max(loads) > 0.5 * cores
            md += [f"System load average while timing: {' -> '.join(f'{v:g}' for v in loads)} on {cores} cores"
                   + (" — **other processes competed for the CPU: absolute timings are inflated and noisy**; "
                      "fewer threads (--threads 1) suffer less from it." if busy else " (an idle machine)."), ""]
    md += ["Latency is per call (p50 / p90 over the timed calls); *end to end* = `Extractor(crops)`: resize, "
           "normalise, infer, L2-normalise; *bare runtime* = the inference call alone on a prepared batch. "
           "Throughput = batch / mean call time. Timings on a shared or virtualised machine are noisy: "
           "compare ratios within one report, not absolute numbers across machines.", ""]
    for note in data.notes:
        md += [f"> {note}", ""]
    return md


def _latency_section(data: ReportData, batches: Sequence[int]) -> list[str]:
    """p50 per call, end to end and bare runtime, per batch size; throughput at the largest batch."""
    md = ["## Latency", ""]
    for mode, title in (("extractor", "end to end (Extractor)"), ("runtime", "bare runtime")):
        for b in batches:
            t = _latency_pivot(data.rows, mode, b)
            if t:
                md += [f"### p50 ms per call, {title}, batch {b}", "", t, ""]
    last = batches[-1] if batches else 1
    t = _latency_pivot(data.rows, "extractor", last, "throughput_ips", lambda v: f"{v:.0f}")
    if t:
        md += [f"### Throughput (images/s), end to end, batch {last}", "", t, ""]
    return md


def _int8_section(data: ReportData) -> list[str]:
    """INT8 against FP32 speed (flagged where it is not faster) and its accuracy cost."""
    comps = int8_comparisons(data.rows)
    if not comps:
        return []
    losers = [c for c in comps if not c["beats"]]
    md = ["## INT8 vs FP32 speed", ""]
    if losers:
        md += [f"**INT8 does not beat FP32 in {len(losers)} of {len(comps)} comparisons** (p50; "
               "same model, runtime, batch, mode). INT8 needs fast int8 instructions (x86: AVX512-VNNI / "
               "AVX-VNNI / AMX; ARM: dot-product; GPUs: DP4A / tensor cores) and enough work per layer "
               "to amortise its quantize/dequantize steps; small models at small inputs can lose.", ""]
    else:
        md += [f"INT8 is faster than FP32 in all {len(comps)} comparisons (p50).", ""]
    deltas = int8_accuracy_cost(data.accuracy)
    if deltas:
        md += ["INT8 accuracy cost (mAP points, mean over protocols, INT8 minus FP32 on the same runtime): "
               + "; ".join(f"{d['config']} {d['runtime']} {d['delta_map']:+.1f}" for d in deltas) + ".", ""]
    md += [_md_table(["config", "runtime", "batch", "mode", "fp32 p50 ms", "int8 p50 ms", "speed-up", ""],
                     [[c["config"], c["runtime"], c["batch"], c["mode"], _fmt_ms(c["fp32_ms"]), _fmt_ms(c["int8_ms"]),
                       f"{c['speedup']:.2f}x", "" if c["beats"] else "**INT8 not faster**"] for c in comps]), ""]
    return md


def _untrained_configs(own_rows: Sequence[Mapping]) -> list[str]:
    """Configurations exported with random weights: never given an accuracy."""
    return sorted({config_label(r) for r in own_rows if r.get("weights") == "random"})


def _accuracy_section(data: ReportData, own_rows: Sequence[Mapping]) -> list[str]:
    """Rank-1 / mAP per configuration and protocol (and before / after adaptation), or why there is none."""
    md = ["## Accuracy", ""]
    if not data.accuracy:
        return md + ["**No accuracy in this report:** accuracy needs labelled person crops (e.g. the cuhk03-val / "
                     "cuhk01-test protocols or a Market-1501-layout folder) and trained weights. Without them only "
                     "latency, model size and fidelity to FP32 are shown; fidelity says how closely a runtime/precision "
                     "reproduces the FP32 embeddings, not how well they re-identify people.", ""]
    protocols = protocols_in(data.accuracy)
    md += [f"Market-1501 protocol (cosine distance), rank-1 and mAP in %, on {', '.join(protocols)} "
           "(query camera A, gallery camera B; never used for calibration or adaptation). Only "
           "configurations with trained weights are evaluated; configurations exported with random weights "
           "(no trained checkpoint for that width) show latency, counts and fidelity only — an accuracy "
           "number for them would be meaningless.", "", _accuracy_table(data), ""]
    untrained = _untrained_configs(own_rows)
    if untrained:
        md += [f"No trained weights (not evaluated): {', '.join(untrained)}.", ""]
    adapt = _adaptation_table(data)
    if adapt:
        md += ["### Resolution adaptation: before / after", "",
               "The same width run at a lower resolution, with the 256x128-trained weights (before) and with "
               "the checkpoint adapted to that resolution (after).", "", adapt, ""]
    return md


def _fidelity_section(data: ReportData) -> list[str]:
    if not data.fidelity:
        return []
    return ["## Fidelity to FP32", "",
            "Cosine similarity between each setting's embeddings and the same model's FP32 embeddings on the "
            "same images (1.0 = identical). Computed for every configuration, trained or not; for random "
            "weights it overstates what trained weights keep (their embeddings differ little between images, "
            "so quantization noise moves them less).", "",
            _fidelity_table(data), ""]


def _tradeoff_section(plots: Mapping[str, str], pts: Sequence[Mapping], first_batch: int) -> list[str]:
    """The plots and the Pareto frontier in words."""
    md = []
    if plots:
        md += ["## Latency / accuracy trade-off", ""]
        for title, rel in plots.items():
            md += [f"![{title}]({rel})", ""]
        md += ["One marker shape per runtime, one colour per precision; stars are foreign peers. Outlined points "
               "and the dashed line form the Pareto frontier: nothing else is both faster and at least as "
               "accurate.", ""]
    if pts:
        front = [p for p in sorted(pts, key=lambda p: p["latency_ms_p50"]) if p.get("frontier")]
        md += ["Pareto frontier (batch %d, end to end): " % first_batch
               + "; ".join(f"{p['label']} {p['runtime']}/{p['precision']} ({p['latency_ms_p50']:.2f} ms, "
                           f"mAP {p['y']:.1f})" for p in front) + ".", ""]
    return md


def _recommendation_section(data: ReportData, own_rows: Sequence[Mapping], pts: Sequence[Mapping], first_batch: int,
                            budget_ms: float, budget_stat: str, accuracy_tol: float) -> list[str]:
    """The most accurate configuration within the budget (mult-adds stand in without accuracy)."""
    md = [f"## Recommendation for a {budget_ms:g} ms budget", ""]
    if pts:
        metric = "mAP (mean over protocols)"
        cands = pts
    else:
        metric = "mult-adds (proxy: no accuracy measured)"
        cands = tradeoff_points(data, first_batch, y="macs")
    rec = recommend(cands, budget_ms, budget_stat, "mAP" if pts else "mult-adds", accuracy_tol if pts else 0.0)
    if pts and accuracy_tol > 0:
        md += [f"Accuracies within {accuracy_tol:g} mAP points count as equal (the evaluation sets have a few "
               "hundred queries each; smaller differences are noise), and then the faster setting wins.", ""]
    md += _recommendation_lines(rec, metric, pts == [])
    if pts:
        untrained = _untrained_configs(own_rows)
        if untrained:
            md += ["", "Not considered (no trained weights, accuracy unknown): " + ", ".join(untrained)
                   + " on every runtime/precision."]
    return md + [""]


def _compatibility_section(data: ReportData) -> list[str]:
    if not data.compat:
        return []
    md = ["## Embedding compatibility (mixed fleets)", "",
          "Can a gallery embedded by one camera (runtime/precision) be searched with queries embedded by "
          "another? Cosine agreement compares the two embeddings of the same image; cross-retrieval mAP "
          "runs the retrieval with query and gallery from different settings.", ""]
    for t in _compat_tables(data):
        md += [t, ""]
    return md


def _peers_and_skipped_sections(data: ReportData) -> list[str]:
    md = []
    if any(r.get("peer") for r in data.rows):
        md += ["## Foreign peers", "",
               "Models a camera developer might deploy instead, run here on the same images, the same machine and "
               "the same resize: Open Model Zoo person-reidentification-retail IRs (OpenVINO, BGR 0-255 input, "
               "256-d) and third-party ONNX exports. Their latency and accuracy appear in the tables and plot "
               "above (stars). Mult-adds are not counted for them.", ""]
    if data.skipped:
        md += ["## Not measured", "", _md_table(["config", "reason"], [[s["config"], s["reason"]] for s in data.skipped]),
               ""]
    return md


def _recommendation_lines(rec: Mapping, metric: str, proxy: bool) -> list[str]:
    stat = rec["stat"]
    lines = []
    c = rec["choice"]
    if c is None:
        lines.append(f"**No osnet_edge configuration meets {rec['budget_ms']:g} ms ({stat}) on this machine.** "
                     "Options: a smaller width or resolution, INT8 where it is faster here, fewer competing processes "
                     "(on a shared CPU one inference thread per stream is often faster: --threads 1), or faster "
                     "hardware.")
    else:
        what = f"{metric.split(' ')[0]} {c['y']:.1f}" if not proxy else f"{c['y'] / 1e6:.1f}M mult-adds"
        lines.append(f"**Recommended: {c['label']} on {c['runtime']}/{c['precision']}** — {stat} "
                     f"{c['latency_ms_' + stat]:.2f} ms (p50 {c['latency_ms_p50']:.2f} ms) at batch {c['batch']}, "
                     f"{what}: the most {'accurate' if not proxy else 'capable'} configuration within the budget "
                     "(the fastest among equals).")
        if proxy:
            lines.append("")
            lines.append("No accuracy was measured (no labelled data or no trained weights), so mult-adds stand in "
                         "for accuracy (in the paper more mult-adds meant higher accuracy). Verify with labelled "
                         "data from your cameras.")
    if rec["reasons"]:
        lines += ["", "Why the others lost:", ""]
        lines += [f"- {r['config']}: {r['reason']}" for r in rec["reasons"]]
    for p in rec["peers_better"]:
        lines += ["", f"Note: peer **{p['label']}** ({p['runtime']}/{p['precision']}) also fits "
                      f"({stat} {p['latency_ms_' + stat]:.2f} ms) and is more accurate ({p['y']:.1f})."]
    return lines
