#!/usr/bin/env python3
"""Adaptation engine speed, before vs after, in one run: images trained per second and per CPU-minute.

"Before" is the adaptation code of an earlier commit (``--before``, checked out read-only with
``git worktree`` into a temporary folder), "after" the working tree. Each contender runs
``adapt()`` in its own process on the same Market-1501 ``bounding_box_train`` subset with the
same recipe, one after the other, rounds interleaved (before, after cold, after warm, ...), so
both see the same machine. "after, cold" computes the teacher's targets (into an empty cache
folder), "after, warm" reads them back memory-mapped, as a second run with the same teacher and
data (an ablation, a resumed run, another budget) does. Prints a table; ``--json`` keeps it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import CliError, Parser, run  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, os, sys, time, torch
from osnet_edge.adapt import AdaptationData, AdaptConfig, adapt
from osnet_edge.data import market1501_train
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
samples = market1501_train(args["root"])[:: args["stride"]][: args["images"]]
data = AdaptationData.from_samples(samples, labels=True)
kw = dict(epochs=args["epochs"], view_sets=args["view_sets"], losses=args["losses"], bn_images=args["bn_images"])
cfg = AdaptConfig(**kw)
extra = {"cache_dir": args["cache_dir"]} if args["cache_dir"] else {}
t0, c0 = time.perf_counter(), time.process_time()
rec = adapt(args["weights"], args["out"], data, res=args["res"], config=cfg, overwrite=True, progress=False,
            threads=args["threads"], **extra).record
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
steps = sum(h.get("steps", 0) for h in rec["loss_history"]) or rec["epochs"] * (len(data) // cfg.batch_size)
import osnet_edge.adapt as _a
print(json.dumps({"module": _a.__file__, "wall_s": wall, "cpu_s": cpu, "images": steps * cfg.batch_size, "teacher_s": rec["teacher_seconds"],
                  "final_loss": rec["loss_history"][-1]["loss"]}))
"""


def build_parser() -> Parser:
    p = Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", default="7a22560", help="commit of the 'before' engine (default: the one before "
                   "the cached-target engine)")
    p.add_argument("--images", type=int, default=1024, help="bounding_box_train crops (every --stride-th)")
    p.add_argument("--stride", type=int, default=12)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--view-sets", type=int, default=2)
    p.add_argument("--losses", default="cosine=1,fmap=1,ce=1", help="same recipe for both")
    p.add_argument("--res", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", required=True, metavar="PATH", help="where the before/after table is written (JSON)")
    return p


def _run_child(pythonpath: str, args: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": pythonpath}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True, env=env,
                          cwd=pythonpath)
    if proc.returncode != 0:
        raise CliError(f"child run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from osnet_edge.data import shared_data_dir

    root = shared_data_dir()
    if root is None:
        raise CliError("shared data not found (../shared/data or $OSNET_EDGE_DATA)")
    work = tempfile.mkdtemp(prefix="adapt_speed_")
    before_tree = os.path.join(work, "before")
    subprocess.run(["git", "-C", REPO, "worktree", "add", "--detach", before_tree, args.before], check=True,
                   capture_output=True)
    base = {"root": str(root), "weights": str(root / "weights/torchreid/osnet_x0_25_market1501.pth"),
            "images": args.images, "stride": args.stride, "epochs": args.epochs, "view_sets": args.view_sets,
            "losses": args.losses, "res": args.res, "threads": args.threads, "bn_images": 4096}
    cache = os.path.join(work, "cache")
    rows: dict[str, list] = {"before": [], "after, cold cache": [], "after, warm cache": []}
    load0 = os.getloadavg()
    try:
        for r in range(args.rounds):
            rows["before"].append(_run_child(before_tree, {**base, "out": f"{work}/b{r}.pth", "cache_dir": None}))
            cold = f"{cache}{r}"
            rows["after, cold cache"].append(_run_child(REPO, {**base, "out": f"{work}/c{r}.pth", "cache_dir": cold}))
            rows["after, warm cache"].append(_run_child(REPO, {**base, "out": f"{work}/w{r}.pth", "cache_dir": cold}))
            print(f"round {r + 1}/{args.rounds} done", flush=True)
    finally:
        subprocess.run(["git", "-C", REPO, "worktree", "remove", "--force", before_tree], capture_output=True)
    load1 = os.getloadavg()
    print(f"\n{args.images} crops, {args.epochs} epochs, {args.view_sets} view sets, res {args.res}, {args.threads} "
          f"thread(s), losses {args.losses}; load average {load0[0]:.1f} -> {load1[0]:.1f} on {os.cpu_count()} cores")
    print("| engine | wall s | CPU s | teacher s | images/s (wall) | images per CPU-minute |")
    print("|---|---|---|---|---|---|")
    summary = {}
    for name, runs in rows.items():
        wall = sum(x["wall_s"] for x in runs) / len(runs)
        cpu = sum(x["cpu_s"] for x in runs) / len(runs)
        teacher = sum(x["teacher_s"] for x in runs) / len(runs)
        images = runs[0]["images"]
        summary[name] = {"wall_s": wall, "cpu_s": cpu, "teacher_s": teacher, "images": images,
                         "images_per_s": images / wall, "images_per_cpu_min": 60 * images / cpu, "runs": runs}
        print(f"| {name} | {wall:.0f} | {cpu:.0f} | {teacher:.0f} | {images / wall:.1f} | {60 * images / cpu:.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "loadavg": [load0, load1], "summary": summary,
                       "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, f, indent=1)
    return 0


if __name__ == "__main__":
    run(main)
