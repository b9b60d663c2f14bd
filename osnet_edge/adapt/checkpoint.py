"""Adapted checkpoints: atomic saves, the resume state beside them, the JSON-able adaptation record."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Union

import torch
from torch import nn

PathLike = Union[str, "os.PathLike[str]"]
RECORD_FORMAT = 1


def resume_path(out: PathLike) -> Path:
    """Where the optimizer state for ``--resume`` lives, next to the checkpoint."""
    out = Path(out)
    return out.with_name(out.name + ".resume")


def atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def plain_state(model: nn.Module) -> dict:
    """CPU copies of the weights: a checkpoint trained on a GPU loads anywhere."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


# CPU features that change what a step costs (vector width, bf16 / int8 matrix units)
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16",
               "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


def machine_info() -> dict:
    """The CPU (model, cores, speed-relevant flags): timings in a record mean little without it."""
    import platform

    from ..machine import _cpuinfo

    model, flags = _cpuinfo()
    return {"cpu": model, "cores": os.cpu_count(), "flags": [f for f in SPEED_FLAGS if f in flags],
            "machine": platform.machine()}


def json_check(record: Mapping) -> dict:
    return json.loads(json.dumps(record))  # raises TypeError on anything not JSON-able


@dataclass
class AdaptResult:
    """What :func:`osnet_edge.adapt.adapt` returns: the adapted model (eval mode), its record, its checkpoint."""

    model: nn.Module
    record: dict
    path: Path
