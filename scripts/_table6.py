"""The Table 6 section of results.json (scripts/results.py): adaptation runs, their INT8 rows, the
rank-1-vs-minutes snapshots and the recipe ablation, read from the experiment scripts' own JSON output and
rendered into the README / docs marker blocks. Nothing is measured or computed here beyond minutes, gaps
and differences."""
from __future__ import annotations

import json
import re
from pathlib import Path

from _cli import CliError


def pair(m: dict) -> str:
    return f"{m['rank1']:.1f} / {m['mAP']:.1f}"



def _command(run: dict) -> str:
    """The command line that made an adapt_experiment.py result line. A run that took the default losses gets
    them spelled out (``--losses`` as its recipe recorded them), so it still reproduces after the default
    changes (cross-entropy left the labelled default after these runs)."""
    from osnet_edge.adapt.config import format_losses

    argv = list(run["argv"])
    losses = (run.get("recipe") or {}).get("losses")
    if "--losses" not in argv and losses:
        argv += ["--losses", format_losses(losses)]
    return "python scripts/adapt_experiment.py " + " ".join(argv)


def read_adaptation(files: list[str]) -> dict:
    """The ``adaptation`` section from adapt_experiment.py JSON lines and int8-fidelity JSON files, as
    measured (no number is computed here beyond minutes and the gap to the paper)."""
    from osnet_edge.bundle import sha256_file
    from osnet_edge.models import input_size

    runs, int8, curve = [], [], []
    for name in files:
        path = Path(name)
        if not path.is_file():
            raise CliError(f"--adaptation {name}: no such file")
        text = path.read_text(encoding="utf-8")
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:  # several JSON lines: adapt_experiment.py runs
            doc = None
        if isinstance(doc, dict) and "results" in doc and "model" in doc:  # osnet-edge evaluate of a snapshot
            epoch, size = re.search(r"epoch_(\d+)", path.name), re.search(r"@ (\d+)x(\d+)", doc["model"])
            if not (epoch and size):
                raise CliError(f"--adaptation {name}: an evaluate result needs epoch_NN in its file name and a "
                               "torch model description (osnet-edge evaluate --weights SNAPSHOT --json ...epoch_NN.json)")
            m = next(x for x in doc["results"] if x["data"] == "market1501")
            curve.append({"input": [int(size[1]), int(size[2])], "epoch": int(epoch[1]), "rank1": m["rank1"],
                          "mAP": m["mAP"]})
            continue
        if isinstance(doc, dict) and "rows" in doc:  # one int8-fidelity document
            for row in doc["rows"]:
                if row.get("protocol") != "market1501":
                    continue
                int8.append({"weights": Path(doc["weights"]).name, "cpu_flags": doc.get("cpu_flags"),
                             **{k: row.get(k) for k in ("backend", "res", "input", "cosine_mean", "cosine_p1",
                                                        "fp32_rank1", "fp32_mAP", "int8_rank1", "int8_mAP",
                                                        "cross_rank1", "cross_mAP", "max_drop", "meets_targets",
                                                        "distill_steps", "kept_fp32", "export_s", "targets")}})
            continue
        for line in text.splitlines():
            if not line.strip():
                continue
            run = json.loads(line)
            if "adapted" not in run or "market1501" not in run["adapted"]:
                raise CliError(f"--adaptation {name}: not an adapt_experiment.py Market-1501 result line")
            m, ckpt = run["adapted"]["market1501"], Path(run["checkpoint"])
            h, w = input_size(run["res"])
            init = next((run["argv"][i + 1] for i, a in enumerate(run["argv"][:-1]) if a == "--init"), None)
            runs.append({"res": run["res"], "input": [h, w], "rank1": m["rank1"], "mAP": m["mAP"],
                         "rank5": m.get("rank5"), "rank10": m.get("rank10"), "metric": m.get("metric", "cosine"),
                         "wall_min": round(run["wall_s"] / 60, 1), "cpu_min": round(run["cpu_s"] / 60, 1),
                         "threads": run["threads"], "epochs": run.get("epochs_planned", run["epochs"]),
                         "steps": run["steps"],
                         "teacher_s": run.get("teacher_seconds"), "init": Path(init).name if init else None,
                         "load_average": [run["loadavg_start"][0], run["loadavg_end"][0]],
                         "cpu": (run.get("machine") or {}).get("cpu"),
                         "cpu_flags": (run.get("machine") or {}).get("flags"),
                         "checkpoint": {"file": ckpt.name, "sha256": sha256_file(ckpt) if ckpt.is_file() else None},
                         "epoch_seconds": run.get("epoch_seconds"),
                         "bn_recalibrated": bool((run.get("recipe") or {}).get("recalibrate")),
                         "teacher_res": (run.get("recipe") or {}).get("teacher_res", 1.0),
                         "command": _command(run)})
    for point in curve:  # minutes into the run at the end of that epoch (the epochs' own wall times)
        run = next((r for r in runs if r["input"] == point["input"] and r["epoch_seconds"]), None)
        if run is None:
            raise CliError(f"--adaptation: a snapshot at {point['input']} without its run's result line")
        point["minutes"] = round(sum(run["epoch_seconds"][:point["epoch"]]) / 60, 1)
    return _section(runs, int8, curve)


