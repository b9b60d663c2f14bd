"""Reliability: every bad input and every damaged artifact gets a clear, specific error.

Camera firmware runs unattended for months: a malformed crop, a truncated model file or a
half-written bundle must produce an error that says what was expected and what came,
never a stack trace from inside a runtime and never silently wrong embeddings.
One x0.25 @ 128x64 bundle is exported per module (~10 s) and shared.
"""
from __future__ import annotations

import json
import os
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="exporting the test bundle needs torch (osnet_edge[export])")
pytest.importorskip("onnxruntime", reason="needs onnxruntime (osnet_edge[onnxruntime])")
hypothesis = pytest.importorskip("hypothesis", reason="property tests need hypothesis (osnet_edge[dev])")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from osnet_edge.bundle import Bundle, BundleError, BundleWriter  # noqa: E402
from osnet_edge.extractor import Extractor  # noqa: E402
from osnet_edge.runtimes import RuntimeFailure  # noqa: E402
from osnet_edge.samples import synthetic_crops  # noqa: E402

DIM = 512
# the shared bundle has random weights on purpose (tests/test_ship.py pins that warning)
pytestmark = pytest.mark.filterwarnings("ignore::osnet_edge.RandomWeightsWarning")


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def ort_bundle(tmp_path_factory) -> Bundle:
    import warnings

    from osnet_edge.export import export_bundle

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-weights warning
        return export_bundle(tmp_path_factory.mktemp("ort") / "x025_r05", width=0.25, res=0.5,
                             target="onnxruntime")


@pytest.fixture(scope="module")
def ov_bundle(ort_bundle, tmp_path_factory) -> Bundle:
    """The same network as an OpenVINO bundle (IR converted from the exported ONNX, as export does)."""
    pytest.importorskip("openvino", reason="needs openvino (osnet_edge[openvino])")
    from osnet_edge.export import save_openvino_ir

    keep = {k: v for k, v in ort_bundle.manifest.items() if k not in ("format", "format_version", "files", "created")}
    with BundleWriter(tmp_path_factory.mktemp("ov") / "x025_r05_ov") as w:
        shutil.copy(ort_bundle.file("model.onnx"), w.path / "model.onnx")
        save_openvino_ir(w.path / "model.onnx", w.path / "model.xml", fp16=False)
        w.manifest.update(keep, runtime="openvino")
    return w.bundle


@pytest.fixture(scope="module")
def ext(ort_bundle) -> Extractor:
    with Extractor(ort_bundle.path) as e:
        yield e


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    return synthetic_crops(1, seed=3)[0]


def _norms_ok(out: np.ndarray, n: int) -> None:
    assert out.shape == (n, DIM) and out.dtype == np.float32
    assert np.isfinite(out).all()
    norms = np.linalg.norm(out, axis=1)
    assert np.all((np.abs(norms - 1) < 1e-4) | (norms == 0))


# --------------------------------------------------------------------------- 1. input validation
def test_empty_inputs_give_an_empty_result(ext):
    """Documented choice: no crops -> (0, dim) float32, so a frame without detections needs no special case."""
    for empty in ([], (), np.zeros((0, 128, 64, 3), np.uint8)):
        out = ext(empty)
        assert out.shape == (0, DIM) and out.dtype == np.float32
    frame = np.zeros((480, 640, 3), np.uint8)
    assert ext.from_frame(frame, np.zeros((0, 4))).shape == (0, DIM)
    assert ext.from_frame(frame, []).shape == (0, DIM)


_IMG = np.random.default_rng(0).integers(0, 256, (96, 40, 3), dtype=np.uint8)
_NAN = _IMG.astype(np.float32)
_NAN[3, 4, 1] = np.nan
_INF = _IMG.astype(np.float64)
_INF[0, 0, 0] = np.inf

