"""Labelled person-crop readers and the agreed evaluation / adaptation protocols.

Only file *names* are read here (identity and camera are encoded in them); image decoding
lives elsewhere. The protocol functions implement the splits agreed in the shared data
README (``shared/data/README.md``) so that every report measures on the same images and
nothing is calibrated or adapted on its own test set (:func:`assert_disjoint` guards it).
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

__all__ = [
    "Sample", "parse_market1501", "parse_cuhk03", "parse_cuhk01", "NAMINGS",
    "read_labelled_folder", "read_market1501", "shared_data_dir", "cuhk03_val",
    "cuhk01_test", "adaptation_samples", "assert_disjoint", "EVAL_PROTOCOLS",
    "CUHK01_PID_OFFSET", "CUHK01_CAMID_OFFSET", "market1501_eval", "market1501_train",
    "TRAIN_SPLITS", "protocol_available", "assert_disjoint_from_protocols", "default_protocols",
    "refuse_evaluation_folder",
]

PathLike = Union[str, "os.PathLike[str]"]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")

# CUHK01 samples mixed into the adaptation set are shifted so that their ids and cameras
# cannot collide with CUHK03's (pids 0000-0049, cameras 0/1): CUHK01 pid p -> p + 10000,
# camera 0/1 -> 2/3. Different sites, different people, different cameras.
CUHK01_PID_OFFSET = 10000
CUHK01_CAMID_OFFSET = 2

# Agreed CUHK01 id ranges (inclusive): evaluation vs. calibration/adaptation.
CUHK01_TEST_PIDS = (1, 485)
CUHK01_ADAPT_PIDS = (486, 971)


@dataclass(frozen=True)
class Sample:
    """One labelled crop: image path, person id, camera id."""
    path: str
    pid: int
    camid: int


_EXT = r"\.(?:jpe?g|png)"
# The real Market-1501 release holds a few ``*.jpg.jpg`` files (6 query, 18 gallery); torchreid
# globs ``*.jpg`` and reads ``([-\d]+)_c(\d)``, so they count: a repeated extension is accepted.
_MARKET_RE = re.compile(r"^(-1|\d+)_c(\d+)s\d+_\d+_\d+(?:" + _EXT + r")+$", re.IGNORECASE)
_CUHK03_RE = re.compile(r"^(\d+)_(\d{2})" + _EXT + r"$", re.IGNORECASE)
_CUHK01_RE = re.compile(r"^(\d{4})(\d{3})" + _EXT + r"$", re.IGNORECASE)


def parse_market1501(name: str) -> Optional[tuple[int, int]]:
    """``PPPP_cCsS_FFFFFF_BB.jpg`` -> (pid, camera). pid -1 is junk, 0 a distractor.

    The camera is kept as written in the name (1-based), like torchreid does before its own
    0-based shift; only equality of camids matters to the protocol.
    """
    m = _MARKET_RE.match(os.path.basename(name))
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2))


def parse_cuhk03(name: str) -> Optional[tuple[int, int]]:
    """``PPPP_II.jpg`` -> (pid, camera): II 00-04 camera 0 (A), 05-09 camera 1 (B)."""
    m = _CUHK03_RE.match(os.path.basename(name))
    if m is None:
        return None
    idx = int(m.group(2))
    if idx > 9:
        return None
    return int(m.group(1)), 0 if idx <= 4 else 1


def parse_cuhk01(name: str) -> Optional[tuple[int, int]]:
    """``PPPPNNN.jpg`` -> (pid, camera): NNN 001-002 camera 0 (A), 003-004 camera 1 (B)."""
    m = _CUHK01_RE.match(os.path.basename(name))
    if m is None:
        return None
    idx = int(m.group(2))
    if not 1 <= idx <= 4:
        return None
    return int(m.group(1)), 0 if idx <= 2 else 1


# Order matters: "auto" takes the first naming that parses every file of a folder.
NAMINGS: dict[str, Callable[[str], Optional[tuple[int, int]]]] = {
    "market1501": parse_market1501,
    "cuhk03": parse_cuhk03,
    "cuhk01": parse_cuhk01,
}


def _image_names(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder)
                  if n.lower().endswith(IMAGE_EXTENSIONS) and (folder / n).is_file())


def read_labelled_folder(folder: PathLike, naming: str = "auto",
                         skip_junk: bool = True) -> list[Sample]:
    """Samples of the images directly in ``folder``, labelled from their file names.

    Files are .jpg/.jpeg/.png (any case), sorted by path so that runs are reproducible.
    ``naming="auto"`` picks the first of market1501, cuhk03, cuhk01 that parses *every*
    file; an explicit naming must also parse every file (a stray name is an error rather
    than a silently smaller set). Junk (pid -1) is dropped when ``skip_junk``.
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"image folder not found: {folder}")
    if not folder.is_dir():
        raise NotADirectoryError(f"not a folder: {folder}")
    names = _image_names(folder)
    if not names:
        raise ValueError(f"no .jpg/.jpeg/.png images in {folder}")

    if naming == "auto":
        for candidate, parse in NAMINGS.items():
            if all(parse(n) is not None for n in names):
                naming = candidate
                break
        else:
            raise ValueError(f"no known naming ({', '.join(NAMINGS)}) parses every image name in "
                             f"{folder} (e.g. {names[0]!r})")
    if naming not in NAMINGS:
        raise ValueError(f"unknown naming {naming!r}; expected 'auto' or one of {list(NAMINGS)}")
    parse = NAMINGS[naming]

    samples: list[Sample] = []
    bad: list[str] = []
    for n in names:
        parsed = parse(n)
        if parsed is None:
            bad.append(n)
            continue
        pid, camid = parsed
        if skip_junk and pid == -1:
            continue
        samples.append(Sample(os.path.join(str(folder), n), pid, camid))
    if bad:
        raise ValueError(f"{len(bad)} image name(s) in {folder} do not follow the {naming} "
                         f"naming, e.g. {bad[:5]}")
    if not samples:
        raise ValueError(f"only junk images (pid -1) in {folder}")
    return samples


