"""Global average pools written as ReduceMean vs GlobalAveragePool (osnet_edge.export.graph): the rewrite
is exact (same embeddings on real crops), complete (all 25 of OSNet's pools, nothing else touched) and both
forms load on ONNX Runtime and OpenVINO."""
from __future__ import annotations

import os

import numpy as np
import pytest

from .conftest import SHARED_DATA, require

onnx = pytest.importorskip("onnx", reason="the ONNX graph rewrites need onnx (pip install 'osnet_edge[export]')")
from onnx import TensorProto, helper  # noqa: E402

from osnet_edge.export.graph import (DEFAULT_GLOBAL_POOL, GLOBAL_POOL_OPS, op_counts,  # noqa: E402
                                     reduce_mean_to_global_average_pool)

HW = (128, 64)
OSNET_GLOBAL_POOLS = 25  # 6 OS blocks gate 4 streams each (24 pools) + the head's pool


@pytest.fixture(scope="module")
def msmt_model():
    pytest.importorskip("torch", reason="exporting needs torch")
    from osnet_edge.models import build_osnet, load_torchreid_weights

    model = build_osnet(0.25, "osnet")
    load_torchreid_weights(model, require(SHARED_DATA / "weights" / "torchreid" / "osnet_x0_25_msmt17.pth"))
    return model.eval()


@pytest.fixture(scope="module")
def both_forms(msmt_model, tmp_path_factory) -> dict[str, str]:
    """The trained x0.25 MSMT17 model exported by to_onnx in each form (128x64)."""
    from osnet_edge.export import to_onnx

    folder = tmp_path_factory.mktemp("pooling")
    return {op: str(to_onnx(msmt_model, folder / f"{op}.onnx", HW, global_pool=op)) for op in GLOBAL_POOL_OPS}


@pytest.fixture(scope="module")
def real_batch() -> np.ndarray:
    """16 Market-1501 training crops (the split tuning may use), preprocessed as the Extractor does."""
    from osnet_edge.preprocess import preprocess, read_image

    folder = require(SHARED_DATA / "market1501" / "bounding_box_train")
    names = sorted(n for n in os.listdir(folder) if n.endswith(".jpg"))[::800][:16]
    return preprocess([read_image(str(folder / n)) for n in names], HW)


def _ort(path: str, batch: np.ndarray) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


def test_to_onnx_writes_every_global_pool_in_the_chosen_form(both_forms):
    """25 ReduceMean in torch's form become 25 GlobalAveragePool; every other op count is unchanged and no
    initializer is left that nothing reads (the shared axes constant goes)."""
    rm, gap = (onnx.load(both_forms[op]) for op in ("ReduceMean", "GlobalAveragePool"))
    rm_ops, gap_ops = op_counts(rm), op_counts(gap)
    assert rm_ops.get("ReduceMean") == OSNET_GLOBAL_POOLS and "GlobalAveragePool" not in rm_ops
    assert gap_ops.get("GlobalAveragePool") == OSNET_GLOBAL_POOLS and "ReduceMean" not in gap_ops
    others = {k: v for k, v in rm_ops.items() if k != "ReduceMean"}
    assert {k: v for k, v in gap_ops.items() if k != "GlobalAveragePool"} == others
    read = {i for n in gap.graph.node for i in n.input}
    assert all(t.name in read for t in gap.graph.initializer)
    assert len(gap.graph.initializer) < len(rm.graph.initializer)
    # rewriting torch's form in place gives the same graph as exporting the other form
    assert reduce_mean_to_global_average_pool(rm) == OSNET_GLOBAL_POOLS and op_counts(rm) == gap_ops


def test_both_forms_give_equal_embeddings_on_real_crops(both_forms, real_batch):
    """Same function: ONNX Runtime's embeddings of the two forms agree to float reassociation."""
    rm, gap = _ort(both_forms["ReduceMean"], real_batch), _ort(both_forms["GlobalAveragePool"], real_batch)
    scale = float(np.abs(rm).max())
    assert scale > 0.1  # a real, non-degenerate embedding
    np.testing.assert_allclose(gap, rm, rtol=0, atol=1e-5 * scale)
    rm64, gap64 = rm.astype(np.float64), gap.astype(np.float64)
    cos = (rm64 * gap64).sum(1) / np.linalg.norm(rm64, axis=1) / np.linalg.norm(gap64, axis=1)
    assert cos.min() > 1 - 1e-9


def test_openvino_loads_both_forms_and_agrees(both_forms, real_batch):
    """OpenVINO compiles either form (ONNX and saved IR) to the same embeddings as ONNX Runtime."""
    ov = pytest.importorskip("openvino", reason="openvino not installed")
    from osnet_edge.export import save_openvino_ir

    ref = _ort(both_forms["ReduceMean"], real_batch)
    for op, path in both_forms.items():
        xml = save_openvino_ir(path, path.replace(".onnx", ".xml"), fp16=False)
        for source in (path, str(xml)):
            compiled = ov.Core().compile_model(source, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            got = np.asarray(compiled([real_batch])[0])
            np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * float(np.abs(ref).max()), err_msg=f"{op} {source}")


