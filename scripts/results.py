#!/usr/bin/env python3
"""Measure every number of the README's results table in one run, write docs/results/results.json, render the tables.

One run on this machine: export the bundles with the current code (ONNX Runtime, OpenVINO and LiteRT, fp32
and INT8, INT8 calibrated on Market-1501 bounding_box_train only), evaluate each on all Market-1501 queries
against bounding_box_test (``osnet-edge evaluate``: torchreid's protocol, cosine), and time them all
(``scripts/bench/bundles.py``: one runtime per subprocess, interleaved rounds, batch 1 and 8). The paper's
Table 6 values are quoted from the paper text. The JSON is the one source: README.md and docs/ include its
rendering between ``<!-- results:NAME begin -->`` / ``<!-- results:NAME end -->`` markers, which this script
rewrites (``--render-only`` re-renders from the committed JSON without measuring); tests/test_results.py
checks that the committed tables equal the rendering of the committed JSON.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # scripts/, for _table6 and _cli (which takes it off)
from _table6 import (merge_adaptation, pair as _pair, read_ablation, read_adaptation,  # noqa: E402
                     render_ablation, render_curve, render_table6)
from _cli import CliError, Parser, run  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS_JSON = Path("docs/results/results.json")
TABLES_MD = Path("docs/results/tables.md")
# Files whose marker blocks this script rewrites (relative to the repository root).
INCLUDING_FILES = ("README.md", "docs/benchmark.md", "docs/int8.md", "docs/adaptation.md")
CONFIGS = (("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "int8"),
           ("litert", "fp32"), ("litert", "int8"))
RUNTIME_NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "litert": "LiteRT"}
VERSIONED = ("osnet_edge", "numpy", "opencv-python-headless", "onnxruntime", "openvino", "nncf", "ai-edge-litert",
             "ai-edge-quantizer", "litert-torch", "onnx", "onnxslim", "torch")
PAPER_ROW = re.compile(r"^(?P<width>\d\.\d+) \| (?P<params>[\d.]+M) \| (?P<res>\d\.\d+) \| (?P<mult_adds>[\d.]+M) \| "
                       r"(?P<rank1>\d+\.\d) \| (?P<mAP>\d+\.\d) \|$")
BLOCK = re.compile(r"(<!-- results:(?P<name>[a-z0-9_-]+) begin -->\n)(?P<body>.*?)(<!-- results:(?P=name) end -->)",
                   re.S)

EXAMPLES = """\
examples:
  python scripts/results.py                                  # measure everything (about an hour on 2 cores)
  python scripts/results.py --adapted runs/x025_r05.pth      # + the adapted x0.25 @ 128x64 rows
  python scripts/results.py --render-only                    # re-render README/docs tables from the JSON
  python scripts/results.py --adaptation r075.jsonl int8_r075.json --merge   # a new Table 6 run replaces its row
"""


def build_parser() -> Parser:
    p = Parser(description=__doc__.splitlines()[0], epilog=EXAMPLES)
    p.add_argument("--render-only", action="store_true", help="no measuring: re-render the tables from --json")
    p.add_argument("--json", default=str(RESULTS_JSON), help=f"results file (default {RESULTS_JSON})")
    p.add_argument("--weights", default=None, help="the trained checkpoint (default: the shared data's "
                   "weights/torchreid/osnet_x0_25_market1501.pth)")
    p.add_argument("--adapted", default=None, metavar="CKPT", help="an x0.25 checkpoint adapted to res 0.5 "
                   "(osnet-edge adapt): adds its 128x64 rows")
    p.add_argument("--adaptation", nargs="+", default=None, metavar="FILE",
                   help="no bundle measuring: put these runs into the JSON's Table 6 section and re-render. FILE = "
                        "a JSON-lines result of scripts/adapt_experiment.py --json (one adapted resolution per line) "
                        "or an osnet-edge int8-fidelity --json of an adapted checkpoint")
    p.add_argument("--ablation", nargs="+", metavar="FILE", default=None,
                   help="no measuring: set the recipe ablation (docs/benchmark.md) from adapt_experiment.py JSON "
                        "lines of short runs, the full recipe first, then the variants; re-render")
    p.add_argument("--merge", action="store_true", help="with --adaptation: update the section instead of replacing "
                   "it (a new run replaces the one at its input, with that run's INT8 rows and snapshots; the rest "
                   "stays; replaced runs are kept under 'superseded')")
    p.add_argument("--work", default="runs/results", help="bundles, logs and raw outputs (default runs/results)")
    p.add_argument("--reuse-bundles", action="store_true", help="keep bundles already under --work (resume a run)")
    p.add_argument("--jobs", type=int, default=1, help="bundles exported and evaluated at a time (default 1; "
                   "latency is always measured alone, after them)")
    p.add_argument("--only", nargs="+", default=None, metavar="RUNTIME:PRECISION",
                   help="measure only these configurations (a partial run: for trying the script)")
    p.add_argument("--why-partial", default=None, metavar="TEXT",
                   help="with --only: why the other configurations are missing (stated under the tables)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds (default 5)")
    p.add_argument("--seconds", type=float, default=1.5, help="timed seconds per bundle per round (default 1.5)")
    p.add_argument("--threads", type=int, default=1, help="inference threads for latency (default 1)")
    return p


# ============================================================================ measuring

def run_logged(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` from the repository root, output to ``log``; seconds taken; a failure is a CliError."""
    start = time.monotonic()
    with open(log, "w", encoding="utf-8") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        done = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        raise CliError(f"{' '.join(cmd[:4])} ... failed (log {log}): {' | '.join(tail)}")
    return round(time.monotonic() - start, 1)


