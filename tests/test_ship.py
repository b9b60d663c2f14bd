"""Ship: the rough edges a newcomer hit (issue "Ship it", items 2-5), each pinned by a test.

Safety rails (random weights, unadapted resolution, normalised or tiny boxes, colour order,
PIL images, float input, checkpoint width, --width/--res), bundles readable by other accounts,
output people read (img/s at p50, one bundle naming scheme, progress bars only on a terminal,
threads actually used, an unambiguous manifest that still reads format 1), install metadata.
One random x0.25 @ 64x32 bundle (and its fused twin) is exported per module and shared.
"""
from __future__ import annotations

import configparser
import io
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import osnet_edge
from osnet_edge.bundle import BundleWriter, default_bundle_name, load_bundle
from osnet_edge.extractor import Extractor, clip_boxes
from osnet_edge.notices import (OddInputSizeWarning, OsnetEdgeWarning, RandomWeightsWarning,
                                UnadaptedResolutionWarning)
from osnet_edge.preprocess import preprocess
from osnet_edge.samples import synthetic_crops

from .conftest import load_script

torch = pytest.importorskip("torch", reason="exporting the test bundles needs torch (osnet_edge[export])")
pytest.importorskip("onnxruntime", reason="needs onnxruntime (osnet_edge[onnxruntime])")

REPO = Path(__file__).resolve().parents[1]
NAME = default_bundle_name("osnet", 0.25, 0.25, "onnxruntime", "fp32")


def _export(out: Path, **kwargs):
    from osnet_edge.export import export_bundle

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        return export_bundle(out, width=0.25, res=0.25, target="onnxruntime", **kwargs)


@pytest.fixture(scope="module")
def public(tmp_path_factory) -> Path:
    """A folder laid out like scripts/export.py's bundles/: one random-weights bundle under its default name."""
    root = tmp_path_factory.mktemp("public")
    _export(root / NAME)
    return root


@pytest.fixture(scope="module")
def bundle_dir(public) -> Path:
    return public / NAME


