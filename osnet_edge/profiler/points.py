"""What a grid measures: configurations (width x res x runtime x precision x variant) and which
checkpoint each one uses."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping


@dataclass(frozen=True)
class GridPoint:
    """One model configuration on one runtime at one precision."""

    width: float
    res: float
    runtime: str
    precision: str
    variant: str = "osnet"

    @property
    def name(self) -> str:
        """The bundle name scripts/export.py gives this configuration (one naming scheme)."""
        from ..bundle import default_bundle_name

        return default_bundle_name(self.variant, self.width, self.res, self.runtime, self.precision)

    @property
    def label(self) -> str:
        return f"x{self.width:g}@{self.res:g} {self.runtime}/{self.precision}"


def grid_points(widths: Iterable[float], resolutions: Iterable[float], runtimes: Iterable[str],
                precisions: Iterable[str], variants: Iterable[str] = ("osnet",)) -> list[GridPoint]:
    """Every variant x width x res x runtime x precision, in that nesting order."""
    widths, resolutions, runtimes, precisions = list(widths), list(resolutions), list(runtimes), list(precisions)
    for name, values in (("width", widths), ("res", resolutions), ("runtime", runtimes), ("precision", precisions)):
        if not values:
            raise ValueError(f"at least one {name} is needed")
    return [GridPoint(float(w), float(r), rt, p, v) for v in variants for w in widths for r in resolutions
            for rt in runtimes for p in precisions]


def file_tag(path: str | os.PathLike, length: int = 10) -> str:
    """Short content hash of a file (names cached bundles after the weights they hold)."""
    from ..bundle import sha256_file

    return sha256_file(path)[:length]


def checkpoint_width(path: str | os.PathLike) -> float:
    """Width multiplier of a torchreid OSNet checkpoint, read from its stem (64 x width channels)."""
    from ..models.weights import STEM_KEY, read_checkpoint, state_width

    width = state_width(read_checkpoint(path))
    if width is None:
        raise ValueError(f"{path}: no {STEM_KEY!r}; not a torchreid OSNet checkpoint")
    return width


class WeightsMap:
    """Which checkpoint a (width, res) uses: per width, overridden per (width, res).

    ``None`` means random weights (latency / counts / fidelity only, never accuracy).
    """

    def __init__(self, by_width: Mapping[float, str] | None = None,
                 by_width_res: Mapping[tuple[float, float], str] | None = None) -> None:
        self.by_width = {round(float(w), 6): str(p) for w, p in (by_width or {}).items()}
        self.by_width_res = {(round(float(w), 6), round(float(r), 6)): str(p)
                             for (w, r), p in (by_width_res or {}).items()}
        for p in [*self.by_width.values(), *self.by_width_res.values()]:
            if not Path(p).is_file():
                raise FileNotFoundError(f"checkpoint not found: {p}")

    def __call__(self, width: float, res: float) -> str | None:
        w, r = round(float(width), 6), round(float(res), 6)
        return self.by_width_res.get((w, r)) or self.by_width.get(w)

    def base(self, width: float) -> str | None:
        """The per-width checkpoint, ignoring per-resolution (adapted) overrides."""
        return self.by_width.get(round(float(width), 6))

    def is_override(self, width: float, res: float) -> bool:
        return (round(float(width), 6), round(float(res), 6)) in self.by_width_res
