"""TensorRT INT8: an explicit-quantization QDQ ONNX following TensorRT's rules.

On top of ONNX Runtime's symmetric QDQ: Q/DQ only where an int8 layer reads
(:func:`drop_output_only_qdq`) and non-negative tensors moved onto the whole int8 grid
(:func:`shift_nonnegative_activations`); README "INT8" has the measurements.

TensorRT 10/11 builds INT8 only from Q/DQ nodes (implicit calibrators are gone in 11): int8
activations and weights, symmetric (zero point 0), weights per output channel (axis 0 of
Conv / Gemm weights). ONNX Runtime's quantizer writes exactly that with symmetric settings, and
ONNX Runtime CPU runs the same arithmetic TensorRT will run (up to rounding), which is how the
fidelity here is measured without a GPU.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .onnxruntime import METHODS, MODEL_FILES, fp32_runner, int8_runner, quantize_qdq  # noqa: F401

SHIFTS_NONNEGATIVE = True  # the distillation simulates the shifted grid (shift_nonnegative_activations)
QUANTIZES_OUTPUTS = False  # Q/DQ on conv inputs only (drop_output_only_qdq): the distillation simulates that
RUNTIME = "onnxruntime"  # fidelity / timing here: ORT CPU on the very QDQ graph TensorRT consumes
ACTIVATION_SCHEME = "int8 symmetric"


def quantize_model(src_onnx: str, calib: np.ndarray, work: Path, method: str = "minmax", per_channel: bool = True,
                   exclude: Sequence[str] = (), **options: Any) -> dict:
    """S8S8 symmetric QDQ; layers in ``exclude`` get no Q/DQ (TensorRT then runs them in fp32/fp16)."""
    if not per_channel:
        raise ValueError("TensorRT INT8 weights are per output channel; per_channel=False is not supported")
    options = dict(options)
    shift = bool(options.pop("shift_nonnegative", True))
    # TensorRT takes fp32 biases (it folds them itself); int32 bias Q/DQ is an ORT-only construct
    options.setdefault("extra_options", {}).setdefault("QuantizeBias", False)
    options["nonnegative_full_grid"] = shift  # MSE ranges: search non-negative tensors on the shifted grid
    info = quantize_qdq(src_onnx, calib, work, method, per_channel, exclude, symmetric_activations=True,
                        options=options)
    import onnx

    proto = onnx.load(str(work / "model.onnx"))
    info["dropped_output_qdq"] = drop_output_only_qdq(proto)
    if shift:
        info["shift"] = shift_nonnegative_activations(proto)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(work / "model.onnx"))
    check_tensorrt_rules(work / "model.onnx")
    info["options"]["tensorrt_rules"] = "int8 symmetric, zero point 0, per-channel weights on axis 0"
    info["options"]["shift_nonnegative"] = shift
    return info


def check_tensorrt_rules(path: Path) -> None:
    """Fail loudly if a Q/DQ pair breaks TensorRT's explicit-quantization rules."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    inits = {i.name: i for i in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        zp = inits.get(node.input[2])
        if zp is None:
            continue
        arr = numpy_helper.to_array(zp)
        if arr.dtype != np.int8 or np.any(arr != 0):
            raise RuntimeError(f"{node.name}: TensorRT needs int8 zero point 0, got {arr.dtype} {arr.ravel()[:4]}")


def _nonnegative(tensor: str, producers: dict, inits: set, depth: int = 0) -> bool:
    """True when the graph guarantees ``tensor`` >= 0 (ReLU / sigmoid outputs, pools, sums and
    products of such): these are the tensors symmetric int8 wastes half its range on."""
    node = producers.get(tensor)
    if node is None or depth > 64:
        return False
    if node.op_type in ("Relu", "Sigmoid"):
        return True
    if node.op_type in ("MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean", "Add", "Mul"):
        ins = [i for i in node.input if i and i not in inits]
        return bool(ins) and all(_nonnegative(i, producers, inits, depth + 1) for i in ins[:2])
    return False


def _consumers(graph) -> dict[str, list]:
    """tensor name -> the nodes that read it."""
    out: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def dequantized_weight(dq, inits: dict) -> np.ndarray:
    """The float64 values a weight DequantizeLinear node produces (int8 initializer x per-channel scale)."""
    from onnx import numpy_helper

    q = numpy_helper.to_array(inits[dq.input[0]]).astype(np.float64)
    scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64)
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    if scale.ndim == 1 and scale.size > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
    return q * scale


def _foldable(node, inits: dict) -> bool:
    """A 1x1, stride-any, unpadded, ungrouped Conv (or a Gemm) whose fp32 bias can absorb a constant input shift."""
    from onnx import helper

    if node.op_type not in ("Gemm", "Conv"):
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Gemm":
        return not attrs.get("transA", 0)
    if attrs.get("group", 1) != 1 or any(attrs.get("pads", [0])):
        return False
    if len(node.input) > 2 and node.input[2] and node.input[2] not in inits:
        return False  # a quantized (DQ) bias cannot absorb the shift
    ks = attrs.get("kernel_shape")
    return ks is not None and all(k == 1 for k in ks)


