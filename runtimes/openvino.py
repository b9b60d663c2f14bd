"""OpenVINO backend: compiles the bundle's IR for CPU (or GPU/NPU names passed through).

Precision is the bundle's, never the plugin's choice: on CPUs with bf16 support OpenVINO
runs fp32 models in bf16 unless INFERENCE_PRECISION_HINT says f32, so fp32/fp16/int8
bundles pin f32 (INT8 layers stay INT8) and only bf16 bundles ask for bf16.
"""
from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

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
                 hint: str = "LATENCY", cache_dir: str | None = None) -> None:
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

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.request.infer({0: batch})
        return self.request.get_output_tensor(0).data.copy()

    def close(self) -> None:
        self.request = None
        self.compiled = None
