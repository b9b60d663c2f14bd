"""quantize(): each backend on a small OSNet (x0.25 @ 64x32), numeric fidelity, mixed precision, export."""
from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from osnet_edge.calibration import CalibrationSet
from osnet_edge.quantize import QuantizationResult, quantize
from osnet_edge.samples import synthetic_crops

from .conftest import X025_MSMT

RES, HW = 0.25, (64, 32)


@pytest.fixture(scope="module")
def small_model():
    """x0.25 with the real MSMT17 weights when ../shared is present (realistic ranges), else random."""
    from osnet_edge.models import build_osnet, load_torchreid_weights
    model = build_osnet(0.25)
    if X025_MSMT.exists():
        load_torchreid_weights(model, X025_MSMT)
    return model.eval()


@pytest.fixture(scope="module")
def fp32_onnx(small_model, tmp_path_factory) -> Path:
    from osnet_edge.export import to_onnx
    return to_onnx(small_model, tmp_path_factory.mktemp("fp32") / "model.onnx", HW)


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> CalibrationSet:
    """Real cuhk03 train crops when present, else synthetic crops written as JPEG."""
    from .conftest import SHARED_DATA
    real = SHARED_DATA / "cuhk03" / "detected" / "train"
    if real.is_dir():
        return CalibrationSet.from_folder(real, input_size=HW, max_images=48, cache_dir=False, progress=False)
    folder = tmp_path_factory.mktemp("crops")
    for i, crop in enumerate(synthetic_crops(80, seed=3)):
        cv2.imwrite(str(folder / f"{i:04d}_c{i % 3 + 1}s1_000000_00.jpg"), crop)
    return CalibrationSet.from_folder(folder, input_size=HW, max_images=48, cache_dir=False, progress=False)


def _holdout(calib):
    return calib.holdout(32)


@pytest.mark.parametrize("backend, files", [("onnxruntime", {"model.onnx"}), ("tensorrt", {"model.onnx"}),
                                            ("openvino", {"model.xml", "model.bin"})])
def test_each_backend_quantizes_with_fidelity(backend, files, fp32_onnx, calib, tmp_path):
    if backend == "openvino":
        pytest.importorskip("nncf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = quantize(fp32_onnx, calib, backend, tmp_path / "out", fidelity_set=_holdout(calib),
                       measure_latency=False, progress=False)
    assert isinstance(res, QuantizationResult)
    assert {p.name for p in (tmp_path / "out").iterdir()} == files  # nothing else left in the staging dir
    f = res.report["fidelity"]
    assert f["num_images"] == 32 and f["held_out"]
    assert 0.9 < f["cosine_mean"] <= 1.0 and f["cosine_p1"] > 0.8, f
    if backend != "openvino":
        proto = onnx.load(str(tmp_path / "out" / "model.onnx"))
        q = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
        assert len(q) > 50
        if backend == "tensorrt":  # TensorRT: int8 zero points only, all zero
            inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
            zps = [inits[n.input[2]] for n in q if len(n.input) > 2]
            assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)
    import json
    json.dumps(res.report)


def _weight_is_quantized(proto, node_name: str) -> bool:
    producers = {o: n for n in proto.graph.node for o in n.output}
    node = next(n for n in proto.graph.node if n.name == node_name)
    p = producers.get(node.input[1])
    return p is not None and p.op_type == "DequantizeLinear"


