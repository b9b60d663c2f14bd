"""Profiling a grid: export (or reuse) and time every configuration, skipping what cannot run here
with the reason; the terminal table of the rows."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .bundles import DEFAULT_BUNDLE_DIR, CalibrationProvider, Int8Unavailable, ensure_bundle, load_quietly
from .points import GridPoint, WeightsMap
from .rows import RowStore, bundle_row_key, row_key
from .timing import MODES, TimingBudget, default_threads, measure_bundle


@dataclass
class GridResult:
    rows: list[dict]
    skipped: list[dict] = field(default_factory=list)   # {"config", "reason"}
    bundles: dict[GridPoint, Any] = field(default_factory=dict)


def _unsupported(point: GridPoint, available: Sequence[str]) -> str | None:
    try:
        from ..export import TARGET_PRECISIONS
    except ImportError:  # no torch: cached bundles can still be timed; their precision is checked on load
        from ..bundle import PRECISIONS, TARGETS
        TARGET_PRECISIONS = {t: PRECISIONS for t in TARGETS}

    if point.runtime not in TARGET_PRECISIONS:
        return f"unknown runtime {point.runtime!r} (known: {', '.join(TARGET_PRECISIONS)})"
    if point.runtime not in available:
        return _runtime_missing(point.runtime, available)
    if point.precision not in TARGET_PRECISIONS[point.runtime]:
        return f"{point.runtime} has no {point.precision} (supported: {', '.join(TARGET_PRECISIONS[point.runtime])})"
    if point.precision == "bf16":
        from ..machine import describe_machine
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
    Bundles osnet-edge export wrote in ``reuse_dirs`` are timed instead when they hold the same network.

    Points that cannot run here (runtime missing, INT8 without calibration or without the
    quantization code, export failure) are reported in ``skipped`` with the reason, and the
    rest of the grid goes on.
    """
    from .. import runtimes
    from ..machine import describe_machine
    from ..progress import progress_bar
    from ..runtimes.base import resolve_threads

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


def profile_bundles(paths: Sequence[str | os.PathLike], crops: Sequence[np.ndarray], batches: Sequence[int] = (1,),
                    modes: Sequence[str] = MODES, threads: int | None = None, device: str = "cpu",
                    runtime: str | None = None, budget: TimingBudget = TimingBudget(),
                    store: RowStore | None = None) -> GridResult:
    """Time bundles that already exist (``osnet-edge export`` wrote them, perhaps on another machine): the
    camera's question "how fast is this bundle here?". Device side only: no torch, no export. Each bundle runs
    on its own runtime unless ``runtime`` is given. A bundle that cannot load or run here is skipped with the
    reason; rows already in ``store`` for the same bundle folder and machine are kept, not re-measured."""
    from ..bundle import BundleError
    from ..machine import describe_machine
    from ..runtimes.base import resolve_threads

    store = store or RowStore(key_of=bundle_row_key)
    threads = resolve_threads(threads or default_threads())
    machine = describe_machine()
    result = GridResult(rows=[])
    for given in paths:
        folder = Path(given).resolve()
        try:
            bundle = load_quietly(folder)
        except (BundleError, OSError, ValueError) as exc:
            result.skipped.append({"config": str(given), "reason": f"not a loadable bundle: {exc}"})
            continue
        name = runtime or bundle.runtime
        reason = _runtime_missing(name)
        if reason is not None:
            result.skipped.append({"config": str(given), "reason": reason})
            continue
        m = bundle.manifest["model"]
        wanted = {bundle_row_key({"variant": m["variant"], "width": m["width"], "res": m["res"], "runtime": name,
                                  "precision": bundle.precision, "batch": b, "threads": threads, "device": device,
                                  "mode": mode, "cpu": machine["cpu"], "bundle": str(folder)})
                  for b in batches for mode in modes}
        if not wanted <= {store.key_of(r) for r in store.rows}:
            try:
                rows = measure_bundle(folder, crops, batches, modes, threads, device, runtime, budget, machine)
            except Exception as exc:  # one bundle that cannot run here must not stop the others
                first = str(exc).splitlines()[0] if str(exc) else ""
                result.skipped.append({"config": str(given), "reason": f"{type(exc).__name__}: {first}"})
                continue
            for row in rows:
                store.add(row)
        result.rows += [r for r in store.rows if store.key_of(r) in wanted]
    return result


def _runtime_missing(name: str, available: Sequence[str] | None = None) -> str | None:
    """Why runtime ``name`` cannot run here (with the extra that installs it), or None."""
    from .. import runtimes

    if name in (runtimes.available() if available is None else available):
        return None
    hint = " (needs an NVIDIA GPU and the tensorrt package)" if name == "tensorrt" else ""
    return f"runtime {name} is not available on this machine{hint}: pip install 'osnet_edge[{name}]'"


def load_crop_folder(folder: str | os.PathLike, max_images: int = 64) -> list[np.ndarray]:
    """Up to ``max_images`` decodable images under ``folder`` (sorted, recursive) as BGR crops."""
    from ..preprocess import read_image

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
