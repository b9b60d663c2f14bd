"""TensorRT target.

On any machine: tensorrt bundles (fp32 / fp16 / int8 ONNX) run under ONNX Runtime CPU — the
very network TensorRT builds — within the agreed fidelity; the engine cache key, sidecar and
mismatch handling; one clear error where TensorRT, CUDA bindings or a GPU are missing; and a
source check that the runtime calls nothing TensorRT 11 removed.
``gpu``-marked tests build and run real engines against ONNX Runtime; they skip without CUDA.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from osnet_edge import runtimes
from osnet_edge.bundle import BundleError, BundleWriter, load_bundle
from osnet_edge.extractor import Extractor
from osnet_edge.preprocess import read_image
from osnet_edge.runtimes import tensorrt as trt_rt
from osnet_edge.runtimes.base import RuntimeUnavailable
from osnet_edge.samples import synthetic_crops
from osnet_edge.verify import agreement

from .conftest import REPO, SHARED_DATA, X025_MSMT

RUNTIME_SOURCES = sorted((REPO / "runtimes" / "tensorrt").glob("*.py"))  # the runtime package, every module
BUILD_SCRIPT = REPO / "scripts" / "build_engine.py"
MAX_BATCH = 16            # small profile: quick engine builds in the gpu tests, chunking exercised
FP32_ENGINE_COSINE = 0.9999
FP16_COSINE = 0.999

pytestmark = pytest.mark.filterwarnings("ignore:no --weights")


# ----------------------------------------------------------------------------- fixtures

def _crops(n: int) -> list[np.ndarray]:
    """Real person crops spread over cuhk03-val when ../shared is present, else synthetic ones."""
    folder = SHARED_DATA / "cuhk03" / "detected" / "val"
    if folder.is_dir():
        paths = sorted(folder.glob("*.jpg"))
        step = max(1, len(paths) // n)
        return [read_image(str(p)) for p in paths[::step][:n]]
    return synthetic_crops(n, seed=12)


@pytest.fixture(scope="module")
def crops() -> list[np.ndarray]:
    return _crops(96)


@pytest.fixture(scope="module")
def trt_bundles(tmp_path_factory):
    """x0.25 @ 128x64 tensorrt bundles, fp32 and fp16 (real checkpoint when present)."""
    export = pytest.importorskip("osnet_edge.export", reason="export needs torch + onnx")
    root = tmp_path_factory.mktemp("trt_bundles")
    import torch

    from osnet_edge.models import build_osnet, load_torchreid_weights

    # one model for both precisions: without ../shared, two random initialisations would differ
    torch.manual_seed(0)
    model = build_osnet(0.25).eval()
    if X025_MSMT.exists():
        load_torchreid_weights(model, X025_MSMT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {p: export.export_bundle(root / p, res=0.5, target="tensorrt", precision=p, model=model,
                                        max_batch=MAX_BATCH) for p in ("fp32", "fp16")}


@pytest.fixture(scope="module")
def ort_features(trt_bundles, crops):
    """Embeddings of each bundle's ONNX under ONNX Runtime CPU (normalised)."""
    out = {}
    for precision, bundle in trt_bundles.items():
        with Extractor(bundle.path, runtime="onnxruntime") as ext:
            out[precision] = ext(crops)
    return out


def _settings(**build) -> trt_rt.BuildSettings:
    manifest = {"model": {"input_size": [128, 64], "embedding_dim": 512}, "preprocess": {"fused": False},
                "max_batch": 64, "build": {"strongly_typed": True, "max_batch": 64, "opt_batch": 8, **build}}
    return trt_rt.build_settings(manifest)


def _key(gpu: str = "NVIDIA Jetson Orin (nvgpu)", cc=(8, 7), version: str = "10.3.0",
         onnx: str = "ab" * 32, **build) -> trt_rt.EngineKey:
    return trt_rt.EngineKey.create(trt_rt.GpuInfo(gpu, cc), version, onnx, _settings(**build))


# ----------------------------------------------------------------------------- bundles (CPU)

