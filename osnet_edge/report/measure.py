"""Running a report: time the grid, then accuracy, accuracy before adaptation, fidelity to FP32,
compatibility and foreign peers, each a step of :func:`run_report`."""
from __future__ import annotations

import datetime as _dt
import hashlib
import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..verify import agreement
from .compatibility import compatibility_matrices
from .evaluation import (EvalSet, FeatureCache, available_protocols, bundle_identity, embed, evaluate_embedder,
                         foreign_identity, protocol_set)
from .results import ReportData, accuracy_entry, point_base


def run_report(points: Sequence[Any], crops: Sequence[np.ndarray], work_dir: str | os.PathLike,
               weights: Any = None, calibration: Any = None, budget: Any = None, batches: Sequence[int] = (1,),
               modes: Sequence[str] = ("extractor", "runtime"), threads: int | None = None, device: str = "cpu",
               data_root: str | os.PathLike | None = None, protocols: Sequence[str] | None = None,
               peers: bool = True, store: Any = None, progress: bool = True, fidelity_images: int = 128,
               eval_batch: int = 64, settings: Mapping | None = None,
               log: Callable[[str], None] | None = None) -> ReportData:
    """Measure a grid and everything around it (accuracy, fidelity, compatibility, peers).

    ``data_root``: the shared data folder (protocols and peers read from it); ``protocols``
    default to those available there. Latency rows go through ``store`` (resumable),
    bundles and embeddings are cached under ``work_dir``.
    """
    from ..machine import describe_machine
    from ..profiler import RowStore, TimingBudget, WeightsMap, default_threads, profile_grid

    say = log or (lambda m: print(m, file=sys.stderr))
    weights = weights or WeightsMap()
    budget = budget or TimingBudget()
    threads = threads or default_threads()
    store = store or RowStore()
    cache = FeatureCache(Path(work_dir) / "features")
    machine = describe_machine()
    protocols = list(protocols) if protocols is not None else available_protocols(data_root)
    evalsets = [protocol_set(p, data_root) for p in protocols]

    load_before = _load_average()
    grid = profile_grid(points, crops, work_dir, batches, modes, threads, device, weights, calibration, budget,
                        store, progress, keep_bundles=True, log=log)
    data = ReportData(machine=machine, rows=list(grid.rows), skipped=list(grid.skipped),
                      settings={"created": _dt.datetime.now().isoformat(timespec="seconds"), "threads": threads,
                                "budget_s": budget.seconds, "warmup": budget.warmup, "device": device,
                                "batches": list(batches), "protocols": protocols,
                                "load_average": load_before, **(settings or {})})
    data.settings["load_average_after_timing"] = _load_average()
    bundles: dict[Any, Any] = grid.bundles
    extractors = _Extractors(bundles, device, threads, eval_batch)
    try:
        trained = [p for p in bundles if weights(p.width, p.res)]
        features = _measure_accuracy(data, trained, evalsets, extractors, cache, eval_batch, progress, say)
        if evalsets:
            _measure_accuracy_before_adaptation(data, trained, evalsets, weights, work_dir, calibration, threads,
                                                cache, eval_batch, progress)
        models: dict[tuple, list[Any]] = {}
        for p in bundles:
            models.setdefault((p.variant, p.width, p.res), []).append(p)
        fid_crops = _fidelity_crops(data, evalsets, crops, fidelity_images)
        fid_feats = _measure_fidelity(data, models, fid_crops, extractors, cache, eval_batch, progress)
        data.compat += compatibility_matrices(models, bundles, evalsets, features, fid_feats, len(fid_crops), weights)
    finally:
        extractors.close()

    if peers and data_root is not None:
        _run_peers(data, data_root, crops, evalsets, batches, modes, threads, budget, store, cache, eval_batch,
                   progress, say)
    if not evalsets:
        data.notes.append("No labelled data was available: accuracy needs labelled crops (cuhk03-val / "
                          "cuhk01-test in ../shared/data, or a Market-1501 folder) and trained weights.")
    elif not trained:
        data.notes.append("No configuration had trained weights (pass --weights): accuracy is not shown.")
    return data


