"""Adaptation data: person crops decoded into memory, with optional identity labels (torch-free)."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from ..data import Sample, read_labelled_folder
from ..preprocess import read_image
from ..progress import progress_bar

PathLike = Union[str, "os.PathLike[str]"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _list_images(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    found = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not found:
        raise ValueError(f"no .jpg/.jpeg/.png images under {folder}")
    return found


def _label_order(pids: Sequence[Any]) -> list:
    """Identities in ascending order (torchreid's relabelling: sorted pids -> 0..n-1), so that a
    checkpoint's classifier rows line up with the labels of its own training set."""
    unique = set(pids)
    try:
        return sorted(unique)
    except TypeError:  # mixed, unorderable ids
        return sorted(unique, key=repr)


def _file_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@dataclass
class AdaptationData:
    """Decoded person crops (kept in memory: ~5k small crops are < 200 MB) and optional labels.

    ``labels``: contiguous identity indices 0..num_ids-1, or None. ``data_hash``: sha256 over
    the sorted content hashes of the files (location-independent) and the labels.
    """
    paths: list
    images: list
    labels: Optional[np.ndarray]
    data_hash: str
    sources: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_ids(self) -> int:
        return 0 if self.labels is None else int(self.labels.max()) + 1

    @classmethod
    def from_paths(cls, paths: Sequence[str], pids: Optional[Sequence[Any]] = None,
                   sources: Sequence[str] = (), progress: bool = False) -> "AdaptationData":
        """Read ``paths``; ``pids`` (any hashables, one per path) become contiguous labels."""
        paths = [str(p) for p in paths]
        if not paths:
            raise ValueError("no adaptation images")
        if pids is not None and len(pids) != len(paths):
            raise ValueError(f"{len(pids)} labels for {len(paths)} images")
        images, bad = [], []
        for p in progress_bar(paths, enabled=progress, desc="reading crops", unit="img", leave=False):
            img = read_image(p)
            if img is None:
                bad.append(p)
            images.append(img)
        if bad:
            raise ValueError(f"{len(bad)} unreadable image(s), e.g. {bad[:5]}")
        labels = None
        if pids is not None:
            index = {pid: i for i, pid in enumerate(_label_order(pids))}
            labels = np.array([index[p] for p in pids], dtype=np.int64)
        h = hashlib.sha256()
        keyed = sorted(zip((_file_sha256(p) for p in paths), [""] * len(paths) if labels is None
                           else [str(x) for x in labels]))
        for digest, label in keyed:
            h.update(f"{digest}\t{label}\n".encode())
        return cls(paths, images, labels, h.hexdigest(), list(sources))

    @classmethod
    def from_samples(cls, samples: Sequence[Sample], labels: bool = False, sources: Sequence[str] = (),
                     progress: bool = False) -> "AdaptationData":
        """From :class:`osnet_edge.data.Sample` lists, e.g. ``osnet_edge.data.adaptation_samples()``."""
        return cls.from_paths([s.path for s in samples], [s.pid for s in samples] if labels else None,
                              sources=sources, progress=progress)

    @classmethod
    def from_folders(cls, folders: Sequence[PathLike], labels: bool = False, naming: str = "auto",
                     progress: bool = False) -> "AdaptationData":
        """Images of ``folders``. Unlabelled: every image found recursively. Labelled: the images
        directly in each folder, identities parsed from file names (``naming``), kept apart per
        folder (pid 7 of folder A is not pid 7 of folder B)."""
        if not folders:
            raise ValueError("no adaptation folders given")
        paths: list[str] = []
        pids: list[Any] = []
        for k, folder in enumerate(folders):
            folder = Path(folder)
            if labels:
                samples = read_labelled_folder(folder, naming=naming)
                paths += [s.path for s in samples]
                pids += [(k, s.pid) for s in samples]
            else:
                paths += _list_images(folder)
        return cls.from_paths(paths, pids if labels else None, sources=[str(Path(f).resolve()) for f in folders],
                              progress=progress)
