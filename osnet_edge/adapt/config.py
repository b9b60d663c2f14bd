"""The adaptation recipe (torch-free, so that ``osnet-edge adapt --help`` works without torch)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Mapping, Optional, Union

from .views import Augmentation

__all__ = ["AdaptConfig", "parse_losses", "resolve_auto_losses", "KD_LOSSES", "LABEL_LOSSES", "AUTO",
           "LABELLED_DEFAULT", "LABELLED_FALLBACK", "format_losses"]

KD_LOSSES = ("cosine", "relational", "simkl", "fmap", "logit")
LABEL_LOSSES = ("ce", "triplet")
# "auto": the best distillation losses the teacher allows, resolved once it is loaded
# (resolve_auto_losses): cosine + fmap from a same-width OSNet checkpoint, cosine from any
# 512-d teacher, simkl + relational from a teacher with another embedding size.
AUTO = "auto"
# The labelled default: distillation + logit distillation from the checkpoint's own classifier. Cross-entropy
# on the labels is left out: over full 58-minute runs it cost rank-1 at 128x64 (1.0) and 192x96 (0.36); only
# the 256x128 fine-tune, which keeps the classifier's own resolution, did better with it (docs/adaptation.md,
# "Default recipe"). Where the classifier's rows are not the data's identities there is no
# logit term and LABELLED_FALLBACK (cross-entropy on a new head) keeps the labels in use: unmeasured, unchanged.
LABELLED_DEFAULT = {AUTO: 1.0, "logit": 1.0}
LABELLED_FALLBACK = {AUTO: 1.0, "ce": 1.0}


def format_losses(losses: Mapping[str, float]) -> str:
    """{name: weight} -> ``"cosine=1,fmap=1"``: the --losses spelling that :func:`parse_losses` reads back."""
    return ",".join(f"{k}={v:g}" for k, v in losses.items())


def parse_losses(spec: Union[str, Mapping[str, float]]) -> dict[str, float]:
    """``"cosine=1,relational=0.5"`` (or a mapping) -> {name: weight}; a bare name weighs 1.

    ``auto`` stands for the teacher-dependent distillation default (see :data:`AUTO`)."""
    if isinstance(spec, Mapping):
        items = list(spec.items())
    else:
        items = []
        for part in (p.strip() for p in str(spec).split(",")):
            if not part:
                continue
            name, _, weight = part.partition("=")
            try:
                items.append((name.strip(), float(weight) if weight else 1.0))
            except ValueError:
                raise ValueError(f"loss weight in {part!r} is not a number") from None
    out: dict[str, float] = {}
    for name, weight in items:
        if name not in KD_LOSSES + LABEL_LOSSES + (AUTO,):
            raise ValueError(f"unknown loss {name!r}; known: {', '.join(KD_LOSSES + LABEL_LOSSES + (AUTO,))}")
        if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
            raise ValueError(f"loss weight for {name} must be a finite number >= 0, got {weight!r}")
        if weight > 0:
            out[name] = float(weight)
    if not out:
        raise ValueError(f"no loss with a positive weight in {spec!r}")
    return out


@dataclass
class AdaptConfig:
    """Adaptation recipe. Defaults and what each ingredient measured: docs/adaptation.md.

    ``view_sets`` augmented view sets (flip + crop) are rendered once: the teacher's outputs on
    them (and on their mirrors, ``teacher_flip``) and the student's uint8 views are cached, and
    random erasing is drawn afresh on the student's input at every step (the teacher sees the
    whole view, so its target is clean). ``budget_min`` replaces ``epochs`` by a plan from the
    measured step time (:mod:`.schedule`)."""
    epochs: int = 16
    batch_size: int = 64
    lr: float = 0.0015
    weight_decay: float = 5e-4
    schedule: str = "cosine"            # "cosine" (after a linear warm-up) or "constant"
    warmup_epochs: float = 1.0
    losses: dict = field(default_factory=lambda: {AUTO: 1.0})
    temperature: float = 0.05           # simkl softmax temperature on cosine similarities
    label_smoothing: float = 0.1
    head: str = "auto"                  # ce head: "auto" = the checkpoint's classifier when it fits, "new"
    triplet_margin: float = 0.3
    instances_per_id: int = 4           # K of P x K sampling (triplet)
    bn: str = "train"                   # "train": batch statistics + recalibration; "frozen"
    adabn: bool = True                  # re-estimate BN statistics at the student resolution first
    # precise BN on clean views after training (bn="train"). Off: measured on Market-1501 at 128x64 (issue 27),
    # the running statistics training leaves beat it (epoch-21 snapshot 90.05 / 74.86; recalibrated in file
    # order 88.90 / 73.73, shuffled 89.37 / 74.15)
    recalibrate: bool = False
    bn_images: int = 4096               # images for AdaBN / recalibration (0 = all)
    freeze: tuple = ()                  # top-level modules kept fixed, e.g. ("conv1", "conv2")
    augmentation: Augmentation = field(default_factory=Augmentation)
    view_sets: int = 3                  # distinct augmented view sets (teacher outputs cached); 0 = one per epoch
    teacher_flip: bool = True           # the teacher also embeds each view's mirror: twice the views per pass
    kd_temperature: float = 4.0         # logit distillation temperature (Hinton et al.)
    budget_min: Optional[float] = None  # plan the steps to finish in this many minutes (None: cfg.epochs)
    teacher_res: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        self.losses = parse_losses(self.losses)
        self.freeze = tuple(self.freeze)
        for name in ("epochs", "batch_size", "instances_per_id"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2 (BatchNorm and relational losses need a batch)")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if self.head not in ("auto", "new"):
            raise ValueError(f"head must be 'auto' or 'new', got {self.head!r}")
        if self.bn not in ("train", "frozen"):
            raise ValueError(f"bn must be 'train' or 'frozen', got {self.bn!r}")
        if isinstance(self.bn_images, bool) or not isinstance(self.bn_images, int) or self.bn_images < 0:
            raise ValueError(f"bn_images must be an int >= 0, got {self.bn_images!r}")
        if self.view_sets < 0:
            raise ValueError(f"view_sets must be >= 0, got {self.view_sets}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not self.kd_temperature > 0:
            raise ValueError(f"kd_temperature must be > 0, got {self.kd_temperature}")
        if self.budget_min is not None and not (isinstance(self.budget_min, (int, float))
                                                and math.isfinite(self.budget_min) and self.budget_min > 0):
            raise ValueError(f"budget_min must be a number of minutes > 0, got {self.budget_min!r}")
        if "triplet" in self.losses and self.batch_size % self.instances_per_id:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of instances_per_id "
                             f"{self.instances_per_id} for triplet (P x K) batches")

    @property
    def uses_teacher(self) -> bool:
        return any(k in self.losses for k in KD_LOSSES + (AUTO,))

    @property
    def uses_labels(self) -> bool:
        return any(k in self.losses for k in LABEL_LOSSES)

    @property
    def uses_head(self) -> bool:
        """A classifier head on the student: for cross-entropy and for logit distillation."""
        return "ce" in self.losses or "logit" in self.losses

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["augmentation"] = self.augmentation.to_dict()
        d["freeze"] = list(self.freeze)
        d["losses"] = dict(self.losses)
        return d


def resolve_auto_losses(losses: Mapping[str, float], same_dim: bool, maps: bool) -> dict[str, float]:
    """Replace ``auto`` (weight w) by concrete distillation losses for a given teacher.

    ``same_dim``: the teacher's embedding size equals the student's; ``maps``: it can give
    conv5 feature maps of the student's width (an OSNet checkpoint). Measured on x0.25 @ res 0.5
    (README): cosine + fmap beat cosine alone, cosine + simkl and cosine + relational.
    """
    out = {k: v for k, v in losses.items() if k != AUTO}
    if AUTO in losses:
        w = losses[AUTO]
        chosen = (["cosine", "fmap"] if maps else ["cosine"]) if same_dim else ["simkl", "relational"]
        for name in chosen:
            out.setdefault(name, w)
    return out
