"""The bundle a grid point is timed with: one export.py already wrote under bundles/ when it holds
the same network, else one exported into the grid's cache (INT8 calibrated on real crops)."""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

from ..bundle import RANDOM_WEIGHTS_SEED
from .points import GridPoint, file_tag

# Where export.py writes bundles by default: the grid reuses the ones holding the same network.
DEFAULT_BUNDLE_DIR = "bundles"
# export_bundle's default max_batch, which the grid's own exports get: a reused bundle must allow as much.
GRID_MAX_BATCH = 64


class Int8Unavailable(RuntimeError):
    """INT8 export cannot run here (no calibration data, or the quantize/calibration code is missing)."""


class CalibrationProvider:
    """Builds one CalibrationSet per input size on first use (lazily: fp32-only grids never
    touch the calibration images nor need the calibration package)."""

    def __init__(self, folder: str | os.PathLike | None, max_images: int = 300) -> None:
        self.folder = Path(folder) if folder else None
        self.max_images = max_images
        self._sets: dict[tuple[int, int], Any] = {}

    @property
    def tag(self) -> str:
        if self.folder is None:
            return "nocalib"
        h = hashlib.sha256(f"{self.folder.resolve()}|{self.max_images}".encode()).hexdigest()[:8]
        return f"cal{h}"

    def __call__(self, input_hw: tuple[int, int]) -> Any:
        if self.folder is None:
            raise Int8Unavailable("INT8 needs calibration crops: pass --calib DIR (person crops, never your "
                                  "evaluation images)")
        if not self.folder.is_dir():
            raise Int8Unavailable(f"calibration folder not found: {self.folder}")
        if input_hw not in self._sets:
            try:
                from ..calibration import CalibrationSet
                make = CalibrationSet.from_folder
            except (ImportError, AttributeError) as exc:
                raise Int8Unavailable(f"osnet_edge.calibration.CalibrationSet.from_folder is not available "
                                      f"({exc})") from None
            self._sets[input_hw] = make(self.folder, input_size=input_hw, max_images=self.max_images)
        return self._sets[input_hw]


def bundle_dir_for(work_dir: str | os.PathLike, point: GridPoint, weights: str | None,
                   calibration: CalibrationProvider | None) -> Path:
    """Cache location of a grid point's bundle: named after the weights' (and calibration's) content."""
    wtag = f"w{file_tag(weights)}" if weights else f"random{RANDOM_WEIGHTS_SEED}"
    ctag = f"_{calibration.tag}" if point.precision == "int8" and calibration is not None else ""
    return Path(work_dir) / "bundles" / f"{point.name}_{wtag}{ctag}"


def holds_network(bundle: Any, point: GridPoint, weights: str | None,
                  calibration: CalibrationProvider | None = None, fuse_preprocess: bool = False) -> bool:
    """True when ``bundle`` holds exactly what :func:`ensure_bundle` would export for ``point``:
    same model, runtime, precision and preprocessing, the same checkpoint (sha256) or the same
    seeded random weights, and for INT8 the same calibration folder and size."""
    from ..bundle import sha256_file
    from ..preprocess import DEFAULT_INTERPOLATION

    m = bundle.manifest
    model, pre = m["model"], m["preprocess"]
    same_model = (model.get("variant") == point.variant and _close(model.get("width"), point.width)
                  and _close(model.get("res"), point.res) and m["runtime"] == point.runtime
                  and m["precision"] == point.precision and bool(pre.get("fused")) == bool(fuse_preprocess)
                  and pre.get("interpolation") == DEFAULT_INTERPOLATION and (bundle.max_batch or 0) >= GRID_MAX_BATCH)
    if not same_model:
        return False
    if weights is None:
        same_weights = bundle.random_weights and m.get("random_seed") == RANDOM_WEIGHTS_SEED
    else:
        same_weights = (m.get("weights") or {}).get("sha256") == sha256_file(weights)
    if not same_weights:
        return False
    if point.precision != "int8":
        return True
    from ..provenance import locate

    calib = m.get("calibration") or {}
    folder = calibration.folder if calibration is not None else None
    recorded = locate(calib, bundle.path, folder=True)  # the calibration folder as the bundle records it
    return (folder is not None and recorded is not None and recorded == folder.resolve()
            and calib.get("max_images") == calibration.max_images)


def _close(a: Any, b: float) -> bool:
    return a is not None and abs(float(a) - float(b)) < 1e-6


def load_quietly(path: Path) -> Any:
    """load_bundle without the random-weights warning: grids time random configurations on purpose, and a
    given bundle's Extractor warns about it once itself."""
    from ..bundle import load_bundle
    from ..notices import RandomWeightsWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        return load_bundle(path)


def ensure_bundle(work_dir: str | os.PathLike, point: GridPoint, weights: str | None = None,
                  calibration: CalibrationProvider | None = None, on_step: Callable[[str], None] | None = None,
                  fuse_preprocess: bool = False, reuse_dirs: Sequence[str | os.PathLike] = (DEFAULT_BUNDLE_DIR,)) -> Any:
    """The grid point's bundle: one scripts/export.py already wrote in ``reuse_dirs`` under the
    same name when it holds the same network, else the cached one under ``work_dir``, exported
    (host side, torch) when missing or broken. Bundles in ``reuse_dirs`` are only read."""
    from ..bundle import BundleError

    say = on_step or (lambda m: None)
    for folder in reuse_dirs:
        existing = Path(folder) / point.name
        if not (existing / "manifest.json").is_file():
            continue
        try:
            bundle = load_quietly(existing)
        except BundleError as exc:
            say(f"not reusing {existing}: {exc}")
            continue
        if holds_network(bundle, point, weights, calibration, fuse_preprocess):
            say(f"reusing {existing}")
            return bundle
    out = bundle_dir_for(work_dir, point, weights, calibration)
    if (out / "manifest.json").is_file():
        try:
            return load_quietly(out)
        except BundleError as exc:
            say(f"re-exporting {out.name}: {exc}")
    try:
        from ..export import export_bundle
    except ImportError as exc:
        raise ImportError(f"exporting {point.label} needs torch and onnx ({exc}): pip install 'osnet_edge[export]', "
                          "or time bundles exported on the host: osnet-edge profile BUNDLE [BUNDLE ...]") from None
    calib = None
    if point.precision == "int8":
        from ..models import input_size
        calib = (calibration or CalibrationProvider(None))(input_size(point.res))
    from ..notices import RandomWeightsWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        try:
            # the grid times every bundle itself: skip quantize()'s own quick INT8-vs-FP32 check
            extra = {"measure_latency": False, "progress": False} if point.precision == "int8" else {}
            # random weights come from RANDOM_WEIGHTS_SEED: every runtime/precision of one configuration
            # holds the SAME network, or fidelity and compatibility would compare two different ones
            return export_bundle(out, width=point.width, res=point.res, variant=point.variant,
                                 target=point.runtime, precision=point.precision, weights=weights,
                                 calibration=calib, fuse_preprocess=fuse_preprocess, on_step=on_step,
                                 random_seed=RANDOM_WEIGHTS_SEED, **extra)
        except ImportError as exc:
            if point.precision == "int8":
                raise Int8Unavailable(f"INT8 quantization is not available here ({exc})") from None
            raise
