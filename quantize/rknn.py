"""Rockchip NPU (rknn-toolkit2): fp32 ONNX + our calibration crops -> model.rknn, with simulator fidelity.

The toolkit runs in its own venv (``osnet_edge.toolchains.rknn``); this module prepares the files it wants and
reads back what it did. Settings the toolkit exposes and that we measure (docs/rknn.md has the table):
``algorithm`` normal | mmse | kl_divergence (activation ranges), ``method`` channel | layer (weight scales),
``fp16_layers`` (hybrid quantization: the named layers stay float16) or ``hybrid`` N (the N layers that lose
most in the toolkit's own per-layer accuracy analysis stay float16). The model takes uint8 RGB NHWC with
ImageNet mean/std fused (``config(mean_values, std_values)``); batch 1 static (the toolkit rejects a dynamic
batch). Fidelity: cosine of the simulator's INT8 (or fp16) embeddings vs ONNX Runtime fp32 on held-out crops
(never the calibration images), the same record every other INT8 bundle carries.

The calibration crops go into the bundle (``rknn_calibration.npz``): the x86 simulator refuses a model loaded
from .rknn, so verifying a bundle there means rebuilding it, and the rebuild must see the same crops.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from osnet_edge.preprocess import IMAGENET_MEAN, IMAGENET_STD, Normalizer

from .fidelity import DEFAULT_FIDELITY_IMAGES, fidelity_data, fidelity_report, meets, onnx_embedder, run_batches, short

PLATFORMS = ("rk3588", "rk3576", "rk3566", "rk3568", "rk3562", "rv1106", "rv1103")
# fp16 needs the float path of the bigger NPUs; the toolkit refuses it for RV1106 / RV1103 (INT8 only there).
PLATFORM_PRECISIONS = {p: ("int8",) if p.startswith("rv") else ("fp16", "int8") for p in PLATFORMS}
ALGORITHMS = ("normal", "mmse", "kl_divergence")
METHODS = ("channel", "layer")
MODEL_FILE = "model.rknn"
CALIBRATION_FILE = "rknn_calibration.npz"
# A few held-out crops and the simulator's raw rows for them: a rebuild (rknn-sim) must reproduce them. The
# .rknn bytes themselves differ between identical builds (~1000 bytes of in-memory addresses), the rows do not.
PROBE_FILE = "rknn_probe.npz"
PROBE_IMAGES = 4
ACTIVATION_SCHEME = "int8 asymmetric (w8a8: weights int8 symmetric per channel, activations int8 affine)"
DEFAULT_ALGORITHM = "normal"
DEFAULT_CALIBRATION_IMAGES = 100


def build_config(onnx_path: str | os.PathLike, input_size: Sequence[int], platform: str, precision: str = "int8",
                 algorithm: str = DEFAULT_ALGORITHM, method: str = "channel", optimization_level: int = 3,
                 fp16_layers: Sequence[str] = ()) -> dict[str, Any]:
    """The toolkit settings of one build (validated): what the manifest records and the simulator replays."""
    if platform not in PLATFORMS:
        raise ValueError(f"rknn platform must be one of {PLATFORMS}, got {platform!r}")
    if precision not in PLATFORM_PRECISIONS[platform]:
        raise ValueError(f"{platform} supports precision {PLATFORM_PRECISIONS[platform]} with rknn-toolkit2, "
                         f"got {precision!r}")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"rknn quantized_algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    if method not in METHODS:
        raise ValueError(f"rknn quantized_method must be one of {METHODS}, got {method!r}")
    if optimization_level not in (0, 1, 2, 3):
        raise ValueError(f"rknn optimization_level must be 0..3, got {optimization_level!r}")
    h, w = (int(v) for v in input_size)
    config = {"platform": platform, "precision": precision, "input_name": _input_name(onnx_path),
              "input_size": [h, w], "input": "uint8 RGB NHWC (1, H, W, 3), mean/std fused",
              "mean_values": [round(255.0 * m, 4) for m in IMAGENET_MEAN],
              "std_values": [round(255.0 * s, 4) for s in IMAGENET_STD], "optimization_level": optimization_level}
    if precision == "int8":
        config.update(quantized_dtype="w8a8", quantized_algorithm=algorithm, quantized_method=method,
                      fp16_layers=list(fp16_layers))
    return config


def _input_name(onnx_path) -> str:
    import onnx

    return onnx.load(str(onnx_path), load_external_data=False).graph.input[0].name


def write_calibration(calibration_set, path: str | os.PathLike) -> dict:
    """The calibration crops as the toolkit sees them (uint8 RGB NHWC), plus their description."""
    crops = np.ascontiguousarray(calibration_set.uint8()[..., ::-1])
    np.savez_compressed(path, crops=crops)
    return calibration_set.describe()


def _job(config: dict, onnx_path, work: Path, dataset: Path | None, **extra: Any) -> dict:
    job = {k: v for k, v in config.items() if k != "input"}
    job.update(onnx=str(Path(onnx_path).resolve()), dataset=str(dataset) if dataset else None, **extra)
    return job


def simulate_crops(config: dict, onnx_path, dataset: Path | None, crops_bgr: np.ndarray, work: Path,
                   venv=None, export: Path | None = None, log_path=None) -> tuple[np.ndarray, dict]:
    """Build (+ export) in the venv and run the simulator on BGR NHWC uint8 crops: (raw embeddings, facts)."""
    from osnet_edge.toolchains.rknn import run_worker

    inputs, output = work / "sim_in.npy", work / "sim_out.npy"
    np.save(inputs, np.ascontiguousarray(crops_bgr[..., ::-1]))
    job = _job(config, onnx_path, work, dataset, export=str(export) if export else None,
               simulate={"inputs": str(inputs), "output": str(output)})
    facts = run_worker(job, venv=venv, log_path=log_path)
    return np.load(output), facts


def layer_sensitivity(config: dict, onnx_path, dataset: Path, crops_bgr: np.ndarray, work: Path, venv=None,
                      count: int = 4) -> list[dict]:
    """The toolkit's accuracy_analysis on ``count`` crops: per-layer cosine of INT8 vs float, worst first."""
    from osnet_edge.toolchains.rknn import run_worker

    inputs = work / "analysis_in.npy"
    np.save(inputs, np.ascontiguousarray(crops_bgr[:count, ..., ::-1]))
    job = _job(dict(config, fp16_layers=[]), onnx_path, work, dataset,
               accuracy_analysis={"inputs": str(inputs), "output_dir": str(work / "snapshot"), "count": count})
    layers = run_worker(job, venv=venv)["accuracy_analysis"]["layers"]
    return sorted(layers, key=lambda row: row["single_cosine"])


