#!/usr/bin/env python3
"""Benchmark: global average pools written as ReduceMean (torch's export) vs GlobalAveragePool.

OSNet has 25 global average pools (24 aggregation gates + the head). The same x0.25 weights are
exported twice, differing only in that op (osnet_edge.export.graph), as ONNX Runtime and OpenVINO
fp32 bundles, and timed beside the third-party ONNX export of x0.25 MSMT17 in shared/ (static
1x3x256x128, opset 13: batch 1 at 256x128 only), as shipped and with its sub-1e-30 weights zeroed
(our export's weight rule, osnet_edge.export.hygiene). Each contender runs in its own process (an
idle runtime's threads would skew the others on a small machine), round after round in alternating
order, so that load from other processes hits every contender alike. Timed per batch size: the bare
runtime call on the prepared batch (ORT session / OpenVINO compiled model, the Extractor's settings)
and the Extractor end to end on a real Market-1501 crop (ForeignModel for the third-party file).

The table gives medians over all calls and, in brackets, the range of the per-round medians;
``RM/GAP`` is ReduceMean's time over GlobalAveragePool's, per round (paired), median [range].
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # scripts/, for _cli
from _cli import CliError, Parser, run  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED_WEIGHTS = os.path.join(REPO, "..", "shared", "data", "weights")
DEFAULT_WEIGHTS = os.path.join(SHARED_WEIGHTS, "torchreid", "osnet_x0_25_msmt17.pth")
THIRD_PARTY = os.path.join(SHARED_WEIGHTS, "onnx-boxmot", "osnet_x0_25_msmt17.onnx")
FORMS = ("ReduceMean", "GlobalAveragePool")
MODEL_FILE = {"onnxruntime": "model.onnx", "openvino": "model.xml"}


def build_parser() -> Parser:
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=DEFAULT_WEIGHTS, help="x0.25 torchreid checkpoint (default: shared MSMT17)")
    p.add_argument("--work", default=None, help="folder for the bundles (reused when present; default: a temp dir)")
    p.add_argument("--runtime", nargs="+", default=list(MODEL_FILE), choices=list(MODEL_FILE))
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--res", type=float, nargs="+", default=[0.5, 1.0], help="0.5: 128x64, 1.0: 256x128")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=0.4, help="timed seconds per measurement per round")
    p.add_argument("--no-third-party", action="store_true", help="leave out the third-party ONNX")
    p.add_argument("--json", metavar="PATH", help="write machine, settings, every sample and the table as JSON")
    p.add_argument("--render", metavar="JSON", help="print the markdown table of a run saved with --json (no timing)")
    p.add_argument("--one", metavar="SPEC", help="internal: time one contender (child process)")
    return p


def cpu_description() -> dict:
    """lscpu's model name and full flag list (the machine a number belongs to), plus osnet_edge's summary."""
    from osnet_edge.machine import machine_summary

    out = {"summary": machine_summary(), "model": None, "flags": None}
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            out["model"] = value.strip()
        elif key.strip() == "Flags":
            out["flags"] = value.split()
    return out


def runtime_versions() -> dict:
    from importlib import metadata

    out = {}
    for dist in ("onnxruntime", "openvino", "numpy", "onnx", "torch"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


# -- child: one contender, device side only (numpy + the runtime) ---------------------------------

def _bare_call(runtime: str, model_path: str, batch, threads: int):
    """The runtime's own call on a prepared batch, with the settings the Extractor uses."""
    import numpy as np

    if runtime == "onnxruntime":
        from osnet_edge.runtimes.onnxruntime import open_session

        session = open_session(model_path, "cpu", threads)
        name = session.get_inputs()[0].name
        return lambda: session.run(None, {name: batch})[0]
    from osnet_edge.runtimes.openvino import _import, compile_config

    ov = _import()
    core = ov.Core()
    model = core.read_model(model_path)
    model.reshape({model.inputs[0].get_any_name(): list(batch.shape)})  # static batch, as the runtime compiles
    request = core.compile_model(model, "CPU", compile_config("fp32", "CPU", threads, "LATENCY", None)
                                 ).create_infer_request()
    return lambda: np.array(request.infer({0: batch})[0])


def time_one(spec: dict) -> dict:
    """In the child: open the contender, then per batch size time the bare call and the end-to-end call."""
    import numpy as np

    from bundles import crop_for_timing  # scripts/bench/bundles.py: the shared real crop
    from osnet_edge.verify import time_call

    crop, _ = crop_for_timing()
    threads, seconds = spec["threads"], spec["seconds"]
    if spec["kind"] == "bundle":
        from osnet_edge.extractor import Extractor
        model = Extractor(spec["bundle"], threads=threads)
        model_path = os.path.join(spec["bundle"], MODEL_FILE[spec["runtime"]])
    else:
        from osnet_edge.foreign import ForeignModel
        model = ForeignModel(spec["path"], input_format="rgb_imagenet", threads=threads)
        model_path = spec["path"]
    out: dict = {"bare": {}, "end_to_end": {}, "embedding": None}
    for b in spec["batches"]:
        crops = [crop] * b
        bare = _bare_call(spec["runtime"], model_path, model.model_input(crops), threads)
        out["bare"][str(b)] = [float(t) for t in time_call(bare, warmup=5, min_time=seconds)]
        out["end_to_end"][str(b)] = [float(t) for t in time_call(lambda: model(crops), warmup=3, min_time=seconds)]
        del bare
        if out["embedding"] is None:
            out["embedding"] = [float(v) for v in np.asarray(model([crop]))[0]]
    if hasattr(model, "close"):
        model.close()
    return out


