"""Profiler: exact params / mult-adds per width x resolution (x variant), and latency.

Counting needs torch (it walks the model); it is imported lazily so that the latency side
can run on a device without torch. Latency is measured two ways on every configuration:

* ``mode="extractor"``: ``Extractor(crops)`` end to end (resize, normalise, infer, L2-norm),
  what a camera application pays per call;
* ``mode="runtime"``: only ``Extractor.infer_raw`` on a prepared batch, what the runtime
  and precision alone cost.

Grids reuse a bundle scripts/export.py already wrote under bundles/ (same name, same network),
else export the bundles they need (host side, torch) into a cache under a work folder so that
reruns reuse them; they append rows to JSON/CSV as they finish and skip rows already there.
Throughput is batch / p50, the statistic of the latency column next to it.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

# Seed of the random initialisation of configurations without a checkpoint (latency, counts, fidelity):
# the one export_bundle uses by default, so bundles scripts/export.py wrote without --weights are reused.
from .bundle import RANDOM_WEIGHTS_SEED

COUNT_FIELDS = ("variant", "width", "res", "input_h", "input_w", "params", "macs")
MODES = ("extractor", "runtime")
LATENCY_FIELDS = COUNT_FIELDS + (
    "runtime", "precision", "batch", "threads", "threads_used", "device", "mode",
    "latency_ms_p50", "latency_ms_p90", "latency_ms_mean", "latency_ms_min", "throughput_ips",
    "iterations", "weights", "peer", "runtime_version", "cpu", "cpu_flags", "cores", "gpu", "bundle")
# Fields that identify a measurement: a rerun skips rows whose key is already present (rows
# measured on another CPU do not count as done here).
KEY_FIELDS = ("variant", "width", "res", "runtime", "precision", "batch", "threads", "device", "mode", "cpu")
# Where scripts/export.py writes bundles by default: the grid reuses the ones holding the same network.
DEFAULT_BUNDLE_DIR = "bundles"
# export_bundle's default max_batch, which the grid's own exports get: a reused bundle must allow as much.
GRID_MAX_BATCH = 64
# Runtime name -> PyPI distributions whose version is recorded with its rows.
RUNTIME_PACKAGES = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu"), "openvino": ("openvino",),
                    "tensorrt": ("tensorrt",)}


def count_row(width: float, res: float, variant: str = "osnet") -> dict:
    """One row of the paper's Table 6: params and mult-adds of a configuration."""
    from ._counting import count_macs, count_params
    from .models import build_osnet, input_size

    model = build_osnet(width, variant)
    h, w = input_size(res)
    return {"variant": variant, "width": float(width), "res": float(res), "input_h": h, "input_w": w,
            "params": count_params(model), "macs": count_macs(model, (h, w))}


def count_grid(widths: Iterable[float], resolutions: Iterable[float],
               variants: Iterable[str] = ("osnet",)) -> list[dict]:
    """Rows for every variant x width x res, in that nesting order."""
    resolutions = list(resolutions)
    return [count_row(w, r, v) for v in variants for w in widths for r in resolutions]


def format_millions(n: int) -> str:
    return f"{n / 1e6:.1f}M"


# ----------------------------------------------------------------------------- timing

@dataclass(frozen=True)
class TimingBudget:
    """How long to time one row: ``warmup`` untimed calls, then calls until ``seconds`` have
    passed and at least ``min_iters`` were made, never more than ``max_iters``."""

    seconds: float = 0.75
    warmup: int = 3
    min_iters: int = 5
    max_iters: int = 500

    def __post_init__(self) -> None:
        if not self.seconds >= 0:
            raise ValueError(f"seconds must be >= 0, got {self.seconds!r}")
        for name in ("warmup", "min_iters", "max_iters"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative int, got {v!r}")
        if self.max_iters < max(1, self.min_iters):
            raise ValueError(f"max_iters ({self.max_iters}) must be >= min_iters ({self.min_iters}) and >= 1")


def time_calls(fn: Callable[[int], Any], budget: TimingBudget = TimingBudget()) -> np.ndarray:
    """Milliseconds of each timed ``fn(i)`` call (``i`` counts calls, so inputs can rotate)."""
    for i in range(budget.warmup):
        fn(i)
    times: list[float] = []
    start = time.perf_counter()
    i = budget.warmup
    while len(times) < budget.max_iters and (len(times) < max(1, budget.min_iters)
                                             or time.perf_counter() - start < budget.seconds):
        t0 = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t0) * 1e3)
        i += 1
    return np.asarray(times)


