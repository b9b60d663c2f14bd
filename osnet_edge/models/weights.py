"""Load torchreid checkpoints into :class:`OSNet`, key for key."""
from __future__ import annotations

import hashlib
import os
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..sizes import BASE_CHANNELS

CLASSIFIER_PREFIX = "classifier."
STEM_KEY = "conv1.conv.weight"   # the stem: 64 x width output channels in every variant
SHOWN_KEYS = 5                   # keys listed per kind in a mismatch error (the rest are counted)


class CheckpointError(ValueError):
    """A file is not a usable torchreid OSNet checkpoint for the given model."""


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def read_checkpoint(path: str | os.PathLike, allow_unsafe_pickle: bool = False) -> "OrderedDict[str, torch.Tensor]":
    """Read a torchreid checkpoint and return its state_dict with 'module.' stripped.

    ``torch.load(weights_only=True)`` is used: it refuses pickles that would run code.
    ``allow_unsafe_pickle=True`` falls back to a full unpickle, which can execute
    arbitrary code from the file: only for old checkpoints from a source you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty, not a checkpoint")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types; report them as one clear error
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            if not allow_unsafe_pickle:
                raise CheckpointError(
                    f"{path} holds Python objects that torch.load(weights_only=True) refuses "
                    f"({msg}). Unpickling can execute arbitrary code: if you trust the file, pass "
                    "allow_unsafe_pickle=True (CLI: --allow-unsafe-pickle)") from None
            try:
                obj = torch.load(path, map_location="cpu", weights_only=False)
            except Exception as exc2:  # e.g. a plain pickle that is no torch file at all
                raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: "
                                      f"{str(exc2).splitlines()[0] if str(exc2) else type(exc2).__name__}") from None
        else:
            hint = " (file truncated?)" if zipfile.is_zipfile(path) is False and path.suffix in {".pth", ".pt", ".tar"} else ""
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint{hint}: {msg}") from None
    return _state_dict_of(obj, path)


def read_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Non-tensor entries saved beside the state_dict (e.g. osnet_edge's 'adaptation' record)."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, Mapping) and "state_dict" in obj:
        return {k: v for k, v in obj.items() if k != "state_dict" and not isinstance(v, torch.Tensor)}
    return {}


def _state_dict_of(obj: Any, path: Path) -> "OrderedDict[str, torch.Tensor]":
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} is not a state_dict (a mapping of parameter names to tensors), "
                              f"got {type(obj).__name__}")
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for k, v in obj.items():
        out[k[len("module."):] if k.startswith("module.") else k] = v
    return out


def state_width(state: Mapping[str, Any]) -> float | None:
    """Width multiplier a torchreid OSNet state_dict was built with (conv1 out channels / 64)."""
    stem = state.get(STEM_KEY)
    return None if stem is None else stem.shape[0] / BASE_CHANNELS[0]


def _listed(items: list[str]) -> str:
    shown = items[:SHOWN_KEYS] + ([f"... {len(items) - SHOWN_KEYS} more"] if len(items) > SHOWN_KEYS else [])
    return ", ".join(shown)


def _mismatch_error(path: str | os.PathLike, model: nn.Module, state: Mapping[str, Any], missing: list[str],
                    unexpected: list[str], mismatched: list[str]) -> CheckpointError:
    """What the checkpoint is first (its width, when that is the problem), then the keys, truncated."""
    variant, width = getattr(model, "variant", "?"), getattr(model, "width", None)
    found = state_width(state)
    lines = []
    if found is not None and width is not None and abs(found - float(width)) > 1e-9:
        lines.append(f"{path} is a width {found:g} checkpoint ({STEM_KEY} has {state[STEM_KEY].shape[0]} output "
                     f"channels = 64 x {found:g}) but the model has width {float(width):g}: use --width {found:g} "
                     f"(build_osnet({found:g}))")
    lines.append(f"{path} does not fit OSNet variant={variant!r} width={width if width is not None else '?'} "
                 "(wrong architecture or width?)")
    for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mismatched)):
        if items:
            lines.append(f"  {len(items)} {title} keys: {_listed(items)}")
    return CheckpointError("\n".join(lines))


def load_torchreid_weights(model: nn.Module, path: str | os.PathLike,
                           allow_unsafe_pickle: bool = False) -> dict[str, Any]:
    """Load a torchreid OSNet checkpoint strictly into ``model``.

    Accepts a raw state_dict or ``{'state_dict': ...}``; strips ``module.``; drops the
    classifier (its size is the training set's number of identities). Any other missing,
    unexpected or mis-shaped key raises :class:`CheckpointError` listing them, because a
    half-loaded re-ID model silently produces useless embeddings.
    Returns facts for the bundle manifest: source path, sha256, dropped classifier shape.
    """
    state = read_checkpoint(path, allow_unsafe_pickle=allow_unsafe_pickle)
    dropped = {k: tuple(v.shape) for k, v in state.items() if k.startswith(CLASSIFIER_PREFIX)}
    own = model.state_dict()
    state = OrderedDict((k, v) for k, v in state.items()
                        if not k.startswith(CLASSIFIER_PREFIX) or k in own)
    missing = [k for k in own if k not in state and not k.startswith(CLASSIFIER_PREFIX)]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        raise _mismatch_error(path, model, state, missing, unexpected, mismatched)
    strict = not any(k.startswith(CLASSIFIER_PREFIX) for k in own)
    model.load_state_dict(state, strict=strict)
    info = {"source": str(path), "sha256": file_sha256(path),
            "dropped_classifier": {k: list(v) for k, v in dropped.items()}}
    adaptation = read_checkpoint_meta(path).get("adaptation") if not allow_unsafe_pickle else None
    if isinstance(adaptation, Mapping):
        info["adaptation"] = dict(adaptation)
    return info
