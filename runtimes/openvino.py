"""OpenVINO backend: compiles the bundle's IR for CPU (or GPU/NPU names passed through).

Shapes: bundles carry a dynamic batch axis, but OpenVINO's CPU kernels for a static shape are
faster (measured, x0.25 fp32 @ 256x128, 1 thread: 3.33 -> 2.66 ms at batch 1, 25.5 -> 21.4 ms
at batch 8). So the runtime compiles a static batch-1 model at load and a static model for each
of the first STATIC_SHAPES other batch sizes it is called with (one compile each, ~0.1 s for
x0.25); any further size runs on the dynamic model, so a stream of varying sizes never recompiles.

Precision is the bundle's, never the plugin's choice: on CPUs with bf16 support OpenVINO
runs fp32 models in bf16 unless INFERENCE_PRECISION_HINT says f32, so fp32/fp16/int8
bundles pin f32 (INT8 layers stay INT8) and only bf16 bundles ask for bf16.
"""
from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

import numpy as np

from .base import RuntimeFailure, RuntimeUnavailable, missing_package, resolve_threads

if TYPE_CHECKING:
    from osnet_edge.bundle import Bundle


def _import():
    try:
        import openvino as ov
    except ImportError as exc:
        raise missing_package("openvino", "openvino", exc) from None
    return ov


def cpu_supports_bf16() -> bool:
    ov = _import()
    try:
        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:
        return False


def compile_config(precision: str, device: str, threads: int | None, hint: str,
                   cache_dir: str | None) -> dict:
    """The plugin properties osnet_edge sets, kept in one place (and in tests)."""
    config: dict = {"PERFORMANCE_HINT": hint}
    if device.upper().startswith("CPU"):
        config["INFERENCE_PRECISION_HINT"] = "bf16" if precision == "bf16" else "f32"
        threads = resolve_threads(threads)
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
    elif precision == "fp32":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    if cache_dir:
        config["CACHE_DIR"] = str(cache_dir)
    return config


def _reason(exc: BaseException) -> str:
    """OpenVINO's messages start with C++ source locations; keep the lines that say what went wrong."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    said = [line for line in lines if not line.startswith(("Exception from ", "Check '"))]
    return " ".join(said or lines[-1:]) or type(exc).__name__


STATIC_SHAPES = 4   # static-batch models besides batch 1 (each costs one compile, ~0.1 s for x0.25)


class OpenVinoRuntime:
    """Runs a bundle's model.xml/.bin (fp32, fp16-compressed, bf16 or NNCF INT8)."""

    name = "openvino"

    @staticmethod
    def is_available() -> bool:
        return importlib.util.find_spec("openvino") is not None

    @staticmethod
    def version() -> str:
        return _import().get_version()

    def __init__(self, bundle: "Bundle", device: str | None = "cpu", threads: int | None = None,
                 hint: str = "LATENCY", cache_dir: str | None = None, static_batch: bool = True) -> None:
        ov = _import()
        if hint not in ("LATENCY", "THROUGHPUT"):
            raise ValueError(f"hint must be 'LATENCY' or 'THROUGHPUT', got {hint!r}")
        self.device = (device or "CPU").upper()
        precision = bundle.precision
        if precision == "bf16" and self.device.startswith("CPU") and not cpu_supports_bf16():
            raise RuntimeUnavailable("this bundle asks for bf16 but this CPU has no bf16 support "
                                     "(AVX512_BF16/AMX); export with --precision fp32")
        core = ov.Core()
        config = compile_config(precision, self.device, threads, hint, cache_dir)
        xml, weights = str(bundle.file("model.xml")), str(bundle.file("model.bin"))
        try:
            model = core.read_model(xml, weights)
        except Exception as exc:
            raise RuntimeFailure(f"openvino could not read {bundle.path}'s model.xml/model.bin: "
                                 f"{_reason(exc)} (corrupt or truncated model files? re-export the bundle)") from None
        try:
            self.compiled = core.compile_model(model, self.device, config)
        except Exception as exc:
            raise RuntimeFailure(f"openvino could not compile {bundle.path} for device {self.device!r}: "
                                 f"{_reason(exc)} (available devices: {core.available_devices})") from None
        self.config = {k: str(self.compiled.get_property(k)) for k in ("INFERENCE_PRECISION_HINT",)
                       if self.device.startswith("CPU")}
        # what the plugin settled on (the hint or its default), not what was asked; CPU only
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS")) if self.device.startswith("CPU") else None
        self.request = self.compiled.create_infer_request()
        self._core, self._model, self._config = core, model, config
        self._static: dict[int, Any] = {}   # batch -> infer request of a static-shape model
        self.static_batch = bool(static_batch) and model.input(0).get_partial_shape()[0].is_dynamic
        if self.static_batch:
            self._static_request(1)

    def _static_request(self, n: int):
        """The request of a model compiled for batch ``n`` exactly (compiled on first use, while fewer
        than STATIC_SHAPES + 1 exist); None: use the dynamic model."""
        request = self._static.get(n)
        if request is None and len(self._static) <= STATIC_SHAPES:
            model = self._model.clone()  # the model read at load, not the files again
            shape = model.input(0).get_partial_shape()
            shape[0] = n
            model.reshape({model.input(0): shape})
            request = self._core.compile_model(model, self.device, self._config).create_infer_request()
            self._static[n] = request
        return request

    def infer(self, batch: np.ndarray) -> np.ndarray:
        request = (self._static_request(len(batch)) if self.static_batch else None) or self.request
        request.infer({0: batch})
        return request.get_output_tensor(0).data.copy()

    def close(self) -> None:
        self.request = None
        self.compiled = None
        self._static = {}