def latency_stats(times_ms: np.ndarray, batch: int) -> dict:
    """p50 / p90 / mean / min per call and images per second, batch / p50: the same statistic as
    the latency column printed beside it (a mean skewed by a few slow calls would contradict it)."""
    times_ms = np.asarray(times_ms, dtype=np.float64)
    if times_ms.size == 0:
        raise ValueError("no timings to summarise")
    p50 = float(np.percentile(times_ms, 50))
    return {"latency_ms_p50": round(p50, 4),
            "latency_ms_p90": round(float(np.percentile(times_ms, 90)), 4),
            "latency_ms_mean": round(float(times_ms.mean()), 4), "latency_ms_min": round(float(times_ms.min()), 4),
            "throughput_ips": round(batch * 1e3 / p50, 2) if p50 > 0 else float("inf"),
            "iterations": int(times_ms.size)}


def _batches_of(crops: Sequence[np.ndarray], batch: int, count: int = 4) -> list[list[np.ndarray]]:
    """Up to ``count`` different batches of ``batch`` crops, cycling through the pool (so the
    timed calls see varied crop sizes, as a camera does)."""
    if not crops:
        raise ValueError("no crops to time with")
    out = []
    for k in range(count):
        out.append([crops[(k * batch + j) % len(crops)] for j in range(batch)])
        if batch * (k + 1) >= len(crops):
            break
    return out


def measure_embedder(embedder: Any, crops: Sequence[np.ndarray], batches: Sequence[int] = (1,),
                     modes: Sequence[str] = MODES, budget: TimingBudget = TimingBudget()) -> list[dict]:
    """Time an Extractor (or anything with ``__call__``, ``model_input`` and ``infer_raw``,
    e.g. a :class:`osnet_edge.foreign.ForeignModel`) per batch size and mode.

    Returns partial rows: batch, mode and the latency statistics.
    """
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ValueError(f"modes must be among {MODES}, got {bad}")
    rows = []
    for batch in batches:
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch sizes must be positive ints, got {batch!r}")
        pool = _batches_of(crops, batch)
        for mode in modes:
            if mode == "extractor":
                times = time_calls(lambda i: embedder(pool[i % len(pool)]), budget)
            else:
                inputs = [embedder.model_input(b) for b in pool]
                times = time_calls(lambda i: embedder.infer_raw(inputs[i % len(inputs)]), budget)
            rows.append({"batch": batch, "mode": mode, **latency_stats(times, batch)})
    return rows


def runtime_version(runtime: str) -> str | None:
    from .machine import package_versions

    versions = package_versions(RUNTIME_PACKAGES.get(runtime, (runtime,)))
    return next(iter(versions.values()), None)


def default_threads() -> int:
    """Physical cores: what ONNX Runtime and OpenVINO pick themselves; recorded explicitly."""
    from .machine import physical_cores

    return physical_cores()


def weights_label(manifest: Mapping) -> str:
    """'random', 'adapted:<name>' or the checkpoint's file stem, for tables."""
    w = manifest.get("weights")
    if not w:
        return "adapted" if manifest.get("adaptation") else "random"
    stem = Path(w["source"]).stem
    return f"adapted:{stem}" if manifest.get("adaptation") else stem


