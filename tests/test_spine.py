"""Spine: export -> bundle -> ONNX Runtime / OpenVINO -> Extractor, checked against torch."""
from __future__ import annotations

import json

import numpy as np
import pytest

from osnet_edge import runtimes
from osnet_edge.bundle import BundleError
from osnet_edge.export import export_bundle
from osnet_edge.extractor import Extractor
from osnet_edge.preprocess import read_image
from osnet_edge.runtimes.torch import TorchRuntime
from osnet_edge.samples import synthetic_crops
from osnet_edge.verify import agreement

from .conftest import SHARED_DATA, X025_MARKET, X025_MSMT, require

pytestmark = pytest.mark.filterwarnings("ignore:no --weights")


def real_or_synthetic_crops(n: int = 48) -> list[np.ndarray]:
    """Real person crops (cuhk03 val) when ../shared is present, else synthetic ones."""
    folder = SHARED_DATA / "cuhk03" / "detected" / "val"
    if folder.is_dir():
        paths = sorted(folder.glob("*.jpg"))[: n]
        return [read_image(str(p)) for p in paths]
    return synthetic_crops(n, seed=3)


@pytest.fixture(scope="module")
def crops():
    return real_or_synthetic_crops()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """x0.25 bundles (real weights when present) for both targets at res 1.0 and 0.5."""
    root = tmp_path_factory.mktemp("bundles")
    weights = X025_MSMT if X025_MSMT.exists() else None
    out = {}
    for target in ("onnxruntime", "openvino"):
        for res in (1.0, 0.5):
            out[(target, res)] = export_bundle(root / f"{target}_{res}", 0.25, res, target=target, weights=weights)
    return out


def torch_reference(bundle, ext, crops) -> np.ndarray:
    if bundle.manifest["weights"] is None:
        pytest.skip("no real checkpoint: ../shared/data absent")
    return TorchRuntime(bundle).infer(ext.model_input(crops))


@pytest.mark.parametrize("target", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("res", [1.0, 0.5])
def test_fp32_matches_torch(bundles, crops, target, res):
    bundle = bundles[(target, res)]
    with Extractor(bundle.path) as ext:
        feats = ext(crops)
        ref = torch_reference(bundle, ext, crops)
    a = agreement(feats, ref)
    assert a["cosine_min"] >= 0.99999, a
    assert feats.dtype == np.float32 and feats.shape == (len(crops), 512)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-5)


def test_x1_0_random_weights_matches_torch(tmp_path, crops):
    import torch

    from osnet_edge.models import build_osnet

    torch.manual_seed(0)
    model = build_osnet(1.0).eval()
    bundle = export_bundle(tmp_path / "x1", res=0.5, target="onnxruntime", model=model)
    with Extractor(bundle.path) as ext:
        feats = ext(crops[:16])
        ref = TorchRuntime(model=model, fused_preprocess=False).infer(ext.model_input(crops[:16]))
    assert agreement(feats, ref)["cosine_min"] >= 0.99999
    assert bundle.manifest["random_weights"] is True


@pytest.mark.parametrize("target", ["onnxruntime", "openvino"])
def test_batch_size_never_changes_results(bundles, crops, target):
    bundle = bundles[(target, 0.5)]
    results = []
    for bs in (1, 7, 32):
        with Extractor(bundle.path, batch_size=bs) as ext:
            results.append(ext(crops[:40]))
    for other in results[1:]:
        np.testing.assert_allclose(other, results[0], atol=2e-5)
        assert agreement(other, results[0])["cosine_min"] > 0.99999


def test_input_forms_agree(bundles, crops):
    with Extractor(bundles[("onnxruntime", 0.5)].path) as ext:
        same = [np.ascontiguousarray(np.resize(c, (160, 64, 3))) for c in crops[:4]]
        as_list, as_array = ext(same), ext(np.stack(same))
        one = ext(same[0])
        assert ext(crops[:0]).shape == (0, 512)
    np.testing.assert_array_equal(as_list, as_array)
    np.testing.assert_allclose(one[0], as_list[0], atol=1e-6)


