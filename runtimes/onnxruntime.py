"""ONNX Runtime backend: CPU by default; CUDA / TensorRT execution providers when asked."""
from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

import numpy as np

from .base import RuntimeFailure, missing_package, resolve_threads

if TYPE_CHECKING:
    from osnet_edge.bundle import Bundle

_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def _import():
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise missing_package("onnxruntime", "onnxruntime", exc) from None
    return ort


def session_options(threads: int | None):
    """Latency-oriented session options: full graph optimisation, fixed intra-op threads."""
    ort = _import()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    threads = resolve_threads(threads)
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return opts


def open_session(model_path: str, device: str = "cpu", threads: int | None = None):
    """An InferenceSession for ``model_path`` on ``device`` (cpu | cuda | tensorrt)."""
    ort = _import()
    if device not in _PROVIDERS:
        raise ValueError(f"onnxruntime device must be one of {list(_PROVIDERS)}, got {device!r}")
    wanted = _PROVIDERS[device]
    present = ort.get_available_providers()
    if wanted[0] not in present:
        raise RuntimeFailure(f"onnxruntime here has no {wanted[0]} (available: {present}); "
                             "install onnxruntime-gpu for CUDA/TensorRT providers or use device='cpu'")
    options = session_options(threads)  # bad arguments raise here, not as a "corrupt model" below
    try:
        return ort.InferenceSession(str(model_path), sess_options=options,
                                    providers=[p for p in wanted if p in present])
    except Exception as exc:
        raise RuntimeFailure(f"onnxruntime could not load {model_path}: {str(exc).splitlines()[0]} "
                             "(corrupt or truncated model file? re-export the bundle)") from None


def intra_op_threads(session) -> int:
    """Intra-op threads the session runs with, read back from it; 0 there means ONNX Runtime's
    default, one thread per physical core."""
    threads = session.get_session_options().intra_op_num_threads
    if threads > 0:
        return int(threads)
    from osnet_edge.machine import physical_cores

    return physical_cores()


class OnnxRuntime:
    """Runs a bundle's model.onnx (fp32, fp16 or QDQ INT8) with ONNX Runtime."""

    name = "onnxruntime"

    @staticmethod
    def is_available() -> bool:
        return importlib.util.find_spec("onnxruntime") is not None

    @staticmethod
    def version() -> str:
        return _import().__version__

    def __init__(self, bundle: "Bundle", device: str | None = "cpu", threads: int | None = None) -> None:
        device = device or "cpu"
        self.device = device
        self.session = open_session(str(bundle.file("model.onnx")), device, threads)
        self._input = self.session.get_inputs()[0].name
        self._output = self.session.get_outputs()[0].name
        self.threads = intra_op_threads(self.session)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self._output], {self._input: batch})[0]

    def close(self) -> None:
        self.session = None
