"""Latency profiler: row contract, timing budget, resume, grid skipping, machine description.

One tiny bundle (x0.25 @ 64x32, random weights, ONNX Runtime) is exported once per session
by running scripts/profile.py itself (so the CLI path, export inside it included, is tested)
and reused from the shared work folder by the other report tests.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from osnet_edge.profiler import (COUNT_FIELDS, KEY_FIELDS, LATENCY_FIELDS, CalibrationProvider, GridPoint, RowStore,
                                 TimingBudget, WeightsMap, count_row, ensure_bundle, grid_points, latency_stats,
                                 measure_embedder, profile_grid, read_rows, row_key, time_calls)
from osnet_edge.samples import synthetic_crops

REPO = Path(__file__).resolve().parents[1]
TINY = GridPoint(0.25, 0.25, "onnxruntime", "fp32")
FAST = TimingBudget(seconds=0.02, warmup=1, min_iters=3, max_iters=20)


def shared_work(tmp_path_factory) -> Path:
    """Bundle cache shared by test_profiler / test_report / test_evaluate within one session."""
    return tmp_path_factory.getbasetemp() / "osnet_edge_report_work"


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    work = shared_work(tmp_path_factory)
    out = tmp_path_factory.mktemp("profile_cli")
    cmd = [sys.executable, str(REPO / "scripts" / "profile.py"), "--width", "0.25", "--res", "0.25",
           "--runtime", "onnxruntime", "--precision", "fp32", "--batch", "1", "2", "--budget-s", "0.02",
           "--warmup", "1", "--min-iters", "3", "--max-iters", "20", "--weights", "none", "--threads", "1",
           "--work", str(work), "--json", str(out / "rows.json"), "--csv", str(out / "rows.csv"), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"work": work, "json": out / "rows.json", "csv": out / "rows.csv", "stdout": proc.stdout}


def test_cli_rows_follow_the_contract(cli_run):
    rows = json.loads(cli_run["json"].read_text())
    assert len(rows) == 4  # batch 1, 2 x mode extractor, runtime
    assert {(r["batch"], r["mode"]) for r in rows} == {(1, "extractor"), (1, "runtime"), (2, "extractor"),
                                                       (2, "runtime")}
    counts = count_row(0.25, 0.25)
    for r in rows:
        assert set(LATENCY_FIELDS) <= set(r)
        assert {k: r[k] for k in COUNT_FIELDS} == counts  # counts straight from the bundle manifest
        assert round(counts["macs"] / 1e6, 1) == 5.2       # the paper's Table 6 value
        assert (r["runtime"], r["precision"], r["threads"], r["device"]) == ("onnxruntime", "fp32", 1, "cpu")
        assert r["threads_used"] == 1   # read back from the ONNX Runtime session
        assert 0 < r["latency_ms_min"] <= r["latency_ms_p50"] <= r["latency_ms_p90"]
        # img/s from the statistic of the latency column beside it (p50), not from the mean
        assert r["throughput_ips"] == pytest.approx(r["batch"] * 1e3 / r["latency_ms_p50"], rel=1e-3)
        assert 3 <= r["iterations"] <= 20
        assert r["weights"] == "random" and r["peer"] is False
        assert r["cpu"] and r["cores"] >= 1 and r["runtime_version"]
    assert "machine:" in cli_run["stdout"] and "x0.25@0.25" in cli_run["stdout"]
    # CSV holds the same rows (types restored on reading)
    csv_rows = read_rows(cli_run["csv"])
    assert [row_key(r) for r in csv_rows] == [row_key(r) for r in rows]
    assert [r["latency_ms_p50"] for r in csv_rows] == [r["latency_ms_p50"] for r in rows]


def test_rerun_resumes_and_measures_only_missing_rows(cli_run, tmp_path):
    rows = json.loads(cli_run["json"].read_text())
    path = tmp_path / "rows.json"
    kept = [r for r in rows if not (r["batch"] == 2 and r["mode"] == "runtime")]
    path.write_text(json.dumps(kept))
    store = RowStore(path)
    assert len(store.rows) == 3
    crops = synthetic_crops(8)
    result = profile_grid([TINY], crops, cli_run["work"], batches=(1, 2), threads=1, weights=WeightsMap(),
                          budget=FAST, store=store, progress=False)
    assert not result.skipped
    after = json.loads(path.read_text())
    assert len(after) == 4
    by_key = {row_key(r): r for r in after}
    for r in kept:  # untouched: a re-measurement would give other timings
        assert by_key[row_key(r)]["latency_ms_p50"] == r["latency_ms_p50"]
        assert by_key[row_key(r)]["iterations"] == r["iterations"]
    assert (2, "runtime") in {(r["batch"], r["mode"]) for r in after}
    # everything present: nothing measured, same file content
    before = path.read_text()
    again = profile_grid([TINY], crops, cli_run["work"], batches=(1, 2), threads=1, budget=FAST,
                         store=RowStore(path), progress=False)
    assert path.read_text() == before and len(again.rows) == 4
    # rows measured on another CPU are not this machine's: measured again, kept side by side
    other = tmp_path / "other.json"
    other.write_text(json.dumps([{**r, "cpu": "Some Other CPU"} for r in rows]))
    mixed = profile_grid([TINY], crops, cli_run["work"], batches=(1, 2), threads=1, budget=FAST,
                         store=RowStore(other), progress=False)
    assert len(json.loads(other.read_text())) == 8 and len(mixed.rows) == 4
    assert all(r["cpu"] != "Some Other CPU" for r in mixed.rows)


def test_bundle_cache_is_reused(cli_run):
    first = ensure_bundle(cli_run["work"], TINY)
    second = ensure_bundle(cli_run["work"], TINY)
    assert first.path == second.path
    assert first.manifest["created"] == second.manifest["created"]  # not re-exported
    assert first.path.name.endswith("_random0")


def test_random_weights_are_seeded(cli_run):
    """All runtimes/precisions of a random-weights config hold the same network (else fidelity is void)."""
    import torch

    from osnet_edge.extractor import Extractor
    from osnet_edge.models import build_osnet
    from osnet_edge.profiler import RANDOM_WEIGHTS_SEED

    torch.manual_seed(RANDOM_WEIGHTS_SEED)
    model = build_osnet(0.25).eval()
    crops = synthetic_crops(4)
    with Extractor(ensure_bundle(cli_run["work"], TINY), threads=1) as ext:
        feats = ext(crops)
        with torch.inference_mode():
            ref = model(torch.from_numpy(ext.model_input(crops))).numpy()
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert np.min(np.sum(feats * ref, axis=1)) > 0.9999


def test_grid_skips_what_cannot_run_here_with_reasons(cli_run, tmp_path):
    points = [GridPoint(0.25, 0.25, "onnxruntime", "int8"), GridPoint(0.25, 0.25, "onnxruntime", "bf16"),
              GridPoint(0.25, 0.25, "tensorrt", "fp32")]
    from osnet_edge import runtimes
    result = profile_grid(points, synthetic_crops(4), cli_run["work"], threads=1, budget=FAST,
                          calibration=CalibrationProvider(None), store=RowStore(tmp_path / "r.json"), progress=False)
    reasons = {s["config"]: s["reason"] for s in result.skipped}
    assert "--calib" in reasons["x0.25@0.25 onnxruntime/int8"]
    assert "onnxruntime has no bf16" in reasons["x0.25@0.25 onnxruntime/bf16"]
    if "tensorrt" not in runtimes.available():
        assert "not available" in reasons["x0.25@0.25 tensorrt/fp32"]
    assert result.rows == [] and not (tmp_path / "r.json").exists()


def test_measure_embedder_times_both_modes_separately():
    calls = {"call": 0, "infer": 0, "prep": 0}

    class Slow:
        def __call__(self, crops):
            calls["call"] += 1
            return np.zeros((len(crops), 4), np.float32)

        def model_input(self, crops):
            calls["prep"] += 1
            return np.zeros((len(crops), 3, 2, 2), np.float32)

        def infer_raw(self, batch):
            calls["infer"] += 1
            return np.zeros((len(batch), 4), np.float32)

    rows = measure_embedder(Slow(), synthetic_crops(5), batches=(1, 4), budget=FAST)
    assert [(r["batch"], r["mode"]) for r in rows] == [(1, "extractor"), (1, "runtime"), (4, "extractor"),
                                                      (4, "runtime")]
    # the runtime mode prepares its inputs once, outside the timed calls
    assert calls["prep"] <= 4 + 2 and calls["infer"] >= 2 * 4 and calls["call"] >= 2 * 4
    with pytest.raises(ValueError, match="modes"):
        measure_embedder(Slow(), synthetic_crops(2), modes=("bogus",))
    with pytest.raises(ValueError, match="batch"):
        measure_embedder(Slow(), synthetic_crops(2), batches=(0,))


def test_time_calls_honours_the_budget():
    n = []
    t = time_calls(lambda i: n.append(i), TimingBudget(seconds=10.0, warmup=2, min_iters=1, max_iters=7))
    assert len(t) == 7 and n == list(range(9))  # 2 warm-up + 7 timed, indices keep counting
    t = time_calls(lambda i: None, TimingBudget(seconds=0.0, warmup=0, min_iters=4, max_iters=100))
    assert len(t) == 4
    for bad in (dict(seconds=-1), dict(min_iters=5, max_iters=2), dict(warmup=-1), dict(max_iters=0)):
        with pytest.raises(ValueError):
            TimingBudget(**bad)


def test_latency_stats_values():
    s = latency_stats(np.array([1.0, 2.0, 3.0, 4.0, 10.0]), batch=4)
    assert s["latency_ms_p50"] == 3.0 and s["latency_ms_min"] == 1.0 and s["latency_ms_mean"] == 4.0
    assert s["latency_ms_p90"] == pytest.approx(7.6)
    assert s["throughput_ips"] == pytest.approx(4 * 1000 / 3.0, abs=0.01) and s["iterations"] == 5  # batch / p50
    with pytest.raises(ValueError):
        latency_stats(np.array([]), 1)


def test_row_key_and_files(tmp_path):
    row = {"variant": "osnet", "width": 0.25, "res": 1.0, "runtime": "onnxruntime", "precision": "fp32", "batch": 1,
           "threads": 2, "device": "cpu", "mode": "runtime", "latency_ms_p50": 1.5, "peer": False, "gpu": None,
           "cpu": "Test CPU"}
    as_csv = {k: str(v) if v is not None else "" for k, v in row.items()}   # what a CSV cell holds
    as_csv["res"] = "1"
    assert row_key(row) == row_key(as_csv)
    assert row_key(row) != row_key({**row, "mode": "extractor"})
    store = RowStore(tmp_path / "a.json", tmp_path / "a.csv")
    store.add(row)
    store.add({**row, "latency_ms_p50": 2.5})          # same key: replaced, not duplicated
    assert len(read_rows(tmp_path / "a.json")) == 1
    back = read_rows(tmp_path / "a.csv")[0]
    assert back["latency_ms_p50"] == 2.5 and back["peer"] is False and back["gpu"] is None
    assert set(KEY_FIELDS) <= set(back)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        RowStore(tmp_path / "bad.json")


def test_grid_points_and_weights_map(tmp_path):
    pts = grid_points([1.0, 0.25], [1.0], ["onnxruntime", "openvino"], ["fp32", "int8"])
    assert len(pts) == 8 and pts[0] == GridPoint(1.0, 1.0, "onnxruntime", "fp32")
    with pytest.raises(ValueError):
        grid_points([], [1.0], ["onnxruntime"], ["fp32"])
    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    a.write_bytes(b"x"), b.write_bytes(b"y")
    wm = WeightsMap({0.25: str(a)}, {(0.25, 0.5): str(b)})
    assert wm(0.25, 1.0) == str(a) and wm(0.25, 0.5) == str(b) and wm(1.0, 1.0) is None
    assert wm.base(0.25) == str(a) and wm.is_override(0.25, 0.5) and not wm.is_override(0.25, 1.0)
    with pytest.raises(FileNotFoundError):
        WeightsMap({0.25: str(tmp_path / "missing.pth")})


def test_machine_description_is_torch_free():
    code = ("import sys, json; from osnet_edge.machine import describe_machine, machine_summary; "
            "import osnet_edge.profiler, osnet_edge.report; d = describe_machine(); "
            "print(json.dumps({'torch': 'torch' in sys.modules, 'd': d, 's': machine_summary(d)}))")
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                                    check=True).stdout)
    assert out["torch"] is False
    d = out["d"]
    assert {"cpu", "cpu_flags", "physical_cores", "gpus", "versions"} <= set(d)
    assert d["physical_cores"] >= 1 and "numpy" in d["versions"]
    assert all(f in out["s"] for f in d["cpu_flags"])


def test_weights_arguments(tmp_path):
    import torch

    from osnet_edge.models import build_osnet
    from osnet_edge.profiler import parse_weights_arg, parse_weights_for_arg, weights_map_from_args

    assert parse_weights_arg("a.pth") == (None, "a.pth") and parse_weights_arg("0.5=a.pth") == (0.5, "a.pth")
    assert parse_weights_for_arg("0.5=a.pth") == (None, 0.5, "a.pth")
    assert parse_weights_for_arg("0.25@0.5=a.pth") == (0.25, 0.5, "a.pth")
    assert parse_weights_for_arg("a.pth") == (None, None, "a.pth")
    with pytest.raises(ValueError):
        parse_weights_for_arg("half=a.pth")
    sd = build_osnet(0.5).state_dict()
    plain, adapted = tmp_path / "plain.pth", tmp_path / "adapted.pth"
    torch.save(sd, plain)
    torch.save({"state_dict": sd, "adaptation": {"width": 0.5, "res": 0.5}}, adapted)
    wm = weights_map_from_args([str(plain)], [str(adapted)])   # widths / resolution read from the files
    assert wm(0.5, 1.0) == str(plain) and wm(0.5, 0.5) == str(adapted) and wm.is_override(0.5, 0.5)
    with pytest.raises(ValueError, match="adaptation record"):
        weights_map_from_args(["none"], [str(plain)])
    assert weights_map_from_args(["none"], None)(0.25, 1.0) is None
