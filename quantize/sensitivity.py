"""Per-layer quantization sensitivity: how much noise each weighted layer adds when quantized.

Both the fp32 graph and its fully quantized QDQ twin (ONNX Runtime, no graph fusion, so the
QDQ arithmetic is simulated exactly) expose every layer's input and output. A layer's score is
``(1 - cos(out_int8, out_fp32)) - (1 - cos(in_int8, in_fp32))``: the error it *adds* on top of the
error it receives. One pass ranks all layers (per-layer re-quantization would take ~190 runs).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from .onnxruntime import (DEFAULT_PLACEMENT, QUANTIZABLE_OPS, fp32_placement_nodes, inspection_session,
                          prepare, quantize_qdq, with_outputs)


def layer_sensitivity(onnx_path: str, calib: np.ndarray, symmetric: bool, per_channel: bool = True,
                      exclude: Sequence[str] = (), num_images: int = 16, batch_size: int = 4,
                      placement: str = DEFAULT_PLACEMENT) -> list[dict]:
    """Weighted layers of ``onnx_path`` ranked by the quantization noise they add, worst first
    (layers the placement already keeps in fp32 are not ranked)."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="osnet_edge_sens_") as tmp:
        tmp = Path(tmp)
        pre = prepare(onnx_path, tmp / "pre.onnx")
        quantize_qdq(str(pre), calib, tmp, "minmax", per_channel, exclude, symmetric, {"placement": placement})
        if placement == "conv":
            exclude = list(exclude) + fp32_placement_nodes(pre)
        fp32 = onnx.load(str(pre))
        qdq = onnx.load(str(tmp / "model.onnx"))
    float_inputs = {i.name for i in fp32.graph.input}
    layers = [(n.name, n.input[0], n.output[0]) for n in fp32.graph.node if n.op_type in QUANTIZABLE_OPS]
    in_qdq = {o for n in qdq.graph.node for o in n.output}
    layers = [(n, i, o) for n, i, o in layers if o in in_qdq]  # a layer whose output was renamed is not ranked
    tensors = sorted({t for _, i, o in layers for t in (i, o) if t not in float_inputs and t in in_qdq})
    s_fp32, s_q = inspection_session(with_outputs(fp32, tensors)), inspection_session(with_outputs(qdq, tensors))
    in_name = fp32.graph.input[0].name
    names_fp32 = [o.name for o in s_fp32.get_outputs()]
    names_q = [o.name for o in s_q.get_outputs()]
    err = {t: [] for t in tensors}
    data = calib[:num_images]
    for start in range(0, len(data), batch_size):
        x = data[start:start + batch_size]
        a = dict(zip(names_fp32, s_fp32.run(names_fp32, {in_name: x})))
        b = dict(zip(names_q, s_q.run(names_q, {in_name: x})))
        for t in tensors:
            u = a[t].reshape(len(x), -1).astype(np.float64)
            v = b[t].reshape(len(x), -1).astype(np.float64)
            cos = (u * v).sum(1) / np.maximum(np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1), 1e-12)
            err[t].extend((1.0 - cos).tolist())
    mean_err = {t: float(np.mean(v)) for t, v in err.items()}
    ranking = [{"node": name, "added_error": mean_err[o] - mean_err.get(i, 0.0), "output_error": mean_err[o]}
               for name, i, o in layers if name not in exclude]
    ranking.sort(key=lambda r: -r["added_error"])
    return ranking