def shown(cmd: list[str]) -> str:
    """The command as a reader types it: ``osnet-edge ...`` / ``python scripts/...``, data paths relative."""
    words = ["osnet-edge" if w == "osnet_edge" else w for w in cmd[1:] if w != "-m"]
    if words and words[0].endswith(".py"):
        words = ["python", os.path.relpath(words[0], REPO)] + words[1:]
    return " ".join(os.path.relpath(w, REPO) if os.path.isabs(w) else w for w in words)


def paper_rows(paper: Path) -> dict:
    """Table 6 rows of the paper text, quoted verbatim: ``{"0.25@1.0": {line, rank1, mAP, ...}}``."""
    rows = {}
    for line in paper.read_text(encoding="utf-8").splitlines():
        m = PAPER_ROW.match(line.strip())
        if m:
            rows[f"{float(m['width']):g}@{float(m['res']):g}"] = {
                "line": line.strip(), "params": m["params"], "mult_adds": m["mult_adds"],
                "rank1": float(m["rank1"]), "mAP": float(m["mAP"])}
    if len(rows) != 16:
        raise CliError(f"{paper}: expected the 16 rows of Table 6, found {len(rows)}")
    return rows


def model_specs(args, data: Path) -> list[dict]:
    from osnet_edge.bundle import sha256_file

    weights = Path(args.weights or data / "weights" / "torchreid" / "osnet_x0_25_market1501.pth")
    specs = [{"key": "x025_r1", "label": "x0.25 Market-1501 (torchreid), trained at 256×128", "width": 0.25,
              "res": 1.0, "weights": weights}]
    if args.adapted:
        specs.append({"key": "x025_r05_adapted", "label": "x0.25 adapted to res 0.5 (osnet-edge adapt)",
                      "width": 0.25, "res": 0.5, "weights": Path(args.adapted)})
    for s in specs:
        if not s["weights"].is_file():
            raise CliError(f"checkpoint not found: {s['weights']}")
        s["weights_sha256"] = sha256_file(s["weights"])
    return specs


def export_and_evaluate(spec: dict, configs, data: Path, work: Path, reuse: bool, jobs: int) -> list[dict]:
    """Export and evaluate the bundles of one checkpoint, ``jobs`` at a time; one entry per (runtime, precision),
    in ``configs`` order. INT8 first: their quantization-aware distillation is the long part (ONNX Runtime's
    is cached and reused by OpenVINO's, which therefore goes last)."""
    from concurrent.futures import ThreadPoolExecutor

    order = sorted(configs, key=lambda c: (c[1] != "int8" or c[0] == "openvino", c[0] == "openvino"))
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        done = dict(zip(order, pool.map(lambda c: one_bundle(spec, c[0], c[1], data, work, reuse), order)))
    return [done[c] for c in configs]


