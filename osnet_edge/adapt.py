"""Adaptation: make a reduced-resolution (or narrower) OSNet accurate again, on a CPU, in minutes.

Public checkpoints are trained at 256x128; run at 128x64 they lose most of their accuracy.
:func:`adapt` fine-tunes a student (target width/resolution, initialised from the given
checkpoint) on a folder of person crops:

* without labels, by **knowledge distillation** from a teacher (by default the same checkpoint
  at 256x128; or a wider checkpoint, an osnet_edge bundle, a foreign ONNX / OpenVINO model):
  each augmented *view* of a crop is rendered from the original at the teacher's and at the
  student's input size (:mod:`osnet_edge.adapt_views`), so both see exactly the same content.
  Teacher embeddings are computed once per view and cached. Losses: ``cosine`` between the
  embeddings (equal dims only), ``fmap`` (cosine between the conv5 feature maps at each
  position, the teacher's average-pooled to the student's grid; an OSNet checkpoint teacher of
  the student's width), ``relational`` (MSE between the batch cosine-similarity matrices) and
  ``simkl`` (KL between the rows' softmax similarity distributions): the last two need no
  common embedding space, so a 256-d teacher can teach the 512-d student. (MSE between
  L2-normalised embeddings is 2 x the cosine loss, so it is not offered separately.)
* with labels (identities from Market-1501 / CUHK file names), by the paper's recipe:
  ``ce`` (cross-entropy with label smoothing on a new classifier) and optionally ``triplet``
  (batch-hard, P x K sampling), alone or together with distillation.

BatchNorm: the student's BN statistics are first re-estimated at its own resolution
(AdaBN, :func:`recalibrate_bn`): a cheap baseline in itself. During training BN runs in
batch mode (``bn="train"``) and is recalibrated on clean views at the end ("precise BN"),
or stays frozen at the AdaBN statistics (``bn="frozen"``).

The result is a torchreid-compatible checkpoint ``{'state_dict': ..., 'adaptation': {...}}``
(JSON-able record, loads with ``torch.load(weights_only=True)``) that
:func:`osnet_edge.models.load_torchreid_weights` and ``scripts/export.py --weights`` take; the
record lands in the bundle manifest. A checkpoint is written after every epoch, with the
optimizer state beside it (``<out>.resume``) so that an interrupted run resumes exactly.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .adapt_config import (AUTO, KD_LOSSES, LABEL_LOSSES, AdaptConfig, parse_losses,  # noqa: F401 (re-exported)
                           resolve_auto_losses)
from .adapt_teachers import Teacher, load_teacher, osnet_config_of
from .adapt_views import ViewSet, clean_views, render_batch, sample_views
from .data import Sample, read_labelled_folder
from .models import build_osnet, input_size, load_torchreid_weights, read_checkpoint
from .preprocess import Normalizer, preprocess, read_image
from .progress import progress_bar

__all__ = ["AdaptConfig", "AdaptationData", "AdaptResult", "adapt", "recalibrate_bn", "embed", "evaluate",
           "parse_losses", "resolve_auto_losses", "KD_LOSSES", "LABEL_LOSSES", "AUTO", "resume_path"]

PathLike = Union[str, "os.PathLike[str]"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
RECORD_FORMAT = 1


# ------------------------------------------------------------------------------------- data

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


# ---------------------------------------------------------------------------- BN / embedding

def _to_input(batch_bgr: np.ndarray, normalize: Normalizer = Normalizer()) -> torch.Tensor:
    """Inference input: channels-last makes no-grad forwards ~2x faster on CPU (oneDNN)."""
    return torch.from_numpy(normalize(batch_bgr)).contiguous(memory_format=torch.channels_last)


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, images: Sequence[np.ndarray], hw: tuple[int, int],
                   batch_size: int = 64, views: Optional[ViewSet] = None, progress: bool = False) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics on ``images`` at input size ``hw``.

    AdaBN (Li et al., 2016) / "precise BN": the statistics a 256x128-trained network keeps
    are wrong at 128x64; a forward pass in train mode with a cumulative average (momentum
    None) over the clean adaptation crops fixes them without touching any weight. The
    model is left in eval mode.
    """
    if not images:
        raise ValueError("recalibrate_bn needs at least one image")
    views = views if views is not None else clean_views(len(images))
    bns = _batchnorms(model)
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    starts = range(0, len(images), batch_size)
    starts = progress_bar(starts, enabled=progress, desc=f"BN statistics @ {hw[0]}x{hw[1]}", leave=False)
    for s in starts:
        idx = list(range(s, min(s + batch_size, len(images))))
        if len(idx) < 2 and s > 0:  # a batch of one cannot give BatchNorm1d statistics
            continue
        model(_to_input(render_batch(images, views, idx, hw)))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    return model.eval()


