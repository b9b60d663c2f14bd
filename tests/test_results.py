"""The README's and docs' results tables are the rendering of docs/results/results.json (scripts/results.py).

Nothing is measured here: the committed tables must equal what the committed JSON renders to, so a number
edited by hand (or a JSON updated without re-rendering) fails this test.
"""
from __future__ import annotations

import copy
import json
import re
import shutil

import pytest

from .conftest import REPO, load_script

results = load_script("results.py", "script_results")
RESULTS = json.loads((REPO / results.RESULTS_JSON).read_text(encoding="utf-8"))
# Which block each including file must carry (a file that drops its markers would silently stop updating).
REQUIRED_BLOCKS = {"README.md": {"readme", "table6"}, "docs/benchmark.md": {"details", "ablation"}, "docs/int8.md": {"int8"},
                   "docs/adaptation.md": {"table6", "curve"}}


def block_names(text: str) -> set[str]:
    return {m["name"] for m in results.BLOCK.finditer(text)}


def test_committed_tables_equal_the_rendering_of_the_committed_json():
    blocks = results.render_all(RESULTS)
    assert (REPO / results.TABLES_MD).read_text(encoding="utf-8") == results.tables_page(blocks)
    for rel in results.INCLUDING_FILES:
        text = (REPO / rel).read_text(encoding="utf-8")
        assert REQUIRED_BLOCKS[rel] <= block_names(text), f"{rel} lost its results markers"
        assert results.stale_blocks(text, blocks) == [], f"{rel}: table differs from results.json (run " \
                                                         "python scripts/results.py --render-only)"


def test_a_number_edited_by_hand_is_caught(tmp_path):
    blocks = results.render_all(RESULTS)
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    body = next(m for m in results.BLOCK.finditer(readme) if m["name"] == "readme")
    # change the first rank-1 figure of the table (e.g. "91.5 / 77.4" -> "92.5 / 77.4")
    pair = re.search(r"\| (\d+)\.(\d) / ", readme[body.start("body"):body.end("body")])
    assert pair, "the README results block has no rank-1 / mAP cell"
    at = body.start("body") + pair.start(1)
    edited = readme[:at] + str(int(pair[1]) + 1) + readme[at + len(pair[1]):]
    assert edited != readme
    assert results.stale_blocks(edited, blocks) == ["readme"]
    assert results.rewrite_blocks(edited, blocks) == readme  # --render-only puts the measured number back


def test_render_only_rewrites_the_files_from_the_json(tmp_path):
    for rel in (*results.INCLUDING_FILES, str(results.RESULTS_JSON)):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, tmp_path / rel)
    changed = copy.deepcopy(RESULTS)
    first = changed["models"][0]["bundles"][0]
    first["market1501"]["rank1"] = 12.34
    written = results.render_files(tmp_path, changed)
    assert tmp_path / "README.md" in written
    readme = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "| 12.3 / " in readme and results.stale_blocks(readme, results.render_all(changed)) == []
    results.render_files(tmp_path, RESULTS)  # and back
    assert (tmp_path / "README.md").read_text(encoding="utf-8") == (REPO / "README.md").read_text(encoding="utf-8")


def test_the_committed_run_measured_what_the_readme_says():
    """One run: every bundle of the table on the full protocol, both batch sizes, calibration on the train split."""
    assert RESULTS["calibration"].startswith("market1501/bounding_box_train")
    configs = {(b["runtime"], b["precision"]) for b in RESULTS["models"][0]["bundles"]}
    missing = set(tuple(c.split(":")) for c in RESULTS.get("not_measured", {}).get("configs", []))
    assert configs | missing == set(results.CONFIGS) and not configs & missing  # a partial run says what it lacks
    if missing:
        assert RESULTS["not_measured"]["why"] and "Not in this run" in results.render_all(RESULTS)["readme"]
    for model in RESULTS["models"]:
        for b in model["bundles"]:
            m = b["market1501"]
            assert (m["num_query"], m["num_gallery"], m["metric"]) == (3368, 15913, "cosine")
            assert 0 < m["mAP"] <= m["rank1"] <= 100
            assert set(b["latency"]) == {"1", "8"} and all(v["p50_ms"] > 0 for v in b["latency"].values())
            assert ("int8_fidelity" in b) == (b["precision"] == "int8")  # held-out fidelity from the manifest
    assert RESULTS["machine"]["cpu_flags"] and RESULTS["versions"]["osnet_edge"]


def test_paper_values_are_quoted_from_the_paper_text():
    paper = REPO.parent / "shared" / "paper" / "osnet.txt"
    if not paper.is_file():
        pytest.skip(f"paper text not here ({paper})")
    assert results.paper_rows(paper) == RESULTS["paper"]["rows"]
    assert RESULTS["paper"]["rows"]["0.25@1"]["line"] in paper.read_text(encoding="utf-8")


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="osnet-edge-results"):
        results.render_all({"models": []})
    text = "<!-- results:nosuch begin -->\nx\n<!-- results:nosuch end -->\n"
    with pytest.raises(ValueError, match="unknown results block 'nosuch'"):
        results.rewrite_blocks(text, results.render_all(RESULTS))