def test_tensorrt_bundle_manifest_and_build_settings(trt_bundles):
    for precision, bundle in trt_bundles.items():
        m = bundle.manifest
        assert (m["runtime"], m["precision"]) == ("tensorrt", precision)
        assert sorted(m["files"]) == ["model.onnx"]          # the engine is built on the device
        assert m["build"]["strongly_typed"] is True
        s = trt_rt.build_settings(m)
        assert (s.max_batch, s.opt_batch, s.min_batch) == (MAX_BATCH, 8, 1)
        assert s.sample_shape == (3, 128, 64) and s.input_dtype == "float32" and s.embedding_dim == 512
        assert (s.input_name, s.output_name) == ("input", "embedding")
        assert s.profile() == ((1, 3, 128, 64), (8, 3, 128, 64), (MAX_BATCH, 3, 128, 64))
        assert trt_rt.build_settings(m, workspace_mib=256).workspace_mib == 256


def test_fp16_onnx_is_fp16_inside_with_fp32_io(trt_bundles):
    import onnx

    proto = onnx.load(str(trt_bundles["fp16"].file("model.onnx")))
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert [t.type.tensor_type.elem_type for t in proto.graph.input] == [f32]
    assert [t.type.tensor_type.elem_type for t in proto.graph.output] == [f32]
    conv_weights = {n.input[1] for n in proto.graph.node if n.op_type == "Conv"}
    dtypes = {t.name: t.data_type for t in proto.graph.initializer}
    assert conv_weights and all(dtypes[w] == f16 for w in conv_weights)   # strongly typed => fp16 convs on TRT


def test_fp32_onnx_matches_torch_under_onnxruntime(trt_bundles, crops):
    bundle = trt_bundles["fp32"]
    if bundle.manifest["weights"] is None:
        pytest.skip("no real checkpoint: ../shared/data absent")
    from osnet_edge.verify import reference_check

    with Extractor(bundle.path, runtime="onnxruntime") as ext:
        check = reference_check(ext, crops)
    assert check is not None and check["cosine_min"] >= 0.99999, check


def test_fp16_onnx_agrees_with_fp32_under_onnxruntime(ort_features):
    a = agreement(ort_features["fp16"], ort_features["fp32"])
    print(f"\nfp16 vs fp32 (ONNX Runtime CPU, {a['num_images']} crops): cosine mean {a['cosine_mean']:.6f} "
          f"min {a['cosine_min']:.6f} max abs diff {a['max_abs_diff']:.2e}")
    assert a["cosine_min"] >= FP16_COSINE, a