def _section(runs: list, int8: list, curve: list, **extra) -> dict:
    """The Table 6 section in its one order: runs by falling resolution, snapshots by input then epoch."""
    return {"runs": sorted(runs, key=lambda r: -r["res"]), "int8": int8,
            "curve": sorted(curve, key=lambda c: (-c["input"][0], c["epoch"])), **extra}


def merge_adaptation(old: dict, new: dict) -> dict:
    """``old`` Table 6 section updated by ``new``: a new run replaces the run at the same input, and with it that
    run's INT8 rows (its checkpoint file) and snapshot points; the replaced runs are kept under ``superseded``
    (the record of what ran before). Runs, rows and points at other inputs stay as measured."""
    replaced = {tuple(r["input"]) for r in new["runs"]}
    gone = [r for r in old.get("runs", []) if tuple(r["input"]) in replaced]
    gone_ckpts = {(r["checkpoint"]["file"], r["res"]) for r in gone}
    runs = [r for r in old.get("runs", []) if tuple(r["input"]) not in replaced] + new["runs"]
    int8 = [q for q in old.get("int8", []) if (q["weights"], q["res"]) not in gone_ckpts] + new["int8"]
    curve = [c for c in old.get("curve", []) if tuple(c["input"]) not in replaced] + new["curve"]
    return _section(runs, int8, curve, superseded=old.get("superseded", []) + gone)


def _int8_cell(q: dict) -> str:
    how = [f"{q['distill_steps']} QAD steps"] if q.get("distill_steps") else []
    how += [f"{q['kept_fp32']} layers fp32"] if q.get("kept_fp32") else []
    return f"{q['max_drop']:.2f}{'' if q['meets_targets'] else ' (miss)'}" + (f" ({', '.join(how)})" if how else "")


