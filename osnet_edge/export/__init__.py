"""The export stage (host side, torch): OSNet -> checked ONNX / OpenVINO IR / TFLite -> a verified bundle.

Rooms: ``onnx`` (torch -> ONNX, fp16 ONNX, OpenVINO IR), ``tflite`` (torch -> LiteRT flatbuffer and its exact
rewrites), ``hygiene`` (the weight rule both apply), ``pipeline`` (``export_bundle``: one target, one precision,
one bundle). Imports go one way: pipeline -> onnx / tflite -> hygiene; quantize/ uses onnx and tflite, never pipeline.
"""
from .hygiene import NEGLIGIBLE_WEIGHT, flush_negligible_weights
from .onnx import (DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, ExportError, FusedPreprocess, convert_fp16,
                   save_openvino_ir, to_onnx)
from .pipeline import GRAPH_FORMS, TARGET_PRECISIONS, UNADAPTED_DROP, export_bundle, warn_if_unadapted
from ..models import random_model

__all__ = ["DEFAULT_OPSET", "ExportError", "FusedPreprocess", "GRAPH_FORMS", "INPUT_NAME", "NEGLIGIBLE_WEIGHT",
           "OUTPUT_NAME", "TARGET_PRECISIONS", "UNADAPTED_DROP", "convert_fp16", "export_bundle",
           "flush_negligible_weights", "random_model", "save_openvino_ir", "to_onnx", "warn_if_unadapted"]