# (input, exception, regex that names what was expected AND what came)
BAD_INPUTS = {
    "zero height": (np.zeros((0, 10, 3), np.uint8), ValueError, r"empty crop of shape \(0, 10, 3\)"),
    "zero width": (np.zeros((10, 0, 3), np.uint8), ValueError, r"empty crop of shape \(10, 0, 3\)"),
    "zero width in a list": ([_IMG, _IMG, np.zeros((5, 0, 3), np.uint8)], ValueError, r"crop 2: empty crop"),
    "zero-size batch crops": (np.zeros((2, 0, 8, 3), np.uint8), ValueError, r"\(2, 0, 8, 3\).*zero height"),
    "2-D grayscale": (_IMG[..., 0], ValueError, r"expected HxWx3 BGR, got a 2-D \(96, 40\) grayscale.*GRAY2BGR"),
    "1 channel": (_IMG[..., :1], ValueError, r"expected 3 channels \(BGR\), got 1 .*GRAY2BGR"),
    "4-channel BGRA": (np.dstack([_IMG, _IMG[..., :1]]), ValueError, r"expected 3 channels \(BGR\), got 4.*BGRA2BGR"),
    "BGRA batch": (np.zeros((2, 8, 8, 4), np.uint8), ValueError, r"expected 3 channels \(BGR\), got 4.*BGRA2BGR"),
    "float32": (_IMG.astype(np.float32), TypeError, r"expected dtype uint8 .*got float32;"),
    "float64": (_IMG.astype(np.float64), TypeError, r"expected dtype uint8 .*got float64; .*np.clip\(x, 0, 255\)"),
    "float in [0, 1]": (_IMG.astype(np.float32) / 255, TypeError,
                        r"got float32; values are in \[0, 1\]: .*\(np.clip\(x, 0, 1\) \* 255\).round\(\).astype\(np.uint8\)"),
    "uint16": (_IMG.astype(np.uint16), TypeError, r"expected dtype uint8 .*got uint16"),
    "bool": (_IMG > 127, TypeError, r"expected dtype uint8 .*got bool"),
    "int8": (_IMG.astype(np.int8), TypeError, r"expected dtype uint8 .*got int8"),
    "float32 batch": (np.zeros((2, 8, 8, 3), np.float32), TypeError, r"batch .*expected dtype uint8 .*got float32"),
    "float in a list": ([_IMG, _IMG.astype(np.float32)], TypeError, r"crop 1: expected dtype uint8 .*got float32"),
    "NaN in float input": (_NAN, TypeError, r"expected dtype uint8 .*got float32, containing NaN/inf"),
    "inf in float input": (_INF, TypeError, r"got float64, containing NaN/inf"),
    "3xHxW channels-first": (_IMG.transpose(2, 0, 1), ValueError, r"expected HxWx3 \(channels last\), got \(3, 96, 40\).*transpose\(1, 2, 0\)"),
    "(N,3,H,W) channels-first": (np.stack([_IMG] * 2).transpose(0, 3, 1, 2), ValueError,
                                 r"expected \(N,H,W,3\) channels-last BGR, got \(N,3,H,W\).*transpose\(0, 2, 3, 1\)"),
    "(N,3,H,W) float tensor": (np.zeros((2, 3, 128, 64), np.float32), ValueError, r"channels-first \(an already preprocessed tensor"),
    "1-D": (_IMG.ravel(), ValueError, r"expected HxWx3 BGR, got array of shape \(11520,\)"),
    "5-D": (_IMG[None, None], ValueError, r"expected HxWx3 BGR, got array of shape \(1, 1, 96, 40, 3\)"),
    "None in a list": ([_IMG, None], TypeError, r"crop 1: expected a numpy array HxWx3 uint8 BGR, got NoneType"),
    "nested lists": ([_IMG.tolist()], TypeError, r"crop 0: expected a numpy array .*got list"),
    "a string": ("crop.jpg", TypeError, r"expected a HxWx3 uint8 array, an \(N,H,W,3\) array or a list of crops, got str"),
    "None": (None, TypeError, r"got NoneType"),
    "a generator": ((c for c in [_IMG]), TypeError, r"got generator"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_crops_get_a_clear_error(ext, name):
    value, exc_type, message = BAD_INPUTS[name]
    with pytest.raises(exc_type, match=message):
        ext(value)


def test_from_frame_checks_the_frame(ext):
    frame = np.zeros((120, 160, 3), np.uint8)
    with pytest.raises(TypeError, match=r"^frame: expected dtype uint8 .*got float32"):
        ext.from_frame(frame.astype(np.float32), [[0, 0, 10, 10]])
    with pytest.raises(ValueError, match=r"^frame: expected HxWx3 BGR, got a 2-D \(120, 160\) grayscale"):
        ext.from_frame(frame[..., 0], [[0, 0, 10, 10]])
    with pytest.raises(ValueError, match=r"^frame: expected 3 channels \(BGR\), got 4.*BGRA2BGR"):
        ext.from_frame(np.zeros((120, 160, 4), np.uint8), [[0, 0, 10, 10]])
    with pytest.raises(TypeError, match=r"^frame: expected a numpy array"):
        ext.from_frame(frame.tolist(), [[0, 0, 10, 10]])


def test_views_work_and_equal_the_contiguous_copy(ext):
    """Slices, flips and Fortran order are valid input: same embedding as a contiguous copy."""
    frame = np.random.default_rng(1).integers(0, 256, (300, 200, 3), dtype=np.uint8)
    views = {
        "strided": frame[::2, ::3],
        "negative-stride rows": frame[::-1],
        "negative-stride cols": frame[:, ::-1],
        "channel-reversed (RGB view)": frame[..., ::-1],
        "window of a frame": frame[50:250, 40:120],
        "fortran order": np.asfortranarray(frame),
        "read-only buffer": np.frombuffer(frame.tobytes(), np.uint8).reshape(frame.shape),
    }
    for name, view in views.items():
        expected = ext(np.ascontiguousarray(view))
        np.testing.assert_array_equal(ext(view), expected, err_msg=name)
        np.testing.assert_array_equal(ext([view, view])[1], expected[0], err_msg=name)
    batch = np.stack([frame[:100, :50]] * 3)[::-1, :, ::-1]  # a negative-stride (N,H,W,3) view
    np.testing.assert_array_equal(ext(batch), ext(np.ascontiguousarray(batch)))


# --------------------------------------------------------------------------- boxes
@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return np.random.default_rng(2).integers(0, 256, (480, 640, 3), dtype=np.uint8)


def test_boxes_outside_the_frame_are_clipped(ext, frame):
    boxes = np.array([[-50, -20, 100, 900],      # spills over left, top and bottom
                      [600.4, 400.6, 700, 500],  # spills over right and bottom, fractional
                      [10.5, 20.2, 60.7, 140.1]])
    manual = [frame[0:480, 0:100], frame[400:480, 600:640], frame[20:141, 10:61]]  # floor/ceil, clipped
    np.testing.assert_array_equal(ext.from_frame(frame, boxes), ext(manual))
    np.testing.assert_array_equal(ext.from_frame(frame, [10, 20, 60, 140]), ext(frame[20:140, 10:60]))


@pytest.mark.parametrize("boxes,exc_type,message", [
    ([[10, 10, 100, 200], [100, 10, 10, 200]], ValueError, r"box 1 \[100.0, 10.0, 10.0, 200.0\] is inverted or has zero area"),
    ([[10, 10, 100, 200], [0, 0, 5, 5], [10, 50, 20, 50]], ValueError, r"box 2 .* zero area"),
    ([[0.1, 0.05, 0.15, 0.4]], ValueError, r"box 0 .*looks normalised.*boxes are pixel xyxy.*\[640, 480, 640, 480\]"),
    ([[10, 10, 100, 200], [50, 50, 52, 90]], ValueError, r"box 1 .*gives a 2x40 pixel crop"),
    ([[10, 10, 100, 200], [638, 10, 900, 90]], ValueError, r"box 1 .*gives a 2x80 pixel crop after clipping"),
    ([[5, 5, 50, 50], [700, 10, 800, 100]], ValueError, r"box 1 .*outside the 640x480 frame"),
    ([[np.nan, 1, 2, 3]], ValueError, r"box 0 has NaN/inf"),
    ([[0, 0, np.inf, 10]], ValueError, r"box 0 has NaN/inf"),
    ([[1, 2, 3]], ValueError, r"expected shape \(N,4\) xyxy, got \(1, 3\)"),
    ([[[1, 2, 3, 4]]], ValueError, r"expected shape \(N,4\) xyxy, got \(1, 1, 4\)"),
    (np.ones((1, 4), bool), TypeError, r"expected numbers \(N,4\) xyxy, got dtype bool"),
    ([["a", "b", "c", "d"]], TypeError, r"expected numbers .*got dtype <U1"),
    (None, TypeError, r"expected numbers .*got dtype object"),
])
def test_bad_boxes_name_the_box(ext, frame, boxes, exc_type, message):
    with pytest.raises(exc_type, match=message):
        ext.from_frame(frame, boxes)


def test_huge_batch_is_chunked_with_bounded_memory(ext):
    """1000 crops: processed batch_size at a time (memory of one chunk), same result as chunked calls."""
    rng = np.random.default_rng(4)
    crops = [rng.integers(0, 256, (int(rng.integers(8, 40)), int(rng.integers(4, 20)), 3), dtype=np.uint8)
             for _ in range(1000)]
    h, w = ext.input_size
    whole_batch_input = 1000 * 3 * h * w * 4  # what preprocessing everything at once would hold (98 MB)
    tracemalloc.start()
    try:
        out = ext(crops)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < whole_batch_input / 5, f"peak {peak / 1e6:.1f} MB: crops were not processed in chunks"
    chunked = np.concatenate([ext(crops[i:i + ext.batch_size]) for i in range(0, len(crops), ext.batch_size)])
    np.testing.assert_array_equal(out, chunked)
    _norms_ok(out, 1000)


# --------------------------------------------------------------------------- property tests
_DTYPES = [np.uint8, np.uint8, np.uint8, np.float32, np.float64, np.uint16, np.int8, np.int64, np.bool_]


def _valid(a: np.ndarray) -> bool:
    if a.dtype != np.uint8:
        return False
    if a.ndim == 3:
        return a.shape[2] == 3 and a.shape[0] > 0 and a.shape[1] > 0
    if a.ndim == 4:
        return a.shape[3] == 3 and (a.shape[0] == 0 or (a.shape[1] > 0 and a.shape[2] > 0))
    return False


@st.composite
def arrays(draw) -> np.ndarray:
    ndim = draw(st.integers(0, 5))
    limits = {4: [3, 40, 40, 4], 5: [2] * 5}.get(ndim, [40] * ndim)  # keep arrays small
    shape = [draw(st.integers(0, limit)) for limit in limits]
    if ndim >= 3 and draw(st.booleans()):
        shape[-1] = 3  # bias towards the plausible layout
    dtype = draw(st.sampled_from(_DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    a = rng.integers(0, 256, size=shape).astype(dtype)
    if dtype in (np.float32, np.float64) and a.size and draw(st.booleans()):
        a.flat[0] = draw(st.sampled_from([np.nan, np.inf, -1.0, 300.0]))
    if ndim >= 2 and draw(st.booleans()):
        a = a[::-1, ::2]  # a non-contiguous, negative-stride view
    return a


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrays())
def test_property_any_array_gives_embeddings_or_a_documented_error(ext, a):
    try:
        out = ext(a)
    except (ValueError, TypeError) as exc:
        assert not _valid(a), f"valid input {a.shape} {a.dtype} rejected: {exc}"
        assert str(exc)
        return
    assert _valid(a), f"invalid input {a.shape} {a.dtype} accepted"
    _norms_ok(out, a.shape[0] if a.ndim == 4 else 1)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(arrays(), min_size=0, max_size=4))
def test_property_lists_of_crops(ext, crops):
    try:
        out = ext(crops)
    except (ValueError, TypeError) as exc:
        assert not all(_valid(c) and c.ndim == 3 for c in crops), f"valid crops rejected: {exc}"
        assert "crop " in str(exc)  # names the offending index
        return
    assert all(_valid(c) and c.ndim == 3 for c in crops)
    _norms_ok(out, len(crops))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(*[st.floats(-200, 900, allow_nan=False)] * 4), min_size=1, max_size=4))