def measure_bundle(bundle: Any, crops: Sequence[np.ndarray], batches: Sequence[int] = (1,),
                   modes: Sequence[str] = MODES, threads: int | None = None, device: str = "cpu",
                   runtime: str | None = None, budget: TimingBudget = TimingBudget(),
                   machine: Mapping | None = None) -> list[dict]:
    """Latency rows (see ``LATENCY_FIELDS``) of one bundle, one per batch size x mode.

    ``threads`` is the count asked for (part of a row's key); ``threads_used`` what the runtime
    reports it runs with (ONNX Runtime's intra-op threads, OpenVINO's INFERENCE_NUM_THREADS)."""
    from .extractor import Extractor
    from .machine import row_machine_fields
    from .runtimes.base import resolve_threads

    threads = resolve_threads(threads or default_threads())
    with Extractor(bundle, runtime=runtime, device=device, threads=threads, batch_size=max(batches)) as ext:
        m = ext.manifest["model"]
        base = {"variant": m["variant"], "width": float(m["width"]), "res": float(m["res"]),
                "input_h": ext.input_size[0], "input_w": ext.input_size[1], "params": m.get("params"),
                "macs": ext.bundle.mult_adds, "runtime": ext.runtime, "precision": ext.precision,
                "threads": threads, "threads_used": ext.threads, "device": device}
        extra = {"weights": weights_label(ext.manifest), "peer": False,
                 "runtime_version": runtime_version(ext.runtime), **row_machine_fields(machine),
                 "bundle": str(ext.bundle.path)}
        timed = measure_embedder(ext, crops, batches, modes, budget)
    return [{**base, **t, **extra} for t in timed]


# ----------------------------------------------------------------------------- row files

def row_key(row: Mapping) -> tuple:
    """What identifies a measurement (numbers normalised so JSON and CSV rows compare equal)."""
    out = []
    for k in KEY_FIELDS:
        v = row.get(k)
        if k in ("width", "res") and v not in (None, ""):
            v = round(float(v), 6)
        elif k in ("batch", "threads") and v not in (None, ""):
            v = int(v)
        out.append(None if v == "" else v)
    return tuple(out)


def _coerce(value: str) -> Any:
    """CSV cell -> int / float / bool / None / str."""
    if value == "":
        return None
    if value in ("True", "False"):
        return value == "True"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            continue
    return value


