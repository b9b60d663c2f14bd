"""LiteRT full-integer INT8 (and fp16 weights) for the litert target, with ai-edge-quantizer.

Unlike the ONNX backends, the source here is the torch model: litert-torch converts it to a
float .tflite (osnet_edge.export.tflite), and ai-edge-quantizer's static recipe (int8 weights symmetric
per output channel, int8 asymmetric activations; TFLite's int8 scheme) calibrates every tensor's
MinMax range on the project's calibration crops. Trained weights first go through the shared
quantization-aware distillation: TFLite's int8 asymmetric activations have the same grid as the
"uint8 asymmetric" scheme the distillation simulates (zero point shifted by 128).

The INT8 model takes and returns int8 (or uint8 crops for fused bundles): the runtime quantizes
its input and dequantizes its output with the file's own parameters, so callers see float32.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from osnet_edge.quiet import converter_output_silenced

RUNTIME = "litert"
MODEL_FILES = ("model.tflite",)
METHODS = ("minmax",)
# TFLite int8: activations asymmetric int8 (same grid as uint8 asymmetric), weights symmetric per channel
ACTIVATION_SCHEME = "uint8 asymmetric"
# Full-integer TFLite quantizes every tensor, the gate MLP and products included: the distillation
# simulates that placement ("all"), not the ONNX backends' "conv" placement.
PLACEMENT = "all"


def _imports():
    try:
        from ai_edge_litert.interpreter import Interpreter
        from ai_edge_quantizer import quantizer, recipe
    except ImportError as exc:
        raise ImportError("INT8/fp16 for litert needs ai-edge-quantizer: pip install 'osnet_edge[litert-export]'") from exc
    return quantizer, recipe, Interpreter


def _quiet():
    """ai-edge-quantizer prints progress bars and a size report per call."""
    return converter_output_silenced(stderr=True)


def to_model_input(x: np.ndarray) -> np.ndarray:
    """Calibration-set model input -> this target's: NCHW float32 becomes NHWC (uint8 NHWC stays)."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.dtype == np.float32 and x.shape[1] == 3 else x


def _signature(float_path: str | Path) -> tuple[str, str]:
    _, _, Interpreter = _imports()
    signatures = Interpreter(model_path=str(float_path)).get_signature_list()
    key = next(iter(signatures))
    return key, signatures[key]["inputs"][0]


def quantize_tflite(float_path: str | Path, calib: np.ndarray, out_path: str | Path) -> dict[str, Any]:
    """Static full-integer INT8 of ``float_path`` calibrated on ``calib`` (NHWC model input).

    Ranges are the true min/max over all calibration crops, as the ONNX backends and the
    distillation compute them. ai-edge-quantizer's default merges per-crop ranges by a moving
    average, which clips every crop whose range exceeds the average: measured on x0.25 @ 128x64,
    a gate's pooled input clipped by 25 % on a held-out crop, and cosine to fp32 0.90 (0.999 with
    true min/max ranges, same file otherwise).
    """
    quantizer, recipe, _ = _imports()
    from ai_edge_quantizer import calibrator
    from ai_edge_quantizer.utils import qsv_utils

    key, name = _signature(float_path)
    with _quiet():
        q = quantizer.Quantizer(str(float_path), recipe.static_wi8_ai8())
        cal = calibrator.Calibrator(Path(float_path).read_bytes(), num_threads=1,
                                    qsv_update_func=qsv_utils.min_max_update)
        cal.calibrate({key: [{name: calib[i:i + 1]} for i in range(len(calib))]}, q._recipe_manager)
        ranges = cal.get_model_qsvs()
        widened = widen_constant_ranges(ranges)
        q.quantize(ranges).export_model(str(out_path), overwrite=True)
    return {"recipe": "static_wi8_ai8 (ai-edge-quantizer), ranges: min/max over all calibration crops",
            "calibration_images": int(len(calib)), "constant_tensors_widened": widened}


# A tensor that is constant on every calibration crop (a gate whose ReLU is always 0) gets a
# ~1e-12 scale; XNNPACK refuses requantization scales below 2^-32 and the model fails to load.
MIN_RANGE = 1e-3


def widen_constant_ranges(ranges: dict, min_range: float = MIN_RANGE) -> int:
    """In place: activation ranges narrower than ``min_range`` grow to it (around their value, keeping 0
    inside); returns how many. The value itself stays exactly representable."""
    widened = 0
    for qsv in ranges.values():
        if not isinstance(qsv, dict) or "min" not in qsv or "max" not in qsv:
            continue
        lo, hi = np.asarray(qsv["min"], dtype=np.float32), np.asarray(qsv["max"], dtype=np.float32)
        narrow = (hi - lo) < min_range
        if narrow.any():
            qsv["min"] = np.where(narrow, np.minimum(lo, 0.0) - min_range / 2, lo).astype(np.float32)
            qsv["max"] = np.where(narrow, np.maximum(hi, 0.0) + min_range / 2, hi).astype(np.float32)
            widened += 1
    return widened


