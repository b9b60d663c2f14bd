"""The adaptation entry point: student, teacher and head set up, then the run (:mod:`.run`):
steps of distillation / fine-tuning, a checkpoint (and resume state) after every epoch."""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from ..models import build_osnet, input_size, load_torchreid_weights, read_checkpoint
from .checkpoint import AdaptResult, resume_path
from .config import AUTO, AdaptConfig, resolve_auto_losses
from .data import AdaptationData
from .device import resolve_device
from .run import AdaptationRun
from .teachers import Teacher, load_teacher, osnet_config_of

PathLike = Union[str, "os.PathLike[str]"]
TOP_LEVEL_MODULES = ("conv1", "maxpool", "conv2", "pool2", "conv3", "pool3", "conv4", "conv5", "fc")


def adapt(weights: PathLike, out: PathLike, data: Union[AdaptationData, Sequence[PathLike]],
          res: float = 0.5, width: Optional[float] = None, variant: Optional[str] = None,
          teacher: Union[None, PathLike, Teacher] = None, config: Optional[AdaptConfig] = None,
          teacher_format: Optional[str] = None, resume: bool = False, overwrite: bool = False,
          progress: bool = True, threads: Optional[int] = None, teacher_backend: str = "auto",
          on_epoch: Optional[Callable[[int, nn.Module, dict], None]] = None, init: Optional[PathLike] = None,
          device: str = "cpu", amp: bool = True, cache_dir: Optional[PathLike] = None,
          final_eval: Optional[Callable[[nn.Module], dict]] = None, eval_images: int = 0) -> AdaptResult:
    """Adapt ``weights`` to ``width`` x ``res`` on ``data``; write a checkpoint to ``out`` each epoch.

    ``data``: an :class:`AdaptationData` or folders (read without labels unless the config has a
    label loss). ``teacher``: a checkpoint / bundle / .onnx / .xml path or a Teacher; default the
    ``weights`` themselves at ``config.teacher_res``. ``init``: the student's initial weights when
    they are not ``weights`` (e.g. 64x32 from an adapted 128x64; its classifier starts the head when
    it fits). ``width``/``variant`` default to the checkpoint's own. ``teacher_backend``: 'auto'
    (OpenVINO when installed, else torch), 'openvino' or 'torch', for checkpoint teachers.
    ``threads``: torch (and teacher) threads for this call, restored afterwards. ``device``: 'cpu',
    'cuda[:N]' or 'auto'; ``amp``: mixed precision there (never on the CPU, whose results stay exact).
    ``cache_dir``: where the teacher's targets are stored for later runs (None: memory only).
    ``final_eval(model) -> dict`` runs on the finished model (CPU), its result lands in the record
    (``evaluation``); ``eval_images`` is its size, for the budget planner.
    ``on_epoch(epoch, model, record)`` runs after every saved epoch (evaluation, logging); an exception
    there stops the run with the epoch's checkpoint and resume state on disk. Returns the adapted model
    (eval mode, on the CPU).
    """
    options = dict(weights=weights, out=out, data=data, res=res, width=width, variant=variant, teacher=teacher,
                   config=config, teacher_format=teacher_format, resume=resume, overwrite=overwrite,
                   progress=progress, threads=threads, teacher_backend=teacher_backend, on_epoch=on_epoch,
                   init=init, device=device, amp=amp, cache_dir=cache_dir, final_eval=final_eval,
                   eval_images=eval_images)
    if threads is None:
        return _adapt(**options)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _adapt(**options)
    finally:
        torch.set_num_threads(before)


