#!/usr/bin/env python3
"""Benchmark: does our re-ID keep identities inside BoT-SORT, and what does it cost per frame?

``identity``: sequences composed from real Market-1501 evaluation crops (query + bounding_box_test identities;
nothing is tuned on them) walking over a background at camera-like sizes (640x360, people 90-150 px high),
with crossings, a pillar that occludes, and re-entries (a person turns back after leaving and re-enters seen
from another camera: another crop of the same identity). Ground-truth boxes become the detections, with
jitter, dropouts, weak detections of half-hidden people and a few false positives. BoxMOT's BoT-SORT runs
motion only, with each ``--reid NAME=BUNDLE``, and with each ``--boxmot-onnx NAME=FILE`` (BoxMOT's own ONNX
re-ID backend); motmetrics scores IDF1, ID switches and MOTA (IoU >= 0.5).

``cost``: re-ID milliseconds per frame (all boxes of a frame in one get_features call) for 1, 8 and 32 people,
per ``--reid`` bundle (each bundle says its runtime and precision).
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # scripts/, for _cli
from _cli import Parser, run  # noqa: E402

import numpy as np  # noqa: E402

FRAME_HW = (360, 640)
PILLAR_X = (300, 350)            # a static occluder, full height
MIN_GT_VISIBILITY = 0.25         # people less visible than this are not ground truth
MIN_DET_VISIBILITY = 0.5         # the detector finds people at least this visible (weakly down to the GT floor)


@dataclass
class Walker:
    """One identity's appearances: (first frame, x per frame, foot y, height, crop) per time on screen."""
    pid: int
    segments: list = field(default_factory=list)


