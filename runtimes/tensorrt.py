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
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib
import json
import logging
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from osnet_edge.bundle import FILE_MODE, BundleError, current_umask, load_bundle, sha256_file

from .base import RuntimeFailure, RuntimeUnavailable, resolve_threads

if TYPE_CHECKING:
    from osnet_edge.bundle import Bundle

log = logging.getLogger("osnet_edge.runtimes.tensorrt")

ENGINE_CACHE_ENV = "OSNET_EDGE_ENGINE_CACHE"
DEFAULT_CACHE_SUBDIR = "engines"
SIDECAR_FORMAT = "osnet-edge-tensorrt-engine"
DEFAULT_WORKSPACE_MIB = 1024
DEFAULT_OPT_BATCH = 8
PIP_EXTRA = "osnet_edge[tensorrt]"
_INPUT_DTYPES = {False: "float32", True: "uint8"}  # keyed by fused preprocessing


class EngineCacheError(RuntimeFailure):
    """The engine cache cannot be used (read-only directory, unwritable path)."""


# ----------------------------------------------------------------------------- build settings

@dataclass(frozen=True)
class BuildSettings:
    """What the engine is built for, read from the bundle manifest (plus caller overrides)."""

    input_name: str
    output_name: str
    sample_shape: tuple[int, ...]   # one input sample: (3,H,W) float32 or (H,W,3) uint8 fused
    input_dtype: str
    embedding_dim: int
    min_batch: int
    opt_batch: int
    max_batch: int
    workspace_mib: int

    def profile(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) input shapes of the optimisation profile."""
        return profile_shapes(self.sample_shape, self.min_batch, self.opt_batch, self.max_batch)


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return int(value)


def profile_shapes(sample_shape: tuple[int, ...], min_batch: int, opt_batch: int,
                   max_batch: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Optimisation-profile shapes for a dynamic batch axis: the sample shape behind each batch."""
    sample = tuple(_positive_int(d, "every sample dimension") for d in sample_shape)
    lo, opt, hi = (_positive_int(b, name) for b, name in
                   ((min_batch, "min_batch"), (opt_batch, "opt_batch"), (max_batch, "max_batch")))
    if not lo <= opt <= hi:
        raise ValueError(f"batch profile needs min <= opt <= max, got {lo} / {opt} / {hi}")
    return (lo, *sample), (opt, *sample), (hi, *sample)


