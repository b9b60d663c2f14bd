"""OSNet models (torch, host side) and a small registry of named configurations."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..sizes import BASE_INPUT_SIZE, input_size  # torch-free: the CLIs validate --res before importing torch
from .osnet import FEATURE_DIM, VARIANTS, OSNet, scaled_channels
from .weights import CheckpointError, load_torchreid_weights, read_checkpoint


def build_osnet(width: float = 1.0, variant: str = "osnet", num_classes: int = 0) -> OSNet:
    """OSNet with a width multiplier; eval-mode forward returns the 512-d feature."""
    return OSNet(width=width, variant=variant, num_classes=num_classes)


def random_model(width: float, variant: str, seed: int) -> OSNet:
    """A randomly initialised OSNet from a fixed seed (the caller's RNG state is left untouched): the
    quick start's bundles and their torch reference rebuild the same network from the manifest's seed."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_osnet(width, variant)


@dataclass(frozen=True)
class ModelConfig:
    name: str
    width: float
    variant: str


def _name(width: float, variant: str) -> str:
    prefix = {"osnet": "osnet", "ibn": "osnet_ibn", "ain": "osnet_ain"}[variant]
    return f"{prefix}_x{str(width).replace('.', '_')}"


REGISTRY: dict[str, ModelConfig] = {
    _name(w, v): ModelConfig(_name(w, v), w, v)
    for v, widths in (("osnet", (1.0, 0.75, 0.5, 0.25)), ("ibn", (1.0,)), ("ain", (1.0, 0.75, 0.5, 0.25)))
    for w in widths
}


def list_models() -> list[str]:
    """Names of torchreid's published configurations, e.g. ``osnet_x0_25``."""
    return sorted(REGISTRY)


def create_model(name: str, num_classes: int = 0) -> nn.Module:
    """Build a named configuration (timm style): ``create_model('osnet_ain_x1_0')``."""
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(list_models())}")
    cfg = REGISTRY[name]
    return build_osnet(cfg.width, cfg.variant, num_classes)


__all__ = ["OSNet", "build_osnet", "random_model", "create_model", "list_models", "load_torchreid_weights",
           "read_checkpoint", "CheckpointError", "input_size", "scaled_channels", "VARIANTS",
           "FEATURE_DIM", "BASE_INPUT_SIZE", "REGISTRY"]