def render_table6(r: dict) -> str:
    """x0.25 column of the paper's Table 6 against one checkpoint: the trained 256x128 (the bundles above) and
    its adaptations, each with its time and INT8 drops."""
    section = r.get("adaptation") or {"runs": [], "int8": []}
    paper = r["paper"]["rows"]
    lines = ["| input | paper Table 6 (trained at that size) | osnet_edge (one checkpoint) | gap | how, time | "
             "INT8 worst drop, points (ONNX Runtime / OpenVINO) |", "|---|---|---|---|---|---|"]
    base = next((b for b in r["models"][0]["bundles"] if (b["runtime"], b["precision"]) == ("onnxruntime", "fp32")),
                None)
    rows = []
    if base is not None and r["models"][0]["res"] == 1.0:
        rows.append((1.0, base["input_size"], base["market1501"], None, "the torchreid checkpoint itself (INT8: the "
                     "bundle table above)"))
    for entry in section["runs"]:
        verb = "fine-tuned at its own size" if entry["res"] == entry.get("teacher_res", 1.0) else "adapted"
        how = (f"{verb}{' from ' + entry['init'] if entry['init'] else ''}: {entry['steps']:,} steps "
               f"({entry['epochs']:.1f} epochs), {entry['wall_min']:g} min wall, {entry['cpu_min']:g} CPU-min, "
               f"{entry['threads']} thread{'s' if entry['threads'] > 1 else ''}, load {entry['load_average'][0]:.1f}"
               f"→{entry['load_average'][1]:.1f}" + (", precise BN at the end" if entry.get("bn_recalibrated") else ""))
        rows.append((entry["res"], entry["input"], entry, entry["checkpoint"]["file"], how))
    for res, (h, w), m, ckpt, how in rows:
        ref = paper.get(f"0.25@{res:g}")
        gap = f"{m['rank1'] - ref['rank1']:+.2f} / {m['mAP'] - ref['mAP']:+.2f}" if ref else "—"  # 1 query = 0.03
        drops = {q["backend"]: q for q in section["int8"] if q["res"] == res and q["weights"] == ckpt}
        cell = " / ".join(_int8_cell(drops[b]) if b in drops else "—" for b in ("onnxruntime", "openvino"))
        lines.append(f"| {h}×{w} | {pair(ref) if ref else '—'} | {m['rank1']:.2f} / {m['mAP']:.2f} | {gap} | {how} | "
                     f"{cell} |")
    lines += ["", "Market-1501, all 3,368 queries, cosine distance, rank-1 / mAP in %. Adaptation trains on "
              "bounding_box_train only (the 751 training identities), distilling from the same checkpoint at "
              "256×128; INT8 = `osnet-edge int8-fidelity` (QAD + PTQ, calibrated on bounding_box_train), worst of "
              "rank-1 / mAP over INT8-vs-INT8 and INT8 queries vs FP32 gallery; target 0.3 (0.2 at 256×128)."]
    if section["runs"]:
        machines = sorted({f"{e['cpu']} (flags {' '.join(e['cpu_flags'] or [])})" for e in section["runs"]})
        lines += [f"Adaptation machine{'s' if len(machines) > 1 else ''}: {'; '.join(machines)}, no GPU; the "
                  "checkpoint's own 256×128 row is the bundle run above. "
                  "Commands:", "```", *[e["command"] + (" --recalibrate" if e.get("bn_recalibrated")
                                                          and "--recalibrate" not in e["command"] else "")
                                        for e in section["runs"]], "```"]
        if any(e.get("bn_recalibrated") for e in section["runs"]):
            lines.append("Runs marked precise BN ran when it was the default; `--recalibrate` (added above) repeats "
                         "them, without it the recipe keeps training's BN statistics (measured better).")
    return "\n".join(lines) + "\n"


def render_curve(r: dict) -> str:
    """Rank-1 / mAP against training minutes, from the per-epoch snapshots of the adaptation runs."""
    points = (r.get("adaptation") or {}).get("curve") or []
    lines = ["| input | epoch | minutes of training | rank-1 / mAP |", "|---|---|---|---|"]
    lines += [f"| {p['input'][0]}×{p['input'][1]} | {p['epoch']} | {p['minutes']:g} | {p['rank1']:.2f} / {p['mAP']:.2f} |"
              for p in points]
    final = {tuple(x["input"]): x for x in (r.get("adaptation") or {}).get("runs", [])}
    lines += [f"| {h}×{w} | final ({x['epochs']:.1f}{', BN recalibrated' if x.get('bn_recalibrated') else ''}) | "
              f"{x['wall_min']:g} (incl. evaluation) | "
              f"{x['rank1']:.2f} / {x['mAP']:.2f} |" for (h, w), x in final.items()]
    return "\n".join(lines + ["", "Snapshots: BN statistics as training left them (not recalibrated); minutes = the "
                               "epochs' own wall time (the teacher's passes included, start-up and AdaBN not)."]) + "\n"


# ---------------------------------------------------------------------------- the recipe ablation (item 2)

LOSS_NAMES = {"ce": "label-smoothed cross-entropy", "logit": "logit distillation", "cosine": "embedding (cosine) "
              "distillation", "fmap": "feature-map distillation", "simkl": "ranking (similarity KL) distillation",
              "relational": "relational distillation", "triplet": "triplet loss"}