def one_bundle(spec: dict, runtime: str, precision: str, data: Path, work: Path, reuse: bool) -> dict:
    name = f"{spec['key']}_{runtime}_{precision}"
    bundle = work / "bundles" / name
    export = [sys.executable, "-m", "osnet_edge", "export", "--width", f"{spec['width']:g}",
              "--res", f"{spec['res']:g}", "--target", runtime, "--precision", precision,
              "--weights", str(spec["weights"]), "--out", str(bundle), "--force"]
    if precision == "int8":
        export += ["--calib", str(data / "market1501" / "bounding_box_train")]
    entry = {"runtime": runtime, "precision": precision, "bundle": os.path.relpath(bundle, REPO),
             "export_command": shown(export)}
    log = work / "logs" / f"export_{name}.log"
    if reuse and (bundle / "manifest.json").is_file() and log.is_file():
        took = re.search(r"^bundle: .* in ([\d.]+) s$", log.read_text(encoding="utf-8", errors="replace"), re.M)
        entry["export_seconds"] = float(took[1]) if took else None
    else:
        print(f"export {name} ...", flush=True)
        entry["export_seconds"] = run_logged(export, log)
    evaluate = [sys.executable, "-m", "osnet_edge", "evaluate", "--bundle", str(bundle),
                "--data", str(data / "market1501"), "--json", str(work / f"eval_{name}.json"),
                "--cache", str(work / "features"), "--no-progress"]
    print(f"evaluate {name} ...", flush=True)
    entry["evaluate_seconds"] = run_logged(evaluate, work / "logs" / f"evaluate_{name}.log")
    entry["evaluate_command"] = shown(evaluate[:6] + ["--json", "EVAL.json"])
    result = json.loads((work / f"eval_{name}.json").read_text())["results"][0]
    entry["market1501"] = {k: result[k] for k in ("rank1", "rank5", "rank10", "mAP", "num_query", "num_gallery",
                                                  "metric")}
    entry.update(manifest_facts(bundle))
    print(f"{name}: rank-1 {result['rank1']:.2f} mAP {result['mAP']:.2f}", flush=True)
    return entry


