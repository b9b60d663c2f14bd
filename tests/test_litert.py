"""The litert target: torch -> .tflite (litert-torch) -> LiteRT + XNNPACK, against the torch model.

Real conversions and a real interpreter: fp32 and fused bundles must equal torch (cosine >=
0.99999), the exact pre-conversion rewrites must not change the function, XNNPACK must take the
whole graph (the coverage check is shown to catch an op that falls off), and INT8 runs
full-integer with float I/O handled by the runtime.
"""
from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest

pytest.importorskip("torch", reason="exporting needs torch (osnet_edge[export])")
pytest.importorskip("litert_torch", reason="the litert target converts with litert-torch (osnet_edge[litert-export])")
pytest.importorskip("ai_edge_litert", reason="needs ai-edge-litert (osnet_edge[litert])")

import torch  # noqa: E402

from osnet_edge.export import export_bundle  # noqa: E402
from osnet_edge.extractor import Extractor  # noqa: E402
from osnet_edge.models import build_osnet  # noqa: E402
from osnet_edge.runtimes.torch import TorchRuntime  # noqa: E402
from osnet_edge.samples import synthetic_crops  # noqa: E402
from osnet_edge.verify import agreement  # noqa: E402

from .conftest import SHARED_DATA  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:no --weights", "ignore::UserWarning")


def _randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BN statistics, so that folding is really exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def crops():
    return synthetic_crops(7, seed=11)


@pytest.fixture(scope="module")
def fp32_bundle(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_bundle(tmp_path_factory.mktemp("litert") / "fp32", width=0.25, res=0.5, target="litert")


def _vs_torch(bundle, crops, batch_size=32):
    with Extractor(bundle.path, threads=1, batch_size=batch_size) as ext:
        got = ext(crops)
        ref = TorchRuntime(bundle).infer(ext.model_input(crops))
    return agreement(got, ref)


def test_fp32_bundle_equals_torch_at_every_batch_size(fp32_bundle, crops):
    """The file has batch 1; the runtime resizes it per call (7 crops = one batch, then 3 + 3 + 1)."""
    manifest = fp32_bundle.manifest
    assert manifest["runtime"] == "litert" and manifest["model"]["input_layout"] == "NHWC float32"
    assert list(fp32_bundle.manifest["files"]) == ["model.tflite"]
    for batch_size in (32, 3):
        check = _vs_torch(fp32_bundle, crops, batch_size)
        assert check["cosine_min"] >= 0.99999, (batch_size, check)
    with Extractor(fp32_bundle.path, threads=1, batch_size=3) as ext:
        one_by_one = np.concatenate([ext([c]) for c in crops])
        np.testing.assert_allclose(ext(crops), one_by_one, atol=1e-5)


def test_the_whole_graph_runs_on_xnnpack(fp32_bundle):
    coverage = fp32_bundle.manifest["build"]["xnnpack"]
    assert coverage["partitions"] == 1 and coverage["undelegated_ops"] == {}, coverage
    assert coverage["delegated"] == coverage["nodes"] > 250
    rewrites = fp32_bundle.manifest["build"]["rewrites"]
    assert rewrites["average_pool_as_depthwise_conv"] == 2 and rewrites["max_pool_zero_padded"] == 1


def test_coverage_check_sees_an_op_fall_off_xnnpack(tmp_path):
    """Without the max-pool rewrite torch's padding becomes PADV2 (-inf), which XNNPACK refuses:
    the coverage read from the interpreter must say so (and so cannot pass vacuously)."""
    from osnet_edge.runtimes.litert import LiteRtRuntime
    from osnet_edge.tflite import to_tflite

    model = build_osnet(0.25).eval()
    to_tflite(model, tmp_path / "plain.tflite", (64, 32), rewrite_pools=False)
    rt = LiteRtRuntime.from_file(str(tmp_path / "plain.tflite"), threads=1)
    coverage = rt.coverage()
    assert coverage["undelegated_ops"].get("PADV2") == 1 and coverage["partitions"] >= 2, coverage
    assert coverage["delegated"] == coverage["nodes"] - 1


def test_pre_conversion_rewrites_are_exact():
    """BN folding, average pool -> depthwise conv, zero-padded max pool: the same function."""
    from osnet_edge.tflite import (ZeroPaddedMaxPool, condition_weights, fold_batchnorm, rewrite_average_pools,
                                   rewrite_stem_max_pool)

    for variant in ("osnet", "ibn", "ain"):
        model = _randomised(build_osnet(0.5, variant))
        rewritten, pools = rewrite_average_pools(model)
        assert pools == 2
        assert rewrite_stem_max_pool(rewritten) == 1 and isinstance(rewritten.maxpool, ZeroPaddedMaxPool)
        assert fold_batchnorm(rewritten) > 40
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in rewritten.modules())
        condition_weights(rewritten, for_int8=False)
        x = torch.randn(3, 3, 128, 64)
        with torch.no_grad():
            a, b = model(x), rewritten(x)
        cos = torch.nn.functional.cosine_similarity(a, b).min().item()
        assert cos >= 0.999999 and torch.allclose(a, b, atol=1e-4), (variant, cos)