def build_settings(manifest: dict, workspace_mib: int | None = None) -> BuildSettings:
    """The engine's build settings from a tensorrt bundle's manifest.

    ``build`` (written by export) gives max/opt batch and the workspace limit; an older or
    hand-made manifest without it falls back to the top-level ``max_batch`` and defaults.
    A bundle whose build settings are not strongly typed cannot be honoured on TensorRT 11.
    """
    try:
        model, pre = manifest["model"], manifest["preprocess"]
        h, w = (int(v) for v in model["input_size"])
        dim = int(model["embedding_dim"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"manifest lacks the model input size / embedding dim ({exc!r}); re-export the bundle") from None
    build = manifest.get("build") or {}
    if not isinstance(build, dict):
        raise BundleError(f"manifest 'build' must be a dict, got {type(build).__name__}")
    if build.get("strongly_typed") is False:
        raise BundleError("manifest build.strongly_typed is false: TensorRT 11 builds strongly typed networks only "
                          "(precision lives in the ONNX); re-export with scripts/export.py --target tensorrt")
    fused = bool(pre.get("fused", False))
    max_batch = _positive_int(build.get("max_batch", manifest.get("max_batch") or 64), "max_batch")
    opt_batch = _positive_int(build.get("opt_batch", min(DEFAULT_OPT_BATCH, max_batch)), "opt_batch")
    min_batch = _positive_int(build.get("min_batch", 1), "min_batch")
    workspace = workspace_mib if workspace_mib is not None else build.get("workspace_mib", DEFAULT_WORKSPACE_MIB)
    settings = BuildSettings(
        input_name=str(model.get("input_name", "input")), output_name=str(model.get("output_name", "embedding")),
        sample_shape=(h, w, 3) if fused else (3, h, w), input_dtype=_INPUT_DTYPES[fused], embedding_dim=dim,
        min_batch=min_batch, opt_batch=min(opt_batch, max_batch), max_batch=max_batch,
        workspace_mib=_positive_int(workspace, "workspace_mib"))
    settings.profile()  # validates min <= opt <= max
    return settings


# ----------------------------------------------------------------------------- cache keys and files

@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: tuple[int, int]
    index: int = 0

    @property
    def sm(self) -> str:
        return f"{self.compute_capability[0]}{self.compute_capability[1]}"


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; two engines with equal keys are interchangeable."""

    gpu_name: str
    compute_capability: str      # "8.7"
    tensorrt_version: str
    onnx_sha256: str
    min_batch: int
    opt_batch: int
    max_batch: int

    @classmethod
    def create(cls, gpu: GpuInfo, tensorrt_version: str, onnx_sha256: str, settings: BuildSettings) -> "EngineKey":
        if not re.fullmatch(r"[0-9a-f]{64}", onnx_sha256 or ""):
            raise ValueError(f"onnx_sha256 must be 64 lowercase hex digits, got {onnx_sha256!r}")
        if not str(tensorrt_version).strip():
            raise ValueError("tensorrt_version must not be empty")
        major, minor = gpu.compute_capability
        return cls(gpu.name.strip(), f"{int(major)}.{int(minor)}", str(tensorrt_version).strip(), onnx_sha256,
                   settings.min_batch, settings.opt_batch, settings.max_batch)

    def slug(self) -> str:
        """A file-name-safe, human-readable key (the full values live in the sidecar)."""
        return (f"{_slug(self.gpu_name)}_sm{self.compute_capability.replace('.', '')}"
                f"_trt{_slug(self.tensorrt_version)}_b{self.min_batch}-{self.opt_batch}-{self.max_batch}"
                f"_{self.onnx_sha256[:16]}")

    def as_dict(self) -> dict:
        return asdict(self)


def _slug(text: str) -> str:
    out = re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.")
    return out or "unknown"


def engine_file(cache_dir: str | os.PathLike, key: EngineKey) -> Path:
    return Path(cache_dir) / f"model.{key.slug()}.engine"


def sidecar_file(engine_path: str | os.PathLike) -> Path:
    return Path(str(engine_path) + ".json")


def timing_cache_file(cache_dir: str | os.PathLike, gpu_name: str, compute_capability: str,
                      tensorrt_version: str) -> Path:
    """Timing caches are per GPU model and TensorRT version, shared by every engine built there."""
    cc = str(compute_capability).replace(".", "")
    return Path(cache_dir) / f"timing.{_slug(gpu_name)}_sm{cc}_trt{_slug(tensorrt_version)}.cache"


def resolve_cache_dir(bundle_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir`` if given, else ``$OSNET_EDGE_ENGINE_CACHE``, else ``<bundle>/engines``.

    Keys include the ONNX sha256, so one shared directory can serve many bundles.
    """
    if cache_dir is not None and str(cache_dir).strip():
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENGINE_CACHE_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return Path(bundle_path) / DEFAULT_CACHE_SUBDIR


def ensure_writable(cache_dir: str | os.PathLike) -> Path:
    """Create ``cache_dir`` and prove a file can be written there, or raise EngineCacheError.

    Checked before a build (minutes on a Jetson), so a read-only bundle fails at once.
    """
    path = Path(cache_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise EngineCacheError(
            f"cannot write the TensorRT engine cache in {path} ({exc.strerror or exc}). The bundle directory is "
            f"read-only? Pre-build the engine where it is writable (osnet-edge build-engine BUNDLE), or choose "
            f"another cache directory: cache_dir=... (Extractor/runtime option), --cache-dir "
            f"(osnet-edge build-engine) or ${ENGINE_CACHE_ENV}") from None
    return path


def _atomic_write(path: Path, data: bytes | memoryview) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes 0600: an engine built by root at provisioning must be readable by the camera service
        os.fchmod(fd, FILE_MODE & ~current_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_engine(cache_dir: str | os.PathLike, key: EngineKey, plan: bytes | memoryview,
                **extra: Any) -> Path:
    """Write the engine and its sidecar (sha256, size, key, ``extra`` facts) atomically."""
    path = engine_file(ensure_writable(cache_dir), key)
    data = memoryview(plan).cast("B")
    sidecar = {"format": SIDECAR_FORMAT, "sha256": hashlib.sha256(data).hexdigest(), "size": data.nbytes,
               "key": key.as_dict(), "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               **extra}
    _atomic_write(path, data)
    _atomic_write(sidecar_file(path), json.dumps(sidecar, indent=2).encode())
    return path


def read_sidecar(engine_path: str | os.PathLike) -> dict | None:
    """The engine's sidecar, or None when it is missing or unreadable."""
    try:
        data = json.loads(sidecar_file(engine_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == SIDECAR_FORMAT else None


def check_engine(engine_path: str | os.PathLike, key: EngineKey) -> str | None:
    """None when the cached engine is usable for ``key``; otherwise why it must be rebuilt."""
    path = Path(engine_path)
    if not path.is_file():
        return "no cached engine"
    if not sidecar_file(path).is_file():
        return "the engine has no checksum sidecar (interrupted build or copied without it)"
    meta = read_sidecar(path)
    if meta is None:
        return "the engine's checksum sidecar is unreadable"
    recorded = meta.get("key") if isinstance(meta.get("key"), dict) else {}
    for field, want in key.as_dict().items():
        have = recorded.get(field)
        if have != want:
            return f"the engine was built for {field}={have!r}, this device needs {want!r}"
    if meta.get("size") != path.stat().st_size:
        return (f"the engine is {path.stat().st_size} bytes, its sidecar says {meta.get('size')} "
                "(truncated or replaced)")
    if sha256_file(path) != meta.get("sha256"):
        return "the engine's sha256 does not match its sidecar (corrupt)"
    return None


def engine_decision(cache_dir: str | os.PathLike, key: EngineKey, force: bool = False) -> tuple[Path, str | None]:
    """(engine path, reason to build) — reason None means: load the cached engine."""
    path = engine_file(cache_dir, key)
    return path, ("rebuild forced" if force else check_engine(path, key))


# ----------------------------------------------------------------------------- availability

def _import_tensorrt():
    import tensorrt  # noqa: F401  (the real package: the PyPI stub without NVIDIA's libs fails here)
    return tensorrt


def cuda_binding_name() -> str | None:
    """'pycuda' where it imports, else 'cuda-python' (cuda.bindings / legacy cuda.cudart), else None."""
    for name, module in (("pycuda", "pycuda.driver"), ("cuda-python", "cuda.bindings.runtime"),
                         ("cuda-python", "cuda.cudart")):
        try:
            importlib.import_module(module)
            return name
        except Exception:
            continue
    return None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__


def missing_requirements() -> list[str]:
    """What this machine lacks to run TensorRT (empty list: everything is here)."""
    missing = []
    try:
        _import_tensorrt()
    except Exception as exc:
        missing.append(f"the tensorrt Python package ({_short(exc)})")
    binding = cuda_binding_name()
    if binding is None:
        try:  # say why: not installed, or installed without a CUDA driver (libcuda) to load
            importlib.import_module("pycuda.driver")
            detail = ""
        except Exception as exc:
            detail = f" ({_short(exc)})"
        missing.append(f"pycuda (or cuda-python) for CUDA memory and streams{detail}")
        return missing
    try:
        count = _open_binding_module(binding).device_count()
    except Exception as exc:
        missing.append(f"a CUDA GPU with a working driver ({_short(exc)})")
    else:
        if count < 1:
            missing.append("a CUDA GPU (the driver reports none)")
    return missing


def unavailable_error(missing: list[str]) -> RuntimeUnavailable:
    return RuntimeUnavailable(
        f"the TensorRT runtime cannot run here: missing {'; '.join(missing)}. On the GPU machine install "
        f"pip install '{PIP_EXTRA}' (x86: TensorRT from NVIDIA's index; Jetson: TensorRT from JetPack + pycuda, "
        f"see README). The bundle's model.onnx is the exact network TensorRT builds: "
        f"runtime='onnxruntime' runs it on CPU")


def parse_device(device: str | int | None) -> int:
    """'cuda' / 'cuda:N' / 'gpu' / 'gpu:N' / N / None -> GPU index; 'cpu' is an error."""
    if device is None:
        return 0
    if isinstance(device, (int, np.integer)) and not isinstance(device, bool):
        if device < 0:
            raise ValueError(f"GPU index must be >= 0, got {device}")
        return int(device)
    if not isinstance(device, str):
        raise TypeError(f"device must be a str like 'cuda' or 'cuda:0', got {type(device).__name__}")
    text = device.strip().lower()
    if text.startswith("cpu"):
        raise ValueError("TensorRT runs on a CUDA GPU: use device='cuda' (or 'cuda:N'); to run this bundle on a "
                         "CPU use runtime='onnxruntime' (the same ONNX network)")
    m = re.fullmatch(r"(?:cuda|gpu)(?::(\d+))?", text)
    if m is None:
        raise ValueError(f"unknown TensorRT device {device!r}: use 'cuda' or 'cuda:N'")
    return int(m.group(1) or 0)


# ----------------------------------------------------------------------------- CUDA bindings (GPU only)

def _open_binding_module(name: str):
    return _PyCuda if name == "pycuda" else _CudaPython


class _PyCuda:
    """pycuda: the device's primary context (shared with TensorRT's runtime API calls)."""

    name = "pycuda"

    @staticmethod
    def device_count() -> int:
        import pycuda.driver as cuda
        cuda.init()
        return cuda.Device.count()

    def __init__(self, index: int) -> None:
        import pycuda.driver as cuda
        cuda.init()
        if index >= cuda.Device.count():
            raise ValueError(f"GPU cuda:{index} does not exist ({cuda.Device.count()} GPU(s) here)")
        self._cuda, self.index = cuda, index
        self._device = cuda.Device(index)
        self._ctx = self._device.retain_primary_context()
        self._host, self._dev = [], []
        with self.active():
            self._stream = cuda.Stream()

    def gpu(self) -> GpuInfo:
        return GpuInfo(self._device.name(), tuple(self._device.compute_capability()), self.index)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        self._ctx.push()
        try:
            yield
        finally:
            self._cuda.Context.pop()

    def host_empty(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        arr = self._cuda.pagelocked_empty(shape, dtype)
        self._host.append(arr)
        return arr

    def device_alloc(self, nbytes: int) -> int:
        mem = self._cuda.mem_alloc(nbytes)
        self._dev.append(mem)
        return int(mem)

    @property
    def stream_handle(self) -> int:
        return self._stream.handle

    def htod(self, dst: int, src: np.ndarray) -> None:
        self._cuda.memcpy_htod_async(dst, src, self._stream)

    def dtoh(self, dst: np.ndarray, src: int) -> None:
        self._cuda.memcpy_dtoh_async(dst, src, self._stream)

    def synchronize(self) -> None:
        self._stream.synchronize()

    def close(self) -> None:
        with self.active():
            for mem in self._dev:
                mem.free()
            for arr in self._host:
                with contextlib.suppress(Exception):
                    arr.base.free()
            self._dev, self._host, self._stream = [], [], None
        self._ctx.detach()


class _CudaPython:
    """cuda-python (NVIDIA's own samples use it): runtime API, primary context via cudaSetDevice."""

    name = "cuda-python"

    @staticmethod
    def _rt():
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart  # cuda-python < 12.6
        return cudart

    @classmethod
    def _check(cls, result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if err != cls._rt().cudaError_t.cudaSuccess:
            raise RuntimeFailure(f"CUDA runtime error: {err}")
        return rest[0] if len(rest) == 1 else (rest or None)

    @classmethod
    def device_count(cls) -> int:
        return int(cls._check(cls._rt().cudaGetDeviceCount()))

    def __init__(self, index: int) -> None:
        self.rt, self.index = self._rt(), index
        count = self.device_count()
        if index >= count:
            raise ValueError(f"GPU cuda:{index} does not exist ({count} GPU(s) here)")
        self._host, self._dev = [], []
        with self.active():
            self._stream = self._check(self.rt.cudaStreamCreate())

    def gpu(self) -> GpuInfo:
        props = self._check(self.rt.cudaGetDeviceProperties(self.index))
        name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
        return GpuInfo(name.rstrip("\x00"), (int(props.major), int(props.minor)), self.index)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        self._check(self.rt.cudaSetDevice(self.index))
        yield

    def host_empty(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        ptr = int(self._check(self.rt.cudaMallocHost(nbytes)))
        self._host.append(ptr)
        import ctypes
        buf = (ctypes.c_ubyte * nbytes).from_address(ptr)
        return np.frombuffer(buf, dtype=dtype).reshape(shape)

    def device_alloc(self, nbytes: int) -> int:
        ptr = int(self._check(self.rt.cudaMalloc(nbytes)))
        self._dev.append(ptr)
        return ptr

    @property
    def stream_handle(self) -> int:
        return int(self._stream)

    def htod(self, dst: int, src: np.ndarray) -> None:
        self._check(self.rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes,
                                            self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream))

    def dtoh(self, dst: np.ndarray, src: int) -> None:
        self._check(self.rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes,
                                            self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream))

    def synchronize(self) -> None:
        self._check(self.rt.cudaStreamSynchronize(self._stream))

    def close(self) -> None:
        with self.active():
            for ptr in self._dev:
                self.rt.cudaFree(ptr)
            for ptr in self._host:
                self.rt.cudaFreeHost(ptr)
            if self._stream is not None:
                self.rt.cudaStreamDestroy(self._stream)
        self._dev, self._host, self._stream = [], [], None


def open_cuda(index: int):
    """The CUDA binding adapter for GPU ``index`` (pycuda preferred, cuda-python otherwise)."""
    name = cuda_binding_name()
    if name is None:
        raise unavailable_error(["pycuda (or cuda-python) for CUDA memory and streams"])
    return _open_binding_module(name)(index)


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
                          "with scripts/export.py --target tensorrt")
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


class TensorRtRuntime:
    """Runs a tensorrt bundle's engine (built and cached from its ONNX at first load).

    Options: ``cache_dir`` (engine cache; default ``<bundle>/engines`` or
    ``$OSNET_EDGE_ENGINE_CACHE``), ``workspace_mib`` (builder workspace limit), ``force_rebuild``.
    ``threads`` is accepted for the common protocol and ignored (the GPU does the work).
    """

    name = "tensorrt"

    @staticmethod
    def is_available() -> bool:
        try:
            return not missing_requirements()
        except Exception:
            return False

    @staticmethod
    def version() -> str:
        try:
            return _import_tensorrt().__version__
        except Exception as exc:
            raise unavailable_error([f"the tensorrt Python package ({_short(exc)})"]) from None

    def __init__(self, bundle: "Bundle", device: str | int | None = "cuda", threads: int | None = None,
                 cache_dir: str | os.PathLike | None = None, workspace_mib: int | None = None,
                 force_rebuild: bool = False) -> None:
        missing = missing_requirements()
        if missing:
            raise unavailable_error(missing)
        index = parse_device(device)
        resolve_threads(threads)  # validated for the common protocol; the GPU ignores it
        bundle = _tensorrt_bundle(bundle)
        self.settings = build_settings(bundle.manifest, workspace_mib)
        self.cache_dir = resolve_cache_dir(bundle.path, cache_dir)
        self.device = f"cuda:{index}"
        self._engine = self._context = None
        trt = _import_tensorrt()
        self._trt = trt
        self._logger = _make_logger(trt)
        self._cuda = open_cuda(index)
        try:
            with self._cuda.active():
                self._load(bundle, force_rebuild)
        except BaseException:
            self.close()
            raise

    # -- setup ---------------------------------------------------------------------------
    def _load(self, bundle: "Bundle", force: bool) -> None:
        trt, s = self._trt, self.settings
        gpu = self._cuda.gpu()
        plan, self.record = _obtain_plan(trt, self._logger, bundle, s, gpu, self.cache_dir, force)
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(plan)
        if engine is None and not self.record.built:  # checksum fine but unloadable: rebuild once
            plan, self.record = _obtain_plan(trt, self._logger, bundle, s, gpu, self.cache_dir, True,
                                             why="the cached engine could not be deserialized")
            engine = self._runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise RuntimeFailure(f"TensorRT could not load the engine {self.record.path}{_last_errors(self._logger)}")
        self._engine = engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if inputs != [s.input_name] or outputs != [s.output_name]:
            raise RuntimeFailure(f"engine {self.record.path} has inputs {inputs} / outputs {outputs}, the manifest "
                                 f"expects {s.input_name!r} -> {s.output_name!r}; rebuild with force_rebuild=True")
        self._in_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(s.input_name)))
        self._out_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(s.output_name)))
        if self._in_dtype != np.dtype(s.input_dtype):
            raise RuntimeFailure(f"engine input is {self._in_dtype}, the bundle feeds {s.input_dtype}")
        self._context = engine.create_execution_context()
        if self._context is None:
            raise RuntimeFailure(f"TensorRT could not create an execution context{_last_errors(self._logger)}")
        self._host_in = self._cuda.host_empty((s.max_batch, *s.sample_shape), self._in_dtype)
        self._host_out = self._cuda.host_empty((s.max_batch, s.embedding_dim), self._out_dtype)
        self._dev_in = self._cuda.device_alloc(self._host_in.nbytes)
        self._dev_out = self._cuda.device_alloc(self._host_out.nbytes)
        self._context.set_tensor_address(s.input_name, self._dev_in)
        self._context.set_tensor_address(s.output_name, self._dev_out)

    # -- facts ---------------------------------------------------------------------------
    @property
    def max_batch(self) -> int:
        return self.settings.max_batch

    @property
    def engine_path(self) -> Path:
        return self.record.path

    @property
    def info(self) -> dict:
        r = self.record
        return {"engine": str(r.path), "built_now": r.built, "reason": r.reason, "build_seconds": r.build_seconds,
                "engine_bytes": r.size, "gpu": r.gpu.name, "compute_capability": r.key.compute_capability,
                "tensorrt": r.key.tensorrt_version, "cuda_bindings": self._cuda.name,
                "max_batch": self.settings.max_batch, "opt_batch": self.settings.opt_batch}

    # -- inference -----------------------------------------------------------------------
    def _check_batch(self, batch: np.ndarray) -> np.ndarray:
        s = self.settings
        if not isinstance(batch, np.ndarray):
            raise TypeError(f"expected a numpy array, got {type(batch).__name__}")
        if batch.ndim != 1 + len(s.sample_shape) or tuple(batch.shape[1:]) != s.sample_shape:
            raise ValueError(f"expected input of shape (N, {', '.join(map(str, s.sample_shape))}), got {batch.shape}")
        if batch.dtype != self._in_dtype:
            if batch.dtype.kind != self._in_dtype.kind:
                raise TypeError(f"expected {self._in_dtype} input, got {batch.dtype}")
            batch = batch.astype(self._in_dtype)
        if len(batch) > s.max_batch:
            raise ValueError(f"batch of {len(batch)} exceeds the engine's max batch {s.max_batch} (the Extractor "
                             "splits larger inputs; re-export with a larger --max-batch to raise it)")
        return batch

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if self._context is None:
            raise RuntimeFailure("the TensorRT runtime is closed")
        batch = self._check_batch(batch)
        n, s = len(batch), self.settings
        if n == 0:
            return np.empty((0, s.embedding_dim), np.float32)
        with self._cuda.active():
            self._host_in[:n] = batch
            if not self._context.set_input_shape(s.input_name, (n, *s.sample_shape)):
                raise RuntimeFailure(f"TensorRT rejected input shape {(n, *s.sample_shape)}{_last_errors(self._logger)}")
            self._cuda.htod(self._dev_in, self._host_in[:n])
            if not self._context.execute_async_v3(self._cuda.stream_handle):
                raise RuntimeFailure(f"TensorRT inference failed{_last_errors(self._logger)}")
            self._cuda.dtoh(self._host_out[:n], self._dev_out)
            self._cuda.synchronize()
            return self._host_out[:n].astype(np.float32, copy=True)

    def close(self) -> None:
        """Release the execution context, engine and CUDA buffers (idempotent)."""
        cuda = getattr(self, "_cuda", None)
        if cuda is None:
            return
        self._cuda = None
        self._host_in = self._host_out = None
        with contextlib.suppress(Exception), cuda.active():  # TensorRT objects die with the context current
            self._context = None
            self._engine = None
            self._runtime = None
        self._context = self._engine = self._runtime = None
        with contextlib.suppress(Exception):
            cuda.close()

    def __del__(self) -> None:  # best effort; call close() (or use the Extractor's context manager)
        with contextlib.suppress(Exception):
            self.close()


def prepare_engine(bundle: "Bundle | str | os.PathLike", device: str | int | None = "cuda",
                   cache_dir: str | os.PathLike | None = None, workspace_mib: int | None = None,
                   force: bool = False) -> EngineRecord:
    """Build (or find) and cache a bundle's engine on this GPU; for provisioning scripts.

    Loads the engine once to prove it deserializes and runs a batch of one.
    """
    bundle = _tensorrt_bundle(bundle)
    missing = missing_requirements()
    if missing:
        raise unavailable_error(missing)
    runtime = TensorRtRuntime(bundle, device=device, cache_dir=cache_dir, workspace_mib=workspace_mib,
                              force_rebuild=force)
    try:
        s = runtime.settings
        probe = np.zeros((1, *s.sample_shape), dtype=s.input_dtype)
        out = runtime.infer(probe)
        if out.shape != (1, s.embedding_dim) or not np.isfinite(out).all():
            raise RuntimeFailure(f"engine {runtime.engine_path} returned {out.shape} / non-finite values on a test batch")
        return runtime.record
    finally:
        runtime.close()


__all__ = ["TensorRtRuntime", "BuildSettings", "EngineKey", "EngineRecord", "GpuInfo", "EngineCacheError",
           "build_settings", "profile_shapes", "engine_file", "sidecar_file", "timing_cache_file",
           "resolve_cache_dir", "ensure_writable", "save_engine", "read_sidecar", "check_engine",
           "engine_decision", "missing_requirements", "cuda_binding_name", "parse_device", "prepare_engine",
           "build_plan", "ENGINE_CACHE_ENV"]
