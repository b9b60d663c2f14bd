"""The Runtime protocol every backend implements, and the errors they share."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from osnet_edge.bundle import Bundle


class RuntimeUnavailable(ImportError):
    """A runtime's package (or hardware) is missing here; the message names the pip extra."""


class RuntimeFailure(RuntimeError):
    """A runtime could not load or run a bundle's model (wrapped with a readable message)."""


@runtime_checkable
class Runtime(Protocol):
    """One inference backend. ``infer`` takes the model input batch and returns raw embeddings.

    Input is (N,3,H,W) float32, or (N,H,W,3) uint8 BGR for bundles whose preprocessing is
    fused into the graph. Output is (N, dim) float32, not yet L2-normalised.
    """

    name: str

    def infer(self, batch: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


def missing_package(package: str, extra: str, exc: BaseException | None = None) -> RuntimeUnavailable:
    detail = f" ({exc})" if exc else ""
    return RuntimeUnavailable(f"{package} is not installed{detail}; install it with: "
                              f"pip install 'osnet_edge[{extra}]'")


def resolve_threads(threads: int | None) -> int | None:
    """Validate a thread count; None lets the runtime decide (usually all physical cores)."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    return min(threads, os.cpu_count() or threads)
