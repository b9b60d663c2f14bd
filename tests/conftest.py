"""Shared fixtures: the real data in ../shared/data (skipped with a reason when absent)."""
from __future__ import annotations

import os
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
