"""INT8 post-training quantization for ONNX Runtime, OpenVINO and TensorRT, with honest fidelity.

One entry point, :func:`quantize`. Each backend lives in its own module and only turns an
fp32 ONNX + calibration crops into its INT8 model files (``onnxruntime``: QDQ ONNX U8S8,
``tensorrt``: QDQ ONNX S8S8 symmetric as TensorRT consumes it, ``openvino``: NNCF IR). The
shared logic lives here once:

* fidelity: cosine of INT8 vs FP32 embeddings on *held-out* crops (never the calibration
  images), mean / 1st percentile / min;
* accuracy-aware mixed precision (``min_cosine``): rank layers by how much quantization noise
  each adds, keep the worst in fp32, retry until the target holds; report the layers and the
  latency it cost;
* optional quantization-aware distillation (``distill``, host side, torch): fine-tunes the
  weights on the calibration crops with simulated INT8 (fake quant) against the FP32 model as
  teacher, then quantizes the result. For thin networks such as OSNet x0.25 plain PTQ loses
  too much (issue 13); the report says when the deployed weights were distilled.
* a quick INT8-vs-FP32 latency check on this machine, with a warning when INT8 is slower.

Only the model files are written to ``out_dir``; temporary work happens elsewhere.
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
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["quantize", "QuantizationResult", "BACKENDS", "DEFAULT_METHODS", "fidelity_report",
           "QuantizationError"]

BACKENDS = ("onnxruntime", "openvino", "tensorrt")
# Default method per backend: MinMax ranges (what the distillation simulates). For OpenVINO the
# ORT QDQ placement converted to IR measured far better than NNCF's presets on OSNet x0.25
# (cosine 0.992 vs 0.975, see quantize/openvino.py); the NNCF presets stay selectable.
DEFAULT_METHODS = {"onnxruntime": "minmax", "tensorrt": "minmax", "openvino": "minmax"}
DEFAULT_FIDELITY_IMAGES = 200
MIN_HELD_OUT = 16


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


def _backend(name: str):
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return importlib.import_module(f".{name}", __name__)


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


def _fidelity_data(calibration_set, fidelity_set, fidelity_images: int, fused: bool) -> tuple[np.ndarray, dict]:
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


def _time_ms(fn: Callable[[], Any], budget_s: float = 0.6) -> float:
    """Median ms of ``fn`` (a few warm-up calls, then ~budget_s of timing)."""
    from osnet_edge.verify import time_call

    return float(np.median(time_call(fn, warmup=3, min_time=budget_s, max_iters=300, min_iters=10)))


def compare_latency(backend_mod, fp32_onnx: str, model_dir: Path, sample: np.ndarray, budget_s: float = 0.6) -> dict:
    """INT8 vs FP32 latency at batch 1 on this machine, both on the backend's own runtime, interleaved."""
    f_fp32 = backend_mod.fp32_runner(fp32_onnx, threads=None)
    f_int8 = backend_mod.int8_runner(model_dir, threads=None)
    one = sample[:1]
    fp32_ms, int8_ms = [], []
    for _ in range(2):  # interleave so that load from other processes hits both alike
        fp32_ms.append(_time_ms(lambda: f_fp32(one), budget_s / 2))
        int8_ms.append(_time_ms(lambda: f_int8(one), budget_s / 2))
    fp32, int8 = float(np.median(fp32_ms)), float(np.median(int8_ms))
    return {"batch": 1, "fp32_ms": round(fp32, 3), "int8_ms": round(int8, 3),
            "speedup": round(fp32 / int8, 3) if int8 > 0 else None, "runtime": backend_mod.RUNTIME,
            "cpu_flags": cpu_int8_flags(), "note": "quick check at export; scripts/bench_int8.py for a full benchmark"}


def warn_if_int8_slower(latency: dict, backend: str) -> None:
    """The export-time latency check's verdict: INT8 that is slower than FP32 here is said loudly."""
    if latency.get("int8_ms") and latency.get("fp32_ms") and latency["int8_ms"] > latency["fp32_ms"]:
        warnings.warn(f"INT8 is SLOWER than FP32 on this machine for {backend} "
                      f"({latency['int8_ms']:.2f} vs {latency['fp32_ms']:.2f} ms at batch 1; CPU "
                      f"flags {', '.join(latency['cpu_flags']) or 'none'}): prefer the fp32/fp16 bundle "
                      "here unless the target device has INT8 acceleration")