# -- parent: bundles, rounds, table ---------------------------------------------------------------

def prepare_bundles(args, work: str) -> dict:
    """(runtime, res, form) -> bundle dir; bundles already in ``work`` with the right manifest are reused."""
    import warnings

    from osnet_edge.bundle import read_manifest
    from osnet_edge.export import export_bundle
    from osnet_edge.notices import UnadaptedResolutionWarning

    out = {}
    for rt in args.runtime:
        for res in args.res:
            for form in FORMS:
                path = os.path.join(work, f"{rt}_r{res:g}_{form}")
                manifest = os.path.join(path, "manifest.json")
                if not (os.path.isfile(manifest) and read_manifest(path).get("global_pool") == form):
                    print(f"exporting {rt} fp32 x0.25 res {res:g} with {form} -> {path}", file=sys.stderr, flush=True)
                    with warnings.catch_warnings():  # speed only: the accuracy at res 0.5 does not matter here
                        warnings.simplefilter("ignore", UnadaptedResolutionWarning)
                        export_bundle(path, width=0.25, res=res, target=rt, weights=args.weights, global_pool=form)
                out[(rt, res, form)] = path
    return out


def flushed_third_party(work: str) -> str:
    """The third-party ONNX with its sub-1e-30 weights zeroed (our export's rule), written into ``work``."""
    import onnx

    from osnet_edge.export.hygiene import flush_negligible_weights

    path = os.path.join(work, "third_party_flushed.onnx")
    if not os.path.isfile(path):
        proto = onnx.load(THIRD_PARTY)
        flush_negligible_weights(proto)
        onnx.save(proto, path)
    return path


def contenders(args, bundles: dict, work: str) -> list[dict]:
    """Every (runtime, threads, res, form) to time, forms of one configuration next to each other."""
    third = not args.no_third_party and os.path.isfile(THIRD_PARTY) and 1.0 in args.res and 1 in args.batch
    foreign = [("third-party", THIRD_PARTY), ("third-party, flushed", flushed_third_party(work))] if third else []
    specs = []
    for rt in args.runtime:
        for th in args.threads:
            for res in args.res:
                base = {"runtime": rt, "threads": th, "res": res, "seconds": args.seconds}
                for form in FORMS:
                    specs.append({**base, "kind": "bundle", "form": form, "bundle": bundles[(rt, res, form)],
                                  "batches": list(args.batch)})
                for form, path in foreign if res == 1.0 else []:
                    specs.append({**base, "kind": "foreign", "form": form, "path": path, "batches": [1]})
    return specs