def _difference(run: dict, base: dict) -> str:
    """What a variant changes against the full recipe, in words, read from the two runs' recipes."""
    said = [f"without {LOSS_NAMES.get(k, k)}" for k in base["losses"] if k not in run["losses"]]
    said += [f"with {LOSS_NAMES.get(k, k)}" for k in run["losses"] if k not in base["losses"]]
    if run["recipe"]["augmentation"].get("erase_p") != base["recipe"]["augmentation"].get("erase_p"):
        said.append("without random erasing" if not run["recipe"]["augmentation"].get("erase_p")
                    else f"random erasing p={run['recipe']['augmentation']['erase_p']}")
    if run["recipe"].get("teacher_flip") != base["recipe"].get("teacher_flip"):
        said.append("without the teacher's mirrored views" if not run["recipe"]["teacher_flip"] else "with mirrors")
    skip = {"augmentation", "teacher_flip", "losses", "budget_min"}
    said += [f"{k}={run['recipe'][k]}" for k in run["recipe"] if k not in skip and run["recipe"][k] != base["recipe"].get(k)]
    return ", ".join(said) or "the full recipe (repeat)"


def read_ablation(files: list[str]) -> dict:
    """The ``ablation`` section: adapt_experiment.py JSON lines of short runs at one resolution and schedule;
    the first line is the full recipe, every other one a variant described by its recipe difference."""
    lines = []
    for name in files:
        path = Path(name)
        if not path.is_file():
            raise CliError(f"--ablation {name}: no such file")
        lines += [json.loads(t) for t in path.read_text(encoding="utf-8").splitlines() if t.strip()]
    if len(lines) < 2 or any("market1501" not in (x.get("adapted") or {}) for x in lines):
        raise CliError("--ablation needs the full recipe's Market-1501 result line first, then at least one variant")
    base = lines[0]
    fixed = {(x["res"], x["epochs"], x["recipe"].get("view_sets")) for x in lines}
    if len(fixed) > 1:
        raise CliError(f"--ablation runs must share resolution, epochs and view sets, got {sorted(fixed)}")
    rows = [{"change": "full recipe" if x is base else _difference(x, base), "rank1": x["adapted"]["market1501"]["rank1"],
             "mAP": x["adapted"]["market1501"]["mAP"], "threads": x["threads"], "wall_min": round(x["wall_s"] / 60, 1),
             "load_average_end": x["loadavg_end"][0],
             "command": _command(x)} for x in lines]
    res, epochs, view_sets = fixed.pop()
    return {"res": res, "epochs": epochs, "view_sets": view_sets, "rows": rows,
            "cpu_flags": (base.get("machine") or {}).get("flags")}


def render_ablation(r: dict) -> str:
    """Each ingredient of the adaptation recipe against the full recipe, same short schedule."""
    a = r.get("ablation")
    if not a:
        return "No ablation in the results file (`scripts/results.py --ablation FULL.jsonl VARIANT.jsonl...`).\n"
    base = a["rows"][0]
    lines = ["| recipe | rank-1 / mAP | change vs full, points |", "|---|---|---|"]
    for row in a["rows"]:
        delta = "—" if row is base else f"{row['rank1'] - base['rank1']:+.2f} / {row['mAP'] - base['mAP']:+.2f}"
        lines.append(f"| {row['change']} | {row['rank1']:.2f} / {row['mAP']:.2f} | {delta} |")
    threads = sorted({row["threads"] for row in a["rows"]})
    loads = [row["load_average_end"] for row in a["rows"]]
    lines += ["", f"Market-1501, all 3,368 queries, cosine. Each run: x0.25 adapted to res {a['res']:g} from the "
              f"checkpoint, {a['epochs']:g} epochs, {a['view_sets']} view set(s), {'/'.join(map(str, threads))} "
              f"thread(s), load average {min(loads):.1f}-{max(loads):.1f} at the end (other runs beside it); same "
              "seed, so the same data order. A short schedule ranks ingredients early in training; the long runs "
              "of Table 6 may rank them otherwise. Commands:", "```", *[row["command"] for row in a["rows"]], "```"]
    return "\n".join(lines) + "\n"
