"""Packaging: the sdist and the wheel build, the wheel holds the whole package (quantize/, runtimes/
and calibration/ inside osnet_edge, the ``osnet-edge`` entry point), and a camera-like environment
made from it works: a fresh venv WITHOUT torch, ``pip install osnet_edge-*.whl[onnxruntime]``, then
the Extractor on a bundle exported here and the installed ``osnet-edge info`` on it.

The wheel is built from the unpacked sdist (so the sdist is known to be complete) with the
setuptools of this environment (``--no-build-isolation``: no download for the build itself). The
fresh venv is made once per session; pip may fetch numpy / opencv / onnxruntime from the
configured indexes: when it cannot, the venv tests skip with pip's reason.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# what a checkout holds besides its sources (environments, build output, exported bundles, caches)
LOCAL_ONLY = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis", "bundles",
              "runs", "reports")
NETWORK_TROUBLE = ("Could not find a version", "No matching distribution", "NewConnectionError", "Max retries",
                   "Temporary failure in name resolution", "Network is unreachable", "ConnectTimeout", "ReadTimeout")


def _run(argv: list, cwd: Path, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)


def _checked(res: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert res.returncode == 0, f"{res.args}\nstdout:\n{res.stdout[-3000:]}\nstderr:\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="session")
def dist(tmp_path_factory) -> dict[str, Path]:
    """{'sdist': ..., 'wheel': ...}: the sdist from the checkout, the wheel from the unpacked sdist."""
    out = tmp_path_factory.mktemp("dist")
    checkout = tmp_path_factory.mktemp("checkout") / "osnet_edge"  # the build writes egg-info: not into the repo
    shutil.copytree(REPO, checkout, ignore=shutil.ignore_patterns(*LOCAL_ONLY))
    code = f"import setuptools.build_meta as b; print(b.build_sdist({str(out)!r}))"
    sdist = out / _checked(_run([sys.executable, "-c", code], cwd=checkout)).stdout.strip().splitlines()[-1]
    unpacked = tmp_path_factory.mktemp("sdist")
    with tarfile.open(sdist) as tar:
        tar.extractall(unpacked, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    (source,) = unpacked.iterdir()
    _checked(_run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", source,
                   "-w", out], cwd=unpacked))
    (wheel,) = out.glob("osnet_edge-*.whl")
    return {"sdist": sdist, "wheel": wheel}


def test_sdist_and_wheel_hold_the_whole_package(dist):
    with tarfile.open(dist["sdist"]) as tar:
        sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    assert {"setup.cfg", "pyproject.toml", "README.md", "constraints.txt", "quantize/__init__.py",
            "runtimes/onnxruntime.py", "calibration/__init__.py", "osnet_edge/cli/__init__.py",
            "scripts/export.py", "tests/test_wheel.py"} <= sdist
    with zipfile.ZipFile(dist["wheel"]) as whl:
        names = set(whl.namelist())
        info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        entry_points = whl.read(info).decode()
    for module in ("osnet_edge/__init__.py", "osnet_edge/__main__.py", "osnet_edge/quantize/__init__.py",
                   "osnet_edge/runtimes/onnxruntime.py", "osnet_edge/runtimes/tensorrt/runtime.py",
                   "osnet_edge/export/pipeline.py",
                   "osnet_edge/calibration/__init__.py", "osnet_edge/models/osnet.py", "osnet_edge/cli/info.py",
                   "osnet_edge/adapt/training.py", "osnet_edge/report/markdown.py", "osnet_edge/profiler/grid.py"):
        assert module in names, module
    top_level = {n.split("/")[0] for n in names}
    assert top_level == {"osnet_edge", dist["wheel"].name.split("-py3")[0] + ".dist-info"}, top_level
    assert "osnet-edge = osnet_edge.cli:main" in entry_points


OLDEST_DEVICE_PYTHON = (3, 9)   # setup.cfg python_requires: the camera side's oldest claimed Python


def oldest_device_python() -> str | None:
    """An interpreter of the oldest Python the device side claims, if this machine has one
    (PATH, or pyenv's versions folder)."""
    name = "python{}.{}".format(*OLDEST_DEVICE_PYTHON)
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = [str(p) for p in sorted(pyenv.glob("{}.{}.*/bin/{}".format(*OLDEST_DEVICE_PYTHON, name)))]
    candidates += [shutil.which(name)] if shutil.which(name) else []   # last: may be an inactive pyenv shim
    for candidate in candidates:
        if subprocess.run([candidate, "-c", "import venv"], capture_output=True).returncode == 0:
            return candidate
    return None


@pytest.fixture(scope="session", params=["this-python", "oldest-claimed-python"])
def camera(request, dist, tmp_path_factory) -> Path:
    """A fresh venv with only the wheel and its [onnxruntime] extra, as on a camera: its bin/ folder.
    Made with this interpreter and with the oldest Python the device side claims (3.9), when present."""
    interpreter = sys.executable
    if request.param == "oldest-claimed-python":
        interpreter = oldest_device_python()
        if interpreter is None:
            pytest.skip("no Python {}.{} interpreter on this machine".format(*OLDEST_DEVICE_PYTHON))
    root = tmp_path_factory.mktemp("camera")
    venv = root / "venv"
    _checked(_run([interpreter, "-m", "venv", venv], cwd=root))
    python = venv / "bin" / "python"
    res = _run([python, "-m", "pip", "install", "--disable-pip-version-check", "--timeout", "60",
                f"{dist['wheel']}[onnxruntime]"], cwd=root, timeout=900)
    if res.returncode != 0:
        if any(t in res.stdout + res.stderr for t in NETWORK_TROUBLE):
            pytest.skip(f"pip could not fetch the wheel's dependencies (no network or index?): "
                        f"{(res.stderr.strip().splitlines() or ['?'])[-1]}")
        _checked(res)
    return venv / "bin"


def _camera_run(camera: Path, argv: list, cwd: Path) -> subprocess.CompletedProcess:
    """Run in the camera venv, away from the checkout (cwd elsewhere, no PYTHONPATH)."""
    env = {"PATH": f"{camera}:/usr/bin:/bin", "HOME": str(cwd), "OMP_NUM_THREADS": "1", "COLUMNS": "100"}
    return _run(argv, cwd=cwd, timeout=300, env=env)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """x0.25 at 64x32, random weights, exported here with torch: the host side."""
    pytest.importorskip("torch", reason="exporting the bundle needs torch (osnet_edge[export])")
    from osnet_edge.export import export_bundle

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_bundle(tmp_path_factory.mktemp("host") / "x025_r025", width=0.25, res=0.25,
                             target="onnxruntime").path


CAMERA_SCRIPT = textwrap.dedent('''
    import importlib.util, json, sys, warnings
    import numpy as np
    import osnet_edge
    from osnet_edge import Extractor

    data = np.load(sys.argv[2])
    crops = [data[k] for k in sorted(data.files)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-weights warning: expected here
        with Extractor(sys.argv[1], threads=1) as ext:
            emb = ext(crops)
    np.save(sys.argv[3], emb)
    print(json.dumps({"package": osnet_edge.__file__, "torch_installed": importlib.util.find_spec("torch") is not None,
                      "torch_imported": "torch" in sys.modules, "runtime": ext.runtime}))
''')


def test_camera_venv_without_torch_runs_the_extractor_and_info(camera, bundle, tmp_path):
    from osnet_edge.extractor import Extractor
    from osnet_edge.samples import synthetic_crops

    crops = synthetic_crops(5, seed=3)
    np.savez(tmp_path / "crops.npz", **{f"c{i}": c for i, c in enumerate(crops)})
    res = _checked(_camera_run(camera, [camera / "python", "-c", CAMERA_SCRIPT, bundle, tmp_path / "crops.npz",
                                        tmp_path / "emb.npy"], cwd=tmp_path))
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["torch_installed"] is False and report["torch_imported"] is False
    assert Path(report["package"]).is_relative_to(camera.parent), report["package"]  # the wheel, not the checkout
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Extractor(bundle, threads=1) as ext:
            expected = ext(crops)
    np.testing.assert_allclose(np.load(tmp_path / "emb.npy"), expected, atol=1e-5)

    info = _checked(_camera_run(camera, [camera / "osnet-edge", "info", bundle], cwd=tmp_path)).stdout
    assert "osnet x0.25 @ res 0.25, input 64 x 32 (H x W)" in info and "mult-adds 5.2M" in info
    assert "RANDOM (seed 0)" in info and "precision:     fp32" in info and "runtime:       onnxruntime" in info
    assert "1 of 1 match their sha256" in info and "  OK        model.onnx" in info
    as_json = json.loads(_checked(_camera_run(camera, [camera / "osnet-edge", "info", bundle, "--json"],
                                              cwd=tmp_path)).stdout)
    assert as_json["verified"] is True and as_json["manifest"]["model"]["input_size"] == [64, 32]


def test_camera_venv_commands_needing_torch_say_so(camera, bundle, tmp_path):
    overview = _checked(_camera_run(camera, [camera / "osnet-edge", "--help"], cwd=tmp_path)).stdout
    assert "build-engine" in overview and "info" in overview
    res = _camera_run(camera, [camera / "osnet-edge", "export", "--width", "0.25", "--out", tmp_path / "b"],
                      cwd=tmp_path)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 1 and len(lines) == 1 and "pip install" in lines[0] and "osnet_edge[export]" in lines[0], \
        res.stderr
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    with open(copy / "model.onnx", "ab") as f:
        f.write(b"\0")
    res = _camera_run(camera, [camera / "osnet-edge", "info", copy], cwd=tmp_path)
    assert res.returncode == 1 and "MISMATCH  model.onnx" in res.stdout and res.stderr.startswith("error: ")
