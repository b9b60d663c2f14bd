"""LiteRT (TensorFlow Lite) backend: a bundle's model.tflite on the XNNPACK CPU delegate.

LiteRT + XNNPACK (NEON and int8 dot-product kernels on ARM, AVX2/AVX-512 on x86) is the CPU
runtime most ARM cameras run; the camera installs only ``ai-edge-litert``. The model file has
a static batch of 1 in NHWC layout; this runtime resizes its input to each call's batch (only
when the batch size changes: XNNPACK re-plans its buffers then). Full-integer INT8 models take
and return int8: inputs are quantized and outputs dequantized here, with the file's own scale
and zero point, so callers always pass and get float32 (or uint8 crops for fused bundles).
"""
from __future__ import annotations

import importlib.util
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

from .base import RuntimeFailure, missing_package, resolve_threads

if TYPE_CHECKING:
    from osnet_edge.bundle import Bundle


def _import():
    try:
        from ai_edge_litert import interpreter
    except ImportError as exc:
        raise missing_package("ai-edge-litert", "litert", exc) from None
    return interpreter


def open_interpreter(model_path: str, threads: int | None = None):
    """An Interpreter with the default XNNPACK delegate and ``threads`` (None: one per physical core).

    TFLite's C++ logger prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." to fd 2 when the
    delegate is applied (the first allocate_tensors) and no setting turns it off (TF_CPP_MIN_LOG_LEVEL does
    not), so loading runs with fd 2 captured: applications get no log line from opening a bundle, and a failed
    load reports what LiteRT wrote."""
    from osnet_edge.quiet import native_stderr_silenced

    interpreter = _import()
    threads = resolve_threads(threads)
    if threads is None:
        from osnet_edge.machine import physical_cores

        threads = physical_cores()
    native: list[str] = []
    try:
        with native_stderr_silenced(keep=native):
            it = interpreter.Interpreter(model_path=str(model_path), num_threads=threads)
            it.allocate_tensors()
    except Exception as exc:
        said = [ln.strip() for ln in "".join(native).splitlines() if ln.strip() and "XNNPACK delegate" not in ln]
        detail = str(exc).splitlines()[0] if str(exc) else repr(exc)
        raise RuntimeFailure(f"LiteRT could not load {model_path}: {detail}" + (f" ({said[-1]})" if said else "")
                             + " (corrupt or truncated model file? re-export the bundle on the host: "
                             "osnet-edge export --target litert)") from None
    return it, threads


def xnnpack_coverage(it) -> dict[str, Any]:
    """Which of the model's ops XNNPACK took: nodes delegated / total, partitions, and the op
    types left on LiteRT's reference kernels. Every undelegated op splits the graph and costs
    a hand-off, so a fast bundle has one partition and nothing undelegated.

    Read from the interpreter's node list: the original nodes come first, then one DELEGATE
    node per partition whose inputs/outputs bound it; a node is delegated when it lies between
    a partition's inputs and outputs.
    """
    ops = it._get_ops_details()  # the public API has no execution plan; this lists every node
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    originals = [op for op in ops if op["op_name"] != "DELEGATE"]
    producer = {t: op["index"] for op in originals for t in op["outputs"] if t >= 0}
    by_index = {op["index"]: op for op in originals}
    delegated: set[int] = set()
    for d in delegates:
        boundary = {t for t in d["inputs"] if t >= 0}
        stack = [t for t in d["outputs"] if t >= 0]
        seen: set[int] = set()
        while stack:
            t = stack.pop()
            if t in seen or t in boundary or t not in producer:
                continue
            seen.add(t)
            node = producer[t]
            if node not in delegated:
                delegated.add(node)
                stack.extend(i for i in by_index[node]["inputs"] if i >= 0)
    left = Counter(op["op_name"] for op in originals if op["index"] not in delegated)
    return {"delegate": "XNNPACK", "nodes": len(originals), "delegated": len(delegated),
            "partitions": len(delegates), "undelegated_ops": dict(sorted(left.items()))}


def _quantization(detail: dict) -> tuple[float, int, Any] | None:
    """(scale, zero point, dtype) of a quantized int8/int16 model input or output, else None
    (float tensors, and the uint8 crops of fused bundles, which the graph casts itself)."""
    scale, zero = detail.get("quantization", (0.0, 0))
    dtype = np.dtype(detail["dtype"])
    return (float(scale), int(zero), dtype) if dtype in (np.int8, np.int16) and scale else None


class LiteRtRuntime:
    """Runs a bundle's model.tflite (fp32, fp16 weights or full-integer INT8) with LiteRT + XNNPACK."""

    name = "litert"

    @staticmethod
    def is_available() -> bool:
        return importlib.util.find_spec("ai_edge_litert") is not None

    @staticmethod
    def version() -> str:
        from importlib.metadata import version

        return version("ai-edge-litert")

    def __init__(self, bundle: "Bundle", device: str | None = "cpu", threads: int | None = None) -> None:
        device = (device or "cpu").lower()
        if device != "cpu":
            raise ValueError(f"litert runs on the CPU (XNNPACK); device must be 'cpu', got {device!r}")
        self.device = device
        self._open(str(bundle.file("model.tflite")), threads)

    @classmethod
    def from_file(cls, model_path: str, threads: int | None = None) -> "LiteRtRuntime":
        """The runtime on a bare .tflite (export and quantization check files before they are bundled)."""
        self = cls.__new__(cls)
        self.device = "cpu"
        self._open(str(model_path), threads)
        return self

    def _open(self, model_path: str, threads: int | None) -> None:
        self.interpreter, self.threads = open_interpreter(model_path, threads)
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        self._in_q, self._out_q = _quantization(self._input), _quantization(self._output)
        self._batch = int(self._input["shape"][0])

    def coverage(self) -> dict[str, Any]:
        return xnnpack_coverage(self.interpreter)

    def _resize(self, n: int) -> None:
        shape = [n, *[int(d) for d in self._input["shape"][1:]]]
        self.interpreter.resize_tensor_input(self._input["index"], shape, strict=False)
        self.interpreter.allocate_tensors()
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        self._batch = n

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if batch.ndim != 4:
            raise ValueError(f"litert expects an (N,H,W,3) batch, got shape {batch.shape}")
        n = len(batch)
        if n != self._batch:
            self._resize(n)
        if self._in_q is not None:  # full-integer model: quantize the normalised input here
            scale, zero, dtype = self._in_q
            info = np.iinfo(dtype)
            batch = np.clip(np.rint(batch / scale) + zero, info.min, info.max).astype(dtype)
        self.interpreter.set_tensor(self._input["index"], np.ascontiguousarray(batch))
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self._output["index"])
        if self._out_q is not None:
            scale, zero, _ = self._out_q
            return (out.astype(np.float32) - zero) * np.float32(scale)
        return out.copy()

    def close(self) -> None:
        self.interpreter = None