class _Extractors:
    """One Extractor per grid point's bundle, opened on first use, all closed at the end."""

    def __init__(self, bundles: Mapping[Any, Any], device: str, threads: int, batch_size: int) -> None:
        self.bundles, self.device, self.threads, self.batch_size = bundles, device, threads, batch_size
        self.open: dict[Any, Any] = {}

    def __call__(self, point: Any) -> Any:
        from ..extractor import Extractor

        if point not in self.open:
            self.open[point] = Extractor(self.bundles[point], runtime=point.runtime, device=self.device,
                                         threads=self.threads, batch_size=self.batch_size)
        return self.open[point]

    def close(self) -> None:
        for ext in self.open.values():
            ext.close()


def _measure_accuracy(data: ReportData, trained: Sequence[Any], evalsets: Sequence[EvalSet], extractors: _Extractors,
                      cache: FeatureCache, eval_batch: int, progress: bool,
                      say: Callable[[str], None]) -> dict[tuple, tuple[np.ndarray, np.ndarray]]:
    """Rank-1 / mAP of every trained configuration on every protocol; their (query, gallery) features."""
    from ..profiler import weights_label
    from ..progress import progress_bar

    for es in evalsets:
        say(f"loading {es.name}: {len(es.query)} query + {len(es.gallery)} gallery images")
        es.images()
    features: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    jobs = [(p, es) for p in trained for es in evalsets]
    for point, es in progress_bar(jobs, enabled=progress and bool(jobs), desc="accuracy", unit="eval"):
        bundle = extractors.bundles[point]
        metrics, qf, gf = evaluate_embedder(extractors(point), es, eval_batch, cache,
                                            bundle_identity(bundle, point.runtime), progress=progress)
        features[(point, es.name)] = (qf, gf)
        data.accuracy.append(accuracy_entry(point_base(point, None, weights_label(bundle.manifest)), es.name, metrics))
    return features


def _measure_accuracy_before_adaptation(data: ReportData, trained: Sequence[Any], evalsets: Sequence[EvalSet],
                                        weights: Any, work_dir: str | os.PathLike, calibration: Any, threads: int,
                                        cache: FeatureCache, eval_batch: int, progress: bool) -> None:
    """The base checkpoint at each resolution that has an adapted one (the 'before' of adaptation)."""
    from ..extractor import Extractor
    from ..profiler import GridPoint, ensure_bundle

    seen = set()
    for point in trained:
        key = (point.variant, point.width, point.res)
        base = weights.base(point.width)
        if key in seen or not weights.is_override(point.width, point.res) or not base:
            continue
        seen.add(key)
        ref_point = GridPoint(point.width, point.res, "onnxruntime", "fp32", point.variant)
        try:
            b = ensure_bundle(work_dir, ref_point, base, calibration)
        except Exception as exc:
            data.skipped.append({"config": f"{ref_point.label} (before adaptation)", "reason": str(exc)})
            continue
        with Extractor(b, threads=threads, batch_size=eval_batch) as ext:
            for es in evalsets:
                metrics, _, _ = evaluate_embedder(ext, es, eval_batch, cache, bundle_identity(b), progress=progress)
                data.accuracy.append(accuracy_entry(point_base(ref_point, base), es.name, metrics,
                                                    role="before-adaptation"))


def _fidelity_crops(data: ReportData, evalsets: Sequence[EvalSet], crops: Sequence[np.ndarray],
                    fidelity_images: int) -> list[np.ndarray]:
    """The images fidelity is measured on: the first protocol's queries, else the timing crops."""
    if evalsets:
        q, _ = evalsets[0].images()
        fid_crops, fid_source = q[:fidelity_images], f"{min(fidelity_images, len(q))} {evalsets[0].name} query images"
    else:
        fid_crops, fid_source = list(crops)[:fidelity_images], data.settings.get("crops", "timing crops")
    data.settings["fidelity_images"] = fid_source
    return fid_crops