def test_int8_qdq_onnx_for_tensorrt(trt_bundles, tmp_path):
    """The TensorRT int8 bundle's symmetric QDQ ONNX under ORT meets the INT8 fidelity targets."""
    quantize = pytest.importorskip("osnet_edge.quantize")
    calibration = pytest.importorskip("osnet_edge.calibration")
    if not hasattr(quantize, "quantize") or not hasattr(calibration, "CalibrationSet"):
        pytest.skip("osnet_edge.quantize.quantize / CalibrationSet not there yet (INT8 issue)")
    train = SHARED_DATA / "cuhk03" / "detected" / "train"
    if not (train.is_dir() and X025_MSMT.exists()):
        pytest.skip("INT8 needs real calibration crops and the real checkpoint (../shared/data absent)")
    import onnx

    from osnet_edge.export import export_bundle

    cal = calibration.CalibrationSet.from_folder(str(train), input_size=(128, 64), max_images=200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        int8 = export_bundle(tmp_path / "int8", 0.25, 0.5, target="tensorrt", precision="int8", weights=X025_MSMT,
                             calibration=cal, max_batch=MAX_BATCH)
    bundles = {"fp32": trt_bundles["fp32"], "int8": int8}
    proto = onnx.load(str(bundles["int8"].file("model.onnx")))
    ops = [n.op_type for n in proto.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    for node in proto.graph.node:        # TensorRT's rules: int8, symmetric (zero point 0)
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2] in inits:
            zp = inits[node.input[2]]
            assert zp.dtype == np.int8 and not zp.any(), node.name
    held_out = _crops(200)               # cuhk03-val: never the calibration images
    feats = {}
    for precision, bundle in bundles.items():
        with Extractor(bundle.path, runtime="onnxruntime") as ext:
            feats[precision] = ext(held_out)
    a = agreement(feats["int8"], feats["fp32"])
    print(f"\nint8 vs fp32 (ORT CPU): cosine mean {a['cosine_mean']:.4f} p1 {a['cosine_p1']:.4f}")
    assert a["cosine_mean"] >= 0.995 and a["cosine_p1"] >= 0.98, a


# ----------------------------------------------------------------------------- settings, profile, device

def test_build_settings_variants_and_validation():
    fused = trt_rt.build_settings({"model": {"input_size": [256, 128], "embedding_dim": 512},
                                   "preprocess": {"fused": True}, "max_batch": 4})  # no build dict: defaults
    assert (fused.sample_shape, fused.input_dtype) == ((256, 128, 3), "uint8")
    assert (fused.max_batch, fused.opt_batch, fused.workspace_mib) == (4, 4, trt_rt.DEFAULT_WORKSPACE_MIB)
    assert _settings(opt_batch=100).opt_batch == 64                     # opt never above max
    with pytest.raises(BundleError, match="strongly typed"):
        _settings(strongly_typed=False)
    with pytest.raises(ValueError, match="min <= opt <= max"):
        _settings(min_batch=9)
    with pytest.raises(ValueError, match="workspace_mib"):
        trt_rt.build_settings({"model": {"input_size": [8, 4], "embedding_dim": 2}, "preprocess": {}}, 0)
    with pytest.raises(BundleError, match="input size"):
        trt_rt.build_settings({"model": {}, "preprocess": {}})


def test_profile_shapes():
    assert trt_rt.profile_shapes((3, 64, 32), 1, 8, 32) == ((1, 3, 64, 32), (8, 3, 64, 32), (32, 3, 64, 32))
    assert trt_rt.profile_shapes((64, 32, 3), 2, 2, 2)[2] == (2, 64, 32, 3)
    for bad in ((0, 1, 4), (1, 5, 4), (True, 1, 4), (1, 2.0, 4)):
        with pytest.raises(ValueError):
            trt_rt.profile_shapes((3, 8, 4), *bad)
    with pytest.raises(ValueError):
        trt_rt.profile_shapes((3, 0, 4), 1, 1, 1)


def test_parse_device():
    assert [trt_rt.parse_device(d) for d in (None, "cuda", "CUDA:1", "gpu:2", 3)] == [0, 0, 1, 2, 3]
    with pytest.raises(ValueError, match="runtime='onnxruntime'"):
        trt_rt.parse_device("cpu")
    for bad in ("cuda:x", "npu", -1):
        with pytest.raises(ValueError):
            trt_rt.parse_device(bad)
    with pytest.raises(TypeError):
        trt_rt.parse_device(1.5)


# ----------------------------------------------------------------------------- engine cache (CPU)

def test_engine_key_names_are_safe_stable_and_distinct(tmp_path):
    base = _key()
    name = trt_rt.engine_file(tmp_path, base).name
    assert name == trt_rt.engine_file(tmp_path, _key()).name            # deterministic
    assert name.startswith("model.nvidia-jetson-orin-nvgpu_sm87_trt10.3.0_b1-8-64_abababab")
    assert not set(name) & set(" /\\()") and name.endswith(".engine")
    variants = [_key(gpu="NVIDIA H100 80GB HBM3", cc=(9, 0)), _key(cc=(7, 2)), _key(version="11.4.1"),
                _key(onnx="cd" * 32), _key(max_batch=32), _key(opt_batch=4)]
    names = {trt_rt.engine_file(tmp_path, k).name for k in variants}
    assert len(names) == len(variants) and name not in names
    t1 = trt_rt.timing_cache_file(tmp_path, "NVIDIA H100", "9.0", "10.3.0")
    assert t1 != trt_rt.timing_cache_file(tmp_path, "NVIDIA H100", "9.0", "11.0.0")
    assert t1 != trt_rt.timing_cache_file(tmp_path, "NVIDIA A100", "8.0", "10.3.0")
    with pytest.raises(ValueError, match="onnx_sha256"):
        _key(onnx="not-a-sha")


def test_saved_engine_is_found_and_verified(tmp_path):
    key, plan = _key(), os.urandom(4096)
    path = trt_rt.save_engine(tmp_path / "cache", key, plan, build_seconds=1.5)
    assert path == trt_rt.engine_file(tmp_path / "cache", key) and path.read_bytes() == plan
    meta = json.loads(trt_rt.sidecar_file(path).read_text())
    assert meta["size"] == 4096 and meta["key"]["tensorrt_version"] == "10.3.0" and meta["build_seconds"] == 1.5
    assert trt_rt.check_engine(path, key) is None
    assert trt_rt.engine_decision(tmp_path / "cache", key) == (path, None)
    assert trt_rt.engine_decision(tmp_path / "cache", key, force=True)[1] == "rebuild forced"
    assert trt_rt.engine_decision(tmp_path / "cache", _key(version="10.4.0"))[1] == "no cached engine"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]   # no temp files left