def fp16_tflite(float_path: str | Path, out_path: str | Path) -> dict[str, Any]:
    """fp16 weights, fp32 compute: half the file; XNNPACK unpacks the weights once at load."""
    quantizer, _, _ = _imports()
    from ai_edge_quantizer import qtyping, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    manager = recipe_manager.RecipeManager()
    manager.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                   algorithm_key=AlgorithmName.FLOAT_CASTING)
    with _quiet():
        quantizer.Quantizer(str(float_path), manager.get_quantization_recipe()).quantize().export_model(
            str(out_path), overwrite=True)
    return {"recipe": "fp16 weight-only float casting (ai-edge-quantizer)"}


def runner(model_path: str | Path, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """Embeddings of an NHWC batch with the osnet_edge LiteRT runtime's own load and I/O rules."""
    from osnet_edge.runtimes.litert import LiteRtRuntime

    return LiteRtRuntime.from_file(str(model_path), threads=threads).infer


def fp32_runner(model_path: str, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    return runner(model_path, threads)


def int8_runner(model_dir: Path, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    return runner(Path(model_dir) / "model.tflite", threads)


def quantize_from_torch(model, calibration_set, out_dir: str | Path, input_hw: tuple[int, int],
                        fuse_preprocess: bool = False, distill: bool = True, distill_steps: int | None = None,
                        distill_seed: int = 0, distill_device: str = "cpu", fidelity_set=None,
                        fidelity_images: int | None = None,
                        measure_latency: bool = True, progress: bool = True, method: str | None = None,
                        **unsupported: Any):
    """torch model -> INT8 model.tflite in ``out_dir``, with the same fidelity report as the ONNX
    backends (cosine INT8 vs the fp32 .tflite on held-out crops) and the INT8-vs-FP32 latency."""
    import tempfile

    from osnet_edge.export.tflite import to_tflite

    from .api import QuantizationResult
    from .fidelity import DEFAULT_FIDELITY_IMAGES, fidelity_data, fidelity_report, run_batches
    from .latency import compare_latency, warn_if_int8_slower

    if method not in (None, *METHODS):
        raise ValueError(f"litert calibration method must be one of {METHODS}, got {method!r}")
    bad = {k: v for k, v in unsupported.items() if v not in (None, (), [], False)}
    if bad:
        raise ValueError(f"litert INT8 does not support {', '.join(sorted(bad))} (mixed precision and layer "
                         "exclusion exist for the ONNX targets); export without them")
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    calib = to_model_input(calibration_set.model_input(fused=fuse_preprocess))
    fid_input, fid_info = fidelity_data(calibration_set, fidelity_set, fidelity_images or DEFAULT_FIDELITY_IMAGES,
                                         fuse_preprocess)
    fid_input = to_model_input(fid_input)
    with tempfile.TemporaryDirectory(prefix="osnet_edge_litert_") as tmp:
        tmp = Path(tmp)
        fp32_path = tmp / "fp32.tflite"
        conversion = to_tflite(model, fp32_path, input_hw, fuse_preprocess=fuse_preprocess, for_int8=True)
        reference = run_batches(fp32_runner(str(fp32_path)), fid_input)
        source, distill_info = fp32_path, None
        if distill:
            from ._distill import distill_on_training_threads

            student, distill_info = distill_on_training_threads(
                model, calibration_set.float32(), ACTIVATION_SCHEME, steps=distill_steps, seed=distill_seed,
                progress=progress, placement=PLACEMENT, fixed_sigmoid_grid=True, device=distill_device)
            source = tmp / "distilled.tflite"
            to_tflite(student, source, input_hw, fuse_preprocess=fuse_preprocess, for_int8=True)
        work = tmp / "q0"
        work.mkdir()
        info = quantize_tflite(source, calib, work / "model.tflite")
        emb = run_batches(int8_runner(work), fid_input)
        fidelity = fidelity_report(emb, reference)
        fidelity.update(fid_info)
        latency = None
        if measure_latency:
            try:
                latency = compare_latency(sys.modules[__name__], str(fp32_path), work, fid_input)
            except Exception as exc:  # timing is advisory
                latency = {"error": str(exc).splitlines()[0]}
            else:
                warn_if_int8_slower(latency, RUNTIME)
        for name in MODEL_FILES:
            (out_dir / name).write_bytes((work / name).read_bytes())
    report = {"backend": RUNTIME, "method": "minmax", "per_channel": True, "activation_scheme": "int8 asymmetric",
              "weights": "int8 symmetric per output channel", "fidelity": fidelity, "kept_fp32": [],
              "mixed_precision": None, "distillation": distill_info, "options": info, "conversion": conversion,
              "latency": latency, "seconds": round(time.perf_counter() - t_start, 1)}
    return QuantizationResult(method="minmax" + ("+qad" if distill_info else ""), files=list(MODEL_FILES),
                              report=report)
