"""INT8 fidelity, measured honestly: cosine of INT8 vs FP32 embeddings on held-out crops (never the
calibration images), mean / 1st percentile / min; and the fp32 ONNX reference that it compares against."""
from __future__ import annotations

import os
import warnings
from typing import Any, Callable

import numpy as np

DEFAULT_FIDELITY_IMAGES = 200
MIN_HELD_OUT = 16


def onnx_input_is_uint8(onnx_path: str | os.PathLike) -> bool:
    """True when the model has preprocessing fused (uint8 NHWC BGR input)."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    return proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8


def ort_session(path: str | os.PathLike, threads: int | None = None):
    """A CPU ONNX Runtime session (fp32 reference, QDQ models, calibration)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def run_batches(fn: Callable[[np.ndarray], np.ndarray], data: np.ndarray, batch_size: int = 32) -> np.ndarray:
    return np.concatenate([fn(data[i:i + batch_size]) for i in range(0, len(data), batch_size)])


def onnx_embedder(path: str | os.PathLike) -> Callable[[np.ndarray], np.ndarray]:
    sess = ort_session(path)
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def fidelity_report(int8: np.ndarray, fp32: np.ndarray) -> dict:
    """Cosine INT8 vs FP32 per image: mean, 1st percentile, min, and how many images."""
    from osnet_edge.verify import cosine_rows

    cos = cosine_rows(np.asarray(int8, np.float64), np.asarray(fp32, np.float64))
    return {"cosine_mean": float(cos.mean()), "cosine_p1": float(np.percentile(cos, 1)),
            "cosine_min": float(cos.min()), "num_images": int(len(cos))}


def fidelity_data(calibration_set, fidelity_set, fidelity_images: int, fused: bool) -> tuple[np.ndarray, dict]:
    """Held-out model input + a description. Falls back (loudly) to the calibration images."""
    info: dict[str, Any]
    if fidelity_set is None:
        try:
            fidelity_set = calibration_set.holdout(fidelity_images)
            if fidelity_set.num_images < MIN_HELD_OUT:
                raise ValueError(f"only {fidelity_set.num_images} held-out images")
        except ValueError as exc:
            warnings.warn(f"INT8 fidelity measured on the CALIBRATION images ({exc}): use a calibration folder "
                          f"with more than --calib-size + {MIN_HELD_OUT} images for an honest held-out figure")
            fidelity_set = calibration_set
            info = {"held_out": False}
        else:
            info = {"held_out": True}
    elif isinstance(fidelity_set, np.ndarray):
        return fidelity_set, {"held_out": True, "source": "array", "num_images": len(fidelity_set)}
    else:
        info = {"held_out": True}
    desc = fidelity_set.describe()
    info.update({"source": desc["source"], "sha256": desc["sha256"]})
    return fidelity_set.model_input(fused=fused), info


def short(f: dict) -> dict:
    return {k: round(f[k], 5) for k in ("cosine_mean", "cosine_p1", "cosine_min")}


def meets(fid: dict, min_cos: float | None, min_p1: float | None) -> bool:
    return ((min_cos is None or fid["cosine_mean"] >= min_cos)
            and (min_p1 is None or fid["cosine_p1"] >= min_p1))


def score(fid: dict, min_cos: float | None, min_p1: float | None) -> tuple:
    return (meets(fid, min_cos, min_p1), fid["cosine_mean"] + fid["cosine_p1"])
