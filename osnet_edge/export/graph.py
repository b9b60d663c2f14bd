"""Exact ONNX graph rewrites applied at export: same function, ops the runtimes run faster.

torch exports OSNet's global average pools (the 24 aggregation gates and the head) as
``ReduceMean(axes=[-1, -2], keepdims=1)``. ``GlobalAveragePool`` computes the same mean; ONNX
Runtime runs it in its blocked NCHWc layout (no layout reorder around the gate's first 1x1 conv),
which it cannot do for a ReduceMean. Measured in scripts/bench/pooling.py (docs/speed.md, "Gate
pooling: ReduceMean vs GlobalAveragePool").
"""
from __future__ import annotations

from typing import Any

# The op a global (spatial) mean is written as in an exported graph: to_onnx(global_pool=...).
GLOBAL_POOL_OPS = ("GlobalAveragePool", "ReduceMean")
# Measured (scripts/bench/pooling.py, docs/speed.md; x0.25 MSMT17, shared 2-core AVX-512/AMX Xeon VM): exact
# (embeddings equal to 3e-7, OpenVINO bit-identical); ONNX Runtime runs 346 nodes instead of 362 (17 of the 25 pools
# in NCHWc, 16 fewer ReorderInput) and its profiler puts 0.28 ms (1 thread) / 0.36 ms (2 threads) less per
# 256x128 call on the pools + reorders; end to end the two forms are within this machine's noise (median ratios
# 0.87-1.16, ranges straddling 1). Never slower in a resolvable way, fewer nodes: GlobalAveragePool is the default.
DEFAULT_GLOBAL_POOL = "GlobalAveragePool"
_FLOAT_TYPES = (1, 10, 11)  # TensorProto FLOAT, FLOAT16, DOUBLE: the types GlobalAveragePool takes


def _constant_ints(name: str, graph: Any) -> list[int] | None:
    """The int values of ``name`` when it is an initializer or a Constant node's output, else None."""
    from onnx import numpy_helper

    for init in graph.initializer:
        if init.name == name:
            return [int(v) for v in numpy_helper.to_array(init).ravel()]
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            for attr in node.attribute:
                if attr.name == "value":
                    return [int(v) for v in numpy_helper.to_array(attr.t).ravel()]
                if attr.name in ("value_ints", "value_int"):
                    return list(attr.ints) or [int(attr.i)]
    return None


def _ranks_and_types(proto: Any) -> dict[str, tuple[int, int]]:
    """tensor name -> (rank, element type) from shape inference (on a copy: the model is not changed)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    out = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            out[vi.name] = (len(t.shape.dim), t.elem_type)
    return out


def _is_global_mean(node: Any, graph: Any, ranks: dict[str, tuple[int, int]]) -> bool:
    """True when ``node`` is a ReduceMean over every spatial axis (2..rank-1) of a float tensor of rank
    >= 3 with keepdims=1: exactly what GlobalAveragePool computes, shape included."""
    if node.op_type != "ReduceMean" or node.domain not in ("", "ai.onnx"):
        return False
    rank, elem = ranks.get(node.input[0], (0, 0))
    if rank < 3 or elem not in _FLOAT_TYPES:
        return False
    attrs = {a.name: a for a in node.attribute}
    if "keepdims" in attrs and attrs["keepdims"].i != 1:
        return False
    if "axes" in attrs:                          # opset < 18: axes is an attribute
        axes = list(attrs["axes"].ints)
    elif len(node.input) > 1 and node.input[1]:  # opset >= 18: axes is an input
        axes = _constant_ints(node.input[1], graph)
    else:
        return False                              # no axes: a mean over every axis, not a spatial one
    return axes is not None and sorted(a % rank for a in axes) == list(range(2, rank))


def reduce_mean_to_global_average_pool(proto: Any) -> int:
    """Rewrite, in place, every ReduceMean that is a global spatial mean into GlobalAveragePool
    (same name, input and output); axes constants nothing else reads are dropped. Returns the count."""
    import onnx

    graph = proto.graph
    ranks = _ranks_and_types(proto)
    rewritten, axes_inputs = 0, set()
    for i, node in enumerate(graph.node):
        if not _is_global_mean(node, graph, ranks):
            continue
        if len(node.input) > 1 and node.input[1]:
            axes_inputs.add(node.input[1])
        pool = onnx.helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output), name=node.name)
        graph.node.remove(node)
        graph.node.insert(i, pool)
        rewritten += 1
    _drop_unread(graph, axes_inputs)
    return rewritten


def _drop_unread(graph: Any, names: set[str]) -> None:
    """Remove the initializers / Constant nodes among ``names`` that no node or graph output reads."""
    read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    unread = names - read
    for init in [t for t in graph.initializer if t.name in unread]:
        graph.initializer.remove(init)
    for node in [n for n in graph.node if n.op_type == "Constant" and n.output[0] in unread]:
        graph.node.remove(node)


def check_global_pool(op: str) -> str:
    """``op`` when it is one of GLOBAL_POOL_OPS, else a ValueError saying which are."""
    if op not in GLOBAL_POOL_OPS:
        raise ValueError(f"global_pool must be one of {GLOBAL_POOL_OPS}, got {op!r}")
    return op


def write_global_pools_as(proto: Any, op: str) -> int:
    """Write the graph's global average pools as ``op`` (one of GLOBAL_POOL_OPS); returns how many nodes
    were rewritten. "ReduceMean" leaves the graph as torch exported it."""
    return reduce_mean_to_global_average_pool(proto) if check_global_pool(op) == "GlobalAveragePool" else 0


def op_counts(proto: Any) -> dict[str, int]:
    """op type -> node count (what the tests and the benchmark compare)."""
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