@pytest.fixture(scope="module")
def fused_dir(tmp_path_factory) -> Path:
    return _export(tmp_path_factory.mktemp("fused") / "fused", fuse_preprocess=True).path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A torchreid-style x0.25 checkpoint (full resolution, no adaptation record)."""
    from osnet_edge.models import build_osnet

    path = tmp_path_factory.mktemp("ckpt") / "x025.pth"
    torch.save({"state_dict": build_osnet(0.25).state_dict()}, path)
    return path


def _copy(src: Path, dst: Path, edit=None) -> Path:
    shutil.copytree(src, dst)
    if edit is not None:
        mpath = dst / "manifest.json"
        manifest = json.loads(mpath.read_text())
        edit(manifest)
        mpath.write_text(json.dumps(manifest))
    return dst


# --------------------------------------------------------------------------- 3. safety rails
def test_warning_categories_are_ours_and_filterable():
    for category in (RandomWeightsWarning, UnadaptedResolutionWarning, OddInputSizeWarning):
        assert issubclass(category, OsnetEdgeWarning) and issubclass(category, UserWarning)
        assert getattr(osnet_edge, category.__name__) is category


def test_export_without_weights_warns_and_is_seeded(tmp_path, bundle_dir):
    from osnet_edge.export import export_bundle

    tmp_path.joinpath("exists").mkdir()
    with pytest.warns(RandomWeightsWarning, match=r"RANDOMLY INITIALISED.*--weights.*osnet_x0_25_market1501.pth"):
        with pytest.raises(FileExistsError):  # stops right after the weights step: no ONNX export
            export_bundle(tmp_path / "exists", width=0.25, res=0.25, overwrite=False)
    m = json.loads((bundle_dir / "manifest.json").read_text())
    assert m["weights"] is None and m["random_weights"] is True and m["random_seed"] == 0


def test_seeded_random_bundle_is_checked_against_the_same_torch_network(bundle_dir):
    """The seed in the manifest rebuilds the exact network, so export's check against torch runs
    for random weights too (it used to be skipped)."""
    from osnet_edge.samples import synthetic_crops
    from osnet_edge.verify import reference_check

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        with Extractor(bundle_dir, threads=1) as ext:
            check = reference_check(ext, synthetic_crops(4, seed=3))
    assert check is not None and check["cosine_min"] > 0.99999 and check["max_abs_diff"] < 1e-4


def test_random_weights_bundle_warns_once_per_path(bundle_dir, tmp_path):
    copy = _copy(bundle_dir, tmp_path / "copy")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        load_bundle(copy)
        with Extractor(copy, threads=1):
            pass
        load_bundle(copy)
    ours = [w for w in seen if issubclass(w.category, RandomWeightsWarning)]
    assert len(ours) == 1, [str(w.message) for w in seen]
    message = str(ours[0].message)
    assert str(copy) in message and "meaningless" in message and "--weights" in message
    assert "osnet_x0_25_market1501.pth" in message and "osnet_x0_25_msmt17.pth" in message
    with pytest.warns(RandomWeightsWarning):  # another path: its own warning
        load_bundle(_copy(bundle_dir, tmp_path / "another"))
    with warnings.catch_warnings():  # apps can filter exactly this category
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=osnet_edge.RandomWeightsWarning)
        load_bundle(_copy(bundle_dir, tmp_path / "filtered"))


def test_trained_bundle_does_not_warn(bundle_dir, tmp_path):
    def trained(m):
        m.update(weights={"source": "osnet_x0_25_msmt17.pth", "sha256": "ab" * 32}, random_weights=False,
                 random_seed=None)

    copy = _copy(bundle_dir, tmp_path / "trained", trained)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RandomWeightsWarning)
        assert load_bundle(copy).random_weights is False


def _export_until_written(tmp_path, weights, res):
    """export_bundle up to the bundle writer (overwrite=False on an existing folder): the weights
    are loaded and judged, the slow ONNX export never runs."""
    from osnet_edge.export import export_bundle

    out = tmp_path / f"exists_{res}"
    out.mkdir(exist_ok=True)
    with pytest.raises(FileExistsError):
        export_bundle(out, width=0.25, res=res, weights=weights, overwrite=False)


def test_unadapted_weights_at_reduced_resolution_warn(tmp_path, checkpoint):
    with pytest.warns(UnadaptedResolutionWarning) as record:
        _export_until_written(tmp_path, checkpoint, 0.5)
    message = str(record[0].message)
    assert "91.5 -> 27.3" in message and "77.4 -> 11.0" in message and "osnet-edge adapt" in message
    assert "128x64" in message and str(checkpoint) in message
    with warnings.catch_warnings():  # full resolution: nothing to say
        warnings.simplefilter("error", UnadaptedResolutionWarning)
        _export_until_written(tmp_path, checkpoint, 1.0)


def test_adapted_checkpoint_does_not_warn_at_its_resolution(tmp_path, checkpoint):
    adapted = tmp_path / "adapted.pth"
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    torch.save({"state_dict": state, "adaptation": {"res": 0.5, "width": 0.25}}, adapted)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnadaptedResolutionWarning)
        _export_until_written(tmp_path, adapted, 0.5)
    with pytest.warns(UnadaptedResolutionWarning, match=r"adapted for res 0.5, not for res 0.75"):
        _export_until_written(tmp_path, adapted, 0.75)


FRAME_HW = (480, 640)


@pytest.mark.parametrize("boxes,pattern", [
    ([[0.1, 0.05, 0.15, 0.4]], r"box 0 \[0.1, 0.05, 0.15, 0.4\] looks normalised.*pixel xyxy.*multiply x by the frame "
                               r"width.*\[640, 480, 640, 480\]"),
    ([[0.1, 0.05, 0.15, 0.4], [0.5, 0.5, 0.9, 1.0]], r"box 0 .* looks normalised \(all coordinates <= 1 in all 2 boxes"),
    ([[10, 10, 100, 200], [637, 10, 700, 100]], r"box 1 \[637.0, 10.0, 700.0, 100.0\] gives a 3x90 pixel crop.*at least 4x4"),
    ([[10, 10, 12.5, 200]], r"box 0 .* gives a 3x190 pixel crop"),
    ([[-10, 478, 100, 600]], r"box 0 .* gives a 100x2 pixel crop after clipping to the 640x480 frame"),
])
def test_normalised_boxes_and_tiny_crops_name_the_box(boxes, pattern):
    with pytest.raises(ValueError, match=pattern):
        clip_boxes(boxes, FRAME_HW)


def test_box_checks_keep_clipping_and_small_frames():
    np.testing.assert_array_equal(clip_boxes([[-5, -5, 40, 90], [600.2, 300.7, 700, 520]], FRAME_HW),
                                  [[0, 0, 40, 90], [600, 300, 640, 480]])
    assert clip_boxes([[0, 0, 4, 4]], FRAME_HW).tolist() == [[0, 0, 4, 4]]          # the smallest crop allowed
    with pytest.raises(ValueError, match=r"box 0 .*1x1 pixel crop") as err:          # a 2x2 frame: not "normalised"
        clip_boxes([[0, 0, 1, 1]], (2, 2))
    assert "normalised" not in str(err.value)
    with pytest.raises(ValueError, match=r"box 1 .*inverted"):                       # existing errors unchanged
        clip_boxes([[10, 10, 100, 200], [100, 10, 10, 200]], FRAME_HW)


@pytest.mark.parametrize("which", ["plain", "fused"])
def test_rgb_input_gives_the_bgr_embedding(which, bundle_dir, fused_dir):
    path = bundle_dir if which == "plain" else fused_dir
    crops = synthetic_crops(5, seed=4)
    rgb = [np.ascontiguousarray(c[..., ::-1]) for c in crops]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        with Extractor(path, threads=1) as bgr_ext, Extractor(path, threads=1, color="RGB") as rgb_ext:
            expected = bgr_ext(crops)
            np.testing.assert_allclose(rgb_ext(rgb), expected, atol=1e-6)
            assert rgb_ext.color == "rgb" and "color" not in json.dumps(rgb_ext.manifest["model"])
            swapped = bgr_ext(rgb)   # the mistake the option prevents: RGB read as BGR
            assert np.abs(swapped - expected).max() > 1e-3
    np.testing.assert_array_equal(preprocess(rgb, (64, 32), color="rgb"), preprocess(crops, (64, 32)))


def test_invalid_color_is_refused(bundle_dir):
    with pytest.raises(ValueError, match=r"color must be 'bgr' \(OpenCV.*or 'rgb' \(PIL.*got 'yuv'"):
        Extractor(bundle_dir, color="yuv")


def test_pil_image_gets_the_conversion(bundle_dir):
    from PIL import Image

    img = Image.fromarray(synthetic_crops(1, seed=2)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        with Extractor(bundle_dir, threads=1) as ext:
            for value, where in ((img, "crop"), ([np.zeros((8, 8, 3), np.uint8), img], "crop 1"),):
                with pytest.raises(TypeError) as err:
                    ext(value)
                msg = str(err.value)
                assert msg.startswith(f"{where}: ") and "PIL image" in msg
                assert 'np.asarray(img.convert("RGB")) with Extractor(..., color="rgb")' in msg
                assert 'cv2.cvtColor(np.asarray(img.convert("RGB")), cv2.COLOR_RGB2BGR)' in msg
            with pytest.raises(TypeError, match=r"^frame: .*PIL image"):
                ext.from_frame(img, [[0, 0, 10, 10]])


@pytest.mark.parametrize("values,hint", [
    (np.full((20, 10, 3), 0.5, np.float32), "(np.clip(x, 0, 1) * 255).round().astype(np.uint8)"),
    (np.full((20, 10, 3), 128.0, np.float64), "np.clip(x, 0, 255).astype(np.uint8)"),
])
def test_float_hint_fits_the_value_range(bundle_dir, values, hint):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        with Extractor(bundle_dir, threads=1) as ext:
            with pytest.raises(TypeError) as err:
                ext(values)
    assert hint in str(err.value)
    if "0, 255" in hint:
        assert "np.clip(x, 0, 1)" not in str(err.value)


def test_width_and_resolution_checks_list_valid_values():
    from osnet_edge.sizes import check_resolution, check_width

    assert check_width(0.25) == 0.25 and check_width(0.375) == 0.375   # whole channels: builds
    with pytest.raises(ValueError, match=r"--width 0.3 is not a valid OSNet width .*publishes widths 1.0, 0.75, "
                                         r"0.5, 0.25"):
        check_width(0.3)
    assert check_resolution(0.5) == (128, 64)
    for bad in (0, -0.5, 1.5, 0.1, "0.5"):
        with pytest.raises(ValueError, match=r"--res .*(> 0 and <= 1|smallest is 0.25).*0.5 \(128x64\)"):
            check_resolution(bad)
    with pytest.warns(OddInputSizeWarning, match=r"--res 0.3 gives an odd input size 77x38.*multiple of 16"):
        assert check_resolution(0.3) == (77, 38)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OddInputSizeWarning)
        for res in (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0):
            h, w = check_resolution(res)
            assert h % 16 == 0 and w % 16 == 0


def test_odd_resolution_really_loses_pixels():
    """Why the warning: with a side not divisible by 16 the last stage's grid drops input rows/columns."""
    from osnet_edge.models import build_osnet

    model = build_osnet(0.25).eval()
    with torch.no_grad():
        assert model.featuremaps(torch.zeros(1, 3, 77, 38)).shape[-2:] == (5, 2)   # 77/16, 38/16 floored
        assert model.featuremaps(torch.zeros(1, 3, 128, 64)).shape[-2:] == (8, 4)  # exactly /16


