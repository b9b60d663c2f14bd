"""The export stage: torch OSNet -> checked model for a target runtime and precision -> a bundle."""
from __future__ import annotations

import contextlib
import logging
import os
import platform
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .. import __version__
from ..bundle import PRECISIONS, RANDOM_WEIGHTS_SEED, TARGETS, Bundle, BundleWriter
from ..models import FEATURE_DIM, build_osnet, input_size, load_torchreid_weights, random_model
from ..notices import RandomWeightsWarning, UnadaptedResolutionWarning, random_weights_advice
from ..preprocess import DEFAULT_INTERPOLATION, IMAGENET_MEAN, IMAGENET_STD
from ..provenance import portable_calibration, portable_record
from ..tuning import DEFAULT_FIDELITY_TARGET
from .graph import DEFAULT_GLOBAL_POOL, check_global_pool
from .onnx import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, convert_fp16, save_openvino_ir, to_onnx

log = logging.getLogger("osnet_edge.export")

# Precisions each target can honour. bf16 is an OpenVINO CPU execution hint (fp32 IR).
TARGET_PRECISIONS = {"onnxruntime": ("fp32", "fp16", "int8"), "openvino": ("fp32", "fp16", "bf16", "int8"),
                     "tensorrt": ("fp32", "fp16", "int8"), "litert": ("fp32", "fp16", "int8"),
                     "rknn": ("fp16", "int8")}  # per platform: quantize.rknn.PLATFORM_PRECISIONS


# Measured (scripts/evaluate.py, Market-1501 protocol): what exporting full-resolution weights at a
# reduced resolution without adaptation costs. Quoted by the export warning.
UNADAPTED_DROP = ("x0.25 Market-1501 checkpoint at res 0.5 on Market-1501: rank-1 91.5 -> 27.3 %, "
                  "mAP 77.4 -> 11.0 %")


# The graph form each target gets (osnet_edge.models.merged has the exact stream-merged forms).
# Measured, x0.25, 1 thread, batch 1 / 8, 128x64 and 256x128 (scripts/bench/graph_forms.py, LiteRT:
# docs/benchmark.md): no merged form is faster where it matters. ONNX Runtime 0.82-1.05x at batch 1,
# 0.67-0.87x at batch 8; OpenVINO 0.96-1.18x at batch 1, 0.68-0.97x at batch 8; LiteRT 0.86-0.96x
# at batch 1. The plain graph keeps per-stream tensors in cache; the runtimes already fold BN and
# fuse Conv+ReLU, so fewer nodes buy little. Every target therefore ships the plain graph.
GRAPH_FORMS = {"onnxruntime": "plain", "openvino": "plain", "tensorrt": "plain", "litert": "plain", "rknn": "plain"}



def _versions(target: str) -> dict[str, str]:
    import onnx

    out = {"osnet_edge": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
           "python": platform.python_version()}
    for pkg in {"onnxruntime": ["onnxruntime"], "openvino": ["openvino"],
                "tensorrt": ["onnxruntime"], "litert": [], "rknn": ["onnxruntime"]}[target]:
        with contextlib.suppress(Exception):
            mod = __import__(pkg)
            out[pkg] = getattr(mod, "__version__", None) or mod.get_version()
    if target == "litert":
        from .tflite import litert_versions

        out.update(litert_versions())
    return out


def warn_if_unadapted(weights: str | os.PathLike | None, adaptation: Any, res: float) -> None:
    """Warn (:class:`UnadaptedResolutionWarning`) when ``weights`` (a checkpoint; None: a model passed
    in) are exported at a resolution they were not trained or adapted for: full-resolution weights
    lose most of their accuracy at res < 1."""
    h, w = input_size(res)
    adapted_res = adaptation.get("res") if isinstance(adaptation, dict) else None
    if adaptation and (adapted_res is None or abs(float(adapted_res) - res) < 1e-9):
        return
    if adapted_res is not None:
        what = f"was adapted for res {float(adapted_res):g}, not for res {res:g} ({h}x{w})"
    elif res < 1:
        what = (f"holds full-resolution (256x128) weights without adaptation, exported at res {res:g} ({h}x{w}): "
                f"accuracy drops sharply (measured, {UNADAPTED_DROP})")
    else:
        return
    source = "the model" if weights is None else str(weights)
    warnings.warn(f"{source} {what}. Adapt the weights to this resolution first: osnet-edge adapt "
                  f"--weights {weights or 'CKPT'} --res {res:g} --data CROPS_DIR --out adapted.pth, then export "
                  "adapted.pth", UnadaptedResolutionWarning, stacklevel=3)


