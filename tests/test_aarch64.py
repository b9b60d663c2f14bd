"""aarch64, emulated: the wheel's device side runs under qemu-aarch64 and matches x86.

scripts/aarch64.py builds (once, then reuses from its cache) a Debian arm64 rootfs and the aarch64 wheels of
every CPU runtime that has them (onnxruntime, litert, openvino), installs the osnet_edge wheel built from
this checkout, and scripts/aarch64_check.py runs inside the guest: each bundle kind (fp32, fp16, INT8) loads,
embeds the same real crops as the x86 reference, ``osnet-edge info`` works, and bad input raises the same
errors. The guest has no torch at all. Bundles are exported here, on the host, with the current code (the
real x0.25 Market-1501 checkpoint when ../shared/data has it), while the guest is being built.

Skips with the reason where this host cannot emulate: not x86-64 Linux, no rootfs yet and not root (or no
apt-get to install qemu-user-static / debootstrap), no network to the Debian mirror or PyPI.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from .conftest import REPO, SHARED_DATA, X025_MARKET

pytestmark = pytest.mark.aarch64


def _load_tool():
    """scripts/aarch64.py as a module (registered: its dataclasses resolve their module by name)."""
    spec = importlib.util.spec_from_file_location("osnet_edge_aarch64_tool", REPO / "scripts" / "aarch64.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


tool = _load_tool()

PRECISIONS = ("fp32", "fp16", "int8")
NUM_CROPS = 16                      # ~0.3-1 s per crop per bundle emulated: enough rows, few minutes
CALIBRATION_IMAGES = 48
# x0.25 at res 0.5: 128x64, Market-1501's own crop size (4x fewer mult-adds than 256x128 under emulation;
# the crops then reach the runtime unresized, and preprocessing is compared on its own)
WIDTH, RES, HW = 0.25, 0.5, (128, 64)
EXPORT_CODE = ("osnet_edge", "quantize", "runtimes", "calibration")
MARKET_TRAIN = SHARED_DATA / "market1501" / "bounding_box_train"   # never the evaluation splits
# what the host needs to export each runtime's bundles (module names)
EXPORT_NEEDS = {"onnxruntime": ("torch", "onnx", "onnxruntime"), "litert": ("torch", "litert_torch", "ai_edge_litert",
                                                                            "ai_edge_quantizer"),
                "openvino": ("torch", "onnx", "openvino", "nncf")}


def _missing_modules(names) -> list[str]:
    return [n for n in names if importlib.util.find_spec(n) is None]


@pytest.fixture(scope="module")
def guest_build():
    """The guest, built in a background thread while the host exports the bundles (both take minutes)."""
    problem = tool.host_problem()
    if problem:
        pytest.skip(f"aarch64 emulation: {problem}")
    cache = tool.default_cache()
    if os.geteuid() != 0 and not (cache / "rootfs" / ".complete.json").exists():
        pytest.skip(f"aarch64 emulation: no rootfs in {cache} and not root (debootstrap needs root): run "
                    "`sudo python scripts/aarch64.py build` once, or set $OSNET_EDGE_AARCH64_CACHE")
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(tool.prepare, cache, tuple(tool.RUNTIMES), True)
    yield future
    pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def crops(guest_build, tmp_path_factory) -> dict:
    """NUM_CROPS real Market-1501 training crops (synthetic ones where the data is absent), as .npz."""
    folder = MARKET_TRAIN if MARKET_TRAIN.is_dir() else None
    path, names = tool.select_crops(folder, NUM_CROPS, tmp_path_factory.mktemp("aarch64") / "crops.npz", HW)
    return {"path": path, "names": names, "real": folder is not None}


def _export_key(crop_names: list, weights: Path | None) -> str:
    """Bundles are reused only by the same export code, exporters, weights and crops (the current code)."""
    from importlib import metadata

    digest = hashlib.sha256()
    for top in EXPORT_CODE:
        for path in sorted((REPO / top).rglob("*.py")):
            digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    for dist in ("torch", "onnx", "onnxruntime", "openvino", "nncf", "litert-torch", "ai-edge-quantizer",
                 "ai-edge-litert"):
        try:
            digest.update(f"{dist}=={metadata.version(dist)}".encode())
        except metadata.PackageNotFoundError:
            pass
    digest.update(json.dumps([crop_names, CALIBRATION_IMAGES, WIDTH, RES, PRECISIONS]).encode())
    digest.update(weights.read_bytes() if weights else b"random")
    return digest.hexdigest()[:16]


def _calibration(crops: dict, tmp_path_factory):
    from osnet_edge.calibration import CalibrationSet
    from osnet_edge.samples import synthetic_crops

    if crops["real"]:  # bounding_box_train only, without the crops the check embeds
        return CalibrationSet.from_folder(MARKET_TRAIN, input_size=HW, max_images=CALIBRATION_IMAGES,
                                          exclude=crops["names"], cache_dir=False, progress=False)
    import cv2
    folder = tmp_path_factory.mktemp("synthetic_calibration")
    for i, crop in enumerate(synthetic_crops(CALIBRATION_IMAGES + 16, seed=11)):
        cv2.imwrite(str(folder / f"{i:04d}_c1s1_000000_00.jpg"), crop)
    return CalibrationSet.from_folder(folder, input_size=HW, max_images=CALIBRATION_IMAGES, cache_dir=False,
                                      progress=False)


@pytest.fixture(scope="module")
def bundles(crops, tmp_path_factory) -> dict:
    """{runtime: {precision: bundle dir}} exported here with the current code ({runtime: reason} where the
    host cannot), kept in the aarch64 cache under a key of that code, so a rerun of unchanged code reuses them."""
    from osnet_edge.bundle import load_bundle
    from osnet_edge.export import export_bundle

    weights = X025_MARKET if X025_MARKET.exists() else None
    root = tool.default_cache() / "bundles"
    out = root / _export_key(crops["names"], weights)
    for old in (root.iterdir() if root.is_dir() else ()):
        if old != out:
            shutil.rmtree(old, ignore_errors=True)
    made, calibration = {}, None
    for runtime, needs in EXPORT_NEEDS.items():
        missing = _missing_modules(needs)
        if missing:
            made[runtime] = f"the host cannot export {runtime} bundles: missing {', '.join(missing)}"
            continue
        made[runtime] = {}
        for precision in PRECISIONS:
            path = out / f"{runtime}_{precision}"
            if (path / "manifest.json").exists():
                made[runtime][precision] = load_bundle(path).path   # verified against its sha256s
                continue
            options = {}
            if precision == "int8":
                calibration = calibration or _calibration(crops, tmp_path_factory)
                options = dict(calibration=calibration, distill=False, measure_latency=False)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # random weights (no shared data) / unadapted resolution
                made[runtime][precision] = export_bundle(path, width=WIDTH, res=RES, weights=weights, target=runtime,
                                                         precision=precision, **options).path
    return made


@pytest.fixture(scope="module")
def guest(guest_build, bundles):
    try:
        return guest_build.result()
    except tool.HostUnfit as exc:
        pytest.skip(f"aarch64 emulation: {exc}")


def _exportable(bundles: dict) -> list[Path]:
    return [path for per in bundles.values() if isinstance(per, dict) for path in per.values()]


@pytest.fixture(scope="module")
def host(bundles, crops, guest, tmp_path_factory) -> dict:
    """The x86 reference: the same check program, same bundles and crops, in this environment."""
    return tool.host_check(_exportable(bundles), crops["path"], tmp_path_factory.mktemp("aarch64_host"))


@pytest.fixture(scope="module")
def results(guest, bundles, crops, host, tmp_path_factory):
    """runtime -> the guest's report (computed on first use, once per runtime); a summary JSON at the end."""
    done: dict = {}

    def get(runtime: str) -> dict:
        if not isinstance(bundles[runtime], dict):
            pytest.skip(bundles[runtime])
        if runtime not in guest.sites:
            pytest.skip(f"{runtime}'s aarch64 wheels did not install: {guest.unavailable.get(runtime)}")
        if runtime not in done:
            out = tmp_path_factory.mktemp(f"aarch64_guest_{runtime}")
            done[runtime] = tool.guest_check(guest, runtime, list(bundles[runtime].values()), crops["path"], out)
        return done[runtime]

    yield get
    summary = {"crops": crops["names"], "real_crops": crops["real"], "timings_s": guest.timings,
               "resize_differences": {rt: resize_differences(host, rep) for rt, rep in done.items()},
               "unavailable": guest.unavailable, "host": host["versions"],
               "guest": {rt: {"versions": rep["versions"],
                              "bundles": {name: {k: b[k] for k in ("precision", "load_s", "embed_s",
                                                                    "single_vs_batch_max_abs_diff")}
                                          for name, b in rep["bundles"].items()},
                              "agreement": {name: vars(tool.compare(host["embeddings"][name], rep["embeddings"][name],
                                                                     rep["bundles"][name]["precision"], rt))
                                            for name in rep["bundles"]},
                              "vs_own_fp32_mean_cosine": {
                                  name: {"guest": float(tool.cosines(rep["embeddings"][name],
                                                                     rep["embeddings"][f"{rt}_fp32"]).mean()),
                                         "host": float(tool.cosines(host["embeddings"][name],
                                                                    host["embeddings"][f"{rt}_fp32"]).mean())}
                                  for name in rep["bundles"] if f"{rt}_fp32" in rep["bundles"]}}
                         for rt, rep in done.items()}}
    (guest.cache / "last_run.json").write_text(json.dumps(summary, indent=1, default=str))


