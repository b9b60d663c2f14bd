"""Evaluation: query / gallery sets of the agreed protocols, embedders (a torch checkpoint as the
reference), cached features and rank-1 / mAP. Shared by report, evaluate and int8-fidelity."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..data import EVAL_PROTOCOLS, Sample, read_labelled_folder, read_market1501
from ..metrics import rank_metrics

PROTOCOL_ORDER = tuple(EVAL_PROTOCOLS)  # market1501 (the benchmark of record) first, then the CUHK checks


@dataclass
class EvalSet:
    """Query and gallery samples of one evaluation protocol; images decoded on first use."""

    name: str
    query: list[Sample]
    gallery: list[Sample]
    _images: tuple[list[np.ndarray], list[np.ndarray]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.query or not self.gallery:
            raise ValueError(f"{self.name}: needs a non-empty query and gallery "
                             f"(got {len(self.query)} query, {len(self.gallery)} gallery images)")

    @property
    def q_pids(self) -> np.ndarray:
        return np.array([s.pid for s in self.query])

    @property
    def g_pids(self) -> np.ndarray:
        return np.array([s.pid for s in self.gallery])

    @property
    def q_camids(self) -> np.ndarray:
        return np.array([s.camid for s in self.query])

    @property
    def g_camids(self) -> np.ndarray:
        return np.array([s.camid for s in self.gallery])

    @property
    def fingerprint(self) -> str:
        """Hash of the image list (folder and file names) and labels: cached features are valid
        only for the same set, wherever the data folder lives (relative or absolute paths)."""
        h = hashlib.sha256(self.name.encode())
        for s in self.query + [Sample("|", -9, -9)] + self.gallery:
            folder, name = os.path.split(s.path)
            h.update(f"{os.path.basename(folder)}/{name}:{s.pid}:{s.camid};".encode())
        return h.hexdigest()[:16]

    def images(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(query crops, gallery crops) as HxWx3 uint8 BGR; an unreadable file is an error."""
        if self._images is None:
            self._images = (_read_all(self.query), _read_all(self.gallery))
        return self._images

    def __len__(self) -> int:
        return len(self.query) + len(self.gallery)


def _read_all(samples: Sequence[Sample]) -> list[np.ndarray]:
    from ..preprocess import read_image

    out = []
    for s in samples:
        img = read_image(s.path)
        if img is None:
            raise ValueError(f"cannot read image {s.path} (corrupt or not an image)")
        out.append(img)
    return out


def protocol_set(name: str, data_root: str | os.PathLike | None = None) -> EvalSet:
    """One of the agreed protocols (``market1501``, ``cuhk03-val``, ``cuhk01-test``) on the shared data."""
    if name not in EVAL_PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; known: {', '.join(EVAL_PROTOCOLS)}")
    query, gallery = EVAL_PROTOCOLS[name](data_root)
    return EvalSet(name, query, gallery)


def available_protocols(data_root: str | os.PathLike | None) -> list[str]:
    """The agreed protocols whose images exist under ``data_root`` (none without it)."""
    if data_root is None or not Path(data_root).is_dir():
        return []
    found = []
    for name in PROTOCOL_ORDER:
        try:
            protocol_set(name, data_root)
        except (FileNotFoundError, NotADirectoryError, ValueError):
            continue
        found.append(name)
    return found


def market1501_set(root: str | os.PathLike) -> EvalSet:
    """A Market-1501-layout folder: ``query/`` and ``bounding_box_test/`` (junk pid -1 skipped)."""
    splits = read_market1501(root)
    missing = [k for k in ("query", "gallery") if k not in splits]
    if missing:
        raise ValueError(f"{root}: Market-1501 layout needs query/ and bounding_box_test/ "
                         f"(missing: {', '.join('bounding_box_test' if m == 'gallery' else m for m in missing)})")
    return EvalSet(Path(root).resolve().name or str(root), splits["query"], splits["gallery"])


def folder_set(query_dir: str | os.PathLike, gallery_dir: str | os.PathLike, naming: str = "auto") -> EvalSet:
    """Two folders of labelled crops (Market-1501, CUHK03 or CUHK01 file naming)."""
    return EvalSet(f"{Path(query_dir).name}->{Path(gallery_dir).name}",
                   read_labelled_folder(query_dir, naming), read_labelled_folder(gallery_dir, naming))


# ============================================================================ embedders