def drop_output_only_qdq(proto) -> int:
    """Remove Q/DQ pairs whose dequantized tensor feeds no int8 convolution / Gemm.

    ONNX Runtime's quantizer also quantizes a convolution's *output* (it needs that for its own
    QLinearConv kernels), e.g. the last Lite 3x3 of each stream before the gate and the bottleneck's
    1x1 projection before the residual add. TensorRT needs Q/DQ only on the inputs of the layers it
    runs in int8 and keeps other tensors in higher precision, so these pairs only add rounding
    noise. Edits the ModelProto in place; returns how many pairs were removed.
    """
    g = proto.graph
    inits = {i.name for i in g.initializer}
    consumers = _consumers(g)
    graph_outputs = {o.name for o in g.output}
    drop, rename, pairs = set(), {}, 0
    for q in [n for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]:
        dqs = consumers.get(q.output[0], [])
        if not dqs or any(d.op_type != "DequantizeLinear" for d in dqs):
            continue
        if any(d.output[0] in graph_outputs for d in dqs):
            continue
        users = [(d, u) for d in dqs for u in consumers.get(d.output[0], [])]
        if any(u.op_type in ("Conv", "Gemm", "MatMul") and u.input[0] == d.output[0] for d, u in users):
            continue
        drop.add(q.name)
        pairs += 1
        for d in dqs:
            drop.add(d.name)
            rename[d.output[0]] = q.input[0]
    for n in g.node:
        for j, name in enumerate(n.input):
            if name in rename:
                n.input[j] = rename[name]
    kept = [n for n in g.node if n.name not in drop]
    del g.node[:]
    g.node.extend(kept)
    return pairs


def _bias_absorbing_shift(node, w: np.ndarray, c: float, inits: dict) -> np.ndarray:
    """The bias b + c W 1 with which a 1x1 Conv / Gemm reading x - c computes what it computed on x."""
    from onnx import numpy_helper

    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        add = c * (w.sum(axis=1) if trans_b else w.sum(axis=0))
    else:
        add = c * w.reshape(w.shape[0], -1).sum(axis=1)
    old = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2] else 0.0
    return (old + add).astype(np.float32)


def shift_nonnegative_activations(proto) -> dict:
    """Give non-negative activations all 255 levels of symmetric int8 (TensorRT's only activation type).

    A post-ReLU tensor x in [0, r] quantized symmetrically uses only the 127 positive levels. Feeding
    the quantizer x - r/2 instead (range [-r/2, r/2], scale halved) uses all of them: the rounding
    step halves, like uint8. The shift is undone exactly where the tensor is consumed: 1x1 convolutions
    (and Gemm) absorb it into their fp32 bias (W (x - c) + (b + c W 1) = W x + b), other consumers
    (residual adds, the gate's mean and product) get ``+ c`` after the DequantizeLinear. Zero points
    stay 0 and every Q/DQ stays int8 symmetric, as TensorRT requires; the shifts are elementwise
    ops TensorRT fuses with the producing layer. Edits the ModelProto in place.
    """
    from onnx import helper, numpy_helper

    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    consumers = _consumers(g)

    def weight_of(conv) -> np.ndarray | None:
        dq = producers.get(conv.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
            return numpy_helper.to_array(inits[conv.input[1]]) if conv.input[1] in inits else None
        return dequantized_weight(dq, inits)

    before: dict[str, list] = {}  # node name -> nodes to insert before it
    after: dict[str, list] = {}
    new_inits = []
    shifted = folded = restored = 0
    for qn in [n for n in g.node if n.op_type == "QuantizeLinear"]:
        x = qn.input[0]
        if x in inits or not _nonnegative(x, producers, set(inits)):
            continue
        dqs = [c for c in consumers.get(qn.output[0], []) if c.op_type == "DequantizeLinear"]
        if not dqs or len(dqs) != len(consumers.get(qn.output[0], [])):
            continue
        users = [(dq, u) for dq in dqs for u in consumers.get(dq.output[0], [])]
        if not any(_foldable(u, inits) and u.input[0] == dq.output[0] for dq, u in users):
            continue  # nothing gains: no int8 1x1 conv reads this tensor
        if any(u.op_type == "Conv" and not (_foldable(u, inits) and u.input[0] == dq.output[0]) for dq, u in users):
            continue  # a conv that cannot absorb the shift would lose its int8 input
        scale = float(numpy_helper.to_array(inits[qn.input[1]]))
        c = 127.0 * scale / 2.0
        tag = f"{x}_nonneg_shift"
        new_inits += [numpy_helper.from_array(np.array(c, np.float32), f"{tag}_c"),
                      numpy_helper.from_array(np.array(scale / 2.0, np.float32), f"{tag}_scale")]
        before.setdefault(qn.name, []).append(helper.make_node("Sub", [x, f"{tag}_c"], [f"{tag}_in"], name=f"{tag}_sub"))
        qn.input[0], qn.input[1] = f"{tag}_in", f"{tag}_scale"
        for dq in dqs:
            dq.input[1] = f"{tag}_scale"
        for k, (dq, u) in enumerate(users):
            if _foldable(u, inits) and u.input[0] == dq.output[0]:
                name = f"{u.name}_bias_shifted"
                new_inits.append(numpy_helper.from_array(_bias_absorbing_shift(u, weight_of(u), c, inits), name))
                if len(u.input) > 2:
                    u.input[2] = name
                else:
                    u.input.append(name)
                folded += 1
            else:
                out = f"{tag}_restored_{k}"
                after.setdefault(dq.name, []).append(
                    helper.make_node("Add", [dq.output[0], f"{tag}_c"], [out], name=f"{tag}_add_{k}"))
                for j, name in enumerate(u.input):
                    if name == dq.output[0]:
                        u.input[j] = out
                restored += 1
        shifted += 1
    nodes = []
    for n in g.node:
        nodes += before.get(n.name, []) + [n] + after.get(n.name, [])
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(new_inits)
    return {"shifted_tensors": shifted, "biases_folded": folded, "shifts_restored": restored}
