"""osnet_edge.trackers: every box a tracker sends gets a finite unit row, one batched call per frame, and the
real BoxMOT (BoT-SORT, DeepOCSORT, StrongSORT) and Ultralytics (BOTSORT, YOLO.track) trackers store exactly
our embeddings. Sequences are tiny: real Market-1501 training crops pasted on a flat background."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from osnet_edge.extractor import MIN_CROP_SIDE, Extractor
from osnet_edge.trackers import BoxmotReID, UltralyticsEncoder, sanitize_boxes
from osnet_edge.trackers.embedding import FrameEmbedder

from .conftest import REPO, SHARED_DATA, X025_MSMT, require

TRAIN = SHARED_DATA / "market1501" / "bounding_box_train"
EXTRA_HINT = ("needs the trackers extra: pip install -c constraints-trackers.txt -e '.[export,trackers,dev]' in a venv "
              "of its own (docs/trackers.md); CI runs this file there")
FRAME_HW = (240, 320)


def _need(module: str):
    return pytest.importorskip(module, reason=f"{module} not installed: {EXTRA_HINT}")


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def people() -> list[np.ndarray]:
    """Four real crops of four different identities (Market-1501 training split, 64x128)."""
    files = sorted(require(TRAIN).glob("*.jpg"))
    chosen, seen = [], set()
    for f in files:
        pid = f.name.split("_")[0]
        if pid not in seen:
            seen.add(pid)
            chosen.append(cv2.imread(str(f)))
        if len(chosen) == 4:
            return chosen
    pytest.skip(f"fewer than 4 identities in {TRAIN}")


def _export(out: Path, precision: str) -> Path:
    pytest.importorskip("torch", reason="exporting the test bundles needs torch (osnet_edge[export])")
    from osnet_edge.calibration import CalibrationSet
    from osnet_edge.export import export_bundle

    options = {}
    if precision == "int8":
        options = {"calibration": CalibrationSet.from_market1501(TRAIN.parent, input_size=(128, 64), max_images=32,
                                                                 cache_dir=False, progress=False), "distill": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unadapted-resolution and INT8-speed warnings: not what is tested here
        return export_bundle(out, width=0.25, res=0.5, weights=require(X025_MSMT), target="onnxruntime",
                             precision=precision, **options).path


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, people) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tracker_bundles")
    return {p: _export(root / p, p) for p in ("fp32", "int8")}


@pytest.fixture(scope="module")
def extractor(bundles) -> Extractor:
    with Extractor(bundles["fp32"], threads=1) as ext:
        yield ext


def walk(people: list[np.ndarray], frames: int = 6) -> list[tuple[np.ndarray, np.ndarray]]:
    """(frame, dets (N, 6) x1, y1, x2, y2, conf, cls) per frame: three people walk right, a fourth enters at
    frame 3; one low-confidence box partly outside the frame and one a few pixels wide every frame."""
    seq = []
    for t in range(frames):
        frame = np.full((*FRAME_HW, 3), 110, np.uint8)
        dets = []
        for i, crop in enumerate(people[:3] + (people[3:] if t >= 3 else [])):
            x, y = 8 + 76 * i + 4 * t, 20 + 30 * (i % 2)
            h, w = crop.shape[:2]
            frame[y:y + h, x:x + w] = crop
            dets.append([x, y, x + w, y + h, 0.9, 0])
        dets += [[FRAME_HW[1] - 20, 200, FRAME_HW[1] + 30, 260, 0.15, 0], [150, 210, 152, 213, 0.12, 0]]
        seq.append((frame, np.array(dets, np.float32)))
    return seq


def unit_rows(x: np.ndarray) -> bool:
    return bool(np.isfinite(x).all() and np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5))


# --------------------------------------------------------------------------- the sanitising rule
def test_rule_maps_every_kind_of_box_to_a_crop_inside_the_frame():
    h, w = FRAME_HW
    boxes = np.array([[10, 20, 74, 148],            # clean: unchanged
                      [-40, -30, 30, 50],            # partly outside: clamped
                      [500, 500, 600, 600],          # wholly outside: nearest MIN_CROP_SIDE patch
                      [100, 100, 101, 130],          # 1 px wide: grows about its centre
                      [60, 60, 60, 60],              # zero area
                      [80, 90, 20, 30],              # inverted: corners ordered
                      [np.nan, 5, 10, np.inf]])      # non-finite: the whole frame
    got = sanitize_boxes(boxes, FRAME_HW)
    assert got.tolist() == [[10, 20, 74, 148], [0, 0, 30, 50], [w - MIN_CROP_SIDE, h - MIN_CROP_SIDE, w, h],
                            [98, 100, 102, 130], [58, 58, 62, 62], [20, 30, 80, 90], [0, 0, w, h]]
    rotated = sanitize_boxes([[100, 100, 40, 10, np.pi / 2]], FRAME_HW, layout="xywhr")
    assert rotated.tolist() == [[95, 80, 105, 120]]  # a 40x10 box turned 90 degrees is 10 wide, 40 high
    assert sanitize_boxes(np.zeros((1, 4)), (2, 3)).tolist() == [[0, 0, 3, 2]]  # frame smaller than the minimum


def test_malformed_arrays_are_refused_clearly(extractor):
    reid = BoxmotReID(extractor)
    frame = np.zeros((*FRAME_HW, 3), np.uint8)
    with pytest.raises(ValueError, match=r"\(N, 4\) xyxy or \(N, 5\)"):
        reid.get_features(np.zeros((2, 3)), frame)
    with pytest.raises(TypeError, match="HxWx3 uint8"):
        reid.get_features(np.zeros((1, 4)), frame.astype(np.float32))
    with pytest.raises(TypeError, match="numbers"):
        sanitize_boxes(np.array([["a", "b", "c", "d"]]), FRAME_HW)
    with pytest.raises(TypeError, match="Extractor or a bundle"):
        BoxmotReID(42)


def test_every_degenerate_box_embeds_as_a_finite_unit_row(extractor, people):
    frame = walk(people, 1)[0][0]
    reid, encoder = BoxmotReID(extractor), UltralyticsEncoder(extractor)
    xyxy = np.array([[-40, -30, 30, 50], [500, 500, 600, 600], [100, 100, 101, 130], [60, 60, 60, 60],
                     [80, 90, 20, 30], [np.nan, 5, 10, np.inf], [-1e30, -1e30, 1e30, 1e30]], np.float32)
    feats = reid.get_features(xyxy, frame)
    assert feats.shape == (len(xyxy), extractor.dim) and feats.dtype == np.float32 and unit_rows(feats)
    obb = reid.get_features(np.array([[100, 100, 0, 0, 0.3], [1e9, -5, 3, 3, np.nan]], np.float32), frame)
    assert obb.shape == (2, extractor.dim) and unit_rows(obb)
    ul = encoder(frame, np.array([[50, 60, 0, 0, 0], [-50, 70, 20, 40, 1], [np.nan, 0, 5, 5, 2]], np.float32))
    ul_obb = encoder(frame, np.array([[160, 120, 30, 60, 0.7, 0]], np.float32))
    assert len(ul) == 3 and len(ul_obb) == 1 and unit_rows(np.stack(ul + ul_obb))
    for empty in (None, [], np.zeros((0, 4), np.float32)):
        assert reid.get_features(empty, frame).shape == (0, extractor.dim)
    assert encoder(frame, np.zeros((0, 5))) == []


def test_clean_boxes_embed_exactly_as_from_frame(extractor, people):
    frame, dets = walk(people, 1)[0]
    clean = dets[:3, :4]
    np.testing.assert_array_equal(BoxmotReID(extractor).get_features(dets[:3], frame),
                                  extractor.from_frame(frame, clean))


def test_rows_without_a_direction_take_the_documented_fallback(extractor):
    emb = FrameEmbedder(extractor)
    rows = np.array([[0.0] * extractor.dim, [np.nan] * extractor.dim, [1.0] + [0.0] * (extractor.dim - 1)],
                    np.float32)
    out = emb._guard(rows.copy())
    np.testing.assert_allclose(out[0], 1 / np.sqrt(extractor.dim), rtol=1e-6)
    np.testing.assert_array_equal(out[1], out[0])
    np.testing.assert_array_equal(out[2], rows[2])
    assert emb.fallback_rows == 2 and unit_rows(out)


class CountingExtractor(Extractor):
    """A real Extractor that counts its runtime calls."""

    calls = 0

    def infer_raw(self, batch):
        self.calls += 1
        return super().infer_raw(batch)


def test_all_boxes_of_a_frame_go_in_one_runtime_call(bundles, people):
    frame = walk(people, 1)[0][0]
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 200, (32, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(2, 120, (32, 2))], axis=1)
    with CountingExtractor(bundles["int8"], threads=1, batch_size=32) as ext:
        feats = BoxmotReID(ext).get_features(boxes, frame)
        assert ext.calls == 1 and feats.shape == (32, ext.dim) and unit_rows(feats)


def test_importing_the_adapters_imports_neither_torch_nor_the_trackers():
    code = ("import sys, osnet_edge.trackers, osnet_edge.cli.track; "
            "print([m for m in ('torch', 'boxmot', 'ultralytics', 'torchvision') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- BoxMOT
STORED = {"botsort": lambda t: t.curr_feat, "deepocsort": lambda t: t.emb, "strongsort": lambda t: t.features[-1]}


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("name", sorted(STORED))
def test_boxmot_tracker_stores_our_embeddings(name, precision, bundles, people):
    _need("boxmot")
    from osnet_edge.trackers import create_tracker

    with Extractor(bundles[precision], threads=1) as ext:
        options = {"use_cmc": False} if name == "botsort" else {}
        tracker = create_tracker(name, BoxmotReID(ext), **options)
        seen, created = set(), 0
        for t, (frame, dets) in enumerate(walk(people)):
            out = tracker.update(dets, frame)
            assert out.ndim == 2 and out.shape[1] == 8
            ours = ext.from_frame(frame, sanitize_boxes(dets[:, :4], frame.shape[:2]))
            for track in tracker.active_tracks:
                if id(track) in seen:
                    continue
                seen.add(id(track))
                stored = np.asarray(STORED[name](track), np.float32)
                assert np.abs(ours - stored).max(axis=1).min() < 1e-5, f"{name} track at frame {t}: not our row"
                created += 1
            if name == "botsort":  # BoT-SORT keeps the latest embedding of each matched track
                for row in out:
                    track = next(tr for tr in tracker.active_tracks if tr.id == int(row[4]))
                    np.testing.assert_allclose(track.curr_feat, ours[int(row[7])], atol=1e-6)
        assert created >= 4  # the three walkers and the one entering at frame 3 (low-confidence boxes may add)


# --------------------------------------------------------------------------- Ultralytics
def _ultralytics_args(**changes):
    from ultralytics.utils import YAML, IterableSimpleNamespace
    from ultralytics.utils.checks import check_yaml

    cfg = YAML.load(check_yaml("botsort.yaml"))
    cfg.update(gmc_method="none", **changes)
    return IterableSimpleNamespace(**cfg)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_ultralytics_botsort_stores_our_embeddings(precision, bundles, people):
    _need("ultralytics")
    import torch
    from ultralytics.engine.results import Boxes
    from ultralytics.trackers.bot_sort import BOTSORT

    from osnet_edge.trackers.ultralytics_reid import _attach

    with Extractor(bundles[precision], threads=1) as ext:
        encoder = UltralyticsEncoder(ext)
        tracker = BOTSORT(_ultralytics_args())
        assert tracker.encoder is None  # with_reid: False: Ultralytics loaded no model of its own
        predictor = type("Predictor", (), {"args": _ultralytics_args(mode="track"), "trackers": [tracker]})()
        _attach(encoder)(predictor)
        assert tracker.encoder is encoder and tracker.args.with_reid and tracker.args.model != "auto"
        for frame, dets in walk(people):
            out = tracker.update(Boxes(torch.from_numpy(dets), frame.shape[:2]).cpu().numpy(), frame)
            assert out.ndim == 2
            high = dets[dets[:, 4] >= tracker.args.track_high_thresh]
            ours = ext.from_frame(frame, high[:, :4])
            updated = [s for s in tracker.tracked_stracks if s.frame_id == tracker.frame_id]
            assert updated
            for s in updated:
                assert np.abs(ours - s.curr_feat).max(axis=1).min() < 1e-5


def test_yolo_track_uses_our_encoder_end_to_end(bundles, people, tmp_path):
    _need("ultralytics")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    from osnet_edge.trackers import use_with_ultralytics

    config = tmp_path / "botsort_every_box.yaml"  # an untrained detector scores low: keep every box it gives
    config.write_text("tracker_type: botsort\ntrack_high_thresh: 0.0\ntrack_low_thresh: 0.0\nnew_track_thresh: 0.0\n"
                      "track_buffer: 30\nmatch_thresh: 0.8\nfuse_score: True\ngmc_method: none\n"
                      "proximity_thresh: 0.5\nappearance_thresh: 0.8\nwith_reid: False\nmodel: auto\n")
    model = YOLO("yolo11n.yaml")  # built from the packaged config: nothing downloaded
    with pytest.raises(ValueError, match="no re-ID"):
        use_with_ultralytics(model, bundles["fp32"], tracker="bytetrack.yaml")
    encoder = use_with_ultralytics(model, bundles["int8"], tracker=str(config), threads=1)
    for frame, _ in walk(people, 3):
        model.track(frame, persist=True, conf=0.0, imgsz=160, max_det=6, verbose=False)
    tracker = model.predictor.trackers[0]
    assert tracker.encoder is encoder and len(encoder.last_boxes) > 0
    expected = encoder.extractor([frame[y1:y2, x1:x2] for x1, y1, x2, y2 in encoder.last_boxes])
    np.testing.assert_array_equal(encoder.last_features, expected)
    updated = [s for s in tracker.tracked_stracks if s.frame_id == tracker.frame_id]
    assert updated and all(np.abs(expected - s.curr_feat).max(axis=1).min() < 1e-5 for s in updated)
    encoder.close()


# --------------------------------------------------------------------------- osnet-edge track
def test_track_command_writes_mot_tracks(bundles, people, tmp_path, capsys):
    _need("boxmot")
    from osnet_edge.cli.track import main

    frames_dir = tmp_path / "img1"
    frames_dir.mkdir()
    det_lines = []
    for number, (frame, dets) in enumerate(walk(people), start=1):
        cv2.imwrite(str(frames_dir / f"{number:06d}.png"), frame)
        det_lines += [f"{number},-1,{d[0]},{d[1]},{d[2] - d[0]},{d[3] - d[1]},{d[4]},-1,-1,-1" for d in dets]
    (tmp_path / "det.txt").write_text("\n".join(det_lines) + "\n")
    out = tmp_path / "tracks.txt"
    assert main(["--frames", str(frames_dir), "--det", str(tmp_path / "det.txt"), "--bundle", str(bundles["int8"]),
                 "--threads", "1", "--out", str(out), "--no-progress"]) == 0
    rows = np.loadtxt(out, delimiter=",", ndmin=2)
    assert rows.shape[1] == 10 and set(rows[:, 0].astype(int)) <= set(range(1, 7))
    assert len(set(rows[rows[:, 0] == 6, 1])) >= 4  # the four people of the last frame keep distinct ids
    assert "fps" in capsys.readouterr().out
