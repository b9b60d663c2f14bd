"""``quantize()``: fp32 ONNX + calibration crops -> a backend's INT8 model files, with the fidelity report.

The steps, each in its own room: optional quantization-aware distillation (``_distill``), the backend's
PTQ (``onnxruntime`` / ``openvino`` / ``tensorrt``), fidelity on held-out crops (``fidelity``), mixed
precision to a cosine target (``mixed``), the latency check (``latency``). ``placement="auto"`` runs the
whole of it once per candidate placement and keeps the fastest that meets the fidelity target.
"""
from __future__ import annotations

import importlib
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .fidelity import (DEFAULT_FIDELITY_IMAGES, fidelity_data, fidelity_report, meets, onnx_embedder,
                       onnx_input_is_uint8, run_batches, short)
from .latency import compare_latency, warn_if_int8_slower
from .mixed import mixed_precision

BACKENDS = ("onnxruntime", "openvino", "tensorrt")
# Default method per backend: MinMax ranges (what the distillation simulates). For OpenVINO the
# ORT QDQ placement converted to IR measured far better than NNCF's presets on OSNet x0.25
# (cosine 0.992 vs 0.975, see quantize/openvino.py); the NNCF presets stay selectable.
DEFAULT_METHODS = {"onnxruntime": "minmax", "tensorrt": "minmax", "openvino": "minmax"}


class QuantizationError(RuntimeError):
    """Quantization could not produce a model (message says which backend step failed)."""


@dataclass
class QuantizationResult:
    """What :func:`quantize` produced: the method used, model files and a JSON-able report."""

    method: str
    files: list[str]
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def fidelity(self) -> dict | None:
        return self.report.get("fidelity")


def backend_module(name: str):
    """The backend's module (quantize_model, int8_runner, METHODS, MODEL_FILES, ...)."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return importlib.import_module(f"{__package__}.{name}")


def _checked(onnx_path, calibration_set, mod, backend: str, method: str | None, min_cosine, min_cosine_p1,
             distill, torch_model) -> tuple[Path, str, bool]:
    """Validate the arguments; returns (onnx path, method, whether to distill)."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"fp32 ONNX not found: {onnx_path}")
    if calibration_set is None or not hasattr(calibration_set, "model_input"):
        raise TypeError("calibration_set must be an osnet_edge.calibration.CalibrationSet "
                        "(INT8 ranges come from real person crops, never random data)")
    method = (method or DEFAULT_METHODS[backend]).lower()
    if method not in mod.METHODS:
        raise ValueError(f"{backend} calibration method must be one of {mod.METHODS}, got {method!r}")
    for name, val in (("min_cosine", min_cosine), ("min_cosine_p1", min_cosine_p1)):
        if val is not None and not 0.0 < float(val) <= 1.0:
            raise ValueError(f"{name} must be in (0, 1], got {val!r}")
    if distill not in (True, False, "auto"):
        raise ValueError(f"distill must be True, False or 'auto', got {distill!r}")
    if distill is True and torch_model is None:
        raise ValueError("distill=True needs torch_model (the FP32 network the ONNX was exported from)")
    return onnx_path, method, bool(torch_model is not None and distill in (True, "auto"))


def _distilled_source(mod, torch_model, calibration_set, onnx_path: Path, tmp: Path, method: str, steps, seed,
                      progress: bool, backend_options: dict, device: str = "cpu") -> tuple[Path, dict]:
    """Quantization-aware distillation simulating this backend's INT8 scheme; the student's ONNX."""
    from ._distill import distill_to_onnx

    return distill_to_onnx(
        torch_model, calibration_set, onnx_path, tmp / "distilled.onnx", scheme=mod.ACTIVATION_SCHEME,
        steps=steps, seed=seed, progress=progress, device=device, placement=backend_options.get("placement", "conv"),
        range_method="mse" if method == "mse" else "minmax",
        shift_nonnegative=bool(getattr(mod, "SHIFTS_NONNEGATIVE", False)
                               and backend_options.get("shift_nonnegative", True)),
        quantize_outputs=bool(getattr(mod, "QUANTIZES_OUTPUTS", True)))