def read_rows(path: str | os.PathLike) -> list[dict]:
    """Rows from a profiler JSON list or CSV file (empty if the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            return [{k: _coerce(v) for k, v in r.items()} for r in csv.DictReader(f)]
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "[]")
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); move it away or pass another --json") from None
    if isinstance(data, dict) and isinstance(data.get("rows"), list):  # a report.json
        data = data["rows"]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ValueError(f"{path} is not a list of profiler rows")
    return data


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def rows_to_csv(rows: Sequence[Mapping]) -> str:
    """CSV text: the known fields in their order, then any extra fields rows carry."""
    import io

    fields = [f for f in LATENCY_FIELDS if any(f in r for r in rows)]
    fields += sorted({k for r in rows for k in r} - set(fields))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


class RowStore:
    """Rows persisted to JSON and/or CSV after every addition (atomic rewrite), resumable.

    Existing rows are loaded first (JSON preferred, else CSV), so ``has(key)`` tells a
    rerun what is already measured; an interrupted run loses at most the row in progress.
    """

    def __init__(self, json_path: str | os.PathLike | None = None, csv_path: str | os.PathLike | None = None,
                 resume: bool = True) -> None:
        self.json_path = Path(json_path) if json_path else None
        self.csv_path = Path(csv_path) if csv_path else None
        self.rows: list[dict] = []
        if resume:
            for p in (self.json_path, self.csv_path):
                if p is not None and p.exists():
                    self.rows = read_rows(p)
                    break
        self._keys = {row_key(r) for r in self.rows}

    def has(self, key: tuple) -> bool:
        return key in self._keys

    def add(self, row: dict) -> None:
        key = row_key(row)
        if key in self._keys:  # re-measured: replace the old row
            self.rows = [r for r in self.rows if row_key(r) != key]
        self.rows.append(row)
        self._keys.add(key)
        self.save()

    def save(self) -> None:
        if self.json_path is not None:
            _atomic_write(self.json_path, json.dumps(self.rows, indent=1))
        if self.csv_path is not None and self.rows:
            _atomic_write(self.csv_path, rows_to_csv(self.rows))


# ----------------------------------------------------------------------------- grids

@dataclass(frozen=True)
class GridPoint:
    """One model configuration on one runtime at one precision."""

    width: float
    res: float
    runtime: str
    precision: str
    variant: str = "osnet"

    @property
    def name(self) -> str:
        """The bundle name scripts/export.py gives this configuration (one naming scheme)."""
        from .bundle import default_bundle_name

        return default_bundle_name(self.variant, self.width, self.res, self.runtime, self.precision)

    @property
    def label(self) -> str:
        return f"x{self.width:g}@{self.res:g} {self.runtime}/{self.precision}"


def grid_points(widths: Iterable[float], resolutions: Iterable[float], runtimes: Iterable[str],
                precisions: Iterable[str], variants: Iterable[str] = ("osnet",)) -> list[GridPoint]:
    """Every variant x width x res x runtime x precision, in that nesting order."""
    widths, resolutions, runtimes, precisions = list(widths), list(resolutions), list(runtimes), list(precisions)
    for name, values in (("width", widths), ("res", resolutions), ("runtime", runtimes), ("precision", precisions)):
        if not values:
            raise ValueError(f"at least one {name} is needed")
    return [GridPoint(float(w), float(r), rt, p, v) for v in variants for w in widths for r in resolutions
            for rt in runtimes for p in precisions]


def file_tag(path: str | os.PathLike, length: int = 10) -> str:
    """Short content hash of a file (names cached bundles after the weights they hold)."""
    from .bundle import sha256_file

    return sha256_file(path)[:length]


def checkpoint_width(path: str | os.PathLike) -> float:
    """Width multiplier of a torchreid OSNet checkpoint, read from its stem (64 x width channels)."""
    from .models.weights import STEM_KEY, read_checkpoint, state_width

    width = state_width(read_checkpoint(path))
    if width is None:
        raise ValueError(f"{path}: no {STEM_KEY!r}; not a torchreid OSNet checkpoint")
    return width


class WeightsMap:
    """Which checkpoint a (width, res) uses: per width, overridden per (width, res).

    ``None`` means random weights (latency / counts / fidelity only, never accuracy).
    """

    def __init__(self, by_width: Mapping[float, str] | None = None,
                 by_width_res: Mapping[tuple[float, float], str] | None = None) -> None:
        self.by_width = {round(float(w), 6): str(p) for w, p in (by_width or {}).items()}
        self.by_width_res = {(round(float(w), 6), round(float(r), 6)): str(p)
                             for (w, r), p in (by_width_res or {}).items()}
        for p in [*self.by_width.values(), *self.by_width_res.values()]:
            if not Path(p).is_file():
                raise FileNotFoundError(f"checkpoint not found: {p}")

    def __call__(self, width: float, res: float) -> str | None:
        w, r = round(float(width), 6), round(float(res), 6)
        return self.by_width_res.get((w, r)) or self.by_width.get(w)

    def base(self, width: float) -> str | None:
        """The per-width checkpoint, ignoring per-resolution (adapted) overrides."""
        return self.by_width.get(round(float(width), 6))

    def is_override(self, width: float, res: float) -> bool:
        return (round(float(width), 6), round(float(res), 6)) in self.by_width_res


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
                from .calibration import CalibrationSet
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
    from .bundle import sha256_file
    from .preprocess import DEFAULT_INTERPOLATION

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
    calib = m.get("calibration") or {}
    folder = calibration.folder if calibration is not None else None
    return (folder is not None and calib.get("source") is not None
            and Path(calib["source"]).resolve() == folder.resolve()
            and calib.get("max_images") == calibration.max_images)


def _close(a: Any, b: float) -> bool:
    return a is not None and abs(float(a) - float(b)) < 1e-6


def _load_quietly(path: Path) -> Any:
    """load_bundle without the random-weights warning: the grid times random configurations on purpose."""
    from .bundle import load_bundle
    from .notices import RandomWeightsWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        return load_bundle(path)


def ensure_bundle(work_dir: str | os.PathLike, point: GridPoint, weights: str | None = None,
                  calibration: CalibrationProvider | None = None, on_step: Callable[[str], None] | None = None,
                  fuse_preprocess: bool = False, reuse_dirs: Sequence[str | os.PathLike] = (DEFAULT_BUNDLE_DIR,)) -> Any:
    """The grid point's bundle: one scripts/export.py already wrote in ``reuse_dirs`` under the
    same name when it holds the same network, else the cached one under ``work_dir``, exported
    (host side, torch) when missing or broken. Bundles in ``reuse_dirs`` are only read."""
    from .bundle import BundleError

    say = on_step or (lambda m: None)
    for folder in reuse_dirs:
        existing = Path(folder) / point.name
        if not (existing / "manifest.json").is_file():
            continue
        try:
            bundle = _load_quietly(existing)
        except BundleError as exc:
            say(f"not reusing {existing}: {exc}")
            continue
        if holds_network(bundle, point, weights, calibration, fuse_preprocess):
            say(f"reusing {existing}")
            return bundle
    out = bundle_dir_for(work_dir, point, weights, calibration)
    if (out / "manifest.json").is_file():
        try:
            return _load_quietly(out)
        except BundleError as exc:
            say(f"re-exporting {out.name}: {exc}")
    try:
        from .export import export_bundle
    except ImportError as exc:
        raise ImportError(f"exporting {point.label} needs torch and onnx ({exc}); pass ready bundles or "
                          "pip install 'osnet_edge[export]'") from None
    calib = None
    if point.precision == "int8":
        from .models import input_size
        calib = (calibration or CalibrationProvider(None))(input_size(point.res))
    from .notices import RandomWeightsWarning

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


@dataclass
class GridResult:
    rows: list[dict]
    skipped: list[dict] = field(default_factory=list)   # {"config", "reason"}
    bundles: dict[GridPoint, Any] = field(default_factory=dict)


def _unsupported(point: GridPoint, available: Sequence[str]) -> str | None:
    try:
        from .export import TARGET_PRECISIONS
    except ImportError:  # no torch: cached bundles can still be timed; their precision is checked on load
        from .bundle import PRECISIONS, TARGETS
        TARGET_PRECISIONS = {t: PRECISIONS for t in TARGETS}

    if point.runtime not in TARGET_PRECISIONS:
        return f"unknown runtime {point.runtime!r} (known: {', '.join(TARGET_PRECISIONS)})"
    if point.runtime not in available:
        return (f"runtime {point.runtime} is not available on this machine"
                + (" (needs an NVIDIA GPU and the tensorrt package)" if point.runtime == "tensorrt" else ""))
    if point.precision not in TARGET_PRECISIONS[point.runtime]:
        return f"{point.runtime} has no {point.precision} (supported: {', '.join(TARGET_PRECISIONS[point.runtime])})"
    if point.precision == "bf16":
        from .machine import describe_machine
        flags = describe_machine()["cpu_flags"]
        if not ({"avx512_bf16", "amx_bf16"} & set(flags)):
            return "bf16 needs a CPU with AVX512_BF16 or AMX (this one has neither)"
    return None


def profile_grid(points: Sequence[GridPoint], crops: Sequence[np.ndarray], work_dir: str | os.PathLike,
                 batches: Sequence[int] = (1,), modes: Sequence[str] = MODES, threads: int | None = None,
                 device: str = "cpu", weights: WeightsMap | None = None,
                 calibration: CalibrationProvider | None = None, budget: TimingBudget = TimingBudget(),
                 store: RowStore | None = None, progress: bool = True, keep_bundles: bool = False,
                 log: Callable[[str], None] | None = None,
                 reuse_dirs: Sequence[str | os.PathLike] = (DEFAULT_BUNDLE_DIR,)) -> GridResult:
    """Export (cached) and time every grid point; rows already in ``store`` are skipped.
    Bundles scripts/export.py wrote in ``reuse_dirs`` are timed instead when they hold the same network.

    Points that cannot run here (runtime missing, INT8 without calibration or without the
    quantization code, export failure) are reported in ``skipped`` with the reason, and the
    rest of the grid goes on.
    """
    from . import runtimes
    from .machine import describe_machine
    from .progress import progress_bar
    from .runtimes.base import resolve_threads

    store = store or RowStore()
    weights = weights or WeightsMap()
    threads = resolve_threads(threads or default_threads())  # as measure_bundle records it (row keys match)
    machine = describe_machine()
    available = runtimes.available()
    result = GridResult(rows=[])
    bar = progress_bar(points, desc="profile", unit="config", dynamic_ncols=True, enabled=progress)
    say = log or (lambda msg: print(msg, file=sys.stderr) if bar.disable else bar.write(msg))
    int8_failure: str | None = None
    for point in bar:
        bar.set_postfix_str(point.label)
        wanted = [{"variant": point.variant, "width": point.width, "res": point.res, "runtime": point.runtime,
                   "precision": point.precision, "batch": b, "threads": threads, "device": device, "mode": m,
                   "cpu": machine["cpu"]}
                  for b in batches for m in modes]
        if all(store.has(row_key(w)) for w in wanted) and not keep_bundles:
            result.rows += [r for r in store.rows if row_key(r) in {row_key(w) for w in wanted}]
            continue
        reason = _unsupported(point, available)
        if reason is None and point.precision == "int8" and int8_failure:
            reason = int8_failure
        if reason is not None:
            result.skipped.append({"config": point.label, "reason": reason})
            continue
        try:
            bundle = ensure_bundle(work_dir, point, weights(point.width, point.res), calibration,
                                   on_step=lambda msg, p=point: say(f"[{p.label}] {msg}"), reuse_dirs=reuse_dirs)
        except Int8Unavailable as exc:
            int8_failure = f"INT8 unavailable: {exc}"
            say(f"[{point.label}] skipped: {int8_failure}")
            result.skipped.append({"config": point.label, "reason": int8_failure})
            continue
        except Exception as exc:  # one broken configuration must not stop the grid
            msg = f"export failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            say(f"[{point.label}] {msg}")
            result.skipped.append({"config": point.label, "reason": msg})
            continue
        if keep_bundles:
            result.bundles[point] = bundle
        todo = [w for w in wanted if not store.has(row_key(w))]
        if not todo:
            result.rows += [r for r in store.rows if row_key(r) in {row_key(w) for w in wanted}]
            continue
        todo_batches = sorted({w["batch"] for w in todo})
        todo_modes = [m for m in modes if any(w["mode"] == m for w in todo)]
        try:
            rows = measure_bundle(bundle, crops, todo_batches, todo_modes, threads, device, point.runtime,
                                  budget, machine)
        except Exception as exc:
            msg = f"measurement failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            say(f"[{point.label}] {msg}")
            result.skipped.append({"config": point.label, "reason": msg})
            continue
        for row in rows:
            if not store.has(row_key(row)):
                store.add(row)
        keys = {row_key(w) for w in wanted}
        result.rows += [r for r in store.rows if row_key(r) in keys]
    bar.close()
    return result


def load_crop_folder(folder: str | os.PathLike, max_images: int = 64) -> list[np.ndarray]:
    """Up to ``max_images`` decodable images under ``folder`` (sorted, recursive) as BGR crops."""
    from .preprocess import read_image

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"crop folder not found: {folder}")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))
    crops = [img for img in (read_image(str(p)) for p in paths[:max_images * 2]) if img is not None][:max_images]
    if not crops:
        raise ValueError(f"no readable images in {folder}")
    return crops


def format_latency_table(rows: Sequence[Mapping]) -> str:
    """Fixed-width text table of latency rows (for the terminal)."""
    cols = ["config", "input", "mult-adds", "runtime", "prec", "threads", "batch", "mode", "p50 ms", "p90 ms",
            "img/s@p50"]
    lines = []
    for r in rows:
        cfg = r["variant"] if r.get("peer") else f"x{r['width']:g}@{r['res']:g}"
        macs = f"{r['macs'] / 1e6:.1f}M" if r.get("macs") else "-"
        threads = r.get("threads_used") or r.get("threads")
        lines.append([cfg, f"{r['input_h']}x{r['input_w']}", macs, r["runtime"], r["precision"],
                      str(threads) if threads else "-", str(r["batch"]), r["mode"], f"{r['latency_ms_p50']:.2f}",
                      f"{r['latency_ms_p90']:.2f}", f"{r['throughput_ips']:.1f}"])
    widths = [max(len(c), *(len(l[i]) for l in lines)) if lines else len(c) for i, c in enumerate(cols)]
    out = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    out += ["  ".join(v.rjust(w) for v, w in zip(l, widths)) for l in lines]
    return "\n".join(out)


# ----------------------------------------------------------------------------- command line
# Shared by scripts/profile.py and scripts/report.py (argparse only; no side effects).

def parse_weights_arg(text: str) -> tuple[float | None, str]:
    """'CKPT' or 'WIDTH=CKPT' -> (width or None, path)."""
    width, sep, path = text.partition("=")
    if not sep:
        return None, text
    try:
        return float(width), path
    except ValueError:
        raise ValueError(f"--weights {text!r}: expected CKPT or WIDTH=CKPT (e.g. 0.25=osnet_x0_25_msmt17.pth)") from None


def parse_weights_for_arg(text: str) -> tuple[float | None, float | None, str]:
    """'RES=CKPT', 'WIDTH@RES=CKPT' or just 'CKPT' (resolution then read from its adaptation
    record) -> (width or None, res or None, path)."""
    spec, sep, path = text.partition("=")
    if not sep:
        return None, None, text
    width, at, res = spec.rpartition("@")
    try:
        return (float(width) if at else None), float(res), path
    except ValueError:
        raise ValueError(f"--weights-for {text!r}: expected RES=CKPT, WIDTH@RES=CKPT or an adapted CKPT "
                         "(e.g. 0.5=adapted_r05.pth)") from None


def adapted_resolution(path: str | os.PathLike) -> tuple[float, float]:
    """(width, res) recorded in an adapted checkpoint's 'adaptation' entry (osnet_edge.adapt)."""
    from .models.weights import read_checkpoint_meta

    record = read_checkpoint_meta(path).get("adaptation") or {}
    if "res" not in record:
        raise ValueError(f"{path} has no adaptation record saying its resolution: use --weights-for RES={path}")
    width = record.get("width")
    return (float(width) if width is not None else checkpoint_width(path)), float(record["res"])


