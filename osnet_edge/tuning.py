"""Choosing a bundle's variant on the device, not on the host.

Whether INT8 beats FP32 flips with the CPU (measured: LiteRT INT8 x0.25 1.19-1.25x faster than FP32 on an
AMD EPYC with AVX-512 VNNI, 0.57-0.67x on an Intel Xeon with AMX), so a bundle may carry several variants
of one runtime (``Bundle.variant_names``, e.g. fp32 + int8) and the camera times them itself: :func:`tune`
keeps the fastest variant that meets the bundle's fidelity target and records the choice beside the bundle
(``tuning/<machine key>.json``; a cache folder when the bundle is read-only), keyed by CPU model and flags,
architecture, runtime and its version and thread count, as the TensorRT engine cache keys engines. A copied
bundle on another CPU finds no record for its key and is tuned again. Device side: numpy + the runtime.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .bundle import Bundle, BundleError, load_bundle
from .machine import _cpuinfo

TUNING_SUBDIR = "tuning"
TUNING_CACHE_ENV = "OSNET_EDGE_TUNING_CACHE"
RECORD_FORMAT = "osnet-edge-tuning"
# The cosine target a variant must meet when the bundle names none (mean / 1st percentile on held-out
# crops: the INT8 targets under which Market-1501 rank-1 moved <= 0.2 point, quantize's SEARCH_COSINE).
DEFAULT_FIDELITY_TARGET = {"cosine_mean": 0.998, "cosine_p1": 0.995}
# Runtime -> the distribution whose version keys the record.
RUNTIME_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "litert": "ai-edge-litert",
                    "tensorrt": "tensorrt", "rknn": "rknn-toolkit-lite2", "rknn-sim": "rknn-toolkit2"}


def runtime_version(runtime: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(RUNTIME_PACKAGES.get(runtime, runtime))
    except PackageNotFoundError:
        return "unknown"


def machine_key(runtime: str, threads: int | None) -> tuple[str, dict]:
    """(short key, what it hashes): the facts a variant's speed depends on."""
    model, flags = _cpuinfo()  # every flag, not machine's summary subset: a kernel choice may hinge on any
    facts = {"cpu": model, "cpu_flags": sorted(flags), "arch": platform.machine(), "runtime": runtime,
             "runtime_version": runtime_version(runtime), "threads": threads}
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]
    return f"{runtime}-{digest}", facts


def _fallback_dir(bundle: Bundle) -> Path:
    root = Path(os.environ.get(TUNING_CACHE_ENV) or Path.home() / ".cache" / "osnet_edge" / "tuning")
    ident = hashlib.sha256(json.dumps(bundle.manifest["files"], sort_keys=True).encode()).hexdigest()[:16]
    return root / ident


def record_path(bundle: Bundle, key: str, for_writing: bool = False) -> Path:
    """Where the record for ``key`` lives: ``<bundle>/tuning/`` when that is (or can be made) writable,
    else a per-bundle folder under ``$OSNET_EDGE_TUNING_CACHE`` (default ~/.cache/osnet_edge/tuning)."""
    beside = bundle.path / TUNING_SUBDIR / f"{key}.json"
    if not for_writing:
        return beside if beside.is_file() else _fallback_dir(bundle) / f"{key}.json"
    try:
        beside.parent.mkdir(exist_ok=True)
        if os.access(beside.parent, os.W_OK):
            return beside
    except OSError:
        pass
    return _fallback_dir(bundle) / f"{key}.json"


def read_record(bundle: Bundle, runtime: str | None = None, threads: int | None = None) -> dict | None:
    """This machine's tuning record for ``bundle`` (None when it was never tuned here)."""
    key, _ = machine_key(runtime or bundle.runtime, threads)
    path = record_path(bundle, key)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("format") != RECORD_FORMAT or record.get("chosen") not in bundle.variant_names:
        return None
    return record


def records_here(bundle: Bundle) -> list[dict]:
    """Every tuning record of ``bundle`` made on this machine (any runtime or thread count): what
    ``osnet-edge info`` shows. A record counts when its CPU, flags, architecture and runtime version match."""
    out = []
    for folder in (bundle.path / TUNING_SUBDIR, _fallback_dir(bundle)):
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            facts = record.get("machine") or {}
            _, here = machine_key(facts.get("runtime", bundle.runtime), facts.get("threads"))
            if record.get("format") == RECORD_FORMAT and facts == here and record.get("chosen") in bundle.variant_names:
                out.append(record)
    return out


def fidelity_target(bundle: Bundle) -> dict:
    return dict(bundle.manifest.get("fidelity_target") or DEFAULT_FIDELITY_TARGET)


def variant_fidelity(bundle: Bundle, name: str) -> dict | None:
    """The held-out fidelity recorded for variant ``name`` at export (None: the fp32 reference itself)."""
    view = bundle.variant(name)
    if view.precision == "fp32":
        return None
    q = view.manifest.get("quantization") or {}
    return q.get("fidelity") or view.manifest.get("fidelity")