def test_exclude_and_mixed_precision_loop(fp32_onnx, calib, tmp_path):
    convs = [n.name for n in onnx.load(str(fp32_onnx)).graph.node if n.op_type == "Conv"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = quantize(fp32_onnx, calib, "onnxruntime", tmp_path / "a", exclude=[convs[0]],
                       fidelity_set=_holdout(calib), measure_latency=False)
    proto = onnx.load(str(tmp_path / "a" / "model.onnx"))
    assert not _weight_is_quantized(proto, convs[0]) and _weight_is_quantized(proto, convs[1])
    assert res.report["kept_fp32"] == [convs[0]]
    # an unreachable target: the loop must rank layers, keep some in fp32 and retry, then report
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = quantize(fp32_onnx, calib, "onnxruntime", tmp_path / "b", min_cosine=0.99999, max_kept_fp32=0.05,
                       fidelity_set=_holdout(calib), measure_latency=False)
    mp = res.report["mixed_precision"]
    assert mp["attempts"] >= 2 and len(mp["sensitivity_top"]) > 5
    assert any(h["kept_fp32"] > 0 for h in res.report["history"])
    assert res.report["fidelity"]["meets_target"] is False
    proto = onnx.load(str(tmp_path / "b" / "model.onnx"))
    for name in res.report["kept_fp32"]:
        assert not _weight_is_quantized(proto, name)


def test_distillation_runs_and_is_reported(small_model, fp32_onnx, calib, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = quantize(fp32_onnx, calib, "tensorrt", tmp_path / "d", torch_model=small_model, distill_steps=3,
                       distill_device="cpu", fidelity_set=_holdout(calib), measure_latency=False, progress=False)
    assert res.method == "minmax+qad"
    d = res.report["distillation"]
    assert d["steps"] == 3 and d["scheme"] == "int8 symmetric" and d["device"] == "cpu"
    assert res.report["fidelity"]["cosine_mean"] > 0.9


def test_bad_arguments(fp32_onnx, calib, tmp_path):
    with pytest.raises(ValueError, match="backend"):
        quantize(fp32_onnx, calib, "tflite", tmp_path)
    with pytest.raises(ValueError, match="method"):
        quantize(fp32_onnx, calib, "onnxruntime", tmp_path, method="mixed")
    with pytest.raises(TypeError):
        quantize(fp32_onnx, None, "onnxruntime", tmp_path)
    with pytest.raises(ValueError, match="torch_model"):
        quantize(fp32_onnx, calib, "onnxruntime", tmp_path, distill=True)


def test_export_int8_bundle_loads_in_extractor(small_model, calib, tmp_path):
    from osnet_edge.export import export_bundle
    from osnet_edge.extractor import Extractor
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bundle = export_bundle(tmp_path / "b", width=0.25, res=RES, model=small_model, target="onnxruntime",
                               precision="int8", calibration=calib, distill=False)
    m = bundle.manifest
    assert m["precision"] == "int8" and m["calibration"]["num_images"] == 48
    assert m["calibration"]["method"] == "minmax" and len(m["calibration"]["sha256"]) == 64
    assert m["quantization"]["fidelity"]["held_out"] is True
    assert "latency" in m["quantization"]
    assert sorted(m["files"]) == ["model.onnx"]
    with Extractor(bundle.path) as ext:
        feats = ext(synthetic_crops(3, seed=5))
    assert feats.shape == (3, 512) and np.allclose(np.linalg.norm(feats, axis=1), 1, atol=1e-4)


def test_conv_placement_keeps_gate_mlp_and_fc_in_fp32(fp32_onnx, calib, tmp_path):
    """Default placement: Q/DQ on the spatial convolutions only; the gate MLP (1x1 tensors, a
    one-channel hidden layer at x0.25) and the final fc stay fp32. ``placement="all"`` is ORT's own."""
    from osnet_edge.quantize.onnxruntime import fp32_placement_nodes, quantize_qdq

    data = calib.model_input()[:8]
    for placement in ("conv", "all"):
        work = tmp_path / placement
        work.mkdir()
        info = quantize_qdq(str(fp32_onnx), data, work, "minmax", True, [], False, {"placement": placement})
        assert info["placement"] == placement
        proto = onnx.load(str(work / "model.onnx"))
        gate = [n.name for n in proto.graph.node if n.op_type == "Conv" and ".gate.fc" in n.input[1]]
        fc = [n.name for n in proto.graph.node if n.op_type == "Gemm"]
        spatial = [n.name for n in proto.graph.node if n.op_type == "Conv" and n.name not in gate]
        assert len(gate) == 48 and len(fc) == 1 and len(spatial) > 100
        assert all(_weight_is_quantized(proto, n) for n in spatial)
        kept = [n for n in gate + fc if not _weight_is_quantized(proto, n)]
        assert kept == (gate + fc if placement == "conv" else [])
    names = set(fp32_placement_nodes(fp32_onnx))
    ops = {n.op_type for n in onnx.load(str(fp32_onnx)).graph.node if n.name in names}
    assert ops == {"Conv", "Gemm", "Mul", "Add", "GlobalAveragePool", "Relu", "Sigmoid"}
    with pytest.raises(ValueError, match="placement"):
        quantize_qdq(str(fp32_onnx), data, tmp_path, "minmax", True, [], False, {"placement": "some"})


def test_tensorrt_qdq_quantizes_conv_inputs_only_and_shifts_nonnegative_tensors(fp32_onnx, calib, tmp_path):
    """TensorRT bundles: Q/DQ only where an int8 conv reads, non-negative tensors shifted onto the
    whole symmetric grid with the shift folded into fp32 biases. Same int8 convs, same fp32 function."""
    from osnet_edge.quantize import onnx_embedder
    from osnet_edge.quantize.tensorrt import check_tensorrt_rules, quantize_model

    data = calib.model_input()
    works = {}
    for shift in (False, True):
        works[shift] = tmp_path / str(shift)
        works[shift].mkdir()
        info = quantize_model(str(fp32_onnx), data, works[shift], shift_nonnegative=shift)
        assert info["dropped_output_qdq"] > 20
        check_tensorrt_rules(works[shift] / "model.onnx")
    assert info["shift"]["shifted_tensors"] > 40 and info["shift"]["biases_folded"] >= info["shift"]["shifted_tensors"]

    def int8_convs(proto):
        producers = {o: n for n in proto.graph.node for o in n.output}
        return sorted(n.name for n in proto.graph.node if n.op_type == "Conv"
                      and getattr(producers.get(n.input[0]), "op_type", None) == "DequantizeLinear"
                      and getattr(producers.get(n.input[1]), "op_type", None) == "DequantizeLinear")

    plain, shifted = (onnx.load(str(works[s] / "model.onnx")) for s in (False, True))
    assert len(int8_convs(plain)) > 100 and int8_convs(plain) == int8_convs(shifted)
    # every Q/DQ left feeds an int8 conv
    consumers = {}
    for n in shifted.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    for q in (n for n in shifted.graph.node if n.op_type == "QuantizeLinear"):
        users = [u for d in consumers[q.output[0]] for u in consumers.get(d.output[0], [])]
        assert any(u.op_type == "Conv" for u in users), q.name
    # the shift is exact: with activation Q/DQ removed (weights still int8-valued), both graphs agree
    outs = []
    for proto, tag in ((shifted, "s"), (plain, "p")):
        onnx.save(_strip_qdq(proto), str(tmp_path / f"{tag}.onnx"))
        outs.append(onnx_embedder(tmp_path / f"{tag}.onnx")(data[:4]))
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-3, atol=1e-4)
    # and it makes int8 more faithful to fp32
    test = calib.holdout(32).model_input()
    ref = onnx_embedder(fp32_onnx)(test)

    def cos(path):
        out = onnx_embedder(path)(test)
        return float(np.mean(np.sum(out * ref, 1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)))
    assert cos(works[True] / "model.onnx") > cos(works[False] / "model.onnx")


def _strip_qdq(proto):
    """The float network of a QDQ graph: each DQ(Q(x)) replaced by x, weight DQs by the dequantized weights."""
    import copy

    from onnx import numpy_helper

    from osnet_edge.quantize.tensorrt import dequantized_weight

    proto = copy.deepcopy(proto)
    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    rename, drop, new = {}, set(), []
    producers = {o: n for n in g.node for o in n.output}
    for n in g.node:
        if n.op_type == "DequantizeLinear":
            src = n.input[0]
            if src in inits:  # weight: dequantize it now
                new.append(numpy_helper.from_array(dequantized_weight(n, inits).astype(np.float32), n.output[0]))
            else:
                rename[n.output[0]] = producers[src].input[0]
                drop.add(producers[src].name)
            drop.add(n.name)
    nodes = [n for n in g.node if n.name not in drop]
    for n in nodes:
        for j, name in enumerate(n.input):
            n.input[j] = rename.get(name, name)
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(new)
    return proto