def test_compare_fails_on_wrong_numbers():
    """The agreement check itself: a perturbed or swapped guest result must fail (no emulation needed)."""
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((16, 512)).astype(np.float32)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert tool.compare(ref, ref.copy(), "fp32").ok and tool.compare(ref, ref, "fp32").bit_exact
    nudged = ref + np.float32(2e-5) * rng.standard_normal(ref.shape).astype(np.float32)
    fails = tool.compare(ref, nudged, "fp32")
    assert not fails.ok and "max |diff|" in fails.failures[-1] and not fails.bit_exact
    swapped = ref.copy()
    swapped[[3, 4]] = swapped[[4, 3]]
    int8 = tool.compare(ref, swapped, "int8")
    assert not int8.ok and [f.split(":")[0] for f in int8.failures] == ["crop 3", "crop 4"]
    small = ref + np.float32(1e-3) * rng.standard_normal(ref.shape).astype(np.float32)
    assert tool.compare(ref, small, "int8").ok and not tool.compare(ref, small, "fp16").ok
    assert tool.compare(ref, small, "fp16", "onnxruntime").ok    # fp16 arithmetic on ARM: INT8's bound
    assert not tool.compare(ref, swapped, "fp16", "onnxruntime").ok
    with pytest.raises(ValueError, match="precision"):
        tool.compare(ref, ref, "bf16")
    with pytest.raises(ValueError, match="shape"):
        tool.compare(ref, ref[:3], "fp32")


