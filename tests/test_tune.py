"""Variants in one bundle (fp32 + int8) and the device-side choice between them (osnet_edge.tuning):
the Extractor loads the tuned variant, the record is keyed by machine, a copied bundle elsewhere re-tunes."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from osnet_edge import tuning
from osnet_edge.bundle import BundleError, load_bundle
from osnet_edge.calibration import CalibrationSet
from osnet_edge.extractor import Extractor
from osnet_edge.samples import synthetic_crops

from .conftest import REPO, SHARED_DATA

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")
HW = (128, 64)


@pytest.fixture(scope="module")
def two_variant_bundle(tmp_path_factory):
    """x0.25 @ 128x64, ORT, fp32 primary + int8 variant; real Market training crops when present."""
    from osnet_edge.export import export_bundle

    real = SHARED_DATA / "market1501" / "bounding_box_train"
    weights = SHARED_DATA / "weights" / "torchreid" / "osnet_x0_25_market1501.pth"
    if real.is_dir():
        calib = CalibrationSet.from_folder(real, input_size=HW, max_images=48, cache_dir=False, progress=False)
    else:
        folder = tmp_path_factory.mktemp("crops")
        for i, crop in enumerate(synthetic_crops(80, seed=3)):
            cv2.imwrite(str(folder / f"{i:04d}_c{i % 3 + 1}s1_000000_00.jpg"), crop)
        calib = CalibrationSet.from_folder(folder, input_size=HW, max_images=48, cache_dir=False, progress=False)
    out = tmp_path_factory.mktemp("tune") / "x025_fp32_int8"
    with pytest.warns(Warning):  # random or unadapted weights at 128x64: warned, and fine for this test
        export_bundle(out, width=0.25, res=0.5, target="onnxruntime", precision="fp32", variants=("int8",),
                      calibration=calib, weights=weights if weights.is_file() else None, distill=False,
                      measure_latency=False)
    return out


def test_bundle_carries_both_variants_with_their_records(two_variant_bundle):
    bundle = load_bundle(two_variant_bundle)
    assert bundle.variant_names == ["fp32", "int8"]
    int8 = bundle.variant("int8")
    assert int8.precision == "int8" and int8.path == bundle.path / "variants" / "int8"
    assert set(int8.manifest["files"]) == {"model.onnx"}
    assert int8.manifest["quantization"]["fidelity"]["num_images"] > 0
    assert bundle.variant("fp32") is bundle and bundle.manifest["fidelity_target"] == tuning.DEFAULT_FIDELITY_TARGET
    with pytest.raises(BundleError, match="no variant 'fp16'"):
        bundle.variant("fp16")


def test_extractor_loads_each_variant_and_they_agree(two_variant_bundle):
    crops = synthetic_crops(4, seed=5)
    with Extractor(two_variant_bundle, variant="fp32") as a, Extractor(two_variant_bundle, variant="int8") as b:
        assert (a.variant, a.precision, b.variant, b.precision) == ("fp32", "fp32", "int8", "int8")
        fa, fb = a(crops), b(crops)
    assert fa.shape == fb.shape == (4, 512)
    assert not np.array_equal(fa, fb)  # really two models
    assert float(np.min(np.sum(fa * fb, axis=1))) > 0.5


def test_tune_records_the_fastest_eligible_variant_and_the_extractor_follows_it(two_variant_bundle, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(two_variant_bundle, copy)
    with Extractor(copy) as ext:  # never tuned here: the primary
        assert ext.variant == "fp32"
    record = tuning.tune(copy, lambda b, name: Extractor(b, variant=name), budget_s=1.5)
    rows = {r["variant"]: r for r in record["candidates"]}
    assert set(rows) == {"fp32", "int8"} and all(r["ms"] > 0 for r in rows.values())
    eligible = [r for r in rows.values() if r["meets_target"]]
    assert record["chosen"] == min(eligible, key=lambda r: r["ms"])["variant"]
    saved = json.loads((copy / "tuning" / f"{record['key']}.json").read_text())
    assert saved["chosen"] == record["chosen"] and saved["machine"]["cpu_flags"]
    with Extractor(copy) as ext:
        assert ext.variant == record["chosen"]
    # the same bundle on another machine (another key): no record, the primary again
    other = copy / "tuning" / f"{record['key']}.json"
    other.rename(other.with_name("onnxruntime-0000000000000000.json"))
    with Extractor(copy) as ext:
        assert ext.variant == "fp32"


def test_a_variant_below_the_fidelity_target_is_never_chosen(two_variant_bundle, tmp_path):
    copy = tmp_path / "strict"
    shutil.copytree(two_variant_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["fidelity_target"] = {"cosine_mean": 1.0, "cosine_p1": 1.0}  # no INT8 meets this
    (copy / "manifest.json").write_text(json.dumps(manifest))
    record = tuning.tune(copy, lambda b, name: Extractor(b, variant=name), budget_s=1.0, write=False)
    assert record["chosen"] == "fp32"
    assert [r["meets_target"] for r in record["candidates"]] == [True, False]


def test_read_only_bundle_records_in_the_cache(two_variant_bundle, tmp_path, monkeypatch):
    if hasattr(__import__("os"), "geteuid") and __import__("os").geteuid() == 0:
        monkeypatch.setattr(tuning.os, "access", lambda path, mode: False)  # root writes anywhere: simulate
    else:
        (two_variant_bundle / "tuning").mkdir(exist_ok=True)
        (two_variant_bundle / "tuning").chmod(0o555)
    monkeypatch.setenv(tuning.TUNING_CACHE_ENV, str(tmp_path / "cache"))
    record = tuning.tune(two_variant_bundle, lambda b, name: Extractor(b, variant=name), budget_s=1.0)
    assert record["path"].startswith(str(tmp_path / "cache"))
    assert tuning.read_record(load_bundle(two_variant_bundle))["chosen"] == record["chosen"]


def test_tune_command_prints_the_table_and_info_shows_the_choice(two_variant_bundle, tmp_path):
    copy = tmp_path / "cli"
    shutil.copytree(two_variant_bundle, copy)
    res = subprocess.run([sys.executable, "-m", "osnet_edge", "tune", str(copy), "--budget", "1"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "fp32" in res.stdout and "int8" in res.stdout and "chosen" in res.stdout
    info = subprocess.run([sys.executable, "-m", "osnet_edge", "info", str(copy)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert info.returncode == 0, info.stderr
    assert "variants:" in info.stdout and "tuned here:" in info.stdout


def test_bad_variant_requests_are_clear_errors(two_variant_bundle):
    from osnet_edge.export import export_bundle

    with pytest.raises(BundleError, match="no variant 'bf16'"):
        Extractor(two_variant_bundle, variant="bf16")
    with pytest.raises(ValueError, match="repeats the primary"):
        export_bundle(two_variant_bundle.parent / "x", width=0.25, res=0.5, precision="fp32", variants=("fp32",))
    with pytest.raises(ValueError, match="needs a calibration set"):
        export_bundle(two_variant_bundle.parent / "y", width=0.25, res=0.5, precision="fp32", variants=("int8",))
