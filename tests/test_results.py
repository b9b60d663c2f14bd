"""The README's and docs' results tables are the rendering of docs/results/results.json (scripts/results.py).

Nothing is measured here: the committed tables must equal what the committed JSON renders to, so a number
edited by hand (or a JSON updated without re-rendering) fails this test.
"""
from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest

from .conftest import REPO, load_script

results = load_script("results.py", "script_results")
RESULTS = json.loads((REPO / results.RESULTS_JSON).read_text(encoding="utf-8"))
# Which block each including file must carry (a file that drops its markers would silently stop updating).
REQUIRED_BLOCKS = {"README.md": {"readme"}, "docs/benchmark.md": {"details"}, "docs/int8.md": {"int8"}}


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