def test_property_boxes_clip_or_name_the_bad_box(ext, frame, boxes):
    b = np.array(boxes)
    h, w = frame.shape[:2]
    try:
        out = ext.from_frame(frame, b)
    except ValueError as exc:
        normalised = bool((b <= 1).all())
        inverted = (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])
        x1, y1 = np.clip(np.floor(b[:, 0]), 0, w), np.clip(np.floor(b[:, 1]), 0, h)
        x2, y2 = np.clip(np.ceil(b[:, 2]), 0, w), np.clip(np.ceil(b[:, 3]), 0, h)
        outside = (x2 <= x1) | (y2 <= y1)
        tiny = ((x2 - x1) < 4) | ((y2 - y1) < 4)   # under MIN_CROP_SIDE after clipping
        assert normalised or inverted.any() or outside.any() or tiny.any(), f"valid boxes {boxes} rejected: {exc}"
        first_bad = next(int(np.argmax(bad)) for bad in (np.full(len(b), normalised), inverted, outside, tiny)
                         if bad.any())
        assert f"box {first_bad} " in str(exc)
        return
    _norms_ok(out, len(b))


# --------------------------------------------------------------------------- 2. artifacts
def _copy(bundle: Bundle, tmp_path: Path, name: str = "copy") -> Path:
    dst = tmp_path / name
    shutil.copytree(bundle.path, dst)
    return dst


