"""The adaptation run: student and teacher set up, epochs of distillation / fine-tuning, a
checkpoint (and resume state) after every epoch. :func:`adapt` is the entry point."""
from __future__ import annotations

import dataclasses
import math
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models import build_osnet, input_size, load_torchreid_weights, read_checkpoint
from ..preprocess import Normalizer
from ..progress import progress_bar
from .batches import batches_for
from .batchnorm import batchnorms, bn_subset, recalibrate_bn
from .checkpoint import RECORD_FORMAT, AdaptResult, atomic_save, json_check, plain_state, resume_path
from .config import AUTO, AdaptConfig, resolve_auto_losses
from .data import AdaptationData
from .losses import cosine_loss, relational_loss, simkl_loss, triplet_loss
from .teachers import Teacher, load_teacher, osnet_config_of
from .views import ViewSet, render_batch, sample_views

PathLike = Union[str, "os.PathLike[str]"]
TOP_LEVEL_MODULES = ("conv1", "maxpool", "conv2", "pool2", "conv3", "pool3", "conv4", "conv5", "fc")


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
    data = _checked_data(data, cfg, progress)
    finished = _finished_run(out, cfg, width, variant, resume, overwrite)
    if finished is not None:
        return finished

    student = build_osnet(width, variant)
    init_info = load_torchreid_weights(student, weights)
    teacher_obj, cfg = _prepare_teacher(teacher, weights, cfg, student, teacher_format, teacher_backend, threads)
    head, head_init = _prepare_head(state, student, data, cfg, progress)
    run = _Run(out, weights, init_info["sha256"], data, cfg, student, head, head_init, teacher_obj, width, variant,
               res, hw, t_start, progress)
    if resume:
        run.restore()
    elif cfg.adabn:
        run.recalibrate()

    record = None
    for epoch in range(run.start_epoch, cfg.epochs):
        record = run.train_epoch(epoch)
        if on_epoch is not None:
            on_epoch(epoch + 1, student, record)
    if run.start_epoch >= cfg.epochs:  # resumed a run whose last epoch was saved but not finalised
        if cfg.bn == "train" and cfg.recalibrate:
            run.recalibrate()
        record = run.save(cfg.epochs, complete=True)
    return AdaptResult(student.eval(), record, out)


def _checked_data(data: Union[AdaptationData, Sequence[PathLike]], cfg: AdaptConfig,
                  progress: bool) -> AdaptationData:
    """The adaptation data, read from folders if need be, checked against the recipe."""
    if not isinstance(data, AdaptationData):
        data = AdaptationData.from_folders(list(data), labels=cfg.uses_labels, progress=progress)
    if cfg.uses_labels and data.labels is None:
        raise ValueError(f"losses {sorted(cfg.losses)} need identity labels: read the data with labels "
                         "(CLI: --labels; file names in Market-1501 / CUHK naming)")
    if len(data) < 2:
        raise ValueError("adaptation needs at least 2 images")
    for name in cfg.freeze:
        if name not in TOP_LEVEL_MODULES:
            raise ValueError(f"cannot freeze {name!r}: not a top-level OSNet module")
    return data


def _finished_run(out: Path, cfg: AdaptConfig, width: float, variant: str, resume: bool,
                  overwrite: bool) -> Optional[AdaptResult]:
    """Refuse to clobber ``out``; on ``resume`` without resume state, the already complete run
    (nothing left to do) or an error."""
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
    return None


