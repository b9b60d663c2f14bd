"""``osnet-edge adapt``: adapt an OSNet checkpoint to a smaller input resolution (or width) on your own person
crops."""
from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Sequence

from .common import CliError, Parser

EXAMPLES = """\
examples:
  # x0.25 at half resolution (128x64), distilled from the same weights at 256x128 on unlabelled crops
  osnet-edge adapt --weights osnet_x0_25_msmt17.pth --res 0.5 --data crops/ --out x025_r05.pth
  # the agreed adaptation set of the shared data, and rank-1/mAP before/after on its evaluation sets
  osnet-edge adapt --weights ../shared/data/weights/torchreid/osnet_x0_25_msmt17.pth --res 0.5 \\
      --adaptation-set --eval --out x025_r05.pth
  # the Market-1501 benchmark recipe (README "Results"): bounding_box_train only, identities from the file
  # names -> distillation from 256x128 + logit distillation through the checkpoint's own classifier
  osnet-edge adapt --weights ../shared/data/weights/torchreid/osnet_x0_25_market1501.pth --res 0.5 \\
      --data ../shared/data/market1501/bounding_box_train --labels --budget-min 60 --threads 2 --eval \\
      --out x025_market_r05.pth
  # the chain: 64x32 starting from the adapted 128x64 (teacher and classifier still the 256x128 checkpoint)
  osnet-edge adapt --weights ../shared/data/weights/torchreid/osnet_x0_25_market1501.pth --res 0.25 \\
      --init x025_market_r05.pth --data ../shared/data/market1501/bounding_box_train --labels --budget-min 30 \\
      --out x025_market_r025.pth
  # a foreign 256-d teacher (Open Model Zoo, BGR 0-255): similarity-structure losses only
  osnet-edge adapt --weights osnet_x0_25_msmt17.pth --res 1.0 --data crops/ --out x025_omz.pth \\
      --teacher person-reidentification-retail-0287.xml --losses simkl=1,relational=1
  # then export it like any torchreid checkpoint (the manifest records the adaptation)
  osnet-edge export --width 0.25 --res 0.5 --weights x025_r05.pth
"""