def quantize_rknn(onnx_path: str | os.PathLike, calibration_set, out_dir: str | os.PathLike, platform: str = "rk3588",
                  precision: str = "int8", algorithm: str = DEFAULT_ALGORITHM, method: str = "channel",
                  fp16_layers: Sequence[str] = (), hybrid: int = 0, optimization_level: int = 3,
                  fidelity_set=None, fidelity_images: int = DEFAULT_FIDELITY_IMAGES, min_cosine: float | None = None,
                  min_cosine_p1: float | None = None, venv=None, log_path=None, reference_onnx=None) -> dict:
    """Convert ``onnx_path`` (fp32, unfused) to ``out_dir/model.rknn``; returns the report for the manifest.

    ``hybrid`` > 0 ranks layers with the toolkit's accuracy analysis and keeps the ``hybrid`` worst in float16
    (added to ``fp16_layers``). Fidelity is measured in the x86 simulator on held-out crops, against ONNX Runtime
    fp32 on ``reference_onnx`` (default ``onnx_path``; the original network when ``onnx_path`` holds distilled weights).
    """
    import tempfile

    if isinstance(hybrid, bool) or not isinstance(hybrid, int) or hybrid < 0:
        raise ValueError(f"hybrid must be a non-negative int (layers kept in float16), got {hybrid!r}")
    if precision == "int8" and (calibration_set is None or not hasattr(calibration_set, "uint8")):
        raise TypeError("rknn INT8 needs calibration_set, an osnet_edge.calibration.CalibrationSet of real person "
                        "crops (--calib)")
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"fp32 ONNX not found: {onnx_path}")
    input_size = calibration_set.input_size if calibration_set is not None else _onnx_hw(onnx_path)
    config = build_config(onnx_path, input_size, platform, precision, algorithm, method, optimization_level,
                          fp16_layers)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    fid_bgr, fid_info = _fidelity_crops(calibration_set, fidelity_set, fidelity_images)
    reference = run_batches(onnx_embedder(reference_onnx or onnx_path), Normalizer()(fid_bgr))
    with tempfile.TemporaryDirectory(prefix="osnet_edge_rknn_q_") as tmp:
        work = Path(tmp)
        dataset, calibration = None, None
        if precision == "int8":
            dataset = out_dir / CALIBRATION_FILE
            calibration = write_calibration(calibration_set, dataset)
            if hybrid:
                # ranked on calibration crops: the held-out crops stay unseen until the fidelity measurement
                ranked = layer_sensitivity(config, onnx_path, dataset, calibration_set.uint8(), work, venv)
                extra = [row["name"] for row in ranked if row["name"] not in config["fp16_layers"]][:hybrid]
                config["fp16_layers"] = list(config["fp16_layers"]) + extra
                config["hybrid_ranking"] = [{k: row[k] for k in ("name", "type", "single_cosine")}
                                            for row in ranked[:max(hybrid, 10)]]
        emb, facts = simulate_crops(config, onnx_path, dataset, fid_bgr, work, venv, export=out_dir / MODEL_FILE,
                                    log_path=log_path)
    np.savez_compressed(out_dir / PROBE_FILE, crops=fid_bgr[:PROBE_IMAGES], embeddings=emb[:PROBE_IMAGES])
    fidelity = fidelity_report(emb, reference)
    fidelity.update(fid_info, measured_in="rknn-toolkit2 x86 simulator, rebuilt from model.onnx",
                    reference="onnxruntime fp32 (model.onnx)")
    if min_cosine is not None:
        fidelity.update(target_cosine_mean=float(min_cosine), meets_target=meets(fidelity, min_cosine, min_cosine_p1))
        if min_cosine_p1 is not None:
            fidelity["target_cosine_p1"] = float(min_cosine_p1)
    files = [MODEL_FILE, PROBE_FILE] + ([CALIBRATION_FILE] if precision == "int8" else [])
    return {"backend": "rknn", "build": config, "fidelity": fidelity, "calibration": calibration,
            "calibration_file": CALIBRATION_FILE if precision == "int8" else None, "probe_file": PROBE_FILE,
            "toolkit": {k: facts.get(k) for k in ("toolkit_version", "build_seconds", "simulate_seconds",
                                                   "rknn_sha256", "rknn_bytes", "num_calibration_images")},
            "files": files, "seconds": round(time.perf_counter() - start, 1), "summary": short(fidelity)}


