"""The GPU side: what this machine lacks to run TensorRT, device strings, and the two small CUDA memory
adapters (pycuda preferred, cuda-python otherwise) behind one interface."""
from __future__ import annotations

import contextlib
import importlib
import re
from typing import Iterator

import numpy as np

from ..base import RuntimeFailure, RuntimeUnavailable
from .cache import GpuInfo, PIP_EXTRA


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