@torch.no_grad()
def embed(model: nn.Module, crops: Sequence[np.ndarray], hw: tuple[int, int], batch_size: int = 128) -> np.ndarray:
    """(N, 512) L2-normalised embeddings with the Extractor's preprocessing, model in eval mode."""
    was_training = model.training
    model.eval()
    out = []
    for s in range(0, len(crops), batch_size):
        x = torch.from_numpy(preprocess(crops[s:s + batch_size], hw)).contiguous(memory_format=torch.channels_last)
        out.append(F.normalize(model(x), dim=1).numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, 512), np.float32)


@lru_cache(maxsize=4)
def _protocol_images(name: str, root: Optional[str]) -> tuple:
    from .data import EVAL_PROTOCOLS

    query, gallery = EVAL_PROTOCOLS[name](root)
    samples = query + gallery
    images = [read_image(s.path) for s in samples]
    if any(img is None for img in images):
        raise ValueError(f"unreadable images in protocol {name}")
    return (images, np.array([s.pid for s in samples]), np.array([s.camid for s in samples]), len(query))


def evaluate(model_or_embed: Union[nn.Module, Callable[[list], np.ndarray]], res: float = 1.0,
             root: Optional[PathLike] = None, protocols: Optional[Sequence[str]] = None) -> dict:
    """Rank-1/5/10 and mAP (percent) on the agreed evaluation protocols of the shared data
    (default: Market-1501 when present, else the CUHK protocols: :func:`osnet_edge.data.default_protocols`).

    ``model_or_embed``: a torch model (run at ``res`` with the Extractor's preprocessing) or
    any callable crops -> embeddings (an Extractor, a ForeignModel).
    """
    from .metrics import rank_metrics

    from .data import default_protocols

    out = {}
    for name in protocols if protocols is not None else default_protocols(root):
        images, pids, camids, nq = _protocol_images(name, None if root is None else str(root))
        if isinstance(model_or_embed, nn.Module):
            feats = embed(model_or_embed, images, input_size(res))
        else:
            feats = np.asarray(model_or_embed(images), dtype=np.float32)
        out[name] = rank_metrics(feats[:nq], feats[nq:], pids[:nq], pids[nq:], camids[:nq], camids[nq:])
    return out


# ------------------------------------------------------------------------------------ losses

def _cosine_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return (1.0 - (s * t).sum(1)).mean()


def _offdiag(m: torch.Tensor) -> torch.Tensor:
    n = m.shape[0]
    return m.flatten()[1:].view(n - 1, n + 1)[:, :-1].reshape(n, n - 1)


def _relational_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """MSE between the batch cosine-similarity matrices (diagonal excluded), x100 so that it is
    on the cosine loss's scale."""
    return 100.0 * F.mse_loss(_offdiag(s @ s.T), _offdiag(t @ t.T))


def _simkl_loss(s: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) between each row's softmax over its similarities to the rest of the batch."""
    log_p_s = F.log_softmax(_offdiag(s @ s.T) / temperature, dim=1)
    p_t = F.softmax(_offdiag(t @ t.T) / temperature, dim=1)
    return F.kl_div(log_p_s, p_t, reduction="batchmean")