MARKET1501_SPLITS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


def read_market1501(root: PathLike) -> dict[str, list[Sample]]:
    """Market-1501 layout -> ``{"train", "query", "gallery"}`` sample lists.

    Keys map to the ``bounding_box_train``, ``query`` and ``bounding_box_test`` subfolders;
    missing subfolders are omitted. Junk (pid -1) is skipped, distractors (pid 0) kept, as
    torchreid does.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Market-1501 root not found: {root}")
    out = {key: read_labelled_folder(root / sub, naming="market1501")
           for key, sub in MARKET1501_SPLITS.items() if (root / sub).is_dir()}
    if not out:
        raise ValueError(f"{root} has none of the Market-1501 subfolders "
                         f"{list(MARKET1501_SPLITS.values())}")
    return out


# --------------------------------------------------------------------- shared data protocols

def shared_data_dir() -> Optional[Path]:
    """The shared real-data folder, or None when it is absent (tests then skip).

    ``$OSNET_EDGE_DATA`` if set, else ``<repo root>/../shared/data`` where the repo root is
    the parent of the ``osnet_edge`` package folder.
    """
    env = os.environ.get("OSNET_EDGE_DATA")
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            warnings.warn(f"OSNET_EDGE_DATA={env!r} is not a folder; shared data treated as absent",
                          stacklevel=2)
            return None
        return path.resolve()
    path = (Path(__file__).resolve().parent.parent / ".." / "shared" / "data").resolve()
    return path if path.is_dir() else None


def _data_root(root: Optional[PathLike]) -> Path:
    if root is not None:
        return Path(root)
    found = shared_data_dir()
    if found is None:
        raise FileNotFoundError("shared data folder not found: pass root or set OSNET_EDGE_DATA")
    return found


def _split_by_camera(samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    query = [s for s in samples if s.camid == 0]
    gallery = [s for s in samples if s.camid == 1]
    return query, gallery


def _cuhk01_range(root: Path, lo: int, hi: int) -> list[Sample]:
    samples = read_labelled_folder(root / "cuhk01" / "campus", naming="cuhk01")
    return [s for s in samples if lo <= s.pid <= hi]


def cuhk03_val(root: Optional[PathLike] = None) -> tuple[list[Sample], list[Sample]]:
    """Evaluation "cuhk03-val": all of ``cuhk03/detected/val/``; query camera A, gallery B."""
    samples = read_labelled_folder(_data_root(root) / "cuhk03" / "detected" / "val", naming="cuhk03")
    return _split_by_camera(samples)


def cuhk01_test(root: Optional[PathLike] = None) -> tuple[list[Sample], list[Sample]]:
    """Evaluation "cuhk01-test": CUHK01 ids 0001-0485; query camera A (001-002), gallery B."""
    return _split_by_camera(_cuhk01_range(_data_root(root), *CUHK01_TEST_PIDS))


def _market1501_split(root: Optional[PathLike], key: str) -> list[Sample]:
    folder = _data_root(root) / "market1501" / MARKET1501_SPLITS[key]
    return read_labelled_folder(folder, naming="market1501")


def market1501_eval(root: Optional[PathLike] = None) -> tuple[list[Sample], list[Sample]]:
    """Evaluation "market1501": all of ``query/`` against ``bounding_box_test/`` (the paper's Table 6).

    Junk (pid -1) gallery images are excluded, distractors (pid 0) kept; the protocol itself
    (:func:`osnet_edge.metrics.evaluate_rank`) ignores gallery images of the query's identity
    from the query's camera -- torchreid's ``eval_market1501``.
    """
    return _market1501_split(root, "query"), _market1501_split(root, "gallery")


def market1501_train(root: Optional[PathLike] = None) -> list[Sample]:
    """Calibration / adaptation / fine-tuning on Market-1501: ``bounding_box_train/`` only
    (751 identities disjoint from the test identities), checked disjoint from the evaluation
    images of every protocol present, as :func:`adaptation_samples` is."""
    samples = _market1501_split(root, "train")
    assert_disjoint_from_protocols(samples, root)
    return samples


# The benchmark of record first: it is the default wherever its data is present.
EVAL_PROTOCOLS: dict[str, Callable[..., tuple[list[Sample], list[Sample]]]] = {
    "market1501": market1501_eval,
    "cuhk03-val": cuhk03_val,
    "cuhk01-test": cuhk01_test,
}

def protocol_available(name: str, root: Optional[PathLike] = None) -> bool:
    """True when the images of protocol ``name`` are present under the shared data root."""
    if name not in EVAL_PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; known: {', '.join(EVAL_PROTOCOLS)}")
    try:
        EVAL_PROTOCOLS[name](root)
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return False
    return True


def default_protocols(root: Optional[PathLike] = None) -> list[str]:
    """The protocols to evaluate on when none is named: Market-1501 alone when its data is
    present (the benchmark of record), else the CUHK cross-domain protocols that are present."""
    if protocol_available("market1501", root):
        return ["market1501"]
    return [name for name in EVAL_PROTOCOLS if name != "market1501" and protocol_available(name, root)]


def _norm_path(p: Union[Sample, PathLike]) -> str:
    return os.path.normcase(os.path.realpath(p.path if isinstance(p, Sample) else os.fspath(p)))


def assert_disjoint(a: Iterable[Union[Sample, PathLike]], b: Iterable[Union[Sample, PathLike]]) -> None:
    """Raise ValueError if any image (compared by resolved path) is in both ``a`` and ``b``.

    Used to guarantee calibration / adaptation data never includes evaluation images.
    """
    b_paths = {_norm_path(x) for x in b}
    overlap = sorted({p for p in (_norm_path(x) for x in a) if p in b_paths})
    if overlap:
        raise ValueError(f"{len(overlap)} image(s) appear in both sets (calibration/adaptation "
                         f"must never use evaluation images), e.g. {overlap[:10]}")


def adaptation_samples(root: Optional[PathLike] = None) -> list[Sample]:
    """Calibration / adaptation set: ``cuhk03/detected/train/`` + CUHK01 ids 0486-0971.

    CUHK03 samples keep their pids (0-49) and cameras 0/1; CUHK01 pids get
    ``+CUHK01_PID_OFFSET`` (10000) and cameras ``+CUHK01_CAMID_OFFSET`` (-> 2/3), so that the
    two datasets never share an identity or a camera label. Checked disjoint from every
    evaluation protocol before returning.
    """
    root = _data_root(root)
    samples = read_labelled_folder(root / "cuhk03" / "detected" / "train", naming="cuhk03")
    samples += [Sample(s.path, s.pid + CUHK01_PID_OFFSET, s.camid + CUHK01_CAMID_OFFSET)
                for s in _cuhk01_range(root, *CUHK01_ADAPT_PIDS)]
    assert_disjoint_from_protocols(samples, root)
    return samples


def assert_disjoint_from_protocols(samples: Iterable[Union[Sample, PathLike]],
                                   root: Optional[PathLike] = None) -> None:
    """Raise ValueError if any of ``samples`` is an evaluation image of a protocol present
    under ``root`` (the guard every calibration / adaptation entry point runs)."""
    samples = list(samples)
    for name, protocol in EVAL_PROTOCOLS.items():
        try:  # read each protocol's file lists once (Market-1501's are 23k names)
            query, gallery = protocol(root)
        except (FileNotFoundError, NotADirectoryError, ValueError):
            continue  # that protocol's images are not here (protocol_available's rule)
        try:
            assert_disjoint(samples, query + gallery)
        except ValueError as exc:
            raise ValueError(f"images overlap evaluation protocol {name!r}: {exc}") from None



# Evaluation folders recognised by their own layout, wherever they are (a fresh clone has no shared data
# to compare file lists with): Market-1501's test splits, CUHK03's val split, CUHK01's test identities.
_MARKET1501_EVAL_DIRS = ("query", "bounding_box_test", "gt_bbox", "gt_query")


def _evaluation_folder_reason(folder: Path, files: list[str]) -> Optional[str]:
    """Why ``folder`` (holding image ``files``) is an evaluation split, or None."""
    named = [n for n in files if n.lower().endswith((".jpg", ".jpeg", ".png"))]
    if folder.name in _MARKET1501_EVAL_DIRS and any(parse_market1501(n) for n in named):
        return (f"{folder} is Market-1501's {folder.name}/ split (evaluation images); calibrate on "
                "bounding_box_train/")
    if folder.name in ("val", "test") and folder.parent.name in ("detected", "labeled") and \
            any(NAMINGS["cuhk03"](n) for n in named):
        return f"{folder} is CUHK03's {folder.name} split (evaluation images); calibrate on detected/train/"
    test_ids = [n for n in named if (parsed := NAMINGS["cuhk01"](n)) and
                CUHK01_TEST_PIDS[0] <= parsed[0] <= CUHK01_TEST_PIDS[1]]
    if folder.name == "campus" and test_ids:
        return (f"{folder} holds CUHK01's test identities {CUHK01_TEST_PIDS[0]:04d}-{CUHK01_TEST_PIDS[1]:04d} "
                f"({len(test_ids)} images); calibrate on ids {CUHK01_ADAPT_PIDS[0]:04d}-{CUHK01_ADAPT_PIDS[1]:04d} only")
    return None


def refuse_evaluation_folder(folder: PathLike) -> None:
    """Raise ValueError when ``folder`` is, or contains, an evaluation split recognised by its layout
    (Market-1501 query/ bounding_box_test/, CUHK03 val/, CUHK01 test ids), wherever it lies. The
    calibration and adaptation entry points run this first, then :func:`assert_disjoint_from_protocols`
    against the shared data's file lists where those are present."""
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        reason = _evaluation_folder_reason(Path(root), files)
        if reason:
            raise ValueError(reason)


# Which images calibration / adaptation read for each evaluation protocol; each function already
# checks its images against every evaluation protocol present (callers need not repeat it).
TRAIN_SPLITS: dict[str, Callable[..., list[Sample]]] = {
    "market1501": market1501_train,
    "cuhk03-val": adaptation_samples,
    "cuhk01-test": adaptation_samples,
}
