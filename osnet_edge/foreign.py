"""Foreign re-ID models as peers and teachers: any ONNX or OpenVINO IR embedding model.

Open Model Zoo person-reidentification-retail-* take BGR 0-255 (mean/scale inside the IR)
and give 256-d; third-party OSNet ONNX exports take RGB ImageNet-normalised input. The
caller states the convention; crops go through the same resize as the Extractor, so
peers are compared on equal terms. Device side: numpy + the runtime, no torch.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .extractor import as_crop_list, l2_normalize
from .preprocess import DEFAULT_INTERPOLATION, Normalizer, resize_batch

INPUT_FORMATS = ("bgr255", "rgb_imagenet")


class ForeignModel:
    """Embeds crops with a foreign ONNX (ONNX Runtime) or IR (OpenVINO, .xml) model.

    Static batch-1 models are reshaped to a dynamic batch where the runtime allows it
    (OpenVINO), else run image by image.
    """

    def __init__(self, path: str | os.PathLike, input_format: str = "bgr255", threads: int | None = None,
                 interpolation: str = DEFAULT_INTERPOLATION, name: str | None = None) -> None:
        if input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format must be one of {INPUT_FORMATS}, got {input_format!r}")
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"foreign model not found: {self.path}")
        self.name = name or self.path.stem
        self.input_format, self.interpolation = input_format, interpolation
        self._normalize = Normalizer() if input_format == "rgb_imagenet" else None
        if self.path.suffix == ".xml":
            self._open_openvino(threads)
        elif self.path.suffix == ".onnx":
            self._open_onnxruntime(threads)
        else:
            raise ValueError(f"{self.path}: expected an .onnx or OpenVINO .xml model")

    def _open_openvino(self, threads: int | None) -> None:
        from osnet_edge.runtimes.openvino import _import, compile_config

        ov = _import()
        core = ov.Core()
        model = core.read_model(str(self.path))
        shape = model.inputs[0].get_partial_shape()
        self.input_size = (shape[2].get_length(), shape[3].get_length())
        self.dim = model.outputs[0].get_partial_shape()[1].get_length()
        self.runtime = "openvino"
        config = compile_config("fp32", "CPU", threads, "LATENCY", None)
        as_shipped = core.compile_model(model, "CPU", config)
        flexible = core.read_model(str(self.path))   # a separate copy: the compiled one keeps its shape
        flexible.reshape({flexible.inputs[0].get_any_name(): [-1, 3, *self.input_size]})
        dynamic = core.compile_model(flexible, "CPU", config)
        # Some vendor IRs break when their batch is made dynamic (person-reidentification-retail-0265
        # returns NaN): keep the batch the model was shipped with unless a probe proves them equal.
        probe = np.random.default_rng(0).uniform(0, 255, (2, 3, *self.input_size)).astype(np.float32)
        ref = np.concatenate([as_shipped([probe[i:i + 1]])[0] for i in range(len(probe))])
        got = dynamic([probe])[0]
        self._batch_static = not (np.all(np.isfinite(got)) and
                                  np.allclose(got, ref, rtol=1e-3, atol=1e-3 * float(np.abs(ref).max())))
        self._compiled = as_shipped if self._batch_static else dynamic
        del as_shipped, dynamic
        self._request = self._compiled.create_infer_request()

    def _open_onnxruntime(self, threads: int | None) -> None:
        from osnet_edge.runtimes.onnxruntime import open_session

        self._session = open_session(str(self.path), "cpu", threads)
        inp = self._session.get_inputs()[0]
        self._input = inp.name
        self.input_size = (int(inp.shape[2]), int(inp.shape[3]))
        self.dim = int(self._session.get_outputs()[0].shape[1])
        self.runtime = "onnxruntime"
        self._batch_static = isinstance(inp.shape[0], int)

    @property
    def batch_mode(self) -> str:
        """"dynamic" (one call per batch) or "static" (the model's own batch of 1, one call per image)."""
        return "static" if self._batch_static else "dynamic"

    def _run_once(self, batch: np.ndarray) -> np.ndarray:
        if self.runtime == "openvino":
            self._request.infer({0: batch})
            return self._request.get_output_tensor(0).data.copy()
        return self._session.run(None, {self._input: batch})[0]

    def infer_raw(self, batch: np.ndarray) -> np.ndarray:
        if not self._batch_static:
            return self._run_once(batch)
        if not len(batch):
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate([self._run_once(batch[i:i + 1]) for i in range(len(batch))])

    def model_input(self, crops: list[np.ndarray]) -> np.ndarray:
        uint8 = resize_batch(crops, self.input_size, self.interpolation)
        if self._normalize is not None:
            return self._normalize(uint8)
        return np.ascontiguousarray(uint8.transpose(0, 3, 1, 2), dtype=np.float32)

    def __call__(self, crops: Any, batch_size: int = 32) -> np.ndarray:
        crops = as_crop_list(crops)
        out = np.empty((len(crops), self.dim), dtype=np.float32)
        for s in range(0, len(crops), batch_size):
            chunk = crops[s:s + batch_size]
            out[s:s + len(chunk)] = self.infer_raw(self.model_input(chunk))
        return l2_normalize(out)


def known_peers(data_root: str | os.PathLike) -> dict[str, dict]:
    """The vendor/third-party peers in ../shared/data/weights that exist: name -> ForeignModel kwargs."""
    root = Path(data_root) / "weights"
    def omz(model: str, precision: str) -> Path:
        name = f"person-reidentification-retail-{model}"
        return root / "openvino-omz" / name / precision / f"{name}.xml"

    cands = {
        "omz-0265-fp16": (omz("0265", "FP16"), "bgr255"),
        "omz-0265-fp16-int8": (omz("0265", "FP16-INT8"), "bgr255"),
        "omz-0277-fp16": (omz("0277", "FP16"), "bgr255"),
        "omz-0286-fp16": (omz("0286", "FP16"), "bgr255"),
        "omz-0287-fp32": (omz("0287", "FP32"), "bgr255"),
        "omz-0287-fp16-int8": (omz("0287", "FP16-INT8"), "bgr255"),
        "omz-0288-fp32": (omz("0288", "FP32"), "bgr255"),
        "boxmot-osnet_x0_25-onnx": (root / "onnx-boxmot/osnet_x0_25_msmt17.onnx", "rgb_imagenet"),
    }
    return {name: {"path": str(p), "input_format": fmt, "name": name} for name, (p, fmt) in cands.items() if p.is_file()}