def test_from_frame_equals_manual_crops(bundles):
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    boxes = np.array([[10, 20, 74, 200], [600.2, 300.7, 700, 520], [-5, -5, 40, 90]])
    with Extractor(bundles[("openvino", 0.5)].path) as ext:
        got = ext.from_frame(frame, boxes)
        manual = ext([frame[20:200, 10:74], frame[300:480, 600:640], frame[0:90, 0:40]])
    np.testing.assert_allclose(got, manual, atol=1e-6)


def test_fused_preprocess_matches_torch(tmp_path, crops):
    import torch

    from osnet_edge.models import build_osnet

    torch.manual_seed(1)
    model = build_osnet(0.25).eval()
    fused = export_bundle(tmp_path / "fused", res=0.5, target="openvino", model=model, fuse_preprocess=True)
    assert fused.manifest["preprocess"]["fused"] is True
    with Extractor(fused.path) as ext:
        batch = ext.model_input(crops)
        assert batch.dtype == np.uint8 and batch.shape[1:] == (128, 64, 3)
        feats = ext(crops)
    # reference: the torch model on the float preprocessing the unfused path uses
    from osnet_edge.preprocess import preprocess
    ref = TorchRuntime(model=model, fused_preprocess=False).infer(preprocess(crops, (128, 64)))
    assert agreement(feats, ref)["cosine_min"] >= 0.99999


def test_openvino_fp16_fidelity_and_fp32_pins_f32(bundles, tmp_path, crops):
    import torch

    from osnet_edge.models import build_osnet, load_torchreid_weights

    torch.manual_seed(2)
    model = build_osnet(0.25).eval()
    if X025_MSMT.exists():
        load_torchreid_weights(model, X025_MSMT)
    fp16 = export_bundle(tmp_path / "fp16", res=1.0, target="openvino", precision="fp16", model=model)
    with Extractor(fp16.path) as half:
        feats = half(crops)
        ref = TorchRuntime(model=model, fused_preprocess=False).infer(half.model_input(crops))
    a = agreement(feats, ref)
    assert a["cosine_min"] >= 0.999, a
    with Extractor(bundles[("openvino", 1.0)].path) as full:
        assert full._runtime.config["INFERENCE_PRECISION_HINT"] in ("f32", "<Type: 'float32'>")


def test_manifest_contract(bundles):
    b = bundles[("openvino", 0.5)]
    m = json.loads((b.path / "manifest.json").read_text())
    assert m["format"] == "osnet-edge-bundle" and m["format_version"] == 2
    assert m["model"]["input_size"] == [128, 64] and m["model"]["embedding_dim"] == 512
    assert m["model"]["input_size_order"] == "HW" and m["model"]["input_layout"] == "NCHW float32"
    assert {"variant", "width", "res", "params", "mult_adds"} <= set(m["model"])
    assert m["preprocess"]["color"] == "BGR" and m["preprocess"]["fused"] is False
    assert set(m["files"]) == {"model.onnx", "model.xml", "model.bin"}
    assert all(len(v["sha256"]) == 64 for v in m["files"].values())
    assert m["runtime"] == "openvino" and m["precision"] == "fp32" and m["calibration"] is None
    assert {"osnet_edge", "onnx", "openvino"} <= set(m["versions"])
    assert m["model"]["mult_adds"] == 20_563_776 or round(m["model"]["mult_adds"] / 1e6, 1) == 20.6


def test_runtime_registry_and_cross_runtime_refusal(bundles):
    assert {"onnxruntime", "openvino"} <= set(runtimes.available())
    with pytest.raises(BundleError, match="exported for openvino"):
        Extractor(bundles[("openvino", 0.5)].path, runtime="onnxruntime")
    with pytest.raises(ValueError, match="unknown runtime"):
        runtimes.get("tflite")