def build_parser() -> Parser:
    from osnet_edge.adapt.config import (AUTO, KD_LOSSES, LABEL_LOSSES, LABELLED_DEFAULT, LABELLED_FALLBACK,
                                         AdaptConfig, format_losses)

    d = AdaptConfig()
    p = Parser(command="adapt", description="Adapt a torchreid OSNet checkpoint to a reduced input resolution (or width) on "
               "person crops: knowledge distillation from a teacher (default: the checkpoint itself at "
               "256x128) without labels, and/or the paper's cross-entropy fine-tuning with labels. Writes a "
               "torchreid-compatible checkpoint after every epoch (resumable) that osnet-edge export --weights "
               "takes; the adaptation is recorded in it and in the bundle manifest.", epilog=EXAMPLES)
    p.add_argument("--weights", required=True, metavar="CKPT", help="torchreid checkpoint: the student's "
                   "initial weights (and the default teacher)")
    p.add_argument("--width", type=float, default=None, help="student width (default: the checkpoint's)")
    p.add_argument("--variant", choices=["osnet", "ibn", "ain"], default=None,
                   help="student variant (default: the checkpoint's)")
    p.add_argument("--res", type=float, default=0.5,
                   help="student resolution multiplier on 256x128 (default 0.5 = 128x64)")
    p.add_argument("--init", metavar="CKPT", default=None,
                   help="the student's initial weights when not --weights, e.g. an adapted 128x64 checkpoint to "
                        "start 64x32 from (its classifier starts the head when it fits); teacher and logit "
                        "targets stay --weights")
    src = p.add_argument_group("data (never adapt on your evaluation images)")
    src.add_argument("--data", nargs="+", metavar="DIR", default=[],
                     help="folders of person crops (jpg/png; searched recursively without --labels)")
    src.add_argument("--adaptation-set", nargs="?", const="", default=None, metavar="ROOT",
                     help="the agreed adaptation set of the shared data (cuhk03/detected/train + CUHK01 ids "
                          "0486-0971) under ROOT (default ../shared/data or $OSNET_EDGE_DATA)")
    src.add_argument("--labels", action="store_true",
                     help="identities from file names (Market-1501 / CUHK03 / CUHK01 naming): enables ce / triplet")
    src.add_argument("--naming", default="auto", choices=["auto", "market1501", "cuhk03", "cuhk01"],
                     help="file-name convention with --labels (default auto)")
    t = p.add_argument_group("teacher")
    t.add_argument("--teacher", metavar="CKPT|BUNDLE|ONNX|XML", default=None,
                   help="a stronger model: checkpoint, osnet_edge bundle dir, .onnx or OpenVINO .xml "
                        "(default: --weights at --teacher-res)")
    t.add_argument("--teacher-res", type=float, default=d.teacher_res,
                   help=f"resolution of a checkpoint teacher (default {d.teacher_res})")
    t.add_argument("--teacher-format", choices=["bgr255", "rgb_imagenet"], default=None,
                   help="input convention of an .onnx/.xml teacher (default: bgr255 for .xml, rgb_imagenet for .onnx)")
    t.add_argument("--teacher-backend", choices=["auto", "openvino", "torch"], default="auto",
                   help="how a checkpoint teacher runs: auto = OpenVINO when installed (converted in memory, "
                        "several times faster on CPU), else torch (default auto)")
    r = p.add_argument_group("recipe")
    r.add_argument("--epochs", type=int, default=d.epochs, help=f"default {d.epochs} (ignored with --budget-min)")
    r.add_argument("--budget-min", type=float, default=None, metavar="N",
                   help="finish in N minutes (this call's adaptation, plus the final --eval): the steps and the "
                        "learning-rate decay are planned from the measured step time and re-planned as it goes")
    r.add_argument("--losses", default=None, metavar="SPEC",
                   help=f"weighted losses, e.g. cosine=1,fmap=1 (known: {', '.join(KD_LOSSES + LABEL_LOSSES)}). "
                        f"Default {AUTO}: cosine + fmap from an OSNet checkpoint teacher of the student's width, "
                        "cosine from other 512-d teachers, simkl + relational from other embedding sizes; "
                        f"with --labels {format_losses(LABELLED_DEFAULT)} (+ logit KD via the checkpoint's classifier) when its "
                        f"rows are the data's identities, else {format_losses(LABELLED_FALLBACK)} (cross-entropy, new head)")
    r.add_argument("--lr", type=float, default=d.lr, help=f"AMSGrad learning rate (default {d.lr})")
    r.add_argument("--batch-size", type=int, default=d.batch_size, help=f"default {d.batch_size}")
    r.add_argument("--schedule", choices=["cosine", "constant"], default=d.schedule,
                   help=f"learning-rate schedule after a warm-up epoch (default {d.schedule})")
    r.add_argument("--temperature", type=float, default=d.temperature, help=f"simkl temperature (default {d.temperature})")
    r.add_argument("--kd-temperature", type=float, default=d.kd_temperature,
                   help=f"logit distillation temperature (default {d.kd_temperature})")
    r.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs,
                   help=f"linear learning-rate warm-up (default {d.warmup_epochs}; at most a fifth of a budgeted run)")
    r.add_argument("--head", choices=["auto", "new"], default=d.head,
                   help="cross-entropy head: auto = start from the checkpoint's classifier when it has one row "
                        "per identity of the data (its own training set), new = a fresh layer (default auto)")
    r.add_argument("--bn", choices=["train", "frozen"], default=d.bn,
                   help="BatchNorm during training: batch statistics (train; see --recalibrate), or "
                        f"frozen at the AdaBN statistics (default {d.bn})")
    r.add_argument("--recalibrate", action="store_true",
                   help="with --bn train: re-estimate BN statistics on clean crops at the end (precise BN); off by "
                        "default: measured 0.7 rank-1 worse than the statistics training leaves at 128x64")
    r.add_argument("--view-sets", type=int, default=d.view_sets, metavar="N",
                   help="distinct augmented view sets (flip + crop), reused in turn: the teacher embeds each view "
                        "and its mirror once (on 13k crops ~2-3 min per set on a CPU), random erasing is drawn "
                        "afresh on the student's input; 0 = a fresh set every epoch (default %(default)s)")
    r.add_argument("--freeze", nargs="*", default=list(d.freeze), metavar="MODULE",
                   help="top-level modules kept fixed, e.g. conv1 conv2")
    r.add_argument("--seed", type=int, default=d.seed, help=f"default {d.seed}")
    _add_output_options(p)
    return p