def default_checkpoints() -> dict[float, str]:
    """The trained torchreid checkpoints in ../shared/data, when present: x0.25 trained on
    Market-1501 when its benchmark data is there (the paper's Table 6 setting), else x0.25 MSMT17;
    x0.5 MSMT17."""
    from .data import protocol_available, shared_data_dir

    root = shared_data_dir()
    if root is None:
        return {}
    folder = root / "weights" / "torchreid"
    market = protocol_available("market1501", root) and (folder / "osnet_x0_25_market1501.pth").is_file()
    candidates = {0.25: folder / ("osnet_x0_25_market1501.pth" if market else "osnet_x0_25_msmt17.pth"),
                  0.5: folder / "osnet_x0_5_msmt17.pth"}
    return {w: str(p) for w, p in candidates.items() if p.is_file()}


def default_calibration_dir() -> str | None:
    """The agreed calibration crops in ../shared/data, when present: Market-1501's
    bounding_box_train (its identities are disjoint from the test set), else cuhk03/detected/train."""
    from .data import shared_data_dir

    root = shared_data_dir()
    if root is None:
        return None
    for folder in (root / "market1501" / "bounding_box_train", root / "cuhk03" / "detected" / "train"):
        if folder.is_dir():
            return str(folder)
    return None


def weights_map_from_args(weights: Sequence[str] | None, weights_for: Sequence[str] | None) -> WeightsMap:
    """--weights / --weights-for values (widths read from the checkpoints when not given).

    ``weights=None`` means the default (the shared x0.25 checkpoint when present); the
    single value 'none' means random weights everywhere.
    """
    by_width: dict[float, str] = {}
    if weights is None:
        by_width = default_checkpoints()
    else:
        for text in weights:
            if text.lower() == "none":
                continue
            width, path = parse_weights_arg(text)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"--weights: checkpoint not found: {path}")
            by_width[width if width is not None else checkpoint_width(path)] = path
    by_width_res = {}
    for text in weights_for or []:
        width, res, path = parse_weights_for_arg(text)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--weights-for: checkpoint not found: {path}")
        if res is None:
            width, res = adapted_resolution(path)
        by_width_res[(width if width is not None else checkpoint_width(path), res)] = path
    return WeightsMap(by_width, by_width_res)