def test_zero_padded_max_pool_needs_non_negative_input():
    """Documented precondition: exact after a ReLU, wrong on negative input (why only the stem gets it)."""
    from osnet_edge.tflite import ZeroPaddedMaxPool

    pool = torch.nn.MaxPool2d(3, stride=2, padding=1)
    x = torch.rand(2, 4, 16, 8)
    assert torch.equal(ZeroPaddedMaxPool(pool)(x), pool(x))
    assert not torch.equal(ZeroPaddedMaxPool(pool)(x - 2), pool(x - 2))


def test_fused_bundle_takes_uint8_crops(tmp_path, crops):
    """uint8 BGR NHWC in; the BGR->RGB swap is folded into the first convolution, no shuffle op."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bundle = export_bundle(tmp_path / "fused", width=0.25, res=0.5, target="litert", fuse_preprocess=True)
    assert bundle.manifest["model"]["input_layout"] == "NHWC uint8"
    assert bundle.manifest["build"]["rewrites"]["bgr_folded_into_first_conv"]
    assert bundle.manifest["build"]["xnnpack"]["partitions"] == 1
    check = _vs_torch(bundle, crops)
    assert check["cosine_min"] >= 0.99999, check


def test_fp16_weights_bundle(tmp_path, crops, fp32_bundle):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bundle = export_bundle(tmp_path / "fp16", width=0.25, res=0.5, target="litert", precision="fp16")
    assert bundle.file("model.tflite").stat().st_size < 0.8 * fp32_bundle.file("model.tflite").stat().st_size
    check = _vs_torch(bundle, crops)
    assert check["cosine_min"] >= 0.999, check


def _calibration(tmp_path, hw):
    from osnet_edge.calibration import CalibrationSet

    folder = SHARED_DATA / "cuhk03" / "detected" / "train"
    if not folder.is_dir():  # synthetic crops written as files: the calibration path is the same
        import cv2

        folder = tmp_path / "crops"
        folder.mkdir()
        for i, c in enumerate(synthetic_crops(120, seed=21)):
            cv2.imwrite(str(folder / f"{i:04d}.jpg"), c)
    return CalibrationSet.from_folder(folder, input_size=hw, max_images=64)


def test_int8_bundle_is_full_integer_with_float_io(tmp_path, crops):
    """ai-edge-quantizer's static INT8 from the project's calibration crops; int8 input/output are
    (de)quantized by the runtime, so the Extractor is unchanged; the whole graph stays on XNNPACK."""
    from ai_edge_litert.interpreter import Interpreter

    hw = (64, 32)
    calibration = _calibration(tmp_path, hw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bundle = export_bundle(tmp_path / "int8", width=0.25, res=0.25, target="litert", precision="int8",
                               calibration=calibration, measure_latency=False, fidelity_images=24)
    it = Interpreter(model_path=str(bundle.file("model.tflite")))
    assert it.get_input_details()[0]["dtype"] == np.int8 and it.get_output_details()[0]["dtype"] == np.int8
    assert bundle.manifest["build"]["xnnpack"]["undelegated_ops"] == {}, bundle.manifest["build"]["xnnpack"]
    fidelity = bundle.manifest["quantization"]["fidelity"]
    assert fidelity["cosine_mean"] > 0.95, fidelity
    check = _vs_torch(bundle, crops)
    assert check["cosine_mean"] > 0.9, check
    json.dumps(bundle.manifest)  # the report is JSON-able


def test_litert_runtime_errors_are_clear(fp32_bundle):
    with pytest.raises(ValueError, match="device must be 'cpu'"):
        Extractor(fp32_bundle.path, device="gpu")
    with pytest.raises(ValueError, match="threads"):
        Extractor(fp32_bundle.path, threads=0)
    with Extractor(fp32_bundle.path, threads=1) as ext:
        with pytest.raises(ValueError, match="3 channels"):
            ext(np.zeros((2, 20, 10, 4), np.uint8))


def test_unsupported_litert_options_are_refused(tmp_path):
    model = build_osnet(0.25)
    with pytest.raises(ValueError, match="bf16"):
        export_bundle(tmp_path / "x", width=0.25, res=0.25, target="litert", precision="bf16", model=copy.deepcopy(model))


def test_partial_integer_int8_keeps_the_gate_mlp_float(tmp_path, crops):
    """``placement="conv"``: int8 weights only in the feature-map convolutions; the gates' 1x1 MLP, the
    products, sums and fc stay float32, the file takes and returns float32, and XNNPACK runs all of it."""
    from ai_edge_litert.interpreter import Interpreter

    hw = (64, 32)
    calibration = _calibration(tmp_path, hw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bundle = export_bundle(tmp_path / "int8", width=0.25, res=0.25, target="litert", precision="int8",
                               calibration=calibration, measure_latency=False, fidelity_images=24, placement="conv")
    assert bundle.manifest["quantization"]["placement"] == "conv"
    it = Interpreter(model_path=str(bundle.file("model.tflite")))
    assert it.get_input_details()[0]["dtype"] == np.float32 and it.get_output_details()[0]["dtype"] == np.float32
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    kinds = {"gate": set(), "feature": set()}
    for op in it._get_ops_details():
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            shape = tensors[op["inputs"][0]]["shape"]
            weight = np.dtype(tensors[op["inputs"][1]]["dtype"])
            kinds["gate" if shape[1] == shape[2] == 1 else "feature"].add(weight)
        if op["op_name"] in ("LOGISTIC", "FULLY_CONNECTED", "MEAN"):
            assert np.dtype(tensors[op["outputs"][0]]["dtype"]) == np.float32, op
    assert kinds == {"gate": {np.dtype(np.float32)}, "feature": {np.dtype(np.int8)}}, kinds
    assert bundle.manifest["build"]["xnnpack"]["undelegated_ops"] == {}, bundle.manifest["build"]["xnnpack"]
    assert bundle.manifest["quantization"]["fidelity"]["cosine_mean"] > 0.95
    assert _vs_torch(bundle, crops)["cosine_mean"] > 0.9


def test_litert_int8_placement_is_checked(tmp_path):
    from osnet_edge.quantize.litert import int8_recipe

    with pytest.raises(ValueError, match="placement must be one of"):
        int8_recipe(tmp_path / "none.tflite", placement="gates")


def test_dynamic_range_int8_needs_no_ranges_and_stays_on_xnnpack(tmp_path, crops):
    """``calib_method="dynamic"``: int8 weights in the convolutions and fc, activations quantized per call;
    float32 in and out, no distillation, every op on XNNPACK (depthwise kept float: XNNPACK has no
    dynamically quantized depthwise kernel)."""
    from ai_edge_litert.interpreter import Interpreter

    hw = (64, 32)
    calibration = _calibration(tmp_path, hw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bundle = export_bundle(tmp_path / "dyn", width=0.25, res=0.25, target="litert", precision="int8",
                               calibration=calibration, calib_method="dynamic", measure_latency=False,
                               fidelity_images=24)
    q = bundle.manifest["quantization"]
    assert q["method"] == "dynamic" and q["placement"] == "dynamic" and q["distillation"] is None
    it = Interpreter(model_path=str(bundle.file("model.tflite")))
    assert it.get_input_details()[0]["dtype"] == np.float32
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    weights = {op["op_name"]: np.dtype(tensors[op["inputs"][1]]["dtype"]) for op in it._get_ops_details()
               if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")}
    assert weights == {"CONV_2D": np.int8, "FULLY_CONNECTED": np.int8, "DEPTHWISE_CONV_2D": np.float32}, weights
    assert bundle.manifest["build"]["xnnpack"]["undelegated_ops"] == {}, bundle.manifest["build"]["xnnpack"]
    assert q["fidelity"]["cosine_mean"] > 0.99, q["fidelity"]
    with pytest.raises(ValueError, match="no placement"):
        export_bundle(tmp_path / "x", width=0.25, res=0.25, target="litert", precision="int8", calibration=calibration,
                      calib_method="dynamic", placement="conv")