def cpu_int8_flags() -> list[str]:
    """The CPU features that decide INT8 speed (VNNI, AMX, AVX-512, AVX2), as /proc/cpuinfo lists them."""
    wanted = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16", "avx512_bf16",
              "fma", "asimddp", "i8mm")
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    have = set(line.split(":", 1)[1].split())
                    return [w for w in wanted if w in have]
    except OSError:
        pass
    return []


def quantize(onnx_path: str | os.PathLike, calibration_set, backend: str, out_dir: str | os.PathLike,
             method: str | None = None, *, per_channel: bool = True, exclude: Sequence[str] = (),
             min_cosine: float | None = None, min_cosine_p1: float | None = None, max_kept_fp32: float = 0.25,
             fidelity_set=None, fidelity_images: int = DEFAULT_FIDELITY_IMAGES,
             distill: bool | str = "auto", torch_model=None, distill_steps: int | None = None,
             distill_seed: int = 0, measure_latency: bool = True, progress: bool = True,
             **backend_options: Any) -> QuantizationResult:
    """Quantize ``onnx_path`` (fp32) to INT8 for ``backend`` and write its model files to ``out_dir``.

    ``method``: onnxruntime/tensorrt ``minmax`` | ``entropy`` | ``percentile``; openvino NNCF preset
    ``mixed`` | ``performance``. ``exclude``: node names kept in fp32 (ORT nodes_to_exclude /
    NNCF ignored scope / no Q/DQ for TensorRT). ``min_cosine`` (and ``min_cosine_p1``): keep the most
    sensitive layers in fp32 until the held-out cosine mean (and 1st percentile) reach them, at most
    ``max_kept_fp32`` of the quantizable layers. ``distill``: True / False / "auto" (= when
    ``torch_model``, the FP32 torch network the ONNX came from, is given): quantization-aware
    distillation before PTQ. ``fidelity_set``: a CalibrationSet (or model-input array) to measure on;
    default ``calibration_set.holdout(fidelity_images)``.
    """
    if backend_options.get("placement") == "auto":
        return _placement_search(onnx_path, calibration_set, backend, out_dir, method=method, per_channel=per_channel,
                                 exclude=exclude, min_cosine=min_cosine, min_cosine_p1=min_cosine_p1,
                                 max_kept_fp32=max_kept_fp32, fidelity_set=fidelity_set,
                                 fidelity_images=fidelity_images, distill=distill, torch_model=torch_model,
                                 distill_steps=distill_steps, distill_seed=distill_seed, progress=progress,
                                 **{k: v for k, v in backend_options.items() if k != "placement"})
    mod = _backend(backend)
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
    use_distill = bool(torch_model is not None and distill in (True, "auto"))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fused = onnx_input_is_uint8(onnx_path)
    t_start = time.perf_counter()

    calib = calibration_set.model_input(fused=fused)
    fid_input, fid_info = _fidelity_data(calibration_set, fidelity_set, fidelity_images, fused)
    reference = run_batches(onnx_embedder(onnx_path), fid_input)

    with tempfile.TemporaryDirectory(prefix="osnet_edge_quant_") as tmp:
        tmp = Path(tmp)
        source_onnx, distill_info = onnx_path, None
        if use_distill:
            from ._distill import distill_to_onnx

            source_onnx, distill_info = distill_to_onnx(
                torch_model, calibration_set, onnx_path, tmp / "distilled.onnx", scheme=mod.ACTIVATION_SCHEME,
                steps=distill_steps, seed=distill_seed, progress=progress,
                placement=backend_options.get("placement", "conv"),
                range_method="mse" if method == "mse" else "minmax",
                shift_nonnegative=bool(getattr(mod, "SHIFTS_NONNEGATIVE", False)
                                       and backend_options.get("shift_nonnegative", True)),
                quantize_outputs=bool(getattr(mod, "QUANTIZES_OUTPUTS", True)))

        def attempt(excluded: Sequence[str], tag: str) -> tuple[Path, dict, np.ndarray]:
            work = tmp / tag
            work.mkdir()
            info = mod.quantize_model(str(source_onnx), calib, work, method=method, per_channel=per_channel,
                                      exclude=list(excluded), **backend_options)
            emb = run_batches(mod.int8_runner(work, threads=None), fid_input)
            return work, info, emb

        excluded = list(exclude)
        work, info, emb = attempt(excluded, "q0")
        fidelity = fidelity_report(emb, reference)
        history = [{"kept_fp32": len(excluded), **_short(fidelity)}]
        mixed = None
        if min_cosine is not None and not _meets(fidelity, min_cosine, min_cosine_p1):
            found = _mixed_precision(
                mod, attempt, source_onnx, calib, method, per_channel, excluded, fidelity, reference,
                min_cosine, min_cosine_p1, max_kept_fp32, history, backend_options)
            if found[0] is not None:
                work, info, emb, fidelity = found[:4]
            mixed = found[4]
            excluded = mixed["kept_fp32"]
        files = mod.MODEL_FILES
        for name in files:
            shutil.copy2(work / name, out_dir / name)
        latency = None
        if measure_latency:
            try:
                latency = compare_latency(mod, str(onnx_path), work, fid_input)
                warn_if_int8_slower(latency, backend)
            except Exception as exc:  # timing is advisory; never fail an export on it
                latency = {"error": str(exc).splitlines()[0]}

    fidelity.update(fid_info)
    if min_cosine is not None:
        fidelity["target_cosine_mean"] = float(min_cosine)
        if min_cosine_p1 is not None:
            fidelity["target_cosine_p1"] = float(min_cosine_p1)
        fidelity["meets_target"] = _meets(fidelity, min_cosine, min_cosine_p1)
        if not fidelity["meets_target"]:
            warnings.warn(f"INT8 fidelity {fidelity['cosine_mean']:.4f} (p1 {fidelity['cosine_p1']:.4f}) is below "
                          f"the target {min_cosine} even with {len(excluded)} layer(s) in fp32")
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


