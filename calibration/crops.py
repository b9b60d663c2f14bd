"""CalibrationSet: a seeded, stratified sample of person crops, read once, resized with the Extractor's own
preprocessing and cached on disk, with a disjoint held-out sample for honest fidelity."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from osnet_edge.data import Sample, read_market1501
from osnet_edge.preprocess import DEFAULT_INTERPOLATION, INTERPOLATIONS, Normalizer, read_image, resize
from osnet_edge.progress import progress_bar

from .images import PathLike, find_images, label_of, stratified_order

DEFAULT_CACHE_DIR = Path(os.environ.get("OSNET_EDGE_CACHE", Path.home() / ".cache" / "osnet_edge"))
_CACHE_VERSION = 1


class CalibrationSet:
    """A seeded, stratified sample of person crops prepared as model input.

    Build it with :meth:`from_folder`, :meth:`from_market1501`, :meth:`from_files` or
    :meth:`from_samples`. Images are decoded on first use (``num_images``, ``uint8()``,
    ``batches()``...), corrupt/unreadable ones are skipped and counted (the next candidate in
    the stratified order takes their place), and the resized uint8 crops are cached on disk
    under ``cache_dir`` keyed by input size, interpolation and the hash of the file list.
    """

    def __init__(self, samples: Sequence[Sample], input_size: tuple[int, int], max_images: int | None = 300,
                 interpolation: str = DEFAULT_INTERPOLATION, seed: int = 0, source: str = "files",
                 cache_dir: PathLike | None | bool = None, exclude: Iterable[str] = (),
                 skipped_junk: int = 0, progress: bool = True) -> None:
        if (not isinstance(input_size, (tuple, list)) or len(input_size) != 2
                or not all(isinstance(v, (int, np.integer)) and v > 0 for v in input_size)):
            raise ValueError(f"input_size must be (H, W) positive ints, got {input_size!r}")
        if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int)
                                       or max_images < 1):
            raise ValueError(f"max_images must be a positive int or None, got {max_images!r}")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
        excluded = {os.path.realpath(p) for p in exclude}
        pool = [s for s in samples if os.path.realpath(s.path) not in excluded]
        if not pool:
            what = "left after excluding the calibration images" if excluded else "found"
            raise ValueError(f"calibration set is empty: no images {what} in {source} "
                             "(need .jpg/.jpeg/.png person crops)")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.max_images = max_images
        self.interpolation = interpolation
        self.seed = int(seed)
        self.source = source
        self.skipped_junk = int(skipped_junk)
        self.progress = progress
        self._pool = sorted(pool, key=lambda s: s.path)
        self._order = stratified_order(self._pool, self.seed)
        self._exclude = sorted(excluded)
        if cache_dir is False:
            self.cache_dir: Path | None = None
        else:
            self.cache_dir = Path(cache_dir) if cache_dir else DEFAULT_CACHE_DIR
        self._images: np.ndarray | None = None
        self._used: list[Sample] = []
        self._skipped: list[str] = []
        self._cache_hit = False

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_folder(cls, folder: PathLike, input_size: tuple[int, int], max_images: int | None = 300,
                    interpolation: str = DEFAULT_INTERPOLATION, seed: int = 0, **kw) -> "CalibrationSet":
        """Crops under ``folder`` (recursive). A Market-1501 root (bounding_box_train, query,
        bounding_box_test) uses those splits; identities/cameras are parsed from file names where
        a known naming (Market-1501, CUHK03, CUHK01) fits, junk (pid -1) is skipped."""
        folder = Path(folder)
        source = str(folder.resolve())
        if (folder / "bounding_box_train").is_dir():  # Market-1501 root: never its query/gallery
            folder, source = folder / "bounding_box_train", f"{source} (market1501 train)"
        files = find_images(folder)
        if not files:
            raise ValueError(f"calibration set is empty: no .jpg/.jpeg/.png images under {folder}")
        samples, junk = [], 0
        for path in files:
            pid, camid, is_junk = label_of(path)
            if is_junk:
                junk += 1
                continue
            samples.append(Sample(path, pid if pid is not None else -1, camid if camid is not None else -1))
        return cls(samples, input_size, max_images, interpolation, seed, source=source,
                   skipped_junk=junk, **kw)

    @classmethod
    def from_market1501(cls, root: PathLike, input_size: tuple[int, int], max_images: int | None = 300,
                        interpolation: str = DEFAULT_INTERPOLATION, seed: int = 0,
                        splits: Sequence[str] = ("train",), **kw) -> "CalibrationSet":
        """A Market-1501 layout; by default only ``bounding_box_train`` (never calibrate on your
        evaluation query/gallery). Junk (pid -1) skipped."""
        data = read_market1501(root)
        missing = [s for s in splits if s not in data]
        if missing:
            raise ValueError(f"{root} has no Market-1501 split(s) {missing} (found {sorted(data)})")
        samples = [s for split in splits for s in data[split]]
        return cls(samples, input_size, max_images, interpolation, seed,
                   source=f"{Path(root).resolve()} (market1501 {'+'.join(splits)})", **kw)

    @classmethod
    def from_files(cls, paths: Iterable[PathLike], input_size: tuple[int, int], max_images: int | None = 300,
                   interpolation: str = DEFAULT_INTERPOLATION, seed: int = 0, **kw) -> "CalibrationSet":
        """An explicit list of image files (labels parsed from names where possible)."""
        samples = []
        for p in paths:
            pid, camid, junk = label_of(os.fspath(p))
            if not junk:
                samples.append(Sample(os.fspath(p), pid if pid is not None else -1,
                                      camid if camid is not None else -1))
        kw.setdefault("source", "files")
        return cls(samples, input_size, max_images, interpolation, seed, **kw)

    @classmethod
    def from_samples(cls, samples: Iterable[Sample], input_size: tuple[int, int], max_images: int | None = 300,
                     interpolation: str = DEFAULT_INTERPOLATION, seed: int = 0, **kw) -> "CalibrationSet":
        """Labelled :class:`osnet_edge.data.Sample` s, e.g. ``osnet_edge.data.adaptation_samples()``."""
        samples = list(samples)
        for s in samples:
            if not isinstance(s, Sample):
                raise TypeError(f"from_samples expects osnet_edge.data.Sample items, got {type(s).__name__}")
        kw.setdefault("source", "samples")
        return cls(samples, input_size, max_images, interpolation, seed, **kw)

    def holdout(self, n: int = 200) -> "CalibrationSet":
        """Up to ``n`` other crops of the same source, disjoint from this set's images.

        Used to measure INT8 fidelity on images the ranges were not fitted on. Raises
        ValueError when the source has no image left over (use a larger folder, a smaller
        ``max_images`` or pass an explicit fidelity set).
        """
        self._load()
        used = [s.path for s in self._used] + list(self._exclude)
        return CalibrationSet(self._pool, self.input_size, n, self.interpolation, self.seed + 1,
                              source=f"{self.source} (held out)", cache_dir=self.cache_dir or False,
                              exclude=used, progress=self.progress)

    # ------------------------------------------------------------------ data
    @property
    def num_images(self) -> int:
        return int(self._load().shape[0])

    @property
    def files(self) -> list[str]:
        """The image files in use (after skipping unreadable ones), in sampling order."""
        self._load()
        return [s.path for s in self._used]

    @property
    def samples(self) -> list[Sample]:
        self._load()
        return list(self._used)

    @property
    def skipped_unreadable(self) -> list[str]:
        self._load()
        return list(self._skipped)

    @property
    def cache_hit(self) -> bool:
        """Whether the last load came from the disk cache."""
        self._load()
        return self._cache_hit

    def uint8(self) -> np.ndarray:
        """(N, H, W, 3) uint8 BGR crops resized to ``input_size`` (a fused-preprocessing model's input)."""
        return self._load()

    def float32(self) -> np.ndarray:
        """(N, 3, H, W) float32 normalised RGB, exactly the Extractor's model input."""
        return Normalizer()(self._load())

    def model_input(self, fused: bool = False) -> np.ndarray:
        """The whole set as model input: uint8 NHWC BGR if ``fused`` else float32 NCHW."""
        return self.uint8() if fused else self.float32()

    def batches(self, batch_size: int = 32, fused: bool = False) -> Iterator[np.ndarray]:
        """Model-input batches (see :meth:`model_input`) of at most ``batch_size`` images."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        images = self._load()
        norm = Normalizer()
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            yield chunk if fused else norm(chunk)

    def __len__(self) -> int:
        return self.num_images

    def file_list_sha256(self) -> str:
        """sha256 of the sorted list of image paths in use (what the manifest records)."""
        return hashlib.sha256("\n".join(sorted(self.files)).encode()).hexdigest()

    def describe(self) -> dict:
        """JSON-able summary for the bundle manifest."""
        self._load()
        return {"source": self.source, "num_images": len(self._used), "max_images": self.max_images,
                "candidates": len(self._pool), "skipped_unreadable": len(self._skipped),
                "skipped_junk": self.skipped_junk,
                "identities": len({s.pid for s in self._used if s.pid is not None and s.pid >= 0}),
                "cameras": len({s.camid for s in self._used if s.camid is not None and s.camid >= 0}),
                "sha256": self.file_list_sha256(), "input_size": list(self.input_size),
                "interpolation": self.interpolation, "seed": self.seed, "sampling": "stratified"}

    def __repr__(self) -> str:
        n = len(self._used) if self._images is not None else f"<= {self.max_images}"
        return (f"CalibrationSet({self.source!r}, {n} images of {len(self._pool)}, "
                f"{self.input_size[0]}x{self.input_size[1]}, {self.interpolation}, seed={self.seed})")

    # ------------------------------------------------------------------ loading + cache
    def _cache_key(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps([_CACHE_VERSION, list(self.input_size), self.interpolation, self.seed,
                             self.max_images, self._exclude]).encode())
        for s in self._pool:  # path + size + mtime: an edited file invalidates the cache
            try:
                st = os.stat(s.path)
                h.update(f"{s.path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{s.path}\0missing\n".encode())
        return h.hexdigest()[:32]

    def _load(self) -> np.ndarray:
        if self._images is not None:
            return self._images
        key = self._cache_key()
        path = self.cache_dir / "calibration" / f"{key}.npz" if self.cache_dir else None
        if path is not None and path.is_file():
            try:
                with np.load(path, allow_pickle=False) as z:
                    images, used, skipped = z["images"], list(z["used"]), list(z["skipped"])
                by_path = {s.path: s for s in self._pool}
                if all(p in by_path for p in used) and images.shape[0] == len(used):
                    self._images, self._used = images, [by_path[str(p)] for p in used]
                    self._skipped, self._cache_hit = [str(p) for p in skipped], True
                    return images
            except Exception:  # a damaged cache file is rebuilt, never trusted
                pass
        self._read()
        if path is not None:
            self._write_cache(path)
        return self._images  # type: ignore[return-value]

    def _read(self) -> None:
        limit = self.max_images or len(self._order)
        h, w = self.input_size
        images, used, skipped = [], [], []
        bar = progress_bar(total=min(limit, len(self._order)), desc="reading calibration crops", unit="img",
                           leave=False, enabled=self.progress)
        for s in self._order:
            if len(used) >= limit:
                break
            img = read_image(s.path)
            if img is None or img.ndim != 3 or img.shape[2] != 3:
                skipped.append(s.path)
                continue
            images.append(resize(img, (h, w), self.interpolation))
            used.append(s)
            bar.update(1)
        bar.close()
        if not used:
            raise ValueError(f"calibration set is empty: none of the {len(self._order)} image(s) in "
                             f"{self.source} could be read ({len(skipped)} unreadable/corrupt)")
        if skipped:
            warnings.warn(f"calibration: skipped {len(skipped)} unreadable/corrupt image(s), e.g. {skipped[:3]}")
        self._images = np.stack(images)
        self._used, self._skipped, self._cache_hit = used, skipped, False

    def _write_cache(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
            with os.fdopen(fd, "wb") as f:
                np.savez(f, images=self._images, used=np.array([s.path for s in self._used]),
                         skipped=np.array(self._skipped, dtype=str))
            os.replace(tmp, path)
        except OSError as exc:  # a read-only home must not break calibration
            warnings.warn(f"could not write the calibration cache in {path.parent}: {exc}")
