"""The rknn target: torch OSNet -> model.onnx (fp32, what the toolkit converts) -> model.rknn for a Rockchip NPU.

The conversion runs rknn-toolkit2 in its own venv (``osnet-edge setup rknn``; quantize/rknn.py drives it). The bundle
keeps model.onnx beside model.rknn: the x86 simulator can only run a model it rebuilt from the ONNX (runtime
``rknn-sim``), and the ONNX is the record of what was converted. With quantization-aware distillation (trained
weights, ``distill`` not False) the ONNX holds the distilled weights the .rknn was built from; the fidelity is
always measured against the original FP32 network.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

from torch import nn

from .onnx import to_onnx

DEFAULT_PLATFORM = "rk3588"
# The settings that met the fidelity target best per precision (docs/rknn.md has the measurements).
DEFAULT_ALGORITHM = "normal"


def export_rknn(model: nn.Module, folder: Path, hw: tuple[int, int], precision: str, calibration: Any,
                calib_method: str | None, opset: int, trained: bool, step: Callable[[str], None],
                options: dict) -> tuple[dict, dict]:
    """model.onnx + model.rknn (+ calibration crops and probe) in ``folder``; returns (build, quantization report).

    ``options``: rknn_platform, rknn_method (channel | layer), rknn_hybrid (N layers kept float16),
    rknn_fp16_layers, distill (True / False / "auto"), distill_steps, min_cosine, min_cosine_p1, rknn_venv,
    fidelity_images (held-out crops the simulator embeds).
    ``calib_method``: the toolkit's quantized_algorithm (normal | mmse | kl_divergence).
    """
    from osnet_edge.quantize.fidelity import DEFAULT_FIDELITY_IMAGES
    from osnet_edge.quantize.rknn import quantize_rknn

    platform = options.pop("rknn_platform", None) or DEFAULT_PLATFORM
    onnx_path = folder / "model.onnx"
    step(f"exporting ONNX (opset {opset}, input {hw[0]}x{hw[1]}) for rknn-toolkit2")
    to_onnx(model, onnx_path, hw, opset, False)
    distill = options.pop("distill", "auto")
    use_distill = precision == "int8" and (distill is True or (distill == "auto" and trained))
    steps = options.pop("distill_steps", None)
    distill_device = options.pop("distill_device", "cpu")
    with tempfile.TemporaryDirectory(prefix="osnet_edge_rknn_export_") as tmp:
        reference = Path(tmp) / "fp32.onnx"
        distill_info = None
        if use_distill:
            from osnet_edge.quantize._distill import distill_to_onnx

            step(f"quantization-aware distillation on {calibration.num_images} crops (RKNN's int8 affine scheme)")
            reference.write_bytes(onnx_path.read_bytes())
            _, distill_info = distill_to_onnx(model, calibration, reference, onnx_path, scheme="uint8 asymmetric",
                                              steps=steps, progress=False, placement="all", device=distill_device)
        source = "calibration" if precision == "int8" else "held-out fidelity"
        step(f"rknn-toolkit2: {platform} {precision} ({calibration.num_images} crops for {source}; the simulator "
             "measures fidelity)")
        report = quantize_rknn(onnx_path, calibration, folder, platform=platform, precision=precision,
                               algorithm=calib_method or DEFAULT_ALGORITHM, method=options.pop("rknn_method", "channel"),
                               fp16_layers=options.pop("rknn_fp16_layers", ()), hybrid=options.pop("rknn_hybrid", 0),
                               min_cosine=options.pop("min_cosine", None),
                               min_cosine_p1=options.pop("min_cosine_p1", None), venv=options.pop("rknn_venv", None),
                               fidelity_images=options.pop("fidelity_images", DEFAULT_FIDELITY_IMAGES),
                               reference_onnx=reference if use_distill else None)
    unknown = sorted(k for k in options if k != "progress")
    if unknown:
        raise ValueError(f"options not used by the rknn target: {unknown}")
    build = dict(report.pop("build"), calibration_file=report.pop("calibration_file"),
                 probe_file=report.pop("probe_file"), toolkit=report.pop("toolkit"))
    report["distillation"] = distill_info
    return build, report


def rknn_model_files(folder: Path, precision: str, model: nn.Module, hw: tuple[int, int], calibration: Any,
                     calib_method: str | None, opset: int, trained: bool, step: Callable[[str], None],
                     quant_options: dict) -> tuple[dict, dict | None, dict]:
    """The export pipeline's hook: (build record, calibration record, quantization report) of an rknn bundle."""
    if calibration is None:
        raise ValueError("--target rknn needs --calib DIR for every precision: INT8 calibrates on it and the "
                         "simulator's fidelity (fp16 too) is measured on its held-out crops")
    build, report = export_rknn(model, folder, hw, precision, calibration, calib_method, opset, trained, step,
                                dict(quant_options))
    calibration_info = None
    if precision == "int8":
        method = build["quantized_algorithm"] + ("+qad" if report.get("distillation") else "")
        calibration_info = {**report.pop("calibration"), "method": method}
    else:
        report.pop("calibration", None)
    return build, calibration_info, report
