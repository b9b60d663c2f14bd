"""One adaptation run: the student trains alone against the teacher's cached targets.

Per view set the engine (:mod:`.engine`) gives the student's uint8 views and the teacher's
embeddings / logits / maps for each view and its mirror, computed once. A step picks a mirror
per crop, draws random erasing afresh on the student's copy, normalises and runs the student:
no teacher and no resize in the loop. Steps come from ``cfg.epochs`` or, with ``cfg.budget_min``,
from the planner (:mod:`.schedule`); the learning rate warms up and decays to ~0 at the last
planned step. A checkpoint (and resume state) is written after every epoch.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..preprocess import Normalizer
from ..progress import progress_bar
from .batches import batches_for
from .batchnorm import batchnorms, bn_subset, recalibrate_bn
from .checkpoint import RECORD_FORMAT, atomic_save, json_check, machine_info, plain_state, resume_path
from .config import AdaptConfig
from .data import AdaptationData
from .device import amp_dtype, describe_device
from .engine import ViewSetTargets, compute_targets, view_set_targets
from .losses import cosine_loss, logit_loss, relational_loss, simkl_loss, triplet_loss
from .schedule import StepTimer, finish_seconds, format_eta, lr_at, plan_total_steps
from .views import ViewSet, erase_batch, sample_views

ENGINE_FORMAT = 1        # bump when the cached targets' meaning changes
UNPLANNED_EPOCHS = 10_000


def _set_train_mode(model: nn.Module, cfg: AdaptConfig) -> None:
    model.train()
    for name, module in model.named_children():
        if name in cfg.freeze:
            module.eval()
    if cfg.bn == "frozen":
        for m in batchnorms(model):
            m.eval()


class AdaptationRun:
    """What the run trains and with what, how far it got (saved every epoch and restored by
    ``resume``), the cached targets per view set and the plan."""

    def __init__(self, out: Path, weights: Path, weights_sha256: str, data: AdaptationData, cfg: AdaptConfig,
                 student: nn.Module, head: Optional[nn.Linear], head_init: Optional[str], teacher, width: float,
                 variant: str, res: float, hw: tuple[int, int], t_start: float, cpu_start: float, progress: bool,
                 device: str = "cpu", amp: bool = True, cache_dir: Optional[Path] = None,
                 eval_images: int = 0) -> None:
        self.out, self.rpath, self.weights, self.weights_sha256 = out, resume_path(out), weights, weights_sha256
        self.data, self.cfg, self.head_init = data, cfg, head_init
        self.teacher, self.width, self.variant, self.res, self.hw = teacher, width, variant, float(res), hw
        self.t_start, self.cpu_start, self.progress = t_start, cpu_start, progress
        self.device, self.cache_dir, self.eval_images = device, cache_dir, int(eval_images)
        self.amp_dtype = amp_dtype(device, amp)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.student = student.to(device)
        self.head = head.to(device) if head is not None else None
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
        self.elapsed_before = self.cpu_before = 0.0
        self.start_epoch = self.step = 0
        # the schedule
        self.num_sets = cfg.view_sets or cfg.epochs
        self.steps_per_epoch = len(batches_for(data, cfg, np.random.default_rng(0)))
        epochs = UNPLANNED_EPOCHS if cfg.budget_min is not None else cfg.epochs
        self.total_steps = self.steps_per_epoch * epochs
        self.warmup_steps = (min(self.total_steps - 1, int(round(cfg.warmup_epochs * self.steps_per_epoch)))
                             if cfg.warmup_epochs else 0)
        self.timer = StepTimer()
        self.labels = torch.from_numpy(data.labels).to(device) if data.labels is not None else None
        self.targets: dict[int, ViewSetTargets] = {}
        self.use_maps, self.use_logits = "fmap" in cfg.losses, "logit" in cfg.losses
        # mirrors are a flip augmentation: none when flips are off
        self.mirrors = bool(cfg.teacher_flip and cfg.augmentation.flip_p > 0)
        # conv1 (/2), maxpool (/2) and two transition pools (/2 each): conv5 maps are input/16
        self.map_hw = (max(1, self.hw[0] // 16), max(1, self.hw[1] // 16))
        self.normalize = Normalizer()

    # ------------------------------------------------------------------ set-up and state
    def _optimizer(self) -> torch.optim.Optimizer:
        """AMSGrad over everything not frozen (student and classifier head)."""
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
        self.start_epoch, self.step = int(saved["epoch"]), int(saved["step"])
        self.total_steps = int(saved.get("total_steps", self.total_steps))
        self.history, self.epoch_seconds = list(saved["history"]), list(saved["epoch_seconds"])
        self.teacher_seconds, self.elapsed_before = float(saved["teacher_seconds"]), float(saved["seconds"])
        self.cpu_before = float(saved.get("cpu_seconds", 0.0))

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t_start

    def recalibrate(self) -> None:
        """BatchNorm statistics re-estimated at the student's resolution (AdaBN / precise BN)."""
        recalibrate_bn(self.student, bn_subset(self.data.images, self.cfg.bn_images), self.hw, self.cfg.batch_size,
                       progress=self.progress, device=self.device)

    # ------------------------------------------------------------------ targets
    def views(self, set_index: int) -> ViewSet:
        """The view set's geometry (flip, crop): what the teacher sees. Erasing is the student's alone."""
        geometry = dataclasses.replace(self.cfg.augmentation, erase_p=0.0)
        return sample_views(len(self.data), geometry, seed=(self.cfg.seed, 1, set_index))

    def view_set(self, set_index: int) -> ViewSetTargets:
        if set_index not in self.targets:
            cfg, t = self.cfg, self.teacher
            parts = {"format": ENGINE_FORMAT, "data_hash": self.data.data_hash, "seed": cfg.seed, "set": set_index,
                     "geometry": dataclasses.replace(cfg.augmentation, erase_p=0.0).to_dict(),
                     "student_hw": list(self.hw), "mirrors": self.mirrors,
                     "teacher": None if t is None else {k: self.teacher_desc.get(k) for k in
                                                        ("kind", "sha256", "input_size", "backend", "input_format")},
                     "map_hw": list(self.map_hw) if self.use_maps else None, "logits": self.use_logits}
            desc = f"teacher views {set_index + 1}/{self.num_sets}"
            targets = view_set_targets(parts, lambda: compute_targets(
                t, self.data.images, self.views(set_index), self.hw, self.map_hw if self.use_maps else None,
                self.use_logits, self.mirrors, self.progress, desc), self.cache_dir)
            self.teacher_seconds += targets.seconds
            self.targets[set_index] = targets
        return self.targets[set_index]

    # ------------------------------------------------------------------ the plan
    def epochs_planned(self) -> float:
        return self.total_steps / self.steps_per_epoch

    def finish_estimate(self) -> float:
        """Seconds still needed after the last step (BN statistics, evaluation, saving) plus the
        teacher's view sets not yet computed that the planned epochs will use."""
        cfg = self.cfg
        bn_images = (min(len(self.data), cfg.bn_images or len(self.data))
                     if cfg.bn == "train" and cfg.recalibrate else 0)
        finish = finish_seconds(self.timer.seconds, cfg.batch_size, bn_images, self.eval_images)
        computed = [t.seconds for t in self.targets.values()]
        per_set = sum(computed) / len(computed) if computed else 0.0
        needed = min(self.num_sets, math.ceil(self.total_steps / self.steps_per_epoch))
        return finish + per_set * max(0, needed - len(self.targets))

    def replan(self) -> None:
        """With a budget: the total steps that end the run at the deadline, from the step time now."""
        if self.cfg.budget_min is None or not len(self.timer):
            return
        budget = 60.0 * self.cfg.budget_min
        for _ in range(2):  # the reserve depends on the plan (view sets still to compute)
            self.total_steps = max(1, plan_total_steps(self.step, self.elapsed(), budget, self.timer.seconds,
                                                       self.finish_estimate()))
        self.warmup_steps = min(int(round(self.cfg.warmup_epochs * self.steps_per_epoch)), self.total_steps // 5)

    def eta(self) -> float:
        """Seconds to the end of the run as planned now."""
        if not len(self.timer):
            return float("nan")
        return (self.total_steps - self.step) * self.timer.seconds + self.finish_estimate()

    # ------------------------------------------------------------------ training
    def train(self, on_epoch: Optional[Callable[[int, nn.Module, dict], None]]) -> dict:
        """Epochs until the planned steps are done; the last one's checkpoint is the complete run."""
        epoch, record = self.start_epoch, None
        while self.step < self.total_steps:
            record = self.train_epoch(epoch)
            epoch += 1
            if on_epoch is not None:
                on_epoch(epoch, self.student, record)
        if record is None:  # resumed a run whose last epoch was saved but not finalised
            if self.cfg.bn == "train" and self.cfg.recalibrate:
                self.recalibrate()
            record = self.save(epoch, complete=True)
        return record

    def train_epoch(self, epoch: int) -> dict:
        """One pass over the data's batches (or what is left of the plan), then the checkpoint
        (BN recalibrated after the last)."""
        cfg, student = self.cfg, self.student
        t_epoch = time.perf_counter()
        targets = self.view_set(epoch % self.num_sets)
        self.replan()
        batches = batches_for(self.data, cfg, np.random.default_rng((cfg.seed, 2, epoch)))
        _set_train_mode(student, cfg)
        if self.head is not None:
            self.head.train()
        sums: dict[str, float] = {}
        done = 0
        bar = progress_bar(total=min(len(batches), self.total_steps - self.step), enabled=self.progress,
                           desc=f"epoch {epoch + 1}", unit="batch", leave=False)
        for idx in batches:
            if self.step >= self.total_steps:
                break
            t_step = time.perf_counter()
            lr = lr_at(self.step, self.total_steps, self.warmup_steps, cfg.lr, cfg.schedule)
            for g in self.optimizer.param_groups:
                g["lr"] = lr
            terms = self.loss_terms(idx, targets)
            loss = sum(cfg.losses[k] * v for k, v in terms.items())
            self._update(loss)
            self.step += 1
            done += 1
            sums["loss"] = sums.get("loss", 0.0) + loss.item()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.item()
            self.timer.add(time.perf_counter() - t_step)
            if self.cfg.budget_min is not None:  # every step: the machine's speed changes, planning is cheap
                self.replan()
                bar.total = min(len(batches), done + self.total_steps - self.step)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}", eta=format_eta(self.eta()))
        bar.close()
        self.epoch_seconds.append(time.perf_counter() - t_epoch)
        self.history.append({"epoch": epoch + 1, "steps": done,
                             **{k: round(v / max(1, done), 6) for k, v in sums.items()}})
        last = self.step >= self.total_steps
        if last and cfg.bn == "train" and cfg.recalibrate:
            self.recalibrate()
        student.eval()
        record = self.save(epoch + 1, complete=last)
        if self.progress:
            terms_txt = " ".join(f"{k} {v:.4f}" for k, v in self.history[-1].items()
                                 if k not in ("epoch", "loss", "steps"))
            print(f"epoch {epoch + 1}/{self.epochs_planned():.1f}: loss {self.history[-1]['loss']:.4f} ({terms_txt}) "
                  f"{self.epoch_seconds[-1]:.0f} s, elapsed {format_eta(self.elapsed())}, "
                  f"eta {format_eta(0 if last else self.eta())} -> {self.out}", flush=True)
        return record

    def _update(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()

    def loss_terms(self, idx: np.ndarray, targets: ViewSetTargets) -> dict[str, torch.Tensor]:
        """Each loss of the recipe on one batch (unweighted, float32)."""
        cfg, student, dev = self.cfg, self.student, self.device
        rng = np.random.default_rng((cfg.seed, 4, self.step))
        mirror = rng.integers(0, targets.mirrors, len(idx))
        views = targets.student_views(idx, mirror)
        if cfg.augmentation.erase_p > 0:
            views = erase_batch(views, sample_views(len(idx), cfg.augmentation, seed=(cfg.seed, 3, self.step)).erase)
        # contiguous, not channels-last: its backward of depthwise convs is ~2x slower on CPU
        x = torch.from_numpy(self.normalize(views)).to(dev)
        autocast = (torch.autocast(device_type="cuda", dtype=self.amp_dtype) if self.amp_dtype is not None
                    else contextlib.nullcontext())
        with autocast:
            fmaps = student.featuremaps(x)
            feats = student.fc(student.global_avgpool(fmaps).flatten(1))  # = student(x) without a classifier
            logits = self.head(feats) if self.head is not None else None
        fmaps, feats = fmaps.float(), feats.float()
        logits = logits.float() if logits is not None else None
        terms: dict[str, torch.Tensor] = {}
        if self.teacher is not None:
            emb_t, logits_t, maps_t = (None if a is None else torch.from_numpy(a).to(dev)
                                       for a in targets.teacher(idx, mirror))
            if maps_t is not None:
                terms["fmap"] = (1.0 - F.cosine_similarity(fmaps, maps_t.float(), dim=1)).mean()
            s_n = F.normalize(feats, dim=1)
            if "cosine" in cfg.losses:
                terms["cosine"] = cosine_loss(s_n, emb_t)
            if "relational" in cfg.losses:
                terms["relational"] = relational_loss(s_n, emb_t)
            if "simkl" in cfg.losses:
                terms["simkl"] = simkl_loss(s_n, emb_t, cfg.temperature)
            if logits_t is not None:
                terms["logit"] = logit_loss(logits, logits_t, cfg.kd_temperature)
        if self.labels is not None and cfg.uses_labels:
            y = self.labels[torch.from_numpy(np.asarray(idx)).to(dev)]
            if "ce" in cfg.losses:
                terms["ce"] = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            if "triplet" in cfg.losses:
                terms["triplet"] = triplet_loss(feats, y, cfg.triplet_margin)
        return terms

    # ------------------------------------------------------------------ output
    def finish_model(self) -> nn.Module:
        """The trained student, on the CPU in eval mode (what evaluation and export take)."""
        self.student = self.student.cpu().eval()
        return self.student

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
            "epochs": epochs_done, "epochs_planned": round(self.epochs_planned(), 3), "complete": complete,
            "steps": self.step, "steps_planned": self.total_steps, "budget_min": cfg.budget_min,
            "losses": dict(cfg.losses), "loss_history": self.history,
            "recipe": cfg.to_dict(),
            "bn_recalibrated": bool(complete and cfg.bn == "train" and cfg.recalibrate),
            "seconds": round(self.elapsed(), 2),
            "cpu_seconds": round(self.cpu_before + time.process_time() - self.cpu_start, 2),
            "epoch_seconds": [round(s, 2) for s in self.epoch_seconds],
            "teacher_seconds": round(self.teacher_seconds, 2),
            "threads": torch.get_num_threads(), "device": describe_device(self.device),
            "amp": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype is not None else None,
            "machine": machine_info(),
            "osnet_edge": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })

    def _checkpoint_state(self) -> dict:
        state = plain_state(self.student)
        if self.head is not None:  # as torchreid saves it: loaders drop it, a continued run starts from it
            state.update({f"classifier.{k}": v.detach().cpu().clone() for k, v in self.head.state_dict().items()})
        return state

    def save(self, epochs_done: int, complete: bool) -> dict:
        """The checkpoint; beside it the resume state until the run is complete."""
        record = self.record(epochs_done, complete)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_save({"state_dict": self._checkpoint_state(), "adaptation": record}, self.out)
        if complete:
            if self.rpath.exists():
                self.rpath.unlink()
        else:
            atomic_save({"state_dict": plain_state(self.student),
                         "head": {k: v.cpu() for k, v in self.head.state_dict().items()} if self.head else None,
                         "optimizer": self.optimizer.state_dict(), "epoch": epochs_done, "step": self.step,
                         "total_steps": self.total_steps, "fingerprint": self.fingerprint,
                         "history": self.history, "epoch_seconds": self.epoch_seconds,
                         "teacher_seconds": self.teacher_seconds, "seconds": record["seconds"],
                         "cpu_seconds": record["cpu_seconds"]}, self.rpath)
        self._last_record = record
        return record

    def save_evaluation(self, evaluation: dict) -> dict:
        """The final evaluation (e.g. Market-1501 rank-1 / mAP) added to the complete checkpoint's record."""
        record = dict(self._last_record)
        record["evaluation"] = json.loads(json.dumps(evaluation, default=float))  # numpy scalars -> floats
        record["seconds_with_evaluation"] = round(self.elapsed(), 2)
        record = json_check(record)
        atomic_save({"state_dict": self._checkpoint_state(), "adaptation": record}, self.out)
        return record
