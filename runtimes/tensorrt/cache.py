"""Engine cache: build settings read from the manifest, engine keys (GPU + compute capability + TensorRT
version + ONNX sha256 + profile), engine/sidecar/timing-cache files and the rebuild decision. No TensorRT,
no CUDA: all of it is tested on CPU."""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from osnet_edge.bundle import FILE_MODE, BundleError, current_umask, sha256_file

from ..base import RuntimeFailure

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
                          "(precision lives in the ONNX); re-export on the host with osnet-edge export --target tensorrt")
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
