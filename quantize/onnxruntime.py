"""ONNX Runtime INT8: static QDQ quantization (U8 asymmetric activations, S8 symmetric per-channel weights).

The QDQ graph is plain ONNX: ONNX Runtime fuses DequantizeLinear -> Conv -> QuantizeLinear into
integer kernels (VNNI / AVX2 / NEON dot products) at load. ``tensorrt.py`` reuses
:func:`quantize_qdq` with TensorRT's symmetric int8 rules.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from osnet_edge.quiet import converter_output_silenced

RUNTIME = "onnxruntime"
MODEL_FILES = ("model.onnx",)
METHODS = ("minmax", "entropy", "percentile", "mse")
ACTIVATION_SCHEME = "uint8 asymmetric"
QUANTIZABLE_OPS = ("Conv", "Gemm", "MatMul")
# Where Q/DQ pairs go. "conv" (default): the spatial convolutions and what feeds them; kept in fp32
# are the ops that cost nothing but lose most in INT8 (see fp32_placement_nodes). "all": every op
# ONNX Runtime's quantizer knows (its own default), kept for comparison.
PLACEMENTS = ("conv", "all")
DEFAULT_PLACEMENT = "conv"


def _ort_quant():
    try:
        from onnxruntime import quantization
    except ImportError as exc:
        raise ImportError("INT8 for onnxruntime/tensorrt needs onnxruntime: "
                          "pip install 'osnet_edge[onnxruntime]'") from exc
    return quantization


def _quiet():
    """ORT's quantizer prints histograms and logs warnings per tensor (to the root logger)."""
    return converter_output_silenced(loggers=("",))


def prepare(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """ORT's recommended pre-processing (symbolic shape inference, graph optimisation) before quantizing."""
    q = _ort_quant()
    with _quiet():
        try:
            q.shape_inference.quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
        except Exception:  # symbolic shape inference can fail on unusual graphs; ONNX inference then
            q.shape_inference.quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    return Path(dst)


def quantizable_nodes(onnx_path: str | os.PathLike) -> list[str]:
    """Names of the nodes that carry weights (Conv / Gemm / MatMul): the layers mixed precision can keep fp32."""
    import onnx

    proto = onnx.load(str(onnx_path))
    return [n.name for n in proto.graph.node if n.op_type in QUANTIZABLE_OPS]


def fp32_placement_nodes(onnx_path: str | os.PathLike) -> list[str]:
    """Nodes the ``conv`` placement keeps in fp32: they cost nothing in INT8 but lose the most.

    Measured on OSNet x0.25 MSMT17 @ 256x128 (300 cuhk03 train crops to calibrate, 938 cuhk03-val
    crops to test, plain MinMax PTQ, cosine mean / p1 vs FP32): ORT's default placement 0.9917 /
    0.9724; this one 0.9937 / 0.9818 at the same batch-1 latency. Kept in fp32:

    * the aggregation gate's MLP (global average pool -> fc1 -> ReLU -> fc2 -> sigmoid): it runs on
      1x1 tensors (no compute to save), and at x0.25 its hidden layer has ONE channel, so a per-tensor
      int8 range over it is the single largest source of the worst-case (1st percentile) error;
    * the gate products and the stream / residual sums (Mul, Add): elementwise, and their
      outputs are re-quantized anyway where they enter the next convolution;
    * the final fc (Linear 128..512 -> 512 on a pooled vector): a rounding error of no speed value.
    """
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    produced_by = {o: n for n in proto.graph.node for o in n.output}
    keep: list[str] = []
    gate_convs: set[str] = set()
    for n in proto.graph.node:
        if n.op_type == "Conv" and len(n.input) > 1 and ".gate.fc" in n.input[1]:
            gate_convs.add(n.name)
    for n in proto.graph.node:
        feeds_from_gate = n.input and n.input[0] in produced_by and produced_by[n.input[0]].name in gate_convs
        if (n.name in gate_convs or n.op_type in ("Gemm", "MatMul", "Mul", "Add", "ReduceMean", "GlobalAveragePool")
                or (n.op_type in ("Relu", "Sigmoid") and feeds_from_gate)):
            keep.append(n.name)
    return keep


def quantized_activations(qdq_path: str | os.PathLike) -> list[str]:
    """Names of the activation tensors a QDQ graph quantizes (inputs of QuantizeLinear that are not weights)."""
    import onnx

    proto = onnx.load(str(qdq_path), load_external_data=False)
    weights = {i.name for i in proto.graph.initializer}
    return sorted({n.input[0] for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in weights})


def with_outputs(proto, names: Sequence[str]):
    """``proto`` with the named intermediate tensors added as graph outputs (to read them at run time)."""
    import onnx

    have = {o.name for o in proto.graph.output}
    for n in names:
        if n not in have:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None))
    return proto


