"""Trade-off reports: rendering from synthetic rows (files, Pareto frontier, budget, INT8 flag),
and a small real run (accuracy only for trained weights, compatibility matrix, fidelity)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from osnet_edge.profiler import GridPoint, RowStore, TimingBudget, WeightsMap
from osnet_edge.report import (ReportData, int8_comparisons, pareto_front, recommend, render_markdown, run_report,
                               tradeoff_points, write_report)
from osnet_edge.samples import synthetic_crops

REPO = Path(__file__).resolve().parents[1]
FAST = TimingBudget(seconds=0.02, warmup=1, min_iters=3, max_iters=20)
MACHINE = {"cpu": "Test CPU 9000", "arch": "x86_64", "cpu_flags": ["avx2", "avx512_vnni"], "hypervisor": False,
           "physical_cores": 4, "logical_cpus": 8, "gpus": [], "versions": {"onnxruntime": "1.0"}}
MACS = {(1.0, 1.0): 978_900_000, (0.25, 1.0): 82_300_000, (0.25, 0.5): 20_600_000}


def row(width, res, runtime, precision, p50, p90=None, batch=1, mode="extractor", weights="random", peer=False,
        variant="osnet"):
    return {"variant": variant, "width": None if peer else width, "res": None if peer else res,
            "input_h": 256 if peer else round(256 * res), "input_w": 128 if peer else round(128 * res),
            "params": None if peer else 1000, "macs": None if peer else MACS[(width, res)], "runtime": runtime,
            "precision": precision, "batch": batch, "threads": 4, "device": "cpu", "mode": mode,
            "latency_ms_p50": p50, "latency_ms_p90": p90 or p50 * 1.2, "latency_ms_mean": p50,
            "latency_ms_min": p50 * 0.9, "throughput_ips": batch * 1e3 / p50, "iterations": 10, "weights": weights,
            "peer": peer, "cpu": "Test CPU 9000", "cpu_flags": "avx2 avx512_vnni", "cores": 4, "gpu": None}


def acc(width, res, runtime, precision, protocol, m, weights="msmt17", peer=False, variant="osnet", role="grid"):
    return {"variant": variant, "width": None if peer else width, "res": None if peer else res, "runtime": runtime,
            "precision": precision, "weights": weights, "peer": peer, "protocol": protocol, "role": role,
            "rank1": m + 1, "rank5": m + 10, "rank10": m + 15, "mAP": m, "num_query": 10, "num_gallery": 10}


def synthetic_data(with_accuracy: bool = True) -> ReportData:
    rows = []
    lat = {("onnxruntime", "fp32"): 1.0, ("onnxruntime", "int8"): 0.6, ("openvino", "fp32"): 0.9,
           ("openvino", "int8"): 1.3}  # openvino int8 slower than fp32: must be flagged
    for (w, r), base in {(1.0, 1.0): 20.0, (0.25, 1.0): 4.0, (0.25, 0.5): 1.5}.items():
        for (rt, p), f in lat.items():
            weights = "random" if w == 1.0 else "msmt17"
            for mode, k in (("extractor", 1.0), ("runtime", 0.8)):
                rows.append(row(w, r, rt, p, round(base * f * k, 3), weights=weights, mode=mode))
    rows.append(row(None, None, "openvino", "fp32", 8.0, peer=True, variant="omz-0287-fp32", weights="omz.xml"))
    accuracy = []
    if with_accuracy:
        for (w, r), m in {(0.25, 1.0): 41.0, (0.25, 0.5): 17.0}.items():
            for rt, p in lat:
                for proto, shift in (("cuhk03-val", 0.0), ("cuhk01-test", 18.0)):
                    accuracy.append(acc(w, r, rt, p, proto, m + shift - (1.0 if p == "int8" else 0.0)))
        accuracy += [acc(None, None, "openvino", "fp32", "cuhk03-val", 73.0, peer=True, variant="omz-0287-fp32"),
                     acc(None, None, "openvino", "fp32", "cuhk01-test", 88.0, peer=True, variant="omz-0287-fp32")]
        accuracy += [acc(0.25, 0.5, "onnxruntime", "fp32", p, 5.0, role="before-adaptation")
                     for p in ("cuhk03-val", "cuhk01-test")]
    fidelity = [{"variant": "osnet", "width": 1.0, "res": 1.0, "runtime": "openvino", "precision": "int8",
                 "weights": "random", "peer": False, "reference": "onnxruntime/fp32", "cosine_mean": 0.99,
                 "cosine_min": 0.95, "cosine_p1": 0.96, "max_abs_diff": 0.1, "num_images": 10}]
    return ReportData(machine=MACHINE, rows=rows, accuracy=accuracy, fidelity=fidelity,
                      skipped=[{"config": "x0.25@1 tensorrt/fp32", "reason": "runtime tensorrt is not available"}],
                      settings={"threads": 4, "budget_s": 0.5, "warmup": 3})


def is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_report_files_from_synthetic_rows(tmp_path):
    data = synthetic_data()
    paths = write_report(data, tmp_path, budget_ms=3.0)
    for key in ("md", "csv", "json", "plot_map", "plot_macs"):
        assert paths[key].is_file(), key
    assert is_png(paths["plot_map"]) and is_png(paths["plot_macs"])
    md = paths["md"].read_text()
    assert "Test CPU 9000" in md and "avx512_vnni" in md                       # hardware stated
    assert "978.9M" in md and "82.3M" in md                                     # Table-6-like counts
    assert "![Latency vs mAP](tradeoff_map.png)" in md
    assert "No trained weights (not evaluated): x1@1" in md                     # no fake accuracy
    accuracy_section = md.split("## Accuracy")[1].split("## Fidelity")[0]
    assert "| x1@1 |" not in accuracy_section
    assert "before (trained at 256x128)" in md and "after adaptation" in md
    assert "omz-0287-fp32" in md and "tensorrt is not available" in md
    # CSV: one line per latency row, accuracy joined only where measured
    import csv
    lines = list(csv.DictReader(paths["csv"].open()))
    assert len(lines) == len(data.rows)
    x1 = [l for l in lines if l["config"] == "x1@1"]
    assert x1 and all(l.get("cuhk03-val_mAP", "") == "" for l in x1)
    x025 = [l for l in lines if l["config"] == "x0.25@1" and l["runtime"] == "onnxruntime" and l["precision"] == "fp32"]
    assert float(x025[0]["cuhk03-val_mAP"]) == 41.0
    # report.json re-renders to the same Markdown (--from)
    again = ReportData.from_json(json.loads(paths["json"].read_text()))
    assert render_markdown(again, 3.0, plots={"Latency vs mAP": "tradeoff_map.png",
                                              "Latency vs mult-adds": "tradeoff_macs.png"}) == md


def test_int8_not_faster_is_flagged():
    data = synthetic_data()
    comps = int8_comparisons(data.rows)
    assert len(comps) == 12  # 3 models x 2 runtimes x 2 modes
    slow = [c for c in comps if not c["beats"]]
    assert {c["runtime"] for c in slow} == {"openvino"} and len(slow) == 6
    assert all(c["speedup"] < 1 for c in slow) and all(c["speedup"] > 1 for c in comps if c["beats"])
    md = render_markdown(data)
    assert "INT8 does not beat FP32 in 6 of 12 comparisons" in md
    assert md.count("**INT8 not faster**") == 6
    assert "INT8 accuracy cost" in md and "x0.25@1 onnxruntime -1.0" in md


def test_pareto_front():
    pts = [(1, 10), (2, 20), (3, 15), (4, 30), (5, 30), (2, 20), (0.5, 5), (6, float("nan"))]
    assert pareto_front(pts) == [6, 0, 1, 5, 3]          # (3,15) and (5,30) dominated; equal twins both stay
    # the same network on two runtimes: accuracies equal up to rounding -> only the faster is on the frontier
    assert pareto_front([(1.0, 21.70), (2.0, 21.71)], y_tol=0.05) == [0]
    assert pareto_front([(1.0, 21.70), (2.0, 21.71)]) == [0, 1]
    assert pareto_front([]) == []
    with pytest.raises(ValueError):
        pareto_front([(1, 1)], y_tol=-1)
    data = synthetic_data()
    pts = tradeoff_points(data, y="mAP")
    front = {(p["label"], p["runtime"], p["precision"]) for p in pts if p.get("frontier")}
    # no point beats a frontier point; every other point is beaten by a frontier point
    for p in pts:
        beaten = any(q["latency_ms_p50"] <= p["latency_ms_p50"] and q["y"] >= p["y"] - 0.05
                     and (q["latency_ms_p50"] < p["latency_ms_p50"] or q["y"] > p["y"] + 0.05) for q in pts)
        assert beaten != ((p["label"], p["runtime"], p["precision"]) in front)
    assert ("omz-0287-fp32", "openvino", "fp32") in front
    assert all(p["label"] != "x1@1" for p in pts)  # random weights: not on an accuracy plot


def cand(label, p90, y, runtime="onnxruntime", precision="fp32", peer=False):
    return {"label": label, "runtime": runtime, "precision": precision, "peer": peer, "latency_ms_p50": p90 / 1.2,
            "latency_ms_p90": p90, "y": y, "batch": 1}


def test_budget_recommendation():
    cands = [cand("big", 10.0, 60.0), cand("mid", 4.0, 50.0), cand("mid", 3.0, 50.02, "openvino"),
             cand("small", 1.0, 20.0), cand("peer", 2.0, 70.0, "openvino", peer=True)]
    rec = recommend(cands, budget_ms=5.0)
    c = rec["choice"]
    assert (c["label"], c["runtime"]) == ("mid", "openvino")  # ties (within 0.05) go to the faster
    why = {r["config"]: r["reason"] for r in rec["reasons"]}
    assert why["big onnxruntime/fp32"].startswith("over budget: p90 10.00 ms > 5 ms")
    assert why["small onnxruntime/fp32"].startswith("less accurate")
    assert why["mid onnxruntime/fp32"].startswith("as accurate")
    assert [p["label"] for p in rec["peers_better"]] == ["peer"]
    # p50 lets the big one in (10/1.2 = 8.3 ms > 5, still out); a larger budget picks it
    assert recommend(cands, 12.0)["choice"]["label"] == "big"
    none = recommend(cands, 0.5)
    assert none["choice"] is None and all(r["reason"].startswith("over budget") for r in none["reasons"])
    with pytest.raises(ValueError):
        recommend(cands, 0)
    with pytest.raises(ValueError):
        recommend(cands, 1.0, stat="p99")
    md = render_markdown(synthetic_data(), budget_ms=3.0)
    rec_md = md.split("## Recommendation")[1]
    # within 3 ms p90: x0.25@1 onnxruntime/int8 (2.88 ms, mAP 49) beats every x0.25@0.5 (mAP <= 26);
    # the fp32 x0.25@1 settings (mAP 50) are over budget
    assert "**Recommended: x0.25@1 on onnxruntime/int8**" in rec_md
    assert "x0.25@1 onnxruntime/fp32: over budget: p90 4.80 ms > 3 ms" in rec_md
    assert "x0.25@0.5 onnxruntime/fp32: less accurate: mAP 26.0 < 49.0" in rec_md
    assert "Not considered (no trained weights, accuracy unknown)" in rec_md


def test_int8_slower_than_its_fp32_is_never_recommended():
    """x0.25 INT8 is slower than FP32 on many CPUs: with more accuracy it would win the rule, but
    is refused with the measured reason; the same INT8 faster than its FP32 stays eligible."""
    slow = [cand("x0.25", 3.0, 50.0), cand("x0.25", 3.5, 50.2, precision="int8")]
    rec = recommend(slow, budget_ms=5.0)
    assert rec["choice"]["precision"] == "fp32"
    why = {r["config"]: r["reason"] for r in rec["reasons"]}
    assert why["x0.25 onnxruntime/int8"].startswith("INT8 slower than FP32 on this machine: p90 3.50 ms >= 3.00 ms")
    fast = [cand("x0.25", 3.0, 50.0), cand("x0.25", 2.0, 50.2, precision="int8")]
    assert recommend(fast, budget_ms=5.0)["choice"]["precision"] == "int8"


def test_without_labels_shows_fidelity_and_says_why(tmp_path):
    data = synthetic_data(with_accuracy=False)
    paths = write_report(data, tmp_path, budget_ms=5.0)
    assert "plot_map" not in paths and is_png(paths["plot_macs"])
    md = paths["md"].read_text()
    assert "accuracy needs labelled person crops" in md
    assert "## Fidelity to FP32" in md and "0.9900" in md
    assert "mult-adds stand in for accuracy" in md
    # most mult-adds within 5 ms p90: the x0.25@1 settings tie on mult-adds, the fastest (int8 onnxruntime) wins
    assert "**Recommended: x0.25@1 on onnxruntime/int8**" in md


def test_profile_rows_json_renders_via_cli(tmp_path):
    rows = synthetic_data(with_accuracy=False).rows
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "report.py"), "--from", str(tmp_path / "rows.json"),
                           "--out", str(out), "--budget-ms", "2"], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (out / "report.md").is_file() and (out / "tradeoff_macs.png").is_file()
    assert "Test CPU 9000" in (out / "report.md").read_text()  # hardware taken from the rows
    assert "Recommended: x0.25@0.5" in proc.stdout
    bad = subprocess.run([sys.executable, str(REPO / "scripts" / "report.py"), "--from", str(tmp_path / "nope.json"),
                          "--out", str(out)], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert bad.returncode == 1 and bad.stderr.startswith("error:")


# ------------------------------------------------------------------------- a small real run

def fake_shared_data(root: Path, ids: int = 6) -> Path:
    """cuhk03/detected/val in CUHK03 naming: per id 2 camera-A and 2 camera-B near-duplicates."""
    folder = root / "cuhk03" / "detected" / "val"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for pid, base in enumerate(synthetic_crops(ids, seed=3, min_h=64, max_h=96)):
        for idx in (0, 1, 5, 6):
            noisy = np.clip(base.astype(int) + rng.integers(-4, 5, base.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(folder / f"{pid:04d}_{idx:02d}.png"), noisy)
    return root


def shared_checkpoint(tmp_path_factory) -> Path:
    """A seeded x0.25 state_dict standing in for a trained checkpoint (same file as test_evaluate's)."""
    import torch

    from osnet_edge.models import build_osnet

    path = tmp_path_factory.getbasetemp() / "osnet_edge_report_work" / "x025_seed7.pth"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(7)
        torch.save(build_osnet(0.25).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "osnet_edge_report_work"  # shared with test_profiler


def test_run_report_random_weights_get_no_accuracy(tmp_path, work):
    root = fake_shared_data(tmp_path / "data")
    data = run_report([GridPoint(0.25, 0.25, "onnxruntime", "fp32")], synthetic_crops(6), work,
                      weights=WeightsMap(), budget=FAST, threads=1, data_root=root, peers=True,
                      store=RowStore(tmp_path / "rows.json"), progress=False)
    assert data.settings["protocols"] == ["cuhk03-val"]   # cuhk01 absent: skipped, no crash
    assert data.accuracy == [] and len(data.rows) == 2
    assert any("No configuration had trained weights" in n for n in data.notes)
    md = write_report(data, tmp_path / "out")["md"].read_text()
    assert "No configuration had trained weights" in md and "rank-1 |" not in md


def test_run_report_trained_weights_accuracy_compat_fidelity(tmp_path, work, tmp_path_factory):
    ckpt = shared_checkpoint(tmp_path_factory)   # a seeded state_dict stands in for a trained checkpoint
    root = fake_shared_data(tmp_path / "data")
    points = [GridPoint(0.25, 0.25, "onnxruntime", "fp32"), GridPoint(0.25, 0.25, "openvino", "fp32")]
    data = run_report(points, synthetic_crops(6), work, weights=WeightsMap({0.25: str(ckpt)}), budget=FAST,
                      threads=1, batches=(1,), modes=("extractor",), data_root=root, peers=False,
                      store=RowStore(tmp_path / "rows.json"), progress=False)
    assert not data.skipped
    assert {(a["runtime"], a["protocol"]) for a in data.accuracy} == {("onnxruntime", "cuhk03-val"),
                                                                      ("openvino", "cuhk03-val")}
    for a in data.accuracy:
        assert a["weights"] == "x025_seed7" and a["num_query"] == 12 and 0 <= a["mAP"] <= 100
    maps = [a["mAP"] for a in data.accuracy]
    assert maps[0] == pytest.approx(maps[1], abs=0.5)
    (fid,) = data.fidelity
    assert fid["runtime"] == "openvino" and fid["reference"] == "onnxruntime/fp32" and fid["cosine_mean"] > 0.999
    (compat,) = data.compat
    assert compat["members"] == ["onnxruntime/fp32", "openvino/fp32"]
    assert np.allclose(compat["cosine"], 1.0, atol=1e-3)
    cross = np.array(compat["cross_map"])
    assert cross[0, 0] == pytest.approx(maps[0], abs=1e-6)   # diagonal = the plain evaluation
    assert np.allclose(cross, cross[0, 0], atol=1.0)
    paths = write_report(data, tmp_path / "out", budget_ms=1000)
    md = paths["md"].read_text()
    assert "## Embedding compatibility" in md and "Cross-retrieval mAP" in md and "Recommended: x0.25@0.25" in md
    assert is_png(paths["plot_map"])
