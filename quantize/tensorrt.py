"""TensorRT INT8: an explicit-quantization QDQ ONNX following TensorRT's rules.

TensorRT 10/11 builds INT8 only from Q/DQ nodes (implicit calibrators are gone in 11): int8
activations and weights, symmetric (zero point 0), weights per output channel (axis 0 of
Conv / Gemm weights). ONNX Runtime's quantizer writes exactly that with symmetric settings, and
ONNX Runtime CPU runs the same arithmetic TensorRT will run (up to rounding), which is how the
fidelity here is measured without a GPU.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .onnxruntime import METHODS, MODEL_FILES, fp32_runner, int8_runner, quantize_qdq  # noqa: F401

RUNTIME = "onnxruntime"  # fidelity / timing here: ORT CPU on the very QDQ graph TensorRT consumes
ACTIVATION_SCHEME = "int8 symmetric"


def quantize_model(src_onnx: str, calib: np.ndarray, work: Path, method: str = "minmax", per_channel: bool = True,
                   exclude: Sequence[str] = (), **options: Any) -> dict:
    """S8S8 symmetric QDQ; layers in ``exclude`` get no Q/DQ (TensorRT then runs them in fp32/fp16)."""
    if not per_channel:
        raise ValueError("TensorRT INT8 weights are per output channel; per_channel=False is not supported")
    options = dict(options)
    # TensorRT takes fp32 biases (it folds them itself); int32 bias Q/DQ is an ORT-only construct
    options.setdefault("extra_options", {}).setdefault("QuantizeBias", False)
    info = quantize_qdq(src_onnx, calib, work, method, per_channel, exclude, symmetric_activations=True,
                        options=options)
    check_tensorrt_rules(work / "model.onnx")
    info["options"]["tensorrt_rules"] = "int8 symmetric, zero point 0, per-channel weights on axis 0"
    return info


def check_tensorrt_rules(path: Path) -> None:
    """Fail loudly if a Q/DQ pair breaks TensorRT's explicit-quantization rules."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    inits = {i.name: i for i in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        zp = inits.get(node.input[2])
        if zp is None:
            continue
        arr = numpy_helper.to_array(zp)
        if arr.dtype != np.int8 or np.any(arr != 0):
            raise RuntimeError(f"{node.name}: TensorRT needs int8 zero point 0, got {arr.dtype} {arr.ravel()[:4]}")