def labelled_default(weights: str, teacher: str | None, num_ids: int) -> dict:
    """The labelled recipe: distillation + logit distillation where the teacher is --weights and its classifier
    has one row per identity of the data (its own training set); elsewhere distillation + cross-entropy on a
    new head, so the labels still count."""
    from osnet_edge.adapt.config import LABELLED_DEFAULT, LABELLED_FALLBACK
    from osnet_edge.models import read_checkpoint

    classifier = read_checkpoint(weights).get("classifier.weight") if teacher is None else None
    if classifier is None or classifier.shape[0] != num_ids:
        return dict(LABELLED_FALLBACK)
    return dict(LABELLED_DEFAULT)



def _add_output_options(p: Parser) -> None:
    o = p.add_argument_group("output")
    o.add_argument("--out", required=True, metavar="CKPT", help="adapted checkpoint (written every epoch)")
    o.add_argument("--resume", action="store_true", help="continue an interrupted run (same options) from <out>.resume")
    o.add_argument("--force", action="store_true", help="replace an existing --out")
    o.add_argument("--eval", action="store_true",
                   help="rank-1/mAP before and after on the shared data's evaluation protocols (when present)")
    o.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's, all cores). On a busy machine 1 thread can be several "
                        "times faster: OpenMP threads wait for each other whenever one is descheduled")
    o.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]",
                   help="where the student trains: auto = CUDA when torch sees a GPU, else cpu (default auto); "
                        "mixed precision on CUDA, float32 on the CPU")
    o.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="where the teacher's targets per view set are kept for later runs (default "
                        "$OSNET_EDGE_CACHE/adapt or ~/.cache/osnet_edge/adapt)")
    o.add_argument("--no-cache", action="store_true", help="keep the teacher's targets in memory only")
    o.add_argument("--no-progress", action="store_true", help="no progress bars")


