"""Shared fixtures: the real data in ../shared/data (skipped with a reason when absent)."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("OSNET_EDGE_DATA", REPO.parent / "shared" / "data"))
X025_MSMT = SHARED_DATA / "weights" / "torchreid" / "osnet_x0_25_msmt17.pth"
X025_MARKET = SHARED_DATA / "weights" / "torchreid" / "osnet_x0_25_market1501.pth"


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
