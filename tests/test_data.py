"""Name parsing, folder reading and the agreed protocols on the shared real data."""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from osnet_edge import data
from osnet_edge.data import (EVAL_PROTOCOLS, TRAIN_SPLITS, Sample, adaptation_samples, assert_disjoint,
                             assert_disjoint_from_protocols, cuhk01_test, cuhk03_val, default_protocols,
                             market1501_eval, market1501_train, parse_cuhk01, parse_cuhk03, parse_market1501,
                             protocol_available, read_labelled_folder, read_market1501, shared_data_dir)


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
    # the real release has *.jpg.jpg files (6 query, 18 gallery); torchreid counts them
    ("1488_c1s6_023021_00.jpg.jpg", (1488, 1)),
    ("0000_c3s2_000123_02.jpg.jpg", (0, 3)),
    ("0002_c1s1_000451_03.jpg.txt", None),
    ("0002_c1s1_000451_03jpg", None),
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


def tiny_shared_root(root: Path) -> Path:
    """A shared-data root whose market1501/ holds real Market-1501 file names (incl. ``.jpg.jpg``,
    junk and distractors) as empty files: the protocol reads names only."""
    m = root / "market1501"
    _touch(m / "query", "0001_c1s1_001051_00.jpg", "1488_c1s6_023021_00.jpg.jpg", "0003_c2s1_000301_00.jpg")
    _touch(m / "bounding_box_test", "0001_c2s1_000151_01.jpg", "0001_c1s1_001101_01.jpg",
           "1488_c2s3_065527_00.jpg.jpg", "0000_c3s2_000123_02.jpg", "-1_c1s1_000401_03.jpg",
           "0003_c3s1_000351_00.jpg")
    _touch(m / "bounding_box_train", "0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg", "0007_c3s3_070952_01.jpg")
    return root


def test_market1501_protocol_reads_the_release_as_torchreid_does(tmp_path):
    root = tiny_shared_root(tmp_path)
    query, gallery = market1501_eval(root)
    assert [(s.pid, s.camid) for s in query] == [(1, 1), (3, 2), (1488, 1)]   # .jpg.jpg counts
    assert sorted((s.pid, s.camid) for s in gallery) == [(0, 3), (1, 1), (1, 2), (3, 3), (1488, 2)]  # junk out
    assert EVAL_PROTOCOLS["market1501"] is market1501_eval and list(EVAL_PROTOCOLS)[0] == "market1501"
    train = market1501_train(root)
    assert [s.pid for s in train] == [2, 2, 7] and TRAIN_SPLITS["market1501"] is market1501_train


def test_default_protocol_is_market1501_when_present(tmp_path):
    assert protocol_available("market1501", tiny_shared_root(tmp_path))
    assert default_protocols(tmp_path) == ["market1501"]
    cuhk = _touch(tmp_path / "cuhk_only" / "cuhk03" / "detected" / "val", "0000_00.jpg", "0000_05.jpg")
    assert default_protocols(cuhk.parents[2]) == ["cuhk03-val"]
    assert default_protocols(tmp_path / "empty") == []
    with pytest.raises(ValueError, match="unknown protocol"):
        protocol_available("market", tmp_path)


def test_market1501_train_refuses_evaluation_images(tmp_path):
    root = tiny_shared_root(tmp_path)
    q = root / "market1501" / "query" / "0003_c2s1_000301_00.jpg"
    (root / "market1501" / "bounding_box_train" / q.name).symlink_to(q)   # same file under another folder
    with pytest.raises(ValueError, match="0003_c2s1_000301_00"):
        market1501_train(root)
    with pytest.raises(ValueError, match="market1501"):
        assert_disjoint_from_protocols([str(q)], root)
    assert_disjoint_from_protocols([str(root / "market1501" / "bounding_box_train" / "0002_c1s1_000451_03.jpg")], root)


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


def test_market1501_release(root):
    if not protocol_available("market1501", root):
        pytest.skip("market1501/ is not in the shared data")
    query, gallery = market1501_eval(root)
    assert len(query) == 3368 and len(gallery) == 19732 - 3819          # junk (-1) excluded
    assert sum(s.pid == 0 for s in gallery) == 2798                     # distractors kept
    assert sum(s.path.endswith(".jpg.jpg") for s in query) == 6
    assert sum(s.path.endswith(".jpg.jpg") for s in gallery) == 18 - 2                # 2 of the 18 are junk
    assert len({s.pid for s in query}) == 750
    train = market1501_train(root)
    assert len(train) == 12936 and len({s.pid for s in train}) == 751
    assert not {s.pid for s in train} & {s.pid for s in query + gallery}
    assert default_protocols(root) == ["market1501"]


def test_evaluation_folders_are_refused_by_their_layout_alone(tmp_path):
    """A fresh clone has no shared data to compare file lists with: the layout itself gives the split away."""
    from osnet_edge.data import refuse_evaluation_folder

    def touch(rel: str) -> None:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")

    touch("market/query/0001_c1s1_000151_00.jpg")
    touch("market/bounding_box_train/0002_c1s1_000451_03.jpg")
    touch("cuhk03/detected/val/0003_05.jpg")
    touch("cuhk01/campus/0012001.jpg")
    touch("cuhk01_adapt/campus/0600001.jpg")
    touch("plain/query/img.jpg")  # a folder named query without Market-1501 names is not refused
    for folder, words in (("market", "Market-1501's query/"), ("market/query", "Market-1501's query/"),
                          ("cuhk03", "CUHK03's val"), ("cuhk01", "CUHK01's test identities")):
        with pytest.raises(ValueError, match=re.escape(words)):
            refuse_evaluation_folder(tmp_path / folder)
    for folder in ("market/bounding_box_train", "cuhk01_adapt", "plain"):
        refuse_evaluation_folder(tmp_path / folder)