class TorchReference:
    """The torch model straight from a torchreid checkpoint (host side): the reference that
    every exported bundle should reproduce. Same preprocessing as the Extractor."""

    def __init__(self, weights: str | os.PathLike, width: float | None = None, res: float = 1.0,
                 variant: str = "osnet", threads: int | None = None, interpolation: str | None = None,
                 allow_unsafe_pickle: bool = False) -> None:
        import torch

        from ..models import build_osnet, input_size, load_torchreid_weights
        from ..preprocess import DEFAULT_INTERPOLATION
        from ..profiler import checkpoint_width

        if threads:
            torch.set_num_threads(threads)
        self.width = float(width) if width is not None else checkpoint_width(weights)
        self.input_size = input_size(res)
        self.interpolation = interpolation or DEFAULT_INTERPOLATION
        self.model = build_osnet(self.width, variant).eval()
        load_torchreid_weights(self.model, weights, allow_unsafe_pickle=allow_unsafe_pickle)
        self.name = f"torch {variant} x{self.width:g} @ {self.input_size[0]}x{self.input_size[1]}"
        self.dim = 512

    def model_input(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        from ..preprocess import preprocess

        return preprocess(list(crops), self.input_size, self.interpolation)

    def infer_raw(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model(torch.from_numpy(batch)).numpy()

    def __call__(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        from ..extractor import l2_normalize

        return l2_normalize(self.raw(crops))

    def raw(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """The 512-d features before L2 normalisation (what torchreid's euclidean metric ranks)."""
        from ..extractor import as_crop_list

        crops = as_crop_list(crops)
        if not crops:
            return np.zeros((0, self.dim), np.float32)
        return self.infer_raw(self.model_input(crops)).astype(np.float32)


def embed(embedder: Callable[[list[np.ndarray]], np.ndarray], crops: Sequence[np.ndarray], batch_size: int = 64,
          desc: str | None = None, progress: bool = True) -> np.ndarray:
    """Embeddings of ``crops`` in batches, with a progress bar for long sets (on a terminal)."""
    from ..progress import progress_bar

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    chunks = []
    steps = range(0, len(crops), batch_size)
    for start in progress_bar(steps, enabled=progress and len(crops) > batch_size, desc=desc or "embedding",
                              unit="batch", leave=False):
        chunks.append(np.asarray(embedder(list(crops[start:start + batch_size])), dtype=np.float32))
    if not chunks:
        raise ValueError("no crops to embed")
    return np.concatenate(chunks)


class FeatureCache:
    """Embeddings on disk (``<dir>/<key>.npy``) so that rerunning a report skips the slow part.

    Keys are content hashes (what embeds: :func:`bundle_identity` / :func:`file_identity`, with
    the preprocessing; which images: :attr:`EvalSet.fingerprint`), so report, INT8 and
    adaptation runs share the 23k Market-1501 embeddings of the same model.
    """

    def __init__(self, folder: str | os.PathLike | None) -> None:
        self.folder = Path(folder) if folder else None

    @classmethod
    def default(cls) -> "FeatureCache":
        """``$OSNET_EDGE_CACHE/features``, else ``~/.cache/osnet_edge/features``."""
        base = os.environ.get("OSNET_EDGE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "osnet_edge")
        return cls(Path(base) / "features")

    def get_or_compute(self, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        if self.folder is None:
            return compute()
        path = self.folder / f"{key}.npy"
        if path.is_file():
            try:
                return np.load(path)
            except (OSError, ValueError):
                path.unlink(missing_ok=True)
        feats = compute()
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.npy")
        np.save(tmp, feats)
        os.replace(tmp, path)
        return feats


def bundle_identity(bundle: Any, runtime: str | None = None) -> str:
    """Content key of a bundle on a runtime (its files' checksums): keys cached features."""
    files = bundle.manifest["files"]
    digest = json.dumps({k: (v["sha256"] if isinstance(v, dict) else v) for k, v in sorted(files.items())})
    pre = bundle.manifest.get("preprocess", {})
    return hashlib.sha256(f"{digest}|{runtime or bundle.runtime}|{pre.get('interpolation')}".encode()).hexdigest()[:16]


def file_identity(path: str | os.PathLike, extra: str = "") -> str:
    from ..bundle import sha256_file

    return hashlib.sha256(f"{sha256_file(path)}|{extra}".encode()).hexdigest()[:16]


def foreign_identity(model: Any) -> str:
    """Content key of a :class:`osnet_edge.foreign.ForeignModel`: its file and everything that changes
    its embeddings (input convention and size, and the batch mode: 0265's dynamic batch gave NaN)."""
    return file_identity(model.path, f"foreign|{model.input_format}|{model.input_size}|{model.batch_mode}")


def evaluate_embedder(embedder: Callable, evalset: EvalSet, batch_size: int = 64, cache: FeatureCache | None = None,
                      identity: str | None = None, progress: bool = True,
                      ranks: Iterable[int] = (1, 5, 10), metric: str = "cosine") -> tuple[dict, np.ndarray, np.ndarray]:
    """Rank-k / mAP (percent) of ``embedder`` on ``evalset``, and the query / gallery features.

    With ``cache`` and ``identity`` (what the embedder is, e.g. :func:`bundle_identity`) the
    features are read from / written to the cache.
    """
    def compute() -> np.ndarray:
        q, g = evalset.images()
        return embed(embedder, q + g, batch_size, desc=f"{evalset.name}", progress=progress)

    if cache is not None and identity:
        feats = cache.get_or_compute(f"{identity}_{evalset.fingerprint}", compute)
    else:
        feats = compute()
    qf, gf = feats[:len(evalset.query)], feats[len(evalset.query):]
    metrics = rank_metrics(qf, gf, evalset.q_pids, evalset.g_pids, evalset.q_camids, evalset.g_camids, ranks,
                           metric=metric)
    return metrics, qf, gf

