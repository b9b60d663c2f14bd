"""Rockchip NPU on the board: a bundle's model.rknn on rknn-toolkit-lite2 (RKNNLite).

rknn-toolkit-lite2 (manylinux aarch64 wheels, cp37-cp312) drives the NPU of RK3562 / RK3566 / RK3568 / RK3576 /
RK3588 through the board's /usr/lib/librknnrt.so. RV1106 / RV1103 have no Python runtime (Rockchip's C API only):
their bundles are built and verified in the x86 simulator (``rknn-sim``). The model has a static batch of 1 and
takes uint8 RGB NHWC with mean/std fused, so this runtime flips the Extractor's BGR crops to RGB and runs one crop
per NPU call. ``core_mask`` picks RK3588's / RK3576's NPU cores: auto (default), 0, 1, 2, 0_1, 0_1_2, all.
Device side: numpy + rknnlite only.
"""
from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

import numpy as np

from .base import RuntimeFailure, missing_package

if TYPE_CHECKING:
    from osnet_edge.bundle import Bundle

CORE_MASKS = {"auto": "NPU_CORE_AUTO", "0": "NPU_CORE_0", "1": "NPU_CORE_1", "2": "NPU_CORE_2",
              "0_1": "NPU_CORE_0_1", "0_1_2": "NPU_CORE_0_1_2", "all": "NPU_CORE_ALL"}
MULTI_CORE_PLATFORMS = ("rk3588", "rk3576")
LITE_PLATFORMS = ("rk3562", "rk3566", "rk3568", "rk3576", "rk3588")


def _import():
    try:
        from rknnlite.api import RKNNLite
    except ImportError as exc:
        raise missing_package("rknn-toolkit-lite2", "rknn", exc) from None
    return RKNNLite


def check_batch(batch: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """(N, H, W, 3) uint8 BGR crops (what the Extractor gives a fused bundle) -> contiguous RGB."""
    if not isinstance(batch, np.ndarray) or batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"rknn runtimes take (N, H, W, 3) uint8 BGR crops, got "
                         f"{getattr(batch, 'shape', type(batch).__name__)} {getattr(batch, 'dtype', '')}")
    if tuple(batch.shape[1:3]) != tuple(input_size):
        raise ValueError(f"rknn model input is {input_size[0]}x{input_size[1]}, got crops of "
                         f"{batch.shape[1]}x{batch.shape[2]}")
    return np.ascontiguousarray(batch[..., ::-1])


class RknnRuntime:
    """Runs a bundle's model.rknn on the board's NPU with RKNNLite (one crop per call)."""

    name = "rknn"

    @staticmethod
    def is_available() -> bool:
        return importlib.util.find_spec("rknnlite") is not None

    @staticmethod
    def version() -> str:
        from importlib.metadata import version

        return version("rknn-toolkit-lite2")

    def __init__(self, bundle: "Bundle", device: str | None = None, threads: int | None = None,
                 core_mask: str = "auto") -> None:
        RKNNLite = _import()
        if device not in (None, "npu"):
            raise ValueError(f"rknn runs on the NPU: device must be None or 'npu', got {device!r}")
        if core_mask not in CORE_MASKS:
            raise ValueError(f"core_mask must be one of {sorted(CORE_MASKS)}, got {core_mask!r}")
        platform = (bundle.manifest.get("build") or {}).get("platform")
        if platform not in LITE_PLATFORMS:
            raise RuntimeFailure(f"bundle {bundle.path} is for {platform}: rknn-toolkit-lite2 runs only "
                                 f"{', '.join(LITE_PLATFORMS)} (RV1106 / RV1103 need Rockchip's C runtime)")
        if core_mask != "auto" and platform not in MULTI_CORE_PLATFORMS:
            raise ValueError(f"core_mask {core_mask!r} needs a multi-core NPU ({', '.join(MULTI_CORE_PLATFORMS)}); "
                             f"this bundle is for {platform}")
        self.device, self.threads, self.core_mask = "npu", None, core_mask
        self.input_size = bundle.input_size
        self._rknn = RKNNLite()
        if self._rknn.load_rknn(str(bundle.file("model.rknn"))) != 0:
            raise RuntimeFailure(f"rknn-toolkit-lite2 could not load {bundle.file('model.rknn')} (corrupt file, or "
                                 "a toolkit newer than this board's librknnrt.so? re-export or update librknnrt)")
        if self._rknn.init_runtime(core_mask=getattr(RKNNLite, CORE_MASKS[core_mask])) != 0:
            raise RuntimeFailure("rknn-toolkit-lite2 init_runtime failed: is /usr/lib/librknnrt.so present and "
                                 f"does this board's NPU match the bundle's platform ({platform})?")

    def infer(self, batch: np.ndarray) -> np.ndarray:
        rgb = check_batch(batch, self.input_size)
        rows = []
        for crop in rgb:
            out = self._rknn.inference(inputs=[crop[None]])
            if out is None:
                raise RuntimeFailure("rknn-toolkit-lite2 inference returned nothing (NPU driver error; see its log)")
            rows.append(np.asarray(out[0], np.float32).reshape(-1))
        return np.stack(rows)

    def close(self) -> None:
        if self._rknn is not None:
            self._rknn.release()
            self._rknn = None


def describe_build(build: dict) -> str:
    """One line for ``osnet-edge info``: the SoC, precision settings, and where it runs / was verified."""
    platform = build.get("platform", "?")
    line = f"rknn for {platform} (Rockchip NPU, rknn-toolkit2 {(build.get('toolkit') or {}).get('toolkit_version', '?')}"
    if build.get("precision") == "int8":
        line += (f", int8 {build.get('quantized_dtype', 'w8a8')} {build.get('quantized_algorithm')} ranges, "
                 f"per-{build.get('quantized_method')} weights")
        if build.get("fp16_layers"):
            line += f", {len(build['fp16_layers'])} layer(s) kept in float16 (hybrid)"
    else:
        line += ", float16"
    where = ("on the board: rknn-toolkit-lite2 (runtime 'rknn')" if platform in LITE_PLATFORMS
             else "on the board: Rockchip's C runtime only (no Python runtime for this SoC)")
    return (line + f"; input uint8 RGB NHWC {build.get('input_size')} batch 1, mean/std fused); {where}; on x86: "
            "the simulator (runtime 'rknn-sim', rebuilds from model.onnx; the fidelity recorded here was measured there)")