# What "meets fidelity" means for the placement search when no --min-cosine is given: the Benchmark
# issue's cosine targets (mean / 1st percentile on held-out crops), under which Market-1501 moved <= 0.2 pt.
SEARCH_COSINE = (0.998, 0.995)
SEARCH_PLACEMENTS = {"onnxruntime": ("conv", "all"), "openvino": ("conv", "all"), "tensorrt": ("conv",)}


def _placement_search(onnx_path, calibration_set, backend: str, out_dir, **options: Any) -> QuantizationResult:
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
                         "meets_fidelity": _meets(fid, min_cos, min_p1)})
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


def _short(f: dict) -> dict:
    return {k: round(f[k], 5) for k in ("cosine_mean", "cosine_p1", "cosine_min")}


def _meets(fid: dict, min_cos: float | None, min_p1: float | None) -> bool:
    return ((min_cos is None or fid["cosine_mean"] >= min_cos)
            and (min_p1 is None or fid["cosine_p1"] >= min_p1))


def _score(fid: dict, min_cos: float | None, min_p1: float | None) -> tuple:
    return (_meets(fid, min_cos, min_p1), fid["cosine_mean"] + fid["cosine_p1"])


def _mixed_precision(mod, attempt, source_onnx, calib, method, per_channel, excluded, fidelity, reference,
                     min_cos, min_p1, max_kept_fraction, history, backend_options):
    """Keep the most noise-adding layers in fp32, doubling their number until the target holds."""
    from .sensitivity import layer_sensitivity

    ranking = layer_sensitivity(str(source_onnx), calib, symmetric=mod.ACTIVATION_SCHEME == "int8 symmetric",
                                per_channel=per_channel, exclude=excluded,
                                placement=backend_options.get("placement", "conv"))
    candidates = [r["node"] for r in ranking if r["node"] not in excluded]
    limit = max(1, int(max_kept_fraction * len(ranking)))
    best = None
    k, step = 1, 0
    while True:
        step += 1
        keep = excluded + candidates[:k]
        work, info, emb = attempt(keep, f"mp{step}")
        fid = fidelity_report(emb, reference)
        history.append({"kept_fp32": len(keep), **_short(fid)})
        if best is None or _score(fid, min_cos, min_p1) > _score(best[3], min_cos, min_p1):
            best = (work, info, emb, fid, keep)
        if _meets(fid, min_cos, min_p1) or k >= min(limit, len(candidates)):
            break
        k = min(k * 2, limit, len(candidates))
    if _score(fidelity, min_cos, min_p1) >= _score(best[3], min_cos, min_p1):
        best = (None, None, None, fidelity, excluded)  # keeping layers in fp32 did not help: all-int8 stays
    work, info, emb, fid, keep = best
    mixed = {"kept_fp32": keep, "sensitivity_top": ranking[:min(20, len(ranking))],
             "ranking_method": "per-layer added quantization noise (1 - cosine of each layer output, "
                               "int8 vs fp32, minus that of its input), measured with ONNX Runtime QDQ",
             "attempts": step}
    return work, info, emb, fid, mixed