def test_int8_without_calibration_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="calibration"):
        export_bundle(tmp_path / "q", 0.25, 0.5, precision="int8")
    with pytest.raises(ValueError, match="supports precisions"):
        export_bundle(tmp_path / "q", 0.25, 0.5, target="onnxruntime", precision="bf16")


def test_bundle_writer_replaces_atomically(tmp_path):
    from osnet_edge.bundle import BundleWriter

    def write(payload: bytes):
        with BundleWriter(tmp_path / "b") as w:
            (w.path / "model.onnx").write_bytes(payload)
            w.manifest.update(model={"variant": "osnet", "width": 0.25, "res": 0.5, "input_size": [128, 64],
                                     "embedding_dim": 512},
                              preprocess={"color": "BGR", "mean": [0.485, 0.456, 0.406],
                                          "std": [0.229, 0.224, 0.225], "interpolation": "linear",
                                          "fused": False},
                              runtime="onnxruntime", precision="fp32")
        return w.bundle

    first, second = write(b"one"), write(b"two")
    assert second.manifest["files"]["model.onnx"] != first.manifest["files"]["model.onnx"]
    assert (tmp_path / "b" / "model.onnx").read_bytes() == b"two"
    with pytest.raises(RuntimeError):
        with BundleWriter(tmp_path / "b") as w:
            (w.path / "model.onnx").write_bytes(b"three")
            raise RuntimeError("export failed half-way")
    assert (tmp_path / "b" / "model.onnx").read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no staging or old directories left


def test_export_flushes_negligible_weights():
    """Weights below 1e-30 (denormals, and the ~1e-37 weights of dead channels whose products
    underflow) slow x86 inference ~3x and change nothing: export zeroes them, keeps the rest."""
    import onnx
    from onnx import helper, numpy_helper

    from osnet_edge.export import flush_negligible_weights

    tiny = np.finfo(np.float32).tiny
    w = np.array([1e-40, -3e-39, 0.5, 0.0, 1.2e-38, tiny, 4e-37, -9e-31, 2e-30, 1e-10], dtype=np.float32)
    graph = helper.make_graph([], "g", [], [], initializer=[numpy_helper.from_array(w, "w"),
                                                            numpy_helper.from_array(np.array([1, 2]), "i")])
    proto = helper.make_model(graph)
    assert flush_negligible_weights(proto) == 6
    out = numpy_helper.to_array(proto.graph.initializer[0])
    assert out.tolist() == [0.0] * 2 + [0.5, 0.0] + [0.0] * 4 + [np.float32(2e-30), np.float32(1e-10)]
    assert numpy_helper.to_array(proto.graph.initializer[1]).tolist() == [1, 2]
    assert isinstance(proto, onnx.ModelProto)
    with pytest.raises(ValueError, match="threshold"):
        flush_negligible_weights(proto, threshold=1e-3)


def test_exported_real_checkpoint_computes_no_denormals(tmp_path):
    """A trained checkpoint's exported graph keeps every intermediate activation normal or zero on
    real crops (flushing only denormal weights left 26 denormal activations per 8 crops at 256x128,
    65k in an adapted 128x64 model)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    from osnet_edge.preprocess import preprocess

    train = require(SHARED_DATA / "market1501" / "bounding_box_train")
    bundle = export_bundle(tmp_path / "b", width=0.25, weights=require(X025_MARKET))
    proto = onnx.load(str(bundle.file("model.onnx")))
    produced = [o for n in proto.graph.node for o in n.output]
    del proto.graph.output[:]
    proto.graph.output.extend(helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None) for o in produced)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    crops = [read_image(str(p)) for p in sorted(train.glob("*.jpg"))[:8]]
    outputs = session.run(None, {"input": preprocess(crops, bundle.input_size)})
    denormal = {name: int(((a != 0) & (np.abs(a) < np.finfo(np.float32).tiny)).sum())
                for name, a in zip(produced, outputs) if a.dtype == np.float32}
    assert sum(denormal.values()) == 0, {k: v for k, v in denormal.items() if v}