def _edit_manifest(path: Path, edit) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    edit(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def _flip_bytes(path: Path, count: int = 16) -> None:
    data = bytearray(path.read_bytes())
    for i in range(1000, len(data), max(1, len(data) // count)):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_truncated_model_file(ort_bundle, tmp_path):
    b = _copy(ort_bundle, tmp_path)
    data = (b / "model.onnx").read_bytes()
    (b / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match=r"model.onnx is \d+ bytes, manifest says \d+ \(truncated or replaced\)"):
        Extractor(b)


def test_flipped_bytes(ort_bundle, tmp_path):
    b = _copy(ort_bundle, tmp_path)
    _flip_bytes(b / "model.onnx")
    with pytest.raises(BundleError, match="checksum mismatch for model.onnx"):
        Extractor(b)


def test_verify_false_on_a_corrupt_onnx_is_a_readable_runtime_failure(ort_bundle, tmp_path):
    b = _copy(ort_bundle, tmp_path)
    data = (b / "model.onnx").read_bytes()
    (b / "model.onnx").write_bytes(data[: len(data) // 3])
    with pytest.raises(RuntimeFailure, match=r"onnxruntime could not load .*model.onnx: .*corrupt or truncated") as err:
        Extractor(b, verify=False)
    assert "\n" not in str(err.value) and err.value.__suppress_context__  # one line, no runtime traceback chained


@pytest.mark.parametrize("damage", ["truncate xml", "truncate bin", "garbage xml"])
def test_verify_false_on_corrupt_openvino_files(ov_bundle, tmp_path, damage):
    b = _copy(ov_bundle, tmp_path)
    name = "model.xml" if "xml" in damage else "model.bin"
    data = (b / name).read_bytes()
    (b / name).write_bytes(data[: len(data) // 2] if "truncate" in damage else os.urandom(len(data)))
    with pytest.raises(BundleError):
        Extractor(b)  # verify (the default) catches it first
    with pytest.raises(RuntimeFailure, match=r"openvino could not read .*model.xml/model.bin: .*re-export") as err:
        Extractor(b, verify=False)
    assert "\n" not in str(err.value) and "core.cpp" not in str(err.value)  # no C++ source locations


MANIFEST_DAMAGE = {
    "missing": (lambda p: (p / "manifest.json").unlink(), r"manifest.json is missing \(an interrupted export\?"),
    "invalid JSON": (lambda p: (p / "manifest.json").write_text('{"format": "osnet-edge-bundle",'), r"is not valid JSON"),
    "binary garbage": (lambda p: (p / "manifest.json").write_bytes(b"\xff\xfe\x00\x13"), r"is not valid JSON"),
    "not an object": (lambda p: (p / "manifest.json").write_text("[1, 2]"), r"is not an osnet_edge manifest"),
    "unknown format_version": (lambda p: _edit_manifest(p, lambda m: m.update(format_version=99)),
                               r"has format_version 99; this osnet_edge reads versions 1, 2"),
    "no format_version": (lambda p: _edit_manifest(p, lambda m: m.pop("format_version")), r"has format_version None"),
    "checksum mismatch": (lambda p: _edit_manifest(p, lambda m: m["files"]["model.onnx"].update(sha256="0" * 64)),
                          r"checksum mismatch for model.onnx"),
    "listed file missing": (lambda p: (p / "model.onnx").unlink(), r"is incomplete: model.onnx is missing"),
    "unsafe file name": (lambda p: _edit_manifest(p, lambda m: m["files"].update({"../../etc/passwd": "0" * 64})),
                         r"unsafe file name '../../etc/passwd'"),
    "no files": (lambda p: _edit_manifest(p, lambda m: m.pop("files")), r"lacks required fields: files"),
    "input_size": (lambda p: _edit_manifest(p, lambda m: m["model"].update(input_size=[0, 64])),
                   r"model.input_size must be \[H, W\] \(two positive integers\), got \[0, 64\]"),
    "embedding_dim": (lambda p: _edit_manifest(p, lambda m: m["model"].pop("embedding_dim")),
                      r"model.embedding_dim must be a positive integer, got None"),
    "model not an object": (lambda p: _edit_manifest(p, lambda m: m.update(model="x0.25")), r"'model' must be an object"),
    "std": (lambda p: _edit_manifest(p, lambda m: m["preprocess"].update(std=[0.2, 0, 0.2])), r"preprocess.std must be three numbers > 0"),
    "runtime": (lambda p: _edit_manifest(p, lambda m: m.update(runtime="tflite")), r"runtime must be one of .*got 'tflite'"),
    "precision": (lambda p: _edit_manifest(p, lambda m: m.update(precision="int4")), r"precision must be one of .*got 'int4'"),
    "max_batch": (lambda p: _edit_manifest(p, lambda m: m.update(max_batch="64")), r"max_batch must be a positive integer or null, got '64'"),
    "interpolation": (lambda p: _edit_manifest(p, lambda m: m["preprocess"].update(interpolation="cubic")),
                      r"preprocess.interpolation must be one of .*got 'cubic'"),
}


@pytest.mark.parametrize("damage", list(MANIFEST_DAMAGE))
def test_damaged_bundle_gives_a_specific_bundle_error(ort_bundle, tmp_path, damage):
    b = _copy(ort_bundle, tmp_path)
    apply, message = MANIFEST_DAMAGE[damage]
    apply(b)
    with pytest.raises(BundleError, match=message):
        Extractor(b)


@pytest.mark.parametrize("edit,message", [
    (lambda m: m["model"].update(input_size=[256, 128]), r"inference failed on a batch of shape \(1, 3, 256, 128\).*Expected: 128"),
    (lambda m: m["model"].update(embedding_dim=256), r"returned shape \(1, 512\) for a batch of 1; the manifest says embedding_dim 256"),
    (lambda m: m["preprocess"].update(fused=True), r"inference failed on a batch of shape \(1, 128, 64, 3\) uint8.*manifest.json match"),
])
def test_manifest_that_contradicts_the_model_fails_readably(ort_bundle, tmp_path, crop, edit, message):
    """A plausible but wrong manifest (not covered by the checksums): a RuntimeFailure naming the shapes."""
    b = _copy(ort_bundle, tmp_path)
    _edit_manifest(b, edit)
    with Extractor(b) as e:
        with pytest.raises(RuntimeFailure, match=message) as err:
            e(crop)
    assert "\n" not in str(err.value)


def test_bundle_for_another_runtime(ort_bundle, ov_bundle):
    with pytest.raises(BundleError, match=r"exported for openvino \(fp32\); runtime 'onnxruntime' cannot run it"):
        Extractor(ov_bundle.path, runtime="onnxruntime")
    with pytest.raises(BundleError, match=r"exported for onnxruntime \(fp32\); runtime 'openvino' cannot run it"):
        Extractor(ort_bundle.path, runtime="openvino")
    with pytest.raises(ValueError, match=r"unknown runtime 'onnx'; known: onnxruntime, openvino"):
        Extractor(ort_bundle.path, runtime="onnx")


def test_openvino_bundle_runs_and_matches_onnxruntime(ort_bundle, ov_bundle, crop):
    """The OpenVINO copy used above is a working bundle, not a strawman."""
    with Extractor(ov_bundle.path) as ov, Extractor(ort_bundle.path) as ort:
        assert np.abs(ov(crop) - ort(crop)).max() < 1e-4


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="not found"):
        Extractor(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BundleError, match="is not a directory"):
        Extractor(tmp_path / "file")
    with pytest.raises(BundleError, match="manifest.json is missing"):
        Extractor(tmp_path)


def test_bad_extractor_arguments(ort_bundle):
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        Extractor(ort_bundle.path, batch_size=0)
    with pytest.raises(ValueError, match="threads must be a positive int or None, got 0"):
        Extractor(ort_bundle.path, threads=0)  # not reported as a corrupt model
    with pytest.raises(ValueError, match="onnxruntime device must be one of"):
        Extractor(ort_bundle.path, device="tpu")
    e = Extractor(ort_bundle.path)
    e.close()
    with pytest.raises(RuntimeError, match="Extractor is closed"):
        e([np.zeros((8, 4, 3), np.uint8)])