def test_readme_stays_short():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 260, f"README.md has {len(lines)} lines; move detail to a docs/ page"


def _adapt_line(res: float, rank1: float, mAP: float, init=None) -> dict:
    """One line as scripts/adapt_experiment.py --json writes it (the fields the Table 6 section reads)."""
    argv = ["--res", str(res), "--budget-min", "58", "--threads", "1"] + (["--init", init] if init else [])
    return {"argv": argv, "res": res, "adapted": {"market1501": {"rank1": rank1, "mAP": mAP, "rank5": 95.0,
                                                                   "rank10": 97.0, "metric": "cosine"}},
            "checkpoint": "/nonexistent/x.pth", "wall_s": 3480.0, "cpu_s": 3300.0, "threads": 1, "epochs": 21.5,
            "steps": 4300, "teacher_seconds": 120.0, "epoch_seconds": [100.0, 200.0, 300.0], "loadavg_start": [2.0, 2.0, 2.0], "loadavg_end": [2.1, 2.0, 2.0],
            "machine": {"cpu": "Some CPU", "flags": ["avx2"]}}


def test_adaptation_runs_render_against_the_paper(tmp_path):
    runs = tmp_path / "runs.jsonl"
    runs.write_text("\n".join(json.dumps(x) for x in (_adapt_line(0.5, 89.01, 72.34),
                                                      _adapt_line(0.25, 78.0, 55.5, init="/r/x025_r05.pth"))) + "\n")
    int8 = tmp_path / "int8.json"
    int8.write_text(json.dumps({"weights": "/r/x.pth", "cpu_flags": ["avx2"], "rows": [  # the run's checkpoint name
        {"backend": "onnxruntime", "res": 0.5, "protocol": "market1501", "max_drop": 0.12, "meets_targets": True},
        {"backend": "openvino", "res": 0.5, "protocol": "market1501", "max_drop": 0.41, "meets_targets": False}]}))
    snapshot = tmp_path / "curve_r05_epoch_02.json"
    snapshot.write_text(json.dumps({"model": "torch osnet x0.25 @ 128x64", "results": [
        {"data": "market1501", "rank1": 80.5, "mAP": 60.25}]}))
    section = results.read_adaptation([str(runs), str(int8), str(snapshot)])
    assert section["curve"] == [{"input": [128, 64], "epoch": 2, "rank1": 80.5, "mAP": 60.25, "minutes": 5.0}]
    assert "| 128×64 | 2 | 5 | 80.50 / 60.25 |" in results.render_curve({**RESULTS, "adaptation": section})
    assert [r["res"] for r in section["runs"]] == [0.5, 0.25] and section["runs"][1]["init"] == "x025_r05.pth"
    body = results.render_table6({**RESULTS, "adaptation": section})
    row = next(line for line in body.splitlines() if line.startswith("| 128×64"))
    paper = RESULTS["paper"]["rows"]["0.25@0.5"]
    assert f"89.01 / 72.34 | {89.01 - paper['rank1']:+.2f} / {72.34 - paper['mAP']:+.2f}" in row
    assert "0.12 / 0.41 (miss)" in row and "58 min wall" in row and "4,300 steps" in row
    assert "from x025_r05.pth" in next(line for line in body.splitlines() if line.startswith("| 64×32"))
    with pytest.raises(results.CliError, match="not an adapt_experiment"):
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"a": 1}\n{"b": 2}\n')
        results.read_adaptation([str(bad)])


