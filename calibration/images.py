"""Finding and ordering person crops: image files under a folder, their identity/camera labels from the
known namings, and the stratified order whose every prefix covers identities and cameras evenly."""
from __future__ import annotations

import os
import random
from collections import OrderedDict
from pathlib import Path
from typing import Optional, Sequence, Union

from osnet_edge.data import NAMINGS, Sample

PathLike = Union[str, "os.PathLike[str]"]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def find_images(folder: PathLike) -> list[str]:
    """Every .jpg/.jpeg/.png under ``folder`` (recursively), sorted for reproducibility."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"calibration folder not found: {folder}")
    if not folder.is_dir():
        raise NotADirectoryError(f"calibration source is not a folder: {folder}")
    out = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        out += [os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(out)


def label_of(path: str) -> tuple[Optional[int], Optional[int], bool]:
    """(pid, camid, junk) parsed from a file name with the known namings, (None, None, False) if none."""
    name = os.path.basename(path)
    for parse in NAMINGS.values():
        parsed = parse(name)
        if parsed is not None:
            pid, camid = parsed
            return pid, camid, pid == -1
    return None, None, False


def stratified_order(samples: Sequence[Sample], seed: int) -> list[Sample]:
    """All ``samples`` in an order whose every prefix covers identities and cameras evenly.

    Identities are visited round-robin (in a seeded random order); within one identity its
    cameras alternate. Unlabelled samples (pid < 0 after labelling) each form their own group,
    grouped by folder, so a plain folder of crops is sampled uniformly across subfolders.
    """
    rng = random.Random(seed)
    groups: "OrderedDict[tuple, dict[int, list[Sample]]]" = OrderedDict()
    for s in samples:
        key = ("pid", s.pid) if s.pid is not None and s.pid >= 0 else ("dir", os.path.dirname(s.path))
        groups.setdefault(key, {}).setdefault(s.camid if s.camid is not None else -1, []).append(s)
    queues = []
    for cams in groups.values():
        per_cam = [rng.sample(v, len(v)) for _, v in sorted(cams.items())]
        rng.shuffle(per_cam)
        interleaved = []
        for i in range(max(len(v) for v in per_cam)):
            interleaved += [v[i] for v in per_cam if i < len(v)]
        queues.append(interleaved)
    rng.shuffle(queues)
    order: list[Sample] = []
    depth = 0
    while len(order) < len(samples):
        order += [q[depth] for q in queues if depth < len(q)]
        depth += 1
    return order