def test_corrupt_or_incomplete_engine_is_rebuilt(tmp_path):
    key, plan = _key(), os.urandom(2048)
    path = trt_rt.save_engine(tmp_path, key, plan)
    flipped = bytearray(plan)
    flipped[100] ^= 0xFF
    path.write_bytes(bytes(flipped))
    assert "sha256" in trt_rt.check_engine(path, key)
    path.write_bytes(plan[:1000])
    assert "truncated" in trt_rt.check_engine(path, key)
    path.write_bytes(plan)
    assert trt_rt.check_engine(path, key) is None
    trt_rt.sidecar_file(path).write_text("{not json")
    assert "unreadable" in trt_rt.check_engine(path, key)
    trt_rt.sidecar_file(path).unlink()
    assert "sidecar" in trt_rt.check_engine(path, key)


def test_engine_from_another_device_or_version_is_rebuilt(tmp_path):
    """An engine copied under another key's name (e.g. from another Jetson) is caught by its sidecar."""
    built_for = _key(version="10.3.0", cc=(8, 7))
    here = _key(version="10.7.0", cc=(8, 7))
    src = trt_rt.save_engine(tmp_path, built_for, b"plan" * 64)
    dst = trt_rt.engine_file(tmp_path, here)
    src.rename(dst)
    trt_rt.sidecar_file(src).rename(trt_rt.sidecar_file(dst))
    reason = trt_rt.check_engine(dst, here)
    assert "tensorrt_version" in reason and "10.3.0" in reason and "10.7.0" in reason


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv(trt_rt.ENGINE_CACHE_ENV, raising=False)
    assert trt_rt.resolve_cache_dir(tmp_path / "b") == tmp_path / "b" / "engines"
    monkeypatch.setenv(trt_rt.ENGINE_CACHE_ENV, str(tmp_path / "env"))
    assert trt_rt.resolve_cache_dir(tmp_path / "b") == tmp_path / "env"
    assert trt_rt.resolve_cache_dir(tmp_path / "b", tmp_path / "opt") == tmp_path / "opt"


def test_unwritable_cache_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(trt_rt.EngineCacheError) as err:
        trt_rt.save_engine(blocker / "engines", _key(), b"plan")
    msg = str(err.value)
    assert "cannot write" in msg and "--cache-dir" in msg and trt_rt.ENGINE_CACHE_ENV in msg
    assert err.value.__cause__ is None


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_bundle_dir_is_a_clear_error(tmp_path):
    ro = tmp_path / "bundle"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(trt_rt.EngineCacheError, match="read-only"):
            trt_rt.ensure_writable(ro / "engines")
    finally:
        ro.chmod(0o755)


# ----------------------------------------------------------------------------- clean errors without TensorRT

def _require_no_tensorrt() -> None:
    if trt_rt.TensorRtRuntime.is_available():
        pytest.skip("TensorRT and a GPU are present here: the gpu tests cover this machine")


def _assert_clear_unavailable(exc: BaseException, *expected: str) -> None:
    msg = str(exc)
    assert isinstance(exc, RuntimeUnavailable)
    assert "osnet_edge[tensorrt]" in msg and "runtime='onnxruntime'" in msg
    for text in expected:
        assert text in msg, msg
    assert exc.__cause__ is None and exc.__context__ is None     # one error, no chained traceback


def test_extractor_on_tensorrt_bundle_without_tensorrt(trt_bundles):
    _require_no_tensorrt()
    assert "tensorrt" not in runtimes.available()
    with pytest.raises(RuntimeUnavailable) as err:
        Extractor(trt_bundles["fp32"].path)
    _assert_clear_unavailable(err.value, "tensorrt")
    with Extractor(trt_bundles["fp32"].path, runtime="onnxruntime") as ext:   # the advertised way out
        assert ext(synthetic_crops(2)).shape == (2, 512)


