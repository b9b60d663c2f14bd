"""Adaptation: make a reduced-resolution (or narrower) OSNet accurate again, on a CPU, in minutes.

Public checkpoints are trained at 256x128; run at 128x64 they lose most of their accuracy.
:func:`adapt` fine-tunes a student (target width/resolution, initialised from the given
checkpoint) on a folder of person crops:

* without labels, by **knowledge distillation** from a teacher (by default the same checkpoint
  at 256x128; or a wider checkpoint, an osnet_edge bundle, a foreign ONNX / OpenVINO model):
  each augmented *view* of a crop is rendered from the original at the teacher's and at the
  student's input size (:mod:`osnet_edge.adapt.views`), so both see exactly the same content.
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

Layout: :mod:`.config` (the recipe), :mod:`.data` (crops and labels), :mod:`.views` (augmented
views), :mod:`.teachers`, :mod:`.losses`, :mod:`.batches`, :mod:`.batchnorm` (AdaBN),
:mod:`.training` (the run), :mod:`.checkpoint`, :mod:`.evaluation`. The recipe and the data
import without torch (``osnet-edge adapt --help`` on a machine without it); everything that
trains loads torch on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

from .config import AUTO, KD_LOSSES, LABEL_LOSSES, AdaptConfig, parse_losses, resolve_auto_losses
from .data import AdaptationData

# name -> submodule: these need torch, imported when first asked for
_TORCH_NAMES = {"adapt": "training", "AdaptResult": "checkpoint", "resume_path": "checkpoint",
                "recalibrate_bn": "batchnorm", "embed": "evaluation", "evaluate": "evaluation"}

__all__ = ["AdaptConfig", "AdaptationData", "AdaptResult", "adapt", "recalibrate_bn", "embed", "evaluate",
           "parse_losses", "resolve_auto_losses", "KD_LOSSES", "LABEL_LOSSES", "AUTO", "resume_path"]


def __getattr__(name: str) -> Any:
    if name in _TORCH_NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_TORCH_NAMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
