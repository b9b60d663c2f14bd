"""Name parsing, folder reading and the agreed protocols on the shared real data."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from osnet_edge import data
from osnet_edge.data import (EVAL_PROTOCOLS, Sample, adaptation_samples, assert_disjoint, cuhk01_test,
                             cuhk03_val, parse_cuhk01, parse_cuhk03, parse_market1501,
                             read_labelled_folder, read_market1501, shared_data_dir)


def _touch(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")
    return folder


# ------------------------------------------------------------------------------------ parsing

@pytest.mark.parametrize("name, expected", [
    ("0002_c1s1_000451_03.jpg", (2, 1)),
    ("1501_c6s4_001902_01.jpg", (1501, 6)),
    ("-1_c1s1_000401_03.jpg", (-1, 1)),      # junk
    ("0000_c3s2_000123_02.jpg", (0, 3)),     # distractor
    ("/some/dir/0007_c2s3_070952_01.JPG", (7, 2)),
    ("0002_00.jpg", None),
    ("0001003.jpg", None),
    ("-2_c1s1_000401_03.jpg", None),
    ("0002_c1s1_000451_03.txt", None),
])
def test_parse_market1501(name, expected):
    assert parse_market1501(name) == expected


@pytest.mark.parametrize("name, expected", [
    ("0000_00.jpg", (0, 0)),
    ("0042_04.jpg", (42, 0)),
    ("0042_05.jpg", (42, 1)),
    ("0099_09.png", (99, 1)),
    ("0042_10.jpg", None),
    ("0042_5.jpg", None),
    ("0001003.jpg", None),
    ("0002_c1s1_000451_03.jpg", None),
])
def test_parse_cuhk03(name, expected):
    assert parse_cuhk03(name) == expected


@pytest.mark.parametrize("name, expected", [
    ("0001001.jpg", (1, 0)),
    ("0001002.jpg", (1, 0)),
    ("0001003.jpg", (1, 1)),
    ("0971004.jpeg", (971, 1)),
    ("0001000.jpg", None),
    ("0001005.jpg", None),
    ("000100.jpg", None),
    ("0001_00.jpg", None),
])
def test_parse_cuhk01(name, expected):
    assert parse_cuhk01(name) == expected


# --------------------------------------------------------------------------- folder reading

def test_read_market_folder_skips_junk_keeps_distractors(tmp_path):
    f = _touch(tmp_path / "q", "0002_c1s1_000451_03.jpg", "-1_c1s1_000401_03.jpg",
               "0000_c3s2_000123_02.jpg", "Thumbs.db", "notes.txt")
    samples = read_labelled_folder(f)
    assert [(s.pid, s.camid) for s in samples] == [(0, 3), (2, 1)]
    assert all(isinstance(s, Sample) for s in samples)
    assert [s.path for s in samples] == sorted(s.path for s in samples)
    with_junk = read_labelled_folder(f, naming="market1501", skip_junk=False)
    assert sorted(s.pid for s in with_junk) == [-1, 0, 2]


def test_read_auto_detects_cuhk03_and_cuhk01(tmp_path):
    a = _touch(tmp_path / "a", "0001_05.jpg", "0001_00.JPG", "0002_09.png")
    samples = read_labelled_folder(a)
    assert [(Path(s.path).name, s.pid, s.camid) for s in samples] == [
        ("0001_00.JPG", 1, 0), ("0001_05.jpg", 1, 1), ("0002_09.png", 2, 1)]
    b = _touch(tmp_path / "b", "0001001.jpg", "0001004.jpg")
    assert [(s.pid, s.camid) for s in read_labelled_folder(b)] == [(1, 0), (1, 1)]


def test_read_auto_no_naming_fits(tmp_path):
    f = _touch(tmp_path / "mixed", "0001_00.jpg", "0001001.jpg")
    with pytest.raises(ValueError, match="mixed"):
        read_labelled_folder(f)


def test_read_explicit_naming_rejects_stray_names(tmp_path):
    f = _touch(tmp_path / "x", "0001_00.jpg", "cat.jpg")
    with pytest.raises(ValueError, match="cat.jpg"):
        read_labelled_folder(f, naming="cuhk03")
    with pytest.raises(ValueError, match="unknown naming"):
        read_labelled_folder(_touch(tmp_path / "y", "0001_00.jpg"), naming="duke")


def test_read_missing_and_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_labelled_folder(tmp_path / "nope")
    with pytest.raises(ValueError, match="no .jpg"):
        read_labelled_folder(_touch(tmp_path / "empty", "readme.txt"))
    with pytest.raises(ValueError, match="junk"):
        read_labelled_folder(_touch(tmp_path / "junk", "-1_c1s1_000401_03.jpg"))


def test_read_market1501_layout(tmp_path):
    _touch(tmp_path / "query", "0002_c1s1_000451_03.jpg")
    _touch(tmp_path / "bounding_box_test", "0002_c2s1_000451_03.jpg", "-1_c1s1_000401_03.jpg")
    out = read_market1501(tmp_path)
    assert set(out) == {"query", "gallery"}  # no bounding_box_train: omitted
    assert [(s.pid, s.camid) for s in out["gallery"]] == [(2, 2)]
    with pytest.raises(ValueError):
        read_market1501(tmp_path / "query")
    with pytest.raises(FileNotFoundError):
        read_market1501(tmp_path / "nope")


def test_assert_disjoint(tmp_path):
    a = [Sample(str(tmp_path / "x.jpg"), 1, 0), Sample(str(tmp_path / "y.jpg"), 2, 0)]
    assert_disjoint(a, [Sample(str(tmp_path / "z.jpg"), 1, 0)])
    with pytest.raises(ValueError, match="y.jpg"):
        assert_disjoint(a, [str(tmp_path / "sub" / ".." / "y.jpg")])


def test_shared_data_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv("OSNET_EDGE_DATA", str(tmp_path))
    assert shared_data_dir() == tmp_path.resolve()
    monkeypatch.setenv("OSNET_EDGE_DATA", str(tmp_path / "missing"))
    with pytest.warns(UserWarning):
        assert shared_data_dir() is None


# ------------------------------------------------------------------------ real shared data

@pytest.fixture(scope="module")
def root() -> Path:
    found = shared_data_dir()
    if found is None:
        pytest.skip("shared real data (../shared/data or $OSNET_EDGE_DATA) is not present")
    return found


def test_cuhk03_val(root):
    query, gallery = cuhk03_val(root)
    assert len(query) + len(gallery) == 938
    assert len({s.pid for s in query + gallery}) == 100
    assert {s.camid for s in query} == {0}
    assert {s.camid for s in gallery} == {1}
    assert EVAL_PROTOCOLS["cuhk03-val"] is cuhk03_val


def test_cuhk01_test(root):
    query, gallery = cuhk01_test(root)
    counts = Counter(s.pid for s in query + gallery)
    assert set(counts) == set(range(1, 486))
    assert set(counts.values()) == {4}
    assert len(query) == len(gallery) == 970
    assert {s.camid for s in query} == {0} and {s.camid for s in gallery} == {1}


def test_adaptation_disjoint_from_evaluation(root):
    adapt = adaptation_samples(root)
    cuhk03 = [s for s in adapt if s.pid < data.CUHK01_PID_OFFSET]
    cuhk01 = [s for s in adapt if s.pid >= data.CUHK01_PID_OFFSET]
    assert len(cuhk03) == 477 and len(cuhk01) == 486 * 4
    assert {s.camid for s in cuhk03} == {0, 1} and {s.camid for s in cuhk01} == {2, 3}
    assert {s.pid - data.CUHK01_PID_OFFSET for s in cuhk01} == set(range(486, 972))
    for name, protocol in EVAL_PROTOCOLS.items():
        query, gallery = protocol(root)
        assert_disjoint(adapt, query + gallery)
        assert not {s.pid for s in cuhk01} & {s.pid for s in query + gallery}
