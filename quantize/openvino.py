"""OpenVINO INT8 as IR (model.xml/.bin), two ways to place the FakeQuantize nodes.

* ``minmax`` / ``percentile`` / ``entropy`` (default ``minmax``): ONNX Runtime's static QDQ
  quantizer (U8 asymmetric activations, S8 symmetric per-channel weights), converted by
  ``ov.convert_model`` (Q/DQ pairs become FakeQuantize). Measured on x0.25 MSMT17 @ 256x128, 200
  cuhk03-val crops, plain PTQ: cosine vs FP32 0.992 mean / 0.970 p1, against 0.975 / 0.90 for
  NNCF's "mixed" preset at 128x64 (NNCF's ranges/placement hurt OSNet's thin streams).
* ``mixed`` / ``performance``: NNCF ``nncf.quantize`` presets (bias correction, subset size).

The OpenVINO CPU plugin turns FakeQuantize into int8 kernels (VNNI / AMX / AVX2) either way.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from osnet_edge.quiet import converter_output_silenced

RUNTIME = "openvino"
MODEL_FILES = ("model.xml", "model.bin")
NNCF_PRESETS = ("mixed", "performance")
QDQ_METHODS = ("minmax", "percentile", "entropy", "mse")
METHODS = QDQ_METHODS + NNCF_PRESETS
ACTIVATION_SCHEME = "uint8 asymmetric"


def _imports():
    try:
        import nncf
        import openvino as ov
    except ImportError as exc:
        raise ImportError("INT8 for openvino needs openvino and nncf: pip install 'osnet_edge[openvino,quantize]'") from exc
    return ov, nncf


def ov_names_for(ov_model, onnx_nodes: Sequence[str]) -> list[str]:
    """OpenVINO op names made from ONNX nodes (a Conv with bias becomes ``name/WithoutBiases`` + Add)."""
    wanted = set(onnx_nodes)
    out, found = [], set()
    for op in ov_model.get_ordered_ops():
        name = op.get_friendly_name()
        base = name.split("/", 1)[0]
        if base in wanted and op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul"):
            out.append(name)
            found.add(base)
    missing = sorted(wanted - found)
    if missing:
        raise ValueError(f"layers to keep in fp32 not found in the OpenVINO model: {missing[:10]}")
    return out


def quantize_model(src_onnx: str, calib: np.ndarray, work: Path, method: str = "mixed", per_channel: bool = True,
                   exclude: Sequence[str] = (), bias_correction: str = "fast", batch_size: int = 1,
                   **options: Any) -> dict:
    """NNCF ``quantize`` on the converted model; ``bias_correction``: fast | full | none."""
    if method in QDQ_METHODS:
        return _quantize_via_qdq(src_onnx, calib, work, method, per_channel, exclude, **options)
    ov, nncf = _imports()
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    if not per_channel:
        raise ValueError("NNCF quantizes OpenVINO weights per channel; per_channel=False is not supported")
    if bias_correction not in ("fast", "full", "none"):
        raise ValueError(f"bias_correction must be fast | full | none, got {bias_correction!r}")
    if options:
        raise ValueError(f"unknown quantization option(s) for openvino/NNCF: {sorted(options)}")
    model = ov.convert_model(str(src_onnx))
    n_quantizable = sum(op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul")
                        for op in model.get_ordered_ops())
    ignored = None
    if exclude:
        ignored = nncf.IgnoredScope(names=ov_names_for(model, exclude))
    preset = {"mixed": nncf.QuantizationPreset.MIXED, "performance": nncf.QuantizationPreset.PERFORMANCE}[method]
    batches = [calib[i:i + batch_size] for i in range(0, len(calib), batch_size)]
    with converter_output_silenced(loggers=("nncf",)):
        qmodel = nncf.quantize(
            model, nncf.Dataset(batches), preset=preset, subset_size=len(batches),
            fast_bias_correction=bias_correction == "fast", ignored_scope=ignored,
            advanced_parameters=AdvancedQuantizationParameters(
                disable_bias_correction=bias_correction == "none"))
    ov.save_model(qmodel, str(work / "model.xml"), compress_to_fp16=False)
    return {"num_quantizable": n_quantizable,
            "options": {"preset": method, "bias_correction": bias_correction, "subset_size": len(batches),
                        "nncf_version": nncf.__version__}}


def _quantize_via_qdq(src_onnx: str, calib: np.ndarray, work: Path, method: str, per_channel: bool,
                      exclude: Sequence[str], **options: Any) -> dict:
    """ORT U8S8 QDQ ONNX -> OpenVINO IR (FakeQuantize); the intermediate ONNX stays in ``work`` only."""
    try:
        import openvino as ov
    except ImportError as exc:
        raise ImportError("the openvino target needs openvino: pip install 'osnet_edge[openvino]'") from exc
    from .onnxruntime import quantize_qdq

    qdq_dir = work / "_qdq"
    qdq_dir.mkdir()
    info = quantize_qdq(src_onnx, calib, qdq_dir, method, per_channel, exclude, symmetric_activations=False,
                        options=dict(options))
    ov.save_model(ov.convert_model(str(qdq_dir / "model.onnx")), str(work / "model.xml"), compress_to_fp16=False)
    info["options"]["placement"] = "onnxruntime QDQ (U8S8) converted to OpenVINO FakeQuantize"
    return info


def _compile(model, threads: int | None):
    ov, _ = _imports()
    from osnet_edge.runtimes.openvino import compile_config

    compiled = ov.Core().compile_model(model, "CPU", compile_config("int8", "CPU", threads, "LATENCY", None))
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> np.ndarray:
        request.infer({0: x})
        return request.get_output_tensor(0).data.copy()
    return run


def fp32_runner(onnx_path: str, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    ov, _ = _imports()
    return _compile(ov.convert_model(onnx_path), threads)


def int8_runner(model_dir: Path, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """The IR as the Extractor's OpenVINO runtime compiles it (f32 inference precision, int8 layers)."""
    ov, _ = _imports()
    return _compile(ov.Core().read_model(str(Path(model_dir) / "model.xml")), threads)