def run_rounds(specs: list[dict], rounds: int) -> list[list[dict]]:
    """results[r][i]: contender i's child output in round r; odd rounds run the list backwards."""
    results = []
    for r in range(rounds):
        order = list(range(len(specs)))[::(-1 if r % 2 else 1)]
        got: dict[int, dict] = {}
        for i in order:
            cmd = [sys.executable, os.path.abspath(__file__), "--one", json.dumps(specs[i])]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise CliError(f"timing {specs[i]['form']} on {specs[i]['runtime']} failed: "
                               f"{done.stderr.strip().splitlines()[-3:]}")
            got[i] = json.loads(done.stdout.strip().splitlines()[-1])
        results.append([got[i] for i in range(len(specs))])
        print(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    return results


def summarise(specs: list[dict], results: list[list[dict]]) -> list[dict]:
    """One row per (runtime, threads, res, batch, mode): each form's median and per-round range, RM/GAP."""
    import numpy as np

    rows: dict[tuple, dict] = {}
    for i, spec in enumerate(specs):
        for mode in ("bare", "end_to_end"):
            for b in spec["batches"]:
                key = (spec["runtime"], spec["threads"], spec["res"], b, mode)
                per_round = [res[i][mode][str(b)] for res in results]
                row = rows.setdefault(key, {"runtime": key[0], "threads": key[1], "res": key[2], "batch": b,
                                            "mode": mode, "forms": {}})
                row["forms"][spec["form"]] = {
                    "p50_ms": round(float(np.median(np.concatenate(per_round))), 3),
                    "round_p50_ms": [round(float(np.median(t)), 3) for t in per_round],
                    "calls": int(sum(len(t) for t in per_round))}
    for row in rows.values():
        rm, gap = row["forms"].get("ReduceMean"), row["forms"].get("GlobalAveragePool")
        if rm and gap:
            ratios = [a / b for a, b in zip(rm["round_p50_ms"], gap["round_p50_ms"])]
            row["rm_over_gap"] = {"median": round(float(np.median(ratios)), 3), "min": round(min(ratios), 3),
                                  "max": round(max(ratios), 3)}
    return list(rows.values())


def embedding_agreement(specs: list[dict], results: list[list[dict]]) -> list[dict]:
    """Max |difference| of the two forms' (L2-normalised) embeddings of the crop, per runtime and res."""
    import numpy as np

    emb = {(s["runtime"], s["res"], s["form"]): np.asarray(results[0][i]["embedding"]) for i, s in enumerate(specs)}
    out = []
    for (rt, res, form), e in emb.items():
        if form == "ReduceMean" and (rt, res, "GlobalAveragePool") in emb:
            out.append({"runtime": rt, "res": res,
                        "max_abs_diff": float(np.abs(e - emb[(rt, res, "GlobalAveragePool")]).max())})
    return out


def print_table(rows: list[dict]) -> None:
    from osnet_edge.models import input_size

    names = [("ReduceMean", "ReduceMean"), ("GlobalAveragePool", "GAP"), ("third-party", "3rd"),
             ("third-party, flushed", "3rd flushed")]
    for row in rows:
        h, w = input_size(row["res"])
        cells = []
        for form, short in names:
            f = row["forms"].get(form)
            if f:
                cells.append(f"{short} {f['p50_ms']:.3f} [{min(f['round_p50_ms']):.3f}-{max(f['round_p50_ms']):.3f}]")
        ratio = row.get("rm_over_gap")
        ratio_text = f"  RM/GAP {ratio['median']:.3f} [{ratio['min']:.3f}-{ratio['max']:.3f}]" if ratio else ""
        print(f"{row['runtime']:11s} {row['threads']}t {h}x{w} b{row['batch']} {row['mode']:10s} "
              + " | ".join(cells) + ratio_text)


def _cell(row: dict, form: str) -> str:
    f = row["forms"].get(form)
    return f"{f['p50_ms']:.2f} ({min(f['round_p50_ms']):.2f}-{max(f['round_p50_ms']):.2f})" if f else ""


def markdown_table(rows: list[dict]) -> str:
    """Bare and end-to-end rows side by side: ms median (range of round medians), RM/GAP median (range)."""
    from osnet_edge.models import input_size

    by_key = {(r["runtime"], r["threads"], r["res"], r["batch"], r["mode"]): r for r in rows}
    lines = ["| runtime | threads | input | batch | bare RM | bare GAP | bare RM/GAP | Extractor RM | Extractor GAP "
             "| Extractor RM/GAP | third-party bare | third-party flushed bare |", "|" + "---|" * 12]
    for (rt, th, res, b, mode), bare in by_key.items():
        if mode != "bare":
            continue
        e2e = by_key.get((rt, th, res, b, "end_to_end"), {"forms": {}})
        ratio = [f"{r['median']:.3f} ({r['min']:.2f}-{r['max']:.2f})" if r else "" for r in
                 (bare.get("rm_over_gap"), e2e.get("rm_over_gap"))]
        h, w = input_size(res)
        cells = [_cell(bare, "ReduceMean"), _cell(bare, "GlobalAveragePool"), ratio[0], _cell(e2e, "ReduceMean"),
                 _cell(e2e, "GlobalAveragePool"), ratio[1], _cell(bare, "third-party"), _cell(bare, "third-party, flushed")]
        lines.append(f"| {rt} | {th} | {h}x{w} | {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(time_one(json.loads(args.one))))
        return 0
    if args.render:
        with open(args.render) as f:
            saved = json.load(f)
        print(f"cpu: {saved['cpu']['model']}; {saved['cpu']['summary']}\nversions: {saved['versions']}")
        print(markdown_table(saved["rows"]))
        return 0
    if min(args.threads) < 1 or min(args.batch) < 1 or args.rounds < 1 or args.seconds <= 0:
        p.error("--threads, --batch and --rounds must be >= 1 and --seconds > 0")
    if not os.path.isfile(args.weights):
        raise CliError(f"--weights {args.weights}: not found (the shared x0.25 checkpoint or your own)")
    cpu = cpu_description()
    print(f"machine: {cpu['summary']}\ncpu: {cpu['model']}; versions: {runtime_versions()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="osnet_pooling_") as tmp:
        work = args.work or tmp
        os.makedirs(work, exist_ok=True)
        specs = contenders(args, prepare_bundles(args, work), work)
        print(f"{len(specs)} contenders x {args.rounds} rounds, {args.seconds:g} s per measurement", flush=True)
        results = run_rounds(specs, args.rounds)
    rows, agreement = summarise(specs, results), embedding_agreement(specs, results)
    print_table(rows)
    print(markdown_table(rows))
    for a in agreement:
        print(f"embeddings {a['runtime']} res {a['res']:g}: ReduceMean vs GAP max |diff| {a['max_abs_diff']:.2e}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        settings = {k: v for k, v in vars(args).items() if k != "one"}
        samples = [{"spec": s, "rounds": [res[i] for res in results]} for i, s in enumerate(specs)]
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu, "versions": runtime_versions(), "settings": settings, "rows": rows,
                       "embedding_agreement": agreement, "samples": samples}, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    run(main)