def _measure_fidelity(data: ReportData, models: Mapping[tuple, Sequence[Any]], fid_crops: Sequence[np.ndarray],
                      extractors: _Extractors, cache: FeatureCache, eval_batch: int,
                      progress: bool) -> dict[Any, np.ndarray]:
    """Cosine of every setting against the same model's FP32 bundle (ONNX Runtime's first); the features."""
    from ..profiler import weights_label
    from ..progress import progress_bar

    bundles = extractors.bundles
    fid_feats: dict[Any, np.ndarray] = {}
    for key, members in progress_bar(list(models.items()), enabled=progress, desc="fidelity", unit="model"):
        refs = [p for p in members if p.precision == "fp32"]
        if not refs:
            continue
        ref = sorted(refs, key=lambda p: p.runtime != "onnxruntime")[0]
        for p in members:
            fid_feats[p] = cache.get_or_compute(
                f"fid_{bundle_identity(bundles[p], p.runtime)}_{len(fid_crops)}_{_crops_digest(fid_crops)}",
                lambda p=p: embed(extractors(p), fid_crops, eval_batch, progress=False))
        for p in members:
            if p is ref:
                continue
            ag = agreement(fid_feats[p], fid_feats[ref])
            data.fidelity.append({**point_base(p, None, weights_label(bundles[p].manifest)),
                                  "reference": f"{ref.runtime}/fp32", **ag})
    return fid_feats


def _load_average() -> float | None:
    """1-minute system load average (other processes competing for the cores), where the OS has it."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _crops_digest(crops: Sequence[np.ndarray]) -> str:
    h = hashlib.sha256()
    for c in crops[:16]:
        h.update(np.ascontiguousarray(c[::7, ::7]).tobytes())
        h.update(str(c.shape).encode())
    return h.hexdigest()[:10]


def _peer_precision(name: str) -> str:
    return "int8" if "int8" in name.lower() else "fp16" if "fp16" in name.lower() else "fp32"


def _run_peers(data: ReportData, data_root, crops, evalsets, batches, modes, threads, budget, store, cache,
               eval_batch, progress, say) -> None:
    from ..foreign import ForeignModel, known_peers
    from ..machine import row_machine_fields
    from ..profiler import measure_embedder, row_key, runtime_version

    for name, kwargs in known_peers(data_root).items():
        try:
            model = ForeignModel(threads=threads, **kwargs)
        except Exception as exc:
            data.skipped.append({"config": f"peer {name}", "reason": f"could not load: {exc}"})
            continue
        precision = _peer_precision(name)
        base = {"variant": name, "width": None, "res": None, "input_h": model.input_size[0],
                "input_w": model.input_size[1], "params": None, "macs": None, "runtime": model.runtime,
                "precision": precision, "threads": threads, "device": "cpu"}
        extra = {"weights": Path(kwargs["path"]).name, "peer": True, "runtime_version": runtime_version(model.runtime),
                 **row_machine_fields(data.machine), "bundle": kwargs["path"]}
        wanted = [{**base, "cpu": data.machine.get("cpu"), "batch": b, "mode": m} for b in batches for m in modes]
        todo = [w for w in wanted if not store.has(row_key(w))]
        try:
            if todo:
                say(f"timing peer {name}")
                for t in measure_embedder(model, crops, sorted({w["batch"] for w in todo}),
                                          [m for m in modes if any(w["mode"] == m for w in todo)], budget):
                    row = {**base, **t, **extra}
                    if not store.has(row_key(row)):
                        store.add(row)
            keys = {row_key(w) for w in wanted}
            data.rows += [r for r in store.rows if row_key(r) in keys]
            for es in evalsets:
                metrics, _, _ = evaluate_embedder(model, es, eval_batch, cache, foreign_identity(model), progress)
                data.accuracy.append(accuracy_entry({**base, **extra}, es.name, metrics))
        except Exception as exc:
            data.skipped.append({"config": f"peer {name}", "reason": f"{type(exc).__name__}: {exc}"})