def meets_target(fidelity: dict | None, target: dict) -> bool:
    """fp32 (no record: it is the reference) meets any target; others by their measured cosine."""
    if fidelity is None:
        return True
    return (fidelity.get("cosine_mean", -1) >= target["cosine_mean"]
            and fidelity.get("cosine_p1", -1) >= target.get("cosine_p1", -1))


def _time_variants(extractors: dict[str, Any], crops: list[np.ndarray], rounds: int,
                   budget_s: float) -> dict[str, list[float]]:
    """Median ms per call of each extractor on ``crops``, in interleaved rounds (load hits all alike)."""
    times: dict[str, list[float]] = {name: [] for name in extractors}
    for ext in extractors.values():
        ext(crops)  # warm-up: first-call allocations and kernel selection
    for _ in range(rounds):
        for name, ext in extractors.items():
            samples, t_end = [], time.perf_counter() + budget_s / (rounds * len(extractors))
            while len(samples) < 3 or time.perf_counter() < t_end:
                t0 = time.perf_counter()
                ext(crops)
                samples.append((time.perf_counter() - t0) * 1e3)
            times[name].append(float(np.median(samples)))
    return times


def tune(bundle: str | os.PathLike | Bundle, open_extractor: Callable[[Bundle, str], Any], runtime: str | None = None,
         threads: int | None = None, batch: int = 1, rounds: int = 3, budget_s: float = 6.0,
         write: bool = True) -> dict:
    """Time every variant of ``bundle`` here (``batch`` crops per call, interleaved rounds), choose the
    fastest that meets the bundle's fidelity target, and (``write``) record the choice for this machine.
    ``open_extractor(bundle, variant_name)`` opens an Extractor on one variant (the Extractor passes
    itself, so this module does not import it). Returns the record: candidates with their ms and
    fidelity, the chosen variant, the machine facts."""
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    runtime = runtime or bundle.runtime
    h, w = bundle.input_size
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(batch)]
    target = fidelity_target(bundle)
    extractors = {name: open_extractor(bundle, name) for name in bundle.variant_names}
    try:
        times = _time_variants(extractors, crops, rounds, budget_s)
    finally:
        for ext in extractors.values():
            ext.close()
    rows = []
    for name in bundle.variant_names:
        fid = variant_fidelity(bundle, name)
        rows.append({"variant": name, "precision": bundle.variant(name).precision,
                     "ms": round(float(np.median(times[name])), 4), "ms_rounds": [round(t, 4) for t in times[name]],
                     "cosine_mean": None if fid is None else fid.get("cosine_mean"),
                     "cosine_p1": None if fid is None else fid.get("cosine_p1"),
                     "meets_target": meets_target(fid, target)})
    eligible = [r for r in rows if r["meets_target"]] or rows[:1]
    chosen = min(eligible, key=lambda r: r["ms"])["variant"]
    key, facts = machine_key(runtime, threads)
    record = {"format": RECORD_FORMAT, "key": key, "machine": facts, "bundle": str(bundle.path),
              "batch": batch, "rounds": rounds, "fidelity_target": target, "candidates": rows, "chosen": chosen,
              "rule": "fastest variant at this batch on this machine among those meeting the fidelity target "
                      "(held-out cosine recorded at export; fp32 is the reference)",
              "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    if write:
        record["path"] = str(_write_record(record_path(bundle, key, for_writing=True), record))
    return record


def _write_record(path: Path, record: dict) -> Path:
    """Atomic write (temp file + rename): a reader never sees half a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=1)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def choose_variant(bundle: Bundle, requested: str | None, runtime: str | None, threads: int | None,
                   open_extractor: Callable[[Bundle, str], Any] | None = None) -> str:
    """The variant an Extractor loads: ``requested`` by name; ``None``/"auto": this machine's tuned choice
    when recorded, else the primary; "tune": tune now (with ``open_extractor``) when no record exists."""
    names = bundle.variant_names
    if requested not in (None, "auto", "tune"):
        if requested not in names:
            raise BundleError(f"bundle {bundle.path} has no variant {requested!r} (variants: {', '.join(names)})")
        return requested
    if len(names) == 1:
        return names[0]
    record = read_record(bundle, runtime, threads)
    if record is not None:
        return record["chosen"]
    if requested == "tune":
        if open_extractor is None:
            raise ValueError("variant='tune' needs open_extractor")
        return tune(bundle, open_extractor, runtime=runtime, threads=threads)["chosen"]
    return names[0]


__all__ = ["tune", "choose_variant", "read_record", "records_here", "machine_key", "record_path", "fidelity_target",
           "variant_fidelity", "meets_target", "DEFAULT_FIDELITY_TARGET", "TUNING_CACHE_ENV"]