def _adapt(weights, out, data, res, width, variant, teacher, config, teacher_format, resume, overwrite,
           progress, threads, teacher_backend, on_epoch, init, device, amp, cache_dir, final_eval,
           eval_images) -> AdaptResult:
    cfg = config or AdaptConfig()
    t_start, cpu_start = time.perf_counter(), time.process_time()
    device = resolve_device(device)
    out, weights = Path(out), Path(weights)
    init = Path(init) if init is not None else weights
    if not init.is_file():
        raise FileNotFoundError(f"init checkpoint not found: {init}")
    state = read_checkpoint(weights)
    init_state = state if init == weights else read_checkpoint(init)
    ckpt_width, ckpt_variant = osnet_config_of(init_state)
    width = ckpt_width if width is None else float(width)
    variant = ckpt_variant if variant is None else variant
    hw = input_size(res)
    data = _checked_data(data, cfg, progress)
    if cfg.budget_min is not None and cfg.view_sets == 0:
        raise ValueError("a time budget needs a fixed number of view sets (view_sets >= 1): the epochs are planned")
    finished = _finished_run(out, cfg, width, variant, resume, overwrite)
    if finished is not None:
        return finished

    student = build_osnet(width, variant)
    init_info = load_torchreid_weights(student, init)
    teacher_obj, cfg = _prepare_teacher(teacher, weights, cfg, student, teacher_format, teacher_backend, threads,
                                        device)
    head, head_init = _prepare_head(init_state, state, student, data, cfg, teacher_obj, progress)
    run = AdaptationRun(out=out, weights=init, weights_sha256=init_info["sha256"], data=data, cfg=cfg,
                        student=student, head=head, head_init=head_init, teacher=teacher_obj, width=width,
                        variant=variant, res=res, hw=hw, t_start=t_start, cpu_start=cpu_start, progress=progress,
                        device=device, amp=amp, cache_dir=Path(cache_dir) if cache_dir else None,
                        eval_images=eval_images if final_eval is not None else 0)
    if resume:
        run.restore()
    elif cfg.adabn:
        run.recalibrate()
    record = run.train(on_epoch)
    model = run.finish_model()
    if final_eval is not None:
        record = run.save_evaluation(final_eval(model))
    return AdaptResult(model, record, out)


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
            if record.get("complete") and (cfg.budget_min is not None or record.get("epochs") == cfg.epochs):
                model = build_osnet(width, variant)
                load_torchreid_weights(model, out)
                return AdaptResult(model.eval(), record, out)
        raise FileNotFoundError(f"nothing to resume: {rpath} not found (start without --resume)")
    return None


def _prepare_teacher(teacher: Union[None, PathLike, Teacher], weights: Path, cfg: AdaptConfig, student: nn.Module,
                     teacher_format: Optional[str], teacher_backend: str, threads: Optional[int],
                     device: str) -> tuple[Optional[Teacher], AdaptConfig]:
    """The teacher (none for label-only recipes) and the recipe with 'auto' losses resolved for it;
    losses the teacher cannot serve are refused."""
    if not cfg.uses_teacher:
        return None, cfg
    if teacher is None or isinstance(teacher, (str, os.PathLike)):
        teacher_obj = load_teacher(teacher if teacher is not None else weights, res=cfg.teacher_res,
                                   input_format=teacher_format, backend=teacher_backend, threads=threads,
                                   device=device)
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
    if "logit" in cfg.losses and not getattr(teacher_obj, "num_classes", 0):
        raise ValueError("the logit loss distils the teacher's classifier: it needs a checkpoint teacher that "
                         "keeps its classifier (torchreid's classifier.weight)")
    return teacher_obj, cfg


def _prepare_head(init_state: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], student: nn.Module,
                  data: AdaptationData, cfg: AdaptConfig, teacher: Optional[Teacher],
                  progress: bool) -> tuple[Optional[nn.Linear], Optional[str]]:
    """The classifier head when the recipe has ``ce`` or ``logit``, and how it was initialised: from
    the init checkpoint's classifier when it fits, else from ``weights``', else a fresh layer."""
    if not cfg.uses_head:
        return None, None
    if "ce" in cfg.losses:
        num_classes = data.num_ids
        if "logit" in cfg.losses and teacher.num_classes != num_classes:
            raise ValueError(f"the logit loss needs the teacher's classes to be the data's identities: the teacher "
                             f"has {teacher.num_classes}, the data {num_classes}")
    else:  # logit distillation alone: the teacher's own classes, unlabelled data
        num_classes = teacher.num_classes
    head, head_init = _classifier_head(init_state, student.feature_dim, num_classes, cfg)
    if head_init.startswith("new") and init_state is not state:
        head, head_init = _classifier_head(state, student.feature_dim, num_classes, cfg)
    if progress:
        print(f"classifier head: {head_init}", flush=True)
    return head, head_init


def _classifier_head(state: Mapping[str, torch.Tensor], dim: int, num_ids: int,
                     cfg: AdaptConfig) -> tuple[nn.Linear, str]:
    """The classifier head and how it was initialised.

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