def test_missing_tensorrt_package_is_reported_on_any_machine(trt_bundles, monkeypatch):
    """With ``tensorrt`` made unimportable, even a GPU machine gives the same single clear error."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert any(m.startswith("the tensorrt Python package") for m in trt_rt.missing_requirements())
    assert not trt_rt.TensorRtRuntime.is_available()
    assert "tensorrt" not in runtimes.available()
    with pytest.raises(RuntimeUnavailable) as err:
        runtimes.create(load_bundle(trt_bundles["fp16"].path), device="cuda")
    _assert_clear_unavailable(err.value, "the tensorrt Python package")
    with pytest.raises(RuntimeUnavailable):
        trt_rt.TensorRtRuntime.version()


def test_build_engine_script_without_gpu_is_one_line(trt_bundles):
    _require_no_tensorrt()
    proc = subprocess.run([sys.executable, str(BUILD_SCRIPT), str(trt_bundles["fp32"].path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    # the fixture's bundles hold random weights on purpose: their one-line warning may come first
    lines = [line for line in proc.stderr.strip().splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "osnet_edge[tensorrt]" in lines[0], proc.stderr


def test_build_engine_refuses_a_bundle_for_another_runtime(trt_bundles, tmp_path):
    source = trt_bundles["fp32"]
    with BundleWriter(tmp_path / "ort") as w:
        (w.path / "model.onnx").write_bytes(source.file("model.onnx").read_bytes())
        w.manifest.update({k: v for k, v in source.manifest.items() if k not in ("format", "format_version", "files")},
                          runtime="onnxruntime")
    with pytest.raises(BundleError, match="--target tensorrt"):
        trt_rt.prepare_engine(tmp_path / "ort")


# ----------------------------------------------------------------------------- TensorRT 11 API hygiene

# Removed in TensorRT 10 or 11 (NVIDIA's migration guides): precision builder flags, implicit
# INT8 calibration, platform queries, binding-index APIs and the old execute calls.
REMOVED_IN_TRT11 = {
    "FP16", "INT8", "BF16", "FP8", "INT4", "FP4", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS",
    "DIRECT_IO", "int8_calibrator", "set_calibration_profile", "get_calibration_profile", "set_quantization_flag",
    "get_quantization_flag", "clear_quantization_flag", "quantization_flags", "IInt8Calibrator",
    "IInt8EntropyCalibrator", "IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator", "IInt8LegacyCalibrator",
    "platform_has_fast_fp16", "platform_has_fast_int8", "execute", "execute_v2", "execute_async",
    "execute_async_v2", "get_binding_index", "get_binding_name", "get_binding_shape", "get_binding_dtype",
    "binding_is_input", "set_binding_shape", "num_bindings", "max_batch_size", "build_engine",
    "max_workspace_size", "EXPLICIT_BATCH", "algorithm_selector", "IAlgorithmSelector", "device_memory_size",
    "device_memory_size_v2", "device_memory_size_for_profile",
}
REQUIRED_CALLS = {"STRONGLY_TYPED", "OnnxParser", "parse_from_file", "set_memory_pool_limit",
                  "create_optimization_profile", "set_shape", "set_timing_cache", "build_serialized_network",
                  "deserialize_cuda_engine", "num_io_tensors", "get_tensor_name", "get_tensor_mode",
                  "set_input_shape", "set_tensor_address", "execute_async_v3"}


def _identifiers(source: str) -> dict[str, int]:
    """Attribute names, names and identifier-like string constants (getattr targets) -> first line."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(source)):
        name = (node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name)
                else node.value if isinstance(node, ast.Constant) and isinstance(node.value, str)
                and node.value.isidentifier() else None)
        if name is not None:
            found.setdefault(name, node.lineno)
    return found


def removed_api_uses(source: str) -> list[tuple[str, int]]:
    return sorted((name, line) for name, line in _identifiers(source).items() if name in REMOVED_IN_TRT11)


def test_scanner_catches_weakly_typed_code():
    legacy = ("config.set_flag(trt.BuilderFlag.FP16)\nconfig.int8_calibrator = cal\n"
              "if builder.platform_has_fast_int8: pass\nctx.execute_async_v2(bindings, s)\n"
              "i = engine.get_binding_index('input')\nflag = getattr(trt.NetworkDefinitionCreationFlag, 'EXPLICIT_BATCH')\n")
    assert {n for n, _ in removed_api_uses(legacy)} == {
        "FP16", "int8_calibrator", "platform_has_fast_int8", "execute_async_v2", "get_binding_index", "EXPLICIT_BATCH"}


