"""TensorRtRuntime: runs a tensorrt bundle's engine (built and cached from its ONNX at first load)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..base import RuntimeFailure, resolve_threads
from .build import EngineRecord, _make_logger, _obtain_plan, _tensorrt_bundle, _last_errors
from .cache import build_settings, resolve_cache_dir
from .device import _import_tensorrt, _short, missing_requirements, open_cuda, parse_device, unavailable_error

if TYPE_CHECKING:
    from osnet_edge.bundle import Bundle



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