def _background(rng: np.random.Generator) -> np.ndarray:
    import cv2

    h, w = FRAME_HW
    low = cv2.resize(rng.uniform(60, 190, (6, 10, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    texture = cv2.GaussianBlur(rng.normal(0, 12, (h, w, 3)).astype(np.float32), (0, 0), 1.5)
    floor = np.linspace(0, 40, h, dtype=np.float32)[:, None, None]
    return np.clip(low + texture + floor, 0, 255).astype(np.uint8)


def identity_pool(market_root: Path) -> dict[int, list[str]]:
    """pid -> image paths from query + bounding_box_test, identities seen by at least two cameras."""
    from osnet_edge.data import market1501_eval

    query, gallery = market1501_eval(market_root.parent)
    by_pid: dict[int, dict[int, list[str]]] = {}
    for s in list(query) + list(gallery):
        if s.pid > 0:
            by_pid.setdefault(s.pid, {}).setdefault(s.camid, []).append(s.path)
    return {pid: [paths[0] for paths in cams.values()] for pid, cams in by_pid.items() if len(cams) >= 2}


def _walk(rng: np.random.Generator, heading: int, width: int, limit: int) -> np.ndarray:
    """x per frame from the entry edge until the person leaves (or ``limit`` frames): walking speed changes,
    stops and turns now and then, so motion alone cannot predict every crossing."""
    w = FRAME_HW[1]
    x, v, xs = (-width if heading > 0 else w), heading * rng.uniform(2.0, 5.0), []
    for _ in range(limit):
        xs.append(x)
        if rng.random() < 0.04:
            v = float(rng.choice([-1, 1])) * rng.uniform(0.0, 5.0)
        x += v
        if (x > w and v > 0) or (x < -width and v < 0):
            break
    return np.array(xs)


def compose_walkers(rng: np.random.Generator, pool: dict[int, list[str]], people: int, frames: int) -> list[Walker]:
    """People entering from both sides at staggered times; most come back later, seen from another camera."""
    import cv2

    walkers = []
    for pid in rng.choice(sorted(pool), size=people, replace=False):
        paths = list(pool[int(pid)])
        rng.shuffle(paths)
        walker, start, heading = Walker(int(pid)), int(rng.integers(0, frames // 3)), int(rng.choice([-1, 1]))
        height = int(rng.integers(90, 151))
        foot = int(rng.integers(height + 10, FRAME_HW[0] - 5))
        for path in paths[:3]:
            if start >= frames:
                break
            crop = cv2.resize(cv2.imread(path), (height // 2, height), interpolation=cv2.INTER_LINEAR)
            xs = _walk(rng, heading, height // 2, frames - start)
            walker.segments.append((start, xs, foot, height, crop))
            start += len(xs) + int(rng.integers(10, 41))   # off screen for a while, then back
            heading = 1 if xs[-1] < 0 else -1
        walkers.append(walker)
    return walkers


def render(walkers: list[Walker], background: np.ndarray, t: int) -> tuple[np.ndarray, list[tuple]]:
    """Frame t and its people (pid, x1, y1, x2, y2, visible fraction), drawn far to near, pillar last."""
    frame = background.copy()
    h, w = FRAME_HW
    owner = np.full(FRAME_HW, -1, np.int32)
    present = []
    for walker in walkers:
        for first, xs, foot, height, crop in walker.segments:
            if first <= t < first + len(xs):
                x1 = int(round(xs[t - first]))
                present.append((foot, walker.pid, x1, foot - height, x1 + height // 2, foot, crop))
    present.sort(key=lambda p: p[0])
    for i, (_, pid, x1, y1, x2, y2, crop) in enumerate(present):
        cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if cx2 > cx1 and cy2 > cy1:
            frame[cy1:cy2, cx1:cx2] = crop[cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1]
            owner[cy1:cy2, cx1:cx2] = i
    frame[:, PILLAR_X[0]:PILLAR_X[1]] = (70, 80, 95)
    owner[:, PILLAR_X[0]:PILLAR_X[1]] = -1
    counts = np.bincount(owner[owner >= 0].ravel(), minlength=len(present))
    people = []
    for i, (_, pid, x1, y1, x2, y2, _) in enumerate(present):
        people.append((pid, x1, y1, x2, y2, counts[i] / float((x2 - x1) * (y2 - y1))))
    return frame, people


def detections(rng: np.random.Generator, people: list[tuple]) -> tuple[np.ndarray, np.ndarray]:
    """(ground truth (M, 5) pid, x, y, w, h), (detections (N, 6) x1, y1, x2, y2, conf, cls)."""
    gt, dets = [], []
    h, w = FRAME_HW
    for pid, x1, y1, x2, y2, vis in people:
        if vis < MIN_GT_VISIBILITY:
            continue
        gt.append((pid, x1, y1, x2 - x1, y2 - y1))
        found = rng.random() > 0.1 if vis >= MIN_DET_VISIBILITY else rng.random() < 0.4
        if found:
            bw, bh = x2 - x1, y2 - y1
            jx, jy, jw, jh = rng.normal(0, 0.04, 4) * [bw, bh, bw, bh]
            conf = rng.uniform(0.55, 0.95) if vis >= MIN_DET_VISIBILITY else rng.uniform(0.15, 0.5)
            dets.append((x1 + jx, y1 + jy, x2 + jx + jw, y2 + jy + jh, conf, 0))
    if rng.random() < 0.3:  # a false positive somewhere in the scene
        fh = rng.uniform(60, 140)
        fx, fy = rng.uniform(0, w - fh / 2), rng.uniform(0, h - fh)
        dets.append((fx, fy, fx + fh / 2, fy + fh, rng.uniform(0.1, 0.45), 0))
    return (np.array(gt, np.float64).reshape(-1, 5), np.array(dets, np.float32).reshape(-1, 6))


def make_sequences(market_root: Path, count: int, frames: int, people: int, seed: int) -> list[list[tuple]]:
    """``count`` sequences of (frame, gt, dets) per frame, composed once and reused by every tracker."""
    pool = identity_pool(market_root)
    sequences = []
    for s in range(count):
        rng = np.random.default_rng(seed + s)
        walkers, background = compose_walkers(rng, pool, people, frames), _background(rng)
        sequences.append([(frame, *detections(rng, ppl)) for frame, ppl in
                          (render(walkers, background, t) for t in range(frames))])
    return sequences


class TimedReID:
    """Any BoxMOT reid_model, timed: milliseconds and boxes of every get_features call."""

    def __init__(self, model) -> None:
        self.model, self.ms, self.boxes = model, [], []

    def get_features(self, boxes, image):
        start = time.perf_counter()
        out = self.model.get_features(boxes, image)
        self.ms.append((time.perf_counter() - start) * 1e3)
        self.boxes.append(len(boxes))
        return out


def iou_distance(gt_xywh: np.ndarray, hyp_xywh: np.ndarray, min_iou: float = 0.5) -> np.ndarray:
    """1 - IoU, NaN under ``min_iou`` (motmetrics 1.4's own iou_matrix uses np.asfarray, gone in NumPy 2)."""
    a, b = gt_xywh.astype(np.float64), hyp_xywh.astype(np.float64)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum((a[:, :2] + a[:, 2:])[:, None], (b[:, :2] + b[:, 2:])[None])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    iou = inter / (a[:, None, 2] * a[:, None, 3] + b[None, :, 2] * b[None, :, 3] - inter)
    d = 1 - iou
    d[iou < min_iou] = np.nan
    return d


def score(sequences, make_tracker) -> tuple[dict, TimedReID | None]:
    """Run a fresh tracker per sequence; IDF1 / IDs / MOTA over all sequences, and the re-ID timing."""
    import motmetrics as mm

    accs, timer = [], None
    for seq in sequences:
        tracker, timer_seq = make_tracker()
        timer = timer or timer_seq
        acc = mm.MOTAccumulator(auto_id=True)
        for frame, gt, dets in seq:
            out = np.asarray(tracker.update(dets, frame))
            hyp = np.stack([out[:, 0], out[:, 1], out[:, 2] - out[:, 0], out[:, 3] - out[:, 1]], 1) if len(out) \
                else np.zeros((0, 4))
            acc.update(gt[:, 0].astype(int).tolist(), out[:, 4].astype(int).tolist() if len(out) else [],
                       iou_distance(gt[:, 1:], hyp) if len(gt) and len(hyp) else np.zeros((len(gt), len(hyp))))
        accs.append(acc)
    mh = mm.metrics.create()
    summary = mh.compute_many(accs, metrics=["idf1", "num_switches", "mota", "num_frames"], generate_overall=True)
    row = summary.loc["OVERALL"]
    return {"idf1": float(row["idf1"]), "id_switches": int(row["num_switches"]), "mota": float(row["mota"]),
            "frames": int(row["num_frames"])}, timer


def _botsort(reid_model=None, motion_only: bool = False):
    from boxmot import BotSort

    if motion_only:
        return BotSort(use_embeddings=False, use_cmc=False)
    return BotSort(reid_model=reid_model, use_cmc=False)


def identity_rows(args, sequences) -> list[dict]:
    from osnet_edge.trackers import BoxmotReID

    contenders = [("motion only (BoT-SORT, no re-ID)", lambda: (_botsort(motion_only=True), None))]
    for name, bundle in args.reid:
        reid = TimedReID(BoxmotReID(bundle, threads=args.threads))  # one Extractor, reused across sequences
        contenders.append((f"BoT-SORT + osnet_edge {name}", lambda r=reid: (_botsort(r), r)))
    for name, onnx in args.boxmot_onnx:
        from boxmot.reid.core import ReID

        own = TimedReID(ReID(weights=Path(onnx), device="cpu", half=False).model)
        contenders.append((f"BoT-SORT + BoxMOT ONNX backend {name}", lambda r=own: (_botsort(r), r)))
    rows = []
    for label, make in contenders:
        start = time.perf_counter()
        metrics, timer = score(sequences, make)
        row = {"tracker": label, **metrics, "seconds": round(time.perf_counter() - start, 1)}
        if timer is not None and timer.ms:
            row["reid_ms_per_frame"] = round(float(np.mean(timer.ms)), 2)
            row["boxes_per_frame"] = round(float(np.mean(timer.boxes)), 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def cost_rows(args) -> list[dict]:
    """Median ms of one get_features call (all boxes of the frame) for 1, 8 and 32 people per bundle; the
    bundles take turns call by call, so machine noise hits each alike."""
    import cv2

    from osnet_edge.trackers import BoxmotReID

    rng = np.random.default_rng(0)
    frame = cv2.resize(rng.integers(0, 255, (45, 80, 3), dtype=np.uint8), FRAME_HW[::-1])
    reids = [(name, BoxmotReID(bundle, threads=args.threads)) for name, bundle in args.reid]
    rows = []
    for people in args.people:
        h = rng.uniform(90, 150, people)
        x, y = rng.uniform(0, FRAME_HW[1] - 75, people), rng.uniform(0, FRAME_HW[0] - 150, people)
        boxes = np.stack([x, y, x + h / 2, y + h], 1).astype(np.float32)
        times: dict[str, list[float]] = {name: [] for name, _ in reids}
        for rep in range(args.repeats + 3):
            for name, reid in reids:
                start = time.perf_counter()
                reid.get_features(boxes, frame)
                if rep >= 3:  # the first calls warm up
                    times[name].append((time.perf_counter() - start) * 1e3)
        for name, reid in reids:
            ext = reid.extractor
            row = {"bundle": name, "runtime": ext.runtime, "precision": ext.precision,
                   "input": f"{ext.input_size[0]}x{ext.input_size[1]}", "threads": ext.threads, "people": people,
                   "ms_per_frame_p50": round(float(np.median(times[name])), 2),
                   "ms_per_frame_p90": round(float(np.percentile(times[name], 90)), 2)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    for _, reid in reids:
        reid.close()
    return rows


def _named(value: str) -> tuple[str, str]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise ValueError(f"expected NAME=PATH, got {value!r}")
    return name, path


def main(argv=None) -> int:
    p = Parser(description=__doc__)
    p.add_argument("what", choices=["identity", "cost"])
    p.add_argument("--reid", type=_named, action="append", default=[], metavar="NAME=BUNDLE",
                   help="an osnet_edge bundle as BoT-SORT's re-ID (repeatable)")
    p.add_argument("--boxmot-onnx", type=_named, action="append", default=[], metavar="NAME=FILE",
                   help="identity: an ONNX re-ID model run by BoxMOT's own backend (repeatable)")
    p.add_argument("--market", default=None, help="Market-1501 root (default ../shared/data/market1501)")
    p.add_argument("--sequences", type=int, default=4)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--people", type=int, nargs="+", default=None,
                   help="identity: people per sequence (default 8); cost: people per frame (default 1 8 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="inference threads of our bundles")
    p.add_argument("--repeats", type=int, default=30, help="cost: timed calls per point")
    p.add_argument("--json", default=None, help="write the rows (and the machine) here")
    args = p.parse_args(argv)

    from osnet_edge.data import shared_data_dir
    from osnet_edge.machine import machine_summary

    print(f"machine: {machine_summary()}", flush=True)
    if args.what == "cost":
        args.people = args.people or [1, 8, 32]
        rows = cost_rows(args)
    else:
        market = Path(args.market) if args.market else (shared_data_dir() or Path("../shared/data")) / "market1501"
        if not (market / "query").is_dir():
            raise ValueError(f"Market-1501 not found at {market} (pass --market)")
        people = (args.people or [8])[0]
        sequences = make_sequences(market, args.sequences, args.frames, people, args.seed)
        boxes = sum(len(d) for seq in sequences for _, _, d in seq) / sum(len(seq) for seq in sequences)
        print(f"{args.sequences} sequences x {args.frames} frames, {people} identities each, "
              f"{boxes:.1f} detections per frame", flush=True)
        rows = identity_rows(args, sequences)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_summary(), "argv": sys.argv[1:], "rows": rows},
                                              indent=2))
    return 0


if __name__ == "__main__":
    run(main)