def _prepare_teacher(teacher: Union[None, PathLike, Teacher], weights: Path, cfg: AdaptConfig, student: nn.Module,
                     teacher_format: Optional[str], teacher_backend: str,
                     threads: Optional[int]) -> tuple[Optional[Teacher], AdaptConfig]:
    """The teacher (none for label-only recipes) and the recipe with 'auto' losses resolved for it;
    losses the teacher cannot serve are refused."""
    if not cfg.uses_teacher:
        return None, cfg
    if teacher is None or isinstance(teacher, (str, os.PathLike)):
        teacher_obj = load_teacher(teacher if teacher is not None else weights, res=cfg.teacher_res,
                                   input_format=teacher_format, backend=teacher_backend, threads=threads)
    else:
        teacher_obj = teacher
    same_maps = hasattr(teacher_obj, "embed_with_maps") and teacher_obj.map_channels == student.channels[3]
    if AUTO in cfg.losses:
        cfg = dataclasses.replace(cfg, losses=resolve_auto_losses(
            cfg.losses, same_dim=teacher_obj.dim == student.feature_dim, maps=same_maps))
    if "cosine" in cfg.losses and teacher_obj.dim != student.feature_dim:
        raise ValueError(f"teacher embeds in {teacher_obj.dim}-d, the student in {student.feature_dim}-d: "
                         "the cosine loss needs equal sizes; use the similarity-structure losses "
                         "(relational, simkl)")
    if "fmap" in cfg.losses and not same_maps:
        raise ValueError("the fmap loss compares conv5 feature maps: it needs an OSNet checkpoint teacher "
                         f"with {student.channels[3]} conv5 channels (the student's width)")
    return teacher_obj, cfg


def _prepare_head(state: Mapping[str, torch.Tensor], student: nn.Module, data: AdaptationData, cfg: AdaptConfig,
                  progress: bool) -> tuple[Optional[nn.Linear], Optional[str]]:
    """The cross-entropy classifier when the recipe has the ``ce`` loss, and how it was initialised."""
    if not (cfg.uses_labels and "ce" in cfg.losses):
        return None, None
    head, head_init = _classifier_head(state, student.feature_dim, data.num_ids, cfg)
    if progress:
        print(f"cross-entropy head: {head_init}", flush=True)
    return head, head_init


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
        for m in batchnorms(model):
            m.eval()



