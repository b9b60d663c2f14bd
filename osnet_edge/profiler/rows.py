"""Profiler rows: their fields and key, JSON / CSV files, and a resumable store (a rerun skips
rows already measured)."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

COUNT_FIELDS = ("variant", "width", "res", "input_h", "input_w", "params", "macs")
LATENCY_FIELDS = COUNT_FIELDS + (
    "runtime", "precision", "batch", "threads", "threads_used", "device", "mode",
    "latency_ms_p50", "latency_ms_p90", "latency_ms_mean", "latency_ms_min", "throughput_ips",
    "iterations", "weights", "peer", "runtime_version", "cpu", "cpu_flags", "cores", "gpu", "bundle")
# Fields that identify a measurement: a rerun skips rows whose key is already present (rows
# measured on another CPU do not count as done here).
KEY_FIELDS = ("variant", "width", "res", "runtime", "precision", "batch", "threads", "device", "mode", "cpu")


def weights_label(manifest: Mapping) -> str:
    """'random', 'adapted:<name>' or the checkpoint's file stem, for tables."""
    w = manifest.get("weights")
    if not w:
        return "adapted" if manifest.get("adaptation") else "random"
    stem = Path(w["source"]).stem
    return f"adapted:{stem}" if manifest.get("adaptation") else stem

def row_key(row: Mapping) -> tuple:
    """What identifies a grid measurement (numbers normalised so JSON and CSV rows compare equal)."""
    out = []
    for k in KEY_FIELDS:
        v = row.get(k)
        if k in ("width", "res") and v not in (None, ""):
            v = round(float(v), 6)
        elif k in ("batch", "threads") and v not in (None, ""):
            v = int(v)
        out.append(None if v == "" else v)
    return tuple(out)


def bundle_row_key(row: Mapping) -> tuple:
    """What identifies a measurement of a given bundle: :func:`row_key` plus the bundle's folder, so two
    bundles of one configuration (other weights, fused or not) are two rows, not one replacing the other."""
    return row_key(row) + (row.get("bundle"),)


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
    ``key_of`` says what identifies a row (:func:`row_key` for grids, :func:`bundle_row_key` for bundles).
    """

    def __init__(self, json_path: str | os.PathLike | None = None, csv_path: str | os.PathLike | None = None,
                 resume: bool = True, key_of: Callable[[Mapping], tuple] = row_key) -> None:
        self.key_of = key_of
        self.json_path = Path(json_path) if json_path else None
        self.csv_path = Path(csv_path) if csv_path else None
        self.rows: list[dict] = []
        if resume:
            for p in (self.json_path, self.csv_path):
                if p is not None and p.exists():
                    self.rows = read_rows(p)
                    break
        self._keys = {key_of(r) for r in self.rows}

    def has(self, key: tuple) -> bool:
        return key in self._keys

    def add(self, row: dict) -> None:
        key = self.key_of(row)
        if key in self._keys:  # re-measured: replace the old row
            self.rows = [r for r in self.rows if self.key_of(r) != key]
        self.rows.append(row)
        self._keys.add(key)
        self.save()

    def save(self) -> None:
        if self.json_path is not None:
            _atomic_write(self.json_path, json.dumps(self.rows, indent=1))
        if self.csv_path is not None and self.rows:
            _atomic_write(self.csv_path, rows_to_csv(self.rows))
