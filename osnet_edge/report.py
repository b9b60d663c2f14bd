"""Trade-off reports: latency x accuracy per width, resolution, runtime and precision.

What a camera developer needs to choose a configuration for *their* hardware: the paper's
Table 6 (params, mult-adds) with measured latency/throughput next to it, CMC/mAP where
labelled data and trained weights exist, fidelity to FP32 otherwise, a Pareto plot, a
budget-driven recommendation, an embedding compatibility matrix for mixed fleets, and
foreign peers (Open Model Zoo, third-party ONNX) measured on the same images and machine.

Configurations without trained weights never get an accuracy number: their embeddings
are meaningless for re-identification, so only latency, counts and fidelity are shown.

Evaluation helpers (:class:`EvalSet`, :func:`evaluate_embedder`, :class:`TorchReference`)
are shared with ``scripts/evaluate.py``. numpy + matplotlib here; torch only inside
:class:`TorchReference` and when bundles must be exported.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .data import EVAL_PROTOCOLS, Sample, read_labelled_folder, read_market1501
from .metrics import cosine_distance, evaluate_rank, rank_metrics
from .verify import agreement

PROTOCOL_ORDER = tuple(EVAL_PROTOCOLS)  # market1501 (the benchmark of record) first, then the CUHK checks
PRECISION_COLOURS = {"fp32": "#1f77b4", "fp16": "#2ca02c", "bf16": "#9467bd", "int8": "#ff7f0e"}
RUNTIME_MARKERS = {"onnxruntime": "o", "openvino": "s", "tensorrt": "^"}
PEER_COLOUR = "#555555"
# mAP points within which the budget recommendation calls two configurations equally accurate.
DEFAULT_ACCURACY_TOL = 0.5


# ============================================================================ evaluation data

@dataclass
class EvalSet:
    """Query and gallery samples of one evaluation protocol; images decoded on first use."""

    name: str
    query: list[Sample]
    gallery: list[Sample]
    _images: tuple[list[np.ndarray], list[np.ndarray]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.query or not self.gallery:
            raise ValueError(f"{self.name}: needs a non-empty query and gallery "
                             f"(got {len(self.query)} query, {len(self.gallery)} gallery images)")

    @property
    def q_pids(self) -> np.ndarray:
        return np.array([s.pid for s in self.query])

    @property
    def g_pids(self) -> np.ndarray:
        return np.array([s.pid for s in self.gallery])

    @property
    def q_camids(self) -> np.ndarray:
        return np.array([s.camid for s in self.query])

    @property
    def g_camids(self) -> np.ndarray:
        return np.array([s.camid for s in self.gallery])

    @property
    def fingerprint(self) -> str:
        """Hash of the image list (folder and file names) and labels: cached features are valid
        only for the same set, wherever the data folder lives (relative or absolute paths)."""
        h = hashlib.sha256(self.name.encode())
        for s in self.query + [Sample("|", -9, -9)] + self.gallery:
            folder, name = os.path.split(s.path)
            h.update(f"{os.path.basename(folder)}/{name}:{s.pid}:{s.camid};".encode())
        return h.hexdigest()[:16]

    def images(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(query crops, gallery crops) as HxWx3 uint8 BGR; an unreadable file is an error."""
        if self._images is None:
            self._images = (_read_all(self.query), _read_all(self.gallery))
        return self._images

    def __len__(self) -> int:
        return len(self.query) + len(self.gallery)


def _read_all(samples: Sequence[Sample]) -> list[np.ndarray]:
    from .preprocess import read_image

    out = []
    for s in samples:
        img = read_image(s.path)
        if img is None:
            raise ValueError(f"cannot read image {s.path} (corrupt or not an image)")
        out.append(img)
    return out


def protocol_set(name: str, data_root: str | os.PathLike | None = None) -> EvalSet:
    """One of the agreed protocols (``market1501``, ``cuhk03-val``, ``cuhk01-test``) on the shared data."""
    if name not in EVAL_PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; known: {', '.join(EVAL_PROTOCOLS)}")
    query, gallery = EVAL_PROTOCOLS[name](data_root)
    return EvalSet(name, query, gallery)


def available_protocols(data_root: str | os.PathLike | None) -> list[str]:
    """The agreed protocols whose images exist under ``data_root`` (none without it)."""
    if data_root is None or not Path(data_root).is_dir():
        return []
    found = []
    for name in PROTOCOL_ORDER:
        try:
            protocol_set(name, data_root)
        except (FileNotFoundError, NotADirectoryError, ValueError):
            continue
        found.append(name)
    return found


def market1501_set(root: str | os.PathLike) -> EvalSet:
    """A Market-1501-layout folder: ``query/`` and ``bounding_box_test/`` (junk pid -1 skipped)."""
    splits = read_market1501(root)
    missing = [k for k in ("query", "gallery") if k not in splits]
    if missing:
        raise ValueError(f"{root}: Market-1501 layout needs query/ and bounding_box_test/ "
                         f"(missing: {', '.join('bounding_box_test' if m == 'gallery' else m for m in missing)})")
    return EvalSet(Path(root).resolve().name or str(root), splits["query"], splits["gallery"])


def folder_set(query_dir: str | os.PathLike, gallery_dir: str | os.PathLike, naming: str = "auto") -> EvalSet:
    """Two folders of labelled crops (Market-1501, CUHK03 or CUHK01 file naming)."""
    return EvalSet(f"{Path(query_dir).name}->{Path(gallery_dir).name}",
                   read_labelled_folder(query_dir, naming), read_labelled_folder(gallery_dir, naming))


# ============================================================================ embedders