def _input_layout(target: str, fused: bool) -> str:
    """The model input tensor: fused bundles take uint8 NHWC crops; LiteRT takes NHWC, the others NCHW."""
    if fused:
        return "NHWC uint8"
    return "NHWC float32" if target == "litert" else "NCHW float32"


def _preprocess_description(fused: bool, layout: str = "NCHW") -> str:
    """The pipeline in words, so that a tool reading only the manifest feeds the model right."""
    head = "crops are BGR uint8 (OpenCV order), resized to input_size (H, W); "
    if fused:
        return head + ("the model takes them as NHWC uint8 and itself reverses the channels, scales to [0, 1] "
                       "and normalises with mean/std (given in RGB order)")
    return head + ("then reversed to RGB, scaled to [0, 1] and normalised with mean/std (RGB order) into the "
                   f"model's {layout} float32 input")


# Checkpoints adapted below 256x128 (osnet-edge adapt): INT8 keeps its most sensitive layers in fp32 until the held-out cosine reaches
# this (issue 27: the adapted 128x64 lost 0.39 rank-1 on ONNX Runtime at cosine 0.9983; at 0.999, 8 layers in
# fp32, cosine 0.9987 and 0.25). An explicit min_cosine wins (0 turns it off).
REDUCED_RES_MIN_COSINE = 0.999


def _export_onnx_family(model: nn.Module, folder: Path, hw: tuple[int, int], target: str, precision: str,
                        fuse_preprocess: bool, calibration: Any, calib_method: str | None, opset: int, max_batch: int,
                        trained: bool, step: Callable[[str], None], progress: bool,
                        quant_options: dict, global_pool: str = DEFAULT_GLOBAL_POOL
                        ) -> tuple[dict, dict | None, dict | None]:
    """model.onnx (onnxruntime, tensorrt) or model.xml/.bin (openvino) in ``folder``; returns
    (build info, calibration info, quantization report)."""
    onnx_path = folder / "model.onnx"
    step(f"exporting ONNX (opset {opset}, input {hw[0]}x{hw[1]}, dynamic batch)")
    fp32_path = to_onnx(model, folder / "model_fp32.onnx", hw, opset, fuse_preprocess, global_pool=global_pool)
    calibration_info, quant_report, build = None, None, {}
    if precision == "int8":
        from ..quantize import quantize

        step(f"quantizing for {target} with {calibration.num_images} calibration images")
        teacher = model if trained or quant_options.get("distill") is True else None
        if quant_options.get("min_cosine") == 0:  # explicitly off
            quant_options["min_cosine"] = None
        elif getattr(model, "adaptation", None) and hw[0] * hw[1] < 256 * 128 and quant_options.get("min_cosine") is None:
            quant_options["min_cosine"] = REDUCED_RES_MIN_COSINE
            step(f"reduced resolution: layers kept in fp32 until cosine >= {REDUCED_RES_MIN_COSINE} (--min-cosine)")
        quant_options.setdefault("progress", progress or log.isEnabledFor(logging.INFO))
        result = quantize(fp32_path, calibration, target, folder, method=calib_method, torch_model=teacher,
                          **quant_options)
        calibration_info = {**calibration.describe(), "method": result.method}
        quant_report = result.report
    elif target == "openvino":
        step("converting to OpenVINO IR" + (" (fp16 weights)" if precision == "fp16" else ""))
        save_openvino_ir(fp32_path, folder / "model.xml", fp16=(precision == "fp16"))
    elif precision == "fp16":
        step("converting ONNX to fp16 (fp32 inputs/outputs)")
        convert_fp16(fp32_path, onnx_path)
    if not onnx_path.exists():
        os.replace(fp32_path, onnx_path)
    elif fp32_path.exists():
        fp32_path.unlink()
    if target == "tensorrt":
        build = {"strongly_typed": True, "min_batch": 1, "max_batch": max_batch, "opt_batch": min(8, max_batch),
                 "workspace_mib": 1024,
                 "engine": "built on the device at first load (or osnet-edge build-engine) and cached in "
                           "engines/ inside the bundle (cache_dir= / $OSNET_EDGE_ENGINE_CACHE elsewhere), keyed "
                           "by GPU + compute capability + TensorRT version + ONNX sha256"}
    return build, calibration_info, quant_report