@pytest.mark.parametrize("runtime", list(tool.RUNTIMES))
def test_guest_is_aarch64_without_torch_and_runs_the_wheel(runtime, results, guest, host):
    report = results(runtime)
    v = report["versions"]
    assert v["machine"] == "aarch64" and v["python"].startswith(tool.GUEST_PYTHON + "."), v
    assert v["cpu"] == "0xd0b" and "asimddp" in v["cpu_features"], v   # the emulated Cortex-A76
    assert report["torch"] == {"installed": False, "imported": False}
    assert Path(v["osnet_edge_file"]).is_relative_to(guest.wheel_layer), v["osnet_edge_file"]  # the wheel
    pins = tool.host_versions(runtime)
    assert {k: v["distributions"].get(k) for k in pins} == pins          # the host's releases: ISA is the only change
    assert v["distributions"]["osnet_edge"] == host["versions"]["distributions"]["osnet_edge"]


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("runtime", list(tool.RUNTIMES))
def test_embeddings_match_x86(runtime, precision, results, bundles, host):
    report = results(runtime)
    name = bundles[runtime][precision].name
    facts = report["bundles"][name]
    assert facts["runtime"] == runtime and facts["precision"] == precision and facts["dim"] == 512
    got = report["embeddings"][name]
    assert got.shape == (NUM_CROPS, 512) and got.dtype == np.float32 and np.isfinite(got).all()
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    agreement = tool.compare(host["embeddings"][name], got, precision, runtime)
    assert agreement.ok, f"{name}: {agreement.failures} (min cosine {agreement.min_cosine}, max |diff| " \
                         f"{agreement.max_abs_diff})"
    if precision != "fp32":  # as faithful to its FP32 bundle on aarch64 as on x86
        fp32 = bundles[runtime]["fp32"].name
        on_guest = tool.cosines(got, report["embeddings"][fp32]).mean()
        on_host = tool.cosines(host["embeddings"][name], host["embeddings"][fp32]).mean()
        assert on_guest >= on_host - tool.FIDELITY_MARGIN, (name, on_guest, on_host)