def add_grid_arguments(p: Any, budget_s: float = 0.75, widths: Sequence[float] = (1.0, 0.75, 0.5, 0.25),
                       resolutions: Sequence[float] = (1.0, 0.75, 0.5, 0.25),
                       runtimes: Sequence[str] | None = ("onnxruntime",),
                       precisions: Sequence[str] = ("fp32",)) -> None:
    """Grid, timing, weights and calibration options (argparse) shared by profile.py and report.py.

    ``runtimes=None``: default to every device runtime available on the machine."""
    def show(values):
        return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)

    p.add_argument("--width", type=float, nargs="+", default=list(widths),
                   help=f"width multipliers (default {show(widths)})")
    p.add_argument("--res", type=float, nargs="+", default=list(resolutions),
                   help=f"resolution multipliers on 256x128 (default {show(resolutions)})")
    p.add_argument("--variant", nargs="+", choices=["osnet", "ibn", "ain"], default=["osnet"],
                   help="architectures (default osnet)")
    p.add_argument("--runtime", nargs="+", default=list(runtimes) if runtimes else None,
                   choices=["onnxruntime", "openvino", "tensorrt"],
                   help="runtimes to time (default " + (show(runtimes) if runtimes else "every one available here") + ")")
    p.add_argument("--precision", nargs="+", default=list(precisions), choices=["fp32", "fp16", "bf16", "int8"],
                   help=f"precisions (default {show(precisions)}); int8 needs calibration crops (--calib)")
    p.add_argument("--batch", type=int, nargs="+", default=[1], help="batch sizes (default 1)")
    p.add_argument("--mode", nargs="+", choices=list(MODES), default=list(MODES),
                   help="extractor: crops in, embeddings out (preprocessing included); runtime: the bare "
                        "inference call on a prepared batch (default both)")
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: physical cores)")
    p.add_argument("--device", default="cpu", help="runtime device: cpu (default), cuda (onnxruntime), GPU (openvino)")
    p.add_argument("--budget-s", type=float, default=budget_s, metavar="S",
                   help=f"timed seconds per row after warm-up (default {budget_s:g})")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls before timing (default 3)")
    p.add_argument("--max-iters", type=int, default=500, help="most timed calls per row (default 500)")
    p.add_argument("--min-iters", type=int, default=5, help="fewest timed calls per row (default 5)")
    p.add_argument("--work", default=os.path.join("runs", "profile"), metavar="DIR",
                   help="cache of exported bundles, reused by reruns (default runs/profile); a bundle "
                        "scripts/export.py wrote under bundles/ with the same name and network is used instead")
    p.add_argument("--weights", nargs="+", metavar="[WIDTH=]CKPT",
                   help="torchreid checkpoints; the width is read from the checkpoint unless given. Default: "
                        "../shared/data x0.25 MSMT17 for width 0.25 when present; other widths get random "
                        "weights (latency/counts/fidelity only). 'none': random weights everywhere")
    p.add_argument("--weights-for", nargs="+", metavar="[[WIDTH@]RES=]CKPT",
                   help="checkpoint for one resolution, e.g. a resolution-adapted one: 0.5=adapted_r05.pth (an "
                        "osnet_edge.adapt checkpoint alone: its recorded width/resolution). The report then shows "
                        "accuracy at that resolution before (per-width weights) and after adaptation")
    p.add_argument("--calib", metavar="DIR", default=None,
                   help="person crops to calibrate INT8 (default ../shared/data/cuhk03/detected/train when "
                        "present). Never your evaluation images")
    p.add_argument("--calib-size", type=int, default=300, metavar="N", help="calibration images (default 300)")
    p.add_argument("--crops", metavar="DIR", help="images to time with (default: synthetic person-like crops)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it is only drawn on a terminal)")


def budget_from_args(args: Any) -> TimingBudget:
    return TimingBudget(seconds=args.budget_s, warmup=args.warmup, min_iters=args.min_iters,
                        max_iters=args.max_iters)


def calibration_from_args(args: Any) -> CalibrationProvider:
    """--calib (default: the agreed calibration crops when present); says so when int8 cannot run."""
    folder = args.calib or default_calibration_dir()
    if "int8" in args.precision and folder is None:
        print("note: no --calib folder and ../shared/data/cuhk03/detected/train is absent: int8 rows are "
              "skipped (INT8 ranges must come from real person crops)", file=sys.stderr)
    return CalibrationProvider(folder, args.calib_size)


def crops_from_args(args: Any, default: Sequence[np.ndarray] | None = None,
                    default_source: str = "") -> tuple[list[np.ndarray], str]:
    """Timing inputs: --crops DIR, else ``default``, else 64 synthetic crops; and where they came from."""
    if args.crops:
        return load_crop_folder(args.crops, 64), args.crops
    if default:
        return list(default), default_source
    from .samples import synthetic_crops

    return synthetic_crops(64, seed=0), "synthetic person-like crops (osnet_edge.samples)"
