"""What a report shows (:class:`ReportData`, saved as report.json) and how its rows are labelled and keyed."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .evaluation import PROTOCOL_ORDER


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
        from ..machine import describe_machine

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


def protocols_in(accuracy: Sequence[Mapping]) -> list[str]:
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


def model_key(row: Mapping) -> tuple:
    """One model: variant, width, res (a peer apart from an osnet_edge configuration)."""
    return (row.get("variant"), row.get("width"), row.get("res"), bool(row.get("peer")))


def setting_key(row: Mapping) -> tuple:
    """One model on one runtime at one precision."""
    return (*model_key(row), row.get("runtime"), row.get("precision"))


def accuracy_entry(base: Mapping, protocol: str, metrics: Mapping, role: str = "grid") -> dict:
    """An accuracy result: the setting's fields, the protocol, its role (grid, before-adaptation)."""
    return {**{k: base.get(k) for k in ("variant", "width", "res", "runtime", "precision", "weights", "peer")},
            "protocol": protocol, "role": role, **{k: metrics[k] for k in ("rank1", "rank5", "rank10", "mAP",
                                                                           "num_query", "num_gallery")}}


def point_base(point: Any, weights: str | None, label: str | None = None) -> dict:
    """The fields of a grid point that accuracy and fidelity results carry."""
    return {"variant": point.variant, "width": point.width, "res": point.res, "runtime": point.runtime,
            "precision": point.precision, "peer": False,
            "weights": label or (Path(weights).stem if weights else "random")}