def resize_differences(host: dict, report: dict) -> dict:
    """Per "interpolation HxW": (largest |diff| in uint8 levels, fraction of values that differ)."""
    out = {}
    for key, ref in host["resized"].items():
        diff = np.abs(ref.astype(np.int16) - report["resized"][key])
        out[key] = (int(diff.max()), float(np.mean(diff > 0)))
    return out


@pytest.mark.parametrize("runtime", list(tool.RUNTIMES))
def test_preprocessing_matches_x86(runtime, results, host):
    """The model input of unresized crops is bit-exact; resizing too, except OpenCV's bilinear: aarch64's
    opencv-python-headless resizes through the KleidiCV HAL, x86's through IPP, and their fixed-point
    rounding differs by one uint8 level on part of the pixels (INTER_LINEAR_EXACT and INTER_AREA agree)."""
    report = results(runtime)
    for name, model_input in report["inputs"].items():
        assert model_input.dtype == host["inputs"][name].dtype
        assert np.array_equal(model_input, host["inputs"][name]), \
            f"{name}: max |diff| {np.max(np.abs(model_input - host['inputs'][name]))}"
    differences = resize_differences(host, report)
    assert set(differences) == {f"{i} {h}x{w}" for i in ("linear", "area", "pil") for h, w in ((256, 128), (64, 32))}
    for key, (largest, fraction) in differences.items():
        if key.startswith("linear"):
            assert largest <= 1, (key, largest, fraction)
        else:
            assert largest == 0, (key, largest, fraction)


@pytest.mark.parametrize("runtime", list(tool.RUNTIMES))
def test_info_works_in_the_guest(runtime, results, host, guest, bundles):
    report = results(runtime)
    for name, facts in report["bundles"].items():
        info, as_json = facts["info"], facts["info_json"]
        assert info["entry_point"] == "osnet_edge.cli:main" and info["exit_code"] == 0, info
        assert info["stdout"] == host["bundles"][name]["info"]["stdout"] and "match their sha256" in info["stdout"]
        parsed = json.loads(as_json["stdout"])
        assert parsed["verified"] is True and parsed == json.loads(host["bundles"][name]["info_json"]["stdout"])
    # and as a command: the wheel's console script, run by the guest's python (a guest cannot exec it itself)
    bundle = bundles[runtime]["int8"]
    res = guest.python(runtime, [guest.wheel_layer / "bin" / "osnet-edge", "info", bundle])
    assert res.returncode == 0 and f"runtime:       {runtime}" in res.stdout and "precision:     int8" in res.stdout, \
        res.stdout + res.stderr


@pytest.mark.parametrize("runtime", list(tool.RUNTIMES))
def test_bad_inputs_raise_the_same_errors(runtime, results, host):
    report = results(runtime)
    for name, facts in report["bundles"].items():
        errors = facts["bad_inputs"]
        assert errors == host["bundles"][name]["bad_inputs"]
        for case, error in errors.items():
            assert error is not None, f"{name}: {case} was accepted"
            assert error["type"] in ("TypeError", "ValueError") and not error.get("unexpected"), (case, error)