class _Run:
    """One adaptation run: what it trains and with what, how far it got (saved every epoch and
    restored by ``resume``), and the teacher's targets, computed once per view set."""

    def __init__(self, out: Path, weights: Path, weights_sha256: str, data: AdaptationData, cfg: AdaptConfig,
                 student: nn.Module, head: Optional[nn.Linear], head_init: Optional[str],
                 teacher: Optional[Teacher], width: float, variant: str, res: float, hw: tuple[int, int],
                 t_start: float, progress: bool) -> None:
        self.out, self.rpath, self.weights, self.weights_sha256 = out, resume_path(out), weights, weights_sha256
        self.data, self.cfg, self.student, self.head, self.head_init = data, cfg, student, head, head_init
        self.teacher, self.width, self.variant, self.res, self.hw = teacher, width, variant, float(res), hw
        self.t_start, self.progress = t_start, progress
        self.teacher_desc = teacher.describe() if teacher is not None else None
        self.fingerprint = json_check({
            "config": cfg.to_dict(), "weights_sha256": weights_sha256, "width": width, "variant": variant,
            "res": float(res), "data_hash": data.data_hash,
            "teacher_sha256": self.teacher_desc["sha256"] if self.teacher_desc else None,
        })
        self.optimizer = self._optimizer()
        # what has been done: restored on resume, saved in the resume state
        self.history: list[dict] = []
        self.epoch_seconds: list[float] = []
        self.teacher_seconds = 0.0
        self.elapsed_before = 0.0
        self.start_epoch = 0
        self.step = 0
        # the schedule
        self.num_sets = cfg.view_sets or cfg.epochs
        steps_per_epoch = len(batches_for(data, cfg, np.random.default_rng(0)))
        self.total_steps = steps_per_epoch * cfg.epochs
        self.warmup = (min(self.total_steps - 1, int(round(cfg.warmup_epochs * steps_per_epoch)))
                       if cfg.warmup_epochs else 0)
        self.labels = torch.from_numpy(data.labels) if data.labels is not None else None
        self.teacher_cache: dict[int, tuple[torch.Tensor, Optional[torch.Tensor]]] = {}
        self.use_maps = "fmap" in cfg.losses
        # conv1 (/2), maxpool (/2) and two transition pools (/2 each): conv5 maps are input/16
        self.map_hw = (max(1, self.hw[0] // 16), max(1, self.hw[1] // 16))
        self.normalize = Normalizer()

    def _optimizer(self) -> torch.optim.Optimizer:
        """AMSGrad over everything not frozen (student and cross-entropy head)."""
        for name in self.cfg.freeze:
            for p in getattr(self.student, name).parameters():
                p.requires_grad_(False)
        params = [p for p in self.student.parameters() if p.requires_grad]
        params += list(self.head.parameters()) if self.head else []
        return torch.optim.Adam(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay, amsgrad=True)

    def restore(self) -> None:
        """Continue from the resume state beside the checkpoint, started with the same settings."""
        saved = torch.load(self.rpath, map_location="cpu", weights_only=True)
        if saved.get("fingerprint") != self.fingerprint:
            diff = [k for k in self.fingerprint if saved.get("fingerprint", {}).get(k) != self.fingerprint[k]]
            raise ValueError(f"cannot resume {self.out}: the run was started with different settings "
                             f"({', '.join(diff)}); use the same options, or start afresh with --force")
        self.student.load_state_dict(saved["state_dict"])
        if self.head is not None:
            self.head.load_state_dict(saved["head"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.start_epoch = int(saved["epoch"])
        self.step = int(saved["step"])
        self.history, self.epoch_seconds = list(saved["history"]), list(saved["epoch_seconds"])
        self.teacher_seconds, self.elapsed_before = float(saved["teacher_seconds"]), float(saved["seconds"])

    def recalibrate(self) -> None:
        """BatchNorm statistics re-estimated at the student's resolution (AdaBN / precise BN)."""
        recalibrate_bn(self.student, bn_subset(self.data.images, self.cfg.bn_images), self.hw, self.cfg.batch_size,
                       progress=self.progress)

    def views(self, set_index: int) -> ViewSet:
        return sample_views(len(self.data), self.cfg.augmentation, seed=(self.cfg.seed, 1, set_index))

    def teacher_targets(self, set_index: int, views: ViewSet) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Teacher embeddings (and conv5 maps for ``fmap``) of one view set, computed once."""
        if set_index not in self.teacher_cache:
            t0 = time.perf_counter()
            teacher = self.teacher
            assert teacher is not None
            n, chunk = len(self.data), 256
            out_t = np.empty((n, teacher.dim), np.float32)
            out_m = np.empty((n, self.student.channels[3], *self.map_hw), np.float16) if self.use_maps else None
            starts = range(0, n, chunk)
            starts = progress_bar(starts, enabled=self.progress, desc=f"teacher views {set_index + 1}/{self.num_sets}",
                                  leave=False)
            for s in starts:
                idx = list(range(s, min(n, s + chunk)))
                views_t = render_batch(self.data.images, views, idx, teacher.input_size)
                if self.use_maps:
                    out_t[s:s + len(idx)], out_m[s:s + len(idx)] = teacher.embed_with_maps(views_t, self.map_hw)
                else:
                    out_t[s:s + len(idx)] = teacher(views_t)
            self.teacher_cache[set_index] = (torch.from_numpy(out_t),
                                             None if out_m is None else torch.from_numpy(out_m))
            self.teacher_seconds += time.perf_counter() - t0
        return self.teacher_cache[set_index]

    def train_epoch(self, epoch: int) -> dict:
        """One pass over the data's batches, then the checkpoint (BN recalibrated after the last)."""
        cfg, student = self.cfg, self.student
        t_epoch = time.perf_counter()
        set_index = epoch % self.num_sets
        views = self.views(set_index)
        targets, target_maps = self.teacher_targets(set_index, views) if self.teacher is not None else (None, None)
        batches = batches_for(self.data, cfg, np.random.default_rng((cfg.seed, 2, epoch)))
        _set_train_mode(student, cfg)
        sums: dict[str, float] = {}
        bar = progress_bar(batches, enabled=self.progress, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                           leave=False)
        for idx in bar:
            lr = _lr_at(self.step, self.total_steps, self.warmup, cfg)
            for g in self.optimizer.param_groups:
                g["lr"] = lr
            terms = self.loss_terms(idx, views, targets, target_maps)
            loss = sum(cfg.losses[k] * v for k, v in terms.items())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.step += 1
            sums["loss"] = sums.get("loss", 0.0) + loss.item()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.item()
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}")
        bar.close()
        self.epoch_seconds.append(time.perf_counter() - t_epoch)
        self.history.append({"epoch": epoch + 1, **{k: round(v / len(batches), 6) for k, v in sums.items()}})
        last = epoch + 1 == cfg.epochs
        if last and cfg.bn == "train" and cfg.recalibrate:
            self.recalibrate()
        student.eval()
        record = self.save(epoch + 1, complete=last)
        if self.progress:
            terms_txt = " ".join(f"{k} {v:.4f}" for k, v in self.history[-1].items() if k not in ("epoch", "loss"))
            print(f"epoch {epoch + 1}/{cfg.epochs}: loss {self.history[-1]['loss']:.4f} ({terms_txt}) "
                  f"{self.epoch_seconds[-1]:.0f} s -> {self.out}", flush=True)
        return record

    def loss_terms(self, idx: np.ndarray, views: ViewSet, targets: Optional[torch.Tensor],
                   target_maps: Optional[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each loss of the recipe on one batch (unweighted)."""
        cfg, student = self.cfg, self.student
        x = torch.from_numpy(self.normalize(render_batch(self.data.images, views, idx, self.hw)))
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
                terms["cosine"] = cosine_loss(s_n, t_n)
            if "relational" in cfg.losses:
                terms["relational"] = relational_loss(s_n, t_n)
            if "simkl" in cfg.losses:
                terms["simkl"] = simkl_loss(s_n, t_n, cfg.temperature)
        if self.labels is not None and cfg.uses_labels:
            y = self.labels[idx]
            if self.head is not None:
                terms["ce"] = F.cross_entropy(self.head(feats), y, label_smoothing=cfg.label_smoothing)
            if "triplet" in cfg.losses:
                terms["triplet"] = triplet_loss(feats, y, cfg.triplet_margin)
        return terms

    def record(self, epochs_done: int, complete: bool) -> dict:
        """The JSON-able adaptation record stored in the checkpoint (and later the bundle manifest)."""
        from .. import __version__

        cfg, data, teacher_desc = self.cfg, self.data, self.teacher_desc
        return json_check({
            "format": RECORD_FORMAT,
            "teacher": teacher_desc,
            "teacher_sha256": teacher_desc["sha256"] if teacher_desc else None,
            "student_init": {"source": str(self.weights.resolve()), "sha256": self.weights_sha256},
            "data_hash": data.data_hash, "data_sources": data.sources, "num_images": len(data),
            "num_ids": data.num_ids if data.labels is not None else None,
            "labels": data.labels is not None and cfg.uses_labels, "head_init": self.head_init,
            "width": self.width, "variant": self.variant, "res": self.res, "input_size": list(self.hw),
            "epochs": epochs_done, "epochs_planned": cfg.epochs, "complete": complete,
            "losses": dict(cfg.losses), "loss_history": self.history,
            "recipe": cfg.to_dict(),
            "bn_recalibrated": bool(complete and cfg.bn == "train" and cfg.recalibrate),
            "seconds": round(self.elapsed_before + time.perf_counter() - self.t_start, 2),
            "epoch_seconds": [round(s, 2) for s in self.epoch_seconds],
            "teacher_seconds": round(self.teacher_seconds, 2),
            "threads": torch.get_num_threads(),
            "osnet_edge": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })

    def save(self, epochs_done: int, complete: bool) -> dict:
        """The checkpoint; beside it the resume state until the run is complete."""
        record = self.record(epochs_done, complete)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        state = plain_state(self.student)
        if self.head is not None:  # as torchreid saves it: loaders drop it, a continued run starts from it
            state.update({f"classifier.{k}": v.detach().clone() for k, v in self.head.state_dict().items()})
        atomic_save({"state_dict": state, "adaptation": record}, self.out)
        if complete:
            if self.rpath.exists():
                self.rpath.unlink()
        else:
            atomic_save({"state_dict": plain_state(self.student), "head": self.head.state_dict() if self.head else None,
                         "optimizer": self.optimizer.state_dict(), "epoch": epochs_done, "step": self.step,
                         "fingerprint": self.fingerprint,
                         "history": self.history, "epoch_seconds": self.epoch_seconds,
                         "teacher_seconds": self.teacher_seconds, "seconds": record["seconds"]}, self.rpath)
        return record
