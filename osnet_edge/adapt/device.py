"""Where the student trains: ``auto`` (CUDA when torch sees a GPU), ``cpu`` or ``cuda[:N]``."""
from __future__ import annotations

import re

import torch

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(spec: str = "auto") -> str:
    """``spec`` -> a torch device string ("cpu", "cuda:0", ...); a GPU that is not there is an error."""
    if not isinstance(spec, str):
        raise TypeError(f"device must be a string ({DEVICE_CHOICES}), got {type(spec).__name__}")
    spec = spec.strip().lower()
    if spec == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return "cpu"
    match = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if match is None:
        raise ValueError(f"device must be {DEVICE_CHOICES}, got {spec!r}")
    if not torch.cuda.is_available():
        raise ValueError(f"device {spec!r}: torch sees no CUDA GPU here (torch {torch.__version__}); "
                         "use --device cpu or auto")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise ValueError(f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return f"cuda:{index}"


def amp_dtype(device: str, amp: bool = True):
    """Mixed precision on CUDA (bfloat16 where supported, else float16); None = float32 (always on CPU,
    so CPU results stay what they were)."""
    if not amp or not device.startswith("cuda"):
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def describe_device(device: str) -> str:
    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return "cpu"
