"""LiteRT full-integer INT8 (and fp16 weights) for the litert target, with ai-edge-quantizer.

Unlike the ONNX backends, the source here is the torch model: litert-torch converts it to a
float .tflite (osnet_edge.export.tflite), and ai-edge-quantizer's static recipe (int8 weights symmetric
per output channel, int8 asymmetric activations; TFLite's int8 scheme) calibrates every tensor's
MinMax range on the project's calibration crops. Trained weights first go through the shared
quantization-aware distillation: TFLite's int8 asymmetric activations have the same grid as the
"uint8 asymmetric" scheme the distillation simulates (zero point shifted by 128).

Two placements. ``all`` (full-integer, the default): every tensor int8, the file an int8-only
accelerator or TFLite Micro can run. ``conv`` (partial-integer): int8 only in the feature-map
convolutions (and the stem's pad + max pool, exact in int8), with the aggregation gate (pool, 1x1
MLP on a 1x1 tensor, sigmoid), the gate products, stream/residual sums and the fc in float32: the
ONNX backends' default placement, where nearly all of the multiply-adds still run in int8.

A third form, ``method="dynamic"`` (dynamic-range): int8 weights per output channel in the 1x1/7x7
convolutions and the fc, activations quantized by XNNPACK on every call from their own min/max, so
no range is fixed in advance. Measured on x0.25 @ 256x128 (200 held-out crops, 150 QAD steps for the
static forms): cosine 0.9988 mean / 0.9966 p1, against full-integer's 0.9942 / 0.9843 and the partial
form's 0.9954 / 0.9917 (ONNX Runtime's QDQ at the same placement: 0.9986): keeping the gates in float is
not what TFLite's static int8 is missing.

The full-integer model takes and returns int8 (or uint8 crops for fused bundles): the runtime
quantizes its input and dequantizes its output with the file's own parameters, so callers see
float32. The partial-integer model takes and returns float32 (uint8 when fused).
"""
from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from osnet_edge.quiet import converter_output_silenced

RUNTIME = "litert"
MODEL_FILES = ("model.tflite",)
# minmax: static ranges calibrated on the crops; dynamic: int8 weights, activation ranges measured by
# XNNPACK on every call (no calibration, no distillation: nothing static to simulate)
METHODS = ("minmax", "dynamic")
# TFLite int8: activations asymmetric int8 (same grid as uint8 asymmetric), weights symmetric per channel
ACTIVATION_SCHEME = "uint8 asymmetric"
# Full-integer TFLite quantizes every tensor, the gate MLP and products included: the distillation
# simulates that placement ("all"); "conv" is the partial-integer form (see the module docstring).
PLACEMENTS = ("all", "conv")
DEFAULT_PLACEMENT = "all"
# ops quantized by the partial-integer form: the convolutions on feature maps, and the stem's zero pad +
# max pool between two of them (exact in int8: both only move or compare values already on the grid)
PARTIAL_INTEGER_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "PAD", "MAX_POOL_2D")


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


def gate_op_outputs(float_path: str | Path) -> list[str]:
    """Output tensor names of the aggregation gates' 1x1 MLP: the convolutions whose input is a 1x1
    (pooled) tensor. litert-torch turns fc1 into a CONV_2D and fc2 (one hidden channel at x0.25) into a
    DEPTHWISE_CONV_2D; both are kept float by the ``conv`` placement, as the ONNX one does."""
    _, _, Interpreter = _imports()
    interp = Interpreter(model_path=str(float_path))
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    names = []
    for op in interp._get_ops_details():
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            shape = tensors[op["inputs"][0]]["shape"]
            if len(shape) == 4 and shape[1] == 1 and shape[2] == 1:
                names += [tensors[i]["name"] for i in op["outputs"]]
    return names


def int8_recipe(float_path: str | Path, placement: str = DEFAULT_PLACEMENT) -> list[dict[str, Any]]:
    """ai-edge-quantizer recipe of a placement: int8 weights symmetric per output channel, int8
    asymmetric activations, on every supported op (``all``) or on :data:`PARTIAL_INTEGER_OPS` minus the
    gate MLP (``conv``)."""
    from ai_edge_quantizer import qtyping, recipe, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    if placement not in PLACEMENTS:
        raise ValueError(f"litert INT8 placement must be one of {PLACEMENTS}, got {placement!r}")
    if placement == "all":
        return recipe.static_wi8_ai8()
    manager = recipe_manager.RecipeManager()
    for op in PARTIAL_INTEGER_OPS:
        manager.add_static_config(regex=".*", operation_name=getattr(qtyping.TFLOperationName, op),
                                  activation_num_bits=8, weight_num_bits=8)
    gates = gate_op_outputs(float_path)
    if gates:  # the latest matching config wins: these stay float
        # an op's scope is its output names joined by ";", with a trailing ";"
        manager.add_quantization_config(regex="^(?:" + "|".join(re.escape(n) for n in gates) + ");$",
                                        operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                        algorithm_key=AlgorithmName.NO_QUANTIZE)
    return manager.get_quantization_recipe()