def _export_litert(model: nn.Module, folder: Path, hw: tuple[int, int], precision: str, fuse_preprocess: bool,
                   calibration: Any, calib_method: str | None, trained: bool, step: Callable[[str], None],
                   progress: bool, quant_options: dict) -> tuple[dict, dict | None]:
    """model.tflite in ``folder`` straight from torch (export.tflite); returns (build info, quantization
    report). The build info records the conversion, its exact rewrites and XNNPACK's coverage of the file."""
    from ..runtimes.litert import LiteRtRuntime
    from .tflite import MODEL_FILE, to_tflite

    path, quant_report = folder / MODEL_FILE, None
    if precision == "int8":
        from ..quantize.litert import quantize_from_torch

        step(f"quantizing for litert with {calibration.num_images} calibration images")
        distill = quant_options.pop("distill", "auto")
        distill = trained if distill == "auto" else bool(distill)
        quant_options.setdefault("progress", progress or log.isEnabledFor(logging.INFO))
        result = quantize_from_torch(model, calibration, folder, hw, fuse_preprocess=fuse_preprocess, distill=distill,
                                     method=calib_method, **quant_options)
        quant_report = dict(result.report, method_used=result.method)
        conversion = quant_report.pop("conversion")
    else:
        step(f"converting to LiteRT (litert-torch, NHWC input {hw[0]}x{hw[1]})")
        conversion = to_tflite(model, path, hw, fuse_preprocess=fuse_preprocess)
        if precision == "fp16":
            from ..quantize.litert import fp16_tflite

            step("storing the weights as fp16")
            fp32_path = folder / "model_fp32.tflite"
            os.replace(path, fp32_path)
            conversion["fp16"] = fp16_tflite(fp32_path, path)
            fp32_path.unlink()
    runtime = LiteRtRuntime.from_file(str(path), threads=1)
    coverage = runtime.coverage()
    runtime.close()
    if coverage["undelegated_ops"]:
        left = ", ".join(f"{k} x{v}" for k, v in coverage["undelegated_ops"].items())
        log.info("XNNPACK leaves %s on LiteRT's reference kernels (%d partitions)", left, coverage["partitions"])
    return {**conversion, "xnnpack": coverage}, quant_report


