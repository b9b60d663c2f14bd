"""The device side never needs torch: with ``import torch`` failing, the package, the Extractor,
the runtimes, bundle loading, preprocessing and calibration reading import, and a bundle
exported here (with torch) gives the same embeddings in a torch-less process.

The child process gets a directory first on PYTHONPATH whose ``torch`` package raises
ModuleNotFoundError, as on a camera without torch; it also records every attempt to import it.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="exporting the bundles needs torch (osnet_edge[export])")
pytest.importorskip("onnxruntime", reason="needs onnxruntime (osnet_edge[onnxruntime])")
pytest.importorskip("openvino", reason="needs openvino (osnet_edge[openvino])")

from osnet_edge.bundle import BundleWriter  # noqa: E402
from osnet_edge.extractor import Extractor  # noqa: E402
from osnet_edge.samples import synthetic_crops  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEVICE_MODULES = ["osnet_edge", "osnet_edge.extractor", "osnet_edge.runtimes", "osnet_edge.runtimes.base",
                  "osnet_edge.bundle", "osnet_edge.preprocess", "osnet_edge.metrics", "osnet_edge.samples",
                  "osnet_edge.calibration", "osnet_edge.notices", "osnet_edge.sizes", "osnet_edge.progress",
                  # the console command: every command module imports without torch (`osnet-edge info` and
                  # `build-engine` run on the camera; the others load torch only when they need it)
                  "osnet_edge.cli", "osnet_edge.cli.common", "osnet_edge.cli.info",
                  "osnet_edge.cli.build_engine", "osnet_edge.cli.evaluate", "osnet_edge.cli.profile",
                  "osnet_edge.cli.report", "osnet_edge.cli.export", "osnet_edge.cli.adapt",
                  "osnet_edge.cli.int8_fidelity",
                  # stage packages whose front doors import without torch (torch only inside what trains / counts)
                  "osnet_edge.adapt", "osnet_edge.adapt.config", "osnet_edge.adapt.data", "osnet_edge.adapt.views",
                  "osnet_edge.profiler", "osnet_edge.report"]

CHILD = textwrap.dedent('''
    import importlib, importlib.util, json, sys
    import numpy as np

    out = {"imported": [], "absent": []}
    import osnet_edge.runtimes as runtimes
    names = [m for m in sys.argv[2].split(",")] + [f"osnet_edge.runtimes.{r}" for r in runtimes.DEVICE_RUNTIMES]
    for name in names:
        if importlib.util.find_spec(name) is None:
            out["absent"].append(name)
            continue
        importlib.import_module(name)
        out["imported"].append(name)
    from osnet_edge import Extractor

    out["torch_attempts_during_imports"] = open(sys.argv[3]).read().count("attempt")
    out["available"] = runtimes.available()
    data = np.load(sys.argv[1])
    crops = [data[k] for k in sorted(data.files) if k.startswith("crop")]
    results = {}
    for runtime in [k[len("bundle_"):] for k in data.files if k.startswith("bundle_")]:
        with Extractor(str(data[f"bundle_{runtime}"]), threads=1) as ext:
            results[runtime] = ext(crops)
    np.savez(sys.argv[1] + ".child.npz", **results)
    out["torch_in_sys_modules"] = "torch" in sys.modules
    print(json.dumps(out))
''')


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    from osnet_edge.export import export_bundle, save_openvino_ir

    root = tmp_path_factory.mktemp("torch_free")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ort = export_bundle(root / "ort", width=0.25, res=0.5, target="onnxruntime")
    # the OpenVINO bundle: IR converted from the same ONNX, as export_bundle does for --target openvino
    keep = {k: v for k, v in ort.manifest.items() if k not in ("format", "format_version", "files", "created")}
    with BundleWriter(root / "ov") as w:
        shutil.copy(ort.file("model.onnx"), w.path / "model.onnx")
        save_openvino_ir(w.path / "model.onnx", w.path / "model.xml", fp16=False)
        w.manifest.update(keep, runtime="openvino")
    out = {"onnxruntime": ort.path, "openvino": w.out_dir}
    if importlib.util.find_spec("litert_torch") and importlib.util.find_spec("ai_edge_litert"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out["litert"] = export_bundle(root / "litert", width=0.25, res=0.5, target="litert").path
    return out


@pytest.fixture(scope="module")
def no_torch_env(tmp_path_factory) -> tuple[dict, Path]:
    root = tmp_path_factory.mktemp("no_torch")
    log = root / "torch_attempts.log"
    log.write_text("")
    (root / "torch").mkdir()
    (root / "torch" / "__init__.py").write_text(
        f"open({str(log)!r}, 'a').write('attempt\\n')\n"
        "raise ModuleNotFoundError(\"No module named 'torch' (simulated: a camera without torch)\", name='torch')\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env, log


def test_fake_torch_really_fails(no_torch_env):
    env, _ = no_torch_env
    res = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert res.returncode != 0 and "simulated" in res.stderr


def test_device_side_imports_and_runs_without_torch(bundles, no_torch_env, tmp_path):
    env, log = no_torch_env
    crops = synthetic_crops(6, seed=5) + [np.zeros((1, 1, 3), np.uint8)]
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, **{f"crop{i:02d}": c for i, c in enumerate(crops)},
             **{f"bundle_{r}": str(p) for r, p in bundles.items()})
    expected = {}
    for runtime, path in bundles.items():
        with Extractor(path, threads=1) as ext:
            expected[runtime] = ext(crops)

    log.write_text("")
    res = subprocess.run([sys.executable, "-c", CHILD, str(inputs), ",".join(DEVICE_MODULES), str(log)], env=env,
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"\nimported without torch: {report['imported']}; not present yet: {report['absent']}")
    assert report["torch_attempts_during_imports"] == 0, "a device-side module tried to import torch"
    assert not report["torch_in_sys_modules"]
    assert {"onnxruntime", "openvino"} <= set(report["available"])
    assert set(bundles) <= set(report["available"])
    assert set(DEVICE_MODULES) - {"osnet_edge.calibration"} <= set(report["imported"])
    got = np.load(str(inputs) + ".child.npz")
    for runtime in bundles:
        np.testing.assert_array_equal(got[runtime], expected[runtime], err_msg=runtime)