def _record_target(fidelity: dict, min_cosine, min_cosine_p1, excluded: Sequence[str]) -> None:
    """Write the cosine target and whether it holds into the fidelity record (warns when it does not)."""
    if min_cosine is None:
        return
    fidelity["target_cosine_mean"] = float(min_cosine)
    if min_cosine_p1 is not None:
        fidelity["target_cosine_p1"] = float(min_cosine_p1)
    fidelity["meets_target"] = meets(fidelity, min_cosine, min_cosine_p1)
    if not fidelity["meets_target"]:
        warnings.warn(f"INT8 fidelity {fidelity['cosine_mean']:.4f} (p1 {fidelity['cosine_p1']:.4f}) is below "
                      f"the target {min_cosine} even with {len(excluded)} layer(s) in fp32")


def quantize(onnx_path: str | os.PathLike, calibration_set, backend: str, out_dir: str | os.PathLike,
             method: str | None = None, *, per_channel: bool = True, exclude: Sequence[str] = (),
             min_cosine: float | None = None, min_cosine_p1: float | None = None, max_kept_fp32: float = 0.25,
             fidelity_set=None, fidelity_images: int = DEFAULT_FIDELITY_IMAGES,
             distill: bool | str = "auto", torch_model=None, distill_steps: int | None = None,
             distill_seed: int = 0, distill_device: str = "cpu", measure_latency: bool = True,
             progress: bool = True, **backend_options: Any) -> QuantizationResult:
    """Quantize ``onnx_path`` (fp32) to INT8 for ``backend`` and write its model files to ``out_dir``.

    ``method``: onnxruntime/tensorrt ``minmax`` | ``entropy`` | ``percentile``; openvino NNCF preset
    ``mixed`` | ``performance``. ``exclude``: node names kept in fp32 (ORT nodes_to_exclude /
    NNCF ignored scope / no Q/DQ for TensorRT). ``min_cosine`` (and ``min_cosine_p1``): keep the most
    sensitive layers in fp32 until the held-out cosine mean (and 1st percentile) reach them, at most
    ``max_kept_fp32`` of the quantizable layers. ``distill``: True / False / "auto" (= when
    ``torch_model``, the FP32 torch network the ONNX came from, is given): quantization-aware
    distillation before PTQ, trained on ``distill_device`` (cpu, cuda[:N], auto). ``fidelity_set``: a
    CalibrationSet (or model-input array) to measure on; default ``calibration_set.holdout(fidelity_images)``.
    """
    common = dict(method=method, per_channel=per_channel, exclude=exclude, min_cosine=min_cosine,
                  min_cosine_p1=min_cosine_p1, max_kept_fp32=max_kept_fp32, fidelity_set=fidelity_set,
                  fidelity_images=fidelity_images, distill=distill, torch_model=torch_model,
                  distill_steps=distill_steps, distill_seed=distill_seed, distill_device=distill_device, progress=progress)
    if backend_options.get("placement") == "auto":
        return placement_search(onnx_path, calibration_set, backend, out_dir, **common,
                                **{k: v for k, v in backend_options.items() if k != "placement"})
    mod = backend_module(backend)
    onnx_path, method, use_distill = _checked(onnx_path, calibration_set, mod, backend, method, min_cosine,
                                              min_cosine_p1, distill, torch_model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fused = onnx_input_is_uint8(onnx_path)
    t_start = time.perf_counter()
    calib = calibration_set.model_input(fused=fused)
    fid_input, fid_info = fidelity_data(calibration_set, fidelity_set, fidelity_images, fused)
    reference = run_batches(onnx_embedder(onnx_path), fid_input)

    with tempfile.TemporaryDirectory(prefix="osnet_edge_quant_") as tmp:
        tmp = Path(tmp)
        source_onnx, distill_info = onnx_path, None
        if use_distill:
            source_onnx, distill_info = _distilled_source(mod, torch_model, calibration_set, onnx_path, tmp, method,
                                                          distill_steps, distill_seed, progress, backend_options,
                                                          device=distill_device)

        def attempt(excluded: Sequence[str], tag: str) -> tuple[Path, dict, np.ndarray]:
            work = tmp / tag
            work.mkdir()
            info = mod.quantize_model(str(source_onnx), calib, work, method=method, per_channel=per_channel,
                                      exclude=list(excluded), **backend_options)
            return work, info, run_batches(mod.int8_runner(work, threads=None), fid_input)

        excluded = list(exclude)
        work, info, emb = attempt(excluded, "q0")
        fidelity = fidelity_report(emb, reference)
        history = [{"kept_fp32": len(excluded), **short(fidelity)}]
        mixed = None
        if min_cosine is not None and not meets(fidelity, min_cosine, min_cosine_p1):
            found = mixed_precision(mod, attempt, source_onnx, calib, method, per_channel, excluded, fidelity,
                                    reference, min_cosine, min_cosine_p1, max_kept_fp32, history, backend_options)
            if found[0] is not None:
                work, info, emb, fidelity = found[:4]
            mixed = found[4]
            excluded = mixed["kept_fp32"]
        for name in mod.MODEL_FILES:
            shutil.copy2(work / name, out_dir / name)
        latency = _latency(mod, onnx_path, work, fid_input, backend) if measure_latency else None

    fidelity.update(fid_info)
    _record_target(fidelity, min_cosine, min_cosine_p1, excluded)
    report = {
        "backend": backend, "method": method, "per_channel": per_channel,
        "activation_scheme": mod.ACTIVATION_SCHEME, "weights": "int8 symmetric per output channel",
        "fidelity": fidelity, "kept_fp32": list(excluded), "num_quantizable_layers": info.get("num_quantizable"),
        "mixed_precision": mixed, "history": history, "distillation": distill_info,
        "options": {k: v for k, v in {**info.get("options", {}), **backend_options}.items()
                    if isinstance(v, (str, int, float, bool, list, type(None)))},
        "latency": latency, "seconds": round(time.perf_counter() - t_start, 1),
    }
    return QuantizationResult(method=method + ("+qad" if distill_info else ""), files=list(mod.MODEL_FILES),
                              report=report)


def _latency(mod, onnx_path: Path, work: Path, sample: np.ndarray, backend: str) -> dict:
    """The advisory latency check: never fails an export."""
    try:
        latency = compare_latency(mod, str(onnx_path), work, sample)
        warn_if_int8_slower(latency, backend)
        return latency
    except Exception as exc:
        return {"error": str(exc).splitlines()[0]}


# What "meets fidelity" means for the placement search when no --min-cosine is given: the Benchmark
# issue's cosine targets (mean / 1st percentile on held-out crops), under which Market-1501 moved <= 0.2 pt.
SEARCH_COSINE = (0.998, 0.995)
SEARCH_PLACEMENTS = {"onnxruntime": ("conv", "all"), "openvino": ("conv", "all"), "tensorrt": ("conv",)}


def placement_search(onnx_path, calibration_set, backend: str, out_dir, **options: Any) -> QuantizationResult:
    """``placement="auto"``: quantize with every candidate placement, time each INT8 model against FP32 at
    batch 1 on this machine, keep the fastest that meets the fidelity target (the most faithful when none
    does). The table of candidates is part of the report: the choice is a measurement, not a rule."""
    min_cos = options.get("min_cosine") or SEARCH_COSINE[0]
    min_p1 = options.get("min_cosine_p1") or (SEARCH_COSINE[1] if options.get("min_cosine") is None else None)
    rows, results = [], {}
    with tempfile.TemporaryDirectory(prefix="osnet_edge_placement_") as tmp:
        for placement in SEARCH_PLACEMENTS[backend]:
            result = quantize(onnx_path, calibration_set, backend, Path(tmp) / placement, placement=placement,
                              measure_latency=True, **options)
            fid, lat = result.report["fidelity"], result.report.get("latency") or {}
            rows.append({"placement": placement, "cosine_mean": round(fid["cosine_mean"], 5),
                         "cosine_p1": round(fid["cosine_p1"], 5), "int8_ms": lat.get("int8_ms"),
                         "fp32_ms": lat.get("fp32_ms"), "speedup": lat.get("speedup"),
                         "meets_fidelity": meets(fid, min_cos, min_p1)})
            results[placement] = result
        good = [r for r in rows if r["meets_fidelity"] and r["int8_ms"]]
        best = (min(good, key=lambda r: r["int8_ms"]) if good
                else max(rows, key=lambda r: (r["cosine_mean"] + r["cosine_p1"])))
        chosen = results[best["placement"]]
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in chosen.files:
            shutil.copy2(Path(tmp) / best["placement"] / name, out_dir / name)
    chosen.report["placement_search"] = {
        "candidates": rows, "chosen": best["placement"], "fidelity_target": [min_cos, min_p1],
        "rule": "fastest INT8 at batch 1 on the exporting machine among placements meeting the fidelity target "
                "(the most faithful if none does)"}
    return chosen