def _read_data(args, progress: bool):
    """The adaptation crops (--adaptation-set and/or --data), checked against the evaluation images;
    returns (data, shared data root or None)."""
    from osnet_edge.adapt import AdaptationData
    from osnet_edge.data import adaptation_samples, assert_disjoint_from_protocols, shared_data_dir

    samples_paths: list = []
    pids: list | None = [] if args.labels else None
    sources = []
    root = shared_data_dir() if args.adaptation_set in (None, "") else args.adaptation_set
    if args.adaptation_set is not None:
        if root is None:
            raise CliError("--adaptation-set: shared data not found; pass its ROOT or set OSNET_EDGE_DATA")
        samples = adaptation_samples(root)
        samples_paths += [s.path for s in samples]
        if pids is not None:
            pids += [("shared", s.pid) for s in samples]
        sources.append(f"adaptation set of {root}")
    if args.data:
        folder_data = AdaptationData.from_folders(args.data, labels=args.labels, naming=args.naming)
        samples_paths += folder_data.paths
        if pids is not None:
            pids += [("folders", int(x)) for x in folder_data.labels]
        sources += folder_data.sources
    if root is not None:  # never adapt on the shared evaluation images
        try:
            assert_disjoint_from_protocols(samples_paths, root)
        except ValueError as exc:
            raise CliError(f"adaptation images include evaluation images: {exc}") from None
    data = AdaptationData.from_paths(samples_paths, pids, sources=sources, progress=progress)
    return data, root


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from osnet_edge.adapt import AdaptConfig, adapt, evaluate
        from osnet_edge.adapt.config import format_losses
    except ImportError as exc:
        raise CliError(f"adaptation needs torch ({exc.name} missing): pip install 'osnet_edge[export]'") from None
    from osnet_edge.adapt.engine import default_cache_dir

    if not os.path.isfile(args.weights):
        raise CliError(f"--weights {args.weights}: no such file")
    if not args.data and args.adaptation_set is None:
        raise CliError("give --data DIR... or --adaptation-set")
    if args.init is not None and not os.path.isfile(args.init):
        raise CliError(f"--init {args.init}: no such file")
    try:
        from osnet_edge.adapt.device import resolve_device
        device = resolve_device(args.device)
    except ValueError as exc:
        raise CliError(f"--device: {exc}") from None
    d = AdaptConfig()
    losses = args.losses or format_losses(d.losses)  # auto; with --labels decided once the data is read
    cfg = AdaptConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, schedule=args.schedule,
                      warmup_epochs=args.warmup_epochs, losses=losses, temperature=args.temperature,
                      kd_temperature=args.kd_temperature, head=args.head, bn=args.bn, view_sets=args.view_sets,
                      freeze=tuple(args.freeze), teacher_res=args.teacher_res, seed=args.seed,
                      budget_min=args.budget_min, recalibrate=args.recalibrate)
    if cfg.uses_labels and not args.labels:
        raise CliError(f"losses {losses} need identities: add --labels")

    progress = not args.no_progress
    data, root = _read_data(args, progress)
    print(f"adaptation data: {len(data)} crops" + (f", {data.num_ids} identities" if data.labels is not None else "")
          + f" (hash {data.data_hash[:12]})")
    if args.labels and args.losses is None:
        cfg = dataclasses.replace(cfg, losses=labelled_default(args.weights, args.teacher, data.num_ids))

    before = None
    if args.eval:
        if root is None:
            raise CliError("--eval needs the shared data (../shared/data or $OSNET_EDGE_DATA)")
        from osnet_edge.adapt.teachers import osnet_config_of
        from osnet_edge.models import build_osnet, load_torchreid_weights, read_checkpoint

        base = build_osnet(*osnet_config_of(read_checkpoint(args.weights)))
        load_torchreid_weights(base, args.weights)
        print("evaluating the unadapted checkpoint ...", flush=True)
        before = {r: evaluate(base, r, root) for r in sorted({1.0, args.res}, reverse=True)}

    final_eval, eval_images = None, 0
    if args.eval:
        from osnet_edge.data import EVAL_PROTOCOLS, default_protocols

        eval_images = sum(len(q) + len(g) for q, g in (EVAL_PROTOCOLS[n](root) for n in default_protocols(root)))
        final_eval = functools.partial(evaluate, res=args.res, root=root)
    cache_dir = None if args.no_cache else (args.cache_dir or default_cache_dir())
    t0 = time.perf_counter()
    result = adapt(args.weights, args.out, data, res=args.res, width=args.width, variant=args.variant,
                   teacher=args.teacher, config=cfg, teacher_format=args.teacher_format, resume=args.resume,
                   overwrite=args.force, progress=progress, threads=args.threads,
                   teacher_backend=args.teacher_backend, init=args.init, device=device, cache_dir=cache_dir,
                   final_eval=final_eval, eval_images=eval_images)
    rec = result.record
    print(f"adapted checkpoint: {result.path}  ({rec['epochs']} epochs = {rec['steps']} steps, {rec['num_images']} "
          f"crops, {rec['seconds']:.0f} s wall / {rec['cpu_seconds']:.0f} s CPU in all, this call "
          f"{time.perf_counter() - t0:.0f} s)")
    if args.eval and before is not None and "evaluation" in rec:
        after = rec["evaluation"]
        for name in after:
            ref, lo, new = before[1.0][name], before[args.res][name], after[name]
            line = (f"{name}: res 1.0 R1 {ref['rank1']:.1f} mAP {ref['mAP']:.1f} | res {args.res} before R1 "
                    f"{lo['rank1']:.1f} mAP {lo['mAP']:.1f} -> after R1 {new['rank1']:.1f} mAP {new['mAP']:.1f}")
            if args.res != 1.0 and ref["rank1"] != lo["rank1"]:
                line += f" ({100 * (new['rank1'] - lo['rank1']) / (ref['rank1'] - lo['rank1']):.0f} % of the gap)"
            print(line)
    print(f"export: osnet-edge export --width {rec['width']} --res {rec['res']} --weights {result.path}")
    return 0
