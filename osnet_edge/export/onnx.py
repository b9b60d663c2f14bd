"""torch OSNet -> checked, shape-inferred ONNX (dynamic batch), fp16 ONNX and OpenVINO IR conversions."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from ..preprocess import IMAGENET_MEAN, IMAGENET_STD
from ..quiet import converter_output_silenced
from .graph import DEFAULT_GLOBAL_POOL, check_global_pool, write_global_pools_as
from .hygiene import flush_negligible_weights

DEFAULT_OPSET = 18
INPUT_NAME, OUTPUT_NAME = "input", "embedding"


class ExportError(RuntimeError):
    """Export could not produce a valid model (message says which step and why)."""


class FusedPreprocess(nn.Module):
    """uint8 BGR NHWC at the model's input size -> normalised float RGB NCHW, inside the graph."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
        super().__init__()
        # BGR order, folded: (x/255 - mean)/std = x * 1/(255 std) - mean/std
        scale = torch.tensor([1.0 / (255.0 * s) for s in std][::-1]).view(1, 3, 1, 1)
        bias = torch.tensor([-m / s for m, s in zip(mean, std)][::-1]).view(1, 3, 1, 1)
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # cast before the transpose: TensorRT's uint8 support is limited to I/O and Cast
        x = x.to(torch.float32).permute(0, 3, 1, 2) * self.scale + self.bias
        return torch.flip(x, dims=[1])  # BGR -> RGB


class _WithPreprocess(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.pre, self.model = FusedPreprocess(), model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.pre(x))


def to_onnx(model: nn.Module, path: str | os.PathLike, input_hw: tuple[int, int], opset: int = DEFAULT_OPSET,
            fuse_preprocess: bool = False, simplify: bool = True, global_pool: str = DEFAULT_GLOBAL_POOL) -> Path:
    """Export an eval-mode OSNet to ONNX with a dynamic batch axis, checked and shape-inferred.

    Input ``input`` is (N,3,H,W) float32, or (N,H,W,3) uint8 BGR with ``fuse_preprocess``;
    output ``embedding`` is (N,512) float32 (not normalised, as torchreid returns it).
    ``global_pool``: the op the global average pools are written as (export.graph.GLOBAL_POOL_OPS).
    """
    import onnx

    if opset < 17:
        raise ValueError(f"opset must be >= 17, got {opset}")
    check_global_pool(global_pool)
    path = Path(path)
    model = model.eval()
    net = _WithPreprocess(model).eval() if fuse_preprocess else model
    h, w = input_hw
    example = (torch.zeros(2, h, w, 3, dtype=torch.uint8) if fuse_preprocess else torch.zeros(2, 3, h, w))
    batch = torch.export.Dim("batch", min=1, max=4096)
    with converter_output_silenced(loggers=("torch.onnx",)):
        try:
            torch.onnx.export(net, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              opset_version=opset, dynamo=True, dynamic_shapes=({0: batch},),
                              external_data=False, verbose=False)
        except Exception as exc:
            raise ExportError(f"torch.onnx.export failed: {str(exc).splitlines()[0]}") from exc
    proto = onnx.load(str(path))
    if simplify:
        proto = _simplify(proto)
    write_global_pools_as(proto, global_pool)
    flush_negligible_weights(proto)
    try:
        onnx.checker.check_model(proto, full_check=True)
        proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    except Exception as exc:
        raise ExportError(f"exported ONNX failed onnx.checker / shape inference: {exc}") from exc
    proto.producer_name, proto.producer_version = "osnet_edge", __version__
    onnx.save(proto, str(path))
    return path


def _simplify(proto):
    """onnxslim where installed (folds constants, drops identities); the original if it fails."""
    try:
        import onnxslim
    except ImportError:
        return proto
    try:
        with converter_output_silenced():
            return onnxslim.slim(proto)
    except Exception as exc:  # a simplifier bug must not break export
        warnings.warn(f"onnxslim failed ({exc}); keeping the unsimplified graph")
        return proto


def convert_fp16(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """fp32 ONNX -> fp16 weights and compute with fp32 I/O (TensorRT 11 strong typing, ORT).

    onnxconverter-common's converter keeps inputs/outputs fp32 (Cast at the edges) and leaves
    its default block list (numerically sensitive ops) in fp32.
    """
    import onnx

    try:
        from onnxconverter_common import float16
    except ImportError as exc:
        raise ImportError("fp16 ONNX conversion needs onnxconverter-common: "
                          "pip install 'osnet_edge[quantize]'") from exc
    proto = onnx.load(str(src))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = float16.convert_float_to_float16(proto, keep_io_types=True)
    onnx.checker.check_model(half)
    onnx.save(half, str(dst))
    return Path(dst)


def save_openvino_ir(onnx_path: str | os.PathLike, xml_path: str | os.PathLike, fp16: bool) -> Path:
    """ONNX -> OpenVINO IR at export time (fp16 weight compression only for fp16 bundles)."""
    try:
        import openvino as ov
    except ImportError as exc:
        raise ImportError("the openvino target needs openvino: pip install 'osnet_edge[openvino]'") from exc
    ov_model = ov.convert_model(str(onnx_path))
    ov.save_model(ov_model, str(xml_path), compress_to_fp16=fp16)
    return Path(xml_path)

