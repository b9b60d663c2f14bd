"""Shared fixtures: the real data in ../shared/data (skipped with a reason when absent), optional
packages made missing, placeholder bundles, and the one-line error check of the command line."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("OSNET_EDGE_DATA", REPO.parent / "shared" / "data"))
X025_MSMT = SHARED_DATA / "weights" / "torchreid" / "osnet_x0_25_msmt17.pth"
X025_MARKET = SHARED_DATA / "weights" / "torchreid" / "osnet_x0_25_market1501.pth"
# Optional packages a test can make missing (fake_packages, env_without).
EXTRAS = ("torch", "onnx", "onnxscript", "onnxruntime", "openvino", "nncf", "tensorrt", "pycuda")


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (../shared/data is not part of the repo)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return require(SHARED_DATA)


@pytest.fixture(scope="session")
def x025_checkpoint() -> Path:
    return require(X025_MSMT)


def load_script(name: str, module_name: str | None = None):
    """Import ``scripts/<name>`` as a module (to call its main() in this process: torch loads once).

    sys.path is restored afterwards: scripts/ on it would shadow the standard library's ``profile``.
    """
    spec = importlib.util.spec_from_file_location(module_name or f"script_{name[:-3]}", REPO / "scripts" / name)
    module = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module


@pytest.fixture(scope="session")
def fake_packages(tmp_path_factory) -> Path:
    """One directory per optional package, holding a package of that name that fails to import."""
    root = tmp_path_factory.mktemp("missing_extras")
    for name in EXTRAS:
        pkg = root / name / name
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{name}' (simulated missing extra)\", name={name!r})\n")
    return root


def env_without(missing: tuple[str, ...] = (), fake_root: Path | None = None) -> dict[str, str]:
    """This process's environment with the ``missing`` packages shadowed by fake_packages' failing ones."""
    env = dict(os.environ)
    if missing:
        assert fake_root is not None
        shadow = [str(fake_root / m) for m in missing]
        env["PYTHONPATH"] = os.pathsep.join(shadow + [p for p in [env.get("PYTHONPATH")] if p])
    env.pop("OSNET_EDGE_DEBUG", None)
    return env


@pytest.fixture(scope="session")
def dummy_bundles(tmp_path_factory) -> dict[str, Path]:
    """Well-formed bundles whose model files are placeholders: enough to reach the runtime import."""
    from osnet_edge.bundle import BundleWriter

    out = {}
    for runtime, files in {"onnxruntime": ["model.onnx"], "openvino": ["model.xml", "model.bin"]}.items():
        with BundleWriter(tmp_path_factory.mktemp("dummy") / runtime) as w:
            for f in files:
                (w.path / f).write_bytes(b"placeholder, never parsed: the runtime is missing")
            w.manifest.update(model={"variant": "osnet", "width": 0.25, "res": 0.5, "input_size": [128, 64],
                                     "embedding_dim": 512},
                              preprocess={"color": "BGR", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                          "interpolation": "linear", "fused": False},
                              runtime=runtime, precision="fp32")
        out[runtime] = w.out_dir
    return out


def assert_one_line_error(res: subprocess.CompletedProcess, pattern: str | None = None,
                          code: int | None = None) -> str:
    """Non-zero exit, no traceback, and the last stderr line is the only 'error: ...' line."""
    detail = f"rc={res.returncode}\nstdout:\n{res.stdout[-1500:]}\nstderr:\n{res.stderr[-3000:]}"
    assert res.returncode != 0, detail
    if code is not None:
        assert res.returncode == code, detail
    assert "Traceback" not in res.stderr, detail
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], detail
    if pattern:
        assert re.search(pattern, errors[0]), f"{errors[0]!r} does not match {pattern!r}"
    return errors[0]