def _onnx_hw(onnx_path) -> tuple[int, int]:
    import onnx

    dims = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return int(dims[2].dim_value), int(dims[3].dim_value)


def _fidelity_crops(calibration_set, fidelity_set, fidelity_images: int) -> tuple[np.ndarray, dict]:
    """Held-out BGR uint8 NHWC crops (what the Extractor feeds a fused bundle) and their description."""
    if isinstance(fidelity_set, np.ndarray):
        if fidelity_set.dtype != np.uint8 or fidelity_set.ndim != 4 or fidelity_set.shape[-1] != 3:
            raise ValueError(f"fidelity_set array must be (N, H, W, 3) uint8 BGR crops, got {fidelity_set.shape} "
                             f"{fidelity_set.dtype}")
        return fidelity_set, {"held_out": True, "source": "array", "num_images": len(fidelity_set)}
    if calibration_set is None and fidelity_set is None:
        raise ValueError("rknn fidelity needs crops: pass calibration_set (its held-out crops are used) or fidelity_set")
    return fidelity_data(calibration_set, fidelity_set, fidelity_images, fused=True)


__all__ = ["ALGORITHMS", "CALIBRATION_FILE", "METHODS", "MODEL_FILE", "PLATFORMS", "PROBE_FILE", "PLATFORM_PRECISIONS",
           "build_config", "layer_sensitivity", "quantize_rknn", "simulate_crops", "write_calibration"]
