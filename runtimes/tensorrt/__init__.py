"""TensorRT backend: a strongly typed engine built on the device from the bundle's ONNX.

One build path serves TensorRT 10.x (Jetson, JetPack 6) and 11.x: the network is parsed from
the ONNX with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` (required on 10.x for the ONNX's
own precisions to be obeyed, accepted and ignored on 11.x, where strong typing is the only
mode), so each layer runs in the precision the host gave it: fp32, fp16 (host-converted ONNX)
or INT8 (explicit Q/DQ). No precision builder flag, calibrator or binding-index API is used:
TensorRT 11 removed them.

Engines are not portable between GPUs or TensorRT versions, so the engine is built at first
load and cached (default ``<bundle>/engines/``; ``cache_dir=`` or ``$OSNET_EDGE_ENGINE_CACHE``
elsewhere) under a key of GPU name + compute capability + TensorRT version + ONNX sha256 +
batch profile, with a JSON sidecar holding its sha256. A missing, mismatched or corrupt engine
is rebuilt; where the cache directory cannot be written the error says so before any build.

Layout: plain functions (manifest reading, profile shapes, cache keys, sidecars, decisions)
need neither TensorRT nor CUDA and are tested on CPU. Only ``build_plan``, the two small CUDA
binding adapters (pycuda, else cuda-python) and ``TensorRtRuntime`` touch the GPU.
"""
from .build import EngineRecord, build_plan
from .cache import (DEFAULT_CACHE_SUBDIR, DEFAULT_OPT_BATCH, DEFAULT_WORKSPACE_MIB, ENGINE_CACHE_ENV, PIP_EXTRA,
                    SIDECAR_FORMAT, BuildSettings, EngineCacheError, EngineKey, GpuInfo, build_settings, check_engine,
                    engine_decision, engine_file, ensure_writable, profile_shapes, read_sidecar, resolve_cache_dir,
                    save_engine, sidecar_file, timing_cache_file)
from .device import cuda_binding_name, missing_requirements, open_cuda, parse_device, unavailable_error
from .runtime import TensorRtRuntime, prepare_engine

__all__ = ["TensorRtRuntime", "BuildSettings", "EngineKey", "EngineRecord", "GpuInfo", "EngineCacheError",
           "build_settings", "profile_shapes", "engine_file", "sidecar_file", "timing_cache_file",
           "resolve_cache_dir", "ensure_writable", "save_engine", "read_sidecar", "check_engine",
           "engine_decision", "missing_requirements", "cuda_binding_name", "parse_device", "prepare_engine",
           "build_plan", "open_cuda", "unavailable_error", "ENGINE_CACHE_ENV", "DEFAULT_CACHE_SUBDIR",
           "DEFAULT_OPT_BATCH", "DEFAULT_WORKSPACE_MIB", "PIP_EXTRA", "SIDECAR_FORMAT"]