def _graph(node, x_shape, y_rank: int, opset: int, elem=TensorProto.FLOAT, axes_input=None):
    """A one-node model: X -> node -> Y (rank ``y_rank``), with an optional axes initializer."""
    inits = [] if axes_input is None else [helper.make_tensor("axes", TensorProto.INT64, [len(axes_input)], axes_input)]
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", elem, x_shape)],
                              [helper.make_tensor_value_info("Y", elem, [f"y{i}" for i in range(y_rank)])],
                              initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("case, rewritten", [
    ("axes input [-1, -2], 4-D", True), ("axes input [2, 3], 4-D", True), ("axes attribute [3, 2], opset 13", True),
    ("3-D, axes [2]", True), ("channel axis [1]", False), ("keepdims 0", False), ("one spatial axis [3]", False),
    ("no axes (every axis)", False), ("int32 tensor", False),
])
def test_rewrite_applies_exactly_to_global_spatial_means(case, rewritten):
    """Only a keepdims ReduceMean over all spatial axes of a float tensor is a GlobalAveragePool; where it
    rewrites, ONNX Runtime gives the same values."""
    shape, opset, elem, axes, kw = [2, 5, 6, 7], 18, TensorProto.FLOAT, [-1, -2], {}
    if case == "axes input [2, 3], 4-D":
        axes = [2, 3]
    elif case == "axes attribute [3, 2], opset 13":
        opset, kw, axes = 13, {"axes": [3, 2]}, None
    elif case == "3-D, axes [2]":
        shape, axes = [2, 5, 6], [2]
    elif case == "channel axis [1]":
        axes = [1]
    elif case == "keepdims 0":
        kw = {"keepdims": 0}
    elif case == "one spatial axis [3]":
        axes = [3]
    elif case == "no axes (every axis)":
        axes = None
    elif case == "int32 tensor":
        elem = TensorProto.INT32
    node = helper.make_node("ReduceMean", ["X"] + (["axes"] if axes is not None else []), ["Y"], name="pool", **kw)
    model = _graph(node, shape, len(shape) - 2 * (kw.get("keepdims") == 0), opset, elem, axes)
    before = model.SerializeToString()
    assert reduce_mean_to_global_average_pool(model) == int(rewritten)
    onnx.checker.check_model(model, full_check=True)
    if not rewritten:
        assert model.SerializeToString() == before
        return
    assert [n.op_type for n in model.graph.node] == ["GlobalAveragePool"] and not model.graph.initializer
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    ort = pytest.importorskip("onnxruntime")
    ref = ort.InferenceSession(before, providers=["CPUExecutionProvider"]).run(None, {"X": x})[0]
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"X": x})[0]
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


def test_unknown_global_pool_is_refused_before_any_work(tmp_path):
    """A bad global_pool is a ValueError naming the choices, from to_onnx and export_bundle alike."""
    pytest.importorskip("torch", reason="the export stage needs torch")
    from osnet_edge.export import export_bundle, to_onnx

    with pytest.raises(ValueError, match="global_pool must be one of"):
        to_onnx(None, tmp_path / "x.onnx", HW, global_pool="GlobalMaxPool")
    with pytest.raises(ValueError, match="global_pool must be one of"):
        export_bundle(tmp_path / "b", width=0.25, res=0.5, global_pool="mean")
    assert not (tmp_path / "b").exists()


def test_bundle_records_its_global_pool_form(tmp_path):
    """The default form goes into the bundle and its manifest; the Extractor runs it on real crops."""
    pytest.importorskip("torch", reason="exporting needs torch")
    from osnet_edge.export import export_bundle
    from osnet_edge.extractor import Extractor
    from osnet_edge.preprocess import read_image

    weights = require(SHARED_DATA / "weights" / "torchreid" / "osnet_x0_25_msmt17.pth")
    bundle = export_bundle(tmp_path / "b", width=0.25, res=1.0, target="onnxruntime", weights=weights)
    assert bundle.manifest["global_pool"] == DEFAULT_GLOBAL_POOL
    assert op_counts(onnx.load(str(bundle.path / "model.onnx"))).get(DEFAULT_GLOBAL_POOL) == OSNET_GLOBAL_POOLS
    folder = require(SHARED_DATA / "market1501" / "bounding_box_train")
    crops = [read_image(str(folder / n)) for n in sorted(n for n in os.listdir(folder) if n.endswith(".jpg"))[:4]]
    with Extractor(bundle.path, threads=1) as ex:
        emb = ex(crops)
    assert emb.shape == (4, 512) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
