"""scripts/evaluate.py on a tiny Market-1501-layout folder made from synthetic crops.

Each identity is one synthetic figure seen as slightly different near-duplicates by two
cameras, so even a random-weights network retrieves it: rank-1 must be high and the same
from the bundle, from its own ONNX file run as a "foreign" model, and from the folder form.
The evaluate_rank protocol itself is tested in test_metrics.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from osnet_edge.profiler import GridPoint, ensure_bundle
from osnet_edge.report import evaluate_embedder, market1501_set
from osnet_edge.samples import synthetic_crops

REPO = Path(__file__).resolve().parents[1]
IDS = 8
EMPTY_DATA = Path("/nonexistent")   # set per module by _no_shared_data


def make_market1501(root: Path) -> Path:
    """query/: 1 image per id from camera 1; bounding_box_test/: 2 per id from camera 2, one same-camera
    re-detection (must be ignored), a distractor (pid 0) and a junk image (pid -1, skipped)."""
    rng = np.random.default_rng(1)
    (root / "query").mkdir(parents=True)
    (root / "bounding_box_test").mkdir()

    def jitter(img):
        return np.clip(img.astype(int) + rng.integers(-4, 5, img.shape), 0, 255).astype(np.uint8)

    people = synthetic_crops(IDS + 2, seed=11, min_h=64, max_h=128)
    for pid, base in enumerate(people[:IDS], start=1):
        ext = ".jpg.jpg" if pid == IDS else ".jpg"   # as in the real release: these count
        cv2.imwrite(str(root / "query" / f"{pid:04d}_c1s1_000100_00{ext}"), jitter(base))
        for k in range(2):
            cv2.imwrite(str(root / "bounding_box_test" / f"{pid:04d}_c2s1_0002{k}0_00.jpg"), jitter(base))
        cv2.imwrite(str(root / "bounding_box_test" / f"{pid:04d}_c1s1_000300_00.jpg"), jitter(base))
    cv2.imwrite(str(root / "bounding_box_test" / "0000_c3s1_000400_00.jpg"), people[IDS])
    cv2.imwrite(str(root / "bounding_box_test" / "-1_c3s1_000500_00.jpg"), people[IDS + 1])
    return root


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    return make_market1501(tmp_path_factory.mktemp("market") / "Market-tiny")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    # shared with test_profiler / test_report: exported once per session
    return ensure_bundle(tmp_path_factory.getbasetemp() / "osnet_edge_report_work",
                         GridPoint(0.25, 0.25, "onnxruntime", "fp32"))


def evaluate(*args, timeout=180, data_root=None, cache=None):
    """scripts/evaluate.py in a subprocess; shared data = ``data_root`` (an empty folder by default, so
    that the real 23k-image Market-1501 is never embedded by a unit test), cache under ``cache``."""
    env = dict(os.environ, OSNET_EDGE_DATA=str(data_root or EMPTY_DATA),
               OSNET_EDGE_CACHE=str(cache or EMPTY_DATA.parent / "cache"))
    return subprocess.run([sys.executable, str(REPO / "scripts" / "evaluate.py"), "--no-progress", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, timeout=timeout, env=env)


@pytest.fixture(scope="module", autouse=True)
def _no_shared_data(tmp_path_factory):
    global EMPTY_DATA
    EMPTY_DATA = tmp_path_factory.mktemp("no_shared_data") / "data"
    EMPTY_DATA.mkdir()


def test_market1501_layout_is_read_as_torchreid_does(market):
    es = market1501_set(market)
    assert len(es.query) == IDS and len(es.gallery) == 3 * IDS + 1   # junk dropped, .jpg.jpg kept, distractor kept
    assert 0 in set(es.g_pids) and -1 not in set(es.g_pids)


def test_protocol_market1501_is_the_default_and_embeddings_are_cached(market, bundle, tmp_path):
    """--protocol market1501 reads <shared>/market1501; with no data option it is the default; the second
    run reads the cached embeddings (a planted cache file with other features changes the result)."""
    import shutil

    root = tmp_path / "shared"
    shutil.copytree(market, root / "market1501")
    cache = tmp_path / "cache"
    first = evaluate("--bundle", bundle.path, "--protocol", "market1501", "--threads", "1", "--json",
                     tmp_path / "a.json", data_root=root, cache=cache)
    assert first.returncode == 0, first.stderr
    files = list((cache / "features").glob("*.npy"))
    assert len(files) == 1
    default = evaluate("--bundle", bundle.path, "--threads", "1", "--json", tmp_path / "b.json", data_root=root, cache=cache)
    assert default.returncode == 0, default.stderr
    a, b = (json.loads((tmp_path / n).read_text())["results"][0] for n in ("a.json", "b.json"))
    assert a["data"] == b["data"] == "market1501" and a == b
    assert list((cache / "features").glob("*.npy")) == files          # same key: reused, not re-embedded
    feats = np.load(files[0])
    np.save(files[0], feats[::-1].copy())                             # the cache really is what is read
    planted = evaluate("--bundle", bundle.path, "--threads", "1", "--json", tmp_path / "c.json", data_root=root, cache=cache)
    assert json.loads((tmp_path / "c.json").read_text())["results"][0]["mAP"] != a["mAP"]
    fresh = evaluate("--bundle", bundle.path, "--threads", "1", "--no-cache", "--json", tmp_path / "d.json",
                     data_root=root, cache=cache)
    assert json.loads((tmp_path / "d.json").read_text())["results"][0] == a


def test_cache_key_depends_on_images_and_model_not_on_where_the_data_lives(market, bundle, tmp_path):
    from osnet_edge.bundle import load_bundle
    from osnet_edge.report import bundle_identity, file_identity

    rel = market1501_set(os.path.relpath(market))
    assert rel.fingerprint == market1501_set(market).fingerprint
    relabelled = market1501_set(market)
    relabelled.query[0] = relabelled.query[0].__class__(relabelled.query[0].path, 99, 1)
    assert relabelled.fingerprint != rel.fingerprint
    b = load_bundle(bundle.path)
    assert bundle_identity(b) == bundle_identity(b, "onnxruntime") != bundle_identity(b, "openvino")
    ckpt = tmp_path / "w.bin"
    ckpt.write_bytes(b"weights")
    assert file_identity(ckpt, "res 1") != file_identity(ckpt, "res 0.5")


def test_bundle_and_its_onnx_as_foreign_agree(market, bundle, tmp_path):
    out = evaluate("--bundle", bundle.path, "--data", market, "--json", tmp_path / "b.json", "--threads", "1")
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if l.startswith("Market-tiny"))
    assert f"{IDS} query, {3 * IDS + 1} gallery" in line and "rank-1" in line and "mAP" in line
    res = json.loads((tmp_path / "b.json").read_text())["results"][0]
    assert res["rank1"] >= 75.0 and res["rank1"] <= res["rank5"] <= res["rank10"] <= 100.0
    assert 0.0 < res["mAP"] <= 100.0
    foreign = evaluate("--foreign", bundle.path / "model.onnx", "--input-format", "rgb_imagenet", "--data", market,
                       "--json", tmp_path / "f.json", "--threads", "1")
    assert foreign.returncode == 0, foreign.stderr
    fres = json.loads((tmp_path / "f.json").read_text())["results"][0]
    assert fres["rank1"] == pytest.approx(res["rank1"]) and fres["mAP"] == pytest.approx(res["mAP"], abs=1e-3)
    folders = evaluate("--bundle", bundle.path, "--query", market / "query", "--gallery", market / "bounding_box_test",
                       "--json", tmp_path / "q.json", "--threads", "1")
    assert folders.returncode == 0, folders.stderr
    assert json.loads((tmp_path / "q.json").read_text())["results"][0]["mAP"] == pytest.approx(res["mAP"], abs=1e-3)


def shared_checkpoint(tmp_path_factory) -> Path:
    """A seeded x0.25 state_dict standing in for a trained checkpoint (shared with test_report)."""
    import torch

    from osnet_edge.models import build_osnet

    path = tmp_path_factory.getbasetemp() / "osnet_edge_report_work" / "x025_seed7.pth"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(7)
        torch.save(build_osnet(0.25).state_dict(), path)
    return path


def test_torch_reference_matches_the_bundle_it_came_from(market, tmp_path, tmp_path_factory):
    from osnet_edge.extractor import Extractor
    from osnet_edge.report import TorchReference

    ckpt = shared_checkpoint(tmp_path_factory)
    es = market1501_set(market)
    ref = TorchReference(ckpt, res=0.25)
    assert ref.width == 0.25 and ref.input_size == (64, 32)   # width read from the checkpoint
    m_ref, qf, _ = evaluate_embedder(ref, es, progress=False)
    out = evaluate("--weights", ckpt, "--res", "0.25", "--data", market, "--json", tmp_path / "t.json")
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "t.json").read_text())["results"][0]["mAP"] == pytest.approx(m_ref["mAP"])
    b = ensure_bundle(tmp_path_factory.getbasetemp() / "osnet_edge_report_work",
                      GridPoint(0.25, 0.25, "onnxruntime", "fp32"), weights=str(ckpt))
    with Extractor(b, threads=1) as ext:
        m_bundle, qf_b, _ = evaluate_embedder(ext, es, progress=False)
    assert np.min(np.sum(qf * qf_b, axis=1)) > 0.999
    assert m_bundle["mAP"] == pytest.approx(m_ref["mAP"], abs=0.5)


def test_errors_are_one_line(market, bundle, tmp_path):
    no_data = evaluate("--bundle", bundle.path)
    assert no_data.returncode == 1 and no_data.stderr.startswith("error: no evaluation data")
    (tmp_path / "half" / "query").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "half" / "query" / "0001_c1s1_000100_00.jpg"), synthetic_crops(1)[0])
    half = evaluate("--bundle", bundle.path, "--data", tmp_path / "half")
    assert half.returncode == 1 and "bounding_box_test" in half.stderr and "Traceback" not in half.stderr
    two_models = evaluate("--bundle", bundle.path, "--weights", "x.pth", "--data", market)
    assert two_models.returncode == 2  # argparse: mutually exclusive
