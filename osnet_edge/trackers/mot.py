"""MOTChallenge files and the tracking loop: frames + det.txt + a BoxMOT tracker -> tracks (``osnet-edge track``).

MOT text format, one box per line, frames counted from 1: ``frame, id, x, y, w, h, conf, x, y, z`` (``id``
is -1 in det.txt; the last three are -1 in 2-D files). Frames come from a folder of images (sorted by
name, e.g. MOT's ``img1/000001.jpg``) or a video file readable by OpenCV.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def read_mot_detections(path: str | os.PathLike, min_conf: float = -np.inf) -> dict[int, np.ndarray]:
    """det.txt -> {frame: (N, 6) float32 x1, y1, x2, y2, conf, cls=0}; lines under ``min_conf`` dropped."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"detections: {path} is not a file (expected MOT det.txt: frame, id, x, y, w, h, conf, ...)")
    rows = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64) if path.stat().st_size else np.zeros((0, 7))
    if rows.shape[1] < 7:
        raise ValueError(f"detections: {path} has {rows.shape[1]} columns; MOT det.txt has at least 7 "
                         "(frame, id, x, y, w, h, conf)")
    rows = rows[rows[:, 6] >= min_conf]
    dets = np.zeros((len(rows), 6), dtype=np.float32)
    dets[:, 0:2] = rows[:, 2:4]
    dets[:, 2:4] = rows[:, 2:4] + rows[:, 4:6]
    dets[:, 4] = rows[:, 6]
    frames = rows[:, 0].astype(np.int64)
    return {int(f): dets[frames == f] for f in np.unique(frames)}


def format_mot_tracks(frame: int, tracks: np.ndarray) -> list[str]:
    """BoxMOT's (M, 8) x1, y1, x2, y2, id, conf, cls, det_index -> MOT lines of one frame."""
    return [f"{frame},{int(t[4])},{t[0]:.2f},{t[1]:.2f},{t[2] - t[0]:.2f},{t[3] - t[1]:.2f},{t[5]:.4f},-1,-1,-1"
            for t in tracks]


def iter_frames(source: str | os.PathLike) -> Iterator[tuple[int, np.ndarray]]:
    """(frame number from 1, BGR uint8 image) from an image folder or a video file."""
    import cv2

    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"frames: no images ({', '.join(IMAGE_SUFFIXES)}) in {source}")
        for number, file in enumerate(files, start=1):
            image = cv2.imread(str(file), cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError(f"frames: cannot read {file}")
            yield number, image
        return
    if not source.is_file():
        raise ValueError(f"frames: {source} is neither an image folder nor a video file")
    video = cv2.VideoCapture(str(source))
    if not video.isOpened():
        raise ValueError(f"frames: OpenCV cannot open {source} as a video")
    try:
        number = 0
        while True:
            ok, image = video.read()
            if not ok:
                break
            number += 1
            yield number, image
    finally:
        video.release()
    if number == 0:
        raise ValueError(f"frames: no frame could be read from {source}")


def count_frames(source: str | os.PathLike) -> int | None:
    """Number of frames when cheaply known (image folder, video header), else None."""
    source = Path(source)
    if source.is_dir():
        return sum(1 for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    import cv2

    video = cv2.VideoCapture(str(source))
    total = int(video.get(cv2.CAP_PROP_FRAME_COUNT)) if video.isOpened() else 0
    video.release()
    return total or None


class TrackingRun:
    """Drives a BoxMOT tracker over frames and their detections; counts frames and tracker seconds."""

    def __init__(self, tracker: Any) -> None:
        self.tracker = tracker
        self.frames = 0
        self.seconds = 0.0

    def __call__(self, frames: Iterable[tuple[int, np.ndarray]],
                 detections: dict[int, np.ndarray]) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (frame number, BoxMOT tracks (M, 8)) per frame; frames without detections get an empty update."""
        empty = np.zeros((0, 6), dtype=np.float32)
        for number, image in frames:
            start = time.perf_counter()
            tracks = self.tracker.update(detections.get(number, empty), image)
            self.seconds += time.perf_counter() - start
            self.frames += 1
            yield number, np.asarray(tracks)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")