def _run_export_cli(*args, cwd: Path, no_torch: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if no_torch is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(no_torch)] + [p for p in [env.get("PYTHONPATH")] if p])
    return subprocess.run([sys.executable, str(REPO / "scripts" / "export.py"), *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=180)


@pytest.fixture(scope="module")
def no_torch(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("no_torch")
    (root / "torch").mkdir()
    (root / "torch" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'torch' (simulated)\", name='torch')\n")
    return root


def test_export_cli_checks_width_and_res_before_anything_else(tmp_path, no_torch):
    """Without torch importable, a bad --width/--res is still the error (so it is checked first), and no
    random-weights warning comes before it."""
    res = _run_export_cli("--width", "0.3", "--res", "0.5", cwd=tmp_path, no_torch=no_torch)
    assert res.returncode == 1 and res.stderr.count("\n") == 1, res.stderr
    assert re.match(r"error: --width 0.3 is not a valid OSNet width.*1.0, 0.75, 0.5, 0.25", res.stderr)
    res = _run_export_cli("--width", "0.25", "--res", "1.5", cwd=tmp_path, no_torch=no_torch)
    assert res.returncode == 1 and res.stderr.startswith("error: --res 1.5 is out of range"), res.stderr
    # an odd size warns first (one line), then the run goes on (here: to the missing torch)
    res = _run_export_cli("--width", "0.25", "--res", "0.3", cwd=tmp_path, no_torch=no_torch)
    lines = res.stderr.splitlines()
    assert lines[0].startswith("warning: --res 0.3 gives an odd input size 77x38"), res.stderr
    assert "export needs torch" in lines[-1] and "RANDOMLY" not in res.stderr


# --------------------------------------------------------------------------- 4. readable bundles
def _write_tiny_bundle(out: Path):
    with BundleWriter(out) as w:
        (w.path / "model.onnx").write_bytes(b"not a model")
        (w.path / "engines").mkdir()
        (w.path / "engines" / "x.engine").write_bytes(b"plan")
        w.manifest.update(model={"variant": "osnet", "width": 0.25, "res": 0.5, "input_size": [128, 64],
                                 "embedding_dim": 512},
                          preprocess={"color": "BGR", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                      "interpolation": "linear", "fused": False},
                          runtime="onnxruntime", precision="fp32")
    return out


@pytest.mark.parametrize("umask,dir_mode,file_mode", [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600),
                                                      (0o002, 0o755, 0o644)])
def test_bundle_permissions_follow_the_umask(tmp_path, umask, dir_mode, file_mode):
    old = os.umask(umask)
    try:
        out = _write_tiny_bundle(tmp_path / "b")
    finally:
        os.umask(old)
    assert (out.stat().st_mode & 0o777) == dir_mode
    assert (out.joinpath("engines").stat().st_mode & 0o777) == dir_mode
    for name in ("model.onnx", "manifest.json", "engines/x.engine"):
        assert (out.joinpath(name).stat().st_mode & 0o777) == file_mode, name


def test_tensorrt_engine_cache_files_are_readable(tmp_path):
    from osnet_edge.runtimes import tensorrt as trt_rt

    from .test_tensorrt import _key

    old = os.umask(0o022)
    try:
        path = trt_rt.save_engine(tmp_path / "engines", _key(), b"plan" * 16)
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644


# --------------------------------------------------------------------------- 5. output people read
def test_manifest_has_one_colour_statement_and_names_its_fields(bundle_dir, fused_dir):
    from osnet_edge.bundle import FORMAT_VERSION

    for path, layout in ((bundle_dir, "NCHW float32"), (fused_dir, "NHWC uint8")):
        m = json.loads((path / "manifest.json").read_text())
        assert m["format_version"] == FORMAT_VERSION == 2
        model = m["model"]
        assert model["input_layout"] == layout                      # the tensor only
        assert model["input_size"] == [64, 32] and model["input_size_order"] == "HW"
        assert round(model["mult_adds"] / 1e6, 1) == 5.2 and "macs" not in model
        assert m["preprocess"]["color"] == "BGR" and "BGR" in m["preprocess"]["description"]
        colour_words = [k for k, v in model.items() if isinstance(v, str) and re.search("RGB|BGR", v)]
        assert colour_words == [], colour_words


def test_format_1_bundles_still_load(bundle_dir, tmp_path):
    def as_format_1(m):
        m["format_version"] = 1
        model = m["model"]
        model["macs"] = model.pop("mult_adds")
        model.pop("input_size_order")
        model["input_layout"] = "NCHW float32 RGB normalised"
        m["preprocess"].pop("description")
        m.pop("random_seed")

    old = _copy(bundle_dir, tmp_path / "v1", as_format_1)
    crops = synthetic_crops(3, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        bundle = load_bundle(old)
        assert bundle.manifest["format_version"] == 1 and bundle.mult_adds == load_bundle(bundle_dir).mult_adds
        with Extractor(old, threads=1) as a, Extractor(bundle_dir, threads=1) as b:
            np.testing.assert_array_equal(a(crops), b(crops))
    future = _copy(bundle_dir, tmp_path / "v3", lambda m: m.update(format_version=3))
    with pytest.raises(osnet_edge.bundle.BundleError, match=r"format_version 3; this osnet_edge reads versions 1, 2"):
        load_bundle(future)


def test_throughput_uses_the_latency_column_statistic():
    from osnet_edge.profiler import latency_stats

    s = latency_stats(np.array([1.0, 1.0, 1.0, 1.0, 100.0]), batch=2)   # one slow call drags the mean to 20.8
    assert s["latency_ms_p50"] == 1.0 and s["throughput_ips"] == 2000.0


def test_profile_reuses_the_bundle_export_wrote(public, bundle_dir, tmp_path, checkpoint):
    from osnet_edge.profiler import GridPoint, ensure_bundle, holds_network

    point = GridPoint(0.25, 0.25, "onnxruntime", "fp32")
    export_cli = load_script("export.py", "ship_export_cli")
    args = export_cli.build_parser().parse_args(["--width", "0.25", "--res", "0.25", "--target", "onnxruntime"])
    assert Path(export_cli.default_out(args)).name == point.name == NAME   # one naming scheme
    work = tmp_path / "work"
    bundle = ensure_bundle(work, point, None, reuse_dirs=[public])
    assert bundle.path == bundle_dir and not work.exists()      # nothing exported, nothing written
    # another network under the same name (other weights, other seed) is not reused
    assert not holds_network(bundle, point, str(checkpoint))
    other_seed = _copy(bundle_dir, tmp_path / "seed1" / NAME, lambda m: m.update(random_seed=1))
    with pytest.warns(RandomWeightsWarning):
        assert not holds_network(load_bundle(other_seed), point, None)


def test_progress_bars_only_on_a_terminal():
    from osnet_edge.progress import progress_bar, show_progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert not show_progress(True, io.StringIO()) and show_progress(True, Terminal())
    assert not show_progress(False, Terminal())
    log = io.StringIO()
    for _ in progress_bar(range(50), desc="x", file=log):
        pass
    assert log.getvalue() == ""                                  # a log file gets no \r garbage
    tty = Terminal()
    for _ in progress_bar(range(3), desc="x", file=tty):
        pass
    assert "\r" in tty.getvalue()
    quiet = Terminal()
    for _ in progress_bar(range(3), desc="x", file=quiet, enabled=False):
        pass
    assert quiet.getvalue() == ""
    source = "\n".join(p.read_text() for p in [*REPO.joinpath("osnet_edge").glob("profiler.py"),
                                                  REPO / "calibration" / "__init__.py",
                                                  REPO / "quantize" / "_distill.py", REPO / "scripts" / "soak.py"])
    assert "from tqdm" not in source                              # every bar goes through progress_bar


def test_threads_actually_used_are_reported(public, bundle_dir, tmp_path, capsys):
    from osnet_edge.machine import physical_cores
    from osnet_edge.profiler import GridPoint, RowStore, TimingBudget, format_latency_table, profile_grid

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        with Extractor(bundle_dir, threads=1) as one, Extractor(bundle_dir) as default:
            assert one.threads == 1
            assert default.threads == physical_cores()               # ONNX Runtime's own choice, said
    fast = TimingBudget(seconds=0.01, warmup=1, min_iters=2, max_iters=5)
    result = profile_grid([GridPoint(0.25, 0.25, "onnxruntime", "fp32")], synthetic_crops(4), tmp_path / "work",
                          modes=("runtime",), threads=1, budget=fast, store=RowStore(), reuse_dirs=[public],
                          progress=True)
    assert "\r" not in capsys.readouterr().err   # progress=True, but stderr is no terminal here: no bar
    row = result.rows[0]
    assert row["threads"] == 1 and row["threads_used"] == 1 and row["bundle"] == str(bundle_dir)
    assert row["throughput_ips"] == pytest.approx(1e3 / row["latency_ms_p50"], rel=1e-3)
    table = format_latency_table(result.rows)
    assert "threads" in table.splitlines()[0] and "img/s@p50" in table.splitlines()[0]


def test_openvino_reads_its_thread_count_back(bundle_dir, tmp_path):
    pytest.importorskip("openvino", reason="needs openvino (osnet_edge[openvino])")
    from osnet_edge.export import save_openvino_ir

    keep = {k: v for k, v in load_bundle(bundle_dir, verify=False).manifest.items()
            if k not in ("format", "format_version", "files", "created")}
    with BundleWriter(tmp_path / "ov") as w:
        shutil.copy(bundle_dir / "model.onnx", w.path / "model.onnx")
        save_openvino_ir(w.path / "model.onnx", w.path / "model.xml", fp16=False)
        w.manifest.update(keep, runtime="openvino")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        with Extractor(w.out_dir, threads=1) as ext:
            assert ext.threads == 1
        with Extractor(w.out_dir) as ext:
            assert isinstance(ext.threads, int) and ext.threads >= 1


# --------------------------------------------------------------------------- 2. install metadata
def test_python_requires_and_classifiers_agree():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert cfg["options"]["python_requires"].strip() == ">=3.9"          # the device side's oldest
    versions = re.findall(r"Programming Language :: Python :: (3\.\d+)", cfg["metadata"]["classifiers"])
    assert versions[0] == "3.9" and versions == sorted(versions, key=lambda v: int(v.split(".")[1]))
    constraints = (REPO / "constraints.txt").read_text()
    assert re.search(r"^torch==2\.13\.0$", constraints, re.M)             # what installs here, unchanged
    assert "download.pytorch.org/whl/cpu" in constraints                    # how a normal machine gets the CPU build
    assert not re.search(r"^\s*--", constraints, re.M)                     # no index option that would apply here