def quantize_tflite(float_path: str | Path, calib: np.ndarray, out_path: str | Path,
                    placement: str = DEFAULT_PLACEMENT) -> dict[str, Any]:
    """Static INT8 of ``float_path`` calibrated on ``calib`` (NHWC model input), full-integer
    (``placement="all"``) or partial-integer (``"conv"``).

    Ranges are the true min/max over all calibration crops, as the ONNX backends and the
    distillation compute them. ai-edge-quantizer's default merges per-crop ranges by a moving
    average, which clips every crop whose range exceeds the average: measured on x0.25 @ 128x64,
    a gate's pooled input clipped by 25 % on a held-out crop, and cosine to fp32 0.90 (0.999 with
    true min/max ranges, same file otherwise).
    """
    quantizer, _, _ = _imports()
    from ai_edge_quantizer import calibrator
    from ai_edge_quantizer.utils import qsv_utils

    key, name = _signature(float_path)
    with _quiet():
        q = quantizer.Quantizer(str(float_path), int8_recipe(float_path, placement))
        cal = calibrator.Calibrator(Path(float_path).read_bytes(), num_threads=1,
                                    qsv_update_func=qsv_utils.min_max_update)
        cal.calibrate({key: [{name: calib[i:i + 1]} for i in range(len(calib))]}, q._recipe_manager)
        ranges = cal.get_model_qsvs()
        widened = widen_constant_ranges(ranges)
        q.quantize(ranges).export_model(str(out_path), overwrite=True)
    described = ("static_wi8_ai8" if placement == "all" else
                 "static int8 on " + "/".join(PARTIAL_INTEGER_OPS) + " except the gate MLP; the rest float32")
    return {"recipe": f"{described} (ai-edge-quantizer), ranges: min/max over all calibration crops",
            "placement": placement, "calibration_images": int(len(calib)), "constant_tensors_widened": widened}


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


# XNNPACK has no dynamically quantized depthwise kernel: with DEPTHWISE_CONV_2D in the recipe its 78
# nodes fell to the reference kernels in 31 partitions (measured); they stay float32 (a small share of
# the multiply-adds)
DYNAMIC_OPS = ("CONV_2D", "FULLY_CONNECTED")


def dynamic_tflite(float_path: str | Path, out_path: str | Path) -> dict[str, Any]:
    """Dynamic-range INT8: int8 weights (symmetric per output channel) on :data:`DYNAMIC_OPS`,
    activations quantized per call by the runtime; no calibration crops needed."""
    quantizer, _, _ = _imports()
    from ai_edge_quantizer import qtyping, recipe_manager

    manager = recipe_manager.RecipeManager()
    for op in DYNAMIC_OPS:
        manager.add_dynamic_config(regex=".*", operation_name=getattr(qtyping.TFLOperationName, op), num_bits=8)
    with _quiet():
        quantizer.Quantizer(str(float_path), manager.get_quantization_recipe()).quantize().export_model(
            str(out_path), overwrite=True)
    return {"recipe": "dynamic int8 on " + "/".join(DYNAMIC_OPS) + " (ai-edge-quantizer); depthwise float32",
            "placement": "dynamic"}


def _form(method: str, placement: str) -> dict[str, str]:
    """How the file is integer, for the report."""
    if method == "dynamic":
        return {"integer": "dynamic-range (int8 weights; activations quantized per call; depthwise, gates, "
                           "products, sums float32)", "activation_scheme": "int8 asymmetric, ranges per call"}
    return {"integer": "full" if placement == "all" else "partial (float32 gate MLP, products, sums, fc)",
            "activation_scheme": "int8 asymmetric"}


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
                        placement: str | None = None, **unsupported: Any):
    """torch model -> INT8 model.tflite in ``out_dir``, with the same fidelity report as the ONNX
    backends (cosine INT8 vs the fp32 .tflite on held-out crops) and the INT8-vs-FP32 latency.
    ``placement``: ``all`` (full-integer, default) or ``conv`` (partial-integer); ``method="dynamic"``:
    dynamic-range (see the module)."""
    import tempfile

    from osnet_edge.export.tflite import to_tflite

    from .api import QuantizationResult
    from .fidelity import DEFAULT_FIDELITY_IMAGES, fidelity_data, fidelity_report, run_batches
    from .latency import compare_latency, warn_if_int8_slower

    if method not in (None, *METHODS):
        raise ValueError(f"litert calibration method must be one of {METHODS}, got {method!r}")
    method = method or "minmax"
    if method == "dynamic" and placement not in (None, "dynamic"):
        raise ValueError("litert dynamic-range INT8 has no placement (its quantized ops are fixed: "
                         f"{', '.join(DYNAMIC_OPS)}); drop placement={placement!r}")
    placement = "dynamic" if method == "dynamic" else (placement or DEFAULT_PLACEMENT)
    if placement not in (*PLACEMENTS, "dynamic"):
        raise ValueError(f"litert INT8 placement must be one of {PLACEMENTS}, got {placement!r}")
    distill = distill and method != "dynamic"  # the distillation simulates fixed ranges
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
                progress=progress, placement=placement, fixed_sigmoid_grid=placement == "all", device=distill_device)
            source = tmp / "distilled.tflite"
            to_tflite(student, source, input_hw, fuse_preprocess=fuse_preprocess, for_int8=True)
        work = tmp / "q0"
        work.mkdir()
        info = (dynamic_tflite(source, work / "model.tflite") if method == "dynamic"
                else quantize_tflite(source, calib, work / "model.tflite", placement))
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
    report = {"backend": RUNTIME, "method": method, "placement": placement, **_form(method, placement),
              "per_channel": True, "weights": "int8 symmetric per output channel", "fidelity": fidelity, "kept_fp32": [],
              "mixed_precision": None, "distillation": distill_info, "options": info, "conversion": conversion,
              "latency": latency, "seconds": round(time.perf_counter() - t_start, 1)}
    return QuantizationResult(method=method + ("+qad" if distill_info else ""), files=list(MODEL_FILES),
                              report=report)