def test_a_new_run_replaces_only_its_own_row_and_what_hangs_on_it(tmp_path):
    def section(*lines, int8=(), curve=()):
        runs = tmp_path / f"runs{len(list(tmp_path.iterdir()))}.jsonl"
        runs.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
        files = [str(runs)]
        for weights, res, drop in int8:
            f = tmp_path / f"int8_{len(list(tmp_path.iterdir()))}.json"
            f.write_text(json.dumps({"weights": weights, "rows": [{"backend": "onnxruntime", "res": res,
                                                                   "protocol": "market1501", "max_drop": drop,
                                                                   "meets_targets": drop <= 0.3}]}))
            files.append(str(f))
        for epoch, size in curve:
            f = tmp_path / f"c{len(list(tmp_path.iterdir()))}_epoch_{epoch:02d}.json"
            f.write_text(json.dumps({"model": f"torch osnet x0.25 @ {size}", "results": [
                {"data": "market1501", "rank1": 50.0 + epoch, "mAP": 40.0}]}))
            files.append(str(f))
        return results.read_adaptation(files)

    old = section(_adapt_line(0.75, 90.2, 76.2), _adapt_line(0.5, 88.9, 73.7),
                  int8=[("x.pth", 0.75, 0.24), ("x.pth", 0.5, 0.25)], curve=[(3, "192x96"), (3, "128x64")])
    new_line = {**_adapt_line(0.75, 91.7, 77.9), "checkpoint": "/elsewhere/new.pth"}
    merged = results.merge_adaptation(old, section(new_line, int8=[("new.pth", 0.75, 0.1)], curve=[(2, "192x96")]))
    assert sorted((r["res"], r["rank1"]) for r in merged["runs"]) == [(0.5, 88.9), (0.75, 91.7)]
    assert sorted((q["weights"], q["res"]) for q in merged["int8"]) == [("new.pth", 0.75), ("x.pth", 0.5)]
    assert sorted((tuple(c["input"]), c["epoch"]) for c in merged["curve"]) == [((128, 64), 3), ((192, 96), 2)]
    assert [r["rank1"] for r in merged["superseded"]] == [90.2]
    body = results.render_table6({**RESULTS, "adaptation": merged})
    assert "| 192×96 | 91.6 / 76.1 | 91.70 / 77.90 |" in body and "| 128×64 | 88.7 / 71.8 | 88.90 / 73.70 |" in body
    same_size = {**_adapt_line(1.0, 92.3, 78.0), "recipe": {"teacher_res": 1.0}, "checkpoint": "/r/ft.pth"}
    body = results.render_table6({**RESULTS, "adaptation": results.merge_adaptation(
        merged, section(same_size, int8=[("ft.pth", 1.0, 0.05)]))})
    fine_tuned, = [line for line in body.splitlines() if "92.30 / 78.00" in line]
    assert "fine-tuned at its own size" in fine_tuned and fine_tuned.endswith("| 0.05 / — |")
    checkpoint_itself, = [line for line in body.splitlines() if "the torchreid checkpoint itself" in line]
    assert checkpoint_itself.endswith("| — / — |")  # the fine-tune's INT8 rows are not the checkpoint's


def test_the_ablation_names_each_variant_by_its_recipe_difference(tmp_path):
    def line(losses, erase_p=0.5, flip=True, epochs=3):
        recipe = {"augmentation": {"erase_p": erase_p}, "teacher_flip": flip, "seed": 0, "view_sets": 1}
        return {**_adapt_line(0.5, 80.0 + len(losses), 60.0 + erase_p), "epochs": epochs, "recipe": recipe,
                "losses": dict.fromkeys(losses, 1.0)}

    full = ["cosine", "fmap", "ce", "logit"]
    files = []
    for i, x in enumerate((line(full), line(full, erase_p=0.0), line(["cosine", "fmap", "logit"]),
                           line(full, flip=False), line(full + ["simkl"]))):
        files.append(tmp_path / f"{i}.jsonl")
        files[-1].write_text(json.dumps(x) + "\n")
    section = results.read_ablation([str(f) for f in files])
    assert [r["change"] for r in section["rows"]] == [
        "full recipe", "without random erasing", "without label-smoothed cross-entropy",
        "without the teacher's mirrored views", "with ranking (similarity KL) distillation"]
    body = results.render_ablation({**RESULTS, "ablation": section})
    assert "| without random erasing | 84.00 / 60.00 | +0.00 / -0.50 |" in body
    assert "| without label-smoothed cross-entropy | 83.00 / 60.50 | -1.00 / +0.00 |" in body
    # a run that took the then-default losses (no --losses on its command line) gets them spelled out, so the
    # rendered command still reproduces it after the default changed; one that named them keeps its own
    default_run, named_run = line(full), line(["cosine", "logit"])
    default_run["recipe"]["losses"] = {"auto": 1.0, "ce": 1.0, "logit": 1.0}
    named_run["argv"] = named_run["argv"] + ["--losses", "cosine=1,logit=1"]
    named_run["recipe"]["losses"] = {"cosine": 1.0, "logit": 1.0}
    for i, x in enumerate((default_run, named_run)):
        (tmp_path / f"cmd{i}.jsonl").write_text(json.dumps(x) + "\n")
    commands = [r["command"] for r in results.read_ablation([str(tmp_path / "cmd0.jsonl"),
                                                             str(tmp_path / "cmd1.jsonl")])["rows"]]
    assert commands[0].endswith("--threads 1 --losses auto=1,ce=1,logit=1")
    assert commands[1].endswith("--losses cosine=1,logit=1") and commands[1].count("--losses") == 1
    longer = tmp_path / "long.jsonl"
    longer.write_text(json.dumps(line(full, epochs=9)) + "\n")
    with pytest.raises(results.CliError, match="must share resolution, epochs"):
        results.read_ablation([str(files[0]), str(longer)])
    with pytest.raises(results.CliError, match="full recipe's Market-1501 result line first"):
        results.read_ablation([str(files[0])])
