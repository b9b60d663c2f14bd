"""The learning-rate schedule and the time-budget planner (torch-free).

With a budget (``--budget-min``) the number of steps is not given but planned: after a few
steps the planner knows what a step costs on this machine now, and sets the total so that the
steps plus what has to follow them (BN re-estimation, the teacher's remaining view sets, the
final evaluation, saving) end at the deadline. It re-plans as it goes, because on a shared
machine a step's cost changes; the cosine decay follows the current plan, so the learning rate
reaches ~0 at the last planned step.
"""
from __future__ import annotations

import math
from collections import deque

# A no-grad forward costs about this share of a training step (forward + backward + update):
# measured 0.29 (2 threads) and 0.35 (1 thread) for x0.25 at 128x64 on the 2-core Xeon; rounded
# up so that the plan errs on the early side.
FORWARD_SHARE = 0.45
SAVE_SECONDS = 5.0


def lr_at(step: int, total: int, warmup: int, base_lr: float, schedule: str = "cosine") -> float:
    """Linear warm-up over ``warmup`` steps, then constant or cosine decay to 0 at ``total``."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    if schedule == "constant":
        return base_lr
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def plan_total_steps(done: int, elapsed_s: float, budget_s: float, step_s: float, reserve_s: float) -> int:
    """Total steps that fit: ``done`` plus as many more as the time left after ``reserve_s`` allows."""
    if step_s <= 0 or not math.isfinite(step_s):
        raise ValueError(f"step time must be a positive number of seconds, got {step_s}")
    left = budget_s - elapsed_s - reserve_s
    return done + max(0, int(left // step_s))


def finish_seconds(step_s: float, batch_size: int, bn_images: int, eval_images: int) -> float:
    """What follows the last step, estimated from the step time: BN statistics over ``bn_images``
    and the evaluation of ``eval_images`` crops (no-grad forwards) and the checkpoint save."""
    per_image = FORWARD_SHARE * step_s / batch_size
    return per_image * (bn_images + eval_images) + SAVE_SECONDS


def format_eta(seconds: float) -> str:
    """``1:02:03`` / ``4:05``: what the progress bar and the epoch lines show."""
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class StepTimer:
    """Mean duration of the last ``window`` steps: the planner's view of the machine now."""

    def __init__(self, window: int = 40) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self._times: deque = deque(maxlen=window)

    def add(self, seconds: float) -> None:
        self._times.append(float(seconds))

    def __len__(self) -> int:
        return len(self._times)

    @property
    def seconds(self) -> float:
        if not self._times:
            raise ValueError("no step timed yet")
        return sum(self._times) / len(self._times)