def _check_request(target: str, precision: str, max_batch: int, calibration: Any, variants: Sequence[str] = ()) -> None:
    """The target / precision / batch / calibration combination, checked before any work."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision not in TARGET_PRECISIONS[target]:
        raise ValueError(f"target {target} supports precisions {TARGET_PRECISIONS[target]}, not {precision!r}")
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"max_batch must be a positive int, got {max_batch!r}")
    if precision == "int8" and calibration is None:
        raise ValueError("--precision int8 needs a calibration set of person crops (--calib DIR): "
                         "INT8 ranges come from real images, never from random data")
    if precision != "int8" and "int8" not in variants and calibration is not None and target != "rknn":
        raise ValueError("a calibration set is only used with --precision int8 (or an int8 variant)")
    if precision == "bf16":
        from ..runtimes.openvino import cpu_supports_bf16
        if not cpu_supports_bf16():
            warnings.warn("this CPU has no bf16 support: the bundle will not load here")


def _resolve_model(model: nn.Module | None, width: float, variant: str, weights, res: float, random_seed: int,
                   allow_unsafe_pickle: bool, step: Callable[[str], None]) -> tuple[nn.Module, float, str, dict | None,
                                                                                      int | None]:
    """The network to export: ``model`` as given, a checkpoint loaded into a new OSNet, or seeded random
    weights (warned about). Returns (model, width, variant, weights record, random seed)."""
    weights_info, seed = None, None
    if model is None and weights is not None:
        model = build_osnet(width, variant)
        step(f"loading weights {weights}")
        info = load_torchreid_weights(model, weights, allow_unsafe_pickle=allow_unsafe_pickle)
        weights_info = {"source": str(Path(weights).resolve()), "sha256": info["sha256"]}
        if info.get("adaptation"):
            model.adaptation = info["adaptation"]
        warn_if_unadapted(weights, info.get("adaptation"), float(res))
    elif model is None:
        seed = random_seed
        model = random_model(width, variant, seed)
        warnings.warn(f"no --weights given: exporting a RANDOMLY INITIALISED model (seed {seed}); "
                      f"{random_weights_advice()}", RandomWeightsWarning, stacklevel=3)
    else:
        width, variant = getattr(model, "width", width), getattr(model, "variant", variant)
        if getattr(model, "adaptation", None):
            warn_if_unadapted(None, model.adaptation, float(res))
    return model, width, variant, weights_info, seed


VARIANTS_DIR = "variants"


def _check_variants(target: str, precision: str, variants: Sequence[str], calibration: Any) -> list[str]:
    """Extra precisions of ``target``, each once, none equal to the primary; int8 needs the calibration set."""
    if isinstance(variants, str):
        variants = [variants]
    out = []
    for name in variants:
        if name not in TARGET_PRECISIONS[target]:
            raise ValueError(f"variant {name!r}: target {target} supports precisions {TARGET_PRECISIONS[target]}")
        if name == precision or name in out:
            raise ValueError(f"variant {name!r} repeats the primary precision or another variant")
        out.append(name)
    if "int8" in out and calibration is None:
        raise ValueError("an int8 variant needs a calibration set of person crops (--calib DIR)")
    return out


def _model_files(folder: Path, precision: str, *, model: nn.Module, hw: tuple[int, int], target: str,
                 fuse_preprocess: bool, calibration: Any, calib_method: str | None, opset: int, max_batch: int,
                 trained: bool, step: Callable[[str], None], progress: bool,
                 quant_options: dict, global_pool: str = DEFAULT_GLOBAL_POOL
                 ) -> tuple[dict, dict | None, dict | None]:
    """One precision's model files in ``folder``; (build info, calibration info, quantization report)."""
    folder.mkdir(parents=True, exist_ok=True)
    quant_options = dict(quant_options)  # each build may pop / default its own options
    calib = calibration if precision == "int8" else None
    if target == "rknn":  # fp16 too: the simulator measures fidelity on the calibration set's held-out crops
        from .rknn import rknn_model_files

        return rknn_model_files(folder, precision, model, hw, calibration, calib_method, opset, trained, step,
                                quant_options)
    if target == "litert":
        build, quant_report = _export_litert(model, folder, hw, precision, fuse_preprocess, calib, calib_method,
                                             trained, step, progress, quant_options)
        calibration_info = None
        if quant_report is not None:
            calibration_info = {**calib.describe(), "method": quant_report.pop("method_used")}
        return build, calibration_info, quant_report
    return _export_onnx_family(model, folder, hw, target, precision, fuse_preprocess, calib, calib_method, opset,
                               max_batch, trained, step, progress, quant_options, global_pool)