def inspection_session(proto):
    """A CPU session that runs the graph exactly as written (no fusion), for reading intermediate tensors."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])


def mse_overrides(fp32_path: str | os.PathLike, tensors: Sequence[str], calib: np.ndarray, symmetric: bool,
                  batch_size: int = 8, nonnegative_full_grid: bool = False) -> dict[str, list[dict]]:
    """Per-tensor MSE-optimal ranges over the calibration crops, as ORT ``TensorQuantOverrides``.

    ``nonnegative_full_grid``: non-negative tensors will be shifted onto the whole symmetric grid
    (tensorrt.shift_nonnegative_activations), so their range is searched on that 255-level grid."""
    import onnx

    from .ranges import RangeObserver

    proto = onnx.load(str(fp32_path))
    graph_inputs = {i.name for i in proto.graph.input}
    wanted = [t for t in tensors if t not in graph_inputs]
    sess = inspection_session(with_outputs(proto, wanted))
    input_name = sess.get_inputs()[0].name
    observers = {t: RangeObserver(seed=i) for i, t in enumerate(tensors)}
    for start in range(0, len(calib), batch_size):
        x = calib[start:start + batch_size]
        outs = dict(zip(wanted, sess.run(wanted, {input_name: x})))
        outs.update({t: x for t in tensors if t in graph_inputs})
        for t in tensors:
            observers[t].update(outs[t])
    overrides = {}
    for t, obs in observers.items():
        lo, hi = obs.range("mse", symmetric and not (nonnegative_full_grid and obs.lo >= 0))
        overrides[t] = [{"rmin": np.array(lo, np.float32), "rmax": np.array(hi, np.float32)}]
    return overrides


class _Reader:
    """CalibrationDataReader over a model-input array, one image per call (ORT's calibrators want that)."""

    def __init__(self, name: str, data: np.ndarray, batch: int = 1) -> None:
        self._it = iter([{name: data[i:i + batch]} for i in range(0, len(data), batch)])

    def get_next(self):
        return next(self._it, None)


def quantize_qdq(src_onnx: str, calib: np.ndarray, work: Path, method: str, per_channel: bool,
                 exclude: Sequence[str], symmetric_activations: bool, options: dict[str, Any]) -> dict:
    """ORT ``quantize_static`` in QDQ format into ``work/model.onnx``; returns what was used."""
    import onnx

    q = _ort_quant()
    methods = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
               "percentile": q.CalibrationMethod.Percentile, "mse": q.CalibrationMethod.MinMax}
    placement = options.pop("placement", DEFAULT_PLACEMENT)
    full_grid = bool(options.pop("nonnegative_full_grid", False))
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    extra: dict[str, Any] = {"WeightSymmetric": True, "ActivationSymmetric": bool(symmetric_activations)}
    if method == "percentile":
        extra["CalibPercentile"] = float(options.pop("percentile", 99.999))
    extra.update(options.pop("extra_options", {}) or {})
    unknown = sorted(options)
    if unknown:
        raise ValueError(f"unknown quantization option(s) for ORT QDQ: {unknown}")
    pre = work / "_pre.onnx"
    prepare(src_onnx, pre)
    input_name = onnx.load(str(pre), load_external_data=False).graph.input[0].name
    act = q.QuantType.QInt8 if symmetric_activations else q.QuantType.QUInt8
    names = quantizable_nodes(pre)
    missing = [n for n in exclude if n not in {m.name for m in onnx.load(str(pre)).graph.node}]
    if missing:
        raise ValueError(f"nodes to keep in fp32 not found in the graph: {missing[:10]}")
    structural = fp32_placement_nodes(pre) if placement == "conv" else []

    def run_quantizer(out: Path, extra_options: dict) -> None:
        with _quiet():
            q.quantize_static(str(pre), str(out), _Reader(input_name, calib),
                              quant_format=q.QuantFormat.QDQ, per_channel=per_channel, activation_type=act,
                              weight_type=q.QuantType.QInt8,
                              nodes_to_exclude=sorted(set(exclude) | set(structural)) or None,
                              calibrate_method=methods[method], extra_options=extra_options)

    run_quantizer(work / "model.onnx", extra)
    if method == "mse":  # same placement, activation ranges re-chosen to minimise quantization error
        tensors = quantized_activations(work / "model.onnx")
        overrides = mse_overrides(pre, tensors, calib, symmetric=bool(symmetric_activations),
                                  nonnegative_full_grid=full_grid)
        run_quantizer(work / "model.onnx", {**extra, "TensorQuantOverrides": overrides})
    pre.unlink()
    onnx.checker.check_model(str(work / "model.onnx"))
    structural_set = set(structural)
    return {"num_quantizable": len([n for n in names if n not in structural_set]),
            "placement": placement, "fp32_by_placement": len(structural),
            "options": {"calibrate_method": method, "placement": placement, **{
        k: v for k, v in extra.items() if isinstance(v, (bool, int, float, str))}}}


def quantize_model(src_onnx: str, calib: np.ndarray, work: Path, method: str = "minmax", per_channel: bool = True,
                   exclude: Sequence[str] = (), **options: Any) -> dict:
    """U8S8 QDQ for ONNX Runtime CPU (asymmetric uint8 activations suit post-ReLU tensors)."""
    return quantize_qdq(src_onnx, calib, work, method, per_channel, exclude, symmetric_activations=False,
                        options=dict(options))


def fp32_runner(onnx_path: str, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    from osnet_edge.runtimes.onnxruntime import open_session

    sess = open_session(onnx_path, "cpu", threads)
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def int8_runner(model_dir: Path, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """The QDQ model as the Extractor's runtime will run it (full graph optimisation, CPU)."""
    return fp32_runner(str(Path(model_dir) / "model.onnx"), threads)