def _triplet_loss(feats: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Batch-hard triplet loss on Euclidean distances (torchreid's TripletLoss)."""
    dist = torch.cdist(feats, feats).clamp(min=1e-12)
    same = labels[:, None] == labels[None, :]
    hardest_pos = (dist * same).max(1).values
    hardest_neg = dist.masked_fill(same, float("inf")).min(1).values
    valid = torch.isfinite(hardest_neg)
    if not valid.any():
        return feats.sum() * 0.0
    return F.relu(hardest_pos[valid] - hardest_neg[valid] + margin).mean()


# ---------------------------------------------------------------------------------- batching

def _random_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n)
    num = max(1, n // batch_size)
    if n < batch_size:
        return [order]
    return [order[i * batch_size:(i + 1) * batch_size] for i in range(num)]


def _pk_batches(labels: np.ndarray, batch_size: int, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """P identities x K crops per batch (torchreid's RandomIdentitySampler); ids with fewer
    than K crops are sampled with replacement."""
    groups: dict[int, list[np.ndarray]] = {}
    for pid in np.unique(labels):
        idx = rng.permutation(np.nonzero(labels == pid)[0])
        if len(idx) < k:
            idx = rng.choice(idx, k, replace=True)
        groups[int(pid)] = [idx[i:i + k] for i in range(0, len(idx) - k + 1, k)]
    p = batch_size // k
    available = [pid for pid in groups if groups[pid]]
    if len(available) < 2:
        raise ValueError("triplet loss needs at least 2 identities in the adaptation data")
    p = min(p, len(available))
    batches = []
    while len(available) >= p:
        chosen = rng.choice(available, p, replace=False)
        batch = []
        for pid in chosen:
            batch.append(groups[int(pid)].pop())
            if not groups[int(pid)]:
                available.remove(int(pid))
        batches.append(np.concatenate(batch))
    return batches


# ------------------------------------------------------------------------------- checkpoints

def resume_path(out: PathLike) -> Path:
    """Where the optimizer state for ``--resume`` lives, next to the checkpoint."""
    out = Path(out)
    return out.with_name(out.name + ".resume")


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _plain_state(model: nn.Module) -> dict:
    return {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}


def _json_check(record: Mapping) -> dict:
    return json.loads(json.dumps(record))  # raises TypeError on anything not JSON-able


@dataclass
class AdaptResult:
    model: nn.Module
    record: dict
    path: Path


# ---------------------------------------------------------------------------------- adaptation

def _lr_at(step: int, total: int, warmup: int, cfg: AdaptConfig) -> float:
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.schedule == "constant":
        return cfg.lr
    progress = (step - warmup) / max(1, total - warmup)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _set_train_mode(model: nn.Module, cfg: AdaptConfig) -> None:
    model.train()
    frozen = {name for name in cfg.freeze}
    for name, module in model.named_children():
        if name in frozen:
            module.eval()
    if cfg.bn == "frozen":
        for m in _batchnorms(model):
            m.eval()


def adapt(weights: PathLike, out: PathLike, data: Union[AdaptationData, Sequence[PathLike]],
          res: float = 0.5, width: Optional[float] = None, variant: Optional[str] = None,
          teacher: Union[None, PathLike, Teacher] = None, config: Optional[AdaptConfig] = None,
          teacher_format: Optional[str] = None, resume: bool = False, overwrite: bool = False,
          progress: bool = True, threads: Optional[int] = None, teacher_backend: str = "auto",
          on_epoch: Optional[Callable[[int, nn.Module, dict], None]] = None) -> AdaptResult:
    """Adapt ``weights`` to ``width`` x ``res`` on ``data``; write a checkpoint to ``out`` each epoch.

    ``data``: an :class:`AdaptationData` or folders (read without labels unless the config has a
    label loss). ``teacher``: a checkpoint / bundle / .onnx / .xml path or a Teacher; default the
    ``weights`` themselves at ``config.teacher_res``. ``width``/``variant`` default to the
    checkpoint's own; the student must fit ``weights``. ``teacher_backend``: 'auto' (OpenVINO when
    installed, else torch), 'openvino' or 'torch', for checkpoint teachers. ``threads``: torch (and teacher) threads
    for this call, restored afterwards; on a busy machine 1 thread can be several times faster
    than 2, because OpenMP threads wait for each other whenever one is descheduled.
    ``on_epoch(epoch, model, record)`` runs
    after every saved epoch (evaluation, logging); an exception there stops the run with the
    epoch's checkpoint and resume state on disk. Returns the adapted model (eval mode).
    """
    if threads is None:
        return _adapt(weights, out, data, res, width, variant, teacher, config, teacher_format, resume,
                      overwrite, progress, None, teacher_backend, on_epoch)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _adapt(weights, out, data, res, width, variant, teacher, config, teacher_format, resume,
                      overwrite, progress, threads, teacher_backend, on_epoch)
    finally:
        torch.set_num_threads(before)


def _bn_subset(images: Sequence[np.ndarray], limit: int) -> list:
    """At most ``limit`` images, evenly spaced: BN statistics settle long before 13k crops
    (precise BN uses a few thousand), and every pass over the data costs minutes on a CPU."""
    if limit <= 0 or len(images) <= limit:
        return list(images)
    return [images[int(i)] for i in np.linspace(0, len(images) - 1, limit).round()]


def _classifier_head(state: Mapping[str, torch.Tensor], dim: int, num_ids: int,
                     cfg: AdaptConfig) -> tuple[nn.Linear, str]:
    """The cross-entropy head and how it was initialised.

    ``cfg.head="auto"`` starts from the checkpoint's own classifier when it has exactly one row
    per identity of the adaptation data (the checkpoint's training set, labels in torchreid's
    sorted order): the loss then starts where training ended instead of from chance, which
    matters in a run of a few epochs. Otherwise (or ``head="new"``) a fresh N(0, 0.01) layer.
    """
    head = nn.Linear(dim, num_ids)
    weight, bias = state.get("classifier.weight"), state.get("classifier.bias")
    with torch.no_grad():
        if cfg.head == "auto" and weight is not None and tuple(weight.shape) == (num_ids, dim):
            head.weight.copy_(weight)
            head.bias.copy_(bias if bias is not None else torch.zeros(num_ids))
            return head, f"checkpoint classifier ({num_ids} x {dim})"
        head.weight.normal_(0.0, 0.01, generator=torch.Generator().manual_seed(cfg.seed))
        head.bias.zero_()
    return head, f"new ({num_ids} x {dim})"


def _adapt(weights, out, data, res, width, variant, teacher, config, teacher_format, resume, overwrite,
           progress, threads, teacher_backend, on_epoch) -> AdaptResult:
    cfg = config or AdaptConfig()
    t_start = time.perf_counter()
    out = Path(out)
    weights = Path(weights)
    state = read_checkpoint(weights)
    ckpt_width, ckpt_variant = osnet_config_of(state)
    width = ckpt_width if width is None else float(width)
    variant = ckpt_variant if variant is None else variant
    hw = input_size(res)
    if not isinstance(data, AdaptationData):
        data = AdaptationData.from_folders(list(data), labels=cfg.uses_labels, progress=progress)
    if cfg.uses_labels and data.labels is None:
        raise ValueError(f"losses {sorted(cfg.losses)} need identity labels: read the data with labels "
                         "(CLI: --labels; file names in Market-1501 / CUHK naming)")
    if len(data) < 2:
        raise ValueError("adaptation needs at least 2 images")
    for name in cfg.freeze:
        if name not in ("conv1", "maxpool", "conv2", "pool2", "conv3", "pool3", "conv4", "conv5", "fc"):
            raise ValueError(f"cannot freeze {name!r}: not a top-level OSNet module")

    rpath = resume_path(out)
    if out.exists() and not resume and not overwrite:
        raise FileExistsError(f"{out} exists; pass resume=True (--resume) to continue it or overwrite=True (--force)")
    if resume and not rpath.exists():
        if out.exists():
            record = torch.load(out, map_location="cpu", weights_only=True).get("adaptation") or {}
            if record.get("epochs") == cfg.epochs and record.get("complete"):
                model = build_osnet(width, variant)
                load_torchreid_weights(model, out)
                return AdaptResult(model.eval(), record, out)
        raise FileNotFoundError(f"nothing to resume: {rpath} not found (start without --resume)")

    student = build_osnet(width, variant)
    init_info = load_torchreid_weights(student, weights)

    teacher_obj: Optional[Teacher] = None
    if cfg.uses_teacher:
        if teacher is None or isinstance(teacher, (str, os.PathLike)):
            teacher_obj = load_teacher(teacher if teacher is not None else weights, res=cfg.teacher_res,
                                       input_format=teacher_format, backend=teacher_backend, threads=threads)
        else:
            teacher_obj = teacher
        if AUTO in cfg.losses:
            maps = hasattr(teacher_obj, "embed_with_maps") and teacher_obj.map_channels == student.channels[3]
            cfg = dataclasses.replace(cfg, losses=resolve_auto_losses(
                cfg.losses, same_dim=teacher_obj.dim == student.feature_dim, maps=maps))
        if "cosine" in cfg.losses and teacher_obj.dim != student.feature_dim:
            raise ValueError(f"teacher embeds in {teacher_obj.dim}-d, the student in {student.feature_dim}-d: "
                             "the cosine loss needs equal sizes; use the similarity-structure losses "
                             "(relational, simkl)")
        if "fmap" in cfg.losses and (not hasattr(teacher_obj, "embed_with_maps")
                                     or teacher_obj.map_channels != student.channels[3]):
            raise ValueError("the fmap loss compares conv5 feature maps: it needs an OSNet checkpoint teacher "
                             f"with {student.channels[3]} conv5 channels (the student's width)")
    teacher_desc = teacher_obj.describe() if teacher_obj is not None else None

    head: Optional[nn.Linear] = None
    head_init = None
    if cfg.uses_labels and "ce" in cfg.losses:
        head, head_init = _classifier_head(state, student.feature_dim, data.num_ids, cfg)
        if progress:
            print(f"cross-entropy head: {head_init}", flush=True)

    fingerprint = _json_check({
        "config": cfg.to_dict(), "weights_sha256": init_info["sha256"], "width": width, "variant": variant,
        "res": float(res), "data_hash": data.data_hash,
        "teacher_sha256": teacher_desc["sha256"] if teacher_desc else None,
    })
    history: list[dict] = []
    epoch_seconds: list[float] = []
    teacher_seconds = 0.0
    elapsed_before = 0.0
    start_epoch = 0
    resumed_step = 0

    for name in cfg.freeze:
        for p in getattr(student, name).parameters():
            p.requires_grad_(False)
    params = [p for p in student.parameters() if p.requires_grad] + (list(head.parameters()) if head else [])
    optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, amsgrad=True)

    if resume:
        saved = torch.load(rpath, map_location="cpu", weights_only=True)
        if saved.get("fingerprint") != fingerprint:
            diff = [k for k in fingerprint if saved.get("fingerprint", {}).get(k) != fingerprint[k]]
            raise ValueError(f"cannot resume {out}: the run was started with different settings ({', '.join(diff)}); "
                             "use the same options, or start afresh with --force")
        student.load_state_dict(saved["state_dict"])
        if head is not None:
            head.load_state_dict(saved["head"])
        optimizer.load_state_dict(saved["optimizer"])
        start_epoch = int(saved["epoch"])
        resumed_step = int(saved["step"])
        history, epoch_seconds = list(saved["history"]), list(saved["epoch_seconds"])
        teacher_seconds, elapsed_before = float(saved["teacher_seconds"]), float(saved["seconds"])
    elif cfg.adabn:
        recalibrate_bn(student, _bn_subset(data.images, cfg.bn_images), hw, cfg.batch_size, progress=progress)

    num_sets = cfg.view_sets or cfg.epochs
    teacher_cache: dict[int, tuple[torch.Tensor, Optional[torch.Tensor]]] = {}
    use_maps = "fmap" in cfg.losses
    # conv1 (/2), maxpool (/2) and two transition pools (/2 each): conv5 maps are input/16
    map_hw = (max(1, hw[0] // 16), max(1, hw[1] // 16))

    def views_of(set_index: int) -> ViewSet:
        return sample_views(len(data), cfg.augmentation, seed=(cfg.seed, 1, set_index))

    def teacher_targets(set_index: int, views: ViewSet) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Teacher embeddings (and conv5 maps for ``fmap``) of one view set, computed once."""
        nonlocal teacher_seconds
        if set_index not in teacher_cache:
            t0 = time.perf_counter()
            assert teacher_obj is not None
            n, chunk = len(data), 256
            out_t = np.empty((n, teacher_obj.dim), np.float32)
            out_m = np.empty((n, student.channels[3], *map_hw), np.float16) if use_maps else None
            starts = range(0, n, chunk)
            starts = progress_bar(starts, enabled=progress, desc=f"teacher views {set_index + 1}/{num_sets}",
                                  leave=False)
            for s in starts:
                idx = list(range(s, min(n, s + chunk)))
                views_t = render_batch(data.images, views, idx, teacher_obj.input_size)
                if use_maps:
                    out_t[s:s + len(idx)], out_m[s:s + len(idx)] = teacher_obj.embed_with_maps(views_t, map_hw)
                else:
                    out_t[s:s + len(idx)] = teacher_obj(views_t)
            teacher_cache[set_index] = (torch.from_numpy(out_t), None if out_m is None else torch.from_numpy(out_m))
            teacher_seconds += time.perf_counter() - t0
        return teacher_cache[set_index]

    steps_per_epoch = len(_batches_for(data, cfg, np.random.default_rng(0)))
    total_steps = steps_per_epoch * cfg.epochs
    warmup = min(total_steps - 1, int(round(cfg.warmup_epochs * steps_per_epoch))) if cfg.warmup_epochs else 0
    labels_t = torch.from_numpy(data.labels) if data.labels is not None else None

    def make_record(epochs_done: int, complete: bool) -> dict:
        from . import __version__
        return _json_check({
            "format": RECORD_FORMAT,
            "teacher": teacher_desc,
            "teacher_sha256": teacher_desc["sha256"] if teacher_desc else None,
            "student_init": {"source": str(weights.resolve()), "sha256": init_info["sha256"]},
            "data_hash": data.data_hash, "data_sources": data.sources, "num_images": len(data),
            "num_ids": data.num_ids if data.labels is not None else None,
            "labels": data.labels is not None and cfg.uses_labels, "head_init": head_init,
            "width": width, "variant": variant, "res": float(res), "input_size": list(hw),
            "epochs": epochs_done, "epochs_planned": cfg.epochs, "complete": complete,
            "losses": dict(cfg.losses), "loss_history": history,
            "recipe": cfg.to_dict(),
            "bn_recalibrated": bool(complete and cfg.bn == "train" and cfg.recalibrate),
            "seconds": round(elapsed_before + time.perf_counter() - t_start, 2),
            "epoch_seconds": [round(s, 2) for s in epoch_seconds],
            "teacher_seconds": round(teacher_seconds, 2),
            "threads": torch.get_num_threads(),
            "osnet_edge": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })

    def save(epochs_done: int, complete: bool) -> dict:
        record = make_record(epochs_done, complete)
        out.parent.mkdir(parents=True, exist_ok=True)
        state = _plain_state(student)
        if head is not None:  # as torchreid saves it: loaders drop it, a continued run starts from it
            state.update({f"classifier.{k}": v.detach().clone() for k, v in head.state_dict().items()})
        _atomic_save({"state_dict": state, "adaptation": record}, out)
        if complete:
            if rpath.exists():
                rpath.unlink()
        else:
            _atomic_save({"state_dict": _plain_state(student), "head": head.state_dict() if head else None,
                          "optimizer": optimizer.state_dict(), "epoch": epochs_done, "step": step,
                          "fingerprint": fingerprint,
                          "history": history, "epoch_seconds": epoch_seconds,
                          "teacher_seconds": teacher_seconds, "seconds": record["seconds"]}, rpath)
        return record

    normalize = Normalizer()
    step = resumed_step
    for epoch in range(start_epoch, cfg.epochs):
        t_epoch = time.perf_counter()
        set_index = epoch % num_sets
        views = views_of(set_index)
        targets, target_maps = teacher_targets(set_index, views) if teacher_obj is not None else (None, None)
        batches = _batches_for(data, cfg, np.random.default_rng((cfg.seed, 2, epoch)))
        _set_train_mode(student, cfg)
        sums: dict[str, float] = {}
        bar = progress_bar(batches, enabled=progress, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                           leave=False)
        for idx in bar:
            lr = _lr_at(step, total_steps, warmup, cfg)
            for g in optimizer.param_groups:
                g["lr"] = lr
            x = torch.from_numpy(normalize(render_batch(data.images, views, idx, hw)))
            # contiguous, not channels-last: its backward of depthwise convs is ~2x slower on CPU
            fmaps = student.featuremaps(x)
            feats = student.fc(student.global_avgpool(fmaps).flatten(1))  # = student(x) without a classifier
            terms: dict[str, torch.Tensor] = {}
            if target_maps is not None:
                terms["fmap"] = (1.0 - F.cosine_similarity(fmaps, target_maps[idx].float(), dim=1)).mean()
            if targets is not None:
                s_n = F.normalize(feats, dim=1)
                t_n = targets[idx]
                if "cosine" in cfg.losses:
                    terms["cosine"] = _cosine_loss(s_n, t_n)
                if "relational" in cfg.losses:
                    terms["relational"] = _relational_loss(s_n, t_n)
                if "simkl" in cfg.losses:
                    terms["simkl"] = _simkl_loss(s_n, t_n, cfg.temperature)
            if labels_t is not None and cfg.uses_labels:
                y = labels_t[idx]
                if head is not None:
                    terms["ce"] = F.cross_entropy(head(feats), y, label_smoothing=cfg.label_smoothing)
                if "triplet" in cfg.losses:
                    terms["triplet"] = _triplet_loss(feats, y, cfg.triplet_margin)
            loss = sum(cfg.losses[k] * v for k, v in terms.items())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            sums["loss"] = sums.get("loss", 0.0) + loss.item()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.item()
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}")
        bar.close()
        epoch_seconds.append(time.perf_counter() - t_epoch)
        history.append({"epoch": epoch + 1, **{k: round(v / len(batches), 6) for k, v in sums.items()}})
        last = epoch + 1 == cfg.epochs
        if last and cfg.bn == "train" and cfg.recalibrate:
            recalibrate_bn(student, _bn_subset(data.images, cfg.bn_images), hw, cfg.batch_size, progress=progress)
        student.eval()
        record = save(epoch + 1, complete=last)
        if progress:
            terms_txt = " ".join(f"{k} {v:.4f}" for k, v in history[-1].items() if k not in ("epoch", "loss"))
            print(f"epoch {epoch + 1}/{cfg.epochs}: loss {history[-1]['loss']:.4f} ({terms_txt}) "
                  f"{epoch_seconds[-1]:.0f} s -> {out}", flush=True)
        if on_epoch is not None:
            on_epoch(epoch + 1, student, record)
    if start_epoch >= cfg.epochs:  # resumed a run whose last epoch was saved but not finalised
        if cfg.bn == "train" and cfg.recalibrate:
            recalibrate_bn(student, _bn_subset(data.images, cfg.bn_images), hw, cfg.batch_size, progress=progress)
        record = save(cfg.epochs, complete=True)
    return AdaptResult(student.eval(), record, out)


def _batches_for(data: AdaptationData, cfg: AdaptConfig, rng: np.random.Generator) -> list[np.ndarray]:
    if "triplet" in cfg.losses and data.labels is not None:
        return _pk_batches(data.labels, cfg.batch_size, cfg.instances_per_id, rng)
    return _random_batches(len(data), cfg.batch_size, rng)
