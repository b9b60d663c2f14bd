"""Building: ONNX -> strongly typed TensorRT plan (one path for TensorRT 10 and 11), and obtaining a
bundle's plan from the cache or by building it once."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from osnet_edge.bundle import BundleError, load_bundle, sha256_file

from ..base import RuntimeFailure
from .cache import (BuildSettings, EngineKey, GpuInfo, _atomic_write, engine_decision, ensure_writable, save_engine,
                    timing_cache_file)

if TYPE_CHECKING:
    from osnet_edge.bundle import Bundle

log = logging.getLogger("osnet_edge.runtimes.tensorrt")


# ----------------------------------------------------------------------------- TensorRT calls (GPU only)

def _make_logger(trt):
    """A TensorRT logger that forwards warnings to ``logging`` and keeps errors for our messages."""
    try:
        return _recording_logger(trt)
    except Exception:  # a binding that cannot be subclassed: TensorRT's own stderr logger
        return trt.Logger(trt.Logger.WARNING)


def _recording_logger(trt):
    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg) -> None:
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors = [*self.errors[-19:], str(msg)]  # bounded: a camera runs for months
                log.error("TensorRT: %s", msg)
            elif severity == trt.ILogger.Severity.WARNING:
                log.warning("TensorRT: %s", msg)

    return _Logger()


def _last_errors(logger) -> str:
    errors = getattr(logger, "errors", [])
    return f": {errors[-1]}" if errors else " (see the TensorRT log)"


def build_plan(trt, logger, onnx_path: str | os.PathLike, settings: BuildSettings,
               timing_cache: bytes | None = None) -> tuple[bytes, bytes | None]:
    """Parse the ONNX into a strongly typed network and build a serialized engine.

    Returns (plan, updated timing cache). Precision comes from the ONNX alone.
    """
    builder = trt.Builder(logger)
    flags = 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed is not None:  # required on 10.x; 11.x accepts and ignores it (always strongly typed)
        flags |= 1 << int(strongly_typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or "unknown error"
        raise RuntimeFailure(f"TensorRT could not parse {onnx_path}: {errors}")
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    if inputs != [settings.input_name]:
        raise RuntimeFailure(f"{onnx_path}: expected one input {settings.input_name!r}, the network has {inputs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mib << 20)
    profile = builder.create_optimization_profile()
    profile.set_shape(settings.input_name, *settings.profile())
    config.add_optimization_profile(profile)
    loaded = False
    if timing_cache:
        try:  # a cache from another TensorRT version / GPU is rejected: start a fresh one
            loaded = bool(config.set_timing_cache(config.create_timing_cache(timing_cache), False))
        except Exception:
            loaded = False
        if not loaded:
            log.warning("ignoring an incompatible TensorRT timing cache")
    if not loaded:
        config.set_timing_cache(config.create_timing_cache(b""), False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeFailure(f"TensorRT failed to build an engine from {onnx_path}{_last_errors(logger)}")
    updated = config.get_timing_cache()
    return bytes(memoryview(plan)), (bytes(memoryview(updated.serialize())) if updated is not None else None)


@dataclass
class EngineRecord:
    """Where the engine came from: cached or built now (and how long it took)."""

    path: Path
    built: bool
    reason: str | None
    build_seconds: float | None
    size: int
    key: EngineKey
    gpu: GpuInfo


def _tensorrt_bundle(bundle: "Bundle | str | os.PathLike") -> "Bundle":
    from osnet_edge.bundle import Bundle

    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    if bundle.runtime != "tensorrt":
        raise BundleError(f"bundle {bundle.path} was exported for {bundle.runtime}, not TensorRT; re-export it "
                          "on the host with osnet-edge export --target tensorrt")
    return bundle


def _obtain_plan(trt, logger, bundle: "Bundle", settings: BuildSettings, gpu: GpuInfo, cache_dir: Path,
                 force: bool, why: str | None = None) -> tuple[bytes, EngineRecord]:
    onnx_path = bundle.file("model.onnx")
    key = EngineKey.create(gpu, trt.__version__, sha256_file(onnx_path), settings)
    path, reason = engine_decision(cache_dir, key, force)
    reason = why or reason
    if reason is None:
        plan = path.read_bytes()
        return plan, EngineRecord(path, False, None, None, len(plan), key, gpu)
    ensure_writable(cache_dir)  # fail now, not after a long build
    log.warning("building the TensorRT engine for %s on %s (%s); this takes a while once, then it is cached in %s",
                bundle.path, gpu.name, reason, cache_dir)
    timing_path = timing_cache_file(cache_dir, gpu.name, key.compute_capability, key.tensorrt_version)
    timing = timing_path.read_bytes() if timing_path.is_file() else None
    t0 = time.perf_counter()
    plan, new_timing = build_plan(trt, logger, onnx_path, settings, timing)
    seconds = time.perf_counter() - t0
    path = save_engine(cache_dir, key, plan, build_seconds=round(seconds, 3), workspace_mib=settings.workspace_mib,
                       bundle=str(bundle.path), precision=bundle.precision)
    if new_timing:
        _atomic_write(timing_path, new_timing)
    return plan, EngineRecord(path, True, reason, seconds, len(plan), key, gpu)
