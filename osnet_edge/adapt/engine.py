"""The adaptation engine's targets: the fixed teacher's outputs and the student's views, computed once.

The teacher never changes during a run, so everything it gives is a function of (teacher, data,
view set): its L2-normalised embedding, its classifier's logits and its conv5 maps pooled to the
student's grid, for each view and for the view's mirror. :func:`view_set_targets` computes them
once per view set, together with the view set rendered at the student's size as uint8 (one
bilinear resize from the original, as on the device), so a training step only normalises a
cached batch and runs the student. With a cache folder the arrays are written once
(atomically, one folder per key) and memory-mapped by later runs with the same key: an
ablation, a resumed run or a chain at another budget then spends no time on the teacher.
Keys are content hashes, like the evaluation feature cache's (:mod:`osnet_edge.report.evaluation`).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..progress import progress_bar
from .views import ViewSet, render_batch

ARRAYS = ("student", "emb", "logits", "maps")
CHUNK = 256  # crops rendered and embedded at a time


def default_cache_dir() -> Path:
    """``$OSNET_EDGE_CACHE/adapt``, else ``~/.cache/osnet_edge/adapt`` (beside the feature cache)."""
    base = os.environ.get("OSNET_EDGE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "osnet_edge")
    return Path(base) / "adapt"


def cache_key(parts: Mapping[str, Any]) -> str:
    """Content key of one view set's targets: sha256 of the JSON of everything they depend on."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


@dataclass
class ViewSetTargets:
    """One view set: ``student`` (N, h, w, 3) uint8 BGR views; teacher ``emb`` (M, N, D) float32
    L2-normalised, ``logits`` (M, N, C) float16 or None, ``maps`` (M, N, C, h', w') float16 or None,
    where index 1 of M = 2 is the mirrored view. Arrays may be memory-mapped (read-only)."""
    student: np.ndarray
    emb: np.ndarray
    logits: Optional[np.ndarray]
    maps: Optional[np.ndarray]
    seconds: float = 0.0      # time spent computing them (0 when read from the cache)

    @property
    def mirrors(self) -> int:
        return int(self.emb.shape[0])

    def student_views(self, idx: np.ndarray, mirror: np.ndarray) -> np.ndarray:
        """The student's uint8 views of ``idx``, mirrored where ``mirror`` is 1 (a writable copy)."""
        batch = np.array(self.student[idx])
        flip = np.asarray(mirror, bool)
        batch[flip] = batch[flip][:, :, ::-1]
        return batch

    def teacher(self, idx: np.ndarray, mirror: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
        """The teacher's (emb, logits, maps) rows of ``idx`` for the chosen mirrors."""
        pick = (np.asarray(mirror, np.int64), np.asarray(idx, np.int64))
        return (np.asarray(self.emb[pick]), None if self.logits is None else np.asarray(self.logits[pick]),
                None if self.maps is None else np.asarray(self.maps[pick]))


def _teacher_outputs(teacher: Any, views: np.ndarray, map_hw: Optional[tuple[int, int]],
                     logits: bool) -> tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    if hasattr(teacher, "outputs"):
        return teacher.outputs(views, map_hw, logits=logits)
    if map_hw is not None or logits:
        raise ValueError(f"teacher {teacher.name} gives embeddings only (no feature maps, no logits)")
    return teacher(views), None, None


def compute_targets(teacher: Optional[Any], images: Sequence[np.ndarray], views: ViewSet, student_hw: tuple[int, int],
                    map_hw: Optional[tuple[int, int]] = None, logits: bool = False, mirrors: bool = True,
                    progress: bool = False, desc: str = "teacher views") -> ViewSetTargets:
    """Render ``views`` at the teacher's and the student's size and run the teacher (and, with
    ``mirrors``, on each view's mirror too): one pass over the data. ``teacher`` None (label-only
    recipes): the student's views alone (``emb`` then has 0 columns)."""
    t0 = time.perf_counter()
    n, m = len(images), 2 if mirrors else 1
    student = np.empty((n, *student_hw, 3), np.uint8)
    emb = np.empty((m, n, 0 if teacher is None else teacher.dim), np.float32)
    out_logits: Optional[np.ndarray] = None
    out_maps: Optional[np.ndarray] = None
    for s in progress_bar(range(0, n, CHUNK), enabled=progress, desc=desc, leave=False):
        idx = list(range(s, min(n, s + CHUNK)))
        student[s:s + len(idx)] = render_batch(images, views, idx, student_hw)
        if teacher is None:
            continue
        big = render_batch(images, views, idx, teacher.input_size)
        for k in range(m):
            e, lg, mp = _teacher_outputs(teacher, big if k == 0 else np.ascontiguousarray(big[:, :, ::-1]),
                                         map_hw, logits)
            emb[k, s:s + len(idx)] = e
            if lg is not None:
                out_logits = out_logits if out_logits is not None else np.empty((m, n, lg.shape[1]), np.float16)
                out_logits[k, s:s + len(idx)] = lg
            if mp is not None:
                out_maps = out_maps if out_maps is not None else np.empty((m, n, *mp.shape[1:]), np.float16)
                out_maps[k, s:s + len(idx)] = mp
    return ViewSetTargets(student, emb, out_logits, out_maps, time.perf_counter() - t0)


def _read(folder: Path) -> Optional[ViewSetTargets]:
    arrays: dict[str, Optional[np.ndarray]] = {}
    try:
        if not (folder / "complete").is_file():
            return None
        for name in ARRAYS:
            path = folder / f"{name}.npy"
            arrays[name] = np.load(path, mmap_mode="r") if path.is_file() else None
    except (OSError, ValueError):
        return None
    if arrays["student"] is None or arrays["emb"] is None:
        return None
    return ViewSetTargets(arrays["student"], arrays["emb"], arrays["logits"], arrays["maps"], 0.0)


def _write(folder: Path, targets: ViewSetTargets, parts: Mapping[str, Any]) -> None:
    """Atomically: the arrays in a temporary folder beside ``folder``, then one rename."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name in ARRAYS:
        value = getattr(targets, name)
        if value is not None:
            np.save(tmp / f"{name}.npy", value)
    (tmp / "key.json").write_text(json.dumps(parts, sort_keys=True, default=str, indent=1))
    (tmp / "complete").write_text("")
    try:
        os.replace(tmp, folder)
    except OSError:  # another run wrote the same key meanwhile: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)


def view_set_targets(parts: Mapping[str, Any], compute: Any, cache_dir: Optional[Path]) -> ViewSetTargets:
    """The targets keyed by ``parts``: read (memory-mapped) from ``cache_dir`` when there, else
    ``compute()`` and, with a ``cache_dir``, stored for the next run."""
    if cache_dir is None:
        return compute()
    folder = Path(cache_dir) / cache_key(parts)
    cached = _read(folder)
    if cached is not None:
        return cached
    targets = compute()
    _write(folder, targets, parts)
    return targets
