"""Runtime registry: ``available()`` lists what runs here, ``create()`` opens a bundle.

Each runtime lives in its own module and imports its package lazily, so listing and
importing this registry never needs onnxruntime, openvino, tensorrt, ai-edge-litert or torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .base import Runtime, RuntimeFailure, RuntimeUnavailable

if TYPE_CHECKING:
    from osnet_edge.bundle import Bundle

# name -> (module, class); order = preference when the caller does not choose.
_REGISTRY = {
    "onnxruntime": ("osnet_edge.runtimes.onnxruntime", "OnnxRuntime"),
    "openvino": ("osnet_edge.runtimes.openvino", "OpenVinoRuntime"),
    "tensorrt": ("osnet_edge.runtimes.tensorrt", "TensorRtRuntime"),
    "litert": ("osnet_edge.runtimes.litert", "LiteRtRuntime"),
    "rknn": ("osnet_edge.runtimes.rknn", "RknnRuntime"),
    "rknn-sim": ("osnet_edge.runtimes.rknn_sim", "RknnSimulatorRuntime"),
    "torch": ("osnet_edge.runtimes.torch", "TorchRuntime"),
}
DEVICE_RUNTIMES = ("onnxruntime", "openvino", "tensorrt", "litert", "rknn")


def names() -> list[str]:
    return list(_REGISTRY)


def get(name: str) -> type:
    """The runtime class for ``name`` (its module is imported; its package is not)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown runtime {name!r}; known: {', '.join(_REGISTRY)}")
    module, cls = _REGISTRY[name]
    return getattr(importlib.import_module(module), cls)


def available() -> list[str]:
    """Runtimes whose packages (and, for TensorRT, a CUDA GPU) are present on this machine."""
    out = []
    for name in _REGISTRY:
        try:
            if get(name).is_available():
                out.append(name)
        except Exception:  # a broken install must not break the listing
            continue
    return out


def create(bundle: "Bundle", runtime: str | None = None, device: str | None = None,
           threads: int | None = None, **options) -> Runtime:
    """Open ``bundle`` with ``runtime`` (default: the runtime it was exported for).

    ``device=None`` lets the runtime choose its natural device: CPU for ONNX Runtime and
    OpenVINO, the first CUDA GPU for TensorRT.
    """
    name = runtime or bundle.runtime
    bundle.check_runtime(name)
    return get(name)(bundle, device=device, threads=threads, **options)


__all__ = ["Runtime", "RuntimeUnavailable", "RuntimeFailure", "available", "get", "create", "names",
           "DEVICE_RUNTIMES"]