def export_bundle(out: str | os.PathLike, width: float = 1.0, res: float = 1.0, variant: str = "osnet",
                  target: str = "onnxruntime", precision: str = "fp32", weights: str | os.PathLike | None = None,
                  fuse_preprocess: bool = False, max_batch: int = 64, calibration: Any = None,
                  calib_method: str | None = None, interpolation: str = DEFAULT_INTERPOLATION,
                  opset: int = DEFAULT_OPSET, allow_unsafe_pickle: bool = False, overwrite: bool = True,
                  model: nn.Module | None = None, on_step: Callable[[str], None] | None = None,
                  random_seed: int = RANDOM_WEIGHTS_SEED, variants: Sequence[str] = (),
                  global_pool: str = DEFAULT_GLOBAL_POOL, **quant_options: Any) -> Bundle:
    """Export OSNet (``width``, ``res``, ``variant``) as a bundle for ``target`` at ``precision``.

    ``weights``: a torchreid checkpoint; None exports random weights initialised from
    ``random_seed`` (accuracy meaningless: warns, and the manifest says so). Full-resolution
    weights exported at ``res`` < 1 without adaptation warn with the measured accuracy drop.
    ``calibration``: a CalibrationSet (int8 only). ``model`` lets a caller pass an already
    built (e.g. adapted) network instead of width/variant/weights. ``global_pool``: the op ONNX-family
    graphs write global average pools as (export.graph.GLOBAL_POOL_OPS; the manifest records it).
    ``variants``: more precisions of the
    same target built into ``variants/<precision>/`` beside the primary model (e.g. ``precision="fp32",
    variants=("int8",)``), so that the camera picks the fastest meeting the fidelity target
    (osnet_edge.tuning; ``osnet-edge tune``).
    """
    from ..profiler.counting import count_macs, count_params

    step = on_step or (lambda msg: log.info(msg))
    fuse_preprocess = fuse_preprocess or target == "rknn"  # the .rknn takes uint8 crops, mean/std fused by the toolkit
    _check_request(target, precision, max_batch, calibration, [variants] if isinstance(variants, str)
                   else variants)
    check_global_pool(global_pool)
    hw = input_size(res)
    model, width, variant, weights_info, seed = _resolve_model(model, width, variant, weights, res, random_seed,
                                                               allow_unsafe_pickle, step)
    model.eval()
    params, macs = count_params(model), count_macs(model, hw)

    # Trained weights: quantization-aware distillation with the torch model as FP32 teacher
    # (quant_options distill=False turns it off). Random weights: plain PTQ (nothing to keep).
    trained = weights_info is not None or bool(getattr(model, "adaptation", None))
    variants = _check_variants(target, precision, variants, calibration)
    files = dict(model=model, hw=hw, target=target, fuse_preprocess=fuse_preprocess, calibration=calibration,
                 calib_method=calib_method, opset=opset, max_batch=max_batch, trained=trained, step=step,
                 progress=on_step is not None, quant_options=quant_options, global_pool=global_pool)
    with BundleWriter(out, overwrite=overwrite) as w:
        build, calibration_info, quant_report = _model_files(w.path, precision, **files)
        extra = {}
        for name in variants:
            step(f"variant {name}: building it beside the {precision} model (the device picks one: osnet-edge tune)")
            v_build, v_calib, v_quant = _model_files(w.path / VARIANTS_DIR / name, name, **files)
            extra[name] = {"path": f"{VARIANTS_DIR}/{name}", "precision": name,
                           "calibration": portable_calibration(v_calib, out),
                           "quantization": v_quant, "build": v_build or None}
        if extra:
            w.manifest.update(variant=precision, variants=extra, fidelity_target=dict(DEFAULT_FIDELITY_TARGET))
        w.manifest.update({
            "model": {"variant": variant, "width": float(width), "res": float(res), "input_size": list(hw),
                      "input_size_order": "HW", "embedding_dim": FEATURE_DIM, "params": params,
                      "mult_adds": macs, "input_name": INPUT_NAME, "output_name": OUTPUT_NAME,
                      # the tensor only: its colour is preprocess.color (+ preprocess.description)
                      "input_layout": _input_layout(target, fuse_preprocess)},
            # portable: the checkpoint's name, sha256 and path from the bundle, never the host's absolute path
            "weights": weights_info and portable_record(weights_info["source"], out, sha256=weights_info["sha256"]),
            "random_weights": weights_info is None and not getattr(model, "adaptation", None),
            "random_seed": seed,
            "adaptation": getattr(model, "adaptation", None),
            "preprocess": {"color": "BGR", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                           "interpolation": interpolation, "fused": bool(fuse_preprocess),
                           "description": _preprocess_description(fuse_preprocess, _input_layout(target, False).split()[0])},
            "runtime": target, "precision": precision, "max_batch": max_batch,
            "calibration": portable_calibration(calibration_info, out), "quantization": quant_report, "build": build or None,
            "versions": _versions(target), "opset": None if target == "litert" else opset,
            "graph_form": GRAPH_FORMS[target], "global_pool": None if target == "litert" else global_pool,
        })
    assert w.bundle is not None
    return w.bundle