class TorchReference:
    """The torch model straight from a torchreid checkpoint (host side): the reference that
    every exported bundle should reproduce. Same preprocessing as the Extractor."""

    def __init__(self, weights: str | os.PathLike, width: float | None = None, res: float = 1.0,
                 variant: str = "osnet", threads: int | None = None, interpolation: str | None = None,
                 allow_unsafe_pickle: bool = False) -> None:
        import torch

        from .models import build_osnet, input_size, load_torchreid_weights
        from .preprocess import DEFAULT_INTERPOLATION
        from .profiler import checkpoint_width

        if threads:
            torch.set_num_threads(threads)
        self.width = float(width) if width is not None else checkpoint_width(weights)
        self.input_size = input_size(res)
        self.interpolation = interpolation or DEFAULT_INTERPOLATION
        self.model = build_osnet(self.width, variant).eval()
        load_torchreid_weights(self.model, weights, allow_unsafe_pickle=allow_unsafe_pickle)
        self.name = f"torch {variant} x{self.width:g} @ {self.input_size[0]}x{self.input_size[1]}"
        self.dim = 512

    def model_input(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        from .preprocess import preprocess

        return preprocess(list(crops), self.input_size, self.interpolation)

    def infer_raw(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model(torch.from_numpy(batch)).numpy()

    def __call__(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        from .extractor import l2_normalize

        return l2_normalize(self.raw(crops))

    def raw(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """The 512-d features before L2 normalisation (what torchreid's euclidean metric ranks)."""
        from .extractor import as_crop_list

        crops = as_crop_list(crops)
        if not crops:
            return np.zeros((0, self.dim), np.float32)
        return self.infer_raw(self.model_input(crops)).astype(np.float32)


def embed(embedder: Callable[[list[np.ndarray]], np.ndarray], crops: Sequence[np.ndarray], batch_size: int = 64,
          desc: str | None = None, progress: bool = True) -> np.ndarray:
    """Embeddings of ``crops`` in batches, with a progress bar for long sets (on a terminal)."""
    from .progress import progress_bar

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    chunks = []
    steps = range(0, len(crops), batch_size)
    for start in progress_bar(steps, enabled=progress and len(crops) > batch_size, desc=desc or "embedding",
                              unit="batch", leave=False):
        chunks.append(np.asarray(embedder(list(crops[start:start + batch_size])), dtype=np.float32))
    if not chunks:
        raise ValueError("no crops to embed")
    return np.concatenate(chunks)


class FeatureCache:
    """Embeddings on disk (``<dir>/<key>.npy``) so that rerunning a report skips the slow part.

    Keys are content hashes (what embeds: :func:`bundle_identity` / :func:`file_identity`, with
    the preprocessing; which images: :attr:`EvalSet.fingerprint`), so report, INT8 and
    adaptation runs share the 23k Market-1501 embeddings of the same model.
    """

    def __init__(self, folder: str | os.PathLike | None) -> None:
        self.folder = Path(folder) if folder else None

    @classmethod
    def default(cls) -> "FeatureCache":
        """``$OSNET_EDGE_CACHE/features``, else ``~/.cache/osnet_edge/features``."""
        base = os.environ.get("OSNET_EDGE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "osnet_edge")
        return cls(Path(base) / "features")

    def get_or_compute(self, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        if self.folder is None:
            return compute()
        path = self.folder / f"{key}.npy"
        if path.is_file():
            try:
                return np.load(path)
            except (OSError, ValueError):
                path.unlink(missing_ok=True)
        feats = compute()
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.npy")
        np.save(tmp, feats)
        os.replace(tmp, path)
        return feats


def bundle_identity(bundle: Any, runtime: str | None = None) -> str:
    """Content key of a bundle on a runtime (its files' checksums): keys cached features."""
    files = bundle.manifest["files"]
    digest = json.dumps({k: (v["sha256"] if isinstance(v, dict) else v) for k, v in sorted(files.items())})
    pre = bundle.manifest.get("preprocess", {})
    return hashlib.sha256(f"{digest}|{runtime or bundle.runtime}|{pre.get('interpolation')}".encode()).hexdigest()[:16]


def file_identity(path: str | os.PathLike, extra: str = "") -> str:
    from .bundle import sha256_file

    return hashlib.sha256(f"{sha256_file(path)}|{extra}".encode()).hexdigest()[:16]


def evaluate_embedder(embedder: Callable, evalset: EvalSet, batch_size: int = 64, cache: FeatureCache | None = None,
                      identity: str | None = None, progress: bool = True,
                      ranks: Iterable[int] = (1, 5, 10), metric: str = "cosine") -> tuple[dict, np.ndarray, np.ndarray]:
    """Rank-k / mAP (percent) of ``embedder`` on ``evalset``, and the query / gallery features.

    With ``cache`` and ``identity`` (what the embedder is, e.g. :func:`bundle_identity`) the
    features are read from / written to the cache.
    """
    def compute() -> np.ndarray:
        q, g = evalset.images()
        return embed(embedder, q + g, batch_size, desc=f"{evalset.name}", progress=progress)

    if cache is not None and identity:
        feats = cache.get_or_compute(f"{identity}_{evalset.fingerprint}", compute)
    else:
        feats = compute()
    qf, gf = feats[:len(evalset.query)], feats[len(evalset.query):]
    metrics = rank_metrics(qf, gf, evalset.q_pids, evalset.g_pids, evalset.q_camids, evalset.g_camids, ranks,
                           metric=metric)
    return metrics, qf, gf


# ============================================================================ report data

@dataclass
class ReportData:
    """Everything a report shows; serialised to report.json so it can be re-rendered (--from)."""

    machine: dict
    rows: list[dict]                                   # latency rows (profiler fields; peers with peer=True)
    accuracy: list[dict] = field(default_factory=list)  # one per config x protocol (+ role)
    fidelity: list[dict] = field(default_factory=list)  # cosine vs the same model's FP32 reference
    compat: list[dict] = field(default_factory=list)    # compatibility matrices
    skipped: list[dict] = field(default_factory=list)   # {"config", "reason"}
    settings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> "ReportData":
        """A report.json dict, or a bare list of profiler rows (profile.py --json)."""
        from .machine import describe_machine

        if isinstance(data, list):
            return cls(machine=_machine_from_rows(data) or describe_machine(), rows=data,
                       settings={"source": "profiler rows"})
        if not isinstance(data, dict) or "rows" not in data:
            raise ValueError("expected a report.json (with 'rows') or a list of profiler rows")
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def labelled(self) -> bool:
        return bool(self.accuracy)


def _machine_from_rows(rows: Sequence[Mapping]) -> dict | None:
    """A minimal machine description from the machine columns of rows (when read from a file)."""
    for r in rows:
        if r.get("cpu"):
            flags = r.get("cpu_flags") or ""
            return {"cpu": r["cpu"], "arch": "", "cpu_flags": flags.split() if isinstance(flags, str) else list(flags),
                    "hypervisor": False, "physical_cores": r.get("cores"), "gpus": [g for g in [r.get("gpu")] if g],
                    "versions": {r["runtime"]: r.get("runtime_version")} if r.get("runtime") else {}}
    return None


def _protocols(accuracy: Sequence[Mapping]) -> list[str]:
    """Protocols present, the agreed ones first in their usual order."""
    found = {a["protocol"] for a in accuracy}
    return [p for p in PROTOCOL_ORDER if p in found] + sorted(found - set(PROTOCOL_ORDER))


def config_label(row: Mapping) -> str:
    """'x0.25@0.5' for osnet_edge configurations (variant prefixed unless plain), the name for peers."""
    if row.get("peer"):
        return str(row["variant"])
    prefix = "" if row.get("variant", "osnet") == "osnet" else f"{row['variant']}-"
    return f"{prefix}x{float(row['width']):g}@{float(row['res']):g}"


def full_label(row: Mapping) -> str:
    return f"{config_label(row)} {row['runtime']}/{row['precision']}"


def _model_key(row: Mapping) -> tuple:
    return (row.get("variant"), row.get("width"), row.get("res"), bool(row.get("peer")))


def _setting_key(row: Mapping) -> tuple:
    return (*_model_key(row), row.get("runtime"), row.get("precision"))


# ============================================================================ analysis

def pareto_front(points: Sequence[tuple[float, float]], y_tol: float = 0.0) -> list[int]:
    """Indices of the points no other point beats: lower-or-equal x (latency) AND higher-or-equal y
    (accuracy), strictly better in one. Returned in increasing x.

    ``y_tol``: accuracies closer than this count as equal (the same network on two runtimes
    differs in the last float digits; the faster one should win, not both stay).
    """
    if y_tol < 0:
        raise ValueError(f"y_tol must be >= 0, got {y_tol}")
    pts = [(float(x), float(y)) for x, y in points]
    front = []
    for i, (x, y) in enumerate(pts):
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        dominated = any((x2 <= x and y2 >= y - y_tol) and (x2 < x or y2 > y + y_tol)
                        for j, (x2, y2) in enumerate(pts) if j != i and math.isfinite(x2) and math.isfinite(y2))
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (pts[i][0], -pts[i][1]))


def int8_comparisons(rows: Sequence[Mapping]) -> list[dict]:
    """INT8 vs FP32 of the same model, runtime, batch, mode, threads and device (p50).

    ``beats`` is False where INT8 is not faster: worth flagging, since INT8 costs accuracy and
    only pays off on hardware with fast int8 paths (VNNI / AMX / DP4A / tensor cores).
    """
    def key(r):
        return (*_model_key(r), r.get("runtime"), r.get("batch"), r.get("mode"), r.get("threads"), r.get("device"))

    fp32 = {key(r): r for r in rows if r.get("precision") == "fp32"}
    out = []
    for r in rows:
        if r.get("precision") != "int8" or key(r) not in fp32:
            continue
        f = fp32[key(r)]
        speedup = f["latency_ms_p50"] / r["latency_ms_p50"] if r["latency_ms_p50"] > 0 else float("inf")
        out.append({"config": config_label(r), "runtime": r["runtime"], "batch": r["batch"], "mode": r["mode"],
                    "fp32_ms": f["latency_ms_p50"], "int8_ms": r["latency_ms_p50"], "speedup": round(speedup, 3),
                    "beats": r["latency_ms_p50"] < f["latency_ms_p50"]})
    return out


def int8_accuracy_cost(accuracy: Sequence[Mapping]) -> list[dict]:
    """mAP of INT8 minus FP32 (mean over protocols) per model and runtime, where both were evaluated."""
    mean = mean_accuracy(accuracy)
    out = []
    for key, value in mean.items():
        *model, runtime, precision = key
        fp32 = mean.get((*model, runtime, "fp32"))
        if precision == "int8" and fp32 is not None:
            label = config_label(dict(zip(("variant", "width", "res", "peer"), model)))
            out.append({"config": label, "runtime": runtime, "delta_map": round(value - fp32, 2)})
    return out


def mean_accuracy(accuracy: Sequence[Mapping], metric: str = "mAP") -> dict[tuple, float]:
    """Setting key -> ``metric`` averaged over the protocols measured (grid role only)."""
    acc: dict[tuple, list[float]] = {}
    for a in accuracy:
        if a.get("role", "grid") != "grid":
            continue
        acc.setdefault(_setting_key(a), []).append(float(a[metric]))
    return {k: float(np.mean(v)) for k, v in acc.items()}


def tradeoff_points(data: ReportData, batch: int | None = None, mode: str = "extractor",
                    y: str = "mAP") -> list[dict]:
    """Plot / recommendation candidates: one per model x runtime x precision at one batch size.

    ``y="mAP"`` (or "rank1"): mean over the protocols measured; configurations without it
    (random weights, no labelled data) are left out. ``y="macs"``: mult-adds (peers have none).
    """
    rows = [r for r in data.rows if r.get("mode") == mode]
    if not rows:
        return []
    batch = batch or min(int(r["batch"]) for r in rows)
    acc = mean_accuracy(data.accuracy, y) if y != "macs" else {}
    out = []
    for r in rows:
        if int(r["batch"]) != batch:
            continue
        value = r.get("macs") if y == "macs" else acc.get(_setting_key(r))
        if value is None:
            continue
        out.append({"label": config_label(r), "runtime": r["runtime"], "precision": r["precision"],
                    "peer": bool(r.get("peer")), "latency_ms_p50": r["latency_ms_p50"],
                    "latency_ms_p90": r["latency_ms_p90"], "y": float(value), "batch": batch,
                    "weights": r.get("weights")})
    for i in pareto_front([(p["latency_ms_p50"], p["y"]) for p in out], y_tol=0.05 if y != "macs" else 0.0):
        out[i]["frontier"] = True
    return out


def recommend(candidates: Sequence[Mapping], budget_ms: float, stat: str = "p90",
              metric_name: str = "mAP", y_tol: float = 0.05) -> dict:
    """The most accurate osnet_edge configuration whose ``stat`` latency fits ``budget_ms``.

    Accuracies within ``y_tol`` count as equal (one network on two runtimes differs only in
    float rounding) and then the faster one wins. Every other candidate gets the reason it
    lost; peers are judged by the same rule and reported beside the choice (not chosen: they
    are what the user would deploy instead, so the report says when one is better).
    """
    if not budget_ms > 0:
        raise ValueError(f"budget must be a positive number of milliseconds, got {budget_ms!r}")
    if stat not in ("p50", "p90"):
        raise ValueError(f"stat must be 'p50' or 'p90', got {stat!r}")
    lat = f"latency_ms_{stat}"
    own = [c for c in candidates if not c.get("peer")]
    fits = [c for c in own if c[lat] <= budget_ms]
    choice = None
    if fits:
        best = max(c["y"] for c in fits)
        choice = min((c for c in fits if c["y"] >= best - y_tol), key=lambda c: (c[lat], -c["y"]))
    reasons = []
    for c in own:
        if c is choice:
            continue
        name = f"{c['label']} {c['runtime']}/{c['precision']}"
        if c[lat] > budget_ms:
            why = f"over budget: {stat} {c[lat]:.2f} ms > {budget_ms:g} ms"
        elif c["y"] < choice["y"] - y_tol:
            why = f"less accurate: {metric_name} {c['y']:.1f} < {choice['y']:.1f}"
        else:
            within = f" within {y_tol:g}" if y_tol else ""
            why = (f"as accurate ({metric_name} {c['y']:.1f}{within}) but slower: {stat} {c[lat]:.2f} ms >= "
                   f"{choice[lat]:.2f} ms")
        reasons.append({"config": name, "reason": why})
    peers_better = [c for c in candidates if c.get("peer") and c[lat] <= budget_ms
                    and (choice is None or c["y"] > choice["y"] + y_tol)]
    return {"budget_ms": budget_ms, "stat": stat, "metric": metric_name, "choice": choice, "reasons": reasons,
            "peers_better": sorted(peers_better, key=lambda c: -c["y"])}


# ============================================================================ plots

def plot_tradeoff(points: Sequence[Mapping], path: str | os.PathLike, y_label: str, title: str,
                  subtitle: str = "", log_y: bool = False) -> Path:
    """Latency (x) vs accuracy or mult-adds (y), one marker per runtime/precision, Pareto frontier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    if not points:
        raise ValueError("nothing to plot")
    fig, ax = plt.subplots(figsize=(10, 6.5), dpi=120)
    xs = [p["latency_ms_p50"] for p in points]
    log_x = max(xs) / max(min(xs), 1e-6) > 8
    seen = {}
    for p in points:
        if p["peer"]:
            marker, colour, key = "*", PEER_COLOUR, "peer (foreign model)"
            size = 170
        else:
            marker = RUNTIME_MARKERS.get(p["runtime"], "D")
            colour = PRECISION_COLOURS.get(p["precision"], "#d62728")
            key, size = f"{p['runtime']} {p['precision']}", 70
        edge = "black" if p.get("frontier") else "none"
        ax.scatter(p["latency_ms_p50"], p["y"], marker=marker, c=colour, s=size, edgecolors=edge,
                   linewidths=1.3, zorder=3, alpha=0.9)
        seen.setdefault(key, (marker, colour, size))
    front = sorted((p for p in points if p.get("frontier")), key=lambda p: p["latency_ms_p50"])
    if front:
        fx = [p["latency_ms_p50"] for p in front]
        fy = [p["y"] for p in front]
        ax.step(fx, fy, where="post", linestyle="--", color="black", linewidth=1.1, alpha=0.6, zorder=2)
    if log_x:
        ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    for axis, is_log in ((ax.xaxis, log_x), (ax.yaxis, log_y)):
        if is_log:
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(f"{v:g}")[0] in "25" else ""))
    ax.margins(x=0.08, y=0.08)
    ax.set_xlabel("latency per call, p50 (ms), batch %d, end to end through the Extractor" % points[0]["batch"])
    ax.set_ylabel(y_label)
    ax.grid(True, which="both", alpha=0.25)
    handles = [Line2D([], [], marker=m, color=c, linestyle="none", markersize=9 if m != "*" else 13, label=k)
               for k, (m, c, _) in sorted(seen.items(), key=lambda kv: (kv[0].startswith("peer"), kv[0]))]
    handles.append(Line2D([], [], linestyle="--", color="black", alpha=0.6,
                          label="Pareto frontier (outlined points)"))
    ncol = min(len(handles), 4)
    rows = math.ceil(len(handles) / ncol)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=9, frameon=False)
    ax.set_title(title + (f"\n{subtitle}" if subtitle else ""), fontsize=11)
    fig.tight_layout(rect=(0, 0.035 * rows + 0.01, 1, 1))
    _place_labels(fig, ax, points)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _box_distance(box: tuple[float, float, float, float], x: float, y: float) -> float:
    """Distance from a point to a rectangle (x0, y0, x1, y1); 0 inside it."""
    dx = max(box[0] - x, 0.0, x - box[2])
    dy = max(box[1] - y, 0.0, y - box[3])
    return math.hypot(dx, dy)


def _place_labels(fig: Any, ax: Any, points: Sequence[Mapping]) -> None:
    """Label points without overlaps: per point try offsets around it, keep the first whose text box
    hits no marker nor earlier label and stays inside the axes. A model's label is written once
    per cluster (its runtimes/precisions usually sit close together)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    to_display = ax.transData.transform
    inside = ax.get_window_extent(renderer)
    centres = [to_display((p["latency_ms_p50"], p["y"])) for p in points]
    occupied = [(cx - 7, cy - 7, cx + 7, cy + 7) for cx, cy in centres]
    labelled: list[tuple[str, Any]] = []
    candidates = [(6, 5, "left", "bottom"), (6, -5, "left", "top"), (-6, 5, "right", "bottom"),
                  (-6, -5, "right", "top"), (0, 10, "center", "bottom"), (0, -10, "center", "top"),
                  (10, 16, "left", "bottom"), (10, -16, "left", "top"), (-10, 16, "right", "bottom"),
                  (-10, -16, "right", "top"), (0, 24, "center", "bottom"), (0, -24, "center", "top")]
    order = sorted(range(len(points)), key=lambda i: (not points[i].get("frontier"), points[i]["latency_ms_p50"]))
    for i in order:
        p, (cx, cy) = points[i], centres[i]
        if any(lbl == p["label"] and abs(cx - px) < 45 and abs(cy - py) < 18 for lbl, (px, py) in labelled):
            continue
        style = dict(fontsize=8.5, color=PEER_COLOUR if p["peer"] else "#222222",
                     fontweight="bold" if p.get("frontier") else "normal")
        chosen = None
        for dx, dy, ha, va in candidates:
            text = ax.annotate(p["label"], (p["latency_ms_p50"], p["y"]), textcoords="offset points",
                               xytext=(dx, dy), ha=ha, va=va, **style)
            bb = text.get_window_extent(renderer)
            box = (bb.x0 - 2, bb.y0 - 1, bb.x1 + 2, bb.y1 + 1)
            fits = inside.x0 <= box[0] and box[2] <= inside.x1 and inside.y0 <= box[1] and box[3] <= inside.y1
            clash = any(box[0] < o[2] and o[0] < box[2] and box[1] < o[3] and o[1] < box[3] for o in occupied)
            # the label must sit closer to its own point than to any other, or it reads as another's
            own = _box_distance(box, cx, cy)
            ambiguous = any(_box_distance(box, ox, oy) < 1.5 * own + 4
                            for j, (ox, oy) in enumerate(centres) if j != i)
            if fits and not clash and not ambiguous:
                chosen = box
                break
            text.remove()
        if chosen is None:  # crowded: fall back to the first position
            dx, dy, ha, va = candidates[0]
            bb = ax.annotate(p["label"], (p["latency_ms_p50"], p["y"]), textcoords="offset points",
                             xytext=(dx, dy), ha=ha, va=va, **style).get_window_extent(renderer)
            chosen = (bb.x0, bb.y0, bb.x1, bb.y1)
        occupied.append(chosen)
        labelled.append((p["label"], (cx, cy)))


# ============================================================================ rendering

def _fmt_ms(v: Any) -> str:
    return "—" if v is None else f"{v:.2f}"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def hardware_line(machine: Mapping) -> str:
    from .machine import machine_summary

    versions = ", ".join(f"{k} {v}" for k, v in (machine.get("versions") or {}).items() if v)
    return machine_summary(dict(machine)) + (f". Versions: {versions}" if versions else "")


def _counts_table(rows: Sequence[Mapping]) -> str:
    seen, table = set(), []
    for r in rows:
        if r.get("peer") or _model_key(r) in seen:
            continue
        seen.add(_model_key(r))
        table.append(r)
    table.sort(key=lambda r: (r["variant"], -float(r["width"]), -float(r["res"])))
    return _md_table(["model", "width", "res", "input", "params", "mult-adds", "weights"],
                     [[r["variant"], f"{float(r['width']):g}", f"{float(r['res']):g}", f"{r['input_h']}x{r['input_w']}",
                       f"{r['params'] / 1e6:.1f}M" if r.get("params") else "—",
                       f"{r['macs'] / 1e6:.1f}M" if r.get("macs") else "—", r.get("weights") or "—"] for r in table])


def _latency_pivot(rows: Sequence[Mapping], mode: str, batch: int, value: str = "latency_ms_p50",
                   fmt: Callable[[Any], str] = _fmt_ms) -> str | None:
    sel = [r for r in rows if r["mode"] == mode and int(r["batch"]) == batch]
    if not sel:
        return None
    settings = []
    for r in sel:
        s = (r["runtime"], r["precision"])
        if s not in settings:
            settings.append(s)
    models = []
    for r in sel:
        if _model_key(r) not in [m for m, _ in models]:
            models.append((_model_key(r), r))
    models.sort(key=lambda m: (m[1].get("peer", False), m[1]["variant"], -float(m[1].get("width") or 0),
                               -float(m[1].get("res") or 0)))
    index = {(_model_key(r), r["runtime"], r["precision"]): r for r in sel}
    body = []
    for key, r in models:
        macs = f"{r['macs'] / 1e6:.1f}M" if r.get("macs") else "—"
        body.append([config_label(r), f"{r['input_h']}x{r['input_w']}", macs]
                    + [fmt(index[(key, *s)][value]) if (key, *s) in index else "—" for s in settings])
    return _md_table(["config", "input", "mult-adds"] + [f"{rt} {p}" for rt, p in settings], body)


def _accuracy_table(data: ReportData) -> str:
    protocols = [p for p in PROTOCOL_ORDER if any(a["protocol"] == p for a in data.accuracy)]
    protocols += sorted({a["protocol"] for a in data.accuracy} - set(protocols))
    index = {(_setting_key(a), a.get("role", "grid"), a["protocol"]): a for a in data.accuracy}
    settings: list[tuple[tuple, Mapping]] = []
    for a in data.accuracy:
        if a.get("role", "grid") == "grid" and _setting_key(a) not in [k for k, _ in settings]:
            settings.append((_setting_key(a), a))
    settings.sort(key=lambda s: (s[1].get("peer", False), -float(s[1].get("width") or 0), -float(s[1].get("res") or 0),
                                 s[1]["runtime"], s[1]["precision"]))
    body = []
    for key, a in settings:
        cells = [config_label(a), a["runtime"], a["precision"], a.get("weights") or "—"]
        for p in protocols:
            m = index.get((key, "grid", p))
            cells += [f"{m['rank1']:.1f}", f"{m['mAP']:.1f}"] if m else ["—", "—"]
        body.append(cells)
    header = ["config", "runtime", "precision", "weights"]
    for p in protocols:
        header += [f"{p} rank-1", f"{p} mAP"]
    return _md_table(header, body)


def _adaptation_table(data: ReportData) -> str | None:
    before = [a for a in data.accuracy if a.get("role") == "before-adaptation"]
    if not before:
        return None
    protocols = [p for p in PROTOCOL_ORDER if any(a["protocol"] == p for a in before)]
    body = []
    for key in sorted({(a["width"], a["res"], a["runtime"], a["precision"]) for a in before}, key=lambda k: (-k[0], -k[1])):
        for role, title in (("before-adaptation", "before (trained at 256x128)"), ("grid", "after adaptation")):
            sel = {a["protocol"]: a for a in data.accuracy if a.get("role", "grid") == role and not a.get("peer")
                   and (a["width"], a["res"], a["runtime"], a["precision"]) == key}
            if not sel:
                continue
            any_a = next(iter(sel.values()))
            cells = [f"x{key[0]:g}@{key[1]:g}", f"{key[2]}/{key[3]}", title, any_a.get("weights") or "—"]
            for p in protocols:
                cells += [f"{sel[p]['rank1']:.1f}", f"{sel[p]['mAP']:.1f}"] if p in sel else ["—", "—"]
            body.append(cells)
    header = ["config", "runtime", "stage", "weights"] + [h for p in protocols for h in (f"{p} rank-1", f"{p} mAP")]
    return _md_table(header, body)


def _fidelity_table(data: ReportData) -> str:
    body = [[config_label(f), f"{f['runtime']}/{f['precision']}", f["reference"], f"{f['cosine_mean']:.4f}",
             f"{f['cosine_min']:.4f}", f"{f['cosine_p1']:.4f}", f.get("weights") or "—"]
            for f in sorted(data.fidelity, key=lambda f: (-float(f["width"]), -float(f["res"]), f["runtime"], f["precision"]))]
    return _md_table(["config", "runtime/precision", "reference", "cosine mean", "cosine min", "cosine p1", "weights"],
                     body)


def _compat_tables(data: ReportData) -> list[str]:
    out = []
    for c in data.compat:
        members = c["members"]
        head = f"**{c['model']}** ({c['images']} images{', ' + c['protocol'] if c.get('protocol') else ''})"
        cos = _md_table(["cosine: A \\ B"] + members,
                        [[m] + [f"{v:.4f}" for v in row] for m, row in zip(members, c["cosine"])])
        parts = [head, "", "Cosine agreement (mean over the same images, embeddings from A vs from B):", "", cos]
        if c.get("cross_map"):
            parts += ["", f"Cross-retrieval mAP (%): query embeddings from the row, gallery from the column "
                          f"({c['protocol']}):", "",
                      _md_table(["query \\ gallery"] + members,
                                [[m] + [f"{v:.1f}" for v in row] for m, row in zip(members, c["cross_map"])])]
            worst = min(v for row in c["cross_map"] for v in row)
            diag = min(c["cross_map"][i][i] for i in range(len(members)))
            parts += ["", f"Worst mixed pair: {worst:.1f} mAP vs {diag:.1f} for the worst same-setting pair "
                          f"({'safe to mix' if diag - worst <= 1.0 else 'mixing costs up to %.1f mAP points' % (diag - worst)})."]
        out.append("\n".join(parts))
    return out


def render_markdown(data: ReportData, budget_ms: float | None = None, budget_stat: str = "p90",
                    plots: Mapping[str, str] | None = None, accuracy_tol: float = DEFAULT_ACCURACY_TOL) -> str:
    """The report as Markdown (tables + plot references + recommendation).

    ``accuracy_tol``: mAP points within which the recommendation treats two configurations as
    equally accurate (and takes the faster)."""
    plots = plots or {}
    s = data.settings
    own_rows = [r for r in data.rows if not r.get("peer")]
    peer_rows = [r for r in data.rows if r.get("peer")]
    batches = sorted({int(r["batch"]) for r in data.rows})
    first_batch = batches[0] if batches else 1
    md = ["# osnet_edge trade-off report", ""]
    md += [f"**Hardware:** {hardware_line(data.machine)}.", ""]
    if s:
        bits = []
        if s.get("created"):
            bits.append(f"generated {s['created']}")
        if s.get("threads"):
            bits.append(f"{s['threads']} inference thread{'s' if s['threads'] != 1 else ''}")
        if s.get("budget_s") is not None:
            bits.append(f"{s['budget_s']:g} s timed per row after {s.get('warmup', 0)} warm-up calls")
        if s.get("crops"):
            bits.append(f"timing inputs: {s['crops']}")
        if s.get("device"):
            bits.append(f"device {s['device']}")
        md += ["Measured: " + "; ".join(bits) + ".", ""]
        loads = [v for v in (s.get("load_average"), s.get("load_average_after_timing")) if v is not None]
        cores = data.machine.get("physical_cores") or 1
        if loads:
            busy = max(loads) > 0.5 * cores
            md += [f"System load average while timing: {' -> '.join(f'{v:g}' for v in loads)} on {cores} cores"
                   + (" — **other processes competed for the CPU: absolute timings are inflated and noisy**; "
                      "fewer threads (--threads 1) suffer less from it." if busy else " (an idle machine)."), ""]
    md += ["Latency is per call (p50 / p90 over the timed calls); *end to end* = `Extractor(crops)`: resize, "
           "normalise, infer, L2-normalise; *bare runtime* = the inference call alone on a prepared batch. "
           "Throughput = batch / mean call time. Timings on a shared or virtualised machine are noisy: "
           "compare ratios within one report, not absolute numbers across machines.", ""]
    for note in data.notes:
        md += [f"> {note}", ""]

    md += ["## Model size (the paper's Table 6)", "", _counts_table(own_rows) if own_rows else "_no rows_", ""]

    md += ["## Latency", ""]
    for mode, title in (("extractor", "end to end (Extractor)"), ("runtime", "bare runtime")):
        for b in batches:
            t = _latency_pivot(data.rows, mode, b)
            if t:
                md += [f"### p50 ms per call, {title}, batch {b}", "", t, ""]
    last = batches[-1] if batches else 1
    t = _latency_pivot(data.rows, "extractor", last, "throughput_ips", lambda v: f"{v:.0f}")
    if t:
        md += [f"### Throughput (images/s), end to end, batch {last}", "", t, ""]

    comps = int8_comparisons(data.rows)
    if comps:
        losers = [c for c in comps if not c["beats"]]
        md += ["## INT8 vs FP32 speed", ""]
        if losers:
            md += [f"**INT8 does not beat FP32 in {len(losers)} of {len(comps)} comparisons** (p50; "
                   "same model, runtime, batch, mode). INT8 needs fast int8 instructions (x86: AVX512-VNNI / "
                   "AVX-VNNI / AMX; ARM: dot-product; GPUs: DP4A / tensor cores) and enough work per layer "
                   "to amortise its quantize/dequantize steps; small models at small inputs can lose.", ""]
        else:
            md += [f"INT8 is faster than FP32 in all {len(comps)} comparisons (p50).", ""]
        deltas = int8_accuracy_cost(data.accuracy)
        if deltas:
            md += ["INT8 accuracy cost (mAP points, mean over protocols, INT8 minus FP32 on the same runtime): "
                   + "; ".join(f"{d['config']} {d['runtime']} {d['delta_map']:+.1f}" for d in deltas) + ".", ""]
        md += [_md_table(["config", "runtime", "batch", "mode", "fp32 p50 ms", "int8 p50 ms", "speed-up", ""],
                         [[c["config"], c["runtime"], c["batch"], c["mode"], _fmt_ms(c["fp32_ms"]), _fmt_ms(c["int8_ms"]),
                           f"{c['speedup']:.2f}x", "" if c["beats"] else "**INT8 not faster**"] for c in comps]), ""]

    md += ["## Accuracy", ""]
    if data.accuracy:
        protocols = _protocols(data.accuracy)
        md += [f"Market-1501 protocol (cosine distance), rank-1 and mAP in %, on {', '.join(protocols)} "
               "(query camera A, gallery camera B; never used for calibration or adaptation). Only "
               "configurations with trained weights are evaluated; configurations exported with random weights "
               "(no trained checkpoint for that width) show latency, counts and fidelity only — an accuracy "
               "number for them would be meaningless.", "", _accuracy_table(data), ""]
        untrained = sorted({config_label(r) for r in own_rows if r.get("weights") == "random"})
        if untrained:
            md += [f"No trained weights (not evaluated): {', '.join(untrained)}.", ""]
        adapt = _adaptation_table(data)
        if adapt:
            md += ["### Resolution adaptation: before / after", "",
                   "The same width run at a lower resolution, with the 256x128-trained weights (before) and with "
                   "the checkpoint adapted to that resolution (after).", "", adapt, ""]
    else:
        md += ["**No accuracy in this report:** accuracy needs labelled person crops (e.g. the cuhk03-val / "
               "cuhk01-test protocols or a Market-1501-layout folder) and trained weights. Without them only "
               "latency, model size and fidelity to FP32 are shown; fidelity says how closely a runtime/precision "
               "reproduces the FP32 embeddings, not how well they re-identify people.", ""]
    if data.fidelity:
        md += ["## Fidelity to FP32", "",
               "Cosine similarity between each setting's embeddings and the same model's FP32 embeddings on the "
               "same images (1.0 = identical). Computed for every configuration, trained or not; for random "
               "weights it overstates what trained weights keep (their embeddings differ little between images, "
               "so quantization noise moves them less).", "",
               _fidelity_table(data), ""]

    if plots:
        md += ["## Latency / accuracy trade-off", ""]
        for title, rel in plots.items():
            md += [f"![{title}]({rel})", ""]
        md += ["One marker shape per runtime, one colour per precision; stars are foreign peers. Outlined points "
               "and the dashed line form the Pareto frontier: nothing else is both faster and at least as "
               "accurate.", ""]
    pts = tradeoff_points(data, first_batch, y="mAP") if data.accuracy else []
    if pts:
        front = [p for p in sorted(pts, key=lambda p: p["latency_ms_p50"]) if p.get("frontier")]
        md += ["Pareto frontier (batch %d, end to end): " % first_batch
               + "; ".join(f"{p['label']} {p['runtime']}/{p['precision']} ({p['latency_ms_p50']:.2f} ms, "
                           f"mAP {p['y']:.1f})" for p in front) + ".", ""]

    if budget_ms is not None:
        md += [f"## Recommendation for a {budget_ms:g} ms budget", ""]
        if pts:
            metric = "mAP (mean over protocols)"
            cands = pts
        else:
            metric = "mult-adds (proxy: no accuracy measured)"
            cands = tradeoff_points(data, first_batch, y="macs")
        rec = recommend(cands, budget_ms, budget_stat, "mAP" if pts else "mult-adds", accuracy_tol if pts else 0.0)
        if pts and accuracy_tol > 0:
            md += [f"Accuracies within {accuracy_tol:g} mAP points count as equal (the evaluation sets have a few "
                   "hundred queries each; smaller differences are noise), and then the faster setting wins.", ""]
        md += _recommendation_lines(rec, metric, pts == [])
        if pts:
            untrained = sorted({config_label(r) for r in own_rows if r.get("weights") == "random"})
            if untrained:
                md += ["", "Not considered (no trained weights, accuracy unknown): " + ", ".join(untrained)
                       + " on every runtime/precision."]
        md += [""]

    if data.compat:
        md += ["## Embedding compatibility (mixed fleets)", "",
               "Can a gallery embedded by one camera (runtime/precision) be searched with queries embedded by "
               "another? Cosine agreement compares the two embeddings of the same image; cross-retrieval mAP "
               "runs the retrieval with query and gallery from different settings.", ""]
        for t in _compat_tables(data):
            md += [t, ""]

    if peer_rows:
        md += ["## Foreign peers", "",
               "Models a camera developer might deploy instead, run here on the same images, the same machine and "
               "the same resize: Open Model Zoo person-reidentification-retail IRs (OpenVINO, BGR 0-255 input, "
               "256-d) and third-party ONNX exports. Their latency and accuracy appear in the tables and plot "
               "above (stars). Mult-adds are not counted for them.", ""]
    if data.skipped:
        md += ["## Not measured", "", _md_table(["config", "reason"], [[s["config"], s["reason"]] for s in data.skipped]), ""]
    return "\n".join(md).rstrip() + "\n"


def _recommendation_lines(rec: Mapping, metric: str, proxy: bool) -> list[str]:
    stat = rec["stat"]
    lines = []
    c = rec["choice"]
    if c is None:
        lines.append(f"**No osnet_edge configuration meets {rec['budget_ms']:g} ms ({stat}) on this machine.** "
                     "Options: a smaller width or resolution, INT8 where it is faster here, fewer competing processes "
                     "(on a shared CPU one inference thread per stream is often faster: --threads 1), or faster "
                     "hardware.")
    else:
        what = f"{metric.split(' ')[0]} {c['y']:.1f}" if not proxy else f"{c['y'] / 1e6:.1f}M mult-adds"
        lines.append(f"**Recommended: {c['label']} on {c['runtime']}/{c['precision']}** — {stat} "
                     f"{c['latency_ms_' + stat]:.2f} ms (p50 {c['latency_ms_p50']:.2f} ms) at batch {c['batch']}, "
                     f"{what}: the most {'accurate' if not proxy else 'capable'} configuration within the budget "
                     "(the fastest among equals).")
        if proxy:
            lines.append("")
            lines.append("No accuracy was measured (no labelled data or no trained weights), so mult-adds stand in "
                         "for accuracy (in the paper more mult-adds meant higher accuracy). Verify with labelled "
                         "data from your cameras.")
    if rec["reasons"]:
        lines += ["", "Why the others lost:", ""]
        lines += [f"- {r['config']}: {r['reason']}" for r in rec["reasons"]]
    for p in rec["peers_better"]:
        lines += ["", f"Note: peer **{p['label']}** ({p['runtime']}/{p['precision']}) also fits "
                      f"({stat} {p['latency_ms_' + stat]:.2f} ms) and is more accurate ({p['y']:.1f})."]
    return lines


def report_csv_rows(data: ReportData) -> list[dict]:
    """Latency rows joined with accuracy (per protocol) and fidelity, one per latency row."""
    acc = {}
    for a in data.accuracy:
        if a.get("role", "grid") == "grid":
            acc.setdefault(_setting_key(a), {}).update({f"{a['protocol']}_rank1": round(a["rank1"], 2),
                                                       f"{a['protocol']}_mAP": round(a["mAP"], 2)})
    fid = {_setting_key(f): round(f["cosine_mean"], 5) for f in data.fidelity}
    out = []
    for r in data.rows:
        row = {"config": config_label(r), **{k: v for k, v in r.items() if k != "bundle"}}
        row.update(acc.get(_setting_key(r), {}))
        row["cosine_vs_fp32"] = fid.get(_setting_key(r))
        out.append(row)
    return out


def write_report(data: ReportData, out_dir: str | os.PathLike, budget_ms: float | None = None,
                 budget_stat: str = "p90", accuracy_tol: float = DEFAULT_ACCURACY_TOL) -> dict[str, Path]:
    """report.md, report.csv, report.json and the PNG plots in ``out_dir``; returns their paths."""
    from .machine import machine_summary
    from .profiler import rows_to_csv

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    plots: dict[str, str] = {}
    batches = sorted({int(r["batch"]) for r in data.rows if r.get("mode") == "extractor"})
    cpu = machine_summary(dict(data.machine)).split(", flags")[0]
    if batches:
        pts = tradeoff_points(data, batches[0], y="mAP") if data.accuracy else []
        if pts:
            protocols = _protocols(data.accuracy)
            paths["plot_map"] = plot_tradeoff(
                pts, out / "tradeoff_map.png", f"mAP (%), mean of {', '.join(protocols)}",
                "Latency vs accuracy (higher and further left is better)", cpu)
            plots["Latency vs mAP"] = "tradeoff_map.png"
        pts = tradeoff_points(data, batches[0], y="macs")
        if pts:
            for p in pts:
                p["y"] = p["y"] / 1e6
            paths["plot_macs"] = plot_tradeoff(
                pts, out / "tradeoff_macs.png", "mult-adds per image (M, log scale)",
                "Latency vs model size (mult-adds: a proxy where accuracy is unknown)", cpu, log_y=True)
            plots["Latency vs mult-adds"] = "tradeoff_macs.png"
    md = render_markdown(data, budget_ms, budget_stat, plots, accuracy_tol)
    paths["md"] = out / "report.md"
    paths["md"].write_text(md, encoding="utf-8")
    paths["csv"] = out / "report.csv"
    paths["csv"].write_text(rows_to_csv(report_csv_rows(data)) if data.rows else "", encoding="utf-8")
    paths["json"] = out / "report.json"
    paths["json"].write_text(json.dumps(data.to_json(), indent=1, default=_json_default), encoding="utf-8")
    return paths


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


# ============================================================================ running a report

def _accuracy_entry(base: Mapping, protocol: str, metrics: Mapping, role: str = "grid") -> dict:
    return {**{k: base.get(k) for k in ("variant", "width", "res", "runtime", "precision", "weights", "peer")},
            "protocol": protocol, "role": role, **{k: metrics[k] for k in ("rank1", "rank5", "rank10", "mAP",
                                                                           "num_query", "num_gallery")}}


def _point_base(point: Any, weights: str | None, label: str | None = None) -> dict:
    return {"variant": point.variant, "width": point.width, "res": point.res, "runtime": point.runtime,
            "precision": point.precision, "peer": False,
            "weights": label or (Path(weights).stem if weights else "random")}


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
    from .progress import progress_bar

    from .extractor import Extractor
    from .machine import describe_machine
    from .profiler import (GridPoint, RowStore, TimingBudget, WeightsMap, default_threads, ensure_bundle,
                           profile_grid, weights_label)

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
    extractors: dict[Any, Any] = {}

    def extractor(point):
        if point not in extractors:
            extractors[point] = Extractor(bundles[point], runtime=point.runtime, device=device, threads=threads,
                                          batch_size=eval_batch)
        return extractors[point]

    try:
        # ---- accuracy of every trained configuration on every protocol
        trained = [p for p in bundles if weights(p.width, p.res)]
        if evalsets:
            for es in evalsets:
                say(f"loading {es.name}: {len(es.query)} query + {len(es.gallery)} gallery images")
                es.images()
        features: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        jobs = [(p, es) for p in trained for es in evalsets]
        for point, es in progress_bar(jobs, enabled=progress and bool(jobs), desc="accuracy", unit="eval"):
            ext = extractor(point)
            metrics, qf, gf = evaluate_embedder(ext, es, eval_batch, cache, bundle_identity(bundles[point], point.runtime),
                                                progress=progress)
            features[(point, es.name)] = (qf, gf)
            data.accuracy.append(_accuracy_entry(_point_base(point, None, weights_label(bundles[point].manifest)),
                                                 es.name, metrics))

        # ---- before adaptation: the base checkpoint at a resolution that has an adapted one
        if evalsets:
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
                        data.accuracy.append(_accuracy_entry(_point_base(ref_point, base), es.name, metrics,
                                                             role="before-adaptation"))

        # ---- fidelity to FP32: same model, the FP32 bundle of the first runtime as reference
        if evalsets:
            q, _ = evalsets[0].images()
            fid_crops, fid_source = q[:fidelity_images], f"{min(fidelity_images, len(q))} {evalsets[0].name} query images"
        else:
            fid_crops, fid_source = list(crops)[:fidelity_images], data.settings.get("crops", "timing crops")
        data.settings["fidelity_images"] = fid_source
        models: dict[tuple, list[Any]] = {}
        for p in bundles:
            models.setdefault((p.variant, p.width, p.res), []).append(p)
        fid_feats: dict[Any, np.ndarray] = {}
        for key, members in progress_bar(list(models.items()), enabled=progress, desc="fidelity", unit="model"):
            refs = [p for p in members if p.precision == "fp32"]
            if not refs:
                continue
            ref = sorted(refs, key=lambda p: p.runtime != "onnxruntime")[0]
            for p in members:
                fid_feats[p] = cache.get_or_compute(
                    f"fid_{bundle_identity(bundles[p], p.runtime)}_{len(fid_crops)}_{_crops_digest(fid_crops)}",
                    lambda p=p: embed(extractor(p), fid_crops, eval_batch, progress=False))
            for p in members:
                if p is ref:
                    continue
                ag = agreement(fid_feats[p], fid_feats[ref])
                data.fidelity.append({**_point_base(p, None, weights_label(bundles[p].manifest)),
                                      "reference": f"{ref.runtime}/fp32", **ag})

        # ---- compatibility matrices: every trained model with labels; else one model, cosine only
        multi = {k: sorted(m, key=lambda p: (p.runtime, p.precision != "fp32", p.precision))
                 for k, m in models.items() if len(m) >= 2}
        for key, members in multi.items():
            if not (evalsets and all((p, evalsets[0].name) in features for p in members)):
                continue
            es = evalsets[0]
            feats = {p: features[(p, es.name)] for p in members}
            cos = [[float(np.mean(_row_cos(np.vstack(feats[a]), np.vstack(feats[b])))) for b in members]
                   for a in members]
            cross = [[100.0 * evaluate_rank(cosine_distance(feats[a][0], feats[b][1]), es.q_pids, es.g_pids,
                                            es.q_camids, es.g_camids, max_rank=min(50, len(es.gallery)))[1]
                      for b in members] for a in members]
            data.compat.append({"model": f"{config_label(_point_base(members[0], None))} "
                                         f"({weights_label(bundles[members[0]].manifest)})",
                                "members": [f"{p.runtime}/{p.precision}" for p in members], "cosine": cos,
                                "cross_map": cross, "protocol": es.name, "images": len(es)})
        if not data.compat and multi:
            key = sorted(multi, key=lambda k: weights(k[1], k[2]) is None)[0]
            members = [p for p in multi[key] if p in fid_feats]
            if len(members) >= 2:
                cos = [[float(np.mean(_row_cos(fid_feats[a], fid_feats[b]))) for b in members] for a in members]
                data.compat.append({"model": f"{config_label(_point_base(members[0], None))} "
                                             f"({weights_label(bundles[members[0]].manifest)}; no labelled data: "
                                             "cosine only)",
                                    "members": [f"{p.runtime}/{p.precision}" for p in members], "cosine": cos,
                                    "cross_map": None, "protocol": None, "images": len(fid_crops)})
    finally:
        for ext in extractors.values():
            ext.close()

    # ---- foreign peers: same images, same machine
    if peers and data_root is not None:
        _run_peers(data, data_root, crops, evalsets, batches, modes, threads, budget, store, cache, eval_batch,
                   progress, say)
    if not evalsets:
        data.notes.append("No labelled data was available: accuracy needs labelled crops (cuhk03-val / "
                          "cuhk01-test in ../shared/data, or a Market-1501 folder) and trained weights.")
    elif not trained:
        data.notes.append("No configuration had trained weights (pass --weights): accuracy is not shown.")
    return data


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


def _row_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from .verify import cosine_rows

    return cosine_rows(a, b)


def _peer_precision(name: str) -> str:
    return "int8" if "int8" in name.lower() else "fp16" if "fp16" in name.lower() else "fp32"


def _run_peers(data: ReportData, data_root, crops, evalsets, batches, modes, threads, budget, store, cache,
               eval_batch, progress, say) -> None:
    from .foreign import ForeignModel, known_peers
    from .machine import row_machine_fields
    from .profiler import measure_embedder, row_key, runtime_version

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
                metrics, _, _ = evaluate_embedder(model, es, eval_batch, cache,
                                                  file_identity(kwargs["path"], kwargs["input_format"]), progress)
                data.accuracy.append(_accuracy_entry({**base, **extra}, es.name, metrics))
        except Exception as exc:
            data.skipped.append({"config": f"peer {name}", "reason": f"{type(exc).__name__}: {exc}"})