def manifest_facts(bundle: Path) -> dict:
    """Size, counts and the export's own INT8 fidelity, as the bundle's manifest records them."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    model = manifest["model"]
    size = sum((bundle / f).stat().st_size for f in manifest["files"])
    facts = {"input_size": model["input_size"], "mult_adds": model.get("mult_adds"), "params": model.get("params"),
             "files_mb": round(size / 1e6, 2), "created": manifest.get("created")}
    fidelity = (manifest.get("quantization") or {}).get("fidelity")
    if fidelity:
        facts["int8_fidelity"] = {k: fidelity.get(k) for k in ("cosine_mean", "cosine_p1", "cosine_min", "num_images")
                                  if k in fidelity}
    return facts


def measure_latency(models: list[dict], args, work: Path) -> dict:
    """Every bundle timed in one interleaved run of scripts/bench/bundles.py; latency goes into each entry."""
    paths = [str(REPO / b["bundle"]) for m in models for b in m["bundles"]]
    out_json = work / "latency.json"
    cmd = [sys.executable, str(REPO / "scripts" / "bench" / "bundles.py"), *paths, "--batch", "1", "8",
           "--threads", str(args.threads), "--rounds", str(args.rounds), "--seconds", str(args.seconds),
           "--json", str(out_json)]
    print(f"latency: {len(paths)} bundles x batch 1, 8 x {args.rounds} rounds ...", flush=True)
    seconds = run_logged(cmd, work / "logs" / "latency.log")
    raw = json.loads(out_json.read_text())
    by_key = {(os.path.realpath(r["path"]), r["batch"]): r for r in raw["rows"]}
    for m in models:
        for b in m["bundles"]:
            b["latency"] = {}
            for batch in (1, 8):
                r = by_key[(os.path.realpath(REPO / b["bundle"]), batch)]
                b["latency"][str(batch)] = {k: r[k] for k in ("p50_ms", "p90_ms", "bare_p50_ms", "calls")}
    return {"threads": args.threads, "rounds": args.rounds, "seconds_per_round": args.seconds, "crop": raw["crop"],
            "command": shown(cmd[:1] + [cmd[1], "BUNDLE..."] + cmd[2 + len(paths):-2]), "wall_seconds": seconds}


def git_state() -> dict:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()
    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    return {"commit": git("rev-parse", "HEAD"), "uncommitted_tracked_files": changed}


def measure(args) -> dict:
    from osnet_edge.data import shared_data_dir
    from osnet_edge.machine import describe_machine, package_versions

    data = shared_data_dir()
    if data is None or not (data / "market1501" / "query").is_dir():
        raise CliError("needs the shared data with market1501/ (../shared/data or $OSNET_EDGE_DATA)")
    configs = CONFIGS
    if args.only:
        configs = tuple(tuple(c.split(":", 1)) for c in args.only)
        unknown = [":".join(c) for c in configs if c not in CONFIGS]
        if unknown:
            raise CliError(f"--only {' '.join(unknown)}: not one of {' '.join(':'.join(c) for c in CONFIGS)}")
    work = (REPO / args.work).resolve()
    (work / "logs").mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.timezone.utc)
    result = {"format": "osnet-edge-results", "format_version": 1,
              "started": started.isoformat(timespec="seconds"), "git": git_state(),
              "machine": {k: v for k, v in describe_machine().items() if k != "versions"},
              "versions": package_versions(VERSIONED), "load_average_at_start": list(os.getloadavg()),
              "paper": {"source": "../shared/paper/osnet.txt (Zhou et al., ICCV 2019, Table 6, Market1501 R1 / mAP)",
                        "rows": paper_rows(data.parent / "paper" / "osnet.txt")},
              "calibration": "market1501/bounding_box_train (300 crops sampled across identities and cameras)",
              "models": []}
    for spec in model_specs(args, data):
        bundles = export_and_evaluate(spec, configs, data, work, args.reuse_bundles, args.jobs)
        result["models"].append({"key": spec["key"], "label": spec["label"], "width": spec["width"], "res": spec["res"],
                                 "weights": {"file": spec["weights"].name, "sha256": spec["weights_sha256"]},
                                 "bundles": bundles})
    missing = [":".join(c) for c in CONFIGS if c not in configs]
    if missing:
        result["not_measured"] = {"configs": missing, "why": args.why_partial or "not requested (--only)"}
    result["latency_settings"] = measure_latency(result["models"], args, work)
    result["load_average_at_end"] = list(os.getloadavg())
    result["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    result["notes"] = [
        "The 2 CPU cores were shared with other engineers' jobs during the run (load averages above): absolute "
        "latencies are inflated by an unknown amount; the ratios within this one interleaved run are what count.",
        "Latency: Extractor end to end (validation, resize, normalisation, inference, L2) on a real Market-1501 query "
        "crop; bare_p50_ms is the runtime call alone on the prepared batch."]
    return result


# ============================================================================ rendering

def _ms(b: dict, batch: int, key: str = "p50_ms") -> str:
    v = b.get("latency", {}).get(str(batch), {}).get(key)
    return "—" if v is None else (f"{v:.2f}" if v < 10 else f"{v:.1f}")


def _machine_line(r: dict) -> str:
    m, v = r["machine"], r["versions"]
    runtimes = ", ".join(f"{n} {v[p]}" for n, p in (("ONNX Runtime", "onnxruntime"), ("OpenVINO", "openvino"),
                                                     ("LiteRT", "ai-edge-litert")) if p in v)
    vm = " (VM)" if m.get("hypervisor") else ""
    return (f"{m['cpu']}, {m['physical_cores']} cores{vm}, flags {' '.join(m['cpu_flags'])}; {runtimes}; "
            f"measured {r['started'][:10]} at commit {r['git']['commit'][:7]}")


def render_readme(r: dict) -> str:
    s = r["latency_settings"]
    lines = ["| model | input | mult-adds | bundle | Market-1501 rank-1 / mAP | paper Table 6 | latency ms, batch 1 "
             "(speed-up vs ONNX Runtime fp32) | batch 8 |", "|---|---|---|---|---|---|---|---|"]
    for m in r["models"]:
        paper = r["paper"]["rows"].get(f"{m['width']:g}@{m['res']:g}")
        base = next((b for b in m["bundles"] if (b["runtime"], b["precision"]) == ("onnxruntime", "fp32")), None)
        for i, b in enumerate(m["bundles"]):
            h, w = b["input_size"]
            first = (f"{m['label']} | {h}×{w} | {b['mult_adds'] / 1e6:.1f}M" if i == 0 else " | | ")
            ratio = ""
            if base is not None and b is not base and b.get("latency") and base.get("latency"):
                ratio = f" ({base['latency']['1']['p50_ms'] / b['latency']['1']['p50_ms']:.2f}×)"
            lines.append(f"| {first} | {RUNTIME_NAMES[b['runtime']]} {b['precision']} | {_pair(b['market1501'])} | "
                         f"{(_pair(paper) if paper else '—') if i == 0 else ''} | {_ms(b, 1)}{ratio} | {_ms(b, 8)} |")
    q = r["models"][0]["bundles"][0]["market1501"]
    lines += ["", f"All {q['num_query']:,} queries against {q['num_gallery']:,} gallery images, torchreid's protocol, "
              f"{q['metric']} distance, rank-1 / mAP in %. INT8 calibrated on {r['calibration']}. Latency: p50, "
              f"{s['threads']} inference thread, Extractor end to end on a {s['crop']}, {s['rounds']} interleaved "
              f"rounds, one process per bundle. {_machine_line(r)}. The cores were shared with other jobs: compare "
              "ratios within the table, not absolute times across machines or runs." + _missing_line(r)]
    return "\n".join(lines) + "\n"


def _missing_line(r: dict) -> str:
    gone = r.get("not_measured")
    if not gone:
        return ""
    names = ", ".join(f"{RUNTIME_NAMES[c.split(':')[0]]} {c.split(':')[1]}" for c in gone["configs"])
    return f" **Not in this run: {names}** ({gone['why']})."


def render_details(r: dict) -> str:
    lines = ["| bundle | input | size MB | INT8 fidelity on held-out crops (cosine mean / p1) | rank-1 / mAP | "
             "rank-5 / rank-10 | bare runtime call ms, batch 1 / 8 | export s |", "|---|---|---|---|---|---|---|---|"]
    for m in r["models"]:
        for b in m["bundles"]:
            h, w = b["input_size"]
            f = b.get("int8_fidelity")
            fid = f"{f['cosine_mean']:.4f} / {f['cosine_p1']:.4f}" if f else "—"
            mk = b["market1501"]
            lines.append(f"| {m['key']} {b['runtime']} {b['precision']} | {h}×{w} | {b['files_mb']:.2f} | {fid} | "
                         f"{mk['rank1']:.2f} / {mk['mAP']:.2f} | {mk['rank5']:.1f} / {mk['rank10']:.1f} | "
                         f"{_ms(b, 1, 'bare_p50_ms')} / {_ms(b, 8, 'bare_p50_ms')} | "
                         f"{b['export_seconds'] if b['export_seconds'] is not None else '—'} |")
    first = r["models"][0]["bundles"]
    lines += ["", "Commands (one run: `python scripts/results.py`, which runs them all):", "```",
              *[b["export_command"] for b in first], first[0]["evaluate_command"],
              r["latency_settings"]["command"], "```",
              f"Paper rows quoted from {r['paper']['source']}:", "```",
              *[f"{k}: {v['line']}" for k, v in r["paper"]["rows"].items()
                if k in {f"{m['width']:g}@{m['res']:g}" for m in r["models"]}], "```",
              f"Run {r['started']} → {r['finished']}, load average {r['load_average_at_start'][0]:.1f} at start, "
              f"{r['load_average_at_end'][0]:.1f} at end. " + " ".join(r["notes"]) + _missing_line(r)]
    return "\n".join(lines) + "\n"


def render_int8(r: dict) -> str:
    """INT8 against FP32 per runtime: accuracy change and speed ratio, from the same run."""
    lines = ["| model | runtime | rank-1 / mAP fp32 → int8 | change (points) | batch 1: fp32 / int8 ms (int8 speed-up) | "
             "batch 8 |", "|---|---|---|---|---|---|"]
    for m in r["models"]:
        by = {(b["runtime"], b["precision"]): b for b in m["bundles"]}
        for runtime in RUNTIME_NAMES:
            fp, q8 = by.get((runtime, "fp32")), by.get((runtime, "int8"))
            if not (fp and q8):
                continue
            a, b = fp["market1501"], q8["market1501"]
            cells = []
            for batch in (1, 8):
                t32, t8 = (x.get("latency", {}).get(str(batch), {}).get("p50_ms") for x in (fp, q8))
                cells.append("—" if not (t32 and t8) else f"{_ms(fp, batch)} / {_ms(q8, batch)} ({t32 / t8:.2f}×)")
            lines.append(f"| {m['label']} | {RUNTIME_NAMES[runtime]} | {_pair(a)} → {_pair(b)} | "
                         f"{b['rank1'] - a['rank1']:+.2f} / {b['mAP'] - a['mAP']:+.2f} | {cells[0]} | {cells[1]} |")
    tail = _missing_line(r).strip()
    return "\n".join(lines + (["", tail] if tail else [])) + "\n"


RENDERERS = {"readme": render_readme, "details": render_details, "int8": render_int8, "table6": render_table6,
             "curve": render_curve, "ablation": render_ablation}


def render_all(r: dict) -> dict[str, str]:
    if r.get("format") != "osnet-edge-results":
        raise ValueError("not an osnet-edge results file (format 'osnet-edge-results' expected)")
    return {name: fn(r) for name, fn in RENDERERS.items()}


def tables_page(blocks: dict[str, str]) -> str:
    """docs/results/tables.md: every rendered table, each inside its markers (the same text the docs include)."""
    parts = ["# Rendered results (generated by `python scripts/results.py` from results.json: do not edit)\n"]
    for name, body in blocks.items():
        parts.append(f"\n## {name}\n\n<!-- results:{name} begin -->\n{body}<!-- results:{name} end -->\n")
    return "".join(parts)


def rewrite_blocks(text: str, blocks: dict[str, str]) -> str:
    """``text`` with every marker block's body replaced by its rendering; an unknown block name is an error."""
    def sub(m: re.Match) -> str:
        if m["name"] not in blocks:
            raise ValueError(f"unknown results block {m['name']!r} (known: {', '.join(blocks)})")
        return m.group(1) + blocks[m["name"]] + m.group(4)
    return BLOCK.sub(sub, text)


