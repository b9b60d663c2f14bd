"""CalibrationSet: Market-1501 names (junk -1), corrupt files, empty folders, stratified sampling, cache."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from osnet_edge.calibration import CalibrationSet
from osnet_edge.preprocess import preprocess, read_image
from osnet_edge.samples import synthetic_crops

HW = (64, 32)


def _write_market(folder: Path, pids=range(1, 11), cams=(1, 2), per_cam=3, seed=0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    crops = iter(synthetic_crops(len(pids) * len(cams) * per_cam + 10, seed=seed, min_h=40, max_h=80))
    paths = []
    for pid in pids:
        for cam in cams:
            for k in range(per_cam):
                p = folder / f"{pid:04d}_c{cam}s1_{k:06d}_00.jpg"
                cv2.imwrite(str(p), next(crops))
                paths.append(p)
    return paths


@pytest.fixture()
def market(tmp_path) -> Path:
    root = tmp_path / "market"
    _write_market(root / "bounding_box_train")
    _write_market(root / "query", pids=range(50, 53))  # must never be used for calibration
    junk = root / "bounding_box_train" / "-1_c1s1_000000_00.jpg"
    cv2.imwrite(str(junk), synthetic_crops(1, seed=9)[0])
    (root / "bounding_box_train" / "0003_c1s1_000099_00.jpg").write_bytes(b"not a jpeg at all")
    return root


def test_market1501_names_junk_and_corrupt_files(market, tmp_path):
    cal = CalibrationSet.from_folder(market, input_size=HW, max_images=None, cache_dir=tmp_path / "c",
                                     progress=False)
    d = cal.describe()
    assert d["skipped_junk"] == 1
    assert d["skipped_unreadable"] == 1 and cal.skipped_unreadable[0].endswith("0003_c1s1_000099_00.jpg")
    assert cal.num_images == 60                      # 10 ids x 2 cams x 3, query folder ignored
    assert all("bounding_box_train" in f for f in cal.files)
    assert d["identities"] == 10 and d["cameras"] == 2
    assert cal.uint8().shape == (60, *HW, 3) and cal.uint8().dtype == np.uint8
    via_market = CalibrationSet.from_market1501(market, input_size=HW, max_images=None, cache_dir=False,
                                                progress=False)
    assert sorted(via_market.files) == sorted(cal.files)


def test_empty_and_missing_folders_are_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        CalibrationSet.from_folder(tmp_path / "empty", input_size=HW)
    with pytest.raises(FileNotFoundError):
        CalibrationSet.from_folder(tmp_path / "nope", input_size=HW)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="could be read"):
        CalibrationSet.from_folder(bad, input_size=HW, cache_dir=False, progress=False).num_images


def test_stratified_sampling_covers_ids_and_cameras_and_is_reproducible(tmp_path):
    _write_market(tmp_path / "crops" / "sub", pids=range(1, 11), cams=(1, 2, 3), per_cam=4)
    kw = dict(input_size=HW, max_images=20, cache_dir=False, progress=False)
    a = CalibrationSet.from_folder(tmp_path / "crops", **kw)
    b = CalibrationSet.from_folder(tmp_path / "crops", **kw)
    c = CalibrationSet.from_folder(tmp_path / "crops", seed=1, **kw)
    assert a.files == b.files and a.file_list_sha256() == b.file_list_sha256()
    assert set(a.files) != set(c.files)
    pids = [s.pid for s in a.samples]
    assert sorted(set(pids)) == list(range(1, 11)) and all(pids.count(p) == 2 for p in set(pids))
    for pid in set(pids):  # two images of one identity come from two different cameras
        assert len({s.camid for s in a.samples if s.pid == pid}) == 2


def test_matches_extractor_preprocessing_cache_and_holdout(tmp_path):
    paths = _write_market(tmp_path / "crops", pids=range(1, 6), cams=(1, 2), per_cam=3)
    kw = dict(input_size=HW, max_images=12, cache_dir=tmp_path / "cache", progress=False)
    a = CalibrationSet.from_folder(tmp_path / "crops", **kw)
    assert not a.cache_hit
    expected = preprocess([read_image(f) for f in a.files], HW)
    np.testing.assert_array_equal(a.float32(), expected)
    assert np.concatenate(list(a.batches(5))).shape == expected.shape
    assert next(a.batches(4, fused=True)).dtype == np.uint8
    b = CalibrationSet.from_folder(tmp_path / "crops", **kw)
    assert b.cache_hit and b.files == a.files
    np.testing.assert_array_equal(b.uint8(), a.uint8())
    held = a.holdout(100)
    assert held.num_images == len(paths) - 12
    assert not set(held.files) & set(a.files)
    with pytest.raises(ValueError, match="empty"):
        held.holdout(5).holdout(5).num_images  # nothing left after all images are used
    os.utime(paths[0], (1, 1))  # an edited file invalidates the cache
    assert not CalibrationSet.from_folder(tmp_path / "crops", **kw).cache_hit


def test_from_files_and_samples(tmp_path):
    from osnet_edge.data import Sample
    paths = _write_market(tmp_path / "x", pids=range(1, 4), cams=(1,), per_cam=2)
    f = CalibrationSet.from_files(paths, input_size=HW, cache_dir=False, progress=False)
    s = CalibrationSet.from_samples([Sample(str(p), 1, 0) for p in paths], input_size=HW, cache_dir=False,
                                    progress=False)
    assert f.num_images == s.num_images == 6
    with pytest.raises(TypeError):
        CalibrationSet.from_samples([str(paths[0])], input_size=HW)
    with pytest.raises(ValueError):
        CalibrationSet.from_files(paths, input_size=(0, 3))


def test_imports_without_torch():
    import subprocess
    import sys
    code = ("import sys; sys.modules['torch'] = None\n"
            "from osnet_edge.calibration import CalibrationSet\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
