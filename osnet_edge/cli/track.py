"""``osnet-edge track``: frames (folder or video) + MOT det.txt + a bundle -> MOT tracks, BoxMOT's BoT-SORT by default.

Needs the ``trackers`` extra (BoxMOT, hence torch); the embeddings come from the torch-free Extractor."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from .common import CliError, Parser

EXAMPLES = """\
examples:
  # MOT17-style sequence folder: img1/ frames and det/det.txt detections -> tracks.txt
  osnet-edge track --frames MOT17-04/img1 --det MOT17-04/det/det.txt --bundle bundles/x025_int8 --out tracks.txt
  # a video, DeepOCSORT, OpenVINO, detections under 0.3 confidence dropped
  osnet-edge track --frames cam1.mp4 --det cam1_det.txt --bundle bundles/x025 --tracker deepocsort \\
      --runtime openvino --min-conf 0.3 --out cam1_tracks.txt
  # motion only (no re-ID), to compare
  osnet-edge track --frames MOT17-04/img1 --det MOT17-04/det/det.txt --no-reid --out motion.txt
"""


def build_parser() -> Parser:
    p = Parser(command="track", description="Track people through a sequence with a BoxMOT tracker using an osnet_edge "
               "bundle as its re-ID model. Input: frames (an image folder sorted by name, or a video) and detections "
               "in MOT det.txt format (frame, id, x, y, w, h, conf, ...; frames from 1). Output: MOT tracks "
               "(frame, id, x, y, w, h, conf, -1, -1, -1). Needs pip install 'osnet_edge[trackers]'.",
               epilog=EXAMPLES)
    p.add_argument("--frames", required=True, metavar="PATH", help="image folder or video file")
    p.add_argument("--det", required=True, metavar="TXT", help="detections, MOT det.txt format")
    p.add_argument("--bundle", metavar="DIR", help="osnet_edge bundle used as the re-ID model")
    p.add_argument("--no-reid", action="store_true", help="motion only (BoT-SORT without appearance)")
    p.add_argument("--out", required=True, metavar="TXT", help="where to write the MOT tracks")
    p.add_argument("--tracker", default="botsort", help="BoxMOT tracker: botsort (default), deepocsort, strongsort, "
                   "boosttrack, hybridsort, ...")
    p.add_argument("--runtime", help="runtime for the bundle (default: the bundle's)")
    p.add_argument("--threads", type=int, help="inference threads")
    p.add_argument("--min-conf", type=float, default=0.0, help="drop detections under this confidence (default 0)")
    p.add_argument("--frame-rate", type=int, default=30, help="sequence frame rate (scales BoT-SORT's track buffer)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.no_reid == bool(args.bundle):
        raise CliError("give exactly one of --bundle DIR (re-ID with an osnet_edge bundle) and --no-reid (motion only)")
    from osnet_edge.progress import progress_bar
    from osnet_edge.trackers.boxmot_reid import BoxmotReID, create_tracker
    from osnet_edge.trackers.mot import TrackingRun, count_frames, format_mot_tracks, iter_frames, read_mot_detections

    for path, what in ((args.frames, "--frames"), (args.det, "--det")):
        if not Path(path).exists():
            raise CliError(f"{what} {path}: no such file or folder")
    detections = read_mot_detections(args.det, min_conf=args.min_conf)
    reid = None
    if args.bundle:
        options = {k: v for k, v in (("runtime", args.runtime), ("threads", args.threads)) if v is not None}
        reid = BoxmotReID(args.bundle, **options)
    options = {"frame_rate": args.frame_rate} if args.tracker.lower() == "botsort" else {}
    try:
        run = TrackingRun(create_tracker(args.tracker, reid, **options))
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    lines: list[str] = []
    bar = progress_bar(total=count_frames(args.frames), enabled=not args.no_progress, unit="frame", desc="tracking")
    with bar:
        for number, tracks in run(iter_frames(args.frames), detections):
            lines += format_mot_tracks(number, tracks)
            bar.update(1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + ("\n" if lines else ""))
    ids = len({line.split(",")[1] for line in lines})
    what = f"re-ID {reid.extractor!r}" if reid else "motion only"
    print(f"{run.frames} frames, {len(lines)} boxes in {ids} tracks -> {out}; {args.tracker}, {what}; "
          f"{run.fps:.1f} fps (tracker + re-ID)", file=sys.stdout)
    return 0