def stale_blocks(text: str, blocks: dict[str, str]) -> list[str]:
    """Names of marker blocks in ``text`` whose body differs from the rendering (a hand edit or a stale table)."""
    return [m["name"] for m in BLOCK.finditer(text) if blocks.get(m["name"]) != m["body"]]


def render_files(root: Path, results: dict) -> list[Path]:
    """Rewrite docs/results/tables.md and the marker blocks of the including files under ``root``."""
    blocks = render_all(results)
    written = []
    (root / TABLES_MD).write_text(tables_page(blocks), encoding="utf-8")
    written.append(root / TABLES_MD)
    for rel in INCLUDING_FILES:
        path = root / rel
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            new = rewrite_blocks(text, blocks)
            if new != text:
                path.write_text(new, encoding="utf-8")
                written.append(path)
    return written


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    json_path = REPO / args.json if not os.path.isabs(args.json) else Path(args.json)
    if args.merge and not args.adaptation:
        raise CliError("--merge goes with --adaptation FILE... (it updates the Table 6 section from those files)")
    if args.adaptation or args.ablation:
        if not json_path.is_file():
            raise CliError(f"{json_path}: --adaptation / --ablation add to an existing results file (run without "
                           "them first)")
        results = json.loads(json_path.read_text(encoding="utf-8"))
        if args.adaptation:
            section = read_adaptation(args.adaptation)
            if args.merge:
                section = merge_adaptation(results.get("adaptation") or {}, section)
            results["adaptation"] = section
        if args.ablation:
            results["ablation"] = read_ablation(args.ablation)
        tmp = json_path.with_name(f".{json_path.name}.tmp")
        tmp.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, json_path)
        section = results.get("adaptation") or {"runs": [], "int8": []}
        print(f"wrote {json_path} (adaptation: {len(section['runs'])} runs, {len(section['int8'])} INT8 rows; "
              f"ablation: {len((results.get('ablation') or {}).get('rows', []))} rows)")
    elif args.render_only:
        if not json_path.is_file():
            raise CliError(f"{json_path}: no results file to render (run without --render-only first)")
        results = json.loads(json_path.read_text(encoding="utf-8"))
    else:
        results = measure(args)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = json_path.with_name(f".{json_path.name}.tmp")
        tmp.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, json_path)
        print(f"wrote {json_path}")
    for path in render_files(REPO, results):
        print(f"rendered {os.path.relpath(path, REPO)}")
    return 0


if __name__ == "__main__":
    run(main)
