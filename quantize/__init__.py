"""INT8 post-training quantization for ONNX Runtime, OpenVINO and TensorRT, with honest fidelity.

One entry point, :func:`quantize` (``api``). Each backend lives in its own module and only turns an
fp32 ONNX + calibration crops into its INT8 model files (``onnxruntime``: QDQ ONNX U8S8,
``tensorrt``: QDQ ONNX S8S8 symmetric as TensorRT consumes it, ``openvino``: NNCF IR). The
shared logic lives once, each part in its own module:

* ``fidelity``: cosine of INT8 vs FP32 embeddings on *held-out* crops (never the calibration
  images), mean / 1st percentile / min;
* ``mixed``: accuracy-aware mixed precision (``min_cosine``): rank layers by how much quantization noise
  each adds, keep the worst in fp32, retry until the target holds; report the layers and the
  latency it cost;
* ``_distill``: optional quantization-aware distillation (``distill``, host side, torch): fine-tunes the
  weights on the calibration crops with simulated INT8 (fake quant) against the FP32 model as
  teacher, then quantizes the result. For thin networks such as OSNet x0.25 plain PTQ loses
  too much (issue 13); the report says when the deployed weights were distilled.
* ``latency``: a quick INT8-vs-FP32 latency check on this machine, with a warning when INT8 is slower.

Only the model files are written to ``out_dir``; temporary work happens elsewhere.
"""
from .api import (BACKENDS, DEFAULT_METHODS, QuantizationError, QuantizationResult, backend_module,
                  placement_search, quantize)
from .fidelity import (DEFAULT_FIDELITY_IMAGES, MIN_HELD_OUT, fidelity_data, fidelity_report, onnx_embedder,
                       onnx_input_is_uint8, ort_session, run_batches)
from .latency import compare_latency, cpu_int8_flags, warn_if_int8_slower
from .mixed import mixed_precision

__all__ = ["quantize", "QuantizationResult", "BACKENDS", "DEFAULT_METHODS", "fidelity_report",
           "QuantizationError", "DEFAULT_FIDELITY_IMAGES", "MIN_HELD_OUT", "backend_module", "compare_latency",
           "cpu_int8_flags", "fidelity_data", "mixed_precision", "onnx_embedder", "onnx_input_is_uint8",
           "ort_session", "placement_search", "run_batches", "warn_if_int8_slower"]
