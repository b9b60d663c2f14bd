"""The rknn target: the toolkit venv (stand-in torch), the worker, the quantizer's checks, both runtimes, and the
Extractor's contract on the x86 simulator (rknn-sim) with a real x0.25 bundle.

Fast tests need nothing; the rest create the rknn-toolkit2 venv once per run (``osnet-edge setup rknn``: PyPI,
skipped with the reason where unreachable) and export one real bundle (x0.25 Market-1501 weights, calibration
from bounding_box_train only)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import REPO, SHARED_DATA, X025_MARKET, require

from osnet_edge import runtimes
from osnet_edge.quantize.rknn import PLATFORM_PRECISIONS, build_config
from osnet_edge.runtimes.base import RuntimeFailure, RuntimeUnavailable
from osnet_edge.runtimes.rknn import check_batch
from osnet_edge.toolchains import rknn as toolchain

CALIB_DIR = SHARED_DATA / "market1501" / "bounding_box_train"
QUERY_DIR = SHARED_DATA / "market1501" / "query"


# ----------------------------------------------------------------------------------------------- fast, no venv
def test_build_config_validates_platform_precision_and_settings(tmp_path):
    onnx_path = _tiny_onnx(tmp_path)
    config = build_config(onnx_path, (256, 128), "rk3588", "int8", "mmse", "layer")
    assert config["quantized_algorithm"] == "mmse" and config["quantized_method"] == "layer"
    assert config["input_name"] == "input" and config["input_size"] == [256, 128]
    assert config["mean_values"] == [123.675, 116.28, 103.53] and config["std_values"] == [58.395, 57.12, 57.375]
    assert "quantized_algorithm" not in build_config(onnx_path, (256, 128), "rk3566", "fp16")
    with pytest.raises(ValueError, match="rk3588"):
        build_config(onnx_path, (256, 128), "rk9999", "int8")
    with pytest.raises(ValueError, match="rv1106 supports precision"):
        build_config(onnx_path, (256, 128), "rv1106", "fp16")
    with pytest.raises(ValueError, match="quantized_algorithm"):
        build_config(onnx_path, (256, 128), "rk3588", "int8", "minmax")
    with pytest.raises(ValueError, match="quantized_method"):
        build_config(onnx_path, (256, 128), "rk3588", "int8", "normal", "group")
    assert PLATFORM_PRECISIONS["rv1103"] == ("int8",) and "fp16" in PLATFORM_PRECISIONS["rk3576"]


def _tiny_onnx(tmp_path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["out"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 256, 128])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3, 256, 128])])
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_registry_has_both_rknn_runtimes_and_the_bundle_allows_them():
    from osnet_edge.bundle import COMPATIBLE_RUNTIMES, TARGETS

    assert {"rknn", "rknn-sim"} <= set(runtimes.names())
    assert "rknn" in TARGETS and COMPATIBLE_RUNTIMES["rknn"] == ("rknn", "rknn-sim")
    assert runtimes.get("rknn").name == "rknn" and runtimes.get("rknn-sim").name == "rknn-sim"


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.skipif(runtimes.get("rknn").is_available(), reason="rknn-toolkit-lite2 is installed here")
def test_board_runtime_without_rknnlite_names_the_extra(dummy_bundles):
    from osnet_edge.bundle import load_bundle

    bundle = load_bundle(next(iter(dummy_bundles.values())), verify=False)
    with pytest.raises(RuntimeUnavailable, match=r"rknn-toolkit-lite2.*osnet_edge\[rknn\]"):
        runtimes.get("rknn")(bundle)


def test_check_batch_flips_bgr_to_rgb_and_refuses_bad_input():
    bgr = np.zeros((2, 8, 4, 3), np.uint8)
    bgr[..., 0] = 7  # blue plane
    rgb = check_batch(bgr, (8, 4))
    assert rgb.flags.c_contiguous and (rgb[..., 2] == 7).all() and (rgb[..., 0] == 0).all()
    with pytest.raises(ValueError, match="uint8 BGR"):
        check_batch(bgr.astype(np.float32), (8, 4))
    with pytest.raises(ValueError, match="uint8 BGR"):
        check_batch(bgr[0], (8, 4))
    with pytest.raises(ValueError, match="input is 16x8"):
        check_batch(bgr, (16, 8))


def test_torch_standin_provides_exactly_what_the_toolkit_touches(tmp_path):
    toolchain.install_standin(tmp_path)
    code = ("import torch, torch.nn\n"
            "class Net(torch.nn.Module):\n    pass\n"
            "@torch.no_grad()\ndef f(x):\n    return x + 1\n"
            "assert f(1) == 2 and torch.STANDIN and torch.__version__.startswith('2.4.0+')\n"
            "for bad in (lambda: Net(), lambda: torch.zeros(1)):\n"
            "    try:\n        bad()\n    except (RuntimeError, AttributeError) as exc:\n"
            "        assert 'stand-in' in str(exc) and '--torch-index' in str(exc)\n"
            "    else:\n        raise SystemExit('stand-in allowed real use')\n"
            "from importlib.metadata import version\nprint(version('torch'))\n")
    out = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n" + code],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == toolchain.STANDIN_VERSION


def test_missing_venv_is_a_clear_error(tmp_path):
    with pytest.raises(toolchain.RknnToolchainError, match="osnet-edge setup rknn"):
        toolchain.check_venv(tmp_path / "nowhere")
    monkey_env = dict(os.environ, OSNET_EDGE_RKNN_VENV=str(tmp_path / "v"))
    out = subprocess.run([sys.executable, "-c", "from osnet_edge.toolchains.rknn import default_venv_dir; "
                          "print(default_venv_dir())"], capture_output=True, text=True, env=monkey_env, cwd=REPO)
    assert out.stdout.strip() == str(tmp_path / "v")


def test_cli_rknn_flags_are_checked_before_any_work():
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "osnet_edge", "export", *args], capture_output=True, text=True,
                              cwd=REPO)

    out = run("--target", "rknn", "--precision", "int8", "--calib", str(REPO))
    assert out.returncode != 0 and "--rknn-platform" in out.stderr
    out = run("--target", "onnxruntime", "--rknn-platform", "rk3588")
    assert out.returncode != 0 and "--target rknn only" in out.stderr
    out = run("--target", "rknn", "--rknn-platform", "rv1106", "--precision", "fp16")
    assert out.returncode != 0 and "INT8 only" in out.stderr


def test_worker_reads_the_toolkits_error_analysis(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("rknn_worker_under_test", toolchain.WORKER)
    rknn_worker = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    spec.loader.exec_module(rknn_worker)  # it prunes its own folder from sys.path: restore ours
    sys.path[:] = saved
    text = ("# simulator_error: calculate the output error of each layer of the simulator (compared to the "
            "'golden' value).\n"
            "[Input]       input                                          1.00000 | 0.0           1.00000 | 0.0\n"
            "[exDataConvert] input_int8                                   0.99998 | 1.23          0.99998 | 1.23\n"
            "[Conv]        /conv1/conv/Conv_output_0                      0.99950 | 12.5          0.99980 | 8.0\n")
    path = tmp_path / "error_analysis.txt"
    path.write_text(text)
    rows = rknn_worker.parse_error_analysis(str(path))
    assert [r["name"] for r in rows] == ["input", "input_int8", "/conv1/conv/Conv_output_0"]
    assert rows[2]["entire_cosine"] == 0.9995 and rows[2]["single_cosine"] == 0.9998


# ------------------------------------------------------------------------------- the venv, once per test run
@pytest.fixture(scope="session")
def rknn_venv() -> Path:
    """The toolkit venv: reused where it exists, else made (as `osnet-edge setup rknn` does)."""
    venv = toolchain.default_venv_dir()
    if not toolchain.venv_python(venv).exists():
        try:
            toolchain.create_venv(venv, log=lambda m: None)
        except toolchain.RknnToolchainError as exc:
            pytest.skip(f"cannot create the rknn-toolkit2 venv here (PyPI unreachable?): {str(exc).splitlines()[0]}")
    facts = toolchain.check_venv(venv)
    assert facts["toolkit_version"] == toolchain.TOOLKIT_VERSION and facts["numpy"] == "1.26.4"
    return venv


def test_venv_imports_the_toolkit_with_its_pins(rknn_venv):
    facts = toolchain.check_venv(rknn_venv)
    assert facts["onnx"] == "1.18.0"
    if facts["torch_standin"]:
        assert facts["torch_version"] == toolchain.STANDIN_VERSION
    else:
        assert facts["torch_version"].startswith("2.4.0")


@pytest.fixture(scope="module")
def int8_bundle(rknn_venv, tmp_path_factory) -> Path:
    """A real x0.25 rk3588 INT8 bundle (100 calibration crops, 48 held-out fidelity crops, no QAD: test time)."""
    require(X025_MARKET)
    require(CALIB_DIR)
    from osnet_edge.calibration import CalibrationSet
    from osnet_edge.export import export_bundle

    calib = CalibrationSet.from_folder(CALIB_DIR, (256, 128), max_images=100, progress=False)
    out = tmp_path_factory.mktemp("rknn") / "x025_rk3588_int8"
    export_bundle(out, width=0.25, res=1.0, target="rknn", precision="int8", weights=X025_MARKET, calibration=calib,
                  rknn_platform="rk3588", distill=False, fidelity_images=48)
    return out


def _real_crops(n: int, folder: Path = None) -> list[np.ndarray]:
    import cv2

    folder = require(folder or QUERY_DIR)
    files = sorted(folder.glob("*.jpg"))[:n]
    return [cv2.imread(str(f)) for f in files]


def test_bundle_records_the_build_and_the_simulator_fidelity(int8_bundle):
    from osnet_edge.bundle import load_bundle

    bundle = load_bundle(int8_bundle)
    m = bundle.manifest
    assert m["runtime"] == "rknn" and m["precision"] == "int8" and m["preprocess"]["fused"] is True
    assert {"model.onnx", "model.rknn", "rknn_calibration.npz", "rknn_probe.npz"} <= set(m["files"])
    build = m["build"]
    assert build["platform"] == "rk3588" and build["quantized_algorithm"] == "normal"
    assert build["toolkit"]["toolkit_version"] == toolchain.TOOLKIT_VERSION
    fid = m["quantization"]["fidelity"]
    assert fid["held_out"] is True and fid["num_images"] == 48
    assert fid["cosine_mean"] > 0.99 and fid["cosine_p1"] > 0.97  # measured 0.997 / 0.99 (docs/rknn.md)
    assert m["calibration"]["num_images"] == 100 and "market1501/bounding_box_train" in m["calibration"]["source"]
    with np.load(bundle.file("rknn_calibration.npz")) as z:
        assert z["crops"].shape == (100, 256, 128, 3) and z["crops"].dtype == np.uint8


@pytest.fixture(scope="module")
def sim_extractor(int8_bundle):
    from osnet_edge import Extractor

    with Extractor(int8_bundle, runtime="rknn-sim") as ext:
        yield ext


def test_simulator_rebuild_reproduces_the_exported_rows(sim_extractor):
    rt = sim_extractor._runtime
    assert rt.probe_max_abs_diff == 0.0  # identical builds give identical simulator rows (the .rknn bytes differ)


def test_extractor_contract_on_the_simulator(sim_extractor, int8_bundle):
    from osnet_edge.bundle import load_bundle
    from osnet_edge.extractor import Extractor  # noqa: F401  (the contract is the Extractor's)
    from osnet_edge.preprocess import Normalizer, resize
    from osnet_edge.quantize.fidelity import onnx_embedder

    crops = _real_crops(12)
    feats = sim_extractor(crops)
    assert feats.shape == (12, 512) and feats.dtype == np.float32
    assert np.allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    # within the simulator's fidelity of FP32 ONNX Runtime on the bundle's own model.onnx
    bundle = load_bundle(int8_bundle)
    batch = np.stack([resize(c, (256, 128), "linear") for c in crops])
    ref = onnx_embedder(bundle.file("model.onnx"))(Normalizer()(batch))
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    cos = (feats * ref).sum(1)
    assert cos.min() > 0.97 and cos.mean() > 0.99, cos
    # one crop alone = the same crop in a batch (the NPU model has batch 1: the runtime loops)
    assert np.array_equal(sim_extractor(crops[3]), feats[3:4])
    frame = np.zeros((300, 200, 3), np.uint8)
    frame[20:148, 10:74] = crops[0][:128, :64]
    assert sim_extractor.from_frame(frame, np.array([[10, 20, 74, 148], [0, 0, 50, 90]])).shape == (2, 512)
    assert sim_extractor.runtime == "rknn-sim" and sim_extractor.precision == "int8"


def test_simulator_runtime_refuses_bad_input(sim_extractor):
    with pytest.raises(TypeError, match="uint8"):
        sim_extractor(np.zeros((2, 64, 32, 3), np.float32))
    with pytest.raises(ValueError):
        sim_extractor([np.zeros((0, 10, 3), np.uint8)])
    with pytest.raises(ValueError, match="uint8 BGR"):
        sim_extractor._runtime.infer(np.zeros((1, 3, 256, 128), np.float32))


def test_info_describes_an_rknn_bundle(int8_bundle):
    out = subprocess.run([sys.executable, "-m", "osnet_edge", "info", str(int8_bundle)], capture_output=True,
                         text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "rk3588" in out.stdout and "rknn" in out.stdout and "simulator" in out.stdout


def test_board_runtime_refuses_a_platform_without_lite2(int8_bundle, tmp_path):
    """An RV1106 manifest on the board runtime: refused before any load, naming the C runtime."""
    if not runtimes.get("rknn").is_available():
        pytest.skip("rknn-toolkit-lite2 is not installed here (boards only)")
    from osnet_edge.bundle import load_bundle

    bundle = load_bundle(int8_bundle)
    bundle.manifest["build"]["platform"] = "rv1106"
    with pytest.raises(RuntimeFailure, match="C runtime"):
        runtimes.get("rknn")(bundle)
