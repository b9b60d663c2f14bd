#!/usr/bin/env python3
"""The adaptation experiment on the shared real data: before/after rank-1 and mAP, gap recovered.

``--protocol market1501`` (the default when Market-1501 is present): adapts
osnet_x0_25_market1501.pth on ``bounding_box_train`` only (751 identities, disjoint from the test
ids; labels allowed, as the paper trains with them) and evaluates on query vs bounding_box_test.
``--protocol cuhk``: adapts osnet_x0_25_msmt17.pth on the agreed CUHK adaptation set
(cuhk03/detected/train + CUHK01 ids 0486-0971) and evaluates on cuhk03-val and cuhk01-test.
Reports the unadapted model at res 1.0 (the reference) and at the target res, the adapted model,
and the share of the rank-1 gap recovered. Prints the wall time, the process CPU time and the
machine's load average, because timings on a shared machine mean little without them.

``--dev`` is for choosing a recipe without looking at the evaluation sets: it holds out part of
the adaptation identities (Market-1501: the last 51 train ids; CUHK: CUHK01 ids 0872-0971 and
CUHK03 train ids 0040-0049), trains on the rest and reports rank-1/mAP on the held-out part after
every ``--eval-every`` epochs.
"""
from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import CliError, Parser, run  # noqa: E402

EXAMPLES = """\
examples:
  # the headline: x0.25 Market-1501 @ res 0.5 on bounding_box_train (labels + distillation from 256x128)
  python scripts/adapt_experiment.py --res 0.5 --epochs 10 --out runs/adapt/x025_market_r05.pth
  # the cross-domain variant on the CUHK adaptation set (x0.25 MSMT17, no labels)
  python scripts/adapt_experiment.py --protocol cuhk --res 0.5 --out /tmp/adapted_x025_r05.pth
  # choose a recipe on a held-out part of the adaptation data (never the evaluation sets)
  python scripts/adapt_experiment.py --dev --epochs 8 --losses cosine=1,simkl=1 --eval-every 2
  # stretch: distil from Open Model Zoo person-reidentification-retail-0287 (256-d)
  python scripts/adapt_experiment.py --res 1.0 --teacher omz-0287 --losses simkl=1,relational=1
"""

DEV_CUHK01_IDS = (872, 971)      # of the adaptation ids 0486-0971
DEV_CUHK03_IDS = (40, 49)        # of cuhk03/detected/train 0000-0049
DEV_MARKET_IDS = 51              # the last 51 of bounding_box_train's 751 identities