def test_runtime_source_uses_only_tensorrt_11_apis():
    source = "\n".join(path.read_text(encoding="utf-8") for path in RUNTIME_SOURCES)
    assert removed_api_uses(source) == []
    missing = REQUIRED_CALLS - set(_identifiers(source))
    assert not missing, f"runtimes/tensorrt/ no longer uses {sorted(missing)}"


@pytest.mark.parametrize("source", RUNTIME_SOURCES, ids=lambda p: p.name)
def test_runtime_module_imports_without_gpu_packages_or_torch(source):
    tree = ast.parse(source.read_text(encoding="utf-8"))
    top_level = {alias.name.split(".")[0] for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
                 for alias in node.names} | {node.module.split(".")[0] for node in tree.body
                                             if isinstance(node, ast.ImportFrom) and node.module}
    assert not top_level & {"tensorrt", "pycuda", "cuda", "torch"}
    every = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert "torch" not in every


# ----------------------------------------------------------------------------- real engines (GPU)

@pytest.fixture(scope="module")
def gpu_ready():
    if not trt_rt.TensorRtRuntime.is_available():
        pytest.skip("needs TensorRT + pycuda/cuda-python + a CUDA GPU; missing: "
                    + "; ".join(trt_rt.missing_requirements()))


@pytest.fixture(scope="module")
def engine_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("engines")   # shared: each precision's engine is built once


@pytest.mark.gpu
@pytest.mark.parametrize("precision,threshold", [("fp32", FP32_ENGINE_COSINE), ("fp16", FP16_COSINE)])
def test_gpu_engine_matches_onnxruntime(gpu_ready, trt_bundles, crops, engine_cache, precision, threshold):
    bundle = trt_bundles[precision]
    with Extractor(bundle.path, runtime="onnxruntime") as ort_ext:
        x = ort_ext.model_input(crops[:MAX_BATCH * 2])
        ref = ort_ext.infer_raw(x)
    rt = trt_rt.TensorRtRuntime(bundle, device="cuda", cache_dir=engine_cache)
    try:
        print(f"\n{precision}: {rt.info}")
        for n in (1, 5, MAX_BATCH, 3, 1):      # shape changes in both directions
            a = agreement(rt.infer(x[:n]), ref[:n])
            assert a["cosine_min"] >= threshold, (n, a)
        with pytest.raises(ValueError, match="max batch"):
            rt.infer(x[:MAX_BATCH + 1])
        assert rt.infer(x[:0]).shape == (0, 512)
        first = rt.infer(x[:MAX_BATCH])
    finally:
        rt.close()
    again = trt_rt.TensorRtRuntime(bundle, device="cuda", cache_dir=engine_cache)   # from the cache
    try:
        assert not again.record.built and again.engine_path == rt.engine_path
        assert agreement(again.infer(x[:MAX_BATCH]), first)["cosine_min"] >= 0.99999
    finally:
        again.close()


@pytest.mark.gpu
def test_gpu_extractor_chunks_above_max_batch(gpu_ready, trt_bundles, crops, ort_features, engine_cache):
    with Extractor(trt_bundles["fp32"].path, device="cuda", cache_dir=engine_cache, batch_size=64) as ext:
        assert ext.batch_size == MAX_BATCH and ext.runtime == "tensorrt"
        feats = ext(crops)                      # 96 crops -> 6 engine calls
    assert agreement(feats, ort_features["fp32"])["cosine_min"] >= FP32_ENGINE_COSINE


@pytest.mark.gpu
def test_gpu_corrupt_cached_engine_is_rebuilt(gpu_ready, trt_bundles, tmp_path):
    bundle = trt_bundles["fp16"]
    first = trt_rt.prepare_engine(bundle, cache_dir=tmp_path)
    assert first.built and first.path.is_file() and first.build_seconds > 0
    data = bytearray(first.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    first.path.write_bytes(bytes(data))
    second = trt_rt.prepare_engine(bundle, cache_dir=tmp_path)
    assert second.built and "sha256" in second.reason
    assert trt_rt.check_engine(second.path, second.key) is None


@pytest.mark.gpu
def test_gpu_build_engine_script(gpu_ready, trt_bundles, engine_cache):
    args = [sys.executable, str(BUILD_SCRIPT), str(trt_bundles["fp32"].path), "--cache-dir", str(engine_cache), "--bench"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stderr
    assert "engine:" in proc.stdout and "TensorRT" in proc.stdout
    assert f"batch {MAX_BATCH:>3}: p50" in proc.stdout