def build_parser() -> Parser:
    from osnet_edge.adapt.config import AdaptConfig

    d = AdaptConfig()
    p = Parser(description=__doc__.split("\n\n")[0], epilog=EXAMPLES)
    p.add_argument("--protocol", choices=["market1501", "cuhk"], default=None,
                   help="data: market1501 (adapt on bounding_box_train, evaluate on query/bounding_box_test) or cuhk "
                        "(the CUHK adaptation set, cuhk03-val + cuhk01-test). Default: market1501 when present")
    p.add_argument("--weights", default=None, help="student init (default ../shared/data/weights/torchreid/"
                   "osnet_x0_25_market1501.pth for market1501, osnet_x0_25_msmt17.pth for cuhk)")
    p.add_argument("--res", type=float, default=0.5, help="student resolution multiplier (default 0.5)")
    p.add_argument("--teacher", default=None, help="checkpoint / bundle / .onnx / .xml, or a known peer name "
                   "(omz-0287-fp32, ...); default: --weights at --teacher-res")
    p.add_argument("--teacher-res", type=float, default=d.teacher_res)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--budget-min", type=float, default=None, help="plan the run to end in N minutes (see adapt)")
    p.add_argument("--init", default=None, help="student init when not --weights (the chain: an adapted checkpoint)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--cache-dir", default=None, help="teacher target cache (default ~/.cache/osnet_edge/adapt)")
    p.add_argument("--kd-temperature", type=float, default=d.kd_temperature)
    p.add_argument("--no-teacher-flip", action="store_true", help="no mirrored teacher views (ablation)")
    p.add_argument("--no-erase", action="store_true", help="no random erasing on the student (ablation)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    p.add_argument("--schedule", default=d.schedule, choices=["cosine", "constant"])
    p.add_argument("--losses", default=None, help="default: auto (distillation); with labels auto,logit=1 (auto,ce=1 where the "
                   "checkpoint's classifier is not the data's identities)")
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--bn", default=d.bn, choices=["train", "frozen"])
    p.add_argument("--no-adabn", action="store_true")
    p.add_argument("--recalibrate", action="store_true", help="precise BN on clean views at the end (measured worse "
                   "at 128x64: off by default since issue 27; the runs before that had it on)")
    p.add_argument("--freeze", nargs="*", default=list(d.freeze))
    p.add_argument("--view-sets", type=int, default=d.view_sets)
    p.add_argument("--no-augment", action="store_true", help="clean views only (ablation)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--labels", action="store_true", help="read identities (needed by ce / triplet; always on "
                   "for market1501)")
    p.add_argument("--head", choices=["auto", "new"], default=d.head, help="cross-entropy head init (see adapt.py)")
    p.add_argument("--dev", action="store_true", help="train without the held-out dev ids, report dev metrics")
    p.add_argument("--eval-every", type=int, default=0, help="evaluate every N epochs (0: only at the end)")
    p.add_argument("--snapshot-dir", default=None, help="copy the checkpoint after every epoch here (epoch_NN.pth): "
                   "the rank-1-vs-minutes curve evaluated afterwards, without taking the run's time")
    p.add_argument("--skip-baseline", action="store_true", help="do not re-measure the unadapted models")
    p.add_argument("--out", default=None, help="adapted checkpoint (default: a temporary file)")
    p.add_argument("--json", default=None, help="append the result as one JSON line to this file")
    p.add_argument("--threads", type=int, default=None)
    return p


def dev_split(samples, market: bool):
    from osnet_edge.data import CUHK01_PID_OFFSET

    if market:
        dev_ids = set(sorted({s.pid for s in samples})[-DEV_MARKET_IDS:])
        return [s for s in samples if s.pid not in dev_ids], [s for s in samples if s.pid in dev_ids]

    def held_out(s):
        if s.pid >= CUHK01_PID_OFFSET:
            return DEV_CUHK01_IDS[0] <= s.pid - CUHK01_PID_OFFSET <= DEV_CUHK01_IDS[1]
        return DEV_CUHK03_IDS[0] <= s.pid <= DEV_CUHK03_IDS[1]
    return [s for s in samples if not held_out(s)], [s for s in samples if held_out(s)]


def dev_sets(dev_samples, market: bool):
    """(name, query, gallery) of the held-out ids. CUHK: per dataset, query = its first camera.
    Market-1501: query = the first crop of each identity in each camera, gallery = the rest
    (same-camera matches are ignored by the protocol, as on the test set)."""
    if market:
        seen, query, gallery = set(), [], []
        for s in dev_samples:
            (gallery if (s.pid, s.camid) in seen else query).append(s)
            seen.add((s.pid, s.camid))
        return [("dev-market1501", query, gallery)]
    return [(name, [s for s in dev_samples if s.camid == cams[0]], [s for s in dev_samples if s.camid == cams[1]])
            for name, cams in (("dev-cuhk03", (0, 1)), ("dev-cuhk01", (2, 3)))]


def dev_metrics(model, res, dev_samples, market: bool = False):
    """rank-1/mAP on the held-out adaptation ids (never the evaluation sets)."""
    import numpy as np

    from osnet_edge.adapt import embed
    from osnet_edge.metrics import rank_metrics
    from osnet_edge.models import input_size
    from osnet_edge.preprocess import read_image

    out = {}
    for name, q, g in dev_sets(dev_samples, market):
        feats = embed(model, [read_image(s.path) for s in q + g], input_size(res))
        pids = np.array([s.pid for s in q + g])
        cams_ = np.array([s.camid for s in q + g])
        out[name] = rank_metrics(feats[:len(q)], feats[len(q):], pids[:len(q)], pids[len(q):],
                                 cams_[:len(q)], cams_[len(q):])
    return out


def short(metrics: dict) -> str:
    return "  ".join(f"{k}: R1 {v['rank1']:.1f} mAP {v['mAP']:.1f}" for k, v in metrics.items())


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import tempfile

    import torch

    from osnet_edge.adapt import AdaptationData, AdaptConfig, adapt, evaluate, recalibrate_bn
    from osnet_edge.adapt.engine import default_cache_dir
    from osnet_edge.cli.adapt import labelled_default
    from osnet_edge.adapt.views import NO_AUGMENTATION, Augmentation
    from osnet_edge.adapt.teachers import osnet_config_of
    from osnet_edge.data import (EVAL_PROTOCOLS, adaptation_samples, market1501_train,
                                 protocol_available, shared_data_dir)
    from osnet_edge.foreign import known_peers
    from osnet_edge.models import build_osnet, input_size, load_torchreid_weights, read_checkpoint

    root = shared_data_dir()
    if root is None:
        raise CliError("shared data not found (../shared/data or $OSNET_EDGE_DATA): this experiment needs it")
    protocol = args.protocol or ("market1501" if protocol_available("market1501", root) else "cuhk")
    market = protocol == "market1501"
    eval_protocols = ["market1501"] if market else ["cuhk03-val", "cuhk01-test"]
    default_ckpt = "osnet_x0_25_market1501.pth" if market else "osnet_x0_25_msmt17.pth"
    weights = args.weights or str(root / "weights" / "torchreid" / default_ckpt)
    labels = args.labels or market
    losses = args.losses or "auto"   # with labels: the labelled default, once the data is read
    if args.threads:
        torch.set_num_threads(args.threads)
    teacher = args.teacher
    peers = known_peers(root)
    teacher_format = None
    if teacher in peers:
        teacher, teacher_format = peers[teacher]["path"], peers[teacher]["input_format"]

    samples = market1501_train(root) if market else adaptation_samples(root)  # both check disjointness
    dev_samples = []
    if args.dev:
        samples, dev_samples = dev_split(samples, market)
    sources = ["market1501/bounding_box_train"] if market else ["cuhk03/detected/train", "cuhk01/campus ids 0486-0971"]
    data = AdaptationData.from_samples(samples, labels=labels, progress=True,
                                       sources=sources + (["minus dev ids"] if args.dev else []))
    if labels and args.losses is None:
        losses = labelled_default(weights, teacher, data.num_ids)
    augmentation = NO_AUGMENTATION if args.no_augment else Augmentation(erase_p=0.0 if args.no_erase else 0.5)
    cfg = AdaptConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, schedule=args.schedule,
                      warmup_epochs=args.warmup_epochs, losses=losses, temperature=args.temperature, head=args.head,
                      bn=args.bn, adabn=not args.no_adabn, recalibrate=args.recalibrate,
                      freeze=tuple(args.freeze), view_sets=args.view_sets, teacher_res=args.teacher_res,
                      augmentation=augmentation, seed=args.seed, budget_min=args.budget_min,
                      kd_temperature=args.kd_temperature, teacher_flip=not args.no_teacher_flip)
    print(f"adaptation data: {len(data)} crops" + (f", {data.num_ids} ids" if data.labels is not None else "")
          + (f" (dev held out: {len(dev_samples)})" if args.dev else ""))
    print(f"recipe: {json.dumps(cfg.to_dict())}")

    def measure(model, res):
        return dev_metrics(model, res, dev_samples, market) if args.dev else evaluate(model, res, root, eval_protocols)

    result: dict = {"argv": list(argv) if argv is not None else sys.argv[1:], "res": args.res,
                    "recipe": cfg.to_dict(), "dev": args.dev, "protocol": protocol, "weights": weights}
    if not args.skip_baseline:
        base = build_osnet(*osnet_config_of(read_checkpoint(weights)))
        load_torchreid_weights(base, weights)
        base = base.to(memory_format=torch.channels_last)
        result["unadapted_res1"] = measure(base, 1.0)
        print(f"unadapted @ res 1.0: {short(result['unadapted_res1'])}", flush=True)
        result["unadapted"] = measure(base, args.res)
        print(f"unadapted @ res {args.res}: {short(result['unadapted'])}", flush=True)
        recalibrate_bn(base, data.images, input_size(args.res))
        result["adabn"] = measure(base, args.res)
        print(f"AdaBN only @ res {args.res}: {short(result['adabn'])}", flush=True)

    curve = []

    def on_epoch(epoch, model, record):
        if args.snapshot_dir:
            import shutil

            os.makedirs(args.snapshot_dir, exist_ok=True)
            shutil.copyfile(out, os.path.join(args.snapshot_dir, f"epoch_{epoch:02d}.pth"))
        if args.eval_every and epoch % args.eval_every == 0 and not record["complete"]:
            m = measure(model, args.res)
            curve.append({"epoch": epoch, "steps": record["steps"], "seconds": record["seconds"],
                          "cpu_seconds": record["cpu_seconds"], **m})
            print(f"  epoch {epoch}, {record['seconds'] / 60:.1f} min (BN not recalibrated): {short(m)}", flush=True)
            if args.json:
                with open(args.json + ".curve", "a") as f:
                    f.write(json.dumps(curve[-1]) + "\n")

    out = args.out or os.path.join(tempfile.mkdtemp(prefix="adapt_"), "adapted.pth")
    if not args.dev:  # decode the evaluation crops now (cached in-process): the budget is for adaptation itself
        from osnet_edge.adapt.evaluation import _protocol_images
        for name in eval_protocols:
            _protocol_images(name, str(root))
    load0 = os.getloadavg()
    t0, c0 = time.perf_counter(), time.process_time()
    eval_images = 0 if args.dev else sum(len(q) + len(g) for q, g in (EVAL_PROTOCOLS[n](root) for n in eval_protocols))
    res = adapt(weights, out, data, res=args.res, teacher=teacher, teacher_format=teacher_format, config=cfg,
                overwrite=True, on_epoch=on_epoch, threads=args.threads, init=args.init, device=args.device,
                cache_dir=args.cache_dir or default_cache_dir(), final_eval=lambda m: measure(m, args.res),
                eval_images=eval_images)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    load1 = os.getloadavg()
    adapted = res.record["evaluation"]
    result.update({"adapted": adapted, "curve": curve, "checkpoint": out, "wall_s": round(wall, 1),
                   "cpu_s": round(cpu, 1), "epoch_seconds": res.record["epoch_seconds"],
                   "epochs": res.record["epochs"], "epochs_planned": res.record["epochs_planned"],
                   "steps": res.record["steps"], "losses": res.record["losses"], "machine": res.record["machine"],
                   "teacher_seconds": res.record["teacher_seconds"], "loss_history": res.record["loss_history"],
                   "loadavg_start": load0, "loadavg_end": load1, "threads": torch.get_num_threads(),
                   "cpus": os.cpu_count()})
    print(f"adapted @ res {args.res}: {short(adapted)}")
    if "unadapted" in result:
        gaps = {}
        for name in adapted:
            lo, hi, new = (result["unadapted"][name]["rank1"], result["unadapted_res1"][name]["rank1"],
                           adapted[name]["rank1"])
            gaps[name] = 100.0 * (new - lo) / (hi - lo) if hi != lo else float("nan")
        result["gap_recovered_pct"] = gaps
        print("rank-1 gap recovered: " + "  ".join(f"{k} {v:.0f} %" for k, v in gaps.items()))
    print(f"adaptation time: wall {wall:.0f} s, process CPU {cpu:.0f} s on {os.cpu_count()} cores "
          f"(load average {load0[0]:.1f} -> {load1[0]:.1f}; >{os.cpu_count()} means other work shared the CPU); "
          f"per epoch {', '.join(f'{s:.0f}' for s in res.record['epoch_seconds'])} s; "
          f"teacher {res.record['teacher_seconds']:.0f} s")
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    run(main)
